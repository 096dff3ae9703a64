"""Tests for SCIM filter parsing, evaluation and SQL compilation (RFC 7644 §3.4.2.2)."""

import json
import random
from datetime import datetime

import pytest

from mdm.db import database
from mdm.db import ordering
from mdm.models import Group
from mdm.models import Membership
from mdm.models import User
from mdm.models import migrate
from mdm.models import mirror_user
from mdm.scim import filters
from mdm.scim.errors import ScimError
from mdm.scim.filters import And
from mdm.scim.filters import Compare
from mdm.scim.filters import Not
from mdm.scim.filters import Or
from mdm.scim.filters import PatchPath
from mdm.scim.filters import Path
from mdm.scim.filters import Present
from mdm.scim.filters import ValuePath
from mdm.scim.filters import matches
from mdm.scim.filters import member_expression
from mdm.scim.filters import parse
from mdm.scim.filters import parse_path
from mdm.scim.filters import sort_expression
from mdm.scim.filters import to_expression
from mdm.scim.schema import ENTERPRISE_SCHEMA
from mdm.scim.schema import GROUP_TYPE
from mdm.scim.schema import Attribute
from mdm.scim.schema import user_type

from .conftest import ENGINE
from .conftest import bind_test_database

ENT = ENTERPRISE_SCHEMA
CUSTOM = "urn:example:params:scim:schemas:extension:custom:2.0:User"
USER_TYPE = user_type(
    CUSTOM, [("badge", "integer"), ("remote", "boolean"), ("site", "string")]
)
EMAILS = USER_TYPE.core.attribute("emails")


def p(attr, sub=None, urn=None):
    return Path(urn, attr, sub)


def eq(attr, value):
    return Compare(p(attr), "eq", value)


# --------------------------------------------------------------------------
# Parser

PARSE_CASES = [
    ('userName eq "bjensen"', eq("userName", "bjensen")),
    ('userName EQ "bjensen"', eq("userName", "bjensen")),
    ('title ne "x"', Compare(p("title"), "ne", "x")),
    (
        'name.familyName co "O\'Malley"',
        Compare(p("name", "familyName"), "co", "O'Malley"),
    ),
    ('userName Sw "J"', Compare(p("userName"), "sw", "J")),
    ('userName ew "n"', Compare(p("userName"), "ew", "n")),
    ("title pr", Present(p("title"))),
    ("title PR", Present(p("title"))),
    (
        'meta.lastModified gt "2011-05-13T04:42:34Z"',
        Compare(p("meta", "lastModified"), "gt", "2011-05-13T04:42:34Z"),
    ),
    ('meta.lastModified ge "x"', Compare(p("meta", "lastModified"), "ge", "x")),
    ('meta.lastModified lt "x"', Compare(p("meta", "lastModified"), "lt", "x")),
    ('meta.lastModified le "x"', Compare(p("meta", "lastModified"), "le", "x")),
    ("badge gt 5", Compare(p("badge"), "gt", 5)),
    ("badge gt -1.5e2", Compare(p("badge"), "gt", -150.0)),
    ("active eq TRUE", eq("active", True)),
    ("active eq false", eq("active", False)),
    ("title eq Null", eq("title", None)),
    ('userName eq "a\\"b\\\\c\\u00e9\\n"', eq("userName", 'a"b\\cé\n')),
    ('userName eq ""', eq("userName", "")),
    ("externalId eq jyoung", eq("externalId", "jyoung")),
    ("externalId eq 00123", eq("externalId", "00123")),
    ("externalId eq a@b.c", eq("externalId", "a@b.c")),
    (
        'title pr and userType eq "Employee"',
        And(Present(p("title")), eq("userType", "Employee")),
    ),
    (
        'title pr or userType eq "Intern"',
        Or(Present(p("title")), eq("userType", "Intern")),
    ),
    (
        "a pr or b pr and c pr",
        Or(Present(p("a")), And(Present(p("b")), Present(p("c")))),
    ),
    (
        "a pr and b pr or c pr",
        Or(And(Present(p("a")), Present(p("b"))), Present(p("c"))),
    ),
    (
        "(a pr or b pr) and c pr",
        And(Or(Present(p("a")), Present(p("b"))), Present(p("c"))),
    ),
    (
        "a pr and b pr and c pr",
        And(And(Present(p("a")), Present(p("b"))), Present(p("c"))),
    ),
    ("not(a pr)", Not(Present(p("a")))),
    ("NOT (a pr)", Not(Present(p("a")))),
    ("not (a pr) and b pr", And(Not(Present(p("a"))), Present(p("b")))),
    ("not (not (a pr))", Not(Not(Present(p("a"))))),
    ("((a pr))", Present(p("a"))),
    ("  a pr  ", Present(p("a"))),
    ("not pr", Present(p("not"))),
    (
        'emails[type eq "work" and value co "@example.com"]',
        ValuePath(
            p("emails"),
            And(eq("type", "work"), Compare(p("value"), "co", "@example.com")),
        ),
    ),
    (
        'emails[type eq "work"].value eq "x"',
        ValuePath(p("emails"), And(eq("type", "work"), eq("value", "x"))),
    ),
    (
        'emails[type eq "work"].value pr',
        ValuePath(p("emails"), And(eq("type", "work"), Present(p("value")))),
    ),
    (
        'emails[not (type eq "work")]',
        ValuePath(p("emails"), Not(eq("type", "work"))),
    ),
    (
        'members[value eq "x" or value eq "y"]',
        ValuePath(p("members"), Or(eq("value", "x"), eq("value", "y"))),
    ),
    (
        'userType eq "Employee" and emails[type eq "work" and value co "@x"]',
        And(
            eq("userType", "Employee"),
            ValuePath(
                p("emails"), And(eq("type", "work"), Compare(p("value"), "co", "@x"))
            ),
        ),
    ),
    (
        f'{ENT}:department eq "Sales"',
        Compare(p("department", urn=ENT), "eq", "Sales"),
    ),
    (
        f'{ENT}:manager.value eq "42"',
        Compare(p("manager", "value", ENT), "eq", "42"),
    ),
    (
        "urn:ietf:params:scim:schemas:core:2.0:User:name.givenName pr",
        Present(p("name", "givenName", "urn:ietf:params:scim:schemas:core:2.0:User")),
    ),
    ('members[$ref eq "x"]', ValuePath(p("members"), eq("$ref", "x"))),
    ("user_name-2 pr", Present(p("user_name-2"))),
    ('userName eq "a"and title pr', And(eq("userName", "a"), Present(p("title")))),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES)
