"""Benchmark mdm at a million users: build the directory, then time every page and filter.

The first --bulk-users are loaded through /Bulk by two clients (the load
figure); the rest, a group holding every user, a 10-member group and an
activity log of --activity-rows are seeded straight into the database
through the app's models (the API would take most of an hour on two cores).
Then the server is started on it and each console page and SCIM request is
timed warm, the median of five, and printed as a Markdown table with the
server's peak memory.

    .venv/bin/python bench/scale.py --users 1000000
    .venv/bin/python bench/scale.py --database-url postgresql://… --keep /tmp/big
    .venv/bin/python bench/scale.py --reuse /tmp/big

--keep DIR builds into DIR (and, on PostgreSQL, keeps the scratch schema);
--reuse DIR measures a directory built that way again, upgraded in place by
the server's own migration, so one build measures before and after a change.
"""

import argparse
import collections
import contextlib
import http.client
import io
import json
import multiprocessing
import os
import re
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.provision import PATCH_OP  # noqa: E402
from bench.provision import rss_mib  # noqa: E402
from bench.provision import scratch_schema  # noqa: E402
from bench.provision import start_server  # noqa: E402

ADMIN_USER = "bench"
ADMIN_PASSWORD = "bench-password-1234"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BIG_GROUP = "All Staff"
SMALL_GROUP = "Small Team"
META = "scale.json"
# Generous: a row that is slow today is printed, not aborted.
TIMEOUT = 900
# Users per transaction (and per COPY) when seeding directly.
SEED_CHUNK = 50000
# Activity rows per transaction (and per COPY).
ACTIVITY_CHUNK = 100000


def user_name(i):
    return f"user{i:07d}@contoso.com"


def user_data(i):
    """Return user ``i`` as an IdP sends it: a tenth disabled, 50 departments."""
    name = user_name(i)
    enterprise = {"department": f"Dept {i % 50}", "employeeNumber": str(i)}
    if i % 5 == 0:
        # A fifth in one of 10 cost centers: 20,000 users in each at 1,000,000.
        enterprise["costCenter"] = f"CC {i % 50}"
    return {
        "schemas": [USER, ENTERPRISE],
        "userName": name,
        "externalId": f"ext{i:07d}",
        "active": i % 10 != 0,
        "displayName": f"User {i}",
        "name": {"givenName": "User", "familyName": str(i)},
        "emails": [{"value": name, "type": "work", "primary": True}],
        ENTERPRISE: enterprise,
    }


#
# Building the directory
#


def open_app(instance, database_url):
    """Create the app in this process on the instance (its migrate runs), for seeding."""
    os.environ["MDM_INSTANCE_PATH"] = instance
    if database_url:
        os.environ["MDM_DATABASE_URL"] = database_url
    from mdm import create_app

    return create_app()


def is_postgres():
    from mdm.db import postgres

    return postgres()


