"""SCIM routes (RFC 7644 §3): each reads the request, calls users or groups, and renders."""

import copy

from flask import g

from .. import activity
from ..models import Group
from ..models import User
from ..models import groups_of
from . import filters
from . import groups
from . import http
from . import schema
from . import serialize
from . import users
from .blueprint import bp
from .errors import ScimError
from .resources import deprovision
from .resources import get_live
from .resources import search

#
# Rendering
#


def render_user(
    user, resource_type, attributes=None, excluded=None, member_of=None, base=None
):
    """Serialise a user, with its groups unless given, projected as asked."""
    if member_of is None:
        member_of = groups_of([user.id]).get(user.id, ())
    base = http.base_url() if base is None else base
    resource = serialize.user(user, base, member_of, resource_type)
    return serialize.project(resource, resource_type, attributes, excluded)


def render_group(group, attributes=None, excluded=None, members=None):
    """Serialise a group, with its members when the projection keeps them."""
    wanted = serialize.wants(schema.GROUP_TYPE, "members", attributes, excluded)
    if wanted and members is None:
        members = groups.members_of([group])[group.id]
    resource = serialize.group(group, http.base_url(), members if wanted else None)
    return serialize.project(resource, schema.GROUP_TYPE, attributes, excluded)


def respond_group(group, attributes=None, excluded=None, status=200, headers=None):
    """Answer with a group; a large member list is streamed from the database."""
    # RFC 7644 puts no limit on members: a group read whole would hold them
    # all in memory. A group with fewer than a chunk of members, or a
    # projection that picks parts of each member, is answered in one piece.
    if not serialize.wants(schema.GROUP_TYPE, "members", attributes, excluded):
        return http.respond(render_group(group, attributes, excluded), status, headers)
    first = groups.first_members(group.id)
    if len(first) < groups.MEMBER_CHUNK:
        resource = render_group(group, attributes, excluded, first)
        return http.respond(resource, status, headers)
    slots = {}
    resource = _slotted_group(group, attributes, excluded, slots)
    response = _streamed(resource, slots, status)
    return http.labelled(response, resource, headers)


def _slotted_group(group, attributes, excluded, slots):
    """Render a group whose members are streamed, adding its slot to ``slots``."""
    base = http.base_url()
    resource = serialize.group(group, base)
    slot = resource["members"] = serialize.members_slot(group.id)
    shape = serialize.member_shape(attributes, excluded)

    def chunks():
        for pairs in groups.member_chunks(group.id):
            yield serialize.members(pairs, base, shape)

    slots[slot] = chunks
    # The slot stands for the members whole; their parts are shaped as sent.
    return serialize.project(
        resource, schema.GROUP_TYPE, _whole_members(attributes), excluded
    )


def _whole_members(attributes):
    """Return a projection's names with members.x read as members."""
    located = serialize.locate(schema.GROUP_TYPE, attributes)
    if located is None:
        return None
    return serialize.Located(
        (key, attribute, None if attribute and attribute.name == "members" else sub)
        for key, attribute, sub in located
    )


def _streamed(body, slots, status=200):
    """Stream ``body`` with the members of its slots, or send it whole if that fails."""
    response = serialize.streamed_response(body, slots, groups.snapshot, status)
    if response is None:
        # A slot's text was found elsewhere too (a client's value holding it).
        resources = body.get("Resources", [body])
        serialize.fill_slots(resources, slots)
        return serialize.response(body, status)
    # The activity log keeps no streamed body; its summary says why.
    summary = g.get("activity_summary")
    activity.note(f"{summary}; members streamed" if summary else "members streamed")
    return response


def search_users(params, resource_type):
    """Run a filtered, sorted, paged user query and render the page."""
    page, total = search(User, resource_type, params)
    attributes = serialize.locate(resource_type, params.attributes)
    excluded = serialize.locate(resource_type, params.excluded)
    wanted = serialize.wants(resource_type, "groups", attributes, excluded)
    member_of = groups_of([user.id for user in page]) if wanted else {}
    base = http.base_url()
    resources = [
        render_user(
            user, resource_type, attributes, excluded, member_of.get(user.id, ()), base
        )
        for user in page
    ]
    return resources, total


def search_groups(params, slots=None):
    """Run a filtered, sorted, paged group query and render the page.

    Given ``slots``, a page with more than a chunk of members in all gets
    slots in their place, to be streamed (see respond_group).
    """
    page, total = search(Group, schema.GROUP_TYPE, params)
    attributes = serialize.locate(schema.GROUP_TYPE, params.attributes)
    excluded = serialize.locate(schema.GROUP_TYPE, params.excluded)
    wanted = serialize.wants(schema.GROUP_TYPE, "members", attributes, excluded)
    members = {}
    if wanted:
        limit = groups.MEMBER_CHUNK if slots is not None else None
        members = groups.members_of(page, limit)
    if members is None:
        resources = [
            _slotted_group(group, attributes, excluded, slots) for group in page
        ]
        return resources, total
    resources = [
        render_group(group, attributes, excluded, members.get(group.id, []))
        for group in page
    ]
    return resources, total


def listed(resources, total, params, slots=None):
    """Answer a list or search, noting what was looked for in the activity log."""
    found = "no match" if total == 0 else f"{total} found"
    if params.filter:
        activity.note(f"{found} for {params.filter[:200]}")
    else:
        activity.note(f"listed {len(resources)} of {total}")
    body = serialize.list_response(resources, total, params.start_index)
    if slots:
        return _streamed(body, slots)
    return http.respond(body)