def test_parse(text, expected):
    assert parse(text) == expected


def test_parse_keeps_value_types():
    assert parse("badge eq 5").value.__class__ is int
    assert parse("badge eq 5.0").value.__class__ is float
    assert parse("active eq true").value is True


INVALID_FILTERS = [
    "",
    "   ",
    "userName",
    "userName eq",
    'userName xx "a"',
    'userName equals "a"',
    'userName eq "a" and',
    'userName eq "a" or',
    'userName eq "a" and (',
    '(userName eq "a"',
    'userName eq "a")',
    "()",
    'not userName eq "a"',
    "not (",
    'userName eq "unterminated',
    'userName eq "bad \\x escape"',
    'userName eq "\\ud800"',
    'userName eq "a" "b"',
    'userName eq "a" xor title pr',
    'emails[type eq "work"',
    'emails[type eq "work"]]',
    'emails[type eq "work"][value eq "x"]',
    'emails[value[type eq "x"] eq "y"]',
    'emails.value[type eq "x"]',
    'emails[type eq "work"].value',
    'emails[type eq "work"].1x eq "y"',
    'emails[type eq "work"]. eq "y"',
    "emails[]",
    '1abc eq "x"',
    '"userName" eq "x"',
    'user name eq "x"',
    'name.givenName.x eq "x"',
    'notaurn:foo:bar eq "x"',
    "userName eq 1e999",
    "userName pr pr",
    "userName eq [1]",
    "title pr and and title pr",
    "(" * 60 + "title pr" + ")" * 60,
    "not (" * 60 + "title pr" + ")" * 60,
    "id pr or " * 1000 + "id pr",
    # Unquoted words are strings only in the legacy externalId eq lookup.
    "userName eq abc",
    "externalId ne abc",
    "externalId co abc",
    "emails[value eq bare]",
    'emails[type eq work].value eq "x"',
    "title eq x and userName pr",
    "(" * 17 + "title pr" + ")" * 17,
    None,
    42,
]


@pytest.mark.parametrize("text", INVALID_FILTERS)
def test_parse_rejects(text):
    with pytest.raises(ScimError) as exc:
        parse(text)
    assert exc.value.scim_type == "invalidFilter"
    assert exc.value.status == 400
    assert exc.value.detail


@pytest.mark.parametrize(
    "text, detail",
    [
        ('userName eq "unterminated', "unterminated string at position 13"),
        ('userName eq "bad \\x escape"', "invalid \\escape at position 18"),
        ('userName eq "a\tb"', "invalid control character at position 15"),
    ],
)
def test_a_bad_string_is_named_once_with_its_position(text, detail):
    with pytest.raises(ScimError) as exc:
        parse(text)
    assert exc.value.detail == f"Invalid filter: {detail}."


def test_error_message_points_at_position():
    with pytest.raises(ScimError) as exc:
        parse('userName zz "x"')
    assert "'zz'" in exc.value.detail
    assert "position 10" in exc.value.detail


