"""The SQLite database: one deferred handle, bound and migrated by the app factory."""

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
