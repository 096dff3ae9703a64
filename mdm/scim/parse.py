"""Inbound SCIM data (RFC 7643 §2, RFC 7644 §3.4.2): JSON bodies and query args to validated values."""

import json
from dataclasses import dataclass

from . import schema
from .errors import ScimError

MAX_NAME_LENGTH = 1024
MAX_STRING_LENGTH = 65536
# Values the directory keeps in a B-tree index, and so their length in UTF-8:
# PostgreSQL refuses an index entry over 2,704 bytes (a write of one answered
# 500), and lowercasing can lengthen text by half (the copies it compares).
INDEXED_NAMES = frozenset(
    (
        "userName",
        "displayName",
        "externalId",
        "emails.value",
        "department",
        "employeeNumber",
        "costCenter",
        "organization",
        "division",
        "manager.value",
    )
)
MAX_INDEXED_BYTES = 1500
MAX_START_INDEX = 2**53
# Values per multi-valued attribute (emails, roles, ...); group members are
# rows of their own and not limited by this.
MAX_VALUES = 1000
# Names accepted in attributes or excludedAttributes, repeats included; a
# schema has far fewer attributes, and each name is resolved once per request.
MAX_PROJECTED_NAMES = 1000
TRUE_STRINGS = {"true": True, "false": False}
READ_ONLY = {"id", "meta", "schemas", "groups"}


def json_body(raw):
    """Decode a request body into a JSON object, or raise invalidSyntax."""
    if not raw:
        raise ScimError.invalid_syntax(
            "The request body is empty; a JSON object is required."
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ScimError.invalid_syntax("The request body is not valid UTF-8.") from None
    try:
        body = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise ScimError.invalid_syntax(
            "The request body is nested too deeply."
        ) from None
    except ValueError as error:
        raise ScimError.invalid_syntax(
            f"The request body is not valid JSON: {error}."
        ) from None
    if not isinstance(body, dict):
        raise ScimError.invalid_syntax("The request body must be a JSON object.")
    # A \ud800 escape decodes to a lone surrogate, which no UTF-8 column can store.
    if "\\u" in text and _has_surrogate(body):
        raise ScimError.invalid_syntax(
            "The request body contains an unpaired surrogate escape."
        )
    return body


def _not_json(name):
    # Python's json module accepts NaN and Infinity; RFC 8259 does not.
    raise ValueError(f"{name} is not a JSON value")


def _has_surrogate(body):
    """Tell whether any key or string in ``body`` holds a lone surrogate (iteratively)."""
    pending = [body]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.values())
            strings = value.keys()
        elif isinstance(value, list):
            pending.extend(value)
            continue
        elif isinstance(value, str):
            strings = (value,)
        else:
            continue
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def get_key(body, name):
    """Return body[name] matching the key case-insensitively (RFC 7643 §2.1)."""
    lowered = name.lower()
    for key, value in body.items():
        if key.lower() == lowered:
            return value
    return None


def operations_array(body, message):
    """Return the ``Operations`` array of a PatchOp or BulkRequest; ``message`` when absent."""
    items = get_key(body, "Operations")
    if items is None:
        raise ScimError.invalid_syntax(message)
    if not isinstance(items, list):
        raise ScimError.invalid_syntax("Operations must be an array.")
    return items


