"""Administrators pages: the console's accounts, and changing your own password."""

from flask import abort
from flask import flash
from flask import redirect
from flask import render_template
from flask import url_for
from flask_login import current_user
from flask_login import logout_user

from ..activity import audit
from ..auth import PASSWORD_HINT
from ..auth import failed_sign_in
from ..auth import password_accepted
from ..auth import renew_session
from ..auth import sign_in_wait
from ..auth import wait_message
from ..db import lock_named
from ..db import write_transaction
from ..forms import AddAdminForm
from ..forms import ChangePasswordForm
from ..forms import ConfirmForm
from ..models import Admin
from ..models import hash_password
from .base import bp


@bp.route("/admins", methods=("GET", "POST"))
def admins():
    """List administrators, and add one."""
    form = AddAdminForm()
    if form.validate_on_submit() and password_accepted(form, form.username.data):
        username = form.username.data.strip()
        # Hashing is slow on purpose: do it before taking the write lock.
        password_hash = hash_password(form.password.data)
        with write_transaction():
            lock_named("admins")
            taken = Admin.select().where(Admin.username == username).exists()
            if not taken:
                Admin.create(username=username, password_hash=password_hash)
        if taken:
            form.username.errors.append(f"An administrator called {username} exists.")
        else:
            audit("Administrator Created", username)
            flash(f"Administrator {username} added.", "success")
            return redirect(url_for("console.admins"))
    return render_template(
        "admin/admins.html",
        form=form,
        admins=list(Admin.select().order_by(Admin.username)),
        password_hint=PASSWORD_HINT,
    )


@bp.route("/admins/<int:admin_id>/remove", methods=("GET", "POST"))
def remove_admin(admin_id):
    """Confirm, then remove an administrator; never the last one."""
    admin = Admin.get_or_none(Admin.id == admin_id)
    if admin is None:
        abort(404)
    yourself = admin.id == current_user.id
    form = ConfirmForm()
    refused = None
    if form.validate_on_submit():
        # Counted and deleted under the write lock, so two removals at once
        # cannot both pass the count and leave no administrator.
        with write_transaction():
            # One process at a time counts and removes, as in `mdm admin remove`.
            lock_named("admins")
            last = Admin.select().count() <= 1
            if not last:
                admin.delete_instance()
        if last:
            refused = "This is the only administrator; add another one first."
        else:
            audit("Administrator Removed", admin.username)
            if yourself:
                logout_user()
                flash(
                    f"Administrator {admin.username} removed; you are signed out.",
                    "success",
                )
                return redirect(url_for("auth.login"))
            flash(f"Administrator {admin.username} removed.", "success")
            return redirect(url_for("console.admins"))
    only = Admin.select().count() <= 1
    if only:
        message = (
            f"{admin.username} is the only administrator, and the console needs one. "
            "Add another administrator first."
        )
    elif yourself:
        message = (
            f"{admin.username} is your own account: removing it signs you out at once, "
            "and you cannot sign in with it again."
        )
    else:
        message = (
            f"{admin.username} can no longer sign in; their open sessions end at once. "
            "The audit trail keeps their past actions."
        )
    if refused:
        flash(refused, "danger")
    return render_template(
        "admin/confirm.html",
        form=form,
        title=(
            "Remove your own account?"
            if yourself
            else f"Remove administrator {admin.username}?"
        ),
        message=message,
        confirm_label="Remove my account" if yourself else "Remove administrator",
        cancel_url=url_for("console.admins"),
        danger=True,
        disabled=only,
    )


@bp.route("/account/password", methods=("GET", "POST"))
def change_password():
    """Change your own password; your other sessions are signed out."""
    form = ChangePasswordForm()
    admin = current_user._get_current_object()
    wait = 0
    if form.validate_on_submit():
        # A session left open must not become a way to guess the password.
        wait = sign_in_wait(admin.username)
        if wait:
            form.current.errors.append(wait_message(wait))
        elif not admin.check_password(form.current.data):
            failed_sign_in(admin.username)
            audit("Admin Password Change Failed", "wrong current password")
            form.current.errors.append("The current password is incorrect.")
        elif password_accepted(form, admin.username):
            admin.set_password(form.password.data)
            renew_session(admin)
            audit("Administrator Password Changed", admin.username)
            flash("Password changed; your other sessions are signed out.", "success")
            return redirect(url_for("console.admins"))
    html = render_template(
        "admin/change_password.html", form=form, password_hint=PASSWORD_HINT
    )
    if wait:
        return html, 429, {"Retry-After": str(wait)}
    return html
