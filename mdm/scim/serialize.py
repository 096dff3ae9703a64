"""Outbound SCIM (RFC 7643 §3, RFC 7644 §3.4.2, §3.9): models to resources, lists and projections."""

import copy
import json

from flask import Response
from flask import stream_with_context

from . import schema
from .paths import CONTENT_TYPE

# One encoder for every response: json.dumps given an option builds a new
# encoder on every call.
_encoder = json.JSONEncoder(ensure_ascii=False)


def response(body, status=200):
    """Return ``body`` as an application/scim+json response in UTF-8."""
    return Response(_encoder.encode(body), status, content_type=CONTENT_TYPE)


def timestamp(value):
    """Format a naive UTC datetime as RFC 3339 with millisecond precision."""
    return value.isoformat(timespec="milliseconds") + "Z"  # cheaper than strftime


def etag(row):
    """Return the weak entity tag of a user or group (RFC 7644 §3.14)."""
    return f'W/"{row.version}"'


def _meta(row, resource_type, location):
    return {
        "resourceType": resource_type,
        "created": timestamp(row.created),
        "lastModified": timestamp(row.last_modified),
        "location": location,
        "version": etag(row),
    }


def user(row, base_url, groups=(), resource_type=None):
    """Return the SCIM representation of a user; ``groups`` are (id, displayName) pairs."""
    data = row.attributes
    known = resource_type.extension_ids if resource_type is not None else None
    extensions = []
    for urn in [key for key in data if key.startswith("urn:")]:
        if known is not None and urn not in known:
            # A custom attribute deleted since the value was stored.
            del data[urn]
        elif isinstance(data[urn], dict):
            extensions.append(urn)
    resource = {"schemas": [schema.USER_SCHEMA, *extensions], "id": row.scim_id}
    if row.external_id is not None:
        resource["externalId"] = row.external_id
    resource["meta"] = _meta(row, "User", f"{base_url}/Users/{row.scim_id}")
    data.pop("externalId", None)
    resource.update(data)
    if groups:
        resource["groups"] = [
            {
                "value": group_id,
                "$ref": f"{base_url}/Groups/{group_id}",
                "display": display,
                "type": "direct",
            }
            for group_id, display in groups
        ]
    return resource


def group(row, base_url, members=None):
    """Return the SCIM representation of a group; ``members`` are (id, display) pairs or None."""
    resource = {"schemas": [schema.GROUP_SCHEMA], "id": row.scim_id}
    if row.external_id is not None:
        resource["externalId"] = row.external_id
    resource["meta"] = _meta(row, "Group", f"{base_url}/Groups/{row.scim_id}")
    resource["displayName"] = row.display_name
    if members is not None:
        resource["members"] = [
            member(user_id, display, base_url) for user_id, display in members
        ]
    return resource


def member(user_id, display, base_url):
    """Return one member of a group as a multi-valued attribute value."""
    found = {"value": user_id, "$ref": f"{base_url}/Users/{user_id}"}
    # A null display is left out rather than sent (no nulls in responses).
    if display is not None:
        found["display"] = display
    found["type"] = "User"
    return found


def members_slot(group_pk):
    """Return what stands in a resource for the members of a group that are streamed."""
    # Noncharacters around the key: no stored value holds them (see mdm.db.Prepared).
    return f"\ufdd0members of {group_pk}\ufdd0"


def streamed_response(body, slots, snapshot, status=200):
    """Stream ``body`` with each slot's members in place; None if a slot is not found once.

    ``slots`` maps members_slot values to functions that yield lists of
    members as they are sent; they run inside one ``snapshot()``. The bytes
    are those ``response`` sends for the filled body: the same encoder
    writes each member and the list separators.
    """
    text = _encoder.encode(body)
    places = []
    for slot, chunks in slots.items():
        encoded = _encoder.encode(slot)
        if text.count(encoded) != 1:
            return None
        places.append((text.index(encoded), len(encoded), chunks))
    places.sort(key=lambda place: place[0])

    def generate():
        start = 0
        with snapshot():
            for at, length, chunks in places:
                yield (text[start:at] + "[").encode()
                separator = ""
                for chunk in chunks():
                    if not chunk:
                        continue
                    # One encoder call per chunk: a list's items without its brackets.
                    yield (separator + _encoder.encode(chunk)[1:-1]).encode()
                    separator = ", "
                start = at + length
                yield b"]"
        yield text[start:].encode()

    return Response(stream_with_context(generate()), status, content_type=CONTENT_TYPE)


def fill_slots(resources, slots):
    """Put each slot's members in place in the resources, for an answer sent whole."""
    for resource in resources:
        slot = resource.get("members")
        chunks = slots.get(slot) if isinstance(slot, str) else None
        if chunks is not None:
            resource["members"] = [found for chunk in chunks() for found in chunk]


def member_shape(attributes, excluded):
    """Return how a projection shapes each member (None: whole), as members_slot's are sent."""
    # The same result as project() gives a group's members: sub-attributes
    # picked keep the member's own order, and a member with none of them is
    # left out; excluded ones are dropped from every member.
    attributes = locate(schema.GROUP_TYPE, attributes)
    if attributes is not None:
        picked = set()
        for key, attribute, sub in attributes:
            if attribute is None and key is None:
                return None  # the core schema's URN: every attribute
            if attribute is not None and attribute.name == "members":
                if sub is None:
                    return None
                picked.add(sub.name)
        return lambda found: {k: v for k, v in found.items() if k in picked} or None
    excluded = locate(schema.GROUP_TYPE, excluded) or ()
    dropped = {
        sub.name
        for _, attribute, sub in excluded
        if attribute is not None and attribute.name == "members" and sub is not None
    }
    if not dropped:
        return None
    return lambda found: {k: v for k, v in found.items() if k not in dropped}


