"""Peewee tables and domain operations: tokens, users, groups, memberships, custom attributes."""

import functools
import hashlib
import hmac
import json
import secrets
import uuid
from datetime import UTC
from datetime import datetime
from datetime import timedelta

from peewee import BooleanField
from peewee import DateTimeField
from peewee import ForeignKeyField
from peewee import IntegerField
from peewee import TextField

from .db import NoCaseField
from .db import Prepared
from .db import database
from .db import json_get
from .db import json_rows
from .db import lock_for_migration
from .db import postgres
from .db import schema_version
from .db import set_schema_version
from .db import write_transaction

IDPS = {"entra": "Entra ID", "okta": "Okta", "generic": "Generic SCIM"}
MAX_TOKENS_PER_IDP = 2
TOKEN_PREFIX = "mdm"


def utcnow():
    """Return the current UTC time as a naive datetime (SQLite stores no zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_id():
    return str(uuid.uuid4())


class SchemaError(RuntimeError):
    """The database was made by a newer release of mdm than this one."""


class TokenError(Exception):
    """A token operation that the rules refuse, with a message for the admin."""


class BearerToken(database.Model):
    """A bearer secret an identity provider connection uses to call the SCIM API."""

    # Only a SHA-256 of the secret is stored. ``key`` is a short public identifier
    # embedded in the secret, so authentication is one indexed lookup followed by a
    # constant-time comparison, never a scan over hashes.

    idp = TextField(index=True)
    label = TextField(default="")
    key = TextField(unique=True)
    secret_hash = TextField()
    active = BooleanField(default=True)
    created_at = DateTimeField(default=utcnow)
    created_by = TextField(default="")
    expires_at = DateTimeField(null=True)
    renewed_at = DateTimeField(null=True)
    last_used_at = DateTimeField(null=True)
    last_user_agent = TextField(null=True)

    class Meta:
        table_name = "bearer_token"

    @property
    def idp_name(self):
        return IDPS.get(self.idp, self.idp)

    @property
    def expired(self):
        return self.expires_at is not None and self.expires_at <= utcnow()

    def days_until_expiry(self, within, now=None):
        """Return whole days left if this active token expires within ``within``, else None."""
        now = now or utcnow()
        if (
            self.status != "Active"
            or not self.expires_at
            or self.expires_at > now + within
        ):
            return None
        return max(0, (self.expires_at - now).days)

    @property
    def status(self):
        if self.expired:
            return "Expired"
        return "Active" if self.active else "Inactive"

    @staticmethod
    def _hash(secret):
        return hashlib.sha256(secret.encode()).hexdigest()

    @staticmethod
    def _new_secret():
        key = secrets.token_hex(6)
        return key, f"{TOKEN_PREFIX}_{key}_{secrets.token_urlsafe(32)}"

    @classmethod
    def issue(cls, idp, label="", created_by="", expires_in_days=None):
        """Create a token for ``idp`` and return (token, secret); the secret is shown once."""
        # Raises TokenError if the connection already has its two tokens.
        if idp not in IDPS:
            raise TokenError(f"Unknown identity provider {idp!r}.")
        expires_at = None
        if expires_in_days is not None:
            if expires_in_days <= 0:
                raise TokenError("The expiry must be a positive number of days.")
            expires_at = utcnow() + timedelta(days=expires_in_days)
        with write_transaction():
            if cls.select().where(cls.idp == idp).count() >= MAX_TOKENS_PER_IDP:
                raise TokenError(
                    f"{IDPS[idp]} already has {MAX_TOKENS_PER_IDP} tokens; "
                    "remove or renew one instead."
                )
            key, secret = cls._new_secret()
            token = cls.create(
                idp=idp,
                label=label or "",
                key=key,
                secret_hash=cls._hash(secret),
                created_by=created_by or "",
                expires_at=expires_at,
            )
        return token, secret

    def renew(self):
        """Replace the secret in this slot; the old secret stops working at once."""
        key, secret = self._new_secret()
        self.key = key
        self.secret_hash = self._hash(secret)
        self.renewed_at = utcnow()
        self.save()
        return secret

    def set_active(self, active):
        self.active = active
        self.save()

    @classmethod
    def authenticate(cls, secret):
        """Return the active, unexpired token matching ``secret``, or None."""
        parts = secret.split("_") if secret else []
        if len(parts) < 3 or parts[0] != TOKEN_PREFIX or "\x00" in secret:
            return None
        token = _token_by_key.first(key=parts[1])
        if token is None:
            return None
        if not hmac.compare_digest(token.secret_hash, cls._hash(secret)):
            return None
        if not token.active or token.expired:
            return None
        token.custom_attributes = CustomAttribute.parse_definitions(
            token.custom_attributes
        )
        return token

    def touch(self, user_agent):
        """Record a use, writing at most once a minute to spare the write lock."""
        now = utcnow()
        user_agent = (user_agent or "")[:256] or None
        stale = self.last_used_at is None or now - self.last_used_at > timedelta(
            minutes=1
        )
        if stale or user_agent != self.last_user_agent:
            (
                BearerToken.update(last_used_at=now, last_user_agent=user_agent)
                .where(BearerToken.id == self.id)
                .execute()
            )


def _token_query(key):
    # Every SCIM request needs its token and the custom attribute definitions
    # (which may change between any two requests); one statement reads both.
    definitions = json_rows(
        CustomAttribute.id, CustomAttribute.name, CustomAttribute.type
    )
    return BearerToken.select(
        BearerToken, definitions.alias("custom_attributes")
    ).where(BearerToken.key == key)


_token_by_key = Prepared(_token_query)


class User(database.Model):
    """A provisioned user; ``data`` holds the SCIM attributes as sent, columns mirror the filterable ones."""

    # A user deleted through SCIM keeps its row with ``deprovisioned_at`` set until
    # an administrator purges it, so an IdP can never destroy directory data.

    scim_id = TextField(unique=True, default=new_id)
    user_name = NoCaseField()
    external_id = TextField(null=True, index=True)
    display_name = NoCaseField(null=True)
    given_name = NoCaseField(null=True)
    family_name = NoCaseField(null=True)
    email = NoCaseField(null=True, index=True)
    # Mirrored for the console's search (schema 8).
    department = NoCaseField(null=True)
    title = NoCaseField(null=True)
    active = BooleanField(default=True)
    data = TextField(default="{}")
    password_hash = TextField(null=True)
    source = TextField(default="generic")
    version = IntegerField(default=1)
    created = DateTimeField(default=utcnow, index=True)
    last_modified = DateTimeField(default=utcnow, index=True)
    deprovisioned_at = DateTimeField(null=True)

    @property
    def attributes(self):
        return json.loads(self.data)

    @classmethod
    def live(cls):
        """Users visible to SCIM: everything not deprovisioned."""
        return cls.select().where(cls.deprovisioned_at.is_null())


class Group(database.Model):
    """A provisioned group; members live one row each in Membership."""

    scim_id = TextField(unique=True, default=new_id)
    display_name = NoCaseField()
    external_id = TextField(null=True, index=True)
    source = TextField(default="generic")
    version = IntegerField(default=1)
    created = DateTimeField(default=utcnow, index=True)
    last_modified = DateTimeField(default=utcnow, index=True)
    deprovisioned_at = DateTimeField(null=True)

    class Meta:
        table_name = "user_group"

    @classmethod
    def live(cls):
        """Groups visible to SCIM: everything not deprovisioned."""
        return cls.select().where(cls.deprovisioned_at.is_null())


class Membership(database.Model):
    """One user in one group; a membership change touches only its own rows."""

    group = ForeignKeyField(Group, backref="memberships", on_delete="CASCADE")
    user = ForeignKeyField(User, backref="memberships", on_delete="CASCADE")

    class Meta:
        indexes = ((("group", "user"), True),)


class Admin(database.Model):
    """A console administrator; SCIM users never sign in here."""

    username = NoCaseField(unique=True)
    password_hash = TextField()
    # Part of the session id: rotating it signs out every copy of a session cookie.
    session_key = TextField(default=lambda: secrets.token_hex(16))
    created_at = DateTimeField(default=utcnow)
    last_login_at = DateTimeField(null=True)

    # flask-login's interface, kept here so the model needs no Flask import.
    is_active = True
    is_authenticated = True
    is_anonymous = False

    def get_id(self):
        return f"{self.id}:{self.session_key}"

    def end_sessions(self):
        """Invalidate every session cookie issued for this administrator."""
        self.session_key = secrets.token_hex(16)
        self.save()

    def set_password(self, password):
        self.password_hash = hash_password(password)

    def check_password(self, password):
        from werkzeug.security import check_password_hash

        return check_password_hash(self.password_hash, password)


def duplicate_attribute(existing, asked):
    """Say that an attribute exists, naming it as it was defined."""
    # Names ignore case (SCIM attribute names do, RFC 7643 §2.1).
    if existing == asked:
        return f"An attribute called {existing} already exists."
    return (
        f"An attribute called {existing} already exists; attribute names ignore "
        f"case, so {asked} would be the same attribute."
    )


class CustomAttribute(database.Model):
    """An administrator-defined user attribute in the custom extension schema."""

    name = NoCaseField(unique=True)
    type = TextField(default="string")
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "custom_attribute"

    @classmethod
    def definitions(cls):
        """Return (name, type) pairs in creation order."""
        return list(cls.select(cls.name, cls.type).order_by(cls.id).tuples())

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def parse_definitions(text):
        """Return the definitions ``json_rows(id, name, type)`` gave, in creation order."""
        return tuple((name, kind) for _, name, kind in sorted(json.loads(text)))


class LoginFailure(database.Model):
    """A failed sign-in or setup attempt, counted per account or address by every process."""

    key = TextField()
    time = DateTimeField(default=utcnow)

    class Meta:
        table_name = "login_failure"
        indexes = ((("key", "time"), False),)


class Setting(database.Model):
    """A value every server process shares, such as the first-run setup code."""

    name = TextField(primary_key=True)
    value = TextField()


# userName and displayName are unique only among live resources, so a name
# freed by a SCIM DELETE can be provisioned again while the old row awaits purge.
User.add_index(User.user_name, unique=True, where=User.deprovisioned_at.is_null())
Group.add_index(Group.display_name, unique=True, where=Group.deprovisioned_at.is_null())
Membership.add_index(Membership.user)
# The console lists every user, deprovisioned ones included, sorted by these.
# Named apart from the partial unique index, which owns the default name.
User.add_index(User.user_name, name="user_user_name_all")
User.add_index(User.display_name)
# Partial: only the few deprovisioned rows. A plain index on the column led
# SQLite to answer "scim_id IN (...) AND deprovisioned_at IS NULL" by walking
# every live row instead of looking the ids up.
User.add_index(
    User.deprovisioned_at,
    name="user_deprovisioned",
    where=User.deprovisioned_at.is_null(False),
)
Group.add_index(
    Group.deprovisioned_at,
    name="group_deprovisioned",
    where=Group.deprovisioned_at.is_null(False),
)

# Live rows in id order, the order of every unsorted list page: a deep
# startIndex reaches its OFFSET through this small index instead of walking
# the whole table.
User.add_index(User.id, name="user_live_id", where=User.deprovisioned_at.is_null())
Group.add_index(Group.id, name="group_live_id", where=Group.deprovisioned_at.is_null())

MODELS = [
    BearerToken,
    User,
    Group,
    Membership,
    CustomAttribute,
    Admin,
    LoginFailure,
    Setting,
]
# 1: SCIM tables; 2: Admin; 3: console sort and status indexes; 4: Admin.session_key;
# 5: partial indexes for deprovisioned rows replace schema 3's plain ones;
# 6: login failures and shared settings, so several processes can serve;
# 7: partial indexes of live ids for deep list pages;
# 8: department and title mirrored on users, for the console's search.
SCHEMA_VERSION = 8

# The enterprise extension (RFC 7643 §4.3), whose department users mirror.
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def migrate():
    """Create missing tables and bring the schema up to SCHEMA_VERSION (inside a connection)."""
    with database.atomic():
        lock_for_migration(database)
        current = schema_version(database, "mdm")
        if current > SCHEMA_VERSION:
            raise SchemaError(
                f"Database schema version {current} is newer than this release "
                f"understands ({SCHEMA_VERSION}); upgrade mdm."
            )
        if postgres():
            # Case-insensitive columns are citext (trusted since PostgreSQL 13,
            # so the database owner may create it).
            database.execute_sql("CREATE EXTENSION IF NOT EXISTS citext")
        if 3 <= current < 5:
            database.execute_sql('DROP INDEX IF EXISTS "user_deprovisioned_at"')
            database.execute_sql('DROP INDEX IF EXISTS "group_deprovisioned_at"')
        database.create_tables(MODELS, safe=True)
        _add_missing_columns()
        set_schema_version(database, "mdm", SCHEMA_VERSION)


def init_app(app):
    """Bring the bound database's schema up to date before the app serves."""
    with database.connection_context():
        migrate()


