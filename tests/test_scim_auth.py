"""SCIM authentication: bearer tokens, their states, and the operator switch."""

from datetime import timedelta

import pytest

from mdm import create_app
from mdm.db import database
from mdm.models import BearerToken
from mdm.models import utcnow

from .conftest import ScimClient
from .conftest import database_config
from .conftest import issue_token

UNAUTHORIZED = {
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
    "status": "401",
    "detail": "Authentication required: send Authorization: Bearer <token>.",
}
INVALID = {
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
    "status": "401",
    "detail": "The bearer token is invalid, inactive, expired or removed.",
}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}],
)
def test_missing_credentials_get_401(client, headers):
    response = client.get("/scim/v2/Users", headers=headers)
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/scim+json"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="SCIM"'
    assert response.get_json(force=True) == UNAUTHORIZED


@pytest.mark.parametrize(
    "secret", ["non-token", "mdm_000000000000_nope", "mdm__", "mdm_x_y_z"]
)
def test_unknown_token_gets_401(client, app, secret):
    issue_token(app)
    response = client.get(
        "/scim/v2/Users", headers={"Authorization": f"Bearer {secret}"}
    )
    assert response.status_code == 401
    assert "invalid_token" in response.headers["WWW-Authenticate"]
    assert response.get_json(force=True) == INVALID


def _set(app, token_id, **fields):
    with app.app_context(), database.connection_context():
        BearerToken.update(**fields).where(BearerToken.id == token_id).execute()


def test_inactive_expired_removed_and_renewed_tokens(app, client):
    token, secret = issue_token(app)
    scim = ScimClient(client, secret)
    assert scim.get("/Users").status_code == 200

    _set(app, token.id, active=False)
    assert scim.get("/Users").status_code == 401
    _set(app, token.id, active=True)
    assert scim.get("/Users").status_code == 200

    _set(app, token.id, expires_at=utcnow() - timedelta(seconds=1))
    assert scim.get("/Users").status_code == 401
    _set(app, token.id, expires_at=utcnow() + timedelta(days=1))
    assert scim.get("/Users").status_code == 200

    with app.app_context(), database.connection_context():
        new_secret = BearerToken.get_by_id(token.id).renew()
    assert scim.get("/Users").status_code == 401
    assert ScimClient(client, new_secret).get("/Users").status_code == 200

    with app.app_context(), database.connection_context():
        BearerToken.get_by_id(token.id).delete_instance()
    assert ScimClient(client, new_secret).get("/Users").status_code == 401


def test_use_is_recorded(app, scim):
    scim.get("/Users", headers={"User-Agent": "Azure AD Provisioning"})
    with app.app_context(), database.connection_context():
        token = BearerToken.get()
    assert token.last_used_at is not None
    assert token.last_user_agent == "Azure AD Provisioning"


def test_source_is_the_token_connection(app, scim, okta):
    entra_user = scim.create_user("a@example.com")
    okta_user = okta.create_user("b@example.com")
    from mdm.models import User

    with app.app_context(), database.connection_context():
        assert User.get(User.scim_id == entra_user["id"]).source == "entra"
        assert User.get(User.scim_id == okta_user["id"]).source == "okta"


def test_discovery_needs_no_token(client):
    for path in ("/ServiceProviderConfig", "/Schemas", "/ResourceTypes"):
        assert client.get("/scim/v2" + path).status_code == 200


def test_operator_switch_disables_scim(tmp_path):
    app = create_app(
        {"TESTING": True, **database_config(tmp_path / "db"), "SCIM_ENABLED": False}
    )
    _, secret = issue_token(app)
    client = app.test_client()
    for path in ("/Users", "/ServiceProviderConfig"):
        response = client.get(
            "/scim/v2" + path, headers={"Authorization": f"Bearer {secret}"}
        )
        assert response.status_code == 403
        assert response.get_json(force=True) == {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": "403",
            "detail": "SCIM provisioning is disabled on this server by its operator.",
        }


def test_admin_session_is_no_scim_credential(client):
    with client.session_transaction() as session:
        session["_user_id"] = "1"
    assert client.get("/scim/v2/Users").status_code == 401
