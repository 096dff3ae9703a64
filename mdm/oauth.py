"""The OAuth 2.0 token endpoint: client credentials for short-lived SCIM access tokens (RFC 6749 §4.4)."""

from datetime import timedelta
from urllib.parse import unquote_plus

from flask import Blueprint
from flask import current_app
from flask import jsonify
from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from . import activity
from .auth import Throttle
from .auth import client_address
from .db import write_transaction
from .models import OAuthClient
from .scim.paths import TOKEN_PATH

bp = Blueprint("oauth", __name__)

# A token request is a few hundred bytes; nothing larger is read.
MAX_REQUEST = 8 * 1024
SCOPE = "scim"

# Secrets are 256 random bits, so guessing is hopeless; the throttle keeps a
# guesser from costing the server a write per try and from filling the log,
# the way the console's sign-in does. One client from one address: 5 free
# failures, then 30 s, 1 min, 2 min ... up to 15 minutes.
pair_throttle = Throttle("oauth-pair", 5, 30, 15 * 60, 24 * 3600)
# One address across all client ids.
address_throttle = Throttle("oauth-address", 20, 30, 15 * 60, 24 * 3600)


class OAuthError(Exception):
    """An error response of the token endpoint (RFC 6749 §5.2)."""

    def __init__(self, error, description, status=400, headers=None, refused=None):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}
        # (reason, client_id, connection) for the refused-requests count; the
        # client is named only when it exists, never as the caller spelled it.
        self.refused = refused or (error, None, None)


def invalid_client(description, refused=None):
    # §5.2: 401, with the scheme the client may authenticate by.
    return OAuthError(
        "invalid_client",
        description,
        401,
        {"WWW-Authenticate": 'Basic realm="mdm", charset="UTF-8"'},
        refused,
    )


@bp.errorhandler(OAuthError)
def oauth_error(error):
    # Counted like a refused SCIM request, so an IdP still using a renewed
    # secret shows on the dashboard; the body, with its secret, is never kept.
    activity.count_refusal(*error.refused, error.status)
    body = {"error": error.error, "error_description": error.description}
    return _no_store(jsonify(body), error.status, error.headers)


def _no_store(response, status=200, headers=None):
    # §5.1: responses that carry (or refuse) tokens are never cached.
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def lifetime():
    """Return how long an access token lives (OAUTH_TOKEN_MINUTES)."""
    return timedelta(minutes=int(current_app.config["OAUTH_TOKEN_MINUTES"]))


@bp.route(TOKEN_PATH, methods=("GET", "POST", "PUT", "PATCH", "DELETE"))
def token():
    """Issue an access token to a client that proves its secret."""
    if request.method != "POST":
        # §3.2: the client MUST use POST.
        raise OAuthError(
            "invalid_request",
            "Use POST with an application/x-www-form-urlencoded body.",
            405,
            {"Allow": "POST"},
        )
    form = _form()
    grant_type = _single(form, "grant_type")
    if grant_type is None:
        raise OAuthError("invalid_request", "grant_type is missing.")
    client_id, secret = _client_credentials(form)
    if grant_type != "client_credentials":
        raise OAuthError(
            "unsupported_grant_type",
            "Only grant_type=client_credentials is supported.",
        )
    scope = _single(form, "scope")
    if scope is not None and set(scope.split()) - {SCOPE}:
        raise OAuthError(
            "invalid_scope", f"The only scope is {SCOPE!r}; leave scope out or send it."
        )
    client = _authenticate(client_id, secret)
    granted = client.grant(lifetime())
    if granted is None:
        raise invalid_client(
            "The client was renewed, set Inactive or removed while this request was "
            "checked.",
            ("changed meanwhile", client.client_id, client.idp),
        )
    access_token, expires_in = granted
    body = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": SCOPE,
    }
    return _no_store(jsonify(body))


def _form():
    """Return the request's form, refusing any other body (§3.2, §4.4.2)."""
    if request.mimetype != "application/x-www-form-urlencoded":
        raise OAuthError(
            "invalid_request",
            "Send the parameters as application/x-www-form-urlencoded.",
        )
    request.max_content_length = MAX_REQUEST
    try:
        return request.form
    except RequestEntityTooLarge:
        raise OAuthError(
            "invalid_request", f"The request body is over {MAX_REQUEST} bytes."
        ) from None


def _single(form, name):
    """Return a parameter's value, None when absent or empty; refuse it twice (§3.2)."""
    values = form.getlist(name)
    if len(values) > 1:
        raise OAuthError("invalid_request", f"{name} is sent more than once.")
    value = values[0] if values else ""
    if "\x00" in value:
        raise OAuthError("invalid_request", f"{name} contains a NUL character.")
    # §3.1: a parameter sent without a value is treated as omitted.
    return value or None


def _client_credentials(form):
    """Return (client_id, secret) from HTTP Basic or the form, never both (§2.3.1)."""
    posted_id = _single(form, "client_id")
    posted_secret = _single(form, "client_secret")
    header = request.headers.get("Authorization")
    if header is None:
        if posted_id is None or posted_secret is None:
            raise invalid_client(
                "Client authentication is missing: send client_id and client_secret "
                "by HTTP Basic or in the form."
            )
        return posted_id, posted_secret
    basic = request.authorization
    if basic is None or basic.type != "basic":
        raise invalid_client("The Authorization header is not HTTP Basic.")
    if posted_secret is not None:
        raise OAuthError(
            "invalid_request",
            "Use one client authentication method: HTTP Basic or form fields, not both.",
        )
    # §2.3.1: both halves are form-urlencoded before Basic encodes them.
    client_id = unquote_plus(basic.username or "")
    secret = unquote_plus(basic.password or "")
    if posted_id is not None and posted_id != client_id:
        raise OAuthError(
            "invalid_request", "client_id in the form differs from HTTP Basic."
        )
    if "\x00" in client_id + secret:
        raise invalid_client("Client authentication failed.")
    return client_id, secret


def _authenticate(client_id, secret):
    """Return the client ``secret`` proves, after the throttle allows a try."""
    address = client_address()
    pair = f"{client_id.lower()}|{address}"
    wait = max(pair_throttle.retry_after(pair), address_throttle.retry_after(address))
    if wait:
        # Refused before the secret is checked, so a guesser learns nothing.
        # RFC 6749 names no error for this; temporarily_unavailable is the
        # registered code for "try again later".
        raise OAuthError(
            "temporarily_unavailable",
            f"Too many failed attempts from this address; try again in {wait} s.",
            429,
            {"Retry-After": str(wait)},
            ("throttled", None, None),
        )
    client, reason = OAuthClient.verify(client_id, secret)
    if reason in ("unknown client", "wrong secret"):
        with write_transaction():
            pair_throttle.fail(pair)
            address_throttle.fail(address)
        if client is None:
            raise invalid_client("Client authentication failed.", (reason, None, None))
        raise invalid_client(
            "Client authentication failed.",
            ("wrong client secret", client.client_id, client.idp),
        )
    if reason is not None:
        # The secret was right, so saying why helps the admin and gives
        # nothing away.
        state = "expired" if reason == "expired client" else "inactive"
        raise OAuthError(
            "unauthorized_client",
            f"Client {client.client_id} is {state}; set it to Active or use another.",
            refused=(reason, client.client_id, client.idp),
        )
    client.touch(request.user_agent.string)
    return client
