"""The database: one handle, bound by the app factory to SQLite (the default) or PostgreSQL.

SQL that differs between the two engines lives here, behind small helpers,
so the rest of the code builds one query for both.
"""

import functools
import inspect
import random
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from urllib.parse import urlsplit

from peewee import SQL
from peewee import AutoField
from peewee import Case
from peewee import Cast
from peewee import CharField
from peewee import DatabaseError
from peewee import DatabaseProxy
from peewee import DateTimeField
from peewee import Entity
from peewee import IntegerField
from peewee import NodeList
from peewee import PostgresqlDatabase
from peewee import TextField
from peewee import Value
from peewee import fn
from playhouse.pool import PooledPostgresqlDatabase
from playhouse.pool import PooledSqliteDatabase

from . import files

# WAL lets readers run beside the one writer; busy_timeout makes a second
# writer wait instead of failing with "database is locked".
PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 15000,
    "synchronous": "normal",
    # 8 MB of page cache per pooled connection keeps the server's memory small.
    "cache_size": -8000,
}

# Case-insensitive text: NOCASE on SQLite, the citext extension on PostgreSQL.
SQLITE_TYPES = {"NOCASE_TEXT": "TEXT"}
POSTGRES_TYPES = {"NOCASE_TEXT": "CITEXT"}

# The handle every model and query uses; ``bind`` points it at an engine.
# Until then it holds an unopened SQLite pool, so closing it is harmless.
database = DatabaseProxy()
database.initialize(PooledSqliteDatabase(None, pragmas=PRAGMAS))

# Writers in this process queue on a lock rather than on SQLite's busy handler,
# which sleeps in growing steps and turns contention into latency spikes.
_write_lock = threading.Lock()

# pg_advisory_xact_lock keys: one per purpose, arbitrary but fixed.
MIGRATE_LOCK_KEY = 0x6D646D02
PRUNE_LOCK_KEY = 0x6D646D03


def is_url(target):
    """Return True if ``target`` is a PostgreSQL URL rather than a SQLite path."""
    return urlsplit(str(target)).scheme in ("postgres", "postgresql")


def connect_database(target, pragmas=PRAGMAS, max_connections=64):
    """Return a connection pool for a SQLite path or a PostgreSQL URL."""
    if not is_url(target):
        # Owner-only before SQLite creates it: the file holds every credential's hash.
        files.sqlite_file(target)
        return PooledSqliteDatabase(
            str(target),
            pragmas=pragmas,
            max_connections=max_connections,
            stale_timeout=300,
            field_types=SQLITE_TYPES,
            # The pool hands a connection to one thread at a time, possibly a new one.
            check_same_thread=False,
        )
    from playhouse.db_url import parse

    params = parse(str(target))
    return PooledPostgresqlDatabase(
        params.pop("database"),
        max_connections=max_connections,
        stale_timeout=300,
        field_types=POSTGRES_TYPES,
        **params,
    )


def init_app(app):
    """Bind the database to the configured URL or file and open a connection per request."""
    bind(app.config.get("DATABASE_URL") or app.config["DATABASE"])
    app.before_request(_connect)
    app.teardown_request(_close)


def bind(target):
    """Point the database at a SQLite path or PostgreSQL URL, closing the previous pool."""
    close_pool(database)
    database.initialize(connect_database(target))


def close_pool(handle):
    """Close every connection of the pool behind ``handle``, if it was ever opened."""
    if not handle.obj.deferred:
        handle.obj.close_all()


def postgres(db=None):
    """Return True when ``db`` (by default the main database) is PostgreSQL."""
    db = database.obj if db is None else db
    db = getattr(db, "obj", db)
    return isinstance(db, PostgresqlDatabase)


def most_parameters():
    """Return how many values one statement may bind on the bound engine."""
    if postgres():
        return 65535  # the wire protocol counts them in 16 bits
    # 32,766 unless SQLite was built with less (999 before 3.32).
    return database.connection().getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


def _connect():
    database.connect(reuse_if_open=True)


def _close(exc):
    if database.is_closed():
        return
    # On SQLite a thread keeps its connection for its next request: checking
    # it out of the pool and back in cost a served lookup a sixth of its
    # time. Only after a clean request with no transaction open; otherwise it
    # goes back to the pool, which rolls a transaction back. Binding another
    # database makes a new pool, so a kept connection never reads the old one.
    clean = exc is None and not postgres() and not database.in_transaction()
    if clean and not database.connection().in_transaction:
        return
    database.close()


