"""Admin console User Provisioning, OAuth 2.0 clients: the method choice, the secret shown once, actions, limits."""

import base64
import hashlib
from datetime import timedelta
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest

from mdm import activity
from mdm.console import dashboard
from mdm.db import database
from mdm.models import AccessToken
from mdm.models import OAuthClient
from mdm.models import Setting
from mdm.models import utcnow

from .conftest import ScimClient
from .conftest import issue_token
from .test_admin_auth import add_admin
from .test_admin_auth import csrf_app  # noqa: F401 (fixture)
from .test_admin_auth import csrf_login
from .test_admin_tokens import audit_events
from .test_admin_tokens import banners
from .test_admin_tokens import copy_button
from .test_admin_tokens import flashes
from .test_admin_tokens import generate
from .test_admin_tokens import labelled
from .test_admin_tokens import page
from .test_admin_tokens import shown_secret
from .test_admin_tokens import text_of
from .test_admin_tokens import token_rows
from .test_admin_tokens import tokens

SCIM_URL = "http://localhost/scim/v2"
TOKEN_ENDPOINT = "http://localhost/oauth/token"
CLIENT_HEADERS = [
    "Label",
    "Client ID",
    "Status",
    "Created",
    "Created by",
    "Expires",
    "Last used",
    "Last client",
    "Actions",
]


def clients(app, idp=None):
    """Return stored OAuth clients, optionally for one connection."""
    with app.app_context(), database.connection_context():
        query = OAuthClient.select().order_by(OAuthClient.id)
        if idp:
            query = query.where(OAuthClient.idp == idp)
        return list(query)


def client_events(app):
    """Return the audit trail's OAuth client events, oldest first."""
    return [e for e in audit_events(app) if e[0].startswith("OAuth Client")]


def issue_client(app, idp="entra", **kwargs):
    """Create a client directly in the database and return (client, secret)."""
    with app.app_context(), database.connection_context():
        return OAuthClient.issue(idp, **kwargs)


def add(client, idp="entra", follow=True, **data):
    """Post the Add client form; return the page it redirects to (the secret, once)."""
    data.setdefault("expiry", "never")
    return client.post(
        f"/admin/provisioning/{idp}/clients/add", data=data, follow_redirects=follow
    )


def shown(response):
    """Return (client id, secret, token endpoint, target URL) shown on a client's secret page."""
    assert response.status_code == 200
    soup = page(response)
    fields = [
        labelled(soup, name)
        for name in ("Client Identifier", "Client Secret", "Token Endpoint")
    ]
    for field in fields:
        assert field.has_attr("readonly")
        copy_button(soup, field)
    return (*(f["value"] for f in fields), labelled(soup, "Target SCIM URL")["value"])


def act(console, oauth_client, action, idp="entra"):
    """Apply a client row's Select action."""
    return console.post(
        f"/admin/provisioning/{idp}/clients/{oauth_client.id}", data={"action": action}
    )


def fetch_token(client, client_id, secret):
    """Ask the token endpoint for an access token with HTTP Basic; return the response."""
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )


def access_token(client, client_id, secret):
    response = fetch_token(client, client_id, secret)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]


def scim_status(client, token):
    return ScimClient(client, token).get("/Users").status_code


def oauth_page(console, idp="entra"):
    response = console.get(f"/admin/provisioning/{idp}?auth=oauth")
    assert response.status_code == 200
    return page(response)


def chosen(soup):
    """Return the authentication method the page shows."""
    nav = soup.find(attrs={"aria-label": "Authentication"})
    (current,) = nav.find_all("a", attrs={"aria-current": "page"})
    return text_of(current)


#
# The method choice
#


