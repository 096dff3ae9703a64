"""Serve the app with waitress, queue requests for a running worker, and stop gracefully.

waitress has no public way to stop gracefully (its own serve() dies
mid-response on SIGTERM) nor to choose how requests wake its workers. The
stop and the dispatcher below are the one place mdm reaches into waitress's
internals, written against waitress 3.0.2 (pinned in pyproject.toml);
INTERNALS lists every one, and tests/test_server.py checks them, so an
upgrade that changes one fails there by name.
"""

import ctypes
import logging
import os
import signal
import threading
import time

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ThreadedTaskDispatcher

from .db import postgres

GRACE_SECONDS = 30
# waitress reads a whole body before the app runs; a Content-Length beyond this
# multiple of the app's own limits is refused at once, unread, with a plain 413.
# Bodies between the two limits still get the app's SCIM 413 (RFC 7644 §3.12).
BODY_CAP_FACTOR = 4

# mdm's settings for waitress's limits, by the name of waitress's adjustment.
LIMITS = {
    "CHANNEL_TIMEOUT": "channel_timeout",
    "CLEANUP_INTERVAL": "cleanup_interval",
    "CONNECTION_LIMIT": "connection_limit",
    "MAX_REQUEST_HEADER_SIZE": "max_request_header_size",
}

# File descriptors kept for other than connections (see connection_limit).
SPARE_DESCRIPTORS = 64

log = logging.getLogger("mdm")

# The waitress internals the graceful stop uses: attributes of the server,
# of each connection (channel), and the event loop's signature.
INTERNALS = {
    "server": ("_map", "adj", "active_channels", "task_dispatcher", "trigger"),
    "channel": ("requests", "request", "total_outbufs_len"),
    "wasyncore.loop": ("timeout", "use_poll", "map", "count"),
    "wasyncore.dispatcher.close": ("self",),
    "task_dispatcher.shutdown": ("self", "cancel_pending", "timeout"),
    "create_server": ("_dispatcher",),
    "server.channel_class": ("channel_class",),
    "HTTPChannel": (
        "will_close",
        "close_when_flushed",
        "total_outbufs_len",
        "requests",
        "outbuf_lock",
    ),
    "ThreadedTaskDispatcher": (
        "lock",
        "queue",
        "queue_cv",
        "threads",
        "active_count",
        "stop_count",
    ),
}


