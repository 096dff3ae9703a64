"""The mdm command for scripts and operators: JSON listings, user purge, progress, check."""

import json
import os
import pty
import subprocess
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from mdm import create_app
from mdm import models
from mdm.activity import writer
from mdm.activity_store import AuditEvent
from mdm.db import database
from mdm.models import Admin
from mdm.models import BearerToken
from mdm.models import Membership
from mdm.models import OAuthClient
from mdm.models import User
from mdm.models import mirror_user
from mdm.models import utcnow

from . import served
from .conftest import ENGINE
from .conftest import TEST_DATABASE_URL
from .conftest import database_config
from .conftest import database_url

URN = "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User"


def _iso(value):
    return value.isoformat(timespec="seconds") + "Z" if value else None


#
# --json listings
#


def test_token_list_json_has_every_field_and_no_secret(app, runner):
    created = runner.invoke(
        args=["token", "create", "--idp", "okta", "--label", "ci", "--expires-in", "30"]
    )
    secret = created.stdout.strip()
    runner.invoke(args=["token", "create", "--idp", "entra"])
    with app.app_context(), database.connection_context():
        okta = BearerToken.get(BearerToken.idp == "okta")
        entra = BearerToken.get(BearerToken.idp == "entra")
    result = runner.invoke(args=["token", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "id": t.id,
            "key": t.key,
            "idp": t.idp,
            "label": t.label,
            "status": "Active",
            "created_at": _iso(t.created_at),
            "created_by": "cli",
            "expires_at": _iso(t.expires_at),
            "renewed_at": None,
            "last_used_at": None,
            "last_user_agent": None,
        }
        for t in (entra, okta)
    ]
    assert okta.label == "ci" and okta.expires_at is not None
    assert secret not in result.stdout and okta.secret_hash not in result.stdout
    assert result.stderr == ""


def test_token_list_json_without_tokens_is_an_empty_array(runner):
    result = runner.invoke(args=["token", "list", "--json"])
    assert result.exit_code == 0
    assert result.stdout == "[]\n"


