"""Provisioning activity: what each SCIM request records, redaction, retention and the console pages."""

import csv
import io
import json
import re
from datetime import UTC
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup
from peewee import fn
from playhouse.test_utils import count_queries

from mdm import activity
from mdm.activity import ActivityEntry
from mdm.activity import AuditEvent
from mdm.activity import Refusal
from mdm.activity import activity_db
from mdm.activity_store import ActivityCount
from mdm.activity_store import recount
from mdm.console.export import csv_cell
from mdm.console.hints import hint
from mdm.db import database
from mdm.models import User
from mdm.models import utcnow

from .conftest import ENGINE
from .conftest import ScimClient
from .conftest import issue_token

SECRET = "S3cret!"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
EMPTY = (
    "No provisioning requests yet: when an identity provider calls the SCIM API, "
    "each request appears here."
)
HEADERS = [
    "Time",
    "Connection",
    "Method",
    "Resource",
    "Target",
    "Summary",
    "Status",
    "Duration",
]
# The SCIM views do not yet describe what they did (activity.note) and read the
# body without caching it, so the recorder cannot see it: see the report.


def entries():
    """Return every recorded request, oldest first, after the writer catches up."""
    activity.writer.flush()
    with activity_db.connection_context():
        return list(ActivityEntry.select().order_by(ActivityEntry.id))


def last_entry():
    return entries()[-1]


def add(minutes_ago=0, **fields):
    """Insert one activity row directly and return its id."""
    row = {
        "time": utcnow() - timedelta(minutes=minutes_ago),
        "idp": "entra",
        "token_key": "k-entra",
        "client_address": "10.0.0.1",
        "user_agent": "Azure AD Provisioning",
        "method": "GET",
        "path": "/scim/v2/Users",
        "query": "",
        "resource_type": "User",
        "status": 200,
        "summary": "",
        "duration_ms": 1.25,
    }
    row.update(fields)
    with activity_db.connection_context():
        return ActivityEntry.insert(row).execute()


def page(response):
    """Parse an HTML response."""
    assert response.status_code == 200, response.status_code
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def text(node):
    """Return a node's text with whitespace collapsed."""
    return " ".join(node.get_text().split())


def rows(soup):
    """Return the activity table's rows as {header: cell}."""
    found = soup.main.find("table")
    if found is None:
        return []
    headers = [text(th) for th in found.select("thead th")]
    return [
        dict(zip(headers, tr.find_all("td"), strict=True))
        for tr in found.select("tbody tr")
    ]


def listed(client, query=""):
    """Return the ids of the requests a list page shows, in order."""
    soup = page(client.get(f"/admin/activity{query}"))
    return [
        int(row["Time"].a["href"].rsplit("/", 1)[1])
        for row in rows(soup)
        if row["Time"].a
    ]


def read_csv(response):
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def file_bytes(app):
    """Return what the activity store holds: the file after a checkpoint, or every row's text."""
    activity.writer.flush()
    if ENGINE == "postgresql":
        with activity_db.connection_context():
            rows = activity_db.execute_sql(
                "SELECT a::text FROM activity a UNION ALL SELECT e::text FROM audit_event e"
                " UNION ALL SELECT r::text FROM refusal r"
            ).fetchall()
        return "\n".join(row[0] for row in rows).encode()
    with activity_db.connection_context():
        activity_db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    path = Path(app.config["ACTIVITY_DATABASE"])
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        data += wal.read_bytes()
    return data


def patch_ops(*operations):
    return {"schemas": [PATCH_SCHEMA], "Operations": list(operations)}


#
# What a request records
#


def test_success_is_recorded(app, client):
    """A successful request records the connection, token key, client and timing."""
    token, secret = issue_token(app, "okta")
    okta = ScimClient(client, secret)
    response = okta.get(
        "/Users?startIndex=1&count=2", headers={"User-Agent": "Okta SCIM Client 1.0"}
    )
    assert response.status_code == 200
    entry = last_entry()
    assert entry.idp == "okta"
    assert entry.token_key == token.key
    assert entry.method == "GET"
    assert entry.path == "/scim/v2/Users"
    assert entry.query == "startIndex=1&count=2"
    assert entry.resource_type == "User"
    assert entry.resource_id is None
    assert entry.status == 200
    assert entry.outcome == "2xx"
    assert entry.scim_type is None and entry.detail is None
    assert entry.client_address == "127.0.0.1"
    assert entry.user_agent == "Okta SCIM Client 1.0"
    assert entry.duration_ms >= 0
    assert '"totalResults"' in entry.response_body


def test_discovery_requests_are_config(app, scim):
    """Discovery needs no token, but one sent names the connection."""
    scim.get("/ServiceProviderConfig")
    entry = last_entry()
    assert (entry.resource_type, entry.status, entry.idp) == ("Config", 200, "entra")


