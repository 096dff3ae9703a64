"""SCIM endpoints (RFC 7644 §3): thin views over parse, filters, patch, models and serialize."""

import copy
import functools
import json

from flask import current_app
from flask import g
from flask import make_response
from flask import request
from peewee import SQL
from peewee import IntegrityError
from peewee import Select
from peewee import fn
from werkzeug.exceptions import ClientDisconnected
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.utils import get_current_url

from .. import activity
from ..db import Prepared
from ..db import database
from ..db import insert
from ..db import ordering
from ..db import update
from ..db import write_transaction
from ..models import CustomAttribute
from ..models import Group
from ..models import Membership
from ..models import User
from ..models import add_members
from ..models import clear_members
from ..models import group_scim_ids
from ..models import groups_of
from ..models import hash_password
from ..models import mirror_user
from ..models import remove_members
from ..models import touch
from ..models import user_pks
from ..models import utcnow
from . import CONTENT_TYPE
from . import URL_PREFIX
from . import bp
from . import filters
from . import parse
from . import patch
from . import schema
from . import serialize
from .auth import authenticate
from .errors import ScimError

JSON_TYPES = ("application/scim+json", "application/json", "text/json")

bp.before_request(authenticate)


@bp.after_request
def set_content_type(response):
    """Label every SCIM response, errors included, as application/scim+json."""
    # Reading is cheaper than setting, and most responses come labelled.
    if response.status_code != 204 and response.content_type != CONTENT_TYPE:
        response.headers["Content-Type"] = CONTENT_TYPE
    return response


def scim_error_response(error):
    """Render a ScimError as a SCIM Error response."""
    response = make_response(json.dumps(error.body()), error.status)
    response.headers["Content-Type"] = CONTENT_TYPE
    response.headers.update(error.headers)
    return response


@bp.errorhandler(ScimError)
def handle_scim_error(error):
    return scim_error_response(error)


@bp.errorhandler(HTTPException)
def handle_http_error(error):
    return scim_error_response(ScimError(error.code, None, error.description))


#
# Helpers
#


def base_url():
    """Return the absolute SCIM base URL, honouring PUBLIC_URL behind a proxy."""
    public = current_app.config.get("PUBLIC_URL")
    if public:
        return public.rstrip("/") + URL_PREFIX
    return _base_url(request.scheme, request.host, request.root_path)


@functools.lru_cache(maxsize=64)
def _base_url(scheme, host, root_path):
    # request.url_root, whose IRI conversion cost ~30 us on every request.
    return get_current_url(scheme, host, root_path).rstrip("/") + URL_PREFIX


def user_type():
    """Return the User resource type with the currently defined custom attributes."""
    # The definitions are read on every request (with the token, when there is
    # one), so a change by an administrator in any process applies to the next
    # request; only building the type is cached.
    token = g.get("scim_token")
    if token is not None:
        definitions = token.custom_attributes
    else:
        definitions = tuple(CustomAttribute.definitions())
    return _user_type(current_app.config["SCIM_CUSTOM_SCHEMA"], definitions)


@functools.lru_cache(maxsize=32)
def _user_type(custom_urn, definitions):
    return schema.user_type(custom_urn, definitions)


def request_body():
    """Return the request's JSON object; accept scim+json, json, or no content type."""
    mimetype = request.mimetype
    if mimetype and mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise ScimError(
            415,
            "invalidSyntax",
            f"Content-Type {mimetype} is not supported; send application/scim+json.",
        )
    try:
        raw = request.get_data(cache=True)  # kept for the activity log
    except ClientDisconnected:
        raise ScimError.invalid_syntax(
            "The request body is shorter than its Content-Length."
        ) from None
    limit = request.max_content_length
    if (
        limit is not None
        and request.content_length is None
        and len(raw) >= limit
        and request.input_stream.read(1)
    ):
        # Werkzeug cuts a streamed (chunked) body at the limit without failing.
        raise RequestEntityTooLarge()
    return parse.json_body(raw)


def list_params(source=None):
    config = current_app.config
    return parse.list_params(
        request.args if source is None else source,
        config["SCIM_DEFAULT_COUNT"],
        config["SCIM_MAX_RESULTS"],
    )


def projection():
    params = list_params()
    return params.attributes, params.excluded


