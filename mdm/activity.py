"""Provisioning activity and audit trail: what each SCIM request and admin action records.

Rows are queued to the background writer in mdm.activity_store, so a
request never waits on logging.
"""

import functools
import json
import os
import re
import time
from contextlib import contextmanager

from flask import current_app
from flask import g
from flask import has_request_context
from flask import request
from werkzeug.exceptions import HTTPException

from .activity_store import ACTIVITY_MODELS as ACTIVITY_MODELS
from .activity_store import ENTRY_COLUMNS as ENTRY_COLUMNS
from .activity_store import SCHEMA_VERSION as SCHEMA_VERSION
from .activity_store import ActivityEntry as ActivityEntry
from .activity_store import AuditEvent as AuditEvent
from .activity_store import Refusal as Refusal
from .activity_store import activity_db as activity_db
from .activity_store import bind
from .activity_store import prune as prune
from .activity_store import writer as writer
from .db import is_url
from .health import request_id
from .models import utcnow

MAX_BODY = 16 * 1024
REDACTED = "[redacted]"
SECRET_WORDS = ("password", "secret", "token", "authorization", "credential")
SECRET_KEYS = re.compile("|".join(SECRET_WORDS), re.I)


#
# Redaction
#


def redact(value):
    """Return ``value`` with every secret-looking field replaced (recursively); ``value`` itself if none is."""
    # Copied only where something is replaced: most bodies that mention a
    # secret word do so in a value ("Security Token Team"), and copying a
    # page of users to change nothing cost more than answering it.
    if isinstance(value, dict):
        cleaned = None
        secret_path = False
        for key, item in value.items():
            secret, is_path = _kind(key) if isinstance(key, str) else (False, False)
            if secret:
                kept = REDACTED
            else:
                kept = redact(item)
                # A PATCH operation whose path names a secret carries it in "value".
                if is_path and isinstance(item, str) and _kind(item)[0]:
                    secret_path = True
            if kept is not item:
                if cleaned is None:
                    cleaned = dict(value)
                cleaned[key] = kept
        if secret_path:
            if cleaned is None:
                cleaned = dict(value)
            for key in cleaned:
                if isinstance(key, str) and key.lower() == "value":
                    cleaned[key] = REDACTED
        return value if cleaned is None else cleaned
    if isinstance(value, list):
        cleaned = None
        for at, item in enumerate(value):
            kept = redact(item)
            if kept is not item:
                if cleaned is None:
                    cleaned = list(value)
                cleaned[at] = kept
        return value if cleaned is None else cleaned
    return value


def _kind(name):
    """Return (names a secret, is "path" in any case) for an attribute name or path."""
    # Short names are cached: a page of users repeats the same few dozen. A
    # long one is rare, and would hold its memory in the cache.
    if len(name) > 128:
        return _classify(name)
    return _classify_short(name)


def _classify(name):
    return SECRET_KEYS.search(name) is not None, name.lower() == "path"


_classify_short = functools.lru_cache(maxsize=4096)(_classify)


def body_text(raw):
    """Return a redacted, truncated text form of a request or response body."""
    # Redaction works on the parsed body. Parsing is skipped only for text that
    # can hold no secret-looking name: none spelled out and no \u escape, which
    # could spell one ("pass\u0077ord"); most list responses are such text.
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"[{len(raw)} bytes, not UTF-8]"
    if "\\u" not in text and not mentions_secret(text):
        return _truncate(text)
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        # Not JSON, yet it may name a secret: keep nothing of it.
        return "[unparsed body withheld: it may contain a secret]"
    try:
        cleaned = json.dumps(redact(parsed), ensure_ascii=False)
    except RecursionError:
        return "[body nested too deeply to redact: withheld]"
    if not cleaned.isascii():
        try:
            cleaned.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate ("\ud800") cannot be stored as text; keep it escaped.
            cleaned = json.dumps(redact(parsed))
    return _truncate(cleaned)


def mentions_secret(text):
    """Tell whether ``text`` contains a secret-looking word, exactly as SECRET_KEYS finds one."""
    if text.isascii():
        # For ASCII text, ignoring case is lower-casing, and a substring
        # search is much cheaper than the case-insensitive regex.
        lowered = text.lower()
        return any(word in lowered for word in SECRET_WORDS)
    return SECRET_KEYS.search(text) is not None


def pretty(text):
    """Indent a stored JSON body for display; leave anything else as it is."""
    if not text or text[0] not in "{[" or text.endswith("characters in all]"):
        return text
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, indent=1)
    except (ValueError, RecursionError):
        return text


def _truncate(text):
    if len(text) <= MAX_BODY:
        return text
    return text[:MAX_BODY] + f"\n… [truncated, {len(text)} characters in all]"


#
# Recording
#


def audit(event, details="", actor=None, address=None):
    """Queue an audit event such as "SCIM Token Created"."""
    if actor is None:
        try:
            from flask_login import current_user

            actor = current_user.username if current_user.is_authenticated else ""
        except (RuntimeError, AttributeError):
            actor = ""
    if address is None:
        try:
            address = request.remote_addr
        except RuntimeError:
            address = None
    writer.put(
        AuditEvent,
        {
            "time": utcnow(),
            "event": event,
            "actor": actor or "",
            "address": address,
            "details": details,
        },
    )


