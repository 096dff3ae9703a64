"""Lifecycle webhooks: an outbox written with each change, signed and delivered by a worker."""

# Shaped by the Standard Webhooks specification (standardwebhooks.com): each
# request carries webhook-id, webhook-timestamp and webhook-signature
# ("v1,<base64 HMAC-SHA256 of 'id.timestamp.body'>", keyed by the bytes of a
# whsec_<base64> secret), and its body is {"type", "timestamp", "data"}.

import base64
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import threading
import time
from datetime import timedelta
from urllib.parse import urlsplit

from peewee import SQL
from peewee import Value
from peewee import fn
from playhouse.shortcuts import model_to_dict

from .db import Prepared
from .db import database
from .db import postgres
from .db import write_transaction
from .models import IDPS
from .models import WebhookDelivery
from .models import WebhookEndpoint
from .models import WebhookEvent
from .models import utcnow

log = logging.getLogger(__name__)

MAX_ENDPOINTS = 10
EVENT_TYPES = (
    "user.created",
    "user.updated",
    "user.disabled",
    "user.enabled",
    "user.deprovisioned",
    "user.purged",
    "group.created",
    "group.updated",
    "group.deleted",
    "group.members_added",
    "group.members_removed",
)
# Member ids per group.members_* event: a 100,000-member change makes 100.
MEMBERS_PER_EVENT = 1000
# Session-level advisory lock: one delivering process per PostgreSQL database.
WORKER_LOCK_KEY = 0x6D646D10


class WebhookError(Exception):
    """An endpoint operation that the rules refuse, with a message for the admin."""


#
# Endpoints
#


def new_secret():
    """Return a signing secret: whsec_ and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret):
    return base64.b64decode(secret.removeprefix("whsec_"))


def check_url(url, allow_http=False):
    """Refuse a URL that is not https://, unless it is on loopback or http is allowed."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise WebhookError(f"{url!r} is not an http:// or https:// URL.")
    if parts.username or parts.password:
        raise WebhookError("A webhook URL must not carry a user name or password.")
    if parts.scheme == "http" and not (allow_http or _loopback(parts.hostname)):
        raise WebhookError(
            "A webhook URL must use https:// unless it is on loopback "
            "(set MDM_WEBHOOK_ALLOW_HTTP=true to allow plain http)."
        )
    return url


def _loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_events(text):
    """Return the event types named in ``text`` (commas), or () for every type."""
    wanted = [t.strip() for t in (text or "").split(",") if t.strip()]
    unknown = [t for t in wanted if t not in EVENT_TYPES]
    if unknown:
        raise WebhookError(
            f"Unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}."
        )
    return tuple(dict.fromkeys(wanted))


def add_endpoint(url, events=(), label="", allow_http=False):
    """Create an endpoint and return (endpoint, secret); the secret is shown once."""
    check_url(url, allow_http)
    secret = new_secret()
    with write_transaction():
        if WebhookEndpoint.select().count() >= MAX_ENDPOINTS:
            raise WebhookError(
                f"There are already {MAX_ENDPOINTS} webhook endpoints; remove one first."
            )
        endpoint = WebhookEndpoint.create(
            url=url,
            label=label or "",
            events="," + ",".join(events) + "," if events else "",
            secret=secret,
        )
    return endpoint, secret


def rotate_secret(endpoint):
    """Give an endpoint a new secret and return it; the next attempts sign with it."""
    secret = new_secret()
    endpoint.secret = secret
    endpoint.updated_at = utcnow()
    endpoint.save(only=[WebhookEndpoint.secret, WebhookEndpoint.updated_at])
    return secret


def remove_endpoint(endpoint):
    """Delete an endpoint and its queue."""
    with write_transaction():
        WebhookDelivery.delete().where(
            WebhookDelivery.endpoint == endpoint.id
        ).execute()
        endpoint.delete_instance()


def pending_counts():
    """Return {endpoint id: deliveries waiting}, from the pending index."""
    query = (
        WebhookDelivery.select(WebhookDelivery.endpoint, fn.COUNT(WebhookDelivery.id))
        .where(WebhookDelivery.status == "pending")
        .group_by(WebhookDelivery.endpoint)
    )
    return dict(query.tuples())


