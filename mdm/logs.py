"""Console pages for the provisioning activity log and the audit trail."""

import csv
import io
import json
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import time
from datetime import timedelta
from urllib.parse import urlencode

from flask import Blueprint
from flask import Response
from flask import abort
from flask import current_app
from flask import render_template
from flask import request
from flask import url_for
from flask_login import login_required
from markupsafe import Markup
from peewee import Value
from peewee import fn

from .activity import ActivityEntry
from .activity import AuditEvent
from .activity import activity_db
from .activity import pretty
from .activity import writer
from .admin import Pagination
from .admin import _contains
from .admin import page_arg
from .models import IDPS
from .models import Group
from .models import User
from .models import utcnow

bp = Blueprint("logs", __name__, url_prefix="/admin")

PAGE_SIZE = 50
HISTORY_SIZE = 20
EXPORT_BATCH = 1000
QUICK_RANGES = {
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
}
OUTCOMES = ("2xx", "4xx", "5xx")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
RESOURCE_TYPES = ("User", "Group", "Bulk", "Config")
NO_TOKEN = "none"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

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


@bp.before_request
@login_required
def require_admin():
    """Every log page needs a signed-in administrator."""


@bp.after_request
def no_store(response):
    """Keep log pages and exports out of every cache."""
    response.headers["Cache-Control"] = "no-store"
    return response


#
# Shared helpers
#


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


bp.add_app_template_global(connection_label)
bp.add_app_template_filter(log_time)
bp.add_app_template_filter(pretty, "pretty_json")


def parse_moment(text, end=False):
    """Parse a date or ISO date-time as naive UTC; a bare ``end`` date covers its whole day."""
    text = (text or "").strip()
    if len(text) == 10:
        day = date.fromisoformat(text)
        moment = datetime.combine(day, time.min)
        return moment + timedelta(days=1) if end else moment
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def time_filters(field, args):
    """Return (conditions, form values, problems) for the from/to/range arguments."""
    conditions = []
    problems = []
    values = {
        "from": args.get("from", "").strip(),
        "to": args.get("to", "").strip(),
        "range": args.get("range", ""),
    }
    if values["range"] in QUICK_RANGES:
        conditions.append(field >= utcnow() - QUICK_RANGES[values["range"]][1])
    else:
        values["range"] = ""
    for key, label in (("from", "From"), ("to", "To")):
        if not values[key]:
            continue
        try:
            moment = parse_moment(values[key], end=key == "to")
        except (ValueError, OverflowError):
            problems.append(
                f"Ignored the “{label}” date {values[key]!r}: use YYYY-MM-DD."
            )
            continue
        if key == "from":
            conditions.append(field >= moment)
        elif len(values[key]) == 10:
            conditions.append(field < moment)
        else:
            conditions.append(field <= moment)
    return conditions, values, problems


def csv_cell(value):
    """Return ``value`` for a CSV cell, defusing text a spreadsheet would run as a formula."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _export_args():
    args = request.args.to_dict()
    args.pop("page", None)
    return args


def _url(endpoint, args):
    """Build a URL from a query dict without letting it reach url_for's own options."""
    base = url_for(endpoint)
    return f"{base}?{urlencode(args)}" if args else base


def _stamp():
    return utcnow().strftime("%Y%m%d-%H%M%S")


def _batches(query, model):
    """Yield the rows of ``query`` newest first, in keyset batches, each in its own connection."""
    last = None
    while True:
        batch_query = query
        if last is not None:
            batch_query = batch_query.where(
                (model.time < last["time"])
                | ((model.time == last["time"]) & (model.id < last["id"]))
            )
        with activity_db.connection_context():
            rows = list(
                batch_query.order_by(*newest_first(model)).limit(EXPORT_BATCH).dicts()
            )
        if not rows:
            return
        yield from rows
        last = rows[-1]


def newest_first(model):
    """Order rows by time, then by insertion, newest first."""
    return model.time.desc(), model.id.desc()


