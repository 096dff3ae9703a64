"""mdm: a self-hosted SCIM 2.0 provisioning target with an admin console."""

import os
import re
import secrets
import sys
from pathlib import Path

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import files
from . import hosts

# The source tree, or the single binary's unpack folder (templates/ and static/).
ROOT = Path(__file__).resolve().parent.parent

__version__ = "0.1.0"


def instance_path():
    """Return the data folder: MDM_INSTANCE_PATH, else instance/ or the binary's default."""
    configured = os.environ.get("MDM_INSTANCE_PATH")
    if configured:
        return os.path.abspath(configured)
    if not getattr(sys, "frozen", False):
        return str(ROOT / "instance")
    # The single binary runs from a temporary folder that vanishes when it
    # exits: its data goes where systemd's StateDirectory= or the XDG base
    # directory specification puts a program's state.
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return os.path.abspath(state)
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(os.path.abspath(data_home), "mdm")


class ConfigError(ValueError):
    """A setting has a value mdm cannot use."""


class App(Flask):
    """Flask, deciding once per function whether a view or hook is a coroutine."""

    # Flask.ensure_sync is documented as the place to change how views and
    # hooks are called; Flask asks inspect on every call of each of them,
    # about ten times per SCIM request, and the answer never changes.

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sync_functions = {}
        # Host names from TRUSTED_HOSTS and `mdm serve --host` (see mdm.hosts).
        self.trusted_hosts = []

    def ensure_sync(self, func):
        try:
            return self.sync_functions[func]
        except KeyError:
            self.sync_functions[func] = sync = super().ensure_sync(func)
            return sync
        except TypeError:  # an unhashable callable
            return super().ensure_sync(func)


