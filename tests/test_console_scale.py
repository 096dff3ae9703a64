"""Console counts capped for a large directory, activity plans on indexes, bounded activity."""

import json
import re
from urllib.parse import urlencode

import pytest
from bs4 import BeautifulSoup
from werkzeug.datastructures import MultiDict

from mdm.activity import ActivityEntry
from mdm.activity import activity_db
from mdm.activity import writer
from mdm.activity_store import COLUMN_CHARS
from mdm.activity_store import ENTRY_COLUMNS
from mdm.activity_store import ENTRY_MAX_CHARS
from mdm.activity_store import bind
from mdm.console import dashboard
from mdm.console.activity import activity_query
from mdm.console.paging import newest_first
from mdm.db import database
from mdm.db import postgres
from mdm.db import schema_version
from mdm.db import set_schema_version
from mdm.models import Group
from mdm.models import User
from mdm.models import utcnow

from . import served
from .test_admin_browse import add_users
from .test_scim_bulk import BULK_REQUEST

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"


def page(response):
    assert response.status_code == 200
    return BeautifulSoup(response.data, "html.parser")


def text(node):
    return " ".join(node.get_text(" ").split())


def pager(response):
    return text(page(response).main.find("nav", class_="pager"))


def pager_links(response):
    nav = page(response).main.find("nav", class_="pager")
    return [text(a) for a in nav.find_all("a")]


def dashboard_counts(console):
    soup = page(console.get("/admin/"))
    return {
        key: text(soup.select_one(f"#count-{key}"))
        for key in ("active", "disabled", "deprovisioned", "groups", "memberships")
    }


#
# Capped counts
#


def test_users_count_is_exact_up_to_the_cap(app, console):
    app.config["COUNT_CAP"] = 60
    add_users(app, 60)
    response = console.get("/admin/users")
    assert pager(response) == "1–50 of 60 users Page 1 of 2 Next Last"
    assert pager(console.get("/admin/users?page=2")) == (
        "51–60 of 60 users First Previous Page 2 of 2"
    )


def test_users_count_above_the_cap_says_more_than(app, console):
    app.config["COUNT_CAP"] = 59
    add_users(app, 60)
    response = console.get("/admin/users")
    # No last page to link to: only "Next", while the page read a row beyond itself.
    assert pager(response) == "1–50 of more than 59 users Page 1 Next"
    assert pager_links(response) == ["Next"]
    assert pager(console.get("/admin/users?page=2")) == (
        "51–60 of more than 59 users First Previous Page 2"
    )
    # A page past the end (typed by hand: no link leads there) is empty, not an error.
    past = page(console.get("/admin/users?page=9"))
    assert text(past.main.find("p", class_="empty")) == "No users match these filters."


def test_filtered_users_and_groups_pages_cap_their_counts(app, console, scim):
    app.config["COUNT_CAP"] = 3
    for i in range(4):
        scim.create_group(f"Team {i}")
    add_users(app, 4, prefix="off")
    add_users(app, 2, prefix="on")
    add_users(app, 50, prefix="more")
    with app.app_context(), database.connection_context():
        User.update(active=False).where(User.user_name.startswith("off")).execute()
    # Matches that fit on the first page are counted from it, whatever the cap.
    assert pager(console.get("/admin/users?status=disabled")) == (
        "1–4 of 4 users Page 1 of 1"
    )
    with app.app_context(), database.connection_context():
        User.update(active=False).where(User.user_name.startswith("more")).execute()
    assert pager(console.get("/admin/users?status=disabled")) == (
        "1–50 of more than 3 users Page 1 Next"
    )
    assert pager(console.get("/admin/users?status=active")) == (
        "1–2 of 2 users Page 1 of 1"
    )
    assert pager(console.get("/admin/groups")) == "1–4 of more than 3 groups Page 1"
    assert pager(console.get("/admin/groups?q=Team+1")) == "1–1 of 1 groups Page 1 of 1"


def members_column(console):
    soup = page(console.get("/admin/groups"))
    return {
        text(row.find("td", attrs={"data-label": "Name"})): text(
            row.find("td", attrs={"data-label": "Members"})
        )
        for row in soup.main.find("tbody").find_all("tr")
    }


