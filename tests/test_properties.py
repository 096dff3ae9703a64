"""Property tests: filters and PATCH bodies, however hostile, fail only with ScimError."""

import copy
import json

import pytest
from hypothesis import HealthCheck
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mdm.db import database
from mdm.models import Group
from mdm.models import User
from mdm.models import migrate
from mdm.scim import filters
from mdm.scim import parse
from mdm.scim import patch
from mdm.scim.errors import ScimError
from mdm.scim.schema import ENTERPRISE_SCHEMA
from mdm.scim.schema import GROUP_TYPE
from mdm.scim.schema import RESOLVED_CACHE
from mdm.scim.schema import user_type

from .conftest import bind_test_database
from .conftest import database_config

ENT = ENTERPRISE_SCHEMA
CUSTOM = "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User"
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
DEFINITIONS = [("badge", "integer"), ("remote", "boolean"), ("site", "string")]

FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def user_type_():
    """Return the User type with the custom attributes the tests use."""
    return user_type(CUSTOM, DEFINITIONS)


#
# Strategies
#

ATTRIBUTES = [
    "userName",
    "USERNAME",
    "name",
    "name.givenName",
    "name.familyName",
    "name.nope",
    "displayName",
    "title",
    "active",
    "emails",
    "emails.value",
    "emails.type",
    "emails.primary",
    "emails.$ref",
    "phoneNumbers.value",
    "addresses.postalCode",
    "roles.primary",
    "x509Certificates.value",
    "groups",
    "groups.value",
    "groups.display",
    "groups.type",
    "members",
    "members.value",
    "members.display",
    "id",
    "externalId",
    "meta",
    "meta.created",
    "meta.lastModified",
    "meta.resourceType",
    "meta.location",
    "meta.version",
    "password",
    "manager",
    "department",
    "badge",
    "remote",
    f"{ENT}:manager",
    f"{ENT}:manager.value",
    f"{ENT}:manager.displayName",
    f"{ENT}:department",
    f"{CUSTOM}:badge",
    f"{CUSTOM}:remote",
    f"{CUSTOM}:site",
    f"{CORE}:userName",
    f"{CORE}:emails.value",
    "urn:x:y:z",
    "$ref",
    "value",
    "type",
    "primary",
    "display",
    "not",
    "nope",
]
MULTI = ["emails", "phoneNumbers", "addresses", "roles", "groups", "members", "name"]
SUBS = ["value", "type", "primary", "display", "postalCode", "nope", "$ref"]
OPERATORS = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "EQ", "Co", "xx"]
VALUES = [
    '"x"',
    '""',
    '"work"',
    '"bjensen@example.com"',
    '"x\' OR 1=1 --"',
    '"; DROP TABLE user; --"',
    '"%"',
    '"_"',
    '"\\\\"',
    '"\\ud800"',
    '"\\u00e9"',
    '"2020-01-01T00:00:00Z"',
    '"2020-01-01T00:00:00+14:00"',
    '"9999-12-31T23:59:59-14:00"',
    '"0001-01-01T00:00:00+14:00"',
    '"not a date"',
    '"True"',
    '"42"',
    '"99999999999999999999999"',
    "true",
    "False",
    "null",
    "0",
    "-1",
    "42",
    "1.5",
    "1e3",
    "1e400",
    "9223372036854775808",
    "-9223372036854775809",
    "9" * 400,
    "9" * 5000,
    "jyoung",
    "-",
]


def _quoted(text):
    return json.dumps(text)


