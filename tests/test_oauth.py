"""OAuth 2.0 client credentials: the token endpoint (RFC 6749 §4.4) and its access tokens on SCIM."""

import base64
import hashlib
import json
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import httpx2
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from authlib.integrations.httpx_client import OAuthError
from werkzeug.datastructures import MultiDict

from mdm import activity
from mdm import create_app
from mdm import oauth
from mdm.activity import ActivityEntry
from mdm.activity import AuditEvent
from mdm.activity import Refusal
from mdm.activity import activity_db
from mdm.db import database
from mdm.models import AccessToken
from mdm.models import OAuthClient
from mdm.models import utcnow

from . import served
from .conftest import database_config
from .conftest import issue_token

ORIGIN = "http://localhost"
TOKEN_URL = f"{ORIGIN}/oauth/token"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ACCESS_TOKEN = re.compile(r"^mdmat_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
BASIC_CHALLENGE = 'Basic realm="mdm", charset="UTF-8"'


def new_client(app, idp="entra", **kwargs):
    """Create an OAuth client in the database; return (client, secret)."""
    with app.app_context(), database.connection_context():
        return OAuthClient.issue(idp, **kwargs)


def reload(app, client):
    with app.app_context(), database.connection_context():
        return OAuthClient.get_by_id(client.id)


def authlib_client(app, client_id, secret, method):
    """Authlib's client-credentials client, talking to the app in process."""
    return OAuth2Client(
        client_id,
        secret,
        token_endpoint_auth_method=method,
        transport=httpx2.WSGITransport(app=app),
    )


def post_token(client, data=None, headers=None, **kwargs):
    """POST a raw form to the token endpoint with Flask's test client."""
    return client.post("/oauth/token", data=data, headers=headers or {}, **kwargs)


def basic(client_id, secret):
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def form(client_id, secret, **more):
    return {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
        **more,
    }


def fetch(client, client_id, secret, **more):
    """Return an access token for the client, asserting the endpoint gave one."""
    response = post_token(client, form(client_id, secret, **more))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["access_token"]


def users(client, access_token):
    return client.get(
        "/scim/v2/Users", headers={"Authorization": f"Bearer {access_token}"}
    )


def refused_body():
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "401",
        "detail": "The bearer token is invalid, inactive, expired or removed.",
    }


def assert_refused(client, access_token):
    response = users(client, access_token)
    assert response.status_code == 401
    assert response.get_json() == refused_body()
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="SCIM", error="invalid_token"'
    )


def assert_error(response, status, error, description):
    assert response.status_code == status
    assert response.get_json() == {"error": error, "error_description": description}
    assert response.headers["Content-Type"] == "application/json"
    assert {
        k.lower(): v
        for k, v in response.headers.items()
        if k in ("Cache-Control", "Pragma")
    } == NO_STORE


#
# Fetching tokens with a real OAuth client library
#


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_fetches_a_token_and_provisions_with_it(app, method):
    oauth_client, secret = new_client(app, label="Entra production")
    with authlib_client(app, oauth_client.client_id, secret, method) as session:
        agent = session.headers["User-Agent"]
        token = session.fetch_token(TOKEN_URL, grant_type="client_credentials")
        assert set(token) == {
            "access_token",
            "token_type",
            "expires_in",
            "scope",
            "expires_at",  # added by the library from expires_in
        }
        assert ACCESS_TOKEN.match(token["access_token"])
        assert (token["token_type"], token["expires_in"], token["scope"]) == (
            "Bearer",
            3600,
            "scim",
        )
        created = session.post(
            f"{ORIGIN}/scim/v2/Users",
            json={"schemas": [USER_SCHEMA], "userName": "ada@example.com"},
            headers={"Content-Type": "application/scim+json"},
        )
        assert created.status_code == 201, created.text
        found = session.get(
            f"{ORIGIN}/scim/v2/Users",
            params={"filter": 'userName eq "ada@example.com"'},
        )
        assert found.status_code == 200
        assert [r["id"] for r in found.json()["Resources"]] == [created.json()["id"]]
    # Only the SHA-256 of the access token is kept, under its client.
    with app.app_context(), database.connection_context():
        rows = list(AccessToken.select())
        assert [(r.client_id, r.token_hash) for r in rows] == [
            (
                oauth_client.id,
                hashlib.sha256(token["access_token"].encode()).hexdigest(),
            )
        ]
        stored = OAuthClient.get_by_id(oauth_client.id)
        assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert stored.last_used_at is not None
        assert stored.last_user_agent == agent


