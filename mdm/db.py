"""The SQLite database: one deferred handle, bound and migrated by the app factory."""

import inspect
import threading
from contextlib import contextmanager

from peewee import SQL
from peewee import NodeList
from peewee import Value
from playhouse.pool import PooledSqliteDatabase

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

# A pool keeps each waitress thread's connection (and its pragmas) across
# requests instead of reopening the file every time.
database = PooledSqliteDatabase(
    None, pragmas=PRAGMAS, max_connections=64, stale_timeout=300
)

# Writers in this process queue on a lock rather than on SQLite's busy handler,
# which sleeps in growing steps and turns contention into latency spikes.
_write_lock = threading.Lock()


def init_app(app):
    """Bind the database to the configured file, migrate it, and manage connections."""
    from .models import migrate

    bind(app.config["DATABASE"])
    with database.connection_context():
        migrate()
    app.before_request(_connect)
    app.teardown_request(_close)


def like(expr, text, pattern="%{}%"):
    """Match ``text`` with LIKE placed by ``pattern`` ("%{}%" contains), wildcards literal."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return NodeList(
        (expr, SQL("LIKE"), Value(pattern.format(escaped)), SQL("ESCAPE '\\'")),
        parens=True,
    )


class Prepared:
    """A query rendered to SQL once through the ORM, then run with new values.

    Rendering a query costs several times what SQLite takes to answer an
    indexed lookup, so queries on every request's path are rendered on first
    use with a marker for each argument of ``build``; each run binds the real
    values in the markers' places. Arguments are bound as given, so pass
    values the column stores unconverted (text, integers).
    """

    def __init__(self, build):
        self.build = build
        self.names = list(inspect.signature(build).parameters)
        self._compiled = None

    def _compile(self):
        markers = {f"\x00{name}\x00": name for name in self.names}
        query = self.build(*markers)
        sql, params = query.sql()
        # Every parameter must be a marker, or a run would bind stale values.
        order = [markers[param] for param in params]
        self._compiled = (getattr(query, "model", None), sql, order)
        return self._compiled

    def execute(self, **values):
        """Run the query and return the cursor."""
        _, sql, order = self._compiled or self._compile()
        return database.execute_sql(sql, [values[name] for name in order])

    def rows(self, **values):
        """Run a select of one model's columns and return model instances."""
        model = (self._compiled or self._compile())[0]
        return load(model, self.execute(**values))

    def first(self, **values):
        """Return the first row as a model instance, or None."""
        rows = self.rows(**values)
        return rows[0] if rows else None


_load_plans = {}


def load(model, cursor):
    """Build ``model`` instances from a cursor over its columns, as the ORM would."""
    rows = cursor.fetchall()
    if not rows:
        return []
    key = (model, cursor.description)
    plan = _load_plans.get(key)
    if plan is None:
        columns = model._meta.columns
        fields = [columns[item[0]] for item in cursor.description]
        plan = _load_plans[key] = [(f.name, f.python_value) for f in fields]
    result = []
    for row in rows:
        # What the ORM's cursor wrapper does, without a setattr per column.
        obj = model(__no_default__=1)
        obj.__data__ = {
            name: convert(value)
            for (name, convert), value in zip(plan, row, strict=False)
        }
        result.append(obj)
    return result


_statements = {}


def _row_statement(model, kind, names):
    """Render INSERT (or UPDATE by primary key) of the columns ``names`` once."""
    key = (model, kind, names)
    found = _statements.get(key)
    if found is None:
        pk = model._meta.primary_key
        fields = [model._meta.fields[name] for name in names]
        # Unconverted markers: each run converts with the field's db_value itself.
        markers = {f"\x00{field.name}\x00": field for field in fields}
        values = {field: Value(m, converter=False) for m, field in markers.items()}
        if kind == "insert":
            query = model.insert(values)
        else:
            markers["\x00pk\x00"] = pk
            query = model.update(values).where(
                pk == Value("\x00pk\x00", converter=False)
            )
        sql, params = query.sql()
        found = _statements[key] = (sql, [markers[param] for param in params])
    return found


def _saved_names(obj):
    pk = obj._meta.primary_key
    return tuple(
        f.name
        for f in obj._meta.sorted_fields
        if f.name in obj.__data__ and f is not pk
    )


def insert(obj):
    """Insert a new model instance as ``obj.save(force_insert=True)`` does.

    The statement is rendered once per model and column set: inside a write
    transaction the ORM's rendering took longer than SQLite's insert, and
    every other writer waited for it.
    """
    if obj._pk is not None:
        return obj.save(force_insert=True)
    sql, fields = _row_statement(type(obj), "insert", _saved_names(obj))
    data = obj.__data__
    cursor = database.execute_sql(sql, [f.db_value(data[f.name]) for f in fields])
    obj._pk = cursor.lastrowid
    obj._dirty.discard(obj._meta.primary_key.name)
    obj._dirty -= {f.name for f in fields}
    return 1


def update(obj):
    """Write every loaded column of a saved model instance, as ``obj.save()`` does."""
    if obj._pk is None:
        return obj.save()
    sql, fields = _row_statement(type(obj), "update", _saved_names(obj))
    data = obj.__data__
    pk = obj._meta.primary_key
    params = [f.db_value(obj._pk if f is pk else data[f.name]) for f in fields]
    cursor = database.execute_sql(sql, params)
    obj._dirty -= {f.name for f in fields if f is not pk}
    return cursor.rowcount


def bind(path):
    """Point the database at ``path``, dropping pooled connections to any other file."""
    if not database.deferred:
        database.close_all()
    # The pool hands a connection to one thread at a time, possibly a new one.
    database.init(path, pragmas=PRAGMAS, check_same_thread=False)


def _connect():
    database.connect(reuse_if_open=True)


def _close(exc):
    if not database.is_closed():
        database.close()


@contextmanager
def write_transaction():
    """Run a write transaction that takes SQLite's write lock up front.

    A deferred transaction that reads and then writes can fail with SQLITE_BUSY
    when another writer got in between; IMMEDIATE waits on busy_timeout instead
    (which still covers writers in other processes, such as the CLI).
    """
    with _write_lock, database.atomic("IMMEDIATE"):
        yield


def backup(path):
    """Copy the live database to ``path`` with SQLite's online backup API.

    The copy is a consistent snapshot even while other connections write;
    returns the number of pages copied.
    """
    import sqlite3

    source = sqlite3.connect(database.database, timeout=30)
    target = sqlite3.connect(path)
    try:
        with target:
            source.backup(target, pages=1024, sleep=0.01)
        check = target.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise RuntimeError(f"The backup failed its integrity check: {check}")
        return target.execute("PRAGMA page_count").fetchone()[0]
    finally:
        target.close()
        source.close()
