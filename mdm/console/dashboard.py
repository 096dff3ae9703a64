"""The console's home page: directory counts, connection health and request charts."""

import re
from collections import namedtuple
from datetime import datetime
from datetime import timedelta
from urllib.parse import urlencode

from flask import current_app
from flask import render_template
from flask import url_for
from peewee import Case
from peewee import Value
from peewee import fn
from werkzeug.routing import BuildError

from ..activity import ActivityEntry
from ..activity import AuditEvent
from ..activity import Refusal
from ..activity import activity_db
from ..activity_store import FAILED
from ..activity_store import ActivityCount
from ..activity_store import bucket_ceiling
from ..db import hour_label
from ..models import IDPS
from ..models import BearerToken
from ..models import Group
from ..models import Membership
from ..models import OAuthClient
from ..models import User
from ..models import utcnow
from .base import SCIM_DISABLED
from .base import bp
from .base import expiry_warning
from .paging import capped_counts
from .webhooks import dashboard_banners as webhook_banners

# Entra runs a cycle about every 40 minutes: two missed cycles make one overdue,
# and the banners look at what happened within that same window.
CYCLE = timedelta(minutes=80)
# Only Entra polls on a schedule; Okta and generic clients push on change, so a
# quiet Okta connection is normal and is never called overdue.
CYCLIC_IDPS = ("entra",)
ERROR_RATE_LIMIT = 0.4
ERROR_RATE_MIN_REQUESTS = 5
HOUR_FORMAT = "%Y-%m-%d %H"

Bucket = namedtuple("Bucket", "start ok failed")


#
# Directory counts
#


def directory_counts():
    """Count users by status, live groups and live memberships, each up to the count cap."""
    # Each count stops at the cap (a Count that says "more than"): exact
    # figures of a million rows would scan them on every view of the page.
    live = User.deprovisioned_at.is_null()
    active, disabled, deprovisioned, groups, memberships = capped_counts(
        [
            User.select().where(live & User.active),
            User.select().where(live & ~User.active),
            User.select().where(User.deprovisioned_at.is_null(False)),
            Group.live(),
            Membership.select()
            .join(User)
            .switch(Membership)
            .join(Group)
            .where(live & Group.deprovisioned_at.is_null()),
        ]
    )
    return {
        "active": active,
        "disabled": disabled,
        "deprovisioned": deprovisioned,
        "users": active + disabled + deprovisioned,
        "groups": groups,
        "memberships": memberships,
        "any_groups": bool(groups) or Group.select().exists(),
    }


#
# Request charts
#


def _hour(value):
    return value.replace(minute=0, second=0, microsecond=0)


def window_start(now, hours):
    """Return the start of the oldest of ``hours`` hourly buckets ending with now's hour."""
    return _hour(now) - timedelta(hours=hours - 1)


def hourly_rows(since):
    """Return (hour "YYYY-MM-DD HH", succeeded, failed) per hour since ``since``, grouped in SQL."""
    with activity_db.connection_context():
        return [row for query in hourly_queries(since) for row in query]


def hourly_queries(since):
    """The queries of hourly_rows: the rollup, rows before its first bucket, refused requests."""
    # The rollup's ten-minute buckets divide hours, so an hour-aligned
    # ``since`` (the charts') reads the rollup alone; otherwise the rows
    # before its first bucket are counted from the log.
    edge = bucket_ceiling(since)
    hour = hour_label(ActivityCount.bucket)
    counted = (
        ActivityCount.select(
            hour,
            fn.SUM(Case(None, [(ActivityCount.failed, 0)], ActivityCount.requests)),
            fn.SUM(Case(None, [(ActivityCount.failed, ActivityCount.requests)], 0)),
        )
        # HTTP requests: a /Bulk request's operations are rows of their own.
        .where((ActivityCount.bucket >= edge) & (ActivityCount.operation == False))  # noqa: E712
        .group_by(hour)
        .tuples()
    )
    entry_hour = hour_label(ActivityEntry.time)
    failed = ActivityEntry.status >= 400
    before = (
        ActivityEntry.select(
            entry_hour,
            fn.COUNT(Case(None, [(~failed, 1)])),
            fn.COUNT(Case(None, [(failed, 1)])),
        )
        .where(
            (ActivityEntry.time >= since)
            & (ActivityEntry.time < edge)
            & (ActivityEntry.operation == False)  # noqa: E712
        )
        .group_by(entry_hour)
        .tuples()
    )
    # Requests without a valid token are counted apart.
    refused_hour = hour_label(Refusal.bucket)
    refused_failed = Refusal.status >= 400
    refused = (
        Refusal.select(
            refused_hour,
            fn.SUM(Case(None, [(~refused_failed, Refusal.requests)], 0)),
            fn.SUM(Case(None, [(refused_failed, Refusal.requests)], 0)),
        )
        .where(Refusal.bucket >= since)
        .group_by(refused_hour)
        .tuples()
    )
    return counted, before, refused


