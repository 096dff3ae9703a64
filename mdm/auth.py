"""Administrator sign-in: first-run setup, login, logout and failure throttling."""

import functools
import hmac
import ipaddress
import math
import re
import secrets
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint
from flask import abort
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from flask_login import LoginManager
from flask_login import current_user
from flask_login import login_user
from flask_login import logout_user
from peewee import fn
from werkzeug.security import check_password_hash

from .activity import audit
from .db import database
from .db import lock_named
from .db import write_transaction
from .forms import LoginForm
from .forms import LogoutForm
from .forms import SetupForm
from .forms import check_form_request
from .models import Admin
from .models import LoginFailure
from .models import Setting
from .models import hash_password
from .models import utcnow
from .scim.paths import is_api_path

bp = Blueprint("auth", __name__)
bp.before_request(check_form_request)

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Sign in to continue."
# The flash categories are the page's message styles; flask-login's default has none.
login_manager.login_message_category = "info"

# Bundled inside the package, so the single binary carries it too.
COMMON_PASSWORDS = Path(__file__).with_name("common_passwords.txt")
MIN_PASSWORD_LENGTH = 12
PASSWORD_HINT = (
    f"At least {MIN_PASSWORD_LENGTH} characters; not a common password and not "
    "containing the username."
)
# People swap letters for look-alike digits and symbols; undo that before the lookup.
LOOK_ALIKES = str.maketrans("@4$50371!", "aassoetii")

SETUP_CODE = "setup_code"
SETUP_CODE_AT = "setup_code_created_at"
# Session keys: when the administrator signed in, and when last seen.
SIGNED_IN_AT = "signed_in_at"
SEEN_AT = "seen_at"


@login_manager.user_loader
def load_admin(session_id):
    """Return the administrator a session names, if its session key is still current."""
    admin_id, _, key = session_id.partition(":")
    if not admin_id.isdigit() or not key:
        return None
    admin = Admin.get_or_none(Admin.id == int(admin_id))
    if admin is None or not hmac.compare_digest(admin.session_key, key):
        return None
    return admin


#
# Throttling of failed sign-ins
#


# Failures are rows in the database, so every server process sees the
# same count and a restart does not reset it.
class Throttle:
    """Make a key wait longer after each failure beyond its free ones."""

    def __init__(self, prefix, free, delay, cap, window):
        self.prefix = prefix
        self.free = free
        self.delay = delay
        self.cap = cap
        self.window = window

    def _key(self, key):
        return f"{self.prefix}:{key}"

    def failures(self, key, now):
        """Return the number of ``key``'s failures in the window and the newest one's time."""
        count, newest = (
            LoginFailure.select(fn.COUNT(LoginFailure.id), fn.MAX(LoginFailure.time))
            .where(
                (LoginFailure.key == self._key(key))
                & (LoginFailure.time > now - timedelta(seconds=self.window))
            )
            .tuples()
            .get()
        )
        return count, newest

    def retry_after(self, key, free=None):
        """Return seconds until ``key`` may try again, or 0."""
        free = self.free if free is None else free
        now = utcnow()
        count, newest = self.failures(key, now)
        if not count or count < free:
            return 0
        # Each failure beyond the free ones doubles the wait, up to the cap.
        wait = min(self.delay * 2 ** min(count - free, 32), self.cap)
        if isinstance(newest, str):  # SQLite's MAX() returns the stored text
            newest = datetime.fromisoformat(newest)
        return max(0, math.ceil(wait - (now - newest).total_seconds()))

    def fail(self, key):
        """Record a failure for ``key`` and forget its failures older than the window."""
        now = utcnow()
        LoginFailure.create(key=self._key(key), time=now)
        LoginFailure.delete().where(
            (LoginFailure.key == self._key(key))
            & (LoginFailure.time <= now - timedelta(seconds=self.window))
        ).execute()

    def count(self, key, limit):
        """Return ``key``'s failures in the window, counting no further than ``limit``."""
        now = utcnow()
        recent = (
            LoginFailure.select(LoginFailure.id)
            .where(
                (LoginFailure.key == self._key(key))
                & (LoginFailure.time > now - timedelta(seconds=self.window))
            )
            .limit(limit)
        )
        return recent.count()

    def clear(self, key):
        LoginFailure.delete().where(LoginFailure.key == self._key(key)).execute()

    def reset(self):
        """Forget every failure (a test)."""
        prefix = self.prefix + ":"
        LoginFailure.delete().where(LoginFailure.key.startswith(prefix)).execute()


