"""The OAuth 2.0 client credentials choice on User Provisioning, in a real Chromium.

Debian's chromium is required; the tests fail, not skip, when it is missing.
Screenshots go to $MDM_SCREENSHOTS when it is set.
"""

import base64
import json
import urllib.error
import urllib.parse
import urllib.request

from playwright.sync_api import expect

from .test_e2e_browser import live  # noqa: F401 (fixture)
from .test_e2e_browser import page  # noqa: F401 (fixture)
from .test_e2e_browser import scim
from .test_e2e_browser import setup_admin
from .test_e2e_browser import shot
from .test_e2e_layout import MEASURE


def fetch_token(endpoint, client_id, secret):
    """Ask the token endpoint for an access token as Entra does; return (status, JSON)."""
    basic = base64.b64encode(
        f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(secret)}".encode()
    ).decode()
    request = urllib.request.Request(
        endpoint,
        method="POST",
        data=b"grant_type=client_credentials",
        headers={
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def shown_values(page):  # noqa: F811 (fixture name)
    """Return the Client Identifier, Client Secret and Token Endpoint on the page."""
    return [
        page.get_by_label(name, exact=True).input_value()
        for name in ("Client Identifier", "Client Secret", "Token Endpoint")
    ]


def copy_buttons(page):  # noqa: F811 (fixture name)
    """Return the ids of the fields the page's Copy buttons copy."""
    return page.locator("button.copy-button").evaluate_all(
        "(buttons) => buttons.map((b) => b.dataset.copy)"
    )


def choose(page, client_id, action):  # noqa: F811 (fixture name)
    row = page.get_by_role("row").filter(has_text=client_id)
    row.get_by_label(f"Select an action for client {client_id}").select_option(
        label=action
    )
    row.get_by_role("button", name="Apply").click()


def test_oauth_client_lifecycle_for_entra(live, page):  # noqa: F811 (fixtures)
    app, base = live
    setup_admin(page, app, base)
    page.get_by_role("link", name="OAuth 2.0 client credentials").click()
    expect(page.get_by_label("Token Endpoint")).to_have_value(f"{base}/oauth/token")
    expect(page.get_by_text("OAuth2 Client Credentials Grant")).to_be_visible()
    shot(page, "oauth-empty")

    page.get_by_role("link", name="Add client").click()
    expect(
        page.get_by_role("heading", name="Add an OAuth Client for Entra ID?")
    ).to_be_visible()
    page.get_by_label("Label (optional)").fill("Entra production")
    page.get_by_role("button", name="Add client").click()
    expect(page.get_by_role("heading", name="OAuth Client Added")).to_be_visible()
    client_id, secret, endpoint = shown_values(page)
    assert client_id.startswith("mdmc_")
    assert secret.startswith("mdmcs_")
    assert endpoint == f"{base}/oauth/token"
    expect(page.get_by_label("Target SCIM URL")).to_have_value(f"{base}/scim/v2")
    assert copy_buttons(page) == [
        "client-id",
        "client-secret",
        "token-endpoint",
        "target-url",
    ]
    shot(page, "oauth-client-added")
    status, body = fetch_token(endpoint, client_id, secret)
    assert status == 200, body
    token = body["access_token"]
    assert scim(base, token, "GET", "/Users")[0] == 200

    page.get_by_role("link", name="I've copied it").click()
    row = page.get_by_role("row").filter(has_text=client_id)
    expect(row).to_contain_text("Entra production")
    expect(row).to_contain_text("Active")
    expect(
        page.get_by_role("link", name="OAuth 2.0 client credentials")
    ).to_have_attribute("aria-current", "page")
    shot(page, "oauth-clients")

    choose(page, client_id, "Renew")
    expect(
        page.get_by_role("heading", name=f"Renew client {client_id}?")
    ).to_be_visible()
    shot(page, "oauth-renew-confirm")
    page.get_by_role("button", name="Renew client").click()
    expect(page.get_by_role("heading", name="Client Secret Renewed")).to_be_visible()
    renewed_id, new_secret, _ = shown_values(page)
    assert renewed_id == client_id
    assert new_secret != secret
    shot(page, "oauth-client-renewed")
    assert scim(base, token, "GET", "/Users")[0] == 401
    assert fetch_token(endpoint, client_id, secret)[0] == 401
    status, body = fetch_token(endpoint, client_id, new_secret)
    assert status == 200, body
    token = body["access_token"]
    assert scim(base, token, "GET", "/Users")[0] == 200
    page.reload()
    expect(
        page.get_by_role("heading", name="Secret No Longer Available")
    ).to_be_visible()
    page.get_by_role("link", name="Back to Entra ID").click()

    choose(page, client_id, "Remove")
    page.get_by_role("button", name="Remove client").click()
    expect(page.get_by_text(f"Client {client_id} removed.")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text=client_id)).to_have_count(0)
    assert scim(base, token, "GET", "/Users")[0] == 401
    shot(page, "oauth-removed")


def test_oauth_view_fits_a_phone(live, page):  # noqa: F811 (fixtures)
    app, base = live
    setup_admin(page, app, base)
    page.goto(f"{base}/admin/provisioning/entra?auth=oauth")
    for _ in range(2):
        page.get_by_role("link", name="Add client").click()
        page.get_by_label("Label (optional)").fill(
            "Entra ID production tenant (contoso.onmicrosoft.com)"
        )
        page.get_by_role("button", name="Add client").click()
        expect(page.get_by_role("heading", name="OAuth Client Added")).to_be_visible()
        client_id, secret, endpoint = shown_values(page)
        assert fetch_token(endpoint, client_id, secret)[0] == 200
        page.set_viewport_size({"width": 390, "height": 900})
        shot(page, "oauth-client-added-390")
        assert page.evaluate(MEASURE) == []
        page.set_viewport_size({"width": 1280, "height": 900})
        page.get_by_role("link", name="I've copied it").click()
    page.set_viewport_size({"width": 390, "height": 900})
    for view in ("oauth", "bearer"):
        for idp in ("entra", "okta", "generic"):
            page.goto(f"{base}/admin/provisioning/{idp}?auth={view}")
            expect(page.locator("main h1")).to_be_visible()
            shot(page, f"oauth-{idp}-{view}-390")
            assert page.evaluate(MEASURE) == [], f"{idp} {view}"
    page.goto(f"{base}/admin/")
    shot(page, "oauth-dashboard-390")
    assert page.evaluate(MEASURE) == []
