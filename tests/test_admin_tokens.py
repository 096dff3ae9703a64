"""Admin console User Provisioning: Target SCIM URL, token generation, actions, limits and banners."""

import hashlib
import json
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup

from mdm import activity
from mdm.db import database
from mdm.models import BearerToken
from mdm.models import Group
from mdm.models import Setting
from mdm.models import User
from mdm.models import utcnow

from .conftest import PASSWORD
from .conftest import ScimClient
from .conftest import issue_token

SCIM_URL = "http://localhost/scim/v2"
IDP_NAMES = {"entra": "Entra ID", "okta": "Okta", "generic": "Generic SCIM"}
TOKEN_HEADERS = [
    "Label",
    "Token ID",
    "Status",
    "Created",
    "Created by",
    "Expires",
    "Last used",
    "Last client",
    "Actions",
]


def page(response):
    """Parse an HTML response."""
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def labelled(soup, text):
    """Return the control whose <label> reads ``text``."""
    label = soup.find("label", string=lambda s: s and s.strip() == text)
    assert label is not None, f"no label {text!r}"
    control = soup.find(id=label["for"])
    assert control is not None, f"label {text!r} points at nothing"
    return control


def copy_button(soup, control):
    """Return the Copy button that copies ``control``."""
    button = soup.find("button", attrs={"data-copy": control["id"]})
    assert button is not None, f"no Copy button for {control['id']}"
    assert button.get_text(strip=True) == "Copy"
    assert button.get("type") == "button"
    return button


def banners(soup):
    """Return the text of each banner on a page."""
    return [" ".join(b.get_text().split()) for b in soup.select(".banner")]


def text_of(node):
    """Return a node's text without surrounding whitespace."""
    return node.get_text(strip=True)


def flashes(soup):
    """Return the text of each flashed message on a page."""
    return [f.get_text(strip=True) for f in soup.select("div.flash")]


def token_rows(soup):
    """Return the token table as one {header: cell} dict per row."""
    table = soup.find("table")
    if table is None:
        return []
    headers = [th.get_text(strip=True) for th in table.select("thead th")]
    return [
        dict(zip(headers, tr.find_all("td"), strict=True))
        for tr in table.select("tbody tr")
    ]


def tokens(app, idp=None):
    """Return stored tokens, optionally for one connection."""
    with app.app_context(), database.connection_context():
        query = BearerToken.select().order_by(BearerToken.id)
        if idp:
            query = query.where(BearerToken.idp == idp)
        return list(query)


def scim_status(client, secret):
    """Return the status of a SCIM list request made with ``secret``."""
    response = client.get(
        "/scim/v2/Users", headers={"Authorization": f"Bearer {secret}"}
    )
    return response.status_code


def generate(client, idp="entra", follow=True, **data):
    """Post the Generate form; return the page it redirects to (the secret, once)."""
    data.setdefault("expiry", "never")
    return client.post(
        f"/admin/provisioning/{idp}/generate", data=data, follow_redirects=follow
    )


def shown_secret(response):
    """Return the secret shown on a token page."""
    assert response.status_code == 200
    return labelled(page(response), "Token")["value"]


def act(client, token, action, idp="entra"):
    """Apply a token row's Select action."""
    return client.post(
        f"/admin/provisioning/{idp}/tokens/{token.id}", data={"action": action}
    )


#
# Provisioning page
#


@pytest.mark.parametrize("idp", sorted(IDP_NAMES))
def test_provisioning_page_shows_fixed_target_url(console, idp):
    """Each connection shows a readonly Target SCIM URL with a Copy button."""
    response = console.get(f"/admin/provisioning/{idp}")
    assert response.status_code == 200
    soup = page(response)
    field = labelled(soup, "Target SCIM URL")
    assert field.name == "input"
    assert field.has_attr("readonly")
    assert field["value"] == SCIM_URL
    copy_button(soup, field)
    hints = [" ".join(p.get_text().split()) for p in soup.find_all("p")]
    # Named as each IdP's own field is named.
    field_name = {"entra": "The Tenant URL", "okta": "The Base URL"}.get(
        idp, "This URL"
    )
    assert f"{field_name} never changes; only the token does." in hints
    assert soup.find("h2", string=f"Connect {IDP_NAMES[idp]}") is not None
    current = soup.select('nav.tabs a[aria-current="page"]')
    assert [urlsplit(a["href"]).path for a in current] == [f"/admin/provisioning/{idp}"]