def test_401_without_token(app, client):
    """A request without a token is counted, not logged as a row of its own."""
    assert client.get("/scim/v2/Users").status_code == 401
    assert entries() == []
    with activity_db.connection_context():
        (refusal,) = Refusal.select()
    assert (refusal.reason, refusal.idp, refusal.token_key, refusal.requests) == (
        "no token",
        "",
        "",
        1,
    )
    assert (refusal.method, refusal.path) == ("GET", "/scim/v2/Users")


def test_401_with_a_wrong_token_keeps_no_secret(app, client):
    wrong = "mdm_" + "x" * 40
    response = client.get(
        "/scim/v2/Users", headers={"Authorization": f"Bearer {wrong}"}
    )
    assert response.status_code == 401
    assert entries() == []
    with activity_db.connection_context():
        (refusal,) = Refusal.select()
    assert (refusal.reason, refusal.token_key) == ("not an mdm token", "")
    assert wrong.encode() not in file_bytes(app)


def test_400_invalid_filter(app, scim):
    assert scim.get("/Users?filter=bogus").status_code == 400
    entry = last_entry()
    assert (entry.status, entry.scim_type) == (400, "invalidFilter")
    assert entry.query == "filter=bogus"
    assert entry.detail
    assert "filter" in hint(entry)


def test_409_uniqueness(app, scim):
    scim.create_user("dup@example.com")
    response = scim.post(
        "/Users", {"schemas": [USER_SCHEMA], "userName": "dup@example.com"}
    )
    assert response.status_code == 409
    entry = last_entry()
    assert (entry.method, entry.status, entry.scim_type) == ("POST", 409, "uniqueness")
    assert "dup@example.com" in entry.detail
    assert "duplicate username/displayname" in hint(entry).lower()


def test_404_on_patch(app, scim):
    response = scim.patch(
        "/Users/no-such-id",
        patch_ops({"op": "replace", "path": "active", "value": False}),
    )
    assert response.status_code == 404
    entry = last_entry()
    assert (entry.method, entry.status) == ("PATCH", 404)
    assert (entry.resource_type, entry.resource_id) == ("User", "no-such-id")
    assert "cached id" in hint(entry)


def test_patch_is_recorded_against_the_resource(app, scim):
    user = scim.create_user("pat@example.com")
    response = scim.patch(
        f"/Users/{user['id']}",
        patch_ops({"op": "replace", "path": "displayName", "value": "Pat"}),
    )
    assert response.status_code in (200, 204)
    entry = last_entry()
    assert entry.method == "PATCH"
    assert (entry.resource_type, entry.resource_id) == ("User", user["id"])
    assert entry.status == response.status_code


def test_patch_request_body_is_recorded(app, scim):
    user = scim.create_user("body@example.com")
    scim.patch(
        f"/Users/{user['id']}",
        patch_ops({"op": "replace", "path": "displayName", "value": "Body Double"}),
    )
    assert "Body Double" in last_entry().request_body


def test_201_create_records_target_and_id(app, scim):
    user = scim.create_user("new@example.com")
    entry = last_entry()
    assert (entry.method, entry.status) == ("POST", 201)
    assert entry.target == "new@example.com"
    assert entry.resource_id == user["id"]


def test_group_create_records_display_name(app, scim):
    group = scim.create_group("Engineering")
    entry = last_entry()
    assert (entry.resource_type, entry.target) == ("Group", "Engineering")
    assert entry.resource_id == group["id"]


def test_console_requests_are_not_recorded(app, console):
    console.get("/admin/activity")
    assert entries() == []


#
# Redaction
#


def test_redact_replaces_secret_fields_and_patch_values():
    body = {
        "userName": "a",
        "password": SECRET,
        "urn:x:ext": {"clientSecret": SECRET},
        "Operations": [
            {"op": "replace", "path": "password", "value": SECRET},
            {"Op": "Replace", "Path": "PASSWORD", "Value": SECRET},
            {"op": "replace", "value": {"password": SECRET, "displayName": "D"}},
        ],
    }
    cleaned = activity.redact(body)
    assert SECRET not in json.dumps(cleaned)
    assert cleaned["userName"] == "a"
    assert cleaned["Operations"][2]["value"]["displayName"] == "D"


def test_redact_copies_only_what_it_replaces():
    users = [
        {"userName": f"u{i}", "title": "Token Analyst", "emails": [{"value": "e"}]}
        for i in range(3)
    ]
    body = {"Resources": users, "note": "secret santa"}
    snapshot = json.loads(json.dumps(body))
    # Secret words in values only: nothing replaced, nothing copied.
    assert activity.redact(body) is body
    users[1]["urn:x:ext"] = {"clientSecret": SECRET}
    cleaned = activity.redact(body)
    assert cleaned["Resources"][1]["urn:x:ext"] == {"clientSecret": "[redacted]"}
    # The rest is shared with the input, which is left as it was.
    assert cleaned["Resources"][0] is users[0] and cleaned["Resources"][2] is users[2]
    assert users[1]["urn:x:ext"] == {"clientSecret": SECRET}
    del users[1]["urn:x:ext"]
    assert body == snapshot