class Prepared:
    """A query rendered to SQL once, then run with new values."""

    # ``build`` takes one marker per name (its parameters, or ``names``).
    # Rendering a query through the ORM costs several times what SQLite takes
    # to answer an indexed lookup, and the token check and the lookups an IdP
    # makes run on every request. So ``build`` is rendered once per engine
    # (Query.sql) with a marker in place of each argument, and each run binds
    # the real values in the markers' places (Database.execute_sql,
    # Model.raw). Values are bound as given: pass what the column stores
    # unconverted (text, integers).

    def __init__(self, build, names=None):
        self.build = build
        self.names = list(names or inspect.signature(build).parameters)
        self._rendered = {}

    def _render(self):
        engine = type(database.obj)
        found = self._rendered.get(engine)
        if found is None:
            # Noncharacters: no client value holds them, and no clean-up of
            # text (NUL checks, PostgreSQL's) rewrites them while rendering.
            markers = {f"\ufdd0{name}\ufdd0": name for name in self.names}
            query = self.build(*markers)
            sql, params = query.sql()
            # Every parameter must be a marker, or a run would bind a stale
            # value; every marker a parameter, or an argument is ignored.
            order = [markers.get(param) for param in params]
            if None in order or set(order) != set(self.names):
                raise RuntimeError(f"Prepared query does not bind {self.names}: {sql}")
            found = (getattr(query, "model", None), sql, order)
            self._rendered[engine] = found
        return found

    def execute(self, **values):
        """Run the query and return the cursor."""
        _, sql, order = self._render()
        return database.execute_sql(sql, [values[name] for name in order])

    def rows(self, **values):
        """Return the model instances a select of one model's columns finds."""
        model = self._render()[0]
        cursor = self.execute(**values)
        rows = cursor.fetchall()
        if not rows:
            return []
        plan = _load_plan(model, tuple(item[0] for item in cursor.description))
        return [
            model(
                **{
                    name: value if read is None or value is None else read(value)
                    for (name, read), value in zip(plan, row, strict=True)
                }
            )
            for row in rows
        ]

    def first(self, **values):
        """Return the first row as a model instance, or None."""
        rows = self.rows(**values)
        return rows[0] if rows else None


@functools.lru_cache(maxsize=256)
def _load_plan(model, names):
    """Return (attribute, reader or None) for each column a select of ``model`` gave."""
    # Resolved once per model and column list: the ORM's cursor wrapper
    # resolves them on every query. A column that is no field (a selected
    # subquery) becomes a plain attribute, as the ORM makes it.
    columns = model._meta.columns
    return tuple(
        (columns[name].name, _reader(columns[name]))
        if name in columns
        else (name, None)
        for name in names
    )


# Fields whose values the drivers return as the field reads them (text,
# integers): exact classes, so a subclass that converts is converted.
_AS_RETURNED = frozenset((AutoField, IntegerField, TextField, CharField))


def _reader(field):
    """Return how to read a value of ``field`` from the driver, or None to keep it."""
    if type(field) in _AS_RETURNED or type(field) is NoCaseField:
        return None
    if type(field) is DateTimeField:
        return functools.partial(_datetime, field.python_value)
    return field.python_value


def _datetime(python_value, value):
    # SQLite returns a time as the text peewee wrote, "YYYY-MM-DD
    # HH:MM:SS.ffffff"; the field parses it with strptime, seven times slower.
    if type(value) is str and len(value) == 26 and value[10] == " ":
        return datetime.fromisoformat(value)
    return python_value(value)


def records(query, record):
    """Run a select and return its rows as ``record`` tuples, each value as its field reads it."""
    # A list page reads a hundred rows only to serialise them: building a
    # model instance for each cost the ORM more than SQLite took to find
    # them. ``record`` is a namedtuple of the selected columns, in order.
    cursor = database.execute_sql(*query.sql())
    rows = cursor.fetchall()
    if not rows:
        return []
    plan = _load_plan(query.model, tuple(item[0] for item in cursor.description))
    readers = [(at, read) for at, (_, read) in enumerate(plan) if read is not None]
    if not readers:
        return [record._make(row) for row in rows]
    listed = []
    for row in rows:
        values = list(row)
        for at, read in readers:
            if values[at] is not None:
                values[at] = read(values[at])
        listed.append(record._make(values))
    return listed


#
# Case, patterns and truth values
#


class NoCaseField(TextField):
    """Text compared, sorted and kept unique regardless of ASCII case."""

    # SQLite declares it ``TEXT COLLATE NOCASE``; PostgreSQL ``citext``, whose
    # comparisons, ordering, LIKE and indexes all ignore case the same way.

    field_type = "NOCASE_TEXT"
    nocase = True

    @property
    def collation(self):
        return None if postgres() else "NOCASE"

    @collation.setter
    def collation(self, value):
        pass  # fixed by the engine


def nocase(expr):
    """Return ``expr`` compared case-insensitively."""
    if postgres():
        return Cast(expr, "citext")
    return expr.collate("NOCASE")


def exact(expr):
    """Return ``expr`` compared byte for byte, even on a case-insensitive column."""
    if postgres():
        return NodeList((Cast(expr, "text"), SQL('COLLATE "C"')))
    return expr.collate("BINARY")


def like(expr, text, pattern="%{}%"):
    """Match ``text`` with LIKE placed by ``pattern`` ("%{}%" contains), wildcards literal."""
    # The match ignores ASCII case on both engines: SQLite's LIKE does so
    # already, PostgreSQL needs ILIKE.
    if "\x00" in text:
        # NUL is never stored, and PostgreSQL refuses it even as a parameter.
        return false()
    operator = "ILIKE" if postgres() else "LIKE"
    return _like(expr, operator, pattern.format(_escape_like(text)))


def _escape_like(text):
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(expr, operator, pattern):
    return NodeList(
        (expr, SQL(operator), Value(pattern), SQL("ESCAPE '\\'")), parens=True
    )


def substring(expr, op, text):
    """Return the case-sensitive ``co``/``sw``/``ew`` test of ``expr`` against ``text``."""
    if postgres():
        expr = Cast(expr, "text")
        if op == "co":
            return fn.strpos(expr, text) > 0
        if op == "sw":
            return fn.left(expr, len(text)) == text
        return fn.right(expr, len(text)) == text
    if op == "co":
        return fn.instr(expr, text) > 0
    if op == "sw":
        return fn.substr(expr, 1, len(text)) == text
    return fn.substr(expr, -len(text)) == text