values = st.one_of(
    st.sampled_from(VALUES),
    st.text(max_size=10).map(_quoted),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
attributes = st.one_of(
    st.sampled_from(ATTRIBUTES),
    st.from_regex(r"[A-Za-z$][A-Za-z0-9_.:-]{0,12}", fullmatch=True),
)
comparisons = st.one_of(
    st.builds(
        lambda a, o, v: f"{a} {o} {v}",
        attributes,
        st.sampled_from(OPERATORS),
        values,
    ),
    attributes.map(lambda a: f"{a} pr"),
)


def _combine(children):
    return st.one_of(
        st.builds(
            lambda left, glue, right: f"{left}{glue}{right}",
            children,
            st.sampled_from([" and ", " or ", " AND ", " Or ", " and not ", "  "]),
            children,
        ),
        children.map(lambda c: f"not ({c})"),
        children.map(lambda c: f"({c})"),
        st.builds(lambda a, c: f"{a}[{c}]", st.sampled_from(MULTI), children),
        st.builds(
            lambda a, c, s: f"{a}[{c}].{s}",
            st.sampled_from(MULTI),
            children,
            st.sampled_from(SUBS),
        ),
    )


near_valid = st.recursive(comparisons, _combine, max_leaves=8)


@st.composite
def mangled(draw):
    """A near-valid filter with a few structural characters inserted or removed."""
    text = draw(near_valid)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()) and text:
            text = text[: max(0, at - 1)] + text[at:]
        else:
            char = draw(st.sampled_from(list('()[]" .:\\') + ["not", "and"]))
            text = text[:at] + char + text[at:]
    return text


filter_texts = st.one_of(near_valid, mangled())


#
# Database
#


def _seed():
    """Store a few users and groups whose data exercises every JSON path."""
    data = {
        "userName": "bjensen",
        "externalId": "ext-1",
        "displayName": "Barbara Jensen",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "active": True,
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": True},
            "stray string element",
        ],
        "roles": [{"value": "admin", "primary": "true"}],
        "x509Certificates": [{"value": "MIIB"}],
        ENT: {"department": "Sales", "manager": {"value": "mgr-1"}},
        CUSTOM: {"badge": 42, "remote": True, "site": "Oslo"},
    }
    user = User.create(
        user_name="bjensen",
        external_id="ext-1",
        display_name="Barbara Jensen",
        given_name="Barbara",
        family_name="Jensen",
        data=json.dumps(data),
    )
    User.create(user_name="empty", data="{}")
    User.create(user_name="odd", data=json.dumps({"emails": "not a list", ENT: 5}))
    group = Group.create(display_name="Staff")
    from mdm.models import Membership

    Membership.create(group=group, user=user)


@pytest.fixture
def db(tmp_path):
    bind_test_database(tmp_path / "properties.sqlite")
    with database.connection_context():
        migrate()
        _seed()
        yield


def parse_or_none(text):
    """Parse ``text``; return None when it is refused with a ScimError."""
    try:
        return filters.parse(text)
    except ScimError:
        return None


#
# Filters
#


@FAST
@given(st.text(max_size=200))
@example("userName eq " + "9" * 5000)
@example("(" * 40 + "userName pr" + ")" * 40)
@example('userName eq "\\ud800"')
def test_parse_arbitrary_text_raises_only_scim_errors(text):
    parse_or_none(text)


@FAST
@given(filter_texts)
@example('emails[type eq "work"].value eq "x"')
@example('members[value eq "a"] or not (members pr)')
def test_parse_near_valid_filters_raises_only_scim_errors(text):
    parse_or_none(text)


def _run(query, expr):
    return query.where(expr).count()


@FAST
@given(filter_texts)
@example(f"{CUSTOM}:badge eq 99999999999999999999999")
@example(f"badge gt -{'9' * 400}")
@example(f'{CUSTOM}:badge lt "{"9" * 400}"')
@example('emails[value co "%_\\\\"] and not (roles[primary eq true])')
@example('meta.created gt "0001-01-01T00:00:00+14:00"')
@example(f"{ENT}:manager eq 99999999999999999999999")
def test_parsed_filters_compile_and_run_or_raise_scim_errors(db, text):
    node = parse_or_none(text)
    if node is None:
        return
    for resource_type, model in ((user_type_(), User), (GROUP_TYPE, Group)):
        try:
            expr = filters.to_expression(node, resource_type)
        except ScimError:
            continue
        assert _run(model.live(), expr) >= 0


@FAST
@given(filter_texts)
@example('value eq "x" or display co "%"')
@example("value gt 99999999999999999999999")
def test_member_filters_compile_and_run_or_raise_scim_errors(db, text):
    node = parse_or_none(text)
    if node is None:
        return
    try:
        expr = filters.member_expression(node)
    except ScimError:
        return
    assert _run(User.select(User.id), expr) >= 0