def test_group_member_counts_cap_and_follow_deletes(app, console, scim):
    app.config["COUNT_CAP"] = 2
    users = [scim.create_user(f"m{i}@example.com") for i in range(3)]
    scim.create_group("Staff", members=[u["id"] for u in users])
    scim.create_group("Pair", members=[u["id"] for u in users[:2]])
    scim.create_group("Empty")
    assert members_column(console) == {
        "Empty": "0",
        "Pair": "2",
        "Staff": "more than 2",
    }
    assert scim.delete(f"/Users/{users[0]['id']}").status_code == 204
    assert members_column(console) == {"Empty": "0", "Pair": "1", "Staff": "2"}


def test_dashboard_counts_above_the_cap_say_more_than(app, console, scim):
    app.config["COUNT_CAP"] = 2
    users = [scim.create_user(f"u{i}@example.com") for i in range(3)]
    scim.create_group("Staff", members=[u["id"] for u in users])
    assert dashboard_counts(console) == {
        "active": "more than 2",
        "disabled": "0",
        "deprovisioned": "0",
        "groups": "1",
        "memberships": "more than 2",
    }
    with app.app_context(), database.connection_context():
        counts = dashboard.directory_counts()
    assert str(counts["users"]) == "more than 2"
    assert counts["users"].exact is False


def test_counts_stay_right_after_scim_delete_and_purge(app, console, scim):
    users = [scim.create_user(f"p{i}@example.com") for i in range(3)]
    scim.create_group("Staff", members=[u["id"] for u in users])
    assert dashboard_counts(console) == {
        "active": "3",
        "disabled": "0",
        "deprovisioned": "0",
        "groups": "1",
        "memberships": "3",
    }
    assert scim.delete(f"/Users/{users[0]['id']}").status_code == 204
    assert dashboard_counts(console) == {
        "active": "2",
        "disabled": "0",
        "deprovisioned": "1",
        "groups": "1",
        "memberships": "2",
    }
    listing = console.get("/admin/users")
    assert pager(listing) == "1–3 of 3 users Page 1 of 1"
    purge = page(listing).find("a", string=re.compile("Purge all deprovisioned"))
    assert text(purge) == "Purge all deprovisioned (1)"

    confirm = page(console.get("/admin/users/purge-deprovisioned"))
    hidden = {i["name"]: i["value"] for i in confirm.find_all("input", type="hidden")}
    response = console.post("/admin/users/purge-deprovisioned", data=hidden)
    assert response.status_code == 302
    assert dashboard_counts(console) == {
        "active": "2",
        "disabled": "0",
        "deprovisioned": "0",
        "groups": "1",
        "memberships": "2",
    }
    listing = console.get("/admin/users")
    assert pager(listing) == "1–2 of 2 users Page 1 of 1"
    assert page(listing).find("a", string=re.compile("Purge all")) is None
    with app.app_context(), database.connection_context():
        assert User.select().count() == 2


def test_activity_and_audit_counts_cap(app, console, scim):
    app.config["COUNT_CAP"] = 2
    for i in range(3):
        scim.create_user(f"a{i}@example.com")
    writer.flush()
    assert pager(console.get("/admin/activity?type=User")) == (
        "1–3 of more than 2 requests Page 1"
    )
    app.config["COUNT_CAP"] = 3
    assert pager(console.get("/admin/activity?type=User")) == (
        "1–3 of 3 requests Page 1 of 1"
    )


def test_served_console_counts_up_to_the_configured_cap(tmp_path):
    """``mdm serve`` with MDM_COUNT_CAP shows "more than" past it."""
    instance = tmp_path / "instance"
    instance.mkdir()
    env = served.environment(instance, COUNT_CAP=2)
    secret = served.mdm(env, "token", "create", "--idp", "entra").stdout.strip()
    password = "correct horse battery staple 9"
    served.mdm(env, "admin", "create", "alice", "--password-stdin", input=password)
    process, port = served.start(env, tmp_path / "serve.log")
    try:
        auth = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        # More than a page: a first page that holds every user counts them.
        operations = [
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": str(i),
                "data": {"schemas": [CORE], "userName": f"s{i}@example.com"},
            }
            for i in range(52)
        ]
        response, body = served.request(
            port,
            "POST",
            "/scim/v2/Bulk",
            {"schemas": [BULK_REQUEST], "Operations": operations},
            auth,
        )
        assert response.status == 200
        results = json.loads(body)["Operations"]
        assert [r["status"] for r in results] == ["201"] * 52
        response, body = served.request(port, "GET", "/login")
        cookie = response.getheader("Set-Cookie").split(";")[0]
        token = BeautifulSoup(body, "html.parser").find(
            "input", attrs={"name": "csrf_token"}
        )
        form = {"username": "alice", "password": password}
        if token is not None:
            form["csrf_token"] = token["value"]
        conn_headers = {
            "Cookie": cookie,
            "Content-Type": "application/x-www-form-urlencoded",
        }
        response, _ = served_form(port, "/login", form, conn_headers)
        assert response.status == 302
        cookie = response.getheader("Set-Cookie").split(";")[0]
        response, body = served.request(
            port, "GET", "/admin/users", headers={"Cookie": cookie}
        )
        assert response.status == 200
        nav = BeautifulSoup(body, "html.parser").main.find("nav", class_="pager")
        assert text(nav) == "1–50 of more than 2 users Page 1 Next"
    finally:
        assert served.stop(process) == 0