#
# Substring search through a trigram index
#

# A trigram index finds a pattern by the three-character pieces it is made
# of; a pattern shorter than that has none, so it is scanned with LIKE.
TRIGRAM = 3
# Trigrams of a long pattern asked of SQLite's index: each is a necessary
# condition, and a few already narrow the rows to a handful.
MAX_TRIGRAMS = 12


def trigram_index(model, fields, lists=()):
    """Create the substring index of ``model`` if missing, filled from its rows."""
    # It covers ``fields`` and, for each (attribute, sub-attribute) of
    # ``lists``, that member of every element of the array in ``model.data``.
    # SQLite: a contentless FTS5 table with the trigram tokenizer, one row
    # per ``model`` row, kept in step by triggers in the writing transaction.
    # detail=none stores neither positions nor columns, only which rows hold
    # a trigram: the smallest index, and enough for a list of candidates that
    # the exact condition then rechecks. PostgreSQL: one GIN trigram index
    # over everything joined, the expression ``trigram_candidates`` builds.
    table = model._meta.table_name
    if postgres():
        # Trusted since PostgreSQL 13, like citext.
        database.execute_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        context = database.get_sql_context()
        sql, params = context.sql(
            _pg_joined(model, fields, lists, qualify=False)
        ).query()
        database.execute_sql(
            f'CREATE INDEX IF NOT EXISTS "{table}_search" ON "{table}" '
            f"USING gin (({sql}) gin_trgm_ops)",
            params,
        )
        return
    search = f"{table}_search"
    exists = database.execute_sql(
        "SELECT 1 FROM sqlite_master WHERE name = ?", (search,)
    ).fetchone()
    if exists:
        return
    columns = [field.column_name for field in fields] + [name for name, _ in lists]
    names = ", ".join(f'"{c}"' for c in columns)

    def values(row):
        found = [f'{row}."{field.column_name}"' for field in fields]
        # Each element's member, one a line; a stray non-object element has none.
        document = f'{row}."{model.data.column_name}"'
        found += [
            f"(SELECT group_concat(json_extract(e.value, '$.{sub}'), char(10)) "
            f"FROM json_each({document}, '$.{name}') AS e WHERE e.type = 'object')"
            for name, sub in lists
        ]
        return ", ".join(found)

    pk = model._meta.primary_key.column_name
    watched = [field.column_name for field in fields]
    watched += [model.data.column_name] if lists else []
    changed = " OR ".join(f'old."{c}" IS NOT new."{c}"' for c in watched)
    database.execute_sql(
        f"CREATE VIRTUAL TABLE {search} USING fts5({names}, "
        "tokenize='trigram', content='', detail='none')"
    )
    # A contentless table keeps no copy of what it indexed: removing a row
    # means naming the exact values it was indexed with, the trigger's old row.
    insert = (
        f"INSERT INTO {search} (rowid, {names}) VALUES (new.{pk}, {values('new')});"
    )
    delete = (
        f"INSERT INTO {search} ({search}, rowid, {names}) "
        f"VALUES ('delete', old.{pk}, {values('old')});"
    )
    database.execute_sql(
        f'CREATE TRIGGER {search}_insert AFTER INSERT ON "{table}" BEGIN {insert} END'
    )
    database.execute_sql(
        f'CREATE TRIGGER {search}_delete AFTER DELETE ON "{table}" BEGIN {delete} END'
    )
    database.execute_sql(
        f"CREATE TRIGGER {search}_update AFTER UPDATE OF "
        f'{", ".join(watched)} ON "{table}" WHEN {changed} '
        f"BEGIN {delete} {insert} END"
    )
    # The rows already there, in one statement.
    current = values(f'"{table}"')
    database.execute_sql(
        f'INSERT INTO {search} (rowid, {names}) SELECT {pk}, {current} FROM "{table}"'
    )


# Rows of each count table on PostgreSQL: a writer adds to the row of its
# connection, so writers in parallel seldom wait on one another's count.
COUNT_SHARDS = 16


