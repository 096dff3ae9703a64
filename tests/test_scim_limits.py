"""Requests whose cost grows with their length or with the directory are refused early."""

import time
from urllib.parse import quote

import pytest

from mdm.db import database
from mdm.models import Group
from mdm.models import Membership
from mdm.models import User
from mdm.scim import filters
from mdm.scim.parse import MAX_PROJECTED_NAMES

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
# Generous against a loaded machine; the refused or linear work takes a small
# fraction of it, the work it replaces many times more.
LIMIT = 3.0
# A page of 500 with 1,000 names took ~7 s, now ~0.1 s.
PAGE_LIMIT = 1.5
ATTACK = 100_000


def error(status, detail, scim_type):
    return {
        "schemas": [ERROR],
        "status": str(status),
        "scimType": scim_type,
        "detail": detail,
    }


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    response = function(*args, **kwargs)
    return response, time.perf_counter() - start


def names(count):
    """Return ``count`` distinct attribute names."""
    return [f"x{i}" for i in range(count)]


def add_users(scim, count, prefix="user"):
    """Create ``count`` users with a work email through one Bulk request."""
    operations = [
        {
            "method": "POST",
            "path": "/Users",
            "bulkId": f"b{i}",
            "data": {
                "schemas": [USER],
                "userName": f"{prefix}{i}",
                "emails": [{"value": f"{prefix}{i}@example.com", "type": "work"}],
            },
        }
        for i in range(count)
    ]
    response = scim.post("/Bulk", {"schemas": [BULK_REQUEST], "Operations": operations})
    assert response.status_code == 200
    assert all(op["status"] == "201" for op in response.get_json()["Operations"])


def stored(app, model):
    with app.app_context(), database.connection_context():
        return list(model.select().order_by(model.id).dicts())


#
# attributes / excludedAttributes of any length
#


def too_many(parameter, count=ATTACK):
    return error(
        400,
        f"{parameter} lists {count} names; at most {MAX_PROJECTED_NAMES} are accepted.",
        "invalidValue",
    )


@pytest.mark.parametrize("parameter", ["attributes", "excludedAttributes"])
def test_a_hundred_thousand_names_are_refused_on_every_read(scim, parameter):
    add_users(scim, 50)
    user = scim.get("/Users?count=1").get_json()["Resources"][0]
    group = scim.create_group("Sales", [user["id"]])
    query = f"{parameter}=" + ",".join(names(ATTACK))
    search = {parameter: names(ATTACK), "count": 50}
    requests = [
        (scim.get, f"/Users?count=50&{query}"),
        (scim.get, f"/Users/{user['id']}?{query}"),
        (scim.get, f"/Groups?{query}"),
        (scim.get, f"/Groups/{group['id']}?{query}"),
        (scim.post, "/Users/.search", search),
        (scim.post, "/Groups/.search", search),
        (scim.post, "/.search", search),
    ]
    for method, *args in requests:
        response, seconds = timed(method, *args)
        assert response.status_code == 400, args[0]
        assert response.headers["Content-Type"] == "application/scim+json"
        assert response.get_json() == too_many(parameter), args[0]
        assert seconds < LIMIT, args[0]


@pytest.mark.parametrize("parameter", ["attributes", "excludedAttributes"])
def test_a_refused_projection_changes_nothing(app, scim, parameter):
    user = scim.create_user("kept@example.com", title="Engineer")
    group = scim.create_group("Kept", [user["id"]])
    before = [stored(app, model) for model in (User, Group, Membership)]
    query = f"?{parameter}=" + ",".join(names(ATTACK))
    title = {"op": "replace", "path": "title", "value": "Boss"}
    rename = {"op": "replace", "path": "displayName", "value": "Renamed"}
    requests = [
        (
            scim.post,
            "/Users" + query,
            {"schemas": [USER], "userName": "new@example.com"},
        ),
        (
            scim.put,
            f"/Users/{user['id']}{query}",
            {"schemas": [USER], "userName": "x@y"},
        ),
        (
            scim.patch,
            f"/Users/{user['id']}{query}",
            {"schemas": [PATCH_OP], "Operations": [title]},
        ),
        (scim.post, "/Groups" + query, {"schemas": [GROUP], "displayName": "New"}),
        (
            scim.put,
            f"/Groups/{group['id']}{query}",
            {"schemas": [GROUP], "displayName": "X"},
        ),
        (
            scim.patch,
            f"/Groups/{group['id']}{query}",
            {"schemas": [PATCH_OP], "Operations": [rename]},
        ),
    ]
    for method, path, body in requests:
        response = method(path, body)
        assert response.status_code == 400, path
        assert response.get_json() == too_many(parameter), path
    assert [stored(app, model) for model in (User, Group, Membership)] == before