def test_token_response_headers_and_body(app, client):
    oauth_client, secret = new_client(app)
    response = post_token(client, form(oauth_client.client_id, secret, scope="scim"))
    assert response.status_code == 200
    body = response.get_json()
    assert list(body) == ["access_token", "token_type", "expires_in", "scope"]
    assert ACCESS_TOKEN.match(body["access_token"])
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "scim"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert "Set-Cookie" not in response.headers


def test_basic_credentials_are_form_decoded(app, client):
    # RFC 6749 §2.3.1: client_id and secret are form-urlencoded inside Basic.
    oauth_client, secret = new_client(app)
    encoded = secret.replace("_", "%5F")
    pair = f"{oauth_client.client_id}:{encoded}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    response = post_token(client, {"grant_type": "client_credentials"}, headers)
    assert response.status_code == 200, response.get_json()


def test_lifetime_follows_the_setting_and_never_outlives_the_secret(tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            "OAUTH_TOKEN_MINUTES": 360,
            **database_config(tmp_path / "mdm.sqlite"),
        }
    )
    client = app.test_client()
    lasting, lasting_secret = new_client(app, label="no expiry")
    response = post_token(client, form(lasting.client_id, lasting_secret))
    assert response.get_json()["expires_in"] == 360 * 60
    # A secret that expires in an hour gets tokens that end with it.
    short, short_secret = new_client(app, label="short", expires_in_days=1)
    with app.app_context(), database.connection_context():
        OAuthClient.update(expires_at=utcnow() + timedelta(minutes=60)).where(
            OAuthClient.id == short.id
        ).execute()
    response = post_token(client, form(short.client_id, short_secret))
    assert 3590 <= response.get_json()["expires_in"] <= 3600


@pytest.mark.parametrize("value", ["4", "1441", "sixty", "1.5"])
def test_an_unusable_lifetime_is_refused_at_start(tmp_path, value):
    from mdm import ConfigError

    with pytest.raises(ConfigError) as error:
        create_app({"TESTING": True, "OAUTH_TOKEN_MINUTES": value})
    assert str(error.value) == (
        f"MDM_OAUTH_TOKEN_MINUTES must be a whole number from 5 to 1440, not {value!r}."
    )


#
# Every error of RFC 6749 §5.2
#


