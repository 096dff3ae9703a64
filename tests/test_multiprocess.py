"""Two ``mdm serve`` processes on one database: nothing lost, one winner per race, shared state."""

import http.cookiejar
import json
import os
import re
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from . import crashload as crash
from .conftest import ENGINE
from .conftest import ROOT
from .conftest import database_url
from .conftest import integrity_problems

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PASSWORD = "correct horse battery"


@pytest.fixture
def servers(tmp_path, monkeypatch):
    """Start two server processes sharing one instance folder and one database."""
    if ENGINE == "postgresql":
        monkeypatch.setenv("MDM_DATABASE_URL", database_url(tmp_path / "mdm.sqlite"))
    instance = str(tmp_path)
    token = crash.create_token(instance)
    started = []
    try:
        for name in ("a", "b"):
            log = str(tmp_path / f"serve-{name}.log")
            started.append((crash.start_server(instance, log), log))
        yield [port for (_, port), _ in started], token, [log for _, log in started]
    finally:
        for (process, _), _ in started:
            crash.stop_server(process)


def _all_at_once(calls):
    """Run each zero-argument call on its own thread, released together; return results."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(index, call):
        barrier.wait()
        results[index] = call()

    threads = [
        threading.Thread(target=run, args=(i, call), daemon=True)
        for i, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _call(port, token, method, path, body=None):
    client = crash.Client(port, token)
    try:
        status, payload = client.send(method, path, body)
    finally:
        client.close()
    return status, json.loads(payload) if payload else None


def test_two_processes_provision_one_directory(servers, tmp_path):
    """Users, a uniqueness race and member PATCHes through both processes at once."""
    ports, token, logs = servers

    # Users created through both processes at once are all there, seen by both.
    calls = [
        (
            lambda i=i: _call(
                ports[i % 2], token, "POST", "/Users", crash.user_body(f"u{i}@x")
            )
        )
        for i in range(24)
    ]
    created = _all_at_once(calls)
    assert [status for status, _ in created] == [201] * 24, created
    for port in ports:
        status, body = _call(port, token, "GET", "/Users?count=0")
        assert (status, body["totalResults"]) == (200, 24)

    # The same userName, in different case, sent to both processes: one winner.
    calls = [
        (
            lambda i=i: _call(
                ports[i % 2],
                token,
                "POST",
                "/Users",
                crash.user_body(f"Race{'E' if i % 2 else 'e'}@x"),
            )
        )
        for i in range(12)
    ]
    raced = _all_at_once(calls)
    statuses = sorted(status for status, _ in raced)
    assert statuses == [201] + [409] * 11, raced
    assert all(
        body["scimType"] == "uniqueness" for status, body in raced if status == 409
    )

    # Concurrent member PATCHes to one group through both processes lose nothing.
    status, group = _call(
        ports[0],
        token,
        "POST",
        "/Groups",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "All",
        },
    )
    assert status == 201, group
    user_ids = [body["id"] for _, body in created]
    calls = [
        (
            lambda i=i, user_id=user_id: _call(
                ports[i % 2],
                token,
                "PATCH",
                f"/Groups/{group['id']}",
                crash.add_member_body(user_id),
            )
        )
        for i, user_id in enumerate(user_ids)
    ]
    patched = _all_at_once(calls)
    assert {status for status, _ in patched} <= {200, 204}, patched
    for port in ports:
        status, body = _call(port, token, "GET", f"/Groups/{group['id']}")
        assert status == 200
        assert sorted(m["value"] for m in body["members"]) == sorted(user_ids)
        # Every PATCH counted: the version moved once per change.
        assert body["meta"]["version"] == f'W/"{1 + len(user_ids)}"'

    for log in logs:
        assert crash.server_errors(log) == []
    assert integrity_problems(tmp_path / "mdm.sqlite") == []


def _console(port):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    return opener, f"http://127.0.0.1:{port}"


def _sign_in(console, username, password):
    opener, base = console
    with opener.open(base + "/login") as response:
        page = response.read().decode()
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    data = urllib.parse.urlencode(
        {"csrf_token": csrf.group(1), "username": username, "password": password}
    ).encode()
    try:
        with opener.open(base + "/login", data=data) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_setup_code_and_sign_in_throttle_are_shared(servers, tmp_path):
    """Both processes print one setup code, and failures on one lock the other."""
    ports, _, logs = servers
    codes = set()
    for log in logs:
        codes.update(re.findall(r"/setup\?code=(\S+)", Path(log).read_text()))
    assert len(codes) == 1, codes

    subprocess.run(
        [*crash.MDM, "admin", "create", "root", "--password-stdin"],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
        cwd=ROOT,
        env=os.environ | {"MDM_INSTANCE_PATH": str(tmp_path)},
        timeout=60,
    )
    consoles = [_console(port) for port in ports]
    # Five failures alternate between the processes.
    for attempt in range(5):
        status, page = _sign_in(consoles[attempt % 2], "root", "wrong password!")
        assert status == 200 and "incorrect" in page
    # The account is now locked everywhere, even with the right password.
    for console in consoles:
        status, page = _sign_in(console, "root", PASSWORD)
        assert status == 429 and "Too many failed sign-ins" in page
