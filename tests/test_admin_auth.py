"""Admin console sign-in: first-run setup, login, throttling, logout, sessions and CSRF."""

import os
from http.cookies import SimpleCookie
from urllib.parse import urlencode
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup

from mdm import auth
from mdm import create_app
from mdm.auth import ensure_setup_code
from mdm.db import database
from mdm.models import Admin
from mdm.models import BearerToken
from mdm.models import CustomAttribute
from mdm.models import Group
from mdm.models import Membership
from mdm.models import User
from mdm.models import mirror_user
from mdm.models import utcnow

from .conftest import ScimClient
from .conftest import database_config

PASSWORD = "correct horse battery"

ADMIN_PAGES = [
    "/admin/",
    "/admin/users",
    "/admin/users/00000000-0000-0000-0000-000000000000",
    "/admin/users/00000000-0000-0000-0000-000000000000/purge",
    "/admin/users/purge-deprovisioned",
    "/admin/groups",
    "/admin/groups/00000000-0000-0000-0000-000000000000",
    "/admin/provisioning",
    "/admin/provisioning/entra",
    "/admin/provisioning/okta",
    "/admin/provisioning/generic",
    "/admin/provisioning/entra/generate",
    "/admin/provisioning/entra/tokens/1/renew",
    "/admin/provisioning/entra/tokens/1/remove",
    "/admin/attributes",
    "/admin/attributes/1/delete",
]


@pytest.fixture
def app(app, tmp_path):
    """The conftest app, with the setup code file kept in a private instance folder."""
    app.instance_path = str(tmp_path / "instance")
    os.makedirs(app.instance_path, exist_ok=True)
    return app


def stored_setup_code(app):
    """Return the setup code the database holds, or None."""
    with app.app_context(), database.connection_context():
        return auth.setup_code()


def page(response):
    """Parse an HTML response."""
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def labelled(soup, text):
    """Return the control whose <label> reads ``text``."""
    label = soup.find("label", string=lambda s: s and s.strip() == text)
    assert label is not None, f"no label {text!r}"
    control = soup.find(id=label["for"])
    assert control is not None, f"label {text!r} points at nothing"
    return control


def buttons(soup):
    """Return the captions of the submit buttons on a page."""
    found = [b.get_text(strip=True) for b in soup.find_all("button")]
    found += [i.get("value", "") for i in soup.find_all("input", type="submit")]
    return found


def errors(soup):
    """Return the form error messages on a page."""
    return [p.get_text(strip=True) for p in soup.select("p.error")]


def add_admin(app, username="alice", password=PASSWORD):
    """Create an administrator directly in the database."""
    with app.app_context(), database.connection_context():
        admin = Admin(username=username)
        admin.set_password(password)
        admin.save()
        return admin.id


def admins(app):
    """Return every administrator."""
    with app.app_context(), database.connection_context():
        return list(Admin.select().order_by(Admin.id))


def login(client, username="alice", password=PASSWORD, next=None, **kwargs):
    """Post the login form."""
    url = "/login" if next is None else "/login?" + urlencode({"next": next})
    return client.post(url, data={"username": username, "password": password}, **kwargs)


def signed_in(client):
    """Tell whether the client's session opens the console."""
    response = client.get("/admin/users")
    if response.status_code == 200:
        return True
    assert response.status_code == 302
    assert urlsplit(response.location).path == "/login"
    return False


def session_user(client):
    """Return the admin id flask-login keeps in the session, if any."""
    with client.session_transaction() as session:
        session_id = session.get("_user_id")
    # The session id is "<admin id>:<session key>".
    return session_id.partition(":")[0] if session_id else None


#
# First-run setup
#


@pytest.mark.parametrize("query", ["", "?code=", "?code=wrong-code"])
def test_setup_needs_the_printed_code(app, client, query):
    """/setup without the printed code, or with a wrong one, is forbidden."""
    assert ensure_setup_code(app)
    assert client.get("/setup" + query).status_code == 403
    response = client.post(
        "/setup" + query,
        data={"username": "eve", "password": PASSWORD, "confirm": PASSWORD},
    )
    assert response.status_code == 403
    assert admins(app) == []


def test_setup_refused_when_no_code_is_stored(app, client):
    """Without a stored setup code no code opens /setup, not even an empty one."""
    assert stored_setup_code(app) is None
    assert client.get("/setup?code=").status_code == 403
    assert client.get("/setup?code=anything").status_code == 403