def test_errors_of_the_token_endpoint(app, client):
    oauth_client, secret = new_client(app)
    cid = oauth_client.client_id
    missing_auth = (
        "Client authentication is missing: send client_id and client_secret by HTTP "
        "Basic or in the form."
    )
    cases = [
        # (form, headers, status, error, description)
        (
            {"client_id": cid, "client_secret": secret},
            {},
            400,
            "invalid_request",
            "grant_type is missing.",
        ),
        (
            form(cid, secret, grant_type=""),
            {},
            400,
            "invalid_request",
            "grant_type is missing.",
        ),
        (
            MultiDict(
                [("grant_type", "client_credentials")] * 2
                + [("client_id", cid), ("client_secret", secret)]
            ),
            {},
            400,
            "invalid_request",
            "grant_type is sent more than once.",
        ),
        (
            {"grant_type": "client_credentials"},
            basic(cid, secret) | {},
            200,
            None,
            None,
        ),
        (
            form(cid, secret),
            basic(cid, secret),
            400,
            "invalid_request",
            "Use one client authentication method: HTTP Basic or form fields, not both.",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "mdmc_other"},
            basic(cid, secret),
            400,
            "invalid_request",
            "client_id in the form differs from HTTP Basic.",
        ),
        (
            form(cid, secret, grant_type="password"),
            {},
            400,
            "unsupported_grant_type",
            "Only grant_type=client_credentials is supported.",
        ),
        (
            form(cid, secret, grant_type="authorization_code"),
            {},
            400,
            "unsupported_grant_type",
            "Only grant_type=client_credentials is supported.",
        ),
        (
            form(cid, secret, scope="scim openid"),
            {},
            400,
            "invalid_scope",
            "The only scope is 'scim'; leave scope out or send it.",
        ),
        (
            {"grant_type": "client_credentials"},
            {},
            401,
            "invalid_client",
            missing_auth,
        ),
        (
            {"grant_type": "client_credentials", "client_id": cid},
            {},
            401,
            "invalid_client",
            missing_auth,
        ),
        (
            {"grant_type": "client_credentials"},
            {"Authorization": f"Bearer {secret}"},
            401,
            "invalid_client",
            "The Authorization header is not HTTP Basic.",
        ),
        (
            form(cid, secret + "x"),
            {},
            401,
            "invalid_client",
            "Client authentication failed.",
        ),
        (
            form("mdmc_0000000000000000", secret),
            {},
            401,
            "invalid_client",
            "Client authentication failed.",
        ),
        (
            {"grant_type": "client_credentials"},
            basic(cid, "wrong"),
            401,
            "invalid_client",
            "Client authentication failed.",
        ),
    ]
    for data, headers, status, error, description in cases:
        response = post_token(client, data, headers)
        if status == 200:
            assert response.status_code == 200, response.get_json()
            continue
        assert_error(response, status, error, description)
        if status == 401:
            assert response.headers["WWW-Authenticate"] == BASIC_CHALLENGE
    # Refusals issued nothing.
    with app.app_context(), database.connection_context():
        assert AccessToken.select().count() == 1


def test_requests_that_are_not_a_form_post(app, client):
    oauth_client, secret = new_client(app)
    response = client.get("/oauth/token")
    assert_error(
        response,
        405,
        "invalid_request",
        "Use POST with an application/x-www-form-urlencoded body.",
    )
    assert response.headers["Allow"] == "POST"
    response = client.post(
        "/oauth/token",
        data=json.dumps(form(oauth_client.client_id, secret)),
        headers={"Content-Type": "application/json"},
    )
    assert_error(
        response,
        400,
        "invalid_request",
        "Send the parameters as application/x-www-form-urlencoded.",
    )
    response = post_token(
        client, form(oauth_client.client_id, secret, padding="x" * 9000)
    )
    assert_error(
        response, 400, "invalid_request", "The request body is over 8192 bytes."
    )
    response = post_token(client, form(oauth_client.client_id, secret + "\x00"))
    assert_error(
        response, 400, "invalid_request", "client_secret contains a NUL character."
    )


def test_inactive_and_expired_clients_are_unauthorized(app, client):
    oauth_client, secret = new_client(app)
    with app.app_context(), database.connection_context():
        oauth_client.set_active(False)
    response = post_token(client, form(oauth_client.client_id, secret))
    assert_error(
        response,
        400,
        "unauthorized_client",
        f"Client {oauth_client.client_id} is inactive; set it to Active or use another.",
    )
    with app.app_context(), database.connection_context():
        oauth_client.set_active(True)
        OAuthClient.update(expires_at=utcnow() - timedelta(seconds=1)).where(
            OAuthClient.id == oauth_client.id
        ).execute()
    response = post_token(client, form(oauth_client.client_id, secret))
    assert_error(
        response,
        400,
        "unauthorized_client",
        f"Client {oauth_client.client_id} is expired; set it to Active or use another.",
    )


def test_authlib_raises_the_endpoint_error(app):
    oauth_client, _ = new_client(app)
    with authlib_client(
        app, oauth_client.client_id, "mdmcs_wrong", "client_secret_basic"
    ) as session:
        with pytest.raises(OAuthError) as error:
            session.fetch_token(TOKEN_URL, grant_type="client_credentials")
    assert error.value.error == "invalid_client"
    assert error.value.description == "Client authentication failed."


