"""HTTP tests of /Users: create, read, list, replace, patch, delete, with whole bodies."""

import json

import pytest

from mdm.db import database
from mdm.models import CustomAttribute
from mdm.models import User

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CUSTOM = "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User"
BASE = "http://localhost/scim/v2"


def meta(body, version=1):
    return {
        "resourceType": "User",
        "created": body["meta"]["created"],
        "lastModified": body["meta"]["lastModified"],
        "location": f"{BASE}/Users/{body['id']}",
        "version": f'W/"{version}"',
    }


def test_create_user_returns_the_stored_resource(scim):
    response = scim.post(
        "/Users",
        {
            "schemas": [CORE, ENTERPRISE],
            "externalId": "alice",
            "userName": "alice@contoso.com",
            "active": "True",
            "displayName": "Alice Smith",
            "password": "s3cret-Pa55",
            "emails": [
                {"primary": "True", "type": "work", "value": "alice@contoso.com"}
            ],
            "meta": {"resourceType": "User"},
            "name": {
                "formatted": "Alice Smith",
                "familyName": "Smith",
                "givenName": "Alice",
            },
            "phoneNumbers": [{"type": "work", "value": "55555555555"}],
            ENTERPRISE: {"employeeNumber": "12345", "department": "R&D"},
            "roles": [],
            "title": None,
            "id": "client-chosen",
        },
    )
    assert response.status_code == 201
    body = response.get_json()
    assert body == {
        "schemas": [CORE, ENTERPRISE],
        "id": body["id"],
        "externalId": "alice",
        "meta": meta(body),
        "userName": "alice@contoso.com",
        "active": True,
        "displayName": "Alice Smith",
        "emails": [{"primary": True, "type": "work", "value": "alice@contoso.com"}],
        "name": {
            "formatted": "Alice Smith",
            "familyName": "Smith",
            "givenName": "Alice",
        },
        "phoneNumbers": [{"type": "work", "value": "55555555555"}],
        ENTERPRISE: {"employeeNumber": "12345", "department": "R&D"},
    }
    assert body["id"] != "client-chosen"
    assert response.headers["Location"] == body["meta"]["location"]
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Content-Type"] == "application/scim+json"
    assert scim.get(f"/Users/{body['id']}").get_json() == body


def _stored(app, scim_id):
    with app.app_context(), database.connection_context():
        row = User.get(User.scim_id == scim_id)
    return json.loads(row.data), row


def _listed(scim, user_name):
    page = scim.get(f'/Users?filter=userName eq "{user_name}"').get_json()
    assert page["totalResults"] == 1, page
    return page["Resources"][0]


def test_text_the_columns_hold_is_stored_once(app, scim):
    """userName, externalId, displayName, title, name parts and enterprise attributes live in columns."""
    enterprise = {
        "department": "X-Files",
        "employeeNumber": "42",
        "costCenter": "FBI-7",
        "organization": "FBI",
        "division": "Violent Crimes",
        "manager": {"value": "skinner"},
    }
    body = scim.create_user(
        "dana@contoso.com",
        externalId="d-1",
        displayName="Dana Scully",
        title="Agent",
        name={"givenName": "Dana", "familyName": "Scully", "formatted": "D. Scully"},
        emails=[{"value": "dana@contoso.com", "primary": True}],
        **{ENTERPRISE: enterprise},
    )
    data, row = _stored(app, body["id"])
    # The manager, a complex value, stays in the document; its value is
    # mirrored too, for filters.
    assert data == {
        "active": True,
        "name": {"formatted": "D. Scully"},
        "emails": [{"value": "dana@contoso.com", "primary": True}],
        ENTERPRISE: {"manager": enterprise["manager"]},
    }
    mirrored = (row.employee_number, row.cost_center, row.organization, row.division)
    assert mirrored == ("42", "FBI-7", "FBI", "Violent Crimes")
    assert row.manager == "skinner"
    assert (row.user_name, row.external_id, row.display_name, row.title) == (
        "dana@contoso.com",
        "d-1",
        "Dana Scully",
        "Agent",
    )
    assert (row.given_name, row.family_name, row.department) == (
        "Dana",
        "Scully",
        "X-Files",
    )
    assert body == {
        "schemas": [CORE, ENTERPRISE],
        "id": body["id"],
        "externalId": "d-1",
        "meta": meta(body),
        "userName": "dana@contoso.com",
        "displayName": "Dana Scully",
        "title": "Agent",
        "active": True,
        "name": {"givenName": "Dana", "familyName": "Scully", "formatted": "D. Scully"},
        "emails": [{"value": "dana@contoso.com", "primary": True}],
        ENTERPRISE: enterprise,
    }
    assert scim.get(f"/Users/{body['id']}").get_json() == body
    assert _listed(scim, "dana@contoso.com") == body

    # A name or extension left empty is not stored, and comes back whole.
    only = scim.create_user(
        "eve@contoso.com",
        name={"givenName": "Eve"},
        **{ENTERPRISE: {"department": "Ops"}},
    )
    data, _ = _stored(app, only["id"])
    assert data == {"active": True}
    assert only["name"] == {"givenName": "Eve"}
    assert only[ENTERPRISE] == {"department": "Ops"}
    assert only["schemas"] == [CORE, ENTERPRISE]
    assert scim.get(f"/Users/{only['id']}").get_json() == only
    assert _listed(scim, "eve@contoso.com") == only


