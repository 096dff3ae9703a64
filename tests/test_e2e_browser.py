"""End-to-end console flows in a real Chromium driven by Playwright.

Debian's chromium is required (``.ci/run`` installs it); the tests fail, not
skip, when it is missing. Screenshots go to $MDM_SCREENSHOTS when it is set.
"""

import json
import os
import shutil
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect
from playwright.sync_api import sync_playwright

from mdm import create_app
from mdm.auth import ensure_setup_code

from .conftest import database_config
from .conftest import live_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "correct horse battery"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def live(tmp_path):
    """Serve a fresh app with waitress on a free loopback port."""
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "e2e",
            **database_config(tmp_path / "mdm.sqlite"),
        }
    )
    with live_server(app, threads=4) as port:
        yield app, f"http://127.0.0.1:{port}"


@pytest.fixture
def page():
    assert os.path.exists(CHROMIUM), (
        "Debian's chromium is missing: apt-get install chromium"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        yield context.new_page()
        context.close()
        browser.close()


def shot(page, name):
    folder = os.environ.get("MDM_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=True)


def scim(base, secret, method, path, body=None):
    """Call the SCIM API like an IdP; return (status, JSON body or None)."""
    request = urllib.request.Request(
        f"{base}/scim/v2{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/scim+json",
        },
    )
    try:
        with urllib.request.urlopen(request) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def setup_admin(page, app, base):
    code = ensure_setup_code(app)
    page.goto(f"{base}/setup?code={code}")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Confirm password").fill(PASSWORD)
    shot(page, "setup")
    page.get_by_role("button", name="Create administrator").click()
    expect(page.get_by_role("heading", name="User Provisioning")).to_be_visible()


def generate(page, label):
    page.get_by_role("link", name="Generate").click()
    page.get_by_label("Label (optional)").fill(label)
    page.get_by_label("Expires").select_option(label="90 days")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_text("This token is shown only now")).to_be_visible()
    secret = page.get_by_label("Token", exact=True).input_value()
    url = page.get_by_label("Target SCIM URL").input_value()
    return secret, url


def choose(page, key, action):
    row = page.get_by_role("row").filter(has_text=key)
    row.get_by_label(f"Select an action for token {key}").select_option(label=action)
    row.get_by_role("button", name="Apply").click()


