"""X-Request-Id on every response, kept on the activity entry, and the request log on stderr."""

import json
import re

import pytest
from bs4 import BeautifulSoup

from mdm import activity
from mdm.activity import ActivityEntry
from mdm.activity import activity_db
from mdm.activity import writer
from mdm.db import schema_version
from mdm.db import set_schema_version

from . import served
from .conftest import PASSWORD

GENERATED = re.compile(r"[0-9a-f]{32}")
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def test_every_response_carries_a_new_id(client, scim):
    responses = [
        client.get("/healthz"),
        client.get("/readyz"),
        client.get("/login"),  # no administrator yet: 503
        client.get("/no/such/page"),
        client.get("/healthz", headers={"Host": "evil.example"}),
        scim.get("/Users"),
        scim.get("/Nothing"),
        client.get("/scim/v2/Users"),  # no token: 401
    ]
    assert [r.status_code for r in responses] == [
        200,
        200,
        503,
        404,
        400,
        200,
        404,
        401,
    ]
    ids = [r.headers["X-Request-Id"] for r in responses]
    assert all(GENERATED.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "sent", ["abc-123", "Root=1-5759e988-bd862e3fe1be46a994272793", "x" * 128, "a b~!"]
)
def test_a_sane_id_is_kept(client, scim, sent):
    assert client.get("/healthz", headers={"X-Request-Id": sent}).headers[
        "X-Request-Id"
    ] == (sent)
    response = scim.get("/Users", headers={"X-Request-Id": sent})
    assert response.headers["X-Request-Id"] == sent


@pytest.mark.parametrize("sent", ["x" * 129, "a\tb", "caf\u00e9", "a\x7fb"])
def test_an_unusable_id_is_replaced(client, sent):
    response = client.get("/healthz", headers={"X-Request-Id": sent})
    assert GENERATED.fullmatch(response.headers["X-Request-Id"])


def entries():
    writer.flush()
    with activity_db.connection_context():
        return list(ActivityEntry.select().order_by(ActivityEntry.id))


def test_the_activity_entry_keeps_and_shows_the_id(client, scim, console):
    response = scim.post(
        "/Users",
        {"schemas": [USER], "userName": "rid@example.org"},
        headers={"X-Request-Id": "proxy-7"},
    )
    assert response.status_code == 201
    generated = scim.get("/Users").headers["X-Request-Id"]
    first, second = entries()
    assert (first.request_id, second.request_id) == ("proxy-7", generated)
    soup = BeautifulSoup(console.get(f"/admin/activity/{first.id}").data, "html.parser")
    fields = {
        dt.get_text(" ", strip=True): dd.get_text(" ", strip=True)
        for dt, dd in zip(
            soup.main.find_all("dt"), soup.main.find_all("dd"), strict=True
        )
    }
    assert fields["Request id"] == "proxy-7"


def test_bulk_operations_share_their_request_id(scim):
    body = {
        "schemas": [BULK],
        "Operations": [
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "one",
                "data": {"schemas": [USER], "userName": "b1@example.org"},
            }
        ],
    }
    response = scim.post("/Bulk", body, headers={"X-Request-Id": "bulk-1"})
    assert response.status_code == 200
    assert [(e.operation, e.request_id) for e in entries()] == [
        (True, "bulk-1"),
        (False, "bulk-1"),
    ]


def test_schema_3_activity_gains_the_request_id_column_with_nothing_lost(app):
    writer.flush()
    with activity_db.connection_context():
        activity_db.execute_sql("ALTER TABLE activity DROP COLUMN request_id")
        activity_db.execute_sql(
            "INSERT INTO activity (time, method, path, query, summary, status, "
            "duration_ms, operation) VALUES ('2026-12-01 10:00:00', 'GET', "
            "'/scim/v2/Users', '', '', 200, 1.5, false)"
        )
        set_schema_version(activity_db, "activity", 3)
    activity.bind(app.config["ACTIVITY_DATABASE"])
    with activity_db.connection_context():
        assert schema_version(activity_db, "activity") == 6
        kept = ActivityEntry.get()
    assert (kept.path, kept.status, kept.request_id) == ("/scim/v2/Users", 200, None)


#
# The request log on the served stack's stderr
#


def serve_and_log(tmp_path, **settings):
    """Serve, send a SCIM request, a probe and a console page; return the log lines."""
    instance = tmp_path / "instance"
    instance.mkdir()
    env = served.environment(instance, **settings)
    secret = served.mdm(env, "token", "create", "--idp", "okta").stdout.strip()
    served.mdm(env, "admin", "create", "alice", "--password-stdin", input=PASSWORD)
    log = tmp_path / "serve.log"
    process, port = served.start(env, log)
    try:
        auth = {"Authorization": f"Bearer {secret}", "X-Request-Id": "idp-42"}
        response, _ = served.request(
            port, "GET", "/scim/v2/Users?count=1", headers=auth
        )
        assert response.status == 200
        response, _ = served.request(port, "GET", "/setup?code=s3cr3t-code")
        assert response.getheader("X-Request-Id")
        generated = response.getheader("X-Request-Id")
        response, _ = served.request(port, "GET", "/a%0aforged")
        assert response.status == 404
    finally:
        assert served.stop(process) == 0
    text = log.read_text()
    assert secret not in text
    assert "s3cr3t-code" not in text
    assert "count=1" not in text
    return text.splitlines(), generated


def test_json_log_is_one_object_per_request(tmp_path):
    lines, generated = serve_and_log(tmp_path, LOG_FORMAT="json")
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    for record in logged:
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record.pop("time")
        )
        assert isinstance(record.pop("duration_ms"), float)
    assert logged == [
        {
            "level": "info",
            "request_id": "idp-42",
            "connection": "okta",
            "method": "GET",
            "path": "/scim/v2/Users",
            "status": 200,
        },
        {
            "level": "info",
            "request_id": generated,
            "connection": None,
            "method": "GET",
            "path": "/setup",
            "status": 302,
        },
        {
            "level": "info",
            "request_id": logged[2]["request_id"],
            "connection": None,
            "method": "GET",
            "path": "/a\nforged",
            "status": 404,
        },
    ]


def line(path, status, request_id, connection=""):
    """Return the pattern of one text log line."""
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    return rf"{when} INFO GET {path} {status} \d+\.\d ms id={request_id}{connection}"


def test_text_log_is_one_readable_line_per_request(tmp_path):
    lines, generated = serve_and_log(tmp_path)
    logged = [text for text in lines if re.match(r"\d{4}-\d\d-\d\d ", text)]
    assert len(logged) == 3, lines
    assert re.fullmatch(
        line("/scim/v2/Users", 200, "idp-42", " connection=okta"), logged[0]
    )
    assert re.fullmatch(line("/setup", 302, generated), logged[1])
    assert re.fullmatch(line(r"/a\\nforged", 404, "[0-9a-f]{32}"), logged[2])


def test_an_unknown_log_format_is_a_clear_error(tmp_path):
    env = served.environment(tmp_path, LOG_FORMAT="xml")
    result = served.mdm(env, "token", "list", check=False)
    assert result.returncode == 1
    assert result.stderr == "Error: MDM_LOG_FORMAT must be text or json, not 'xml'.\n"