#
# Access tokens on the SCIM API: expiry and revocation
#


def test_an_access_token_past_its_lifetime_is_refused(app, client):
    oauth_client, secret = new_client(app)
    with app.app_context(), database.connection_context():
        stale, expires_in = reload(app, oauth_client).grant(
            timedelta(hours=1), now=utcnow() - timedelta(hours=1, seconds=1)
        )
        assert expires_in == 3600
    assert_refused(client, stale)
    fresh = fetch(client, oauth_client.client_id, secret)
    assert users(client, fresh).status_code == 200
    # The refusal is counted under its client, with the reason.
    activity.writer.flush()
    with activity_db.connection_context():
        rows = list(Refusal.select().where(Refusal.status == 401))
    assert [(r.reason, r.idp, r.token_key) for r in rows] == [
        ("expired access token", "entra", oauth_client.client_id)
    ]


@pytest.mark.parametrize("change", ["set_inactive", "renew", "remove"])
def test_revoking_a_client_refuses_its_access_tokens_at_once(app, client, change):
    oauth_client, secret = new_client(app)
    other, other_secret = new_client(app, label="second")
    first = fetch(client, oauth_client.client_id, secret)
    second = fetch(client, oauth_client.client_id, secret)
    kept = fetch(client, other.client_id, other_secret)
    assert users(client, first).status_code == 200
    with app.app_context(), database.connection_context():
        target = OAuthClient.get_by_id(oauth_client.id)
        if change == "set_inactive":
            target.set_active(False)
        elif change == "renew":
            new_secret = target.renew()
        else:
            target.remove()
    assert_refused(client, first)
    assert_refused(client, second)
    # The other client of the connection is untouched.
    assert users(client, kept).status_code == 200
    with app.app_context(), database.connection_context():
        live = AccessToken.select().where(~AccessToken.revoked)
        assert {row.client_id for row in live} == {other.id}
    # A request still carrying a revoked token names its client, so the
    # dashboard tells which connection is failing; a removed client is gone.
    activity.writer.flush()
    with activity_db.connection_context():
        rows = list(Refusal.select().where(Refusal.status == 401))
    if change == "remove":
        expected = [("unknown access token", "", "", 2)]
    else:
        expected = [("revoked access token", "entra", oauth_client.client_id, 2)]
    assert [(r.reason, r.idp, r.token_key, r.requests) for r in rows] == expected
    old = post_token(client, form(oauth_client.client_id, secret))
    if change == "set_inactive":
        assert old.get_json()["error"] == "unauthorized_client"
        with app.app_context(), database.connection_context():
            OAuthClient.get_by_id(oauth_client.id).set_active(True)
        # Active again: the revoked tokens stay revoked; a new one works.
        assert_refused(client, first)
        assert (
            users(client, fetch(client, oauth_client.client_id, secret)).status_code
            == 200
        )
    elif change == "renew":
        assert old.get_json()["error"] == "invalid_client"
        renewed = fetch(client, oauth_client.client_id, new_secret)
        assert users(client, renewed).status_code == 200
    else:
        assert old.get_json()["error"] == "invalid_client"
        with app.app_context(), database.connection_context():
            assert OAuthClient.get_or_none(OAuthClient.id == oauth_client.id) is None


def test_a_static_token_and_an_oauth_client_work_side_by_side(app, client):
    _, static = issue_token(app, "okta")
    oauth_client, secret = new_client(app, "entra")
    access = fetch(client, oauth_client.client_id, secret)
    assert users(client, static).status_code == 200
    assert users(client, access).status_code == 200
    # A client secret is not a bearer token, nor is a static token an access token.
    assert users(client, secret).status_code == 401
    assert post_token(client, form(oauth_client.client_id, static)).status_code == 401