def test_the_choice_offers_both_methods_and_says_both_work(console):
    soup = page(console.get("/admin/provisioning/entra"))
    nav = soup.find(attrs={"aria-label": "Authentication"})
    links = {text_of(a): a["href"] for a in nav.find_all("a")}
    assert links == {
        "Bearer token": "/admin/provisioning/entra?auth=bearer",
        "OAuth 2.0 client credentials": "/admin/provisioning/entra?auth=oauth",
    }
    assert text_of(soup.find(id="auth-hint")) == (
        "Tokens and OAuth clients both work at the same time, whichever is shown here."
    )


def test_the_default_method_follows_the_connections_credentials(app, console):
    """OAuth is shown when a connection has clients and no tokens; else Bearer."""
    assert chosen(page(console.get("/admin/provisioning/entra"))) == "Bearer token"
    issue_client(app, "entra")
    assert chosen(page(console.get("/admin/provisioning/entra"))) == (
        "OAuth 2.0 client credentials"
    )
    issue_token(app, "entra")
    assert chosen(page(console.get("/admin/provisioning/entra"))) == "Bearer token"
    assert chosen(oauth_page(console)) == "OAuth 2.0 client credentials"
    # Anything else is the default, never an error.
    response = console.get("/admin/provisioning/entra?auth=saml")
    assert response.status_code == 200
    assert chosen(page(response)) == "Bearer token"


def test_oauth_view_shows_endpoint_url_and_empty_table(console):
    soup = oauth_page(console)
    endpoint = labelled(soup, "Token Endpoint")
    assert endpoint["value"] == TOKEN_ENDPOINT
    assert endpoint.has_attr("readonly")
    copy_button(soup, endpoint)
    assert labelled(soup, "Target SCIM URL")["value"] == SCIM_URL
    assert soup.find("table") is None
    assert text_of(soup.select_one("p.empty")).startswith("No OAuth clients yet.")
    add_link = soup.find("a", string="Add client")
    assert add_link["href"] == "/admin/provisioning/entra/clients/add"
    assert banners(soup) == [
        "No active OAuth client or token: the identity provider cannot provision "
        "until you add an OAuth client or set one to Active."
    ]


def test_token_endpoint_follows_public_url(app, console):
    app.config["PUBLIC_URL"] = "https://mdm.example.com/"
    soup = oauth_page(console)
    assert labelled(soup, "Token Endpoint")["value"] == (
        "https://mdm.example.com/oauth/token"
    )


def test_entra_oauth_steps_name_entra_fields(app, console):
    app.config["OAUTH_TOKEN_MINUTES"] = 45
    section = oauth_page(console).select_one("section.instructions")
    terms = [text_of(s) for s in section.find_all("strong")]
    for term in (
        "Provisioning",
        "Admin Credentials",
        "Authentication Method",
        "OAuth2 Client Credentials Grant",
        "Tenant URL",
        "Token Endpoint",
        "Client Identifier",
        "Client Secret",
        "Test Connection",
        "Save",
    ):
        assert term in terms
    assert "Secret Token" not in terms
    assert "each one lives 45 minutes" in section.get_text()


def test_okta_oauth_view_says_to_choose_bearer(console):
    soup = oauth_page(console, "okta")
    note = " ".join(soup.find(id="okta-oauth").get_text().split())
    assert note == (
        "Okta's SCIM app authenticates with a static bearer token, entered in its "
        "OAuth Bearer Token field; it cannot fetch tokens from a token endpoint. "
        "Choose Bearer token for Okta."
    )
    # Nothing on the page advises adding a client for Okta.
    assert banners(soup)[1:] == [
        "No active token: the identity provider cannot provision until you "
        "generate a token or set one to Active."
    ]
    assert "primary" not in soup.find("a", string="Add client")["class"]
    assert text_of(soup.select_one("p.empty")) == (
        "No OAuth clients. Okta's SCIM app cannot use one; other tools on this "
        "connection can."
    )
    section = soup.select_one("section.instructions")
    assert section.find("ol") is None
    assert "cannot use a token endpoint" in section.get_text()
    link = section.find("a", string="Bearer token")
    assert link["href"] == "/admin/provisioning/okta?auth=bearer"


