"""SCIM filters (RFC 7644 §3.4.2.2): parse, evaluate in Python, and compile to SQL."""

import json
import math
import operator
import re
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import NamedTuple

from peewee import SQL
from peewee import Field
from peewee import NodeList
from peewee import fn

from ..db import bindable
from ..db import element_member
from ..db import element_value
from ..db import exact
from ..db import false
from ..db import is_not_true
from ..db import json_elements
from ..db import json_flag
from ..db import json_get
from ..db import json_type
from ..db import like
from ..db import nocase
from ..db import substring
from ..db import true
from .errors import ScimError

MAX_LENGTH = 10_000
# Limits that keep every accepted filter compilable: SQLite's parser overflows
# at about 25 nested parentheses in the worst shapes (and/or/not/value paths
# alternating), and it refuses expression trees deeper than 1000, which a flat
# chain of comparisons approaches.
MAX_DEPTH = 16
MAX_TERMS = 500

COMPARE_OPS = ("eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le")
SUBSTRING_OPS = ("co", "sw", "ew")
ORDER_OPS = ("gt", "ge", "lt", "le")

# A word runs until whitespace or a structural character; paths, operators,
# keywords and bare values are all words, told apart by where they appear.
_WORD = re.compile(r'[^\s()\[\]"]+')
_SPACE = re.compile(r"\s*")
_NAME = r"(?:\$ref|[A-Za-z][A-Za-z0-9_-]*)"
_PATH = re.compile(rf"(?:(?P<urn>.+):)?(?P<attr>{_NAME})(?:\.(?P<sub>{_NAME}))?")
_SUB = re.compile(rf"\.(?P<sub>{_NAME})")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?P<frac>\.[0-9]+)?(?P<exp>[eE][+-]?[0-9]+)?")
_KEYWORDS = {"true": True, "false": False, "null": None}
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Path:
    """An attribute path as the client wrote it: ``[urn:]attr[.sub]``."""

    urn: str | None
    attr: str
    sub: str | None = None

    def __str__(self):
        text = f"{self.urn}:{self.attr}" if self.urn else self.attr
        return f"{text}.{self.sub}" if self.sub else text


@dataclass(frozen=True)
class Compare:
    """``path op value``; value is a str, bool, int, float or None."""

    path: Path
    op: str
    value: object


@dataclass(frozen=True)
class Present:
    """``path pr``."""

    path: Path


@dataclass(frozen=True)
class And:
    """``left and right``."""

    left: object
    right: object


@dataclass(frozen=True)
class Or:
    """``left or right``."""

    left: object
    right: object


@dataclass(frozen=True)
class Not:
    """``not (node)``."""

    node: object


@dataclass(frozen=True)
class ValuePath:
    """``path[filter]``: some element of ``path`` matches ``filter``."""

    path: Path
    filter: object


class PatchPath(NamedTuple):
    """A PATCH ``path`` (RFC 7644 §3.5.2): attribute, value filter, sub-attribute."""

    path: Path
    filter: object = None
    sub: str | None = None


# --------------------------------------------------------------------------
# Parsing


def parse(text):
    """Parse a filter expression into an AST, or raise invalidFilter."""
    parser = _Parser(text, ScimError.invalid_filter, "filter")
    node = parser.filter()
    parser.end()
    return node


# ``attr eq "text"`` with nothing to unescape: how identity providers look a
# resource up before creating it. JSON strings admit no raw control characters.
_SIMPLE_EQ = re.compile(
    r'\s*([A-Za-z]+)\s+eq\s+"([^"\\\x00-\x1f\ud800-\udfff]*)"\s*', re.IGNORECASE
)


def simple_eq(text):
    """Return (attribute, value) when ``text`` is one ``attr eq "value"``, else None.

    The attribute comes back as written; the caller decides which it answers
    directly. Anything else, however equivalent, is left to parse().
    """
    if len(text) > MAX_LENGTH:
        return None
    match = _SIMPLE_EQ.fullmatch(text)
    return match.groups() if match else None


def parse_path(text):
    """Parse a PATCH operation path into a PatchPath, or raise invalidPath."""
    parser = _Parser(text, ScimError.invalid_path, "path")
    result = parser.patch_path()
    parser.end()
    return result


