"""Sign-in hardening: an unknown username costs the same work as a known one."""

import hashlib
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup

from mdm import auth
from mdm.db import database
from mdm.models import Admin
from mdm.models import utcnow

from .conftest import PASSWORD

ATTACKER = "203.0.113.66"
ADMIN_ADDRESS = "198.51.100.7"


class Clock:
    """A settable UTC clock for the sign-in code."""

    def __init__(self):
        self.now = utcnow().replace(microsecond=0)

    def __call__(self):
        return self.now

    def advance(self, **delta):
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(auth, "utcnow", clock)
    return clock


def add_admin(app, username="alice", password=PASSWORD):
    """Create an administrator directly in the database."""
    with app.app_context(), database.connection_context():
        admin = Admin(username=username)
        admin.set_password(password)
        admin.save()
        return admin


def login(client, address, username="alice", password=PASSWORD):
    """Post the login form from ``address``."""
    return client.post(
        "/login",
        data={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def alert(response):
    """Return the sign-in form's message."""
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    return soup.find("p", role="alert").get_text(strip=True)


def flashes(response):
    """Return the flashed messages on a page."""
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    return [div.get_text(strip=True) for div in soup.select("div.flash")]


def signed_in(client):
    """Tell whether the client's session opens the console."""
    response = client.get("/admin/users")
    if response.status_code == 200:
        return True
    assert response.status_code == 302
    assert urlsplit(response.location).path == "/login"
    return False


#
# Unknown usernames cost the same work as known ones
#


@pytest.fixture
def hashes(monkeypatch):
    """Count the scrypt computations (werkzeug's default password hash)."""
    calls = []
    scrypt = hashlib.scrypt

    def counting(*args, **kwargs):
        calls.append(kwargs.get("n"))
        return scrypt(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    return calls


def test_unknown_username_costs_one_password_hash_like_a_known_one(app, hashes):
    """A wrong password hashes once whether or not the username exists."""
    admin = add_admin(app)
    client = app.test_client()
    login(client, "192.0.2.1", "nobody", "warm up")
    counts = {}
    for username in ("alice", "nobody", "alice", "nobody"):
        hashes.clear()
        response = login(client, "192.0.2.1", username, "wrong password")
        assert response.status_code == 200
        assert alert(response) == "The username or password is incorrect."
        counts.setdefault(username, []).append(len(hashes))
    assert counts == {"alice": [1, 1], "nobody": [1, 1]}
    # The dummy hash uses the same algorithm and parameters as real ones.
    method = admin.password_hash.split("$")[0]
    assert auth._dummy_hash().split("$")[0] == method