def test_redact_reads_any_path_key_and_long_names():
    # Any spelling of "path" naming a secret hides the operation's value,
    # even after a null one.
    operation = {"op": "add", "path": None, "PATH": "password", "Value": SECRET}
    assert activity.redact(operation)["Value"] == "[redacted]"
    assert activity.redact({"path": "displayName", "value": "D"})["value"] == "D"
    long_name = "x" * 300 + "Password"
    assert activity.redact({long_name: SECRET}) == {long_name: "[redacted]"}
    assert activity.redact({"path": long_name, "value": SECRET})["value"] == (
        "[redacted]"
    )


def test_body_text_withholds_unparsed_secrets():
    assert activity.body_text(b"password=" + SECRET.encode()) == (
        "[unparsed body withheld: it may contain a secret]"
    )
    assert activity.body_text(b"") is None
    assert activity.body_text(b"\xff\xfe") == "[2 bytes, not UTF-8]"
    long = json.dumps({"displayName": "x" * 40000}).encode()
    assert "truncated" in activity.body_text(long)


@pytest.mark.parametrize(
    "text",
    [
        '{"userName": "a"}',
        '{"PassWord": "x"}',
        "x-client-SECRET",
        "Bearer TOKEN",
        "authorisation",
        "credentials",
        "pass word",
        "",
        "\u017fecret",  # long s: the regex's case folding matches it as "s"
        "to\u212aen",  # Kelvin sign: matched as "k"
        "\u00e9 password",
        "\u00e9 nothing",
    ],
)
def test_mentions_secret_agrees_with_the_pattern(text):
    assert activity.mentions_secret(text) == bool(activity.SECRET_KEYS.search(text))


def test_writer_stores_what_the_orm_would(app):
    """Batched inserts keep every field's conversion and fill omitted defaults."""
    now = utcnow()
    activity.writer.put(
        ActivityEntry,
        {"time": now, "method": "GET", "path": "/p", "status": 200, "duration_ms": 1},
    )
    activity.writer.put(AuditEvent, {"time": now, "event": "E", "details": "d"})
    activity.writer.flush()
    with activity_db.connection_context():
        stored = ActivityEntry.select().order_by(ActivityEntry.id.desc()).get()
        ActivityEntry.insert(
            time=now, method="GET", path="/p", status=200, duration_ms=1
        ).execute()
        via_orm = ActivityEntry.select().order_by(ActivityEntry.id.desc()).get()
        event = AuditEvent.select().where(AuditEvent.event == "E").get()
        raw = activity_db.execute_sql(
            "SELECT time FROM activity ORDER BY id DESC LIMIT 2"
        ).fetchall()
    fields = [f.name for f in ActivityEntry._meta.sorted_fields if f.name != "id"]
    assert [getattr(stored, f) for f in fields] == [getattr(via_orm, f) for f in fields]
    assert stored.time == now and stored.query == "" and stored.summary == ""
    assert raw[0] == raw[1]
    assert (event.time, event.actor, event.details) == (now, "", "d")


def test_secrets_never_reach_the_file_or_the_pages(app, client, console):
    """Passwords in POST and PATCH bodies and bearer tokens stay out of file and pages."""
    _, token = issue_token(app, "entra")
    scim = ScimClient(client, token)
    created = scim.post(
        "/Users",
        {"schemas": [USER_SCHEMA], "userName": "pw@example.com", "password": SECRET},
    )
    assert created.status_code == 201
    user_id = created.get_json()["id"]
    patched = scim.patch(
        f"/Users/{user_id}",
        patch_ops({"op": "replace", "path": "password", "value": SECRET}),
    )
    assert patched.status_code in (200, 204)
    # Entra's capitalised form of the same operation.
    scim.patch(
        f"/Users/{user_id}",
        patch_ops({"Op": "Replace", "Path": "password", "Value": SECRET}),
    )
    assert len(entries()) == 3

    data = file_bytes(app)
    assert SECRET.encode() not in data
    assert token.encode() not in data

    pages = [
        console.get("/admin/activity"),
        console.get("/admin/activity.csv"),
        console.get(f"/admin/users/{user_id}"),
    ]
    pages += [console.get(f"/admin/activity/{e.id}") for e in entries()]
    for response in pages:
        assert response.status_code == 200
        body = response.get_data(as_text=True)
        assert SECRET not in body
        assert token not in body


def test_query_string_is_decoded_and_secret_parameters_redacted(app, scim):
    # %74oken is "token": redaction looks at the decoded name.
    scim.get(
        "/Users?filter=userName+eq+%22kim%40example.com%22&access_token=abc"
        "&%74oken=xyz&count="
    )
    assert last_entry().query == (
        'filter=userName eq "kim@example.com"&access_token=[redacted]'
        "&token=[redacted]&count="
    )


