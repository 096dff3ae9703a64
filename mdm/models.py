"""Peewee tables and domain operations: tokens, users, groups, memberships, custom attributes."""

import functools
import hashlib
import hmac
import json
import secrets
import uuid
from collections import namedtuple
from datetime import UTC
from datetime import datetime
from datetime import timedelta

from peewee import SQL
from peewee import BooleanField
from peewee import Cast
from peewee import DateTimeField
from peewee import Entity
from peewee import ForeignKeyField
from peewee import IntegerField
from peewee import ModelIndex
from peewee import TextField
from peewee import fn

from .db import NoCaseField
from .db import Prepared
from .db import database
from .db import json_get
from .db import json_rows
from .db import kept_counts
from .db import kept_value_counts
from .db import lock_for_migration
from .db import lock_named
from .db import locking
from .db import postgres
from .db import retried
from .db import schema_version
from .db import set_schema_version
from .db import trigram_candidates
from .db import trigram_index
from .db import write_transaction

IDPS = {"entra": "Entra ID", "okta": "Okta", "generic": "Generic SCIM"}
MAX_TOKENS_PER_IDP = 2
MAX_CLIENTS_PER_IDP = 2
TOKEN_PREFIX = "mdm"
# Prefixes that name what a credential is at a glance (and to secret scanners).
CLIENT_ID_PREFIX = "mdmc"
CLIENT_SECRET_PREFIX = "mdmcs"
ACCESS_TOKEN_PREFIX = "mdmat"


