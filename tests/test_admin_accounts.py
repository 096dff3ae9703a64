"""Administrator accounts: password rules, the Administrators pages and the admin CLI."""

import http.cookiejar
import os
import urllib.error
import urllib.parse
import urllib.request

import pytest
from bs4 import BeautifulSoup

from mdm import activity
from mdm import auth
from mdm.activity import AuditEvent
from mdm.activity import activity_db
from mdm.db import database
from mdm.models import Admin

from . import served
from .conftest import PASSWORD
from .test_admin_auth import csrf_app  # noqa: F401 (fixture)

COMMON = (
    "This password is on the list of common passwords that attackers try first; "
    "choose another."
)
HAS_NAME = "The password contains the username; choose one that does not."
NEW_PASSWORD = "violet tractor mango"


def page(response):
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def errors(response):
    return [p.get_text() for p in page(response).select("p.error")]


def flashes(response):
    return [(d["class"][1], d.get_text()) for d in page(response).select("div.flash")]


def usernames(app):
    with app.app_context(), database.connection_context():
        return [a.username for a in Admin.select().order_by(Admin.username)]


def events(name):
    activity.writer.flush()
    with activity_db.connection_context():
        query = AuditEvent.select().where(AuditEvent.event == name)
        return [(e.actor, e.details) for e in query.order_by(AuditEvent.id)]


def add_admin(app, username, password=PASSWORD):
    with app.app_context(), database.connection_context():
        admin = Admin(username=username)
        admin.set_password(password)
        admin.save()
        return admin.id


#
# The rules
#


@pytest.mark.parametrize(
    ("password", "username", "message"),
    [
        ("password1234", "", COMMON),
        ("Password1234", "", COMMON),
        ("P@ssw0rd2024!", "", COMMON),
        ("qwertyuiop12", "", COMMON),
        ("1q2w3e4r5t6y", "", COMMON),
        ("alice-is-great", "alice", HAS_NAME),
        ("myALICEpass99", "Alice", HAS_NAME),
        ("short", "", "Use at least 12 characters."),
        (
            "abababababab",
            "",
            "This password uses fewer than 4 different characters; choose another.",
        ),
        (PASSWORD, "alice", None),
    ],
)
def test_password_rules(password, username, message):
    """Common, look-alike, username-bearing and one-note passwords are refused with the reason."""
    assert auth.password_problem(password, username) == message


def test_the_bundled_list_is_found_and_sizeable():
    """The list ships inside the package (the binary reads it from there)."""
    common = auth._common_passwords()
    assert auth.COMMON_PASSWORDS.parent.name == "mdm"
    assert len(common) > 10_000
    assert all(len(p) >= 12 and p == p.lower() for p in common)


#
# First run
#


def setup_page(app, client):
    code = auth.ensure_setup_code(app)
    return f"/setup?code={code}"


def test_setup_refuses_a_common_password(app, client):
    """The 12-character "password1234" is refused at first-run setup, saying why."""
    url = setup_page(app, client)
    response = client.post(
        url,
        data={
            "username": "root",
            "password": "password1234",
            "confirm": "password1234",
        },
    )
    assert response.status_code == 200
    assert errors(response) == [COMMON]
    # The hint is not shown beside the error that repeats it, and the
    # cursor waits in the field to fix.
    assert page(response).select("p.hint") == []
    assert page(response).find(autofocus=True)["name"] == "password"
    assert usernames(app) == []


def test_setup_refuses_a_password_with_the_username(app, client):
    url = setup_page(app, client)
    password = "rootAccount-77"
    response = client.post(
        url, data={"username": "root", "password": password, "confirm": password}
    )
    assert errors(response) == [HAS_NAME]
    assert usernames(app) == []


def test_setup_page_shows_the_hint_before_any_error(app, client):
    response = client.get(setup_page(app, client))
    assert [p.get_text() for p in page(response).select("p.hint")] == [
        auth.PASSWORD_HINT
    ]
    assert errors(response) == []
    assert page(response).find(autofocus=True)["name"] == "username"


def test_no_admin_page_styles_the_sign_in_message(app, client):
    """The redirect's "Sign in to continue." is an info message, styled like the others."""
    response = client.get("/admin/users", follow_redirects=True)
    assert response.status_code == 503
    assert flashes(response) == [("info", "Sign in to continue.")]


def test_wrong_password_puts_the_cursor_in_password(app, client):
    add_admin(app, "alice")
    response = client.get("/login")
    assert page(response).find(autofocus=True)["name"] == "username"
    response = client.post(
        "/login", data={"username": "alice", "password": "wrong password!"}
    )
    assert page(response).find(autofocus=True)["name"] == "password"
    assert page(response).find("input", attrs={"name": "username"})["value"] == "alice"


#
# Administrators page
#


