"""Replay of Okta provisioning traffic against /scim/v2.

Two parts: Okta's "SCIM 2.0 spec test" steps in their order (peers.md §4.3), and the
request shapes Okta's provisioning engine sends for user CRUD and Push Groups. Okta
labels its bodies ``application/json``, looks users and groups up with
``filter=... eq "..."&startIndex=1&count=100`` before creating them, never deletes users
(it deactivates them with PATCH ``active: false``), and sends whole resources with PUT.
"""

from urllib.parse import quote

import pytest
from werkzeug.security import check_password_hash

from mdm.db import database
from mdm.models import User

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
BASE = "http://localhost/scim/v2"
JSON = {"Content-Type": "application/json", "Accept": "application/scim+json"}
EMPTY_LIST = {
    "schemas": [LIST],
    "totalResults": 0,
    "startIndex": 1,
    "itemsPerPage": 0,
    "Resources": [],
}


class Okta:
    """Send requests with the headers and query shapes Okta uses."""

    def __init__(self, scim):
        self.scim = scim

    def get(self, path):
        return self.scim.get(path, headers={"Accept": "application/scim+json"})

    def post(self, path, body):
        return self.scim.post(path, body, headers=JSON)

    def put(self, path, body):
        return self.scim.put(path, body, headers=JSON)

    def patch(self, path, *operations):
        body = {"schemas": [PATCH], "Operations": list(operations)}
        return self.scim.patch(path, body, headers=JSON)

    def delete(self, path):
        return self.scim.delete(path)

    def lookup(self, resource, attribute, value):
        """Okta's pre-create lookup; return the 200 ListResponse body."""
        text = quote(f'{attribute} eq "{value}"')
        response = self.get(f"/{resource}?filter={text}&startIndex=1&count=100")
        assert response.status_code == 200, response.get_json()
        assert response.headers["Content-Type"] == "application/scim+json"
        return response.get_json()


@pytest.fixture
def client_okta(okta):
    return Okta(okta)


def meta(kind, body, version, created=None):
    return {
        "resourceType": kind,
        "created": created or body["meta"]["created"],
        "lastModified": body["meta"]["lastModified"],
        "location": f"{BASE}/{kind}s/{body['id']}",
        "version": f'W/"{version}"',
    }


