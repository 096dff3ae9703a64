"""Acknowledged writes survive SIGKILL, and SIGTERM answers in-flight requests before exiting."""

import http.client
import json
import signal
import threading
import time
import urllib.parse

import pytest

from . import crashload as crash
from .conftest import ENGINE
from .conftest import database_url
from .conftest import integrity_problems
from .conftest import raw_connection

SLOW_REQUESTS = 6
BACKGROUND_WRITERS = 3


@pytest.fixture(autouse=True)
def server_database(tmp_path, monkeypatch):
    """Point the servers these tests start at the test database for ``mdm.sqlite``."""
    if ENGINE == "postgresql":
        monkeypatch.setenv("MDM_DATABASE_URL", database_url(tmp_path / "mdm.sqlite"))


def test_sigkill_loses_no_acknowledged_write(tmp_path):
    """Three SIGKILLs under load: every 2xx user and membership is there exactly once."""
    summary = crash.run(
        rounds=3, writers=4, seconds=1.5, instance=str(tmp_path), min_writes=120
    )
    writes = summary["acknowledged_users"] + summary["acknowledged_memberships"]
    assert summary["lost_users"] == []
    assert summary["duplicate_users"] == []
    assert summary["lost_memberships"] == []
    assert summary["duplicate_memberships"] == []
    assert summary["integrity"] == ["ok", "ok", "ok"]
    assert summary["foreign_key_violations"] == 0
    assert summary["unexpected_responses"] == []
    assert summary["server_errors"] == []
    assert writes >= 300, summary["per_round"]
    # Each kill landed mid-load: some requests were cut off without an answer.
    assert all(row["client_errors"] > 0 for row in summary["per_round"])
    assert summary["ok"]


def _slow_create(port, token, name, barrier, sent, results):
    """Send one POST whose password hashing keeps it in flight; record the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = crash.user_body(name)
    body["password"] = "in-flight password 1!"
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/scim+json",
    }
    try:
        conn.connect()
        barrier.wait(timeout=10)
        conn.request("POST", "/scim/v2/Users", json.dumps(body), headers)
        sent.release()
        response = conn.getresponse()
        response.read()
        results[name] = (response.status, time.monotonic())
    except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as e:
        results[name] = (repr(e), time.monotonic())
    finally:
        conn.close()


def _background(port, token, tag, stop, acked, errors):
    """Create users over keep-alive until stopped or cut off; record each 201."""
    client = crash.Client(port, token)
    deadline = time.monotonic() + 30
    try:
        for seq in range(10_000):
            if stop.is_set() or time.monotonic() > deadline:
                break
            name = f"{tag}.{seq:05d}@term.example.com"
            try:
                status, _ = client.send("POST", "/Users", crash.user_body(name))
            except crash.CONNECTION_ERRORS as e:
                errors.append((name, repr(e)))
                break
            if status == 201:
                acked.append(name)
    finally:
        client.close()


def test_sigterm_answers_in_flight_requests_and_exits(tmp_path):
    """SIGTERM mid-request: every in-flight request is answered, 2xx are kept, exit is prompt."""
    instance = str(tmp_path)
    log = str(tmp_path / "serve.log")
    token = crash.create_token(instance)
    process, port = crash.start_server(instance, log)
    results, acked, errors = {}, [], []
    stop = threading.Event()
    try:
        warm = crash.Client(port, token)
        try:
            warm.json("GET", "/Users?count=1")
        finally:
            warm.close()
        background = [
            threading.Thread(
                target=_background,
                args=(port, token, f"bg{w}", stop, acked, errors),
                daemon=True,
            )
            for w in range(BACKGROUND_WRITERS)
        ]
        for thread in background:
            thread.start()
        barrier = threading.Barrier(SLOW_REQUESTS)
        sent = threading.Semaphore(0)
        slow = [
            threading.Thread(
                target=_slow_create,
                args=(port, token, f"slow{i}@term.example.com", barrier, sent, results),
                daemon=True,
            )
            for i in range(SLOW_REQUESTS)
        ]
        for thread in slow:
            thread.start()
        for _ in range(SLOW_REQUESTS):
            assert sent.acquire(timeout=10), "a slow request was never sent"
        time.sleep(0.1)  # let waitress read them and start hashing
        terminated = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=15)
        exited = time.monotonic() - terminated
        stop.set()
        for thread in slow + background:
            thread.join(timeout=30)
    finally:
        stop.set()
        crash.stop_server(process, kill=True)

    assert code in (0, -signal.SIGTERM, 128 + signal.SIGTERM), code
    assert exited < 5, f"exit took {exited:.1f} s"
    unanswered = {n: r for n, r in results.items() if not isinstance(r[0], int)}
    assert not unanswered, f"in-flight requests cut off by SIGTERM: {unanswered}"
    assert len(results) == SLOW_REQUESTS
    assert all(status == 201 for status, _ in results.values()), results
    # The requests really were in flight: their answers came after the signal.
    assert all(at > terminated for _, at in results.values())
    assert acked, f"the background writers got nothing done: {errors}"

    # A request cut off without an answer was never started, so wrote nothing.
    expected = {name: 1 for name in [*acked, *results]}
    expected.update({name: 0 for name, _ in errors})
    process, port = crash.start_server(instance, log)
    client = crash.Client(port, token)
    try:
        for name, count in expected.items():
            query = urllib.parse.urlencode({"filter": f'userName eq "{name}"'})
            found = client.json("GET", f"/Users?{query}")
            assert found["totalResults"] == count, name
    finally:
        client.close()
        crash.stop_server(process)

    assert integrity_problems(tmp_path / "mdm.sqlite") == []
    db = raw_connection(tmp_path / "mdm.sqlite")
    try:
        cursor = db.cursor()
        cursor.execute(
            "SELECT user_name, external_id, display_name, data, password_hash"
            ' FROM "user"'
        )
        rows = cursor.fetchall()
    finally:
        db.close()
    # Nothing half-written: each row's columns agree with its SCIM document
    # (which holds what the columns do not: crashload.user_body's emails).
    for user_name, external_id, display_name, data, password_hash in rows:
        email = {"primary": True, "type": "work", "value": user_name}
        assert json.loads(data) == {"active": True, "emails": [email]}
        assert external_id == display_name == user_name.split("@")[0]
        assert (password_hash is not None) == user_name.startswith("slow")


def test_served_bodies_beyond_the_cap_are_refused_unread(tmp_path):
    """waitress refuses a huge declared body at once; a moderately large one gets SCIM's 413."""
    instance = str(tmp_path)
    token = crash.create_token(instance)
    process, port = crash.start_server(instance, str(tmp_path / "serve.log"))
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/scim+json",
    }
    try:
        # 100 MB declared, nothing sent: answered without waiting for the body.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.putrequest("POST", "/scim/v2/Bulk")
        for name, value in {**headers, "Content-Length": str(100 * 2**20)}.items():
            conn.putheader(name, value)
        conn.endheaders()
        started = time.monotonic()
        response = conn.getresponse()
        response.read()
        assert response.status == 413
        assert time.monotonic() - started < 5
        conn.close()

        # 1.5 MB: within what waitress reads, over Bulk's maxPayloadSize.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/scim/v2/Bulk", b" " * (3 * 2**19), headers)
        response = conn.getresponse()
        assert response.status == 413
        assert response.getheader("Content-Type") == "application/scim+json"
        assert json.loads(response.read())["detail"] == (
            "The size of the bulk operation exceeds the maxPayloadSize (1048576 bytes)."
        )
        conn.close()
    finally:
        crash.stop_server(process)