# One account from one address: 5 free failures, then 30 s, 1 min, 2 min ...
# up to 15 minutes between tries. Only that address waits, so an attacker
# elsewhere never keeps the administrator out.
pair_throttle = Throttle("pair", 5, 30, 15 * 60, 24 * 3600)
# One address across all accounts: 20 free failures, so it cannot walk
# through many usernames either.
address_throttle = Throttle("address", 20, 30, 15 * 60, 24 * 3600)
# One account from every address: past this many failures in an hour the
# account is under distributed guessing, and an address gets no free tries:
# it waits after its first failure. An address with no failures still signs
# in at once, so this slows guessing to about one try per address and never
# locks the account.
account_throttle = Throttle("account", 0, 30, 15 * 60, 3600)
ACCOUNT_CEILING = 50
# Wrong setup codes from one address.
setup_throttle = Throttle("setup", 20, 30, 15 * 60, 24 * 3600)


def client_address():
    """Return the key for the client's address: IPv4 as is, IPv6 by its /64 network."""
    # One IPv6 host usually holds a whole /64, so throttling single IPv6
    # addresses would let it pick a fresh one for every try.
    address = request.remote_addr or "?"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def sign_in_wait(username):
    """Return seconds until ``username`` may try a password from this address, or 0."""
    account = username.lower()
    address = client_address()
    pair = f"{account}|{address}"
    free = None
    if account_throttle.count(account, ACCOUNT_CEILING) >= ACCOUNT_CEILING:
        free = 0
    return max(
        pair_throttle.retry_after(pair, free),
        address_throttle.retry_after(address),
    )


def failed_sign_in(username):
    """Count a wrong password for ``username`` from this address."""
    account = username.lower()
    address = client_address()
    with write_transaction():
        pair_throttle.fail(f"{account}|{address}")
        address_throttle.fail(address)
        account_throttle.fail(account)


def clear_failures(username):
    """Forget ``username``'s failed sign-ins from every address; return how many."""
    account = username.lower()
    # The pair keys are "pair:<account>|<address>"; LIKE would take the
    # account's own "_" and "%" as wildcards, so match the prefix exactly.
    prefix = f"{pair_throttle.prefix}:{account}|"
    with write_transaction():
        return (
            LoginFailure.delete()
            .where(
                (LoginFailure.key == f"{account_throttle.prefix}:{account}")
                | (fn.SUBSTR(LoginFailure.key, 1, len(prefix)) == prefix)
            )
            .execute()
        )


def wait_message(wait):
    """Return the sign-in form's message for a wait of ``wait`` seconds."""
    if wait < 60:
        amount = f"{wait} second{'s' if wait != 1 else ''}"
    else:
        minutes = (wait + 59) // 60
        amount = f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"Too many failed sign-ins from this address. Try again in {amount}."


#
# Password rules
#


@functools.cache
def _common_passwords():
    with COMMON_PASSWORDS.open(encoding="utf-8") as file:
        return frozenset(
            line.strip() for line in file if line.strip() and not line.startswith("#")
        )


