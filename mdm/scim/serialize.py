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
    data = json.loads(row.data)
    extensions = [
        urn for urn in data if urn.startswith("urn:") and isinstance(data[urn], dict)
    ]
    if resource_type is not None:
        # Drop values of custom attributes that were deleted since they were stored.
        known = {s.id for s in resource_type.extensions}
        extensions = [urn for urn in extensions if urn in known]
        for urn in list(data):
            if urn.startswith("urn:") and urn not in known:
                del data[urn]
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


def streamed_response(body, slots, base_url, snapshot, status=200):
    """Stream ``body`` with each slot's members in place; None if a slot is not found once.

    ``slots`` maps members_slot values to functions that yield lists of
    (id, display) pairs; they run inside one ``snapshot()``. The bytes are
    those ``response`` sends for the filled body: the same encoder writes
    each member and the list separators.
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
                    # One encoder call per chunk: a list's items without its brackets.
                    encoded = _encoder.encode(
                        [
                            member(user_id, display, base_url)
                            for user_id, display in chunk
                        ]
                    )[1:-1]
                    yield (separator + encoded).encode()
                    separator = ", "
                start = at + length
                yield b"]"
        yield text[start:].encode()

    return Response(stream_with_context(generate()), status, content_type=CONTENT_TYPE)


def fill_slots(resources, slots, base_url):
    """Put each slot's members in place in the resources, for an answer sent whole."""
    for resource in resources:
        slot = resource.get("members")
        chunks = slots.get(slot) if isinstance(slot, str) else None
        if chunks is not None:
            resource["members"] = [
                member(user_id, display, base_url)
                for chunk in chunks()
                for user_id, display in chunk
            ]


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
        for found in attributes:
            _copy_path(resource, result, found)
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
    key, attribute, sub = found
    if attribute is None:
        # A whole schema: an extension URN, or the core URN meaning everything.
        if key is None:
            target.update(copy.deepcopy(source))
        elif key in source:
            target[key] = copy.deepcopy(source[key])
        return
    src = source.get(key) if key else source
    if not isinstance(src, dict) or attribute.name not in src:
        return
    dst = target.setdefault(key, {}) if key else target
    value = src[attribute.name]
    if sub is None:
        dst[attribute.name] = copy.deepcopy(value)
    elif isinstance(value, list):
        picked = [
            {sub.name: item[sub.name]}
            for item in value
            if isinstance(item, dict) and sub.name in item
        ]
        existing = dst.get(attribute.name)
        if isinstance(existing, list) and len(existing) == len(picked):
            for whole, part in zip(existing, picked, strict=True):
                whole.update(part)
        elif picked:
            dst[attribute.name] = picked
    elif isinstance(value, dict) and sub.name in value:
        dst.setdefault(attribute.name, {})[sub.name] = value[sub.name]


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