def kept_counts(model):
    """Create the counts of ``model``'s live and active rows if missing, filled from its rows."""
    # Counting a million index entries takes a quarter of a second, on every
    # unfiltered list page and every "active eq true". Triggers keep the
    # counts in the writing transaction instead, so they always equal what a
    # COUNT would find. SQLite has one writer and one row; PostgreSQL has a
    # row per shard, chosen by the backend's process id, so a transaction
    # only ever locks one of them and two never deadlock over the counts.
    table = model._meta.table_name
    counts = f"{table}_count"
    if database.table_exists(counts):
        return
    live_new = "new.deprovisioned_at IS NULL"
    live_old = "old.deprovisioned_at IS NULL"
    database.execute_sql(
        f"CREATE TABLE {counts} (shard INTEGER PRIMARY KEY, "
        "live BIGINT NOT NULL, active BIGINT NOT NULL)"
    )
    if postgres():
        schema, target = _in_current_schema(counts)
        database.execute_sql(
            f'CREATE FUNCTION "{schema}".{counts}_change() RETURNS trigger '
            "LANGUAGE plpgsql AS $$\n"
            "DECLARE d_live integer := 0; d_active integer := 0;\n"
            "BEGIN\n"
            "  IF TG_OP <> 'DELETE' THEN\n"
            f"    IF {live_new} THEN d_live := 1; d_active := new.active::integer; END IF;\n"
            "  END IF;\n"
            "  IF TG_OP <> 'INSERT' THEN\n"
            f"    IF {live_old} THEN\n"
            "      d_live := d_live - 1; d_active := d_active - old.active::integer;\n"
            "    END IF;\n"
            "  END IF;\n"
            "  IF d_live <> 0 OR d_active <> 0 THEN\n"
            f"    UPDATE {target} SET live = live + d_live, active = active + d_active\n"
            f"    WHERE shard = mod(pg_backend_pid(), {COUNT_SHARDS});\n"
            "  END IF;\n"
            "  RETURN NULL;\n"
            "END $$"
        )
        database.execute_sql(
            f"CREATE TRIGGER {counts} AFTER INSERT OR DELETE OR UPDATE OF active, "
            f'deprovisioned_at ON "{table}" FOR EACH ROW '
            f'EXECUTE FUNCTION "{schema}".{counts}_change()'
        )
        database.execute_sql(
            f"INSERT INTO {counts} SELECT shard, 0, 0 "
            f"FROM generate_series(1, {COUNT_SHARDS - 1}) AS shard"
        )
        active_rows = "count(*) FILTER (WHERE active)"
    else:
        change = (
            f"UPDATE {counts} SET live = live + {{live}}, active = active + {{active}};"
        )
        database.execute_sql(
            f'CREATE TRIGGER {counts}_insert AFTER INSERT ON "{table}" '
            f"WHEN {live_new} BEGIN "
            + change.format(live="1", active="(new.active <> 0)")
            + " END"
        )
        database.execute_sql(
            f'CREATE TRIGGER {counts}_delete AFTER DELETE ON "{table}" '
            f"WHEN {live_old} BEGIN "
            + change.format(live="-1", active="-(old.active <> 0)")
            + " END"
        )
        database.execute_sql(
            f"CREATE TRIGGER {counts}_update AFTER UPDATE OF active, deprovisioned_at "
            f'ON "{table}" WHEN ({live_new}) <> ({live_old}) '
            "OR old.active IS NOT new.active BEGIN "
            + change.format(
                live=f"({live_new}) - ({live_old})",
                active=f"({live_new} AND new.active <> 0) "
                f"- ({live_old} AND old.active <> 0)",
            )
            + " END"
        )
        active_rows = "coalesce(sum(active <> 0), 0)"
    # The rows already there, after the triggers: on PostgreSQL creating a
    # trigger locks the table against writers until this transaction ends.
    database.execute_sql(
        f"INSERT INTO {counts} SELECT 0, count(*), {active_rows} "
        f'FROM "{table}" WHERE deprovisioned_at IS NULL'
    )


def _in_current_schema(name):
    """Return the current schema and ``name`` qualified by it, for a trigger function to use."""
    # A trigger runs under the writer's search_path, which may not hold it.
    schema = database.execute_sql("SELECT current_schema()").fetchone()[0]
    return schema, f'"{schema}".{name}'


def counted(model):
    """Return (live rows, active live rows) of ``model``, from the counts triggers keep."""
    counts = f"{model._meta.table_name}_count"
    # Through the primary key: each change writes a new version of a shard's
    # row, and a transaction writing thousands (a /Bulk run, a script's load)
    # leaves its table spread over as many pages, which PostgreSQL keeps
    # after vacuuming them. Scanning them all took 0.75 ms of every list
    # request after a million-user load (637 pages for 16 rows); the index
    # reads the 16 rows wherever they are.
    row = database.execute_sql(
        "SELECT coalesce(sum(live), 0), coalesce(sum(active), 0) "
        f"FROM {counts} WHERE shard >= 0"
    ).fetchone()
    # PostgreSQL sums bigints as numeric.
    return int(row[0]), int(row[1])


