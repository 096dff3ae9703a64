"""Administrator sign-in: first-run setup, login, logout and failure throttling."""

import functools
import hmac
import secrets
from datetime import datetime
from datetime import timedelta
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
from werkzeug.security import check_password_hash

from .activity import audit
from .db import database
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
    """Count recent failures per key and refuse once a key has too many."""

    def __init__(self, prefix, limit, window):
        self.prefix = prefix
        self.limit = limit
        self.window = window

    def _key(self, key):
        return f"{self.prefix}:{key}"

    def retry_after(self, key):
        """Return seconds until ``key`` may try again, or 0."""
        now = utcnow()
        times = (
            LoginFailure.select(LoginFailure.time)
            .where(
                (LoginFailure.key == self._key(key))
                & (LoginFailure.time > now - timedelta(seconds=self.window))
            )
            .order_by(LoginFailure.time.desc())
            .limit(self.limit)
            .tuples()
        )
        times = [row[0] for row in times]
        if len(times) < self.limit:
            return 0
        oldest = times[-1]
        return int(self.window - (now - oldest).total_seconds()) + 1

    def fail(self, key):
        now = utcnow()
        with write_transaction():
            LoginFailure.create(key=self._key(key), time=now)
            # Forget this key's failures that no longer count.
            LoginFailure.delete().where(
                (LoginFailure.key == self._key(key))
                & (LoginFailure.time <= now - timedelta(seconds=self.window))
            ).execute()

    def clear(self, key):
        LoginFailure.delete().where(LoginFailure.key == self._key(key)).execute()

    def reset(self):
        """Forget every failure (a test)."""
        prefix = self.prefix + ":"
        LoginFailure.delete().where(LoginFailure.key.startswith(prefix)).execute()


# Per account: 5 failures in 15 minutes. Per address: 20, so one address
# cannot walk through many accounts either.
account_throttle = Throttle("account", 5, 15 * 60)
address_throttle = Throttle("address", 20, 15 * 60)


def _retry_after(username):
    return max(
        account_throttle.retry_after(username.lower()),
        address_throttle.retry_after(request.remote_addr or "?"),
    )


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
    address = request.remote_addr or "?"
    if address_throttle.retry_after(address):
        abort(429, "Too many wrong setup codes from this address; try again later.")
    if not _valid_setup_code(code):
        address_throttle.fail(address)
        abort(403, "Open the setup link printed by the server when it started.")
    if setup_code_expired(current_app):
        hours = current_app.config["SETUP_CODE_HOURS"]
        return render_template("auth/setup_expired.html", hours=hours), 410
    form = SetupForm()
    if form.validate_on_submit():
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
    return render_template("auth/setup.html", form=form, code=code)


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
    if form.validate_on_submit():
        username = form.username.data.strip()
        wait = _retry_after(username)
        if wait:
            minutes = (wait + 59) // 60
            error = (
                "Too many failed sign-ins. Try again in "
                f"{minutes} minute{'s' if minutes != 1 else ''}."
            )
        else:
            admin = _check_password(username, form.password.data)
            if admin is not None:
                account_throttle.clear(username.lower())
                admin.last_login_at = utcnow()
                admin.save()
                _sign_in(admin)
                audit("Admin Signed In", "", actor=admin.username)
                target = _safe_next(request.args.get("next"))
                return redirect(target or url_for("console.dashboard"))
            account_throttle.fail(username.lower())
            address_throttle.fail(request.remote_addr or "?")
            audit("Admin Sign-in Failed", f"username {username[:150]!r}", actor="")
            error = "The username or password is incorrect."
    status = 429 if error and error.startswith("Too many") else 200
    return render_template("auth/login.html", form=form, error=error), status


#
# Session lifetime
#


def _sign_in(admin):
    """Sign ``admin`` in and start the session's clocks."""
    login_user(admin)
    now = int(utcnow().timestamp())
    session[SIGNED_IN_AT] = now
    session[SEEN_AT] = now


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
