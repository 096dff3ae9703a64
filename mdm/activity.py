"""Provisioning activity and audit trail: separate tables fed by a buffered writer.

SCIM requests must never wait on logging, so each request only appends a
dict to a queue; one background thread per process inserts batches and
prunes by age and size. On SQLite the tables live in ``activity.sqlite``
(its own file, hence its own write lock); on PostgreSQL in the main
database, through a pool of their own.
"""

import atexit
import collections
import functools
import json
import re
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

from flask import current_app
from flask import g
from flask import request
from peewee import DatabaseProxy
from peewee import DateTimeField
from peewee import Field
from peewee import FloatField
from peewee import IntegerField
from peewee import TextField
from playhouse.pool import PooledSqliteDatabase
from werkzeug.exceptions import HTTPException

from .db import connect_database
from .db import is_url
from .db import schema_version
from .db import set_schema_version
from .db import stored_type
from .db import try_lock_for_pruning
from .models import utcnow

PRAGMAS = {"journal_mode": "wal", "busy_timeout": 15000, "synchronous": "normal"}
_sqlite = PooledSqliteDatabase(
    None,
    pragmas=PRAGMAS,
    max_connections=32,
    stale_timeout=300,
    check_same_thread=False,
)
activity_db = DatabaseProxy()
activity_db.initialize(_sqlite)

MAX_BODY = 16 * 1024
REDACTED = "[redacted]"
SECRET_WORDS = ("password", "secret", "token", "authorization", "credential")
SECRET_KEYS = re.compile("|".join(SECRET_WORDS), re.I)
SCHEMA_VERSION = 1


class ActivityEntry(activity_db.Model):
    """One SCIM request as the identity provider sent it and as it was answered."""

    time = DateTimeField(default=utcnow, index=True)
    idp = TextField(null=True, index=True)
    token_key = TextField(null=True)
    client_address = TextField(null=True)
    user_agent = TextField(null=True)
    method = TextField()
    path = TextField()
    query = TextField(default="")
    resource_type = TextField(null=True, index=True)
    resource_id = TextField(null=True, index=True)
    target = TextField(null=True)
    summary = TextField(default="")
    status = IntegerField(index=True)
    scim_type = TextField(null=True)
    detail = TextField(null=True)
    duration_ms = FloatField(default=0)
    request_body = TextField(null=True)
    response_body = TextField(null=True)

    class Meta:
        table_name = "activity"

    @property
    def outcome(self):
        return f"{self.status // 100}xx"


class AuditEvent(activity_db.Model):
    """An administrative event: token changes, sign-ins, purges, settings."""

    time = DateTimeField(default=utcnow, index=True)
    event = TextField(index=True)
    actor = TextField(default="")
    address = TextField(null=True)
    details = TextField(default="")

    class Meta:
        table_name = "audit_event"


ACTIVITY_MODELS = [ActivityEntry, AuditEvent]


#
# Redaction
#


def redact(value):
    """Return ``value`` with every secret-looking field replaced (recursively)."""
    if isinstance(value, dict):
        cleaned = {}
        for key, item in value.items():
            if isinstance(key, str) and SECRET_KEYS.search(key):
                cleaned[key] = REDACTED
            else:
                cleaned[key] = redact(item)
        # A PATCH operation whose path names a secret carries it in "value".
        path = next(
            (v for k, v in value.items() if isinstance(k, str) and k.lower() == "path"),
            None,
        )
        if isinstance(path, str) and SECRET_KEYS.search(path):
            for key in cleaned:
                if key.lower() == "value":
                    cleaned[key] = REDACTED
        return cleaned
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def body_text(raw):
    """Return a redacted, truncated text form of a request or response body.

    Bodies are parsed only when they mention a secret-looking key: parsing
    and re-serialising every list response cost provisioning ~15% throughput.
    """
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"[{len(raw)} bytes, not UTF-8]"
    if not mentions_secret(text):
        return _truncate(text)
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        # Not JSON, yet it mentions a secret: keep nothing of it.
        return "[unparsed body withheld: it may contain a secret]"
    try:
        return _truncate(json.dumps(redact(parsed), ensure_ascii=False))
    except RecursionError:
        return "[body nested too deeply to redact: withheld]"