def boolean(value, name):
    """Coerce JSON booleans and Entra's "True"/"False" strings to bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_STRINGS:
        return TRUE_STRINGS[value.strip().lower()]
    raise ScimError.invalid_value(f"{name} must be a boolean, not {_describe(value)}.")


def _describe(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _string(value, name, limit=MAX_STRING_LENGTH):
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ScimError.invalid_value(
            f"{name} must be a string, not {_describe(value)}."
        )
    if not isinstance(value, str):
        value = str(value)
    if "\x00" in value:
        raise ScimError.invalid_value(f"{name} must not contain NUL characters.")
    if len(value) > limit:
        raise ScimError.invalid_value(f"{name} is longer than {limit} characters.")
    return value


def _integer(value, name):
    if isinstance(value, bool):
        raise ScimError.invalid_value(f"{name} must be an integer, not a boolean.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ScimError.invalid_value(f"{name} must be an integer, not {_describe(value)}.")


def _scalar(attribute, value, name):
    """Validate one simple value; return None for the empty values RFC 7643 §2.5 treats as unassigned."""
    if value is None:
        return None
    if attribute.type == "boolean":
        return boolean(value, name)
    if attribute.type == "integer":
        return _integer(value, name)
    if attribute.type == "decimal":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ScimError.invalid_value(f"{name} must be a number.")
        return value
    limit = MAX_NAME_LENGTH if attribute.uniqueness == "server" else MAX_STRING_LENGTH
    text = _string(value, name, limit)
    # Four bytes a character at most: shorter text needs no encoding to check.
    if len(text) > MAX_INDEXED_BYTES // 4 and name in INDEXED_NAMES:
        if len(text.encode("utf-8", "surrogatepass")) > MAX_INDEXED_BYTES:
            raise ScimError.invalid_value(
                f"{name} is longer than {MAX_INDEXED_BYTES} bytes in UTF-8, "
                "the most an indexed value may hold."
            )
    return text if text != "" else None


def _complex(attribute, value, name):
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ScimError.invalid_value(
            f"{name} must be an object, not {_describe(value)}."
        )
    result = {}
    for key, sub_value in value.items():
        sub = attribute.sub(key)
        if sub is None or sub.mutability == "readOnly":
            continue
        cleaned = _scalar(sub, sub_value, f"{name}.{sub.name}")
        if cleaned is not None:
            result[sub.name] = cleaned
    return result or None


def _multi_valued(attribute, value, name):
    if value is None:
        return None
    if isinstance(value, dict) or (attribute.complex and isinstance(value, str)):
        value = [value]
    if not isinstance(value, list):
        raise ScimError.invalid_value(
            f"{name} must be an array, not {_describe(value)}."
        )
    if len(value) > MAX_VALUES:
        raise ScimError.invalid_value(
            f"{name} has {len(value)} values; at most {MAX_VALUES} are stored."
        )
    items = []
    # Cleaned values are scalars or flat dicts of scalars, so duplicates are
    # found by hash rather than by scanning the items kept so far.
    seen = set()
    for item in value:
        if attribute.complex:
            if isinstance(item, str):
                item = bare_element(attribute, item)
            cleaned = _complex(attribute, item, name)
        else:
            cleaned = _scalar(attribute, item, name)
        if cleaned is None:
            continue
        key = frozenset(cleaned.items()) if isinstance(cleaned, dict) else cleaned
        if key not in seen:
            seen.add(key)
            items.append(cleaned)
    if attribute.complex:
        _one_primary(items)
    return items or None


def bare_element(attribute, text):
    """Return the element a bare string stands for in a complex multi-valued attribute."""
    # "emails": ["a@example.com"] is common; an address sent as one string is
    # its formatted text (RFC 7643 §4.1.2), the sub-attribute that holds all
    # of it. Dropping it instead would acknowledge data that is then lost.
    sub = attribute.sub("value") or attribute.sub("formatted")
    if sub is None:
        raise ScimError.invalid_value(
            f"{attribute.name} must be an object, not a string."
        )
    return {sub.name: text}


def _one_primary(items):
    """Keep only the first primary=true item (RFC 7643 §2.4 allows one)."""
    seen = False
    for item in items:
        if item.get("primary") is True:
            if seen:
                item["primary"] = False
            seen = True


def _manager(value, name):
    """Accept Entra's manager shapes: a bare id, {"value": id} or a legacy one-item list."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = {"value": value}
    manager = _complex(schema.ENTERPRISE_USER.attribute("manager"), value, name)
    if not manager or not manager.get("value"):
        return None
    return manager


def attribute_value(attribute, value, name):
    """Validate the value of one top-level attribute; None means unassigned."""
    if attribute.name == "manager" and attribute.complex:
        return _manager(value, name)
    if attribute.multi_valued:
        return _multi_valued(attribute, value, name)
    if attribute.complex:
        return _complex(attribute, value, name)
    return _scalar(attribute, value, name)


def resource(body, resource_type):
    """Validate a User or Group body into its canonical stored form: (data, password)."""
    # Keys are matched case-insensitively (RFC 7643 §2.1) and written under
    # their canonical names; extension attributes go under their schema URN.
    # Read-only and unknown attributes are ignored: a client may echo ``id``,
    # ``meta`` or an attribute this server does not store.
    data = {}
    password = None
    for key, value in body.items():
        if not isinstance(key, str) or key.lower() in READ_ONLY:
            continue
        extension = resource_type.extension(key)
        if extension is not None:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ScimError.invalid_value(f"{extension.id} must be an object.")
            for sub_key, sub_value in value.items():
                _store(data, resource_type, f"{extension.id}:{sub_key}", sub_value)
            continue
        if key.lower() == "password":
            if value is not None:
                password = _string(value, "password", 1024)
            continue
        _store(data, resource_type, key, value)
    return data, password


def _store(data, resource_type, key, value):
    """Validate ``key`` (plain, dotted or URN-qualified) and write it into ``data``."""
    resolved = resource_type.resolve(key)
    if resolved is None:
        return
    owner, attribute, sub = resolved
    if attribute.mutability == "readOnly" or attribute.name == "password":
        return
    # owner is None for the common attributes (externalId), kept at the top level.
    extension = owner is not None and owner is not resource_type.core
    target = data.setdefault(owner.id, {}) if extension else data
    if sub is not None:
        if attribute.multi_valued or sub.mutability == "readOnly":
            return
        cleaned = _scalar(sub, value, f"{attribute.name}.{sub.name}")
        existing = target.get(attribute.name) or {}
        if cleaned is None:
            existing.pop(sub.name, None)
        else:
            existing[sub.name] = cleaned
        _set(target, attribute.name, existing or None)
    else:
        _set(target, attribute.name, attribute_value(attribute, value, attribute.name))
    if extension and not target:
        data.pop(owner.id, None)


