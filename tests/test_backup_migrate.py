"""Backups taken while serving, and schema upgrades that keep every row."""

import json
import sqlite3
import threading

from mdm import create_app
from mdm.db import backup
from mdm.db import bind
from mdm.db import database
from mdm.db import write_transaction
from mdm.models import MODELS
from mdm.models import SCHEMA_VERSION
from mdm.models import Admin
from mdm.models import BearerToken
from mdm.models import Group
from mdm.models import Membership
from mdm.models import User
from mdm.models import mirror_user


def test_backup_under_write_load_is_consistent(app, tmp_path):
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
    copies = []
    try:
        for n in range(5):
            while len(written) < (n + 1) * 40:
                stop.wait(0.01)
            path = tmp_path / f"backup{n}.sqlite"
            with app.app_context():
                assert backup(str(path)) > 0
            copies.append(path)
    finally:
        stop.set()
        thread.join()
    counts = []
    for path in copies:
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        users = conn.execute("SELECT COUNT(*) FROM user").fetchone()[0]
        members = conn.execute("SELECT COUNT(*) FROM membership").fetchone()[0]
        conn.close()
        assert users == members
        counts.append(users)
    assert counts == sorted(counts) and counts[-1] >= 200


def test_backup_command_and_restore(app, runner, scim, tmp_path):
    user = scim.create_user("keep@x", displayName="Keep")
    target = tmp_path / "copy.sqlite"
    result = runner.invoke(args=["backup", str(target)])
    assert result.exit_code == 0, result.output
    assert (
        runner.invoke(args=["backup", str(target)]).exit_code == 1
    )  # never overwrites
    # Restore = start an instance on the copied file.
    restored = create_app({"TESTING": True, "DATABASE": str(target)})
    with restored.app_context(), database.connection_context():
        row = User.get(User.scim_id == user["id"])
        assert json.loads(row.data)["displayName"] == "Keep"


V1_MODELS = [m for m in MODELS if m is not Admin]


def test_upgrade_from_schema_1_keeps_data(tmp_path):
    path = str(tmp_path / "old.sqlite")
    bind(path)
    with database.connection_context():
        database.create_tables(V1_MODELS)
        database.execute_sql("PRAGMA user_version = 1")
        token, secret = BearerToken.issue("okta", "old")
        user = User()
        mirror_user(user, {"userName": "old@x", "displayName": "Old", "active": False})
        user.save(force_insert=True)
        group = Group.create(display_name="Old group", external_id="g1")
        Membership.create(group=group, user=user)
    app = create_app({"TESTING": True, "DATABASE": path})
    with app.app_context(), database.connection_context():
        version = database.execute_sql("PRAGMA user_version").fetchone()[0]
        assert version == SCHEMA_VERSION == 5
        assert Admin.select().count() == 0
        assert BearerToken.authenticate(secret).id == token.id
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
    path = str(tmp_path / "v2.sqlite")
    conn = sqlite3.connect(path)
    conn.execute(
        'CREATE TABLE "admin" ("id" INTEGER NOT NULL PRIMARY KEY, "username" TEXT '
        'NOT NULL COLLATE NOCASE, "password_hash" TEXT NOT NULL, "created_at" '
        'DATETIME NOT NULL, "last_login_at" DATETIME)'
    )
    conn.execute(
        "INSERT INTO admin (username, password_hash, created_at) "
        "VALUES ('root', 'hash', '2026-01-01 00:00:00')"
    )
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    app = create_app({"TESTING": True, "DATABASE": path})
    with app.app_context(), database.connection_context():
        admin = Admin.get(Admin.username == "root")
        assert admin.password_hash == "hash"
        assert len(admin.session_key) == 32


def test_newer_schema_is_refused(tmp_path):
    path = str(tmp_path / "new.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    try:
        create_app({"TESTING": True, "DATABASE": path})
    except RuntimeError as error:
        assert "newer than this release" in str(error)
    else:
        raise AssertionError("a newer schema must not be opened")