def test_attribute_list_json(runner):
    assert runner.invoke(args=["attribute", "list", "--json"]).stdout == "[]\n"
    runner.invoke(args=["attribute", "add", "costCode", "--type", "integer"])
    runner.invoke(args=["attribute", "add", "badge"])
    result = runner.invoke(args=["attribute", "list", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [
        {"name": "costCode", "type": "integer", "path": f"{URN}:costCode"},
        {"name": "badge", "type": "string", "path": f"{URN}:badge"},
    ]


#
# mdm user list
#


@pytest.fixture
def people(app, scim):
    """Alice (in a group, with a custom attribute), Bob, and Carol, deprovisioned."""
    app.config["PUBLIC_URL"] = "https://mdm.example.com"
    with app.app_context(), database.connection_context():
        models.CustomAttribute.create(name="badge", type="string")
    alice = scim.create_user(
        "alice@example.com",
        displayName="Alice",
        password="Secret-Passw0rd!",
        **{URN: {"badge": "A1"}},
    )
    bob = scim.create_user("bob@example.com", active=False)
    carol = scim.create_user("carol@example.com")
    scim.create_group("Staff", members=[alice["id"]])
    assert scim.delete(f"/Users/{carol['id']}").status_code == 204
    return {
        name: scim.get(f"/Users/{user['id']}").get_json()
        for name, user in (("alice", alice), ("bob", bob), ("carol", carol))
    }


def test_user_list_json_is_what_scim_returns(people, runner):
    result = runner.invoke(args=["user", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [people["alice"], people["bob"]]
    assert people["alice"]["groups"][0]["display"] == "Staff"
    assert people["alice"][URN] == {"badge": "A1"}
    assert "password" not in result.stdout.lower()
    assert "Secret-Passw0rd!" not in result.stdout
    # One user a line, streamed between the brackets.
    assert result.stdout.splitlines()[0] == "["
    assert result.stdout.splitlines()[-1] == "]"
    assert len(result.stdout.splitlines()) == 4


def test_user_list_filter_runs_the_scim_filter(people, runner):
    cases = {
        'userName sw "ALICE"': [people["alice"]],
        "active eq false": [people["bob"]],
        'groups.display eq "Staff"': [people["alice"]],
        f'{URN}:badge eq "A1"': [people["alice"]],
        'userName eq "carol@example.com"': [],
    }
    for text, expected in cases.items():
        result = runner.invoke(args=["user", "list", "--json", "--filter", text])
        assert result.exit_code == 0, (text, result.output)
        assert json.loads(result.stdout) == expected, text


def test_user_list_pages_with_count_and_start_index(people, runner):
    def listed(*args):
        result = runner.invoke(args=["user", "list", "--json", *args])
        assert result.exit_code == 0, result.output
        return [u["userName"] for u in json.loads(result.stdout)]

    assert listed("--count", "1") == ["alice@example.com"]
    assert listed("--count", "1", "--start-index", "2") == ["bob@example.com"]
    assert listed("--start-index", "3") == []


def test_user_list_pages_across_batches(app, runner, monkeypatch):
    from mdm import cli

    monkeypatch.setattr(cli, "LIST_BATCH", 2)
    with app.app_context(), database.connection_context():
        for i in range(7):
            user = User()
            mirror_user(user, {"userName": f"u{i}@x", "active": True})
            user.save(force_insert=True)
    result = runner.invoke(args=["user", "list", "--json"])
    assert [u["userName"] for u in json.loads(result.stdout)] == [
        f"u{i}@x" for i in range(7)
    ]
    result = runner.invoke(
        args=["user", "list", "--json", "--start-index", "2", "--count", "4"]
    )
    assert [u["userName"] for u in json.loads(result.stdout)] == [
        f"u{i}@x" for i in range(1, 5)
    ]


def test_user_list_bad_filter_is_a_one_line_usage_error(people, runner):
    for text in ('userName zz "a"', "nosuch eq 1", 'userName eq "a" and', "(" * 300):
        result = runner.invoke(args=["user", "list", "--filter", text])
        assert result.exit_code == 2, (text, result.output)
        assert result.stdout == ""
        assert result.stderr.startswith("Error: Bad --filter: "), result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_user_list_text(people, runner):
    result = runner.invoke(args=["user", "list"])
    assert result.exit_code == 0
    alice, bob = people["alice"]["id"], people["bob"]["id"]
    assert result.stdout.splitlines() == [
        f"{'ID':<36} {'USERNAME':<30} STATUS   SOURCE   NAME",
        f"{alice:<36} {'alice@example.com':<30} active   entra    Alice",
        f"{bob:<36} {'bob@example.com':<30} disabled entra    -",
    ]
    empty = runner.invoke(args=["user", "list", "--filter", 'userName eq "x"'])
    assert empty.exit_code == 0
    assert (empty.stdout, empty.stderr) == ("", "No users.\n")


#
# mdm user purge
#


def _users(app):
    with app.app_context(), database.connection_context():
        return sorted(u.user_name for u in User.select())


def _audit(app):
    writer.flush()
    with app.app_context():
        from mdm.activity import activity_db

        with activity_db.connection_context():
            return [
                (e.event, e.actor, e.details)
                for e in AuditEvent.select().order_by(AuditEvent.id)
            ]


def test_user_purge_asks_then_deletes_deprovisioned_users(app, people, runner):
    refused = runner.invoke(args=["user", "purge"], input="n\n")
    assert refused.exit_code == 1
    assert "Purge 1 deprovisioned user for good? [y/N]" in refused.stderr
    assert len(_users(app)) == 3

    result = runner.invoke(args=["user", "purge"], input="y\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.endswith("Purged 1 deprovisioned user.\n")
    assert _users(app) == ["alice@example.com", "bob@example.com"]
    with app.app_context(), database.connection_context():
        assert Membership.select().count() == 1
    assert ("Deprovisioned Users Purged", "cli", "1 users") in _audit(app)

    again = runner.invoke(args=["user", "purge", "--yes"])
    assert again.exit_code == 0
    assert again.stderr == "No deprovisioned users to purge.\n"


def test_user_purge_older_than_keeps_recent_ones(app, scim, runner):
    for name in ("old", "recent", "live"):
        scim.create_user(f"{name}@x")
    with app.app_context(), database.connection_context():
        User.update(deprovisioned_at=utcnow() - timedelta(days=40)).where(
            User.user_name == "old@x"
        ).execute()
        User.update(deprovisioned_at=utcnow() - timedelta(days=2)).where(
            User.user_name == "recent@x"
        ).execute()
    result = runner.invoke(args=["user", "purge", "--older-than", "30", "--yes"])
    assert result.exit_code == 0, result.output
    assert result.stderr == "Purged 1 deprovisioned user.\n"
    assert _users(app) == ["live@x", "recent@x"]
    bad = runner.invoke(args=["user", "purge", "--older-than", "-1"])
    assert bad.exit_code == 2


def test_purge_deletes_in_batches(app, monkeypatch):
    monkeypatch.setattr(models, "PURGE_BATCH", 2)
    with app.app_context(), database.connection_context():
        for i in range(6):
            user = User()
            mirror_user(user, {"userName": f"u{i}@x", "active": True})
            if i != 3:
                user.deprovisioned_at = utcnow() - timedelta(minutes=1)
            user.save(force_insert=True)
        later = User.create(user_name="later@x", deprovisioned_at=utcnow())
        heard = []
        removed = User.purge(utcnow() - timedelta(seconds=30), heard.append)
        assert removed == 5 and heard == [2, 2, 1]
        left = sorted(u.user_name for u in User.select())
        assert left == ["later@x", "u3@x"] and later.user_name == "later@x"


#
# Progress: on a terminal only
#


def _instance(tmp_path, users=0, deprovisioned=0):
    """A data folder with ``users`` live and ``deprovisioned`` users; return its environment."""
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o700, parents=True)
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            **database_config(instance / "mdm.sqlite"),
        }
    )
    with app.app_context(), database.connection_context():
        for i in range(users + deprovisioned):
            user = User()
            mirror_user(user, {"userName": f"u{i}@x", "active": True})
            if i >= users:
                user.deprovisioned_at = utcnow() - timedelta(days=1)
            user.save(force_insert=True)
    return served.environment(instance), instance


def _on_terminal(env, *args):
    """Run ``mdm`` with stderr on a pseudo-terminal; return (stdout, terminal text, code)."""
    master, replica = pty.openpty()
    process = subprocess.Popen(
        [*served.MDM, *args],
        env=env,
        cwd=served.ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=replica,
    )
    os.close(replica)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    stdout, _ = process.communicate(timeout=60)
    return stdout.decode(), seen.decode(), process.returncode


def test_purge_shows_progress_on_a_terminal_only(tmp_path):
    env, _ = _instance(tmp_path, users=1, deprovisioned=3)
    stdout, terminal, code = _on_terminal(env, "user", "purge", "--yes")
    assert code == 0, terminal
    assert "Purging" in terminal and "100%" in terminal
    assert terminal.rstrip().endswith("Purged 3 deprovisioned users.")
    assert stdout == ""

    env, _ = _instance(tmp_path / "piped", users=1, deprovisioned=3)
    piped = served.mdm(env, "user", "purge", "--yes")
    assert (piped.stdout, piped.stderr) == ("", "Purged 3 deprovisioned users.\n")


if ENGINE == "sqlite":  # mdm backup copies SQLite files

    def test_backup_shows_progress_on_a_terminal_only(tmp_path):
        env, _ = _instance(tmp_path, users=50)
        target = tmp_path / "copy.sqlite"
        stdout, terminal, code = _on_terminal(env, "backup", str(target))
        assert code == 0, terminal
        assert "Backing up" in terminal and "100%" in terminal
        assert "pages to" in terminal and stdout == ""

        piped = served.mdm(env, "backup", str(tmp_path / "piped.sqlite"))
        assert piped.stdout == ""
        assert piped.stderr.startswith("Backed up ") and piped.stderr.count("\n") == 1


if ENGINE == "postgresql":  # copy-db needs a PostgreSQL target

    def test_copy_db_shows_progress_per_table_on_a_terminal_only(tmp_path):
        for name in ("terminal", "piped"):
            instance = tmp_path / name
            instance.mkdir(mode=0o700)
            app = create_app(
                {
                    "TESTING": True,
                    "SECRET_KEY": "test",
                    "DATABASE": str(instance / "mdm.sqlite"),
                }
            )
            with app.app_context(), database.connection_context():
                for i in range(3):
                    user = User()
                    mirror_user(user, {"userName": f"u{i}@x", "active": True})
                    user.save(force_insert=True)
            database.close()
        env = served.environment(tmp_path / "terminal")
        env.pop("MDM_DATABASE_URL")
        url = database_url(tmp_path / "terminal-target")
        stdout, terminal, code = _on_terminal(env, "copy-db", "--to", url)
        assert code == 0, terminal
        assert stdout == ""
        assert "user  [" in terminal and "100%" in terminal
        assert "user: 3" in terminal and "Copied and verified" in terminal

        env = served.environment(tmp_path / "piped")
        env.pop("MDM_DATABASE_URL")
        url = database_url(tmp_path / "piped-target")
        piped = served.mdm(env, "copy-db", "--to", url)
        assert piped.stdout == ""
        assert "[" not in piped.stderr and "%" not in piped.stderr
        assert "user: 3\n" in piped.stderr
        assert piped.stderr.endswith(
            "Set MDM_DATABASE_URL to the new database and restart.\n"
        )


#
# mdm check
#

FRESH = [
    "MDM_PUBLIC_URL is not set, so links and meta.location name whatever host a "
    "request carries. Fix: Set MDM_PUBLIC_URL=https://<the host identity providers "
    "use>.",
    "Neither MDM_PUBLIC_URL nor MDM_TRUSTED_HOSTS is set, so only loopback addresses "
    "may be named in requests. Fix: Set MDM_PUBLIC_URL, or MDM_TRUSTED_HOSTS to the "
    "served host names.",
    "There is no administrator; anyone holding the setup link can become one. "
    "Fix: Run `mdm admin create NAME`.",
    "No active SCIM token or OAuth client: no identity provider can provision. "
    "Fix: Run `mdm token create --idp IDP` or `mdm client create --idp IDP`.",
]


def _ready(app, public="https://mdm.example.com"):
    """Configure and populate ``app`` as a finished internet-facing deployment."""
    app.config.update(PUBLIC_URL=public, PROXY_FIX=1)
    with app.app_context(), database.connection_context():
        admin = Admin(username="root")
        admin.set_password("correct horse battery")
        admin.save()
        BearerToken.issue("entra")


def _check(runner, *args):
    result = runner.invoke(args=["check", *args])
    assert result.stderr == ""
    return result.exit_code, result.stdout.splitlines()


def test_check_a_fresh_install(runner):
    assert _check(runner) == (1, FRESH)
    code, out = _check(runner, "--json")
    assert code == 1
    assert json.loads("\n".join(out)) == {
        "ok": False,
        "findings": [
            {
                "code": code,
                "problem": line.split(" Fix: ")[0],
                "fix": line.split(" Fix: ")[1],
            }
            for code, line in zip(
                (
                    "public-url-unset",
                    "trusted-hosts-unset",
                    "no-admin",
                    "no-credential",
                ),
                FRESH,
                strict=True,
            )
        ],
    }


def test_check_a_ready_deployment(app, runner):
    _ready(app)
    assert _check(runner) == (
        0,
        [
            "OK: https://mdm.example.com behind a proxy, administrators, active "
            "credentials and private files."
        ],
    )
    code, out = _check(runner, "--json")
    assert (code, json.loads("\n".join(out))) == (0, {"ok": True, "findings": []})


def test_check_public_url_and_proxy_settings(app, runner):
    _ready(app, public="http://mdm.example.com")
    app.config["PROXY_FIX"] = 0
    assert _check(runner) == (
        1,
        [
            "MDM_PUBLIC_URL is http://mdm.example.com, not https: tokens and passwords "
            "would cross the internet in clear text. Fix: Serve mdm behind an https "
            "proxy and set MDM_PUBLIC_URL=https://..."
        ],
    )
    app.config["PUBLIC_URL"] = "https://mdm.example.com"
    assert _check(runner) == (
        1,
        [
            "MDM_PUBLIC_URL is https but MDM_PROXY_FIX is not set, so client addresses "
            "and the scheme are the proxy's. Fix: Set MDM_PROXY_FIX=1 (the number of "
            "proxies in front of mdm)."
        ],
    )
    # Trusted hosts without a public URL: only the public URL is missing.
    app.config.update(PUBLIC_URL=None, PROXY_FIX=0)
    app.trusted_hosts = ["mdm.example.com"]
    assert _check(runner) == (1, FRESH[:1])


def test_check_credentials(app, runner):
    _ready(app)
    with app.app_context(), database.connection_context():
        BearerToken.update(active=False).execute()
    assert _check(runner) == (1, FRESH[3:])
    with app.app_context(), database.connection_context():
        soon, _ = BearerToken.issue("okta", expires_in_days=10)
        BearerToken.issue("okta", expires_in_days=20)
        client, _ = OAuthClient.issue("entra", expires_in_days=1)
        soon.expires_at = utcnow() + timedelta(days=10, hours=1)
        soon.save()
    assert _check(runner) == (
        1,
        [
            f"SCIM token {soon.id} ({soon.key}) for Okta expires in 10 days "
            f"({soon.expires_at:%Y-%m-%d %H:%M} UTC). Fix: Run `mdm token create "
            f"--idp okta`, give the identity provider the new secret, then `mdm token "
            f"remove {soon.id}`.",
            f"OAuth client {client.client_id} for Entra ID expires in 0 days "
            f"({client.expires_at:%Y-%m-%d %H:%M} UTC). Fix: Run `mdm client create "
            f"--idp entra`, give the identity provider the new secret, then `mdm "
            f"client remove {client.id}`.",
        ],
    )


def test_check_files_readable_by_others_in_the_real_command(tmp_path):
    instance = tmp_path / "instance"
    env = served.environment(
        instance, PUBLIC_URL="https://mdm.example.com", PROXY_FIX=1
    )
    served.mdm(
        env,
        "admin",
        "create",
        "root",
        "--password-stdin",
        input="correct horse battery\n",
    )
    served.mdm(env, "token", "create", "--idp", "entra")
    ok = served.mdm(env, "check")
    assert ok.stdout.startswith("OK: https://mdm.example.com behind a proxy")
    config = instance / "config.py"
    config.write_text("# settings\n")
    config.chmod(0o644)
    found = served.mdm(env, "check", check=False)
    assert found.returncode == 1
    assert found.stdout == (
        f"{config} is readable by other users (mode 644). Fix: Run `chmod go= {config}` "
        "as its owner.\n"
    )


if ENGINE == "postgresql":

    def _icu_database(sql):
        """Run ``sql`` on the server of the test database, outside any transaction."""
        from .conftest import _admin_connection

        conn = _admin_connection()
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql)
        finally:
            conn.close()

    def test_check_finds_a_locale_collation():
        import psycopg2
        from playhouse.db_url import parse

        # ICU sorts by locale although datcollate says C.
        _icu_database("DROP DATABASE IF EXISTS mdm_check_icu")
        _icu_database(
            "CREATE DATABASE mdm_check_icu TEMPLATE template0 "
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"
        )
        params = parse(TEST_DATABASE_URL)
        params.pop("database")
        conn = psycopg2.connect(dbname="mdm_check_icu", **params)
        conn.autocommit = True
        conn.cursor().execute("CREATE EXTENSION IF NOT EXISTS citext")
        conn.close()
        url = TEST_DATABASE_URL.replace(
            urlsplit(TEST_DATABASE_URL).path, "/mdm_check_icu", 1
        )
        app = create_app({"TESTING": True, "SECRET_KEY": "test", "DATABASE_URL": url})
        try:
            _ready(app)
            code, out = _check(app.test_cli_runner())
        finally:
            database.close_all()
            _icu_database("DROP DATABASE mdm_check_icu WITH (FORCE)")
        assert (code, out) == (
            1,
            [
                "The PostgreSQL database sorts text by a locale, not by C collation: "
                "sortBy orders differ from SQLite's and can change with the server's "
                "locale data. Fix: Create the database with LOCALE_PROVIDER libc "
                "LC_COLLATE 'C' TEMPLATE template0 and move the data with pg_dump."
            ],
        )


def test_user_list_in_the_real_command(tmp_path):
    env, _ = _instance(tmp_path, users=3, deprovisioned=1)
    found = served.mdm(env, "user", "list", "--json", "--filter", 'userName ew "1@x"')
    assert [u["userName"] for u in json.loads(found.stdout)] == ["u1@x"]
    assert found.stderr == ""
    every = served.mdm(env, "user", "list", "--json")
    assert [u["userName"] for u in json.loads(every.stdout)] == ["u0@x", "u1@x", "u2@x"]
    bad = served.mdm(env, "user", "list", "--filter", "userName zz 1", check=False)
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr.startswith("Error: Bad --filter: ")
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