def test_a_client_keeps_a_bounded_number_of_live_tokens(app, client):
    oauth_client, secret = new_client(app)
    tokens = [fetch(client, oauth_client.client_id, secret) for _ in range(25)]
    with app.app_context(), database.connection_context():
        assert AccessToken.select().count() == AccessToken.PER_CLIENT == 20
    for old in tokens[:5]:
        assert_refused(client, old)
    for live in tokens[5:]:
        assert users(client, live).status_code == 200


def test_activity_names_the_client(app, client):
    oauth_client, secret = new_client(app)
    access = fetch(client, oauth_client.client_id, secret)
    response = client.post(
        "/scim/v2/Users",
        json={"schemas": [USER_SCHEMA], "userName": "grace@example.com"},
        headers={"Authorization": f"Bearer {access}", "User-Agent": "Entra test"},
    )
    assert response.status_code == 201
    activity.writer.flush()
    with activity_db.connection_context():
        rows = list(ActivityEntry.select())
    assert [(r.idp, r.token_key, r.method, r.status) for r in rows] == [
        ("entra", oauth_client.client_id, "POST", 201)
    ]
    # The token endpoint is not a SCIM request: nothing of it is logged.
    assert access not in json.dumps([r.__data__ for r in rows], default=str)


def test_service_provider_config_lists_both_schemes(client):
    response = client.get("/scim/v2/ServiceProviderConfig")
    assert response.get_json()["authenticationSchemes"] == [
        {
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "A bearer token generated for an identity-provider "
            "connection in the admin console or with `mdm token create`.",
            "specUri": "https://www.rfc-editor.org/rfc/rfc6750",
            "primary": True,
        },
        {
            "type": "oauthbearertoken",
            "name": "OAuth 2.0 Client Credentials",
            "description": "An access token from the token endpoint "
            "http://localhost/oauth/token (grant_type=client_credentials) for an "
            "OAuth client of a connection, sent as a bearer token.",
            "specUri": "https://www.rfc-editor.org/rfc/rfc6749",
        },
    ]


#
# Throttling
#


def address(value):
    return {"environ_base": {"REMOTE_ADDR": value}}


def test_wrong_secrets_make_that_client_wait_from_that_address(app, client):
    oauth_client, secret = new_client(app)
    other, other_secret = new_client(app, label="second")
    here = address("203.0.113.7")
    for _ in range(5):
        response = post_token(client, form(oauth_client.client_id, "mdmcs_x"), **here)
        assert response.get_json()["error"] == "invalid_client"
    # Now even the right secret waits, so guessing learns nothing.
    response = post_token(client, form(oauth_client.client_id, secret), **here)
    assert response.status_code == 429
    wait = int(response.headers["Retry-After"])
    assert 25 <= wait <= 30
    assert response.get_json() == {
        "error": "temporarily_unavailable",
        "error_description": "Too many failed attempts from this address; try again "
        f"in {wait} s.",
    }
    assert response.headers["Cache-Control"] == "no-store"
    # Another address, or another client from this address, is not held up.
    assert (
        post_token(
            client, form(oauth_client.client_id, secret), **address("198.51.100.2")
        ).status_code
        == 200
    )
    assert (
        post_token(client, form(other.client_id, other_secret), **here).status_code
        == 200
    )
    with app.app_context(), database.connection_context():
        assert AccessToken.select().count() == 2
    # The wait over, the right secret works again from here.
    oauth.pair_throttle.reset()
    assert (
        post_token(client, form(oauth_client.client_id, secret), **here).status_code
        == 200
    )


def test_an_address_guessing_client_ids_waits(app, client):
    oauth_client, secret = new_client(app)
    here = address("203.0.113.9")
    for n in range(20):
        response = post_token(client, form(f"mdmc_{n:016x}", "mdmcs_x"), **here)
        assert response.status_code == 401
    response = post_token(client, form(oauth_client.client_id, secret), **here)
    assert response.status_code == 429
    assert response.get_json()["error"] == "temporarily_unavailable"
    assert (
        post_token(
            client, form(oauth_client.client_id, secret), **address("203.0.113.10")
        ).status_code
        == 200
    )


#
# CLI
#