def test_setup_code_is_stable_until_used(app):
    """The code is stored once and read back on the next start, by any process."""
    code = ensure_setup_code(app)
    assert code and ensure_setup_code(app) == code
    assert stored_setup_code(app) == code


def test_setup_form_has_labelled_fields(app, client):
    """The setup page asks for a username and the password twice."""
    code = ensure_setup_code(app)
    response = client.get(f"/setup?code={code}")
    assert response.status_code == 200
    soup = page(response)
    assert labelled(soup, "Username")["type"] == "text"
    assert labelled(soup, "Password")["type"] == "password"
    assert labelled(soup, "Confirm password")["type"] == "password"
    assert "Create administrator" in buttons(soup)
    form = soup.find("form", method="post")
    assert code in form["action"]


def test_setup_creates_the_first_admin(app, client):
    """Posting the setup form creates a hashed admin, signs it in and burns the code."""
    code = ensure_setup_code(app)
    response = client.post(
        f"/setup?code={code}",
        data={"username": "root-admin", "password": PASSWORD, "confirm": PASSWORD},
    )
    assert response.status_code == 302
    assert urlsplit(response.location).path.startswith("/admin/")
    (admin,) = admins(app)
    assert admin.username == "root-admin"
    assert admin.password_hash != PASSWORD
    assert PASSWORD not in admin.password_hash
    assert admin.check_password(PASSWORD)
    assert not admin.check_password(PASSWORD + "x")
    assert stored_setup_code(app) is None
    assert ensure_setup_code(app) is None
    assert signed_in(client)
    assert session_user(client) == str(admin.id)


def test_setup_redirects_to_login_once_an_admin_exists(app, client):
    """After setup, /setup only sends people to the login page."""
    code = ensure_setup_code(app)
    client.post(
        f"/setup?code={code}",
        data={"username": "root-admin", "password": PASSWORD, "confirm": PASSWORD},
    )
    for url in ("/setup", f"/setup?code={code}"):
        response = app.test_client().get(url)
        assert response.status_code == 302
        assert urlsplit(response.location).path == "/login"
    response = app.test_client().post(
        f"/setup?code={code}",
        data={"username": "second", "password": PASSWORD, "confirm": PASSWORD},
    )
    assert response.status_code == 302
    assert [a.username for a in admins(app)] == ["root-admin"]


@pytest.mark.parametrize(
    ("username", "password", "confirm", "message"),
    [
        ("root", "short-pw", "short-pw", "Use at least 12 characters."),
        ("root", PASSWORD, PASSWORD + "!", "The passwords differ."),
        ("has space", PASSWORD, PASSWORD, "A username has no spaces."),
        ("", PASSWORD, PASSWORD, "This field is required."),
    ],
)
def test_setup_form_errors(app, client, username, password, confirm, message):
    """An invalid setup form is shown again with its error and creates nothing."""
    code = ensure_setup_code(app)
    response = client.post(
        f"/setup?code={code}",
        data={"username": username, "password": password, "confirm": confirm},
    )
    assert response.status_code == 200
    assert message in errors(page(response))
    assert admins(app) == []
    assert stored_setup_code(app)
    assert not signed_in(client)


#
# mdm admin create
#