def test_generic_oauth_steps(app, console):
    app.config["OAUTH_TOKEN_MINUTES"] = 30
    section = oauth_page(console, "generic").select_one("section.instructions")
    codes = {text_of(c) for c in section.find_all("code")}
    assert {
        "grant_type=client_credentials",
        "client_secret_basic",
        "client_secret_post",
        "scope=scim",
        "OAUTH_TOKEN_MINUTES",
    } <= codes
    assert "It lives 30 minutes" in section.get_text()


#
# Add and the secret shown once
#


def test_add_asks_first_and_creates_nothing(app, console):
    response = console.get("/admin/provisioning/entra/clients/add")
    assert response.status_code == 200
    soup = page(response)
    assert text_of(soup.find("h1")) == "Add an OAuth Client for Entra ID?"
    assert labelled(soup, "Label (optional)").name == "input"
    assert labelled(soup, "Expires").name == "select"
    assert clients(app) == []


def test_add_shows_the_three_values_once(app, client, console):
    response = add(console, label="prod", follow=False)
    assert response.status_code == 302
    (stored,) = clients(app)
    secret_url = f"/admin/provisioning/entra/clients/{stored.id}/secret"
    assert urlsplit(response.location).path == secret_url
    shown_page = console.get(secret_url)
    client_id, secret, endpoint, target = shown(shown_page)
    assert client_id == stored.client_id
    assert client_id.startswith("mdmc_")
    assert secret.startswith("mdmcs_")
    assert endpoint == TOKEN_ENDPOINT
    assert target == SCIM_URL
    soup = page(shown_page)
    assert text_of(soup.find("h1")) == "OAuth Client Added"
    assert " ".join(soup.select_one("main").get_text().split()) == (
        "OAuth Client Added This client secret is shown only now. Copy it into "
        "Entra ID before you leave this page; only the Client ID, "
        f"{client_id}, is kept. Client Identifier Copy Client Secret Copy "
        "Token Endpoint Copy Target SCIM URL Copy "
        "localhost cannot be reached from the internet: Entra ID and Okta need a "
        "public HTTPS URL. Set MDM_PUBLIC_URL to the https:// address your reverse "
        "proxy serves. I've copied it"
    )
    back = soup.find("a", string="I've copied it")
    assert back["href"] == "/admin/provisioning/entra?auth=oauth"
    # Only a hash is stored.
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert stored.label == "prod"
    assert stored.created_by == "alice"
    assert scim_status(client, access_token(client, client_id, secret)) == 200

    reload = console.get(secret_url)
    assert reload.status_code == 410
    body = reload.get_data(as_text=True)
    assert secret not in body
    soup = page(reload)
    assert text_of(soup.find("h1")) == "Secret No Longer Available"
    assert " ".join(soup.find(role="status").get_text().split()) == (
        f"The secret of client {client_id} was shown once and is not kept, so it "
        "cannot be shown again. The client itself is unchanged. If you did not copy "
        "the secret, renew the client to get a new one."
    )
    assert [c.id for c in clients(app)] == [stored.id]
    with app.app_context(), database.connection_context():
        assert not Setting.select().where(Setting.name.startswith("reveal:")).exists()


def test_expiry_choice_sets_the_client_expiry(app, console):
    add(console, expiry="90")
    (stored,) = clients(app)
    assert timedelta(days=89) < stored.expires_at - utcnow() <= timedelta(days=90)


def test_bad_input_is_a_form_message(app, console):
    response = add(console, expiry="7", label="x" * 101)
    assert response.status_code == 200
    errors = [text_of(e) for e in page(response).select("p.error")]
    assert errors == [
        "Field cannot be longer than 100 characters.",
        "Not a valid choice.",
    ]
    assert clients(app) == []


