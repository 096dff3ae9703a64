"""The dashboard's activity figures come from a rollup that counts exactly what the log holds."""

import collections
from datetime import timedelta

import pytest
from bs4 import BeautifulSoup
from peewee import Case
from peewee import fn

from mdm import create_app
from mdm.activity import ActivityEntry
from mdm.activity import activity_db
from mdm.activity import writer
from mdm.activity_store import ENTRY_COLUMNS
from mdm.activity_store import ActivityCount
from mdm.activity_store import bind
from mdm.activity_store import count_bucket
from mdm.activity_store import prune
from mdm.console import dashboard
from mdm.db import hour_label
from mdm.models import utcnow

from . import served
from .conftest import database_config
from .test_console_scale import BULK
from .test_console_scale import CORE
from .test_console_scale import served_form

# Mid-bucket and in the past, so both windows (24 h and the 80-minute cycle)
# start and end inside a ten-minute bucket: a now of 13:27:41 starts them at
# 13:27:41 and 12:07:41.
NOW = count_bucket(utcnow()) - timedelta(hours=2) + timedelta(minutes=7, seconds=41)
IDPS = ("entra", "okta", None, "generic")
STATUSES = (200, 201, 404, 409, 500)


def entry(when, idp=None, status=200, operation=False):
    """Return an activity tuple in ENTRY_COLUMNS order, as a request queues it."""
    values = {
        "time": when,
        "idp": idp,
        "method": "GET",
        "path": "/scim/v2/Users",
        "query": "",
        "summary": "",
        "status": status,
        "duration_ms": 1.0,
        "operation": operation,
    }
    return tuple(values.get(name) for name in ENTRY_COLUMNS)


def edge_times():
    """Times on and around every edge the figures have, and spread over nine days."""
    day, cycle = NOW - timedelta(hours=24), NOW - dashboard.CYCLE
    times = []
    for edge in (
        day,
        cycle,
        count_bucket(day),
        count_bucket(day) + timedelta(minutes=10),
        count_bucket(cycle),
        count_bucket(cycle) + timedelta(minutes=10),
        dashboard.window_start(NOW, 168),
        dashboard.window_start(NOW, 24),
        count_bucket(NOW),
        NOW,
    ):
        for offset in (-61, -1, -0.000001, 0, 0.000001, 1, 59):
            times.append(edge + timedelta(seconds=offset))
    times += [NOW - timedelta(minutes=37 * i + 0.5) for i in range(350)]
    return times


def seeded_rows():
    """Rows of several connections (none included), outcomes and kinds at every edge."""
    rows = []
    for i, when in enumerate(edge_times()):
        rows.append(
            entry(
                when,
                idp=IDPS[i % len(IDPS)],
                status=STATUSES[i % len(STATUSES)],
                operation=i % 3 == 0,
            )
        )
        rows.append(entry(when, idp=IDPS[(i + 1) % len(IDPS)], status=200))
    return rows


def write(rows):
    """Queue ``rows`` as requests do and wait for the writer's batches."""
    writer.start()
    for row in rows:
        writer.put(ActivityEntry, row)
    writer.flush()


def counted_from_rows(now):
    """Count the window figures straight off the log, as the dashboard once did."""
    failed = ActivityEntry.status >= 400
    recent = ActivityEntry.time >= now - dashboard.CYCLE
    operation = ActivityEntry.operation == True  # noqa: E712
    request = ActivityEntry.operation == False  # noqa: E712
    query = (
        ActivityEntry.select(
            ActivityEntry.idp,
            fn.COUNT(Case(None, [(request, 1)])),
            fn.COUNT(Case(None, [(request & failed, 1)])),
            fn.COUNT(Case(None, [(operation, 1)])),
            fn.COUNT(Case(None, [(operation & failed, 1)])),
            fn.COUNT(Case(None, [(recent, 1)])),
            fn.COUNT(Case(None, [(recent & failed, 1)])),
        )
        .where(ActivityEntry.time >= now - timedelta(hours=24))
        .group_by(ActivityEntry.idp)
        .tuples()
    )
    with activity_db.connection_context():
        return {row[0]: row[1:] for row in query}


