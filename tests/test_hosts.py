"""Host header: only trusted names are answered, so no URL points at a host an attacker chose."""

import json

import pytest

from mdm import create_app

from . import served
from .conftest import PASSWORD
from .conftest import ScimClient
from .conftest import database_config
from .conftest import issue_token

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def refusal(host):
    return (
        f"This server does not answer to the host name {host!r}. If clients reach it "
        "by that name, set MDM_PUBLIC_URL to the address they use, or add the name "
        "to MDM_TRUSTED_HOSTS."
    )


def scim_refusal(host):
    return {"schemas": [ERROR], "status": "400", "detail": refusal(host)}


def make_app(tmp_path, **settings):
    app = create_app(
        {"TESTING": True, **database_config(tmp_path / "h.db"), **settings}
    )
    _, secret = issue_token(app)
    return app, ScimClient(app.test_client(), secret)


def test_an_untrusted_host_is_refused_on_scim_and_console_paths(app, scim, client):
    evil = {"Host": "evil.example"}
    response = scim.post("/Users", {"userName": "a@example.org"}, headers=evil)
    assert response.status_code == 400
    assert response.get_json() == scim_refusal("evil.example")
    assert "Location" not in response.headers
    assert scim.get("/Users").get_json()["totalResults"] == 0  # nothing was created
    for path in ("/ServiceProviderConfig", "/Schemas", "/ResourceTypes", "/Nowhere"):
        response = scim.get(path, headers={"Host": "evil.example:8080"})
        assert response.status_code == 400
        assert response.get_json() == scim_refusal("evil.example")

    for path in ("/", "/login", "/setup", "/nowhere"):
        response = client.get(path, headers=evil)
        assert response.status_code == 400
        assert response.mimetype == "text/html"
        page = response.get_data(as_text=True)
        assert refusal("evil.example").replace("'", "&#39;") in page
        assert "evil.example/" not in page
        assert "Location" not in response.headers


def test_loopback_names_are_trusted_with_any_port(scim):
    for host in ("localhost", "localhost:8080", "127.0.0.1:9", "[::1]:8080", "[::1]"):
        body = {"userName": f"u{len(host)}@example.org"}
        response = scim.post("/Users", body, headers={"Host": host})
        assert response.status_code == 201
        location = response.get_json()["meta"]["location"]
        assert location.startswith(f"http://{host}/scim/v2/Users/")


def test_trusted_hosts_setting_as_text_or_list(tmp_path):
    for setting in (
        "mdm.example.org, .corp.example",
        ["mdm.example.org", ".corp.example"],
    ):
        app, scim = make_app(tmp_path, TRUSTED_HOSTS=setting)
        for host in (
            "mdm.example.org",
            "MDM.example.org:443",
            "corp.example",
            "a.corp.example",
        ):
            response = scim.get("/ServiceProviderConfig", headers={"Host": host})
            assert response.status_code == 200, (setting, host)
        for host in ("evil.example", "mdm.example.org.evil.example", "xcorp.example"):
            response = scim.get("/ServiceProviderConfig", headers={"Host": host})
            assert response.get_json() == scim_refusal(host), (setting, host)


def test_the_public_url_host_is_trusted(tmp_path):
    app, scim = make_app(tmp_path, PUBLIC_URL="https://mdm.example.org/")
    response = scim.post(
        "/Users", {"userName": "p@example.org"}, headers={"Host": "mdm.example.org"}
    )
    assert response.status_code == 201
    location = response.headers["Location"]
    assert location.startswith("https://mdm.example.org/scim/v2/Users/")
    response = scim.get("/Users", headers={"Host": "evil.example"})
    assert response.get_json() == scim_refusal("evil.example")


def test_behind_a_proxy_the_forwarded_host_is_checked(tmp_path):
    app, scim = make_app(tmp_path, PROXY_FIX=1)
    forwarded = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    response = scim.get("/Users", headers=forwarded)
    assert response.get_json() == scim_refusal("evil.example")


@pytest.fixture
def serve(tmp_path):
    """Start ``mdm serve`` (on ``host``, with MDM_* settings); yield (port, secret, log)."""
    started = []

    def start(host=None, **settings):
        instance = tmp_path / f"instance{len(started)}"
        instance.mkdir()
        env = served.environment(instance, **settings)
        secret = served.mdm(env, "token", "create", "--idp", "entra").stdout.strip()
        served.mdm(env, "admin", "create", "alice", "--password-stdin", input=PASSWORD)
        log = tmp_path / f"serve{len(started)}.log"
        process, port = served.start(env, log, host=host)
        started.append(process)
        return port, secret, log

    yield start
    for process in started:
        assert served.stop(process) == 0


def test_served_stack_refuses_an_untrusted_host(serve):
    port, secret, log = serve()
    auth = {
        "Authorization": f"Bearer {secret}",
        "Content-Type": "application/scim+json",
    }
    body = {"userName": "evil@example.org"}
    headers = {**auth, "Host": "evil.example"}
    response, payload = served.request(port, "POST", "/scim/v2/Users", body, headers)
    assert response.status == 400
    assert json.loads(payload) == scim_refusal("evil.example")
    assert response.getheader("Location") is None
    response, payload = served.request(port, "GET", "/login", headers=headers)
    assert response.status == 400
    assert refusal("evil.example").replace("'", "&#39;") in payload.decode()

    # The address a client connects to (http.client sends it) is loopback: trusted.
    response, payload = served.request(port, "POST", "/scim/v2/Users", body, auth)
    assert response.status == 201
    assert response.getheader("Location").startswith(f"http://127.0.0.1:{port}/")
    text = log.read_text()
    assert (
        "Trusted hosts: localhost, 127.0.0.1, [::1] (requests naming any other " in text
    )
    assert "set MDM_PUBLIC_URL or MDM_TRUSTED_HOSTS" in text


def test_served_stack_trusts_its_specific_address_and_settings(serve):
    port, secret, log = serve(
        host="127.0.0.2",
        TRUSTED_HOSTS="mdm.example.org",
        PUBLIC_URL="https://scim.example.org",
    )
    text = log.read_text()
    assert (
        "Trusted hosts: localhost, 127.0.0.1, [::1], scim.example.org, "
        "mdm.example.org, 127.0.0.2 (" in text
    )
    for host in ("127.0.0.2", "mdm.example.org", "scim.example.org", "localhost"):
        response, _ = served.request(
            port,
            "GET",
            "/scim/v2/ServiceProviderConfig",
            headers={"Host": host},
            address="127.0.0.2",
        )
        assert response.status == 200, host
    response, payload = served.request(
        port,
        "GET",
        "/scim/v2/ServiceProviderConfig",
        headers={"Host": "evil.example"},
        address="127.0.0.2",
    )
    assert json.loads(payload) == scim_refusal("evil.example")
