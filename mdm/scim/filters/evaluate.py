"""A parsed filter tested in Python against one element of a multi-valued attribute."""

import json
import math
import operator
from datetime import UTC
from datetime import datetime

from ..errors import ScimError
from .grammar import ORDER_OPS
from .grammar import SUBSTRING_OPS
from .grammar import And
from .grammar import Compare
from .grammar import Not
from .grammar import Or
from .grammar import Present
from .grammar import ValuePath


def matches(node, item, attribute=None):
    """Return whether ``item``, one element of a multi-valued attribute, matches."""
    if isinstance(node, And):
        return matches(node.left, item, attribute) and matches(
            node.right, item, attribute
        )
    if isinstance(node, Or):
        return matches(node.left, item, attribute) or matches(
            node.right, item, attribute
        )
    if isinstance(node, Not):
        return not matches(node.node, item, attribute)
    if isinstance(node, Present):
        actual, _ = _element_value(node.path, item, attribute)
        return is_present(actual)
    if isinstance(node, Compare):
        actual, definition = _element_value(node.path, item, attribute)
        if node.value is None:
            return null_test(node.op, is_present(actual))
        if definition is not None:
            kind, case_exact, strict = definition.type, definition.case_exact, True
        else:
            kind, case_exact, strict = _infer_type(actual), False, False
        return compare(actual, node.op, node.value, kind, case_exact, strict)
    if isinstance(node, ValuePath):
        raise ScimError.invalid_filter("Value filters cannot be nested.")
    raise ScimError.invalid_filter("Unsupported filter expression.")


def _element_value(path, item, attribute):
    if path.urn is not None or path.sub is not None:
        raise ScimError.invalid_filter(
            f"{path} must name a sub-attribute inside a value filter."
        )
    definition = None
    if attribute is not None:
        if attribute.complex:
            definition = attribute.sub(path.attr)
        elif path.attr.lower() == "value":
            definition = attribute
        if definition is None:
            raise ScimError.invalid_filter(
                f"{attribute.name} has no sub-attribute {path.attr!r}."
            )
    if not isinstance(item, dict):
        # A simple multi-valued attribute: "value" is the element itself.
        return (item if path.attr.lower() == "value" else None), definition
    lowered = path.attr.lower()
    for key, value in item.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value, definition
    return None, definition


def _infer_type(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "decimal"
    return "string"


def is_present(value):
    """Return whether ``value`` is assigned: RFC 7643 §2.5 treats empty as unassigned."""
    return value is not None and value != "" and value != [] and value != {}


def null_test(op, present):
    """Answer ``eq null`` (not present) or ``ne null`` (present)."""
    if op == "eq":
        return not present
    if op == "ne":
        return present
    raise ScimError.invalid_filter("null can only be compared with eq or ne.")


# The rules below (operators under the attribute's type and caseExact) are
# also what sql.py applies to an operand that is a constant.


def compare(actual, op, expected, kind, case_exact, strict):
    """Compare an attribute value with a filter value under the attribute's rules."""
    check_operator(op, kind)
    if op == "ne":
        return not compare(actual, "eq", expected, kind, case_exact, strict)
    if actual is None:
        return False
    if kind == "boolean":
        wanted = as_bool(expected)
        if wanted is None:
            if strict:
                raise ScimError.invalid_filter(f"{expected!r} is not a boolean.")
            return False
        return as_bool(actual) is wanted
    if kind in ("integer", "decimal"):
        wanted = as_number(expected)
        if wanted is None:
            if strict:
                raise ScimError.invalid_filter(f"{expected!r} is not a number.")
            return False
        have = as_number(actual)
        return have is not None and ORDER[op](have, wanted)
    if kind == "dateTime":
        wanted = as_datetime(expected)
        try:
            have = as_datetime(actual)
        except ScimError:
            return False
        return ORDER[op](have, wanted)
    have, wanted = as_text(actual), as_text(expected)
    if not case_exact:
        have, wanted = have.casefold(), wanted.casefold()
    if op == "co":
        return wanted in have
    if op == "sw":
        return have.startswith(wanted)
    if op == "ew":
        return have.endswith(wanted)
    return ORDER[op](have, wanted)


ORDER = {
    "eq": operator.eq,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def check_operator(op, kind):
    """Refuse an operator the attribute's type does not support (RFC 7644 §3.4.2.2)."""
    if kind == "complex":
        raise ScimError.invalid_filter(
            "A complex attribute can only be tested with pr; name a sub-attribute."
        )
    if kind == "boolean" and op not in ("eq", "ne"):
        raise ScimError.invalid_filter(f"{op} is not allowed on a boolean attribute.")
    if kind == "binary" and op in ORDER_OPS:
        raise ScimError.invalid_filter(f"{op} is not allowed on a binary attribute.")
    if kind in ("integer", "decimal", "dateTime") and op in SUBSTRING_OPS:
        raise ScimError.invalid_filter(f"{op} is not allowed on a {kind} attribute.")


def as_bool(value):
    """Return ``value`` as a bool, or None when it is not one."""
    # Entra sends booleans as strings ("True"), so text spellings coerce too.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def as_number(value):
    """Return ``value`` as an int or finite float, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        for convert in (int, float):
            try:
                number = convert(value.strip())
            except ValueError:
                continue
            # isfinite() on a 400-digit int overflows; every int is finite.
            if isinstance(number, int) or math.isfinite(number):
                return number
    return None


def as_text(value):
    """Return ``value`` as the text a string comparison sees."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def as_datetime(value):
    """Return ``value`` as a naive UTC datetime; SQLite stores no zone."""
    if isinstance(value, datetime):
        parsed = value
    else:
        if not isinstance(value, str):
            raise ScimError.invalid_filter(f"{value!r} is not a dateTime.")
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ScimError.invalid_filter(f"{value!r} is not a dateTime.") from None
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise ScimError.invalid_filter(f"{value!r} is out of range.") from None
    return parsed