def mentions_secret(text):
    """Tell whether ``text`` contains a secret-looking word, exactly as SECRET_KEYS finds one."""
    if text.isascii():
        # The regex takes ~100 ns a character ignoring case; for ASCII text,
        # ignoring case is lower-casing, and substring search is far faster.
        lowered = text.lower()
        return any(word in lowered for word in SECRET_WORDS)
    return SECRET_KEYS.search(text) is not None


def pretty(text):
    """Indent a stored JSON body for display; leave anything else as it is."""
    if not text or text[0] not in "{[" or text.endswith("characters in all]"):
        return text
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, indent=1)
    except (ValueError, RecursionError):
        return text


def _truncate(text):
    if len(text) <= MAX_BODY:
        return text
    return text[:MAX_BODY] + f"\n… [truncated, {len(text)} characters in all]"


#
# The buffered writer
#


class Writer:
    """Insert queued rows in batches from one background thread.

    A request only appends to a deque. The thread is woken once per batch,
    not once per row: with queue.Queue every put woke it, and that hand-off of
    the GIL cost each SCIM request about as much as the rest of its logging.
    """

    MAX_PENDING = 50000
    BATCH = 500
    GATHER_SECONDS = 0.2

    def __init__(self):
        self.pending = collections.deque()
        self.wake = threading.Event()
        self.hurry = threading.Event()
        self.thread = None
        self.lock = threading.Lock()
        self.retention_days = 30
        self.max_rows = 500000
        self.dropped = 0
        self._last_prune = 0.0

    def start(self):
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="mdm-activity", daemon=True
                )
                self.thread.start()

    def put(self, model, row):
        if len(self.pending) >= self.MAX_PENDING:
            # Never block provisioning: drop the record and count it.
            self.dropped += 1
            return
        self.pending.append((model, row))
        if not self.wake.is_set():
            self.wake.set()

    def _run(self):
        while True:
            self.wake.wait()
            # Let a batch gather; a flush cuts the wait short.
            self.hurry.wait(self.GATHER_SECONDS)
            self.hurry.clear()
            # Cleared before draining: a row appended after the drain sets it again.
            self.wake.clear()
            while self.pending:
                batch = []
                while self.pending and len(batch) < self.BATCH:
                    batch.append(self.pending.popleft())
                self._write(batch)

    def _write(self, batch):
        try:
            self._insert(batch)
        except Exception:  # noqa: BLE001 - the writer must outlive any bad row
            current_logger().exception("Could not record %d activity rows", len(batch))
        finally:
            for model, row in batch:
                if model is None:
                    row.set()  # a flush marker: everything before it is written

    def _insert(self, batch):
        rows = {}
        for model, row in batch:
            if model is None:
                continue  # a flush marker
            rows.setdefault(model, []).append(row)
        if not rows:
            return
        with activity_db.connection_context(), activity_db.atomic():
            cursor = activity_db.cursor()
            for model, items in rows.items():
                # Multi-row INSERTs with the fields' own conversions: the ORM's
                # insert_many spent ~0.1 ms a row building its SQL, and
                # executemany stepped (and handed the GIL to the request threads
                # and back) once a row; this steps once per ROWS_PER_INSERT rows.
                fields = tuple(
                    f for f in model._meta.sorted_fields if not f.primary_key
                )
                plan = [_column_plan(f) for f in fields]
                for start in range(0, len(items), ROWS_PER_INSERT):
                    chunk = items[start : start + ROWS_PER_INSERT]
                    cursor.execute(
                        _insert_sql(model, fields, len(chunk), activity_db.param),
                        _row_values(plan, chunk),
                    )
            if time.monotonic() - self._last_prune > 300:
                self._last_prune = time.monotonic()
                # Each process prunes on its own clock; one at a time is enough.
                if try_lock_for_pruning(activity_db):
                    prune(self.retention_days, self.max_rows)

    def flush(self, timeout=10):
        """Wait until everything queued so far is written (tests, shutdown)."""
        if self.thread is None:
            return
        done = threading.Event()
        self.pending.append((None, done))
        self.hurry.set()
        self.wake.set()
        done.wait(timeout)


