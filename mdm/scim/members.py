"""Group membership in bulk: a request's member ids go to the database as one JSON array."""

# A PATCH may name tens of thousands of members, and the inserts run under
# the write lock. Rendering each id into SQL costs far more than the
# database's work; one array parameter keeps every step to one statement.

import json

from ..db import database
from ..db import postgres
from ..models import Membership
from ..models import User


def _elements():
    """Return (FROM source, integer element, text element) for one JSON array parameter."""
    if postgres():
        return (
            "json_array_elements_text(%s::json) WITH ORDINALITY AS j(value, key)",
            "CAST(j.value AS integer)",
            "j.value",
        )
    return "json_each(?) AS j", "j.value", "j.value"


def _param():
    return "%s" if postgres() else "?"


def _tables():
    # Quoted: "user" is a reserved word in PostgreSQL.
    return f'"{User._meta.table_name}"', f'"{Membership._meta.table_name}"'


def user_keys(scim_ids):
    """Map SCIM ids of live users to primary keys, in one query."""
    # NUL is never stored, and PostgreSQL refuses it even inside JSON text.
    ids = [scim_id for scim_id in scim_ids if "\x00" not in scim_id]
    if not ids:
        return {}
    source, _, text = _elements()
    users, _ = _tables()
    cursor = database.execute_sql(
        f"SELECT u.scim_id, u.id FROM {source} JOIN {users} AS u "
        f"ON u.scim_id = {text} WHERE u.deprovisioned_at IS NULL",
        (json.dumps(ids),),
    )
    return dict(cursor.fetchall())


def add(group, pks, collect=None):
    """Add live users to a group in the given order, skipping members; return how many."""
    # ``collect``, a list, also gets the SCIM ids of the users added (for
    # webhook events), from the same statement.
    if not pks:
        return 0
    source, number, _ = _elements()
    users, memberships = _tables()
    p = _param()
    return _run(
        f"INSERT INTO {memberships} (group_id, user_id) "
        f"SELECT {p}, u.id FROM {source} JOIN {users} AS u ON u.id = {number} "
        "WHERE u.deprovisioned_at IS NULL ORDER BY j.key ON CONFLICT DO NOTHING",
        (group.id, json.dumps(list(pks))),
        collect,
    )


def remove(group, pks, collect=None):
    """Remove users from a group, ignoring non-members; return how many were removed."""
    if not pks:
        return 0
    source, number, _ = _elements()
    _, memberships = _tables()
    p = _param()
    return _run(
        f"DELETE FROM {memberships} WHERE group_id = {p} "
        f"AND user_id IN (SELECT {number} FROM {source})",
        (group.id, json.dumps(list(pks))),
        collect,
    )


def delete(query, collect=None):
    """Run a peewee DELETE of memberships; return how many rows went."""
    sql, params = query.sql()
    return _run(sql, params, collect)


def _run(sql, params, collect):
    if collect is None:
        return max(database.execute_sql(sql, params).rowcount, 0)
    users, _ = _tables()
    # A scalar subquery in RETURNING: both engines allow it, and it names
    # each member by SCIM id without a second pass over the rows.
    sql += f" RETURNING (SELECT scim_id FROM {users} WHERE {users}.id = user_id)"
    found = [row[0] for row in database.execute_sql(sql, params).fetchall()]
    collect.extend(found)
    return len(found)
