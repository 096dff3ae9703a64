"""Serve the app with waitress and stop gracefully on SIGTERM or Ctrl-C."""

import signal
import threading
import time

from waitress import wasyncore
from waitress.server import create_server

from .db import postgres

GRACE_SECONDS = 30
# waitress reads a whole body before the app runs; a Content-Length beyond this
# multiple of the app's own limits is refused at once, unread, with a plain 413.
# Bodies between the two limits still get the app's SCIM 413 (RFC 7644 §3.12).
BODY_CAP_FACTOR = 4


def serve(app, host, port, threads, on_ready=None):
    """Serve until SIGTERM/SIGINT, then finish in-flight requests and return.

    waitress's own serve() dies mid-response on SIGTERM. Here the listening
    socket closes first, the event loop keeps flushing responses until every
    request has been answered (or GRACE_SECONDS pass), then the workers stop.
    Every write is one transaction, so a request cut short writes nothing.
    """
    server = create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        ident="mdm",
        max_request_body_size=body_cap(app.config),
    )
    stopping = threading.Event()

    def request_stop(signum, frame):
        stopping.set()
        server.pull_trigger()  # wake the event loop now

    previous = {
        sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    if on_ready is not None:
        on_ready(server)
    try:
        while not stopping.is_set():
            _poll(server, 1.0)
        wasyncore.dispatcher.close(server)  # stop accepting; keep the trigger
        deadline = time.monotonic() + GRACE_SECONDS
        while _busy(server) and time.monotonic() < deadline:
            _poll(server, 0.05)
        for channel in list(server.active_channels.values()):
            channel.close()
        server.task_dispatcher.shutdown(cancel_pending=False, timeout=5)
        server.trigger.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def default_threads():
    """Return how many waitress threads suit the bound database engine.

    Only one thread runs Python at a time, and every SQLite call hands the
    GIL to another waiting thread and back, so on SQLite more threads only
    contend: lookups ran at 0.38, 0.36 and 0.35 of the framework floor with
    2, 4 and 8 threads (and 0.45 with one, which a single slow download would
    stall). Four keep room for slow requests. A PostgreSQL query waits on the
    network, which more threads overlap.
    """
    return 8 if postgres() else 4


def body_cap(config):
    """Return the largest body waitress will read for the app."""
    limits = [config.get("MAX_CONTENT_LENGTH"), config.get("SCIM_BULK_MAX_PAYLOAD")]
    return BODY_CAP_FACTOR * max(int(limit) for limit in limits if limit)


def _poll(server, timeout):
    server.asyncore.loop(
        timeout=timeout,
        map=server._map,
        use_poll=server.adj.asyncore_use_poll,
        count=1,
    )


def _busy(server):
    """Tell whether any request is queued, running, or still being sent."""
    dispatcher = server.task_dispatcher
    if dispatcher.active_count or dispatcher.queue:
        return True
    return any(
        channel.requests or channel.total_outbufs_len
        for channel in server.active_channels.values()
    )