def kept_value_counts(model, copies):
    """Create the counts of ``model``'s live and active rows per value if missing.

    ``copies`` maps each counted column's name to the column its values are
    counted by: on PostgreSQL its lowercased copy (models.lowered); on SQLite
    the column itself, whose values are told apart as NOCASE tells them.
    """
    # Counting a department's 20,000 users at a million reads as many index
    # entries on every page of "department eq x": 2.3 ms on PostgreSQL, 1.2
    # on SQLite. As for kept_counts, triggers keep the counts in the writing
    # transaction instead. On PostgreSQL a row per (column, value, shard), so
    # writers of one department in parallel each add to their own
    # connection's row; its triggers fire once per statement and add up its
    # rows first: a /Bulk insert of a thousand users writes a row per value
    # it holds, not a thousand. SQLite has one writer, shard 0, and triggers
    # that fire per row.
    table = model._meta.table_name
    counts = f"{table}_value_count"
    if database.table_exists(counts):
        return
    # SQLite keeps each value as NOCASE compares it, as the filters do.
    value = "TEXT NOT NULL" if postgres() else "TEXT COLLATE NOCASE NOT NULL"
    database.execute_sql(
        f"CREATE TABLE {counts} (attribute TEXT NOT NULL, value {value}, "
        "shard INTEGER NOT NULL, live BIGINT NOT NULL, active BIGINT NOT NULL, "
        "PRIMARY KEY (attribute, value, shard))"
    )
    if not postgres():
        _sqlite_value_counts(table, counts, list(copies))
        return
    schema, target = _in_current_schema(counts)
    pairs = ", ".join(f"('{name}', r.\"{copy}\")" for name, copy in copies.items())

    def held(rows, sign):
        # One row per counted value a live row holds, signed.
        return (
            f"SELECT v.attribute, v.value, {sign} AS live, "
            f"{sign} * r.active::integer AS active FROM {rows} AS r "
            f"CROSS JOIN LATERAL (VALUES {pairs}) AS v (attribute, value) "
            "WHERE r.deprovisioned_at IS NULL AND v.value IS NOT NULL"
        )

    def add(*parts):
        # Ordered, so that two writers sharing a shard lock its rows in one
        # order; each (value, shard) once, as ON CONFLICT requires.
        return (
            f"INSERT INTO {target} AS c (attribute, value, shard, live, active) "
            f"SELECT attribute, value, mod(pg_backend_pid(), {COUNT_SHARDS}), "
            f"sum(live), sum(active) FROM ({' UNION ALL '.join(parts)}) AS d "
            "GROUP BY attribute, value HAVING sum(live) <> 0 OR sum(active) <> 0 "
            "ORDER BY attribute, value ON CONFLICT (attribute, value, shard) DO "
            "UPDATE SET live = c.live + excluded.live, active = c.active + excluded.active"
        )

    database.execute_sql(
        f'CREATE FUNCTION "{schema}".{counts}_change() RETURNS trigger '
        "LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "  IF TG_OP = 'INSERT' THEN\n"
        f"    {add(held('new_rows', 1))};\n"
        "  ELSIF TG_OP = 'DELETE' THEN\n"
        f"    {add(held('old_rows', -1))};\n"
        "  ELSE\n"
        f"    {add(held('new_rows', 1), held('old_rows', -1))};\n"
        "  END IF;\n"
        "  RETURN NULL;\n"
        "END $$"
    )
    # A trigger with transition tables takes one event and no column list.
    for event, tables in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
    ):
        database.execute_sql(
            f'CREATE TRIGGER {counts}_{event.lower()} AFTER {event} ON "{table}" '
            f"REFERENCING {tables} FOR EACH STATEMENT "
            f'EXECUTE FUNCTION "{schema}".{counts}_change()'
        )
    # The rows already there, after the triggers (see kept_counts).
    quoted = f'"{table}"'
    database.execute_sql(
        f"INSERT INTO {counts} SELECT attribute, value, 0, sum(live), sum(active) "
        f"FROM ({held(quoted, 1)}) AS d GROUP BY attribute, value"
    )


def _sqlite_value_counts(table, counts, columns):
    """Create SQLite's triggers that keep ``counts`` per value of ``columns``, and fill it."""

    def held(row, sign, source=""):
        # A select per column of the value ``row`` holds, if it is live:
        # a trigger's new or old row, or each row of ``source``.
        return [
            f"SELECT '{column}' AS attribute, {row}.\"{column}\" AS value, "
            f"0 AS shard, {sign} AS live, {sign} * ({row}.active <> 0) AS active "
            f'{source} WHERE {row}.deprovisioned_at IS NULL AND {row}."{column}" IS NOT NULL'
            for column in columns
        ]

    def add(select):
        # WHERE before ON CONFLICT, which SQLite could otherwise read as a
        # join's ON.
        return (
            f"INSERT INTO {counts} (attribute, value, shard, live, active) "
            f"{select} ON CONFLICT (attribute, value, shard) DO UPDATE SET "
            "live = live + excluded.live, active = active + excluded.active;"
        )

    def summed(parts):
        # The values' rows added up per value, as NOCASE tells values apart:
        # each (value, shard) once, as ON CONFLICT requires.
        return (
            "SELECT attribute, value, 0, sum(live), sum(active) "
            f"FROM ({' UNION ALL '.join(parts)}) WHERE true "
            "GROUP BY attribute, value COLLATE NOCASE "
            "HAVING sum(live) <> 0 OR sum(active) <> 0"
        )

    def emptied(row):
        # The rows of the values ``row`` held that no live user holds now: a
        # directory that churns through managers would otherwise keep them all.
        return " ".join(
            f"DELETE FROM {counts} WHERE attribute = '{column}' "
            f'AND value = {row}."{column}" AND shard = 0 AND live = 0 AND active = 0;'
            for column in columns
        )

    # A row inserted or deleted holds one value per column: no sum needed.
    for event, row, sign, after in (
        ("INSERT", "new", 1, ""),
        ("DELETE", "old", -1, emptied("old")),
    ):
        database.execute_sql(
            f'CREATE TRIGGER {counts}_{event.lower()} AFTER {event} ON "{table}" '
            f"WHEN {row}.deprovisioned_at IS NULL BEGIN "
            + " ".join(add(select) for select in held(row, sign))
            + f" {after} END"
        )
    # An update adds the new value and takes the old one away, in one
    # statement that writes nothing where the two cancel out.
    changed = " OR ".join(
        [
            "(new.deprovisioned_at IS NULL) <> (old.deprovisioned_at IS NULL)",
            "new.active IS NOT old.active",
        ]
        + [f'new."{c}" IS NOT old."{c}"' for c in columns]  # NOCASE columns
    )
    database.execute_sql(
        f"CREATE TRIGGER {counts}_update AFTER UPDATE OF "
        + ", ".join(f'"{c}"' for c in columns)
        + f', active, deprovisioned_at ON "{table}" WHEN {changed} BEGIN '
        + add(summed(held("old", -1) + held("new", 1)))
        + f" {emptied('old')} END"
    )
    # The rows already there, after the triggers (see kept_counts).
    rows = held("u", 1, f'FROM "{table}" AS u')
    database.execute_sql(add(summed(rows)).rstrip(";"))