def found(resources):
    return {
        "schemas": [LIST],
        "totalResults": len(resources),
        "startIndex": 1,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


def okta_user(
    user_name="isabella.ramos@example.com", external_id="00ujl29u0le5T6Aj10h7"
):
    """The body Okta's SCIM 2.0 app POSTs for a newly assigned person."""
    return {
        "schemas": [CORE],
        "userName": user_name,
        "name": {"givenName": "Isabella", "familyName": "Ramos"},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": "Isabella Ramos",
        "locale": "en-US",
        "externalId": external_id,
        "groups": [],
        "password": "1mz050nq-Okta",
        "active": True,
    }


def stored(body):
    """What the server keeps of an Okta body: no password, no client-sent groups."""
    kept = {k: v for k, v in body.items() if k not in ("password", "groups", "id")}
    kept["schemas"] = [CORE]
    return kept


def create(okta, body):
    response = okta.post("/Users", body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def member(user):
    return {
        "value": user["id"],
        "$ref": f"{BASE}/Users/{user['id']}",
        "display": user["displayName"],
        "type": "User",
    }


def assert_user_fields(resource):
    """Okta's spec test checks these fields on a listed and a fetched user."""
    assert isinstance(resource["id"], str) and resource["id"]
    assert isinstance(resource["name"]["familyName"], str)
    assert isinstance(resource["name"]["givenName"], str)
    assert isinstance(resource["userName"], str)
    assert isinstance(resource["active"], bool)
    assert isinstance(resource["emails"][0]["value"], str)


#
# Okta SCIM 2.0 spec test, in order (peers.md §4.3)
#


def test_okta_spec_test_steps_in_order(client, okta):
    api = Okta(okta)
    # Precondition: at least one complete user exists.
    existing = create(api, okta_user("existing.user@example.com", "00u-existing"))

    # 1. The first page of one user.
    response = api.get("/Users?count=1&startIndex=1")
    assert response.status_code == 200
    page = response.get_json()
    assert page["schemas"] == [LIST]
    for key in ("itemsPerPage", "startIndex", "totalResults"):
        assert type(page[key]) is int, key
    assert page["itemsPerPage"] == 1 and page["startIndex"] == 1
    assert page["totalResults"] == 1
    assert_user_fields(page["Resources"][0])
    assert page["Resources"][0] == existing

    # 2. That user by id.
    response = api.get(f"/Users/{page['Resources'][0]['id']}")
    assert response.status_code == 200
    assert_user_fields(response.get_json())
    assert response.get_json() == existing

    # 3. A random userName that does not exist.
    assert api.lookup("Users", "userName", "nobody-7c1e@example.com") == EMPTY_LIST

    # 4. A bogus id is a SCIM 404 with a detail.
    response = api.get("/Users/8e4fd2a1-0c3b-4d92-a5ad-7f0e4a9b1c00")
    assert response.status_code == 404
    body = response.get_json()
    assert body["schemas"] == [ERROR] and body["status"] == "404"
    assert isinstance(body["detail"], str) and body["detail"]

    # 5. Create a user with Content-Type: application/json.
    posted = okta_user("spec.test@example.com", "00u-spec")
    response = api.post("/Users", posted)
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/scim+json"
    created = response.get_json()
    assert created["active"] is True
    assert created["name"] == {"givenName": "Isabella", "familyName": "Ramos"}
    assert created == {
        **stored(posted),
        "id": created["id"],
        "meta": meta("User", created, 1),
    }

    # 6. The same user again is a conflict.
    response = api.post("/Users", posted)
    assert response.status_code == 409
    body = response.get_json()
    assert body["schemas"] == [ERROR]
    assert body["status"] == "409" and body["scimType"] == "uniqueness"

    # 7. Lookup with the userName upper-cased.
    upper = api.lookup("Users", "userName", "SPEC.TEST@EXAMPLE.COM")
    assert upper == found([created])

    # 8. Groups answer (Okta's 600 ms budget is measured by bench/, not here).
    response = api.get("/Groups")
    assert response.status_code == 200
    assert response.get_json() == EMPTY_LIST

    # 9. A non-bearer Authorization header is a SCIM 401.
    response = client.get("/scim/v2/Users", headers={"Authorization": "non-token"})
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/scim+json"
    body = response.get_json(force=True)
    assert body["schemas"] == [ERROR] and body["status"] == "401"
    assert isinstance(body["detail"], str) and body["detail"]

    # 10. A numeric-looking unknown id is a 404.
    response = api.get("/Users/00919288221112222")
    assert response.status_code == 404
    assert response.get_json()["status"] == "404"


#
# User lifecycle
#


def test_okta_user_lifecycle(client_okta):
    api = client_okta
    posted = okta_user()
    user_name = posted["userName"]

    # Lookup miss, then create.
    assert api.lookup("Users", "userName", user_name) == EMPTY_LIST
    response = api.post("/Users", posted)
    assert response.status_code == 201
    user = response.get_json()
    assert user == {**stored(posted), "id": user["id"], "meta": meta("User", user, 1)}
    assert response.headers["Location"] == user["meta"]["location"]
    path = f"/Users/{user['id']}"

    # Re-create: 409 uniqueness; the original is untouched.
    response = api.post("/Users", {**posted, "externalId": "00u-other"})
    assert response.status_code == 409
    assert response.get_json()["scimType"] == "uniqueness"
    assert api.get(path).get_json() == user

    # Lookup with a different case finds the one user.
    assert api.lookup("Users", "userName", user_name.upper()) == found([user])

    # Profile update: PUT of the whole user, as Okta sends it.
    put_body = {
        **posted,
        "id": user["id"],
        "name": {"givenName": "Isabella", "familyName": "Ramos-Díaz"},
        "displayName": "Isabella Ramos-Díaz",
        "locale": "es-MX",
        "emails": [{"primary": True, "value": "isa@example.com", "type": "work"}],
    }
    response = api.put(path, put_body)
    assert response.status_code == 200, response.get_json()
    replaced = response.get_json()
    assert replaced == {
        **stored(put_body),
        "id": user["id"],
        "meta": meta("User", replaced, 2, user["meta"]["created"]),
    }
    assert api.get(path).get_json() == replaced

    # Profile update: PATCH.
    response = api.patch(
        path,
        {
            "op": "replace",
            "value": {
                "name": {"givenName": "Bella", "familyName": "Ramos-Díaz"},
                "displayName": "Bella Ramos-Díaz",
            },
        },
        {"op": "replace", "path": "title", "value": "Buyer"},
    )
    assert response.status_code == 200, response.get_json()
    patched = response.get_json()
    assert patched == {
        **replaced,
        "meta": meta("User", patched, 3, user["meta"]["created"]),
        "name": {"givenName": "Bella", "familyName": "Ramos-Díaz"},
        "displayName": "Bella Ramos-Díaz",
        "title": "Buyer",
    }

    # Deactivate (unassignment): no-path replace of active.
    response = api.patch(path, {"op": "replace", "value": {"active": False}})
    assert response.status_code == 200
    inactive = response.get_json()
    assert inactive == {
        **patched,
        "meta": meta("User", inactive, 4, user["meta"]["created"]),
        "active": False,
    }
    assert api.get(path).get_json() == inactive
    # Okta's pre-create lookup still finds the deactivated user, so it reactivates it.
    assert api.lookup("Users", "userName", user_name) == found([inactive])

    # Reactivate.
    response = api.patch(path, {"op": "replace", "value": {"active": True}})
    assert response.status_code == 200
    active = response.get_json()
    assert active == {
        **patched,
        "meta": meta("User", active, 5, user["meta"]["created"]),
    }
    assert active["active"] is True


def test_okta_password_change(app, client_okta):
    api = client_okta
    user = create(api, okta_user())
    path = f"/Users/{user['id']}"
    response = api.patch(
        path, {"op": "replace", "value": {"password": "n3w-Passw0rd!"}}
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert "password" not in body
    assert body == {**user, "meta": meta("User", body, 2, user["meta"]["created"])}
    assert "password" not in api.get(path).get_json()
    assert "n3w-Passw0rd" not in api.get(path).get_data(as_text=True)
    filtered = api.lookup("Users", "userName", user["userName"])
    assert "password" not in filtered["Resources"][0]
    with app.app_context(), database.connection_context():
        row = User.get(User.scim_id == user["id"])
        assert check_password_hash(row.password_hash, "n3w-Passw0rd!")
        assert not check_password_hash(row.password_hash, "1mz050nq-Okta")
        assert row.source == "okta"


def test_okta_put_without_password_keeps_it(app, client_okta):
    api = client_okta
    user = create(api, okta_user())
    body = {k: v for k, v in okta_user().items() if k != "password"}
    response = api.put(f"/Users/{user['id']}", {**body, "title": "Lead"})
    assert response.status_code == 200
    assert "password" not in response.get_json()
    with app.app_context(), database.connection_context():
        row = User.get(User.scim_id == user["id"])
        assert check_password_hash(row.password_hash, "1mz050nq-Okta")


#
# Push Groups
#


def test_okta_push_groups_lifecycle(client_okta):
    api = client_okta
    ann = create(api, okta_user("ann@example.com", "00u-ann"))
    bob = create(api, okta_user("bob@example.com", "00u-bob"))
    cy = create(api, okta_user("cy@example.com", "00u-cy"))

    # Lookup miss, then push the group with its current members.
    assert api.lookup("Groups", "displayName", "Test SCIMv2") == EMPTY_LIST
    response = api.post(
        "/Groups",
        {
            "schemas": [GROUP],
            "displayName": "Test SCIMv2",
            "members": [
                {"value": ann["id"], "display": ann["userName"]},
                {"value": bob["id"], "display": bob["userName"]},
            ],
        },
    )
    assert response.status_code == 201, response.get_json()
    group = response.get_json()
    assert group == {
        "schemas": [GROUP],
        "id": group["id"],
        "meta": meta("Group", group, 1),
        "displayName": "Test SCIMv2",
        "members": [member(ann), member(bob)],
    }
    path = f"/Groups/{group['id']}"
    assert api.get(path).get_json() == group
    assert api.lookup("Groups", "displayName", "test scimv2") == found([group])

    # Rename: no-path replace whose value repeats the group's id.
    response = api.patch(
        path,
        {
            "op": "replace",
            "value": {"id": group["id"], "displayName": "Test SCIMv2 renamed"},
        },
    )
    assert response.status_code in (200, 204)
    renamed = api.get(path).get_json()
    assert renamed == {
        **group,
        "meta": {**renamed["meta"], "created": group["meta"]["created"]},
        "displayName": "Test SCIMv2 renamed",
    }
    assert renamed["meta"]["location"] == group["meta"]["location"]
    assert api.lookup("Groups", "displayName", "Test SCIMv2") == EMPTY_LIST

    # Add a member.
    response = api.patch(
        path,
        {
            "op": "add",
            "path": "members",
            "value": [{"value": cy["id"], "display": cy["userName"]}],
        },
    )
    assert response.status_code in (200, 204)
    assert api.get(path).get_json()["members"] == [member(ann), member(bob), member(cy)]

    # Remove a member by value filter.
    response = api.patch(
        path, {"op": "remove", "path": f'members[value eq "{ann["id"]}"]'}
    )
    assert response.status_code in (200, 204)
    assert api.get(path).get_json()["members"] == [member(bob), member(cy)]

    # Legacy apps: PUT the whole group with its full member list.
    response = api.put(
        path,
        {
            "schemas": [GROUP],
            "id": group["id"],
            "displayName": "Test SCIMv2 renamed",
            "members": [
                {"value": ann["id"], "display": ann["userName"]},
                {"value": cy["id"], "display": cy["userName"]},
            ],
        },
    )
    assert response.status_code == 200, response.get_json()
    put = response.get_json()
    assert put == {
        "schemas": [GROUP],
        "id": group["id"],
        "meta": {**put["meta"], "created": group["meta"]["created"]},
        "displayName": "Test SCIMv2 renamed",
        "members": [member(ann), member(cy)],
    }
    assert put["meta"]["location"] == group["meta"]["location"]
    assert api.get(path).get_json() == put

    listed = api.get("/Groups")
    assert listed.status_code == 200
    assert listed.get_json() == found([put])

    # Delete the pushed group; its users stay.
    response = api.delete(path)
    assert response.status_code == 204 and response.get_data() == b""
    assert api.get(path).status_code == 404
    assert api.delete(path).status_code == 404
    assert api.get(f"/Users/{ann['id']}").status_code == 200
    assert api.get("/Groups").get_json() == EMPTY_LIST


def test_okta_group_rename_keeps_membership_with_path_form(client_okta):
    api = client_okta
    ann = create(api, okta_user("ann@example.com", "00u-ann"))
    response = api.post(
        "/Groups",
        {
            "schemas": [GROUP],
            "displayName": "Ops",
            "members": [{"value": ann["id"], "display": ann["userName"]}],
        },
    )
    group = response.get_json()
    response = api.patch(
        f"/Groups/{group['id']}",
        {"op": "replace", "path": "displayName", "value": "Ops Team"},
    )
    assert response.status_code in (200, 204)
    body = api.get(f"/Groups/{group['id']}").get_json()
    assert body["displayName"] == "Ops Team"
    assert body["members"] == [member(ann)]