def test_a_path_with_nul_is_recorded_with_its_batch(app, scim):
    # PostgreSQL refuses NUL in text; the row keeps it escaped, and the rows
    # written in the same batch are not lost with it.
    scim.get("/Users?count=1")
    scim.get("/Users/a%00b")
    scim.get("/Groups?count=1")
    rows = entries()[-3:]
    assert [(row.path, row.status, row.query, row.request_body) for row in rows] == [
        ("/scim/v2/Users", 200, "count=1", None),
        ("/scim/v2/Users/a\\u0000b", 404, "", None),
        ("/scim/v2/Groups", 200, "count=1", None),
    ]
    assert rows[0].time <= rows[1].time <= rows[2].time


def test_redacted_bodies_are_kept(app, scim):
    scim.post(
        "/Users",
        {"schemas": [USER_SCHEMA], "userName": "r@example.com", "password": SECRET},
    )
    entry = last_entry()
    assert '"password": "[redacted]"' in entry.request_body
    assert "r@example.com" in entry.request_body


#
# Retention
#


def test_prune_by_age_and_by_size(app):
    old = [add(minutes_ago=60 * 24 * 40, target=f"old{i}") for i in range(3)]
    recent = [add(minutes_ago=i, target=f"new{i}") for i in range(10)]
    with activity_db.connection_context():
        AuditEvent.insert_many(
            [
                {"time": utcnow() - timedelta(days=400), "event": "Ancient"},
                {"time": utcnow() - timedelta(days=200), "event": "Old but kept"},
            ]
        ).execute()
        # These rows skipped the writer; prune reads the log's size from the
        # rollup, so count them as the writer would have.
        recount()
        activity.prune(30, 1000)
        remaining = [e.id for e in ActivityEntry.select().order_by(ActivityEntry.id)]
        assert remaining == recent
        assert not set(old) & set(remaining)
        events = {e.event for e in AuditEvent.select()}
        assert "Ancient" not in events and "Old but kept" in events

        activity.prune(30, 4)
        kept = [e.id for e in ActivityEntry.select().order_by(ActivityEntry.id)]
    assert kept == recent[-4:]


def test_prune_by_size_keeps_the_newest_rows_whatever_their_ids(app):
    ids = [add(id=at, target=f"r{at}") for at in (3, 40, 41, 900, 901, 5000)]
    recount()
    with activity_db.connection_context():
        activity.prune(30, 6)
        assert [e.id for e in ActivityEntry.select().order_by(ActivityEntry.id)] == ids
        activity.prune(30, 2)
        kept = [e.id for e in ActivityEntry.select().order_by(ActivityEntry.id)]
        held = ActivityCount.select(fn.SUM(ActivityCount.requests)).scalar()
    assert kept == [901, 5000]
    assert held == 2


#
# The list page
#


def test_requires_sign_in(client):
    for url in ("/admin/activity", "/admin/activity/1", "/admin/activity.csv"):
        response = client.get(url)
        assert response.status_code == 302
        assert urlsplit(response.headers["Location"]).path == "/login"


def test_empty_state(console):
    soup = page(console.get("/admin/activity"))
    assert text(soup.main.find(class_="empty")) == EMPTY
    assert soup.main.find("table") is None
    assert soup.main.find("h1").get_text() == "Provisioning Activity"


def test_pages_are_not_cached(console):
    entry_id = add()
    for url in (
        "/admin/activity",
        f"/admin/activity/{entry_id}",
        "/admin/activity.csv",
    ):
        assert console.get(url).headers["Cache-Control"] == "no-store"


def test_nav_marks_the_page(console):
    soup = page(console.get("/admin/activity"))
    current = soup.select_one('nav[aria-label="Main"] a[aria-current="page"]')
    assert text(current) == "Provisioning Activity"


def test_list_columns_and_newest_first(console):
    first = add(minutes_ago=5, target="first@example.com", resource_id="u-1")
    second = add(
        minutes_ago=1,
        idp="okta",
        token_key="k-okta",
        method="POST",
        status=409,
        scim_type="uniqueness",
        detail="A user with userName 'x' already exists.",
        target="second@example.com",
        summary="",
        duration_ms=12.4,
    )
    soup = page(console.get("/admin/activity"))
    table = soup.main.find("table")
    assert [text(th) for th in table.select("thead th")] == HEADERS
    found = rows(soup)
    assert [r["Time"].a["href"] for r in found] == [
        f"/admin/activity/{second}",
        f"/admin/activity/{first}",
    ]
    top = found[0]
    assert text(top["Connection"]) == "Okta k-okta"
    assert text(top["Method"]) == "POST"
    assert text(top["Resource"]) == "User"
    assert text(top["Target"]) == "second@example.com"
    assert text(top["Summary"]) == "A user with userName 'x' already exists."
    assert text(top["Status"]) == "409 uniqueness"
    assert text(top["Duration"]) == "12 ms"
    assert top["Time"].find("time")["datetime"].endswith("Z")
    for cell in top.values():
        assert cell["data-label"]