def test_a_user_stored_whole_before_schema_13_reads_and_writes_the_same(app, scim):
    body = scim.create_user(
        "fox@contoso.com",
        externalId="f-1",
        displayName="Fox Mulder",
        name={"givenName": "Fox", "familyName": "Mulder"},
        **{ENTERPRISE: {"department": "X-Files"}},
    )
    whole = {
        "userName": "fox@contoso.com",
        "externalId": "f-1",
        "active": True,
        "displayName": "Fox Mulder",
        "name": {"givenName": "Fox", "familyName": "Mulder"},
        ENTERPRISE: {"department": "X-Files"},
    }
    with app.app_context(), database.connection_context():
        User.update(data=json.dumps(whole)).where(User.scim_id == body["id"]).execute()
    assert scim.get(f"/Users/{body['id']}").get_json() == body
    assert _listed(scim, "fox@contoso.com") == body
    # A PATCH that changes nothing leaves the row as it was.
    same = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "displayName", "value": "Fox Mulder"}],
    }
    assert scim.patch(f"/Users/{body['id']}", same).get_json() == body
    assert _stored(app, body["id"])[0] == whole
    # One that changes something stores it as this release does.
    renamed = {**same, "Operations": [{**same["Operations"][0], "value": "F. M."}]}
    patched = scim.patch(f"/Users/{body['id']}", renamed).get_json()
    assert patched == {
        **body,
        "meta": meta(patched, version=2),
        "displayName": "F. M.",
    }
    data, row = _stored(app, body["id"])
    assert data == {"active": True}
    assert row.display_name == "F. M."


def test_password_is_stored_hashed_and_never_returned(app, scim):
    body = scim.create_user("bob@example.com", password="hunter2-Secret")
    assert "password" not in body
    with app.app_context(), database.connection_context():
        stored = User.get(User.scim_id == body["id"])
    assert stored.password_hash and "hunter2-Secret" not in stored.password_hash
    assert "hunter2" not in stored.data
    from werkzeug.security import check_password_hash

    assert check_password_hash(stored.password_hash, "hunter2-Secret")


def test_duplicate_username_is_409_case_insensitively(scim):
    scim.create_user("Carol@Example.com")
    response = scim.post("/Users", {"userName": "carol@example.COM"})
    assert response.status_code == 409
    assert response.get_json() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "409",
        "scimType": "uniqueness",
        "detail": "A user with userName 'carol@example.COM' already exists.",
    }


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"displayName": "x"}, "userName is required."),
        ({"userName": ""}, "userName is required."),
        ({"userName": ["a"]}, "userName must be a string, not an array."),
        (
            {"userName": "a", "active": "maybe"},
            "active must be a boolean, not a string.",
        ),
        ({"userName": "a", "emails": 5}, "emails must be an array, not a number."),
        ({"userName": "a", "name": "x"}, "name must be an object, not a string."),
        ({"userName": "a\x00b"}, "userName must not contain NUL characters."),
        ({"userName": "a" * 1025}, "userName is longer than 1024 characters."),
    ],
)
def test_invalid_user_values_are_400_invalid_value(scim, body, detail):
    response = scim.post("/Users", body)
    assert response.status_code == 400
    assert response.get_json() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "400",
        "scimType": "invalidValue",
        "detail": detail,
    }


def test_get_unknown_user_is_404(scim):
    response = scim.get("/Users/00919288221112222")
    assert response.status_code == 404
    assert response.get_json() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "404",
        "detail": "User 00919288221112222 not found.",
    }


