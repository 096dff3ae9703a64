"""Requests refused before authentication: counted in bounded rows, bodies never read."""

import json
from datetime import timedelta

import pytest
from bs4 import BeautifulSoup

from mdm import activity
from mdm import activity_store
from mdm import create_app
from mdm.activity import ActivityEntry
from mdm.activity import AuditEvent
from mdm.activity import Refusal
from mdm.activity import activity_db
from mdm.db import database
from mdm.db import schema_version
from mdm.db import set_schema_version
from mdm.models import BearerToken
from mdm.models import OAuthClient
from mdm.models import utcnow

from .conftest import ScimClient
from .conftest import database_config
from .conftest import issue_token

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTRA_AGENT = "Azure AD SCIM Provisioning"
FLOOD_MARKER = "flood-body-marker"


@pytest.fixture
def app(tmp_path):
    """An app whose activity log keeps only 50 rows, as a busy server's cap would bite."""
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            "WTF_CSRF_ENABLED": False,
            "ACTIVITY_MAX_ROWS": 50,
            **database_config(tmp_path / "mdm.sqlite"),
        }
    )
    yield app
    if not database.is_closed():
        database.close()


def refusals():
    activity.writer.flush()
    with activity_db.connection_context():
        return list(Refusal.select().order_by(Refusal.id))


def entries():
    activity.writer.flush()
    with activity_db.connection_context():
        return list(ActivityEntry.select().order_by(ActivityEntry.id))


def stored_text():
    """Return every row the activity store holds, as text."""
    activity.writer.flush()
    with activity_db.connection_context():
        rows = [
            *ActivityEntry.select().tuples(),
            *AuditEvent.select().tuples(),
            *Refusal.select().tuples(),
        ]
    return "\n".join(repr(row) for row in rows)


def unauthenticated(client, number, body, **headers):
    """POST ``body`` without a working token, from a client address of its own."""
    credentials = (
        {},
        {"Authorization": "Basic YWxpY2U6cGFzcw=="},
        {"Authorization": f"Bearer mdm_{number:012x}_guessed"},
        {"Authorization": "Bearer not-a-token"},
    )[number % 4]
    response = client.post(
        "/scim/v2/Users",
        data=body,
        headers={
            "Content-Type": "application/scim+json",
            "User-Agent": "curl/8.5.0",
            **credentials,
            **headers,
        },
        environ_base={"REMOTE_ADDR": f"198.51.{number // 250}.{number % 250}"},
    )
    assert response.status_code == 401
    return response


def test_a_flood_of_401s_is_counted_in_bounded_rows_and_evicts_nothing(app, client):
    """2,000 unauthenticated 20 KB POSTs leave real history whole, with 50 rows allowed."""
    _, secret = issue_token(app, "entra")
    scim = ScimClient(client, secret)
    for number in range(40):
        scim.create_user(f"user{number}@example.com")
    real = [e.id for e in entries()]
    assert len(real) == 40

    body = json.dumps(
        {"schemas": [USER_SCHEMA], "userName": FLOOD_MARKER, "x": "a" * 20 * 1024}
    ).encode()
    for number in range(2000):
        unauthenticated(client, number, body)

    counted = refusals()
    assert sum(r.requests for r in counted) == 2000
    # At most REFUSAL_ROWS_PER_BUCKET rows apart per ten minutes (the flood may
    # straddle two), plus one row per reason for the other clients.
    buckets = {r.bucket for r in counted}
    assert len(buckets) <= 2
    apart = [r for r in counted if r.client_address != "*"]
    folded = [r for r in counted if r.client_address == "*"]
    assert len(apart) <= activity_store.REFUSAL_ROWS_PER_BUCKET * len(buckets)
    assert {r.reason for r in folded} == {
        "no token",
        "unknown token",
        "not an mdm token",
    }
    assert len(folded) <= 3 * len(buckets)
    assert all(r.token_key == "" for r in folded)

    # No row per request, no body: the log holds the real history only.
    assert [e.id for e in entries()] == real
    assert FLOOD_MARKER not in stored_text()
    with app.app_context(), activity_db.connection_context():
        activity_store.prune(30, app.config["ACTIVITY_MAX_ROWS"])
    assert [e.id for e in entries()] == real