@pytest.fixture
def sample(app):
    """Rows that differ in every filtered column; returns {name: id}."""
    return {
        "recent": add(
            minutes_ago=10,
            target="alice@example.com",
            resource_id="u-alice",
            path="/scim/v2/Users/u-alice",
        ),
        "okta_group": add(
            minutes_ago=180,
            idp="okta",
            method="POST",
            resource_type="Group",
            status=201,
            target="Sales",
            summary="created group",
            path="/scim/v2/Groups",
        ),
        "rejected": add(minutes_ago=60 * 48, idp=None, token_key=None, status=401),
        "broken": add(
            minutes_ago=60 * 24 * 10,
            idp="generic",
            method="PATCH",
            status=500,
            target="100% match",
        ),
        "missing": add(
            minutes_ago=10,
            method="DELETE",
            status=404,
            target="a_b",
            resource_id="gone",
        ),
        "config": add(
            minutes_ago=60 * 24 * 20,
            resource_type="Config",
            path="/scim/v2/ServiceProviderConfig",
        ),
        "decoy": add(minutes_ago=30, method="PUT", target="100x match axb"),
    }


@pytest.mark.parametrize(
    "query, expected",
    [
        ("?idp=entra", {"recent", "missing", "config", "decoy"}),
        ("?idp=okta", {"okta_group"}),
        ("?idp=generic", {"broken"}),
        ("?idp=none", {"rejected"}),
        ("?outcome=2xx", {"recent", "okta_group", "config", "decoy"}),
        ("?outcome=4xx", {"rejected", "missing"}),
        ("?outcome=5xx", {"broken"}),
        ("?method=PATCH", {"broken"}),
        ("?method=delete", {"missing"}),
        ("?type=Group", {"okta_group"}),
        ("?type=Config", {"config"}),
        ("?q=ALICE", {"recent"}),
        ("?q=gone", {"missing"}),
        ("?q=ServiceProvider", {"config"}),
        ("?q=created+group", {"okta_group"}),
        ("?q=%25", {"broken"}),
        ("?q=_", {"missing"}),
        ("?resource=u-alice", {"recent"}),
        ("?range=1h", {"recent", "missing", "decoy"}),
        ("?range=24h", {"recent", "okta_group", "missing", "decoy"}),
        ("?range=7d", {"recent", "okta_group", "rejected", "missing", "decoy"}),
        ("?idp=entra&outcome=4xx", {"missing"}),
        ("?idp=bogus&outcome=9xx&method=TRACE&type=Nope", None),
    ],
)
def test_filters(console, sample, query, expected):
    if expected is None:
        expected = set(sample)
    by_id = {v: k for k, v in sample.items()}
    assert {by_id[i] for i in listed(console, query)} == expected


def test_date_filters(console, sample):
    five_days_ago = (utcnow() - timedelta(days=5)).date().isoformat()
    by_id = {v: k for k, v in sample.items()}
    since = {by_id[i] for i in listed(console, f"?from={five_days_ago}")}
    assert since == {"recent", "okta_group", "rejected", "missing", "decoy"}
    until = {by_id[i] for i in listed(console, f"?to={five_days_ago}")}
    assert until == {"broken", "config"}
    # An ISO date-time with a zone is converted to UTC.
    moment = (utcnow() - timedelta(hours=1)).replace(tzinfo=UTC).isoformat()
    within = listed(console, "?" + "from=" + moment.replace("+", "%2B"))
    assert {by_id[i] for i in within} == {"recent", "missing", "decoy"}


def test_invalid_date_is_ignored_with_a_warning(console, sample):
    soup = page(console.get("/admin/activity?from=yesterday"))
    banner = soup.main.find(class_="banner")
    assert "Ignored the “From” date" in text(banner)
    assert len(rows(soup)) == len(sample)


def test_filter_form_keeps_values(console, sample):
    soup = page(console.get("/admin/activity?idp=okta&outcome=2xx&method=POST&q=Sa"))
    form = soup.main.find("form", attrs={"role": "search"})
    assert form.find(id="idp").find("option", selected=True)["value"] == "okta"
    assert form.find(id="outcome").find("option", selected=True)["value"] == "2xx"
    assert form.find(id="method").find("option", selected=True)["value"] == "POST"
    assert form.find(id="q")["value"] == "Sa"
    for control in form.find_all(["input", "select"]):
        if control.get("type") != "hidden":
            assert form.find("label", attrs={"for": control["id"]})
    assert [text(o) for o in form.find(id="idp").find_all("option")][1:4] == [
        "Entra ID",
        "Okta",
        "Generic SCIM",
    ]


def test_quick_ranges_keep_other_filters(console, sample):
    soup = page(console.get("/admin/activity?idp=entra&from=2020-01-01&page=2"))
    links = {
        text(a): a["href"]
        for a in soup.main.select('nav[aria-label="Quick time ranges"] a')
    }
    assert set(links) == {"All", "Last hour", "Last 24 hours", "Last 7 days"}
    args = parse_qs(urlsplit(links["Last hour"]).query)
    assert args == {"idp": ["entra"], "range": ["1h"]}
    soup = page(console.get(links["Last hour"]))
    current = soup.main.select_one('nav[aria-label="Quick time ranges"] [aria-current]')
    assert text(current) == "Last hour"