def test_a_token_ticket_never_reveals_a_client_secret(app, console):
    """A token and a client with the same row id: each page shows only its own kind."""
    add(console, follow=False)
    (oauth_client,) = clients(app)
    token, _ = issue_token(app, "entra")
    assert token.id == oauth_client.id
    wrong = console.get(f"/admin/provisioning/entra/tokens/{token.id}/secret")
    assert wrong.status_code == 410
    assert "mdmcs_" not in wrong.get_data(as_text=True)
    # The client's ticket is still there for its own page.
    _, secret, _, _ = shown(
        console.get(f"/admin/provisioning/entra/clients/{oauth_client.id}/secret")
    )
    assert secret.startswith("mdmcs_")


def test_a_client_ticket_never_reveals_a_token_secret(app, console):
    generate(console, follow=False)
    (token,) = tokens(app)
    oauth_client, _ = issue_client(app, "entra")
    assert oauth_client.id == token.id
    wrong = console.get(f"/admin/provisioning/entra/clients/{oauth_client.id}/secret")
    assert wrong.status_code == 410
    assert "mdm_" + token.key not in wrong.get_data(as_text=True)
    right = console.get(f"/admin/provisioning/entra/tokens/{token.id}/secret")
    assert shown_secret(right).startswith(f"mdm_{token.key}_")


def test_client_table_columns(app, client, console):
    _, secret, _, _ = shown(add(console, label="<b>prod</b>", expiry="90"))
    (stored,) = clients(app)
    token = access_token(client, stored.client_id, secret)
    ScimClient(client, token).get("/Users", headers={"User-Agent": "Entra <SCIM>"})
    other, _ = issue_client(app, "entra")
    soup = oauth_page(console)
    assert [text_of(th) for th in soup.select("table thead th")] == CLIENT_HEADERS
    used, unused = token_rows(soup)
    assert text_of(used["Label"]) == "<b>prod</b>"
    assert text_of(used["Client ID"]) == stored.client_id
    assert text_of(used["Status"]) == "Active"
    assert text_of(used["Created by"]) == "alice"
    assert " ".join(used["Expires"].get_text().split()) == (
        stored.expires_at.strftime("%Y-%m-%d %H:%M")
    )
    assert used["Last used"].find("time") is not None
    assert text_of(used["Last client"]) == "Entra <SCIM>"
    assert text_of(unused["Client ID"]) == other.client_id
    assert text_of(unused["Expires"]) == "Never"
    assert text_of(unused["Last used"]) == "Never"
    assert text_of(unused["Created by"]) == "—"
    options = [text_of(o) for o in used["Actions"].find_all("option")]
    assert options == ["Select", "Set to Active", "Set to Inactive", "Renew", "Remove"]
    # Tokens keep their own column name and table, on the other view.
    bearer = page(console.get("/admin/provisioning/entra?auth=bearer"))
    assert bearer.find("table") is None


#
# The limit
#


def test_add_is_disabled_at_two_clients(app, console):
    issue_client(app, "entra")
    issue_client(app, "entra")
    soup = oauth_page(console)
    assert soup.find("a", string="Add client") is None
    disabled = soup.find("span", string="Add client")
    assert disabled["aria-disabled"] == "true"
    assert text_of(soup.find(id="limit-note")) == (
        "A maximum of 2 OAuth clients can exist for Entra ID. Renew or remove a "
        "client to make room."
    )
    response = console.get("/admin/provisioning/entra/clients/add")
    assert "Entra ID already has 2 OAuth clients." in text_of(page(response))
    response = add(console)
    assert flashes(page(response)) == [
        "Entra ID already has 2 OAuth clients; remove or renew one instead."
    ]
    assert len(clients(app)) == 2
    # The limit is per connection, and apart from tokens.
    add(console, "okta")
    generate(console)
    assert len(clients(app, "okta")) == 1
    assert len(tokens(app, "entra")) == 1


#
# Actions, their audit rows, and access tokens that stop at once
#