def test_nesting_at_the_limit_is_accepted():
    text = "(" * filters.MAX_DEPTH + "title pr" + ")" * filters.MAX_DEPTH
    assert parse(text) == Present(p("title"))


def test_long_chains_are_balanced():
    node = parse(" and ".join(["title pr"] * filters.MAX_TERMS))

    def depth(n):
        if isinstance(n, And | Or):
            return 1 + max(depth(n.left), depth(n.right))
        return 1

    assert depth(node) <= 12


FUZZ_PIECES = [
    "userName", "emails", "members", "value", "type", f"{ENT}:manager", "name.",
    "[", "]", "(", ")", ".", "and", "or", "not", "eq", "ne", "co", "pr", "gt",
    '"x"', '"', "\\", "\\u12", "5", "-", "1e5", "true", "null", " ", " ", " ",
    "urn:", ":", "$ref", "%", "_", "\u00e9", "\x00", "\t",
]  # fmt: skip


def mutate(rng, text):
    """Return ``text`` with a few random insertions, deletions and replacements."""
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(text) + 1)
        cut = at + rng.randrange(3)
        insert = rng.choice(FUZZ_PIECES) if rng.random() < 0.7 else ""
        text = text[:at] + insert + text[cut:]
    return text


def exercise(node):
    """Compile, run and evaluate ``node`` every way; only SCIM 400s may escape."""
    checks = (
        lambda: list(User.live().where(to_expression(node, USER_TYPE))),
        lambda: list(Group.live().where(to_expression(node, GROUP_TYPE))),
        lambda: list(User.select().where(member_expression(node))),
        lambda: matches(node, {"value": "x", "type": "work"}, EMAILS),
        lambda: matches(node, {"value": "x"}),
    )
    for check in checks:
        try:
            check()
        except ScimError as exc:
            assert exc.status == 400


def test_fuzz_raises_only_scim_errors(db):
    rng = random.Random(7644)
    seeds = [text for text, _ in PARSE_CASES + USER_FILTERS + GROUP_FILTERS]
    accepted = 0
    for _ in range(3000):
        roll = rng.random()
        if roll < 0.1:
            text = "".join(chr(rng.randrange(0x3000)) for _ in range(rng.randrange(30)))
        elif roll < 0.2:
            text = "".join(rng.choice(FUZZ_PIECES) for _ in range(rng.randrange(15)))
        else:
            text = mutate(rng, rng.choice(seeds))
        try:
            node = parse(text)
        except ScimError as exc:
            assert exc.scim_type == "invalidFilter"
            continue
        accepted += 1
        exercise(node)
        try:
            parse_path(text)
        except ScimError as exc:
            assert exc.scim_type == "invalidPath"
    assert accepted > 300


# --------------------------------------------------------------------------
# PATCH paths

PATCH_PATHS = [
    ("userName", PatchPath(p("userName"))),
    ("name.givenName", PatchPath(p("name", "givenName"))),
    (f"{ENT}:manager", PatchPath(p("manager", urn=ENT))),
    (f"{ENT}:manager.value", PatchPath(p("manager", "value", ENT))),
    ('members[value eq "x"]', PatchPath(p("members"), eq("value", "x"))),
    (
        'emails[type eq "work"].value',
        PatchPath(p("emails"), eq("type", "work"), "value"),
    ),
    (
        'roles[primary eq "True"].value',
        PatchPath(p("roles"), eq("primary", "True"), "value"),
    ),
    (
        'emails[type eq "work" and primary eq true]',
        PatchPath(p("emails"), And(eq("type", "work"), eq("primary", True))),
    ),
    ("  title  ", PatchPath(p("title"))),
]


@pytest.mark.parametrize(("text", "expected"), PATCH_PATHS)
def test_parse_path(text, expected):
    assert parse_path(text) == expected


def test_patch_path_unpacks():
    path, value_filter, sub = parse_path('emails[type eq "work"].value')
    assert (str(path), value_filter, sub) == ("emails", eq("type", "work"), "value")
    assert str(parse_path(f"{ENT}:manager.value").path) == f"{ENT}:manager.value"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "emails[",
        'emails[type eq "work"',
        'emails[type eq "work"].',
        'emails[type eq "work"].value.x',
        'emails[type eq "work"] extra',
        "emails[type eq]",
        "name.givenName.x",
        "name givenName",
        'emails[type eq "work"] and title pr',
        "1emails",
        None,
    ],
)
def test_parse_path_rejects(text):
    with pytest.raises(ScimError) as exc:
        parse_path(text)
    assert exc.value.scim_type == "invalidPath"
    assert exc.value.status == 400


# --------------------------------------------------------------------------
# Evaluating against one element

KEYS = Attribute(
    "keys",
    "complex",
    multi_valued=True,
    sub_attributes=(
        Attribute("value", case_exact=True),
        Attribute("size", "integer"),
        Attribute("issued", "dateTime"),
    ),
)
WORK = {"type": "work", "value": "Babs@Example.com", "primary": True}


