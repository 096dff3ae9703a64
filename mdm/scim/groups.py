"""Creating, replacing and patching groups and their members; shared by the views and Bulk."""

from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field

from flask import current_app
from peewee import IntegrityError

from .. import activity
from .. import webhooks
from ..db import Prepared
from ..db import database
from ..db import postgres
from ..db import write_transaction
from ..models import Group
from ..models import Membership
from ..models import User
from ..models import clear_members
from ..models import group_scim_ids
from . import filters
from . import members as membership
from . import parse
from . import patch
from . import schema
from .errors import ScimError
from .http import check_if_match
from .resources import Insert
from .resources import Save
from .resources import get_live
from .resources import versioned
from .resources import write


@dataclass
class Change:
    """A group's new attributes and member changes, prepared outside the write lock."""

    # ``members`` holds (action, argument) with user ids already resolved to
    # keys and filters already compiled, so the lock covers only the writes.

    old_name: str
    data: dict
    relabels: bool = False  # a new displayName or externalId
    members: list = field(default_factory=list)
    ignored: tuple = ()
    added: int = 0
    removed: int = 0
    save: object = None  # the UPDATE, rendered outside the lock
    resource: dict = None  # the group for webhook events, or None without webhooks

    @property
    def writes(self):
        # Whether member changes change anything is known only once applied.
        return self.relabels or bool(self.members)


def uniqueness_error(data):
    return ScimError.uniqueness(
        f"A group with displayName {data['displayName']!r} already exists."
    )


def _members_query(group_pks):
    return (
        Membership.select(Membership.group, User.scim_id, User.display_name)
        .join(User)
        .where(Membership.group.in_(group_pks) & User.deprovisioned_at.is_null())
        .order_by(Membership.id)
    )


# One group's members, the common case (every group rendered alone).
_members_of_one = Prepared(lambda pk: _members_query([pk]))


def members_of(groups, limit=None):
    """Return {group pk: [(user id, displayName)]} for live members, in one query.

    With ``limit``, return None when the groups have more members than that.
    """
    pks = [group.id for group in groups]
    if not pks:
        return {}
    if len(pks) == 1 and limit is None:
        rows = _members_of_one.execute(pk=pks[0]).fetchall()
    elif limit is None:
        rows = _members_query(pks).tuples()
    else:
        rows = _members_query(pks).limit(limit + 1).tuples()
        if len(rows) > limit:
            return None
    found = {pk: [] for pk in pks}
    for group_pk, user_id, display in rows:
        found[group_pk].append((user_id, display))
    return found


# Members are read and sent this many at a time when a group is streamed.
MEMBER_CHUNK = 1000


def _member_chunk(group_pk, after, limit):
    return (
        Membership.select(Membership.id, User.scim_id, User.display_name)
        .join(User)
        .where(
            (Membership.group == group_pk)
            & (Membership.id > after)
            & User.deprovisioned_at.is_null()
        )
        .order_by(Membership.id)
        .limit(limit)
    )


_member_chunk_query = Prepared(_member_chunk)


def first_members(group_pk):
    """Return a group's first MEMBER_CHUNK live members as (user id, display) pairs."""
    rows = _member_chunk_query.execute(
        group_pk=group_pk, after=0, limit=MEMBER_CHUNK
    ).fetchall()
    return [(user_id, display) for _, user_id, display in rows]


def member_chunks(group_pk):
    """Yield a group's live members in order, as lists of at most MEMBER_CHUNK pairs."""
    # Keyset paging on the membership id, which the index on group_id
    # orders within a group; each chunk costs the same however deep it is.
    after = 0
    while True:
        rows = _member_chunk_query.execute(
            group_pk=group_pk, after=after, limit=MEMBER_CHUNK
        ).fetchall()
        if rows:
            yield [(user_id, display) for _, user_id, display in rows]
        if len(rows) < MEMBER_CHUNK:
            return
        after = rows[-1][0]


@contextmanager
def snapshot():
    """Hold a read transaction, so that every query in it sees the same data."""
    # PostgreSQL's default READ COMMITTED gives each statement its own
    # snapshot; SQLite's WAL gives a transaction one from its first read.
    options = {"isolation_level": "REPEATABLE READ"} if postgres() else {}
    with database.atomic(**options):
        yield


def create(body, source):
    """Create a group, with any members that name known users (RFC 7644 §3.3)."""
    data, member_ids = parse.group(body)
    group = Group(
        source=source,
        display_name=data["displayName"],
        external_id=data.get("externalId"),
    )
    pks = resolve_members(member_ids, group.scim_id) if member_ids else []
    statement = Insert(group)
    resource = webhooks.group_resource(group) if webhooks.active() else None
    try:
        with write_transaction():
            statement.run()
            collect = [] if resource is not None else None
            added = membership.add(group, pks, collect)
            if resource is not None:
                _write_events(group, resource, "group.created", collect, [])
    except IntegrityError:
        activity.note(target=data["displayName"])
        raise uniqueness_error(data) from None
    activity.note(
        f"created with {added} member{'s' if added != 1 else ''}",
        "Group",
        group.scim_id,
        group.display_name,
    )
    return group


def replace(group_id, body, if_match=None):
    """Replace a group (RFC 7644 §3.5.1); members change only when the body lists them."""
    data, member_ids = parse.group(body)
    members = None
    if member_ids is not None:
        members = [("replace", member_ids)]

    def prepare(group):
        check_if_match(group, if_match)
        return _change(group, data, members or [])

    group, change = _write(group_id, prepare)
    activity.note(describe_change(group, change), target=group.display_name)
    return group