def test_deactivate_and_activate(app, client, console):
    first, first_secret = issue_client(app, "entra")
    issue_client(app, "entra")
    token = access_token(client, first.client_id, first_secret)
    response = act(console, first, "deactivate")
    assert response.status_code == 302
    assert urlsplit(response.location).path == "/admin/provisioning/entra"
    assert parse_qs(urlsplit(response.location).query) == {"auth": ["oauth"]}
    assert flashes(page(console.get(response.location))) == [
        f"Client {first.client_id} is now Inactive."
    ]
    assert [c.status for c in clients(app)] == ["Inactive", "Active"]
    assert scim_status(client, token) == 401
    refused = fetch_token(client, first.client_id, first_secret)
    assert (refused.status_code, refused.get_json()["error"]) == (
        400,
        "unauthorized_client",
    )
    act(console, first, "activate")
    assert [c.status for c in clients(app)] == ["Active", "Active"]
    # The revoked access token stays revoked; a new one works.
    assert scim_status(client, token) == 401
    assert scim_status(client, access_token(client, first.client_id, first_secret)) == (
        200
    )
    assert client_events(app) == [
        ("OAuth Client Disabled", f"IdP: Entra ID; client {first.client_id}"),
        ("OAuth Client Enabled", f"IdP: Entra ID; client {first.client_id}"),
    ]


def test_setting_the_state_a_client_has_changes_nothing(app, console):
    oauth_client, _ = issue_client(app, "entra")
    response = act(console, oauth_client, "activate")
    assert flashes(page(console.get(response.location))) == [
        f"Client {oauth_client.client_id} is already Active; nothing changed."
    ]
    assert client_events(app) == []


def test_the_last_active_credential_asks_first(app, client, console):
    oauth_client, secret = issue_client(app, "entra")
    token = access_token(client, oauth_client.client_id, secret)
    response = act(console, oauth_client, "deactivate")
    confirm_url = f"/admin/provisioning/entra/clients/{oauth_client.id}/deactivate"
    assert urlsplit(response.location).path == confirm_url
    assert [c.status for c in clients(app)] == ["Active"]
    soup = page(console.get(confirm_url))
    assert text_of(soup.find("h1")) == (
        f"Set client {oauth_client.client_id} to Inactive?"
    )
    assert text_of(soup.find("p")) == (
        "It is the only active credential for Entra ID: provisioning stops, its "
        "access tokens stop working at once, and Entra ID gets 401 on every request "
        "until you set a client or token to Active."
    )
    assert scim_status(client, token) == 200
    console.post(confirm_url)
    assert [c.status for c in clients(app)] == ["Inactive"]
    assert scim_status(client, token) == 401
    assert client_events(app) == [
        ("OAuth Client Disabled", f"IdP: Entra ID; client {oauth_client.client_id}")
    ]


def test_an_active_token_means_the_client_is_not_the_last(app, console):
    """Both methods work at once: an active token keeps the connection live."""
    oauth_client, _ = issue_client(app, "entra")
    token, _ = issue_token(app, "entra")
    response = act(console, oauth_client, "deactivate")
    assert urlsplit(response.location).path == "/admin/provisioning/entra"
    assert [c.status for c in clients(app)] == ["Inactive"]
    # And the other way round: the token is now the last active credential.
    response = console.post(
        f"/admin/provisioning/entra/tokens/{token.id}", data={"action": "deactivate"}
    )
    assert urlsplit(response.location).path == (
        f"/admin/provisioning/entra/tokens/{token.id}/deactivate"
    )