#
# Users
#


@bp.get("/Users", strict_slashes=False)
def query_users():
    """List users, optionally filtered, sorted and paged (RFC 7644 §3.4.2)."""
    params = http.list_params()
    resources, total = search_users(params, http.user_type())
    return listed(resources, total, params)


@bp.post("/Users/.search", strict_slashes=False)
def search_users_view():
    """Search users with a SearchRequest body (RFC 7644 §3.4.3)."""
    params = http.list_params(http.request_body())
    resources, total = search_users(params, http.user_type())
    return listed(resources, total, params)


@bp.get("/Users/<user_id>", strict_slashes=False)
def query_user(user_id):
    """Return one user (RFC 7644 §3.4.1)."""
    user = get_live(User, user_id)
    activity.note(target=user.user_name)
    unchanged = http.not_modified(user)
    if unchanged is not None:
        return unchanged
    attributes, excluded = http.projection()
    return http.respond(render_user(user, http.user_type(), attributes, excluded))


@bp.post("/Users", strict_slashes=False)
def create_user():
    """Create a user (RFC 7644 §3.3)."""
    resource_type = http.user_type()
    # Read before writing: a refused parameter must not follow a write.
    attributes, excluded = http.projection()
    user = users.create(http.request_body(), resource_type, http.token_idp())
    resource = render_user(user, resource_type, attributes, excluded, member_of=())
    location = f"{http.base_url()}/Users/{user.scim_id}"
    return http.respond(resource, 201, {"Location": location})


@bp.put("/Users/<user_id>", strict_slashes=False)
def replace_user(user_id):
    """Replace a user's attributes (RFC 7644 §3.5.1); an omitted password is kept."""
    resource_type = http.user_type()
    attributes, excluded = http.projection()
    user = users.replace(user_id, http.request_body(), resource_type, http.if_match())
    return http.respond(render_user(user, resource_type, attributes, excluded))


@bp.patch("/Users/<user_id>", strict_slashes=False)
def patch_user(user_id):
    """Apply PATCH operations to a user (RFC 7644 §3.5.2) and return it."""
    resource_type = http.user_type()
    attributes, excluded = http.projection()
    user = users.apply_patch(
        user_id, http.request_body(), resource_type, http.if_match()
    )
    return http.respond(render_user(user, resource_type, attributes, excluded))


@bp.delete("/Users/<user_id>", strict_slashes=False)
def delete_user(user_id):
    """Remove a user from SCIM (RFC 7644 §3.6); the directory keeps it as deprovisioned."""
    deprovision(User, user_id, http.if_match())
    return "", 204


#
# Groups
#


@bp.get("/Groups", strict_slashes=False)
def query_groups():
    """List groups, optionally filtered, sorted and paged (RFC 7644 §3.4.2)."""
    params = http.list_params()
    slots = {}
    resources, total = search_groups(params, slots)
    return listed(resources, total, params, slots)


@bp.post("/Groups/.search", strict_slashes=False)
def search_groups_view():
    """Search groups with a SearchRequest body (RFC 7644 §3.4.3)."""
    params = http.list_params(http.request_body())
    slots = {}
    resources, total = search_groups(params, slots)
    return listed(resources, total, params, slots)


@bp.get("/Groups/<group_id>", strict_slashes=False)
def query_group(group_id):
    """Return one group (RFC 7644 §3.4.1)."""
    group = get_live(Group, group_id)
    activity.note(target=group.display_name)
    unchanged = http.not_modified(group)
    if unchanged is not None:
        return unchanged
    attributes, excluded = http.projection()
    return respond_group(group, attributes, excluded)


@bp.post("/Groups", strict_slashes=False)
def create_group():
    """Create a group, with any members that name known users (RFC 7644 §3.3)."""
    attributes, excluded = http.projection()
    group = groups.create(http.request_body(), http.token_idp())
    location = f"{http.base_url()}/Groups/{group.scim_id}"
    return respond_group(group, attributes, excluded, 201, {"Location": location})


@bp.put("/Groups/<group_id>", strict_slashes=False)
def replace_group(group_id):
    """Replace a group (RFC 7644 §3.5.1); members change only when the body lists them."""
    attributes, excluded = http.projection()
    group = groups.replace(group_id, http.request_body(), http.if_match())
    return respond_group(group, attributes, excluded)


@bp.patch("/Groups/<group_id>", strict_slashes=False)
def patch_group(group_id):
    """Apply PATCH operations to a group (RFC 7644 §3.5.2); 204 unless a projection is asked."""
    # Entra expects 204 (docs/entra.md §4.1); a client that names attributes
    # or excludedAttributes gets the resource with 200.
    attributes, excluded = http.projection()
    group = groups.apply_patch(group_id, http.request_body(), http.if_match())
    if attributes or excluded:
        return respond_group(group, attributes, excluded)
    return http.no_content(group)


@bp.delete("/Groups/<group_id>", strict_slashes=False)
def delete_group(group_id):
    """Remove a group from SCIM (RFC 7644 §3.6); the directory keeps it as deprovisioned."""
    deprovision(Group, group_id, http.if_match())
    return "", 204


#
# Search across resource types and /Me
#


@bp.post("/.search", strict_slashes=False)
def search_all():
    """Search users and groups together (RFC 7644 §3.4.3); users are listed first."""
    params = http.list_params(http.request_body())
    resource_type = http.user_type()
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