def _add_missing_columns():
    """Add columns that later schema versions gave to tables an older release created."""
    from playhouse.migrate import PostgresqlMigrator
    from playhouse.migrate import SqliteMigrator
    from playhouse.migrate import migrate as run

    migrator = (PostgresqlMigrator if postgres() else SqliteMigrator)(database.obj)
    columns = {c.name for c in database.get_columns("user")}
    if "department" not in columns:
        run(
            migrator.add_column("user", "department", NoCaseField(null=True)),
            migrator.add_column("user", "title", NoCaseField(null=True)),
        )
        # One statement, in the database, however many users there are.
        User.update(
            department=json_get(User.data, (ENTERPRISE_USER, "department")),
            title=json_get(User.data, ("title",)),
        ).execute()
    columns = {c.name for c in database.get_columns("admin")}
    if "session_key" not in columns:
        run(migrator.add_column("admin", "session_key", TextField(default="")))
        for admin in Admin.select():
            admin.session_key = secrets.token_hex(16)
            admin.save()


#
# Directory writes
#


def _dump(data):
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _primary_value(items):
    """Return the primary item's value, else the first one's."""
    if not items:
        return None
    for item in items:
        if item.get("primary") is True and item.get("value"):
            return item["value"]
    return items[0].get("value")


def hash_password(password):
    """Hash a SCIM-supplied password; call it outside write transactions, it is slow on purpose."""
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password)