def test_renew_keeps_the_id_and_replaces_the_secret(app, client, console):
    oauth_client, old_secret = issue_client(app, "entra")
    token = access_token(client, oauth_client.client_id, old_secret)
    url = f"/admin/provisioning/entra/clients/{oauth_client.id}/renew"
    response = act(console, oauth_client, "renew")
    assert urlsplit(response.location).path == url
    soup = page(console.get(url))
    assert text_of(soup.find("h1")) == f"Renew client {oauth_client.client_id}?"
    assert soup.find("button", string="Renew client") is not None
    assert scim_status(client, token) == 200  # asking changes nothing

    renewed = console.post(url, follow_redirects=True)
    client_id, secret, _, _ = shown(renewed)
    assert text_of(page(renewed).find("h1")) == "Client Secret Renewed"
    assert client_id == oauth_client.client_id
    assert secret != old_secret
    assert scim_status(client, token) == 401
    assert fetch_token(client, client_id, old_secret).status_code == 401
    assert scim_status(client, access_token(client, client_id, secret)) == 200
    (stored,) = clients(app)
    assert stored.id == oauth_client.id
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert client_events(app) == [
        ("OAuth Client Renewed", f"IdP: Entra ID; client {client_id}")
    ]
    reload = console.get(f"/admin/provisioning/entra/clients/{oauth_client.id}/secret")
    assert reload.status_code == 410
    assert secret not in reload.get_data(as_text=True)


def test_remove_deletes_the_client_and_its_access_tokens(app, client, console):
    oauth_client, secret = issue_client(app, "entra")
    token = access_token(client, oauth_client.client_id, secret)
    url = f"/admin/provisioning/entra/clients/{oauth_client.id}/remove"
    response = act(console, oauth_client, "remove")
    assert urlsplit(response.location).path == url
    soup = page(console.get(url))
    assert text_of(soup.find("h1")) == f"Remove client {oauth_client.client_id}?"
    assert clients(app) != []
    response = console.post(url, follow_redirects=True)
    assert flashes(page(response)) == [f"Client {oauth_client.client_id} removed."]
    assert clients(app) == []
    with app.app_context(), database.connection_context():
        assert AccessToken.select().count() == 0
    assert scim_status(client, token) == 401
    assert fetch_token(client, oauth_client.client_id, secret).status_code == 401
    assert client_events(app) == [
        ("OAuth Client Deleted", f"IdP: Entra ID; client {oauth_client.client_id}")
    ]
    assert console.get(url).status_code == 404


def test_created_is_audited(app, console):
    add(console)
    (oauth_client,) = clients(app)
    assert client_events(app) == [
        ("OAuth Client Created", f"IdP: Entra ID; client {oauth_client.client_id}")
    ]


@pytest.mark.parametrize(
    "suffix, method",
    [
        ("", "post"),
        ("/deactivate", "get"),
        ("/renew", "get"),
        ("/renew", "post"),
        ("/remove", "post"),
        ("/secret", "get"),
    ],
)
def test_another_connections_client_is_404(app, console, suffix, method):
    oauth_client, _ = issue_client(app, "okta")
    url = f"/admin/provisioning/entra/clients/{oauth_client.id}{suffix}"
    response = getattr(console, method)(url, data={"action": "remove"})
    assert response.status_code == 404
    (stored,) = clients(app)
    assert stored.secret_hash == oauth_client.secret_hash
    assert client_events(app) == []


def test_action_without_choice_changes_nothing(app, console):
    oauth_client, _ = issue_client(app, "entra")
    response = console.post(
        f"/admin/provisioning/entra/clients/{oauth_client.id}", data={"action": "x"}
    )
    assert flashes(page(console.get(response.location))) == ["Choose an action."]
    assert [c.status for c in clients(app)] == ["Active"]


def test_client_forms_need_csrf(csrf_app):  # noqa: F811 (fixture)
    add_admin(csrf_app)
    with csrf_app.app_context(), database.connection_context():
        oauth_client, _ = OAuthClient.issue("entra")
    console = csrf_app.test_client()
    csrf_login(console)
    base = f"/admin/provisioning/entra/clients/{oauth_client.id}"
    for url, data in [
        ("/admin/provisioning/entra/clients/add", {"expiry": "never"}),
        (base, {"action": "deactivate"}),
        (f"{base}/deactivate", {}),
        (f"{base}/renew", {}),
        (f"{base}/remove", {}),
    ]:
        assert console.post(url, data=data).status_code == 400, url
        forged = {**data, "csrf_token": "forged"}
        assert console.post(url, data=forged).status_code == 400, url
    (stored,) = clients(csrf_app)
    assert (stored.client_id, stored.secret_hash, stored.active) == (
        oauth_client.client_id,
        oauth_client.secret_hash,
        True,
    )