def describe(endpoint):
    """Name an endpoint in the audit log (never its secret)."""
    return f"webhook {endpoint.id}: {endpoint.url}"


#
# Writing events (inside the change's transaction)
#


def active():
    """Return whether any endpoint may receive events, asked once per request."""
    # Installs without webhooks pay one tiny query per write request and
    # nothing under the write lock.
    from flask import g
    from flask import has_request_context

    if has_request_context():
        found = g.get("webhooks_active")
        if found is None:
            found = g.webhooks_active = _any_endpoint()
        return found
    return _any_endpoint()


# Rendered once: through the ORM each time, this check cost a write request
# half a millisecond, more than SQLite takes to answer it.
_endpoint_not = Prepared(
    lambda state, limit: (
        WebhookEndpoint.select(WebhookEndpoint.id)
        .where(WebhookEndpoint.state != state)
        .limit(limit)
    )
)


def _any_endpoint():
    return _endpoint_not.execute(state="disabled", limit=1).fetchone() is not None


def actor():
    """Say who causes the current change: the request's connection, an admin, or the CLI."""
    from flask import g
    from flask import has_request_context

    if not has_request_context():
        return {"type": "cli"}
    token = g.get("scim_token")
    if token is not None:
        return {"type": "connection", "idp": token.idp, "name": token.idp_name}
    from flask_login import current_user

    if getattr(current_user, "is_authenticated", False):
        return {"type": "admin", "name": current_user.username}
    return {"type": "connection", "idp": "generic", "name": IDPS["generic"]}


def base_url():
    """Return the SCIM base for payloads' meta.location, in or out of a request."""
    from flask import current_app
    from flask import has_request_context

    from .scim import http

    if has_request_context():
        return http.base_url()
    public = current_app.config.get("PUBLIC_URL") if current_app else None
    from .scim.paths import URL_PREFIX

    return (public or "").rstrip("/") + URL_PREFIX


class Event:
    """An event prepared outside the write lock: its type, resource and JSON payload."""

    def __init__(self, type, resource, resource_type, resource_id, who=None, **extra):
        self.type = type
        self.resource_type, self.resource_id = resource_type, resource_id
        self.actor = who or actor()
        data = {"resource": resource, "actor": self.actor, **extra}
        self.payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def members_events(resource, group_id, kind, ids, who=None):
    """Return group.members_added or _removed events, MEMBERS_PER_EVENT ids each."""
    who = who or actor()
    return [
        Event(
            f"group.members_{kind}",
            resource,
            "Group",
            group_id,
            who,
            members=[{"value": i} for i in ids[start : start + MEMBERS_PER_EVENT]],
        )
        for start in range(0, len(ids), MEMBERS_PER_EVENT)
    ]


def write(events):
    """Store events and queue them for each endpoint that wants them (in a write)."""
    for event in events:
        row = WebhookEvent.create(
            msg_id="msg_" + secrets.token_urlsafe(18),
            type=event.type,
            resource_type=event.resource_type,
            resource_id=event.resource_id,
            payload=event.payload,
            actor=json.dumps(event.actor),
        )
        wanted = (WebhookEndpoint.state != "disabled") & (
            (WebhookEndpoint.events == "")
            | WebhookEndpoint.events.contains(f",{event.type},")
        )
        key = f"{event.resource_type}:{event.resource_id}"
        # One statement for every endpoint; INSERT ... SELECT sets no defaults.
        query = WebhookEndpoint.select(
            Value(row.id),
            WebhookEndpoint.id,
            Value(key),
            Value("pending"),
            Value(0),
            Value(WebhookDelivery.next_try.db_value(utcnow())),
        ).where(wanted)
        WebhookDelivery.insert_from(
            query,
            [
                WebhookDelivery.event,
                WebhookDelivery.endpoint,
                WebhookDelivery.resource_key,
                WebhookDelivery.status,
                WebhookDelivery.attempts,
                WebhookDelivery.next_try,
            ],
        ).execute()
    if events:
        _wake_after_commit()