def respond(resource, status=200, headers=None):
    """Send a resource or message, with the ETag of a versioned one (RFC 7644 §3.14)."""
    response = serialize.response(resource, status)
    version = resource.get("meta", {}).get("version")
    if version:
        response.headers["ETag"] = version
    if headers:
        response.headers.update(headers)
    return response


def _etags(header):
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def _same_tag(a, b):
    # Weak comparison (RFC 7232 §2.3.2): W/ prefixes are ignored.
    return a.removeprefix("W/") == b.removeprefix("W/")


def check_if_match(row, header):
    """Refuse a write whose If-Match (or Bulk ``version``) names another version (412)."""
    if not header:
        return
    current = serialize.etag(row)
    tags = _etags(header)
    if "*" in tags or any(_same_tag(tag, current) for tag in tags):
        return
    raise ScimError(
        412, None, f"The resource has changed: its version is now {current}."
    )


def not_modified(row):
    """Tell whether If-None-Match names the current version (304)."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    current = serialize.etag(row)
    tags = _etags(header)
    return "*" in tags or any(_same_tag(tag, current) for tag in tags)


def not_modified_response(row):
    response = make_response("", 304)
    response.headers["ETag"] = serialize.etag(row)
    return response


def _live_by_id(model):
    # scim_id is unique, so no LIMIT is needed to fetch at most one row.
    return Prepared(lambda scim_id: model.live().where(model.scim_id == scim_id))


_LIVE_BY_ID = {User: _live_by_id(User), Group: _live_by_id(Group)}


def get_live(model, scim_id, kind):
    """Return the live user or group with ``scim_id`` or raise a SCIM 404."""
    # NUL is never stored, and PostgreSQL refuses it even as a parameter.
    row = None if "\x00" in scim_id else _LIVE_BY_ID[model].first(scim_id=scim_id)
    if row is None:
        raise ScimError.not_found(f"{kind} {scim_id} not found.")
    return row


def token_idp():
    token = g.get("scim_token")
    return token.idp if token is not None else "generic"


#
# Users
#


def render_user(user, resource_type, attributes=None, excluded=None, groups=None):
    if groups is None:
        groups = groups_of([user.id]).get(user.id, ())
    resource = serialize.user(user, base_url(), groups, resource_type)
    return serialize.project(resource, resource_type, attributes, excluded)


def search_users(params, resource_type):
    """Run a filtered, sorted, paged user query and render the page."""
    query, page = search(User, resource_type, params)
    wanted = serialize.wants(
        resource_type, "groups", params.attributes, params.excluded
    )
    groups = groups_of([user.id for user in page]) if wanted else {}
    resources = [
        render_user(
            user,
            resource_type,
            params.attributes,
            params.excluded,
            groups.get(user.id, ()),
        )
        for user in page
    ]
    return resources, _total(query, page, params)


def search(model, resource_type, params):
    """Return the filtered query and its requested page, both run in the database."""
    found = _lookup(model, params)
    if found is not None:
        return found
    query = model.live()
    if params.filter:
        node = filters.parse(params.filter)
        query = query.where(filters.to_expression(node, resource_type))
    if not params.count:
        return query, []
    order = [model.id]
    if params.sort_by:
        key = filters.sort_expression(params.sort_by, resource_type)
        order.insert(0, ordering(key, params.descending))
    page = query.order_by(*order).offset(params.start_index - 1).limit(params.count)
    return query, list(page)


# The attributes an identity provider looks resources up by, answered by
# queries the general filter compiler rendered once (see _Lookup).
LOOKUP_ATTRIBUTES = {
    User: ("userName", "externalId", "id"),
    Group: ("displayName", "externalId", "id"),
}


class _Lookup:
    """Prepared page and count queries for ``attribute eq "value"`` on one model."""

    def __init__(self, model, attribute):
        resource_type = schema.user_type() if model is User else schema.GROUP_TYPE

        def where(value):
            # Compiled by the general compiler, so both paths run the same SQL.
            node = filters.Compare(filters.Path(None, attribute), "eq", value)
            return model.live().where(filters.to_expression(node, resource_type))

        self.page = Prepared(
            lambda value, offset, limit: (
                where(value).order_by(model.id).offset(offset).limit(limit)
            )
        )
        self.count = Prepared(
            lambda value: Select(
                [where(value).select(SQL("1")).alias("_wrapped")], [fn.COUNT(SQL("1"))]
            ).bind(database)
        )


_LOOKUPS = {
    (model, name.lower()): _Lookup(model, name)
    for model, names in LOOKUP_ATTRIBUTES.items()
    for name in names
}


class _Matches:
    """The count side of a prepared lookup, standing in for the ORM query."""

    def __init__(self, lookup, value):
        self.lookup = lookup
        self.value = value

    def count(self):
        return self.lookup.count.execute(value=self.value).fetchone()[0]


def _lookup(model, params):
    """Answer a plain ``attribute eq "value"`` search with prepared queries, or None."""
    if not params.filter or params.sort_by:
        return None
    simple = filters.simple_eq(params.filter)
    if simple is None:
        return None
    lookup = _LOOKUPS.get((model, simple[0].lower()))
    if lookup is None:
        return None
    value = simple[1]
    if not params.count:
        return _Matches(lookup, value), []
    page = lookup.page.rows(
        value=value, offset=params.start_index - 1, limit=params.count
    )
    return _Matches(lookup, value), page


def listed(resources, total, params):
    """Answer a list or search, noting what was looked for in the activity log."""
    found = "no match" if total == 0 else f"{total} found"
    if params.filter:
        activity.note(f"{found} for {params.filter[:200]}")
    else:
        activity.note(f"listed {len(resources)} of {total}")
    return respond(serialize.list_response(resources, total, params.start_index))


def _total(query, page, params):
    """Count matches, skipping the COUNT when a first, short page already holds them all."""
    if params.start_index == 1 and 0 < len(page) < params.count:
        return len(page)
    if params.start_index == 1 and params.count and not page:
        return 0
    return query.count()


@bp.get("/Users", strict_slashes=False)
def query_users():
    """List users, optionally filtered, sorted and paged (RFC 7644 §3.4.2)."""
    params = list_params()
    resources, total = search_users(params, user_type())
    return listed(resources, total, params)


@bp.post("/Users/.search", strict_slashes=False)
def search_users_view():
    """Search users with a SearchRequest body (RFC 7644 §3.4.3)."""
    params = list_params(request_body())
    resources, total = search_users(params, user_type())
    return listed(resources, total, params)


@bp.get("/Users/<user_id>", strict_slashes=False)
def query_user(user_id):
    """Return one user (RFC 7644 §3.4.1)."""
    user = get_live(User, user_id, "User")
    activity.note(target=user.user_name)
    if not_modified(user):
        return not_modified_response(user)
    attributes, excluded = projection()
    return respond(render_user(user, user_type(), attributes, excluded))


def describe_changes(before, after, password_hash=None):
    """Summarise a user change for the activity log: disabled, fields changed, no change."""
    changed = []
    for key in sorted(set(before) | set(after), key=str.lower):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key.startswith("urn:") and isinstance(old or new, dict):
            old, new = old or {}, new or {}
            changed += [
                sub
                for sub in sorted(set(old) | set(new))
                if old.get(sub) != new.get(sub)
            ]
        elif key != "active":
            changed.append(key)
    parts = []
    if before.get("active", True) != after.get("active", True):
        parts.append("disabled" if after.get("active") is False else "enabled")
    if changed:
        parts.append("changed " + ", ".join(changed))
    if password_hash:
        parts.append("password set")
    return "; ".join(parts) or "no change"


def _uniqueness_error(data):
    return ScimError.uniqueness(
        f"A user with userName {data['userName']!r} already exists."
    )


@bp.post("/Users", strict_slashes=False)
def create_user():
    """Create a user (RFC 7644 §3.3)."""
    resource_type = user_type()
    user = create_user_from(request_body(), resource_type)
    attributes, excluded = projection()
    resource = render_user(user, resource_type, attributes, excluded, groups=())
    location = f"{base_url()}/Users/{user.scim_id}"
    return respond(resource, 201, {"Location": location})


def create_user_from(body, resource_type):
    """Create a user from a request body; shared by POST /Users and Bulk."""
    data, password = parse.user(body, resource_type, creating=True)
    password_hash = hash_password(password) if password else None
    try:
        with write_transaction():
            user = User(source=token_idp())
            mirror_user(user, data, password_hash)
            insert(user)
    except IntegrityError:
        activity.note(target=data["userName"])
        raise _uniqueness_error(data) from None
    activity.note(
        "created" + ("" if user.active else " (disabled)"),
        "User",
        user.scim_id,
        user.user_name,
    )
    return user


@bp.put("/Users/<user_id>", strict_slashes=False)
def replace_user(user_id):
    """Replace a user's attributes (RFC 7644 §3.5.1); an omitted password is kept."""
    resource_type = user_type()
    user = replace_user_with(
        user_id, request_body(), resource_type, request.headers.get("If-Match")
    )
    attributes, excluded = projection()
    return respond(render_user(user, resource_type, attributes, excluded))