def members(pairs, base_url, shape=None):
    """Return (user id, display) pairs as members, shaped by a member_shape."""
    found = [member(user_id, display, base_url) for user_id, display in pairs]
    if shape is None:
        return found
    return [shaped for shaped in map(shape, found) if shaped is not None]


def list_response(resources, total, start_index):
    """Wrap a page of resources in a ListResponse (RFC 7644 §3.4.2)."""
    return {
        "schemas": [schema.LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


#
# attributes / excludedAttributes (RFC 7644 §3.4.2.5)
#


def wants(resource_type, name, attributes, excluded):
    """Tell whether the projection keeps top-level attribute ``name`` (e.g. "members")."""
    attributes = locate(resource_type, attributes)
    if attributes is not None:
        return any(found[1] and found[1].name == name for found in attributes)
    excluded = locate(resource_type, excluded)
    if excluded is not None:
        for _, attribute, sub in excluded:
            if attribute and attribute.name == name and sub is None:
                return False
    return True


class Located(tuple):
    """Projection names resolved once: distinct (container key, attribute, sub) triples."""


def locate(resource_type, names):
    """Resolve attributes or excludedAttributes names; None when none were given."""
    # Resolving is the costly step, so a page resolves its names once and
    # each resource then does work only for the distinct attributes named.
    if names is None or isinstance(names, Located):
        return names
    if not names:
        return None
    found = {}
    for path in names:
        key, attribute, sub = _locate(resource_type, path)
        if attribute is not False:
            found.setdefault((key, id(attribute), id(sub)), (key, attribute, sub))
    return Located(found.values())


def project(resource, resource_type, attributes=None, excluded=None):
    """Apply ``attributes`` or ``excludedAttributes``; ``id`` and ``schemas`` always stay."""
    # Unknown names are ignored (RFC 7644 §3.4.2.5 leaves them to the server).
    attributes = locate(resource_type, attributes)
    if attributes is not None:
        result = {"schemas": resource["schemas"], "id": resource["id"]}
        parts = {}  # sub-attributes named, by their attribute
        for key, attribute, sub in attributes:
            if sub is None:
                _copy_path(resource, result, (key, attribute))
            else:
                parts.setdefault((key, attribute.name), set()).add(sub.name)
        for (key, name), subs in parts.items():
            _copy_parts(resource, result, key, name, subs)
        _fix_schemas(result, resource_type)
        return result
    excluded = locate(resource_type, excluded)
    if excluded is not None:
        result = copy.deepcopy(resource)
        for found in excluded:
            _drop_path(result, found)
        _fix_schemas(result, resource_type)
        return result
    return resource


def _locate(resource_type, path):
    """Return (container key or None, attribute, sub) for a projection path."""
    schema_, rest = resource_type.split_urn(path)
    if schema_ is not None and not rest:
        return schema_.id if schema_ is not resource_type.core else None, None, None
    resolved = resource_type.resolve(path)
    if resolved is None:
        return None, False, None
    owner, attribute, sub = resolved
    key = owner.id if owner is not None and owner is not resource_type.core else None
    return key, attribute, sub


def _copy_path(source, target, found):
    key, attribute = found
    if attribute is None:
        # A whole schema: an extension URN, or the core URN meaning everything.
        if key is None:
            target.update(copy.deepcopy(source))
        elif key in source:
            target[key] = copy.deepcopy(source[key])
        return
    src = source.get(key) if key else source
    if isinstance(src, dict) and attribute.name in src:
        dst = target.setdefault(key, {}) if key else target
        dst[attribute.name] = copy.deepcopy(src[attribute.name])


def _copy_parts(source, target, key, name, subs):
    """Copy the named sub-attributes of each value of ``name``, unless it is whole there."""
    # Each value keeps its own order of sub-attributes, and one holding none
    # of them is left out: emails.type,emails.value keeps both from every
    # email, also when some email has no type.
    src = source.get(key) if key else source
    if not isinstance(src, dict) or name not in src:
        return
    existing = (target.get(key) or {}) if key else target
    if name in existing:
        return  # named whole as well
    value = src[name]
    if isinstance(value, list):
        picked = [
            part
            for part in (_parts(item, subs) for item in value if isinstance(item, dict))
            if part
        ]
    else:
        picked = _parts(value, subs) if isinstance(value, dict) else None
    if picked:
        dst = target.setdefault(key, {}) if key else target
        dst[name] = picked


def _parts(value, subs):
    return {k: copy.deepcopy(v) for k, v in value.items() if k in subs}


def _drop_path(resource, found):
    key, attribute, sub = found
    if attribute is None:
        if key is not None:
            resource.pop(key, None)
        return
    if attribute.returned == "always":
        return
    container = resource.get(key) if key else resource
    if not isinstance(container, dict) or attribute.name not in container:
        return
    if sub is None:
        del container[attribute.name]
    else:
        value = container[attribute.name]
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                item.pop(sub.name, None)
    if key and not container:
        del resource[key]


def _fix_schemas(resource, resource_type):
    resource["schemas"] = [
        urn
        for urn in resource["schemas"]
        if urn == resource_type.core.id or urn in resource
    ]
