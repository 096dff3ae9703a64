"""The waitress server: requests answered side by side, and the internals the graceful stop needs."""

import http.client
import inspect
import socket
import threading
import time
from importlib.metadata import version

from flask import Flask
from waitress import wasyncore
from waitress.channel import HTTPChannel

from mdm.server import INTERNALS
from mdm.server import make_server
from mdm.server import run


def serving(app, threads=2):
    """Start make_server's server on a free port, run() in a thread; return (server, stop)."""
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_CONTENT_LENGTH"] or 1024
    server = make_server(app, "127.0.0.1", 0, threads)
    stopping = threading.Event()
    looping = threading.Thread(target=run, args=(server, stopping), daemon=True)
    looping.start()

    def stop():
        stopping.set()
        server.pull_trigger()
        looping.join(10)
        assert not looping.is_alive(), "the server did not stop"

    return server, stop


def test_waitress_is_the_version_the_graceful_stop_was_written_for():
    assert version("waitress") == "3.0.2", (
        "mdm.server's graceful stop uses waitress internals checked against 3.0.2; "
        "review INTERNALS and this file before changing the pin"
    )


def _parameters(function):
    return list(inspect.signature(function).parameters)


def test_the_waitress_internals_of_the_graceful_stop_are_there():
    """Every attribute and signature in mdm.server.INTERNALS, by name."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 1024
    server = make_server(app, "127.0.0.1", 0, 1)
    a, b = socket.socketpair()
    try:
        for name in INTERNALS["server"]:
            assert hasattr(server, name), f"waitress server lost .{name}"
        assert isinstance(server._map, dict), "waitress server._map is no dict"
        assert hasattr(server.adj, "asyncore_use_poll"), (
            "waitress server.adj lost .asyncore_use_poll"
        )
        assert callable(server.trigger.close), "waitress server.trigger lost .close()"
        channel = server.channel_class(server, a, ("127.0.0.1", 0), server.adj, map={})
        assert isinstance(channel, HTTPChannel)
        for name in INTERNALS["channel"]:
            assert hasattr(channel, name), f"waitress HTTPChannel lost .{name}"
        assert channel.requests == [] and channel.request is None, (
            "waitress HTTPChannel.requests/.request changed meaning"
        )
        assert channel.total_outbufs_len == 0, (
            "waitress HTTPChannel.total_outbufs_len changed meaning"
        )
        channel.del_channel()
        loop = _parameters(wasyncore.loop)
        for name in INTERNALS["wasyncore.loop"]:
            assert name in loop, f"waitress wasyncore.loop lost its {name!r} argument"
        assert _parameters(wasyncore.dispatcher.close) == ["self"], (
            "waitress wasyncore.dispatcher.close changed its signature"
        )
        shutdown = _parameters(type(server.task_dispatcher).shutdown)
        assert shutdown == list(INTERNALS["task_dispatcher.shutdown"]), (
            f"waitress task_dispatcher.shutdown is now {shutdown}"
        )
    finally:
        a.close()
        b.close()
        server.close()


def test_stopping_closes_idle_connections_and_returns():
    app = Flask(__name__)

    @app.get("/")
    def index():
        return "ok"

    server, stop = serving(app)
    conn = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"ok"  # the connection stays open, idle
    stop()
    assert not server.active_channels
    with socket.socket() as sock:
        sock.settimeout(2)
        assert sock.connect_ex(("127.0.0.1", int(server.effective_port))) != 0
    conn.close()


def test_served_fast_request_is_answered_while_a_slow_one_runs():
    app = Flask(__name__)
    running, release = threading.Event(), threading.Event()

    @app.get("/slow")
    def slow():
        running.set()
        release.wait(10)
        return "slow"

    @app.get("/fast")
    def fast():
        return "fast"

    server, stop = serving(app, threads=4)
    port = server.effective_port
    answers = {}

    def get(path):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)
        answers[path] = conn.getresponse().read()
        conn.close()

    slow_client = threading.Thread(target=get, args=("/slow",))
    try:
        slow_client.start()
        assert running.wait(5)
        started = time.monotonic()
        get("/fast")
        waited = time.monotonic() - started
        assert answers == {"/fast": b"fast"}
        assert waited < 1, f"the fast request waited {waited:.2f} s"
    finally:
        release.set()
        slow_client.join(10)
        stop()
    assert answers["/slow"] == b"slow"


def test_a_streamed_answer_larger_than_the_buffers_reaches_a_slow_client():
    """A worker past the output high-water mark waits for the loop to flush it."""
    chunk, chunks = b"x" * 262144, 40
    app = Flask(__name__)

    @app.get("/big")
    def big():
        return app.response_class(chunk for _ in range(chunks))

    @app.get("/next")
    def after():
        return "next"

    server, stop = serving(app)
    server.adj.outbuf_high_watermark = 2 * len(chunk)  # the worker waits early
    try:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.settimeout(10)
        client.connect(("127.0.0.1", int(server.effective_port)))
        conn = http.client.HTTPConnection("127.0.0.1", server.effective_port)
        conn.sock = client
        conn.request("GET", "/big")
        response = conn.getresponse()
        received = []
        while piece := response.read(65536):
            received.append(piece)
            time.sleep(0.001)  # a slow reader: the server's sends fill up
        assert b"".join(received) == chunk * chunks
        conn.request("GET", "/next")  # the same keep-alive connection
        assert conn.getresponse().read() == b"next"
        conn.close()
    finally:
        stop()