def replace_user_with(user_id, body, resource_type, if_match=None):
    """Replace a user from a request body; shared by PUT and Bulk."""
    data, password = parse.user(body, resource_type)
    password_hash = hash_password(password) if password else None
    try:
        with write_transaction():
            user = get_live(User, user_id, "User")
            check_if_match(user, if_match)
            before = user.attributes
            if before != data or password_hash:
                mirror_user(user, data, password_hash)
                touch(user)
                update(user)
    except IntegrityError:
        raise _uniqueness_error(data) from None
    activity.note(describe_changes(before, data, password_hash), target=user.user_name)
    return user


@bp.patch("/Users/<user_id>", strict_slashes=False)
def patch_user(user_id):
    """Apply PATCH operations to a user (RFC 7644 §3.5.2) and return it."""
    resource_type = user_type()
    user = patch_user_with(
        user_id, request_body(), resource_type, request.headers.get("If-Match")
    )
    attributes, excluded = projection()
    return respond(render_user(user, resource_type, attributes, excluded))


def patch_user_with(user_id, body, resource_type, if_match=None):
    """Apply a PatchOp body to a user; shared by PATCH and Bulk."""
    operations = patch.operations(body)
    try:
        with write_transaction():
            user = get_live(User, user_id, "User")
            check_if_match(user, if_match)
            resource = user.attributes
            before = copy.deepcopy(resource)
            result = patch.apply(resource, operations, resource_type)
            data, password = parse.user(resource, resource_type)
            password_hash = hash_password(password) if password else None
            if data != before or password_hash:
                mirror_user(user, data, password_hash)
                touch(user)
                update(user)
    except IntegrityError:
        raise _uniqueness_error(data) from None
    summary = describe_changes(before, data, password_hash)
    if result.ignored:
        summary += f"; ignored: {', '.join(result.ignored)}"
    activity.note(summary, target=user.user_name)
    for note in result.ignored:
        current_app.logger.info("PATCH /Users/%s: %s", user_id, note)
    return user