def test_list_and_add_an_administrator(app, console):
    response = console.get("/admin/admins")
    assert response.status_code == 200
    cells = [
        td.get_text(" ", strip=True)
        for td in page(response).select("td[data-label=Username]")
    ]
    assert cells == ["alice You"]
    response = console.post(
        "/admin/admins",
        data={"username": "bob", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
        follow_redirects=True,
    )
    assert flashes(response) == [("success", "Administrator bob added.")]
    assert usernames(app) == ["alice", "bob"]
    assert events("Administrator Created") == [("alice", "bob")]
    fresh = app.test_client()
    assert (
        fresh.post(
            "/login", data={"username": "bob", "password": NEW_PASSWORD}
        ).status_code
        == 302
    )


@pytest.mark.parametrize(
    ("username", "password", "field", "message"),
    [
        ("bob", "password1234", "password", COMMON),
        ("bob", "bob-the-builder", "password", HAS_NAME),
        ("ALICE", NEW_PASSWORD, "username", "An administrator called ALICE exists."),
        ("bob smith", NEW_PASSWORD, "username", "A username has no spaces."),
    ],
)
def test_add_administrator_refusals(app, console, username, password, field, message):
    response = console.post(
        "/admin/admins",
        data={"username": username, "password": password, "confirm": password},
    )
    assert response.status_code == 200
    assert errors(response) == [message]
    assert usernames(app) == ["alice"]
    assert events("Administrator Created") == []


def test_remove_another_administrator(app, console):
    bob = add_admin(app, "bob")
    bob_client = app.test_client()
    assert (
        bob_client.post(
            "/login", data={"username": "bob", "password": PASSWORD}
        ).status_code
        == 302
    )
    response = console.get(f"/admin/admins/{bob}/remove")
    assert page(response).h1.get_text() == "Remove administrator bob?"
    response = console.post(f"/admin/admins/{bob}/remove", follow_redirects=True)
    assert flashes(response) == [("success", "Administrator bob removed.")]
    assert usernames(app) == ["alice"]
    assert events("Administrator Removed") == [("alice", "bob")]
    # bob's open session ends with the account.
    assert bob_client.get("/admin/users").status_code == 302


def test_the_last_administrator_cannot_be_removed(app, console):
    with app.app_context(), database.connection_context():
        alice = Admin.get(Admin.username == "alice").id
    response = console.get(f"/admin/admins/{alice}/remove")
    assert page(response).select_one("main button[type=submit]").has_attr("disabled")
    assert (
        "alice is the only administrator"
        in page(response).select_one("main p").get_text()
    )
    response = console.post(f"/admin/admins/{alice}/remove")
    assert response.status_code == 200
    assert flashes(response) == [
        ("danger", "This is the only administrator; add another one first.")
    ]
    assert usernames(app) == ["alice"]
    assert events("Administrator Removed") == []


def test_removing_yourself_asks_first_and_signs_you_out(app, console):
    add_admin(app, "bob")
    with app.app_context(), database.connection_context():
        alice = Admin.get(Admin.username == "alice").id
    response = console.get(f"/admin/admins/{alice}/remove")
    assert page(response).h1.get_text() == "Remove your own account?"
    assert usernames(app) == ["alice", "bob"]  # a GET only asks
    response = console.post(f"/admin/admins/{alice}/remove", follow_redirects=True)
    assert flashes(response) == [
        ("success", "Administrator alice removed; you are signed out.")
    ]
    assert usernames(app) == ["bob"]
    assert console.get("/admin/users").status_code == 302


#
# Change password
#


def change(client, current=PASSWORD, new=NEW_PASSWORD, confirm=None):
    return client.post(
        "/admin/account/password",
        data={"current": current, "password": new, "confirm": confirm or new},
    )


def test_change_password_signs_out_other_sessions(app, console):
    other = app.test_client()
    assert (
        other.post(
            "/login", data={"username": "alice", "password": PASSWORD}
        ).status_code
        == 302
    )
    response = change(console)
    assert response.status_code == 302
    assert console.get("/admin/users").status_code == 200
    assert other.get("/admin/users").status_code == 302
    with app.app_context(), database.connection_context():
        assert Admin.get(Admin.username == "alice").check_password(NEW_PASSWORD)
    assert events("Administrator Password Changed") == [("alice", "alice")]


@pytest.mark.parametrize(
    ("current", "new", "field", "message"),
    [
        (
            "wrong password!",
            NEW_PASSWORD,
            "current",
            "The current password is incorrect.",
        ),
        (PASSWORD, "password1234", "password", COMMON),
        (PASSWORD, "alice-in-wonderland", "password", HAS_NAME),
    ],
)
def test_change_password_refusals(app, console, current, new, field, message):
    response = change(console, current, new)
    assert response.status_code == 200
    assert errors(response) == [message]
    with app.app_context(), database.connection_context():
        assert Admin.get(Admin.username == "alice").check_password(PASSWORD)
    assert events("Administrator Password Changed") == []


def test_guessing_the_current_password_is_throttled(app, console):
    for _ in range(5):
        assert change(console, "wrong password!").status_code == 200
    response = change(console, "wrong password!")
    assert response.status_code == 429
    assert errors(response)[0].startswith("Too many failed sign-ins from this address.")
    # Even the right password waits now.
    assert change(console).status_code == 429
    assert len(events("Admin Password Change Failed")) == 5


def test_account_forms_need_csrf(csrf_app):  # noqa: F811 (fixture)
    add_admin(csrf_app, "alice")
    client = csrf_app.test_client()
    token = page(client.get("/login")).find("input", attrs={"name": "csrf_token"})[
        "value"
    ]
    client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token}
    )
    assert client.get("/admin/admins").status_code == 200
    for url, data in [
        (
            "/admin/admins",
            {"username": "bob", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
        ),
        (
            "/admin/account/password",
            {"current": PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
        ),
        ("/admin/admins/1/remove", {}),
    ]:
        assert client.post(url, data=data).status_code == 400
    assert usernames(csrf_app) == ["alice"]


#
# The real mdm command
#


@pytest.fixture
def env(tmp_path):
    instance = tmp_path / "instance"
    os.makedirs(instance, mode=0o700)
    return served.environment(instance)


def create(env, username, password=PASSWORD, check=True):
    return served.mdm(
        env,
        "admin",
        "create",
        username,
        "--password-stdin",
        input=password + "\n",
        check=check,
    )


def test_cli_refuses_common_passwords(env):
    result = create(env, "carol", "password1234", check=False)
    assert result.returncode == 1
    assert result.stderr == f"Error: Password refused. {COMMON}\n"
    result = create(env, "carol", "carol-password", check=False)
    assert result.stderr == f"Error: Password refused. {HAS_NAME}\n"
    assert served.mdm(env, "admin", "list").stderr == "No administrators.\n"


def test_cli_list_passwd_remove(env):
    create(env, "carol")
    create(env, "dave")
    lines = served.mdm(env, "admin", "list").stdout.splitlines()
    assert lines[0].split() == ["USERNAME", "CREATED", "LAST", "SIGN-IN"]
    assert [line.split()[0] for line in lines[1:]] == ["carol", "dave"]
    assert [line.split()[-1] for line in lines[1:]] == ["-", "-"]

    result = served.mdm(
        env,
        "admin",
        "passwd",
        "carol",
        "--password-stdin",
        input="password1234\n",
        check=False,
    )
    assert result.stderr == f"Error: Password refused. {COMMON}\n"
    result = served.mdm(
        env, "admin", "passwd", "carol", "--password-stdin", input=NEW_PASSWORD + "\n"
    )
    assert (
        result.stderr == "Password of carol changed; their sessions are signed out.\n"
    )
    result = served.mdm(
        env,
        "admin",
        "passwd",
        "nobody",
        "--password-stdin",
        input=NEW_PASSWORD + "\n",
        check=False,
    )
    assert result.stderr == "Error: No administrator nobody.\n"

    assert (
        served.mdm(env, "admin", "remove", "dave").stderr
        == "Administrator dave removed.\n"
    )
    result = served.mdm(env, "admin", "remove", "carol", check=False)
    assert result.returncode == 1
    assert (
        result.stderr
        == "Error: carol is the only administrator; create another one first.\n"
    )
    lines = served.mdm(env, "admin", "list").stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["carol"]


def test_cli_passwd_and_unlock_take_effect_on_the_server(env, tmp_path):
    create(env, "carol")
    process, port = served.start(env, tmp_path / "serve.log")
    try:
        for _ in range(5):
            assert post_login(port, "carol", "wrong password!") == (200, "/login")
        assert post_login(port, "carol", PASSWORD) == (429, "/login")
        result = served.mdm(env, "admin", "unlock", "carol")
        # Five pair rows and five account rows; the address's own count stays.
        assert result.stderr == "Cleared 10 failed sign-ins of carol.\n"
        assert post_login(port, "carol", PASSWORD) == (200, "/admin/")
        served.mdm(
            env,
            "admin",
            "passwd",
            "carol",
            "--password-stdin",
            input=NEW_PASSWORD + "\n",
        )
        assert post_login(port, "carol", PASSWORD) == (200, "/login")
        assert post_login(port, "carol", NEW_PASSWORD) == (200, "/admin/")
    finally:
        served.stop(process)


def post_login(port, username, password):
    """Sign in through the served stack; return the status and the page it ends on."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{port}"
    with opener.open(base + "/login") as response:
        form = BeautifulSoup(response.read(), "html.parser")
    token = form.find("input", attrs={"name": "csrf_token"})["value"]
    data = urllib.parse.urlencode(
        {"csrf_token": token, "username": username, "password": password}
    ).encode()
    try:
        with opener.open(base + "/login", data=data) as response:
            return response.status, urllib.parse.urlsplit(response.url).path
    except urllib.error.HTTPError as error:
        return error.code, urllib.parse.urlsplit(error.url).path