def test_provisioning_tabs_cover_every_connection(console):
    """The IdP chooser links to Entra ID, Okta and Generic SCIM."""
    soup = page(console.get("/admin/provisioning/entra"))
    links = {a.get_text(strip=True): a["href"] for a in soup.select("nav.tabs a")}
    assert links == {
        "Entra ID": "/admin/provisioning/entra",
        "Okta": "/admin/provisioning/okta",
        "Generic SCIM 2.0": "/admin/provisioning/generic",
    }


def test_provisioning_home_opens_entra(console):
    """/admin/provisioning opens the Entra ID connection."""
    response = console.get("/admin/provisioning")
    assert response.status_code == 302
    assert urlsplit(response.location).path == "/admin/provisioning/entra"


def test_target_url_follows_public_url(app, console):
    """PUBLIC_URL, when set, is the advertised Target SCIM URL."""
    app.config["PUBLIC_URL"] = "https://mdm.example.com/"
    soup = page(console.get("/admin/provisioning/entra"))
    field = labelled(soup, "Target SCIM URL")
    assert field["value"] == "https://mdm.example.com/scim/v2"


@pytest.mark.parametrize(
    "url",
    [
        "/admin/provisioning/unknown",
        "/admin/provisioning/unknown/generate",
        "/admin/provisioning/ENTRA",
    ],
)
def test_unknown_connection_is_404(console, url):
    """An unknown identity provider has no page."""
    assert console.get(url).status_code == 404
    assert console.post(url, data={"expiry": "never"}).status_code in (404, 405)


def test_entra_instructions_name_entra_fields(console):
    """The Entra ID steps use the field names of the Entra admin center."""
    soup = page(console.get("/admin/provisioning/entra"))
    section = soup.select_one("section.instructions")
    terms = {s.get_text(strip=True) for s in section.find_all("strong")}
    assert {
        "Tenant URL",
        "Secret Token",
        "Test Connection",
        "Sync only assigned users and groups",
    } <= terms
    assert "40 minutes" in section.get_text()
    assert "OAuth Bearer Token" not in terms


def test_okta_instructions_name_okta_fields(console):
    """The Okta steps use the field names of the Okta Admin Console."""
    soup = page(console.get("/admin/provisioning/okta"))
    section = soup.select_one("section.instructions")
    terms = {s.get_text(strip=True) for s in section.find_all("strong")}
    assert {
        "Base URL",
        "OAuth Bearer Token",
        "Test API Credentials",
        "Push Groups",
    } <= terms
    assert "Secret Token" not in terms


#
# Generate
#


def test_generate_asks_for_confirmation(app, console):
    """GET Generate shows a label field and an expiry choice, and issues nothing."""
    response = console.get("/admin/provisioning/entra/generate")
    assert response.status_code == 200
    soup = page(response)
    assert soup.find("h1").get_text(strip=True) == "Generate a token for Entra ID?"
    label = labelled(soup, "Label (optional)")
    assert label.name == "input" and label["type"] == "text"
    expiry = labelled(soup, "Expires")
    assert expiry.name == "select"
    options = [o.get_text(strip=True) for o in expiry.find_all("option")]
    assert options == ["Never", "90 days", "180 days", "1 year"]
    assert expiry.find("option", selected=True).get_text(strip=True) == "Never"
    assert soup.find("input", type="submit")["value"] == "Generate"
    cancel = soup.find("a", string="Cancel")
    assert cancel["href"] == "/admin/provisioning/entra"
    assert tokens(app) == []


