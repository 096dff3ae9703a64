"""The console blueprint: its guards, cache policy and the helpers every page's template uses."""

from datetime import timedelta

from flask import Blueprint
from flask_login import login_required
from markupsafe import Markup

from ..activity import pretty
from ..forms import check_form_request
from ..models import IDPS
from ..models import OAuthClient
from .paging import sort_url

bp = Blueprint("console", __name__, url_prefix="/admin")

# Tokens expiring within this window get a warning banner.
EXPIRY_WARNING = timedelta(days=30)


def expiry_warning(credential, now=None, connection=None):
    """Say that an active token or OAuth client expires within EXPIRY_WARNING, else None."""
    days = credential.days_until_expiry(EXPIRY_WARNING, now)
    if days is None:
        return None
    if isinstance(credential, OAuthClient):
        what, advice = f"OAuth client {credential.client_id}", "Add a client"
    else:
        what, advice = f"token {credential.key}", "Generate or renew a token"
    # Named after its connection on the dashboard, on its own page alone.
    subject = f"{connection} {what}" if connection else what[0].upper() + what[1:]
    return (
        f"{subject} expires in {days} day{'s' if days != 1 else ''} "
        f"({credential.expires_at:%Y-%m-%d}). {advice} and update the identity "
        "provider before then."
    )


SCIM_DISABLED = (
    "Provisioning is disabled by the operator (SCIM_ENABLED is off): "
    "identity providers get 403 on every request."
)

# Blueprint hooks run in the order they are registered: input checks and
# CSRF first, so a forged POST is refused before it reaches the sign-in redirect.
bp.before_request(check_form_request)


@bp.before_request
@login_required
def require_admin():
    """Every console page needs a signed-in administrator."""


@bp.after_request
def no_store(response):
    # Pages show directory data and, once, token secrets: keep them out of caches.
    response.headers["Cache-Control"] = "no-store"
    return response


def source_label(source):
    """Name a record's source as the console shows it ("SCIM Entra ID")."""
    name = IDPS.get(source, source)
    return name if name.startswith("Generic SCIM") else f"SCIM {name}"


def user_status(user):
    """Name a user's state as the console shows it."""
    if user.deprovisioned_at is not None:
        return "Deprovisioned"
    return "Active" if user.active else "Disabled"


def connection_label(idp):
    """Name the connection a request came through ("Entra ID"), or "No token"."""
    if not idp:
        return "No token"
    return IDPS.get(idp, idp)


def log_time(value):
    """Render a stored UTC time to the second as a <time> element."""
    if not value:
        return "—"
    return Markup('<time datetime="{}Z">{}</time>').format(
        value.strftime("%Y-%m-%dT%H:%M:%S"), value.strftime("%Y-%m-%d %H:%M:%S")
    )


@bp.app_context_processor
def console_helpers():
    return {"source_label": source_label, "user_status": user_status, "IDPS": IDPS}


bp.add_app_template_global(sort_url)
bp.add_app_template_global(connection_label)
bp.add_app_template_filter(log_time)
bp.add_app_template_filter(pretty, "pretty_json")
