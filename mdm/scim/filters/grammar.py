"""Filter and PATCH path text (RFC 7644 §3.4.2.2, §3.5.2) parsed into an AST."""

import json
import math
import re
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import ScimError

MAX_LENGTH = 10_000
# Limits that keep every accepted filter compilable: SQLite's parser overflows
# at about 25 nested parentheses in the worst shapes (and/or/not/value paths
# alternating), and it refuses expression trees deeper than 1000, which a flat
# chain of comparisons approaches.
MAX_DEPTH = 16
# Every comparison is evaluated for every candidate row, so the terms of one
# filter multiply with the size of the directory. Identity providers send one
# or two (Entra: userName eq "x"; its membership check: id eq "g" and
# members eq "u").
MAX_TERMS = 100
# A comparison on a multi-valued attribute (emails[value co "x"], emails.value
# eq "x", members eq "u") is a subquery over the elements of every candidate
# row, several times the cost of a plain comparison.
MAX_VALUE_PATHS = 10
# A PATCH path's filter is tested against the values of one resource only.
MAX_PATH_TERMS = 500

COMPARE_OPS = ("eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le")
SUBSTRING_OPS = ("co", "sw", "ew")
ORDER_OPS = ("gt", "ge", "lt", "le")

# A word runs until whitespace or a structural character; paths, operators,
# keywords and bare values are all words, told apart by where they appear.
_WORD = re.compile(r'[^\s()\[\]"]+')
_SPACE = re.compile(r"\s*")
_NAME = r"(?:\$ref|[A-Za-z][A-Za-z0-9_-]*)"
_PATH = re.compile(
    rf"(?:(?P<urn>.+):)?(?P<attr>{_NAME})(?:\.(?P<sub>{_NAME}))?(?:\.(?P<leaf>{_NAME}))?"
)
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


def parse(text):
    """Parse a filter expression into an AST, or raise invalidFilter."""
    parser = _Parser(text, ScimError.invalid_filter, "filter", MAX_TERMS)
    node = parser.filter()
    parser.end()
    return node


# ``attr eq "text"`` with nothing to unescape: how identity providers look a
# resource up before creating it. JSON strings admit no raw control characters.
_SIMPLE_EQ = re.compile(
    r'\s*([A-Za-z]+)\s+eq\s+"([^"\\\x00-\x1f\ud800-\udfff]*)"\s*', re.IGNORECASE
)


def simple_eq(text):
    """Return (attribute, value) when ``text`` is one ``attr eq "value"``, else None."""
    # The attribute comes back as written; the caller decides which it
    # answers directly. Anything else, however equivalent, is left to parse().
    if len(text) > MAX_LENGTH:
        return None
    match = _SIMPLE_EQ.fullmatch(text)
    return match.groups() if match else None


def parse_path(text):
    """Parse a PATCH operation path into a PatchPath, or raise invalidPath."""
    parser = _Parser(text, ScimError.invalid_path, "path", MAX_PATH_TERMS)
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
    leaf = match.group("leaf")
    if leaf is not None:
        if urn is None:
            return None
        # urn:...:User.manager.value: a schema URN joined by a dot, as older
        # Entra sends it; the resource type reads urn:...:User.manager alike.
        return Path(f"{urn}:{match.group('attr')}", match.group("sub"), leaf)
    return Path(urn, match.group("attr"), match.group("sub"))


def _legacy_bare_word(path, op):
    """Tell whether an unquoted word is read as a string: ``externalId eq jyoung``."""
    # Microsoft's 2017 provisioning docs, still published, show this one
    # unquoted lookup; Entra itself quotes every value.
    return (
        op == "eq"
        and path.urn is None
        and path.sub is None
        and path.attr.lower() == "externalid"
    )


def _balance(kind, terms):
    # A long and/or chain becomes a balanced tree so that evaluating or
    # compiling it recurses log(n) deep rather than n deep.
    if len(terms) == 1:
        return terms[0]
    middle = (len(terms) + 1) // 2
    return kind(_balance(kind, terms[:middle]), _balance(kind, terms[middle:]))


class _Parser:
    """A recursive-descent parser over the raw text (no separate token stream)."""

    def __init__(self, text, error, what, max_terms):
        self.error = error
        self.what = what
        self.max_terms = max_terms
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
        if self.terms > self.max_terms:
            raise self.error(
                f"The {self.what} has more than {self.max_terms} comparisons; "
                f"at most {self.max_terms} are accepted."
            )
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
        return Compare(path, op, self.value(path, op))

    def value(self, path, op):
        self.skip()
        if self.peek() == '"':
            try:
                value, self.pos = _DECODER.raw_decode(self.text, self.pos)
            except ValueError as exc:
                # json's messages end in "at", followed by a position it keeps
                # apart: say it once, ours, where the problem is.
                self.pos = getattr(exc, "pos", self.pos)
                problem = getattr(exc, "msg", str(exc)).removesuffix(" at")
                problem = problem.replace(
                    "Unterminated string starting", "unterminated string"
                )
                self.fail(problem[:1].lower() + problem[1:])
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                self.fail("string contains an unpaired surrogate escape")
            return value
        start = self.pos
        word = self.word()
        if word is None:
            self.fail("expected a value")
        lowered = word.lower()
        if lowered in _KEYWORDS:
            return _KEYWORDS[lowered]
        match = _NUMBER.fullmatch(word)
        if match is None:
            if _legacy_bare_word(path, op):
                return word
            # RFC 7644 §3.4.2.2 admits strings only in quotes; reading a bare
            # word as one would hide a client's mistake behind "no match".
            self.pos = start
            self.fail(f"unquoted {word[:40]!r}: a string must be in double quotes")
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