# Set when this process wrote events: the worker delivers them without
# waiting for its next poll (it also polls for other processes' events).
_written = threading.Event()


def _wake_after_commit():
    from flask import g
    from flask import has_request_context

    # In a request the transaction is still open: waking the worker now
    # could have it look before the commit, so the request's end wakes it.
    if has_request_context():
        g.webhooks_written = True
    else:
        _written.set()


def _wake(response):
    from flask import g

    if g.get("webhooks_written"):
        _written.set()
    return response


def user_event(type, user, resource_type=None, who=None):
    """Return an event carrying ``user`` as the SCIM API renders it (outside the lock)."""
    from flask import has_request_context

    from .models import groups_of
    from .scim import http
    from .scim import serialize

    if resource_type is None and has_request_context():
        resource_type = http.user_type()
    groups = groups_of([user.id]).get(user.id, ()) if user.id else ()
    resource = serialize.user(user, base_url(), groups, resource_type)
    return Event(type, resource, "User", user.scim_id, who)


def changed(row, values):
    """Return a copy of ``row`` with ``values`` set, as it will be once written."""
    copy = type(row)(**model_to_dict(row, recurse=False))
    for name, value in values.items():
        setattr(copy, name, value)
    return copy


def group_resource(group):
    """Return ``group`` as the SCIM API renders it with excludedAttributes=members."""
    from .scim import serialize

    return serialize.group(group, base_url())


def user_change_types(before, after, password_set=False):
    """Return the event types a user change makes: disabled/enabled, updated."""
    types = []
    was, now = before.get("active", True), after.get("active", True)
    if was != now:
        types.append("user.disabled" if now is False else "user.enabled")
    rest = {k: v for k, v in before.items() if k != "active"}
    if rest != {k: v for k, v in after.items() if k != "active"} or password_set:
        types.append("user.updated")
    return types


#
# Signing and sending
#


def sign(secret, msg_id, timestamp, body):
    """Return the webhook-signature header value for ``body`` (bytes)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def body_of(event):
    """Return the JSON body Standard Webhooks receivers expect for an event row."""
    stamp = event.timestamp.isoformat(timespec="milliseconds") + "Z"
    return (
        f'{{"type":{json.dumps(event.type)},"timestamp":"{stamp}",'
        f'"data":{event.payload}}}'
    ).encode()


class Outcome:
    """What one attempt got: an HTTP status or an error, and how long it took."""

    def __init__(self, status=None, error=None, latency_ms=0):
        self.status, self.error, self.latency_ms = status, error, latency_ms

    @property
    def ok(self):
        return self.status is not None and 200 <= self.status < 300

    def __str__(self):
        if self.error:
            return f"failed: {self.error} ({self.latency_ms} ms)"
        return f"HTTP {self.status} ({self.latency_ms} ms)"


def send(endpoint, msg_id, body, timeout=10, allow_http=False):
    """POST a signed body to the endpoint's URL only (no redirect followed)."""
    started = time.perf_counter()
    try:
        check_url(endpoint.url, allow_http)
        parts = urlsplit(endpoint.url)
        kind = (
            http.client.HTTPSConnection
            if parts.scheme == "https"
            else http.client.HTTPConnection
        )
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "mdm-webhooks",
            "webhook-id": msg_id,
            "webhook-timestamp": stamp,
            "webhook-signature": sign(endpoint.secret, msg_id, stamp, body),
        }
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        connection = kind(parts.hostname, parts.port, timeout=timeout)
        try:
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            response.read(64 * 1024)
            status = response.status
        finally:
            connection.close()
        return Outcome(status, None, _ms(started))
    except WebhookError as error:
        return Outcome(None, str(error), _ms(started))
    except (OSError, http.client.HTTPException) as error:
        return Outcome(None, str(error) or type(error).__name__, _ms(started))


def _ms(started):
    return int((time.perf_counter() - started) * 1000)


def ping(endpoint, timeout=10, allow_http=False):
    """Send a ``ping`` event to one endpoint now and return its Outcome."""
    event = WebhookEvent(
        msg_id="msg_" + secrets.token_urlsafe(18),
        type="ping",
        timestamp=utcnow(),
        payload=json.dumps({"endpoint": endpoint.id}),
    )
    return send(endpoint, event.msg_id, body_of(event), timeout, allow_http)


