"""GET /metrics: Prometheus text for SCIM traffic, directory counts, credentials and the activity log."""

import time
from datetime import UTC

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mdm import activity
from mdm import create_app
from mdm.activity import ActivityEntry
from mdm.activity import Refusal
from mdm.activity import activity_db
from mdm.db import database
from mdm.models import BearerToken
from mdm.models import OAuthClient

from . import served
from .conftest import ScimClient
from .conftest import database_config

METRICS_TOKEN = "scrape-me-0123456789"
SCRAPE = {"Authorization": f"Bearer {METRICS_TOKEN}"}
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture
def app(tmp_path):
    """An app with METRICS_TOKEN set."""
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            "WTF_CSRF_ENABLED": False,
            "METRICS_TOKEN": METRICS_TOKEN,
            **database_config(tmp_path / "mdm.sqlite"),
        }
    )
    yield app
    if not database.is_closed():
        database.close()


def issue(app, model, idp, **kwargs):
    with app.app_context(), database.connection_context():
        return model.issue(idp, **kwargs)


def samples(text):
    """Return {(name, sorted label pairs): value} of every sample in ``text``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def series(**labels):
    """Return the label pairs of one series, as ``samples`` keys them."""
    return tuple(sorted(labels.items()))


def scrape(client):
    response = client.get("/metrics", headers=SCRAPE)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    return samples(response.get_data(as_text=True))


def named(found, name):
    """Return {label pairs: value} of the samples called ``name``."""
    return {labels: value for (n, labels), value in found.items() if n == name}


def test_metrics_is_not_found_while_the_token_is_unset(tmp_path):
    app = create_app(
        {"TESTING": True, "SECRET_KEY": "t", **database_config(tmp_path / "m.sqlite")}
    )
    client = app.test_client()
    unknown = client.get("/no-such-page")
    for headers in ({}, SCRAPE):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 404
        assert response.get_data() == unknown.get_data()


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x"],
)
def test_metrics_needs_the_token(app, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = app.test_client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.get_data(as_text=True) == (
        "Send Authorization: Bearer <MDM_METRICS_TOKEN>.\n"
    )
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'


def test_requests_are_counted_by_connection_method_type_and_status(app):
    client = app.test_client()
    _, entra_secret = issue(app, BearerToken, "entra")
    _, okta_secret = issue(app, BearerToken, "okta")
    entra = ScimClient(client, entra_secret)
    okta = ScimClient(client, okta_secret)
    before = time.time()
    entra.create_user("ada")
    entra.create_user("grace")
    assert entra.get("/Users/nope").status_code == 404
    assert okta.get("/Groups").status_code == 200
    assert client.get("/scim/v2/Users").status_code == 401
    assert client.get("/scim/v2/Schemas").status_code == 200
    assert entra.request("BREW", "/Users").status_code == 405
    assert entra.get("/NoSuchThing").status_code == 404
    after = time.time()

    found = scrape(client)
    assert named(found, "mdm_scim_requests_total") == {
        series(
            connection="entra", method="POST", resource_type="User", status_class="2xx"
        ): 2.0,
        series(
            connection="entra", method="GET", resource_type="User", status_class="4xx"
        ): 1.0,
        series(
            connection="okta", method="GET", resource_type="Group", status_class="2xx"
        ): 1.0,
        series(
            connection="", method="GET", resource_type="User", status_class="4xx"
        ): 1.0,
        series(
            connection="", method="GET", resource_type="Schema", status_class="2xx"
        ): 1.0,
        series(
            connection="entra", method="other", resource_type="User", status_class="4xx"
        ): 1.0,
        series(
            connection="entra", method="GET", resource_type="other", status_class="4xx"
        ): 1.0,
    }
    assert named(found, "mdm_scim_request_duration_seconds_count") == {
        series(method="POST", resource_type="User"): 2.0,
        series(method="GET", resource_type="User"): 2.0,
        series(method="GET", resource_type="Group"): 1.0,
        series(method="GET", resource_type="Schema"): 1.0,
        series(method="other", resource_type="User"): 1.0,
        series(method="GET", resource_type="other"): 1.0,
    }
    last_request = named(found, "mdm_connection_last_request_timestamp_seconds")
    last_success = named(found, "mdm_connection_last_success_timestamp_seconds")
    assert (
        set(last_request)
        == set(last_success)
        == {
            series(connection="entra"),
            series(connection="okta"),
        }
    )
    for stamps in (last_request, last_success):
        assert all(before <= value <= after for value in stamps.values())
    # Entra's last request failed; its last success came before it.
    entra = series(connection="entra")
    assert last_success[entra] < last_request[entra]


def test_last_success_is_absent_for_a_connection_that_only_failed(app):
    client = app.test_client()
    _, secret = issue(app, BearerToken, "generic")
    assert ScimClient(client, secret).get("/Users/nope").status_code == 404
    found = scrape(client)
    assert set(named(found, "mdm_connection_last_request_timestamp_seconds")) == {
        series(connection="generic")
    }
    assert named(found, "mdm_connection_last_success_timestamp_seconds") == {}


def test_users_and_groups_are_counted_by_state(app):
    client = app.test_client()
    _, secret = issue(app, BearerToken, "entra")
    scim = ScimClient(client, secret)
    ids = [scim.create_user(name)["id"] for name in ("a", "b", "c", "d")]
    disable = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
    assert scim.patch(f"/Users/{ids[0]}", disable).status_code == 200
    assert scim.delete(f"/Users/{ids[1]}").status_code == 204
    groups = [scim.create_group(name)["id"] for name in ("g1", "g2", "g3")]
    assert scim.delete(f"/Groups/{groups[0]}").status_code == 204

    found = scrape(client)
    assert named(found, "mdm_users") == {
        series(state="active"): 2.0,
        series(state="disabled"): 1.0,
        series(state="deprovisioned"): 1.0,
    }
    assert named(found, "mdm_groups") == {
        series(state="live"): 2.0,
        series(state="deprovisioned"): 1.0,
    }


def test_an_empty_directory_counts_zero(app):
    found = scrape(app.test_client())
    assert named(found, "mdm_users") == {
        series(state="active"): 0.0,
        series(state="disabled"): 0.0,
        series(state="deprovisioned"): 0.0,
    }
    assert named(found, "mdm_groups") == {
        series(state="live"): 0.0,
        series(state="deprovisioned"): 0.0,
    }


def test_expiry_is_reported_for_active_credentials_that_expire(app):
    expiring, secret = issue(app, BearerToken, "entra", expires_in_days=30)
    issue(app, BearerToken, "entra")  # never expires
    revoked, _ = issue(app, BearerToken, "okta", expires_in_days=5)
    client, client_secret = issue(app, OAuthClient, "okta", expires_in_days=90)
    issue(app, OAuthClient, "generic")  # never expires
    with app.app_context(), database.connection_context():
        BearerToken.update(active=False).where(BearerToken.id == revoked.id).execute()

    response = app.test_client().get("/metrics", headers=SCRAPE)
    text = response.get_data(as_text=True)
    found = samples(text)
    assert named(found, "mdm_token_expiry_timestamp_seconds") == {
        series(connection="entra", token=expiring.key): _unix(expiring.expires_at)
    }
    assert named(found, "mdm_oauth_client_expiry_timestamp_seconds") == {
        series(client_id=client.client_id, connection="okta"): _unix(client.expires_at)
    }
    # Public ids only: no secret and no hash reaches the scrape.
    for value in (secret, expiring.secret_hash, client_secret, client.secret_hash):
        assert value not in text


def _unix(naive_utc):
    return naive_utc.replace(tzinfo=UTC).timestamp()


def test_dropped_activity_rows_are_reported(app, monkeypatch):
    client = app.test_client()
    _, secret = issue(app, BearerToken, "entra")
    activity.writer.flush()
    monkeypatch.setattr(activity.writer, "dropped", 7)
    ScimClient(client, secret).create_user("ada")
    assert scrape(client)[("mdm_activity_dropped_rows_total", ())] == 7.0


def test_queue_depth_counts_rows_waiting_for_the_writer(app, monkeypatch):
    client = app.test_client()
    activity.writer.flush()
    # A writer thread that never runs leaves rows queued.
    monkeypatch.setattr(activity.writer, "pending", type(activity.writer.pending)())
    for n in range(3):
        activity.writer.pending.append((ActivityEntry, n))
    found = scrape(client)
    assert found[("mdm_activity_queue_depth", ())] == 3.0


def test_write_lock_waits_are_observed(app):
    client = app.test_client()
    _, secret = issue(app, BearerToken, "entra")
    scim = ScimClient(client, secret)
    before = scrape(client)[("mdm_write_lock_wait_seconds_count", ())]
    scim.create_user("ada")
    scim.create_user("grace")
    after = scrape(client)
    assert after[("mdm_write_lock_wait_seconds_count", ())] == before + 2
    assert after[("mdm_write_lock_wait_seconds_bucket", (("le", "+Inf"),))] == (
        before + 2
    )


def test_scrapes_are_not_in_the_activity_log(app):
    client = app.test_client()
    _, secret = issue(app, BearerToken, "entra")
    ScimClient(client, secret).create_user("ada")
    activity.writer.flush()
    with activity_db.connection_context():
        entries = ActivityEntry.select().count()
        refusals = Refusal.select().count()
    scrape(client)
    assert client.get("/metrics").status_code == 401
    activity.writer.flush()
    with activity_db.connection_context():
        assert ActivityEntry.select().count() == entries == 1
        assert Refusal.select().count() == refusals


def test_each_app_has_its_own_registry(app, tmp_path):
    _, secret = issue(app, BearerToken, "entra")
    ScimClient(app.test_client(), secret).create_user("ada")
    other = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "t",
            "METRICS_TOKEN": METRICS_TOKEN,
            **database_config(tmp_path / "other.sqlite"),
        }
    )
    assert named(scrape(other.test_client()), "mdm_scim_requests_total") == {}


#
# The served stack
#


@pytest.mark.parametrize("multiprocess", [False, True])
def test_served_metrics_after_scim_requests(tmp_path, multiprocess):
    """Scrape ``mdm serve``; in multiprocess mode, one of two servers counts both."""
    instance = tmp_path / "instance"
    instance.mkdir()
    env = served.environment(instance, METRICS_TOKEN=METRICS_TOKEN)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if multiprocess:
        (tmp_path / "prom").mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prom")
    secret = served.mdm(env, "token", "create", "--idp", "okta").stdout.strip()
    processes, ports = [], []
    try:
        for n in range(2 if multiprocess else 1):
            process, port = served.start(env, tmp_path / f"serve{n}.log")
            processes.append(process)
            ports.append(port)
        # The users are created through the first server, read and scraped
        # through the last.
        scim = {
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/scim+json",
        }
        for name in ("ada", "grace"):
            response, _ = served.request(
                ports[0],
                "POST",
                "/scim/v2/Users",
                {"schemas": [USER], "userName": name},
                scim,
            )
            assert response.status == 201
        response, _ = served.request(ports[-1], "GET", "/scim/v2/Users", headers=scim)
        assert response.status == 200
        response, body = served.request(ports[-1], "GET", "/metrics")
        assert (response.status, body) == (
            401,
            b"Send Authorization: Bearer <MDM_METRICS_TOKEN>.\n",
        )
        response, body = served.request(ports[-1], "GET", "/metrics", headers=SCRAPE)
        assert response.status == 200
    finally:
        for process in processes:
            assert served.stop(process) == 0
    found = samples(body.decode())
    assert named(found, "mdm_scim_requests_total") == {
        series(
            connection="okta", method="POST", resource_type="User", status_class="2xx"
        ): 2.0,
        series(
            connection="okta", method="GET", resource_type="User", status_class="2xx"
        ): 1.0,
    }
    assert named(found, "mdm_scim_request_duration_seconds_count") == {
        series(method="POST", resource_type="User"): 2.0,
        series(method="GET", resource_type="User"): 1.0,
    }
    assert named(found, "mdm_users") == {
        series(state="active"): 2.0,
        series(state="disabled"): 0.0,
        series(state="deprovisioned"): 0.0,
    }
    assert set(named(found, "mdm_connection_last_success_timestamp_seconds")) == {
        series(connection="okta")
    }
    assert found[("mdm_write_lock_wait_seconds_count", ())] >= 2


def test_a_missing_multiprocess_directory_is_refused_at_start(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o700)
    env = served.environment(instance, METRICS_TOKEN=METRICS_TOKEN)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "missing")
    result = served.mdm(env, "token", "list", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        f"Error: PROMETHEUS_MULTIPROC_DIR is {str(tmp_path / 'missing')!r}, "
        "which is not a directory: create it (empty) or unset it.\n",
    )
