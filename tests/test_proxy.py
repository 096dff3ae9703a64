"""Behind a reverse proxy: ``mdm serve`` honours X-Forwarded-* exactly when PROXY_FIX says."""

import json

import pytest

from . import served
from .conftest import PASSWORD

FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "mdm.example.org",
    "X-Forwarded-For": "203.0.113.7",
}


@pytest.fixture
def serve(tmp_path):
    """Start ``mdm serve`` with the given settings; yield (port, token secret)."""
    started = []

    def start(**settings):
        instance = tmp_path / f"instance{len(started)}"
        instance.mkdir()
        env = served.environment(instance, **settings)
        secret = served.mdm(env, "token", "create", "--idp", "entra").stdout.strip()
        served.mdm(env, "admin", "create", "alice", "--password-stdin", input=PASSWORD)
        process, port = served.start(env, tmp_path / f"serve{len(started)}.log")
        started.append(process)
        return port, secret

    yield start
    for process in started:
        assert served.stop(process) == 0


def _create_user(port, secret):
    headers = {
        "Authorization": f"Bearer {secret}",
        "Content-Type": "application/scim+json",
        **FORWARDED,
    }
    body = {"userName": "proxied@example.org"}
    response, payload = served.request(port, "POST", "/scim/v2/Users", body, headers)
    assert response.status == 201, payload
    return response, json.loads(payload)


def test_served_behind_a_proxy_uses_the_forwarded_scheme_and_host(serve):
    port, secret = serve(PROXY_FIX=1, TRUSTED_HOSTS="mdm.example.org")
    response, user = _create_user(port, secret)
    location = f"https://mdm.example.org/scim/v2/Users/{user['id']}"
    assert response.getheader("Location") == location
    assert user["meta"]["location"] == location

    response, _ = served.request(port, "GET", "/login", headers=FORWARDED)
    cookie = response.getheader("Set-Cookie")
    assert cookie.startswith("session=") and "; Secure" in cookie
    assert response.getheader("Strict-Transport-Security") == (
        "max-age=31536000; includeSubDomains"
    )


def test_served_without_proxy_fix_ignores_forwarded_headers(serve):
    port, secret = serve(PROXY_FIX=0)
    response, user = _create_user(port, secret)
    location = f"http://127.0.0.1:{port}/scim/v2/Users/{user['id']}"
    assert response.getheader("Location") == location
    assert user["meta"]["location"] == location

    response, _ = served.request(port, "GET", "/login", headers=FORWARDED)
    assert "Secure" not in response.getheader("Set-Cookie")
    assert response.getheader("Strict-Transport-Security") is None


def test_behind_a_proxy_the_forwarded_host_must_be_trusted(serve):
    port, secret = serve(PROXY_FIX=1)
    headers = {"Authorization": f"Bearer {secret}", **FORWARDED}
    response, payload = served.request(port, "GET", "/scim/v2/Users", headers=headers)
    assert response.status == 400
    assert json.loads(payload) == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "400",
        "detail": "This server does not answer to the host name 'mdm.example.org'. "
        "If clients reach it by that name, set MDM_PUBLIC_URL to the address they "
        "use, or add the name to MDM_TRUSTED_HOSTS.",
    }

    # PUBLIC_URL names the proxy's public host: trusted, and the base of every URL.
    port, secret = serve(PROXY_FIX=1, PUBLIC_URL="https://mdm.example.org/")
    response, user = _create_user(port, secret)
    location = f"https://mdm.example.org/scim/v2/Users/{user['id']}"
    assert response.getheader("Location") == location
