"""Serve the app with waitress and stop gracefully on SIGTERM or Ctrl-C.

waitress has no public way to stop gracefully: its own serve() dies
mid-response on SIGTERM. The stop below is the one place mdm reaches into
waitress's internals, written against waitress 3.0.2 (pinned in
pyproject.toml); INTERNALS lists every one, and tests/test_server.py checks
them, so an upgrade that changes one fails there by name.
"""

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

# The waitress internals the graceful stop uses: attributes of the server,
# of each connection (channel), and the event loop's signature.
INTERNALS = {
    "server": ("_map", "adj", "active_channels", "task_dispatcher", "trigger"),
    "channel": ("requests", "request", "total_outbufs_len"),
    "wasyncore.loop": ("timeout", "use_poll", "map", "count"),
    "wasyncore.dispatcher.close": ("self",),
    "task_dispatcher.shutdown": ("self", "cancel_pending", "timeout"),
}


def serve(app, host, port, threads, on_ready=None):
    """Serve until SIGTERM/SIGINT, then finish in-flight requests and return."""
    server = make_server(app, host, port, threads)
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
        run(server, stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def make_server(app, host, port, threads):
    """Return a waitress server for ``app`` with mdm's limits and proxy setting."""
    return create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        ident="mdm",
        max_request_body_size=body_cap(app.config),
        # waitress strips X-Forwarded-* from peers it does not itself trust;
        # with PROXY_FIX set, werkzeug's ProxyFix in the app decides instead.
        clear_untrusted_proxy_headers=not trusts_proxy(app.config),
    )


def default_threads():
    """Return how many waitress threads suit the bound database engine."""
    # SQLite answers from the process itself, one writer at a time, so a few
    # threads are enough to keep a slow request from holding up the others.
    # A PostgreSQL query waits on the network, which more threads overlap.
    return 8 if postgres() else 4


def trusts_proxy(config):
    """Tell whether the app is configured to trust a reverse proxy's X-Forwarded-* headers."""
    return int(config.get("PROXY_FIX") or 0) > 0


def body_cap(config):
    """Return the largest body waitress will read for the app."""
    limits = [config.get("MAX_CONTENT_LENGTH"), config.get("SCIM_BULK_MAX_PAYLOAD")]
    return BODY_CAP_FACTOR * max(int(limit) for limit in limits if limit)


#
# The graceful stop: waitress internals from here on (see INTERNALS).
#


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
    """Run one turn of waitress's event loop."""
    wasyncore.loop(
        timeout=timeout,
        map=server._map,
        use_poll=server.adj.asyncore_use_poll,
        count=1,
    )


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
    return any(
        channel.requests or channel.total_outbufs_len
        for channel in server.active_channels.values()
    )