def note(summary=None, resource_type=None, resource_id=None, target=None):
    """Let a SCIM view describe what it did, for its activity record."""
    if summary is not None:
        g.activity_summary = summary
    if resource_type is not None:
        g.activity_resource_type = resource_type
    if resource_id is not None:
        g.activity_resource_id = resource_id
    if target is not None:
        g.activity_target = target


def note_ignored(resource_type, attribute):
    """Let the PATCH engine name an attribute it ignored, for the mapping health counts."""
    # A set on the request: a PATCH retried after a concurrent write, or an
    # attribute named twice, counts once per request.
    if has_request_context():
        g.setdefault("mapping_ignored", set()).add((resource_type, attribute[:256]))


NOTES = (
    "activity_summary",
    "activity_resource_type",
    "activity_resource_id",
    "activity_target",
)


@contextmanager
def operation():
    """Collect the notes of one Bulk operation apart from its enclosing request's."""
    # The proxy is resolved once: a Bulk load enters this twice per user.
    notes = g._get_current_object()
    saved = {key: notes.pop(key, None) for key in NOTES}
    noted = {}
    try:
        yield noted
    finally:
        for key in NOTES:
            noted[key] = notes.pop(key, None)
            if saved[key] is not None:
                setattr(notes, key, saved[key])


def sender():
    """Return who sent the current request and its id, as each of its operations records them."""
    return (*_client(request._get_current_object(), g), request_id())


def record_operation(
    method, path, status, noted, body, response, duration, sent_by=None
):
    """Record one operation of a Bulk request as its own activity row (RFC 7644 §3.7).

    ``sent_by`` is the request's sender(), read once for all its operations.
    """
    if not current_app.config.get("ACTIVITY_LOG", True):
        return
    resource_type, resource_id = _resource(path)
    error = response if status >= 400 and isinstance(response, dict) else {}
    summary = noted.get("activity_summary")
    *client, sent_id = sent_by or sender()
    writer.put(
        ActivityEntry,
        (  # in ENTRY_COLUMNS order
            utcnow(),
            *client,
            method[:16],
            path[:2048],
            "",
            noted.get("activity_resource_type") or resource_type,
            noted.get("activity_resource_id") or resource_id,
            noted.get("activity_target") or None,
            f"Bulk: {summary}" if summary else "Bulk",
            status,
            error.get("scimType"),
            error.get("detail"),
            round(duration * 1000, 2),
            _json_text(body),
            _json_text(response),
            True,
            sent_id,
        ),
    )


def _json_text(value):
    if value is None:
        return None
    # surrogatepass: a lone surrogate from a \u escape must not raise here.
    return body_text(
        json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    )


def _client(req, notes):
    """Return who sent a SCIM request: (idp, token key, client address, user agent)."""
    token = notes.get("scim_token")
    return (
        token.idp if token is not None else None,
        token.key if token is not None else None,
        req.remote_addr,
        (req.environ.get("HTTP_USER_AGENT") or "")[:512] or None,
    )


def _start_timer():
    g.activity_started = time.perf_counter()


# Where the SCIM API lives, told by mdm.scim when its blueprint is registered
# (see serve_api), so that this module imports nothing of the API.
_api_prefix = None
_is_api_path = None
_identify = None


def serve_api(prefix, is_api_path, identify=None):
    """Record the requests for which ``is_api_path(path)``, an API mounted at ``prefix``.

    ``identify(request)`` returns (token, None) for a valid bearer token, else
    (None, (reason, token key, connection)).
    """
    global _api_prefix, _is_api_path, _identify
    _api_prefix, _is_api_path, _identify = prefix, is_api_path, identify
    _known_resource.cache_clear()


def _record(response):
    """Queue the activity row of a SCIM request as it was sent and answered."""
    is_api_path = _is_api_path
    # The request and its notes once each: every use of a context proxy
    # looks the object up again.
    req = request._get_current_object()
    path = req.path
    if is_api_path is None or not is_api_path(path):
        return response
    notes = g._get_current_object()
    if not current_app.config.get("ACTIVITY_LOG", True):
        return response
    if notes.get("scim_token") is None:
        # Only a valid token earns a row: anything else (refused, unrouted,
        # discovery without a token) anyone can send, so it is counted.
        refused = notes.get("scim_refusal")
        if refused is None and _identify is not None:
            token, refused = _identify(req)
            if token is not None:
                notes.scim_token = token
        if refused is not None:
            _count_refusal(req, refused, response.status_code)
            return response
    started = notes.get("activity_started")
    duration = round((time.perf_counter() - started) * 1000, 2) if started else 0.0
    status = response.status_code
    scim_type = detail = None
    response_raw = None
    if not response.is_streamed:
        response_raw = response.get_data()
        if status >= 400:
            try:
                error = json.loads(response_raw)
                scim_type = error.get("scimType")
                detail = error.get("detail")
            except (ValueError, AttributeError):
                pass
    resource_type, resource_id = _resource(path)
    # A tuple in ENTRY_COLUMNS order, inserted as it stands.
    writer.put(
        ActivityEntry,
        (
            utcnow(),
            *_client(req, notes),
            req.method,
            path[:2048],
            _query_text(req)[:2048] if req.environ.get("QUERY_STRING") else "",
            notes.get("activity_resource_type") or resource_type,
            notes.get("activity_resource_id") or resource_id,
            notes.get("activity_target") or None,
            notes.get("activity_summary") or "",
            status,
            scim_type,
            detail,
            duration,
            _request_body(req),
            body_text(response_raw),
            False,
            request_id(),
        ),
    )
    ignored = notes.get("mapping_ignored")
    if ignored:
        token = notes.get("scim_token")
        writer.ignore(utcnow(), token.idp if token is not None else "", ignored)
    return response