def test_put_replaces_attributes_and_keeps_password(app, scim):
    user = scim.create_user("dave@example.com", password="pw-123456", title="Eng")
    response = scim.put(
        f"/Users/{user['id']}",
        {"userName": "dave@example.com", "displayName": "Dave", "active": False},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body == {
        "schemas": [CORE],
        "id": user["id"],
        "meta": meta(body, 2),
        "userName": "dave@example.com",
        "displayName": "Dave",
        "active": False,
    }
    with app.app_context(), database.connection_context():
        assert User.get(User.scim_id == user["id"]).password_hash


def test_patch_user_returns_200_with_resource(scim):
    user = scim.create_user(
        "erin@example.com", emails=[{"type": "work", "value": "e@x"}]
    )
    response = scim.patch(
        f"/Users/{user['id']}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {
                    "op": "Replace",
                    "path": 'emails[type eq "work"].value',
                    "value": "e2@x",
                },
                {"op": "Add", "path": "nickName", "value": "Ez"},
                {"op": "Replace", "path": "active", "value": "False"},
            ],
        },
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body == {
        "schemas": [CORE],
        "id": user["id"],
        "meta": meta(body, 2),
        "userName": "erin@example.com",
        "emails": [{"type": "work", "value": "e2@x"}],
        "active": False,
        "nickName": "Ez",
    }
    # A disabled user stays visible to GET and filters.
    assert scim.get(f"/Users/{user['id']}").get_json() == body
    listed = scim.get('/Users?filter=userName eq "erin@example.com"').get_json()
    assert listed["Resources"] == [body]


def test_noop_patch_keeps_version(scim):
    user = scim.create_user("fay@example.com", displayName="Fay")
    response = scim.patch(
        f"/Users/{user['id']}",
        {"Operations": [{"op": "replace", "path": "displayName", "value": "Fay"}]},
    )
    assert response.status_code == 200
    assert response.get_json()["meta"]["version"] == 'W/"1"'
    empty = scim.patch(f"/Users/{user['id']}", {"Operations": []})
    assert empty.status_code == 200
    assert empty.get_json() == user


def test_delete_user_then_404_and_name_free_again(app, scim):
    user = scim.create_user("gus@example.com")
    assert scim.delete(f"/Users/{user['id']}").status_code == 204
    assert scim.get(f"/Users/{user['id']}").status_code == 404
    assert scim.delete(f"/Users/{user['id']}").status_code == 404
    assert scim.patch(f"/Users/{user['id']}", {"Operations": []}).status_code == 404
    listed = scim.get('/Users?filter=userName eq "gus@example.com"').get_json()
    assert listed["totalResults"] == 0
    again = scim.create_user("gus@example.com")
    assert again["id"] != user["id"]
    # The directory keeps the deleted record as deprovisioned.
    with app.app_context(), database.connection_context():
        old = User.get(User.scim_id == user["id"])
        assert old.deprovisioned_at is not None
        assert User.select().count() == 2


