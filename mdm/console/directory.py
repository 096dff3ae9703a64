"""Users and User Groups pages: search, detail, history and purging deprovisioned users."""

from datetime import datetime
from urllib.parse import urlencode

from flask import abort
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from peewee import Tuple
from peewee import fn

from .. import webhooks
from ..activity import audit
from ..db import false
from ..db import ordering as sort_order
from ..db import write_transaction
from ..forms import ConfirmForm
from ..models import IDPS
from ..models import Group
from ..models import Membership
from ..models import User
from ..models import groups_of
from ..scim.errors import ScimError
from ..scim.schema import ENTERPRISE_SCHEMA
from .activity import history
from .base import bp
from .base import source_label
from .directory_out import filter_problem as problem
from .directory_out import filtered_users
from .directory_out import member_count
from .directory_out import members_of
from .directory_out import membership
from .paging import PAGE_SIZE
from .paging import Count
from .paging import KeysetPages
from .paging import Pagination
from .paging import capped_count
from .paging import capped_counts
from .paging import contains
from .paging import first_rows
from .paging import keyset_order
from .paging import page_arg

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


@bp.get("/users")
def users():
    """List users with search, filters and sorting kept in the URL."""
    q = request.args.get("q", "").strip()
    source = request.args.get("source", "")
    status = request.args.get("status", "")
    group_id = request.args.get("group", "")
    sort = request.args.get("sort", "username")
    order = request.args.get("order", "asc")
    filter_problem = None
    try:
        query, group = filtered_users(request.args, small_group=MEMBER_COUNT_CAP)
    except ScimError as error:
        # A bad filter matches nobody, so it never reads as "everyone".
        query, filter_problem = User.select().where(false()), problem(error)
        group = by_scim_id(Group, group_id) if group_id else None
    key = USER_SORTS.get(sort, User.user_name)
    descending = order == "desc"
    query = query.order_by(*keyset_order(key, User, descending))
    head = first_rows(query, User, key, descending)
    if head is not None and len(head) <= PAGE_SIZE:
        total = Count(len(head))  # the first page holds every match
    else:
        total = capped_count(query)
    if total.exact:
        pagination = Pagination(query, page_arg(), total=total, head=head)
    else:
        pagination = KeysetPages(
            query, User, key, page_arg(), total, descending, head=head
        )
    groups = groups_of([u.id for u in pagination.items])
    deprovisioned = capped_count(
        User.select().where(User.deprovisioned_at.is_null(False))
    )
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
        filter_problem=filter_problem,
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
    row = _user_or_404(scim_id)
    data = row.attributes
    extensions = {k: data.pop(k) for k in list(data) if k.startswith("urn:")}
    groups = (
        Group.select(Group.scim_id, Group.display_name, Group.deprovisioned_at)
        .join(Membership)
        .where(Membership.user == row.id)
        .order_by(Group.display_name)
    )
    manager_id = (extensions.get(ENTERPRISE_SCHEMA) or {}).get("manager")
    if isinstance(manager_id, dict):
        manager_id = manager_id.get("value")
    if not isinstance(manager_id, str):
        manager_id = None
    manager = manager_id and User.get_or_none(User.scim_id == manager_id)
    return render_template(
        "admin/user.html",
        user=row,
        data=data,
        extensions=extensions,
        manager_id=manager_id,
        extension_names={
            ENTERPRISE_SCHEMA: "Enterprise attributes",
            current_app.config["SCIM_CUSTOM_SCHEMA"]: "Custom attributes",
        },
        manager=manager,
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
        return redirect(url_for("console.user", scim_id=scim_id))
    form = ConfirmForm()
    if form.validate_on_submit():
        events = _purge_events(row)
        with write_transaction():
            row.delete_instance()
            webhooks.write(events)
        audit(
            "User Purged",
            f"{row.user_name} ({row.scim_id}), {source_label(row.source)}",
        )
        flash(f"User {row.user_name} purged.", "success")
        return redirect(url_for("console.users"))
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"Purge {row.user_name}?",
        message=(
            "The record and its group memberships are deleted for good. The identity "
            "provider already deleted this user."
        ),
        confirm_label="Purge user",
        cancel_url=url_for("console.user", scim_id=scim_id),
        danger=True,
    )


def _purge_events(row):
    if not webhooks.active():
        return ()
    return [webhooks.user_event("user.purged", row)]


PURGE_LISTED = 100