def test_cli_creates_an_admin_from_stdin(app, runner):
    """`mdm admin create NAME --password-stdin` creates a hashed admin."""
    ensure_setup_code(app)
    result = runner.invoke(
        args=["admin", "create", "carol", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    (admin,) = admins(app)
    assert admin.username == "carol"
    assert admin.password_hash != PASSWORD
    assert admin.check_password(PASSWORD)
    # The setup link is no longer needed once an admin exists.
    assert stored_setup_code(app) is None


def test_cli_admin_can_sign_in(app, client, runner):
    """An administrator created on the command line signs in to the console."""
    result = runner.invoke(
        args=["admin", "create", "carol", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    assert login(client, "carol").status_code == 302
    assert signed_in(client)


@pytest.mark.parametrize("duplicate", ["carol", "CAROL"])
def test_cli_refuses_a_duplicate_admin(app, runner, duplicate):
    """A second administrator with the same (case-insensitive) name is refused."""
    args = ["admin", "create", "carol", "--password-stdin"]
    assert runner.invoke(args=args, input=PASSWORD + "\n").exit_code == 0
    result = runner.invoke(
        args=["admin", "create", duplicate, "--password-stdin"],
        input="another password 1\n",
    )
    assert result.exit_code != 0
    assert "already exists" in result.output
    (admin,) = admins(app)
    assert admin.check_password(PASSWORD)


def test_cli_refuses_a_username_with_spaces(app, runner):
    """A username with whitespace is refused."""
    result = runner.invoke(
        args=["admin", "create", "carol smith", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert result.exit_code != 0
    assert "no spaces" in result.output
    assert admins(app) == []


def test_cli_refuses_a_short_password(app, runner):
    """A password under 12 characters is refused and nothing is created."""
    result = runner.invoke(
        args=["admin", "create", "carol", "--password-stdin"], input="elevenchars\n"
    )
    assert result.exit_code != 0
    assert "at least 12 characters" in result.output
    assert admins(app) == []


#
# Login
#


def test_login_without_admin_points_at_setup(app, client):
    """Before any admin exists the login page explains how to create one."""
    response = client.get("/login")
    assert response.status_code == 503
    assert page(response).find("h1").get_text(strip=True) == "No administrator yet"


def test_login_page_structure(app, client):
    """The login page has labelled Username and Password inputs and a Sign in button."""
    add_admin(app)
    response = client.get("/login")
    assert response.status_code == 200
    soup = page(response)
    username = labelled(soup, "Username")
    password = labelled(soup, "Password")
    assert username.name == "input" and username["type"] == "text"
    assert password.name == "input" and password["type"] == "password"
    assert username.find_parent("form") is password.find_parent("form")
    assert username.find_parent("form")["method"].lower() == "post"
    assert "Sign in" in buttons(soup)


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong password!"), ("nobody", PASSWORD), ("alice", "")],
)
def test_login_with_wrong_credentials(app, client, username, password):
    """Wrong credentials show a message and open no session."""
    add_admin(app)
    response = login(client, username, password)
    assert response.status_code == 200
    soup = page(response)
    if password:
        alert = soup.find("p", role="alert")
        assert alert.get_text(strip=True) == "The username or password is incorrect."
    else:
        assert "This field is required." in errors(soup)
    assert session_user(client) is None
    assert not signed_in(client)


def test_login_with_right_password(app, client):
    """The right password signs in and lands on the dashboard."""
    admin_id = add_admin(app)
    response = login(client, follow_redirects=True)
    assert response.status_code == 200
    assert response.request.path == "/admin/"
    assert response.history and response.history[0].status_code == 302
    assert session_user(client) == str(admin_id)
    assert signed_in(client)
    (admin,) = admins(app)
    assert admin.last_login_at is not None


def test_login_username_ignores_case_and_spaces(app, client):
    """Usernames match case-insensitively and surrounding spaces are dropped."""
    add_admin(app)
    assert login(client, "  ALICE ").status_code == 302
    assert signed_in(client)


def test_login_page_redirects_when_already_signed_in(app, client):
    """A signed-in admin visiting /login goes to the console."""
    add_admin(app)
    login(client)
    response = client.get("/login")
    assert response.status_code == 302
    assert urlsplit(response.location).path.startswith("/admin")


def test_next_honoured_for_local_path(app, client):
    """After sign-in, a local ``next`` path is followed."""
    add_admin(app)
    response = login(client, next="/admin/groups")
    assert response.status_code == 302
    assert response.location == "/admin/groups"


def test_protected_page_round_trip(app, client):
    """A signed-out visit goes to login and comes back after sign-in."""
    add_admin(app)
    response = client.get("/admin/groups?q=x")
    assert response.status_code == 302
    login_url = response.location
    assert urlsplit(login_url).path == "/login"
    response = client.post(login_url, data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response.location == "/admin/groups?q=x"


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example",
        "/\\evil",
        "/\\/evil.example",
        "http:evil.example",
        "javascript:alert(1)",
        "evil.example",
        "///evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
    ],
)
def test_next_ignored_for_foreign_targets(app, client, target):
    """A ``next`` that is not a local path falls back to the console."""
    add_admin(app)
    response = login(client, next=target)
    assert response.status_code == 302
    location = urlsplit(response.location)
    assert location.netloc in ("", "localhost")
    assert location.path == "/admin/"
    assert signed_in(client)


#
# Throttling
#


def test_five_failures_make_the_address_wait(app, client):
    """After 5 failures even the right password answers 429, from that address."""
    add_admin(app)
    for attempt in range(5):
        username = "ALICE" if attempt % 2 else "alice"
        assert login(client, username, f"wrong password {attempt}").status_code == 200
    response = login(client)
    assert response.status_code == 429
    alert = page(response).find("p", role="alert").get_text(strip=True)
    assert alert.startswith("Too many failed sign-ins")
    assert session_user(client) is None
    assert not signed_in(client)


def test_four_failures_do_not_slow(app, client):
    """Fewer than 5 failures still let the right password in."""
    add_admin(app)
    for attempt in range(4):
        login(client, "alice", f"wrong password {attempt}")
    assert login(client).status_code == 302
    assert signed_in(client)


def test_wait_is_per_account(app, client):
    """A wait for one account does not hold up another."""
    add_admin(app)
    add_admin(app, "bob")
    for attempt in range(5):
        login(client, "alice", f"wrong password {attempt}")
    assert login(client, "alice").status_code == 429
    assert login(client, "bob").status_code == 302
    assert signed_in(client)


def test_success_clears_account_failures(app, client):
    """A successful sign-in forgets the account's earlier failures."""
    add_admin(app)
    for attempt in range(4):
        login(client, "alice", f"wrong password {attempt}")
    assert login(client).status_code == 302
    client.post("/logout")
    for attempt in range(4):
        login(client, "alice", f"wrong password {attempt}")
    assert login(client).status_code == 302


def test_one_address_cannot_walk_through_accounts(app, client):
    """20 failures from one address make every account wait, from that address."""
    add_admin(app)
    for attempt in range(20):
        login(client, f"user{attempt % 10}", "wrong password")
    response = login(client)
    assert response.status_code == 429
    assert "Too many failed sign-ins" in page(response).get_text()
    assert not signed_in(client)


#
# Logout and sessions
#


def test_logout_is_post_only(app, client):
    """GET /logout is not allowed and leaves the session alone."""
    add_admin(app)
    login(client)
    assert client.get("/logout").status_code == 405
    assert signed_in(client)


def test_logout_ends_the_session(app, client):
    """POST /logout signs out; console pages then redirect to login."""
    add_admin(app)
    login(client)
    soup = page(client.get("/admin/users"))
    form = soup.find("form", action="/logout")
    assert form is not None and form["method"].lower() == "post"
    assert "Sign out" in buttons(form)
    response = client.post("/logout")
    assert response.status_code == 302
    assert urlsplit(response.location).path == "/login"
    assert session_user(client) is None
    assert not signed_in(client)


def test_logout_invalidates_copies_of_the_session_cookie(app, client):
    """A session cookie copied before sign-out opens nothing afterwards."""
    add_admin(app)
    login(client)
    stolen = client.get_cookie("session").value
    client.post("/logout")
    thief = app.test_client()
    thief.set_cookie("session", stolen)
    response = thief.get("/admin/users")
    assert response.status_code == 302
    assert urlsplit(response.location).path == "/login"


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_admin_pages_need_sign_in(app, client, url):
    """Every console page redirects to login when signed out."""
    add_admin(app)
    response = client.get(url)
    assert response.status_code == 302
    location = urlsplit(response.location)
    assert location.path == "/login"
    assert "next=" in location.query


@pytest.mark.parametrize(
    "url",
    [
        "/admin/provisioning/entra/generate",
        "/admin/provisioning/entra/tokens/1",
        "/admin/provisioning/entra/tokens/1/renew",
        "/admin/provisioning/entra/tokens/1/remove",
        "/admin/users/purge-deprovisioned",
        "/admin/attributes",
        "/admin/attributes/1/delete",
    ],
)
def test_admin_posts_need_sign_in(app, client, url):
    """Console actions redirect to login when signed out and change nothing."""
    add_admin(app)
    issue = _issue_token(app)
    with app.app_context(), database.connection_context():
        CustomAttribute.create(name="badge")
    response = client.post(
        url, data={"action": "deactivate", "name": "other", "expiry": "never"}
    )
    assert response.status_code == 302
    assert urlsplit(response.location).path == "/login"
    with app.app_context(), database.connection_context():
        (token,) = BearerToken.select()
        assert (token.key, token.secret_hash, token.active) == issue
        assert [a.name for a in CustomAttribute.select()] == ["badge"]


def _issue_token(app):
    with app.app_context(), database.connection_context():
        token, _ = BearerToken.issue("entra")
        return token.key, token.secret_hash, token.active


def test_scim_token_does_not_open_the_console(app, client, scim):
    """A SCIM bearer token in Authorization is no console credential."""
    add_admin(app)
    for url in ("/admin/users", "/admin/provisioning/entra"):
        response = client.get(url, headers={"Authorization": f"Bearer {scim.secret}"})
        assert response.status_code == 302
        assert urlsplit(response.location).path == "/login"


def test_admin_session_does_not_authorise_scim(app, client):
    """A signed-in console session gets 401 from the SCIM API."""
    add_admin(app)
    login(client)
    assert signed_in(client)
    assert client.get("/scim/v2/Users").status_code == 401
    assert client.get("/scim/v2/Groups").status_code == 401


def test_session_cookie_flags(app, client):
    """The session cookie is HttpOnly and SameSite=Lax."""
    add_admin(app)
    response = login(client)
    cookies = SimpleCookie()
    for header in response.headers.getlist("Set-Cookie"):
        cookies.load(header)
    session = cookies[app.config.get("SESSION_COOKIE_NAME", "session")]
    assert session["httponly"] is True
    assert session["samesite"].lower() == "lax"


#
# CSRF enforced
#


@pytest.fixture
def csrf_app(tmp_path, monkeypatch):
    """An app like conftest's but with CSRF protection on."""
    monkeypatch.setenv("MDM_INSTANCE_PATH", str(tmp_path / "csrf-instance"))
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            **database_config(tmp_path / "csrf.sqlite"),
            "WTF_CSRF_ENABLED": True,
        }
    )
    yield app
    if not database.is_closed():
        database.close()


def csrf_token(response):
    """Return the csrf_token hidden input's value on a page."""
    field = page(response).find("input", attrs={"name": "csrf_token"})
    assert field is not None and field.get("value")
    return field["value"]


def csrf_login(client):
    """Sign in with the token from the rendered login form."""
    token = csrf_token(client.get("/login"))
    response = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
    )
    assert response.status_code == 302
    return response


@pytest.fixture
def world(csrf_app):
    """An admin, a token, a deprovisioned member and an attribute; returns their ids."""
    add_admin(csrf_app)
    with csrf_app.app_context(), database.connection_context():
        token, _ = BearerToken.issue("entra")
        live = User(source="entra")
        mirror_user(live, {"userName": "live@example.com"})
        live.save()
        gone = User(source="entra", deprovisioned_at=utcnow())
        mirror_user(gone, {"userName": "gone@example.com"})
        gone.save()
        group = Group.create(display_name="Staff", source="entra")
        Membership.create(group=group, user=gone)
        Membership.create(group=group, user=live)
        attribute = CustomAttribute.create(name="badge")
        return {"token": token.id, "gone": gone.scim_id, "attribute": attribute.id}


def snapshot(app):
    """Capture everything a console POST could change."""
    with app.app_context(), database.connection_context():
        return {
            "admins": [(a.username, a.password_hash) for a in Admin.select()],
            "tokens": [
                (t.key, t.secret_hash, t.active, t.label) for t in BearerToken.select()
            ],
            "users": [(u.scim_id, u.deprovisioned_at) for u in User.select()],
            "memberships": Membership.select().count(),
            "attributes": [a.name for a in CustomAttribute.select()],
        }


CSRF_POSTS = {
    "generate": ("/admin/provisioning/entra/generate", {"expiry": "never"}),
    "token action": (
        "/admin/provisioning/entra/tokens/{token}",
        {"action": "deactivate"},
    ),
    "renew": ("/admin/provisioning/entra/tokens/{token}/renew", {}),
    "remove": ("/admin/provisioning/entra/tokens/{token}/remove", {}),
    "purge": ("/admin/users/{gone}/purge", {}),
    "purge all": ("/admin/users/purge-deprovisioned", {}),
    "attribute add": ("/admin/attributes", {"name": "other", "type": "string"}),
    "attribute delete": ("/admin/attributes/{attribute}/delete", {}),
}


@pytest.mark.parametrize("action", sorted(CSRF_POSTS))
def test_console_post_without_csrf_token_is_refused(csrf_app, world, action):
    """A console POST without csrf_token answers 400 and changes nothing."""
    client = csrf_app.test_client()
    csrf_login(client)
    before = snapshot(csrf_app)
    url, data = CSRF_POSTS[action]
    response = client.post(url.format(**world), data=data)
    assert response.status_code == 400
    assert snapshot(csrf_app) == before
    response = client.post(url.format(**world), data={**data, "csrf_token": "forged"})
    assert response.status_code == 400
    assert snapshot(csrf_app) == before


def test_login_without_csrf_token_is_refused(csrf_app, world):
    """POST /login without csrf_token answers 400 and signs nobody in."""
    client = csrf_app.test_client()
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 400
    assert session_user(client) is None
    assert not signed_in(client)


def test_logout_without_csrf_token_is_refused(csrf_app, world):
    """POST /logout without csrf_token answers 400 and keeps the session."""
    client = csrf_app.test_client()
    csrf_login(client)
    assert client.post("/logout").status_code == 400
    assert signed_in(client)


def test_setup_without_csrf_token_is_refused(csrf_app):
    """POST /setup without csrf_token answers 400 and creates no admin."""
    client = csrf_app.test_client()
    code = ensure_setup_code(csrf_app)
    response = client.post(
        f"/setup?code={code}",
        data={"username": "root", "password": PASSWORD, "confirm": PASSWORD},
    )
    assert response.status_code == 400
    assert admins(csrf_app) == []
    assert stored_setup_code(csrf_app)


def test_setup_with_csrf_token_from_the_form(csrf_app):
    """The setup form's own csrf_token lets the first admin be created."""
    client = csrf_app.test_client()
    code = ensure_setup_code(csrf_app)
    token = csrf_token(client.get(f"/setup?code={code}"))
    response = client.post(
        f"/setup?code={code}",
        data={
            "username": "root",
            "password": PASSWORD,
            "confirm": PASSWORD,
            "csrf_token": token,
        },
    )
    assert response.status_code == 302
    assert [a.username for a in admins(csrf_app)] == ["root"]


def test_forms_work_with_their_rendered_csrf_token(csrf_app, world):
    """Tokens taken from rendered forms are accepted: sign in, act, sign out."""
    client = csrf_app.test_client()
    csrf_login(client)
    assert signed_in(client)

    response = client.get("/admin/provisioning/okta/generate")
    response = client.post(
        "/admin/provisioning/okta/generate",
        data={"expiry": "never", "csrf_token": csrf_token(response)},
    )
    assert response.status_code == 302
    assert urlsplit(response.location).path.endswith("/secret")
    with csrf_app.app_context(), database.connection_context():
        assert BearerToken.select().where(BearerToken.idp == "okta").count() == 1

    soup = page(client.get("/admin/provisioning/entra"))
    form = soup.find(
        "form", action=f"/admin/provisioning/entra/tokens/{world['token']}"
    )
    token = form.find("input", attrs={"name": "csrf_token"})["value"]
    response = client.post(
        form["action"], data={"action": "deactivate", "csrf_token": token}
    )
    assert response.status_code == 302
    # Its only active token: the confirmation page's own form finishes it.
    confirm = client.get(response.location)
    response = client.post(response.location, data={"csrf_token": csrf_token(confirm)})
    assert response.status_code == 302
    with csrf_app.app_context(), database.connection_context():
        assert not BearerToken.get_by_id(world["token"]).active

    soup = page(client.get("/admin/users"))
    logout = soup.find("form", action="/logout")
    token = logout.find("input", attrs={"name": "csrf_token"})["value"]
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert not signed_in(client)


def test_scim_needs_no_csrf_token_and_sets_no_cookie(csrf_app, world):
    """With CSRF on, SCIM writes pass on the bearer token alone and get no session cookie."""
    client = csrf_app.test_client()
    csrf_login(client)
    with csrf_app.app_context(), database.connection_context():
        _, secret = BearerToken.issue("okta")
    scim = ScimClient(client, secret)
    user = scim.create_user("csrf-free@example.com")
    response = scim.patch(
        f"/Users/{user['id']}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        },
    )
    assert response.status_code == 200
    assert scim.delete(f"/Users/{user['id']}").status_code == 204
    assert response.headers.getlist("Set-Cookie") == []
    # The console session the same client holds still works.
    assert signed_in(client)
