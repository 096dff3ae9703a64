"""/healthz and /readyz: answered without sign-in or session, never logged as activity."""

import json

import pytest

from mdm import models
from mdm.activity import ActivityEntry
from mdm.activity import Refusal
from mdm.activity import activity_db
from mdm.activity import writer
from mdm.db import bind
from mdm.db import database
from mdm.db import set_schema_version

from . import served
from .conftest import TEST_DATABASE_URL
from .conftest import raw_connection

# Nothing listens on port 1: connecting is refused at once.
CLOSED = "postgresql://postgres@127.0.0.1:1/mdm"
UNREACHABLE = {"status": "unavailable", "reason": "database unreachable"}


def schema_set_to(app, version):
    with app.app_context(), database.connection_context():
        set_schema_version(database, "mdm", version)


def assert_not_logged():
    writer.flush()
    with activity_db.connection_context():
        assert ActivityEntry.select().count() == 0
        assert Refusal.select().count() == 0


def test_healthz_answers_without_session_or_activity(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.content_type == "application/json"
    assert "Set-Cookie" not in response.headers
    assert_not_logged()


def test_readyz_answers_ready_on_a_current_database(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready"}
    assert "Set-Cookie" not in response.headers
    assert_not_logged()


def test_healthz_does_not_touch_the_database_and_readyz_reports_it_down(client):
    bind(CLOSED)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == UNREACHABLE


def test_readyz_refuses_a_database_from_a_newer_release(app, client):
    schema_set_to(app, 99)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {
        "status": "unavailable",
        "reason": f"database schema 99 is newer than this release's "
        f"{models.SCHEMA_VERSION}: upgrade mdm",
    }
    assert client.get("/healthz").status_code == 200


def test_readyz_reports_a_pending_migration(app, client):
    schema_set_to(app, models.SCHEMA_VERSION - 1)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {
        "status": "unavailable",
        "reason": f"migration pending: database schema {models.SCHEMA_VERSION - 1}, "
        f"this release needs {models.SCHEMA_VERSION}",
    }


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_pass_the_host_check(client, path):
    response = client.get(path, headers={"Host": "evil.example"})
    assert response.status_code == 400
    response = client.get(path, headers={"Host": "localhost:8000"})
    assert response.status_code == 200


def test_probes_take_only_get(client):
    assert client.post("/healthz").status_code == 405
    assert client.get("/healthz/").status_code == 404


def test_served_probes(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    env = served.environment(instance)
    log = tmp_path / "serve.log"
    process, port = served.start(env, log)
    try:
        response, body = served.request(port, "GET", "/healthz")
        assert (response.status, json.loads(body)) == (200, {"status": "ok"})
        assert response.getheader("Set-Cookie") is None
        response, body = served.request(port, "GET", "/readyz")
        assert (response.status, json.loads(body)) == (200, {"status": "ready"})

        # The database now comes from a newer release (a downgrade gone wrong).
        conn = raw_connection(instance / "mdm.sqlite")
        try:
            if TEST_DATABASE_URL:
                conn.cursor().execute(
                    "UPDATE mdm_schema SET version = 99 WHERE name = 'mdm'"
                )
            else:
                conn.execute("PRAGMA user_version = 99")
        finally:
            conn.close()
        response, body = served.request(port, "GET", "/readyz")
        assert response.status == 503
        assert json.loads(body)["reason"].startswith("database schema 99 is newer")
        response, body = served.request(port, "GET", "/healthz")
        assert response.status == 200
    finally:
        assert served.stop(process) == 0