def utcnow():
    """Return the current UTC time as a naive datetime (SQLite stores no zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_id():
    return str(uuid.uuid4())


class SchemaError(RuntimeError):
    """The database was made by a newer release of mdm than this one."""


class TokenError(Exception):
    """A token operation that the rules refuse, with a message for the admin."""


class Credential(database.Model):
    """What bearer tokens and OAuth clients share: a connection, a hashed secret, a lifecycle."""

    # Not a table: BearerToken and OAuthClient each have their own.

    idp = TextField(index=True)
    label = TextField(default="")
    secret_hash = TextField()
    active = BooleanField(default=True)
    created_at = DateTimeField(default=utcnow)
    created_by = TextField(default="")
    expires_at = DateTimeField(null=True)
    renewed_at = DateTimeField(null=True)
    last_used_at = DateTimeField(null=True)
    last_user_agent = TextField(null=True)

    # Set by subclasses: how many may exist per connection, and their name.
    limit = 2
    noun = "credential"

    @property
    def idp_name(self):
        return IDPS.get(self.idp, self.idp)

    @property
    def expired(self):
        return self.expires_at is not None and self.expires_at <= utcnow()

    def days_until_expiry(self, within, now=None):
        """Return whole days left if this active credential expires within ``within``, else None."""
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
        # Secrets are 256 random bits, so one SHA-256 is as strong as a slow
        # hash and costs the request a microsecond, not tens of milliseconds.
        return hashlib.sha256(secret.encode()).hexdigest()

    @classmethod
    def _create(cls, idp, label, created_by, expires_in_days, **fields):
        """Insert a credential for ``idp`` unless its connection already has ``limit``."""
        if idp not in IDPS:
            raise TokenError(f"Unknown identity provider {idp!r}.")
        expires_at = None
        if expires_in_days is not None:
            if expires_in_days <= 0:
                raise TokenError("The expiry must be a positive number of days.")
            expires_at = utcnow() + timedelta(days=expires_in_days)
        with write_transaction():
            # Counted and inserted by one process at a time per connection.
            lock_named(f"{cls._meta.table_name}:{idp}")
            if cls.select().where(cls.idp == idp).count() >= cls.limit:
                raise TokenError(
                    f"{IDPS[idp]} already has {cls.limit} {cls.noun}s; "
                    "remove or renew one instead."
                )
            return cls.create(
                idp=idp,
                label=label or "",
                created_by=created_by or "",
                expires_at=expires_at,
                **fields,
            )

    def set_active(self, active):
        self.active = active
        # Only this column: a copy read before another process renewed the
        # secret must not write the old secret back.
        self.save(only=[type(self).active])

    def touch(self, user_agent):
        """Record a use, writing at most once a minute to spare the write lock."""
        now = utcnow()
        user_agent = (user_agent or "")[:256] or None
        stale = self.last_used_at is None or now - self.last_used_at > timedelta(
            minutes=1
        )
        if stale or user_agent != self.last_user_agent:
            model = type(self)
            (
                model.update(last_used_at=now, last_user_agent=user_agent)
                .where(model.id == self.id)
                .execute()
            )


class BearerToken(Credential):
    """A bearer secret an identity provider connection uses to call the SCIM API."""

    # Only a SHA-256 of the secret is stored. ``key`` is a short public identifier
    # embedded in the secret, so authentication is one indexed lookup followed by a
    # constant-time comparison, never a scan over hashes.

    key = TextField(unique=True)

    limit = MAX_TOKENS_PER_IDP
    noun = "token"

    class Meta:
        table_name = "bearer_token"

    @staticmethod
    def _new_secret():
        key = secrets.token_hex(6)
        return key, f"{TOKEN_PREFIX}_{key}_{secrets.token_urlsafe(32)}"

    @classmethod
    def issue(cls, idp, label="", created_by="", expires_in_days=None):
        """Create a token for ``idp`` and return (token, secret); the secret is shown once."""
        # Raises TokenError if the connection already has its two tokens.
        key, secret = cls._new_secret()
        token = cls._create(
            idp,
            label,
            created_by,
            expires_in_days,
            key=key,
            secret_hash=cls._hash(secret),
        )
        return token, secret

    def renew(self):
        """Replace the secret in this slot; the old secret stops working at once."""
        key, secret = self._new_secret()
        self.key = key
        self.secret_hash = self._hash(secret)
        self.renewed_at = utcnow()
        self.save(
            only=[BearerToken.key, BearerToken.secret_hash, BearerToken.renewed_at]
        )
        return secret

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


class OAuthClient(Credential):
    """An OAuth 2.0 client of a connection: it trades its secret for short-lived access tokens."""

    # RFC 6749 §4.4: the IdP sends client_id and secret to the token endpoint
    # (mdm.oauth) and uses the access token it gets as a bearer token. The
    # client_id is public and stays the same when the secret is renewed, so
    # the IdP's configuration changes in one field only.

    client_id = TextField(unique=True)

    limit = MAX_CLIENTS_PER_IDP
    noun = "OAuth client"

    class Meta:
        table_name = "oauth_client"

    @property
    def key(self):
        """Name the client where a token's ID would appear (activity, audit)."""
        return self.client_id

    @staticmethod
    def _new_secret():
        return f"{CLIENT_SECRET_PREFIX}_{secrets.token_urlsafe(32)}"

    @classmethod
    def issue(cls, idp, label="", created_by="", expires_in_days=None):
        """Create a client for ``idp`` and return (client, secret); the secret is shown once."""
        secret = cls._new_secret()
        client = cls._create(
            idp,
            label,
            created_by,
            expires_in_days,
            client_id=f"{CLIENT_ID_PREFIX}_{secrets.token_hex(8)}",
            secret_hash=cls._hash(secret),
        )
        return client, secret

    def renew(self):
        """Replace the secret; the old secret and every access token stop working at once."""
        secret = self._new_secret()
        digest = self._hash(secret)
        with write_transaction():
            self.secret_hash = digest
            self.renewed_at = utcnow()
            self.save(only=[OAuthClient.secret_hash, OAuthClient.renewed_at])
            self.revoke_access_tokens()
        return secret

    def set_active(self, active):
        """Set Active or Inactive; going Inactive also revokes the access tokens issued."""
        with write_transaction():
            super().set_active(active)
            if not active:
                self.revoke_access_tokens()

    def remove(self):
        """Delete the client and its access tokens."""
        with write_transaction():
            # The client's row first, as a grant locks it: one order, no deadlock.
            locking(OAuthClient.select(OAuthClient.id)).where(
                OAuthClient.id == self.id
            ).exists()
            AccessToken.delete().where(AccessToken.client == self.id).execute()
            self.delete_instance()

    def revoke_access_tokens(self):
        # Marked, not deleted: a request still carrying one is then refused
        # as the client's revoked token, and the dashboard names the
        # connection instead of counting an unknown knock.
        return (
            AccessToken.update(revoked=True)
            .where((AccessToken.client == self.id) & ~AccessToken.revoked)
            .execute()
        )

    @classmethod
    def verify(cls, client_id, secret):
        """Return (client, None) for a client that may get tokens, else (client or None, why not)."""
        client = cls.get_or_none(cls.client_id == client_id) if client_id else None
        # Hash and compare even for an unknown client_id, so the answer's
        # timing does not tell which client ids exist.
        stored = client.secret_hash if client is not None else _NO_SECRET
        matches = hmac.compare_digest(stored, cls._hash(secret or ""))
        if client is None:
            return None, "unknown client"
        if not matches:
            return client, "wrong secret"
        if client.expired:
            return client, "expired client"
        if not client.active:
            return client, "inactive client"
        return client, None

    def grant(self, lifetime, now=None):
        """Issue an access token and return (token, seconds it lives), or None if revoked."""
        now = now or utcnow()
        expires_at = now + lifetime
        if self.expires_at is not None:
            # A token never outlives the secret it was issued for.
            expires_at = min(expires_at, self.expires_at)
        key = secrets.token_hex(8)
        token = f"{ACCESS_TOKEN_PREFIX}_{key}_{secrets.token_urlsafe(32)}"
        digest = self._hash(token)

        def issue():
            with write_transaction():
                # The secret was checked before the lock: if the client was
                # renewed, set Inactive or removed since, its revocation
                # stands. The client's row stays locked until the token is
                # in, so a renewal waits and then revokes it too, and grants
                # to one client keep to its PER_CLIENT cap.
                current = (
                    locking(
                        OAuthClient.select(OAuthClient.secret_hash, OAuthClient.active)
                    )
                    .where(OAuthClient.id == self.id)
                    .first()
                )
                if (
                    current is None
                    or not current.active
                    or current.secret_hash != self.secret_hash
                ):
                    return False
                AccessToken.prune(self, now)
                AccessToken.create(
                    client=self.id,
                    key=key,
                    token_hash=digest,
                    issued_at=now,
                    expires_at=expires_at,
                )
                return True

        if not retried(issue):
            return None
        return token, max(1, int((expires_at - now).total_seconds()))

    @classmethod
    def authenticate(cls, token):
        """Return (client, None) for a live access token, else (client or None, why not)."""
        parts = token.split("_") if token else []
        if len(parts) < 3 or parts[0] != ACCESS_TOKEN_PREFIX or "\x00" in token:
            return None, "not an mdm token"
        client = _client_by_access_key.first(key=parts[1])
        if client is None:
            # Never issued, revoked, or pruned long after it expired.
            return None, "unknown access token"
        if not hmac.compare_digest(client.access_hash, cls._hash(token)):
            return client, "wrong secret"
        if client.access_revoked:
            return client, "revoked access token"
        if AccessToken.expires_at.python_value(client.access_expires) <= utcnow():
            return client, "expired access token"
        if client.expired:
            return client, "expired client"
        if not client.active:
            return client, "inactive client"
        client.custom_attributes = CustomAttribute.parse_definitions(
            client.custom_attributes
        )
        return client, None