@bp.delete("/Users/<user_id>", strict_slashes=False)
def delete_user(user_id):
    """Remove a user from SCIM (RFC 7644 §3.6); the directory keeps it as deprovisioned."""
    deprovision(User, user_id, request.headers.get("If-Match"))
    return "", 204


def deprovision(model, scim_id, if_match=None):
    """Mark a live user or group deprovisioned; shared by DELETE and Bulk."""
    kind = "User" if model is User else "Group"
    with write_transaction():
        row = get_live(model, scim_id, kind)
        check_if_match(row, if_match)
        row.deprovisioned_at = utcnow()
        touch(row)
        update(row)
    target = row.user_name if model is User else row.display_name
    activity.note("deleted (kept as deprovisioned)", target=target)
    return row


#
# Groups
#


def _members_query(group_pks):
    return (
        Membership.select(Membership.group, User.scim_id, User.display_name)
        .join(User)
        .where(Membership.group.in_(group_pks) & User.deprovisioned_at.is_null())
        .order_by(Membership.id)
    )


# One group's members are fetched on every group read; the same SQL, rendered once.
_members_of_one = Prepared(lambda pk: _members_query([pk]))


def members_of(groups):
    """Return {group pk: [(user id, displayName)]} for live members, in one query."""
    pks = [group.id for group in groups]
    if not pks:
        return {}
    if len(pks) == 1:
        rows = _members_of_one.execute(pk=pks[0]).fetchall()
    else:
        rows = _members_query(pks).tuples()
    found = {pk: [] for pk in pks}
    for group_pk, user_id, display in rows:
        found[group_pk].append((user_id, display))
    return found


