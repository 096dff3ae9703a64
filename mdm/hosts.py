"""Which Host headers the app answers to, the way Django's ALLOWED_HOSTS decides."""

import functools
from urllib.parse import urlsplit

from flask import current_app
from flask import request
from werkzeug.exceptions import SecurityError

# Always trusted, with any port, so a health check from the same machine works.
LOOPBACK = ("localhost", "127.0.0.1", "[::1]")

# Addresses that mean "every interface": not a name any client sends.
ANY_ADDRESS = ("", "0.0.0.0", "::", "[::]")

NOT_TRUSTED = (
    "This server does not answer to the host name {host!r}. If clients reach it by "
    "that name, set MDM_PUBLIC_URL to the address they use, or add the name to "
    "MDM_TRUSTED_HOSTS."
)


def setting(value):
    """Return the host names of a TRUSTED_HOSTS setting: a list, or names separated by commas."""
    if not value:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [name for name in (normalise(str(v)) for v in value) if name]


def normalise(name):
    """Return a host name as a Host header carries it: lower case, no port, IPv6 in brackets."""
    name = name.strip().lower()
    if name.startswith("["):
        return name.partition("]")[0] + "]"
    if name.count(":") > 1:  # a bare IPv6 address
        return f"[{name}]"
    return name.partition(":")[0]


def served_address(host):
    """Return the name ``mdm serve --host`` makes trusted, or None for every interface."""
    name = normalise(host)
    return None if name in ANY_ADDRESS else name


def trusted_hosts(app):
    """Return every host name the app answers to, in the order start-up lists them."""
    return _trusted(app.config.get("PUBLIC_URL") or "", tuple(app.trusted_hosts))


@functools.lru_cache(maxsize=16)
def _trusted(public_url, names):
    public = urlsplit(public_url).netloc.rpartition("@")[2] if public_url else ""
    found = [*LOOPBACK, normalise(public), *names]
    return tuple(dict.fromkeys(name for name in found if name))


def is_trusted(host, trusted):
    """Tell whether a Host header value names one of ``trusted`` (".name" takes subdomains)."""
    name = normalise(host)
    if not name:
        return False
    for ref in trusted:
        if name == ref or (ref.startswith(".") and f".{name}".endswith(ref)):
            return True
    return False


def check():
    """Refuse a request whose Host header names no trusted host, with a 400 saying what to set."""
    # The first hook of every request, routed or not, so no other hook or
    # view has built a URL from the Host yet. A request without a Host header
    # (HTTP/1.0) gets URLs built from the server's own address, which no
    # client chose.
    if "HTTP_HOST" not in request.environ:
        return
    # werkzeug gives "" for a value with characters no host name has.
    host = request.host
    if not is_trusted(host, trusted_hosts(current_app)):
        shown = normalise(host) or request.environ["HTTP_HOST"][:100]
        raise SecurityError(NOT_TRUSTED.format(host=shown))
