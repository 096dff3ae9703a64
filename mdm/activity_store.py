"""The activity and audit tables, and the background writer that fills them.

SCIM requests must never wait on logging, so a request only queues its row;
one background thread per process inserts batches and prunes by age and
size. On SQLite the tables live in ``activity.sqlite`` (its own file, hence
its own write lock); on PostgreSQL in the main database, through a pool of
their own.
"""

import atexit
import collections
import functools
import logging
import threading
import time
from datetime import timedelta

from flask import current_app
from peewee import EXCLUDED
from peewee import SQL
from peewee import BooleanField
from peewee import Case
from peewee import DatabaseProxy
from peewee import DateTimeField
from peewee import FloatField
from peewee import IntegerField
from peewee import NodeList
from peewee import TextField
from peewee import Value
from peewee import fn
from playhouse.pool import PooledSqliteDatabase

from .db import close_pool
from .db import connect_database
from .db import lock_for_migration
from .db import postgres
from .db import schema_version
from .db import set_schema_version
from .db import try_lock_for_pruning
from .models import utcnow

PRAGMAS = {"journal_mode": "wal", "busy_timeout": 15000, "synchronous": "normal"}
# Unopened until ``bind``; closing it is harmless.
activity_db = DatabaseProxy()
activity_db.initialize(PooledSqliteDatabase(None, pragmas=PRAGMAS))
# 2: the refusal table (requests without a valid token, counted);
# 3: Bulk operations as rows of their own; 4: each row's request id;
# 5: an index per console filter in time order, mapping issues, and counts
#    per ten minutes for the dashboard.
SCHEMA_VERSION = 6


class ActivityEntry(activity_db.Model):
    """One SCIM request as the identity provider sent it and as it was answered."""

    time = DateTimeField(default=utcnow)
    idp = TextField(null=True)
    token_key = TextField(null=True)
    client_address = TextField(null=True)
    user_agent = TextField(null=True)
    method = TextField()
    path = TextField()
    query = TextField(default="")
    resource_type = TextField(null=True)
    resource_id = TextField(null=True)
    target = TextField(null=True)
    summary = TextField(default="")
    status = IntegerField()
    scim_type = TextField(null=True)
    detail = TextField(null=True)
    duration_ms = FloatField(default=0)
    request_body = TextField(null=True)
    response_body = TextField(null=True)
    # One operation of a /Bulk request, recorded beside the HTTP request that
    # carried it; counts of requests leave these out (schema 3).
    operation = BooleanField(default=False)
    # The X-Request-Id the response carried, which a proxy's log may share (schema 4).
    request_id = TextField(null=True)

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


class Refusal(activity_db.Model):
    """SCIM requests without a valid token, counted per bucket, never logged one by one."""

    # Anyone on the internet can send these (most are refused with 401), so
    # they get a bounded number of small rows of their own and can never push
    # provisioning history out.

    bucket = DateTimeField(index=True)
    status = IntegerField()
    reason = TextField()
    idp = TextField(default="")
    token_key = TextField(default="")
    client_address = TextField(default="")
    requests = IntegerField(default=0)
    last_time = DateTimeField(index=True)
    user_agent = TextField(null=True)
    method = TextField(default="")
    path = TextField(default="")

    class Meta:
        table_name = "refusal"
        indexes = (
            (
                ("bucket", "status", "reason", "idp", "token_key", "client_address"),
                True,
            ),
        )


class MappingIssue(activity_db.Model):
    """An attribute a connection sends that mdm ignores: how often, and when last."""

    idp = TextField()
    resource_type = TextField()
    attribute = TextField()
    requests = IntegerField(default=0)
    first_seen = DateTimeField()
    last_seen = DateTimeField()

    class Meta:
        table_name = "mapping_issue"
        indexes = ((("idp", "resource_type", "attribute"), True),)


