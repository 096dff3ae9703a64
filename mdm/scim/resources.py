"""Reading users and groups, and the optimistic write that every SCIM change goes through."""

from peewee import IntegrityError

from .. import activity
from ..db import ordering
from ..db import write_transaction
from ..models import Group
from ..models import User
from ..models import touch
from ..models import utcnow
from . import filters
from . import schema
from .errors import ScimError
from .http import check_if_match

# Optimistic attempts before a write reads and prepares under the lock itself.
ATTEMPTS = 4


class Stale(Exception):
    """The row changed between reading it and taking the write lock."""


def get_live(model, scim_id):
    """Return the live user or group with ``scim_id`` or raise a SCIM 404."""
    # NUL is never stored, and PostgreSQL refuses it even as a parameter.
    row = None
    if "\x00" not in scim_id:
        # scim_id is unique, so no LIMIT is needed to fetch at most one row.
        found = list(model.live().where(model.scim_id == scim_id))
        row = found[0] if found else None
    if row is None:
        raise ScimError.not_found(f"{kind_of(model)} {scim_id} not found.")
    return row


def kind_of(model):
    return "User" if model is User else "Group"


def write(read, prepare, commit):
    """Prepare a change outside the write lock, commit it to the row it was read from."""
    # read() loads the row; prepare(row) computes the change (parsing, PATCH
    # on a copy, hashing, member resolution); commit(row, change) writes it
    # under the lock, raising Stale when the row's version moved since
    # read(). A stale change is prepared again from a fresh read; the last
    # attempt reads and prepares under the lock, so every write lands.
    for _ in range(ATTEMPTS - 1):
        row = read()
        change = prepare(row)
        if not change.writes:
            return row, change
        try:
            with write_transaction():
                commit(row, change)
            return row, change
        except Stale:
            continue
    with write_transaction():
        row = read()
        change = prepare(row)
        if change.writes:
            commit(row, change)
    return row, change


def save_if_current(row, names, expected_version):
    """Write ``names`` of ``row`` if it is live and still at ``expected_version``; else Stale."""
    model = type(row)
    written = (
        model.update({getattr(model, name): getattr(row, name) for name in names})
        .where(
            (model.id == row.id)
            & (model.version == expected_version)
            & model.deprovisioned_at.is_null()
        )
        .execute()
    )
    if written != 1:
        raise Stale()


def insert(row, uniqueness_error):
    """Insert a new row under the write lock, answering 409 when its name is taken."""
    try:
        with write_transaction():
            row.save(force_insert=True)
    except IntegrityError:
        raise uniqueness_error from None


#
# Search
#


def search(model, resource_type, params):
    """Return (the requested page, the total matching), both run in the database."""
    query, page = _lookup(model, params) or _query(model, resource_type, params)
    return page, _total(query, page, params)


def _query(model, resource_type, params):
    query = model.live()
    if params.filter:
        node = filters.parse(params.filter)
        query = query.where(filters.to_expression(node, resource_type))
    if not params.count:
        return query, []
    order = [model.id]
    if params.sort_by:
        key = filters.sort_expression(params.sort_by, resource_type)
        order.insert(0, ordering(key, params.descending))
    page = query.order_by(*order).offset(params.start_index - 1).limit(params.count)
    return query, list(page)


# The attributes an identity provider looks resources up by: answered
# without parsing the filter, by the SQL the general compiler gives.
LOOKUP_ATTRIBUTES = {
    User: ("userName", "externalId", "id"),
    Group: ("displayName", "externalId", "id"),
}
_LOOKUPS = {
    (model, name.lower()): name
    for model, names in LOOKUP_ATTRIBUTES.items()
    for name in names
}
_LOOKUP_TYPES = {User: schema.user_type(), Group: schema.GROUP_TYPE}


def _lookup(model, params):
    """Answer a plain ``attribute eq "value"`` search without the filter parser, or None."""
    if not params.filter or params.sort_by:
        return None
    simple = filters.simple_eq(params.filter)
    if simple is None:
        return None
    attribute = _LOOKUPS.get((model, simple[0].lower()))
    if attribute is None:
        return None
    node = filters.Compare(filters.Path(None, attribute), "eq", simple[1])
    query = model.live().where(filters.to_expression(node, _LOOKUP_TYPES[model]))
    if not params.count:
        return query, []
    page = query.order_by(model.id).offset(params.start_index - 1).limit(params.count)
    return query, list(page)


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


def deprovision(model, scim_id, if_match=None):
    """Mark a live user or group deprovisioned (RFC 7644 §3.6); the directory keeps it."""

    def prepare(row):
        check_if_match(row, if_match)
        return _Deprovision()

    def commit(row, change):
        expected = row.version
        row.deprovisioned_at = utcnow()
        touch(row)
        save_if_current(row, ("deprovisioned_at", "version", "last_modified"), expected)

    row, _ = write(lambda: get_live(model, scim_id), prepare, commit)
    target = row.user_name if model is User else row.display_name
    activity.note("deleted (kept as deprovisioned)", target=target)
    return row