def value_counted(model, column, text):
    """Return (live rows, active live rows) of ``model`` whose ``column`` equals ``text``, ignoring case."""
    # Compared as the filter compiler compares the column: its lowercased copy
    # on PostgreSQL, NOCASE on SQLite.
    mark = "%s" if postgres() else "?"
    value = f"lower({mark})" if postgres() else mark
    row = database.execute_sql(
        "SELECT coalesce(sum(live), 0), coalesce(sum(active), 0) "
        f"FROM {model._meta.table_name}_value_count "
        f"WHERE attribute = {mark} AND value = {value}",
        (column, text),
    ).fetchone()
    return int(row[0]), int(row[1])


def _pg_joined(model, fields, lists, qualify=True):
    """Return the text PostgreSQL's trigram index holds: every searched value joined."""

    # The index and the queries build it here, so they match.
    def column(field):
        return field if qualify else Entity(field.column_name)

    parts = [
        # citext has no trigram operator class: its text is what is indexed.
        Cast(column(f), "text") if getattr(f, "nocase", False) else column(f)
        for f in fields
    ]
    for name, sub in lists:
        # The members as a JSON array's text, which escapes only quotes,
        # backslashes and control characters (see trigram_candidates).
        values = fn.jsonb_path_query_array(
            Cast(column(model.data), "jsonb"), SQL(f'\'$."{name}"[*]."{sub}"\'')
        )
        parts.append(Cast(values, "text"))
    joined = None
    for part in parts:
        part = fn.COALESCE(part, SQL("''"))
        joined = part if joined is None else joined.concat(SQL("E'\\n'")).concat(part)
    return joined


def trigram_candidates(model, fields, lists, text):
    """Return a condition true for at least the rows holding ``text`` in the index, or None."""
    # True for every row where a searched value contains ``text`` ignoring
    # case, and maybe a few more: a prefilter, to be ANDed with the exact
    # condition. None when the index cannot answer: ``text`` too short for
    # trigrams, scanned instead.
    if len(text) < TRIGRAM or "\x00" in text:
        return None
    if postgres():
        if lists and (any(c in text for c in '"\\') or min(text) < " "):
            # The JSON text of the lists escapes these, so the index may miss
            # a value holding them; such a rare search scans instead.
            return None
        return _like(
            _pg_joined(model, fields, lists), "ILIKE", f"%{_escape_like(text)}%"
        )
    pieces = [text[i : i + TRIGRAM] for i in range(0, len(text) - TRIGRAM + 1, TRIGRAM)]
    pieces = list(dict.fromkeys([*pieces, text[-TRIGRAM:]]))
    if len(pieces) > MAX_TRIGRAMS:
        step = len(pieces) / MAX_TRIGRAMS
        pieces = [pieces[int(i * step)] for i in range(MAX_TRIGRAMS)]
    # Quoted, each is one literal trigram (FTS5 doubles a quote inside).
    match = " AND ".join('"{}"'.format(piece.replace('"', '""')) for piece in pieces)
    search = f"{model._meta.table_name}_search"
    return NodeList(
        (
            model._meta.primary_key,
            SQL(f"IN (SELECT rowid FROM {search} WHERE {search} MATCH"),
            Value(match),
            SQL(")"),
        )
    )


def bindable(text):
    """Return ``text`` as a parameter the engine accepts (PostgreSQL refuses NUL)."""
    return text.replace("\x00", "") if postgres() else text


def true():
    return SQL("TRUE") if postgres() else SQL("1")


def false():
    return SQL("FALSE") if postgres() else SQL("0")


def is_not_true(expr):
    """Return ``expr IS NOT TRUE``: false and unknown (NULL) both match."""
    return NodeList((expr, SQL("IS NOT TRUE" if postgres() else "IS NOT 1")))


def among(field, ids):
    """Return ``field`` in what the subquery ``ids`` selects, as each engine runs it best."""
    # PostgreSQL plans "IN (subquery)" as a semi-join of two scans; "= ANY
    # (ARRAY(subquery))" runs the subquery once and looks each id up, which a
    # page of 100 users took 0.1-0.2 ms less to plan and run.
    if postgres():
        return field == fn.ANY(fn.ARRAY(ids))
    return field.in_(ids)


def ordering(expr, descending=False):
    """Return ``expr`` sorted with NULLs first ascending, as SQLite does, on both engines."""
    if postgres():
        return expr.desc(nulls="last") if descending else expr.asc(nulls="first")
    return expr.desc() if descending else expr.asc()


def hour_label(expr):
    """Return ``expr`` formatted as "YYYY-MM-DD HH" for grouping by hour."""
    if postgres():
        return fn.to_char(expr, "YYYY-MM-DD HH24").coerce(False)
    return fn.strftime("%Y-%m-%d %H", expr)


#
# JSON documents stored as text
#


def _json_path(keys):
    # Labels are quoted because extension URNs contain colons and dots.
    return "$" + "".join(f"[{k}]" if isinstance(k, int) else f'."{k}"' for k in keys)


def json_get(document, keys, kind="string"):
    """Return the value at ``keys`` in a JSON text column, as SQL of ``kind``."""
    # ``kind`` is a SCIM type; numbers compare as numbers, booleans read back
    # as "1"/"0" or "true"/"false", and everything else as text. A value of
    # the wrong JSON type is NULL on PostgreSQL rather than an error.
    if not postgres():
        return fn.json_extract(document, _json_path(keys))
    value = fn.jsonb_extract_path(Cast(document, "jsonb"), *[str(k) for k in keys])
    return _typed(value, kind)