def hourly_series(rows, now, hours):
    """Spread grouped rows over the last ``hours`` hourly buckets, oldest first, zeros filled."""
    first = window_start(now, hours)
    found = {}
    for label, ok, failed in rows:
        try:
            start = datetime.strptime(label, HOUR_FORMAT)
        except (TypeError, ValueError):
            continue
        if first <= start <= _hour(now):
            previous = found.get(start, (0, 0))
            found[start] = (previous[0] + (ok or 0), previous[1] + (failed or 0))
    series = []
    for index in range(hours):
        start = first + timedelta(hours=index)
        ok, failed = found.get(start, (0, 0))
        series.append(Bucket(start, ok, failed))
    return series


def daily_totals(series):
    """Sum an hourly series per UTC day: [(date, succeeded, failed)], oldest first."""
    days = {}
    for bucket in series:
        ok, failed = days.get(bucket.start.date(), (0, 0))
        days[bucket.start.date()] = (ok + bucket.ok, failed + bucket.failed)
    return [(day, ok, failed) for day, (ok, failed) in days.items()]


def _nice_ceiling(value):
    """Round a positive count up to 1, 2 or 5 times a power of ten."""
    if value <= 1:
        return 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


CHART_WIDTH = 720
CHART_HEIGHT = 170
PLOT_LEFT = 44
PLOT_TOP = 10
PLOT_BOTTOM = 140