# Every list of activity is newest first (time, then id). Each console filter
# has an index that leads with its column and goes on in that order, so a
# page reads its 50 rows off the index whatever the size of the log.
# The unfiltered list's index also carries what the dashboard counts per hour
# and per connection, so those counts read the index alone.
ActivityEntry.add_index(
    ActivityEntry.time,
    ActivityEntry.id,
    ActivityEntry.operation,
    ActivityEntry.status,
    ActivityEntry.idp,
    name="activity_time_id",
)
FILTERED_COLUMNS = ("idp", "resource_type", "resource_id", "method")
for _name in FILTERED_COLUMNS:
    ActivityEntry.add_index(
        ActivityEntry._meta.fields[_name],
        ActivityEntry.time,
        ActivityEntry.id,
        name=f"activity_{_name}_time_id",
    )
# Rows of no connection are few. PostgreSQL reads "idp IS NULL" off the idp
# index but not in its order, so they get an index of their own.
ActivityEntry.add_index(
    ActivityEntry.time,
    ActivityEntry.id,
    name="activity_no_idp_time_id",
    where=ActivityEntry.idp.is_null(),
)
# Failures are few: the dashboard's last error of each connection, and the
# 4xx and 5xx filters, find them here instead of among the successes. The
# condition is SQL text so that it matches a query's own literal condition.
FAILED_TEXT = "status >= 400"
FAILED = SQL(FAILED_TEXT)
ActivityEntry.add_index(
    ActivityEntry.idp,
    ActivityEntry.time,
    ActivityEntry.id,
    name="activity_failed_idp_time_id",
    where=FAILED,
)


def outcome_condition(floor):
    """Return the condition for statuses ``floor`` to ``floor`` + 99, as the indexes below match it."""
    # SQL text, not a bound range: SQLite uses a partial index only when the
    # query repeats its condition term for term. A failure range carries
    # FAILED's term too, so that a connection's failures read its index.
    text = _status_range(floor)
    return SQL(f"{FAILED_TEXT} AND {text}" if floor >= 400 else text)


def _status_range(floor):
    return f"status >= {floor} AND status < {floor + 100}"


# The 4xx and 5xx filters read their few rows newest first from these. A
# range of statuses is not in time order on an index by status, so such an
# index sorted every match, and it tempted planners into sorting the 2xx
# filter's millions; the 2xx filter walks the time index instead.
for _floor in (400, 500):
    ActivityEntry.add_index(
        ActivityEntry.time,
        ActivityEntry.id,
        name=f"activity_{_floor // 100}xx_time_id",
        where=SQL(_status_range(_floor)),
    )


class ActivityCount(activity_db.Model):
    """Activity rows counted per ten minutes, connection, kind and outcome: the dashboard's figures."""

    # Kept by the writer in the transaction that inserts the rows, and
    # lowered by prune as it deletes them, so it always counts the rows the
    # log holds. Rows of no connection count under "": NULLs never conflict
    # in a unique index, so an upsert could not find their row.

    bucket = DateTimeField()
    idp = TextField(default="")
    operation = BooleanField()
    failed = BooleanField()
    requests = IntegerField(default=0)

    class Meta:
        table_name = "activity_count"
        indexes = ((("bucket", "idp", "operation", "failed"), True),)


COUNT_BUCKET_MINUTES = 10


def count_bucket(when):
    """Return the start of the ten-minute bucket ``when`` is counted in."""
    return when.replace(
        minute=when.minute - when.minute % COUNT_BUCKET_MINUTES,
        second=0,
        microsecond=0,
    )


def bucket_ceiling(when):
    """Return the first bucket start at or after ``when``."""
    start = count_bucket(when)
    return start if start == when else start + timedelta(minutes=COUNT_BUCKET_MINUTES)


def _bucket_sql(column):
    """Return SQL for the start of the ten-minute bucket of a time column."""
    if postgres(activity_db):
        return NodeList(
            (
                SQL("date_trunc('hour',"),
                column,
                SQL(") + floor(date_part('minute',"),
                column,
                SQL(
                    f") / {COUNT_BUCKET_MINUTES}) * interval '{COUNT_BUCKET_MINUTES} minutes'"
                ),
            )
        )
    # SQLite stores times as text, "YYYY-MM-DD HH:MM:SS.ffffff".
    return fn.substr(column, 1, 15).concat("0:00")