def serve(app, host, port, threads, on_ready=None):
    """Serve until SIGTERM/SIGINT, then finish in-flight requests and return."""
    limit_malloc_arenas()
    server = make_server(app, host, port, threads)
    stopping = threading.Event()

    def request_stop(signum, frame):
        stop(server, stopping)

    previous = {
        sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    if on_ready is not None:
        on_ready(server)
    try:
        run(server, stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# glibc gives each thread that allocates its own malloc arena (up to eight
# per core) and keeps what each grew to. Waitress hands requests to its
# workers in turn, so each worker that once built a large answer (a chunk of
# a million-member group) held about 19 MB more: 8 workers on PostgreSQL
# took the server from 67 to over 200 MB. Two arenas are shared by all.
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas(arenas=MALLOC_ARENAS):
    """Cap glibc's malloc arenas before the workers start; False where that is not done."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False  # the administrator's own setting, which glibc has applied
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process runs on
    except (OSError, AttributeError):
        return False  # not glibc (macOS, Windows)
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return mallopt(M_ARENA_MAX, arenas) == 1


def make_server(app, host, port, threads):
    """Return a waitress server for ``app`` with mdm's limits, proxy setting and dispatcher."""
    # A PostgreSQL query waits on the network: there waitress's own
    # dispatcher, which wakes a worker per request, overlaps those waits.
    dispatcher = ThreadedTaskDispatcher() if postgres() else Dispatcher()
    dispatcher.set_thread_count(threads)
    server = create_server(
        app,
        _dispatcher=dispatcher,
        host=host,
        port=port,
        threads=threads,
        ident="mdm",
        max_request_body_size=body_cap(app.config),
        # select() cannot watch a descriptor numbered 1024 or more; poll() can.
        asyncore_use_poll=True,
        **limits(app.config),
        # waitress strips X-Forwarded-* from peers it does not itself trust;
        # with PROXY_FIX set, werkzeug's ProxyFix in the app decides instead.
        clear_untrusted_proxy_headers=not trusts_proxy(app.config),
    )
    server.channel_class = Channel
    return server


def default_threads():
    """Return how many waitress threads suit the bound database engine."""
    # SQLite answers from the process itself, one writer at a time, so a few
    # threads are enough to keep a slow request from holding up the others.
    # A PostgreSQL query waits on the network, which more threads overlap.
    return 8 if postgres() else 4


def trusts_proxy(config):
    """Tell whether the app is configured to trust a reverse proxy's X-Forwarded-* headers."""
    return int(config.get("PROXY_FIX") or 0) > 0


def limits(config):
    """Return waitress's adjustments for the limits the app sets (see create_app)."""
    found = {
        adjustment: int(config[name])
        for name, adjustment in LIMITS.items()
        if config.get(name)
    }
    if "connection_limit" in found:
        found["connection_limit"] = connection_limit(found["connection_limit"])
    return found


def body_cap(config):
    """Return the largest body waitress will read for the app."""
    if config.get("MAX_REQUEST_BODY_SIZE"):
        return int(config["MAX_REQUEST_BODY_SIZE"])
    limits = [config.get("MAX_CONTENT_LENGTH"), config.get("SCIM_BULK_MAX_PAYLOAD")]
    return BODY_CAP_FACTOR * max(int(limit) for limit in limits if limit)


def connection_limit(wanted):
    """Return how many connections to accept, raising the open-files limit to hold them."""
    # Every connection is a file descriptor; the process also needs some for
    # its database files, its listening socket and its logs. The soft limit
    # (often 1024) is raised as far as the hard one allows.
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + SPARE_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    fitted = max(soft - SPARE_DESCRIPTORS, 1)
    log.warning(
        "CONNECTION_LIMIT %d is more than the open-files limit (%d) allows: "
        "accepting %d connections at once.",
        wanted,
        soft,
        fitted,
    )
    return fitted


#
# waitress internals from here on (see INTERNALS): the graceful stop, the
# connection the loop leaves alone while a worker writes, the dispatcher.
#


def stop(server, stopping):
    """Ask ``run`` to stop, from any thread, waking its event loop now."""
    stopping.set()
    try:
        server.pull_trigger()
    except OSError:
        # From another thread, run() may have seen the flag on its own and
        # closed the trigger already: it is stopping, as asked.
        pass


def run(server, stopping):
    """Serve until ``stopping`` is set, then stop as the README's Operations section says."""
    # The listening socket closes first, then each keep-alive connection as
    # soon as it has nothing in flight, while the event loop keeps flushing
    # answers until every request has been answered (or GRACE_SECONDS pass);
    # then the workers stop. Every write is one transaction, so a request cut
    # short writes nothing.
    while not stopping.is_set():
        _poll(server, 1.0)
    wasyncore.dispatcher.close(server)  # stop accepting; keep the trigger
    deadline = time.monotonic() + GRACE_SECONDS
    while _busy(server) and time.monotonic() < deadline:
        _close_idle(server)
        _poll(server, 0.05)
    for channel in list(server.active_channels.values()):
        channel.close()
    server.task_dispatcher.shutdown(cancel_pending=False, timeout=5)
    server.trigger.close()


def _poll(server, timeout):
    """Run one turn of waitress's event loop, then wake a worker for a stalled queue."""
    dispatcher = server.task_dispatcher
    watch = isinstance(dispatcher, Dispatcher)
    if watch and dispatcher.queue:
        timeout = min(timeout, Dispatcher.STALL / 2)
    wasyncore.loop(
        timeout=timeout,
        map=server._map,
        use_poll=server.adj.asyncore_use_poll,
        count=1,
    )
    if watch:
        dispatcher.wake_if_stalled()


class Channel(HTTPChannel):
    """A connection the event loop leaves alone while a worker is writing to it."""

    # A worker sends its answer itself, holding the connection's output lock.
    # Meanwhile waitress's loop saw output pending and the socket writable,
    # could not take the lock, and went round again: several turns of select
    # per request, each taking the interpreter lock from the worker, which
    # nearly doubled the server's CPU per lookup. Whoever holds the lock and
    # leaves output unsent pulls the trigger, so the loop looks again once
    # the lock is free.

    def writable(self):
        # HTTPChannel.writable, but False for a running request whose lock is held.
        if self.will_close or self.close_when_flushed:
            return True
        if not self.total_outbufs_len:
            return False
        if self.requests:
            if not self.outbuf_lock.acquire(blocking=False):
                return False
            self.outbuf_lock.release()
        return True


class Dispatcher(ThreadedTaskDispatcher):
    """Queue each request for a worker already running; wake another only for a slow one."""

    # Only one thread runs Python at a time. waitress wakes an idle worker
    # for every request, so under load the woken workers trade the
    # interpreter lock and the CPU among themselves, and a lookup costs the
    # server about twice the CPU. Here a request waits for the busy worker
    # unless no worker has started or finished one for STALL seconds: then
    # the event loop (see _poll) wakes an idle worker, so a slow request (a
    # large page, a lock wait, a slow client) holds up the ones queued behind
    # it for no longer than that.

    STALL = 0.01

    def __init__(self):
        super().__init__()
        # When a worker last started or finished a request: one float, which
        # workers set without taking the dispatcher's lock.
        self.progress = time.monotonic()

    def add_task(self, task):
        with self.lock:
            self.queue.append(_Timed(task, self))
            if self.active_count == 0:
                self.queue_cv.notify()  # an idle server answers at once

    def wake_if_stalled(self):
        """Wake an idle worker if requests wait and the busy ones made no progress."""
        with self.lock:
            idle = len(self.threads) - self.stop_count - self.active_count
            stalled = time.monotonic() - self.progress >= self.STALL
            if self.queue and idle > 0 and stalled:
                self.queue_cv.notify()


class _Timed:
    """A queued task that marks its dispatcher's progress when it starts and ends."""

    __slots__ = ("task", "dispatcher")

    def __init__(self, task, dispatcher):
        self.task = task
        self.dispatcher = dispatcher

    def service(self):
        self.dispatcher.progress = time.monotonic()
        try:
            self.task.service()
        finally:
            self.dispatcher.progress = time.monotonic()

    def cancel(self):
        self.task.cancel()


def _close_idle(server):
    """Close keep-alive connections with nothing in flight, so no new request starts."""
    # A connection is not read while its request runs or its answer is unsent,
    # so one closed here between two requests never had its next one read; one
    # still receiving a request (``channel.request``) is left to finish it.
    for channel in list(server.active_channels.values()):
        if not (channel.requests or channel.request or channel.total_outbufs_len):
            channel.close()


def _busy(server):
    """Tell whether any request is queued, running, or still being sent."""
    # A connection keeps its requests until a worker has answered them all.
    dispatcher = server.task_dispatcher
    if dispatcher.active_count or dispatcher.queue:
        return True
    return any(
        channel.requests or channel.total_outbufs_len
        for channel in server.active_channels.values()
    )