def _column_plan(field):
    """Return (name, db_value, whether db_value is peewee's own, type it keeps, default)."""
    # peewee's own db_value returns None, and values of stored_type, unchanged.
    plain = type(field).db_value is Field.db_value
    return field.name, field.db_value, plain, stored_type(field), field.default


def _row_values(plan, rows):
    """Return the parameters of ``rows``, column by column as ``plan`` converts them."""
    values = []
    append = values.append
    for row in rows:
        if type(row) is tuple:
            # A request's own record, already in column order and type.
            if any(type(value) is str and "\x00" in value for value in row):
                row = tuple(_without_nul(value) for value in row)
            values.extend(row)
            continue
        for name, convert, plain, kept, default in plan:
            if name not in row:
                append(convert(default() if callable(default) else default))
                continue
            value = _without_nul(row[name])
            if plain and (value is None or type(value) is kept):
                append(value)  # what convert would return, without the call
            else:
                append(convert(value))
    return values


def _without_nul(value):
    if type(value) is str and "\x00" in value:
        # PostgreSQL refuses NUL in text; one such row must not sink its batch.
        return value.replace("\x00", "\\u0000")
    return value


# Rows per INSERT statement: 100 rows of ActivityEntry bind 1,800 parameters,
# well inside SQLite's 32,766 and PostgreSQL's 65,535.
ROWS_PER_INSERT = 100


@functools.lru_cache(maxsize=64)
def _insert_sql(model, fields, rows, param):
    columns = ", ".join(f'"{field.column_name}"' for field in fields)
    marks = ", ".join(param for _ in fields)  # ? or %s by engine
    values = ", ".join([f"({marks})"] * rows)
    return f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES {values}'


writer = Writer()
atexit.register(writer.flush, 5)


def current_logger():
    try:
        return current_app.logger
    except RuntimeError:
        import logging

        return logging.getLogger("mdm")


def prune(retention_days, max_rows):
    """Delete activity older than the retention period, then the oldest beyond max_rows."""
    cutoff = utcnow() - timedelta(days=retention_days)
    ActivityEntry.delete().where(ActivityEntry.time < cutoff).execute()
    AuditEvent.delete().where(AuditEvent.time < cutoff - timedelta(days=335)).execute()
    newest_kept = (
        ActivityEntry.select(ActivityEntry.id)
        .order_by(ActivityEntry.id.desc())
        .offset(max_rows)
        .limit(1)
        .scalar()
    )
    if newest_kept is not None:
        ActivityEntry.delete().where(ActivityEntry.id <= newest_kept).execute()


#
# Recording
#


def audit(event, details="", actor=None, address=None):
    """Queue an audit event such as "SCIM Token Created"."""
    if actor is None:
        try:
            from flask_login import current_user

            actor = current_user.username if current_user.is_authenticated else ""
        except (RuntimeError, AttributeError):
            actor = ""
    if address is None:
        try:
            address = request.remote_addr
        except RuntimeError:
            address = None
    writer.put(
        AuditEvent,
        {
            "time": utcnow(),
            "event": event,
            "actor": actor or "",
            "address": address,
            "details": details,
        },
    )


def note(summary=None, resource_type=None, resource_id=None, target=None):
    """Let a SCIM view describe what it did, for its activity record."""
    if summary is not None:
        g.activity_summary = summary
    if resource_type is not None:
        g.activity_resource_type = resource_type
    if resource_id is not None:
        g.activity_resource_id = resource_id
    if target is not None:
        g.activity_target = target


NOTES = (
    "activity_summary",
    "activity_resource_type",
    "activity_resource_id",
    "activity_target",
)