def bulk_load(url, token, count, clients, batch):
    """Load users 0..count-1 through /Bulk from ``clients`` connections; return users/s."""
    starts = iter(range(0, count, batch))
    lock = threading.Lock()
    errors = []

    def work():
        conn = connection(url)
        while not errors:
            with lock:
                first = next(starts, None)
            if first is None:
                return
            operations = [
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": str(i),
                    "data": user_data(i),
                }
                for i in range(first, min(first + batch, count))
            ]
            status, payload, _ = send(
                conn,
                "POST",
                scim_path(url, "/Bulk"),
                {"schemas": [BULK_REQUEST], "Operations": operations},
                token=token,
            )
            results = json.loads(payload).get("Operations", []) if status == 200 else []
            if [r.get("status") for r in results] != ["201"] * len(operations):
                errors.append(f"Bulk batch failed: {status} {payload[:300]!r}")

    threads = [threading.Thread(target=work) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(errors[0])
    return count / seconds if seconds else 0.0


def seed_users(first, last):
    """Insert users first..last-1, built by worker processes, one transaction per chunk."""
    from mdm.models import User

    fields = [f for f in User._meta.sorted_fields if not f.primary_key]
    postgresql = is_postgres()
    chunks = [
        (i, min(i + SEED_CHUNK, last), postgresql)
        for i in range(first, last, SEED_CHUNK)
    ]
    # Spawned, not forked: this process holds database connections and threads.
    with multiprocessing.get_context("spawn").Pool(SEED_WORKERS) as pool:
        # At most a few chunks wait in memory while one is written.
        pending = collections.deque()
        for chunk in chunks:
            pending.append(pool.apply_async(user_rows, chunk))
            if len(pending) > SEED_WORKERS:
                insert_rows(User, fields, pending.popleft().get())
        while pending:
            insert_rows(User, fields, pending.popleft().get())


# Processes building users while this one writes them.
SEED_WORKERS = 2


def user_rows(first, last, postgresql):
    """Return users first..last-1 as a SCIM POST stores them, ready to write."""
    from mdm.models import User
    from mdm.models import mirror_user
    from mdm.scim import parse
    from mdm.scim import schema

    # Parsed as the API parses a POST, so the stored document is the same
    # (without the request's "schemas", which are not stored).
    user_type = schema.user_type()
    fields = [f for f in User._meta.sorted_fields if not f.primary_key]
    rows = []
    for i in range(first, last):
        user = User(source="entra")
        data, _ = parse.user(user_data(i), user_type, creating=True)
        mirror_user(user, data)
        rows.append([f.db_value(getattr(user, f.name)) for f in fields])
    if postgresql:
        return copy_text(rows)
    return [[sqlite_value(v) for v in row] for row in rows]


def insert_rows(model, fields, rows, db=None):
    """Insert COPY text or SQLite rows into ``model``'s table in one transaction."""
    from mdm.db import database

    db = database if db is None else db
    table = model._meta.table_name
    columns = ", ".join(f'"{f.column_name}"' for f in fields)
    with db.atomic():
        cursor = db.cursor()
        if isinstance(rows, str):
            # COPY: one stream per chunk; row triggers still fire.
            cursor.copy_expert(
                f'COPY "{table}" ({columns}) FROM STDIN', io.StringIO(rows)
            )
        else:
            marks = ", ".join("?" for _ in fields)
            cursor.executemany(
                f'INSERT INTO "{table}" ({columns}) VALUES ({marks})', rows
            )


def copy_text(rows):
    """Return rows as the text format of PostgreSQL's COPY."""
    lines = []
    for row in rows:
        values = []
        for value in row:
            if value is None:
                values.append("\\N")
            elif value is True or value is False:
                values.append("t" if value else "f")
            else:
                values.append(str(value).translate(COPY_ESCAPES))
        lines.append("\t".join(values))
    return "\n".join(lines) + "\n"


COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def sqlite_value(value):
    # As sqlite3's own datetime adapter writes it (deprecated in Python 3.12).
    return value.isoformat(" ") if hasattr(value, "isoformat") else value


def create_groups():
    """Create the big group and the small one, empty; return their SCIM ids."""
    from mdm.db import database
    from mdm.models import Group

    with database.atomic():
        big = Group.create(display_name=BIG_GROUP, source="entra")
        small = Group.create(display_name=SMALL_GROUP, source="entra")
    return big.scim_id, small.scim_id


def fill_groups(big_id, small_id):
    """Put every user in the big group and the first ten in the small one."""
    from peewee import Value

    from mdm.db import database
    from mdm.models import Group
    from mdm.models import Membership
    from mdm.models import User

    big = Group.get(Group.scim_id == big_id)
    small = Group.get(Group.scim_id == small_id)
    with database.atomic():
        # One statement, in the database.
        Membership.insert_from(
            User.select(Value(big.id), User.id).order_by(User.id),
            fields=[Membership.group, Membership.user],
        ).execute()
        Membership.insert_from(
            User.select(Value(small.id), User.id).order_by(User.id).limit(10),
            fields=[Membership.group, Membership.user],
        ).execute()


# (weight, method, path shape, resource type, status, summary) of the requests
# an Entra-like cycle sends; the seeded log draws from them in proportion.
TRAFFIC = (
    (40, "GET", "/scim/v2/Users", "User", 200, "Looked up users"),
    (6, "GET", "/scim/v2/Users/{id}", "User", 200, "Read user"),
    (3, "GET", "/scim/v2/Users/{id}", "User", 404, "User not found"),
    (10, "POST", "/scim/v2/Users", "User", 201, "Created user"),
    (1, "POST", "/scim/v2/Users", "User", 409, "userName taken"),
    (18, "PATCH", "/scim/v2/Users/{id}", "User", 200, "Updated user"),
    (1, "PATCH", "/scim/v2/Users/{id}", "User", 400, "Invalid patch"),
    (2, "DELETE", "/scim/v2/Users/{id}", "User", 204, "Deleted user"),
    (3, "GET", "/scim/v2/Groups", "Group", 200, "Looked up groups"),
    (10, "PATCH", "/scim/v2/Groups/{id}", "Group", 204, "Changed members"),
    (1, "POST", "/scim/v2/Groups", "Group", 201, "Created group"),
    (1, "POST", "/scim/v2/Bulk", "Bulk", 200, "Bulk request"),
    (3, "GET", "/scim/v2/ServiceProviderConfig", "Config", 200, ""),
    (1, "GET", "/scim/v2/Users", "User", 500, "Internal error"),
)
IDP_SHARE = (("entra", 14), ("okta", 4), ("generic", 1), (None, 1))


def activity_templates(user_ids, group_ids):
    """Return a few thousand ActivityEntry tuples (time left out) to cycle through."""
    from mdm.activity_store import ENTRY_COLUMNS

    traffic = [t for t in TRAFFIC for _ in range(t[0])]
    idps = [idp for idp, weight in IDP_SHARE for _ in range(weight)]
    templates = []
    for k in range(4000):
        _, method, path, kind, status, summary = traffic[(k * 7) % len(traffic)]
        idp = idps[(k * 3) % len(idps)]
        ids = group_ids if kind == "Group" else user_ids
        resource_id = ids[(k * 7919) % len(ids)] if "{id}" in path else None
        target = user_name(k) if kind == "User" else None
        query = f'filter=userName eq "{user_name(k)}"' if method == "GET" else ""
        request_body = response_body = None
        if method in ("POST", "PATCH"):
            request_body = json.dumps(user_data(k))
            if status < 300:
                response_body = json.dumps({"id": resource_id, **user_data(k)})
        row = dict(
            idp=idp,
            token_key=f"mdm_{idp}_k{k % 2}" if idp else None,
            client_address=f"10.0.{k % 4}.{k % 200}",
            user_agent="Azure AD SCIM Client" if idp == "entra" else "Okta SCIM",
            method=method,
            path=path.format(id=resource_id),
            query=query,
            resource_type=kind,
            resource_id=resource_id,
            target=target,
            summary=summary,
            status=status,
            scim_type="uniqueness" if status == 409 else None,
            detail="Not found" if status == 404 else None,
            duration_ms=1.5 + k % 40,
            request_body=request_body,
            response_body=response_body,
            operation=False,
            request_id=None,
        )
        templates.append([row[c] for c in ENTRY_COLUMNS[1:]])
    return templates


def activity_process(instance, database_url, rows, user_ids, group_ids, ready):
    """Seed the activity log in a process of its own; ``ready`` once the app is open."""
    open_app(instance, database_url)
    ready.set()
    started = time.perf_counter()
    seed_activity(rows, user_ids, group_ids)
    print(
        f"seeded {rows} activity rows in {time.perf_counter() - started:.1f} s",
        flush=True,
    )


def seed_activity(rows, user_ids, group_ids):
    """Insert ``rows`` activity entries spread over the last 30 days, oldest first."""
    from mdm.activity_store import ENTRY_COLUMNS
    from mdm.activity_store import ActivityEntry
    from mdm.activity_store import AuditEvent
    from mdm.activity_store import activity_db
    from mdm.activity_store import recount
    from mdm.models import utcnow

    templates = activity_templates(user_ids, group_ids)
    fields = [ActivityEntry._meta.fields[c] for c in ENTRY_COLUMNS]
    # An hour inside the retention period, so the first prune keeps them all.
    span = timedelta(days=30) - timedelta(hours=1)
    first = utcnow() - span
    step = span / max(rows, 1)
    postgresql = is_postgres()
    # Each template converted and escaped once; a row adds only its time.
    tails = [
        [f.db_value(v) for f, v in zip(fields[1:], t, strict=True)] for t in templates
    ]
    if postgresql:
        tails = [copy_text([t])[:-1] for t in tails]
    with activity_db.connection_context():
        for start in range(0, rows, ACTIVITY_CHUNK):
            ks = range(start, min(start + ACTIVITY_CHUNK, rows))
            if postgresql:
                chunk = "".join(
                    f"{first + step * k}\t{tails[k % len(tails)]}\n" for k in ks
                )
            else:
                chunk = [
                    (sqlite_value(first + step * k), *tails[k % len(tails)]) for k in ks
                ]
            insert_activity(ActivityEntry, fields, chunk)
        # A sign-in or token change for every thousand requests.
        audit_fields = [
            AuditEvent.time,
            AuditEvent.event,
            AuditEvent.actor,
            AuditEvent.address,
            AuditEvent.details,
        ]
        events = ("sign-in", "token created", "token renewed", "users purged")
        audit = [
            [first + step * k * 1000, events[k % 4], "admin", "10.0.0.1", f"#{k}"]
            for k in range(max(1, rows // 1000))
        ]
        if postgresql:
            audit = copy_text(audit)
        else:
            audit = [[sqlite_value(v) for v in row] for row in audit]
        insert_activity(AuditEvent, audit_fields, audit)
    # Rows inserted straight into the log bypass the writer, which keeps the
    # dashboard's counts.
    recount()


def insert_activity(model, fields, rows):
    """Insert COPY text or SQLite rows into an activity table in one transaction."""
    from mdm.activity_store import activity_db

    insert_rows(model, fields, rows, activity_db)


def directory_bytes(instance):
    """Return the bytes the directory takes (activity tables left out)."""
    from mdm.db import database

    if not is_postgres():
        return sqlite_bytes(os.path.join(instance, "mdm.sqlite"))
    with database.connection_context():
        return int(
            database.execute_sql(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " WHERE c.relnamespace = current_schema()::regnamespace"
                " AND c.relkind IN ('r', 'm')"
                " AND c.relname NOT IN ('activity', 'audit_event', 'refusal')"
            ).fetchone()[0]
        )


def activity_bytes(instance):
    """Return the bytes the activity table takes."""
    from mdm.activity_store import activity_db

    if not is_postgres():
        return sqlite_bytes(os.path.join(instance, "activity.sqlite"))
    with activity_db.connection_context():
        return activity_db.execute_sql(
            "SELECT pg_total_relation_size('activity')"
        ).fetchone()[0]


def sqlite_bytes(path):
    """Return the pages in use of a SQLite file, its write-ahead log folded in."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages, free, size = (
            conn.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("page_count", "freelist_count", "page_size")
        )
    finally:
        conn.close()
    return (pages - free) * size


def build(instance, database_url, args):
    """Build the directory; return what the measurement needs (saved as scale.json)."""
    from mdm.db import database
    from mdm.models import Admin
    from mdm.models import User

    started = time.perf_counter()
    open_app(instance, database_url)
    with database.connection_context():
        admin = Admin(username=ADMIN_USER)
        admin.set_password(ADMIN_PASSWORD)
        admin.save()
    bulk_users = min(args.bulk_users, args.users)
    server, url, token = start_server(instance, database_url=database_url)
    peak = Peak(server.pid)
    try:
        before = activity_bytes(instance)
        rate = bulk_load(url, token, bulk_users, args.clients, args.bulk_batch)
    finally:
        peak.stop()
        server.terminate()
        server.wait()
    # The server flushed its activity log as it stopped.
    per_op = (activity_bytes(instance) - before) / max(bulk_users, 1)
    print(f"/Bulk: {bulk_users} users at {rate:.0f} users/s, {args.clients} clients")

    seeded = time.perf_counter()
    with database.connection_context():
        big, small = create_groups()
        # The log names users that exist already (those /Bulk loaded).
        named = [
            s for (s,) in User.select(User.scim_id).order_by(User.id).limit(30).tuples()
        ] or [big]
    # The activity log has its own tables (on SQLite its own file and write
    # lock), so it is seeded by a process of its own while users are.
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    activity = context.Process(
        target=activity_process,
        args=(instance, database_url, args.activity_rows, named, [big, small], ready),
    )
    activity.start()
    ready.wait()
    with database.connection_context():
        seed_users(bulk_users, args.users)
        print(
            f"seeded {args.users - bulk_users} users in "
            f"{time.perf_counter() - seeded:.1f} s"
        )
        mark = time.perf_counter()
        fill_groups(big, small)
        print(f"filled the groups in {time.perf_counter() - mark:.1f} s")
        picks = [user_name(i) for i in sample_indexes(args.users)]
        ids = dict(
            User.select(User.user_name, User.scim_id)
            .where(User.user_name.in_(picks))
            .tuples()
        )
        sample = [ids[n] for n in picks]
    activity.join()
    if activity.exitcode:
        raise RuntimeError(f"seeding the activity log failed ({activity.exitcode})")
    print(f"seeded users and activity in {time.perf_counter() - seeded:.1f} s")
    if is_postgres():
        # As autovacuum would have by the time anyone looks: statistics, and
        # the visibility map that lets a deep OFFSET read the index alone.
        with database.connection_context():
            tables = database.execute_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchall()
            for (table,) in tables:
                database.execute_sql(f'VACUUM ANALYZE "{table}"')
    db_bytes = directory_bytes(instance)
    build_seconds = time.perf_counter() - started
    print(f"built in {build_seconds:.0f} s")
    return {
        "users": args.users,
        "bulk_users": bulk_users,
        "activity_rows": args.activity_rows,
        "database_url": database_url,
        "token": token,
        "big": big,
        "small": small,
        "sample": sample,
        "bulk_users_per_s": rate,
        "bulk_clients": args.clients,
        "bulk_peak_rss_mib": peak.value,
        "activity_bytes_per_bulk_op": per_op,
        "db_bytes_per_user": db_bytes / max(args.users, 1),
        "build_seconds": build_seconds,
    }


def sample_indexes(users):
    """Return the indexes of the users the measurement reads and changes."""
    return [(users * k) // 37 for k in range(1, 31)]


#
# Measuring
#


class Peak:
    """Sample a process's resident memory in the background; keep the peak."""

    def __init__(self, pid, interval=0.05):
        self.pid = pid
        self.value = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self.thread.start()

    def _run(self, interval):
        while not self.done.is_set():
            self.sample()
            self.done.wait(interval)

    def sample(self):
        with contextlib.suppress(OSError, StopIteration):
            self.value = max(self.value, rss_mib(self.pid))
        return self.value

    def stop(self):
        self.done.set()
        self.thread.join()


def connection(url):
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)


def scim_path(url, path):
    return urllib.parse.urlsplit(url).path.rstrip("/") + path


def send(conn, method, path, body=None, token=None, cookie=None):
    """Send one request; return (status, body bytes, seconds)."""
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
        headers["Content-Type"] = "application/scim+json"
    if cookie:
        headers["Cookie"] = cookie
    data = json.dumps(body) if body is not None else None
    started = time.perf_counter()
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    return response.status, payload, time.perf_counter() - started


def admin_cookie(conn):
    """Sign in to the console and return the session cookie header."""
    conn.request("GET", "/login")
    response = conn.getresponse()
    page = response.read().decode()
    cookie = response.getheader("Set-Cookie").split(";")[0]
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode(
        {"csrf_token": csrf, "username": ADMIN_USER, "password": ADMIN_PASSWORD}
    )
    conn.request(
        "POST",
        "/login",
        body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
    )
    response = conn.getresponse()
    response.read()
    if response.status != 302:
        raise RuntimeError(f"console sign-in answered {response.status}")
    return response.getheader("Set-Cookie").split(";")[0]


class Timer:
    """Time requests warm (one unreported first), the median of ``repeat``."""

    def __init__(self, url, token, cookie, repeat):
        self.url = url
        self.token = token
        self.cookie = cookie
        self.repeat = repeat
        self.rows = []

    def row(self, what, requests, expect=(200,), notes=""):
        """Time ``requests`` (callables conn -> (status, body, s)); add a table row."""
        conn = connection(self.url)
        times = []
        problems = []
        try:
            for k, request in enumerate(requests):
                status, payload, seconds = request(conn)
                if status not in expect:
                    problems.append(f"status {status}: {payload[:120]!r}")
                if k:  # the first warms up
                    times.append(seconds)
        except (OSError, http.client.HTTPException) as error:
            problems.append(f"failed: {error!r}")
        finally:
            conn.close()
        p50 = statistics.median(times) * 1000 if times else None
        shown = f"{p50:,.1f} ms" if p50 is not None else "—"
        note = "; ".join([n for n in (notes, *problems[:1]) if n])
        print(f"  {what:<64} {shown:>12}  {note}", flush=True)
        self.rows.append({"what": what, "p50_ms": p50, "notes": note})
        return payload if times else None

    def console(self, what, path, notes=""):
        def get(conn):
            return send(conn, "GET", path, cookie=self.cookie)

        return self.row(what, [get] * (self.repeat + 1), notes=notes)

    def scim(self, what, path, notes="", expect=(200,)):
        def get(conn):
            return send(conn, "GET", scim_path(self.url, path), token=self.token)

        payload = self.row(what, [get] * (self.repeat + 1), expect, notes)
        return payload

    def scim_each(self, what, paths, notes="", one=True):
        """Time a different lookup each time, each finding a user (``one``: exactly one)."""

        def job(conn, path):
            status, payload, seconds = send(
                conn, "GET", scim_path(self.url, path), token=self.token
            )
            found = json.loads(payload).get("totalResults") if status == 200 else 1
            if found == 0 or (one and found != 1):
                status = f"{found} results"  # a miss would time the wrong thing
            return status, payload, seconds

        jobs = [lambda conn, p=p: job(conn, p) for p in paths[: self.repeat + 1]]
        return self.row(what, jobs, notes=notes)


def scim_filter(expression, **params):
    query = urllib.parse.urlencode({"filter": expression, **params})
    return f"/Users?{query}"


def total_results(payload):
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return f"{json.loads(payload)['totalResults']:,} results"
    return ""


def measure(instance, meta, args):
    """Start the server on the built directory and time every row; return the rows."""
    os.environ["MDM_ACTIVITY_MAX_ROWS"] = str(
        max(500000, 2 * meta["activity_rows"] + 1000000)
    )
    # An upgrade builds indexes and fills the dashboard's rollup over the
    # whole activity log before the server listens.
    server, url, token = start_server(
        instance,
        database_url=meta["database_url"],
        token=meta["token"],
        start_timeout=1800,
    )
    peak = Peak(server.pid)
    try:
        conn = connection(url)
        cookie = admin_cookie(conn)
        conn.close()
        timer = Timer(url, token, cookie, args.repeat)
        rows_console(timer, meta)
        rows_scim(timer, meta, server, peak)
        rss_end = peak.sample()
    finally:
        peak.stop()
        server.terminate()
        server.wait()
    return timer.rows, max(peak.value, rss_end)


def rows_console(timer, meta):
    users = meta["users"]
    some = meta["sample"]
    print(f"console, {users:,} users, {meta['activity_rows']:,} activity rows:")
    timer.console("console dashboard", "/admin/")
    timer.console("console Users", "/admin/users")
    name = urllib.parse.quote(f"User {users // 3}")
    timer.console("console Users search (a name)", f"/admin/users?q={name}")
    timer.console("console Users search (no match)", "/admin/users?q=nobody-here-qx")
    timer.console(
        "console Users sorted by email, descending",
        "/admin/users?sort=email&order=desc",
    )
    timer.console(
        "console Users filtered to the big group",
        f"/admin/users?group={meta['big']}",
    )
    timer.console("console big group page", f"/admin/groups/{meta['big']}")
    timer.console("console User Groups", "/admin/groups")
    timer.console("console Users, disabled only", "/admin/users?status=disabled")
    timer.console("console a user's page", f"/admin/users/{some[3]}")
    timer.console("console activity", "/admin/activity")
    timer.console("console activity, idp", "/admin/activity?idp=okta")
    timer.console("console activity, status", "/admin/activity?outcome=4xx")
    timer.console("console activity, resource type", "/admin/activity?type=Group")
    timer.console("console activity, resource", f"/admin/activity?resource={some[5]}")
    timer.console("console activity, last 24 hours", "/admin/activity?range=24h")
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 10 * 86400))
    timer.console(
        "console activity, time range (one day)",
        f"/admin/activity?from={day}&to={day}",
    )
    timer.console("console audit", "/admin/audit")