def test_etags(scim):
    user = scim.create_user("hal@example.com")
    path = f"/Users/{user['id']}"
    assert scim.get(path, headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert scim.get(path, headers={"If-None-Match": 'W/"9"'}).status_code == 200
    stale = scim.put(path, {"userName": "hal2"}, headers={"If-Match": 'W/"9"'})
    assert stale.status_code == 412
    assert stale.get_json()["status"] == "412"
    ok = scim.put(path, {"userName": "hal2"}, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200 and ok.headers["ETag"] == 'W/"2"'
    assert scim.delete(path, headers={"If-Match": 'W/"1"'}).status_code == 412
    assert scim.delete(path, headers={"If-Match": "*"}).status_code == 204


def test_list_paging_and_count_zero(scim):
    for i in range(12):
        scim.create_user(f"user{i:02d}@example.com")
    starts = []
    start = 1
    while True:
        page = scim.get(f"/Users?startIndex={start}&count=5").get_json()
        assert page["totalResults"] == 12
        assert page["startIndex"] == start
        assert page["itemsPerPage"] == len(page["Resources"])
        starts.append(start)
        start += len(page["Resources"])
        if start > page["totalResults"]:
            break
    assert starts == [1, 6, 11]
    counted = scim.get("/Users?count=0").get_json()
    assert counted == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 12,
        "startIndex": 1,
        "itemsPerPage": 0,
        "Resources": [],
    }
    assert scim.get("/Users?startIndex=-4&count=-1").get_json()["startIndex"] == 1
    bad = scim.get("/Users?count=ten")
    assert bad.status_code == 400 and bad.get_json()["scimType"] == "invalidValue"


def test_sorting(scim):
    for name in ("b", "C", "a"):
        scim.create_user(f"{name}@example.com")
    names = [
        r["userName"]
        for r in scim.get("/Users?sortBy=userName&sortOrder=descending").get_json()[
            "Resources"
        ]
    ]
    assert names == ["C@example.com", "b@example.com", "a@example.com"]


def test_attributes_and_excluded_attributes(scim):
    user = scim.create_user(
        "ida@example.com",
        name={"givenName": "Ida", "familyName": "Lee"},
        emails=[{"type": "work", "value": "ida@x"}],
        **{ENTERPRISE: {"department": "Ops", "costCenter": "9"}},
    )
    path = f"/Users/{user['id']}"
    picked = scim.get(
        f"{path}?attributes=userName,name.givenName,emails.value,{ENTERPRISE}:department"
    ).get_json()
    assert picked == {
        "schemas": [CORE, ENTERPRISE],
        "id": user["id"],
        "userName": "ida@example.com",
        "name": {"givenName": "Ida"},
        "emails": [{"value": "ida@x"}],
        ENTERPRISE: {"department": "Ops"},
    }
    dropped = scim.get(f"{path}?excludedAttributes=emails,meta,{ENTERPRISE}").get_json()
    assert dropped == {
        "schemas": [CORE],
        "id": user["id"],
        "userName": "ida@example.com",
        "active": True,
        "name": {"givenName": "Ida", "familyName": "Lee"},
    }
    listed = scim.get("/Users?attributes=userName").get_json()["Resources"]
    assert listed == [
        {"schemas": [CORE], "id": user["id"], "userName": "ida@example.com"}
    ]


def test_custom_attributes_round_trip(scim, runner):
    runner.invoke(args=["attribute", "add", "badge", "--type", "integer"])
    runner.invoke(args=["attribute", "add", "remote", "--type", "boolean"])
    user = scim.create_user(
        "jo@example.com", **{CUSTOM: {"badge": "42", "remote": "True"}}
    )
    assert user[CUSTOM] == {"badge": 42, "remote": True}
    assert user["schemas"] == [CORE, CUSTOM]
    patched = scim.patch(
        f"/Users/{user['id']}",
        {"Operations": [{"op": "replace", "value": {f"{CUSTOM}:badge": 43}}]},
    ).get_json()
    assert patched[CUSTOM] == {"badge": 43, "remote": True}
    found = scim.get(f"/Users?filter={CUSTOM}:badge eq 43").get_json()
    assert found["totalResults"] == 1


def test_custom_attribute_changes_apply_to_the_next_request(app, scim, runner):
    """The definitions come with the token on every request: never a stale schema."""

    def advertised():
        schemas = scim.get("/Schemas").get_json()["Resources"]
        custom = [s for s in schemas if s["id"] == CUSTOM]
        return [a["name"] for a in custom[0]["attributes"]] if custom else []

    def stored(user_id):
        return scim.get(f"/Users/{user_id}").get_json().get(CUSTOM)

    user = scim.create_user("cy@example.com")
    for name in ("zeta", "alpha", "mid"):
        runner.invoke(args=["attribute", "add", name])
    assert advertised() == ["zeta", "alpha", "mid"]
    scim.patch(
        f"/Users/{user['id']}",
        {"Operations": [{"op": "add", "value": {f"{CUSTOM}:alpha": "a"}}]},
    )
    assert stored(user["id"]) == {"alpha": "a"}
    with app.app_context(), database.connection_context():
        CustomAttribute.delete().where(CustomAttribute.name == "alpha").execute()
        expected = [name for name, _ in CustomAttribute.definitions()]
    assert expected == ["zeta", "mid"]
    assert advertised() == expected
    with app.app_context(), database.connection_context():
        CustomAttribute.delete().execute()
    # Without definitions the extension is gone from the user, at once.
    assert stored(user["id"]) is None and advertised() == []
    runner.invoke(args=["attribute", "add", "alpha"])
    assert stored(user["id"]) == {"alpha": "a"}
    assert advertised() == ["alpha"]


def test_search_endpoint(scim):
    scim.create_user("kim@example.com")
    scim.create_user("lou@example.com")
    response = scim.post(
        "/Users/.search",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter": 'userName sw "k"',
            "attributes": ["userName"],
            "startIndex": 1,
            "count": 10,
        },
    )
    body = response.get_json()
    assert response.status_code == 200
    assert [r["userName"] for r in body["Resources"]] == ["kim@example.com"]
    assert set(body["Resources"][0]) == {"schemas", "id", "userName"}