@pytest.mark.parametrize(
    ("text", "item", "attribute", "expected"),
    [
        ('type eq "WORK"', WORK, EMAILS, True),
        ('type eq "home"', WORK, EMAILS, False),
        ('value co "example.COM"', WORK, EMAILS, True),
        ('value sw "babs"', WORK, EMAILS, True),
        ('value ew ".com"', WORK, EMAILS, True),
        ('value gt "a"', WORK, EMAILS, True),
        ('primary eq "True"', WORK, EMAILS, True),
        ('primary eq "true"', WORK, EMAILS, True),
        ('primary eq "False"', WORK, EMAILS, False),
        ("primary eq true", {"primary": "True"}, EMAILS, True),
        ("primary eq false", {"type": "home"}, EMAILS, False),
        ("primary ne true", {"type": "home"}, EMAILS, True),
        ("primary pr", {"type": "home"}, EMAILS, False),
        ("display eq null", WORK, EMAILS, True),
        ("type ne null", WORK, EMAILS, True),
        ("value pr", {"value": ""}, EMAILS, False),
        ('TYPE eq "work"', {"Type": "work"}, EMAILS, True),
        ('type eq "work" and not (primary eq false)', WORK, EMAILS, True),
        ('type eq "home" or value co "@"', WORK, EMAILS, True),
        ('value eq "abc"', {"value": "ABC"}, KEYS, False),
        ('value eq "ABC"', {"value": "ABC"}, KEYS, True),
        ('value co "b"', {"value": "ABC"}, KEYS, False),
        ("size gt 9", {"size": 10}, KEYS, True),
        ('size le "10"', {"size": 10}, KEYS, True),
        (
            'issued gt "2020-01-01T00:00:00Z"',
            {"issued": "2021-01-01T00:00:00Z"},
            KEYS,
            True,
        ),
        (
            'issued lt "2020-01-01T01:00:00+02:00"',
            {"issued": "2019-12-31T23:30:00Z"},
            KEYS,
            False,
        ),
        ('type eq "work"', WORK, None, True),
        ('primary eq "True"', WORK, None, True),
        ('primary eq "maybe"', WORK, None, False),
        ('value eq "X"', "x", None, True),
    ],
)
def test_matches(text, item, attribute, expected):
    assert matches(parse(text), item, attribute) is expected


@pytest.mark.parametrize(
    "text",
    [
        'nope eq "x"',
        'emails[type eq "x"]',
        "primary gt true",
        'primary co "t"',
        'primary eq "maybe"',
        "type gt null",
        f'{ENT}:type eq "x"',
        'type.sub eq "x"',
    ],
)
def test_matches_rejects(text):
    with pytest.raises(ScimError) as exc:
        matches(parse(text), WORK, EMAILS)
    assert exc.value.scim_type == "invalidFilter"


# --------------------------------------------------------------------------
# SQL compilation against real tables


@pytest.fixture(params=["stored", "before schema 13"])
def db(request, tmp_path):
    bind_test_database(tmp_path / "filters.db")
    with database.connection_context():
        migrate()
        yield seed(whole=request.param != "stored")


def make_user(user_name, created, data, whole=False, **columns):
    """Store a user as mirror_user does; ``whole`` keeps the mirrored text in data too."""
    user = User(created=created, last_modified=created, **columns)
    document = {"userName": user_name, **data}
    mirror_user(user, document)
    if whole:
        # As schema 12 stored it: filters read the same whichever it is.
        user.data = json.dumps(document)
    user.save(force_insert=True)
    return user