def test_generate_shows_the_secret_once(app, console):
    """POST Generate shows the token and Target SCIM URL, each with a Copy button."""
    response = generate(console, label="Entra production")
    assert response.status_code == 200
    soup = page(response)
    secret_field = labelled(soup, "Token")
    url_field = labelled(soup, "Target SCIM URL")
    for field in (secret_field, url_field):
        assert field.name == "input" and field.has_attr("readonly")
        copy_button(soup, field)
    assert url_field["value"] == SCIM_URL
    secret = secret_field["value"]
    assert secret.startswith("mdm_")
    warning = soup.find(class_="banner", role="alert").get_text()
    assert "shown only now" in warning
    (token,) = tokens(app)
    assert token.key in warning
    # Leaving the page loses the secret: no other page shows it.
    for url in ("/admin/provisioning/entra", "/admin/provisioning/entra/generate"):
        assert secret not in console.get(url).get_data(as_text=True)


def test_generated_token_authenticates_scim(app, client, console):
    """The generated secret works as a SCIM bearer token."""
    secret = shown_secret(generate(console))
    assert scim_status(app.test_client(), secret) == 200
    assert scim_status(app.test_client(), secret + "x") == 401


def test_generated_token_is_stored_as_hash(app, console):
    """Only a hash of the secret is stored; created_by is the signed-in admin."""
    secret = shown_secret(generate(console, label="prod"))
    (token,) = tokens(app)
    assert token.idp == "entra"
    assert token.label == "prod"
    assert token.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    stored = [str(value) for value in token.__data__.values()]
    assert secret not in stored
    assert token.created_by == "alice"
    assert token.expires_at is None
    assert token.active


@pytest.mark.parametrize(("choice", "days"), [("90", 90), ("180", 180), ("365", 365)])
def test_generated_token_expiry(app, console, choice, days):
    """A chosen expiry sets expires_at that many days ahead."""
    before = utcnow()
    shown_secret(generate(console, expiry=choice))
    (token,) = tokens(app)
    assert token.expires_at is not None
    expected = before + timedelta(days=days)
    assert expected <= token.expires_at <= expected + timedelta(minutes=1)


def test_generate_refuses_an_unknown_expiry(app, console):
    """An expiry outside the choices issues nothing."""
    response = generate(console, expiry="7")
    assert response.status_code == 200
    assert tokens(app) == []


def test_token_table_columns(app, client, console):
    """The table lists label, key, status, created, created by, expiry, last use and client."""
    secret = shown_secret(generate(console, label="prod", expiry="90"))
    client.get(
        "/scim/v2/Users",
        headers={
            "Authorization": f"Bearer {secret}",
            "User-Agent": "Azure AD SCIM Client",
        },
    )
    issue_token(app, "entra")
    (token, other) = tokens(app)
    soup = page(console.get("/admin/provisioning/entra"))
    headers = [th.get_text(strip=True) for th in soup.select("table thead th")]
    assert headers == TOKEN_HEADERS
    used, unused = token_rows(soup)
    assert used["Label"].get_text(strip=True) == "prod"
    assert used["Token ID"].get_text(strip=True) == token.key
    assert used["Status"].get_text(strip=True) == "Active"
    created = used["Created"].find("time")
    assert created.get_text().strip() == token.created_at.strftime("%Y-%m-%d %H:%M")
    assert used["Created by"].get_text(strip=True) == "alice"
    expires = used["Expires"].find("time")
    assert expires.get_text().strip() == token.expires_at.strftime("%Y-%m-%d %H:%M")
    assert used["Last used"].find("time") is not None
    assert used["Last client"].get_text(strip=True) == "Azure AD SCIM Client"
    assert unused["Token ID"].get_text(strip=True) == other.key
    assert unused["Expires"].get_text(strip=True) == "Never"
    assert unused["Last used"].get_text(strip=True) == "Never"
    actions = used["Actions"].find("select")
    options = [o.get_text(strip=True) for o in actions.find_all("option")]
    assert options == ["Select", "Set to Active", "Set to Inactive", "Renew", "Remove"]
    assert used["Actions"].find("button").get_text(strip=True) == "Apply"


def test_token_label_and_client_are_escaped(app, client, console):
    """A label or User-Agent that looks like HTML is shown as text."""
    secret = shown_secret(generate(console, label="<b>bold</b>"))
    client.get(
        "/scim/v2/Users",
        headers={"Authorization": f"Bearer {secret}", "User-Agent": "<i>agent</i>"},
    )
    soup = page(console.get("/admin/provisioning/entra"))
    (row,) = token_rows(soup)
    assert text_of(row["Label"]) == "<b>bold</b>"
    assert text_of(row["Last client"]) == "<i>agent</i>"
    assert soup.find("b") is None and soup.find("i") is None


