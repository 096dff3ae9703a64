"""Shared fixtures: a fresh app and database per test, and a SCIM client with a live token."""

import json
import threading
import time
from contextlib import contextmanager

import pytest
from waitress import wasyncore
from waitress.server import create_server

from mdm import create_app
from mdm.db import database
from mdm.models import BearerToken

SCIM = "application/scim+json"


@pytest.fixture(autouse=True)
def instance_folder(tmp_path, monkeypatch):
    """Keep every app a test creates out of the repository's instance folder."""
    folder = tmp_path / "instance"
    monkeypatch.setenv("MDM_INSTANCE_PATH", str(folder))
    return folder


@pytest.fixture
def app(tmp_path):
    """Create an app with its own database file and instance folder."""
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            "DATABASE": str(tmp_path / "mdm.sqlite"),
            "WTF_CSRF_ENABLED": False,
        }
    )
    yield app
    if not database.is_closed():
        database.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class ScimClient:
    """Send SCIM requests with a bearer token and decode the JSON answers."""

    def __init__(self, client, secret, base="/scim/v2"):
        self.client = client
        self.secret = secret
        self.base = base

    def request(self, method, path, body=None, headers=None, **kwargs):
        all_headers = {"Authorization": f"Bearer {self.secret}"}
        data = None
        if body is not None:
            all_headers["Content-Type"] = SCIM
            data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        all_headers.update(headers or {})
        return self.client.open(
            self.base + path, method=method, data=data, headers=all_headers, **kwargs
        )

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, body, **kwargs):
        return self.request("POST", path, body, **kwargs)

    def put(self, path, body, **kwargs):
        return self.request("PUT", path, body, **kwargs)

    def patch(self, path, body, **kwargs):
        return self.request("PATCH", path, body, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def create_user(self, user_name, **attributes):
        body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"]}
        body.update({"userName": user_name, **attributes})
        response = self.post("/Users", body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def create_group(self, display_name, members=(), **attributes):
        body = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": display_name,
            "members": [{"value": m} for m in members],
            **attributes,
        }
        response = self.post("/Groups", body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()


def issue_token(app, idp="entra", **kwargs):
    """Issue a token directly in the database and return (token, secret)."""
    with app.app_context(), database.connection_context():
        return BearerToken.issue(idp, **kwargs)


@pytest.fixture
def scim(app, client):
    """A SCIM client authenticated with an Entra ID token."""
    _, secret = issue_token(app, "entra")
    return ScimClient(client, secret)


@pytest.fixture
def okta(app, client):
    """A SCIM client authenticated with an Okta token."""
    _, secret = issue_token(app, "okta")
    return ScimClient(client, secret)


@contextmanager
def live_server(app, threads=8):
    """Serve ``app`` with waitress on a free loopback port; yield the port."""
    server = create_server(app, host="127.0.0.1", port=0, threads=threads)
    stopping = threading.Event()

    def run():
        # Sockets are closed by the loop's own thread: closing them from another
        # thread while it sits in select() makes select() fail with EBADF.
        while not stopping.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, count=1)
        wasyncore.close_all(server._map)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield server.effective_port
    finally:
        # A task may still be finishing after its client read the answer; let it.
        dispatcher = server.task_dispatcher
        deadline = time.monotonic() + 5
        while (
            dispatcher.active_count or dispatcher.queue
        ) and time.monotonic() < deadline:
            time.sleep(0.01)
        dispatcher.shutdown(timeout=5)
        stopping.set()
        thread.join(timeout=5)
        database.close_all()
