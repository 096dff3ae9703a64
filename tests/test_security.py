"""Security headers, cookies and brute-force limits."""

from mdm import create_app
from mdm.auth import ensure_setup_code
from mdm.db import database
from mdm.models import Admin

from .conftest import database_config


def test_html_pages_carry_security_headers(client):
    response = client.get("/login")
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert "script-src 'self';" in response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in response.headers


def test_scim_responses_are_nosniff(client):
    response = client.get("/scim/v2/ServiceProviderConfig")
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def _session_cookie(response):
    return next(
        h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")
    )


def test_session_cookie_is_secure_only_over_https(tmp_path):
    app = create_app(
        {"TESTING": True, **database_config(tmp_path / "db"), "PROXY_FIX": 1}
    )
    with app.app_context(), database.connection_context():
        admin = Admin(username="root")
        admin.set_password("a long enough password")
        admin.save()
    client = app.test_client()
    plain = _session_cookie(client.get("/login"))
    assert "HttpOnly" in plain and "SameSite=Lax" in plain and "Secure" not in plain
    proxied = client.get("/login", headers={"X-Forwarded-Proto": "https"})
    cookie = _session_cookie(proxied)
    assert "Secure" in cookie and "HttpOnly" in cookie
    assert proxied.headers["Strict-Transport-Security"].startswith("max-age=")


def test_setup_code_cannot_be_guessed(app, client):
    code = ensure_setup_code(app)
    assert len(code) >= 32
    statuses = [client.get(f"/setup?code=guess{i}").status_code for i in range(25)]
    assert statuses[:20] == [403] * 20
    assert set(statuses[20:]) == {429}
    # Even the right code waits once the address is locked out.
    assert client.get(f"/setup?code={code}").status_code == 429


def test_console_input_with_nul_is_refused(app, client):
    """NUL is never stored; console searches, lookups and forms answer 400."""
    with app.app_context(), database.connection_context():
        admin = Admin(username="root")
        admin.set_password("correct horse battery")
        admin.save()
    assert (
        client.post(
            "/login", data={"username": "ro\x00ot", "password": "x"}
        ).status_code
        == 400
    )
    client.post(
        "/login", data={"username": "root", "password": "correct horse battery"}
    )
    for url in (
        "/admin/users?q=a%00b",
        "/admin/groups?q=%00",
        "/admin/users/a%00b",
        "/admin/activity?resource=a%00",
        "/admin/audit?actor=a%00",
    ):
        assert client.get(url).status_code == 400, url
    assert client.get("/admin/users?q=a").status_code == 200


def test_every_page_names_its_icon_and_favicon_ico_finds_it(client):
    page = client.get("/login").get_data(as_text=True)
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page
    response = client.get("/favicon.ico")
    assert (response.status_code, response.location) == (301, "/static/favicon.svg")
    with client.get("/static/favicon.svg") as icon:
        assert icon.status_code == 200
        assert icon.mimetype == "image/svg+xml"
        assert icon.get_data(as_text=True).startswith("<svg ")