def test_expired_token_status(app, console):
    """A token past its expiry is listed as Expired and counts as inactive."""
    token, _ = issue_token(app, "entra", expires_in_days=1)
    with app.app_context(), database.connection_context():
        BearerToken.update(expires_at=utcnow() - timedelta(minutes=1)).where(
            BearerToken.id == token.id
        ).execute()
    soup = page(console.get("/admin/provisioning/entra"))
    (row,) = token_rows(soup)
    assert text_of(row["Status"]) == "Expired"
    assert any(b.startswith("No active token") for b in banners(soup))


def test_token_tables_are_per_connection(app, console):
    """A connection's page lists only its own tokens."""
    _, _ = issue_token(app, "okta")
    soup = page(console.get("/admin/provisioning/entra"))
    assert token_rows(soup) == []
    assert soup.find("p", class_="empty") is not None
    assert len(token_rows(page(console.get("/admin/provisioning/okta")))) == 1


#
# Token actions
#


def test_deactivate_then_activate(app, client, console):
    """Set to Inactive makes SCIM answer 401; Set to Active restores it."""
    token, secret = issue_token(app, "entra")
    assert scim_status(client, secret) == 200

    # The only active token: provisioning would stop, so it asks first.
    response = act(console, token, "deactivate")
    assert response.status_code == 302
    confirm_url = urlsplit(response.location).path
    assert confirm_url == f"/admin/provisioning/entra/tokens/{token.id}/deactivate"
    soup = page(console.get(confirm_url))
    assert text_of(soup.find("h1")) == f"Set token {token.key} to Inactive?"
    assert " ".join(soup.main.find("p").get_text().split()) == (
        "It is the only active token for Entra ID: provisioning stops, and Entra ID "
        "gets 401 on every request until you set a token to Active or generate a "
        "new one."
    )
    assert text_of(soup.main.find("button", type="submit")) == "Set to Inactive"
    assert soup.find("a", string="Cancel")["href"] == "/admin/provisioning/entra"
    assert scim_status(client, secret) == 200  # GET confirms only

    response = console.post(confirm_url)
    assert response.status_code == 302
    assert urlsplit(response.location).path == "/admin/provisioning/entra"
    soup = page(console.get(response.location))
    assert f"Token {token.key} is now Inactive." in flashes(soup)
    (row,) = token_rows(soup)
    assert row["Status"].get_text(strip=True) == "Inactive"
    assert scim_status(client, secret) == 401

    act(console, token, "activate")
    (row,) = token_rows(page(console.get("/admin/provisioning/entra")))
    assert row["Status"].get_text(strip=True) == "Active"
    assert scim_status(client, secret) == 200


def test_action_on_another_connections_token_is_404(app, console):
    """A token is only reachable under its own connection."""
    token, _ = issue_token(app, "okta")
    assert act(console, token, "deactivate", idp="entra").status_code == 404
    assert tokens(app)[0].active


def test_action_without_choice_changes_nothing(app, console):
    """Apply without choosing an action flashes a hint and changes nothing."""
    token, _ = issue_token(app, "entra")
    response = console.post(f"/admin/provisioning/entra/tokens/{token.id}", data={})
    assert response.status_code == 302
    assert "Choose an action." in flashes(page(console.get(response.location)))
    assert tokens(app)[0].active


