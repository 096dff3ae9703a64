"""Copy a SQLite installation into an empty PostgreSQL database, every table, and verify it."""

from .activity_store import ACTIVITY_MODELS
from .activity_store import SCHEMA_VERSION as ACTIVITY_SCHEMA_VERSION
from .activity_store import activity_db
from .db import connect_database
from .db import database
from .db import postgres
from .db import set_schema_version
from .models import MODELS
from .models import migrate

BATCH = 500


class CopyError(Exception):
    """A copy the rules refuse, or one whose counts do not match."""


def copy_database(source_path, activity_path, url, echo=print, progress=None):
    """Copy the SQLite files into the PostgreSQL database at ``url``; return counts per table."""
    # ``progress(table, rows)`` is called before each table and returns a
    # context manager whose ``update(n)`` hears each batch of ``n`` rows.
    # Everything is written in one transaction: if anything fails, or a count
    # differs afterwards, the target is left as it was.
    source = connect_database(source_path)
    activity_source = connect_database(activity_path)
    target = connect_database(url, max_connections=1)
    if not postgres(target):
        raise CopyError("The target must be a postgresql:// URL.")
    saved = database.obj, activity_db.obj
    # The models and the schema helpers speak through the shared handles.
    database.initialize(target)
    activity_db.initialize(target)
    counts = {}
    try:
        with target.connection_context(), target.atomic():
            migrate()
            target.create_tables(ACTIVITY_MODELS, safe=True)
            set_schema_version(target, "activity", ACTIVITY_SCHEMA_VERSION)
            for model in MODELS + ACTIVITY_MODELS:
                if model.select().exists(target):
                    raise CopyError(
                        f"The target already has {model._meta.table_name} rows; "
                        "copy into an empty database."
                    )
            tables = [(model, source) for model in MODELS]
            tables += [(model, activity_source) for model in ACTIVITY_MODELS]
            for model, db in tables:
                name = model._meta.table_name
                with source_count(model, db, progress) as bar:
                    counts[name] = _copy(model, db, target, bar.update)
                echo(f"{name}: {counts[name]}")
            for model in MODELS + ACTIVITY_MODELS:
                copied = model.select().count(target)
                expected = counts[model._meta.table_name]
                if copied != expected:
                    raise CopyError(
                        f"{model._meta.table_name}: {expected} rows read, {copied} stored."
                    )
    finally:
        database.initialize(saved[0])
        activity_db.initialize(saved[1])
        target.close_all()
        source.close_all()
        activity_source.close_all()
    return counts


class _Silent:
    """A progress bar that shows nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, rows):
        pass


def source_count(model, source, progress):
    """Return the progress bar for copying ``model``'s rows out of ``source``."""
    if progress is None:
        return _Silent()
    with source.connection_context():
        rows = model.select().count(source)
    return progress(model._meta.table_name, rows)


def _copy(model, source, target, copied=None):
    """Copy one table in primary-key order and return how many rows were read."""
    fields = list(model._meta.sorted_fields)
    key = model._meta.primary_key
    total = 0
    last = None
    with source.connection_context():
        while True:
            query = model.select(*fields).order_by(key).limit(BATCH)
            if last is not None:
                query = query.where(key > last)
            # Read through the fields' converters: SQLite keeps booleans as
            # 0/1 and times as text, which PostgreSQL's columns do not take.
            rows = list(query.tuples().execute(source))
            if not rows:
                break
            target.execute(model.insert_many(rows, fields=fields))
            total += len(rows)
            last = rows[-1][fields.index(key)]
            if copied is not None:
                copied(len(rows))
    if key.field_type == "AUTO":
        # Explicit ids leave the serial sequence behind; move it past them.
        table = model._meta.table_name
        target.execute_sql(
            f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{key.column_name}'), "
            f'COALESCE((SELECT MAX("{key.column_name}") FROM "{table}"), 0) + 1, false)'
        )
    return total