def test_no_matches_message(console, sample):
    soup = page(console.get("/admin/activity?q=nothing-like-this"))
    assert text(soup.main.find(class_="empty")) == "No requests match these filters."


def test_pagination_keeps_filters(console):
    ids = [add(target=f"user{i}") for i in range(120)]
    add(idp="okta")
    first = listed(console, "?idp=entra")
    assert first == ids[::-1][:50]
    soup = page(console.get("/admin/activity?idp=entra"))
    nav = soup.main.find("nav", class_="pager")
    assert "1–50 of 120 requests" in text(nav)
    next_link = nav.find("a", rel="next")["href"]
    assert parse_qs(urlsplit(next_link).query) == {"idp": ["entra"], "page": ["2"]}
    assert listed(console, "?idp=entra&page=3") == ids[::-1][100:]


def test_target_links_to_existing_records_in_one_query(app, console, scim):
    alice = scim.create_user("alice@example.com")
    gone = scim.create_user("gone@example.com")
    group = scim.create_group("Engineering")
    scim.delete(f"/Users/{gone['id']}")  # deprovisioned, but the page still exists
    entries()
    add(target="alice@example.com", resource_id=alice["id"])
    add(target="gone@example.com", resource_id=gone["id"])
    add(resource_type="Group", target="Engineering", resource_id=group["id"])
    add(target="purged@example.com", resource_id="purged-id")
    add(resource_type="Group", target="Old", resource_id=alice["id"])
    add(target=None, resource_id=None)

    with count_queries() as counted:
        soup = page(console.get("/admin/activity?resource=&q="))
    lookups = [q for q in counted.get_queries() if '"scim_id" IN' in q.msg[0]]
    assert len(lookups) == 1

    targets = {text(r["Target"]): r["Target"].a for r in rows(soup)}
    assert targets["alice@example.com"]["href"] == f"/admin/users/{alice['id']}"
    assert targets["gone@example.com"]["href"] == f"/admin/users/{gone['id']}"
    assert targets["Engineering"]["href"] == f"/admin/groups/{group['id']}"
    assert targets["purged@example.com"] is None
    assert targets["Old"] is None  # a user id is not a group
    assert targets["—"] is None


def test_target_falls_back_to_the_resource_id(console, scim):
    user = scim.create_user("id-only@example.com")
    entries()
    add(target=None, resource_id=user["id"])
    add(target=None, resource_id="not-here")
    cells = {
        text(r["Target"]): r["Target"]
        for r in rows(page(console.get("/admin/activity?type=User&q=-")))
    }
    assert cells[user["id"]].a["href"] == f"/admin/users/{user['id']}"
    assert cells["not-here"].a is None


#
# The detail page
#


def test_detail_page_shows_every_field(console):
    entry_id = add(
        idp="entra",
        token_key="k-entra",
        client_address="203.0.113.9",
        user_agent="Azure AD SCIM Provisioning",
        method="PATCH",
        path="/scim/v2/Users/u-9",
        query="aadOptscim062020",
        resource_id="u-9",
        target="nine@example.com",
        summary="",
        status=400,
        scim_type="invalidValue",
        detail="active must be a boolean",
        duration_ms=3.25,
        request_body='{\n "Operations": [\n  {"value": "<b>maybe</b>"}\n ]\n}',
        response_body='{\n "scimType": "invalidValue"\n}',
    )
    soup = page(console.get(f"/admin/activity/{entry_id}"))
    fields = {
        text(dt): text(dd)
        for dl in soup.main.find_all("dl")
        for dt, dd in zip(dl.find_all("dt"), dl.find_all("dd"), strict=True)
    }
    assert fields["Connection"] == "Entra ID"
    assert fields["Token ID"] == "k-entra"
    assert fields["Client address"] == "203.0.113.9"
    assert fields["User agent"] == "Azure AD SCIM Provisioning"
    assert fields["Method"] == "PATCH"
    assert fields["Path"] == "/scim/v2/Users/u-9"
    assert fields["Query string"] == "aadOptscim062020"
    assert fields["Resource type"] == "User"
    assert fields["Resource id"].startswith("u-9")
    assert fields["Target"] == "nine@example.com"
    assert fields["Status"] == "400"
    assert fields["scimType"] == "invalidValue"
    assert fields["Detail"] == "active must be a boolean"
    assert fields["Duration"] == "3.2 ms"
    assert fields["Time (UTC)"]
    bodies = soup.main.find_all("pre")
    assert '"<b>maybe</b>"' in bodies[0].get_text()  # escaped, shown as text
    assert soup.main.find("b") is None or "maybe" not in soup.main.find("b").text
    assert "invalidValue" in bodies[1].get_text()
    assert (
        "the idp sent a value this server rejects"
        in text(soup.main.find(class_="hint-box")).lower()
    )
    more = soup.main.find("a", string="All requests for it")
    assert more["href"] == "/admin/activity?resource=u-9"