def test_renew_replaces_the_secret(app, client, console):
    """Renew confirms, shows the new secret once; the old one stops working."""
    token, old = issue_token(app, "entra")
    response = act(console, token, "renew")
    assert response.status_code == 302
    confirm_url = urlsplit(response.location).path
    assert confirm_url == f"/admin/provisioning/entra/tokens/{token.id}/renew"

    soup = page(console.get(confirm_url))
    assert soup.find("h1").get_text(strip=True) == f"Renew token {token.key}?"
    assert soup.main.find("button", type="submit").get_text(strip=True) == "Renew token"
    assert soup.find("a", string="Cancel")["href"] == "/admin/provisioning/entra"
    assert scim_status(client, old) == 200  # GET confirms only

    response = console.post(confirm_url)
    assert response.status_code == 302
    secret_url = urlsplit(response.location).path
    assert secret_url == f"/admin/provisioning/entra/tokens/{token.id}/secret"
    response = console.get(secret_url)
    assert response.status_code == 200
    soup = page(response)
    assert soup.find("h1").get_text(strip=True) == "Token renewed"
    new = labelled(soup, "Token")["value"]
    copy_button(soup, labelled(soup, "Token"))
    assert labelled(soup, "Target SCIM URL")["value"] == SCIM_URL
    assert "shown only now" in soup.find(class_="banner", role="alert").get_text()
    assert new != old
    assert scim_status(client, old) == 401
    assert scim_status(client, new) == 200
    (stored,) = tokens(app)
    assert stored.id == token.id
    assert stored.renewed_at is not None
    assert stored.secret_hash == hashlib.sha256(new.encode()).hexdigest()
    for url in ("/admin/provisioning/entra", confirm_url, secret_url):
        assert new not in console.get(url).get_data(as_text=True)


def test_remove_deletes_only_the_token(app, client, console, scim):
    """Remove confirms, then deletes the token; users and groups stay."""
    user = scim.create_user("kept@example.com")
    group = scim.create_group("Kept", members=[user["id"]])
    (token,) = tokens(app)

    response = act(console, token, "remove")
    assert response.status_code == 302
    confirm_url = urlsplit(response.location).path
    assert confirm_url == f"/admin/provisioning/entra/tokens/{token.id}/remove"
    soup = page(console.get(confirm_url))
    assert soup.find("h1").get_text(strip=True) == f"Remove token {token.key}?"
    assert (
        soup.main.find("button", type="submit").get_text(strip=True) == "Remove token"
    )
    assert len(tokens(app)) == 1

    response = console.post(confirm_url)
    assert response.status_code == 302
    soup = page(console.get(response.location))
    assert f"Token {token.key} removed." in flashes(soup)
    assert token_rows(soup) == []
    assert tokens(app) == []
    assert scim_status(client, scim.secret) == 401
    with app.app_context(), database.connection_context():
        (kept_user,) = User.select()
        (kept_group,) = Group.select()
        assert kept_user.scim_id == user["id"]
        assert kept_user.deprovisioned_at is None
        assert kept_group.scim_id == group["id"]
        assert kept_group.deprovisioned_at is None
        assert [m.user.scim_id for m in kept_group.memberships] == [user["id"]]


def test_removed_token_cannot_be_acted_on(app, console):
    """Actions on a removed token answer 404."""
    token, _ = issue_token(app, "entra")
    console.post(f"/admin/provisioning/entra/tokens/{token.id}/remove")
    assert act(console, token, "activate").status_code == 404
    url = f"/admin/provisioning/entra/tokens/{token.id}/renew"
    assert console.get(url).status_code == 404
    assert tokens(app) == []


#
# Two tokens per connection
#


def test_generate_disabled_when_two_tokens_exist(app, console):
    """With two tokens, Generate is disabled and the limit is explained."""
    soup = page(console.get("/admin/provisioning/entra"))
    head = soup.select_one(".card-head")
    assert head.find("a", string="Generate")["href"].endswith("/entra/generate")

    issue_token(app, "entra")
    issue_token(app, "entra")
    soup = page(console.get("/admin/provisioning/entra"))
    head = soup.select_one(".card-head")
    assert head.find("a", string="Generate") is None
    disabled = head.find(string="Generate").parent
    assert disabled.get("aria-disabled") == "true"
    assert not disabled.has_attr("href")
    note = " ".join(soup.find(id="limit-note").get_text().split())
    assert "A maximum of 2 tokens can exist for Entra ID" in note

    soup = page(console.get("/admin/provisioning/entra/generate"))
    assert soup.main.find("form") is None
    assert "already has 2 tokens" in soup.find(role="alert").get_text()


