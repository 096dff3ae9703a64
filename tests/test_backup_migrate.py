"""Backups taken while serving, and schema upgrades that keep every row."""

import json
import os
import sqlite3
import threading

from mdm import create_app
from mdm.db import backup
from mdm.db import database
from mdm.db import schema_version
from mdm.db import set_schema_version
from mdm.db import write_transaction
from mdm.models import MODELS
from mdm.models import SCHEMA_VERSION
from mdm.models import Admin
from mdm.models import BearerToken
from mdm.models import Group
from mdm.models import Membership
from mdm.models import User
from mdm.models import mirror_user

from .conftest import ENGINE
from .conftest import TEST_DATABASE_URL
from .conftest import bind_test_database
from .conftest import database_config
from .conftest import database_url
from .conftest import drop_value_counts
from .conftest import raw_connection


def _write_under_load(app, copy, copies=5):
    """Write users with their memberships while ``copy(n)`` snapshots; return the counts."""
    with app.app_context(), database.connection_context():
        group = Group.create(display_name="Everyone")
    stop = threading.Event()
    written = []

    def writer():
        with database.connection_context():
            i = 0
            while not stop.is_set() and i < 5000:
                # A user and its membership commit together or not at all.
                with write_transaction():
                    user = User()
                    mirror_user(user, {"userName": f"w{i}@x", "active": True})
                    user.save(force_insert=True)
                    Membership.create(group=group, user=user)
                written.append(i)
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    counts = []
    try:
        for n in range(copies):
            while len(written) < (n + 1) * 40:
                stop.wait(0.01)
            counts.append(copy(n))
    finally:
        stop.set()
        thread.join()
    return counts


if ENGINE == "sqlite":

    def test_backup_under_write_load_is_consistent(app, tmp_path):
        def copy(n):
            path = tmp_path / f"backup{n}.sqlite"
            with app.app_context():
                assert backup(str(path)) > 0
            conn = sqlite3.connect(path)
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            users = conn.execute("SELECT COUNT(*) FROM user").fetchone()[0]
            members = conn.execute("SELECT COUNT(*) FROM membership").fetchone()[0]
            conn.close()
            return users, members

        counts = _write_under_load(app, copy)
        assert all(users == members for users, members in counts)
        assert counts == sorted(counts) and counts[-1][0] >= 200

    def test_backup_command_and_restore(app, runner, scim, tmp_path):
        user = scim.create_user("keep@x", displayName="Keep")
        target = tmp_path / "copy.sqlite"
        result = runner.invoke(args=["backup", str(target)])
        assert result.exit_code == 0, result.output
        assert (
            runner.invoke(args=["backup", str(target)]).exit_code == 1
        )  # never overwrites
        # Restore = start an instance on the copied file.
        restored = create_app({"TESTING": True, **database_config(target)})
        with restored.app_context(), database.connection_context():
            row = User.get(User.scim_id == user["id"])
            assert row.attributes["displayName"] == "Keep"

else:

    def test_snapshot_under_write_load_is_consistent(app, tmp_path):
        """A repeatable-read snapshot, as pg_dump takes, never splits a user from its membership."""
        conn = raw_connection(tmp_path / "mdm.sqlite")

        def copy(n):
            cursor = conn.cursor()
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cursor.execute('SELECT COUNT(*) FROM "user"')
            users = cursor.fetchone()[0]
            cursor.execute("SELECT COUNT(*) FROM membership")
            members = cursor.fetchone()[0]
            cursor.execute("COMMIT")
            return users, members

        try:
            counts = _write_under_load(app, copy)
        finally:
            conn.close()
        assert all(users == members for users, members in counts)
        assert counts == sorted(counts) and counts[-1][0] >= 200

    def test_backup_command_points_at_pg_dump(app, runner, scim, tmp_path):
        result = runner.invoke(args=["backup", str(tmp_path / "copy.sqlite")])
        assert result.exit_code == 1
        assert "pg_dump" in result.output
        assert not (tmp_path / "copy.sqlite").exists()

    def test_pg_dump_and_restore(app, scim, tmp_path):
        """The README's pg_dump and pg_restore steps bring every row back."""
        from mdm.activity import activity_db
        from mdm.activity import writer

        user = scim.create_user("keep@x", displayName="Keep")
        url = database_url(tmp_path / "mdm.sqlite")
        schema = _schema_of(url)
        dump = tmp_path / "mdm.dump"
        _pg_tool("pg_dump", "--format=custom", f"--schema={schema}", f"--file={dump}")
        # Lose the database, then restore it from the dump.
        writer.flush()
        database.close_all()
        activity_db.close_all()
        conn = raw_connection(tmp_path / "mdm.sqlite")
        try:
            conn.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            conn.close()
        _pg_tool("pg_restore", "--exit-on-error", str(dump))
        restored = create_app({"TESTING": True, "DATABASE_URL": url})
        with restored.app_context(), database.connection_context():
            row = User.get(User.scim_id == user["id"])
            assert row.attributes["displayName"] == "Keep"
            assert BearerToken.select().count() == 1

    def _schema_of(url):
        return url.rsplit("search_path%3D", 1)[1].split("%2C", 1)[0]

    def _pg_tool(tool, *args):
        import subprocess

        from playhouse.db_url import parse

        params = parse(TEST_DATABASE_URL)
        command = [tool, *args]
        for key, flag in (
            ("host", "--host"),
            ("port", "--port"),
            ("user", "--username"),
        ):
            if params.get(key):
                command.append(f"{flag}={params[key]}")
        command.append(f"--dbname={params['database']}")
        env = dict(os.environ)
        if params.get("password"):
            env["PGPASSWORD"] = params["password"]
        subprocess.run(command, check=True, env=env, capture_output=True)


