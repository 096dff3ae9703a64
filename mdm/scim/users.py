"""Creating, replacing, patching and deprovisioning users; shared by the views and Bulk."""

import copy
from dataclasses import dataclass

from flask import current_app
from peewee import IntegrityError

from .. import activity
from .. import webhooks
from ..models import ATTRIBUTE_COLUMNS
from ..models import User
from ..models import hash_password
from ..models import mirror_user
from ..models import touch
from . import parse
from . import patch
from .errors import ScimError
from .http import check_if_match
from .resources import NewRow
from .resources import Save
from .resources import get_live
from .resources import insert
from .resources import write

# The columns mirror_user and touch set on a user.
USER_COLUMNS = (
    "user_name",
    "external_id",
    "display_name",
    "given_name",
    "family_name",
    "email",
    "title",
    *ATTRIBUTE_COLUMNS.values(),
    "active",
    "data",
    "version",
    "last_modified",
)


@dataclass
class Change:
    """A user's new attributes, prepared outside the write lock."""

    before: dict
    data: dict
    password_hash: str | None = None
    ignored: tuple = ()
    save: object = None  # the UPDATE, rendered outside the lock
    events: tuple = ()  # webhook events, serialized outside the lock

    @property
    def writes(self):
        return self.data != self.before or bool(self.password_hash)


def uniqueness_error(data):
    return ScimError.uniqueness(
        f"A user with userName {data['userName']!r} already exists."
    )


class _Hasher:
    """Hash each password once, however often a write is prepared again."""

    def __init__(self):
        self.hashes = {}

    def __call__(self, password):
        if not password:
            return None
        if password not in self.hashes:
            self.hashes[password] = hash_password(password)
        return self.hashes[password]


def create(body, resource_type, source):
    """Create a user from a request body (RFC 7644 §3.3)."""
    new = prepare_create(body, resource_type, source)
    try:
        insert(new)
    except ScimError:
        created(new, False)
        raise
    created(new)
    return new.row


def prepare_create(body, resource_type, source, notify=None):
    """Parse a new user and render its INSERT, outside the write lock.

    ``notify`` tells whether webhook events are wanted, when the caller asked once for many.
    """
    data, password = parse.user(body, resource_type, creating=True)
    password_hash = hash_password(password) if password else None
    user = User(source=source)
    mirror_user(user, data, password_hash)
    if notify is None:
        notify = webhooks.active()
    events = (
        [webhooks.user_event("user.created", user, resource_type)] if notify else []
    )
    return NewRow(user, uniqueness_error(data), events)


def created(new, inserted=True):
    """Describe a prepared user's creation (or its refusal) for the activity log."""
    user = new.row
    if not inserted:
        activity.note(target=user.user_name)
        return
    activity.note(
        "created" + ("" if user.active else " (disabled)"),
        "User",
        user.scim_id,
        user.user_name,
    )


def replace(user_id, body, resource_type, if_match=None):
    """Replace a user from a request body (RFC 7644 §3.5.1); an omitted password is kept."""
    data, password = parse.user(body, resource_type)
    password_hash = hash_password(password) if password else None

    def prepare(user):
        check_if_match(user, if_match)
        return Change(user.attributes, data, password_hash)

    user, change = _write(user_id, prepare, resource_type)
    activity.note(describe_changes(change), target=user.user_name)
    return user


def apply_patch(user_id, body, resource_type, if_match=None):
    """Apply a PatchOp body to a user (RFC 7644 §3.5.2)."""
    operations = patch.operations(body)
    hasher = _Hasher()

    def prepare(user):
        check_if_match(user, if_match)
        resource = user.attributes
        before = copy.deepcopy(resource)
        result = patch.apply(resource, operations, resource_type)
        data, password = parse.user(resource, resource_type)
        return Change(before, data, hasher(password), tuple(result.ignored))

    user, change = _write(user_id, prepare, resource_type)
    summary = describe_changes(change)
    if change.ignored:
        summary = "; ".join([summary, *change.ignored])
    activity.note(summary, target=user.user_name)
    for note in change.ignored:
        current_app.logger.info("PATCH /Users/%s: %s", user_id, note)
    return user


def _write(user_id, prepare, resource_type):
    def staged(user):
        # The row read is changed in place and its UPDATE rendered here,
        # outside the lock; a stale attempt starts again from a fresh read.
        change = prepare(user)
        if change.writes:
            expected = user.version
            mirror_user(user, change.data, change.password_hash)
            touch(user)
            columns = USER_COLUMNS + (
                ("password_hash",) if change.password_hash else ()
            )
            values = {name: getattr(user, name) for name in columns}
            change.save = Save(user, values, expected)
            change.events = _events(user, change, resource_type)
        return change

    def commit(user, change):
        try:
            change.save.run()
        except IntegrityError:
            raise uniqueness_error(change.data) from None
        webhooks.write(change.events)

    return write(lambda: get_live(User, user_id), staged, commit)


def _events(user, change, resource_type):
    if not webhooks.active():
        return ()
    types = webhooks.user_change_types(
        change.before, change.data, bool(change.password_hash)
    )
    return [webhooks.user_event(t, user, resource_type) for t in types]


def describe_changes(change):
    """Summarise a user change for the activity log: disabled, fields changed, no change."""
    before, after = change.before, change.data
    changed = []
    for key in sorted(set(before) | set(after), key=str.lower):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key.startswith("urn:") and isinstance(old or new, dict):
            old, new = old or {}, new or {}
            changed += [
                sub
                for sub in sorted(set(old) | set(new))
                if old.get(sub) != new.get(sub)
            ]
        elif key != "active":
            changed.append(key)
    parts = []
    if before.get("active", True) != after.get("active", True):
        parts.append("disabled" if after.get("active") is False else "enabled")
    if changed:
        parts.append("changed " + ", ".join(changed))
    if change.password_hash:
        parts.append("password set")
    return "; ".join(parts) or "no change"