def test_third_token_is_refused(app, console):
    """A forced third Generate flashes the limit and creates nothing."""
    issue_token(app, "entra")
    issue_token(app, "entra")
    response = generate(console, label="third", follow=False)
    assert response.status_code == 302
    assert urlsplit(response.location).path == "/admin/provisioning/entra"
    soup = page(console.get(response.location))
    assert "Entra ID already has 2 tokens; remove or renew one instead." in flashes(
        soup
    )
    assert len(tokens(app)) == 2
    assert all(t.label != "third" for t in tokens(app))


def test_token_limit_is_per_connection(app, console):
    """Two Entra ID tokens leave Okta free to generate its own."""
    issue_token(app, "entra")
    issue_token(app, "entra")
    soup = page(console.get("/admin/provisioning/okta"))
    assert soup.select_one(".card-head").find("a", string="Generate") is not None
    assert soup.find(id="limit-note") is None
    assert shown_secret(generate(console, "okta")).startswith("mdm_")
    assert shown_secret(generate(console, "okta")).startswith("mdm_")
    assert generate(console, "okta", follow=False).status_code == 302
    assert len(tokens(app, "okta")) == 2
    assert len(tokens(app, "entra")) == 2
    assert tokens(app, "generic") == []


def test_removing_a_token_frees_its_slot(app, console):
    """After removing one of two tokens, Generate works again."""
    first, _ = issue_token(app, "entra")
    issue_token(app, "entra")
    console.post(f"/admin/provisioning/entra/tokens/{first.id}/remove")
    assert shown_secret(generate(console)).startswith("mdm_")
    assert len(tokens(app, "entra")) == 2


#
# Banners
#


def test_banner_when_no_token(console):
    """Without any token the page warns that the IdP cannot provision."""
    soup = page(console.get("/admin/provisioning/entra"))
    assert any(b.startswith("No active token") for b in banners(soup))


def test_banner_when_only_inactive_tokens(app, console):
    """Inactive tokens alone still leave the connection without an active token."""
    token, _ = issue_token(app, "entra")
    soup = page(console.get("/admin/provisioning/entra"))
    assert not any(b.startswith("No active token") for b in banners(soup))
    console.post(f"/admin/provisioning/entra/tokens/{token.id}/deactivate")
    soup = page(console.get("/admin/provisioning/entra"))
    assert (
        "No active token: the identity provider cannot provision until you "
        "generate a token or set one to Active."
    ) in banners(soup)


def test_banner_with_two_inactive_tokens_says_what_can_be_done(app, console):
    """With no room to generate, the banner points at Set to Active or Remove."""
    for _ in range(2):
        token, _ = issue_token(app, "entra")
        console.post(f"/admin/provisioning/entra/tokens/{token.id}/deactivate")
    soup = page(console.get("/admin/provisioning/entra"))
    assert [b for b in banners(soup) if b.startswith("No active token")] == [
        "No active token: the identity provider cannot provision until you set a "
        "token to Active, or remove one to make room for a new one."
    ]


def audit_events(app):
    """Return the audit trail's events, oldest first, once the writer caught up."""
    activity.writer.flush()
    with app.app_context(), activity.activity_db.connection_context():
        return [
            (e.event, e.details)
            for e in activity.AuditEvent.select().order_by(activity.AuditEvent.id)
        ]


def test_deactivate_with_another_active_token_needs_no_confirmation(app, console):
    """While a second token is active, Set to Inactive applies at once."""
    first, _ = issue_token(app, "entra")
    second, _ = issue_token(app, "entra")
    response = act(console, first, "deactivate")
    assert urlsplit(response.location).path == "/admin/provisioning/entra"
    assert [t.status for t in tokens(app)] == ["Inactive", "Active"]
    # Now the second is the last active one.
    response = act(console, second, "deactivate")
    assert urlsplit(response.location).path == (
        f"/admin/provisioning/entra/tokens/{second.id}/deactivate"
    )
    assert [t.status for t in tokens(app)] == ["Inactive", "Active"]