COUNT_KEY = [
    ActivityCount.bucket,
    ActivityCount.idp,
    ActivityCount.operation,
    ActivityCount.failed,
]


def _add_counts(counts):
    """Add {(bucket, idp, operation, failed): n} to the rollup, in key order."""
    # Key order: two processes adding to the same rows on PostgreSQL lock
    # them in the same order and never deadlock.
    rows = [
        {"bucket": b, "idp": i, "operation": o, "failed": f, "requests": n}
        for (b, i, o, f), n in sorted(counts.items())
    ]
    for start in range(0, len(rows), ROWS_PER_INSERT):
        (
            ActivityCount.insert_many(rows[start : start + ROWS_PER_INSERT])
            .on_conflict(
                conflict_target=COUNT_KEY,
                update={
                    ActivityCount.requests: ActivityCount.requests + EXCLUDED.requests
                },
            )
            .execute()
        )


def _count_entries(condition, sign=1):
    """Add (sign -1: take away) the counts of the entries matching ``condition``, in one statement."""
    bucket = _bucket_sql(ActivityEntry.time)
    idp = fn.COALESCE(ActivityEntry.idp, "")
    failed = Case(None, [(ActivityEntry.status >= 400, True)], False)
    query = (
        ActivityEntry.select(
            bucket, idp, ActivityEntry.operation, failed, fn.COUNT(1) * sign
        )
        .where(condition)
        .group_by(bucket, idp, ActivityEntry.operation, failed)
    )
    if postgres(activity_db):
        # Rows locked in the writer's key order (_add_counts sorts in Python,
        # by code point: collation "C"), so a prune under a flood and another
        # process's batch never deadlock on the newest buckets.
        query = query.order_by(
            bucket,
            NodeList((idp, SQL('COLLATE "C"'))),
            ActivityEntry.operation,
            failed,
        )
    (
        ActivityCount.insert_from(query, COUNT_KEY + [ActivityCount.requests])
        .on_conflict(
            conflict_target=COUNT_KEY,
            update={ActivityCount.requests: ActivityCount.requests + EXCLUDED.requests},
        )
        .execute()
    )


def recount():
    """Count every activity row into the rollup afresh (upgrade, rows inserted by hand)."""
    with activity_db.connection_context(), activity_db.atomic():
        ActivityCount.delete().execute()
        _count_entries(SQL("1 = 1"))


# The single-column indexes of schema 4, which the ones above replace.
REPLACED_INDEXES = (
    "activity_time",
    "activity_idp",
    "activity_resource_type",
    "activity_resource_id",
    "activity_status",
    # Schema 5's index by status, which the 4xx and 5xx indexes replace.
    "activity_status_time_id",
)

ACTIVITY_MODELS = [ActivityEntry, AuditEvent, Refusal, MappingIssue, ActivityCount]
# Distinct ignored attributes kept at most: an IdP inventing names cannot
# grow the table, or the writer's memory, without bound.
MAPPING_ISSUES_MAX = 500

# Refusals are counted per ten minutes; within one bucket, at most this many
# (status, reason, connection, token key, address) rows are kept apart, and the
# rest are folded into one row per status, reason and connection with the
# address "*".
REFUSAL_BUCKET_MINUTES = 10
REFUSAL_ROWS_PER_BUCKET = 20
# Distinct refusals held in memory between two writes, folded beyond that.
REFUSAL_PENDING = 1000
FOLDED = "*"
# The reasons (mdm.scim.auth.refusal; OAuthClient.authenticate for access
# tokens, keyed by their client_id) under which the key is one this server holds.
HELD_TOKEN = (
    "expired token",
    "inactive token",
    "wrong secret",
    "expired access token",
    "revoked access token",
    "inactive client",
    "expired client",
    "wrong client secret",
)
# Refusal rows kept at most, newest first, whatever their age.
REFUSAL_MAX_ROWS = 10000


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
    "operation",
    "request_id",
)