def seed(whole=False):
    bjensen = make_user(
        "bjensen",
        datetime(2015, 1, 1, 8, 30),
        {
            "externalId": "ext-Bj",
            "displayName": "Barbara Jensen",
            "name": {
                "formatted": "Ms. Barbara J Jensen",
                "givenName": "Barbara",
                "familyName": "Jensen",
            },
            "title": "Tour Guide",
            "emails": [
                {"type": "work", "value": "bjensen@example.com", "primary": True},
                {"type": "home", "value": "babs@jensen.org"},
            ],
            "roles": [{"value": "admin", "primary": True}],
            ENT: {"department": "Sales", "manager": {"value": "mgr-1"}},
            CUSTOM: {"badge": 42, "remote": True, "site": "Oslo"},
        },
        whole=whole,
        scim_id="u-bjensen",
    )
    jsmith = make_user(
        "JSmith",
        datetime(2020, 6, 1, 12, 0),
        {
            "externalId": "ext-100%",
            "displayName": "John Smith",
            "name": {"givenName": "John", "familyName": "Smith"},
            "active": False,
            "emails": [{"type": "home", "value": "john@EXAMPLE.com"}],
            ENT: {"department": "Engineering"},
            CUSTOM: {"badge": 7, "remote": False},
        },
        whole=whole,
        scim_id="u-jsmith",
    )
    make_user(
        "a_b",
        datetime(2025, 3, 3, 3, 3, 3, 500000),
        {
            "externalId": "ext_1",
            "displayName": "Under Score",
            "title": "",
            "emails": [],
        },
        whole=whole,
        scim_id="u-ab",
    )
    percent = make_user(
        "100%done",
        datetime(2026, 1, 1),
        {"externalId": "EXT-BJ", "emails": [{"type": "work", "value": "p@x.org"}]},
        whole=whole,
        scim_id="u-percent",
    )
    ghost = make_user(
        "ghost",
        datetime(2016, 1, 1),
        {"title": "Tour Guide", "emails": [{"type": "work", "value": "g@example.com"}]},
        whole=whole,
        scim_id="u-ghost",
        deprovisioned_at=datetime(2026, 2, 2),
    )
    admins = Group.create(scim_id="g-admins", display_name="Admins", external_id="A1")
    sales = Group.create(scim_id="g-sales", display_name="Sales 100%")
    old = Group.create(
        scim_id="g-old", display_name="Old", deprovisioned_at=datetime(2026, 1, 1)
    )
    for group, user in [
        (admins, bjensen),
        (admins, jsmith),
        (admins, ghost),
        (sales, bjensen),
        (old, percent),
    ]:
        Membership.create(group=group, user=user)
    return {"admins": admins}


def users(text):
    query = User.live().where(to_expression(parse(text), USER_TYPE))
    return {user.user_name for user in query}


def groups(text):
    query = Group.live().where(to_expression(parse(text), GROUP_TYPE))
    return {group.display_name for group in query}


EVERYONE = {"bjensen", "JSmith", "a_b", "100%done"}