def parse_attribute_path(text, error=ScimError.invalid_filter):
    """Parse a plain ``[urn:]attr[.sub]`` path, raising ``error`` when malformed."""
    if not isinstance(text, str) or not text.strip():
        raise error("An attribute path is required.")
    path = _path(text.strip())
    if path is None:
        raise error(f"{text!r} is not a valid attribute path.")
    return path


def _path(word):
    match = _PATH.fullmatch(word)
    if match is None:
        return None
    urn = match.group("urn")
    if urn is not None and not urn.lower().startswith("urn:"):
        return None
    return Path(urn, match.group("attr"), match.group("sub"))


def _balance(kind, terms):
    # A long and/or chain becomes a balanced tree so that evaluating or
    # compiling it recurses log(n) deep rather than n deep.
    if len(terms) == 1:
        return terms[0]
    middle = (len(terms) + 1) // 2
    return kind(_balance(kind, terms[:middle]), _balance(kind, terms[middle:]))


class _Parser:
    """A recursive-descent parser over the raw text (no separate token stream)."""

    def __init__(self, text, error, what):
        self.error = error
        self.what = what
        if not isinstance(text, str):
            raise error(f"The {what} must be a string.")
        if len(text) > MAX_LENGTH:
            raise error(f"The {what} is longer than {MAX_LENGTH} characters.")
        if not text.strip():
            raise error(f"The {what} is empty.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise error(f"The {what} contains invalid characters.") from None
        self.text = text
        self.pos = 0
        self.depth = 0
        self.terms = 0
        self.in_brackets = False

    def fail(self, message):
        where = "end" if self.pos >= len(self.text) else f"position {self.pos + 1}"
        raise self.error(f"Invalid {self.what}: {message} at {where}.")

    def skip(self):
        self.pos = _SPACE.match(self.text, self.pos).end()

    def peek(self):
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def word(self):
        match = _WORD.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return match.group()

    def keyword(self, name):
        self.skip()
        match = _WORD.match(self.text, self.pos)
        if match is not None and match.group().lower() == name:
            self.pos = match.end()
            return True
        return False

    def expect(self, char):
        self.skip()
        if self.peek() != char:
            self.fail(f"expected {char!r}")
        self.pos += 1

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"nesting deeper than {MAX_DEPTH} levels")

    def end(self):
        self.skip()
        if self.pos < len(self.text):
            self.fail(f"unexpected {self.text[self.pos : self.pos + 20]!r}")

    def filter(self):
        terms = [self.conjunction()]
        while self.keyword("or"):
            terms.append(self.conjunction())
        return _balance(Or, terms)

    def conjunction(self):
        terms = [self.unary()]
        while self.keyword("and"):
            terms.append(self.unary())
        return _balance(And, terms)

    def unary(self):
        self.skip()
        if self.peek() == "(":
            return self.group()
        start = self.pos
        if self.keyword("not"):
            self.skip()
            if self.peek() == "(":
                return Not(self.group())
            # "not" not followed by "(" can only be an attribute named "not".
            self.pos = start
        return self.expression()

    def group(self):
        self.enter()
        self.pos += 1
        node = self.filter()
        self.expect(")")
        self.depth -= 1
        return node

    def attribute(self):
        self.skip()
        start = self.pos
        word = self.word()
        if word is None:
            self.fail("expected an attribute path")
        path = _path(word)
        if path is None:
            self.pos = start
            self.fail(f"{word!r} is not a valid attribute path")
        return path

    def value_filter(self, path):
        if self.in_brackets:
            self.fail("value filters cannot be nested")
        if path.sub is not None:
            self.fail("a value filter must follow an attribute, not a sub-attribute")
        self.enter()
        self.pos += 1
        self.in_brackets = True
        node = self.filter()
        self.expect("]")
        self.in_brackets = False
        self.depth -= 1
        return node

    def sub_attribute(self):
        # Only called when the next character is "." right after "]".
        match = _SUB.match(self.text, self.pos)
        end = _WORD.match(self.text, self.pos).end()
        if match is None or match.end() != end:
            self.fail("expected a sub-attribute name after '.'")
        self.pos = end
        return match.group("sub")

    def expression(self):
        path = self.attribute()
        if self.peek() == "[":
            inner = self.value_filter(path)
            if self.peek() != ".":
                return ValuePath(path, inner)
            # Entra's emails[type eq "work"].value eq "x": the trailing
            # comparison applies to the same element as the bracket filter.
            tail = self.comparison(Path(None, self.sub_attribute()))
            return ValuePath(path, And(inner, tail))
        return self.comparison(path)

    def comparison(self, path):
        self.terms += 1
        if self.terms > MAX_TERMS:
            self.fail(f"more than {MAX_TERMS} comparisons")
        self.skip()
        op = self.word()
        if op is None:
            self.fail(f"expected an operator after {str(path)!r}")
        op = op.lower()
        if op == "pr":
            return Present(path)
        if op not in COMPARE_OPS:
            self.pos -= len(op)
            self.fail(f"unknown operator {op!r}")
        return Compare(path, op, self.value())

    def value(self):
        self.skip()
        if self.peek() == '"':
            try:
                value, self.pos = _DECODER.raw_decode(self.text, self.pos)
            except ValueError as exc:
                self.fail(f"malformed string ({getattr(exc, 'msg', exc)})")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                self.fail("string contains an unpaired surrogate escape")
            return value
        word = self.word()
        if word is None:
            self.fail("expected a value")
        lowered = word.lower()
        if lowered in _KEYWORDS:
            return _KEYWORDS[lowered]
        match = _NUMBER.fullmatch(word)
        if match is None:
            # Legacy Entra sends externalId eq jyoung: a bare word is a string.
            return word
        if match.group("frac") is None and match.group("exp") is None:
            try:
                return int(word)
            except ValueError:  # more digits than int() converts (4300)
                self.fail(f"number {word[:20]!r}... is out of range")
        number = float(word)
        if not math.isfinite(number):
            self.fail(f"number {word!r} is out of range")
        return number

    def patch_path(self):
        path = self.attribute()
        if self.peek() != "[":
            return PatchPath(path)
        inner = self.value_filter(path)
        sub = self.sub_attribute() if self.peek() == "." else None
        return PatchPath(path, inner, sub)