def mirror_user(user, data, password_hash=None):
    """Copy validated SCIM ``data`` onto ``user`` and its filterable columns (unsaved)."""
    name = data.get("name") or {}
    user.user_name = data["userName"]
    user.external_id = data.get("externalId")
    user.display_name = data.get("displayName")
    user.given_name = name.get("givenName")
    user.family_name = name.get("familyName")
    user.email = _primary_value(data.get("emails"))
    user.department = _text((data.get(ENTERPRISE_USER) or {}).get("department"))
    user.title = _text(data.get("title"))
    user.active = data.get("active", True)
    user.data = _dump(data)
    if password_hash is not None:
        user.password_hash = password_hash


def _text(value):
    return value if isinstance(value, str) else None


def touch(row):
    """Mark a user or group as changed: a new version and lastModified."""
    row.version += 1
    row.last_modified = max(utcnow(), row.last_modified)


def _groups_query(user_pks):
    return (
        Membership.select(Membership.user, Group.scim_id, Group.display_name)
        .join(Group)
        .where(Membership.user.in_(user_pks) & Group.deprovisioned_at.is_null())
        .order_by(Group.display_name)
    )


# One user's groups, the common case (every user rendered alone).
_groups_of_one = Prepared(lambda pk: _groups_query([pk]))


def groups_of(user_pks):
    """Return {user pk: [(group SCIM id, displayName)]} for live groups, in one query."""
    if not user_pks:
        return {}
    if len(user_pks) == 1:
        rows = _groups_of_one.execute(pk=user_pks[0]).fetchall()
    else:
        rows = _groups_query(user_pks).tuples()
    found = {}
    for user_pk, group_id, display in rows:
        found.setdefault(user_pk, []).append((group_id, display))
    return found


def group_scim_ids(scim_ids):
    """Return which of ``scim_ids`` name live groups (nesting is not supported)."""
    ids = [i for i in scim_ids if "\x00" not in i]
    found = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        query = Group.select(Group.scim_id).where(
            Group.scim_id.in_(chunk) & Group.deprovisioned_at.is_null()
        )
        found.update(row[0] for row in query.tuples())
    return found


def clear_members(group):
    """Remove every member of a group; return how many were removed."""
    return Membership.delete().where(Membership.group == group.id).execute()