# Characters a JSON key may have to be written into SQL as a literal.
_LITERAL_KEY = re.compile(r"^[A-Za-z0-9:._$-]+$")


def json_get_indexed(document, keys, kind="string"):
    """Return ``json_get`` with the keys written into the SQL, so an index on it can match."""
    # An expression index is used only when the query repeats its expression
    # exactly, and an index cannot take parameters: the keys (schema names,
    # never client text) are literals here and in the index alike. Keys with
    # other characters stay parameters; no index can name them.
    if not all(_LITERAL_KEY.match(str(key)) for key in keys):
        return json_get(document, keys, kind)
    if not postgres():
        return fn.json_extract(document, SQL(f"'{_json_path(keys)}'"))
    labels = [SQL(f"'{key}'") for key in keys]
    return _typed(fn.jsonb_extract_path(Cast(document, "jsonb"), *labels), kind)


def json_rows(*columns):
    """Return a subquery of every row's ``columns`` as JSON text: [[a, b], ...], or "[]"."""
    model = columns[0].model
    if not postgres():
        return model.select(fn.json_group_array(fn.json_array(*columns)))
    rows = fn.coalesce(fn.json_agg(fn.json_build_array(*columns)), SQL("'[]'::json"))
    return model.select(Cast(rows, "text"))


def json_type(document, keys):
    """Return the JSON type name of the value at ``keys`` ("object", "array", ...)."""
    if not postgres():
        return fn.json_type(document, _json_path(keys))
    return fn.jsonb_typeof(
        fn.jsonb_extract_path(Cast(document, "jsonb"), *[str(k) for k in keys])
    )


def _typed(value, kind):
    if kind in ("integer", "decimal"):
        number = Cast(NodeList((value, SQL("#>> '{}'"))), "numeric")
        return NodeList(
            (SQL("CASE WHEN jsonb_typeof("), value, SQL(") = 'number' THEN"), number)
            + (SQL("END"),)
        )
    return NodeList((value, SQL("#>> '{}'")), parens=True)


def json_elements(document, keys, alias):
    """Return the FROM source listing the elements of the array at ``keys`` as ``alias``."""
    # Each row has ``value`` (the element) and ``type`` (its JSON type name).
    if not postgres():
        return NodeList(
            (
                SQL("json_each("),
                NodeList((document, Value(_json_path(keys))), glue=", "),
                SQL(f") AS {alias}"),
            ),
            glue="",
        )
    value = fn.jsonb_extract_path(Cast(document, "jsonb"), *[str(k) for k in keys])
    # SQLite's json_each lists a scalar as its one element; an array function
    # on a scalar fails in PostgreSQL, so a scalar is wrapped first.
    array = NodeList(
        (SQL("CASE jsonb_typeof("), value, SQL(") WHEN 'array' THEN"), value)
        + (SQL("WHEN 'object' THEN NULL ELSE jsonb_build_array("), value, SQL(") END"))
    )
    return NodeList(
        (
            SQL(
                "(SELECT e AS value, jsonb_typeof(e) AS type FROM jsonb_array_elements("
            ),
            array,
            SQL(f") AS e) AS {alias}"),
        )
    )


def element_value(alias, kind="string"):
    """Return the element of a ``json_elements`` row as SQL of ``kind``."""
    if not postgres():
        return Entity(alias, "value")
    return _typed(Entity(alias, "value"), kind)


def element_member(alias, key, kind="string"):
    """Return member ``key`` of a ``json_elements`` row when it is an object, else NULL."""
    if postgres():
        member = fn.jsonb_extract_path(Entity(alias, "value"), key)
        return Case(None, [(Entity(alias, "type") == "object", _typed(member, kind))])
    # json_extract fails on text that is not JSON, so a stray string element
    # must yield NULL instead of failing the whole query; CASE guarantees order.
    member = fn.json_extract(Entity(alias, "value"), _json_path((key,)))
    return Case(None, [(Entity(alias, "type") == "object", member)])


def json_flag(expr):
    """Return whether an ``element_member`` read as "boolean" holds true."""
    if postgres():
        return expr == "true"
    return expr.in_([1, "true"])


#
# Transactions, schema versions, backup
#


@contextmanager
def write_transaction():
    """Run a write transaction: SQLite's one writer at a time, PostgreSQL's row locks."""
    # SQLite: a deferred transaction that reads and then writes can fail with
    # SQLITE_BUSY when another writer got in between; IMMEDIATE waits on
    # busy_timeout instead (which still covers writers in other processes,
    # such as the CLI). PostgreSQL: writers run side by side at READ
    # COMMITTED, so a transaction that reads, checks and writes locks what it
    # checks (lock_row, lock_named) or relies on a unique constraint.
    if postgres():
        if database.in_transaction():
            with database.atomic():
                yield
            return
        _row_locks.waited = 0.0
        try:
            with database.atomic():
                yield
        finally:
            _observe(_row_locks.waited)
        return
    asked = time.perf_counter()
    with _write_lock, database.atomic("IMMEDIATE"):
        _locked(asked)
        yield


# Called once per write transaction with the seconds it waited for its lock:
# SQLite's write slot, or on PostgreSQL the row and named locks it took, none
# for a write that needs none (mdm.metrics sets it; this module imports
# nothing of the app).
lock_wait_observer = None

# The seconds this thread's PostgreSQL write transaction waited on locks.
_row_locks = threading.local()