#
# Banners and the dashboard
#


def test_an_active_client_means_no_missing_token_banner(app, console):
    issue_client(app, "entra")
    for view in ("bearer", "oauth"):
        soup = page(console.get(f"/admin/provisioning/entra?auth={view}"))
        assert banners(soup) == []


def test_two_inactive_clients_banner_says_what_can_be_done(app, console):
    for _ in range(2):
        oauth_client, _ = issue_client(app, "entra")
        with app.app_context(), database.connection_context():
            OAuthClient.get_by_id(oauth_client.id).set_active(False)
    assert banners(oauth_page(console)) == [
        "No active OAuth client or token: the identity provider cannot provision "
        "until you set a client to Active, or remove one to make room for a new one."
    ]


def test_banner_for_a_client_expiring_soon(app, console):
    soon, _ = issue_client(app, "entra", expires_in_days=10)
    issue_client(app, "entra", expires_in_days=90)
    expected = (
        f"OAuth client {soon.client_id} expires in 9 days "
        f"({soon.expires_at:%Y-%m-%d}). Add a client and update the identity "
        "provider before then."
    )
    # Both methods work at once, so both views warn.
    assert banners(oauth_page(console)) == [expected]
    assert banners(page(console.get("/admin/provisioning/entra?auth=bearer"))) == [
        expected
    ]


def dashboard_page(console):
    response = console.get("/admin/")
    assert response.status_code == 200
    return page(response)


def test_dashboard_counts_an_active_client_as_live(app, client, console):
    oauth_client, secret = issue_client(app, "entra", expires_in_days=10)
    soup = dashboard_page(console)
    card = soup.select_one("#connection-entra")
    assert text_of(card.select_one(".dash-state")) == "No requests yet"
    assert text_of(card.select_one(".dash-tokens")) == "0 active"
    assert text_of(card.select_one(".dash-clients")) == "1 active"
    assert soup.select_one("#connection-okta .dash-clients") is None
    shown_banners = [" ".join(b.get_text().split()) for b in soup.select("div.banner")]
    assert shown_banners == [
        f"Entra ID OAuth client {oauth_client.client_id} expires in 9 days "
        f"({oauth_client.expires_at:%Y-%m-%d}). Add a client and update the identity "
        "provider before then. Open Entra ID OAuth clients"
    ]

    assert scim_status(client, access_token(client, oauth_client.client_id, secret))
    activity.writer.flush()
    card = dashboard_page(console).select_one("#connection-entra")
    assert text_of(card.select_one(".dash-state")) == "Connected"

    with app.app_context(), database.connection_context():
        OAuthClient.get_by_id(oauth_client.id).set_active(False)
    card = dashboard_page(console).select_one("#connection-entra")
    assert text_of(card.select_one(".dash-state")) == "No active token"
    assert text_of(card.select_one(".dash-clients")) == "0 active of 1"


def test_refused_access_tokens_are_named_by_their_client(app, client, console):
    """A refusal counted under a client id, current or removed, names its connection."""
    kept, kept_secret = issue_client(app, "entra")
    gone, _ = issue_client(app, "okta")
    add(console, "generic")
    (made,) = clients(app, "generic")
    console.post(f"/admin/provisioning/generic/clients/{made.id}/remove")
    console.post(f"/admin/provisioning/okta/clients/{gone.id}/remove")
    activity.writer.flush()
    with app.app_context(), database.connection_context():
        found = dashboard.issued_keys(
            {kept.client_id, gone.client_id, made.client_id, "mdmc_0000000000000000"}
        )
    assert found == {
        kept.client_id: "Entra ID",
        made.client_id: "Generic SCIM",
        gone.client_id: "Okta",
    }
