"""Big PATCH and member arrays: linear work, the same result as the plain rule."""

import copy
import time

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


def _plainly_removed(items, listed):
    """The rule as written: an element is named by value, else on every key listed."""

    def equal(sub, left, right):
        if isinstance(left, str) and isinstance(right, str) and not sub.case_exact:
            return left.lower() == right.lower()
        return left == right

    def named(item, element):
        if not isinstance(item, dict) or not element:
            return False
        keys = ["value"] if "value" in element else list(element)
        sub = EMAILS.sub
        return all(equal(sub(k), item.get(k), element[k]) for k in keys)

    return [i for i in items if not any(named(i, e) for e in listed)]


EMAILS = USER.core.attribute("emails")
PHOTOS = USER.core.attribute("photos")
texts = st.sampled_from(["a", "A", "b", "B", "work", "WORK", "home"])
scalars = st.one_of(texts, st.booleans(), st.integers(-1, 1), st.just(1.0))
keys = st.sampled_from(["value", "type", "display", "primary"])
# Stored elements never hold "": parse and PATCH drop it as unassigned.
stored = st.dictionaries(keys, scalars, max_size=4)
named = st.dictionaries(keys, st.one_of(scalars, st.just("")), max_size=4)


@given(
    st.lists(stored, max_size=12),
    st.lists(st.one_of(named, texts), max_size=8),
)
@settings(max_examples=150, deadline=None)
def test_removing_listed_values_follows_the_plain_rule(items, listed):
    resource = {"userName": "bjensen", "emails": copy.deepcopy(items)}
    patch(resource, [{"op": "remove", "path": "emails", "value": listed}])
    # What the PATCH compares: each listed element under canonical names,
    # with empty values dropped; a bare string is its value.
    named = [
        {
            k: v
            for k, v in ({"value": x} if isinstance(x, str) else x).items()
            if v != ""
        }
        for x in listed
    ]
    expected = {"emails": _plainly_removed(items, named)}
    # Emptied elements and an emptied attribute read back as absent.
    expected["emails"] = [
        i for i in expected["emails"] if not set(i) <= {"type", "primary", "display"}
    ]
    assert resource.get("emails", []) == expected["emails"]


#
# Member arrays
#


def members_with_duplicates(count):
    """Return (members array of ``count`` items, the ids in first-occurrence order)."""
    ids = [f"id-{(i * 7919) % (count // 2)}" for i in range(count)]
    members = [{"value": v} if i % 3 else v for i, v in enumerate(ids)]
    return members, list(dict.fromkeys(ids))


def test_group_body_with_forty_thousand_members():
    members, expected = members_with_duplicates(40_000)
    body = {"schemas": [schema.GROUP_SCHEMA], "displayName": "All", "members": members}
    (data, ids), seconds = elapsed(parse.group, body)
    assert data == {"displayName": "All"}
    assert ids == expected and len(ids) == 20_000
    assert seconds < LIMIT


def test_patch_adding_forty_thousand_members():
    members, expected = members_with_duplicates(40_000)
    ops = [
        {"op": "add", "path": "members", "value": members},
        {"op": "remove", "path": "members", "value": members[::-1]},
        {"op": "replace", "value": {"members": members}},
    ]
    result, seconds = elapsed(patch, {"displayName": "All"}, ops, schema.GROUP_TYPE)
    reverse = list(
        dict.fromkeys(
            reversed([m if isinstance(m, str) else m["value"] for m in members])
        )
    )
    assert result.members == [
        ("add", expected),
        ("remove", reverse),
        ("replace", expected),
    ]
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