@bp.route("/users/purge-deprovisioned", methods=("GET", "POST"))
def purge_deprovisioned():
    """List whom it deletes, confirm, then delete the deprovisioned users listed."""
    deprovisioned = User.select().where(User.deprovisioned_at.is_null(False))
    form = ConfirmForm()
    if form.validate_on_submit():
        # Only users deprovisioned by the time the admin saw the page: one
        # the IdP deletes meanwhile was not in the list that was confirmed.
        try:
            through = datetime.fromisoformat(request.form.get("through", ""))
        except ValueError:
            flash("Open the purge page again and confirm what it lists.", "danger")
            return redirect(url_for("console.purge_deprovisioned"))
        removed = User.purge(through)
        audit("Deprovisioned Users Purged", f"{removed} users")
        flash(
            f"Purged {removed} deprovisioned user{'s' if removed != 1 else ''}.",
            "success",
        )
        return redirect(url_for("console.users"))
    count = deprovisioned.count()
    if count == 0:
        flash("No deprovisioned users to purge.", "info")
        return redirect(url_for("console.users"))
    listed = list(
        deprovisioned.order_by(User.deprovisioned_at.desc(), User.id).limit(
            PURGE_LISTED
        )
    )
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"Purge {count} deprovisioned user{'s' if count != 1 else ''}?",
        message=(
            "These users were deleted by their identity provider. Their records and "
            "group memberships are deleted for good:"
        ),
        items=[f"{u.user_name} ({source_label(u.source)})" for u in listed],
        more=count - len(listed),
        hidden={"through": listed[0].deprovisioned_at.isoformat()},
        confirm_label=f"Purge {count} user{'s' if count != 1 else ''}",
        cancel_url=url_for("console.users"),
        danger=True,
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
        query = query.where(contains(Group.display_name, q) | (Group.external_id == q))
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
    """Return {group id: live members}, each counted up to the cap, in one statement."""
    if not groups:
        return {}
    queries = [
        Membership.select()
        .join(User)
        .where((Membership.group == g.id) & User.deprovisioned_at.is_null())
        for g in groups
    ]
    return dict(zip([g.id for g in groups], capped_counts(queries), strict=True))


# A group page counts members exactly up to this many; past it, it says
# "more than" and pages by keyset, so that neither a count nor a sort
# walks a group of a million.
MEMBER_COUNT_CAP = 5000


@bp.get("/groups/<scim_id>")
def group(scim_id):
    """Show one group and a searchable page of its members."""
    row = by_scim_id(Group, scim_id)
    if row is None:
        abort(404)
    q = request.args.get("q", "").strip()
    live = User.deprovisioned_at.is_null()
    if q:
        found = (
            contains(User.display_name, q)
            | contains(User.user_name, q)
            | contains(User.email, q)
        )
        # The substring index narrows the users first, as on the Users page.
        candidates = User.search_candidates(q)
        live &= found if candidates is None else candidates & found
    total = member_count(row.id, MEMBER_COUNT_CAP, live)
    if total.exact:
        members = members_of(row.id).where(live).order_by(User.user_name, User.id)
        pagination = Pagination(members, page_arg(), total=total)
    else:
        # Walk users in userName order through its index, keeping members,
        # rather than sort the whole group: past the cap a group is common
        # enough among users that a page of members is found soon.
        members = User.select().where(live & fn.EXISTS(membership(row.id)))
        members = members.order_by(User.user_name, User.id)
        pagination = MemberPages(members, request.args.get("after", ""))
        pagination.cap = MEMBER_COUNT_CAP
    return render_template(
        "admin/group.html",
        group=row,
        pagination=pagination,
        q=q,
        history=history(row.scim_id),
    )


class MemberPages:
    """A page of a large group's members after a (userName, id) key, in userName order."""

    keyset = True
    per_page = PAGE_SIZE

    def __init__(self, query, after):
        # ``after`` is "<id>:<userName>" of the last member shown; a bad one
        # starts from the beginning.
        pk, _, name = after.partition(":")
        self.first = not pk.isdigit()
        if not self.first:
            key = Tuple(User.user_name, User.id) > Tuple(name, int(pk))
            query = query.where(key)
        rows = list(query.limit(self.per_page + 1))
        self.items = rows[: self.per_page]
        last = self.items[-1] if len(rows) > self.per_page else None
        self.next_key = f"{last.id}:{last.user_name}" if last else None

    def url(self, after=None):
        args = request.args.to_dict()
        args.pop("page", None)
        args.pop("after", None)
        if after:
            args["after"] = after
        return f"{request.path}?{urlencode(args)}" if args else request.path