def test_a_refused_body_is_never_read_nor_redacted(app, client, monkeypatch):
    """A 1.9 MB body naming "password" on a 401 costs no parsing at all."""
    read = []
    original = app.request_class.get_data

    def get_data(self, *args, **kwargs):
        read.append(self.path)
        return original(self, *args, **kwargs)

    def never(*args, **kwargs):
        raise AssertionError("a refused request's body was redacted")

    monkeypatch.setattr(app.request_class, "get_data", get_data)
    monkeypatch.setattr(activity, "body_text", never)
    monkeypatch.setattr(activity, "redact", never)
    body = json.dumps(
        {"password": "p", "items": [{"password": "x" * 10} for _ in range(70000)]}
    ).encode()
    assert 1_800_000 < len(body) < 2 * 1024 * 1024
    response = client.post(
        "/scim/v2/Users",
        data=body,
        headers={"Content-Type": "application/scim+json"},
    )
    assert response.status_code == 401
    assert response.get_json()["detail"] == (
        "Authentication required: send Authorization: Bearer <token>."
    )
    (counted,) = refusals()
    assert (counted.reason, counted.requests, counted.method) == ("no token", 1, "POST")
    assert read == []
    assert entries() == []


def test_each_reason_is_counted_with_the_token_key(app, client):
    expired, expired_secret = issue_token(app, "okta", expires_in_days=1)
    inactive, inactive_secret = issue_token(app, "entra")
    with database.connection_context():
        BearerToken.update(expires_at=utcnow() - timedelta(days=1)).where(
            BearerToken.id == expired.id
        ).execute()
        BearerToken.get_by_id(inactive.id).set_active(False)
    wrong = f"mdm_{inactive.key}_wrong"
    for secret in (expired_secret, inactive_secret, wrong, "mdm_abc_x", "nonsense"):
        assert ScimClient(client, secret).get("/Users").status_code == 401
    assert client.get("/scim/v2/Groups").status_code == 401
    found = {(r.reason, r.idp, r.token_key) for r in refusals()}
    assert found == {
        ("expired token", "okta", expired.key),
        ("inactive token", "entra", inactive.key),
        ("wrong secret", "entra", inactive.key),
        ("unknown token", "", "abc"),
        ("not an mdm token", "", ""),
        ("no token", "", ""),
    }
    assert inactive_secret not in stored_text()
    assert expired_secret not in stored_text()


def test_a_known_token_keeps_its_own_row_in_a_flood(app, client):
    inactive, secret = issue_token(app, "entra")
    with database.connection_context():
        BearerToken.get_by_id(inactive.id).set_active(False)
    for number in range(60):
        unauthenticated(client, number, b"{}")
    response = ScimClient(client, secret).get(
        "/Users", environ_base={"REMOTE_ADDR": "203.0.113.9"}
    )
    assert response.status_code == 401
    mine = [r for r in refusals() if r.token_key == inactive.key]
    assert [(r.reason, r.idp, r.requests) for r in mine] == [
        ("inactive token", "entra", 1)
    ]


def test_an_expired_access_token_keeps_its_clients_row_in_a_flood(app, client):
    with database.connection_context():
        oauth_client, _ = OAuthClient.issue("entra")
        stale, _ = oauth_client.grant(
            timedelta(hours=1), now=utcnow() - timedelta(hours=2)
        )
    for number in range(60):
        unauthenticated(client, number, b"{}")
    unknown = "mdmat_0123456789abcdef_" + "x" * 43
    for token in (stale, unknown):
        response = ScimClient(client, token).get(
            "/Users", environ_base={"REMOTE_ADDR": "203.0.113.9"}
        )
        assert response.status_code == 401
    rows = [r for r in refusals() if r.reason.endswith("access token")]
    assert sorted((r.reason, r.idp, r.token_key, r.requests) for r in rows) == [
        ("expired access token", "entra", oauth_client.client_id, 1),
        ("unknown access token", "", "", 1),
    ]
    assert stale not in stored_text()