@FAST
@given(st.one_of(attributes, st.text(max_size=30)), st.booleans())
@example("emails", True)
@example(f"{CUSTOM}:badge", False)
def test_sort_keys_compile_and_run_or_raise_scim_errors(db, path, descending):
    try:
        key = filters.sort_expression(path, user_type_())
    except ScimError:
        return
    order = key.desc() if descending else key.asc()
    assert len(list(User.live().order_by(order, User.id))) == 3


@FAST
@given(
    filter_texts, st.sampled_from(["emails", "roles", "addresses", "x509Certificates"])
)
@example('type eq "work" and value sw 1', "emails")
def test_value_filters_match_elements_or_raise_scim_errors(text, name):
    node = parse_or_none(text)
    if node is None:
        return
    attribute = user_type_().resolve(name)[1]
    items = [
        {"value": "a@example.com", "type": "work", "primary": True},
        {"value": 5, "primary": "yes"},
        "stray",
        {},
    ]
    for item in items:
        try:
            filters.matches(node, item, attribute)
        except ScimError:
            pass


#
# PATCH
#

PATHS = [
    None,
    "",
    "userName",
    "displayName",
    "name",
    "name.givenName",
    "name.nope",
    "active",
    "title",
    "emails",
    "emails.value",
    'emails[type eq "work"]',
    'emails[type eq "work"].value',
    'emails[type eq "work" and primary eq true].display',
    'emails[value co "@"]',
    "emails[primary eq true].type",
    'emails[type eq "work" or type eq "home"].value',
    "emails[nope eq 1].value",
    'emails[type eq "x"].nope',
    "phoneNumbers",
    'addresses[type eq "work"].streetAddress',
    'roles[primary eq "True"].value',
    "x509Certificates",
    "groups",
    "id",
    "meta",
    "meta.created",
    "schemas",
    "externalId",
    "password",
    "manager",
    f"{ENT}:manager",
    f"{ENT}:manager.value",
    f"{ENT}:manager.displayName",
    f"{ENT}:department",
    ENT,
    CORE,
    CUSTOM,
    f"{CUSTOM}:badge",
    f"{CUSTOM}:remote",
    "members",
    'members[value eq "u1"]',
    'members[display co "x"]',
    "members.value",
    "urn:x:y",
    "emails[",
    "name[givenName eq 1]",
    'emails[type eq "work"][type eq "x"]',
    "a" * 300,
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "x", "work", "True", "false", "u1", "\x00", "a" * 1100]),
    st.text(max_size=8),
)
KEYS = [
    "value",
    "type",
    "primary",
    "display",
    "givenName",
    "userName",
    "displayName",
    "active",
    "emails",
    "manager",
    "badge",
    "members",
    "id",
    "meta",
    "schemas",
    "groups",
    "password",
    "$ref",
    ENT,
    CUSTOM,
    f"{ENT}:department",
    f"{CUSTOM}:badge",
    "nope",
]
patch_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
    ),
    max_leaves=10,
)
operation = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "replace", "remove", "Add", "REMOVE", "move", 5])},
    optional={
        "path": st.one_of(
            st.sampled_from(PATHS), near_valid, st.text(max_size=20), st.integers()
        ),
        "value": patch_values,
    },
)
bodies = st.one_of(
    st.fixed_dictionaries({"Operations": st.lists(operation, max_size=6)}),
    st.dictionaries(
        st.sampled_from(["Operations", "operations", "schemas"]), patch_values
    ),
)


def realistic_user():
    """Return the stored form of a fully provisioned user."""
    return {
        "userName": "bjensen@example.com",
        "externalId": "bjensen",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "displayName": "Babs Jensen",
        "active": True,
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": True},
            {"value": "babs@home.example", "type": "home"},
        ],
        "phoneNumbers": [{"value": "555-0100", "type": "work"}],
        "addresses": [{"streetAddress": "1 Main St", "type": "work"}],
        "roles": [{"value": "admin", "primary": True}],
        ENT: {"department": "Tours", "manager": {"value": "mgr-1"}},
        CUSTOM: {"badge": 42, "remote": False, "site": "Oslo"},
    }