V1_MODELS = [m for m in MODELS if m is not Admin]


def schema_1_database(path):
    """Make the test database at ``path`` as release 1 left it; return its token's secret."""
    bind_test_database(path)
    with database.connection_context():
        database.create_tables(V1_MODELS)
        set_schema_version(database, "mdm", 1)
        _, secret = BearerToken.issue("okta", "old")
        user = User()
        mirror_user(user, {"userName": "old@x", "displayName": "Old", "active": False})
        user.save(force_insert=True)
        group = Group.create(display_name="Old group", external_id="g1")
        Membership.create(group=group, user=user)
    return secret


def test_upgrade_from_schema_1_keeps_data(tmp_path):
    path = tmp_path / "old.sqlite"
    secret = schema_1_database(path)
    app = create_app({"TESTING": True, **database_config(path)})
    with app.app_context(), database.connection_context():
        assert schema_version(database, "mdm") == SCHEMA_VERSION == 17
        assert Admin.select().count() == 0
        assert BearerToken.authenticate(secret).idp == "okta"
        stored = User.get(User.user_name == "old@x")
        assert (stored.display_name, stored.active) == ("Old", False)
        assert Membership.select().where(Membership.user == stored).count() == 1
    client = app.test_client()
    body = client.get(
        '/scim/v2/Groups?filter=displayName eq "old group"',
        headers={"Authorization": f"Bearer {secret}"},
    ).get_json()
    assert body["Resources"][0]["members"][0]["display"] == "Old"


def test_upgrade_from_schema_2_adds_admin_session_key(tmp_path):
    path = tmp_path / "v2.sqlite"
    # Schema 2's admin table, as that release created it on each engine.
    if ENGINE == "sqlite":
        columns = (
            '"id" INTEGER NOT NULL PRIMARY KEY, "username" TEXT NOT NULL COLLATE NOCASE, '
            '"password_hash" TEXT NOT NULL, "created_at" DATETIME NOT NULL, '
            '"last_login_at" DATETIME'
        )
    else:
        columns = (
            '"id" SERIAL NOT NULL PRIMARY KEY, "username" CITEXT NOT NULL, '
            '"password_hash" TEXT NOT NULL, "created_at" TIMESTAMP NOT NULL, '
            '"last_login_at" TIMESTAMP'
        )
    bind_test_database(path)
    with database.connection_context():
        database.execute_sql(f'CREATE TABLE "admin" ({columns})')
        database.execute_sql(
            "INSERT INTO admin (username, password_hash, created_at) "
            "VALUES ('root', 'hash', '2026-01-01 00:00:00')"
        )
        set_schema_version(database, "mdm", 2)
    app = create_app({"TESTING": True, **database_config(path)})
    with app.app_context(), database.connection_context():
        admin = Admin.get(Admin.username == "root")
        assert admin.password_hash == "hash"
        assert len(admin.session_key) == 32


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    bind_test_database(path)
    with database.connection_context():
        set_schema_version(database, "mdm", 99)
    try:
        create_app({"TESTING": True, **database_config(path)})
    except RuntimeError as error:
        assert "newer than this release" in str(error)
    else:
        raise AssertionError("a newer schema must not be opened")


def test_upgrade_from_schema_7_mirrors_department_and_title(tmp_path):
    path = tmp_path / "v7.sqlite"
    enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    create_app({"TESTING": True, **database_config(path)})
    bind_test_database(path)
    with database.connection_context():
        for name, data in [
            ("ann", {"title": "Engineer", enterprise: {"department": "R&D"}}),
            ("bob", {}),
        ]:
            user = User()
            mirror_user(user, {"userName": name, **data})
            # Stored whole, as every release before schema 13 did.
            user.data = json.dumps({"userName": name, **data})
            user.save(force_insert=True)
        # The user table as schema 7 made it: no mirrored department or title,
        # no index on the department, and no substring index over them
        # (PostgreSQL drops that one with them), nor the department's
        # lowercased copy PostgreSQL generates (schema 15), nor the counts of
        # its values (schema 16, 17 on SQLite).
        database.execute_sql('DROP INDEX "user_department"')
        database.execute_sql('DROP INDEX "user_department_count"')
        drop_value_counts()
        if ENGINE != "sqlite":
            database.execute_sql('ALTER TABLE "user" DROP COLUMN department_lower')
        if ENGINE == "sqlite":
            for trigger in ("insert", "update", "delete"):
                database.execute_sql(f"DROP TRIGGER user_search_{trigger}")
            database.execute_sql("DROP TABLE user_search")
        database.execute_sql('ALTER TABLE "user" DROP COLUMN department')
        database.execute_sql('ALTER TABLE "user" DROP COLUMN title')
        set_schema_version(database, "mdm", 7)
    app = create_app({"TESTING": True, **database_config(path)})
    with app.app_context(), database.connection_context():
        assert schema_version(database, "mdm") == SCHEMA_VERSION
        rows = User.select().order_by(User.user_name)
        assert [(u.user_name, u.department, u.title) for u in rows] == [
            ("ann", "R&D", "Engineer"),
            ("bob", None, None),
        ]
