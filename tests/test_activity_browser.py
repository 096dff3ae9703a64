"""The dashboard's refusal banners and the refused-requests page in a real Chromium."""

import os
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect
from playwright.sync_api import sync_playwright

from mdm import create_app
from mdm.activity import writer

from .conftest import database_config
from .conftest import live_server
from .test_e2e_browser import ARGS
from .test_e2e_browser import CHROMIUM
from .test_e2e_browser import choose
from .test_e2e_browser import generate
from .test_e2e_browser import scim
from .test_e2e_browser import setup_admin
from .test_e2e_browser import shot


@pytest.fixture
def live(tmp_path):
    """Serve a fresh app with waitress on a free loopback port."""
    app = create_app(
        {"TESTING": True, "SECRET_KEY": "e2e", **database_config(tmp_path / "a.db")}
    )
    with live_server(app, threads=4) as port:
        yield app, f"http://127.0.0.1:{port}"


@pytest.fixture
def page():
    assert os.path.exists(CHROMIUM), "Debian's chromium is missing"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        yield context.new_page()
        context.close()
        browser.close()


def knock(base, body, **headers):
    """POST to the SCIM API as an unknown client; return the status."""
    request = urllib.request.Request(
        f"{base}/scim/v2/Users", method="POST", data=body, headers=headers
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status
    except urllib.error.HTTPError as error:
        error.read()
        return error.code


def test_dashboard_tells_a_bad_token_from_unknown_clients(live, page):
    app, base = live
    setup_admin(page, app, base)
    secret, _ = generate(page, "Entra production")
    assert scim(base, secret, "GET", "/Users")[0] == 200
    body = b'{"password": "' + b"x" * 20000 + b'"}'
    for number in range(30):
        headers = {"User-Agent": "masscan/1.3"}
        if number % 2:
            headers["Authorization"] = f"Bearer mdm_{number:012x}_guess"
        assert knock(base, body, **headers) == 401
    writer.flush()

    page.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    knocking = page.locator("div.banner.info")
    expect(knocking).to_contain_text("Unknown clients are knocking: 30 requests")
    expect(page.locator("div.banner.danger")).to_have_count(0)
    shot(page, "dashboard-unknown-clients")

    page.get_by_role("link", name="User Provisioning").first.click()
    key = secret.split("_")[1]
    choose(page, key, "Set to Inactive")
    page.get_by_role("button", name="Set to Inactive").click()  # its only token
    expect(page.get_by_role("row").filter(has_text=key)).to_contain_text("Inactive")
    assert scim(base, secret, "GET", "/Users")[0] == 401
    writer.flush()

    page.get_by_role("link", name="Dashboard").click()
    alarm = page.locator("div.banner.danger").first
    expect(alarm).to_contain_text(
        "1 request in the last 80 minutes was refused with 401. Entra ID is using "
        "a token or client secret that is inactive, removed, renewed or expired"
    )
    expect(knocking).to_contain_text("30 requests")
    shot(page, "dashboard-bad-token")

    alarm.get_by_role("link", name="See refused requests").click()
    expect(page.get_by_role("heading", name="Refused requests")).to_be_visible()
    expect(page.locator("#refused tbody tr").first).to_contain_text("inactive token")
    expect(page.locator("#refused")).not_to_contain_text("xxxxxxxx")
    shot(page, "refused-requests")
