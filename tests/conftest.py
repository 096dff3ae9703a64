"""Shared fixtures: a fresh app and database per test, and a SCIM client with a live token.

With MDM_TEST_DATABASE_URL set to a PostgreSQL database, every test's
database is a schema of its own in it instead of a SQLite file.
"""

import hashlib
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

from mdm import create_app
from mdm.db import database
from mdm.models import GROUPING_COLUMNS
from mdm.models import Admin
from mdm.models import BearerToken
from mdm.server import make_server
from mdm.server import run
from mdm.server import stop

SCIM = "application/scim+json"
PASSWORD = "correct horse battery"
TEST_DATABASE_URL = os.environ.get("MDM_TEST_DATABASE_URL")
ENGINE = "postgresql" if TEST_DATABASE_URL else "sqlite"
ROOT = Path(__file__).resolve().parent.parent


_schemas = []


def _admin_connection():
    import psycopg2
    from playhouse.db_url import parse

    params = parse(TEST_DATABASE_URL)
    conn = psycopg2.connect(dbname=params.pop("database"), **params)
    conn.autocommit = True
    return conn


def database_url(path):
    """Return a PostgreSQL URL for a schema standing in for the SQLite file ``path``."""
    name = "t_" + hashlib.sha1(str(path).encode()).hexdigest()[:24]
    if name not in _schemas:
        conn = _admin_connection()
        try:
            with conn.cursor() as cursor:
                # citext and pg_trgm live in public, shared by every test schema.
                cursor.execute("CREATE EXTENSION IF NOT EXISTS citext SCHEMA public")
                cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
                cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {name}")
        finally:
            conn.close()
        _schemas.append(name)
    separator = "&" if "?" in TEST_DATABASE_URL else "?"
    options = quote(f"-c search_path={name},public")
    return f"{TEST_DATABASE_URL}{separator}options={options}"


def database_config(path):
    """Return the config for a test database at ``path``: the file, or a schema for it."""
    config = {"DATABASE": str(path)}
    if TEST_DATABASE_URL:
        config["DATABASE_URL"] = database_url(path)
    return config


def bind_test_database(path):
    """Bind the database handle to a test database at ``path`` (see database_config)."""
    from mdm.db import bind

    bind(database_url(path) if TEST_DATABASE_URL else str(path))


def raw_connection(path):
    """Open a DB-API connection to the test database at ``path``, outside the app's pools."""
    if not TEST_DATABASE_URL:
        import sqlite3

        return sqlite3.connect(path, timeout=30, isolation_level=None)
    import psycopg2
    from playhouse.db_url import parse

    params = parse(database_url(path))
    conn = psycopg2.connect(dbname=params.pop("database"), **params)
    conn.autocommit = True
    return conn


# The values whose kept counts (db.kept_value_counts) differ from counting the
# users, compared lowercased: SQLite keeps a value as the first spelling written.
_HELD = " UNION ALL ".join(
    f"SELECT '{c}' AS attribute, lower(CAST({c} AS TEXT)) AS value, "
    'CASE WHEN active THEN 1 ELSE 0 END AS active FROM "user" '
    f"WHERE deprovisioned_at IS NULL AND {c} IS NOT NULL"
    for c in GROUPING_COLUMNS
)
_VALUE_COUNTS_DIFFER = (
    "WITH kept AS (SELECT attribute, lower(value) AS value, "
    "CAST(sum(live) AS BIGINT) AS live, CAST(sum(active) AS BIGINT) AS active "
    "FROM user_value_count GROUP BY 1, 2 HAVING sum(live) <> 0 OR sum(active) <> 0), "
    "counted AS (SELECT attribute, value, CAST(count(*) AS BIGINT) AS live, "
    f"CAST(sum(active) AS BIGINT) AS active FROM ({_HELD}) AS held GROUP BY 1, 2) "
    "SELECT (SELECT COUNT(*) FROM (SELECT * FROM kept EXCEPT SELECT * FROM counted) "
    "AS a) + (SELECT COUNT(*) FROM (SELECT * FROM counted EXCEPT SELECT * FROM kept) "
    "AS b)"
)


def drop_value_counts():
    """Drop the kept counts of attribute values, as before schema 16 (17 on SQLite)."""
    database.execute_sql("DROP TABLE user_value_count")
    if TEST_DATABASE_URL:
        database.execute_sql("DROP FUNCTION user_value_count_change CASCADE")
        return
    for event in ("insert", "update", "delete"):
        database.execute_sql(f"DROP TRIGGER user_value_count_{event}")