def chart(series, label_every, label_format):
    """Lay out a stacked bar chart: bars, axis ticks and labels in SVG user units."""
    top = _nice_ceiling(max((b.ok + b.failed for b in series), default=0))
    plot_width = CHART_WIDTH - PLOT_LEFT - 6
    plot_height = PLOT_BOTTOM - PLOT_TOP
    step = plot_width / len(series)
    gap = min(step * 0.25, 6) if step > 8 else 0.5
    bars = []
    labels = []
    for index, bucket in enumerate(series):
        x = PLOT_LEFT + index * step
        ok_height = plot_height * bucket.ok / top
        failed_height = plot_height * bucket.failed / top
        bars.append(
            {
                "bucket": bucket,
                "x": round(x + gap / 2, 2),
                "width": round(step - gap, 2),
                "ok_y": round(PLOT_BOTTOM - ok_height, 2),
                "ok_height": round(ok_height, 2),
                "failed_y": round(PLOT_BOTTOM - ok_height - failed_height, 2),
                "failed_height": round(failed_height, 2),
            }
        )
        if bucket.start.hour % label_every == 0:
            labels.append(
                {
                    "x": round(x + step / 2 if label_every < 24 else x, 2),
                    "text": bucket.start.strftime(label_format),
                    "anchor": "middle" if label_every < 24 else "start",
                    "line": label_every >= 24 and index > 0,
                    "line_x": round(x, 2),
                }
            )
    ticks = [
        {"value": value, "y": round(PLOT_BOTTOM - plot_height * value / top, 2)}
        for value in sorted({0, top // 2 if top >= 2 else 0, top})
    ]
    ok = sum(b.ok for b in series)
    failed = sum(b.failed for b in series)
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": PLOT_LEFT,
        "right": CHART_WIDTH - 6,
        "top": PLOT_TOP,
        "bottom": PLOT_BOTTOM,
        "label_y": PLOT_BOTTOM + 18,
        "bars": bars,
        "labels": labels,
        "ticks": ticks,
        "ok": ok,
        "failed": failed,
        "total": ok + failed,
        "peak": max((b.ok + b.failed for b in series), default=0),
    }


#
# Connections
#


Connection = namedtuple(
    "Connection",
    "idp name tokens active_tokens clients active_clients last_success last_error "
    "last_request day_total day_failed day_operations day_operations_failed "
    "cycle_total cycle_failed state state_class age",
)


def _latest(idp, condition):
    """Return the last recorded activity row for ``idp`` matching ``condition``, or None."""
    # Newest first as the (idp, time, id) indexes hold the rows: the first match
    # walking one backwards is the answer.
    return (
        ActivityEntry.select(
            ActivityEntry.id,
            ActivityEntry.time,
            ActivityEntry.method,
            ActivityEntry.path,
            ActivityEntry.status,
            ActivityEntry.scim_type,
            ActivityEntry.detail,
        )
        .where((ActivityEntry.idp == idp) & condition)
        .order_by(ActivityEntry.time.desc(), ActivityEntry.id.desc())
        .first()
    )


def window_counts(now):
    """Return {idp: (24 h requests, failed, Bulk operations, failed, cycle total, failed)}."""
    # Keyed None for rows of no connection, which the rollup keeps under "".
    found = {}
    for query in window_queries(now):
        for idp, *figures in query:
            known = found.get(idp or None, (0,) * 6)
            found[idp or None] = tuple(
                a + (b or 0) for a, b in zip(known, figures, strict=True)
            )
    return found


def window_queries(now):
    """The queries of window_counts: the rollup, then the rows before its first buckets."""
    # The windows end now and start mid-bucket: whole buckets come from the
    # rollup, the part before the first whole bucket (under ten minutes)
    # from the log, so the figures are exact.
    day, cycle = now - timedelta(hours=24), now - CYCLE
    day_edge, cycle_edge = bucket_ceiling(day), bucket_ceiling(cycle)
    count = ActivityCount.requests
    operation = ActivityCount.operation
    failed = ActivityCount.failed
    recent = ActivityCount.bucket >= cycle_edge
    counted = (
        ActivityCount.select(
            ActivityCount.idp,
            fn.SUM(Case(None, [(operation, 0)], count)),
            fn.SUM(Case(None, [(~operation & failed, count)], 0)),
            fn.SUM(Case(None, [(operation, count)], 0)),
            fn.SUM(Case(None, [(operation & failed, count)], 0)),
            fn.SUM(Case(None, [(recent, count)], 0)),
            fn.SUM(Case(None, [(recent & failed, count)], 0)),
        )
        .where(ActivityCount.bucket >= day_edge)
        .group_by(ActivityCount.idp)
        .tuples()
    )
    return (
        counted,
        _entry_counts(day, day_edge, day=True),
        _entry_counts(cycle, cycle_edge, day=False),
    )


def _entry_counts(since, until, day):
    """Count the log's rows from ``since`` to ``until`` per connection, in window_counts' columns."""
    failed = ActivityEntry.status >= 400
    # A /Bulk request is one HTTP request; its operations are counted apart.
    operation = ActivityEntry.operation == True  # noqa: E712 (SQL, not Python)
    request = ActivityEntry.operation == False  # noqa: E712
    # Grouping on an expression, not the bare column, keeps SQLite on the time
    # index (a range of minutes) instead of walking the idp index over every row.
    idp = fn.COALESCE(ActivityEntry.idp, "")
    if day:
        figures = [
            fn.COUNT(Case(None, [(request, 1)])),
            fn.COUNT(Case(None, [(request & failed, 1)])),
            fn.COUNT(Case(None, [(operation, 1)])),
            fn.COUNT(Case(None, [(operation & failed, 1)])),
            Value(0),
            Value(0),
        ]
    else:
        # These rows are in the rollup's first day bucket already; only the
        # cycle's figures lack them.
        figures = [Value(0)] * 4 + [fn.COUNT(1), fn.COUNT(Case(None, [(failed, 1)]))]
    return (
        ActivityEntry.select(idp, *figures)
        .where((ActivityEntry.time >= since) & (ActivityEntry.time < until))
        .group_by(idp)
        .tuples()
    )


def connection_state(idp, tokens, active_tokens, last_request, now):
    """Name a connection's state and its CSS class from its credentials and last request."""
    # ``tokens`` and ``active_tokens`` count OAuth clients too: an IdP with
    # an active client provisions as well as one with an active token.
    if last_request is None:
        if not tokens:
            return "Not connected", "inactive"
        if not active_tokens:
            return "No active token", "expired"
        return "No requests yet", "inactive"
    if not active_tokens:
        return "No active token", "expired"
    if idp in CYCLIC_IDPS and now - last_request > CYCLE:
        return "Cycle overdue", "overdue"
    return "Connected", "active"


def describe_age(delta):
    """Say how long ago something happened: "5 min ago", "2 h 10 min ago", "3 days ago"."""
    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min ago"
    if minutes < 48 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{hours} h {rest} min ago" if rest else f"{hours} h ago"
    return f"{minutes // 1440} days ago"


def connections(now, counts):
    """Summarise each identity-provider connection for its dashboard card."""
    tokens = {}
    for token in BearerToken.select().order_by(BearerToken.id):
        tokens.setdefault(token.idp, []).append(token)
    clients = {}
    for client in OAuthClient.select().order_by(OAuthClient.id):
        clients.setdefault(client.idp, []).append(client)
    cards = []
    with activity_db.connection_context():
        for idp, name in IDPS.items():
            own = tokens.get(idp, [])
            active = sum(1 for t in own if t.status == "Active")
            own_clients = clients.get(idp, [])
            active_clients = sum(1 for c in own_clients if c.status == "Active")
            success = _latest(idp, ActivityEntry.status < 400)
            # The partial index of failures is chosen for its own condition only.
            error = _latest(idp, FAILED)
            times = [e.time for e in (success, error) if e is not None]
            last = max(times) if times else None
            (
                day_total,
                day_failed,
                day_operations,
                day_operations_failed,
                cycle_total,
                cycle_failed,
            ) = counts.get(idp, (0, 0, 0, 0, 0, 0))
            state, state_class = connection_state(
                idp, own + own_clients, active + active_clients, last, now
            )
            cards.append(
                Connection(
                    idp=idp,
                    name=name,
                    tokens=own,
                    active_tokens=active,
                    clients=own_clients,
                    active_clients=active_clients,
                    last_success=success,
                    last_error=error,
                    last_request=last,
                    day_total=day_total,
                    day_failed=day_failed,
                    day_operations=day_operations,
                    day_operations_failed=day_operations_failed,
                    cycle_total=cycle_total,
                    cycle_failed=cycle_failed,
                    state=state,
                    state_class=state_class,
                    age=describe_age(now - last) if last else None,
                )
            )
    return cards


#
# Refused requests
#


Refused = namedtuple("Refused", "bad_token bad_token_names unknown")

# Audit details name the keys of tokens this server issued, removed or renewed,
# and the ids of its OAuth clients, which refused access tokens are counted by.
AUDITED_KEY = re.compile(r"\b(?:token|replaced) ([0-9a-f]{1,32})\b")
AUDITED_CLIENT = re.compile(r"\bclient (mdmc_[0-9a-f]{1,32})\b")


def issued_keys(keys):
    """Return {key: connection name} for those of ``keys`` this server issued, now or before."""
    if not keys:
        return {}
    found = {
        key: IDPS.get(idp, idp)
        for key, idp in BearerToken.select(BearerToken.key, BearerToken.idp)
        .where(BearerToken.key.in_(sorted(keys)))
        .tuples()
    }
    found.update(
        (client_id, IDPS.get(idp, idp))
        for client_id, idp in OAuthClient.select(OAuthClient.client_id, OAuthClient.idp)
        .where(OAuthClient.client_id.in_(sorted(keys)))
        .tuples()
    )
    # Removed and renewed credentials live on only in the audit trail.
    events = (
        AuditEvent.select(AuditEvent.event, AuditEvent.details)
        .where(
            AuditEvent.event.startswith("SCIM Token")
            | AuditEvent.event.startswith("OAuth Client")
        )
        .tuples()
    )
    names = {name.lower(): name for name in IDPS.values()}
    with activity_db.connection_context():
        for event, details in events:
            connection = details.partition(";")[0].removeprefix("IdP: ")
            pattern = AUDITED_KEY if event.startswith("SCIM Token") else AUDITED_CLIENT
            for key in pattern.findall(details):
                if key in keys and key not in found:
                    found[key] = names.get(connection.lower(), "")
    return found


def refused_requests(now):
    """Count the 401s of the last cycle: from a bad token of an IdP, and from anyone else."""
    # A bad token is one this server issued (inactive, expired, removed or
    # renewed), or a request an IdP's SCIM client sent (its User-Agent); the
    # rest is the internet knocking, which needs no action.
    with activity_db.connection_context():
        rows = list(
            Refusal.select(Refusal.idp, Refusal.token_key, fn.SUM(Refusal.requests))
            .where((Refusal.last_time >= now - CYCLE) & (Refusal.status == 401))
            .group_by(Refusal.idp, Refusal.token_key)
            .tuples()
        )
    known = issued_keys({key for _, key, _ in rows if key})
    bad = unknown = 0
    names = set()
    for idp, key, count in rows:
        if idp or key in known:
            bad += count
            names.add(IDPS.get(idp, idp) if idp else known[key])
        else:
            unknown += count
    names.discard("")
    return Refused(bad, sorted(names), unknown)


#
# Banners
#


def banners(cards, refused, now, scim_enabled):
    """Return the warnings an administrator should act on: (category, message, link, link text)."""
    found = []
    if not scim_enabled:
        found.append(("danger", SCIM_DISABLED, None, None))
    if refused.bad_token:
        count = refused.bad_token
        who = " and ".join(refused.bad_token_names) or "An identity provider"
        found.append(
            (
                "danger",
                f"{count} request{'s' if count != 1 else ''} in the last "
                f"{_minutes(CYCLE)} minutes {'were' if count != 1 else 'was'} "
                f"refused with 401. {who} is using a token or client secret that "
                "is inactive, removed, renewed or expired; Entra will quarantine "
                "provisioning.",
                refused_url(),
                "See refused requests",
            )
        )
    if refused.unknown:
        count = refused.unknown
        found.append(
            (
                "info",
                f"Unknown clients are knocking: {count} request"
                f"{'s' if count != 1 else ''} in the last {_minutes(CYCLE)} minutes "
                f"{'were' if count != 1 else 'was'} refused with 401, with no token "
                "or one this server never issued. They are counted, not logged; "
                "no identity provider is affected.",
                refused_url(),
                "See refused requests",
            )
        )
    for card in cards:
        link = url_for("console.provisioning", idp=card.idp)
        total, failed = card.cycle_total, card.cycle_failed
        if total >= ERROR_RATE_MIN_REQUESTS and failed / total > ERROR_RATE_LIMIT:
            consequence = (
                " Entra quarantines provisioning when more than 40% of its requests fail."
                if card.idp == "entra"
                else ""
            )
            found.append(
                (
                    "danger",
                    f"{card.name}: {failed} of {total} requests "
                    f"({round(100 * failed / total)}%) failed in the last "
                    f"{_minutes(CYCLE)} minutes.{consequence}",
                    activity_url(idp=card.idp, range="1h"),
                    f"See {card.name} activity",
                )
            )
        if card.last_request is not None and not (
            card.active_tokens or card.active_clients
        ):
            found.append(
                (
                    "danger",
                    f"{card.name} has no active token: it cannot provision until you "
                    "generate a token or set one to Active, then update the identity "
                    "provider.",
                    link,
                    f"Open {card.name} tokens",
                )
            )
        for token in card.tokens:
            warning = expiry_warning(token, now, card.name)
            if warning is not None:
                found.append(("warning", warning, link, f"Open {card.name} tokens"))
        for client in card.clients:
            warning = expiry_warning(client, now, card.name)
            if warning is not None:
                found.append(
                    (
                        "warning",
                        warning,
                        url_for("console.provisioning", idp=card.idp, auth="oauth"),
                        f"Open {card.name} OAuth clients",
                    )
                )
    return found


def _minutes(delta):
    return int(delta.total_seconds() // 60)


def activity_url(**filters):
    """Link to the provisioning activity list, filtered by its query arguments."""
    fallback = "/admin/activity" + (f"?{urlencode(filters)}" if filters else "")
    return _url("console.activity", fallback, **filters)


def refused_url():
    """Link to the counts of requests refused before authentication."""
    return _url("console.refused", "/admin/activity/refused")


def activity_entry_url(entry_id):
    """Link to one activity row, even before its page's endpoint is registered."""
    return _url(
        "console.activity_entry", f"/admin/activity/{entry_id}", entry_id=entry_id
    )


def _url(endpoint, fallback, **values):
    try:
        return url_for(endpoint, **values)
    except BuildError:
        return fallback


#
# The page
#


@bp.get("/")
def dashboard():
    """Show the dashboard."""
    now = utcnow()
    counts = directory_counts()
    with activity_db.connection_context():
        window = window_counts(now)
    rows = hourly_rows(window_start(now, 168))
    day = hourly_series(rows, now, 24)
    week = hourly_series(rows, now, 168)
    cards = connections(now, window)
    return render_template(
        "admin/dashboard.html",
        counts=counts,
        cards=cards,
        banners=banners(
            cards,
            refused_requests(now),
            now,
            current_app.config.get("SCIM_ENABLED", True),
        )
        + webhook_banners(),
        day=day,
        week=week,
        week_days=daily_totals(week),
        day_chart=chart(day, 3, "%H:00"),
        week_chart=chart(week, 24, "%a %d"),
        cycle_minutes=_minutes(CYCLE),
        activity_entry_url=activity_entry_url,
        activity_url=activity_url,
        now=now,
    )