def _csv_response(rows, columns, filename):
    """Stream ``rows`` (dicts) as an injection-safe CSV attachment."""

    def generate():
        buffer = io.StringIO()
        out = csv.writer(buffer)
        out.writerow(label for label, _ in columns)
        for row in rows:
            out.writerow(csv_cell(value(row)) for _, value in columns)
            if buffer.tell() > 65536:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    return Response(
        generate(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


#
# Failure hints
#


ANY = None
SERVER_ERRORS = range(500, 600)

# (status or statuses, scimType or scimTypes, methods, advice): the first match wins.
HINTS = (
    (
        401,
        ANY,
        ANY,
        "The IdP used a token that is inactive, removed or expired (or sent none). "
        "Entra quarantines provisioning after repeated 401s — generate or activate "
        "a token under User Provisioning and paste it into the IdP, then restart "
        "provisioning there.",
    ),
    (
        403,
        ANY,
        ANY,
        "Provisioning is disabled by the server's operator (SCIM_ENABLED is off): "
        "every SCIM request is refused until it is switched back on.",
    ),
    (
        409,
        "uniqueness",
        ANY,
        "Duplicate userName/displayName: a record with that name already exists — "
        "check for a deprovisioned or differently-cased duplicate (purge it, or "
        "rename one of them in the IdP).",
    ),
    (
        409,
        ANY,
        ANY,
        "The request conflicts with the record's current state; see detail.",
    ),
    (
        400,
        "invalidFilter",
        ANY,
        "The IdP sent a filter this server cannot parse or does not support; check "
        "the matching attribute in the IdP's mapping (usually userName or "
        "externalId) and see detail.",
    ),
    (
        400,
        ("invalidValue", "invalidSyntax"),
        ANY,
        "The IdP sent a value this server rejects; see detail.",
    ),
    (
        400,
        ("invalidPath", "noTarget"),
        ANY,
        "The PATCH path names an attribute or value filter this server does not "
        "support or cannot find; check the IdP's attribute mapping and see detail.",
    ),
    (
        400,
        "mutability",
        ANY,
        "The IdP tried to change a read-only attribute (such as id); remove that "
        "attribute from the IdP's mapping.",
    ),
    (
        400,
        "tooMany",
        ANY,
        "The query matched more results than the server returns at once; the IdP "
        "should page with startIndex and count.",
    ),
    (400, ANY, ANY, "The request was malformed; see detail."),
    (
        404,
        ANY,
        ("PATCH", "PUT", "DELETE"),
        "The IdP has a cached id that no longer exists here (it was purged or never "
        "created on this server); restart provisioning in the IdP so it matches "
        "users and groups again.",
    ),
    (
        404,
        ANY,
        ANY,
        "No record has that id. IdPs usually follow up by searching for the "
        "userName or displayName and creating the record.",
    ),
    (
        412,
        ANY,
        ANY,
        "The record changed since the IdP read it (its If-Match version is stale); "
        "the IdP should read it again and retry.",
    ),
    (
        413,
        ANY,
        ANY,
        "The request body is larger than this server accepts (MAX_CONTENT_LENGTH); "
        "very large group membership changes must be sent in smaller batches.",
    ),
    (
        415,
        ANY,
        ANY,
        "The IdP sent a Content-Type other than application/scim+json.",
    ),
    (
        SERVER_ERRORS,
        ANY,
        ANY,
        "The server failed while handling the request: check the server log at this "
        "time. The IdP retries on its own; repeated 5xx errors can make Entra "
        "quarantine provisioning.",
    ),
)


def _matches(rule, value):
    if rule is ANY:
        return True
    if isinstance(rule, (tuple, range)):
        return value in rule
    return value == rule


def hint(entry):
    """Return advice for a failed request (an object with status, scim_type and method), or None."""
    status = entry.status or 0
    scim_type = entry.scim_type or ""
    method = (entry.method or "").upper()
    for statuses, scim_types, methods, advice in HINTS:
        if (
            _matches(statuses, status)
            and _matches(scim_types, scim_type)
            and _matches(methods, method)
        ):
            return advice
    return None


#
# Provisioning activity
#


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
        floor = int(outcome[0]) * 100
        conditions.append(
            (ActivityEntry.status >= floor) & (ActivityEntry.status < floor + 100)
        )
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
            _contains(ActivityEntry.target, q)
            | _contains(ActivityEntry.resource_id, q)
            | _contains(ActivityEntry.path, q)
            | _contains(ActivityEntry.summary, q)
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
    endpoint = "admin.user" if resource_type == "User" else "admin.group"
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


def _quick_range_url(key):
    args = _export_args()
    for name in ("from", "to", "range"):
        args.pop(name, None)
    if key:
        args["range"] = key
    return _url(request.endpoint, args)


@bp.get("/activity")
def activity():
    """List provisioning requests, newest first, with filters kept in the URL."""
    query, values, problems = activity_query(request.args)
    with activity_db.connection_context():
        pagination = Pagination(
            query.order_by(*newest_first(ActivityEntry)), page_arg(), PAGE_SIZE
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
        quick_range_url=_quick_range_url,
        outcomes=OUTCOMES,
        methods=METHODS,
        resource_types=RESOURCE_TYPES,
        export_url=_url("logs.activity_csv", _export_args()),
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
    return _csv_response(
        _batches(query, ActivityEntry),
        ACTIVITY_COLUMNS,
        f"provisioning-activity-{_stamp()}.csv",
    )


#
# Audit trail
#


def audit_query(args):
    """Return (query without ordering, form values, problems) for the audit filters."""
    query = AuditEvent.select()
    conditions, values, problems = time_filters(AuditEvent.time, args)
    event = args.get("event", "").strip()
    if event:
        conditions.append(AuditEvent.event == event)
    actor = args.get("actor", "").strip()
    if actor:
        conditions.append(fn.LOWER(AuditEvent.actor) == actor.lower())
    q = args.get("q", "").strip()
    if q:
        conditions.append(
            _contains(AuditEvent.event, q)
            | _contains(AuditEvent.actor, q)
            | _contains(AuditEvent.details, q)
            | _contains(AuditEvent.address, q)
        )
    for condition in conditions:
        query = query.where(condition)
    values.update(event=event, actor=actor, q=q)
    return query, values, problems


@bp.get("/audit")
def audit():
    """List audit events, newest first, with filters kept in the URL."""
    query, values, problems = audit_query(request.args)
    with activity_db.connection_context():
        pagination = Pagination(
            query.order_by(*newest_first(AuditEvent)), page_arg(), PAGE_SIZE
        )
        any_events = bool(pagination.total) or AuditEvent.select().exists()
        events = [
            e
            for (e,) in AuditEvent.select(AuditEvent.event)
            .distinct()
            .order_by(AuditEvent.event)
            .tuples()
        ]
        actors = [
            a
            for (a,) in AuditEvent.select(AuditEvent.actor)
            .where(AuditEvent.actor != "")
            .distinct()
            .order_by(AuditEvent.actor)
            .limit(200)
            .tuples()
        ]
    export_args = _export_args()
    return render_template(
        "admin/audit.html",
        pagination=pagination,
        values=values,
        problems=problems,
        any_events=any_events,
        filtered=any(values.values()),
        events=events,
        actors=actors,
        quick_ranges=QUICK_RANGES,
        quick_range_url=_quick_range_url,
        csv_url=_url("logs.audit_csv", export_args),
        json_url=_url("logs.audit_json", export_args),
    )


AUDIT_COLUMNS = (
    ("id", lambda r: r["id"]),
    ("time_utc", lambda r: r["time"]),
    ("event", lambda r: r["event"]),
    ("actor", lambda r: r["actor"]),
    ("address", lambda r: r["address"]),
    ("details", lambda r: r["details"]),
)


@bp.get("/audit.csv")
def audit_csv():
    """Export the filtered audit trail as CSV."""
    query, _, _ = audit_query(request.args)
    return _csv_response(
        _batches(query, AuditEvent), AUDIT_COLUMNS, f"audit-trail-{_stamp()}.csv"
    )


@bp.get("/audit.json")
def audit_json():
    """Export the filtered audit trail as a JSON array."""
    query, _, _ = audit_query(request.args)

    def generate():
        yield "["
        for index, row in enumerate(_batches(query, AuditEvent)):
            row["time"] = csv_cell(row["time"])
            yield ("," if index else "") + "\n" + json.dumps(row, ensure_ascii=False)
        yield "\n]\n"

    return Response(
        generate(),
        mimetype="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="audit-trail-{_stamp()}.json"'
        },
    )
