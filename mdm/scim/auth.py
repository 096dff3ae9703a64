"""SCIM authentication: a connection's bearer token, or an OAuth access token (RFC 6750)."""

import hashlib
import hmac
import re

from flask import current_app
from flask import g
from flask import request

from ..db import Prepared
from ..models import ACCESS_TOKEN_PREFIX
from ..models import TOKEN_PREFIX
from ..models import BearerToken
from ..models import OAuthClient
from .errors import ScimError

# Discovery documents carry no directory data; IdPs fetch them before a token
# is entered (RFC 7644 §4 leaves authentication of them to the provider).
PUBLIC_ENDPOINTS = {
    "scim.query_service_provider_config",
    "scim.query_schemas",
    "scim.query_schema",
    "scim.query_resource_types",
    "scim.query_resource_type",
}


def authenticate():
    """Refuse the request unless SCIM is enabled and it carries a live bearer token."""
    if not current_app.config.get("SCIM_ENABLED", True):
        raise ScimError(
            403,
            None,
            "SCIM provisioning is disabled on this server by its operator.",
        )
    req = request._get_current_object()  # one context lookup, not one per use
    if req.endpoint in PUBLIC_ENDPOINTS:
        return
    token, refused = identify(req)
    if refused is not None:
        g.scim_refusal = refused
    if refused == NO_TOKEN:
        raise ScimError(
            401,
            None,
            "Authentication required: send Authorization: Bearer <token>.",
            {"WWW-Authenticate": 'Bearer realm="SCIM"'},
        )
    if token is None:
        raise ScimError(
            401,
            None,
            "The bearer token is invalid, inactive, expired or removed.",
            {"WWW-Authenticate": 'Bearer realm="SCIM", error="invalid_token"'},
        )
    token.touch(req.environ.get("HTTP_USER_AGENT"))
    g.scim_token = token


NO_TOKEN = ("no token", None, None)


def identify(req):
    """Return (token, None) for a request's live bearer token, else (None, why not)."""
    # Also asked by the activity log about requests this module never saw
    # (unrouted paths, discovery), so that only a valid token earns a row.
    credentials = req.authorization
    if credentials is None or credentials.type != "bearer" or not credentials.token:
        return None, NO_TOKEN
    if credentials.token.startswith(ACCESS_PREFIX):
        # The OAuth client stands where a static token would: the activity
        # log and the rows it writes name its client_id and connection.
        client, reason = OAuthClient.authenticate(credentials.token)
        if reason is None:
            return client, None
        return None, (reason, _access_key(client), client and client.idp)
    token = BearerToken.authenticate(credentials.token)
    if token is None:
        return None, refusal(credentials.token)
    return token, None


ACCESS_PREFIX = f"{ACCESS_TOKEN_PREFIX}_"


def _access_key(client):
    # A refused access token is counted under its client, when it names one.
    return client.client_id if client is not None else None


# The public part of a token: mdm_<key>_<secret>, the key as BearerToken issues it.
TOKEN_KEY = re.compile(rf"{TOKEN_PREFIX}_([0-9a-f]{{1,32}})_")


# Anyone can send a token-shaped key, so the lookup is a prepared one.
_token_state = Prepared(
    lambda key: BearerToken.select(
        BearerToken.idp,
        BearerToken.secret_hash,
        BearerToken.active,
        BearerToken.expires_at,
    ).where(BearerToken.key == key)
)


def refusal(secret):
    """Return (reason, token key, connection) for a token that did not authenticate."""
    # Only the key, which is not secret, is kept: the activity log counts
    # refusals by it, and a key this server issued names a failing connection.
    match = TOKEN_KEY.match(secret)
    if match is None:
        return "not an mdm token", None, None
    key = match.group(1)
    token = _token_state.first(key=key)
    if token is None:
        return "unknown token", key, None
    # The same SHA-256 as BearerToken stores, compared in constant time.
    digest = hashlib.sha256(secret.encode()).hexdigest()
    if not hmac.compare_digest(token.secret_hash, digest):
        return "wrong secret", key, token.idp
    if token.expired:
        return "expired token", key, token.idp
    if not token.active:
        return "inactive token", key, token.idp
    return "refused", key, token.idp