def integrity_problems(path):
    """Return what is wrong with the stored database at ``path`` (an empty list if nothing)."""
    conn = raw_connection(path)
    try:
        cursor = conn.cursor()
        # The counts triggers keep equal what counting the rows finds.
        cursor.execute(
            "SELECT (SELECT coalesce(sum(live), 0) FROM user_count) - "
            '(SELECT COUNT(*) FROM "user" WHERE deprovisioned_at IS NULL), '
            "(SELECT coalesce(sum(active), 0) FROM user_count) - "
            '(SELECT COUNT(*) FROM "user" WHERE deprovisioned_at IS NULL AND active)'
        )
        kept = ["kept user counts"] if any(cursor.fetchone()) else []
        cursor.execute(_VALUE_COUNTS_DIFFER)
        kept += ["kept value counts"] if cursor.fetchone()[0] else []
        if not TEST_DATABASE_URL:
            problems = [row[0] for row in cursor.execute("PRAGMA integrity_check")]
            problems = kept + [p for p in problems if p != "ok"]
            return problems + cursor.execute("PRAGMA foreign_key_check").fetchall()
        # PostgreSQL enforces constraints as it writes; check what they promise.
        checks = {
            "orphan memberships": "SELECT COUNT(*) FROM membership m LEFT JOIN "
            '"user" u ON u.id = m.user_id LEFT JOIN user_group g ON g.id = m.group_id '
            "WHERE u.id IS NULL OR g.id IS NULL",
            "duplicate live userNames": "SELECT COUNT(*) FROM (SELECT lower(user_name) "
            'FROM "user" WHERE deprovisioned_at IS NULL GROUP BY 1 HAVING COUNT(*) > 1) d',
            "duplicate memberships": "SELECT COUNT(*) FROM (SELECT 1 FROM membership "
            "GROUP BY group_id, user_id HAVING COUNT(*) > 1) d",
        }
        problems = kept
        for name, sql in checks.items():
            cursor.execute(sql)
            if cursor.fetchone()[0]:
                problems.append(name)
        return problems
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def drop_test_schemas():
    """Drop the PostgreSQL schemas a test created once it is over."""
    # Schemas made by wider fixtures (a module's server) outlive the test.
    first = len(_schemas)
    yield
    _drop_schemas(first)


@pytest.fixture(autouse=True, scope="session")
def drop_remaining_schemas():
    """Drop the schemas wider fixtures created, at the end of the run."""
    yield
    _drop_schemas(0)


def _drop_schemas(first):
    if len(_schemas) <= first:
        return
    from mdm.activity import activity_db
    from mdm.activity import writer

    writer.flush()
    for db in (database.obj, activity_db.obj):
        if not db.deferred:
            db.close_all()
    conn = _admin_connection()
    try:
        with conn.cursor() as cursor:
            for name in _schemas[first:]:
                cursor.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        conn.close()
    del _schemas[first:]


@pytest.fixture
def app(tmp_path):
    """Create an app with its own database file and instance folder."""
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            "WTF_CSRF_ENABLED": False,
            **database_config(tmp_path / "mdm.sqlite"),
        }
    )
    yield app
    if not database.is_closed():
        database.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class ScimClient:
    """Send SCIM requests with a bearer token and decode the JSON answers."""

    def __init__(self, client, secret, base="/scim/v2"):
        self.client = client
        self.secret = secret
        self.base = base

    def request(self, method, path, body=None, headers=None, **kwargs):
        all_headers = {"Authorization": f"Bearer {self.secret}"}
        data = None
        if body is not None:
            all_headers["Content-Type"] = SCIM
            data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        all_headers.update(headers or {})
        return self.client.open(
            self.base + path, method=method, data=data, headers=all_headers, **kwargs
        )

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, body, **kwargs):
        return self.request("POST", path, body, **kwargs)

    def put(self, path, body, **kwargs):
        return self.request("PUT", path, body, **kwargs)

    def patch(self, path, body, **kwargs):
        return self.request("PATCH", path, body, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def create_user(self, user_name, **attributes):
        body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]}
        body.update({"userName": user_name, **attributes})
        response = self.post("/Users", body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def create_group(self, display_name, members=(), **attributes):
        body = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": display_name,
            "members": [{"value": m} for m in members],
            **attributes,
        }
        response = self.post("/Groups", body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()


def issue_token(app, idp="entra", **kwargs):
    """Issue a token directly in the database and return (token, secret)."""
    with app.app_context(), database.connection_context():
        return BearerToken.issue(idp, **kwargs)


@pytest.fixture
def scim(app, client):
    """A SCIM client authenticated with an Entra ID token."""
    _, secret = issue_token(app, "entra")
    return ScimClient(client, secret)


@pytest.fixture
def okta(app, client):
    """A SCIM client authenticated with an Okta token."""
    _, secret = issue_token(app, "okta")
    return ScimClient(client, secret)


@pytest.fixture
def console(app, client):
    """A client signed in to the console as administrator ``alice``."""
    with app.app_context(), database.connection_context():
        admin = Admin(username="alice")
        admin.set_password(PASSWORD)
        admin.save()
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    return client


@contextmanager
def live_server(app, threads=8):
    """Serve ``app`` as ``mdm serve`` does, on a free loopback port; yield the port."""
    server = make_server(app, "127.0.0.1", 0, threads)
    stopping = threading.Event()
    # The stop lets a task finish after its client has read the answer.
    thread = threading.Thread(target=run, args=(server, stopping), daemon=True)
    thread.start()
    try:
        yield server.effective_port
    finally:
        stop(server, stopping)
        thread.join(timeout=40)
        database.close_all()


# The tables the activity writer fills, on its own thread (and on PostgreSQL
# in the directory's database): not the statements a request runs.
LOG_TABLES = ('"activity"', '"activity_count"', '"refusal"', '"audit_event"')


def directory_statements(counted):
    """Return the SQL text of a count_queries block's statements, leaving out the activity log's."""
    found = [record.msg[0] for record in counted.get_queries()]
    return [sql for sql in found if not any(t in sql for t in LOG_TABLES)]