@FAST
@given(bodies)
@example(
    {"Operations": [{"op": "add", "path": "emails", "value": [{"value": "a"}] * 50}]}
)
@example(
    {
        "Operations": [
            {"op": "replace", "path": "emails", "value": [{"value": ["x"]}] * 20}
        ]
    }
)
@example(
    {"Operations": [{"op": "add", "value": {"emails": [{"value": "x", "nope": 1}]}}]}
)
def test_user_patch_raises_only_scim_errors(body):
    resource_type = user_type_()
    resource = realistic_user()
    try:
        ops = patch.operations(body)
        patch.apply(resource, ops, resource_type)
    except ScimError:
        return
    try:
        data, _ = parse.user(copy.deepcopy(resource), resource_type)
    except ScimError:
        return
    json.dumps(data, allow_nan=False)


@FAST
@given(bodies)
@example({"Operations": [{"op": "add", "path": "members", "value": [{"value": 5}]}]})
@example({"Operations": [{"op": "remove", "path": 'members[value gt "a"]'}]})
def test_group_patch_raises_only_scim_errors(body):
    resource = {"displayName": "Staff", "externalId": "staff"}
    try:
        ops = patch.operations(body)
        result = patch.apply(resource, ops, GROUP_TYPE)
    except ScimError:
        return
    for action, argument in result.members:
        assert action in ("add", "remove", "remove_all", "replace", "remove_where")
        if action == "remove_where":
            try:
                filters.member_expression(argument)
            except ScimError:
                pass
    try:
        parse.group(resource)
    except ScimError:
        pass


#
# Bodies and query parameters
#

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
    ),
    max_leaves=12,
)


@FAST
@given(
    st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        json_values.map(
            lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")
        ),
    )
)
@example(b'{"userName": "\\ud800"}')
@example(b'{"a": [{"\\udfff": 1}]}')
@example(b'{"a": NaN}')
@example(b'{"a": -Infinity}')
@example(b"[" * 5000 + b"]" * 5000)
def test_json_body_returns_an_encodable_object_or_raises_scim_error(raw):
    try:
        body = parse.json_body(raw)
    except ScimError as error:
        assert error.scim_type == "invalidSyntax"
        return
    assert isinstance(body, dict)
    json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")


list_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),
    st.text(max_size=12),
    st.lists(st.text(max_size=5), max_size=3),
    st.sampled_from(["9" * 30, "-5", "0", " 1 ", "1e3", "NaN", "inf", "9" * 5000]),
)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "startIndex",
                "count",
                "sortBy",
                "sortOrder",
                "filter",
                "attributes",
                "excludedAttributes",
            ]
        ),
        list_values,
    )
)
@example({"startIndex": float("inf")})
@example({"count": float("-inf"), "startIndex": 10**30})
def test_list_params_clamp_paging_or_raise_scim_errors(source):
    try:
        params = parse.list_params(source, 100, 500)
    except ScimError:
        return
    assert 1 <= params.start_index < 2**63
    assert 0 <= params.count <= 500


#
# Bulk: any BulkRequest is answered with per-operation results, never a 5xx
#