def test_setup_sign_in_and_token_lifecycle(live, page):
    app, base = live
    page.goto(f"{base}/setup")
    assert "403" in page.title()
    setup_admin(page, app, base)
    shot(page, "provisioning-empty")

    secret, url = generate(page, "Entra production")
    assert url == f"{base}/scim/v2"
    shot(page, "token-generated")
    assert scim(base, secret, "GET", "/Users")[0] == 200
    # A reload shows the secret gone and generates nothing.
    page.reload()
    expect(
        page.get_by_role("heading", name="Secret no longer available")
    ).to_be_visible()
    expect(page.get_by_label("Token", exact=True)).to_have_count(0)
    shot(page, "token-secret-gone")
    page.get_by_role("link", name="Back to Entra ID").click()
    key = secret.split("_")[1]
    expect(page.get_by_role("row").filter(has_text="Entra production")).to_have_count(1)
    expect(page.get_by_role("row").filter(has_text=key)).to_contain_text("Active")

    # The only active token: the console asks before provisioning stops.
    expect(page.locator("#url-warning")).to_contain_text(
        "127.0.0.1 cannot be reached from the internet"
    )
    choose(page, key, "Set to Inactive")
    expect(
        page.get_by_role("heading", name=f"Set token {key} to Inactive?")
    ).to_be_visible()
    shot(page, "token-deactivate-confirm")
    page.get_by_role("button", name="Set to Inactive").click()
    expect(page.get_by_role("row").filter(has_text=key)).to_contain_text("Inactive")
    shot(page, "provisioning-inactive")
    assert scim(base, secret, "GET", "/Users")[0] == 401
    choose(page, key, "Set to Active")
    assert scim(base, secret, "GET", "/Users")[0] == 200

    choose(page, key, "Renew")
    shot(page, "token-renew-confirm")
    page.get_by_role("button", name="Renew token").click()
    new_secret = page.get_by_label("Token", exact=True).input_value()
    assert scim(base, secret, "GET", "/Users")[0] == 401
    assert scim(base, new_secret, "GET", "/Users")[0] == 200
    # A reload renews nothing: the secret just copied keeps working.
    page.reload()
    expect(
        page.get_by_role("heading", name="Secret no longer available")
    ).to_be_visible()
    assert scim(base, new_secret, "GET", "/Users")[0] == 200
    page.get_by_role("link", name="Back to Entra ID").click()

    second, _ = generate(page, "Rotation")
    page.get_by_role("link", name="I've copied it").click()
    expect(page.get_by_text("A maximum of 2 tokens can exist")).to_be_visible()
    expect(page.get_by_role("link", name="Generate")).to_have_count(0)
    shot(page, "provisioning-full")

    new_key = new_secret.split("_")[1]
    choose(page, new_key, "Remove")
    page.get_by_role("button", name="Remove token").click()
    expect(page.get_by_text(f"Token {new_key} removed.")).to_be_visible()
    assert scim(base, new_secret, "GET", "/Users")[0] == 401
    assert scim(base, second, "GET", "/Users")[0] == 200
    expect(page.get_by_role("link", name="Generate")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong password!")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("The username or password is incorrect.")).to_be_visible()
    shot(page, "sign-in-error")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_provisioned_users_and_groups_appear_and_purge(live, page):
    app, base = live
    setup_admin(page, app, base)
    secret, _ = generate(page, "Entra")
    status, ann = scim(
        base,
        secret,
        "POST",
        "/Users",
        {
            "userName": "ann@contoso.com",
            "displayName": "Ann Lee",
            "externalId": "ann",
            "emails": [{"value": "ann@contoso.com", "type": "work", "primary": True}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "department": "Sales"
            },
        },
    )
    assert status == 201
    _, bob = scim(base, secret, "POST", "/Users", {"userName": "bob@contoso.com"})
    status, group = scim(
        base,
        secret,
        "POST",
        "/Groups",
        {"displayName": "Sales", "members": [{"value": ann["id"]}]},
    )
    assert status == 201

    page.get_by_role("link", name="Users").click()
    row = page.get_by_role("row").filter(has_text="ann@contoso.com")
    expect(row).to_contain_text("Ann Lee")
    expect(row).to_contain_text("SCIM Entra ID")
    expect(row).to_contain_text("Sales")
    expect(row).to_contain_text("Active")
    shot(page, "users")

    page.get_by_label("Search").fill("ann")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(
        f"{base}/admin/users?q=ann&source=&status=&group=&filter=&sort=username&order=asc"
    )
    expect(page.get_by_role("row")).to_have_count(2)
    # Counted from the first page, which holds the one match.
    expect(page.locator("nav.pager")).to_contain_text("1–1 of 1 users")
    shot(page, "users-search")

    page.get_by_role("link", name="Ann Lee").click()
    expect(page.get_by_text("Managed by Entra ID")).to_be_visible()
    expect(page.get_by_text("Sales").first).to_be_visible()
    shot(page, "user")

    page.get_by_role("link", name="User Groups").click()
    group_row = page.get_by_role("row").filter(has_text="Sales")
    expect(group_row).to_contain_text("1")
    shot(page, "groups")
    page.get_by_role("link", name="Sales").click()
    expect(page.get_by_role("link", name="Ann Lee")).to_be_visible()
    shot(page, "group")

    assert scim(base, secret, "DELETE", f"/Users/{bob['id']}")[0] == 204
    page.goto(f"{base}/admin/users")
    expect(page.get_by_role("row").filter(has_text="bob@contoso.com")).to_contain_text(
        "Deprovisioned"
    )
    page.get_by_role("link", name="Purge all deprovisioned (1)").click()
    shot(page, "purge-confirm")
    page.get_by_role("button", name="Purge 1 user").click()
    expect(page.get_by_text("Purged 1 deprovisioned user.")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="bob@contoso.com")).to_have_count(0)


def test_custom_attributes_page_and_phone_layout(live, page):
    app, base = live
    setup_admin(page, app, base)
    page.get_by_role("link", name="Custom Attributes").click()
    page.get_by_label("Attribute name").fill("costCenterCode")
    page.get_by_label("Type").select_option("string")
    page.get_by_role("button", name="Add attribute").click()
    path = "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User:costCenterCode"
    expect(page.get_by_label("Attribute path for costCenterCode")).to_have_value(path)
    shot(page, "attributes")
    with urllib.request.urlopen(f"{base}/scim/v2/Schemas") as response:
        ids = [s["id"] for s in json.loads(response.read())["Resources"]]
    assert "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User" in ids

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/admin/provisioning/okta")
    expect(page.get_by_text("OAuth Bearer Token", exact=True)).to_be_visible()
    shot(page, "provisioning-okta-phone")
    page.goto(f"{base}/admin/users")
    expect(page.get_by_text("No users yet")).to_be_visible()
    shot(page, "users-empty-phone")


