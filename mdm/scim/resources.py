"""Reading users and groups, and the optimistic write that every SCIM change goes through."""

import functools

from peewee import IntegrityError
from peewee import Value
from peewee import fn

from .. import activity
from .. import webhooks
from ..db import Prepared
from ..db import WriteConflict
from ..db import among
from ..db import counted
from ..db import lock_row
from ..db import most_parameters
from ..db import ordering
from ..db import postgres
from ..db import records
from ..db import retried
from ..db import value_counted
from ..db import write_transaction
from ..models import Group
from ..models import ListedUser
from ..models import User
from ..models import utcnow
from . import filters
from . import schema
from .errors import ScimError
from .http import check_if_match

# Optimistic attempts before a write reads and prepares under the lock itself.
ATTEMPTS = 4


class Stale(Exception):
    """The row changed between reading it and taking the write lock."""


class Taken(IntegrityError):
    """An INSERT found one of the row's unique values already stored."""


def get_live(model, scim_id):
    """Return the live user or group with ``scim_id`` or raise a SCIM 404."""
    # NUL is never stored, and PostgreSQL refuses it even as a parameter.
    row = None if "\x00" in scim_id else _LIVE_BY_ID[model].first(scim_id=scim_id)
    if row is None:
        raise ScimError.not_found(f"{kind_of(model)} {scim_id} not found.")
    return row


def _live_by_id(model):
    # scim_id is unique, so no LIMIT is needed to fetch at most one row.
    return Prepared(lambda scim_id: model.live().where(model.scim_id == scim_id))


_LIVE_BY_ID = {User: _live_by_id(User), Group: _live_by_id(Group)}


def kind_of(model):
    return "User" if model is User else "Group"


def write(read, prepare, commit):
    """Prepare a change outside the write lock, commit it to the row it was read from."""
    # read() loads the row; prepare(row) computes the change (parsing, PATCH
    # on a copy, hashing, member resolution); commit(row, change) writes it
    # under the lock, raising Stale when the row's version moved since
    # read(). A stale change is prepared again from a fresh read; the last
    # attempt reads and prepares under the lock, so every write lands.
    # On PostgreSQL the lock is the row's own: taken first, before any
    # membership row, so writers to one resource queue in one order and
    # writers to different resources never wait on each other.
    for _ in range(ATTEMPTS - 1):
        row = read()
        change = prepare(row)
        if not change.writes:
            return row, change

        def attempt(row=row, change=change):
            with write_transaction():
                if not lock_row(type(row), row.id, row.version):
                    raise Stale()
                commit(row, change)

        try:
            _retried(attempt)
            return row, change
        except Stale:
            continue

    def last():
        with write_transaction():
            row = read()
            if postgres():
                lock_row(type(row), row.id)
                # Read again under the lock, which holds the row where it is
                # (or read() answers 404: it was deprovisioned meanwhile).
                row = read()
            change = prepare(row)
            if change.writes:
                commit(row, change)
            return row, change

    return _retried(last)


def _retried(body):
    """Run a write transaction, again if PostgreSQL aborts it; a 503 if it never lands."""
    try:
        return retried(body)
    except WriteConflict:
        raise ScimError(
            503,
            None,
            "The change conflicted with concurrent changes; retry the request.",
            {"Retry-After": "1"},
        ) from None


# Writes are rendered once per model and column set, with a marker for each
# value, and bound to values the fields convert themselves (Field.db_value);
# rendering took longer than SQLite's write, and ran for every write.
_statements = {}


def _statement(model, kind, names):
    key = (model, kind, names)
    found = _statements.get(key)
    if found is None:
        fields = [getattr(model, name) for name in names]

        def build(*markers):
            # converter=False: a marker is bound as it stands, not converted.
            values = {
                f: Value(m, converter=False)
                for f, m in zip(fields, markers, strict=False)
            }
            if kind == "insert":
                # A taken unique value inserts nothing and returns no key
                # (Taken) instead of aborting the transaction, so rows
                # sharing one need no savepoint each.
                query = model.insert(values).on_conflict_ignore()
                return query.returning(model._meta.primary_key)
            current = [Value(m, converter=False) for m in markers[len(fields) :]]
            return model.update(values).where(
                (model.id == current[0])
                & (model.version == current[1])
                & model.deprovisioned_at.is_null()
            )

        extra = ("id", "expected_version") if kind == "update" else ()
        found = _statements[key] = Prepared(build, names + extra)
    return found


def _bound(model, values):
    convert = _converters(model)
    return {name: convert[name](v) for name, v in values.items()}


