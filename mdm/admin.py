"""Admin console: user provisioning tokens, users, user groups and custom attributes."""

import json
import math
from datetime import timedelta
from urllib.parse import urlencode

from flask import Blueprint
from flask import abort
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import current_user
from flask_login import login_required
from peewee import JOIN
from peewee import fn

from . import reveal
from .activity import audit
from .db import like
from .db import ordering as sort_order
from .db import write_transaction
from .forms import AttributeForm
from .forms import ConfirmForm
from .forms import GenerateTokenForm
from .forms import TokenActionForm
from .models import IDPS
from .models import MAX_TOKENS_PER_IDP
from .models import BearerToken
from .models import CustomAttribute
from .models import Group
from .models import Membership
from .models import TokenError
from .models import User
from .models import groups_of
from .scim.views import base_url as target_scim_url

bp = Blueprint("admin", __name__, url_prefix="/admin")

PAGE_SIZE = 50
EXPIRY_WARNING = timedelta(days=30)


@bp.before_request
@login_required
def require_admin():
    """Every console page needs a signed-in administrator."""


@bp.after_request
def no_store(response):
    # Pages show directory data and, once, token secrets: keep them out of caches.
    response.headers["Cache-Control"] = "no-store"
    return response


def source_label(source):
    """Name a record's source as the console shows it ("SCIM Entra ID")."""
    return f"SCIM {IDPS.get(source, source)}"


def user_status(user):
    if user.deprovisioned_at is not None:
        return "Deprovisioned"
    return "Active" if user.active else "Disabled"


@bp.app_context_processor
def console_helpers():
    return {"source_label": source_label, "user_status": user_status, "IDPS": IDPS}


class Pagination:
    """One page of a query, with links that keep the rest of the query string."""

    def __init__(self, query, page, per_page=PAGE_SIZE, total=None):
        self.total = query.count() if total is None else total
        self.per_page = per_page
        self.pages = max(1, math.ceil(self.total / per_page))
        self.page = min(max(1, page), self.pages)
        self.items = list(query.paginate(self.page, per_page))

    @property
    def first_item(self):
        return 0 if not self.total else (self.page - 1) * self.per_page + 1

    @property
    def last_item(self):
        return min(self.total, self.page * self.per_page)

    def url(self, page):
        args = request.args.to_dict()
        args["page"] = page
        return f"{request.path}?{urlencode(args)}"


def page_arg():
    try:
        return int(request.args.get("page", 1))
    except ValueError:
        return 1


def sort_url(column):
    """Link that sorts by ``column``, flipping the order when it is already the key."""
    args = request.args.to_dict()
    same = args.get("sort") == column
    args["order"] = "desc" if same and args.get("order", "asc") == "asc" else "asc"
    args["sort"] = column
    args.pop("page", None)
    return f"{request.path}?{urlencode(args)}"


bp.add_app_template_global(sort_url)


#
# User Provisioning (tokens)
#


def _idp_or_404(idp):
    if idp not in IDPS:
        abort(404)
    return idp


def _token_or_404(idp, token_id):
    token = BearerToken.get_or_none(
        (BearerToken.id == token_id) & (BearerToken.idp == idp)
    )
    if token is None:
        abort(404)
    return token


def _banners(tokens):
    banners = []
    if not current_app.config.get("SCIM_ENABLED", True):
        banners.append(
            (
                "danger",
                "Provisioning is disabled by the operator (SCIM_ENABLED is off): "
                "identity providers get 403 on every request.",
            )
        )
    if not any(t.status == "Active" for t in tokens):
        banners.append(
            (
                "warning",
                "No active token: the identity provider cannot provision until you "
                "generate a token or set one to Active.",
            )
        )
    for token in tokens:
        days = token.days_until_expiry(EXPIRY_WARNING)
        if days is not None:
            banners.append(
                (
                    "warning",
                    f"Token {token.key} expires in {days} day{'s' if days != 1 else ''} "
                    f"({token.expires_at:%Y-%m-%d}). Generate or renew a token and "
                    "update the identity provider before then.",
                )
            )
    return banners


@bp.get("/provisioning")
def provisioning_home():
    return redirect(url_for("admin.provisioning", idp="entra"))


@bp.get("/provisioning/<idp>")
def provisioning(idp):
    """Show a connection's Target SCIM URL, tokens and setup steps."""
    _idp_or_404(idp)
    tokens = list(
        BearerToken.select().where(BearerToken.idp == idp).order_by(BearerToken.id)
    )
    return render_template(
        "admin/provisioning.html",
        idp=idp,
        tokens=tokens,
        full=len(tokens) >= MAX_TOKENS_PER_IDP,
        max_tokens=MAX_TOKENS_PER_IDP,
        banners=_banners(tokens),
        scim_url=target_scim_url(),
        action_form=TokenActionForm(),
    )