def test_failed_request_shows_in_activity_with_its_hint(live, page):
    app, base = live
    setup_admin(page, app, base)
    secret, _ = generate(page, "Entra")
    body = {"userName": "dup@contoso.com", "password": "Sup3r-secret-pw"}
    assert scim(base, secret, "POST", "/Users", body)[0] == 201
    status, error = scim(base, secret, "POST", "/Users", body)
    assert (status, error["scimType"]) == (409, "uniqueness")
    assert scim(base, "mdm_0_wrong", "GET", "/Users")[0] == 401
    lookup = "/Users?filter=userName+eq+%22nobody%40contoso.com%22&access_token=abc"
    assert scim(base, secret, "GET", lookup)[0] == 200
    from mdm.activity import writer

    writer.flush()

    page.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    shot(page, "dashboard")
    page.get_by_role("link", name="Provisioning Activity").click()
    expect(page.get_by_role("heading", name="Provisioning Activity")).to_be_visible()
    # The status cell's: a token key, a duration or an id may also hold "409".
    status = page.locator('td[data-label="Status"]', has_text="409")
    failed = page.get_by_role("row").filter(has=status)
    expect(failed).to_contain_text("dup@contoso.com")
    shot(page, "activity")
    failed.get_by_role("link").first.click()
    expect(page.get_by_text("What this usually means:")).to_be_visible()
    expect(page.get_by_text("already exists").first).to_be_visible()
    expect(page.get_by_text("Sup3r-secret-pw")).to_have_count(0)
    shot(page, "activity-entry")
    # A lookup's query string reads as the IdP meant it, its secret redacted.
    page.locator(".crumbs").get_by_role("link", name="Provisioning Activity").click()
    page.get_by_role("row").filter(has_text="no match").get_by_role(
        "link"
    ).first.click()
    expect(
        page.get_by_text(
            'filter=userName eq "nobody@contoso.com"&access_token=[redacted]'
        )
    ).to_be_visible()
    expect(page.get_by_text("abc", exact=True)).to_have_count(0)
    shot(page, "activity-entry-lookup")
    page.get_by_role("link", name="Audit Trail").click()
    expect(
        page.get_by_role("row").filter(has_text="SCIM Token Created")
    ).to_contain_text("Entra ID")
    shot(page, "audit")
    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_role("link", name="Dashboard").click()
    shot(page, "dashboard-phone")


def test_bulk_request_and_its_operations_show_in_activity(live, page):
    app, base = live
    setup_admin(page, app, base)
    secret, _ = generate(page, "Entra")
    status, answer = scim(
        base,
        secret,
        "POST",
        "/Bulk",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "kim",
                    "data": {"userName": "kim@contoso.com", "displayName": "Kim Ode"},
                },
                {
                    "method": "POST",
                    "path": "/Groups",
                    "bulkId": "ops",
                    "data": {
                        "displayName": "Ops",
                        "members": [{"value": "bulkId:kim"}],
                    },
                },
                {"method": "DELETE", "path": "/Users/no-such-user"},
            ],
        },
    )
    assert status == 200
    assert [op["status"] for op in answer["Operations"]] == ["201", "201", "404"]
    from mdm.activity import writer

    writer.flush()

    page.get_by_role("link", name="Provisioning Activity").click()
    page.get_by_label("Resource").select_option("Bulk")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("row")).to_have_count(2)
    request_row = page.get_by_role("row").nth(1)
    expect(request_row).to_contain_text("3 of 3 operations applied, 1 failed")
    expect(request_row).to_contain_text("200")
    page.goto(f"{base}/admin/activity")
    expect(page.get_by_role("row").filter(has_text="Bulk: created")).to_have_count(2)
    expect(page.get_by_role("row").filter(has_text="no-such-user")).to_contain_text(
        "404"
    )
    shot(page, "activity-bulk")

    page.get_by_role("link", name="User Groups").click()
    page.get_by_role("link", name="Ops").click()
    expect(page.get_by_role("link", name="Kim Ode")).to_be_visible()
    page.get_by_role("link", name="Kim Ode").click()
    expect(page.get_by_text("Bulk: created")).to_be_visible()
    shot(page, "user-bulk-history")
