"""Sign-in hardening: throttling per account and address, equal work for unknown
usernames, session idle and absolute limits, and the setup code's lifetime."""

import hashlib
import re
from datetime import timedelta
from http.cookies import SimpleCookie
from urllib.parse import parse_qs
from urllib.parse import urlencode
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup

from mdm import auth
from mdm import create_app
from mdm.auth import ensure_setup_code
from mdm.db import database
from mdm.models import Admin
from mdm.models import LoginFailure
from mdm.models import utcnow

from . import served
from .conftest import PASSWORD
from .test_admin_auth import signed_in

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


#
# Throttling: an attacker elsewhere never keeps the administrator out
#


def test_attack_from_one_address_does_not_lock_out_another(app, clock):
    """Five wrong passwords every 15 minutes from A never stop the right one from B."""
    add_admin(app)
    attacker = app.test_client()
    for _ in range(8):
        statuses = [
            login(attacker, ATTACKER, password=f"guess {i}").status_code
            for i in range(5)
        ]
        assert set(statuses) <= {200, 429}
        admin = app.test_client()
        response = login(admin, ADMIN_ADDRESS)
        assert response.status_code == 302, alert(response)
        assert signed_in(admin)
        clock.advance(minutes=15)


def test_the_failing_address_waits_longer_after_each_failure(app, clock):
    """After 5 free failures, A waits 30 s, then 60 s, 2 min ... up to 15 minutes."""
    add_admin(app)
    client = app.test_client()
    for i in range(5):
        response = login(client, ATTACKER, password=f"guess {i}")
        assert response.status_code == 200
        assert alert(response) == "The username or password is incorrect."
    waits = []
    for i in range(8):
        response = login(client, ATTACKER, password=f"more {i}")
        assert response.status_code == 429
        wait = int(response.headers["Retry-After"])
        waits.append(wait)
        # Even the right password waits, from this address.
        assert login(client, ATTACKER).status_code == 429
        clock.advance(seconds=wait - 1)
        assert login(client, ATTACKER, password="early").status_code == 429
        clock.advance(seconds=1)
        response = login(client, ATTACKER, password=f"more {i}")
        assert response.status_code == 200
    assert waits == [30, 60, 120, 240, 480, 900, 900, 900]
    response = login(client, ATTACKER)
    assert response.status_code == 429
    assert alert(response) == (
        "Too many failed sign-ins from this address. Try again in 15 minutes."
    )
    clock.advance(seconds=30)
    assert alert(login(client, ATTACKER)) == (
        "Too many failed sign-ins from this address. Try again in 15 minutes."
    )
    clock.advance(seconds=14 * 60 + 15)
    assert alert(login(client, ATTACKER)) == (
        "Too many failed sign-ins from this address. Try again in 15 seconds."
    )
    clock.advance(seconds=15)
    assert login(client, ATTACKER).status_code == 302
    assert signed_in(client)


def test_the_failing_address_is_slowed_for_every_account(app, clock):
    """Twenty failures from one address across usernames slow that address only."""
    add_admin(app)
    client = app.test_client()
    for i in range(20):
        assert login(client, ATTACKER, f"user{i}", "guess").status_code == 200
    assert login(client, ATTACKER).status_code == 429
    assert login(client, ADMIN_ADDRESS).status_code == 302


def test_distributed_guessing_slows_but_never_locks(app, clock):
    """Past the ceiling an address waits after its first failure; a clean one signs in."""
    add_admin(app)
    client = app.test_client()
    for i in range(auth.ACCOUNT_CEILING - 1):
        assert login(client, f"192.0.2.{i + 1}", password="guess").status_code == 200
    # Below the ceiling a failing address keeps its free tries.
    assert login(client, "192.0.2.1", password="again").status_code == 200
    # The ceiling is reached: addresses with failures now wait ...
    response = login(client, "192.0.2.2", password="again")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "60"
    assert login(client, "192.0.2.3").status_code == 429
    # ... but an address with none signs in at once,
    fresh = app.test_client()
    assert login(fresh, "192.0.2.200").status_code == 302
    assert signed_in(fresh)
    # and the slowed ones get their turn within a minute.
    clock.advance(seconds=60)
    late = app.test_client()
    assert login(late, "192.0.2.3").status_code == 302
    assert signed_in(late)


def test_ipv6_clients_are_throttled_by_their_64_network(app, clock):
    """An IPv6 host cannot dodge the delay by moving inside its /64."""
    add_admin(app)
    client = app.test_client()
    for i in range(5):
        login(client, f"2001:db8:1:2::{i + 1}", password="guess")
    assert login(client, "2001:db8:1:2::ffff").status_code == 429
    assert login(client, "2001:db8:1:3::1").status_code == 302


def test_a_restart_does_not_reset_the_counts(app, clock, tmp_path):
    """Failures are database rows: a new app on the same database still waits."""
    add_admin(app)
    client = app.test_client()
    for i in range(5):
        login(client, ATTACKER, password=f"guess {i}")
    restarted = create_app(dict(app.config))
    assert login(restarted.test_client(), ATTACKER).status_code == 429
    with app.app_context(), database.connection_context():
        keys = {row.key for row in LoginFailure.select()}
    assert keys == {
        f"pair:alice|{ATTACKER}",
        f"address:{ATTACKER}",
        "account:alice",
    }


def test_success_forgets_only_its_own_address(app, clock):
    """Signing in clears that address's failures, not the attacker's."""
    add_admin(app)
    client = app.test_client()
    for i in range(4):
        login(client, ADMIN_ADDRESS, password=f"typo {i}")
        login(client, ATTACKER, password=f"guess {i}")
    assert login(client, ADMIN_ADDRESS).status_code == 302
    client = app.test_client()
    for i in range(4):
        login(client, ADMIN_ADDRESS, password=f"typo {i}")
    assert login(client, ADMIN_ADDRESS).status_code == 302
    login(app.test_client(), ATTACKER, password="guess 5")
    assert login(app.test_client(), ATTACKER).status_code == 429


@pytest.fixture
def proxied(tmp_path):
    """Serve with PROXY_FIX=1; yield the port."""
    instance = tmp_path / "instance"
    instance.mkdir()
    env = served.environment(instance, PROXY_FIX=1)
    served.mdm(env, "admin", "create", "alice", "--password-stdin", input=PASSWORD)
    process, port = served.start(env, tmp_path / "serve.log")
    yield port
    assert served.stop(process) == 0


def _served_sign_in(port, forwarded_for, password):
    """Fetch the form and post it as a client at ``forwarded_for``; return (status, page)."""
    headers = {"X-Forwarded-For": forwarded_for}
    response, body = served.request(port, "GET", "/login", headers=headers)
    cookie = SimpleCookie(response.getheader("Set-Cookie"))["session"].value
    token = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', body)
    form = urlencode(
        {"csrf_token": token[1].decode(), "username": "alice", "password": password}
    )
    headers |= {
        "Cookie": f"session={cookie}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    conn = served.http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/login", body=form, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_served_failures_from_one_forwarded_address_do_not_block_another(proxied):
    """Behind a proxy, each X-Forwarded-For address is throttled on its own."""
    for i in range(6):
        status, page = _served_sign_in(proxied, ATTACKER, f"guess {i}")
        assert status == (200 if i < 5 else 429), page
    assert "Too many failed sign-ins from this address" in page
    status, _ = _served_sign_in(proxied, ADMIN_ADDRESS, PASSWORD)
    assert status == 302
    status, _ = _served_sign_in(proxied, ATTACKER, PASSWORD)
    assert status == 429


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
