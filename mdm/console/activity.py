"""Console pages for the provisioning activity log: the list, one request, CSV export."""

from flask import abort
from flask import current_app
from flask import render_template
from flask import request
from flask import url_for
from peewee import Value

from ..activity import ActivityEntry
from ..activity import Refusal
from ..activity import activity_db
from ..activity import writer
from ..activity_store import REFUSAL_ROWS_PER_BUCKET
from ..activity_store import outcome_condition
from ..models import IDPS
from ..models import Group
from ..models import User
from .base import bp
from .base import connection_label
from .export import batches
from .export import csv_response
from .export import stamp
from .hints import hint
from .paging import QUICK_RANGES
from .paging import Pagination
from .paging import contains
from .paging import filter_args
from .paging import newest_first
from .paging import page_arg
from .paging import query_url
from .paging import quick_range_url
from .paging import time_filters

HISTORY_SIZE = 20
OUTCOMES = ("2xx", "4xx", "5xx")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
RESOURCE_TYPES = ("User", "Group", "Bulk", "Config")
NO_TOKEN = "none"

# Every column but the bodies: lists and exports never load or show them.
LIST_FIELDS = (
    ActivityEntry.id,
    ActivityEntry.time,
    ActivityEntry.idp,
    ActivityEntry.token_key,
    ActivityEntry.client_address,
    ActivityEntry.user_agent,
    ActivityEntry.method,
    ActivityEntry.path,
    ActivityEntry.query,
    ActivityEntry.resource_type,
    ActivityEntry.resource_id,
    ActivityEntry.target,
    ActivityEntry.summary,
    ActivityEntry.status,
    ActivityEntry.scim_type,
    ActivityEntry.detail,
    ActivityEntry.duration_ms,
)


def activity_query(args):
    """Return (query without ordering, form values, problems) for the activity filters."""
    query = ActivityEntry.select(*LIST_FIELDS)
    conditions, values, problems = time_filters(ActivityEntry.time, args)
    idp = args.get("idp", "")
    if idp == NO_TOKEN:
        conditions.append(ActivityEntry.idp.is_null())
    elif idp in IDPS:
        conditions.append(ActivityEntry.idp == idp)
    else:
        idp = ""
    outcome = args.get("outcome", "")
    if outcome in OUTCOMES:
        conditions.append(outcome_condition(int(outcome[0]) * 100))
    else:
        outcome = ""
    method = args.get("method", "").upper()
    if method in METHODS:
        conditions.append(ActivityEntry.method == method)
    else:
        method = ""
    resource_type = args.get("type", "")
    if resource_type in RESOURCE_TYPES:
        conditions.append(ActivityEntry.resource_type == resource_type)
    else:
        resource_type = ""
    resource = args.get("resource", "").strip()
    if resource:
        conditions.append(ActivityEntry.resource_id == resource)
    q = args.get("q", "").strip()
    if q:
        conditions.append(
            contains(ActivityEntry.target, q)
            | contains(ActivityEntry.resource_id, q)
            | contains(ActivityEntry.path, q)
            | contains(ActivityEntry.summary, q)
        )
    for condition in conditions:
        query = query.where(condition)
    values.update(
        idp=idp,
        outcome=outcome,
        method=method,
        type=resource_type,
        resource=resource,
        q=q,
    )
    return query, values, problems


def existing_resources(entries):
    """Return {(resource type, scim id)} of users and groups that still exist, in one query."""
    user_ids = {e.resource_id for e in entries if e.resource_type == "User"}
    group_ids = {e.resource_id for e in entries if e.resource_type == "Group"}
    user_ids.discard(None)
    group_ids.discard(None)
    if not user_ids and not group_ids:
        return set()
    users = User.select(User.scim_id, Value("User")).where(
        User.scim_id.in_(sorted(user_ids))
    )
    groups = Group.select(Group.scim_id, Value("Group")).where(
        Group.scim_id.in_(sorted(group_ids))
    )
    return {(kind, scim_id) for scim_id, kind in (users + groups).tuples()}