#
# The delivery worker
#

# Seconds before each retry: the first few within a minute, so a receiver's
# restart costs seconds, then doubling up to 8 hours (the last repeats).
RETRY_SCHEDULE = (5, 10, 30, 60, 300, 900, 3600, 7200, 14400, 28800)


class Worker:
    """Deliver queued events in order per resource and endpoint, retrying with backoff."""

    def __init__(self, config):
        self.timeout = float(config.get("WEBHOOK_TIMEOUT", 10))
        self.allow_http = _flag(config.get("WEBHOOK_ALLOW_HTTP", False))
        self.poll = float(config.get("WEBHOOK_POLL_SECONDS", 5))
        self.schedule = _schedule(config.get("WEBHOOK_RETRY_SCHEDULE"))
        self.failing_after = timedelta(
            hours=float(config.get("WEBHOOK_FAILING_HOURS", 24))
        )
        self.retention = timedelta(days=float(config.get("WEBHOOK_RETENTION_DAYS", 7)))
        self.stopping = threading.Event()
        self.thread = None
        self.holds_lock = False
        self.pruned = 0.0

    def start(self):
        self.thread = threading.Thread(
            target=self._loop, name="mdm-webhooks", daemon=True
        )
        self.thread.start()

    def stop(self):
        self.stopping.set()
        _written.set()
        if self.thread is not None:
            self.thread.join(timeout=self.timeout + 5)

    def _loop(self):
        with database.connection_context():
            while not self.stopping.is_set():
                try:
                    if self._may_deliver():
                        self.drain()
                except Exception:
                    # A database that went away must not end deliveries for good.
                    log.exception("Webhook delivery round failed; retrying.")
                    self.holds_lock = False
                    database.close()
                    database.connect()
                _written.wait(self.poll)
                _written.clear()
            if self.holds_lock:
                database.execute_sql(
                    "SELECT pg_advisory_unlock(%s)", (WORKER_LOCK_KEY,)
                )

    def _may_deliver(self):
        # PostgreSQL: only the process whose connection holds the lock
        # delivers; the lock goes with that connection if the process dies.
        if not postgres() or self.holds_lock:
            return True
        cursor = database.execute_sql(
            "SELECT pg_try_advisory_lock(%s)", (WORKER_LOCK_KEY,)
        )
        self.holds_lock = bool(cursor.fetchone()[0])
        return self.holds_lock

    def drain(self):
        """Run rounds while they deliver something; return how many were delivered."""
        # A round sends the first pending event of each resource; the next
        # round its successor, so a queue goes out in order without waiting.
        total = 0
        while not self.stopping.is_set():
            delivered = self.run_once()
            if not delivered:
                return total
            total += delivered
        return total

    def run_once(self, limit=100):
        """Attempt every due delivery whose resource has no earlier pending one."""
        now = utcnow()
        if time.monotonic() - self.pruned > 3600:
            self.prune(now)
            self.pruned = time.monotonic()
        delivered = 0
        gone = set()
        for delivery in self.due(now, limit):
            if self.stopping.is_set():
                break
            if delivery.endpoint_id in gone:
                continue  # disabled by a 410 earlier in this round
            outcome = self.attempt(delivery)
            delivered += outcome.ok
            if outcome.status == 410:
                gone.add(delivery.endpoint_id)
        return delivered

    def due(self, now, limit):
        earlier = WebhookDelivery.alias()
        blocked = earlier.select(SQL("1")).where(
            (earlier.endpoint == WebhookDelivery.endpoint)
            & (earlier.resource_key == WebhookDelivery.resource_key)
            & (earlier.status == "pending")
            & (earlier.id < WebhookDelivery.id)
        )
        return list(
            WebhookDelivery.select(WebhookDelivery, WebhookEvent, WebhookEndpoint)
            .join_from(WebhookDelivery, WebhookEvent)
            .join_from(WebhookDelivery, WebhookEndpoint)
            .where(
                (WebhookDelivery.status == "pending")
                & (WebhookDelivery.next_try <= now)
                & ~fn.EXISTS(blocked)
            )
            .order_by(WebhookDelivery.id)
            .limit(limit)
        )

    def attempt(self, delivery):
        """Send one delivery and record what it got."""
        endpoint, event = delivery.endpoint, delivery.event
        outcome = send(
            endpoint, event.msg_id, body_of(event), self.timeout, self.allow_http
        )
        now = utcnow()
        values = {
            WebhookDelivery.attempts: WebhookDelivery.attempts + 1,
            WebhookDelivery.last_status: outcome.status,
            WebhookDelivery.latency_ms: outcome.latency_ms,
            WebhookDelivery.last_error: outcome.error,
        }
        with write_transaction():
            if outcome.ok:
                values[WebhookDelivery.status] = "delivered"
                values[WebhookDelivery.delivered_at] = now
                _update(delivery, values)
                if endpoint.state == "failing":
                    _set_state(endpoint, "enabled", None)
            elif outcome.status == 410:
                # Gone: the receiver asks for no more (Standard Webhooks).
                values[WebhookDelivery.status] = "disabled"
                _update(delivery, values)
                _set_state(endpoint, "disabled", endpoint.failing_since)
                WebhookDelivery.update(status="disabled").where(
                    (WebhookDelivery.endpoint == endpoint.id)
                    & (WebhookDelivery.status == "pending")
                ).execute()
            else:
                step = self.schedule[min(delivery.attempts, len(self.schedule) - 1)]
                first = delivery.first_failed_at or now
                values[WebhookDelivery.next_try] = now + timedelta(seconds=step)
                values[WebhookDelivery.first_failed_at] = first
                _update(delivery, values)
                if endpoint.state == "enabled" and now - first >= self.failing_after:
                    _set_state(endpoint, "failing", now)
        if not outcome.ok:
            log.warning(
                "Webhook %s to endpoint %s %s", event.msg_id, endpoint.id, outcome
            )
        return outcome

    def prune(self, now):
        """Delete deliveries and events delivered longer ago than the retention."""
        through = now - self.retention
        with write_transaction():
            WebhookDelivery.delete().where(
                (WebhookDelivery.status != "pending")
                & (
                    WebhookDelivery.delivered_at.is_null()
                    | (WebhookDelivery.delivered_at < through)
                )
                & (WebhookDelivery.next_try < through)
            ).execute()
            queued = WebhookDelivery.select(WebhookDelivery.event)
            WebhookEvent.delete().where(
                (WebhookEvent.timestamp < through) & WebhookEvent.id.not_in(queued)
            ).execute()