# A SHA-256 that no secret has, compared when a client_id is unknown.
_NO_SECRET = "0" * 64


class AccessToken(database.Model):
    """An access token the token endpoint issued; only its SHA-256 is kept."""

    client = ForeignKeyField(OAuthClient, on_delete="CASCADE", index=True)
    key = TextField(unique=True)
    token_hash = TextField()
    issued_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField(index=True)
    # Set when its client is renewed or set Inactive.
    revoked = BooleanField(default=False)

    class Meta:
        table_name = "oauth_access_token"

    # A client with its secret can ask for tokens in a loop; beyond this many
    # (revoked ones included) the oldest go, so the table stays small
    # whatever it does.
    PER_CLIENT = 20
    # Expired rows stay a day, so a refused request can still say "expired".
    KEPT_AFTER_EXPIRY = timedelta(days=1)

    @classmethod
    def prune(cls, client, now):
        """Delete long-expired tokens, and ``client``'s oldest beyond PER_CLIENT - 1 (in a write)."""
        cls.delete().where(cls.expires_at < now - cls.KEPT_AFTER_EXPIRY).execute()
        keep = (
            cls.select(cls.id)
            .where(cls.client == client.id)
            .order_by(cls.id.desc())
            .limit(cls.PER_CLIENT - 1)
        )
        cls.delete().where((cls.client == client.id) & cls.id.not_in(keep)).execute()


def _client_by_access_key_query(key):
    # The same single statement as a static token's: the client, the token's
    # hash and expiry, and the custom attribute definitions.
    definitions = json_rows(
        CustomAttribute.id, CustomAttribute.name, CustomAttribute.type
    )
    return (
        OAuthClient.select(
            OAuthClient,
            AccessToken.token_hash.alias("access_hash"),
            AccessToken.expires_at.alias("access_expires"),
            AccessToken.revoked.alias("access_revoked"),
            definitions.alias("custom_attributes"),
        )
        .join(AccessToken)
        .where(AccessToken.key == key)
    )


_client_by_access_key = Prepared(_client_by_access_key_query)