def render_group(group, attributes=None, excluded=None, members=None):
    wanted = serialize.wants(schema.GROUP_TYPE, "members", attributes, excluded)
    if wanted and members is None:
        members = members_of([group])[group.id]
    resource = serialize.group(group, base_url(), members if wanted else None)
    return serialize.project(resource, schema.GROUP_TYPE, attributes, excluded)


def search_groups(params):
    """Run a filtered, sorted, paged group query and render the page."""
    query, page = search(Group, schema.GROUP_TYPE, params)
    wanted = serialize.wants(
        schema.GROUP_TYPE, "members", params.attributes, params.excluded
    )
    members = members_of(page) if wanted else {}
    resources = [
        render_group(
            group, params.attributes, params.excluded, members.get(group.id, [])
        )
        for group in page
    ]
    return resources, _total(query, page, params)


@bp.get("/Groups", strict_slashes=False)
def query_groups():
    """List groups, optionally filtered, sorted and paged (RFC 7644 §3.4.2)."""
    params = list_params()
    resources, total = search_groups(params)
    return listed(resources, total, params)


@bp.post("/Groups/.search", strict_slashes=False)
def search_groups_view():
    """Search groups with a SearchRequest body (RFC 7644 §3.4.3)."""
    params = list_params(request_body())
    resources, total = search_groups(params)
    return listed(resources, total, params)


@bp.get("/Groups/<group_id>", strict_slashes=False)
def query_group(group_id):
    """Return one group (RFC 7644 §3.4.1)."""
    group = get_live(Group, group_id, "Group")
    activity.note(target=group.display_name)
    if not_modified(group):
        return not_modified_response(group)
    attributes, excluded = projection()
    return respond(render_group(group, attributes, excluded))


def resolve_members(ids, group_id):
    """Map member ids to user keys; unknown ids and nested groups are skipped and logged."""
    found = user_pks(ids)
    missing = [member for member in ids if member not in found]
    if missing:
        nested = group_scim_ids(missing)
        for member in missing:
            reason = (
                "is a group (nested groups are not supported)"
                if member in nested
                else "is not a known user"
            )
            # Clip the id: it is client input and may be arbitrarily long.
            current_app.logger.warning(
                "Group %s: member %r %s; skipped.", group_id, member[:80], reason
            )
    return [found[member] for member in ids if member in found]


def apply_member_changes(group, changes):
    """Apply PATCH member changes in order as row inserts and deletes.

    Returns (rows added, rows removed).
    """
    added = removed = 0
    for action, argument in _merge_runs(changes):
        if action == "add":
            added += add_members(group, resolve_members(argument, group.scim_id))
        elif action == "remove":
            removed += remove_members(group, user_pks(argument).values())
        elif action == "remove_all":
            removed += clear_members(group)
        elif action == "replace":
            removed += clear_members(group)
            added += add_members(group, resolve_members(argument, group.scim_id))
        elif action == "remove_where":
            try:
                condition = filters.member_expression(argument)
            except ScimError as error:
                # As for a user's emails[...]: a bad filter in a path is a bad path.
                raise ScimError.invalid_path(error.detail) from None
            matched = User.select(User.id).where(condition)
            removed += (
                Membership.delete()
                .where((Membership.group == group.id) & Membership.user.in_(matched))
                .execute()
            )
    return added, removed


def _merge_runs(changes):
    """Merge consecutive adds (or removes) into one, so 5,000 one-member ops cost a few queries."""
    merged = []
    for action, argument in changes:
        if merged and action in ("add", "remove") and merged[-1][0] == action:
            merged[-1][1].update(dict.fromkeys(argument))
        elif action in ("add", "remove"):
            merged.append((action, dict.fromkeys(argument)))
        else:
            merged.append((action, argument))
    return [
        (action, list(argument) if isinstance(argument, dict) else argument)
        for action, argument in merged
    ]


def _group_uniqueness_error(data):
    return ScimError.uniqueness(
        f"A group with displayName {data['displayName']!r} already exists."
    )


@bp.post("/Groups", strict_slashes=False)
def create_group():
    """Create a group, with any members that name known users (RFC 7644 §3.3)."""
    group = create_group_from(request_body())
    attributes, excluded = projection()
    resource = render_group(group, attributes, excluded)
    location = f"{base_url()}/Groups/{group.scim_id}"
    return respond(resource, 201, {"Location": location})


