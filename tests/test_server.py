"""The waitress server: requests answered side by side, and the waitress internals mdm.server uses."""

import http.client
import inspect
import socket
import threading
import time
from importlib.metadata import version

import pytest
from flask import Flask
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ThreadedTaskDispatcher

from mdm.server import INTERNALS
from mdm.server import Channel
from mdm.server import Dispatcher
from mdm.server import make_server
from mdm.server import run
from mdm.server import stop

from .conftest import ENGINE


def serving(app, threads=2):
    """Start make_server's server on a free port, run() in a thread; return (server, stop)."""
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_CONTENT_LENGTH"] or 1024
    server = make_server(app, "127.0.0.1", 0, threads)
    stopping = threading.Event()
    looping = threading.Thread(target=run, args=(server, stopping), daemon=True)
    looping.start()

    def stopped():
        stop(server, stopping)
        looping.join(10)
        assert not looping.is_alive(), "the server did not stop"

    return server, stopped


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
        assert "_dispatcher" in _parameters(create_server), (
            "waitress create_server lost its _dispatcher argument"
        )
        assert issubclass(server.channel_class, HTTPChannel), (
            "waitress server.channel_class is no HTTPChannel"
        )
        for name in INTERNALS["HTTPChannel"]:
            assert hasattr(channel, name), f"waitress HTTPChannel lost .{name}"
        assert hasattr(channel.outbuf_lock, "acquire"), (
            "waitress HTTPChannel.outbuf_lock is no lock"
        )
        plain = ThreadedTaskDispatcher()
        for name in INTERNALS["ThreadedTaskDispatcher"]:
            assert hasattr(plain, name), f"waitress ThreadedTaskDispatcher lost .{name}"
        assert plain.active_count == 0 and plain.stop_count == 0
        assert len(plain.queue) == 0 and plain.threads is not None
        shutdown = _parameters(type(server.task_dispatcher).shutdown)
        assert shutdown == list(INTERNALS["task_dispatcher.shutdown"]), (
            f"waitress task_dispatcher.shutdown is now {shutdown}"
        )
    finally:
        a.close()
        b.close()
        server.close()


def test_asking_a_stopped_server_to_stop_again_is_harmless():
    """From another thread, run() may close its trigger before stop() pulls it."""
    server, stopped = serving(Flask(__name__))
    stopped()
    stop(server, threading.Event())  # the trigger is closed: no OSError


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


def test_the_loop_leaves_a_channel_alone_while_a_worker_writes_to_it():
    server, stop = serving(Flask(__name__))
    a, b = socket.socketpair()
    try:
        channel = Channel(server, a, ("127.0.0.1", 0), server.adj, map={})
        assert not channel.writable()  # nothing to send
        channel.requests = [object()]
        channel.total_outbufs_len = 10
        assert channel.writable()  # output pending and the lock is free: flush it
        held, release = threading.Event(), threading.Event()

        def write():
            with channel.outbuf_lock:
                held.set()
                release.wait(5)

        writer = threading.Thread(target=write)
        writer.start()
        assert held.wait(5)
        assert not channel.writable()  # the worker sends it itself
        channel.close_when_flushed = True
        assert channel.writable()  # closing stays the loop's business
        release.set()
        writer.join(5)
        channel.close_when_flushed = False
        assert channel.writable()
        channel.del_channel()
    finally:
        a.close()
        b.close()
        stop()


class Task:
    """A stand-in for a waitress channel: records the thread that serviced it."""

    def __init__(self, hold=None):
        self.hold = hold
        self.started = threading.Event()
        self.done = threading.Event()
        self.thread = None

    def service(self):
        self.thread = threading.current_thread().name
        self.started.set()
        if self.hold is not None:
            self.hold.wait(10)
        self.done.set()

    def cancel(self):
        self.done.set()


@pytest.fixture
def dispatcher():
    dispatcher = Dispatcher()
    dispatcher.set_thread_count(3)
    yield dispatcher
    dispatcher.shutdown(cancel_pending=True, timeout=5)


def test_an_idle_dispatcher_starts_a_request_at_once(dispatcher):
    task = Task()
    dispatcher.add_task(task)
    assert task.done.wait(5)


def test_queued_requests_wait_for_the_busy_worker(dispatcher):
    dispatcher.STALL = 60  # nothing counts as stalled in this test
    release = threading.Event()
    first = Task(hold=release)
    dispatcher.add_task(first)
    assert first.started.wait(5)
    queued = [Task(), Task()]
    for task in queued:
        dispatcher.add_task(task)
    dispatcher.wake_if_stalled()
    time.sleep(0.1)
    # Two idle workers were left asleep: the requests wait for the busy one.
    assert not any(task.started.is_set() for task in queued)
    release.set()
    assert all(task.done.wait(5) for task in queued)
    assert {task.thread for task in queued} == {first.thread}


def test_a_stalled_worker_gets_help(dispatcher):
    release = threading.Event()
    slow = Task(hold=release)
    dispatcher.add_task(slow)
    assert slow.started.wait(5)
    fast = Task()
    dispatcher.add_task(fast)
    time.sleep(dispatcher.STALL * 2)
    dispatcher.wake_if_stalled()
    try:
        assert fast.done.wait(5), "the queued request waited for the slow one"
        assert fast.thread != slow.thread
        assert not slow.done.is_set()
    finally:
        release.set()


def test_postgresql_keeps_waitress_dispatcher(app):
    # A PostgreSQL query waits on the network; waitress's dispatcher, waking a
    # worker per request, overlaps those waits. SQLite's calls are short.
    server = make_server(app, "127.0.0.1", 0, 2)
    try:
        assert isinstance(server.task_dispatcher, Dispatcher) == (ENGINE == "sqlite")
        assert server.channel_class is Channel
    finally:
        server.task_dispatcher.shutdown(timeout=5)
        server.close()
        server.trigger.close()


def test_the_served_process_caps_its_malloc_arenas(monkeypatch):
    """On glibc the cap is set before the workers start; an administrator's own wins."""
    import platform

    from mdm import server

    # CI and the binary run on glibc, where mallopt accepts the cap.
    assert platform.libc_ver()[0] == "glibc"
    assert server.limit_malloc_arenas() is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert server.limit_malloc_arenas() is False
    # serve() sets it first: the workers are made by make_server.
    source = inspect.getsource(server.serve)
    assert source.index("limit_malloc_arenas()") < source.index("make_server(")