def hourly_from_rows(since):
    """Count requests per hour since ``since`` straight off the log."""
    hour = hour_label(ActivityEntry.time)
    failed = ActivityEntry.status >= 400
    query = (
        ActivityEntry.select(
            hour,
            fn.COUNT(Case(None, [(~failed, 1)])),
            fn.COUNT(Case(None, [(failed, 1)])),
        )
        .where((ActivityEntry.time >= since) & (ActivityEntry.operation == False))  # noqa: E712
        .group_by(hour)
        .tuples()
    )
    with activity_db.connection_context():
        return dict((label, (ok, bad)) for label, ok, bad in query)


def hourly_from_dashboard(since):
    merged = {}
    for label, ok, bad in dashboard.hourly_rows(since):
        previous = merged.get(label, (0, 0))
        merged[label] = (previous[0] + ok, previous[1] + bad)
    return {label: figures for label, figures in merged.items() if figures != (0, 0)}


def window_from_dashboard(now):
    with activity_db.connection_context():
        counts = dashboard.window_counts(now)
    return {idp: figures for idp, figures in counts.items() if any(figures)}


def rollup_rows():
    """Return the rollup as {(bucket, idp, operation, failed): requests}."""
    with activity_db.connection_context():
        return {
            (bucket, idp, bool(operation), bool(failed)): requests
            for bucket, idp, operation, failed, requests in ActivityCount.select(
                ActivityCount.bucket,
                ActivityCount.idp,
                ActivityCount.operation,
                ActivityCount.failed,
                ActivityCount.requests,
            ).tuples()
        }


def rollup_from_rows():
    """Count every logged row by its rollup key, in Python."""
    with activity_db.connection_context():
        rows = ActivityEntry.select(
            ActivityEntry.time,
            ActivityEntry.idp,
            ActivityEntry.operation,
            ActivityEntry.status,
        ).tuples()
        return dict(
            collections.Counter(
                (count_bucket(when), idp or "", bool(operation), status >= 400)
                for when, idp, operation, status in rows
            )
        )


def assert_figures_match_the_rows():
    assert rollup_rows() == rollup_from_rows()
    for now in (NOW, NOW + timedelta(minutes=2, seconds=19), NOW - timedelta(hours=5)):
        assert window_from_dashboard(now) == counted_from_rows(now)
    for since in (
        dashboard.window_start(NOW, 168),
        dashboard.window_start(NOW, 24),
        NOW - timedelta(hours=1),
        NOW - timedelta(hours=30, minutes=4, seconds=3),
    ):
        assert hourly_from_dashboard(since) == hourly_from_rows(since)


def test_the_writers_batches_keep_the_rollup_exact(app, monkeypatch):
    rows = seeded_rows()
    # Several batches, each adding to buckets the one before began.
    monkeypatch.setattr(writer, "BATCH", 100)
    assert len(rows) > 5 * writer.BATCH
    write(rows)
    assert_figures_match_the_rows()
    expected = counted_from_rows(NOW)
    # Connections, no connection, failures, Bulk operations and the cycle all count.
    assert set(expected) == set(IDPS)
    assert all(all(figures) for figures in expected.values()), expected
    # A later batch adds to the rows the earlier ones wrote.
    before = rollup_rows()
    write([entry(NOW, idp="entra", status=503), entry(NOW, idp=None)])
    after = rollup_rows()
    bucket = count_bucket(NOW)
    assert after[(bucket, "entra", False, True)] == (
        before.get((bucket, "entra", False, True), 0) + 1
    )
    assert after[(bucket, "", False, False)] == before[(bucket, "", False, False)] + 1
    assert_figures_match_the_rows()


def test_dict_rows_of_the_writer_are_counted(app):
    writer.start()
    writer.put(
        ActivityEntry,
        {"time": NOW, "idp": "okta", "method": "GET", "path": "/p", "status": 500},
    )
    writer.flush()
    assert rollup_rows() == {(count_bucket(NOW), "okta", False, True): 1}
    assert window_from_dashboard(NOW) == {"okta": (1, 1, 0, 0, 1, 1)}


@pytest.mark.parametrize("max_rows", [1000, 300, 1])
def test_pruning_takes_the_deleted_rows_out_of_the_rollup(app, max_rows):
    old = utcnow() - timedelta(days=40)
    write(
        [entry(old + timedelta(minutes=i), idp=IDPS[i % 4]) for i in range(30)]
        + seeded_rows()
    )
    with activity_db.connection_context():
        prune(30, max_rows)
        kept = ActivityEntry.select().count()
        # No bucket is left at zero or below.
        assert not ActivityCount.select().where(ActivityCount.requests <= 0).exists()
    assert kept == min(max_rows, len(seeded_rows()))
    assert_figures_match_the_rows()
    assert all(bucket > old + timedelta(hours=1) for bucket, *_ in rollup_rows())