def create_group_from(body):
    """Create a group from a request body; shared by POST /Groups and Bulk."""
    data, member_ids = parse.group(body)
    try:
        with write_transaction():
            group = Group(
                source=token_idp(),
                display_name=data["displayName"],
                external_id=data.get("externalId"),
            )
            insert(group)
            added = 0
            if member_ids:
                added = add_members(group, resolve_members(member_ids, group.scim_id))
    except IntegrityError:
        activity.note(target=data["displayName"])
        raise _group_uniqueness_error(data) from None
    activity.note(
        f"created with {added} member{'s' if added != 1 else ''}",
        "Group",
        group.scim_id,
        group.display_name,
    )
    return group


@bp.put("/Groups/<group_id>", strict_slashes=False)
def replace_group(group_id):
    """Replace a group (RFC 7644 §3.5.1); members change only when the body lists them."""
    group = replace_group_with(
        group_id, request_body(), request.headers.get("If-Match")
    )
    attributes, excluded = projection()
    return respond(render_group(group, attributes, excluded))


def replace_group_with(group_id, body, if_match=None):
    """Replace a group from a request body; shared by PUT and Bulk."""
    data, member_ids = parse.group(body)
    try:
        with write_transaction():
            group = get_live(Group, group_id, "Group")
            check_if_match(group, if_match)
            old_name = group.display_name
            changed = _set_group_attributes(group, data)
            added = removed = 0
            if member_ids is not None:
                added, removed = apply_member_changes(group, [("replace", member_ids)])
            changed += added + removed
            if changed:
                touch(group)
                update(group)
    except IntegrityError:
        raise _group_uniqueness_error(data) from None
    activity.note(
        describe_group_change(old_name, group, added, removed),
        target=group.display_name,
    )
    return group


def describe_group_change(old_name, group, added, removed):
    """Summarise a group change for the activity log: renames and members +n/-m."""
    parts = []
    if old_name != group.display_name:
        parts.append(f"renamed from {old_name!r}")
    if added or removed:
        parts.append(f"members +{added}/\u2212{removed}")
    return "; ".join(parts) or "no change"


def _set_group_attributes(group, data):
    new = (data["displayName"], data.get("externalId"))
    if (group.display_name, group.external_id) == new:
        return 0
    group.display_name, group.external_id = new
    return 1


@bp.patch("/Groups/<group_id>", strict_slashes=False)
def patch_group(group_id):
    """Apply PATCH operations to a group (RFC 7644 §3.5.2).

    Answers 204 as Entra expects, or 200 with the resource when the client
    asks for attributes or excludedAttributes.
    """
    group = patch_group_with(group_id, request_body(), request.headers.get("If-Match"))
    attributes, excluded = projection()
    if attributes or excluded:
        return respond(render_group(group, attributes, excluded))
    response = make_response("", 204)
    response.headers["ETag"] = serialize.etag(group)
    return response


def patch_group_with(group_id, body, if_match=None):
    """Apply a PatchOp body to a group; shared by PATCH and Bulk."""
    operations = patch.operations(body)
    try:
        with write_transaction():
            group = get_live(Group, group_id, "Group")
            check_if_match(group, if_match)
            resource = {"displayName": group.display_name}
            if group.external_id is not None:
                resource["externalId"] = group.external_id
            result = patch.apply(resource, operations, schema.GROUP_TYPE)
            data, _ = parse.group(resource)
            old_name = group.display_name
            changed = _set_group_attributes(group, data)
            added, removed = apply_member_changes(group, result.members)
            changed += added + removed
            if changed:
                touch(group)
                update(group)
    except IntegrityError:
        raise _group_uniqueness_error(data) from None
    activity.note(
        describe_group_change(old_name, group, added, removed),
        target=group.display_name,
    )
    for note in result.ignored:
        current_app.logger.info("PATCH /Groups/%s: %s", group_id, note)
    return group


@bp.delete("/Groups/<group_id>", strict_slashes=False)
def delete_group(group_id):
    """Remove a group from SCIM (RFC 7644 §3.6); the directory keeps it as deprovisioned."""
    deprovision(Group, group_id, request.headers.get("If-Match"))
    return "", 204


#
# Search across resource types and /Me
#