def test_detail_page_without_bodies_or_hint(console):
    entry_id = add(method="GET", status=200)
    soup = page(console.get(f"/admin/activity/{entry_id}"))
    assert soup.main.find(class_="hint-box") is None
    assert "No request body." in text(soup.main)
    assert "No response body." in text(soup.main)


def test_detail_page_missing(console):
    assert console.get("/admin/activity/999999").status_code == 404


def test_detail_links_an_existing_resource(console, scim):
    user = scim.create_user("linked@example.com")
    scim.get(f"/Users/{user['id']}")
    entry = last_entry()
    soup = page(console.get(f"/admin/activity/{entry.id}"))
    assert soup.main.find("a", href=f"/admin/users/{user['id']}")


#
# Hints
#


def entry(status, scim_type=None, method="GET"):
    return SimpleNamespace(status=status, scim_type=scim_type, method=method)


@pytest.mark.parametrize(
    "status, scim_type, method, expected",
    [
        (200, None, "GET", None),
        (201, None, "POST", None),
        (204, None, "DELETE", None),
        (401, None, "GET", "Entra quarantines provisioning after repeated 401s"),
        (401, None, "PATCH", "generate or activate a token"),
        (403, None, "GET", "disabled by the server's operator"),
        (409, "uniqueness", "POST", "duplicate userName/displayName"),
        (409, "uniqueness", "POST", "deprovisioned or differently-cased duplicate"),
        (409, None, "PUT", "conflicts"),
        (400, "invalidFilter", "GET", "filter"),
        (400, "invalidValue", "POST", "the IdP sent a value this server rejects"),
        (400, "invalidSyntax", "PATCH", "the IdP sent a value this server rejects"),
        (400, "invalidPath", "PATCH", "PATCH path"),
        (400, "mutability", "PUT", "read-only"),
        (400, None, "POST", "malformed"),
        (404, None, "PATCH", "cached id that no longer exists here"),
        (404, None, "DELETE", "restart provisioning in the IdP"),
        (404, None, "PUT", "cached id"),
        (404, None, "GET", "searching"),
        (412, None, "PATCH", "If-Match"),
        (413, None, "PATCH", "larger than this server accepts"),
        (415, None, "POST", "application/scim+json"),
        (500, None, "POST", "server log"),
        (503, None, "GET", "server log"),
        (418, None, "GET", None),
    ],
)
def test_hint(status, scim_type, method, expected):
    advice = hint(entry(status, scim_type, method))
    if expected is None:
        assert advice is None
    else:
        assert expected.lower() in advice.lower()


def test_hint_tolerates_missing_fields():
    assert hint(SimpleNamespace(status=404, scim_type=None, method=None))
    assert hint(SimpleNamespace(status=None, scim_type=None, method=None)) is None


#
# CSV export
#


@pytest.mark.parametrize(
    "value, expected",
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(1)", "'@SUM(1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        (None, ""),
        (5, 5),
    ],
)
def test_csv_cell(value, expected):
    assert csv_cell(value) == expected


def test_csv_export(console):
    dangerous = ['=HYPERLINK("http://x")', "+1", "@SUM(1)", "-3", "safe@example.com"]
    for target in dangerous:
        add(target=target, request_body="REQUEST-MARK", response_body="RESPONSE-MARK")
    add(idp="okta", target="okta-only")
    response = console.get("/admin/activity.csv?idp=entra&page=3")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert ".csv" in disposition
    body = response.get_data(as_text=True)
    assert "REQUEST-MARK" not in body and "RESPONSE-MARK" not in body
    found = read_csv(response)
    assert [r["target"] for r in found] == [
        "safe@example.com",
        "'-3",
        "'@SUM(1)",
        "'+1",
        '\'=HYPERLINK("http://x")',
    ]
    assert "request_body" not in found[0] and "response_body" not in found[0]
    assert found[0]["connection"] == "Entra ID"
    assert found[0]["time_utc"].endswith("Z")
    assert found[0]["status"] == "200"


def test_csv_export_follows_every_filter(console, sample):
    by_id = {v: k for k, v in sample.items()}
    for query, expected in [
        ("?outcome=4xx", {"rejected", "missing"}),
        ("?q=%25", {"broken"}),
        ("?type=Group&idp=okta", {"okta_group"}),
        ("?range=1h", {"recent", "missing", "decoy"}),
    ]:
        found = read_csv(console.get(f"/admin/activity.csv{query}"))
        assert {by_id[int(r["id"])] for r in found} == expected, query