class User(database.Model):
    """A provisioned user; ``data`` holds its SCIM attributes less the text its columns hold (MIRRORED)."""

    # A user deleted through SCIM keeps its row with ``deprovisioned_at`` set until
    # an administrator purges it, so an IdP can never destroy directory data.

    scim_id = TextField(unique=True, default=new_id)
    user_name = NoCaseField()
    external_id = TextField(null=True, index=True)
    display_name = NoCaseField(null=True)
    given_name = NoCaseField(null=True)
    family_name = NoCaseField(null=True)
    email = NoCaseField(null=True)
    # Mirrored for the console's search (schema 8).
    department = NoCaseField(null=True)
    title = NoCaseField(null=True)
    # Mirrored for attribute filters, which count a value's users from an
    # index of the column alone (schema 14; ATTRIBUTE_COLUMNS).
    employee_number = NoCaseField(null=True)
    cost_center = NoCaseField(null=True)
    organization = NoCaseField(null=True)
    division = NoCaseField(null=True)
    manager = NoCaseField(null=True)
    active = BooleanField(default=True)
    data = TextField(default="{}")
    password_hash = TextField(null=True)
    source = TextField(default="generic")
    version = IntegerField(default=1)
    created = DateTimeField(default=utcnow, index=True)
    last_modified = DateTimeField(default=utcnow)
    deprovisioned_at = DateTimeField(null=True)

    @property
    def attributes(self):
        """Return the user's SCIM attributes: the stored document with its columns' values put back."""
        return restored_document(self, json.loads(self.data))

    @classmethod
    def live(cls):
        """Users visible to SCIM: everything not deprovisioned."""
        return cls.select().where(cls.deprovisioned_at.is_null())

    @classmethod
    def search_candidates(cls, text):
        """Return a condition true for at least the users with ``text`` in a searched column, or None."""
        # A prefilter from the trigram index, ANDed with the exact condition;
        # None when ``text`` is too short to use it.
        return trigram_candidates(cls, user_search_fields(), SEARCHED_LISTS, text)

    @classmethod
    def purgeable(cls, through):
        """Users deprovisioned at or before ``through``."""
        return cls.select().where(
            cls.deprovisioned_at.is_null(False) & (cls.deprovisioned_at <= through)
        )

    @classmethod
    def purge(cls, through, progress=None):
        """Delete the users deprovisioned by ``through``; return how many went."""
        # In batches, each its own write, so a large purge never holds the
        # write lock long enough to stall SCIM requests; ``progress`` hears
        # each batch's size.
        from . import webhooks

        removed = 0
        while True:
            events = _purge_events(cls.purgeable(through), webhooks)
            with write_transaction():
                if events is not None:
                    batch, events = events
                else:
                    batch = [
                        pk
                        for (pk,) in cls.purgeable(through)
                        .select(cls.id)
                        .order_by(cls.id)
                        .limit(PURGE_BATCH)
                        .tuples()
                    ]
                if batch:
                    removed += cls.delete().where(cls.id.in_(batch)).execute()
                    webhooks.write(events or ())
            if not batch:
                return removed
            if progress is not None:
                progress(len(batch))


# Users deleted per write by User.purge.
PURGE_BATCH = 500


def _purge_events(purgeable, webhooks):
    """Return (ids, user.purged events) of the next batch with webhooks on, else None."""
    if not webhooks.active():
        return None
    # Deprovisioned rows no longer change, so they are read and rendered
    # before the write lock; at least once, a purge racing another sends twice.
    rows = list(purgeable.order_by(User.id).limit(PURGE_BATCH))
    return [r.id for r in rows], [webhooks.user_event("user.purged", r) for r in rows]


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

    # Indexed by the unique (group, user) index below; SQLite also by group
    # alone (_membership_indexes).
    group = ForeignKeyField(
        Group, backref="memberships", on_delete="CASCADE", index=False
    )
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


class SavedSearch(database.Model):
    """A Users page search an administrator saved under a name."""

    name = NoCaseField(unique=True)
    # The page's query string, e.g. "status=disabled&filter=...".
    query = TextField(default="")
    created_by = TextField(default="")
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "saved_search"


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


class WebhookEndpoint(database.Model):
    """A URL that receives signed lifecycle events (mdm.webhooks delivers them)."""

    url = TextField()
    label = TextField(default="")
    # Event types sent, separated and surrounded by commas; "" sends all.
    events = TextField(default="")
    # Kept in the clear: Standard Webhooks signs with it, so a hash cannot do.
    secret = TextField()
    # "enabled", "failing" (a day of failures; it keeps its queue) or
    # "disabled" (the receiver answered 410 Gone).
    state = TextField(default="enabled")
    failing_since = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "webhook_endpoint"

    @property
    def event_types(self):
        return [t for t in self.events.split(",") if t]


class WebhookEvent(database.Model):
    """A lifecycle event, written in the transaction of the change it describes."""

    # The Standard Webhooks message id: every attempt of every endpoint sends it.
    msg_id = TextField(unique=True)
    type = TextField()
    resource_type = TextField(default="")
    resource_id = TextField(default="")
    timestamp = DateTimeField(default=utcnow)
    # The delivered body's "data", as JSON text.
    payload = TextField()
    # The connection (its IdP) or the administrator that caused it.
    actor = TextField(default="")

    class Meta:
        table_name = "webhook_event"


class WebhookDelivery(database.Model):
    """One event's delivery to one endpoint: its attempts and what the last one got."""

    event = ForeignKeyField(WebhookEvent, on_delete="CASCADE", index=True)
    endpoint = ForeignKeyField(WebhookEndpoint, on_delete="CASCADE")
    # The resource, so a later event for it waits for an earlier one.
    resource_key = TextField()
    # "pending", "delivered" or "disabled" (its endpoint answered 410).
    status = TextField(default="pending")
    attempts = IntegerField(default=0)
    last_status = IntegerField(null=True)
    latency_ms = IntegerField(null=True)
    next_try = DateTimeField(default=utcnow)
    last_error = TextField(null=True)
    first_failed_at = DateTimeField(null=True)
    delivered_at = DateTimeField(null=True)

    class Meta:
        table_name = "webhook_delivery"
        indexes = ((("endpoint", "resource_key", "id"), False),)