CLIENT_ID = re.compile(r"^mdmc_[0-9a-f]{16}$")
CLIENT_SECRET = re.compile(r"^mdmcs_[A-Za-z0-9_-]{43}$")


def created(result):
    """Parse `mdm client create`'s three stdout lines into a dict."""
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        "client_id",
        "client_secret",
        "token_endpoint",
    ]
    return dict(line.split(": ", 1) for line in lines)


def audit_rows():
    activity.writer.flush()
    with activity_db.connection_context():
        return [
            (e.event, e.actor, e.details)
            for e in AuditEvent.select().order_by(AuditEvent.id)
        ]


def test_cli_client_lifecycle(app, runner, client):
    values = created(
        runner.invoke(args=["client", "create", "--idp", "entra", "--label", "prod"])
    )
    assert CLIENT_ID.match(values["client_id"])
    assert CLIENT_SECRET.match(values["client_secret"])
    assert values["token_endpoint"] == "http://127.0.0.1:8080/oauth/token"
    cid = values["client_id"]
    access = fetch(client, cid, values["client_secret"])
    assert users(client, access).status_code == 200

    listed = runner.invoke(args=["client", "list", "--json"])
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert len(rows) == 1
    row = rows[0]
    assert {
        k: row[k]
        for k in (
            "id",
            "client_id",
            "idp",
            "label",
            "status",
            "created_by",
            "expires_at",
            "renewed_at",
        )
    } == {
        "id": 1,
        "client_id": cid,
        "idp": "entra",
        "label": "prod",
        "status": "Active",
        "created_by": "cli",
        "expires_at": None,
        "renewed_at": None,
    }
    assert values["client_secret"] not in listed.output

    result = runner.invoke(args=["client", "set-inactive", cid])
    assert result.exit_code == 0
    assert_refused(client, access)
    assert runner.invoke(args=["client", "set-active", "1"]).exit_code == 0
    renewed = created(runner.invoke(args=["client", "renew", cid]))
    assert renewed["client_id"] == cid
    assert renewed["client_secret"] != values["client_secret"]
    assert fetch(client, cid, renewed["client_secret"])
    assert runner.invoke(args=["client", "remove", cid]).exit_code == 0
    missing = runner.invoke(args=["client", "remove", cid])
    assert missing.exit_code == 1
    assert missing.output == f"Error: No OAuth client {cid}.\n"
    details = f"IdP: Entra ID; client {cid}"
    assert audit_rows() == [
        ("OAuth Client Created", "cli", details),
        ("OAuth Client Disabled", "cli", details),
        ("OAuth Client Enabled", "cli", details),
        ("OAuth Client Renewed", "cli", details),
        ("OAuth Client Deleted", "cli", details),
    ]


def test_cli_refuses_a_third_client_and_lists_in_text(app, runner):
    for label in ("one", "two"):
        created(
            runner.invoke(args=["client", "create", "--idp", "okta", "--label", label])
        )
    third = runner.invoke(args=["client", "create", "--idp", "okta"])
    assert third.exit_code == 1
    assert third.output == (
        "Error: Okta already has 2 OAuth clients; remove or renew one instead.\n"
    )
    # Tokens have slots of their own.
    assert runner.invoke(args=["token", "create", "--idp", "okta"]).exit_code == 0
    listed = runner.invoke(args=["client", "list"])
    lines = listed.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "IDP",
        "CLIENT",
        "ID",
        "STATUS",
        "CREATED",
        "EXPIRES",
        "LAST",
        "USED",
        "LABEL",
        "/",
        "LAST",
        "CLIENT",
    ]
    assert [line.split()[1:4:2] for line in lines[1:]] == [
        ["okta", "Active"],
        ["okta", "Active"],
    ]
    assert runner.invoke(args=["client", "list", "--json"]).stdout.strip() != "[]"


#
# The served stack
#


def every_stored_byte(instance):
    """Return the bytes of every file in the instance folder."""
    return b"".join(path.read_bytes() for path in instance.rglob("*") if path.is_file())


