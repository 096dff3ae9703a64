"""Webhooks page: endpoints, their secrets (shown once), tests and delivery logs."""

from flask import abort
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import url_for
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms import SubmitField
from wtforms.validators import DataRequired
from wtforms.validators import Length

from .. import webhooks
from ..activity import audit
from ..forms import ConfirmForm
from ..models import WebhookDelivery
from ..models import WebhookEndpoint
from ..models import WebhookEvent
from . import reveal
from .base import bp

# Deliveries listed in an endpoint's log, newest first.
LOG_ROWS = 100


class EndpointForm(FlaskForm):
    url = StringField("URL", validators=[DataRequired(), Length(max=2000)])
    label = StringField("Label", validators=[Length(max=100)])
    events = StringField("Event types", validators=[Length(max=1000)])
    submit = SubmitField("Add endpoint")


def _endpoint_or_404(endpoint_id):
    endpoint = WebhookEndpoint.get_or_none(WebhookEndpoint.id == endpoint_id)
    if endpoint is None:
        abort(404)
    return endpoint


def _allow_http():
    return webhooks._flag(current_app.config.get("WEBHOOK_ALLOW_HTTP"))


@bp.route("/webhooks", methods=("GET", "POST"))
def webhooks_page():
    """List endpoints, and add one (its secret is then shown once)."""
    form = EndpointForm()
    if form.validate_on_submit():
        try:
            types = webhooks.parse_events(form.events.data)
            endpoint, secret = webhooks.add_endpoint(
                form.url.data.strip(), types, form.label.data or "", _allow_http()
            )
        except webhooks.WebhookError as error:
            form.url.errors.append(str(error))
        else:
            audit("Webhook Added", webhooks.describe(endpoint))
            reveal.keep(endpoint, secret, renewed=False)
            return redirect(url_for("console.webhook_secret", endpoint_id=endpoint.id))
    endpoints = list(WebhookEndpoint.select().order_by(WebhookEndpoint.id))
    return render_template(
        "admin/webhooks.html",
        form=form,
        endpoints=endpoints,
        pending=webhooks.pending_counts(),
        event_types=webhooks.EVENT_TYPES,
        action_form=ConfirmForm(),
    )


@bp.get("/webhooks/<int:endpoint_id>/secret")
def webhook_secret(endpoint_id):
    """Show an endpoint's new signing secret once; a reload finds it gone (410)."""
    endpoint = _endpoint_or_404(endpoint_id)
    kept = reveal.take(endpoint)
    if kept is None:
        return render_template("admin/webhook_secret.html", endpoint=endpoint), 410
    secret, rotated = kept
    return render_template(
        "admin/webhook_secret.html", endpoint=endpoint, secret=secret, rotated=rotated
    )


@bp.route("/webhooks/<int:endpoint_id>/rotate", methods=("GET", "POST"))
def rotate_webhook_secret(endpoint_id):
    """Confirm, then give an endpoint a new signing secret, shown once."""
    endpoint = _endpoint_or_404(endpoint_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        secret = webhooks.rotate_secret(endpoint)
        audit("Webhook Secret Rotated", webhooks.describe(endpoint))
        reveal.keep(endpoint, secret, renewed=True)
        return redirect(url_for("console.webhook_secret", endpoint_id=endpoint.id))
    return render_template(
        "admin/confirm.html",
        form=form,
        title="Rotate the signing secret?",
        message=(
            f"Deliveries to {endpoint.url} are signed with a new secret from now on; "
            "the receiver must be given it, or it will refuse them."
        ),
        confirm_label="Rotate secret",
        cancel_url=url_for("console.webhooks_page"),
    )


@bp.route("/webhooks/<int:endpoint_id>/remove", methods=("GET", "POST"))
def remove_webhook(endpoint_id):
    """Confirm, then delete an endpoint and its queue."""
    endpoint = _endpoint_or_404(endpoint_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        webhooks.remove_endpoint(endpoint)
        audit("Webhook Removed", webhooks.describe(endpoint))
        flash(f"Webhook {endpoint.url} removed.", "success")
        return redirect(url_for("console.webhooks_page"))
    return render_template(
        "admin/confirm.html",
        form=form,
        title="Remove this webhook?",
        message=(
            f"{endpoint.url} receives no more events; the events still queued "
            "for it are dropped."
        ),
        confirm_label="Remove webhook",
        cancel_url=url_for("console.webhooks_page"),
        danger=True,
    )


@bp.post("/webhooks/<int:endpoint_id>/test")
def test_webhook(endpoint_id):
    """Send a ping event now and say what the endpoint answered."""
    endpoint = _endpoint_or_404(endpoint_id)
    form = ConfirmForm()
    if not form.validate_on_submit():
        abort(400)
    outcome = webhooks.ping(
        endpoint, float(current_app.config.get("WEBHOOK_TIMEOUT", 10)), _allow_http()
    )
    flash(
        f"Test event to {endpoint.url}: {outcome}.",
        "success" if outcome.ok else "danger",
    )
    return redirect(url_for("console.webhook_log", endpoint_id=endpoint.id))


@bp.get("/webhooks/<int:endpoint_id>")
def webhook_log(endpoint_id):
    """Show an endpoint's recent deliveries: event, attempts, status, next try."""
    endpoint = _endpoint_or_404(endpoint_id)
    deliveries = list(
        WebhookDelivery.select(WebhookDelivery, WebhookEvent)
        .join(WebhookEvent)
        .where(WebhookDelivery.endpoint == endpoint.id)
        .order_by(WebhookDelivery.id.desc())
        .limit(LOG_ROWS)
    )
    return render_template(
        "admin/webhook_log.html",
        endpoint=endpoint,
        deliveries=deliveries,
        action_form=ConfirmForm(),
    )


@bp.post("/webhooks/<int:endpoint_id>/deliveries/<int:delivery_id>/redeliver")
def redeliver_webhook(endpoint_id, delivery_id):
    """Queue a delivery again now, with the same webhook-id."""
    endpoint = _endpoint_or_404(endpoint_id)
    form = ConfirmForm()
    if not form.validate_on_submit():
        abort(400)
    delivery = WebhookDelivery.get_or_none(
        (WebhookDelivery.id == delivery_id) & (WebhookDelivery.endpoint == endpoint.id)
    )
    if delivery is None:
        abort(404)
    webhooks.redeliver(delivery.id)
    audit(
        "Webhook Redelivered", f"{webhooks.describe(endpoint)}; delivery {delivery.id}"
    )
    flash("Queued for delivery again.", "success")
    return redirect(url_for("console.webhook_log", endpoint_id=endpoint.id))


def dashboard_banners():
    """Banners for endpoints marked failing or disabled, for the dashboard."""
    found = []
    for endpoint in WebhookEndpoint.select().where(WebhookEndpoint.state != "enabled"):
        if endpoint.state == "failing":
            message = (
                f"Webhook {endpoint.url} has failed for a day; its events stay "
                "queued and are retried."
            )
        else:
            message = f"Webhook {endpoint.url} answered 410 Gone and is disabled."
        link = url_for("console.webhook_log", endpoint_id=endpoint.id)
        found.append(("danger", message, link, "See its deliveries"))
    return found