# userName and displayName are unique only among live resources, so a name
# freed by a SCIM DELETE can be provisioned again while the old row awaits purge.
User.add_index(User.user_name, unique=True, where=User.deprovisioned_at.is_null())
Group.add_index(Group.display_name, unique=True, where=Group.deprovisioned_at.is_null())
Membership.add_index(Membership.user)
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

# The same users by name, the console's default order: without statistics
# SQLite would rather walk every live user by name than sort the few.
User.add_index(
    User.user_name,
    name="user_disabled_name",
    where=(~User.active) & User.deprovisioned_at.is_null(),
)
Group.add_index(Group.id, name="group_live_id", where=Group.deprovisioned_at.is_null())
# The worker's queue: only pending deliveries, few however many were delivered.
WebhookDelivery.add_index(
    WebhookDelivery.next_try,
    name="webhook_delivery_pending",
    where=WebhookDelivery.status == "pending",
)


def user_search_fields():
    """Return the user columns the substring index covers, in its order."""
    # What SCIM co/sw/ew and the console's search box look in.
    return (
        User.user_name,
        User.display_name,
        User.given_name,
        User.family_name,
        User.department,
        User.title,
        User.external_id,
    )


# Multi-valued attributes the substring index covers, read from ``data``:
# (attribute, sub-attribute) of every element.
SEARCHED_LISTS = (("emails", "value"),)

MODELS = [
    BearerToken,
    OAuthClient,
    AccessToken,
    User,
    Group,
    Membership,
    CustomAttribute,
    Admin,
    LoginFailure,
    Setting,
    WebhookEndpoint,
    WebhookEvent,
    WebhookDelivery,
    SavedSearch,
]
# 1: SCIM tables; 2: Admin; 3: console sort and status indexes; 4: Admin.session_key;
# 5: partial indexes for deprovisioned rows replace schema 3's plain ones;
# 6: login failures and shared settings, so several processes can serve;
# 7: partial indexes of live ids for deep list pages;
# 8: department and title mirrored on users, for the console's search;
# 9: OAuth clients and their access tokens;
# 10: the substring index (an FTS5 trigram table kept by triggers on SQLite,
#     pg_trgm GIN on PostgreSQL), indexes for attribute filters and disabled
#     users, indexes for each console sort key, webhook endpoints, events
#     and deliveries, and saved searches;
# 11: counts of live and active users kept by triggers, and the partial
#     indexes that counts read carry active and deprovisioned_at;
# 12: the department and attribute indexes hold id after the value, so that
#     a page of a value's users in id order reads off the index, unsorted;
#     PostgreSQL drops four single-column indexes its sort indexes cover;
# 13: a user's stored document leaves out the text its columns hold
#     (MIRRORED; documents stored before keep it until rewritten), and on
#     PostgreSQL schema 11's indexes no longer carry deprovisioned_at;
# 14: the enterprise attributes filters look users up by are mirrored in
#     columns, indexed there instead of as expressions over the document;
# 15: the attributes that group users get a second index, of (value,
#     active), that counts a value's users; PostgreSQL indexes each
#     attribute's lowercased copy, a generated column, instead of the citext;
# 16: PostgreSQL keeps the counts of those attributes' values (kept_value_counts);
# 17: and SQLite too.
SCHEMA_VERSION = 17

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
        rebuilt = []
        if 0 < current < 11:
            # Rebuilt below with deprovisioned_at as a column, so that counts
            # read them alone.
            rebuilt += REBUILT_IN_11
        if 0 < current < 12:
            rebuilt += ATTRIBUTE_INDEXES  # with id after the value
            if postgres():
                rebuilt += ONLY_SQLITE  # and not built again
        if 0 < current < 13 and postgres():
            rebuilt += REBUILT_IN_11  # without deprovisioned_at
            rebuilt += ["membership_group_id"]  # and not built again
        if 0 < current < 14:
            # Expressions over the document until then; built again on the
            # columns, after _add_missing_columns has filled them.
            rebuilt += INDEXED_ATTRIBUTES
            if postgres():
                for name in INDEXED_ATTRIBUTES:
                    database.execute_sql(f'DROP STATISTICS IF EXISTS "{name}_values"')
        if 0 < current < 15 and postgres():
            # Built again on the lowercased copies (before they are added,
            # so that adding them rewrites fewer indexes).
            rebuilt += ATTRIBUTE_INDEXES
        for name in dict.fromkeys(rebuilt):
            database.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
        database.create_tables(MODELS, safe=True)
        _add_missing_columns()
        trigram_index(User, user_search_fields(), SEARCHED_LISTS)
        kept_counts(User)
        kept_value_counts(
            User, {c: lowered(c) if postgres() else c for c in GROUPING_COLUMNS}
        )
        for index in _live_indexes() + _attribute_indexes():
            database.execute(index)
        for index in _sort_indexes() + _membership_indexes():
            database.execute(index)
        set_schema_version(database, "mdm", SCHEMA_VERSION)
    if postgres() and 0 < current < SCHEMA_VERSION:
        # New columns and indexes know nothing until the table is analyzed:
        # until then the planner guesses that an employeeNumber matches
        # thousands of users and walks every user in id order. And a table
        # rewritten (schemas 14 and 15) has no page marked all-visible, so a
        # count from an index alone visits every match's row (170 ms for a
        # department's 20,000 users) until a vacuum, which autovacuum has no
        # reason to run: no row changed. VACUUM runs outside a transaction.
        database.execute_sql('VACUUM (ANALYZE) "user"')