@functools.cache
def _converters(model):
    """Return {column: Field.db_value} for every column of ``model`` but its key, in order."""
    # Looked up once per model: a Bulk load binds an INSERT for every user.
    key = model._meta.primary_key
    return {f.name: f.db_value for f in model._meta.sorted_fields if f is not key}


class Save:
    """An UPDATE of a row's ``values``, to run if the row is still at ``expected_version``."""

    def __init__(self, row, values, expected_version):
        self.row, self.values = row, values
        self.statement = _statement(type(row), "update", tuple(values))
        self.params = {
            **_bound(type(row), values),
            "id": row.id,
            "expected_version": expected_version,
        }

    def run(self):
        """Write under the lock if the row is live and unchanged since read; else Stale."""
        if self.statement.execute(**self.params).rowcount != 1:
            raise Stale()
        for name, value in self.values.items():
            setattr(self.row, name, value)


def versioned(row, **values):
    """Return ``values`` with the row's next version and lastModified."""
    return {
        **values,
        "version": row.version + 1,
        "last_modified": max(utcnow(), row.last_modified),
    }


class Insert:
    """An INSERT of a new row with every column the model gives it."""

    def __init__(self, row):
        model = type(row)
        converters = _converters(model)
        self.row, self.key = row, model._meta.primary_key
        self.statement = _statement(model, "insert", tuple(converters))
        self.params = {
            name: convert(getattr(row, name)) for name, convert in converters.items()
        }

    def run(self):
        """Insert under the lock and give the row its new key; Taken if a unique value is."""
        key = self.statement.execute(**self.params).fetchone()
        if key is None:
            raise Taken()
        setattr(self.row, self.key.name, key[0])


class NewRow:
    """A row to insert, prepared outside the write lock, with the error a taken name gets."""

    def __init__(self, row, uniqueness_error, events=()):
        self.row = row
        self.statement = Insert(row)
        self.uniqueness_error = uniqueness_error
        self.events = events

    def run(self):
        self.statement.run()
        webhooks.write(self.events)


def insert(new):
    """Insert a prepared NewRow under the write lock, answering 409 when its name is taken."""

    def attempt():
        with write_transaction():
            new.run()

    try:
        _retried(attempt)
    except IntegrityError:
        raise new.uniqueness_error from None


def insert_each(new_rows, errors_allowed=None):
    """Insert prepared rows in one write transaction, each on its own; return their errors.

    The list holds None for a row inserted and its uniqueness error for one
    whose name was taken, in order; it stops at the row that makes
    ``errors_allowed`` errors.
    """
    # One commit for many rows: a commit writes every page the row touched
    # in the table, its indexes and the search index, so a commit per row
    # costs far more than the row. One statement inserts them all: a taken
    # name inserts nothing (as if it had been sent by itself), and SQLite
    # runs the statement without the interpreter lock, so another request
    # is parsed meanwhile; a statement per row took the lock back each time.

    def attempt():
        with write_transaction():
            keys = _insert_many([new.statement for new in new_rows])
            errors = []
            failed = 0
            for new, key in zip(new_rows, keys, strict=True):
                errors.append(None if key is not None else new.uniqueness_error)
                failed += key is None
                if errors_allowed is not None and failed >= errors_allowed:
                    break
            # Rows past the one that made failOnErrors errors were never sent.
            unsent = [key for key in keys[len(errors) :] if key is not None]
            if unsent:
                model = type(new_rows[0].row)
                model.delete().where(model.id.in_(unsent)).execute()
            for new, error in zip(new_rows, errors, strict=False):
                if error is None:
                    webhooks.write(new.events)
            return errors, keys

    errors, keys = _retried(attempt)
    for new, error, key in zip(new_rows, errors, keys, strict=False):
        if error is None:
            setattr(new.row, new.statement.key.name, key)
    return errors