TIME, IDP, STATUS, OPERATION = (
    ENTRY_COLUMNS.index(name) for name in ("time", "idp", "status", "operation")
)


# The most characters each text column of an activity row keeps, in
# ENTRY_COLUMNS order (None: not text). Bodies arrive truncated to 16 KiB
# (mdm.activity.MAX_BODY) with a note of the full length; the rest are cut
# here, so no row holds more than ENTRY_MAX_CHARS characters of text, and the
# table at most ACTIVITY_MAX_ROWS such rows.
BODY_CHARS = 16 * 1024 + 64
COLUMN_CHARS = (
    None,  # time
    64,  # idp
    64,  # token_key
    64,  # client_address
    512,  # user_agent
    16,  # method
    2048,  # path
    2048,  # query
    32,  # resource_type
    256,  # resource_id
    512,  # target
    1024,  # summary
    None,  # status
    64,  # scim_type
    2048,  # detail
    None,  # duration_ms
    BODY_CHARS,  # request_body
    BODY_CHARS,  # response_body
    None,  # operation
    128,  # request_id
)
ENTRY_MAX_CHARS = sum(n for n in COLUMN_CHARS if n)
# Audit details are written by this server, but may quote what an admin typed.
AUDIT_DETAILS_CHARS = 4096


#
# The buffered writer
#


class Writer:
    """Insert queued rows in batches from one background thread."""

    # A request only appends to a deque, and the thread is woken once per
    # batch rather than once per row, so a request never waits on the thread.

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
        self.refusals = {}
        self.ignored = {}
        self._last_prune = 0.0
        self._since_prune = 0

    def start(self):
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="mdm-activity", daemon=True
                )
                self.thread.start()

    def put(self, model, row):
        """Queue ``row``: a dict of ``model``'s fields, or an ActivityEntry tuple in ENTRY_COLUMNS order."""
        if len(self.pending) >= self.MAX_PENDING:
            # Never block provisioning: drop the record and count it.
            self.dropped += 1
            return
        self.pending.append((model, row))
        if not self.wake.is_set():
            self.wake.set()

    def refuse(
        self, when, status, reason, idp, token_key, address, user_agent, method, path
    ):
        """Count one request sent without a valid token; no row of its own."""
        bucket = when.replace(
            minute=when.minute - when.minute % REFUSAL_BUCKET_MINUTES,
            second=0,
            microsecond=0,
        )
        key = (bucket, status, reason, idp or "", token_key or "", address or "")
        with self.lock:
            counted = self.refusals.get(key)
            if counted is None and len(self.refusals) >= REFUSAL_PENDING:
                key = fold(key)
                counted = self.refusals.get(key)
            if counted is None:
                self.refusals[key] = [1, when, user_agent, method, path]
            else:
                counted[0] += 1
                counted[1:] = when, user_agent, method, path
        if not self.wake.is_set():
            self.wake.set()

    def ignore(self, when, idp, names):
        """Count the (resource type, attribute) ``names`` one request of ``idp`` sent in vain."""
        with self.lock:
            for resource_type, attribute in names:
                key = (idp or "", resource_type, attribute)
                counted = self.ignored.get(key)
                if counted is not None:
                    counted[0] += 1
                    counted[1] = when
                elif len(self.ignored) < MAPPING_ISSUES_MAX:
                    self.ignored[key] = [1, when]

    def _take_ignored(self):
        with self.lock:
            taken, self.ignored = self.ignored, {}
        return taken

    def _take_refusals(self):
        with self.lock:
            taken, self.refusals = self.refusals, {}
        return taken

    def _run(self):
        while True:
            self.wake.wait()
            # Let a batch gather; a flush cuts the wait short.
            self.hurry.wait(self.GATHER_SECONDS)
            self.hurry.clear()
            # Cleared before draining: a row appended after the drain sets it again.
            self.wake.clear()
            while self.pending or self.refusals or self.ignored:
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
        # Taken after the batch: a flush marker then follows every refusal
        # counted before it.
        refusals = self._take_refusals()
        ignored = self._take_ignored()
        # One INSERT takes rows of one shape: tuples, or dicts with the same keys.
        groups = {}
        for model, row in batch:
            if model is None:
                continue  # a flush marker
            if model is ActivityEntry and type(row) is not tuple:
                # Every entry goes the tuple way, so that it is counted.
                row = _entry_tuple(row)
            shape = None if type(row) is tuple else frozenset(row)
            groups.setdefault((model, shape), []).append(row)
        if not groups and not refusals and not ignored:
            return
        with activity_db.connection_context(), activity_db.atomic():
            if refusals:
                _count_refusals(refusals)
            if ignored:
                _count_ignored(ignored)
            for (model, shape), rows in groups.items():
                if shape is None:
                    self._since_prune += len(rows)
                    _insert_entries(model, rows)
                    continue
                rows = [
                    {k: _stored(v, AUDIT_DETAILS_CHARS) for k, v in row.items()}
                    for row in rows
                ]
                for start in range(0, len(rows), ROWS_PER_INSERT):
                    model.insert_many(rows[start : start + ROWS_PER_INSERT]).execute()
            # Every five minutes, and sooner under a flood: after a tenth of
            # the row cap, so the table never holds much more than the cap.
            if time.monotonic() - self._last_prune > 300 or self._since_prune >= max(
                1, self.max_rows // 10
            ):
                self._last_prune = time.monotonic()
                # Each process prunes on its own clock; one at a time is enough.
                if try_lock_for_pruning(activity_db):
                    self._since_prune = 0
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