def test_csv_export_spans_batches(console, monkeypatch):
    """Batches follow the page order (time, then id) even across equal times."""
    monkeypatch.setattr("mdm.console.export.EXPORT_BATCH", 7)
    moment = utcnow().replace(microsecond=0)
    same = [add(time=moment, target=f"same{i}") for i in range(12)]
    later = [add(time=moment + timedelta(seconds=1), target=f"l{i}") for i in range(9)]
    earlier = [add(time=moment - timedelta(hours=1), target=f"e{i}") for i in range(9)]
    found = read_csv(console.get("/admin/activity.csv"))
    expected = later[::-1] + same[::-1] + earlier[::-1]
    assert [int(r["id"]) for r in found] == expected
    assert listed(console) == expected


def test_export_link_keeps_filters(console, sample):
    soup = page(console.get("/admin/activity?idp=okta&page=1"))
    link = soup.main.find("a", string="Export CSV")["href"]
    assert urlsplit(link).path == "/admin/activity.csv"
    assert parse_qs(urlsplit(link).query) == {"idp": ["okta"]}


#
# User and group pages
#


def history_section(soup):
    heading = soup.main.find("h2", string="Provisioning history")
    return heading.find_parent("section")


def test_user_history(console, scim):
    user = scim.create_user("hist@example.com")
    other = scim.create_user("other@example.com")
    scim.get(f"/Users/{user['id']}")
    scim.patch(
        f"/Users/{user['id']}",
        patch_ops({"op": "replace", "path": "displayName", "value": "Hist"}),
    )
    scim.get(f"/Users/{other['id']}")
    mine = [e for e in entries() if e.resource_id == user["id"]]
    assert len(mine) >= 2

    section = history_section(page(console.get(f"/admin/users/{user['id']}")))
    links = [a["href"] for a in section.select('td[data-label="Time"] a')]
    assert links == [f"/admin/activity/{e.id}" for e in reversed(mine)]
    methods = [text(td) for td in section.select('td[data-label="Method"]')]
    assert methods[0] == "PATCH"
    full = section.find("a", string="All requests for this user")["href"]
    assert parse_qs(urlsplit(full).query) == {"resource": [user["id"]]}
    assert listed(console, "?" + urlsplit(full).query) == [e.id for e in reversed(mine)]


def test_user_history_shows_the_newest_twenty(console, scim):
    user = scim.create_user("busy@example.com")
    entries()
    ids = [add(resource_id=user["id"], method="PATCH") for _ in range(25)]
    section = history_section(page(console.get(f"/admin/users/{user['id']}")))
    links = [a["href"] for a in section.select('td[data-label="Time"] a')]
    assert links == [f"/admin/activity/{i}" for i in ids[::-1][:20]]
    assert "newest 20" in text(section)


def test_user_history_empty(console, app):
    with app.app_context(), database.connection_context():
        row = User.create(user_name="quiet@example.com", source="entra", data="{}")
    section = history_section(page(console.get(f"/admin/users/{row.scim_id}")))
    assert section.find("table") is None
    assert "No provisioning requests about this user" in text(section)


def test_group_history(console, scim):
    group = scim.create_group("Ops")
    scim.patch(
        f"/Groups/{group['id']}",
        patch_ops({"op": "replace", "path": "displayName", "value": "Operations"}),
    )
    entries()  # let the writer store the SCIM requests before this row
    add(
        resource_type="Group",
        resource_id=group["id"],
        status=400,
        scim_type="invalidPath",
        detail="bad path",
    )
    mine = [e for e in entries() if e.resource_id == group["id"]]
    section = history_section(page(console.get(f"/admin/groups/{group['id']}")))
    links = [a["href"] for a in section.select('td[data-label="Time"] a')]
    assert links == [f"/admin/activity/{e.id}" for e in reversed(mine)]
    assert text(section.select('td[data-label="Status"]')[0]) == "400 invalidPath"
    assert text(section.select('td[data-label="Summary"]')[0]) == "bad path"
    full = section.find("a", string="All requests for this group")["href"]
    assert parse_qs(urlsplit(full).query) == {"resource": [group["id"]]}


def test_history_never_shows_bodies(console, scim):
    user = scim.create_user("quiet2@example.com")
    add(resource_id=user["id"], request_body="BODY-MARK", response_body="BODY-MARK")
    body = console.get(f"/admin/users/{user['id']}").get_data(as_text=True)
    assert "BODY-MARK" not in body
    assert re.search(r"/admin/activity/\d+", body)


def test_a_queued_entry_tuple_follows_the_model_columns():
    # _record queues a tuple bound as it stands: a field added to the model
    # without its place in ENTRY_COLUMNS would shift every column after it.
    fields = ActivityEntry._meta.sorted_fields
    assert activity.ENTRY_COLUMNS == tuple(f.name for f in fields if not f.primary_key)


def test_patch_summary_names_an_ignored_attribute_once(scim):
    user = scim.create_user("ivy@example.com")
    response = scim.patch(
        f"/Users/{user['id']}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Replace", "path": "nickname2", "value": "x"}],
        },
    )
    assert response.status_code == 200
    assert last_entry().summary == (
        "no change; Ignored 'nickname2': not an attribute of User."
    )