USER_FILTERS = [
    ('userName eq "BJENSEN"', {"bjensen"}),
    ('userName eq "ghost"', set()),
    ('userName ne "bjensen"', EVERYONE - {"bjensen"}),
    ('userName co "%"', {"100%done"}),
    ('userName co "_"', {"a_b"}),
    ('userName sw "j"', {"JSmith"}),
    ('userName ew "SEN"', {"bjensen"}),
    ('userName gt "B"', {"bjensen", "JSmith"}),
    ('userName le "a_b"', {"a_b", "100%done"}),
    ('id eq "u-jsmith"', {"JSmith"}),
    ('id eq "U-JSMITH"', set()),
    ('externalId eq "ext-Bj"', {"bjensen"}),
    ('externalId eq "ext-bj"', set()),
    ("externalId eq ext_1", {"a_b"}),
    ('externalId co "100%"', {"JSmith"}),
    ('externalId co "%"', {"JSmith"}),
    ('externalId sw "ext_"', {"a_b"}),
    ('externalId sw "EXT"', {"100%done"}),
    ('externalId ew "BJ"', {"100%done"}),
    ('externalId ew ""', EVERYONE),
    ('displayName co "smith"', {"JSmith"}),
    ('name.givenName eq "barbara"', {"bjensen"}),
    ('name.familyName sw "SM"', {"JSmith"}),
    ('name.formatted co "ms."', {"bjensen"}),
    ('name[givenName eq "John"]', {"JSmith"}),
    ("name pr", {"bjensen", "JSmith"}),
    ("not (name pr)", {"a_b", "100%done"}),
    ('name pr and name.givenName sw "J"', {"JSmith"}),
    ('title sw "TOUR"', {"bjensen"}),
    ("title pr", {"bjensen"}),
    ("not (title pr)", {"JSmith", "a_b", "100%done"}),
    ("title eq null", {"JSmith", "a_b", "100%done"}),
    ("title ne null", {"bjensen"}),
    ('title eq "tour guide"', {"bjensen"}),
    ('title ne "tour guide"', {"JSmith", "a_b", "100%done"}),
    ('not (title eq "tour guide")', {"JSmith", "a_b", "100%done"}),
    ("active eq true", {"bjensen", "a_b", "100%done"}),
    ('active eq "False"', {"JSmith"}),
    ("active ne false", {"bjensen", "a_b", "100%done"}),
    ("emails pr", {"bjensen", "JSmith", "100%done"}),
    ("not (emails pr)", {"a_b"}),
    ('emails co "example.com"', {"bjensen", "JSmith"}),
    ('emails eq "P@X.ORG"', {"100%done"}),
    ('emails.type eq "home"', {"bjensen", "JSmith"}),
    ('emails.type ne "work"', {"bjensen", "JSmith"}),
    ('emails[type eq "work" and value co "@example"]', {"bjensen"}),
    ('emails[type eq "work"].value eq "p@x.org"', {"100%done"}),
    ('emails[type eq "home" and primary eq true]', set()),
    ('emails[primary eq "True"]', {"bjensen"}),
    ("emails[not (primary eq true)]", {"bjensen", "JSmith", "100%done"}),
    ('roles[primary eq "True"].value eq "admin"', {"bjensen"}),
    (f'{ENT}:department eq "sales"', {"bjensen"}),
    (f'{ENT.upper()}:DEPARTMENT eq "sales"', {"bjensen"}),
    (f"{ENT}:department pr", {"bjensen", "JSmith"}),
    (f'{ENT}:manager eq "mgr-1"', {"bjensen"}),
    (f'{ENT}:manager.value eq "MGR-1"', {"bjensen"}),
    (f"{ENT}:manager pr", {"bjensen"}),
    ('manager eq "mgr-1"', {"bjensen"}),
    ('id eq "u-bjensen" and manager eq "mgr-1"', {"bjensen"}),
    ('id eq "u-jsmith" and manager eq "mgr-1"', set()),
    ('department eq "engineering"', {"JSmith"}),
    ("badge lt 10", {"JSmith"}),
    (f'{ENT}:manager[value sw "mgr"]', {"bjensen"}),
    (f"{CUSTOM}:badge gt 10", {"bjensen"}),
    (f'{CUSTOM}:badge le "7"', {"JSmith"}),
    (f"{CUSTOM}:remote eq true", {"bjensen"}),
    (f'{CUSTOM}:remote eq "False"', {"JSmith"}),
    (f'{CUSTOM}:site eq "OSLO"', {"bjensen"}),
    ('meta.created gt "2019-01-01T00:00:00Z"', {"JSmith", "a_b", "100%done"}),
    ('meta.created eq "2020-06-01T12:00:00Z"', {"JSmith"}),
    ('meta.created eq "2020-06-01T14:00:00.000+02:00"', {"JSmith"}),
    ('meta.created lt "2020-06-01T14:00:00+02:00"', {"bjensen"}),
    ('meta.created le "2020-06-01T14:00:00+02:00"', {"bjensen", "JSmith"}),
    ('meta.created gt "2025-03-03T03:03:03Z"', {"a_b", "100%done"}),
    ('meta.created gt "2025-03-03T03:03:03.6Z"', {"100%done"}),
    ('meta.lastModified ge "2026-01-01T00:00:00Z"', {"100%done"}),
    ('meta.resourceType eq "User"', EVERYONE),
    ('groups eq "g-admins"', {"bjensen", "JSmith"}),
    ('groups.value eq "g-sales"', {"bjensen"}),
    ('groups.display co "100%"', {"bjensen"}),
    ('groups[display eq "old"]', set()),
    ("groups pr", {"bjensen", "JSmith"}),
    ("not (groups pr)", {"a_b", "100%done"}),
    ('groups[type eq "direct" and value eq "g-admins"]', {"bjensen", "JSmith"}),
    ('userName eq "a_b" or userName eq "JSMITH"', {"a_b", "JSmith"}),
    ('userName eq "a_b" or userName eq "bjensen" and active eq false', {"a_b"}),
    (
        '(userName eq "a_b" or userName eq "bjensen") and active eq true',
        {"a_b", "bjensen"},
    ),
    ('not (userName eq "a_b" or emails pr)', set()),
    ('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "a_b"', {"a_b"}),
    ('urn:ietf:params:scim:schemas:core:2.0:User:id eq "u-ab"', {"a_b"}),
]


@pytest.mark.parametrize(("text", "expected"), USER_FILTERS)
def test_user_filters(db, text, expected):
    assert users(text) == expected


GROUP_FILTERS = [
    ('displayName eq "admins"', {"Admins"}),
    ('displayName co "%"', {"Sales 100%"}),
    ('externalId eq "A1"', {"Admins"}),
    ('members eq "u-bjensen"', {"Admins", "Sales 100%"}),
    ('members.value eq "u-ghost"', set()),
    ('id eq "g-admins" and members eq "u-jsmith"', {"Admins"}),
    ('id eq "g-sales" and members eq "u-jsmith"', set()),
    ('members[value eq "nobody" or display co "smith"]', {"Admins"}),
    ('members.display eq "barbara jensen"', {"Admins", "Sales 100%"}),
    ('members.type eq "User"', {"Admins", "Sales 100%"}),
    ('members.type eq "Group"', set()),
    ("members pr", {"Admins", "Sales 100%"}),
    ('meta.created lt "2100-01-01"', {"Admins", "Sales 100%"}),
]


@pytest.mark.parametrize(("text", "expected"), GROUP_FILTERS)
def test_group_filters(db, text, expected):
    assert groups(text) == expected


