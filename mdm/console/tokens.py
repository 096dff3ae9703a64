"""User Provisioning pages: each IdP's Target SCIM URL, its bearer tokens and the choice of method."""

import ipaddress
from urllib.parse import urlsplit

from flask import abort
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import current_user

from ..activity import audit
from ..forms import ConfirmForm
from ..forms import GenerateTokenForm
from ..forms import TokenActionForm
from ..models import IDPS
from ..models import MAX_CLIENTS_PER_IDP
from ..models import MAX_TOKENS_PER_IDP
from ..models import BearerToken
from ..models import OAuthClient
from ..models import TokenError
from ..scim.http import base_url as target_scim_url
from ..scim.http import token_endpoint_url
from . import reveal
from .base import SCIM_DISABLED
from .base import bp
from .base import expiry_warning

# The two ways an IdP can authenticate, as the page's ?auth= choice names them.
AUTH_METHODS = {"bearer": "Bearer token", "oauth": "OAuth 2.0 client credentials"}


def _idp_or_404(idp):
    if idp not in IDPS:
        abort(404)
    return idp


def _token_or_404(idp, token_id):
    token = BearerToken.get_or_none(
        (BearerToken.id == token_id) & (BearerToken.idp == idp)
    )
    if token is None:
        abort(404)
    return token


def url_warning(url):
    """Say why an IdP in the cloud cannot use ``url``, or return None."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        internal = host == "localhost" or host.endswith((".localhost", ".local"))
    else:
        internal = not address.is_global
    fix = "Set MDM_PUBLIC_URL to the https:// address your reverse proxy serves."
    if internal:
        return (
            f"{host} cannot be reached from the internet: Entra ID and Okta need a "
            f"public HTTPS URL. {fix}"
        )
    if parts.scheme != "https":
        return f"This URL is not HTTPS: Entra ID and Okta refuse it. {fix}"
    return None


def _banners(idp, tokens, clients, auth):
    """Return (category, message) warnings for a connection's provisioning page."""
    banners = []
    if not current_app.config.get("SCIM_ENABLED", True):
        banners.append(("danger", SCIM_DISABLED))
    # Both methods work at once, so one live credential of either kind is enough.
    if not any(c.status == "Active" for c in (*tokens, *clients)):
        # Okta cannot use a client, so its advice is always about tokens.
        method = "bearer" if idp == "okta" else auth
        banners.append(("warning", _no_active(tokens, clients, method)))
    for credential in (*tokens, *clients):
        warning = expiry_warning(credential)
        if warning is not None:
            banners.append(("warning", warning))
    return banners


def _no_active(tokens, clients, auth):
    """Say what to do when a connection has no active credential, in the shown method's words."""
    if auth == "oauth":
        if len(clients) >= MAX_CLIENTS_PER_IDP:
            advice = "set a client to Active, or remove one to make room for a new one"
        else:
            advice = "add an OAuth client or set one to Active"
        return (
            "No active OAuth client or token: the identity provider cannot provision "
            f"until you {advice}."
        )
    if len(tokens) >= MAX_TOKENS_PER_IDP:
        advice = "set a token to Active, or remove one to make room for a new one"
    else:
        advice = "generate a token or set one to Active"
    return (
        f"No active token: the identity provider cannot provision until you {advice}."
    )


@bp.get("/provisioning")
def provisioning_home():
    return redirect(url_for("console.provisioning", idp="entra"))


@bp.get("/provisioning/<idp>")
def provisioning(idp):
    """Show a connection's Target SCIM URL, its credentials for one method, and setup steps."""
    _idp_or_404(idp)
    tokens = list(
        BearerToken.select().where(BearerToken.idp == idp).order_by(BearerToken.id)
    )
    clients = list(
        OAuthClient.select().where(OAuthClient.idp == idp).order_by(OAuthClient.id)
    )
    auth = request.args.get("auth")
    if auth not in AUTH_METHODS:
        # Show the method the connection uses; a new one starts with tokens.
        auth = "oauth" if clients and not tokens else "bearer"
    return render_template(
        "admin/provisioning.html",
        idp=idp,
        auth=auth,
        auth_methods=AUTH_METHODS,
        tokens=tokens,
        full=len(tokens) >= MAX_TOKENS_PER_IDP,
        max_tokens=MAX_TOKENS_PER_IDP,
        clients=clients,
        clients_full=len(clients) >= MAX_CLIENTS_PER_IDP,
        max_clients=MAX_CLIENTS_PER_IDP,
        banners=_banners(idp, tokens, clients, auth),
        scim_url=target_scim_url(),
        token_endpoint=token_endpoint_url(),
        token_minutes=current_app.config["OAUTH_TOKEN_MINUTES"],
        url_warning=url_warning(target_scim_url()),
        action_form=TokenActionForm(),
    )


@bp.route("/provisioning/<idp>/generate", methods=("GET", "POST"))
def generate_token(idp):
    """Confirm, then issue a token and show its secret once."""
    _idp_or_404(idp)
    form = GenerateTokenForm()
    if form.validate_on_submit():
        try:
            token, secret = BearerToken.issue(
                idp,
                form.label.data or "",
                current_user.username,
                form.expires_in_days(),
            )
        except TokenError as error:
            flash(str(error), "danger")
            return redirect(url_for("console.provisioning", idp=idp))
        audit("SCIM Token Created", _token_details(token))
        reveal.keep(token, secret, renewed=False)
        return redirect(url_for("console.token_secret", idp=idp, token_id=token.id))
    full = (
        BearerToken.select().where(BearerToken.idp == idp).count() >= MAX_TOKENS_PER_IDP
    )
    return render_template("admin/token_generate.html", idp=idp, form=form, full=full)