@bp.route("/provisioning/<idp>/generate", methods=("GET", "POST"))
def generate_token(idp):
    """Confirm, then issue a token and show its secret once."""
    _idp_or_404(idp)
    form = GenerateTokenForm()
    if form.validate_on_submit():
        try:
            token, secret = BearerToken.issue(
                idp,
                form.label.data or "",
                current_user.username,
                form.expires_in_days(),
            )
        except TokenError as error:
            flash(str(error), "danger")
            return redirect(url_for("admin.provisioning", idp=idp))
        audit("SCIM Token Created", _token_details(token))
        reveal.keep(token, secret, renewed=False)
        return redirect(url_for("admin.token_secret", idp=idp, token_id=token.id))
    full = (
        BearerToken.select().where(BearerToken.idp == idp).count() >= MAX_TOKENS_PER_IDP
    )
    return render_template("admin/token_generate.html", idp=idp, form=form, full=full)


@bp.post("/provisioning/<idp>/tokens/<int:token_id>")
def token_action(idp, token_id):
    """Apply the action chosen in a token row's Select drop-down."""
    token = _token_or_404(_idp_or_404(idp), token_id)
    form = TokenActionForm()
    if not form.validate_on_submit():
        flash("Choose an action.", "danger")
        return redirect(url_for("admin.provisioning", idp=idp))
    action = form.action.data
    if action in ("renew", "remove"):
        return redirect(url_for(f"admin.{action}_token", idp=idp, token_id=token.id))
    token.set_active(action == "activate")
    audit(
        "SCIM Token Enabled" if token.active else "SCIM Token Disabled",
        _token_details(token),
    )
    state = "Active" if token.active else "Inactive"
    flash(f"Token {token.key} is now {state}.", "success")
    return redirect(url_for("admin.provisioning", idp=idp))


@bp.route("/provisioning/<idp>/tokens/<int:token_id>/renew", methods=("GET", "POST"))
def renew_token(idp, token_id):
    """Confirm, then replace a token's secret and show the new one once."""
    token = _token_or_404(_idp_or_404(idp), token_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        old_key = token.key
        secret = token.renew()
        audit("SCIM Token Renewed", f"{_token_details(token)}; replaced {old_key}")
        reveal.keep(token, secret, renewed=True)
        return redirect(url_for("admin.token_secret", idp=idp, token_id=token.id))
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"Renew token {token.key}?",
        message=(
            f"A new secret replaces this token's secret. {IDPS[idp]} keeps failing "
            "with 401 until you paste the new secret into it; the old secret stops "
            "working at once."
        ),
        confirm_label="Renew token",
        cancel_url=url_for("admin.provisioning", idp=idp),
    )


@bp.get("/provisioning/<idp>/tokens/<int:token_id>/secret")
def token_secret(idp, token_id):
    """Show a token's new secret once; a reload finds it gone (410)."""
    token = _token_or_404(_idp_or_404(idp), token_id)
    kept = reveal.take(token)
    if kept is None:
        return render_template("admin/token_secret.html", idp=idp, token=token), 410
    secret, renewed = kept
    return render_template(
        "admin/token_secret.html",
        idp=idp,
        token=token,
        secret=secret,
        scim_url=target_scim_url(),
        renewed=renewed,
    )


@bp.route("/provisioning/<idp>/tokens/<int:token_id>/remove", methods=("GET", "POST"))
def remove_token(idp, token_id):
    """Confirm, then delete a token (users and groups stay)."""
    token = _token_or_404(_idp_or_404(idp), token_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        token.delete_instance()
        audit("SCIM Token Deleted", _token_details(token))
        flash(f"Token {token.key} removed.", "success")
        return redirect(url_for("admin.provisioning", idp=idp))
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"Remove token {token.key}?",
        message=(
            f"{IDPS[idp]} gets 401 on its next request if it still uses this token. "
            "Users and groups it provisioned stay in the directory."
        ),
        confirm_label="Remove token",
        cancel_url=url_for("admin.provisioning", idp=idp),
        danger=True,
    )


def _token_details(token):
    """Describe a token for the audit trail: IdP, public key and label, never the secret."""
    label = f", label {token.label!r}" if token.label else ""
    return f"IdP: {token.idp_name}; token {token.key}{label}"


#
# Users
#

USER_SORTS = {
    "name": User.display_name,
    "username": User.user_name,
    "email": User.email,
    "source": User.source,
    "updated": User.last_modified,
}
STATUSES = ("active", "disabled", "deprovisioned")


