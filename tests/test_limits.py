"""waitress's limits: slow clients cannot starve a normal request, oversized ones are refused."""

import http.client
import socket
import threading
import time

import pytest

from . import served

# Half a request: the request line and a header whose value never ends.
HALF_SENT = b"POST /scim/v2/Users HTTP/1.1\r\nHost: localhost\r\nX-Slow: "


@pytest.fixture
def serve(tmp_path):
    """Start ``mdm serve`` with MDM_* settings; yield its port."""
    started = []

    def start(**settings):
        instance = tmp_path / f"instance{len(started)}"
        instance.mkdir()
        env = served.environment(instance, **settings)
        process, port = served.start(env, tmp_path / f"serve{len(started)}.log")
        started.append(process)
        return port

    yield start
    for process in started:
        assert served.stop(process) == 0


@pytest.fixture
def slow_clients():
    """Open half-sent requests to a port; close them all at the end."""
    opened = []

    def open_(port, count):
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(HALF_SENT)
            opened.append(sock)
        return opened[-count:]

    yield open_
    for sock in opened:
        sock.close()


def normal_request(port, timeout):
    """GET /ServiceProviderConfig; return (status, seconds taken)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/scim/v2/ServiceProviderConfig")
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        conn.close()


def test_slow_loris_connections_do_not_starve_a_normal_request(serve, slow_clients):
    port = serve()
    sockets = slow_clients(port, 110)
    stop = threading.Event()

    def trickle():
        # A byte a second on each: never idle long enough to be timed out.
        while not stop.wait(1):
            for sock in sockets:
                sock.send(b"a")

    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        time.sleep(1.5)
        # waitress's own limit of 100 connections left this waiting for as
        # long as the slow clients kept trickling.
        status, _ = normal_request(port, timeout=10)
        assert status == 200
    finally:
        stop.set()
        trickler.join()


def test_connections_over_the_limit_wait_at_most_the_channel_timeout(
    serve, slow_clients
):
    port = serve(CONNECTION_LIMIT=20, CHANNEL_TIMEOUT=2, CLEANUP_INTERVAL=1)
    sockets = slow_clients(port, 30)  # then silent
    status, seconds = normal_request(port, timeout=20)
    assert status == 200
    assert seconds < 10  # 2 s of silence, checked every second, plus slack

    # The silent connections were closed by the server, none answered.
    for sock in sockets[:18]:
        sock.settimeout(10)
        assert sock.recv(100) == b""


def test_request_size_limits_are_settings(serve):
    port = serve(MAX_REQUEST_HEADER_SIZE=4096, MAX_REQUEST_BODY_SIZE=1000)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/scim/v2/ServiceProviderConfig", headers={"X-Big": "a" * 5000})
    response = conn.getresponse()
    assert response.status == 431
    conn.close()

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/scim/v2/Users", body=b"{" * 1001)
    response = conn.getresponse()
    assert response.status == 413
    conn.close()

    status, _ = normal_request(port, timeout=10)
    assert status == 200


def test_the_open_files_limit_is_raised_to_hold_the_connections(monkeypatch, caplog):
    import resource

    from mdm.server import connection_limit

    limits = {"soft": 1024, "hard": 4096}
    monkeypatch.setattr(
        resource, "getrlimit", lambda kind: (limits["soft"], limits["hard"])
    )
    monkeypatch.setattr(
        resource, "setrlimit", lambda kind, pair: limits.update(soft=pair[0])
    )
    assert connection_limit(1000) == 1000
    assert limits == {"soft": 1064, "hard": 4096}
    assert caplog.records == []

    # A hard limit too low for the setting: as many as fit, and a warning.
    limits.update(soft=256, hard=512)
    assert connection_limit(1000) == 448
    assert limits == {"soft": 512, "hard": 512}
    assert [r.getMessage() for r in caplog.records] == [
        "CONNECTION_LIMIT 1000 is more than the open-files limit (512) allows: "
        "accepting 448 connections at once."
    ]