def resource_url(resource_type, resource_id, existing):
    """Link to the console page of a user or group that still exists, else None."""
    if (resource_type, resource_id) not in existing:
        return None
    endpoint = "console.user" if resource_type == "User" else "console.group"
    return url_for(endpoint, scim_id=resource_id)


def history(resource_id, limit=HISTORY_SIZE):
    """Return the newest activity rows about one user or group (no bodies)."""
    with activity_db.connection_context():
        return list(
            ActivityEntry.select(*LIST_FIELDS)
            .where(ActivityEntry.resource_id == resource_id)
            .order_by(*newest_first(ActivityEntry))
            .limit(limit)
        )


@bp.get("/activity")
def activity():
    """List provisioning requests, newest first, with filters kept in the URL."""
    query, values, problems = activity_query(request.args)
    with activity_db.connection_context():
        pagination = Pagination(
            query.order_by(*newest_first(ActivityEntry)), page_arg()
        )
        any_entries = bool(pagination.total) or ActivityEntry.select().exists()
    existing = existing_resources(pagination.items)
    return render_template(
        "admin/activity.html",
        pagination=pagination,
        values=values,
        problems=problems,
        any_entries=any_entries,
        filtered=any(values.values()),
        links={
            e.id: resource_url(e.resource_type, e.resource_id, existing)
            for e in pagination.items
        },
        quick_ranges=QUICK_RANGES,
        quick_range_url=quick_range_url,
        outcomes=OUTCOMES,
        methods=METHODS,
        resource_types=RESOURCE_TYPES,
        export_url=query_url("console.activity_csv", filter_args()),
        logging_enabled=current_app.config.get("ACTIVITY_LOG", True),
        retention_days=writer.retention_days,
        dropped=writer.dropped,
    )


@bp.get("/activity/<int:entry_id>")
def activity_entry(entry_id):
    """Show one request in full: headers we keep, redacted bodies and a hint."""
    with activity_db.connection_context():
        entry = ActivityEntry.get_or_none(ActivityEntry.id == entry_id)
    if entry is None:
        abort(404)
    existing = existing_resources([entry])
    return render_template(
        "admin/activity_entry.html",
        entry=entry,
        hint=hint(entry),
        resource_link=resource_url(entry.resource_type, entry.resource_id, existing),
    )


REFUSED_SHOWN = 200


@bp.get("/activity/refused")
def refused():
    """List the counts of requests refused before authentication, newest first."""
    with activity_db.connection_context():
        rows = list(
            Refusal.select()
            .order_by(Refusal.last_time.desc(), Refusal.id.desc())
            .limit(REFUSED_SHOWN)
        )
    return render_template(
        "admin/refused.html",
        rows=rows,
        shown=REFUSED_SHOWN,
        per_bucket=REFUSAL_ROWS_PER_BUCKET,
        retention_days=writer.retention_days,
    )


ACTIVITY_COLUMNS = (
    ("id", lambda r: r["id"]),
    ("time_utc", lambda r: r["time"]),
    ("connection", lambda r: connection_label(r["idp"])),
    ("token_key", lambda r: r["token_key"]),
    ("client_address", lambda r: r["client_address"]),
    ("user_agent", lambda r: r["user_agent"]),
    ("method", lambda r: r["method"]),
    ("path", lambda r: r["path"]),
    ("query", lambda r: r["query"]),
    ("resource_type", lambda r: r["resource_type"]),
    ("resource_id", lambda r: r["resource_id"]),
    ("target", lambda r: r["target"]),
    ("summary", lambda r: r["summary"]),
    ("status", lambda r: r["status"]),
    ("scim_type", lambda r: r["scim_type"]),
    ("detail", lambda r: r["detail"]),
    ("duration_ms", lambda r: r["duration_ms"]),
)


@bp.get("/activity.csv")
def activity_csv():
    """Export the filtered activity as CSV (no bodies)."""
    query, _, _ = activity_query(request.args)
    return csv_response(
        batches(query, ActivityEntry),
        ACTIVITY_COLUMNS,
        f"provisioning-activity-{stamp()}.csv",
    )