def _locked(asked):
    waited = time.perf_counter() - asked
    if postgres():
        _row_locks.waited = getattr(_row_locks, "waited", 0.0) + waited
    else:
        _observe(waited)


def _observe(seconds):
    observer = lock_wait_observer
    if observer is not None:
        observer(seconds)


def lock_row(model, pk, version=None):
    """Lock a live row until the transaction ends (PostgreSQL); False if it is gone or moved on."""
    # SQLite's writer is alone already. With ``version``, a row at another
    # version counts as moved on: the caller's change was prepared from it.
    if not postgres():
        return True
    query = model.select(model.id).where(
        (model.id == pk) & model.deprovisioned_at.is_null()
    )
    if version is not None:
        query = query.where(model.version == version)
    asked = time.perf_counter()
    # The lock an UPDATE of the row takes: it leaves alone the key-share
    # locks of membership inserts naming the row, so adding a user to a
    # group never waits on a change to that user.
    found = query.for_update("FOR NO KEY UPDATE").exists()
    _locked(asked)
    return found


def lock_named(name):
    """Hold a lock named ``name`` until the transaction ends (PostgreSQL)."""
    # For checks no row or constraint can hold, such as "at most two tokens
    # per connection": every process checking ``name`` waits its turn.
    if postgres():
        asked = time.perf_counter()
        database.execute_sql(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"mdm:{name}",)
        )
        _locked(asked)


def locking(query):
    """Return ``query`` locking the rows it reads until the transaction ends (PostgreSQL)."""
    return query.for_update() if postgres() else query


# SQLSTATEs of a transaction PostgreSQL aborted for losing a race with
# another: serialization_failure and deadlock_detected. Run again, it can
# succeed; nothing of it was written.
RETRYABLE = ("40001", "40P01")
WRITE_ATTEMPTS = 5
RETRY_WAIT = 0.02


class WriteConflict(Exception):
    """A write lost to concurrent writers on every attempt; asking again may succeed."""


def conflicted(error):
    """Return True if ``error`` is PostgreSQL aborting a transaction that may be retried."""
    # Peewee wraps the driver's error, passing it as the first argument.
    for cause in (error, *error.args[:1], error.__cause__, error.__context__):
        if getattr(cause, "pgcode", None) in RETRYABLE:
            return True
    return False


def retried(body, attempts=WRITE_ATTEMPTS):
    """Return ``body()``, a whole write transaction, run again when PostgreSQL aborts it."""
    # Only a transaction of its own can run again: inside another, the
    # outer one is lost with it. The wait is jittered so that the losers of
    # a deadlock do not meet again at once.
    if database.in_transaction():
        return body()
    for attempt in range(attempts):
        try:
            return body()
        except DatabaseError as error:
            if not conflicted(error):
                raise
            if attempt == attempts - 1:
                raise WriteConflict() from error
            time.sleep(random.uniform(0.5, 1.5) * RETRY_WAIT * 2**attempt)


def schema_version(db, name):
    """Return the schema version stored in ``db`` for ``name`` (0 when new)."""
    if not postgres(db):
        return db.execute_sql("PRAGMA user_version").fetchone()[0]
    _create_schema_table(db)
    row = db.execute_sql(
        "SELECT version FROM mdm_schema WHERE name = %s", (name,)
    ).fetchone()
    return row[0] if row else 0


def set_schema_version(db, name, version):
    """Record ``version`` as the schema version of ``name`` in ``db``."""
    if not postgres(db):
        db.execute_sql(f"PRAGMA user_version = {int(version)}")
        return
    _create_schema_table(db)
    db.execute_sql(
        "INSERT INTO mdm_schema (name, version) VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version",
        (name, version),
    )


def _create_schema_table(db):
    # PostgreSQL has no PRAGMA user_version: one row per schema in a table.
    db.execute_sql(
        "CREATE TABLE IF NOT EXISTS mdm_schema "
        "(name TEXT PRIMARY KEY, version INTEGER NOT NULL)"
    )


def lock_for_migration(db):
    """Serialise schema changes between processes starting at once (PostgreSQL)."""
    if postgres(db):
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK_KEY,))


def try_lock_for_pruning(db):
    """Return False if another process is pruning right now (PostgreSQL)."""
    if not postgres(db):
        return True
    return db.execute_sql(
        "SELECT pg_try_advisory_xact_lock(%s)", (PRUNE_LOCK_KEY,)
    ).fetchone()[0]


def backup(path, progress=None):
    """Copy the live database to ``path`` with SQLite's online backup API."""
    # The copy is a consistent snapshot even while other connections write;
    # returns the number of pages copied. ``progress(copied, total)`` hears
    # each step of the copy.
    import sqlite3

    if postgres():
        raise RuntimeError(
            "mdm backup copies SQLite databases; back up PostgreSQL with pg_dump "
            "(see the README)."
        )
    # Created owner-only, and never over an existing file.
    files.create_private(path, exclusive=True)
    source = sqlite3.connect(database.database, timeout=30)
    target = sqlite3.connect(path)
    try:
        with target:
            source.backup(
                target,
                pages=1024,
                sleep=0.01,
                progress=progress
                and (
                    lambda status, remaining, total: progress(total - remaining, total)
                ),
            )
        check = target.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise RuntimeError(f"The backup failed its integrity check: {check}")
        return target.execute("PRAGMA page_count").fetchone()[0]
    finally:
        target.close()
        source.close()
