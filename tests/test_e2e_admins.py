"""Administrator accounts in Chromium: first run, add, remove and change password."""

import pytest
from playwright.sync_api import expect

from mdm.auth import ensure_setup_code

from .test_e2e_browser import PASSWORD
from .test_e2e_browser import live  # noqa: F401 (fixture)
from .test_e2e_browser import page  # noqa: F401 (fixture)
from .test_e2e_browser import setup_admin
from .test_e2e_browser import shot
from .test_e2e_layout import MEASURE

NEW_PASSWORD = "violet tractor mango"
COMMON = (
    "This password is on the list of common passwords that attackers try first; "
    "choose another."
)


def focused(tab):
    return tab.evaluate("() => document.activeElement.name")


def fits(tab):
    assert tab.evaluate(MEASURE) == []


@pytest.mark.parametrize("width", [390, 1280])
def test_first_run_pages(live, page, width):  # noqa: F811 (fixture)
    app, base = live
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{base}/admin/")
    expect(page.get_by_role("heading", name="No administrator yet")).to_be_visible()
    expect(page.locator("div.flash.info")).to_have_text("Sign in to continue.")
    shot(page, f"admins-no-admin-{width}")

    page.goto(f"{base}/setup?code={ensure_setup_code(app)}")
    expect(page.locator("#password-hint")).to_be_visible()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password", exact=True).fill("password1234")
    page.get_by_label("Confirm password").fill("password1234")
    page.get_by_role("button", name="Create administrator").click()
    expect(page.locator("p.error")).to_have_text(COMMON)
    expect(page.locator("#password-hint")).to_have_count(0)
    shot(page, f"admins-setup-refused-{width}")

    setup_admin(page, app, base)
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("p.flash.danger")).to_have_text(
        "The username or password is incorrect."
    )
    assert focused(page) == "password"
    shot(page, f"admins-login-failed-{width}")


@pytest.mark.parametrize("width", [390, 1280])
def test_add_remove_and_change_password(live, page, width):  # noqa: F811 (fixture)
    app, base = live
    page.set_viewport_size({"width": width, "height": 900})
    setup_admin(page, app, base)
    page.goto(f"{base}/admin/admins")
    expect(
        page.get_by_role("heading", name="Administrators", exact=True)
    ).to_be_visible()
    expect(
        page.locator("main td").get_by_text("The only administrator")
    ).to_be_visible()

    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password", exact=True).fill("bob-password-1")
    page.get_by_label("Confirm password").fill("bob-password-1")
    page.get_by_role("button", name="Add administrator").click()
    expect(page.locator("p.error")).to_have_text(
        "The password contains the username; choose one that does not."
    )
    page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Confirm password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Add administrator").click()
    expect(page.locator("div.flash.success")).to_have_text("Administrator bob added.")
    fits(page)
    shot(page, f"admins-list-{width}")

    page.get_by_role("link", name="Remove bob").click()
    expect(
        page.get_by_role("heading", name="Remove administrator bob?")
    ).to_be_visible()
    shot(page, f"admins-remove-{width}")
    page.get_by_role("button", name="Remove administrator").click()
    expect(page.locator("div.flash.success")).to_have_text("Administrator bob removed.")
    expect(page.locator("main td[data-label=Username]")).to_have_text(["alice You"])

    page.get_by_role("link", name="Change your password").click()
    expect(page.get_by_role("heading", name="Change your password")).to_be_visible()
    page.get_by_label("Current password").fill("not the password")
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_label("Confirm password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("p.error")).to_have_text("The current password is incorrect.")
    shot(page, f"admins-password-refused-{width}")
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_label("Confirm password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("div.flash.success")).to_have_text(
        "Password changed; your other sessions are signed out."
    )
    # This session stays signed in; the new password signs in next time.
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