# User-Agent words of the identity providers' SCIM clients (lower case), for
# telling a provider with a bad token from unknown clients.
IDP_AGENTS = (("azure ad scim", "entra"), ("okta", "okta"))


def idp_of_agent(user_agent):
    """Return the identity provider a User-Agent names, or None."""
    lowered = (user_agent or "")[:512].lower()
    return next((idp for word, idp in IDP_AGENTS if word in lowered), None)


def count_refusal(reason, token_key, idp, status):
    """Count the current request as refused outside the SCIM API (the OAuth token endpoint)."""
    if current_app.config.get("ACTIVITY_LOG", True):
        _count_refusal(request._get_current_object(), (reason, token_key, idp), status)


def _count_refusal(req, refused, status):
    """Count a request sent without a valid token; its body is never read."""
    # Anyone can send these: a row and a body each would let a flood fill
    # the log and push provisioning history out under the row cap.
    reason, token_key, idp = refused
    user_agent = (req.environ.get("HTTP_USER_AGENT") or "")[:512] or None
    writer.refuse(
        utcnow(),
        status,
        reason,
        idp or idp_of_agent(user_agent),
        token_key,
        req.remote_addr,
        user_agent,
        req.method[:16],
        req.path[:512],
    )


def _request_body(req):
    environ = req.environ
    # From the environ: werkzeug's content_length parses the header anew.
    if environ.get("CONTENT_LENGTH", "0") in ("", "0") and (
        "HTTP_TRANSFER_ENCODING" not in environ
    ):
        return None  # no body: spare building a stream to read nothing
    try:
        return body_text(req.get_data(cache=True))
    except HTTPException:
        # The body was refused (too large); the answer says so, keep nothing.
        return f"[body not read: {req.content_length or '?'} bytes]"


def _query_text(req):
    """Return the query string decoded for reading, secret-looking parameters redacted."""
    # request.args is parsed once per request, and the SCIM view read it already.
    return "&".join(
        f"{k}={REDACTED if SECRET_KEYS.search(k) else v}"
        for k, v in req.args.items(multi=True)
    )


def _resource(path):
    """Return the resource type and id a SCIM path names."""
    # Most paths repeat (/Users, a user polled again); long ones are not kept.
    return _known_resource(path) if len(path) <= 512 else _path_resource(path)


def _path_resource(path):
    parts = path[len(_api_prefix or "") :].strip("/").split("/")
    kind = {"users": "User", "groups": "Group"}.get(parts[0].lower()) if parts else None
    if kind is None:
        return ("Config" if parts and parts[0] else None), None
    if len(parts) > 1 and parts[1] and not parts[1].startswith("."):
        return kind, parts[1][:200]
    return kind, None


_known_resource = functools.lru_cache(maxsize=1024)(_path_resource)


def init_app(app):
    """Open the activity tables beside the directory and hook request recording."""
    path = app.config.get("ACTIVITY_DATABASE")
    if not path and is_url(app.config.get("DATABASE_URL") or ""):
        path = app.config["DATABASE_URL"]
    if not path:
        path = os.path.join(
            os.path.dirname(os.path.abspath(app.config["DATABASE"])), "activity.sqlite"
        )
    app.config["ACTIVITY_DATABASE"] = path
    writer.flush()
    bind(path)
    writer.retention_days = int(app.config.get("ACTIVITY_RETENTION_DAYS", 30))
    writer.max_rows = int(app.config.get("ACTIVITY_MAX_ROWS", 500000))
    writer.start()
    _record_operator_settings(app)
    app.before_request(_start_timer)
    app.after_request(_record)


OPERATOR_SETTINGS = ("SCIM_ENABLED",)


def _record_operator_settings(app):
    """Audit operator switches whose value differs from the last one recorded."""
    with activity_db.connection_context():
        for name in OPERATOR_SETTINGS:
            value = str(bool(app.config.get(name, True))).lower()
            last = (
                AuditEvent.select(AuditEvent.details)
                .where(
                    (AuditEvent.event == "Operator Setting Changed")
                    & AuditEvent.details.startswith(f"{name}=")
                )
                .order_by(AuditEvent.id.desc())
                .scalar()
            )
            previous = last.partition("=")[2] if last else "true"
            if previous != value:
                AuditEvent.create(
                    event="Operator Setting Changed",
                    actor="operator",
                    details=f"{name}={value}",
                )