@bp.post("/.search", strict_slashes=False)
def search_all():
    """Search users and groups together (RFC 7644 §3.4.3); users are listed first."""
    params = list_params(request_body())
    resource_type = user_type()
    user_params = copy.copy(params)
    group_params = copy.copy(params)
    user_ok = group_ok = True
    if params.filter:
        node = filters.parse(params.filter)
        user_ok = _compiles(node, resource_type)
        group_ok = _compiles(node, schema.GROUP_TYPE)
        if not (user_ok or group_ok):
            filters.to_expression(node, resource_type)  # raises the real error
    user_params.count = group_params.count = 0
    users_total = search_users(user_params, resource_type)[1] if user_ok else 0
    groups_total = search_groups(group_params)[1] if group_ok else 0
    resources = []
    offset = params.start_index - 1
    wanted = params.count
    if user_ok and wanted and offset < users_total:
        user_params.start_index, user_params.count = offset + 1, wanted
        resources += search_users(user_params, resource_type)[0]
    remaining = wanted - len(resources)
    if group_ok and remaining > 0:
        group_params.start_index = max(0, offset - users_total) + 1
        group_params.count = remaining
        resources += search_groups(group_params)[0]
    return serialize.list_response(
        resources, users_total + groups_total, params.start_index
    )


def _compiles(node, resource_type):
    try:
        filters.to_expression(node, resource_type)
    except ScimError:
        return False
    return True


@bp.route(
    "/Me", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], strict_slashes=False
)
def me():
    """Answer /Me: a token belongs to a connection, not to a user (RFC 7644 §3.11)."""
    raise ScimError(501, None, "/Me is not supported: tokens are not tied to a user.")


#
# Discovery (RFC 7644 §4)
#


@bp.get("/ServiceProviderConfig", strict_slashes=False)
def query_service_provider_config():
    """Describe the features this server supports (RFC 7643 §5)."""
    base = base_url()
    return {
        "schemas": [schema.SERVICE_PROVIDER_CONFIG_SCHEMA],
        "patch": {"supported": True},
        "bulk": {
            "supported": True,
            "maxOperations": current_app.config["SCIM_BULK_MAX_OPERATIONS"],
            "maxPayloadSize": current_app.config["SCIM_BULK_MAX_PAYLOAD"],
        },
        "filter": {
            "supported": True,
            "maxResults": current_app.config["SCIM_MAX_RESULTS"],
        },
        "changePassword": {"supported": True},
        "sort": {"supported": True},
        "etag": {"supported": True},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "A bearer token generated for an identity-provider "
                "connection in the admin console or with `mdm token create`.",
                "specUri": "https://www.rfc-editor.org/rfc/rfc6750",
                "primary": True,
            }
        ],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": f"{base}/ServiceProviderConfig",
        },
    }


def _schemas():
    return [*user_type().schemas, schema.GROUP]


@bp.get("/Schemas", strict_slashes=False)
def query_schemas():
    """List the schemas of every stored attribute (RFC 7643 §7)."""
    base = base_url()
    resources = [s.document(f"{base}/Schemas/{s.id}") for s in _schemas()]
    return serialize.list_response(resources, len(resources), 1)


@bp.get("/Schemas/<schema_id>", strict_slashes=False)
def query_schema(schema_id):
    """Return one schema by URN."""
    for item in _schemas():
        if item.id.lower() == schema_id.lower():
            return item.document(f"{base_url()}/Schemas/{item.id}")
    raise ScimError.not_found(f"Schema {schema_id} not found.")


def _resource_types():
    return [user_type(), schema.GROUP_TYPE]


@bp.get("/ResourceTypes", strict_slashes=False)
def query_resource_types():
    """List the resource types (RFC 7643 §6)."""
    base = base_url()
    resources = [
        t.document(f"{base}/ResourceTypes/{t.name}") for t in _resource_types()
    ]
    return serialize.list_response(resources, len(resources), 1)


@bp.get("/ResourceTypes/<type_id>", strict_slashes=False)
def query_resource_type(type_id):
    """Return one resource type by name."""
    for item in _resource_types():
        if item.name.lower() == type_id.lower():
            return item.document(f"{base_url()}/ResourceTypes/{item.name}")
    raise ScimError.not_found(f"ResourceType {type_id} not found.")