@pytest.mark.parametrize(
    ("text", "resource_type"),
    [
        ('nope eq "x"', USER_TYPE),
        ('emails.nope eq "x"', USER_TYPE),
        ('userName eq "x"', GROUP_TYPE),
        ('urn:example:unknown:2.0:User:x eq "x"', USER_TYPE),
        ("active gt true", USER_TYPE),
        ('active co "t"', USER_TYPE),
        ('active eq "yes"', USER_TYPE),
        ('name eq "x"', USER_TYPE),
        ('addresses eq "x"', USER_TYPE),
        ('meta eq "x"', USER_TYPE),
        ('meta.version eq "x"', USER_TYPE),
        ('meta.created gt "yesterday"', USER_TYPE),
        ("meta.created gt 5", USER_TYPE),
        ('meta.created co "2020"', USER_TYPE),
        ('password eq "secret"', USER_TYPE),
        ("userName gt null", USER_TYPE),
        ('userName[value eq "x"]', USER_TYPE),
        (f'{CUSTOM}:badge co "4"', USER_TYPE),
        (f'{CUSTOM}:badge eq "four"', USER_TYPE),
        ('emails[value.x eq "y"]', USER_TYPE),
        ('groups[$ref eq "x"]', USER_TYPE),
        ('members[nope eq "x"]', GROUP_TYPE),
    ],
)
def test_compile_rejects(text, resource_type):
    with pytest.raises(ScimError) as exc:
        to_expression(parse(text), resource_type)
    assert exc.value.scim_type == "invalidFilter"
    assert exc.value.status == 400


def test_deprovisioned_rows_are_filtered_by_the_caller(db):
    expression = to_expression(parse('title eq "Tour Guide"'), USER_TYPE)
    everyone = {user.user_name for user in User.select().where(expression)}
    assert everyone == {"bjensen", "ghost"}
    assert {user.user_name for user in User.live().where(expression)} == {"bjensen"}


def test_member_expression(db):
    def removed(text):
        query = (
            Membership.select(Membership, User)
            .join(User)
            .where((Membership.group == db["admins"]) & member_expression(parse(text)))
        )
        return {membership.user.user_name for membership in query}

    assert removed('value eq "u-jsmith" or value eq "u-ghost"') == {"JSmith", "ghost"}
    assert removed('display co "jensen"') == {"bjensen"}
    assert removed('type eq "User"') == {"bjensen", "JSmith", "ghost"}
    assert removed('not (value eq "u-bjensen")') == {"JSmith", "ghost"}
    with pytest.raises(ScimError):
        member_expression(parse('members[value eq "x"]'))


def test_long_filters_compile_and_run(db):
    assert users(" or ".join(["id pr"] * filters.MAX_TERMS)) == EVERYONE
    with pytest.raises(ScimError):
        parse(" or ".join(["id pr"] * (filters.MAX_TERMS + 1)))
    deep = filters.MAX_DEPTH
    terms = ['userName eq "a_b"'] * filters.MAX_TERMS
    nested = "(" * deep + " or ".join(terms) + ")" * deep
    assert users(nested) == {"a_b"}


def nested(depth, leaf, templates):
    """Wrap ``leaf`` in ``depth`` levels, cycling through the templates."""
    text = leaf
    for level in range(depth):
        text = templates[level % len(templates)].format(text)
    return text


# Alternating and/or/not with a value path at the bottom is the shape that
# nests SQL deepest; it must still run at the parser's depth limit.
INNER = ("not (type pr or {})", '(value co "x" and {})')
OUTER = ("not (title pr or {})", "(title pr and {})", '(userName sw "b" or {})')


@pytest.mark.parametrize(
    "bottom",
    ["emails[{}]", "groups[{}]", f"{ENT}:manager[{{}}]", "name[{}]"],
)
def test_deepest_accepted_user_filter_runs(db, bottom):
    leaf = "primary eq true" if bottom.startswith("emails") else "value pr"
    if bottom.startswith("name"):
        leaf = "givenName pr"
    inner = nested(4, leaf, INNER).replace("type pr", leaf)
    if bottom.startswith("name"):
        inner = inner.replace("value", "familyName")
    text = nested(filters.MAX_DEPTH - 5, bottom.format(inner), OUTER)
    User.live().where(to_expression(parse(text), USER_TYPE)).count()
    with pytest.raises(ScimError):
        parse(f"({text})")


def test_deepest_accepted_group_and_member_filters_run(db):
    inner = nested(4, 'display co "x"', INNER).replace("type pr", "value pr")
    text = nested(
        filters.MAX_DEPTH - 5,
        f"members[{inner}]",
        [template.replace("title", "displayName") for template in OUTER],
    ).replace("userName", "externalId")
    Group.live().where(to_expression(parse(text), GROUP_TYPE)).count()
    members = nested(filters.MAX_DEPTH, 'display co "x"', INNER)
    members = members.replace("type pr", "value pr")
    (Membership.select().join(User).where(member_expression(parse(members))).count())