def _contains(field, text):
    """Match ``text`` anywhere in ``field``, case-insensitively, with % and _ literal."""
    return like(field, text)


@bp.get("/users")
def users():
    """List users with search, filters and sorting kept in the URL."""
    q = request.args.get("q", "").strip()
    source = request.args.get("source", "")
    status = request.args.get("status", "")
    group_id = request.args.get("group", "")
    sort = request.args.get("sort", "username")
    order = request.args.get("order", "asc")

    query = User.select()
    if q:
        query = query.where(
            _contains(User.display_name, q)
            | _contains(User.user_name, q)
            | _contains(User.email, q)
            | _contains(User.given_name, q)
            | _contains(User.family_name, q)
            | (User.external_id == q)
        )
    if source in IDPS:
        query = query.where(User.source == source)
    if status == "active":
        query = query.where(User.deprovisioned_at.is_null() & User.active)
    elif status == "disabled":
        query = query.where(User.deprovisioned_at.is_null() & ~User.active)
    elif status == "deprovisioned":
        query = query.where(User.deprovisioned_at.is_null(False))
    group = None
    if group_id:
        group = by_scim_id(Group, group_id)
        # A stale link to a purged group matches nobody, not everybody.
        group_pk = group.id if group is not None else -1
        members = Membership.select(Membership.user).where(Membership.group == group_pk)
        query = query.where(User.id.in_(members))
    key = USER_SORTS.get(sort, User.user_name)
    ordering = sort_order(key, order == "desc")
    query = query.order_by(ordering, User.id)
    pagination = Pagination(query, page_arg())
    groups = groups_of([u.id for u in pagination.items])
    deprovisioned = User.select().where(User.deprovisioned_at.is_null(False)).count()
    return render_template(
        "admin/users.html",
        pagination=pagination,
        groups=groups,
        q=q,
        source=source,
        status=status,
        group=group,
        unknown_group=bool(group_id) and group is None,
        group_choices=Group.live().order_by(Group.display_name).limit(500),
        sort=sort,
        order=order,
        deprovisioned=deprovisioned,
        any_users=pagination.total or User.select().exists(),
    )


def by_scim_id(model, scim_id):
    """Return the user or group with ``scim_id``, deprovisioned or not, or None."""
    # NUL is never stored, and PostgreSQL refuses it even as a parameter.
    if "\x00" in scim_id:
        return None
    return model.get_or_none(model.scim_id == scim_id)


def _user_or_404(scim_id):
    user = by_scim_id(User, scim_id)
    if user is None:
        abort(404)
    return user


@bp.get("/users/<scim_id>")
def user(scim_id):
    """Show every stored attribute of one user."""
    from .logs import history

    row = _user_or_404(scim_id)
    data = json.loads(row.data)
    extensions = {k: data.pop(k) for k in list(data) if k.startswith("urn:")}
    groups = (
        Group.select(Group.scim_id, Group.display_name, Group.deprovisioned_at)
        .join(Membership)
        .where(Membership.user == row.id)
        .order_by(Group.display_name)
    )
    return render_template(
        "admin/user.html",
        user=row,
        data=data,
        extensions=extensions,
        groups=list(groups),
        managed_by=IDPS.get(row.source, row.source),
        history=history(row.scim_id),
    )


@bp.route("/users/<scim_id>/purge", methods=("GET", "POST"))
def purge_user(scim_id):
    """Confirm, then permanently delete one deprovisioned user."""
    row = _user_or_404(scim_id)
    if row.deprovisioned_at is None:
        flash(
            "Only deprovisioned users can be purged; this user is still provisioned.",
            "danger",
        )
        return redirect(url_for("admin.user", scim_id=scim_id))
    form = ConfirmForm()
    if form.validate_on_submit():
        with write_transaction():
            row.delete_instance()
        audit(
            "User Purged",
            f"{row.user_name} ({row.scim_id}), {source_label(row.source)}",
        )
        flash(f"User {row.user_name} purged.", "success")
        return redirect(url_for("admin.users"))
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"Purge {row.user_name}?",
        message=(
            "The record and its group memberships are deleted for good. The identity "
            "provider already deleted this user."
        ),
        confirm_label="Purge user",
        cancel_url=url_for("admin.user", scim_id=scim_id),
        danger=True,
    )