@bp.post("/provisioning/<idp>/tokens/<int:token_id>")
def token_action(idp, token_id):
    """Apply the action chosen in a token row's Select drop-down."""
    token = _token_or_404(_idp_or_404(idp), token_id)
    form = TokenActionForm()
    if not form.validate_on_submit():
        flash("Choose an action.", "danger")
        return redirect(url_for("console.provisioning", idp=idp))
    action = form.action.data
    if action in ("renew", "remove"):
        return redirect(url_for(f"console.{action}_token", idp=idp, token_id=token.id))
    if action == "deactivate" and last_active(token):
        return redirect(url_for("console.deactivate_token", idp=idp, token_id=token.id))
    set_active(token, action == "activate")
    return redirect(url_for("console.provisioning", idp=idp))


def last_active(credential):
    """Return True if ``credential`` is the only token or client its connection can provision with."""
    if credential.status != "Active":
        return False
    for model in (BearerToken, OAuthClient):
        others = model.select().where(model.idp == credential.idp)
        if isinstance(credential, model):
            others = others.where(model.id != credential.id)
        if any(other.status == "Active" for other in others):
            return False
    return True


def set_active(credential, active):
    """Set a token or OAuth client Active or Inactive, audited; say so when it already is."""
    if isinstance(credential, OAuthClient):
        noun, event, details = "Client", "OAuth Client", client_details(credential)
    else:
        noun, event, details = "Token", "SCIM Token", _token_details(credential)
    state = "Active" if active else "Inactive"
    # An OAuth client's key is its client_id.
    if credential.active == active:
        # Nothing changes, so nothing is written to the audit trail.
        flash(f"{noun} {credential.key} is already {state}; nothing changed.", "info")
        return
    credential.set_active(active)
    audit(f"{event} {'Enabled' if active else 'Disabled'}", details)
    flash(f"{noun} {credential.key} is now {state}.", "success")


@bp.route(
    "/provisioning/<idp>/tokens/<int:token_id>/deactivate", methods=("GET", "POST")
)
def deactivate_token(idp, token_id):
    """Confirm, then set a connection's last active token to Inactive."""
    token = _token_or_404(_idp_or_404(idp), token_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        set_active(token, False)
        return redirect(url_for("console.provisioning", idp=idp))
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"Set token {token.key} to Inactive?",
        message=(
            f"It is the only active token for {IDPS[idp]}: provisioning stops, and "
            f"{IDPS[idp]} gets 401 on every request until you set a token to Active "
            "or generate a new one."
        ),
        confirm_label="Set to Inactive",
        cancel_url=url_for("console.provisioning", idp=idp),
        danger=True,
    )


@bp.route("/provisioning/<idp>/tokens/<int:token_id>/renew", methods=("GET", "POST"))
def renew_token(idp, token_id):
    """Confirm, then replace a token's secret and show the new one once."""
    token = _token_or_404(_idp_or_404(idp), token_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        old_key = token.key
        secret = token.renew()
        audit("SCIM Token Renewed", f"{_token_details(token)}; replaced {old_key}")
        reveal.keep(token, secret, renewed=True)
        return redirect(url_for("console.token_secret", idp=idp, token_id=token.id))
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"Renew token {token.key}?",
        message=(
            f"A new secret replaces this token's secret. {IDPS[idp]} keeps failing "
            "with 401 until you paste the new secret into it; the old secret stops "
            "working at once."
        ),
        confirm_label="Renew token",
        cancel_url=url_for("console.provisioning", idp=idp),
    )


@bp.get("/provisioning/<idp>/tokens/<int:token_id>/secret")
def token_secret(idp, token_id):
    """Show a token's new secret once; a reload finds it gone (410)."""
    token = _token_or_404(_idp_or_404(idp), token_id)
    kept = reveal.take(token)
    if kept is None:
        return render_template("admin/token_secret.html", idp=idp, token=token), 410
    secret, renewed = kept
    return render_template(
        "admin/token_secret.html",
        idp=idp,
        token=token,
        secret=secret,
        scim_url=target_scim_url(),
        url_warning=url_warning(target_scim_url()),
        renewed=renewed,
    )


@bp.route("/provisioning/<idp>/tokens/<int:token_id>/remove", methods=("GET", "POST"))
def remove_token(idp, token_id):
    """Confirm, then delete a token (users and groups stay)."""
    token = _token_or_404(_idp_or_404(idp), token_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        token.delete_instance()
        audit("SCIM Token Deleted", _token_details(token))
        flash(f"Token {token.key} removed.", "success")
        return redirect(url_for("console.provisioning", idp=idp))
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"Remove token {token.key}?",
        message=(
            f"{IDPS[idp]} gets 401 on its next request if it still uses this token. "
            "Users and groups it provisioned stay in the directory."
        ),
        confirm_label="Remove token",
        cancel_url=url_for("console.provisioning", idp=idp),
        danger=True,
    )


def client_details(client):
    """Describe an OAuth client for the audit trail: IdP and client id, never the secret."""
    return f"IdP: {client.idp_name}; client {client.client_id}"


def _token_details(token):
    """Describe a token for the audit trail: IdP, public key and label, never the secret."""
    label = f", label {token.label!r}" if token.label else ""
    return f"IdP: {token.idp_name}; token {token.key}{label}"