# Enterprise attributes directories look users up by (RFC 7643 §4.3), each
# mirrored in a column (where it is in the document -> column) and indexed
# there, the index named user_<column>. An index of an expression over the
# document could find a value's users but not count them: neither engine
# here answers from such an index alone (SQLite only from 3.41, PostgreSQL
# not at all), so counting the 20,000 users of a cost center read 20,000
# rows, 150 ms on PostgreSQL.
ATTRIBUTE_COLUMNS = {
    (ENTERPRISE_USER, "department"): "department",
    (ENTERPRISE_USER, "employeeNumber"): "employee_number",
    (ENTERPRISE_USER, "costCenter"): "cost_center",
    (ENTERPRISE_USER, "organization"): "organization",
    (ENTERPRISE_USER, "division"): "division",
    (ENTERPRISE_USER, "manager", "value"): "manager",
}
# The indexes of those after the department's (schema 8): their names, and
# where their values are in the document.
INDEXED_ATTRIBUTES = {
    f"user_{column}": keys
    for keys, column in ATTRIBUTE_COLUMNS.items()
    if column != "department"
}
# Every attribute's (value, id, active) index: schema 12 gave them id after
# the value, schema 15 built PostgreSQL's on the lowered copies.
ATTRIBUTE_INDEXES = ("user_department", *INDEXED_ATTRIBUTES)
# Those of the attributes that group users, whose one value thousands may
# hold (an employeeNumber names one person): each has a second index, of
# (value, active), named user_<column>_count (schema 15). A department's
# 20,000 users at a million are counted there, and with "and active eq true"
# only its active ones are read, where the (value, id, active) index that
# pages walk holds them mixed. On PostgreSQL it is also smaller: B-tree
# deduplication stores each value once (citext has none; see lowered).
GROUPING_COLUMNS = ("department", "cost_center", "organization", "division", "manager")


def lowered(column):
    """Return the name of the lowercased copy of an attribute column (PostgreSQL)."""
    # citext compares by lowercasing both sides, again for every index entry
    # a scan passes: counting a department's 20,000 users from its citext
    # index took 4-5 ms, from an index of the lowercased text 2 ms. So on
    # PostgreSQL each attribute column has a generated copy, lower(column),
    # which equality and order of the attribute compare instead; its values
    # order as citext's do, so the results are the same.
    return f"{column}_lower"


# The indexes schema 11 gave deprovisioned_at as a column.
REBUILT_IN_11 = (
    "user_live_id",
    "user_disabled",
    "user_department",
    *INDEXED_ATTRIBUTES,
)
# Indexes schema 12 keeps on SQLite only: on PostgreSQL each sort index,
# (key NULLS FIRST, id), serves every lookup and order these served. The
# user_name one is named apart from the partial unique index, which owns
# the default name.
ONLY_SQLITE = {
    "user_user_name_all": User.user_name,
    "user_display_name": User.display_name,
    "user_email": User.email,
    "user_last_modified": User.last_modified,
}


def _counted(*columns):
    """Return ``columns`` and those a count from a partial index of live users reads."""
    # SQLite answers a query from a partial index alone only when the index
    # holds every column the query names, those of its own condition too (from
    # an expression index, only from release 3.41): deprovisioned_at, always
    # NULL there. PostgreSQL needs no column its condition already implies,
    # and each costs 8 bytes an entry (schema 13).
    if postgres():
        return (*columns, User.active)
    return (*columns, User.active, User.deprovisioned_at)


def _live_indexes():
    """Return the partial indexes of live users that lists and counts walk."""
    live = User.deprovisioned_at.is_null()
    # Live rows in id order, the order of every unsorted list page: a deep
    # startIndex reaches its OFFSET through this small index instead of
    # walking the whole table; with active in it, totalResults of an
    # unfiltered list and of "active eq true" never read the table's rows.
    live_id = ModelIndex(User, _counted(User.id), name="user_live_id", safe=True)
    # Live users set Inactive, a few of every directory: "active eq false" and
    # the console's "disabled only" read them here, in id order, with the
    # condition written as both write it (and counted from it alone, as above).
    disabled = ModelIndex(User, _counted(User.id), name="user_disabled", safe=True)
    return [live_id.where(live), disabled.where(~User.active & live)]


