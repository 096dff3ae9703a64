"""The Users page's filters, shared by its exports; exports, saved searches."""

from urllib.parse import parse_qsl
from urllib.parse import urlencode

from flask import flash
from flask import redirect
from flask import request
from flask import url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from peewee import JOIN
from peewee import IntegrityError
from peewee import fn
from wtforms import HiddenField
from wtforms import StringField
from wtforms.validators import DataRequired
from wtforms.validators import Length

from ..activity import audit
from ..db import postgres
from ..db import write_transaction
from ..models import IDPS
from ..models import Group
from ..models import Membership
from ..models import SavedSearch
from ..models import User
from ..models import utcnow
from ..scim import filters
from ..scim.errors import ScimError
from ..scim.http import user_type
from .base import bp
from .directory_export import groups_text
from .directory_export import users_text
from .export import attachment
from .export import stamp
from .paging import capped_count
from .paging import contains
from .paging import filter_args
from .paging import query_url

MIMETYPES = {"csv": "text/csv", "json": "application/json"}
# The Users page's query arguments a saved search keeps.
SEARCH_ARGS = ("q", "source", "status", "group", "filter", "sort", "order")
SAVED_LISTED = 200


def export_link(endpoint, fmt):
    """Link to the ``fmt`` export ``endpoint`` carrying this page's filters."""
    args = filter_args()
    base = url_for(endpoint, fmt=fmt)
    return f"{base}?{urlencode(args)}" if args else base


bp.add_app_template_global(export_link)


#
# SCIM filter search
#


def scim_filter(text):
    """Compile a SCIM filter on users into a where-clause; raise ScimError when it is bad."""
    # The same steps as GET /Users?filter=, so the page and the API agree.
    return filters.to_expression(filters.parse(text), user_type())


def filter_problem(error):
    """Say what is wrong with a SCIM filter, as the admin reads it."""
    return f"Bad SCIM filter: {error.detail or error.scim_type}"


def filtered_users(args, small_group=None):
    """Return (the users the Users page lists for ``args``, their group); raise ScimError for a bad filter."""
    # With ``small_group``, a group of at most that many members is read
    # from its memberships and sorted; a larger one (or any, without it) is
    # a lookup per user, so a page walks users in its order through an
    # index and stops after a page of members.
    text = args.get("filter", "").strip()
    conditions = [scim_filter(text)] if text else []
    q = args.get("q", "").strip()
    if q:
        found = (
            contains(User.display_name, q)
            | contains(User.user_name, q)
            | contains(User.email, q)
            | contains(User.given_name, q)
            | contains(User.family_name, q)
            | contains(User.department, q)
            | contains(User.title, q)
            | (User.external_id == q)
        )
        # The substring index narrows the users first; an externalId equal
        # to the search also contains it, so the index holds those too.
        candidates = User.search_candidates(q)
        conditions.append(found if candidates is None else candidates & found)
    source = args.get("source", "")
    if source in IDPS:
        conditions.append(User.source == source)
    status = args.get("status", "")
    if status == "active":
        conditions.append(User.deprovisioned_at.is_null() & User.active)
    elif status == "disabled":
        conditions.append(User.deprovisioned_at.is_null() & ~User.active)
    elif status == "deprovisioned":
        conditions.append(User.deprovisioned_at.is_null(False))
    query = User.select()
    group = None
    group_id = args.get("group", "")
    if group_id:
        # NUL is never stored, and PostgreSQL refuses it even as a parameter.
        if "\x00" not in group_id:
            group = Group.get_or_none(Group.scim_id == group_id)
        # A stale link to a purged group matches nobody, not everybody.
        group_pk = group.id if group is not None else -1
        if small_group is not None and member_count(group_pk, small_group).exact:
            query = members_of(group_pk)
        else:
            conditions.append(fn.EXISTS(membership(group_pk)))
    return (query.where(*conditions) if conditions else query), group


def membership(group_pk):
    """Return the membership of the outer query's user in the group ``group_pk``."""
    # Read from the unique (group, user) index, one probe per user.
    return Membership.select(Membership.id).where(
        (Membership.group == group_pk) & (Membership.user == User.id)
    )


