"""HTTP tests of /Groups: lifecycle, membership changes and member filters."""

import threading

from mdm.db import database
from mdm.models import Group
from mdm.models import Membership

GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BASE = "http://localhost/scim/v2"


def meta(body, version=1):
    return {
        "resourceType": "Group",
        "created": body["meta"]["created"],
        "lastModified": body["meta"]["lastModified"],
        "location": f"{BASE}/Groups/{body['id']}",
        "version": f'W/"{version}"',
    }


def member(user):
    return {
        "value": user["id"],
        "$ref": f"{BASE}/Users/{user['id']}",
        "display": user["displayName"],
        "type": "User",
    }


def ops(*operations):
    return {"schemas": [PATCH], "Operations": list(operations)}


def members_of(scim, group_id):
    body = scim.get(f"/Groups/{group_id}").get_json()
    return sorted(m["value"] for m in body.get("members", []))


def test_create_group_with_members_and_unknown_ids(scim):
    ann = scim.create_user("ann@x", displayName="Ann")
    other = scim.create_group("Other")
    response = scim.post(
        "/Groups",
        {
            "schemas": [
                GROUP,
                "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group",
            ],
            "externalId": "8aa1a0c0",
            "displayName": "Sales",
            "members": [
                {"value": ann["id"], "$ref": None},
                {"value": "nobody"},
                {"value": other["id"]},
            ],
            "meta": {"resourceType": "Group"},
        },
    )
    assert response.status_code == 201
    body = response.get_json()
    assert body == {
        "schemas": [GROUP],
        "id": body["id"],
        "externalId": "8aa1a0c0",
        "meta": meta(body),
        "displayName": "Sales",
        "members": [member(ann)],
    }
    assert response.headers["Location"] == body["meta"]["location"]


def test_duplicate_display_name_is_409_case_insensitively(scim):
    scim.create_group("Engineering")
    response = scim.post("/Groups", {"displayName": "engineering"})
    assert response.status_code == 409
    assert response.get_json() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "409",
        "scimType": "uniqueness",
        "detail": "A group with displayName 'engineering' already exists.",
    }


def test_get_group_excluding_members(scim):
    ann = scim.create_user("ann@x", displayName="Ann")
    group = scim.create_group("Sales", [ann["id"]], externalId="g-1")
    body = scim.get(f"/Groups/{group['id']}?excludedAttributes=members").get_json()
    assert body == {
        "schemas": [GROUP],
        "id": group["id"],
        "externalId": "g-1",
        "meta": meta(body),
        "displayName": "Sales",
    }
    listed = scim.get(
        '/Groups?excludedAttributes=members&filter=displayName eq "SALES"'
    ).get_json()
    assert listed["totalResults"] == 1
    assert listed["Resources"] == [body]


def test_patch_add_remove_members_is_204_and_idempotent(scim):
    users = [scim.create_user(f"u{i}@x", displayName=f"U{i}") for i in range(4)]
    group = scim.create_group("Team")
    path = f"/Groups/{group['id']}"

    add = ops(
        {
            "op": "Add",
            "path": "members",
            "value": [{"$ref": None, "value": users[0]["id"]}],
        }
    )
    response = scim.patch(path, add)
    assert response.status_code == 204 and response.get_data() == b""
    assert scim.patch(path, add).status_code == 204  # re-adding succeeds
    many = ops(
        {
            "op": "add",
            "path": "members",
            "value": [{"value": u["id"]} for u in users[1:]],
        }
    )
    assert scim.patch(path, many).status_code == 204
    assert members_of(scim, group["id"]) == sorted(u["id"] for u in users)

    # Entra mode A: remove with a value list removes only those members.
    remove = ops(
        {
            "op": "Remove",
            "path": "members",
            "value": [{"$ref": None, "value": users[0]["id"]}],
        }
    )
    assert scim.patch(path, remove).status_code == 204
    assert scim.patch(path, remove).status_code == 204  # removing a non-member succeeds
    # Entra mode B: a value filter.
    by_filter = ops({"op": "remove", "path": f'members[value eq "{users[1]["id"]}"]'})
    assert scim.patch(path, by_filter).status_code == 204
    assert members_of(scim, group["id"]) == sorted(u["id"] for u in users[2:])

    # Add then remove the same member in one request: absent at the end.
    both = ops(
        {"op": "add", "path": "members", "value": [{"value": users[0]["id"]}]},
        {"op": "remove", "path": f'members[value eq "{users[0]["id"]}"]'},
    )
    assert scim.patch(path, both).status_code == 204
    assert users[0]["id"] not in members_of(scim, group["id"])

    # replace members replaces the whole list (RFC 7644 §3.5.2.3).
    replace = ops(
        {"op": "replace", "path": "members", "value": [{"value": users[0]["id"]}]}
    )
    assert scim.patch(path, replace).status_code == 204
    assert members_of(scim, group["id"]) == [users[0]["id"]]

    assert scim.patch(path, ops({"op": "remove", "path": "members"})).status_code == 204
    assert members_of(scim, group["id"]) == []