def test_an_upgraded_log_is_counted_in_one_backfill(app):
    rows = seeded_rows()
    fields = [ActivityEntry._meta.fields[name] for name in ENTRY_COLUMNS]
    with activity_db.connection_context():
        # A log of activity schema 5, written before the rollup existed.
        activity_db.execute_sql('DROP TABLE "activity_count"')
        with activity_db.atomic():
            for start in range(0, len(rows), 100):
                ActivityEntry.insert_many(
                    rows[start : start + 100], fields=fields
                ).execute()
    bind(app.config["ACTIVITY_DATABASE"])
    assert rollup_rows() == rollup_from_rows()
    assert_figures_match_the_rows()
    # Opening it again counts nothing twice.
    bind(app.config["ACTIVITY_DATABASE"])
    assert_figures_match_the_rows()


def test_served_dashboard_counts_what_the_server_logged(tmp_path):
    """``mdm serve`` counts its own requests into the rollup, and its dashboard shows them."""
    instance = tmp_path / "instance"
    instance.mkdir()
    env = served.environment(instance)
    secret = served.mdm(env, "token", "create", "--idp", "entra").stdout.strip()
    password = "correct horse battery staple 9"
    served.mdm(env, "admin", "create", "alice", "--password-stdin", input=password)
    process, port = served.start(env, tmp_path / "serve.log")
    try:
        auth = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        sent = [
            (
                "POST",
                "/scim/v2/Users",
                {"schemas": [CORE], "userName": "a@example.com"},
            ),
            (
                "POST",
                "/scim/v2/Users",
                {"schemas": [CORE], "userName": "b@example.com"},
            ),
            (
                "POST",
                "/scim/v2/Users",
                {"schemas": [CORE], "userName": "a@example.com"},
            ),
            ("GET", "/scim/v2/Users/missing", None),
            (
                "POST",
                "/scim/v2/Bulk",
                {
                    "schemas": [BULK],
                    "Operations": [
                        {
                            "method": "POST",
                            "path": "/Users",
                            "bulkId": "c",
                            "data": {"schemas": [CORE], "userName": "c@example.com"},
                        },
                        {"method": "DELETE", "path": "/Users/missing"},
                    ],
                },
            ),
        ]
        statuses = [
            served.request(port, method, path, body, auth)[0].status
            for method, path, body in sent
        ]
        assert statuses == [201, 201, 409, 404, 200]
    finally:
        # Stopping flushes the server's activity writer.
        assert served.stop(process) == 0
    process, port = served.start(env, tmp_path / "serve2.log")
    try:
        soup = dashboard_page(port, sign_in(port, password))
        assert (
            text(soup.select_one("#connection-entra .dash-day")),
            text(soup.select_one(".dash-summary")),
        ) == (
            "5 requests, 2 failed; 2 Bulk operations, 1 failed",
            "5 requests, 2 failed (40.0%).",
        )
    finally:
        assert served.stop(process) == 0
    # What the server counted is what it logged.
    create_app({"SECRET_KEY": "x", **database_config(instance / "mdm.sqlite")})
    assert rollup_rows() == rollup_from_rows()
    assert sum(rollup_rows().values()) == 7


def sign_in(port, password):
    """Sign in to the served console as alice; return the session cookie."""
    response, body = served.request(port, "GET", "/login")
    cookie = response.getheader("Set-Cookie").split(";")[0]
    token = BeautifulSoup(body, "html.parser").find(
        "input", attrs={"name": "csrf_token"}
    )
    form = {"username": "alice", "password": password}
    if token is not None:
        form["csrf_token"] = token["value"]
    headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
    response, _ = served_form(port, "/login", form, headers)
    assert response.status == 302
    return response.getheader("Set-Cookie").split(";")[0]


def dashboard_page(port, cookie):
    response, body = served.request(port, "GET", "/admin/", headers={"Cookie": cookie})
    assert response.status == 200
    return BeautifulSoup(body, "html.parser")


def text(node):
    return " ".join(node.get_text().split())