def test_requests_no_view_authenticates_are_counted_unless_their_token_is_valid(
    app, client, scim
):
    """Unrouted paths, wrong methods and discovery: only a valid token earns a row."""
    body = b'{"password": "' + b"x" * 20000 + b'"}'
    assert client.post("/scim/v2/Nope", data=body).status_code == 404
    assert client.post("/scim/v2/Schemas/x", data=body).status_code == 405
    assert client.get("/scim/v2/ServiceProviderConfig").status_code == 200
    headers = {"Authorization": "Bearer mdm_00ff_x"}
    assert client.get("/scim/v2/Nope", headers=headers).status_code == 404
    assert scim.get("/Nope").status_code == 404
    counted = sorted((r.status, r.reason, r.method, r.path) for r in refusals())
    assert counted == [
        (200, "no token", "GET", "/scim/v2/ServiceProviderConfig"),
        (404, "no token", "POST", "/scim/v2/Nope"),
        (404, "unknown token", "GET", "/scim/v2/Nope"),
        (405, "no token", "POST", "/scim/v2/Schemas/x"),
    ]
    (entry,) = entries()
    assert (entry.idp, entry.status, entry.path) == ("entra", 404, "/scim/v2/Nope")


def test_valid_requests_are_logged_as_before(app, scim):
    scim.get("/Users")
    (entry,) = entries()
    assert (entry.idp, entry.status, entry.method) == ("entra", 200, "GET")
    assert refusals() == []


def test_the_refused_page_lists_counts(app, client, console):
    for _ in range(3):
        unauthenticated(client, 0, b'{"password": "never-kept"}')
    unauthenticated(client, 2, b"{}", **{"User-Agent": ENTRA_AGENT})
    activity.writer.flush()
    response = console.get("/admin/activity/refused")
    assert response.status_code == 200
    soup = BeautifulSoup(response.data, "html.parser")
    rows = [
        [" ".join(td.get_text().split()) for td in tr.find_all("td")]
        for tr in soup.select("#refused tbody tr")
    ]
    assert [row[1:] for row in rows] == [
        [
            "401",
            "unknown token 000000000002",
            "Entra ID",
            "198.51.0.2",
            "1",
            "POST /scim/v2/Users",
            ENTRA_AGENT,
        ],
        [
            "401",
            "no token",
            "Unknown",
            "198.51.0.0",
            "3",
            "POST /scim/v2/Users",
            "curl/8.5.0",
        ],
    ]
    assert "never-kept" not in response.get_data(as_text=True)


def test_an_older_activity_database_is_upgraded_with_nothing_lost(app):
    activity.writer.flush()
    with activity_db.connection_context():
        activity_db.drop_tables([Refusal])
        set_schema_version(activity_db, "activity", 1)
        ActivityEntry.create(method="GET", path="/scim/v2/Users", status=200)
        AuditEvent.create(event="SCIM Token Created", details="IdP: Okta; token ab")
    activity_store.bind(app.config["ACTIVITY_DATABASE"])
    with activity_db.connection_context():
        assert schema_version(activity_db, "activity") == 6
        assert "refusal" in activity_db.get_tables()
        assert [(e.method, e.status) for e in ActivityEntry.select()] == [("GET", 200)]
        assert [e.details for e in AuditEvent.select()] == ["IdP: Okta; token ab"]


def test_schema_2_activity_gains_the_operation_column_with_nothing_lost(app):
    activity.writer.flush()
    with activity_db.connection_context():
        # A schema-2 table had no index naming the column.
        activity_db.execute_sql('DROP INDEX "activity_time_id"')
        activity_db.execute_sql("ALTER TABLE activity DROP COLUMN operation")
        activity_db.execute_sql(
            "INSERT INTO activity (time, method, path, query, summary, status, "
            "duration_ms) VALUES ('2026-12-01 10:00:00', 'POST', '/scim/v2/Bulk', "
            "'', '', 200, 1.5)"
        )
        set_schema_version(activity_db, "activity", 2)
    activity_store.bind(app.config["ACTIVITY_DATABASE"])
    with activity_db.connection_context():
        assert schema_version(activity_db, "activity") == 6
        rows = [(e.method, e.path, e.operation) for e in ActivityEntry.select()]
        assert rows == [("POST", "/scim/v2/Bulk", False)]