def test_the_most_names_allowed_on_the_largest_page_is_quick(app, scim):
    # Each name used to be resolved again for every resource of the page:
    # 1,000 names on a page of 500 took many seconds.
    add_users(scim, app.config["SCIM_MAX_RESULTS"])
    wanted = ["userName", "USERNAME", "emails.value"] + names(MAX_PROJECTED_NAMES - 3)
    response, seconds = timed(
        scim.post, "/Users/.search", {"attributes": wanted, "count": 500}
    )
    assert response.status_code == 200
    resources = response.get_json()["Resources"]
    assert len(resources) == 500
    assert resources[7] == {
        "schemas": [USER],
        "id": resources[7]["id"],
        "userName": "user7",
        "emails": [{"value": "user7@example.com"}],
    }
    assert seconds < PAGE_LIMIT
    response, seconds = timed(
        scim.post, "/Users/.search", {"excludedAttributes": wanted, "count": 500}
    )
    assert response.status_code == 200
    resource = response.get_json()["Resources"][7]
    assert resource["emails"] == [{"type": "work"}]
    assert "userName" not in resource
    assert seconds < PAGE_LIMIT


#
# Filters whose cost grows with the directory
#


def find(scim, text):
    return scim.get("/Users?count=500&filter=" + quote(text))


def test_hundreds_of_value_path_terms_are_refused_quickly(scim):
    # 400 of these cost ~1.2 ms for each user in the directory.
    add_users(scim, 200)
    for count, detail in [
        (
            400,
            f"The filter has more than {filters.MAX_TERMS} comparisons; "
            f"at most {filters.MAX_TERMS} are accepted.",
        ),
        (
            filters.MAX_TERMS,
            f"The filter has more than {filters.MAX_VALUE_PATHS} conditions on "
            "multi-valued attributes (such as emails[...] or members eq); "
            f"at most {filters.MAX_VALUE_PATHS} are accepted.",
        ),
    ]:
        text = " or ".join(['emails[value co "zz"]'] * count)
        response, seconds = timed(find, scim, text)
        assert response.status_code == 400
        assert response.get_json() == error(400, detail, "invalidFilter")
        assert seconds < LIMIT


@pytest.mark.parametrize(
    "term",
    [
        'emails[value co "zz"]',
        'emails.value co "zz"',
        'emails co "zz"',
        'emails[type eq "work"].value eq "zz"',
        "groups pr",
    ],
)
def test_every_kind_of_multi_valued_term_counts(scim, term):
    add_users(scim, 3)
    allowed = " or ".join([term] * filters.MAX_VALUE_PATHS)
    assert find(scim, allowed).status_code == 200
    response = find(scim, allowed + " or " + term)
    assert response.status_code == 400
    assert response.get_json()["scimType"] == "invalidFilter"
    assert str(filters.MAX_VALUE_PATHS) in response.get_json()["detail"]


def test_members_terms_on_groups_count(scim):
    user = scim.create_user("m@example.com")
    scim.create_group("Sales", [user["id"]])
    allowed = " or ".join([f'members eq "{user["id"]}"'] * filters.MAX_VALUE_PATHS)
    found = scim.get("/Groups?filter=" + quote(allowed)).get_json()
    assert found["totalResults"] == 1
    response = scim.get("/Groups?filter=" + quote(allowed + " or members pr"))
    assert response.status_code == 400
    assert response.get_json()["scimType"] == "invalidFilter"


def test_the_largest_allowed_filter_works(scim):
    add_users(scim, 30)
    value_paths = [f'emails[value eq "user{i}@example.com"]' for i in range(9)]
    plain = [f'userName eq "user{i}"' for i in range(9, 30)]
    # The last term holds two comparisons; the padding matches nobody.
    padding = [f'title eq "t{i}"' for i in range(filters.MAX_TERMS - 30 - 2)]
    last = ['emails[type eq "work"].value eq "user29@example.com"']
    terms = value_paths + plain + padding + last
    response = find(scim, " or ".join(terms))
    assert response.status_code == 200
    found = {user["userName"] for user in response.get_json()["Resources"]}
    assert found == {f"user{i}" for i in range(30)}
    response = find(scim, " or ".join(terms + ['title eq "one more"']))
    assert response.status_code == 400
    assert response.get_json() == error(
        400,
        f"The filter has more than {filters.MAX_TERMS} comparisons; "
        f"at most {filters.MAX_TERMS} are accepted.",
        "invalidFilter",
    )


def test_search_bodies_and_all_types_search_are_capped_too(scim):
    add_users(scim, 3)
    text = " or ".join(['emails[value co "zz"]'] * (filters.MAX_VALUE_PATHS + 1))
    for path in ("/Users/.search", "/.search"):
        response = scim.post(path, {"filter": text})
        assert response.status_code == 400, path
        assert response.get_json()["scimType"] == "invalidFilter", path
        assert "multi-valued" in response.get_json()["detail"], path