@pytest.mark.parametrize(
    "action, state", [("activate", "Active"), ("deactivate", "Inactive")]
)
def test_setting_the_state_a_token_has_changes_and_audits_nothing(
    app, console, action, state
):
    token, _ = issue_token(app, "entra")
    if state == "Inactive":
        issue_token(app, "entra")  # so no confirmation is asked
        act(console, token, "deactivate")
        console.get("/admin/provisioning/entra")  # shows its message
    before = audit_events(app)
    soup = page(console.get(act(console, token, action).location))
    assert flashes(soup) == [f"Token {token.key} is already {state}; nothing changed."]
    assert audit_events(app) == before
    assert tokens(app)[0].status == state


@pytest.mark.parametrize(
    "public_url, warning",
    [
        (
            None,
            "localhost cannot be reached from the internet: Entra ID and Okta need a "
            "public HTTPS URL.",
        ),
        (
            "https://10.1.2.3",
            "10.1.2.3 cannot be reached from the internet: Entra ID and Okta need a "
            "public HTTPS URL.",
        ),
        (
            "http://mdm.example.com",
            "This URL is not HTTPS: Entra ID and Okta refuse it.",
        ),
        ("https://mdm.example.com", None),
    ],
)
def test_target_url_that_cannot_work_is_called_out(app, console, public_url, warning):
    app.config["PUBLIC_URL"] = public_url
    pages = [console.get("/admin/provisioning/entra")]
    pages.append(generate(console))
    for response in pages:
        note = page(response).find(id="url-warning")
        if warning is None:
            assert note is None
        else:
            assert text_of(note) == (
                f"{warning} Set MDM_PUBLIC_URL to the https:// address your reverse "
                "proxy serves."
            )


def test_banner_for_a_token_expiring_soon(app, console):
    """A token expiring within 30 days is announced with its key and date."""
    soon, _ = issue_token(app, "entra", expires_in_days=10)
    later, _ = issue_token(app, "entra", expires_in_days=90)
    soup = page(console.get("/admin/provisioning/entra"))
    expiring = [b for b in banners(soup) if "expires in" in b]
    assert len(expiring) == 1
    assert f"Token {soon.key} expires in" in expiring[0]
    assert soon.expires_at.strftime("%Y-%m-%d") in expiring[0]
    assert later.key not in " ".join(banners(soup))


def test_no_expiry_banner_for_distant_or_no_expiry(app, console):
    """Tokens expiring in more than 30 days, or never, raise no expiry banner."""
    issue_token(app, "entra", expires_in_days=31)
    issue_token(app, "entra")
    soup = page(console.get("/admin/provisioning/entra"))
    assert banners(soup) == []


def test_banner_when_scim_disabled(app, console):
    """SCIM_ENABLED off is announced on every connection page."""
    issue_token(app, "entra")
    app.config["SCIM_ENABLED"] = False
    for idp in IDP_NAMES:
        soup = page(console.get(f"/admin/provisioning/{idp}"))
        alert = soup.find(class_="banner", role="alert")
        assert alert is not None
        assert "SCIM_ENABLED is off" in alert.get_text()
    app.config["SCIM_ENABLED"] = True
    soup = page(console.get("/admin/provisioning/entra"))
    assert soup.find(class_="banner", role="alert") is None


#
# Caching
#


def test_console_pages_are_not_cached(app, console, scim):
    """Every console page, and above all the secret page, sends no-store."""
    token, _ = issue_token(app, "okta")
    user = scim.create_user("cache@example.com")
    group = scim.create_group("Cache")
    responses = [
        console.get("/admin/provisioning/entra"),
        console.get("/admin/provisioning/okta/generate"),
        generate(console, "generic"),
        console.get(f"/admin/provisioning/okta/tokens/{token.id}/renew"),
        console.post(
            f"/admin/provisioning/okta/tokens/{token.id}/renew", follow_redirects=True
        ),
        console.get(f"/admin/provisioning/okta/tokens/{token.id}/remove"),
        console.get("/admin/users"),
        console.get(f"/admin/users/{user['id']}"),
        console.get("/admin/groups"),
        console.get(f"/admin/groups/{group['id']}"),
        console.get("/admin/attributes"),
        act(console, token, "deactivate", idp="okta"),
    ]
    for response in responses:
        assert response.status_code in (200, 302), response.request.path
        assert response.headers.get("Cache-Control") == "no-store", (
            response.request.path
        )