def test_aliases_are_unique_per_subquery():
    sql, _ = (
        User.select()
        .where(to_expression(parse("emails pr and roles pr and groups pr"), USER_TYPE))
        .sql()
    )
    assert sql.count("AS je1") == 1
    assert sql.count("AS je2") == 1


def assert_uses_index(query):
    """Assert the engine answers ``query`` through an index, never a full scan."""
    sql, params = query.sql()
    if ENGINE == "sqlite":
        rows = database.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        detail = " | ".join(row[-1] for row in rows)
        assert "USING INDEX" in detail or "USING COVERING INDEX" in detail, detail
        assert "SCAN" not in detail, detail
        return
    # A few seeded rows make a sequential scan cheapest; forbidding it shows
    # whether an index can answer at all, which is what matters at scale.
    with database.atomic():
        database.execute_sql("SET LOCAL enable_seqscan = off")
        rows = database.execute_sql("EXPLAIN " + sql, params).fetchall()
    detail = " | ".join(row[0] for row in rows)
    assert "Index Scan" in detail or "Index Only Scan" in detail, detail
    assert "Seq Scan" not in detail, detail


@pytest.mark.parametrize(
    "text",
    ['userName eq "BJensen"', 'externalId eq "ext-Bj"', 'id eq "u-ab"'],
)
def test_user_lookups_use_an_index(db, text):
    assert_uses_index(User.live().where(to_expression(parse(text), USER_TYPE)))


def test_group_display_name_uses_an_index(db):
    query = Group.live().where(
        to_expression(parse('displayName eq "admins"'), GROUP_TYPE)
    )
    assert_uses_index(query)


def query_plan(query):
    """Return the engine's plan for ``query`` as one line of text."""
    sql, params = query.sql()
    if ENGINE == "sqlite":
        rows = database.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return " | ".join(row[-1] for row in rows)
    with database.atomic():
        database.execute_sql("SET LOCAL enable_seqscan = off")
        rows = database.execute_sql("EXPLAIN " + sql, params).fetchall()
    return " | ".join(row[0] for row in rows)


@pytest.mark.parametrize("model", [User, Group])
def test_deep_list_pages_walk_the_live_id_index(db, model):
    # The unsorted page views.search runs: its OFFSET steps through the small
    # partial index of live ids, never the table's rows.
    query = model.live().order_by(model.id).offset(99899).limit(100)
    name = "user_live_id" if model is User else "group_live_id"
    assert name in query_plan(query)


# --------------------------------------------------------------------------
# sortBy


def sorted_names(path, resource_type=USER_TYPE):
    query = User.live().order_by(
        ordering(sort_expression(path, resource_type)), User.id
    )
    return [user.user_name for user in query]


def test_sort_by_columns_and_json(db):
    assert sorted_names("userName") == ["100%done", "a_b", "bjensen", "JSmith"]
    assert sorted_names("meta.created") == ["bjensen", "JSmith", "a_b", "100%done"]
    assert sorted_names("name.familyName") == ["a_b", "100%done", "bjensen", "JSmith"]
    assert sorted_names(f"{ENT}:department")[2:] == ["JSmith", "bjensen"]
    assert sorted_names(f"{CUSTOM}:badge")[2:] == ["JSmith", "bjensen"]
    # Multi-valued: the primary value, else the first.
    assert sorted_names("emails") == ["a_b", "bjensen", "JSmith", "100%done"]
    assert sorted_names("emails.type")[1:] == ["JSmith", "bjensen", "100%done"]
    group_order = Group.live().order_by(sort_expression("displayName", GROUP_TYPE))
    assert [g.display_name for g in group_order] == ["Admins", "Sales 100%"]


@pytest.mark.parametrize(
    ("path", "resource_type"),
    [
        ("nope", USER_TYPE),
        ("groups", USER_TYPE),
        ("members.value", GROUP_TYPE),
        ("password", USER_TYPE),
        ("addresses", USER_TYPE),
        ("emails[type eq 1]", USER_TYPE),
        ("", USER_TYPE),
        (None, USER_TYPE),
    ],
)
def test_sort_rejects(path, resource_type):
    with pytest.raises(ScimError) as exc:
        sort_expression(path, resource_type)
    assert exc.value.scim_type == "invalidValue"


def test_stray_non_object_elements_do_not_break_queries(db):
    # Not what a SCIM write stores (parse checks each element): written directly.
    emails = ["loose@x.org", 7, {"type": "work", "value": "w@loose.org"}]
    User.create(
        user_name="loose",
        data=json.dumps({"emails": emails}),
        created=datetime(2026, 3, 1),
        last_modified=datetime(2026, 3, 1),
    )
    assert users('emails[type eq "work" and value co "@loose"]') == {"loose"}
    assert users('emails co "loose@x"') == set()
    assert "loose" in sorted_names("emails")