def every_stored_row(env):
    """Return every row of every table, as text, from the database the server used."""
    from mdm.activity_store import ACTIVITY_MODELS
    from mdm.models import MODELS

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            **database_config(Path(env["MDM_INSTANCE_PATH"]) / "mdm.sqlite"),
        }
    )
    with app.app_context(), database.connection_context():
        rows = [m.select().dicts()[:] for m in MODELS]
    activity.writer.flush()
    with activity_db.connection_context():
        rows += [m.select().dicts()[:] for m in ACTIVITY_MODELS]
    return json.dumps(rows, default=str)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_served_stack_issues_tokens_and_keeps_no_secret(tmp_path, method):
    instance = tmp_path / "instance"
    env = served.environment(instance)
    result = served.mdm(env, "client", "create", "--idp", "entra", "--label", "prod")
    values = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    log = tmp_path / "serve.log"
    process, port = served.start(env, log)
    origin = f"http://127.0.0.1:{port}"
    try:
        with OAuth2Client(
            values["client_id"],
            values["client_secret"],
            token_endpoint_auth_method=method,
        ) as session:
            token = session.fetch_token(
                f"{origin}/oauth/token", grant_type="client_credentials", scope="scim"
            )
            created = session.post(
                f"{origin}/scim/v2/Users",
                json={"schemas": [USER_SCHEMA], "userName": "linus@example.com"},
                headers={"Content-Type": "application/scim+json"},
            )
            assert created.status_code == 201, created.text
            assert created.json()["meta"]["location"].startswith(
                f"{origin}/scim/v2/Users/"
            )
            wrong = httpx2.post(
                f"{origin}/oauth/token",
                data=form(values["client_id"], values["client_secret"] + "x"),
            )
            assert wrong.status_code == 401
            assert wrong.json()["error"] == "invalid_client"
    finally:
        assert served.stop(process) == 0
    # Each with its random part alone, in case that were logged by itself
    # (the random part may hold "_" too).
    secrets_given = [
        (values["client_secret"], values["client_secret"].split("_", 1)[1]),
        (token["access_token"], token["access_token"].split("_", 2)[2]),
    ]
    stored = every_stored_byte(instance) + log.read_bytes()
    rows = every_stored_row(env)
    for secret, tail in secrets_given:
        assert len(tail) == 43
        assert secret.encode() not in stored
        assert secret not in rows
        assert tail.encode() not in stored
        assert tail not in rows
    assert values["client_id"] in rows  # the activity log names the client


@pytest.mark.parametrize("change", ["renew", "set_inactive", "remove"])
def test_a_change_between_checking_the_secret_and_issuing_wins(
    app, client, monkeypatch, change
):
    # The secret is checked outside the write lock; a renewal, deactivation or
    # removal that lands before the token is written must still revoke it.
    oauth_client, secret = new_client(app)
    verify = OAuthClient.verify.__func__

    def verify_then_change(cls, client_id, given):
        found = verify(cls, client_id, given)
        target = OAuthClient.get_by_id(oauth_client.id)
        if change == "renew":
            target.renew()
        elif change == "set_inactive":
            target.set_active(False)
        else:
            target.remove()
        return found

    monkeypatch.setattr(OAuthClient, "verify", classmethod(verify_then_change))
    response = post_token(client, form(oauth_client.client_id, secret))
    assert_error(
        response,
        401,
        "invalid_client",
        "The client was renewed, set Inactive or removed while this request was "
        "checked.",
    )
    with app.app_context(), database.connection_context():
        assert AccessToken.select().count() == 0


def test_a_stale_copy_never_writes_an_old_secret_back(app, client):
    oauth_client, old_secret = new_client(app)
    with app.app_context(), database.connection_context():
        stale = OAuthClient.get_by_id(oauth_client.id)
        new_secret = OAuthClient.get_by_id(oauth_client.id).renew()
        stale.set_active(False)
        stale.set_active(True)
    assert (
        post_token(client, form(oauth_client.client_id, old_secret)).status_code == 401
    )
    assert fetch(client, oauth_client.client_id, new_secret)
