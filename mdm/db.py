"""The SQLite database: one deferred handle, bound and migrated by the app factory."""

from peewee import SqliteDatabase

# WAL lets readers run beside the one writer; busy_timeout makes a second
# writer wait instead of failing with "database is locked".
PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 15000,
    "synchronous": "normal",
    "cache_size": -32000,
}

database = SqliteDatabase(None, pragmas=PRAGMAS)


def init_app(app):
    """Bind the database to the configured file, migrate it, and manage connections."""
    from .models import migrate

    database.init(app.config["DATABASE"], pragmas=PRAGMAS)
    with database.connection_context():
        migrate()
    app.before_request(_connect)
    app.teardown_request(_close)


def _connect():
    database.connect(reuse_if_open=True)


def _close(exc):
    if not database.is_closed():
        database.close()


def write_transaction():
    """Begin a write transaction that takes the write lock up front.

    A deferred transaction that reads and then writes can fail with SQLITE_BUSY
    when another writer got in between; IMMEDIATE waits on busy_timeout instead.
    """
    return database.atomic("IMMEDIATE")
