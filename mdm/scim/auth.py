"""SCIM authentication: a bearer token from an identity-provider connection (RFC 6750)."""

from flask import current_app
from flask import g
from flask import request

from ..models import BearerToken
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
    credentials = req.authorization
    if credentials is None or credentials.type != "bearer" or not credentials.token:
        raise ScimError(
            401,
            None,
            "Authentication required: send Authorization: Bearer <token>.",
            {"WWW-Authenticate": 'Bearer realm="SCIM"'},
        )
    token = BearerToken.authenticate(credentials.token)
    if token is None:
        raise ScimError(
            401,
            None,
            "The bearer token is invalid, inactive, expired or removed.",
            {"WWW-Authenticate": 'Bearer realm="SCIM", error="invalid_token"'},
        )
    token.touch(req.environ.get("HTTP_USER_AGENT"))
    g.scim_token = token