def _update(delivery, values):
    WebhookDelivery.update(values).where(WebhookDelivery.id == delivery.id).execute()


def _set_state(endpoint, state, failing_since):
    endpoint.state, endpoint.failing_since = state, failing_since
    WebhookEndpoint.update(
        state=state, failing_since=failing_since, updated_at=utcnow()
    ).where(WebhookEndpoint.id == endpoint.id).execute()


def redeliver(delivery_id):
    """Queue a delivery again now, keeping its webhook-id."""
    return (
        WebhookDelivery.update(status="pending", next_try=utcnow())
        .where(WebhookDelivery.id == delivery_id)
        .execute()
    )


def _flag(value):
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _schedule(value):
    if not value:
        return RETRY_SCHEDULE
    # MDM_ settings arrive parsed as JSON: "5" is a number, "[5, 10]" a list.
    if isinstance(value, int | float):
        value = [value]
    elif isinstance(value, str):
        value = value.split(",")
    try:
        steps = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        steps = ()
    if not steps or min(steps) < 0:
        from . import ConfigError

        raise ConfigError(
            "MDM_WEBHOOK_RETRY_SCHEDULE must list seconds, such as 5,10,30,60."
        )
    return steps


def init_app(app):
    """Wake the worker after each request that wrote events (commits are done by then)."""
    app.extensions["webhooks"] = None
    app.after_request(_wake)


def start(app):
    """Start the delivery worker of a served app; return it."""
    worker = Worker(app.config)
    worker.start()
    app.extensions["webhooks"] = worker
    return worker
