"""Console pages for the audit trail: the list and its CSV and JSON exports."""

from flask import render_template
from flask import request
from peewee import fn

from ..activity import AuditEvent
from ..activity import activity_db
from .base import bp
from .export import batches
from .export import csv_response
from .export import json_response
from .export import stamp
from .paging import QUICK_RANGES
from .paging import Pagination
from .paging import contains
from .paging import filter_args
from .paging import newest_first
from .paging import page_arg
from .paging import query_url
from .paging import quick_range_url
from .paging import time_filters


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
            contains(AuditEvent.event, q)
            | contains(AuditEvent.actor, q)
            | contains(AuditEvent.details, q)
            | contains(AuditEvent.address, q)
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
        pagination = Pagination(query.order_by(*newest_first(AuditEvent)), page_arg())
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
    export_args = filter_args()
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
        quick_range_url=quick_range_url,
        csv_url=query_url("console.audit_csv", export_args),
        json_url=query_url("console.audit_json", export_args),
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
    return csv_response(
        batches(query, AuditEvent), AUDIT_COLUMNS, f"audit-trail-{stamp()}.csv"
    )


@bp.get("/audit.json")
def audit_json():
    """Export the filtered audit trail as a JSON array."""
    query, _, _ = audit_query(request.args)
    return json_response(batches(query, AuditEvent), f"audit-trail-{stamp()}.json")
