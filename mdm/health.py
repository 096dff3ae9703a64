"""What monitoring watches: health and readiness checks, request ids, the request log."""

import json
import logging
import secrets
import sys
import time
from datetime import UTC
from datetime import datetime

from flask import Blueprint
from flask import current_app
from flask import g
from flask import jsonify
from flask import request
from peewee import DatabaseError
from peewee import InterfaceError

from . import models
from .db import database
from .db import schema_version

bp = Blueprint("health", __name__)

REQUEST_ID_HEADER = "X-Request-Id"
MAX_REQUEST_ID = 128
LOG_FORMATS = ("text", "json")

# The request log: one record per answered request, on stderr.
log = logging.getLogger("mdm.request")


#
# Health and readiness
#


@bp.get("/healthz")
def healthz():
    """Tell that the process serves; touches neither the database nor the session."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Tell whether the database answers and holds the schema this release uses."""
    try:
        with database.connection_context():
            current = schema_version(database, "mdm")
    except (DatabaseError, InterfaceError):
        # The driver's message may name the host, user or password file: the
        # operator finds it in the server's own log, not in a public probe.
        current_app.logger.warning("Readiness check: the database does not answer.")
        return _unready("database unreachable")
    if current > models.SCHEMA_VERSION:
        return _unready(
            f"database schema {current} is newer than this release's "
            f"{models.SCHEMA_VERSION}: upgrade mdm"
        )
    if current < models.SCHEMA_VERSION:
        return _unready(
            f"migration pending: database schema {current}, this release "
            f"needs {models.SCHEMA_VERSION}"
        )
    return jsonify(status="ready")


def _unready(reason):
    return jsonify(status="unavailable", reason=reason), 503


def answer_probe():
    """Answer a health or readiness probe before the hooks that open a database connection."""
    # Registered right after the Host check: the per-request connection
    # (mdm.db) would fail every probe while the database is down, and
    # /healthz must not depend on it at all. A value returned by a
    # before_request function is the response, and no later hook runs.
    if request.blueprint == bp.name:
        return current_app.view_functions[request.endpoint]()
    return None


#
# Request ids
#


def request_id():
    """Return the current request's id: the sender's X-Request-Id if sane, else a new one."""
    found = g.get("request_id")
    if found is None:
        found = g.request_id = _sent_id() or secrets.token_hex(16)
    return found


def _sent_id():
    # A proxy's id ties its log to ours; anything a log line or a page could
    # not show as it stands (control characters, non-ASCII, a flood) is ignored.
    sent = request.headers.get(REQUEST_ID_HEADER)
    if sent and len(sent) <= MAX_REQUEST_ID and all(" " <= c <= "~" for c in sent):
        return sent
    return None


#
# The request log
#


def _start():
    g.request_started = time.perf_counter()
    request_id()


def _finish(response):
    """Label the response with its request id and log one line for it."""
    rid = request_id()
    response.headers[REQUEST_ID_HEADER] = rid
    started = g.get("request_started")
    duration = (time.perf_counter() - started) * 1000 if started else 0.0
    token = g.get("scim_token")
    status = response.status_code
    # Only the path: a query string may carry a setup code or a secret.
    log.log(
        logging.ERROR if status >= 500 else logging.INFO,
        "%s %s %s",
        request.method,
        request.path,
        status,
        extra={
            "request_id": rid,
            "connection": getattr(token, "idp", None),
            "method": request.method[:16],
            "path": request.path[:2048],
            "status": status,
            "duration_ms": round(duration, 2),
        },
    )
    return response


class TextFormatter(logging.Formatter):
    """One readable line per request, with control characters escaped."""

    def format(self, record):
        when = datetime.fromtimestamp(record.created, UTC)
        connection = f" connection={record.connection}" if record.connection else ""
        return (
            f"{when:%Y-%m-%d %H:%M:%S} {record.levelname} {_escaped(record.method)} "
            f"{_escaped(record.path)} {record.status} {record.duration_ms:.1f} ms "
            f"id={_escaped(record.request_id)}{connection}"
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per request, for log shippers."""

    def format(self, record):
        when = datetime.fromtimestamp(record.created, UTC)
        return json.dumps(
            {
                "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "level": record.levelname.lower(),
                "request_id": record.request_id,
                "connection": record.connection,
                "method": record.method,
                "path": record.path,
                "status": record.status,
                "duration_ms": record.duration_ms,
            },
            ensure_ascii=False,
        )


def _escaped(text):
    # A path like /a%0aforged decodes to a newline, which would start a line
    # of the sender's choosing in a text log.
    return json.dumps(text, ensure_ascii=False)[1:-1]


def log_format(value):
    """Return LOG_FORMAT as "text" or "json", or raise ValueError."""
    chosen = str(value or "text").strip().lower()
    if chosen not in LOG_FORMATS:
        raise ValueError(f"MDM_LOG_FORMAT must be text or json, not {value!r}.")
    return chosen


class _StderrHandler(logging.StreamHandler):
    """Write to sys.stderr as it is at each record (a test runner replaces it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


_handler = None


def _configure_log(chosen):
    """Send the request log to stderr in the chosen format (once per process)."""
    global _handler
    if _handler is None:
        _handler = _StderrHandler()
        log.addHandler(_handler)
        log.setLevel(logging.INFO)
        # Its own handler: the request log stays out of whatever the root
        # logger (or an embedding WSGI server) prints.
        log.propagate = False
    _handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())


def init_app(app):
    """Give every request an id and a log line; register the probes (see answer_probe)."""
    _configure_log(app.config["LOG_FORMAT"])
    app.before_request(_start)
    # The first after_request hook registered runs last, once the response is final.
    app.after_request(_finish)
    app.register_blueprint(bp)
