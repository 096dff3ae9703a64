"""The prepared ``attr eq "value"`` lookup answers exactly as the general filter path."""

from urllib.parse import quote

import pytest

from mdm.scim import filters
from mdm.scim.filters import simple_eq

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.fixture
def directory(scim):
    """Users and groups with shared externalIds, mixed case and a deprovisioned name."""
    users = [
        scim.create_user(
            f"Person{i}@Example.com",
            externalId="shared" if i % 2 else f"ext{i}",
            displayName=f"Person {i}",
            emails=[{"value": f"person{i}@example.com", "type": "work"}],
            **{ENTERPRISE: {"department": "Sales"}},
        )
        for i in range(6)
    ]
    gone = scim.create_user("gone@example.com", externalId="shared")
    assert scim.delete(f"/Users/{gone['id']}").status_code == 204
    again = scim.create_user("gone@example.com", externalId="again")
    groups = [
        scim.create_group(f"Team {i}", [users[i]["id"]], externalId="gshared")
        for i in range(3)
    ]
    old = scim.create_group("Old Team", externalId="gshared")
    assert scim.delete(f"/Groups/{old['id']}").status_code == 204
    return users, again, groups


def _general(filter_text):
    # Parentheses keep the same filter off the prepared lookup.
    return f"({filter_text})"


def _both(scim, endpoint, filter_text, extra=""):
    assert simple_eq(filter_text) is not None
    assert simple_eq(_general(filter_text)) is None
    fast = scim.get(f"/{endpoint}?filter={quote(filter_text)}{extra}")
    general = scim.get(f"/{endpoint}?filter={quote(_general(filter_text))}{extra}")
    case = f"{filter_text} {extra}"
    assert fast.status_code == general.status_code == 200, case
    assert fast.data == general.data, case
    # Every response has a request id of its own.
    assert {**fast.headers, "X-Request-Id": ""} == {
        **general.headers,
        "X-Request-Id": "",
    }, case
    return fast.get_json()


USER_FILTERS = [
    'userName eq "Person1@Example.com"',
    'userName eq "person1@example.com"',
    'USERNAME EQ "PERSON2@EXAMPLE.COM"',
    'userName eq "gone@example.com"',
    'userName eq "nobody@example.com"',
    'userName eq ""',
    'externalId eq "shared"',
    'externalId eq "SHARED"',
    'externalid eq "ext0"',
    'externalId eq "again"',
    '  userName   eq   "Person3@Example.com"  ',
]
PAGING = [
    "",
    "&count=0",
    "&count=1",
    "&startIndex=2&count=1",
    "&startIndex=3",
    "&startIndex=9",
    "&attributes=userName",
    "&attributes=emails.value,groups",
    "&excludedAttributes=groups,emails",
    f"&excludedAttributes={ENTERPRISE}",
]


def test_user_lookup_matches_general_path(scim, directory):
    # One directory for every combination: seeding it per case is the slow part.
    for filter_text in USER_FILTERS:
        for extra in PAGING:
            _both(scim, "Users", filter_text, extra)


def test_user_lookup_by_id_and_case_rules(scim, directory):
    users, again, _ = directory
    body = _both(scim, "Users", f'id eq "{users[4]["id"]}"')
    assert [r["id"] for r in body["Resources"]] == [users[4]["id"]]
    assert (
        _both(scim, "Users", f'id eq "{users[4]["id"].upper()}"')["totalResults"] == 0
    )
    # userName is caseExact false, externalId caseExact true (RFC 7643 §4.1.1, §3.1).
    body = _both(scim, "Users", 'userName eq "PERSON1@EXAMPLE.COM"')
    assert body["totalResults"] == 1
    assert _both(scim, "Users", 'externalId eq "Ext0"')["totalResults"] == 0
    # The deprovisioned holder of the name is not found; its successor is.
    body = _both(scim, "Users", 'userName eq "gone@example.com"')
    assert [r["id"] for r in body["Resources"]] == [again["id"]]
    body = _both(scim, "Users", 'externalId eq "shared"', "&startIndex=2&count=2")
    assert body["totalResults"] == 3 and body["itemsPerPage"] == 2


GROUP_FILTERS = [
    'displayName eq "Team 1"',
    'displayName eq "team 1"',
    'displayName eq "Old Team"',
    'externalId eq "gshared"',
    'externalId eq "none"',
]


def test_group_lookup_matches_general_path(scim, directory):
    for filter_text in GROUP_FILTERS:
        for extra in ("", "&excludedAttributes=members", "&count=0", "&startIndex=2"):
            _both(scim, "Groups", filter_text, extra)


def test_group_lookup_by_id(scim, directory):
    group = directory[2][1]
    body = _both(scim, "Groups", f'id eq "{group["id"]}"')
    assert [r["id"] for r in body["Resources"]] == [group["id"]]


def test_search_request_uses_the_same_lookup(scim, directory):
    body = {"filter": 'userName eq "person5@example.com"', "attributes": ["userName"]}
    fast = scim.post("/Users/.search", body)
    body["filter"] = _general(body["filter"])
    general = scim.post("/Users/.search", body)
    assert fast.data == general.data
    assert fast.get_json()["totalResults"] == 1


def test_lookup_skips_the_filter_parser(scim, directory, monkeypatch):
    def refuse(text):
        raise AssertionError(f"parsed {text!r}")

    monkeypatch.setattr(filters, "parse", refuse)
    body = scim.get('/Users?filter=userName+eq+"person0@example.com"').get_json()
    assert body["totalResults"] == 1
    body = scim.get('/Groups?filter=displayName+eq+"Team 0"').get_json()
    assert body["totalResults"] == 1


@pytest.mark.parametrize(
    "text",
    [
        'userName eq "a\\"b"',
        'userName eq "a\\u0041"',
        "userName eq bare",
        'userName eq "a" and active eq true',
        'userName ne "a"',
        'urn:ietf:params:scim:schemas:core:2.0:User:userName eq "a"',
        'emails.value eq "a"',
        'userName eq "a',
        'userName eq"a"',
        'userName eq "tab\there"',
        'userName eq "' + "x" * filters.MAX_LENGTH + '"',
    ],
)
def test_other_filters_take_the_general_path(text):
    parsed = simple_eq(text)
    assert parsed is None or parsed[0].lower() not in ("username", "externalid", "id")