def _insert_many(inserts):
    """Run prepared single-row INSERTs as few statements; return each row's key or None."""
    per_statement = max(1, most_parameters() // (len(inserts[0].params) + 1))
    keys = []
    for start in range(0, len(inserts), per_statement):
        keys += _insert_statement(inserts[start : start + per_statement])
    return keys


def _insert_statement(inserts):
    model = type(inserts[0].row)
    names = tuple(inserts[0].params)
    if postgres():
        # Rows come back in no promised order: the scim_id matches them up.
        statement = _many(model, names, len(inserts), explicit_keys=False)
        params = _numbered(insert.params for insert in inserts)
        found = dict(statement.execute(**params).fetchall())
        return [found.get(insert.params["scim_id"]) for insert in inserts]
    # SQLite returns RETURNING rows one step at a time, each taking the
    # interpreter lock back: the keys are given instead, after the largest.
    first = (model.select(fn.MAX(model.id)).scalar() or 0) + 1
    keys = range(first, first + len(inserts))
    statement = _many(model, names, len(inserts), explicit_keys=True)
    params = _numbered(
        {"id": key, **insert.params} for key, insert in zip(keys, inserts, strict=True)
    )
    if statement.execute(**params).rowcount == len(inserts):
        return list(keys)
    stored = set(
        model.select(model.id).where(model.id.between(first, keys[-1])).scalars()
    )
    return [key if key in stored else None for key in keys]


def _numbered(rows):
    return {
        f"{name}.{i}": value
        for i, row in enumerate(rows)
        for name, value in row.items()
    }


def _many(model, names, count, explicit_keys):
    key = (model, "insert_many", names, count, explicit_keys)
    found = _statements.get(key)
    if found is None:
        columns = (("id",) if explicit_keys else ()) + names
        fields = [getattr(model, name) for name in columns]

        def build(*markers):
            rows = [
                {
                    field: Value(markers[i * len(fields) + j], converter=False)
                    for j, field in enumerate(fields)
                }
                for i in range(count)
            ]
            query = model.insert_many(rows).on_conflict_ignore()
            if not explicit_keys:
                query = query.returning(model.scim_id, model.id)
            return query

        numbered = tuple(f"{name}.{i}" for i in range(count) for name in columns)
        found = _statements[key] = Prepared(build, numbered)
    return found


#
# Search
#


def search(model, resource_type, params):
    """Return (the requested page, the total matching), both run in the database."""
    query, page = _lookup(model, params) or _query(model, resource_type, params)
    return page, _total(query, page, params)


def _query(model, resource_type, params):
    query = model.live()
    node = filters.parse(params.filter) if params.filter else None
    if node is not None:
        query = query.where(filters.to_expression(node, resource_type))
    total = _kept_count(model, resource_type, node) or query
    if not params.count:
        return total, []
    order = [model.id]
    if params.sort_by:
        key = filters.sort_expression(params.sort_by, resource_type)
        order.insert(0, ordering(key, params.descending))
    elif node is not None and filters.bounds_a_time(node, resource_type):
        # Recent users have the high ids: for the few changed since a time
        # both engines walked every user in id order (SQLite keeps no range
        # statistics; PostgreSQL assumes matches spread evenly over ids).
        # Ordered by an expression, the range is read off its index and only
        # its rows are sorted: the page costs what its count does.
        order = [model.id + 0]
    offset = params.start_index - 1
    record = LISTED.get(model)
    columns = record.columns if record is not None else ()
    if offset < DEEP_OFFSET and not _ids_first(node, resource_type, params):
        page = query.select(*columns).order_by(*order).offset(offset)
        page = page.limit(params.count)
    else:
        # A deep page finds its ids first, skipping index entries only; then
        # reads just its own rows. PostgreSQL otherwise fetches every skipped
        # row from the table: a second for the last page of a million users.
        ids = query.select(model.id).order_by(*order).offset(offset)
        ids = ids.limit(params.count)
        page = model.select(*columns).where(among(model.id, ids)).order_by(*order)
    return total, records(page, record) if record is not None else list(page)


# What a listed row of each model is read as: a record of fewer columns than
# a model instance, built for less (models.ListedUser); else the instance.
LISTED = {User: ListedUser}


# The startIndex from which a page's ids are found before its rows.
DEEP_OFFSET = 1000


def _ids_first(node, resource_type, params):
    """Whether a page of users of one attribute value finds its ids before its rows."""
    # PostgreSQL prices each row read through the value's index as a random
    # read from disk (random_page_cost 4) and, for a department of 2% of a
    # million users, walked the primary key past 5,000 users to find 100 (2.5-
    # 3.6 ms). Their ids alone it reads off the index, rows untouched, then
    # fetches the 100: 1.2-1.4 ms. SQLite reads the index either way.
    if node is None or params.sort_by or not postgres():
        return False
    return filters.selects_a_value(node, resource_type)


class _Kept:
    """Live users, all or active or inactive, of one attribute value or any, counted by triggers."""

    def __init__(self, active=None, value=None):
        self.active = active
        self.value = value  # (column, text), or None for every user

    def count(self):
        live, active = (
            counted(User) if self.value is None else value_counted(User, *self.value)
        )
        if self.active is None:
            return live
        return active if self.active else live - active


def _kept_count(model, resource_type, node):
    """Return a kept count for the filters triggers count users of, else None."""
    # No filter, "active eq <bool>", and a grouping attribute "eq" a text,
    # alone or "and" an "active eq <bool>" (db.kept_value_counts).
    if model is not User:
        return None
    if node is None:
        return _Kept()
    active = _active_eq(resource_type, node)
    if active is not None:
        return _Kept(active)
    value = filters.counted_value(node, resource_type)
    if value is not None:
        return _Kept(value=value)
    if not isinstance(node, filters.And):
        return None
    for one, other in ((node.left, node.right), (node.right, node.left)):
        value = filters.counted_value(one, resource_type)
        active = _active_eq(resource_type, other) if value is not None else None
        if active is not None:
            return _Kept(active, value)
    return None


def _active_eq(resource_type, node):
    """Return the boolean of an ``active eq <bool>`` filter, else None."""
    if not isinstance(node, filters.Compare) or node.op != "eq":
        return None
    # Resolved as the compiler resolves it: any spelling of the core active.
    found = resource_type.resolve(str(node.path))
    if found is None or found[0] is not resource_type.core or found[2] is not None:
        return None
    if found[1].name != "active":
        return None
    return filters.as_bool(node.value)


# The attributes an identity provider looks resources up by: answered
# without parsing the filter, by the SQL the general compiler gives.
LOOKUP_ATTRIBUTES = {
    User: ("userName", "externalId", "id"),
    Group: ("displayName", "externalId", "id"),
}


class _Lookup:
    """The page and count queries of ``attribute eq "value"`` on one model, rendered once."""

    def __init__(self, model, attribute):
        resource_type = _LOOKUP_TYPES[model]

        def matching(value):
            # Compiled by the general compiler, so both paths run the same SQL.
            node = filters.Compare(filters.Path(None, attribute), "eq", value)
            return model.live().where(filters.to_expression(node, resource_type))

        self.page = Prepared(
            lambda value, offset, limit: (
                matching(value).order_by(model.id).offset(offset).limit(limit)
            )
        )
        self.count = Prepared(lambda value: matching(value).select(fn.COUNT(model.id)))


_LOOKUP_TYPES = {User: schema.user_type(), Group: schema.GROUP_TYPE}
_LOOKUPS = {
    (model, name.lower()): _Lookup(model, name)
    for model, names in LOOKUP_ATTRIBUTES.items()
    for name in names
}


class _Matches:
    """What a lookup matched, counted on demand like the ORM query it stands for."""

    def __init__(self, lookup, value):
        self.lookup = lookup
        self.value = value

    def count(self):
        return self.lookup.count.execute(value=self.value).fetchone()[0]


def _lookup(model, params):
    """Answer a plain ``attribute eq "value"`` search without the filter parser, or None."""
    if not params.filter or params.sort_by:
        return None
    simple = filters.simple_eq(params.filter)
    if simple is None:
        return None
    lookup = _LOOKUPS.get((model, simple[0].lower()))
    if lookup is None:
        return None
    value = simple[1]
    if not params.count:
        return _Matches(lookup, value), []
    page = lookup.page.rows(
        value=value, offset=params.start_index - 1, limit=params.count
    )
    return _Matches(lookup, value), page


def _total(query, page, params):
    """Count matches, skipping the COUNT when a first, short page already holds them all."""
    if params.start_index == 1 and 0 < len(page) < params.count:
        return len(page)
    if params.start_index == 1 and params.count and not page:
        return 0
    return query.count()


#
# Deprovisioning
#


class _Deprovision:
    writes = True

    def __init__(self, row):
        values = versioned(row, deprovisioned_at=utcnow())
        self.save = Save(row, values, row.version)
        self.events = _deprovision_events(row, values)


def _deprovision_events(row, values):
    if not webhooks.active():
        return []
    gone = webhooks.changed(row, values)
    if isinstance(row, User):
        return [webhooks.user_event("user.deprovisioned", gone)]
    resource = webhooks.group_resource(gone)
    return [webhooks.Event("group.deleted", resource, "Group", row.scim_id)]


def deprovision(model, scim_id, if_match=None):
    """Mark a live user or group deprovisioned (RFC 7644 §3.6); the directory keeps it."""

    def prepare(row):
        check_if_match(row, if_match)
        return _Deprovision(row)

    def commit(row, change):
        change.save.run()
        webhooks.write(change.events)

    row, _ = write(lambda: get_live(model, scim_id), prepare, commit)
    target = row.user_name if model is User else row.display_name
    activity.note("deleted (kept as deprovisioned)", target=target)
    return row