def test_rename_does_not_touch_members(scim):
    ann = scim.create_user("ann@x", displayName="Ann")
    group = scim.create_group("Old", [ann["id"]])
    path = f"/Groups/{group['id']}"
    assert (
        scim.patch(
            path, ops({"op": "Replace", "path": "displayName", "value": "New"})
        ).status_code
        == 204
    )
    assert (
        scim.patch(
            path, ops({"op": "replace", "value": {"externalId": "ext-9"}})
        ).status_code
        == 204
    )
    body = scim.get(path).get_json()
    assert body["displayName"] == "New" and body["externalId"] == "ext-9"
    assert body["members"] == [member(ann)]
    assert body["meta"]["version"] == 'W/"3"'


def test_patch_with_attributes_returns_200(scim):
    group = scim.create_group("Ops")
    response = scim.patch(
        f"/Groups/{group['id']}?excludedAttributes=members",
        ops({"op": "replace", "path": "displayName", "value": "Ops2"}),
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body == {
        "schemas": [GROUP],
        "id": group["id"],
        "meta": meta(body, 2),
        "displayName": "Ops2",
    }


def test_patch_rename_to_taken_name_is_409(scim):
    scim.create_group("A")
    b = scim.create_group("B")
    response = scim.patch(
        f"/Groups/{b['id']}",
        ops({"op": "replace", "path": "displayName", "value": "a"}),
    )
    assert response.status_code == 409
    assert response.get_json()["scimType"] == "uniqueness"


def test_membership_filters(scim):
    ann = scim.create_user("ann@x", displayName="Ann")
    bob = scim.create_user("bob@x", displayName="Bob")
    group = scim.create_group("G", [ann["id"]])
    for text, expected in [
        (f'id eq "{group["id"]}" and members eq "{ann["id"]}"', 1),
        (f'id eq "{group["id"]}" and members eq "{bob["id"]}"', 0),
        (f'members[value eq "{ann["id"]}"]', 1),
        (f'members.value eq "{bob["id"]}"', 0),
    ]:
        body = scim.get(f"/Groups?filter={text}&attributes=id").get_json()
        assert body["totalResults"] == expected, text
    user = scim.get(f"/Users/{ann['id']}").get_json()
    assert user["groups"] == [
        {
            "value": group["id"],
            "$ref": f"{BASE}/Groups/{group['id']}",
            "display": "G",
            "type": "direct",
        }
    ]


def test_deleted_members_and_groups_disappear(app, scim):
    ann = scim.create_user("ann@x", displayName="Ann")
    group = scim.create_group("G", [ann["id"]])
    assert scim.delete(f"/Users/{ann['id']}").status_code == 204
    assert members_of(scim, group["id"]) == []
    assert scim.delete(f"/Groups/{group['id']}").status_code == 204
    assert scim.get(f"/Groups/{group['id']}").status_code == 404
    assert scim.delete(f"/Groups/{group['id']}").status_code == 404
    assert scim.create_group("g")["displayName"] == "g"
    with app.app_context(), database.connection_context():
        assert Group.select().count() == 2
        assert Membership.select().count() == 1  # kept until an admin purges


def test_put_group_without_members_keeps_membership(scim):
    ann = scim.create_user("ann@x", displayName="Ann")
    group = scim.create_group("G", [ann["id"]])
    response = scim.put(f"/Groups/{group['id']}", {"displayName": "G2"})
    assert response.status_code == 200
    assert response.get_json()["members"] == [member(ann)]
    cleared = scim.put(f"/Groups/{group['id']}", {"displayName": "G2", "members": []})
    assert "members" in cleared.get_json() and cleared.get_json()["members"] == []


def test_concurrent_member_adds_lose_nothing(app, scim):
    users = [scim.create_user(f"c{i}@x", displayName=f"C{i}") for i in range(16)]
    group = scim.create_group("Busy")
    errors = []

    def add(user):
        client = app.test_client()
        response = client.patch(
            f"/scim/v2/Groups/{group['id']}",
            json=ops(
                {"op": "Add", "path": "members", "value": [{"value": user["id"]}]}
            ),
            headers={"Authorization": f"Bearer {scim.secret}"},
        )
        if response.status_code != 204:
            errors.append(response.get_data(as_text=True))

    threads = [threading.Thread(target=add, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert members_of(scim, group["id"]) == sorted(u["id"] for u in users)
