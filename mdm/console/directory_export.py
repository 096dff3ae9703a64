"""Users and groups (with members) as CSV or JSON text, read in keyset batches."""

import json

from ..db import database
from ..models import Group
from ..models import Membership
from ..models import User
from ..models import groups_of
from .export import csv_chunks
from .export import json_chunks
from .export import json_value

# Rows read per query: memory stays flat however large the directory or a group.
EXPORT_BATCH = 1000
FORMATS = ("csv", "json")


def _keyset(query, model, size=None):
    """Yield the rows of ``query`` in id order, one connection and query per batch."""
    last = 0
    while True:
        with database.connection_context():
            rows = list(
                query.where(model.id > last)
                .order_by(model.id)
                .limit(size or EXPORT_BATCH)
                .objects()
            )
        if not rows:
            return
        yield rows
        last = rows[-1].id


# Every column but ``data`` and the password hash: the export never needs
# the stored document, the largest part of each row.
USER_FIELDS = (
    User.id,
    User.scim_id,
    User.user_name,
    User.display_name,
    User.given_name,
    User.family_name,
    User.email,
    User.external_id,
    User.department,
    User.title,
    User.active,
    User.source,
    User.created,
    User.last_modified,
    User.deprovisioned_at,
)


def status(user):
    """Return a user's status as the console shows it."""
    if user.deprovisioned_at is not None:
        return "deprovisioned"
    return "active" if user.active else "disabled"


def user_rows(query):
    """Yield a dict per user of ``query``, with their live groups, in id order."""
    for batch in _keyset(query.select(*USER_FIELDS), User):
        with database.connection_context():
            member_of = groups_of([u.id for u in batch])
        for u in batch:
            yield {
                "id": u.scim_id,
                "userName": u.user_name,
                "displayName": u.display_name,
                "givenName": u.given_name,
                "familyName": u.family_name,
                "email": u.email,
                "externalId": u.external_id,
                "department": u.department,
                "title": u.title,
                "active": u.active,
                "status": status(u),
                "source": u.source,
                "groups": [
                    {"id": gid, "displayName": name}
                    for gid, name in member_of.get(u.id, ())
                ],
                "created": u.created,
                "lastModified": u.last_modified,
                "deprovisionedAt": u.deprovisioned_at,
            }


USER_COLUMNS = [
    (label, lambda row, key=key: row[key])
    for label, key in (
        ("id", "id"),
        ("userName", "userName"),
        ("displayName", "displayName"),
        ("givenName", "givenName"),
        ("familyName", "familyName"),
        ("email", "email"),
        ("externalId", "externalId"),
        ("department", "department"),
        ("title", "title"),
        ("active", "active"),
        ("status", "status"),
        ("source", "source"),
    )
] + [
    ("groups", lambda row: "; ".join(g["displayName"] for g in row["groups"])),
    ("created", lambda row: row["created"]),
    ("lastModified", lambda row: row["lastModified"]),
    ("deprovisionedAt", lambda row: row["deprovisionedAt"]),
]


def members(group_pk):
    """Yield batches of (SCIM id, userName) of a group's live members, in id order."""
    last = 0
    while True:
        with database.connection_context():
            rows = list(
                Membership.select(Membership.user, User.scim_id, User.user_name)
                .join(User)
                .where(
                    (Membership.group == group_pk)
                    & (Membership.user > last)
                    & User.deprovisioned_at.is_null()
                )
                .order_by(Membership.user)
                .limit(EXPORT_BATCH)
                .tuples()
            )
        if not rows:
            return
        yield [(scim_id, name) for _, scim_id, name in rows]
        last = rows[-1][0]


def _group_fields(g):
    return {
        "id": g.scim_id,
        "displayName": g.display_name,
        "externalId": g.external_id,
        "source": g.source,
        "created": g.created,
        "lastModified": g.last_modified,
    }


GROUP_COLUMNS = [
    (label, lambda row, label=label: row[label])
    for label in (
        "id",
        "displayName",
        "externalId",
        "source",
        "created",
        "lastModified",
        "memberId",
        "memberUserName",
    )
]


def group_member_rows(query):
    """Yield a dict per (group, live member) of ``query``; a group without any, once."""
    for batch in _keyset(query, Group):
        for g in batch:
            fields = _group_fields(g)
            empty = True
            for chunk in members(g.id):
                empty = False
                for scim_id, name in chunk:
                    yield {**fields, "memberId": scim_id, "memberUserName": name}
            if empty:
                yield {**fields, "memberId": None, "memberUserName": None}


def groups_json(query):
    """Yield the text of a JSON array of groups, each member list streamed in batches."""

    def dump(value):
        return json.dumps(value, ensure_ascii=False, default=json_value)

    yield "["
    first = True
    for batch in _keyset(query, Group):
        for g in batch:
            head = dump(_group_fields(g))[:-1]  # the object, still open
            yield ("\n" if first else ",\n") + head + ', "members": ['
            first = False
            separator = ""
            for chunk in members(g.id):
                yield separator + ", ".join(
                    dump({"id": scim_id, "userName": name}) for scim_id, name in chunk
                )
                separator = ", "
            yield "]}"
    yield "\n]\n"


def users_text(query, fmt):
    """Return the chunks of the users of ``query`` in ``fmt`` (csv or json)."""
    rows = user_rows(query)
    return csv_chunks(rows, USER_COLUMNS) if fmt == "csv" else json_chunks(rows)


def groups_text(query, fmt):
    """Return the chunks of the groups of ``query`` and their members in ``fmt``."""
    if fmt == "csv":
        return csv_chunks(group_member_rows(query), GROUP_COLUMNS)
    return groups_json(query)