def served_form(port, path, form, headers):
    """POST an urlencoded form to the served stack."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=urlencode(form), headers=headers)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


#
# Query plans
#


def plan(db, query, ordered=True):
    """Return the query plan of a peewee query as one string."""
    sql, params = query.sql()
    if postgres(db):
        with db.atomic():
            # The test tables are tiny; on them a sequential scan and a sort are
            # always cheapest. Off, a plan still scanning or sorting has no index
            # that serves the query.
            db.execute_sql("SET LOCAL enable_seqscan = off")
            if ordered:
                db.execute_sql("SET LOCAL enable_sort = off")
            db.execute_sql("SET LOCAL enable_bitmapscan = off")
            rows = db.execute_sql("EXPLAIN " + sql, params).fetchall()
        return "\n".join(row[0] for row in rows)
    rows = db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return "\n".join(row[-1] for row in rows)


def uses_index(found, *names):
    return any(re.search(rf"\b{name}\b", found) for name in names)


ACTIVITY_FILTERS = [
    ({"idp": "entra"}, "activity_idp_time_id"),
    ({"idp": "none"}, ("activity_no_idp_time_id", "activity_idp_time_id")),
    ({"type": "Group"}, "activity_resource_type_time_id"),
    ({"resource": "abc"}, "activity_resource_id_time_id"),
    ({"method": "DELETE"}, "activity_method_time_id"),
    ({"range": "1h"}, "activity_time_id"),
    ({}, "activity_time_id"),
    ({"outcome": "4xx"}, "activity_4xx_time_id"),
    ({"outcome": "5xx"}, "activity_5xx_time_id"),
    ({"outcome": "4xx", "range": "24h"}, "activity_4xx_time_id"),
    # Either index reads failures only, newest first.
    (
        {"outcome": "5xx", "idp": "entra"},
        ("activity_failed_idp_time_id", "activity_5xx_time_id"),
    ),
    # Most rows succeed: the time index finds a page of them at once.
    ({"outcome": "2xx"}, "activity_time_id"),
]


@pytest.mark.parametrize(("args", "index"), ACTIVITY_FILTERS)
def test_activity_filters_read_their_index_in_page_order(app, args, index):
    query, _, _ = activity_query(MultiDict(args))
    query = query.order_by(*newest_first(ActivityEntry)).limit(51)
    with activity_db.connection_context():
        found = plan(activity_db, query)
    assert uses_index(found, *([index] if isinstance(index, str) else index)), found
    # Rows come off the index newest first: no sort of the matches.
    if postgres(activity_db):
        assert "Sort" not in found, found
    else:
        assert "TEMP B-TREE" not in found, found


def test_activity_outcome_filters_find_exactly_their_statuses(app):
    writer.flush()
    statuses = [200, 201, 204, 304, 399, 400, 401, 409, 499, 500, 503, 599]
    with activity_db.connection_context():
        ActivityEntry.delete().execute()
        ActivityEntry.insert_many(
            [
                {
                    "time": utcnow(),
                    "method": "GET",
                    "path": "/scim/v2/Users",
                    "status": s,
                }
                for s in statuses
            ]
        ).execute()
        found = {}
        for outcome in ("2xx", "4xx", "5xx"):
            query, _, _ = activity_query(MultiDict({"outcome": outcome}))
            found[outcome] = sorted(e.status for e in query)
    assert found == {
        "2xx": [200, 201, 204],
        "4xx": [400, 401, 409, 499],
        "5xx": [500, 503, 599],
    }


def test_dashboard_activity_queries_use_indexes(app):
    now = utcnow()
    with activity_db.connection_context():
        success = plan(activity_db, _latest_query("entra", ActivityEntry.status < 400))
        failure = plan(activity_db, _latest_query("entra", dashboard.FAILED))
        counted, day_edge, cycle_edge = (
            plan(activity_db, q, ordered=False) for q in dashboard.window_queries(now)
        )
        hourly, before, _ = (
            plan(activity_db, q, ordered=False)
            for q in dashboard.hourly_queries(dashboard.window_start(now, 168))
        )
    assert uses_index(success, "activity_idp_time_id"), success
    assert uses_index(failure, "activity_failed_idp_time_id"), failure
    # The windows' whole buckets and the charts read the rollup, through its
    # index, never the log's rows.
    for found in (counted, hourly):
        assert uses_index(found, "activitycount_bucket_idp_operation_failed"), found
        assert "activity_time_id" not in found, found
        assert not re.search(r"\bactivity\b", found.replace("activity_count", "")), (
            found
        )
    # The partial buckets at the windows' starts read a range of the time index.
    for found in (day_edge, cycle_edge, before):
        assert uses_index(found, "activity_time_id"), found
        if not postgres(activity_db):
            assert "COVERING INDEX activity_time_id" in found, found


def _latest_query(idp, condition):
    """The query dashboard._latest runs, unexecuted."""
    return (
        ActivityEntry.select(ActivityEntry.id)
        .where((ActivityEntry.idp == idp) & condition)
        .order_by(ActivityEntry.time.desc(), ActivityEntry.id.desc())
        .limit(1)
    )


def test_dashboard_directory_counts_use_indexes(app):
    with app.app_context(), database.connection_context():
        deprovisioned = plan(
            database,
            User.select().where(User.deprovisioned_at.is_null(False)).limit(11),
        )
        groups = plan(database, Group.live().limit(11))
    assert uses_index(deprovisioned, "user_deprovisioned"), deprovisioned
    assert uses_index(groups, "group_live_id"), groups


def test_old_single_column_activity_indexes_are_replaced(app):
    with activity_db.connection_context():
        names = {i.name for i in activity_db.get_indexes("activity")}
    assert {
        "activity_time_id",
        "activity_idp_time_id",
        "activity_failed_idp_time_id",
        "activity_4xx_time_id",
        "activity_5xx_time_id",
    } <= names
    assert not names & {
        "activity_idp",
        "activity_time",
        "activity_status",
        "activity_status_time_id",
    }


def test_an_existing_activity_table_trades_its_old_indexes(app):
    """Opening a schema-4 activity table drops its single-column indexes, adds the new."""
    writer.flush()
    with activity_db.connection_context():
        activity_db.execute_sql('DROP INDEX "activity_idp_time_id"')
        activity_db.execute_sql('CREATE INDEX "activity_idp" ON "activity" ("idp")')
    bind(app.config["ACTIVITY_DATABASE"])
    with activity_db.connection_context():
        names = {i.name for i in activity_db.get_indexes("activity")}
    assert "activity_idp_time_id" in names
    assert "activity_idp" not in names


def test_a_schema_5_activity_table_trades_its_status_index(app):
    """Opening a schema-5 activity table drops its index by status, adds the 4xx and 5xx ones."""
    writer.flush()
    with activity_db.connection_context():
        activity_db.execute_sql('DROP INDEX "activity_4xx_time_id"')
        activity_db.execute_sql('DROP INDEX "activity_5xx_time_id"')
        activity_db.execute_sql(
            'CREATE INDEX "activity_status_time_id" ON "activity" ("status", "time", "id")'
        )
        set_schema_version(activity_db, "activity", 5)
    bind(app.config["ACTIVITY_DATABASE"])
    with activity_db.connection_context():
        names = {i.name for i in activity_db.get_indexes("activity")}
        version = schema_version(activity_db, "activity")
    assert {"activity_4xx_time_id", "activity_5xx_time_id"} <= names
    assert "activity_status_time_id" not in names
    assert version == 6


#
# Bounded activity
#


def stored_rows():
    writer.flush()
    with activity_db.connection_context():
        return list(ActivityEntry.select().order_by(ActivityEntry.id).dicts())


def row_chars(row):
    return sum(len(row[name]) for name in ENTRY_COLUMNS if isinstance(row[name], str))


def test_a_large_bulk_request_stores_bounded_rows(app, scim):
    huge = "x" * 200_000
    operations = [
        {
            "method": "POST",
            "bulkId": f"b{i}",
            "path": "/Users",
            "data": {
                "schemas": [CORE],
                "userName": f"big{i}@example.com",
                "displayName": huge,
                "title": huge,
            },
        }
        for i in range(2)
    ]
    response = scim.post("/Bulk", {"schemas": [BULK], "Operations": operations})
    assert response.status_code == 200
    rows = stored_rows()
    assert [r["operation"] for r in rows] == [True, True, False]
    for row in rows:
        assert row_chars(row) <= ENTRY_MAX_CHARS
        for name, limit in zip(ENTRY_COLUMNS, COLUMN_CHARS, strict=True):
            if limit and row[name] is not None:
                assert len(row[name]) <= limit, name
        assert row["request_body"].endswith("characters in all]")


def test_long_noted_fields_are_cut_to_their_column_limit(app):
    limits = dict(zip(ENTRY_COLUMNS, COLUMN_CHARS, strict=True))
    row = [None] * len(ENTRY_COLUMNS)
    values = {
        "time": utcnow(),
        "method": "POST",
        "path": "/scim/v2/Users",
        "query": "",
        "target": "t" * 5000,
        "summary": "s" * 5000,
        "detail": "d" * 5000,
        "status": 409,
        "duration_ms": 1.0,
        "operation": False,
    }
    for name, value in values.items():
        row[ENTRY_COLUMNS.index(name)] = value
    writer.put(ActivityEntry, tuple(row))
    (stored,) = stored_rows()
    assert stored["target"] == "t" * limits["target"]
    assert stored["summary"] == "s" * limits["summary"]
    assert stored["detail"] == "d" * limits["detail"]
    assert stored["status"] == 409


def test_queued_values_are_stored_as_their_columns_take_them(app):
    """NUL is escaped in any text column, other values bind as their fields convert them, and each row is counted once."""
    from mdm.activity_store import ActivityCount

    values = {
        "time": utcnow(),
        "idp": "en\x00tra" + "i" * 100,
        "method": "POST",
        "path": "/scim/v2/Users/a\x00b",
        "query": "",
        "resource_id": 12345,
        "summary": "",
        "status": "409",
        "detail": "\x00",
        "duration_ms": 3,
        "request_body": '{"userName": "a\x00b"}',
        "operation": 1,
    }
    row = [None] * len(ENTRY_COLUMNS)
    for name, value in values.items():
        row[ENTRY_COLUMNS.index(name)] = value
    writer.put(ActivityEntry, tuple(row))
    writer.put(ActivityEntry, tuple(row))
    rows = stored_rows()
    assert len(rows) == 2
    for stored in rows:
        assert stored["idp"] == ("en\\u0000tra" + "i" * 100)[:64]
        assert stored["path"] == "/scim/v2/Users/a\\u0000b"
        assert stored["detail"] == "\\u0000"
        assert stored["request_body"] == '{"userName": "a\\u0000b"}'
        assert stored["resource_id"] == "12345"
        assert stored["status"] == 409
        assert stored["duration_ms"] == 3.0
        assert stored["operation"] is True
        assert stored["user_agent"] is None
    with activity_db.connection_context():
        counted = list(
            ActivityCount.select(
                ActivityCount.idp,
                ActivityCount.operation,
                ActivityCount.failed,
                ActivityCount.requests,
            ).tuples()
        )
    assert [(idp, bool(op), bool(failed), n) for idp, op, failed, n in counted] == [
        (rows[0]["idp"], True, True, 2)
    ]


def test_the_row_cap_holds_under_a_flood(app, scim):
    """A flood between two timed prunes is pruned after a tenth of the cap."""
    writer.max_rows = 20
    try:
        scim.create_user("first@example.com")
        writer.flush()
        for i in range(150):
            query = urlencode({"filter": f'userName eq "n{i}"'})
            assert scim.get(f"/Users?{query}").status_code == 200
            if i % 30 == 29:
                writer.flush()
        rows = stored_rows()
    finally:
        writer.max_rows = app.config["ACTIVITY_MAX_ROWS"]
    # At most the cap plus the tenth of it written since the last prune.
    assert len(rows) <= 22
    # The newest are kept.
    assert rows[-1]["query"] == 'filter=userName eq "n149"'