BULK_IDS = ["a", "b", "c", "", "a b"]
references = st.sampled_from([f"bulkId:{b}" for b in BULK_IDS] + ["bulkId:", "x"])
resource_data = st.fixed_dictionaries(
    {},
    optional={
        "userName": st.one_of(st.sampled_from(["u1", "u2", "U1"]), scalars),
        "displayName": st.one_of(st.sampled_from(["g1", "g2"]), scalars),
        "active": st.sampled_from([True, "False", "maybe", None]),
        "members": st.lists(
            st.one_of(
                st.fixed_dictionaries({"value": st.one_of(references, scalars)}),
                references,
            ),
            max_size=3,
        ),
        ENT: st.fixed_dictionaries(
            {},
            optional={"manager": st.one_of(references, st.just({"value": "bulkId:a"}))},
        ),
        "schemas": st.lists(st.sampled_from([CORE, ENT, "urn:x"]), max_size=2),
    },
)
bulk_operations = st.fixed_dictionaries(
    {
        "method": st.sampled_from(
            ["POST", "PUT", "PATCH", "DELETE", "patch", "GET", 3]
        ),
        "path": st.one_of(
            st.sampled_from(
                [
                    "/Users",
                    "/Groups",
                    "/Users/bulkId:a",
                    "/Groups/bulkId:b",
                    "/Users/missing",
                    "/Users/a/b/c",
                    "",
                ]
            ),
            st.text(max_size=20),
        ),
    },
    optional={
        "bulkId": st.one_of(st.sampled_from(BULK_IDS), st.integers()),
        "version": st.one_of(st.just('W/"1"'), st.just("*"), st.integers()),
        "data": st.one_of(resource_data, bodies, scalars),
    },
)


member_lists = st.lists(
    st.fixed_dictionaries({"value": references}), min_size=1, max_size=3
)
likely_operations = st.one_of(
    st.fixed_dictionaries(
        {
            "method": st.just("POST"),
            "path": st.just("/Users"),
            "bulkId": st.sampled_from(BULK_IDS),
            "data": st.fixed_dictionaries(
                {"userName": st.sampled_from(["u1", "u2", "u3", "U1"])},
                optional={ENT: st.fixed_dictionaries({"manager": references})},
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "method": st.just("POST"),
            "path": st.just("/Groups"),
            "bulkId": st.sampled_from(BULK_IDS),
            "data": st.fixed_dictionaries(
                {"displayName": st.sampled_from(["g1", "g2"])},
                optional={"members": member_lists},
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "method": st.sampled_from(["PATCH", "PUT", "DELETE"]),
            "path": st.sampled_from(
                [f"/{t}/bulkId:{b}" for t in ("Users", "Groups") for b in "abc"]
            ),
            "data": st.one_of(bodies, resource_data),
        },
        optional={"version": st.sampled_from(['W/"1"', 'W/"2"', "*"])},
    ),
)


@pytest.fixture
def bulk_client(tmp_path):
    from mdm import create_app

    from .conftest import issue_token

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "properties",
            **database_config(tmp_path / "bulk.sqlite"),
            "ACTIVITY_LOG": False,
        }
    )
    _, secret = issue_token(app, "generic")
    return app.test_client(), {"Authorization": f"Bearer {secret}"}


@FAST
@given(
    st.lists(st.one_of(likely_operations, bulk_operations, scalars), max_size=6),
    st.one_of(st.none(), st.integers(-1, 3)),
)
def test_bulk_answers_every_operation_or_a_scim_error(bulk_client, operations, fail):
    client, headers = bulk_client
    body = {"Operations": operations}
    if fail is not None:
        body["failOnErrors"] = fail
    response = client.post("/scim/v2/Bulk", json=body, headers=headers)
    assert response.status_code in (200, 400), response.get_json()
    answer = response.get_json()
    if response.status_code == 400:
        assert answer["scimType"] == "invalidValue"
        return
    results = answer["Operations"]
    assert len(results) <= len(operations)
    if fail is None or fail < 1:
        assert len(results) == len(operations)
    for result in results:
        assert 200 <= int(result["status"]) < 500, result
        if int(result["status"]) >= 400:
            assert result["response"]["status"] == result["status"]


def test_resolved_paths_are_remembered_up_to_a_bound():
    resource_type = user_type()
    given_name = resource_type.resolve("name.givenName")
    assert given_name[1].name == "name" and given_name[2].name == "givenName"
    assert resource_type.resolve("name.givenName") is given_name
    # A client chooses the paths: unknown ones fill the cache only to its bound.
    for n in range(RESOLVED_CACHE + 100):
        assert resource_type.resolve(f"unknown{n}") is None
    assert len(resource_type._resolved) == RESOLVED_CACHE
    assert resource_type.resolve("NAME.GIVENNAME") == given_name
    assert "NAME.GIVENNAME" not in resource_type._resolved
