"""Show a new token or client secret once, on a page that a reload cannot repeat."""

# Generate and Renew answer with a redirect (POST/redirect/GET), so reloading
# the page that shows the secret never runs the action again. Between the two
# requests the secret is split in two halves that each reveal nothing: a random
# pad in the admin's session cookie, and the secret XOR the pad in a shared
# Setting row (any server process may answer the GET). Showing the secret
# deletes the row, so it is shown once, and only to the session that made it.
# Tokens and OAuth clients have ids of their own, so a ticket also names the
# kind of credential: a client's secret never shows on a token's page.

import json
import secrets
from datetime import datetime
from datetime import timedelta

from flask import session

from ..db import write_transaction
from ..models import OAuthClient
from ..models import Setting
from ..models import WebhookEndpoint
from ..models import utcnow

PREFIX = "reveal:"
# Long enough for the redirect, short enough that an unopened secret dies soon.
LIFETIME = timedelta(minutes=5)


def kind(credential):
    """Name the kind of ``credential`` a ticket is for: "token" or "client"."""
    if isinstance(credential, WebhookEndpoint):
        return "webhook"
    return "client" if isinstance(credential, OAuthClient) else "token"


def keep(token, secret, renewed):
    """Keep ``token``'s (or an OAuth client's) new ``secret`` for one showing to this session."""
    plain = secret.encode()
    pad = secrets.token_bytes(len(plain))
    name = PREFIX + secrets.token_urlsafe(16)
    now = utcnow()
    value = {
        "kind": kind(token),
        "token": token.id,
        "renewed": renewed,
        "sealed": _xor(plain, pad).hex(),
        "expires": (now + LIFETIME).isoformat(),
    }
    with write_transaction():
        _prune(now)
        Setting.create(name=name, value=json.dumps(value))
    session["reveal"] = {
        "name": name,
        "pad": pad.hex(),
        "kind": kind(token),
        "token": token.id,
    }


def take(token):
    """Return (secret, renewed) kept for ``token`` by this session, once; else None."""
    ticket = session.get("reveal")
    if (
        not isinstance(ticket, dict)
        or ticket.get("token") != token.id
        or ticket.get("kind") != kind(token)
    ):
        return None
    session.pop("reveal")
    with write_transaction():
        row = Setting.get_or_none(Setting.name == str(ticket.get("name")))
        # Only the request whose DELETE removed the row takes the secret:
        # two at once with one session may both have read it.
        if row is not None and row.delete_instance() != 1:
            row = None
    if row is None:
        return None
    value = json.loads(row.value)
    pad = bytes.fromhex(ticket["pad"])
    sealed = bytes.fromhex(value["sealed"])
    if (
        value["token"] != token.id
        or value.get("kind") != kind(token)
        or len(pad) != len(sealed)
        or _expired(value)
    ):
        return None
    return _xor(sealed, pad).decode(), bool(value["renewed"])


def _xor(data, pad):
    return bytes(a ^ b for a, b in zip(data, pad, strict=True))


def _expired(value, now=None):
    return datetime.fromisoformat(value["expires"]) <= (now or utcnow())


def _prune(now):
    """Delete secrets kept for a showing that never came."""
    rows = Setting.select().where(Setting.name.startswith(PREFIX))
    stale = [row.name for row in rows if _expired(json.loads(row.value), now)]
    if stale:
        Setting.delete().where(Setting.name.in_(stale)).execute()
