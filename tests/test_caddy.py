"""HTTPS through a real proxy: Debian's Caddy in front of ``mdm serve``.

The settings are the README's: MDM_PUBLIC_URL names the public https address
and MDM_PROXY_FIX=1 trusts the one proxy's X-Forwarded-* headers. Caddy signs
its certificate with its own local CA (``tls internal``, so no network), and
the client trusts exactly that CA. Caddy is required (``.ci/run`` installs
it); the tests fail, not skip, when it is missing.
"""

import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.parse

import pytest
from playwright.sync_api import expect
from playwright.sync_api import sync_playwright

from . import served
from .conftest import PASSWORD
from .conftest import raw_connection
from .test_e2e_browser import ARGS
from .test_e2e_browser import CHROMIUM
from .test_e2e_browser import shot

CADDY = shutil.which("caddy") or "/usr/bin/caddy"
NAME = "mdm.test"
# Clients connect from another loopback address than Caddy's own 127.0.0.1,
# so mdm can only see this one through X-Forwarded-For.
CLIENT_ADDRESS = "127.0.0.2"
HSTS = "max-age=31536000; includeSubDomains"

CADDYFILE = """\
{{
	# A test instance: no admin API, no port 80, no system trust store.
	admin off
	auto_https disable_redirects
	skip_install_trust
}}

https://{name}:{port} {{
	tls internal
	reverse_proxy 127.0.0.1:{upstream}
}}
"""


class Stack:
    """``mdm serve`` behind Caddy; requests go through Caddy over https."""

    def __init__(self, instance, env, port, ca_file, log):
        self.instance = instance
        self.log = log
        self.env = env
        self.port = port
        self.base = f"https://{NAME}:{port}"
        self.context = ssl.create_default_context(cafile=str(ca_file))

    def request(self, method, path, body=None, headers=()):
        """Send one request through Caddy from CLIENT_ADDRESS; return (response, body)."""
        conn = _ProxyConnection(NAME, self.port, self.context)
        try:
            conn.request(method, path, body=body, headers=dict(headers))
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()


class _ProxyConnection(http.client.HTTPSConnection):
    """Connect to Caddy on loopback from CLIENT_ADDRESS, verifying its certificate for NAME."""

    def __init__(self, host, port, context):
        super().__init__(host, port, timeout=30, context=context)
        self.verifying_context = context

    def connect(self):
        sock = socket.create_connection(
            ("127.0.0.1", self.port), self.timeout, (CLIENT_ADDRESS, 0)
        )
        self.sock = self.verifying_context.wrap_socket(sock, server_hostname=self.host)


def _start_caddy(folder, port, upstream):
    """Start Caddy with its own home and data folders; return (process, root CA file)."""
    assert os.path.exists(CADDY), "Debian's caddy is missing: apt-get install caddy"
    folder.mkdir()
    caddyfile = folder / "Caddyfile"
    caddyfile.write_text(CADDYFILE.format(name=NAME, port=port, upstream=upstream))
    env = dict(
        os.environ,
        HOME=str(folder),
        XDG_DATA_HOME=str(folder / "data"),
        XDG_CONFIG_HOME=str(folder / "config"),
    )
    with open(folder / "caddy.log", "ab") as log:
        process = subprocess.Popen(
            [CADDY, "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    ca_file = folder / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"caddy exited with {process.returncode}; see {log.name}"
            )
        if ca_file.exists():
            try:
                context = ssl.create_default_context(cafile=str(ca_file))
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    with context.wrap_socket(sock, server_hostname=NAME):
                        return process, ca_file
            except (OSError, ssl.SSLError):
                pass
        time.sleep(0.1)
    served.stop(process, kill=True)
    raise RuntimeError(f"caddy did not serve https on {port} within 30 s")


@pytest.fixture
def behind_caddy(tmp_path):
    """Return a function starting ``mdm serve`` with the README's proxy settings and Caddy in front."""
    started = []

    def start(admin=True):
        port = served.free_port()
        instance = tmp_path / "instance"
        instance.mkdir()
        env = served.environment(
            instance, PUBLIC_URL=f"https://{NAME}:{port}", PROXY_FIX=1
        )
        if admin:
            served.mdm(
                env, "admin", "create", "alice", "--password-stdin", input=PASSWORD
            )
        log = tmp_path / "serve.log"
        mdm, upstream = served.start(env, log)
        started.append(mdm)
        caddy, ca_file = _start_caddy(tmp_path / "caddy", port, upstream)
        started.append(caddy)
        return Stack(instance, env, port, ca_file, log)

    yield start
    # Caddy first, then mdm: each must stop cleanly.
    assert [served.stop(process) for process in reversed(started)] == [0] * len(started)


@pytest.fixture
def stack(behind_caddy):
    """``mdm serve`` with an administrator, behind Caddy."""
    return behind_caddy()


def _csrf_token(body):
    return re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', body)[1]


def _cookie(response):
    """Return the response's session cookie header."""
    cookies = [
        value
        for name, value in response.getheaders()
        if name == "Set-Cookie" and value.startswith("session=")
    ]
    assert len(cookies) == 1, response.getheaders()
    return cookies[0]


def _sign_in_form(stack, path="/login"):
    """GET the sign-in page; return (session cookie pair, CSRF token)."""
    response, body = stack.request("GET", path)
    assert response.status == 200, body
    return _cookie(response).split(";")[0], _csrf_token(body).decode()


def _post_sign_in(stack, cookie, token, password, path="/login", referer=True):
    form = urllib.parse.urlencode(
        {"csrf_token": token, "username": "alice", "password": password}
    )
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": cookie,
    }
    if referer:
        headers["Referer"] = f"{stack.base}{path}"
    return stack.request("POST", path, form, headers)


