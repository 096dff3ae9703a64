"""User Provisioning pages for OAuth 2.0 clients: add, show the secret once, and the row actions."""

from flask import abort
from flask import flash
from flask import redirect
from flask import render_template
from flask import url_for
from flask_login import current_user

from ..activity import audit
from ..forms import AddClientForm
from ..forms import ConfirmForm
from ..forms import TokenActionForm
from ..models import IDPS
from ..models import MAX_CLIENTS_PER_IDP
from ..models import OAuthClient
from ..models import TokenError
from ..scim.http import base_url as target_scim_url
from ..scim.http import token_endpoint_url
from . import reveal
from .base import bp
from .tokens import _idp_or_404
from .tokens import client_details
from .tokens import last_active
from .tokens import set_active
from .tokens import url_warning


def _client_or_404(idp, client_id):
    client = OAuthClient.get_or_none(
        (OAuthClient.id == client_id) & (OAuthClient.idp == idp)
    )
    if client is None:
        abort(404)
    return client


def _back(idp):
    """Return to the connection's page with the OAuth method shown."""
    return redirect(url_for("console.provisioning", idp=idp, auth="oauth"))


@bp.route("/provisioning/<idp>/clients/add", methods=("GET", "POST"))
def add_client(idp):
    """Confirm, then create an OAuth client and show its secret once."""
    _idp_or_404(idp)
    form = AddClientForm()
    if form.validate_on_submit():
        try:
            client, secret = OAuthClient.issue(
                idp,
                form.label.data or "",
                current_user.username,
                form.expires_in_days(),
            )
        except TokenError as error:
            flash(str(error), "danger")
            return _back(idp)
        audit("OAuth Client Created", client_details(client))
        reveal.keep(client, secret, renewed=False)
        return redirect(url_for("console.client_secret", idp=idp, client_id=client.id))
    full = (
        OAuthClient.select().where(OAuthClient.idp == idp).count()
        >= MAX_CLIENTS_PER_IDP
    )
    return render_template(
        "admin/client_add.html",
        idp=idp,
        form=form,
        full=full,
        max_clients=MAX_CLIENTS_PER_IDP,
    )


@bp.post("/provisioning/<idp>/clients/<int:client_id>")
def client_action(idp, client_id):
    """Apply the action chosen in a client row's Select drop-down."""
    client = _client_or_404(_idp_or_404(idp), client_id)
    form = TokenActionForm()
    if not form.validate_on_submit():
        flash("Choose an action.", "danger")
        return _back(idp)
    action = form.action.data
    if action in ("renew", "remove"):
        return redirect(
            url_for(f"console.{action}_client", idp=idp, client_id=client.id)
        )
    if action == "deactivate" and last_active(client):
        return redirect(
            url_for("console.deactivate_client", idp=idp, client_id=client.id)
        )
    set_active(client, action == "activate")
    return _back(idp)


@bp.route(
    "/provisioning/<idp>/clients/<int:client_id>/deactivate", methods=("GET", "POST")
)
def deactivate_client(idp, client_id):
    """Confirm, then set a connection's last active credential, a client, to Inactive."""
    client = _client_or_404(_idp_or_404(idp), client_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        set_active(client, False)
        return _back(idp)
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"Set client {client.client_id} to Inactive?",
        message=(
            f"It is the only active credential for {IDPS[idp]}: provisioning stops, "
            f"its access tokens stop working at once, and {IDPS[idp]} gets 401 on "
            "every request until you set a client or token to Active."
        ),
        confirm_label="Set to Inactive",
        cancel_url=url_for("console.provisioning", idp=idp, auth="oauth"),
        danger=True,
    )


@bp.route("/provisioning/<idp>/clients/<int:client_id>/renew", methods=("GET", "POST"))
def renew_client(idp, client_id):
    """Confirm, then replace a client's secret and show the new one once."""
    client = _client_or_404(_idp_or_404(idp), client_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        secret = client.renew()
        audit("OAuth Client Renewed", client_details(client))
        reveal.keep(client, secret, renewed=True)
        return redirect(url_for("console.client_secret", idp=idp, client_id=client.id))
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"Renew client {client.client_id}?",
        message=(
            "A new secret replaces this client's secret; its Client ID stays the "
            "same. The old secret and every access token issued with it stop working "
            f"at once, so {IDPS[idp]} gets 401 until you paste the new Client Secret "
            "into it."
        ),
        confirm_label="Renew client",
        cancel_url=url_for("console.provisioning", idp=idp, auth="oauth"),
    )


@bp.get("/provisioning/<idp>/clients/<int:client_id>/secret")
def client_secret(idp, client_id):
    """Show a client's new secret once; a reload finds it gone (410)."""
    client = _client_or_404(_idp_or_404(idp), client_id)
    kept = reveal.take(client)
    if kept is None:
        return render_template("admin/client_secret.html", idp=idp, client=client), 410
    secret, renewed = kept
    return render_template(
        "admin/client_secret.html",
        idp=idp,
        client=client,
        secret=secret,
        token_endpoint=token_endpoint_url(),
        scim_url=target_scim_url(),
        url_warning=url_warning(target_scim_url()),
        renewed=renewed,
    )


@bp.route("/provisioning/<idp>/clients/<int:client_id>/remove", methods=("GET", "POST"))
def remove_client(idp, client_id):
    """Confirm, then delete a client and its access tokens (users and groups stay)."""
    client = _client_or_404(_idp_or_404(idp), client_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        client.remove()
        audit("OAuth Client Deleted", client_details(client))
        flash(f"Client {client.client_id} removed.", "success")
        return _back(idp)
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"Remove client {client.client_id}?",
        message=(
            f"Its access tokens stop working at once, and {IDPS[idp]} gets 401 on its "
            "next request if it still uses this client. Users and groups it "
            "provisioned stay in the directory."
        ),
        confirm_label="Remove client",
        cancel_url=url_for("console.provisioning", idp=idp, auth="oauth"),
        danger=True,
    )
