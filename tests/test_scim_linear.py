"""Big PATCH and member arrays: linear work, the same result as the plain rule."""

import copy
import time

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mdm.scim import parse
from mdm.scim import schema
from mdm.scim.patch import apply
from mdm.scim.patch import operations

USER = schema.user_type()
# Quadratic code takes many seconds on these inputs; linear code a small
# fraction of a second, even on a loaded machine.
LIMIT = 1.0


def patch(resource, ops, resource_type=USER):
    body = {"schemas": [schema.PATCH_OP], "Operations": ops}
    return apply(resource, operations(body), resource_type)


def elapsed(function, *args):
    """Return (result, seconds) of one call."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


#
# Removing listed values from a multi-valued attribute
#


def test_twenty_removes_of_a_thousand_values_each():
    # README: at most 1,000 values per multi-valued attribute, 500 operations.
    emails = [{"value": f"user{i}@example.com", "type": "work"} for i in range(1000)]
    resource = {"userName": "bjensen", "emails": copy.deepcopy(emails)}
    ops = []
    for op in range(20):
        # 25 stored values, written in upper case (emails compare without case),
        # among 975 that match nothing.
        present = [f"USER{op * 25 + i}@EXAMPLE.COM" for i in range(25)]
        absent = [f"nobody{op}-{i}@example.com" for i in range(975)]
        ops.append(
            {
                "op": "remove",
                "path": "emails",
                "value": [{"value": v} for v in present + absent],
            }
        )
    _, seconds = elapsed(patch, resource, ops)
    assert resource["emails"] == emails[500:]
    assert seconds < LIMIT


def test_a_remove_listing_every_value_empties_the_attribute():
    emails = [{"value": f"user{i}@example.com"} for i in range(1000)]
    resource = {"userName": "bjensen", "emails": copy.deepcopy(emails)}
    ops = [{"op": "remove", "path": "emails", "value": emails} for _ in range(20)]
    _, seconds = elapsed(patch, resource, ops)
    assert "emails" not in resource
    assert seconds < LIMIT


def test_twenty_filtered_removes_on_a_thousand_values():
    emails = [{"value": f"user{i}@example.com", "type": "work"} for i in range(1000)]
    resource = {"userName": "bjensen", "emails": copy.deepcopy(emails)}
    ops = [
        {"op": "remove", "path": f'emails[value sw "user{i}"]'} for i in range(1, 10)
    ]
    _, seconds = elapsed(patch, resource, ops)
    assert resource["emails"] == [emails[0]]
    assert seconds < LIMIT


def test_adding_a_thousand_values_twenty_times_keeps_one_of_each():
    emails = [{"value": f"user{i}@example.com"} for i in range(1000)]
    resource = {"userName": "bjensen"}
    ops = [{"op": "add", "path": "emails", "value": emails} for _ in range(20)]
    _, seconds = elapsed(patch, resource, ops)
    assert resource["emails"] == emails
    assert seconds < LIMIT


def test_many_unknown_keys_are_noted_once_each():
    element = {"value": "a@example.com"} | {f"x{i}": "y" for i in range(20_000)}
    ops = [{"op": "add", "path": "emails", "value": [element, element]}]
    result, seconds = elapsed(patch, {"userName": "bjensen"}, ops)
    assert result.ignored == [
        f"Ignored 'emails.x{i}': not an attribute of User." for i in range(20_000)
    ]
    assert seconds < LIMIT


# A type whose multi-valued attribute compares its value with case.
EXACT = schema.ResourceType(
    "User",
    "/Users",
    schema.Schema(
        schema.USER_SCHEMA,
        "User",
        "User",
        (
            schema.Attribute("userName"),
            schema.Attribute(
                "keys",
                "complex",
                multi_valued=True,
                sub_attributes=(
                    schema.Attribute("value", case_exact=True),
                    schema.Attribute("display", case_exact=True),
                    schema.Attribute("type"),
                    schema.Attribute("primary", "boolean"),
                ),
            ),
        ),
    ),
)


def plainly_named(attribute, item, element):
    """The rule as written: by value when the element has one, else on every key."""
    if not isinstance(item, dict) or not element:
        return False
    for key in ["value"] if "value" in element else list(element):
        left, right = item.get(key), element[key]
        if isinstance(left, str) and isinstance(right, str):
            if not attribute.sub(key).case_exact:
                left, right = left.lower(), right.lower()
        if left != right:
            return False
    return True


texts = st.sampled_from(["a", "A", "b", "B", "work", "WORK", "home"])
scalars = st.one_of(texts, st.booleans(), st.integers(-1, 1), st.just(1.0))
keys = st.sampled_from(["value", "type", "display", "primary"])
# Stored elements never hold "": parse and PATCH drop it as unassigned.
stored = st.dictionaries(keys, scalars, max_size=4)
listed = st.dictionaries(keys, st.one_of(scalars, st.just("")), max_size=4)


@given(
    st.sampled_from([(USER, "emails"), (EXACT, "keys")]),
    st.lists(stored, max_size=12),
    st.lists(st.one_of(listed, texts), max_size=8),
)
@settings(max_examples=200, deadline=None)
def test_removing_listed_values_follows_the_plain_rule(kind, items, value):
    resource_type, name = kind
    resource = {"userName": "bjensen", name: copy.deepcopy(items)}
    patch(resource, [{"op": "remove", "path": name, "value": value}], resource_type)
    # A bare string is an element's value, and "" is no value at all.
    elements = [{"value": x} if isinstance(x, str) else x for x in value]
    elements = [{k: v for k, v in x.items() if v != ""} for x in elements]
    attribute = resource_type.core.attribute(name)
    kept = [
        item
        for item in items
        if not any(plainly_named(attribute, item, x) for x in elements)
        # An element left with only labels reads back as absent.
        and not set(item) <= {"type", "primary", "display"}
    ]
    assert resource.get(name, []) == kept


def test_removing_by_value_follows_case_exactness():
    stored = [{"value": "Key"}, {"value": "key"}, {"value": "KEY", "type": "work"}]
    resource = {"userName": "bjensen", "keys": copy.deepcopy(stored)}
    ops = [{"op": "remove", "path": "keys", "value": ["key", {"value": "KEY"}]}]
    patch(resource, ops, EXACT)
    assert resource["keys"] == [{"value": "Key"}]
    resource = {"userName": "bjensen", "emails": copy.deepcopy(stored)}
    patch(resource, [{"op": "remove", "path": "emails", "value": ["key"]}])
    assert "emails" not in resource


#
# Member arrays
#


def members_with_duplicates(count):
    """Return a members array of ``count`` items, half of them repeats, and its ids."""
    ids = [f"id-{(i * 7919) % (count // 2)}" for i in range(count)]
    # Bare ids and {"value": id} objects, as IdPs send either.
    return [{"value": v} if i % 3 else v for i, v in enumerate(ids)], ids


def test_group_body_with_forty_thousand_members():
    members, ids = members_with_duplicates(40_000)
    body = {"schemas": [schema.GROUP_SCHEMA], "displayName": "All", "members": members}
    (data, found), seconds = elapsed(parse.group, body)
    assert data == {"displayName": "All"}
    assert found == list(dict.fromkeys(ids)) and len(found) == 20_000
    assert seconds < LIMIT


@pytest.mark.parametrize(
    ("op", "change"),
    [
        ({"op": "add", "path": "members"}, "add"),
        ({"op": "remove", "path": "members"}, "remove"),
        ({"op": "replace", "path": "members"}, "replace"),
    ],
)
def test_patch_with_forty_thousand_members(op, change):
    members, ids = members_with_duplicates(40_000)
    ops = [op | {"value": members[::-1]}]
    result, seconds = elapsed(patch, {"displayName": "All"}, ops, schema.GROUP_TYPE)
    assert result.members == [(change, list(dict.fromkeys(reversed(ids))))]
    assert seconds < LIMIT


def test_member_ids_compare_exactly_and_keep_the_first():
    members = ["b", {"value": "a"}, "B", {"VALUE": "b"}, "a", {"value": "c"}]
    assert parse.member_ids(members) == ["b", "a", "B", "c"]


def test_a_long_member_filter_names_each_id_once():
    ids = [str(i % 150) for i in range(500)]
    path = "members[" + " or ".join(f'value eq "{i}"' for i in ids) + "]"
    result = patch(
        {"displayName": "All"}, [{"op": "remove", "path": path}], schema.GROUP_TYPE
    )
    assert result.members == [("remove", list(dict.fromkeys(ids)))]


#
# Through the API
#


def test_twenty_removes_of_a_thousand_emails_over_http(scim):
    emails = [{"value": f"user{i}@example.com", "type": "work"} for i in range(1000)]
    user = scim.create_user("bjensen", emails=emails)
    ops = [
        {
            "op": "remove",
            "path": "emails",
            "value": [f"USER{op * 25 + i}@EXAMPLE.COM" for i in range(25)]
            + [f"nobody{op}-{i}@example.com" for i in range(975)],
        }
        for op in range(20)
    ]
    body = {"schemas": [schema.PATCH_OP], "Operations": ops}
    response, seconds = elapsed(scim.patch, f"/Users/{user['id']}", body)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["emails"] == emails[500:]
    assert scim.get(f"/Users/{user['id']}").get_json()["emails"] == emails[500:]
    assert seconds < LIMIT