def _entry_tuple(row):
    """Return an ActivityEntry dict as a tuple in ENTRY_COLUMNS order, defaults filled."""
    values = []
    for name in ENTRY_COLUMNS:
        if name in row:
            values.append(row[name])
            continue
        default = ActivityEntry._meta.fields[name].default
        values.append(default() if callable(default) else default)
    return tuple(values)


def _insert_entries(model, rows):
    """Insert ActivityEntry tuples, and count them, with a statement rendered once per row count."""
    # Rendering 100 rows of 18 columns took the request threads' interpreter
    # lock for longer than SQLite took to write them; so did converting each
    # value through two calls, which is why text is checked inline here.
    width = len(ENTRY_COLUMNS)
    columns = tuple(zip(COLUMN_CHARS, _entry_converters(model), strict=True))
    params = []
    append = params.append
    for row in rows:
        for value, (limit, convert) in zip(row, columns, strict=True):
            if value is None:
                pass
            elif limit and type(value) is str:
                # Text as it comes binds as it is (TextField converts nothing).
                if "\x00" in value or len(value) > limit:
                    value = _stored(value, limit)
            else:
                value = convert(_stored(value, limit))
            append(value)
    step = ROWS_PER_INSERT * width
    for start in range(0, len(params), step):
        chunk = params[start : start + step]
        sql = _entries_sql(type(activity_db.obj), model, len(chunk) // width)
        activity_db.execute_sql(sql, chunk)
    # Counted from the values as stored, so the counts match the rows.
    _add_counts(
        collections.Counter(
            (
                count_bucket(params[at + TIME]),
                params[at + IDP] or "",
                bool(params[at + OPERATION]),
                params[at + STATUS] >= 400,
            )
            for at in range(0, len(params), width)
        )
    )


@functools.cache
def _entry_converters(model):
    return tuple(model._meta.fields[name].db_value for name in ENTRY_COLUMNS)


@functools.lru_cache(maxsize=256)
def _entries_sql(engine, model, count):
    fields = [model._meta.fields[name] for name in ENTRY_COLUMNS]
    markers = [
        [f"\ufdd0{i}:{j}\ufdd0" for j in range(len(fields))] for i in range(count)
    ]
    # converter=False: each marker is bound as it stands, converted at run time.
    rows = [[Value(m, converter=False) for m in row] for row in markers]
    sql, params = model.insert_many(rows, fields=fields).sql()
    if params != [m for row in markers for m in row]:
        raise RuntimeError(f"Activity INSERT does not bind its markers in order: {sql}")
    return sql


def fold(key):
    """Return the row a refusal is counted in once its bucket has no room left."""
    bucket, status, reason, idp, token_key, _ = key
    # A key of a token this server holds stays apart: there are few of them,
    # and they are what tells an administrator which connection is failing.
    held = token_key if reason in HELD_TOKEN else ""
    return (bucket, status, reason, idp, held, FOLDED)


def _count_refusals(refusals):
    """Add counted refusals to their rows, at most REFUSAL_ROWS_PER_BUCKET apart per bucket."""
    room = {}
    merged = {}
    for key, counted in refusals.items():
        if key[-1] != FOLDED and not _has_row(key):
            bucket = key[0]
            if bucket not in room:
                room[bucket] = REFUSAL_ROWS_PER_BUCKET - (
                    Refusal.select()
                    .where(
                        (Refusal.bucket == bucket) & (Refusal.client_address != FOLDED)
                    )
                    .count()
                )
            if room[bucket] > 0:
                room[bucket] -= 1
            else:
                key = fold(key)
        if key in merged:
            merged[key][0] += counted[0]
            merged[key][1:] = counted[1:]
        else:
            merged[key] = list(counted)
    for key, (count, last, user_agent, method, path) in merged.items():
        bucket, status, reason, idp, token_key, address = key
        (
            Refusal.insert(
                bucket=bucket,
                status=status,
                reason=reason,
                idp=idp,
                token_key=token_key,
                client_address=address,
                requests=count,
                last_time=last,
                user_agent=_without_nul((user_agent or "")[:512] or None),
                method=_without_nul(method[:16]),
                path=_without_nul(path[:512]),
            )
            .on_conflict(
                conflict_target=[
                    Refusal.bucket,
                    Refusal.status,
                    Refusal.reason,
                    Refusal.idp,
                    Refusal.token_key,
                    Refusal.client_address,
                ],
                update={
                    Refusal.requests: Refusal.requests + EXCLUDED.requests,
                    Refusal.last_time: EXCLUDED.last_time,
                    Refusal.user_agent: EXCLUDED.user_agent,
                    Refusal.method: EXCLUDED.method,
                    Refusal.path: EXCLUDED.path,
                },
            )
            .execute()
        )


def _count_ignored(ignored):
    """Add counted ignored attributes to their rows, new ones while there is room."""
    room = MAPPING_ISSUES_MAX - MappingIssue.select().count()
    for (idp, resource_type, attribute), (count, last) in ignored.items():
        known = (
            MappingIssue.select(MappingIssue.id)
            .where(
                (MappingIssue.idp == idp)
                & (MappingIssue.resource_type == resource_type)
                & (MappingIssue.attribute == attribute)
            )
            .exists()
        )
        if not known:
            if room <= 0:
                continue
            room -= 1
        MappingIssue.insert(
            idp=_without_nul(idp),
            resource_type=resource_type,
            attribute=_without_nul(attribute),
            requests=count,
            first_seen=last,
            last_seen=last,
        ).on_conflict(
            conflict_target=[
                MappingIssue.idp,
                MappingIssue.resource_type,
                MappingIssue.attribute,
            ],
            update={
                MappingIssue.requests: MappingIssue.requests + EXCLUDED.requests,
                MappingIssue.last_seen: EXCLUDED.last_seen,
            },
        ).execute()


def _has_row(key):
    bucket, status, reason, idp, token_key, address = key
    return (
        Refusal.select(Refusal.id)
        .where(
            (Refusal.bucket == bucket)
            & (Refusal.status == status)
            & (Refusal.reason == reason)
            & (Refusal.idp == idp)
            & (Refusal.token_key == token_key)
            & (Refusal.client_address == address)
        )
        .exists()
    )


def _stored(value, limit):
    """Return a column value as stored: NUL escaped, text cut to ``limit`` characters."""
    value = _without_nul(value)
    if type(value) is str and limit and len(value) > limit:
        return value[:limit]
    return value


def _without_nul(value):
    if type(value) is str and "\x00" in value:
        # PostgreSQL refuses NUL in text; one such row must not sink its batch.
        return value.replace("\x00", "\\u0000")
    return value


# Rows per INSERT statement: 100 rows of ActivityEntry bind 2,000 parameters,
# well inside SQLite's 32,766 and PostgreSQL's 65,535.
ROWS_PER_INSERT = 100

writer = Writer()
atexit.register(writer.flush, 5)


def current_logger():
    try:
        return current_app.logger
    except RuntimeError:
        return logging.getLogger("mdm")


def prune(retention_days, max_rows):
    """Delete activity older than the retention period, then the oldest beyond max_rows."""
    cutoff = utcnow() - timedelta(days=retention_days)
    # The rollup counts what the log holds: the deleted rows leave it too.
    _count_entries(ActivityEntry.time < cutoff, -1)
    ActivityEntry.delete().where(ActivityEntry.time < cutoff).execute()
    AuditEvent.delete().where(AuditEvent.time < cutoff - timedelta(days=335)).execute()
    # How many rows the log holds comes from the rollup, which counts them:
    # finding the cut by skipping max_rows rows from the newest end read the
    # whole log (seconds at five million rows) every five minutes, to delete
    # nothing. From the oldest end it skips only the rows that go.
    held = ActivityCount.select(fn.SUM(ActivityCount.requests)).scalar() or 0
    if held > max_rows:
        newest_gone = (
            ActivityEntry.select(ActivityEntry.id)
            .order_by(ActivityEntry.id)
            .offset(held - max_rows - 1)
            .limit(1)
            .scalar()
        )
        if newest_gone is not None:
            _count_entries(ActivityEntry.id <= newest_gone, -1)
            ActivityEntry.delete().where(ActivityEntry.id <= newest_gone).execute()
    ActivityCount.delete().where(ActivityCount.requests <= 0).execute()
    Refusal.delete().where(Refusal.last_time < cutoff).execute()
    newest_kept = (
        Refusal.select(Refusal.id)
        .order_by(Refusal.id.desc())
        .offset(REFUSAL_MAX_ROWS)
        .limit(1)
        .scalar()
    )
    if newest_kept is not None:
        Refusal.delete().where(Refusal.id <= newest_kept).execute()


def bind(target):
    """Point the activity database at a SQLite path or PostgreSQL URL and create its tables."""
    close_pool(activity_db)
    activity_db.initialize(
        connect_database(target, pragmas=PRAGMAS, max_connections=32)
    )
    with activity_db.connection_context(), activity_db.atomic():
        lock_for_migration(activity_db)
        schema_version(activity_db, "activity")
        # Columns first: the new indexes name columns an old table lacks.
        if activity_db.table_exists("activity"):
            _add_missing_columns()
        backfill = not activity_db.table_exists("activity_count")
        activity_db.create_tables(ACTIVITY_MODELS, safe=True)
        if backfill:
            _count_entries(SQL("1 = 1"))
        for name in REPLACED_INDEXES:
            activity_db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
        set_schema_version(activity_db, "activity", SCHEMA_VERSION)


def _add_missing_columns():
    """Add columns that later schema versions gave to an older activity table."""
    from playhouse.migrate import PostgresqlMigrator
    from playhouse.migrate import SqliteMigrator
    from playhouse.migrate import migrate as run

    columns = {c.name for c in activity_db.get_columns("activity")}
    migrator = (PostgresqlMigrator if postgres(activity_db) else SqliteMigrator)(
        activity_db.obj
    )
    if "operation" not in columns:
        run(migrator.add_column("activity", "operation", BooleanField(default=False)))
    if "request_id" not in columns:
        run(migrator.add_column("activity", "request_id", TextField(null=True)))