def test_scim_client_with_generated_token(app, client, console):
    """A token from the console provisions users like any other."""
    secret = shown_secret(generate(console, "okta"))
    okta = ScimClient(app.test_client(), secret)
    created = okta.create_user("from-console@example.com")
    with app.app_context(), database.connection_context():
        assert User.get(User.scim_id == created["id"]).source == "okta"
    (token,) = tokens(app, "okta")
    assert token.last_used_at is not None


#
# A reload never repeats the action
#


def secret_page_heading(response):
    return page(response).find("h1").get_text(strip=True)


def test_reloading_the_generated_secret_changes_nothing(app, client, console):
    """Generate redirects to the secret; a reload shows it gone, and issues nothing."""
    response = generate(console, follow=False)
    assert response.status_code == 302
    (token,) = tokens(app)
    secret_url = f"/admin/provisioning/entra/tokens/{token.id}/secret"
    assert urlsplit(response.location).path == secret_url
    secret = shown_secret(console.get(secret_url))
    assert scim_status(client, secret) == 200

    reload = console.get(secret_url)
    assert reload.status_code == 410
    assert secret_page_heading(reload) == "Secret no longer available"
    assert secret not in reload.get_data(as_text=True)
    assert "renew the token" in page(reload).find(role="status").get_text()
    assert [t.id for t in tokens(app)] == [token.id]
    assert scim_status(client, secret) == 200
    with app.app_context(), database.connection_context():
        assert not Setting.select().where(Setting.name.startswith("reveal:")).exists()


def test_reloading_the_renewed_secret_keeps_it_working(app, client, console):
    """A reload after Renew renews nothing: the secret just copied keeps working."""
    token, _ = issue_token(app, "entra")
    url = f"/admin/provisioning/entra/tokens/{token.id}/renew"
    secret = shown_secret(console.post(url, follow_redirects=True))
    reload = console.get(f"/admin/provisioning/entra/tokens/{token.id}/secret")
    assert reload.status_code == 410
    assert secret not in reload.get_data(as_text=True)
    (stored,) = tokens(app)
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert scim_status(client, secret) == 200


def test_a_secret_is_shown_only_to_the_session_that_made_it(app, console):
    """Another signed-in session, or another token's URL, finds nothing to show."""
    generate(console, follow=False)
    (token,) = tokens(app)
    other, _ = issue_token(app, "okta")
    url = f"/admin/provisioning/entra/tokens/{token.id}/secret"
    wrong = console.get(f"/admin/provisioning/okta/tokens/{other.id}/secret")
    assert wrong.status_code == 410
    stranger = app.test_client()
    stranger.post("/login", data={"username": "alice", "password": PASSWORD})
    assert stranger.get(url).status_code == 410
    # The session that generated it still gets it, once.
    assert shown_secret(console.get(url)).startswith("mdm_")


def test_the_stored_half_of_a_kept_secret_reveals_nothing(app, console):
    """Until it is shown, the database holds the secret XOR a pad the session holds."""
    generate(console, follow=False)
    with app.app_context(), database.connection_context():
        (row,) = Setting.select().where(Setting.name.startswith("reveal:"))
    (token,) = tokens(app)
    secret = shown_secret(
        console.get(f"/admin/provisioning/entra/tokens/{token.id}/secret")
    )
    assert secret not in row.value
    assert secret.encode().hex() not in row.value


def test_an_unopened_secret_expires(app, console, monkeypatch):
    """A secret not shown within its lifetime is gone, and pruned by the next one kept."""
    from mdm.console import reveal

    generate(console, follow=False)
    now = reveal.utcnow()
    monkeypatch.setattr(reveal, "utcnow", lambda: now + reveal.LIFETIME)
    generate(console, "okta", follow=False)
    with app.app_context(), database.connection_context():
        kept = list(Setting.select().where(Setting.name.startswith("reveal:")))
    (okta,) = tokens(app, "okta")
    assert [json.loads(row.value)["token"] for row in kept] == [okta.id]
    monkeypatch.setattr(reveal, "utcnow", lambda: now + 2 * reveal.LIFETIME)
    url = f"/admin/provisioning/okta/tokens/{okta.id}/secret"
    assert console.get(url).status_code == 410
