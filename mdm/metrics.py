"""Prometheus metrics at /metrics: SCIM traffic, directory counts, credentials, the activity log."""

import hashlib
import hmac
import os
import time
from datetime import UTC

from flask import Response
from flask import current_app
from flask import g
from flask import has_app_context
from flask import request
from peewee import Case
from peewee import fn
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from . import ConfigError
from . import db
from .activity_store import writer
from .models import BearerToken
from .models import Group
from .models import OAuthClient
from .models import User
from .scim.paths import URL_PREFIX
from .scim.paths import is_api_path

EXTENSION = "mdm.metrics"

# Labels come from a fixed list, never from the request as sent: anyone can
# send any method or path, and each new label value is a new time series.
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
RESOURCE_TYPES = {
    "users": "User",
    "groups": "Group",
    "bulk": "Bulk",
    ".search": "Search",
    "me": "Me",
    "serviceproviderconfig": "ServiceProviderConfig",
    "schemas": "Schema",
    "resourcetypes": "ResourceType",
}

LOCK_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """One app's metrics, in a registry of its own."""

    def __init__(self, token):
        self.token_digest = _digest(token)
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mdm_scim_requests",
            "SCIM requests answered, by connection, method, resource type and status class.",
            ["connection", "method", "resource_type", "status_class"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "mdm_scim_request_duration_seconds",
            "Time from a SCIM request's first hook to its answer.",
            ["method", "resource_type"],
            registry=self.registry,
        )
        # "max": with several processes, the latest time any of them saw.
        self.last_request = Gauge(
            "mdm_connection_last_request_timestamp_seconds",
            "Unix time of the last SCIM request with a valid credential, per connection.",
            ["connection"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.last_success = Gauge(
            "mdm_connection_last_success_timestamp_seconds",
            "Unix time of the last SCIM request answered below 400, per connection.",
            ["connection"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.lock_wait = Histogram(
            "mdm_write_lock_wait_seconds",
            "Time a write waited for its lock: SQLite's write slot, or on PostgreSQL "
            "the row or named lock it takes.",
            buckets=LOCK_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.state = StateCollector()
        self.registry.register(self.state)

    def allows(self, req):
        """Tell whether ``req`` carries the metrics token, compared in constant time."""
        credentials = req.authorization
        if credentials is None or credentials.type != "bearer" or not credentials.token:
            return False
        return hmac.compare_digest(_digest(credentials.token), self.token_digest)

    def exposition(self):
        """Return the text exposition of every metric."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Several processes: their counters are read from the shared
            # directory; the directory counts and the queue come from this one.
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            registry.register(self.state)
        else:
            registry = self.registry
        return generate_latest(registry)


class StateCollector:
    """Read what the database and the activity log writer hold at scrape time."""

    def collect(self):
        users = GaugeMetricFamily("mdm_users", "SCIM users by state.", labels=["state"])
        for state, count in _user_counts().items():
            users.add_metric([state], count)
        yield users
        groups = GaugeMetricFamily(
            "mdm_groups", "SCIM groups by state.", labels=["state"]
        )
        for state, count in _group_counts().items():
            groups.add_metric([state], count)
        yield groups
        tokens = GaugeMetricFamily(
            "mdm_token_expiry_timestamp_seconds",
            "Unix time an active bearer token expires (tokens that expire only).",
            labels=["connection", "token"],
        )
        for idp, key, expires in _expiring(BearerToken, BearerToken.key):
            tokens.add_metric([idp, key], expires)
        yield tokens
        clients = GaugeMetricFamily(
            "mdm_oauth_client_expiry_timestamp_seconds",
            "Unix time an active OAuth client's secret expires (clients that expire only).",
            labels=["connection", "client_id"],
        )
        for idp, client_id, expires in _expiring(OAuthClient, OAuthClient.client_id):
            clients.add_metric([idp, client_id], expires)
        yield clients
        yield GaugeMetricFamily(
            "mdm_activity_queue_depth",
            "Activity rows waiting for the background writer in this process.",
            value=len(writer.pending),
        )
        yield CounterMetricFamily(
            "mdm_activity_dropped_rows",
            "Activity rows dropped because the writer's queue was full, in this process.",
            value=writer.dropped,
        )


def _user_counts():
    """Return users per state, in one aggregate query."""
    live = User.deprovisioned_at.is_null()
    row = User.select(
        _count_where(live & User.active),
        _count_where(live & ~User.active),
        _count_where(User.deprovisioned_at.is_null(False)),
    ).tuples()[0]
    return dict(zip(("active", "disabled", "deprovisioned"), row, strict=True))


def _group_counts():
    """Return groups per state, in one aggregate query."""
    row = Group.select(
        _count_where(Group.deprovisioned_at.is_null()),
        _count_where(Group.deprovisioned_at.is_null(False)),
    ).tuples()[0]
    return dict(zip(("live", "deprovisioned"), row, strict=True))


def _count_where(condition):
    # SUM over no rows is NULL, hence the COALESCE.
    return fn.COALESCE(fn.SUM(Case(None, [(condition, 1)], 0)), 0)


def _expiring(model, public_id):
    """Yield (connection, public id, expiry as Unix time) of active credentials that expire."""
    query = (
        model.select(model.idp, public_id, model.expires_at)
        .where(model.active & model.expires_at.is_null(False))
        .order_by(model.idp, public_id)
        .tuples()
    )
    for idp, key, expires_at in query:
        yield idp, key, expires_at.replace(tzinfo=UTC).timestamp()


def _digest(secret):
    return hashlib.sha256(secret.encode()).digest()


#
# Request hooks and the endpoint
#


def _start():
    if is_api_path(request.path):
        g.metrics_started = time.perf_counter()


def _count(response):
    """Count a SCIM request once it is answered."""
    req = request._get_current_object()
    if not is_api_path(req.path):
        return response
    metrics = current_app.extensions[EXTENSION]
    method = req.method if req.method in METHODS else "other"
    resource_type = _resource_type(req.path)
    token = g.get("scim_token")
    refused = g.get("scim_refusal")
    connection = token.idp if token is not None else (refused and refused[2]) or ""
    status = response.status_code
    metrics.requests.labels(
        connection, method, resource_type, f"{status // 100}xx"
    ).inc()
    started = g.get("metrics_started")
    if started is not None:
        metrics.duration.labels(method, resource_type).observe(
            time.perf_counter() - started
        )
    if token is not None:
        now = time.time()
        metrics.last_request.labels(connection).set(now)
        if status < 400:
            metrics.last_success.labels(connection).set(now)
    return response


def _resource_type(path):
    first = path[len(URL_PREFIX) :].strip("/").partition("/")[0].lower()
    if not first:
        return ""
    return RESOURCE_TYPES.get(first, "other")


def _observe_lock_wait(seconds):
    if has_app_context():
        metrics = current_app.extensions.get(EXTENSION)
        if metrics is not None:
            metrics.lock_wait.observe(seconds)


def serve_metrics():
    """Answer a scrape that carries METRICS_TOKEN; 401 otherwise."""
    metrics = current_app.extensions[EXTENSION]
    if not metrics.allows(request):
        return Response(
            "Send Authorization: Bearer <MDM_METRICS_TOKEN>.\n",
            401,
            {"WWW-Authenticate": 'Bearer realm="metrics"'},
            content_type="text/plain; charset=utf-8",
        )
    return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)


def init_app(app):
    """Serve /metrics and count SCIM requests when METRICS_TOKEN is set."""
    token = app.config.get("METRICS_TOKEN")
    if not token:
        return  # no route: /metrics is a 404 like any unknown path
    app.add_url_rule("/metrics", "metrics", serve_metrics)
    shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if shared and not os.path.isdir(shared):
        # Checked at start: prometheus-client would fail each SCIM request instead.
        raise ConfigError(
            f"PROMETHEUS_MULTIPROC_DIR is {shared!r}, which is not a directory: "
            "create it (empty) or unset it."
        )
    app.extensions[EXTENSION] = Metrics(str(token))
    db.lock_wait_observer = _observe_lock_wait
    app.before_request(_start)
    app.after_request(_count)