def test_scim_locations_carry_the_https_url(stack):
    secret = served.mdm(stack.env, "token", "create", "--idp", "entra").stdout.strip()
    headers = {
        "Authorization": f"Bearer {secret}",
        "Content-Type": "application/scim+json",
    }
    body = json.dumps({"userName": "proxied@example.org"})
    response, payload = stack.request("POST", "/scim/v2/Users", body, headers)
    assert response.status == 201, payload
    user = json.loads(payload)
    location = f"{stack.base}/scim/v2/Users/{user['id']}"
    assert response.getheader("Location") == location
    assert user["meta"]["location"] == location
    assert response.getheader("Strict-Transport-Security") == HSTS

    # The Location works as given: it is the same resource, read back over https.
    path = urllib.parse.urlsplit(location).path
    response, payload = stack.request("GET", path, headers=headers)
    assert response.status == 200, payload
    assert json.loads(payload) == user


def test_console_sign_in_over_https(stack):
    response, body = stack.request("GET", "/login?next=/admin/provisioning/entra")
    assert response.status == 200, body
    cookie = _cookie(response)
    assert "; Secure" in cookie and "; HttpOnly" in cookie
    assert response.getheader("Strict-Transport-Security") == HSTS
    assert response.getheader("Referrer-Policy") == "same-origin"
    cookie = cookie.split(";")[0]
    token = _csrf_token(body).decode()

    # flask-wtf's strict check stays on: over https a form needs a same-origin Referer.
    response, body = _post_sign_in(
        stack,
        cookie,
        token,
        PASSWORD,
        "/login?next=/admin/provisioning/entra",
        referer=False,
    )
    assert response.status == 400, body
    assert b"The referrer header is missing." in body
    response, body = stack.request(
        "POST",
        "/login",
        urllib.parse.urlencode({"csrf_token": token}),
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": cookie,
            "Referer": "https://elsewhere.example/login",
        },
    )
    assert response.status == 400, body
    assert b"The referrer does not match the host." in body

    response, body = _post_sign_in(
        stack, cookie, token, PASSWORD, "/login?next=/admin/provisioning/entra"
    )
    assert response.status == 302, body
    target = urllib.parse.urljoin(f"{stack.base}/login", response.getheader("Location"))
    assert target == f"{stack.base}/admin/provisioning/entra"
    signed_in = _cookie(response)
    assert "; Secure" in signed_in
    assert response.getheader("Strict-Transport-Security") == HSTS

    response, body = stack.request(
        "GET", "/admin/provisioning/entra", headers={"Cookie": signed_in.split(";")[0]}
    )
    assert response.status == 200, body
    assert b"Sign out" in body


def test_throttling_sees_the_client_address_behind_the_proxy(stack):
    cookie, token = _sign_in_form(stack)
    # Five wrong passwords are free; the sixth try from the same address waits.
    for _ in range(5):
        response, body = _post_sign_in(stack, cookie, token, "wrong password!")
        assert response.status == 200, body
        assert b"The username or password is incorrect." in body
    response, body = _post_sign_in(stack, cookie, token, PASSWORD)
    assert response.status == 429, body
    assert response.getheader("Retry-After") == "30"

    conn = raw_connection(stack.instance / "mdm.sqlite")
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT key, COUNT(*) FROM login_failure GROUP BY key")
        keys = dict(cursor.fetchall())
    finally:
        conn.close()
    assert keys == {
        f"pair:alice|{CLIENT_ADDRESS}": 5,
        f"address:{CLIENT_ADDRESS}": 5,
        "account:alice": 5,
    }


@pytest.fixture
def browser():
    """Yield a Chromium context that reaches NAME on loopback."""
    assert os.path.exists(CHROMIUM), (
        "Debian's chromium is missing: apt-get install chromium"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*ARGS, f"--host-resolver-rules=MAP {NAME} 127.0.0.1"],
        )
        # Caddy's local CA is not in the browser's store; these tests are about
        # the Referer and cookies over https, not about certificate checks.
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, ignore_https_errors=True
        )
        yield context
        context.close()
        browser.close()


def test_browser_signs_in_over_https(stack, browser):
    page = browser.new_page()
    page.goto(f"{stack.base}/login")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{stack.base}/admin/")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    shot(page, "https-dashboard")
    cookies = browser.cookies()
    assert [(c["name"], c["secure"]) for c in cookies] == [("session", True)]


def test_browser_uses_the_setup_link_over_https(behind_caddy, browser):
    stack = behind_caddy(admin=False)
    code = re.search(r"/setup\?code=(\S+)", stack.log.read_text())[1]
    page = browser.new_page()
    response = page.goto(f"{stack.base}/setup?code={code}")
    # The code is in this page's address: no other site may get it as a Referer.
    assert response.headers["referrer-policy"] == "same-origin"
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Confirm password").fill(PASSWORD)
    page.get_by_role("button", name="Create administrator").click()
    expect(page.get_by_role("heading", name="User Provisioning")).to_be_visible()
    assert page.url.startswith(f"{stack.base}/")
    shot(page, "https-setup-done")