@bp.route("/users/purge-deprovisioned", methods=("GET", "POST"))
def purge_deprovisioned():
    """Confirm with a count, then delete every deprovisioned user."""
    deprovisioned = User.select().where(User.deprovisioned_at.is_null(False))
    count = deprovisioned.count()
    form = ConfirmForm()
    if form.validate_on_submit():
        with write_transaction():
            removed = (
                User.delete().where(User.deprovisioned_at.is_null(False)).execute()
            )
        audit("Deprovisioned Users Purged", f"{removed} users")
        flash(
            f"Purged {removed} deprovisioned user{'s' if removed != 1 else ''}.",
            "success",
        )
        return redirect(url_for("admin.users"))
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"Purge {count} deprovisioned user{'s' if count != 1 else ''}?",
        message=(
            "These users were deleted by their identity provider. Their records and "
            "group memberships are deleted for good."
        ),
        confirm_label=f"Purge {count} user{'s' if count != 1 else ''}",
        cancel_url=url_for("admin.users"),
        danger=True,
        disabled=count == 0,
    )


#
# User Groups
#


@bp.get("/groups")
def groups():
    """List groups with member counts and search."""
    q = request.args.get("q", "").strip()
    sort = request.args.get("sort", "name")
    order = request.args.get("order", "asc")
    query = Group.live()
    if q:
        query = query.where(_contains(Group.display_name, q) | (Group.external_id == q))
    keys = {
        "name": Group.display_name,
        "source": Group.source,
        "updated": Group.last_modified,
    }
    key = keys.get(sort, Group.display_name)
    query = query.order_by(sort_order(key, order == "desc"), Group.id)
    pagination = Pagination(query, page_arg())
    counts = _member_counts(pagination.items)
    return render_template(
        "admin/groups.html",
        pagination=pagination,
        counts=counts,
        q=q,
        sort=sort,
        order=order,
        any_groups=pagination.total or Group.select().exists(),
    )


def _member_counts(groups):
    pks = [g.id for g in groups]
    if not pks:
        return {}
    rows = (
        Membership.select(Membership.group, fn.COUNT(Membership.id))
        .join(User)
        .where(Membership.group.in_(pks) & User.deprovisioned_at.is_null())
        .group_by(Membership.group)
        .tuples()
    )
    return dict(rows)


@bp.get("/groups/<scim_id>")
def group(scim_id):
    """Show one group and a searchable page of its members."""
    from .logs import history

    row = by_scim_id(Group, scim_id)
    if row is None:
        abort(404)
    q = request.args.get("q", "").strip()
    members = (
        User.select()
        .join(Membership, JOIN.INNER)
        .where((Membership.group == row.id) & User.deprovisioned_at.is_null())
    )
    if q:
        members = members.where(
            _contains(User.display_name, q)
            | _contains(User.user_name, q)
            | _contains(User.email, q)
        )
    members = members.order_by(User.user_name, User.id)
    pagination = Pagination(members, page_arg())
    return render_template(
        "admin/group.html",
        group=row,
        pagination=pagination,
        q=q,
        history=history(row.scim_id),
    )


#
# Custom attributes
#


@bp.route("/attributes", methods=("GET", "POST"))
def attributes():
    """List, and add, custom user attributes an IdP can map."""
    form = AttributeForm()
    if form.validate_on_submit():
        name = form.name.data
        if CustomAttribute.get_or_none(CustomAttribute.name == name):
            form.name.errors.append(f"An attribute called {name} already exists.")
        else:
            CustomAttribute.create(name=name, type=form.type.data)
            audit("Custom Attribute Added", f"{name} ({form.type.data})")
            flash(f"Attribute {name} added; /Schemas now advertises it.", "success")
            return redirect(url_for("admin.attributes"))
    return render_template(
        "admin/attributes.html",
        form=form,
        attributes=list(CustomAttribute.select().order_by(CustomAttribute.id)),
        urn=current_app.config["SCIM_CUSTOM_SCHEMA"],
    )


@bp.route("/attributes/<int:attribute_id>/delete", methods=("GET", "POST"))
def delete_attribute(attribute_id):
    """Confirm, then delete a custom attribute definition."""
    attribute = CustomAttribute.get_or_none(CustomAttribute.id == attribute_id)
    if attribute is None:
        abort(404)
    form = ConfirmForm()
    if form.validate_on_submit():
        attribute.delete_instance()
        audit("Custom Attribute Deleted", f"{attribute.name} ({attribute.type})")
        flash(f"Attribute {attribute.name} deleted.", "success")
        return redirect(url_for("admin.attributes"))
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"Delete attribute {attribute.name}?",
        message=(
            "The attribute leaves /Schemas and its stored values stop being shown or "
            "returned. Remove its mapping in the identity provider too."
        ),
        confirm_label="Delete attribute",
        cancel_url=url_for("admin.attributes"),
        danger=True,
    )


def init_app(app):
    """Send the site root to the console."""

    @app.get("/")
    def root():
        return redirect(url_for("dashboard.home"))
