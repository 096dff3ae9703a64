"""The single binary (dist/mdm) as a self-hoster runs it: copied elsewhere, clean environment."""

import importlib.metadata
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import urllib.parse

import pytest
from bs4 import BeautifulSoup

import mdm
from mdm.db import database
from mdm.db import schema_version
from mdm.db import set_schema_version
from mdm.models import SCHEMA_VERSION

from . import served
from .conftest import ENGINE
from .conftest import PASSWORD
from .conftest import ROOT
from .conftest import TEST_DATABASE_URL
from .conftest import bind_test_database
from .conftest import database_url
from .test_backup_migrate import schema_1_database

BINARY = ROOT / "dist" / "mdm"
# What the binary is built from: it is rebuilt when any of these is newer.
SOURCES = ("mdm", "templates", "static", "packaging", "pyproject.toml")
CUSTOM = "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _stale():
    if not BINARY.exists():
        return True
    built = BINARY.stat().st_mtime
    for name in SOURCES:
        path = ROOT / name
        for file in [path] if path.is_file() else path.rglob("*"):
            if "__pycache__" in file.parts or not file.is_file():
                continue
            if file.stat().st_mtime > built:
                return True
    return False


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """The binary (built when missing or older than its sources), copied to a folder of its own."""
    if _stale():
        build = subprocess.run(
            ["bash", "packaging/build-binary.sh"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert build.returncode == 0, build.stdout + build.stderr
    copy = tmp_path_factory.mktemp("opt") / "mdm"
    shutil.copy2(BINARY, copy)
    return copy


@pytest.fixture
def machine(tmp_path, binary):
    """A home folder, a working folder and a temporary folder: nothing of the source tree."""
    for name in ("home", "work", "tmp"):
        (tmp_path / name).mkdir()
    return Machine(tmp_path, binary)


class Machine:
    """Runs the binary with only PATH, HOME, TMPDIR and the MDM_* settings given."""

    def __init__(self, root, binary):
        self.root = root
        self.binary = binary
        self.home = root / "home"
        self.work = root / "work"
        self.tmp = root / "tmp"
        self.default_data = self.home / ".local" / "share" / "mdm"

    def env(self, instance=None, **settings):
        data = instance or self.default_data
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "LANG": "C.UTF-8",
        }
        if instance is not None:
            env["MDM_INSTANCE_PATH"] = str(instance)
        if TEST_DATABASE_URL:
            # The same schema the pip-installed server is given for this folder.
            env["MDM_DATABASE_URL"] = database_url(os.path.join(data, "mdm.sqlite"))
        env.update({f"MDM_{name}": str(value) for name, value in settings.items()})
        return env

    def run(self, env, *args, **kwargs):
        return served.mdm(
            env, *args, command=[str(self.binary)], cwd=self.work, **kwargs
        )

    def start(self, env, log):
        return served.start(env, log, command=[str(self.binary)], cwd=self.work)


def scim(port, secret, method, path, body=None):
    """Send a SCIM request; return (status, parsed body or None)."""
    headers = {"Authorization": f"Bearer {secret}"}
    if body is not None:
        headers["Content-Type"] = "application/scim+json"
    response, payload = served.request(port, method, path, body, headers)
    return response.status, json.loads(payload) if payload else None


def sign_in(port, username, password):
    """Sign in through the login form; return the answer's status and Location."""
    response, page = served.request(port, "GET", "/login")
    assert response.status == 200
    cookie = response.getheader("Set-Cookie").split(";")[0]
    token = BeautifulSoup(page, "html.parser").find("input", {"name": "csrf_token"})
    form = urllib.parse.urlencode(
        {"csrf_token": token["value"], "username": username, "password": password}
    )
    conn = served.http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            "/login",
            body=form,
            headers={
                "Cookie": cookie,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Location")
    finally:
        conn.close()


def stop_cleanly(machine, process, log):
    assert served.stop(process) == 0
    assert "mdm stopped." in log.read_text()
    # The binary's unpack folder went with it.
    assert list(machine.tmp.iterdir()) == []


def test_version_is_the_package_version(machine):
    finished = machine.run(machine.env(), "--version")
    assert finished.stdout == f"mdm {mdm.__version__}\n"
    assert mdm.__version__ == importlib.metadata.version("mdm")
    assert finished.stderr == ""
    # Neither --version nor --help needs the data folder.
    assert machine.run(machine.env(), "--help").stdout.startswith("Usage: mdm ")
    assert not machine.default_data.exists()


def test_first_run_round_trip_and_restart(machine):
    # The public address keeps meta.location the same across the two ports.
    env = machine.env(PUBLIC_URL="https://mdm.example.org")
    secret = machine.run(env, "token", "create", "--idp", "entra").stdout.strip()
    assert secret.startswith("mdm_")
    machine.run(env, "admin", "create", "alice", "--password-stdin", input=PASSWORD)
    machine.run(env, "attribute", "add", "badge")

    # The data lives in the default folder, owner-only; nothing lands where it ran.
    data = machine.default_data
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert (data / "secret_key").is_file()
    assert (data / "mdm.sqlite").is_file() == (ENGINE == "sqlite")
    assert list(machine.work.iterdir()) == []

    log = machine.root / "serve.log"
    process, port = machine.start(env, log)
    try:
        assert f"Data folder: {data}\n" in log.read_text()

        status, ada = scim(
            port,
            secret,
            "POST",
            "/scim/v2/Users",
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", CUSTOM],
                "userName": "ada@example.org",
                "name": {"givenName": "Ada", "familyName": "Lovelace"},
                "active": True,
                CUSTOM: {"badge": "B-1"},
            },
        )
        assert status == 201, ada
        assert (ada["userName"], ada["active"], ada[CUSTOM]) == (
            "ada@example.org",
            True,
            {"badge": "B-1"},
        )
        assert scim(port, secret, "GET", f"/scim/v2/Users/{ada['id']}") == (200, ada)

        # As Entra sends it: a capitalised op and a boolean as a string.
        status, patched = scim(
            port,
            secret,
            "PATCH",
            f"/scim/v2/Users/{ada['id']}",
            {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
            },
        )
        assert status == 200, patched
        assert patched["active"] is False
        assert patched["meta"]["version"] != ada["meta"]["version"]
        assert scim(port, secret, "GET", f"/scim/v2/Users/{ada['id']}") == (
            200,
            patched,
        )

        status, grace = scim(
            port,
            secret,
            "POST",
            "/scim/v2/Users",
            {
                "userName": "grace@example.org",
            },
        )
        assert status == 201, grace
        status, staff = scim(
            port,
            secret,
            "POST",
            "/scim/v2/Groups",
            {
                "displayName": "Staff",
                "members": [{"value": grace["id"]}],
            },
        )
        assert status == 201, staff
        deleted = scim(port, secret, "DELETE", f"/scim/v2/Users/{ada['id']}")
        assert deleted == (204, None)
        kept = {
            path: scim(port, secret, "GET", path)
            for path in (
                f"/scim/v2/Users/{grace['id']}",
                f"/scim/v2/Groups/{staff['id']}",
                "/scim/v2/Users",
            )
        }
        assert kept["/scim/v2/Users"][1]["totalResults"] == 1
        status, error = scim(port, secret, "GET", f"/scim/v2/Users/{ada['id']}")
        assert (status, error["status"]) == (404, "404")

        # The console's sign-in page, with its stylesheet from inside the binary.
        response, page = served.request(port, "GET", "/login")
        assert response.status == 200
        link = BeautifulSoup(page, "html.parser").find("link", rel="stylesheet")
        response, css = served.request(port, "GET", link["href"])
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/css")
        assert css == (ROOT / "static" / "style.css").read_bytes()
    finally:
        stop_cleanly(machine, process, log)

    # A second start on the same data keeps everything.
    process, port = machine.start(env, log)
    try:
        for path, answer in kept.items():
            assert scim(port, secret, "GET", path) == answer
        assert scim(port, secret, "GET", f"/scim/v2/Users/{ada['id']}")[0] == 404
        assert sign_in(port, "alice", PASSWORD) == (302, "/admin/")
    finally:
        stop_cleanly(machine, process, log)
    listed = machine.run(env, "attribute", "list").stdout.split()
    assert listed[0] == f"{CUSTOM}:badge"
    assert list(machine.work.iterdir()) == []


def test_upgrade_serves_what_the_pip_installed_server_made(machine):
    instance = machine.root / "data"
    instance.mkdir()
    pip_env = served.environment(instance, PUBLIC_URL="https://mdm.example.org")
    secret = served.mdm(pip_env, "token", "create", "--idp", "okta").stdout.strip()
    served.mdm(pip_env, "admin", "create", "bob", "--password-stdin", input=PASSWORD)
    served.mdm(pip_env, "attribute", "add", "costCenter")
    process, port = served.start(pip_env, machine.root / "pip.log")
    try:
        ids = []
        for n in range(30):
            status, user = scim(
                port,
                secret,
                "POST",
                "/scim/v2/Users",
                {
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", CUSTOM],
                    "userName": f"user{n}@example.org",
                    "emails": [{"value": f"user{n}@example.org", "primary": True}],
                    CUSTOM: {"costCenter": f"CC{n % 3}"},
                },
            )
            assert status == 201, user
            ids.append(user["id"])
        status, group = scim(
            port,
            secret,
            "POST",
            "/scim/v2/Groups",
            {
                "displayName": "Everyone",
                "members": [{"value": i} for i in ids],
            },
        )
        assert status == 201, group
        users = scim(port, secret, "GET", "/scim/v2/Users?count=100")
        groups = scim(port, secret, "GET", "/scim/v2/Groups")
    finally:
        assert served.stop(process) == 0

    env = machine.env(instance, PUBLIC_URL="https://mdm.example.org")
    log = machine.root / "serve.log"
    process, port = machine.start(env, log)
    try:
        assert f"Data folder: {instance}\n" in log.read_text()
        assert scim(port, secret, "GET", "/scim/v2/Users?count=100") == users
        assert scim(port, secret, "GET", "/scim/v2/Groups") == groups
        assert users[1]["totalResults"] == 30
        assert len(groups[1]["Resources"][0]["members"]) == 30
        assert sign_in(port, "bob", PASSWORD) == (302, "/admin/")
    finally:
        stop_cleanly(machine, process, log)
    assert not machine.default_data.exists()


def test_binary_migrates_an_older_schema_on_start(machine):
    instance = machine.root / "data"
    instance.mkdir()
    path = instance / "mdm.sqlite"
    secret = schema_1_database(path)
    env = machine.env(instance)
    log = machine.root / "serve.log"
    process, port = machine.start(env, log)
    try:
        query = urllib.parse.quote('displayName eq "old group"')
        status, body = scim(port, secret, "GET", f"/scim/v2/Groups?filter={query}")
        assert status == 200, body
        assert body["Resources"][0]["members"][0]["display"] == "Old"
    finally:
        stop_cleanly(machine, process, log)
    bind_test_database(path)
    with database.connection_context():
        assert schema_version(database, "mdm") == SCHEMA_VERSION


def test_binary_refuses_a_newer_database_in_one_line(machine):
    instance = machine.root / "data"
    instance.mkdir(mode=0o700)  # as mdm makes it: no warning to tighten it
    bind_test_database(instance / "mdm.sqlite")
    with database.connection_context():
        set_schema_version(database, "mdm", 99)
    finished = machine.run(
        machine.env(instance), "serve", "--port", str(served.free_port()), check=False
    )
    assert finished.returncode == 1
    assert finished.stderr == (
        "Error: the database cannot be used: Database schema version 99 is newer "
        f"than this release understands ({SCHEMA_VERSION}); upgrade mdm.\n"
    )


def test_binary_holds_the_postgresql_driver(machine):
    port = served.free_port()  # nothing listens there
    env = machine.env(DATABASE_URL=f"postgresql://mdm@127.0.0.1:{port}/mdm")
    finished = machine.run(env, "token", "list", check=False)
    assert finished.returncode == 1
    assert finished.stderr.startswith(
        "Error: the database cannot be used: connection to server at "
        f'"127.0.0.1", port {port} failed: Connection refused'
    )


if ENGINE == "sqlite":

    def test_binary_backup_is_a_working_copy(machine):
        env = machine.env()
        machine.run(env, "token", "create", "--idp", "generic")
        finished = machine.run(env, "backup", "copy.sqlite")
        assert finished.stderr.startswith("Backed up ")
        conn = sqlite3.connect(machine.work / "copy.sqlite")
        try:
            assert conn.execute("SELECT idp FROM bearer_token").fetchall() == [
                ("generic",)
            ]
        finally:
            conn.close()

else:

    def test_binary_copies_sqlite_into_postgresql_and_serves_it(machine):
        # A SQLite installation (no MDM_DATABASE_URL), moved to PostgreSQL.
        env = machine.env(PUBLIC_URL="https://mdm.example.org")
        del env["MDM_DATABASE_URL"]
        secret = machine.run(env, "token", "create", "--idp", "entra").stdout.strip()
        log = machine.root / "serve.log"
        process, port = machine.start(env, log)
        try:
            status, user = scim(
                port,
                secret,
                "POST",
                "/scim/v2/Users",
                {
                    "userName": "moved@example.org",
                },
            )
            assert status == 201, user
        finally:
            stop_cleanly(machine, process, log)
        target = database_url(machine.root / "target.sqlite")
        finished = machine.run(env, "copy-db", "--to", target)
        assert "Copied and verified" in finished.stderr
        process, port = machine.start(dict(env, MDM_DATABASE_URL=target), log)
        try:
            assert scim(port, secret, "GET", f"/scim/v2/Users/{user['id']}") == (
                200,
                user,
            )
        finally:
            stop_cleanly(machine, process, log)


def test_systemd_unit_is_valid_and_hardened(binary, tmp_path):
    text = (ROOT / "packaging" / "mdm.service").read_text()
    settings = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    assert settings["User"] == ["mdm"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    # The one writable folder is the data folder mdm is told to use.
    assert settings["ReadWritePaths"] == ["/var/lib/mdm"]
    assert "MDM_INSTANCE_PATH=/var/lib/mdm" in settings["Environment"]
    assert settings["StateDirectory"] == ["mdm"]
    # systemd checks every directive and the command; /usr/local/bin/mdm is
    # where the README installs the binary, here the built one stands in.
    unit = tmp_path / "mdm.service"
    unit.write_text(text.replace("/usr/local/bin/mdm", str(binary)))
    finished = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True
    )
    assert (finished.returncode, finished.stderr) == (0, "")