def rows_scim(timer, meta, server, peak):
    users = meta["users"]
    print("SCIM:")
    i = users * 37 // 100
    for what, expression in (
        ('SCIM `emails.value co "…"`', f'emails.value co "{i:07d}@"'),
        (
            'SCIM `enterprise…:department eq "Dept 7" and active eq true`',
            f'{ENTERPRISE}:department eq "Dept 7" and active eq true',
        ),
        (
            'SCIM `enterprise…:department eq "Dept 7"`',
            f'{ENTERPRISE}:department eq "Dept 7"',
        ),
        (
            'SCIM `enterprise…:costCenter eq "CC 5"`',
            f'{ENTERPRISE}:costCenter eq "CC 5"',
        ),
        ("SCIM `active eq true`", "active eq true"),
        ("SCIM `active eq false`", "active eq false"),
        ('SCIM `name.familyName ew "…"`', f'name.familyName ew "{i % 100000}"'),
        ('SCIM `userName co "…"`', f'userName co "{i:07d}"'),
        ('SCIM `displayName sw "…"`', f'displayName sw "User {i // 10}"'),
    ):
        payload = timer.scim(what, scim_filter(expression))
        if payload is not None:
            timer.rows[-1]["notes"] = total_results(payload)
    picks = [users * k // 41 for k in range(1, timer.repeat + 2)]
    timer.scim_each(
        "SCIM `userName eq`",
        [scim_filter(f'userName eq "{user_name(k)}"') for k in picks],
    )
    timer.scim_each(
        "SCIM `externalId eq`",
        [scim_filter(f'externalId eq "ext{k:07d}"') for k in picks],
    )
    timer.scim_each(
        "SCIM `enterprise…:employeeNumber eq`",
        [scim_filter(f'{ENTERPRISE}:employeeNumber eq "{k}"') for k in picks],
    )
    timer.scim_each(
        "SCIM `displayName sw`",
        [scim_filter(f'displayName sw "User {k}"') for k in picks],
        one=False,
    )
    timer.scim(
        "SCIM deep page (last 100)",
        f"/Users?startIndex={max(1, users - 99)}&count=100",
    )
    timer.scim(
        "SCIM sorted page (userName descending, 100)",
        "/Users?sortBy=userName&sortOrder=descending&count=100",
    )
    timer.scim(
        "SCIM big group, displayName eq, members excluded",
        "/Groups?"
        + urllib.parse.urlencode(
            {
                "filter": f'displayName eq "{BIG_GROUP}"',
                "excludedAttributes": "members",
            }
        ),
    )
    member_patches(timer, meta)
    big = f"SCIM GET of the {users:,}-member group"
    for what, query in (
        (f"{big} with its members", ""),
        (f"{big}, attributes=members.value", "?attributes=members.value"),
    ):
        timer.scim(what, f"/Groups/{meta['big']}{query}")
        after = rss_mib(server.pid)
        timer.rows[-1]["notes"] = (
            f"server RSS {after:.0f} MB after, peak so far {peak.sample():.0f} MB"
        )
        print(f"    {timer.rows[-1]['notes']}")


def member_patches(timer, meta):
    """Time adding and removing one member of the big and of the 10-member group."""
    some = meta["sample"]

    def patch(group, op, user):
        body = {
            "schemas": [PATCH_OP],
            "Operations": [{"op": op, "path": "members", "value": [{"value": user}]}],
        }
        path = scim_path(timer.url, f"/Groups/{group}")
        return lambda conn: send(conn, "PATCH", path, body, token=timer.token)

    # Each user is taken out of the big group and put back, and put in and
    # taken out of the small one: the directory ends as it began.
    for label, group, first, second in (
        ("big group", meta["big"], "Remove", "Add"),
        ("10-member group", meta["small"], "Add", "Remove"),
    ):
        jobs = {first: [], second: []}
        for user in some[10 : 11 + timer.repeat]:
            jobs[first].append(patch(group, first, user))
            jobs[second].append(patch(group, second, user))
        firsts, seconds = [], []
        conn = connection(timer.url)
        try:
            for one, two in zip(jobs[first], jobs[second], strict=True):
                firsts.append(one(conn))
                seconds.append(two(conn))
        finally:
            conn.close()
        for op, results in ((first, firsts), (second, seconds)):
            times = [s for _, _, s in results[1:]]
            bad = [status for status, _, _ in results if status not in (200, 204)]
            p50 = statistics.median(times) * 1000
            note = f"status {bad[0]}" if bad else ""
            what = f"SCIM member PATCH ({op.lower()} 1), {label}"
            print(f"  {what:<64} {p50:>9,.1f} ms  {note}", flush=True)
            timer.rows.append({"what": what, "p50_ms": p50, "notes": note})


def table(rows, meta, peak):
    """Return the Markdown table of the rows and the build's figures."""
    lines = ["| what | time p50 | notes |", "|---|---|---|"]
    for row in rows:
        shown = f"{row['p50_ms']:,.1f} ms" if row["p50_ms"] is not None else "—"
        lines.append(f"| {row['what']} | {shown} | {row['notes']} |")
    lines += [
        f"| `/Bulk` load, {meta['bulk_clients']} clients | "
        f"{meta['bulk_users_per_s']:,.0f} users/s | {meta['bulk_users']:,} users |",
        f"| database | {meta['db_bytes_per_user']:,.0f} B/user | "
        "directory only, with the big group's memberships |",
        f"| activity log | {meta['activity_bytes_per_bulk_op']:,.0f} B per Bulk operation | "
        "measured over the /Bulk load |",
        f"| peak server RSS | {peak:,.0f} MB | over the whole measurement "
        f"(/Bulk load: {meta['bulk_peak_rss_mib']:,.0f} MB) |",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000000)
    parser.add_argument(
        "--bulk-users",
        type=int,
        default=100000,
        help="users loaded through /Bulk (the rest are seeded directly)",
    )
    parser.add_argument("--bulk-batch", type=int, default=1000, help="users per /Bulk")
    parser.add_argument("--clients", type=int, default=2, help="/Bulk clients")
    parser.add_argument("--activity-rows", type=int, default=5000000)
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per row")
    parser.add_argument(
        "--database-url", help="build in a scratch schema of this PostgreSQL database"
    )
    parser.add_argument("--keep", metavar="DIR", help="build into DIR and keep it")
    parser.add_argument(
        "--reuse", metavar="DIR", help="measure the directory --keep built in DIR"
    )
    parser.add_argument(
        "--drop", metavar="DIR", help="delete what --keep built in DIR, and its schema"
    )
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    if args.drop:
        return drop(args.drop)
    if args.reuse:
        with open(os.path.join(args.reuse, META)) as f:
            meta = json.load(f)
        open_app(args.reuse, meta["database_url"])
        print(f"reusing {args.reuse}: {meta['users']:,} users")
        rows, peak = measure(args.reuse, meta, args)
        meta["db_bytes_per_user"] = directory_bytes(args.reuse) / meta["users"]
        return report(rows, meta, peak, args)
    with contextlib.ExitStack() as stack:
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            instance = args.keep
        else:
            instance = stack.enter_context(tempfile.TemporaryDirectory())
        url = schema = None
        if args.database_url:
            url, schema = stack.enter_context(
                scratch_schema(args.database_url, args.keep)
            )
        if args.keep:
            # Written first, so that --drop finds the schema of a failed build.
            save_meta(instance, {"database_url": url, "schema": schema})
        meta = build(instance, url, args)
        meta["schema"] = schema
        if args.keep:
            save_meta(instance, meta)
        rows, peak = measure(instance, meta, args)
        return report(rows, meta, peak, args)


def save_meta(instance, meta):
    with open(os.path.join(instance, META), "w") as f:
        json.dump(meta, f, indent=2)


def drop(instance):
    """Drop the PostgreSQL schema of a kept build, then its folder."""
    import shutil

    with open(os.path.join(instance, META)) as f:
        meta = json.load(f)
    if meta.get("schema"):
        import psycopg2
        from playhouse.db_url import parse

        params = parse(meta["database_url"])
        conn = psycopg2.connect(dbname=params.pop("database"), **params)
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {meta['schema']} CASCADE")
        conn.close()
        print(f"dropped schema {meta['schema']}")
    shutil.rmtree(instance)
    print(f"removed {instance}")
    return 0


def report(rows, meta, peak, args):
    print()
    print(table(rows, meta, peak))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "build": meta, "peak_rss_mib": peak}, f, indent=2)
    failed = [r for r in rows if r["p50_ms"] is None or "status" in r["notes"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