def _set(target, name, value):
    if value is None:
        target.pop(name, None)
    else:
        target[name] = value


def user(body, resource_type, creating=False):
    """Validate a User body (POST, PUT, or the result of a PATCH); return (data, password)."""
    # A new user without ``active`` is created active; later an absent
    # ``active`` stays unassigned, which the directory also treats as active.
    data, password = resource(body, resource_type)
    if not data.get("userName"):
        raise ScimError.invalid_value("userName is required.")
    if creating and "active" not in data:
        data["active"] = True
    return data, password


def group(body):
    """Validate a Group body; return (data, member ids or None when members is absent)."""
    data, _ = resource(
        {
            k: v
            for k, v in body.items()
            if not (isinstance(k, str) and k.lower() == "members")
        },
        schema.GROUP_TYPE,
    )
    if not data.get("displayName"):
        raise ScimError.invalid_value("displayName is required.")
    members = get_key(body, "members")
    if members is None:
        return data, None
    return data, member_ids(members)


def member_ids(members):
    """Return the ids named by a members array, tolerating bare strings and ``$ref: null``."""
    if isinstance(members, (dict, str)):
        members = [members]
    if not isinstance(members, list):
        raise ScimError.invalid_value("members must be an array.")
    # A dict keeps the first occurrence of each id, in order; ids compare exactly.
    ids = {}
    for item in members:
        value = get_key(item, "value") if isinstance(item, dict) else item
        if not isinstance(value, str) or not value:
            raise ScimError.invalid_value("Each member needs a non-empty string value.")
        ids.setdefault(value)
    return list(ids)


#
# Query parameters
#


@dataclass
class ListParams:
    """Validated list, search and projection parameters (RFC 7644 §3.4.2)."""

    filter: str | None = None
    sort_by: str | None = None
    descending: bool = False
    start_index: int = 1
    count: int = 100
    attributes: list | None = None
    excluded: list | None = None


def _names(value, name):
    if value is None:
        return None
    if isinstance(value, str):
        count = value.count(",") + 1
    else:
        count = len(value) if isinstance(value, list) else 0
    if count > MAX_PROJECTED_NAMES:
        # Refused before any work per name; RFC 7644 §3.12 keeps tooMany for
        # a filter's results on GET, invalidValue applies to every method.
        raise ScimError.invalid_value(
            f"{name} lists {count} names; at most {MAX_PROJECTED_NAMES} are accepted."
        )
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ScimError.invalid_value(
            f"{name} must be a comma-separated list of attribute names."
        )
    names = [v.strip() for v in value if v.strip()]
    return names or None


def _page_number(value, name):
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ScimError.invalid_value(f"{name} must be an integer.")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        # OverflowError: a JSON 1e400 reads as float("inf").
        raise ScimError.invalid_value(f"{name} must be an integer.") from None


def list_params(source, default_count, max_count):
    """Read list parameters from query args or a SearchRequest body (keys case-insensitive)."""
    # Each key by its lower-case name, the first of several spellings winning.
    keys = {}
    for key in source:
        keys.setdefault(key.lower(), key)

    def get(name):
        key = keys.get(name.lower())
        return None if key is None else source.get(key)

    text = get("filter")
    if text is not None and not isinstance(text, str):
        raise ScimError.invalid_filter("filter must be a string.")
    sort_by = get("sortBy")
    if sort_by is not None and not isinstance(sort_by, str):
        raise ScimError.invalid_value("sortBy must be an attribute name.")
    order = get("sortOrder")
    if order is not None and (
        not isinstance(order, str) or order.lower() not in ("ascending", "descending")
    ):
        raise ScimError.invalid_value('sortOrder must be "ascending" or "descending".')
    start = _page_number(get("startIndex"), "startIndex")
    count = _page_number(get("count"), "count")
    # RFC 7644 §3.4.2.4: startIndex below 1 means 1; a negative count means 0.
    # SQLite's OFFSET is a signed 64-bit integer; no directory holds more rows.
    start = min(max(1, start), MAX_START_INDEX) if start is not None else 1
    count = default_count if count is None else min(max(0, count), max_count)
    return ListParams(
        filter=text if text and text.strip() else None,
        sort_by=sort_by or None,
        descending=bool(order) and order.lower() == "descending",
        start_index=start,
        count=count,
        attributes=_names(get("attributes"), "attributes"),
        excluded=_names(get("excludedAttributes"), "excludedAttributes"),
    )