# --------------------------------------------------------------------------
# Evaluation against one element of a multi-valued attribute


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
        return _present(actual)
    if isinstance(node, Compare):
        actual, definition = _element_value(node.path, item, attribute)
        if node.value is None:
            return _null_test(node.op, _present(actual))
        if definition is not None:
            kind, case_exact, strict = definition.type, definition.case_exact, True
        else:
            kind, case_exact, strict = _infer_type(actual), False, False
        return _test(actual, node.op, node.value, kind, case_exact, strict)
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


def _present(value):
    return value is not None and value != "" and value != [] and value != {}


def _null_test(op, present):
    if op == "eq":
        return not present
    if op == "ne":
        return present
    raise ScimError.invalid_filter("null can only be compared with eq or ne.")


def _test(actual, op, expected, kind, case_exact, strict):
    """Compare an attribute value with a filter value under the attribute's rules."""
    _check_operator(op, kind)
    if op == "ne":
        return not _test(actual, "eq", expected, kind, case_exact, strict)
    if actual is None:
        return False
    if kind == "boolean":
        wanted = _as_bool(expected)
        if wanted is None:
            if strict:
                raise ScimError.invalid_filter(f"{expected!r} is not a boolean.")
            return False
        return _as_bool(actual) is wanted
    if kind in ("integer", "decimal"):
        wanted = _as_number(expected)
        if wanted is None:
            if strict:
                raise ScimError.invalid_filter(f"{expected!r} is not a number.")
            return False
        have = _as_number(actual)
        return have is not None and _ORDER[op](have, wanted)
    if kind == "dateTime":
        wanted = _as_datetime(expected)
        try:
            have = _as_datetime(actual)
        except ScimError:
            return False
        return _ORDER[op](have, wanted)
    have, wanted = _as_text(actual), _as_text(expected)
    if not case_exact:
        have, wanted = have.casefold(), wanted.casefold()
    if op == "co":
        return wanted in have
    if op == "sw":
        return have.startswith(wanted)
    if op == "ew":
        return have.endswith(wanted)
    return _ORDER[op](have, wanted)