def members_of(group_pk):
    """Return the users of the group ``group_pk``, read from its memberships."""
    # SQLite's statistics say how many memberships a group has on average,
    # not this group's; CROSS JOIN is its documented way to keep the
    # memberships as the outer loop, so a small group never walks all users.
    # PostgreSQL knows each group's share and joins as it should.
    if postgres():
        query = Membership.select(User).join(User, on=(Membership.user == User.id))
        return query.where(Membership.group == group_pk).objects(User)
    query = Membership.select(User).join(User, JOIN.CROSS)
    joined = (Membership.user == User.id) & (Membership.group == group_pk)
    return query.where(joined).objects(User)


def member_count(group_pk, cap, where=None):
    """Count the group's members matching ``where`` up to ``cap``, from its memberships."""
    # Read from the group's memberships, so a small group costs little
    # however large the directory.
    query = members_of(group_pk)
    if where is not None:
        query = query.where(where)
    return capped_count(query, cap)


def filtered_groups(args):
    """Return the live groups the User Groups page lists for ``args``."""
    query = Group.live()
    q = args.get("q", "").strip()
    if q:
        query = query.where(contains(Group.display_name, q) | (Group.external_id == q))
    return query


@bp.get("/users.<any(csv, json):fmt>")
def users_export(fmt):
    """Download the users the Users page's filters match, every page of them."""
    try:
        query, _ = filtered_users(request.args)
    except ScimError as error:
        flash(filter_problem(error), "danger")
        return redirect(query_url("console.users", filter_args()))
    return attachment(users_text(query, fmt), MIMETYPES[fmt], f"users-{stamp()}.{fmt}")


@bp.get("/groups.<any(csv, json):fmt>")
def groups_export(fmt):
    """Download the groups the User Groups page's search matches, with their members."""
    query = filtered_groups(request.args)
    return attachment(
        groups_text(query, fmt), MIMETYPES[fmt], f"user-groups-{stamp()}.{fmt}"
    )


#
# Saved searches
#


class SaveSearchForm(FlaskForm):
    name = StringField(
        "Name",
        validators=[DataRequired(), Length(max=100)],
        filters=[lambda text: text.strip() if text else text],
    )
    query = HiddenField()


def search_query(text):
    """Keep only the Users page's own arguments of a query string, in a fixed order."""
    args = dict(parse_qsl(text or "", keep_blank_values=False))
    return urlencode([(k, args[k]) for k in SEARCH_ARGS if args.get(k)])


def saved_searches():
    """Return the saved searches by name, for the Users page."""
    return list(SavedSearch.select().order_by(SavedSearch.name).limit(SAVED_LISTED))


def save_search_form():
    """Return the form that saves the Users page's current search."""
    form = SaveSearchForm(formdata=None)
    form.query.data = search_query(urlencode(filter_args()))
    return form


def saved_search_url(saved):
    """Link to the Users page with a saved search's filters."""
    base = url_for("console.users")
    return f"{base}?{saved.query}" if saved.query else base


bp.add_app_template_global(saved_searches)
bp.add_app_template_global(save_search_form)
bp.add_app_template_global(saved_search_url)


@bp.post("/users/searches")
def save_search():
    """Save the Users page's current search under a name."""
    form = SaveSearchForm()
    query = search_query(form.query.data)
    back = url_for("console.users") + (f"?{query}" if query else "")
    if not form.validate():
        flash("Give the search a name of at most 100 characters.", "danger")
        return redirect(back)
    name = form.name.data
    try:
        with write_transaction():
            saved = SavedSearch.create(
                name=name,
                query=query,
                created_by=_admin_name(),
                created_at=utcnow(),
            )
    except IntegrityError:
        flash(f"A saved search named “{name}” already exists.", "danger")
        return redirect(back)
    audit("Search Saved", f"{saved.name}: {query or '(all users)'}")
    flash(f"Search “{saved.name}” saved.", "success")
    return redirect(back)


@bp.post("/users/searches/<int:search_id>/delete")
def delete_search(search_id):
    """Delete one saved search."""
    saved = SavedSearch.get_or_none(SavedSearch.id == search_id)
    if saved is None:
        flash("That saved search no longer exists.", "info")
        return redirect(url_for("console.users"))
    with write_transaction():
        saved.delete_instance()
    audit("Saved Search Deleted", saved.name)
    flash(f"Saved search “{saved.name}” deleted.", "success")
    return redirect(url_for("console.users"))


def _admin_name():
    return current_user.username
