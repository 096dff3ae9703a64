"""Mapping health: attributes each connection sends that mdm ignores, and their fix."""

import re

from flask import abort
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import url_for
from peewee import fn

from ..activity import activity_db
from ..activity import audit
from ..activity_store import MappingIssue
from ..models import IDPS
from ..models import CustomAttribute
from .base import bp
from .base import connection_label

# A name a custom attribute can take (the rule of the Custom Attributes form).
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def mapping_health():
    """Return per connection: attributes ignored, requests that sent them, when last."""
    with activity_db.connection_context():
        rows = list(
            MappingIssue.select(
                MappingIssue.idp,
                fn.COUNT(MappingIssue.id).alias("attributes"),
                fn.SUM(MappingIssue.requests).alias("requests"),
                fn.MAX(MappingIssue.last_seen).alias("last_seen"),
            )
            .group_by(MappingIssue.idp)
            .order_by(MappingIssue.idp)
            .dicts()
        )
    for row in rows:
        row["name"] = connection_label(row["idp"])
    return rows


bp.add_app_template_global(mapping_health)


def fix(issue, defined):
    """Return (custom attribute name or None): what resolves an ignored attribute."""
    if issue.resource_type != "User":
        return None
    name = issue.attribute
    prefix = current_app.config["SCIM_CUSTOM_SCHEMA"] + ":"
    if name.lower().startswith(prefix.lower()):
        name = name[len(prefix) :]
    if not ATTRIBUTE_NAME.match(name) or name.lower() in defined:
        return None
    return name


@bp.get("/mapping/<idp>")
def mapping(idp):
    """List the attributes one connection sends that mdm ignores, with the fix."""
    if idp not in IDPS:
        abort(404)
    with activity_db.connection_context():
        issues = list(
            MappingIssue.select()
            .where(MappingIssue.idp == idp)
            .order_by(MappingIssue.last_seen.desc(), MappingIssue.id)
        )
    defined = {name.lower() for name, _ in CustomAttribute.definitions()}
    return render_template(
        "admin/mapping.html",
        idp=idp,
        name=IDPS[idp],
        issues=[(issue, fix(issue, defined)) for issue in issues],
    )


@bp.post("/mapping/<idp>/clear")
def clear_mapping(idp):
    """Forget one connection's ignored attributes, to see whether a fix worked."""
    if idp not in IDPS:
        abort(404)
    with activity_db.connection_context():
        removed = MappingIssue.delete().where(MappingIssue.idp == idp).execute()
    audit("Mapping Health Cleared", f"{IDPS[idp]}: {removed} attributes")
    flash(f"Cleared the ignored attributes of {IDPS[idp]}.", "success")
    return redirect(url_for("console.mapping", idp=idp))