def apply_patch(group_id, body, if_match=None):
    """Apply a PatchOp body to a group (RFC 7644 §3.5.2)."""
    operations = patch.operations(body)

    def prepare(group):
        check_if_match(group, if_match)
        resource = {"displayName": group.display_name}
        if group.external_id is not None:
            resource["externalId"] = group.external_id
        result = patch.apply(resource, operations, schema.GROUP_TYPE)
        data, _ = parse.group(resource)
        change = _change(group, data, result.members)
        change.ignored = tuple(result.ignored)
        return change

    group, change = _write(group_id, prepare)
    activity.note(describe_change(group, change), target=group.display_name)
    for note in change.ignored:
        current_app.logger.info("PATCH /Groups/%s: %s", group_id, note)
    return group


def _change(group, data, member_changes):
    new = (data["displayName"], data.get("externalId"))
    change = Change(group.display_name, data)
    change.relabels = (group.display_name, group.external_id) != new
    change.members = _prepare_members(group, member_changes)
    return change


def _write(group_id, prepare):
    def staged(group):
        # The UPDATE is rendered here, outside the lock; it runs only if the
        # name or the members change, which the lock alone can tell.
        change = prepare(group)
        values = versioned(
            group,
            display_name=change.data["displayName"],
            external_id=change.data.get("externalId"),
        )
        change.save = Save(group, values, group.version)
        if webhooks.active():
            change.resource = webhooks.group_resource(webhooks.changed(group, values))
        return change

    def commit(group, change):
        ids = ([], []) if change.resource is not None else (None, None)
        change.added, change.removed = _apply_members(group, change.members, *ids)
        if not (change.relabels or change.added or change.removed):
            return  # nothing changed: the version stays
        try:
            change.save.run()
        except IntegrityError:
            raise uniqueness_error(change.data) from None
        if change.resource is not None:
            kind = "group.updated" if change.relabels else None
            _write_events(group, change.resource, kind, *ids)

    return write(lambda: get_live(Group, group_id), staged, commit)


def _write_events(group, resource, kind, added, removed):
    """Write a group's event and its members' net changes, in batches (under the lock)."""
    # A replace removes every member and adds the new list: only the
    # difference is news to a receiver.
    gone, came = set(removed), set(added)
    added = [i for i in dict.fromkeys(added) if i not in gone]
    removed = [i for i in dict.fromkeys(removed) if i not in came]
    who = webhooks.actor()
    events = (
        [webhooks.Event(kind, resource, "Group", group.scim_id, who)] if kind else []
    )
    events += webhooks.members_events(resource, group.scim_id, "removed", removed, who)
    events += webhooks.members_events(resource, group.scim_id, "added", added, who)
    webhooks.write(events)


def describe_change(group, change):
    """Summarise a group change for the activity log: renames and members +n/-m."""
    parts = []
    if change.old_name != group.display_name:
        parts.append(f"renamed from {change.old_name!r}")
    if change.added or change.removed:
        parts.append(f"members +{change.added}/\u2212{change.removed}")
    return "; ".join(parts) or "no change"


#
# Members
#


def resolve_members(ids, group_id):
    """Map member ids to user keys; unknown ids and nested groups are skipped and logged."""
    found = membership.user_keys(ids)
    missing = [member for member in ids if member not in found]
    if missing:
        nested = group_scim_ids(missing)
        for member in missing:
            reason = (
                "is a group (nested groups are not supported)"
                if member in nested
                else "is not a known user"
            )
            # Clip the id: it is client input and may be arbitrarily long.
            current_app.logger.warning(
                "Group %s: member %r %s; skipped.", group_id, member[:80], reason
            )
    return [found[member] for member in ids if member in found]


def _prepare_members(group, changes):
    """Resolve ids to user keys and compile filters, outside the write lock."""
    prepared = []
    for action, argument in _merge_runs(changes):
        if action in ("add", "replace"):
            prepared.append((action, resolve_members(argument, group.scim_id)))
        elif action == "remove":
            prepared.append((action, list(membership.user_keys(argument).values())))
        elif action == "remove_where":
            try:
                condition = filters.member_expression(argument)
            except ScimError as error:
                # As for a user's emails[...]: a bad filter in a path is a bad path.
                raise ScimError.invalid_path(error.detail) from None
            prepared.append((action, condition))
        else:
            prepared.append((action, argument))
    return prepared


def _apply_members(group, changes, added_ids=None, removed_ids=None):
    """Apply prepared member changes in order; return (rows added, rows removed)."""
    # The lists, when given, collect the SCIM ids added and removed.
    added = removed = 0
    for action, argument in changes:
        if action == "add":
            added += membership.add(group, argument, added_ids)
        elif action == "remove":
            removed += membership.remove(group, argument, removed_ids)
        elif action == "remove_all":
            removed += _clear(group, removed_ids)
        elif action == "replace":
            removed += _clear(group, removed_ids)
            added += membership.add(group, argument, added_ids)
        elif action == "remove_where":
            matched = User.select(User.id).where(argument)
            query = Membership.delete().where(
                (Membership.group == group.id) & Membership.user.in_(matched)
            )
            removed += membership.delete(query, removed_ids)
    return added, removed


def _clear(group, removed_ids):
    if removed_ids is None:
        return clear_members(group)
    query = Membership.delete().where(Membership.group == group.id)
    return membership.delete(query, removed_ids)


def _merge_runs(changes):
    """Merge consecutive adds (or removes) into one, so many one-member ops cost a few queries."""
    merged = []
    for action, argument in changes:
        if merged and action in ("add", "remove") and merged[-1][0] == action:
            merged[-1][1].update(dict.fromkeys(argument))
        elif action in ("add", "remove"):
            merged.append((action, dict.fromkeys(argument)))
        else:
            merged.append((action, argument))
    return [
        (action, list(argument) if isinstance(argument, dict) else argument)
        for action, argument in merged
    ]
