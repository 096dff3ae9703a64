"""HTTP hardening: security headers on every response and Secure cookies over HTTPS."""

from flask import has_request_context
from flask import request
from flask.sessions import SecureCookieSessionInterface

from .scim.paths import is_api_path

# The console's scripts and styles are all same-origin files; nothing inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The setup link carries its one-time code in the query string, so no
    # other site may see a page's address. Same-origin requests keep their
    # Referer: over https flask-wtf refuses a form without one
    # (WTF_CSRF_SSL_STRICT), which stops a form posted from another site.
    "Referrer-Policy": "same-origin",
}


class SessionInterface(SecureCookieSessionInterface):
    """Mark the session cookie Secure over HTTPS; give the SCIM API no session at all."""

    def open_session(self, app, request):
        # SCIM clients authenticate with bearer tokens only; a null session
        # keeps the console's cookie out of the API and skips its signing.
        if is_api_path(request.path):
            return self.make_null_session(app)
        return super().open_session(app, request)

    def get_cookie_secure(self, app):
        if super().get_cookie_secure(app):
            return True
        # request.is_secure honours X-Forwarded-Proto when PROXY_FIX trusts it.
        return has_request_context() and request.is_secure


_HEADERS = [(name.lower(), name, value) for name, value in HEADERS.items()]


def _add_headers(response):
    headers = response.headers
    # One pass over the few headers set, not a lookup per name.
    present = {name.lower(): value for name, value in headers.to_wsgi_list()}
    for lowered, name, value in _HEADERS:
        if lowered not in present:
            headers.add(name, value)
    if "content-security-policy" not in present and present.get(
        "content-type", ""
    ).startswith("text/html"):
        headers.add("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    if request.is_secure and "strict-transport-security" not in present:
        headers.add("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    return response


def init_app(app):
    """Install the session interface and the header hook."""
    app.session_interface = SessionInterface()
    app.after_request(_add_headers)