def _attribute_indexes():
    """Return the indexes attribute filters use, created if missing after the columns."""
    # Each on its mirrored column (added by _add_missing_columns to older
    # tables, hence not in create_tables). Only live users with a value, and
    # their active flag: "department eq x and active eq true" and its
    # totalResults count read the index alone. The attributes are caseExact
    # false, and the columns compare ignoring case.
    live = User.deprovisioned_at.is_null()
    indexes = []
    for column in ATTRIBUTE_COLUMNS.values():
        value = Entity(lowered(column)) if postgres() else getattr(User, column)
        # id right after the value: a value's users come off the index in id
        # order, so a page of 20,000 matches reads 100 of them, not sorts
        # them all.
        index = ModelIndex(
            User, _counted(value, User.id), name=f"user_{column}", safe=True
        )
        held = value.is_null(False) & live
        indexes.append(index.where(held))
        if column in GROUPING_COLUMNS:
            index = ModelIndex(
                User, _counted(value), name=f"user_{column}_count", safe=True
            )
            indexes.append(index.where(held))
    return indexes


def _sort_indexes():
    """Return the indexes the Users page walks in each of its sort orders."""
    # A page sorted by a key then id reads its 50 rows off an index in that
    # order, instead of sorting every user it matches (a group of a million).
    # SQLite keeps each index's entries in rowid order within a key, so the
    # key alone serves (key, id); PostgreSQL needs id in the index, and NULL
    # keys first, as the console sorts them (ascending; last descending).
    if not postgres():
        # The console lists every user, deprovisioned ones included.
        keys = {**ONLY_SQLITE, "user_source": User.source}
        return [ModelIndex(User, (k,), name=n, safe=True) for n, k in keys.items()]
    keys = {
        "user_sort_user_name": User.user_name,
        "user_sort_display_name": User.display_name,
        "user_sort_email": User.email,
        "user_sort_source": User.source,
        "user_sort_last_modified": User.last_modified,
    }
    return [
        ModelIndex(
            User,
            (SQL(f'"{key.column_name}" NULLS FIRST'), User.id),
            name=name,
            safe=True,
        )
        for name, key in keys.items()
    ]


def _membership_indexes():
    """Return the index of a group's memberships in the order they were made, on SQLite."""
    # SQLite keeps an index's entries in rowid order within a key: a group's
    # members stream off this one in id order, unsorted. PostgreSQL's index
    # has no such order, and (group, user) serves every lookup it would.
    if postgres():
        return []
    return [
        ModelIndex(
            Membership, (Membership.group,), name="membership_group_id", safe=True
        )
    ]


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
    if "employee_number" not in columns:
        added = {k: c for k, c in ATTRIBUTE_COLUMNS.items() if c != "department"}
        run(
            *[
                migrator.add_column("user", c, NoCaseField(null=True))
                for c in added.values()
            ]
        )
        # Filled from the documents, which keep their values until rewritten
        # (MIRRORED).
        if postgres():
            _fill_by_rewrite(added)
        else:
            User.update(
                {getattr(User, c): json_get(User.data, k) for k, c in added.items()}
            ).where(User.data.contains(ENTERPRISE_USER)).execute()
    missing = [c for c in ATTRIBUTE_COLUMNS.values() if lowered(c) not in columns]
    if postgres() and missing:
        # Generated, so that every write, the app's or not, keeps them; adding
        # them rewrites the table once (see lowered).
        database.execute_sql(
            'ALTER TABLE "user" '
            + ", ".join(
                f'ADD COLUMN "{lowered(c)}" text '
                f'GENERATED ALWAYS AS (lower("{c}"::text)) STORED'
                for c in missing
            )
        )
    columns = {c.name for c in database.get_columns("admin")}
    if "session_key" not in columns:
        run(migrator.add_column("admin", "session_key", TextField(default="")))
        for admin in Admin.select():
            admin.session_key = secrets.token_hex(16)
            admin.save()


def _fill_by_rewrite(columns):
    """Fill the user table's new ``columns`` from its documents in one rewrite (PostgreSQL)."""
    # An UPDATE of every row leaves PostgreSQL a dead copy of each (the table
    # at twice its size until vacuumed, and every index grown by as many
    # entries): 140 s at a million users. Changing the columns' type to the
    # same one with USING writes the table once, afresh, and rebuilds its
    # indexes whole.
    changes, params = [], []
    for keys, column in columns.items():
        sql, values = (
            database.get_sql_context().sql(json_get(Entity("data"), keys)).query()
        )
        changes.append(f'ALTER COLUMN "{column}" TYPE citext USING ({sql})')
        params += values
    database.execute_sql('ALTER TABLE "user" ' + ", ".join(changes), params)


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
    user.title = _text(data.get("title"))
    enterprise = data.get(ENTERPRISE_USER) or {}
    for keys, column in ATTRIBUTE_COLUMNS.items():
        value = enterprise
        for key in keys[1:]:
            value = value.get(key) if isinstance(value, dict) else None
        setattr(user, column, _text(value))
    user.active = data.get("active", True)
    user.data = _dump(_unmirrored(data))
    if password_hash is not None:
        user.password_hash = password_hash