@contextmanager
def operation():
    """Collect the notes of one Bulk operation apart from its enclosing request's."""
    saved = {key: g.pop(key, None) for key in NOTES}
    noted = {}
    try:
        yield noted
    finally:
        for key in NOTES:
            noted[key] = g.pop(key, None)
            if saved[key] is not None:
                setattr(g, key, saved[key])


def record_operation(method, path, status, noted, body, response, duration):
    """Record one operation of a Bulk request as its own activity row (RFC 7644 §3.7)."""
    if not current_app.config.get("ACTIVITY_LOG", True):
        return
    resource_type, resource_id = _resource(path)
    error = response if status >= 400 and isinstance(response, dict) else {}
    summary = noted.get("activity_summary")
    writer.put(
        ActivityEntry,
        (  # in ENTRY_COLUMNS order
            utcnow(),
            *_client(request, g),
            method[:16],
            path[:2048],
            "",
            noted.get("activity_resource_type") or resource_type,
            noted.get("activity_resource_id") or resource_id,
            noted.get("activity_target") or None,
            f"Bulk: {summary}" if summary else "Bulk",
            status,
            error.get("scimType"),
            error.get("detail"),
            round(duration * 1000, 2),
            _json_text(body),
            _json_text(response),
        ),
    )


def _json_text(value):
    if value is None:
        return None
    return body_text(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def _client(req, notes):
    """Return who sent a SCIM request: (idp, token key, client address, user agent)."""
    token = notes.get("scim_token")
    return (
        token.idp if token is not None else None,
        token.key if token is not None else None,
        req.remote_addr,
        (req.environ.get("HTTP_USER_AGENT") or "")[:512] or None,
    )


def _start_timer():
    g.activity_started = time.perf_counter()


# The columns of a queued ActivityEntry tuple, in the model's field order
# (the writer binds a tuple as it stands; a test holds the two together).
ENTRY_COLUMNS = (
    "time",
    "idp",
    "token_key",
    "client_address",
    "user_agent",
    "method",
    "path",
    "query",
    "resource_type",
    "resource_id",
    "target",
    "summary",
    "status",
    "scim_type",
    "detail",
    "duration_ms",
    "request_body",
    "response_body",
)


# Where the SCIM API lives, told by mdm.scim when its blueprint is registered
# (see serve_api), so that this module imports nothing of the API.
_api_prefix = None
_is_api_path = None


def serve_api(prefix, is_api_path):
    """Record the requests for which ``is_api_path(path)``, an API mounted at ``prefix``."""
    global _api_prefix, _is_api_path
    _api_prefix, _is_api_path = prefix, is_api_path
    _known_resource.cache_clear()


def _record(response):
    """Queue the activity row of a SCIM request as it was sent and answered."""
    is_api_path = _is_api_path
    # The request and its notes once each: every use of a context proxy
    # looks the object up again.
    req = request._get_current_object()
    path = req.path
    if is_api_path is None or not is_api_path(path):
        return response
    notes = g._get_current_object()
    if not current_app.config.get("ACTIVITY_LOG", True):
        return response
    started = notes.get("activity_started")
    duration = round((time.perf_counter() - started) * 1000, 2) if started else 0.0
    status = response.status_code
    scim_type = detail = None
    response_raw = None
    if not response.is_streamed:
        response_raw = response.get_data()
        if status >= 400:
            try:
                error = json.loads(response_raw)
                scim_type = error.get("scimType")
                detail = error.get("detail")
            except (ValueError, AttributeError):
                pass
    resource_type, resource_id = _resource(path)
    # A tuple in ENTRY_COLUMNS order: a dict and its conversion to the
    # INSERT's parameters took a fifth of the record's time.
    writer.put(
        ActivityEntry,
        (
            utcnow(),
            *_client(req, notes),
            req.method,
            path[:2048],
            _query_text(req)[:2048] if req.environ.get("QUERY_STRING") else "",
            notes.get("activity_resource_type") or resource_type,
            notes.get("activity_resource_id") or resource_id,
            notes.get("activity_target") or None,
            notes.get("activity_summary") or "",
            status,
            scim_type,
            detail,
            duration,
            _request_body(req),
            body_text(response_raw),
        ),
    )
    return response


def _request_body(req):
    environ = req.environ
    # From the environ: werkzeug's content_length parses the header anew.
    if environ.get("CONTENT_LENGTH", "0") in ("", "0") and (
        "HTTP_TRANSFER_ENCODING" not in environ
    ):
        return None  # no body: spare building a stream to read nothing
    try:
        return body_text(req.get_data(cache=True))
    except HTTPException:
        # The body was refused (too large); the answer says so, keep nothing.
        return f"[body not read: {req.content_length or '?'} bytes]"


def _query_text(req):
    """Return the query string decoded for reading, secret-looking parameters redacted."""
    # request.args is parsed once per request, and the SCIM view read it already.
    return "&".join(
        f"{k}={REDACTED if SECRET_KEYS.search(k) else v}"
        for k, v in req.args.items(multi=True)
    )


def _resource(path):
    """Return the resource type and id a SCIM path names."""
    # Most paths repeat (/Users, a user polled again); long ones are not kept.
    return _known_resource(path) if len(path) <= 512 else _path_resource(path)


def _path_resource(path):
    parts = path[len(_api_prefix or "") :].strip("/").split("/")
    kind = {"users": "User", "groups": "Group"}.get(parts[0].lower()) if parts else None
    if kind is None:
        return ("Config" if parts and parts[0] else None), None
    if len(parts) > 1 and parts[1] and not parts[1].startswith("."):
        return kind, parts[1][:200]
    return kind, None


_known_resource = functools.lru_cache(maxsize=1024)(_path_resource)


def bind(target):
    """Point the activity database at a SQLite path or PostgreSQL URL and create its tables."""
    from .db import lock_for_migration

    current = activity_db.obj
    if current is not _sqlite or not _sqlite.deferred:
        current.close_all()
    activity_db.initialize(connect_database(target, _sqlite, max_connections=32))
    with activity_db.connection_context(), activity_db.atomic():
        lock_for_migration(activity_db)
        schema_version(activity_db, "activity")
        activity_db.create_tables(ACTIVITY_MODELS, safe=True)
        set_schema_version(activity_db, "activity", SCHEMA_VERSION)


def init_app(app):
    """Open the activity tables beside the directory and hook request recording."""
    import os

    path = app.config.get("ACTIVITY_DATABASE")
    if not path and is_url(app.config.get("DATABASE_URL") or ""):
        path = app.config["DATABASE_URL"]
    if not path:
        path = os.path.join(
            os.path.dirname(os.path.abspath(app.config["DATABASE"])), "activity.sqlite"
        )
    app.config["ACTIVITY_DATABASE"] = path
    writer.flush()
    bind(path)
    writer.retention_days = int(app.config.get("ACTIVITY_RETENTION_DAYS", 30))
    writer.max_rows = int(app.config.get("ACTIVITY_MAX_ROWS", 500000))
    writer.start()
    _record_operator_settings(app)
    app.before_request(_start_timer)
    app.after_request(_record)


OPERATOR_SETTINGS = ("SCIM_ENABLED",)


def _record_operator_settings(app):
    """Audit operator switches whose value differs from the last one recorded."""
    with activity_db.connection_context():
        for name in OPERATOR_SETTINGS:
            value = str(bool(app.config.get(name, True))).lower()
            last = (
                AuditEvent.select(AuditEvent.details)
                .where(
                    (AuditEvent.event == "Operator Setting Changed")
                    & AuditEvent.details.startswith(f"{name}=")
                )
                .order_by(AuditEvent.id.desc())
                .scalar()
            )
            previous = last.partition("=")[2] if last else "true"
            if previous != value:
                AuditEvent.create(
                    event="Operator Setting Changed",
                    actor="operator",
                    details=f"{name}={value}",
                )