def password_problem(password, username=""):
    """Return why ``password`` may not be an administrator's password, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Use at least {MIN_PASSWORD_LENGTH} characters."
    lowered = password.lower()
    name = username.strip().lower()
    if name and name in lowered:
        return "The password contains the username; choose one that does not."
    common = _common_passwords()
    # The digits and symbols at the end are kept as typed: "2024" is a year.
    stem, tail = re.fullmatch(r"(.*?)([\W\d_]*)", lowered).groups()
    if lowered in common or stem.translate(LOOK_ALIKES) + tail in common:
        return (
            "This password is on the list of common passwords that attackers try "
            "first; choose another."
        )
    if len(set(lowered)) < 4:
        return "This password uses fewer than 4 different characters; choose another."
    return None


def password_accepted(form, username):
    """Tell whether ``form.password`` passes the password rules; else add the reason to it."""
    problem = password_problem(form.password.data, username)
    if problem:
        form.password.errors.append(problem)
    return problem is None


#
# First-run setup
#


def setup_code():
    """Return the stored setup code, or None."""
    return Setting.select(Setting.value).where(Setting.name == SETUP_CODE).scalar()


def _setup_code_created():
    value = Setting.select(Setting.value).where(Setting.name == SETUP_CODE_AT).scalar()
    return datetime.fromisoformat(value) if value else None


def setup_code_expired(app):
    """Tell whether the stored setup code is older than SETUP_CODE_HOURS."""
    created = _setup_code_created()
    # A code stored before codes had a lifetime counts as expired.
    if created is None:
        return True
    lifetime = timedelta(hours=float(app.config["SETUP_CODE_HOURS"]))
    return utcnow() - created >= lifetime


def ensure_setup_code(app):
    """Return the one-time setup code while no administrator exists, else None."""
    # The code lives in the database, so every process prints the same one and
    # any of them accepts it.
    with database.connection_context():
        if Admin.select().exists():
            return None
        code = setup_code()
        if code and not setup_code_expired(app):
            return code
        with write_transaction():
            lock_named("setup code")
            if code:
                # Only the expired code: another process may have replaced it.
                Setting.delete().where(
                    (Setting.name == SETUP_CODE) & (Setting.value == code)
                ).execute()
                if setup_code() is None:
                    Setting.delete().where(Setting.name == SETUP_CODE_AT).execute()
            # The first process to store a code wins; the others read it back.
            Setting.insert(
                name=SETUP_CODE, value=secrets.token_urlsafe(24)
            ).on_conflict_ignore().execute()
            Setting.insert(
                name=SETUP_CODE_AT, value=utcnow().isoformat()
            ).on_conflict_ignore().execute()
        return setup_code()


def forget_setup_code():
    """Remove the setup code once an administrator exists."""
    Setting.delete().where(Setting.name.in_((SETUP_CODE, SETUP_CODE_AT))).execute()


def _valid_setup_code(code):
    expected = setup_code()
    return bool(code) and bool(expected) and hmac.compare_digest(code, expected)


@bp.route("/setup", methods=("GET", "POST"))
def setup():
    """Create the first administrator; refused without the printed setup code."""
    if Admin.select().exists():
        return redirect(url_for("auth.login"))
    code = request.values.get("code", "")
    address = client_address()
    if setup_throttle.retry_after(address):
        abort(429, "Too many wrong setup codes from this address; try again later.")
    if not _valid_setup_code(code):
        setup_throttle.fail(address)
        abort(403, "Open the setup link printed by the server when it started.")
    if setup_code_expired(current_app):
        hours = current_app.config["SETUP_CODE_HOURS"]
        return render_template("auth/setup_expired.html", hours=hours), 410
    form = SetupForm()
    if form.validate_on_submit() and password_accepted(form, form.username.data):
        admin = Admin(username=form.username.data.strip())
        admin.set_password(form.password.data)
        admin.save()
        forget_setup_code()
        audit(
            "Administrator Created",
            f"{admin.username} (first-run setup)",
            actor=admin.username,
        )
        _sign_in(admin)
        flash(f"Administrator {admin.username} created.", "success")
        return redirect(url_for("console.provisioning", idp="entra"))
    return render_template(
        "auth/setup.html", form=form, code=code, password_hint=PASSWORD_HINT
    )


#
# Sign-in
#


def _safe_next(target):
    """Return ``target`` if it is a local path, else None (open-redirect guard)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    # Browsers drop tabs and newlines, turning "/\t/host" into "//host".
    if any(ord(c) < 32 or c.isspace() for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return None
    return target


def _check_password(username, password):
    """Return the administrator ``username`` if ``password`` is theirs, else None."""
    admin = Admin.get_or_none(Admin.username == username)
    if admin is None:
        # Hash the password anyway, so an unknown username takes as long as
        # a known one and the time taken does not tell which usernames exist.
        check_password_hash(_dummy_hash(), password)
        return None
    return admin if admin.check_password(password) else None


@functools.cache
def _dummy_hash():
    """Return a hash of a random password, made the way real passwords are hashed."""
    return hash_password(secrets.token_urlsafe(16))


@bp.route("/login", methods=("GET", "POST"))
def login():
    """Sign an administrator in."""
    if current_user.is_authenticated:
        return redirect(url_for("console.dashboard"))
    if not Admin.select().exists():
        return render_template("auth/no_admin.html"), 503
    form = LoginForm()
    error = None
    wait = 0
    if form.validate_on_submit():
        username = form.username.data.strip()
        wait = sign_in_wait(username)
        if wait:
            error = wait_message(wait)
        else:
            admin = _check_password(username, form.password.data)
            if admin is not None:
                pair_throttle.clear(f"{username.lower()}|{client_address()}")
                admin.last_login_at = utcnow()
                admin.save()
                _sign_in(admin)
                audit("Admin Signed In", "", actor=admin.username)
                target = _safe_next(request.args.get("next"))
                return redirect(target or url_for("console.dashboard"))
            failed_sign_in(username)
            audit("Admin Sign-in Failed", f"username {username[:150]!r}", actor="")
            error = "The username or password is incorrect."
    # After a failure the username is usually right: the cursor waits in Password.
    focus = "password" if error and form.username.data else "username"
    html = render_template("auth/login.html", form=form, error=error, focus=focus)
    if wait:
        return html, 429, {"Retry-After": str(wait)}
    return html


#
# Session lifetime
#


def _sign_in(admin):
    """Sign ``admin`` in and start the session's clocks."""
    login_user(admin)
    now = int(utcnow().timestamp())
    session[SIGNED_IN_AT] = now
    session[SEEN_AT] = now


def renew_session(admin):
    """Sign out ``admin``'s other sessions and keep this one signed in."""
    admin.end_sessions()
    # The session id holds the new key; the session's clocks run on.
    login_user(admin)


def check_session_age():
    """Sign out a session idle longer than SESSION_IDLE_MINUTES or older than SESSION_LIFETIME_HOURS."""
    # The SCIM API has no session; static files need no sign-in.
    if is_api_path(request.path) or request.endpoint == "static":
        return None
    if not current_user.is_authenticated:
        return None
    config = current_app.config
    now = int(utcnow().timestamp())
    signed_in_at = session.get(SIGNED_IN_AT)
    seen_at = session.get(SEEN_AT)
    idle = float(config["SESSION_IDLE_MINUTES"]) * 60
    lifetime = float(config["SESSION_LIFETIME_HOURS"]) * 3600
    # The timestamps are in the signed cookie, so the client cannot move them;
    # a session without them predates the limits and is ended too.
    if not isinstance(signed_in_at, int) or not isinstance(seen_at, int):
        message = "Your session has expired. Sign in again."
    elif now - signed_in_at >= lifetime:
        message = (
            f"Your session has expired ({_hours(lifetime)} since you signed in). "
            "Sign in again."
        )
    elif now - seen_at >= idle:
        message = (
            f"You were signed out after {_hours(idle)} without activity. Sign in again."
        )
    else:
        # Written at most once a minute, so most responses set no new cookie.
        if now - seen_at >= 60:
            session[SEEN_AT] = now
        return None
    logout_user()
    session.pop(SIGNED_IN_AT, None)
    session.pop(SEEN_AT, None)
    flash(message, "warning")
    if request.blueprint == "auth":
        return None  # the sign-in pages go on, now signed out
    target = request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect(url_for("auth.login", next=_safe_next(target)))


def _hours(seconds):
    """Return ``seconds`` as "8 hours" or "30 minutes"."""
    if seconds >= 3600 and seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = max(1, int(seconds // 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


@bp.post("/logout")
def logout():
    """Sign the administrator out."""
    form = LogoutForm()
    if form.validate_on_submit():
        if current_user.is_authenticated:
            audit("Admin Signed Out", "")
            current_user.end_sessions()
        logout_user()
        flash("Signed out.", "success")
    return redirect(url_for("auth.login"))


def init_app(app):
    """Attach flask-login to the app and enforce the session limits."""
    login_manager.init_app(app)
    app.before_request(check_session_age)
