"""Sign-in hardening: equal work for unknown usernames, session idle and absolute
limits, and the setup code's lifetime."""

import hashlib
from datetime import timedelta
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup

from mdm import auth
from mdm.auth import ensure_setup_code
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


#
# Session limits
#


def test_idle_session_is_signed_out(app, clock):
    """After 8 hours without a request the session ends, with a message."""
    add_admin(app)
    client = app.test_client()
    assert login(client, ADMIN_ADDRESS).status_code == 302
    clock.advance(hours=7, minutes=59)
    assert client.get("/admin/users").status_code == 200
    clock.advance(hours=8)
    response = client.get("/admin/users?page=2")
    assert response.status_code == 302
    location = urlsplit(response.location)
    assert location.path == "/login"
    assert parse_qs(location.query) == {"next": ["/admin/users?page=2"]}
    page = client.get(response.location)
    assert flashes(page) == [
        "You were signed out after 8 hours without activity. Sign in again."
    ]
    # The session is over for good, not just for that request.
    clock.advance(hours=-16)
    assert not signed_in(client)


def test_an_old_copy_of_the_session_cookie_is_refused(app, clock):
    """A cookie copied at sign-in is refused once idle, even while the owner is active."""
    add_admin(app)
    client = app.test_client()
    login(client, ADMIN_ADDRESS)
    stolen = client.get_cookie("session").value
    for _ in range(3):
        clock.advance(hours=3)
        assert signed_in(client)
    thief = app.test_client()
    thief.set_cookie("session", stolen)
    assert not signed_in(thief)
    assert signed_in(client)


def test_active_session_ends_after_its_lifetime(app, clock):
    """A session used all along still ends 24 hours after sign-in."""
    add_admin(app)
    client = app.test_client()
    login(client, ADMIN_ADDRESS)
    for _ in range(3):
        clock.advance(hours=7, minutes=59)
        assert client.get("/admin/").status_code == 200
    clock.advance(minutes=3)
    response = client.get("/admin/", follow_redirects=True)
    assert response.request.path == "/login"
    assert flashes(response) == [
        "Your session has expired (24 hours since you signed in). Sign in again."
    ]
    assert login(client, ADMIN_ADDRESS).status_code == 302
    assert signed_in(client)


def test_session_limits_are_settings(app, clock):
    """SESSION_IDLE_MINUTES and SESSION_LIFETIME_HOURS set the limits."""
    app.config.update(SESSION_IDLE_MINUTES=30, SESSION_LIFETIME_HOURS=1)
    add_admin(app)
    client = app.test_client()
    login(client, ADMIN_ADDRESS)
    clock.advance(minutes=29)
    assert signed_in(client)
    clock.advance(minutes=29)
    assert signed_in(client)
    clock.advance(minutes=2)
    response = client.get("/admin/", follow_redirects=True)
    assert flashes(response) == [
        "Your session has expired (1 hour since you signed in). Sign in again."
    ]
    login(client, ADMIN_ADDRESS)
    clock.advance(minutes=30)
    response = client.get("/admin/", follow_redirects=True)
    assert flashes(response) == [
        "You were signed out after 30 minutes without activity. Sign in again."
    ]


def test_session_without_timestamps_is_signed_out(app, clock):
    """A session cookie from before the limits existed is ended."""
    add_admin(app)
    client = app.test_client()
    login(client, ADMIN_ADDRESS)
    with client.session_transaction() as session:
        del session["signed_in_at"]
    response = client.get("/admin/", follow_redirects=True)
    assert response.request.path == "/login"
    assert flashes(response) == ["Your session has expired. Sign in again."]


def test_expired_session_posting_a_form_is_sent_to_sign_in(app, clock):
    """An expired session's POST changes nothing and goes to the sign-in page."""
    add_admin(app)
    client = app.test_client()
    login(client, ADMIN_ADDRESS)
    clock.advance(hours=9)
    response = client.post(
        "/admin/attributes", data={"name": "badge", "type": "string"}
    )
    assert response.status_code == 302
    assert response.location == "/login"
    with app.app_context(), database.connection_context():
        from mdm.models import CustomAttribute

        assert CustomAttribute.select().count() == 0


#
# The setup code's lifetime
#


def test_setup_code_works_for_24_hours(app, clock):
    code = ensure_setup_code(app)
    clock.advance(hours=23, minutes=59)
    assert app.test_client().get(f"/setup?code={code}").status_code == 200


def test_expired_setup_code_says_how_to_get_a_new_one(app, clock):
    """After 24 hours the code opens a page explaining the way forward, and no form."""
    code = ensure_setup_code(app)
    clock.advance(hours=24)
    client = app.test_client()
    response = client.get(f"/setup?code={code}")
    assert response.status_code == 410
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert soup.find("h1").get_text(strip=True) == "This setup link has expired"
    assert " ".join(soup.find("section").find("p").get_text().split()) == (
        "A setup link works for 24 hours after the server first prints it. "
        "Restart the server to print a new link, or create an administrator on "
        "the server with mdm admin create NAME."
    )
    assert soup.find("form") is None
    response = client.post(
        f"/setup?code={code}",
        data={"username": "eve", "password": PASSWORD, "confirm": PASSWORD},
    )
    assert response.status_code == 410
    with app.app_context(), database.connection_context():
        assert Admin.select().count() == 0


def test_a_restart_after_expiry_prints_a_new_code(app, clock):
    old = ensure_setup_code(app)
    clock.advance(hours=25)
    new = ensure_setup_code(app)
    assert new and new != old
    assert ensure_setup_code(app) == new
    client = app.test_client()
    assert client.get(f"/setup?code={old}").status_code == 403
    response = client.post(
        f"/setup?code={new}",
        data={"username": "carol", "password": PASSWORD, "confirm": PASSWORD},
    )
    assert response.status_code == 302
    with app.app_context(), database.connection_context():
        assert [a.username for a in Admin.select()] == ["carol"]


def test_setup_code_lifetime_is_a_setting(app, clock):
    app.config["SETUP_CODE_HOURS"] = 1
    code = ensure_setup_code(app)
    clock.advance(minutes=60)
    response = app.test_client().get(f"/setup?code={code}")
    assert response.status_code == 410
    assert "A setup link works for 1 hour after" in response.get_data(as_text=True)


def test_admin_create_works_after_the_code_expired(app, clock):
    ensure_setup_code(app)
    clock.advance(days=3)
    result = app.test_cli_runner().invoke(
        args=["admin", "create", "dave", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    assert login(app.test_client(), ADMIN_ADDRESS, "dave").status_code == 302