# Attributes whose text a user's columns hold, left out of its stored document
# (schema 13): (where in the document, attribute, column). Each is stored once,
# which took a third off a typical user's row (581 -> 390 bytes on PostgreSQL).
MIRRORED = (
    ((), "userName", "user_name"),
    ((), "externalId", "external_id"),
    ((), "displayName", "display_name"),
    ((), "title", "title"),
    (("name",), "givenName", "given_name"),
    (("name",), "familyName", "family_name"),
    # The enterprise attributes with columns but manager, a complex value
    # kept whole in the document (its value is mirrored too).
    *(
        (keys[:1], keys[1], column)
        for keys, column in ATTRIBUTE_COLUMNS.items()
        if len(keys) == 2
    ),
)


# The columns a listed user is rendered from (serialize.user, groups_of): its
# document and the columns that hold the rest of it (MIRRORED), not the
# password hash, source and email it never shows.
LISTED_USER = (
    User.id,
    User.scim_id,
    *(getattr(User, column) for _, _, column in MIRRORED),
    User.data,
    User.version,
    User.created,
    User.last_modified,
)


class ListedUser(namedtuple("ListedUser", [field.name for field in LISTED_USER])):
    """A user of a list page: its LISTED_USER columns, read without a model instance (db.records)."""

    __slots__ = ()
    columns = LISTED_USER
    attributes = User.attributes


def _unmirrored(data):
    """Return a copy of ``data`` without the text values its columns hold (``data`` is left as is)."""
    data = dict(data)
    for parents, key, _ in MIRRORED:
        outer = data.get(parents[0]) if parents else data
        # Only text: a column holds a string exactly as sent.
        if not isinstance(outer, dict) or not isinstance(outer.get(key), str):
            continue
        if parents:
            outer = data[parents[0]] = dict(outer)
        del outer[key]
        if parents and not outer:
            del data[parents[0]]
    return data


def restored_document(user, data):
    """Put back into ``data``, a user's stored document, the values its columns hold."""
    # A value the document holds wins: documents stored before schema 13 hold
    # them all, and one that is not text is only there.
    head, inner = {}, {}
    for parents, key, column in MIRRORED:
        value = getattr(user, column)
        if value is None:
            continue
        if parents:
            inner.setdefault(parents[0], {})[key] = value
        elif key not in data:
            head[key] = value
    for parent, values in inner.items():
        outer = data.get(parent)
        if outer is None:
            data[parent] = values
        elif isinstance(outer, dict):
            values.update(outer)
            data[parent] = values
    if head:
        head.update(data)
        return head
    return data


def _text(value):
    return value if isinstance(value, str) else None


def touch(row):
    """Mark a user or group as changed: a new version and lastModified."""
    row.version += 1
    row.last_modified = max(utcnow(), row.last_modified)


def _groups_query(users):
    """Return the live groups of the memberships ``users`` (a condition) selects."""
    return (
        Membership.select(Membership.user, Group.scim_id, Group.display_name)
        .join(Group)
        .where(users & Group.deprovisioned_at.is_null())
        .order_by(Group.display_name)
    )


# The groups query of any number of users given as one array (PostgreSQL):
# psycopg2 quotes each parameter in Python, and a page's 128 took it 0.4 ms,
# as long as PostgreSQL took to answer.
_groups_of_array = Prepared(
    lambda pks: _groups_query(Membership.user == fn.ANY(Cast(pks, "integer[]")))
)


@functools.cache
def _groups_of_many(size):
    """The groups query of ``size`` users (a power of two), rendered once."""
    # Rendering an IN of a page's hundred ids took the ORM four times what
    # SQLite took to answer it. Padding the list to a power of two keeps the
    # renderings few; IN matches a repeated id once.
    names = [f"pk{at}" for at in range(size)]
    return Prepared(lambda *pks: _groups_query(Membership.user.in_(list(pks))), names)


# Users per groups query: far inside either engine's parameter limit.
GROUPS_OF_CHUNK = 512


def groups_of(user_pks):
    """Return {user pk: [(group SCIM id, displayName)]} for live groups, in few queries."""
    found = {}
    if not user_pks:
        return found
    for user_pk, group_id, display in _group_rows(user_pks):
        found.setdefault(user_pk, []).append((group_id, display))
    return found


def _group_rows(user_pks):
    """Yield (user pk, group SCIM id, displayName) of the users' live groups, by name."""
    if postgres():
        array = "{" + ",".join(str(int(pk)) for pk in user_pks) + "}"
        yield from _groups_of_array.execute(pks=array)
        return
    for start in range(0, len(user_pks), GROUPS_OF_CHUNK):
        chunk = list(user_pks[start : start + GROUPS_OF_CHUNK])
        size = 1 << (len(chunk) - 1).bit_length()
        query = _groups_of_many(size)
        chunk += chunk[-1:] * (size - len(chunk))
        # Each user is in one chunk, so its groups stay in displayName order.
        yield from query.execute(**dict(zip(query.names, chunk, strict=True)))


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