def create_app(test_config=None):
    """Create and configure the mdm application."""
    app = App(
        __name__,
        instance_path=instance_path(),
        instance_relative_config=True,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    app.config.from_mapping(
        # SQLite file (the default, in the instance folder) ...
        DATABASE=None,
        # ... or postgresql://user:password@host/dbname for several processes.
        DATABASE_URL=None,
        SCIM_ENABLED=True,
        # Largest page a list or search returns; advertised as filter.maxResults.
        SCIM_MAX_RESULTS=500,
        SCIM_DEFAULT_COUNT=100,
        SCIM_CUSTOM_SCHEMA="urn:ietf:params:scim:schemas:extension:ivanti:2.0:User",
        # Absolute base such as https://mdm.example.com when a proxy rewrites the host.
        PUBLIC_URL=None,
        # Number of reverse proxies whose X-Forwarded-* headers are trusted.
        # Behind one, the host checked against TRUSTED_HOSTS is the forwarded one.
        PROXY_FIX=0,
        # Host names besides PUBLIC_URL's and loopback's that requests may carry
        # (a list, or names separated by commas; ".example.org" takes its
        # subdomains). Any other Host header gets a 400, so that no link, redirect
        # or meta.location ever points at a host an attacker chose.
        TRUSTED_HOSTS=None,
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        # waitress's limits (mdm.server.make_server). A connection that sends
        # nothing for CHANNEL_TIMEOUT seconds is closed (checked every
        # CLEANUP_INTERVAL seconds): an IdP sends a request at once and a slow
        # upload keeps sending, so only a stalled or idle connection waits that
        # long. A slow-loris client that trickles a byte now and then is never
        # idle, so the defence against it is room: CONNECTION_LIMIT open
        # connections (waitress's 100 let 110 such clients starve everyone) cost
        # a file descriptor and a few KB each. A reverse proxy in front, which
        # buffers whole requests before passing them on, is the defence in depth.
        CHANNEL_TIMEOUT=30,
        CLEANUP_INTERVAL=10,
        CONNECTION_LIMIT=1000,
        # A SCIM request's headers are a few hundred bytes (waitress allows 256 KB).
        MAX_REQUEST_HEADER_SIZE=64 * 1024,
        # None: four times the larger of MAX_CONTENT_LENGTH and SCIM_BULK_MAX_PAYLOAD.
        MAX_REQUEST_BODY_SIZE=None,
        # Bulk limits, advertised in /ServiceProviderConfig (RFC 7644 §3.7.4).
        SCIM_BULK_MAX_OPERATIONS=1000,
        SCIM_BULK_MAX_PAYLOAD=1024 * 1024,
        # How long an access token from the OAuth token endpoint lives (Entra
        # accepts 60 to 360 minutes; it fetches a new one before expiry).
        OAUTH_TOKEN_MINUTES=60,
        # Provisioning activity log (activity.sqlite beside a SQLite database;
        # tables of its own in a PostgreSQL one).
        ACTIVITY_LOG=True,
        ACTIVITY_RETENTION_DAYS=30,
        ACTIVITY_MAX_ROWS=500000,
        # Console listings and dashboard figures count rows up to this many and
        # show "more than" beyond it, so a page view never counts a million rows.
        COUNT_CAP=10000,
        # Bearer token a Prometheus scrape of /metrics must send; unset, there
        # is no /metrics. With several processes on one host, also set
        # PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode).
        METRICS_TOKEN=None,
        # CSRF is checked by the console and sign-in pages themselves
        # (mdm.forms.check_form_request); the SCIM API uses bearer tokens.
        WTF_CSRF_CHECK_DEFAULT=False,
        # Console sessions end after this long without a request ...
        SESSION_IDLE_MINUTES=480,
        # ... and this long after signing in, however active: a stolen session
        # cookie is useful for a day at most, and a working day never hits it.
        SESSION_LIFETIME_HOURS=24,
        # The first-run setup link works this long; a restart prints a new one.
        SETUP_CODE_HOURS=24,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # The request log on stderr: "text" (a readable line per request) or
        # "json" (one object per line, for log shippers).
        LOG_FORMAT="text",
        # Lifecycle webhooks (mdm.webhooks): endpoints must be https:// unless
        # on loopback or this allows plain http (a trusted internal network).
        WEBHOOK_ALLOW_HTTP=False,
        # Seconds one delivery attempt may take before it counts as failed.
        WEBHOOK_TIMEOUT=10,
        # How often the worker looks for events other processes wrote.
        WEBHOOK_POLL_SECONDS=5,
        # Seconds before each retry, comma separated (the last repeats);
        # unset: 5 s, 10 s, 30 s, 1 m, 5 m, 15 m, 1 h, 2 h, 4 h, then 8 h.
        WEBHOOK_RETRY_SCHEDULE=None,
        # An endpoint failing this long is shown as failing (it keeps its queue).
        WEBHOOK_FAILING_HOURS=24,
        # Delivered events are kept this long for the delivery log.
        WEBHOOK_RETENTION_DAYS=7,
    )
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env("MDM")
    else:
        app.config.update(test_config)
    # mdm checks the Host header itself (mdm.hosts, the first hook of every request):
    # Flask's own check of TRUSTED_HOSTS cannot match an IPv6 literal such as
    # [::1], and its 400 does not say which setting to set.
    app.trusted_hosts = hosts.setting(app.config["TRUSTED_HOSTS"])
    app.config["OAUTH_TOKEN_MINUTES"] = _minutes(app.config["OAUTH_TOKEN_MINUTES"])
    app.config["TRUSTED_HOSTS"] = None
    # Owner-only: the folder holds the secret key and the hashes of every credential.
    os.makedirs(app.instance_path, mode=0o700, exist_ok=True)
    if not app.config.get("DATABASE"):
        app.config["DATABASE"] = os.path.join(app.instance_path, "mdm.sqlite")
    # An install from before files were created owner-only is tightened, in
    # one warning; new files are created owner-only (mdm.files).
    activity_file = app.config.get("ACTIVITY_DATABASE") or os.path.join(
        os.path.dirname(os.path.abspath(app.config["DATABASE"])), "activity.sqlite"
    )
    files.tighten(
        app.instance_path,
        os.path.join(app.instance_path, "secret_key"),
        *files.sqlite_family(app.config["DATABASE"]),
        *files.sqlite_family(activity_file),
    )
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _persistent_secret_key(app.instance_path)

    from . import activity
    from . import auth
    from . import cli
    from . import console
    from . import db
    from . import errors
    from . import health
    from . import metrics
    from . import models
    from . import oauth
    from . import security
    from . import webhooks
    from .forms import csrf
    from .scim import bp as scim_bp

    try:
        app.config["LOG_FORMAT"] = health.log_format(app.config["LOG_FORMAT"])
    except ValueError as error:
        raise ConfigError(str(error)) from None
    # Every request gets its id and its log line, even one the Host check refuses.
    health.init_app(app)
    app.before_request(hosts.check)
    app.before_request(health.answer_probe)
    db.init_app(app)
    models.init_app(app)
    # Registered first, so its after-request hook runs last (Flask runs them
    # in reverse): by then the activity log has identified discovery's token.
    metrics.init_app(app)
    activity.init_app(app)
    webhooks.init_app(app)
    app.json.sort_keys = False
    app.url_map.merge_slashes = False
    security.init_app(app)
    auth.init_app(app)
    csrf.init_app(app)
    app.register_blueprint(auth.bp)
    console.init_app(app)
    app.register_blueprint(scim_bp)
    csrf.exempt(scim_bp)  # bearer-token API: no cookies, so no CSRF
    app.register_blueprint(oauth.bp)  # client credentials: no cookies either
    cli.init_app(app)
    errors.init_app(app)

    app.wsgi_app = _CollapseSlashes(app.wsgi_app)
    if int(app.config["PROXY_FIX"] or 0) > 0:
        hops = int(app.config["PROXY_FIX"])
        app.wsgi_app = ProxyFix(
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )
    return app


def _minutes(value):
    """Return OAUTH_TOKEN_MINUTES as an int from 5 to 1440, or raise ConfigError."""
    try:
        minutes = int(str(value).strip())
    except ValueError:
        minutes = 0
    if not 5 <= minutes <= 1440:
        raise ConfigError(
            f"MDM_OAUTH_TOKEN_MINUTES must be a whole number from 5 to 1440, not {value!r}."
        )
    return minutes


def _persistent_secret_key(instance_path):
    """Return the instance's secret key, generating it once with owner-only permissions."""
    path = os.path.join(instance_path, "secret_key")
    try:
        with open(path) as f:
            key = f.read().strip()
        if key:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32)
    # O_EXCL: when two processes start at once, only one writes; the other reads it.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path) as f:
            return f.read().strip() or key
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


class _CollapseSlashes:
    """Collapse repeated slashes in the path instead of redirecting.

    An IdP given a Tenant URL ending in "/" requests "/scim/v2//Users"; a 308
    redirect would fail a POST or PATCH, so the path is normalised in place.
    """

    _slashes = re.compile(r"/{2,}")

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ["PATH_INFO"] = self._slashes.sub("/", path)
        return self.app(environ, start_response)