_ORDER = {
    "eq": operator.eq,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def _check_operator(op, kind):
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


def _as_bool(value):
    # Entra sends booleans as strings ("True"), so text spellings coerce too.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _as_number(value):
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


def _as_text(value):
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _as_datetime(value):
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


# --------------------------------------------------------------------------
# Compilation to SQL

# A condition may be NULL when an attribute is missing. NULL counts as false,
# which is right under and/or; ``not`` and ``ne`` compile to "IS NOT TRUE" so
# that "not (title eq x)" and "title ne x" match a user without a title.


@dataclass(frozen=True)
class _Operand:
    """A single SQL value a comparison applies to, with its SCIM typing rules."""

    expr: object
    type: str = "string"
    case_exact: bool = False
    nocase: bool = False
    json: bool = False
    constant: object = None


def to_expression(node, resource_type):
    """Compile a filter AST into a peewee where-expression for ``resource_type``."""
    return _compile(node, _ResourceScope(resource_type))


def member_expression(node):
    """Compile a ``members[...]`` inner filter into a where-expression over User."""
    from ..models import User

    return _compile(node, _RelationScope(User, "User"))


def sort_expression(path_text, resource_type):
    """Return the peewee expression to order ``resource_type`` by ``sortBy``."""
    path = parse_attribute_path(path_text, ScimError.invalid_value)
    scope = _ResourceScope(resource_type)
    try:
        return scope.sort_key(path)
    except ScimError as exc:
        if exc.scim_type == "invalidValue":
            raise
        raise ScimError.invalid_value(f"Cannot sort by {path_text!r}.") from None


def _compile(node, scope):
    if isinstance(node, And | Or):
        return _compile_chain(node, scope)
    if isinstance(node, Not):
        return _negate(_compile(node.node, scope))
    if isinstance(node, Present):
        return scope.leaf(node.path, "pr", None)
    if isinstance(node, Compare):
        if node.value is None:
            # eq null is "not present" and ne null is "present".
            if node.op not in ("eq", "ne"):
                _null_test(node.op, True)
            present = scope.leaf(node.path, "pr", None)
            return _negate(present) if node.op == "eq" else present
        return scope.leaf(node.path, node.op, node.value)
    if isinstance(node, ValuePath):
        return scope.value_path(node.path, node.filter)
    raise ScimError.invalid_filter("Unsupported filter expression.")


def _compile_chain(node, scope):
    # SQLite's parser overflows at a few dozen nested parentheses, so a chain
    # of one operator renders flat, "(a AND b AND c)", not as nested pairs.
    kind = type(node)
    parts = []
    pending = [node]
    while pending:
        current = pending.pop()
        if type(current) is kind:
            pending.extend((current.right, current.left))
        else:
            parts.append(_compile(current, scope))
    glue = " AND " if kind is And else " OR "
    return NodeList(parts, glue=glue, parens=True)


def _negate(expr):
    # Conditions are true, false or NULL; IS NOT TRUE turns unknown into a match.
    return is_not_true(expr)


def _json_keys(*keys):
    # JSON paths quote their labels; a label with a quote cannot be named.
    for key in keys:
        if '"' in key:
            raise ScimError.invalid_filter(f"{key!r} cannot be filtered.")
    return keys


def _condition(operand, op, value):
    """Return the SQL condition ``operand op value`` (op may be ``pr``)."""
    if operand.expr is None:
        if op == "pr":
            return true() if _present(operand.constant) else false()
        passed = _test(
            operand.constant, op, value, operand.type, operand.case_exact, True
        )
        return true() if passed else false()
    x = operand.expr
    if op == "pr":
        if operand.type in ("string", "reference", "binary"):
            return x != ""
        return x.is_null(False)
    _check_operator(op, operand.type)
    if op == "ne":
        return _negate(_condition(operand, "eq", value))
    if operand.type == "boolean":
        wanted = _as_bool(value)
        if wanted is None:
            raise ScimError.invalid_filter(f"{value!r} is not a boolean.")
        if operand.json:
            # JSON true reads back as 1; tolerate "true" text left by lax clients.
            return fn.lower(x).in_(["1", "true"] if wanted else ["0", "false"])
        return x == wanted
    if operand.type in ("integer", "decimal"):
        wanted = _as_number(value)
        if wanted is None:
            raise ScimError.invalid_filter(f"{value!r} is not a number.")
        if isinstance(wanted, int) and not -(2**63) <= wanted < 2**63:
            # SQLite binds integers as 64-bit; a larger one compares as a REAL.
            try:
                wanted = float(wanted)
            except OverflowError:
                raise ScimError.invalid_filter("The number is out of range.") from None
        return _ORDER[op](x, wanted)
    if operand.type == "dateTime":
        wanted = _as_datetime(value)
        if isinstance(x, Field):
            # The field's converter renders the datetime exactly as stored.
            return _ORDER[op](x, wanted)
        return _ORDER[op](x, wanted.isoformat())
    return _text_condition(operand, op, _as_text(value))


def _text_condition(operand, op, text):
    x = operand.expr
    if "\x00" in text:
        # NUL is refused on write, so no stored value contains it; PostgreSQL
        # cannot even take it as a parameter.
        if op in ("eq", "co", "sw", "ew"):
            return false()
        text = bindable(text)
    if op in SUBSTRING_OPS:
        if operand.case_exact:
            if op != "co" and not text:
                return x.is_null(False)
            return substring(x, op, text)
        # The pattern match ignores ASCII case, like NOCASE.
        return like(x, text, {"co": "%{}%", "sw": "{}%", "ew": "%{}"}[op])
    if operand.case_exact:
        side = exact(x) if operand.nocase else x
    else:
        # A case-insensitive column compares directly so its index stays usable.
        side = x if operand.nocase else nocase(x)
    return _ORDER[op](side, text)


def _column(field, attribute):
    case_insensitive = getattr(field, "nocase", False)
    return _Operand(field, attribute.type, attribute.case_exact, case_insensitive)


class _ResourceScope:
    """Resolves top-level paths of a User or Group resource to SQL."""

    def __init__(self, resource_type):
        from ..models import Group
        from ..models import User

        self.resource_type = resource_type
        self.model = User if resource_type.name == "User" else Group
        self.has_data = self.model is User
        self.counter = 0

    def next_alias(self, prefix):
        self.counter += 1
        return f"{prefix}{self.counter}"

    def resolve(self, path):
        """Return (schema, attribute, sub) for ``path`` or raise invalidFilter."""
        resolved = self.resource_type.resolve(str(path))
        if resolved is None and path.urn is not None:
            # Common attributes (id, externalId, meta) may carry the core URN.
            if path.urn.lower() == self.resource_type.core.id.lower():
                resolved = self.resource_type.resolve(
                    str(Path(None, path.attr, path.sub))
                )
        if resolved is None and path.urn is None:
            # Entra's legacy pre-check sends "manager eq ..." without its URN;
            # an unqualified name falls back to the first extension defining it.
            for extension in self.resource_type.extensions:
                qualified = Path(extension.id, path.attr, path.sub)
                resolved = self.resource_type.resolve(str(qualified))
                if resolved is not None:
                    break
        if resolved is None:
            raise ScimError.invalid_filter(f"Unknown attribute {str(path)!r}.")
        schema, attribute, sub = resolved
        if attribute.returned == "never":
            raise ScimError.invalid_filter(f"{attribute.name} cannot be filtered.")
        if schema is None and attribute.name == "meta" and sub is None:
            raise ScimError.invalid_filter(
                "Name a meta sub-attribute, e.g. meta.created."
            )
        return schema, attribute, sub

    def json_keys(self, schema, attribute):
        if not self.has_data:
            raise ScimError.invalid_filter(f"{attribute.name} cannot be filtered.")
        if schema is not None and schema is not self.resource_type.core:
            return (schema.id, attribute.name)
        return (attribute.name,)

    def scalar(self, schema, attribute, sub):
        """Return the operand for a single-valued attribute or sub-attribute."""
        target = sub or attribute
        if schema is None or schema is self.resource_type.core:
            column = self.column(attribute.name, sub.name if sub else None)
            if column is not None:
                return (
                    column if isinstance(column, _Operand) else _column(column, target)
                )
        keys = self.json_keys(schema, attribute) + ((sub.name,) if sub else ())
        expr = json_get(self.model.data, _json_keys(*keys), target.type)
        return _Operand(expr, target.type, target.case_exact, json=True)

    def column(self, name, sub):
        model = self.model
        if (name, sub) == ("meta", "resourceType"):
            return _Operand(None, "string", True, constant=self.resource_type.name)
        columns = {
            ("id", None): model.scim_id,
            ("externalId", None): model.external_id,
            ("displayName", None): model.display_name,
            ("meta", "created"): model.created,
            ("meta", "lastModified"): model.last_modified,
        }
        if self.has_data:
            columns.update(
                {
                    ("userName", None): model.user_name,
                    ("name", "givenName"): model.given_name,
                    ("name", "familyName"): model.family_name,
                    ("active", None): model.active,
                }
            )
        if name == "meta" and (name, sub) not in columns:
            raise ScimError.invalid_filter(f"meta.{sub or ''} cannot be filtered.")
        return columns.get((name, sub))

    def relation(self, attribute):
        """Return the Membership-backed scope for groups/members, or None."""
        from ..models import Group
        from ..models import User

        if attribute.name == "groups" and self.model is User:
            return _LinkScope(self, Group, "user", "group", "direct")
        if attribute.name == "members" and self.model is Group:
            return _LinkScope(self, User, "group", "user", "User")
        return None

    def leaf(self, path, op, value):
        schema, attribute, sub = self.resolve(path)
        if attribute.multi_valued:
            # "emails.type eq x" is "emails[type eq x]": any element matching
            # (RFC 7644 §3.4.2.2), so "ne" needs one element that differs.
            if sub is None and op == "pr":
                return self.any_element(schema, attribute, None)
            if not attribute.complex:
                name = "value"
            else:
                name = (sub or self.implied_value(attribute)).name
            element = Path(None, name)
            inner = Present(element) if op == "pr" else Compare(element, op, value)
            return self.any_element(schema, attribute, inner)
        if attribute.complex and sub is None:
            if op == "pr" and attribute.sub("value") is None:
                keys = _json_keys(*self.json_keys(schema, attribute))
                expr = json_get(self.model.data, keys)
                return (json_type(self.model.data, keys) == "object") & (expr != "{}")
            # Entra's legacy manager eq "id" means the value sub-attribute.
            sub = self.implied_value(attribute)
        return _condition(self.scalar(schema, attribute, sub), op, value)

    def implied_value(self, attribute):
        sub = attribute.sub("value")
        if sub is None:
            raise ScimError.invalid_filter(
                f"{attribute.name} is complex; name a sub-attribute to compare."
            )
        return sub

    def value_path(self, path, inner):
        schema, attribute, sub = self.resolve(path)
        if sub is not None or not attribute.complex:
            raise ScimError.invalid_filter(
                f"A value filter needs a complex attribute, not {str(path)!r}."
            )
        if attribute.multi_valued:
            return self.any_element(schema, attribute, inner)
        return _compile(inner, _ComplexScope(self, path))

    def any_element(self, schema, attribute, inner):
        """Return EXISTS over an attribute's elements matching ``inner``."""
        relation = self.relation(attribute)
        if relation is not None:
            return relation.exists(inner)
        keys = _json_keys(*self.json_keys(schema, attribute))
        alias = self.next_alias("je")
        condition = (
            true()
            if inner is None
            else _compile(inner, _JsonElementScope(attribute, alias))
        )
        return NodeList(
            (
                SQL("EXISTS (SELECT 1 FROM"),
                json_elements(self.model.data, keys, alias),
                SQL("WHERE"),
                condition,
                SQL(")"),
            )
        )

    def sort_key(self, path):
        schema, attribute, sub = self.resolve(path)
        if attribute.complex and sub is None:
            sub = self.implied_value(attribute)
        if not attribute.multi_valued:
            operand = self.scalar(schema, attribute, sub)
            if operand.expr is None:
                return self.model.id
            return _sortable(operand, operand.expr)
        if self.relation(attribute) is not None:
            raise ScimError.invalid_value(f"Cannot sort by {str(path)!r}.")
        # A multi-valued attribute sorts by its primary value, else its first.
        keys = _json_keys(*self.json_keys(schema, attribute))
        sub_key = _json_keys(sub.name) if sub else ()
        target = sub or attribute
        first = json_get(self.model.data, keys + (0,) + sub_key, target.type)
        operand = _Operand(first, target.type, target.case_exact, json=True)
        if attribute.sub("primary") is None:
            return _sortable(operand, first)
        alias = self.next_alias("je")
        primary = NodeList(
            (
                SQL("(SELECT"),
                (
                    element_member(alias, sub.name, target.type)
                    if sub
                    else element_value(alias, target.type)
                ),
                SQL("FROM"),
                json_elements(self.model.data, keys, alias),
                SQL("WHERE"),
                json_flag(element_member(alias, "primary", "boolean")),
                SQL("LIMIT 1)"),
            )
        )
        return _sortable(operand, fn.COALESCE(primary, first))


def _sortable(operand, expr):
    if operand.type in ("string", "reference", "binary") and not operand.case_exact:
        return expr if operand.nocase else nocase(expr)
    return expr


class _ElementScope:
    """Base for scopes whose paths name sub-attributes of one element."""

    def name(self, path):
        if path.urn is not None or path.sub is not None:
            raise ScimError.invalid_filter(
                f"{path} must name a sub-attribute inside a value filter."
            )
        return path.attr

    def value_path(self, path, inner):
        raise ScimError.invalid_filter("Value filters cannot be nested.")

    def leaf(self, path, op, value):
        return _condition(self.operand(self.name(path)), op, value)


class _JsonElementScope(_ElementScope):
    """Sub-attributes of a json_each element aliased ``alias``."""

    def __init__(self, attribute, alias):
        self.attribute = attribute
        self.alias = alias

    def operand(self, name):
        if not self.attribute.complex:
            if name.lower() != "value":
                raise ScimError.invalid_filter(
                    f"{self.attribute.name} has no {name!r}."
                )
            return _Operand(
                element_value(self.alias, self.attribute.type),
                self.attribute.type,
                self.attribute.case_exact,
                json=True,
            )
        sub = self.attribute.sub(name)
        if sub is None:
            raise ScimError.invalid_filter(
                f"{self.attribute.name} has no sub-attribute {name!r}."
            )
        expr = element_member(self.alias, sub.name, sub.type)
        return _Operand(expr, sub.type, sub.case_exact, json=True)


class _ComplexScope(_ElementScope):
    """Sub-attributes of a single-valued complex attribute: manager[value eq "x"]."""

    def __init__(self, parent, path):
        self.parent = parent
        self.path = path

    def leaf(self, path, op, value):
        full = Path(self.path.urn, self.path.attr, self.name(path))
        return self.parent.leaf(full, op, value)


class _RelationScope(_ElementScope):
    """Member or group sub-attributes backed by the columns of ``other``."""

    def __init__(self, other, constant_type):
        self.other = other
        self.constant_type = constant_type

    def operand(self, name):
        lowered = name.lower()
        if lowered == "value":
            return _Operand(self.other.scim_id, case_exact=True)
        if lowered == "display":
            return _Operand(self.other.display_name, nocase=True)
        if lowered == "type":
            return _Operand(None, constant=self.constant_type)
        raise ScimError.invalid_filter(f"{name!r} cannot be filtered here.")


class _LinkScope(_RelationScope):
    """User ``groups`` or Group ``members``: live rows joined through Membership."""

    def __init__(self, parent, other, near, far, constant_type):
        from ..models import Membership

        super().__init__(other.alias(parent.next_alias(far[0])), constant_type)
        self.parent = parent
        self.link = Membership.alias(parent.next_alias("m"))
        self.near = getattr(self.link, near)
        self.far = getattr(self.link, far)

    def exists(self, inner):
        other = self.other
        condition = (self.near == self.parent.model.id) & (
            other.deprovisioned_at.is_null()
        )
        if inner is not None:
            condition &= _compile(inner, self)
        query = (
            self.link.select(SQL("1"))
            .join(other, on=(self.far == other.id))
            .where(condition)
        )
        return fn.EXISTS(query)
