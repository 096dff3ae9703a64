"""SCIM Bulk (RFC 7644 §3.7): responses, bulkId references, preconditions, limits."""

import io
import json

import pytest

from mdm.activity import ActivityEntry
from mdm.activity import activity_db
from mdm.activity import writer
from mdm.db import database
from mdm.models import Group
from mdm.models import Membership
from mdm.models import User

BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BASE = "http://localhost/scim/v2"


def bulk(scim, *operations, status=200, **extra):
    body = {"schemas": [BULK_REQUEST], **extra, "Operations": list(operations)}
    response = scim.post("/Bulk", body)
    assert response.status_code == status, response.get_json()
    assert response.headers["Content-Type"] == "application/scim+json"
    return response.get_json()


def post_user(bulk_id, user_name, **attributes):
    data = {"schemas": [USER], "userName": user_name, **attributes}
    return {"method": "POST", "path": "/Users", "bulkId": bulk_id, "data": data}


def patch_op(path, *operations, **extra):
    data = {"schemas": [PATCH], "Operations": list(operations)}
    return {"method": "PATCH", "path": path, **extra, "data": data}


def post_group(bulk_id, name, *members):
    data = {
        "schemas": [GROUP],
        "displayName": name,
        "members": [{"type": "User", "value": m} for m in members],
    }
    return {"method": "POST", "path": "/Groups", "bulkId": bulk_id, "data": data}


def error(status, detail, scim_type=None):
    body = {"schemas": [ERROR], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return body


def rows(app, model, *conditions):
    with app.app_context(), database.connection_context():
        query = model.select()
        for condition in conditions:
            query = query.where(condition)
        return list(query)


def user_named(app, user_name):
    with app.app_context(), database.connection_context():
        return User.get_or_none(User.user_name == user_name)


def group_named(app, name):
    with app.app_context(), database.connection_context():
        return Group.get_or_none(Group.display_name == name)


def member_names(app, group):
    with app.app_context(), database.connection_context():
        query = (
            User.select(User.user_name)
            .join(Membership)
            .where(Membership.group == group.id)
            .order_by(User.user_name)
        )
        return [user.user_name for user in query]


def version(row):
    return f'W/"{row.version}"'


#
# The RFC 7644 §3.7 examples
#


def test_rfc_bulk_id_example_creates_user_and_group_with_member(app, scim):
    """§3.7.2: a group's member refers to a user created in the same request."""
    body = bulk(
        scim,
        post_user("qwerty", "Alice"),
        post_group("ytrewq", "Tour Guides", "bulkId:qwerty"),
    )
    alice, guides = user_named(app, "Alice"), group_named(app, "Tour Guides")
    assert body == {
        "schemas": [BULK_RESPONSE],
        "Operations": [
            {
                "location": f"{BASE}/Users/{alice.scim_id}",
                "method": "POST",
                "bulkId": "qwerty",
                "version": 'W/"1"',
                "status": "201",
            },
            {
                "location": f"{BASE}/Groups/{guides.scim_id}",
                "method": "POST",
                "bulkId": "ytrewq",
                "version": 'W/"1"',
                "status": "201",
            },
        ],
    }
    assert member_names(app, guides) == ["Alice"]
    group = scim.get(f"/Groups/{guides.scim_id}").get_json()
    assert [m["value"] for m in group["members"]] == [alice.scim_id]


def test_rfc_mixed_operations_with_versions(app, scim):
    """§3.7.3: POST, PUT, PATCH and DELETE in one request, each with its ETag."""
    bob = scim.create_user("Bob", displayName="Bob")
    carol = scim.create_user("Carol", name={"givenName": "Carol"})
    dave = scim.create_user("Dave")
    body = bulk(
        scim,
        post_user("qwerty", "Alice"),
        {
            "method": "PUT",
            "path": f"/Users/{bob['id']}",
            "version": bob["meta"]["version"],
            "data": {
                "schemas": [USER],
                "id": bob["id"],
                "userName": "Bob",
                "displayName": "Robert",
            },
        },
        patch_op(
            f"/Users/{carol['id']}",
            {"op": "add", "path": "nickName", "value": "Caz"},
            {"op": "remove", "path": "name.givenName"},
            version=carol["meta"]["version"],
        ),
        {
            "method": "DELETE",
            "path": f"/Users/{dave['id']}",
            "version": dave["meta"]["version"],
        },
    )
    alice = user_named(app, "Alice")
    assert body == {
        "schemas": [BULK_RESPONSE],
        "Operations": [
            {
                "location": f"{BASE}/Users/{alice.scim_id}",
                "method": "POST",
                "bulkId": "qwerty",
                "version": 'W/"1"',
                "status": "201",
            },
            {
                "location": f"{BASE}/Users/{bob['id']}",
                "method": "PUT",
                "version": 'W/"2"',
                "status": "200",
            },
            {
                "location": f"{BASE}/Users/{carol['id']}",
                "method": "PATCH",
                "version": 'W/"2"',
                "status": "200",
            },
            {
                "location": f"{BASE}/Users/{dave['id']}",
                "method": "DELETE",
                "status": "204",
            },
        ],
    }
    assert scim.get(f"/Users/{bob['id']}").get_json()["displayName"] == "Robert"
    carol_now = scim.get(f"/Users/{carol['id']}").get_json()
    assert carol_now["nickName"] == "Caz" and "name" not in carol_now
    assert scim.get(f"/Users/{dave['id']}").status_code == 404


def test_rfc_errors_are_reported_per_operation(app, scim):
    """§3.7.3: failures carry their status and a SCIM Error; the rest still apply."""
    scim.create_user("Taken")
    bob = scim.create_user("Bob", displayName="Bob")
    body = bulk(
        scim,
        post_user("dup", "taken"),
        {
            "method": "PUT",
            "path": f"/Users/{bob['id']}",
            "version": 'W/"999"',
            "data": {"schemas": [USER], "userName": "Bob", "displayName": "Bobby"},
        },
        {"method": "DELETE", "path": "/Users/b7c14771-226c-4d05-8860-134711653041"},
        post_user("ok", "Alice"),
    )
    alice = user_named(app, "Alice")
    assert body["Operations"] == [
        {
            "method": "POST",
            "bulkId": "dup",
            "status": "409",
            "response": error(
                409, "A user with userName 'taken' already exists.", "uniqueness"
            ),
        },
        {
            "location": f"{BASE}/Users/{bob['id']}",
            "method": "PUT",
            "status": "412",
            "response": error(
                412, 'The resource has changed: its version is now W/"1".'
            ),
        },
        {
            "location": f"{BASE}/Users/b7c14771-226c-4d05-8860-134711653041",
            "method": "DELETE",
            "status": "404",
            "response": error(
                404, "User b7c14771-226c-4d05-8860-134711653041 not found."
            ),
        },
        {
            "location": f"{BASE}/Users/{alice.scim_id}",
            "method": "POST",
            "bulkId": "ok",
            "version": 'W/"1"',
            "status": "201",
        },
    ]
    # The refused PUT changed nothing.
    assert scim.get(f"/Users/{bob['id']}").get_json()["displayName"] == "Bob"
    assert len(rows(app, User)) == 3


#
# bulkId references
#


def test_forward_reference_creates_the_referenced_user_first(app, scim):
    body = bulk(
        scim,
        post_group("g", "Early", "bulkId:later"),
        post_user("later", "later@example.com"),
    )
    assert [op["status"] for op in body["Operations"]] == ["201", "201"]
    later = user_named(app, "later@example.com")
    # Results stay in request order even though the user was created first.
    assert [op["bulkId"] for op in body["Operations"]] == ["g", "later"]
    assert body["Operations"][1]["location"] == f"{BASE}/Users/{later.scim_id}"
    assert member_names(app, group_named(app, "Early")) == ["later@example.com"]


def test_reference_in_path_and_patch_value(app, scim):
    existing = scim.create_group("Existing")
    body = bulk(
        scim,
        post_user("u", "pat@example.com"),
        patch_op(
            f"/Groups/{existing['id']}",
            {"op": "Add", "path": "members", "value": [{"value": "bulkId:u"}]},
        ),
        patch_op(
            "/Users/bulkId:u", {"op": "Replace", "path": "active", "value": "False"}
        ),
    )
    pat = user_named(app, "pat@example.com")
    assert [op["status"] for op in body["Operations"]] == ["201", "200", "200"]
    assert body["Operations"][2]["location"] == f"{BASE}/Users/{pat.scim_id}"
    assert pat.active is False
    assert member_names(app, group_named(app, "Existing")) == ["pat@example.com"]


def test_reference_inside_a_member_filter_path(app, scim):
    group = scim.create_group("Filtered")
    body = bulk(
        scim,
        post_user("m", "member@example.com"),
        {
            "method": "PATCH",
            "path": f"/Groups/{group['id']}",
            "data": {
                "Operations": [
                    {"op": "add", "path": "members", "value": [{"value": "bulkId:m"}]},
                    {"op": "remove", "path": 'members[value eq "bulkId:m"]'},
                ]
            },
        },
    )
    assert [op["status"] for op in body["Operations"]] == ["201", "200"]
    assert member_names(app, group_named(app, "Filtered")) == []


def test_circular_manager_references_are_both_set(app, scim):
    """§3.7.1: A's manager is B and B's manager is A, both created here."""
    body = bulk(
        scim,
        post_user(
            "a", "a@example.com", **{ENTERPRISE: {"manager": {"value": "bulkId:b"}}}
        ),
        post_user(
            "b", "b@example.com", **{ENTERPRISE: {"manager": {"value": "bulkId:a"}}}
        ),
    )
    assert [op["status"] for op in body["Operations"]] == ["201", "201"]
    a, b = user_named(app, "a@example.com"), user_named(app, "b@example.com")
    assert scim.get(f"/Users/{a.scim_id}").get_json()[ENTERPRISE]["manager"][
        "value"
    ] == (b.scim_id)
    assert scim.get(f"/Users/{b.scim_id}").get_json()[ENTERPRISE]["manager"][
        "value"
    ] == (a.scim_id)
    # The versions reported are the final ones, after the circular reference was set.
    assert [op["version"] for op in body["Operations"]] == [version(a), version(b)]


@pytest.mark.parametrize(
    "spelled", ["bulkId:b", "\\u0062ulkId:b", "bulkId\\u003ab", "bulkId:\\u0062"]
)
def test_references_spelled_with_escapes_are_resolved(app, scim, spelled):
    """A \\u escape anywhere in "bulkId:x" decodes to the same reference."""
    operations = [
        post_user("a", "a@example.com", **{ENTERPRISE: {"manager": {"value": "X"}}}),
        post_user("b", "b@example.com"),
        post_group("g", "Escaped", "Y"),
    ]
    text = json.dumps({"schemas": [BULK_REQUEST], "Operations": operations})
    text = text.replace('"X"', f'"{spelled}"').replace('"Y"', f'"{spelled}"')
    response = scim.post("/Bulk", text)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [op["status"] for op in body["Operations"]] == ["201", "201", "201"]
    a, b = user_named(app, "a@example.com"), user_named(app, "b@example.com")
    manager = scim.get(f"/Users/{a.scim_id}").get_json()[ENTERPRISE]["manager"]
    assert manager["value"] == b.scim_id
    assert member_names(app, group_named(app, "Escaped")) == ["b@example.com"]


def test_a_path_may_name_a_reference_percent_encoded(app, scim):
    """/Users/bulkId%3Ab is the user the POST with bulkId b created."""
    body = bulk(
        scim,
        post_user("b", "b@example.com"),
        patch_op(
            "/Users/bulkId%3Ab", {"op": "replace", "path": "displayName", "value": "B"}
        ),
    )
    assert [op["status"] for op in body["Operations"]] == ["201", "200"]
    b = user_named(app, "b@example.com")
    assert body["Operations"][1]["location"] == f"{BASE}/Users/{b.scim_id}"
    assert scim.get(f"/Users/{b.scim_id}").get_json()["displayName"] == "B"


def test_a_ring_of_1000_forward_references_resolves(app, scim):
    """Each user's manager is the next one's bulkId and the last points at the first."""
    count = 1000
    operations = [
        post_user(
            f"u{n}",
            f"ring{n:04d}",
            **{ENTERPRISE: {"manager": {"value": f"bulkId:u{(n + 1) % count}"}}},
        )
        for n in range(count)
    ]
    body = bulk(scim, *operations)
    assert {op["status"] for op in body["Operations"]} == {"201"}
    with app.app_context(), database.connection_context():
        users = {u.user_name: u for u in User.select()}
    for n in range(count):
        manager = users[f"ring{n:04d}"].attributes[ENTERPRISE]["manager"]["value"]
        assert manager == users[f"ring{(n + 1) % count:04d}"].scim_id


def test_rfc_circular_groups_are_both_created(app, scim):
    """§3.7.1's two groups that contain each other: both are created (nesting is not kept)."""
    body = bulk(
        scim,
        post_group("groupA", "Group A", "bulkId:groupB"),
        post_group("groupB", "Group B", "bulkId:groupA"),
    )
    a, b = group_named(app, "Group A"), group_named(app, "Group B")
    assert body["Operations"] == [
        {
            "location": f"{BASE}/Groups/{a.scim_id}",
            "method": "POST",
            "bulkId": "groupA",
            "version": version(a),
            "status": "201",
        },
        {
            "location": f"{BASE}/Groups/{b.scim_id}",
            "method": "POST",
            "bulkId": "groupB",
            "version": version(b),
            "status": "201",
        },
    ]
    assert rows(app, Membership) == []


def test_unknown_and_failed_references_are_409(app, scim):
    scim.create_user("taken")
    body = bulk(
        scim,
        post_group("g1", "Ghosts", "bulkId:nobody"),
        post_user("fails", "taken"),
        post_group("g2", "Orphans", "bulkId:fails"),
    )
    assert body["Operations"] == [
        {
            "method": "POST",
            "bulkId": "g1",
            "status": "409",
            "response": error(
                409,
                "bulkId 'nobody' is not defined by a POST operation in this request.",
            ),
        },
        {
            "method": "POST",
            "bulkId": "fails",
            "status": "409",
            "response": error(
                409, "A user with userName 'taken' already exists.", "uniqueness"
            ),
        },
        {
            "method": "POST",
            "bulkId": "g2",
            "status": "409",
            "response": error(409, "bulkId 'fails' names an operation that failed."),
        },
    ]
    assert rows(app, Group) == []


def test_duplicate_bulk_id_is_refused_on_the_second_use(app, scim):
    body = bulk(scim, post_user("same", "one"), post_user("same", "two"))
    assert body["Operations"][1] == {
        "method": "POST",
        "bulkId": "same",
        "status": "400",
        "response": error(
            400, "bulkId 'same' is used by more than one operation.", "invalidValue"
        ),
    }
    assert [u.user_name for u in rows(app, User)] == ["one"]


#
# failOnErrors
#


@pytest.mark.parametrize("fail_on_errors", [1, "1"])
def test_fail_on_errors_stops_after_that_many(app, scim, fail_on_errors):
    scim.create_user("taken")
    body = bulk(
        scim,
        post_user("a", "first"),
        post_user("b", "taken"),
        post_user("c", "never"),
        failOnErrors=fail_on_errors,
    )
    assert [(op["bulkId"], op["status"]) for op in body["Operations"]] == [
        ("a", "201"),
        ("b", "409"),
    ]
    assert user_named(app, "never") is None


def test_fail_on_errors_counts_every_error(app, scim):
    body = bulk(
        scim,
        {"method": "DELETE", "path": "/Users/x1"},
        post_user("a", "kept"),
        {"method": "DELETE", "path": "/Users/x2"},
        post_user("b", "skipped"),
        failOnErrors=2,
    )
    assert [op["status"] for op in body["Operations"]] == ["404", "201", "404"]
    assert user_named(app, "kept") is not None
    assert user_named(app, "skipped") is None


def test_without_fail_on_errors_everything_is_attempted(app, scim):
    body = bulk(
        scim,
        *[{"method": "DELETE", "path": f"/Users/x{i}"} for i in range(5)],
        post_user("a", "last"),
        failOnErrors=0,
    )
    assert [op["status"] for op in body["Operations"]] == ["404"] * 5 + ["201"]


@pytest.mark.parametrize("value", [-1, 1.5, True, "many", [1]])
def test_invalid_fail_on_errors_is_400(scim, value):
    body = bulk(scim, post_user("a", "x"), failOnErrors=value, status=400)
    assert body == error(
        400, "failOnErrors must be a positive integer.", "invalidValue"
    )


#
# Limits (RFC 7644 §3.7.4)
#


def test_too_many_operations_is_413(app, scim):
    app.config["SCIM_BULK_MAX_OPERATIONS"] = 3
    config = scim.get("/ServiceProviderConfig").get_json()["bulk"]
    assert config == {"supported": True, "maxOperations": 3, "maxPayloadSize": 1048576}
    body = bulk(scim, *[post_user(str(i), f"u{i}") for i in range(4)], status=413)
    assert body == error(413, "The bulk request has 4 operations; maxOperations is 3.")
    assert rows(app, User) == []
    assert bulk(scim, *[post_user(str(i), f"u{i}") for i in range(3)])


def test_payload_above_the_limit_is_413_before_it_is_read(app, scim, monkeypatch):
    app.config["SCIM_BULK_MAX_PAYLOAD"] = 2000
    raw = json.dumps(
        {
            "schemas": [BULK_REQUEST],
            "Operations": [
                post_user(str(i), f"user{i}@example.com") for i in range(40)
            ],
        }
    )
    assert len(raw) > 2000
    read = []
    monkeypatch.setattr(
        "mdm.scim.http.request_body", lambda: read.append(1) or pytest.fail("read")
    )
    response = scim.post("/Bulk", raw)
    assert response.status_code == 413
    assert response.get_json() == error(
        413, "The size of the bulk operation exceeds the maxPayloadSize (2000 bytes)."
    )
    assert read == [] and rows(app, User) == []


def test_streamed_payload_above_the_limit_is_413(app, scim):
    app.config["SCIM_BULK_MAX_PAYLOAD"] = 2000
    raw = json.dumps(
        {
            "schemas": [BULK_REQUEST],
            "Operations": [
                post_user(str(i), f"user{i}@example.com") for i in range(40)
            ],
        }
    ).encode()

    response = scim.client.post(
        "/scim/v2/Bulk",
        input_stream=io.BytesIO(raw),
        headers={
            "Authorization": f"Bearer {scim.secret}",
            "Content-Type": "application/scim+json",
        },
        environ_overrides={
            "HTTP_TRANSFER_ENCODING": "chunked",
            "wsgi.input_terminated": True,
        },
    )
    assert response.status_code == 413
    assert response.get_json()["detail"] == (
        "The size of the bulk operation exceeds the maxPayloadSize (2000 bytes)."
    )
    assert rows(app, User) == []


def test_bulk_may_be_larger_than_other_requests(app, scim):
    """maxPayloadSize, not MAX_CONTENT_LENGTH, bounds a Bulk request."""
    app.config["MAX_CONTENT_LENGTH"] = 1000
    body = bulk(scim, *[post_user(str(i), f"user{i}@example.com") for i in range(20)])
    assert [op["status"] for op in body["Operations"]] == ["201"] * 20


#
# Malformed requests and operations
#


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ("{}", "A BulkRequest needs an Operations array."),
        ('{"Operations": {}}', "Operations must be an array."),
        ("[]", "The request body must be a JSON object."),
        ("{", None),
    ],
)
def test_malformed_bulk_request_is_400(scim, raw, detail):
    response = scim.post("/Bulk", raw)
    assert response.status_code == 400
    body = response.get_json()
    assert body["scimType"] == "invalidSyntax"
    if detail:
        assert body["detail"] == detail


def test_empty_operations_answer_an_empty_response(scim):
    assert bulk(scim) == {"schemas": [BULK_RESPONSE], "Operations": []}


@pytest.mark.parametrize(
    ("operation", "status", "scim_type", "detail"),
    [
        ("nope", "400", "invalidSyntax", "Each operation must be a JSON object."),
        (
            {"method": "GET", "path": "/Users"},
            "400",
            "invalidValue",
            "Unsupported method 'GET': use POST, PUT, PATCH or DELETE.",
        ),
        (
            {"path": "/Users"},
            "400",
            "invalidValue",
            "Unsupported method None: use POST, PUT, PATCH or DELETE.",
        ),
        (
            {"method": "POST", "path": "/Devices", "data": {}},
            "400",
            "invalidValue",
            "Bulk operations apply to /Users and /Groups, not '/Devices'.",
        ),
        (
            {"method": "POST", "data": {}},
            "400",
            "invalidValue",
            "Each operation needs a path such as /Users or /Users/{id}.",
        ),
        (
            {"method": "POST", "path": "/Users/abc", "data": {}},
            "400",
            "invalidValue",
            "A POST path names a resource type, such as /Users or /Groups.",
        ),
        (
            {"method": "DELETE", "path": "/Groups"},
            "400",
            "invalidValue",
            "A DELETE path names one resource, such as /Users/{id}.",
        ),
        (
            {"method": "PUT", "path": "/Users/abc"},
            "400",
            "invalidSyntax",
            "A PUT operation needs a data object.",
        ),
        (
            {"method": "PATCH", "path": "/Users/abc", "data": {}, "version": 3},
            "400",
            "invalidValue",
            "version must be a string (an ETag).",
        ),
        (
            {"method": "POST", "path": "/Users", "bulkId": 7, "data": {}},
            "400",
            "invalidValue",
            "bulkId must be a non-empty string.",
        ),
        (
            {"method": "POST", "path": "/Users", "data": {"displayName": "x"}},
            "400",
            "invalidValue",
            "userName is required.",
        ),
    ],
)
def test_invalid_operation_fails_alone(app, scim, operation, status, scim_type, detail):
    body = bulk(scim, operation, post_user("ok", "fine"))
    first, second = body["Operations"]
    assert first["status"] == status
    assert first["response"] == error(int(status), detail, scim_type)
    assert second["status"] == "201"
    assert [u.user_name for u in rows(app, User)] == ["fine"]


def test_paths_may_be_absolute_or_carry_the_prefix(app, scim):
    user = scim.create_user("abs")
    body = bulk(
        scim,
        {"method": "post", "path": "users", "bulkId": "a", "data": {"userName": "n"}},
        {"method": "DELETE", "path": f"{BASE}/Users/{user['id']}"},
        {"method": "Delete", "path": "/scim/v2/Users/missing"},
    )
    assert [(op["method"], op["status"]) for op in body["Operations"]] == [
        ("POST", "201"),
        ("DELETE", "204"),
        ("DELETE", "404"),
    ]


def test_bulk_needs_a_bearer_token(client):
    response = client.post(
        "/scim/v2/Bulk",
        data=json.dumps({"Operations": [post_user("a", "x")]}),
        content_type="application/scim+json",
    )
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/scim+json"


#
# Each operation applies atomically; Entra's quirks are accepted in Bulk too
#


def test_failing_operation_leaves_nothing_half_written(app, scim):
    scim.create_group("Taken")
    alice = scim.create_user("alice", displayName="Alice")
    body = bulk(
        scim,
        # A group with valid members but a taken name: no group, no membership rows.
        post_group("g", "Taken", alice["id"]),
        # A PATCH whose second operation is invalid: the first is not kept either.
        {
            "method": "PATCH",
            "path": f"/Users/{alice['id']}",
            "data": {
                "Operations": [
                    {"op": "replace", "path": "displayName", "value": "Changed"},
                    {"op": "replace", "path": "id", "value": "new-id"},
                ]
            },
        },
    )
    assert [op["status"] for op in body["Operations"]] == ["409", "400"]
    assert len(rows(app, Group)) == 1 and rows(app, Membership) == []
    assert scim.get(f"/Users/{alice['id']}").get_json()["displayName"] == "Alice"


def test_entra_patch_shapes_work_in_bulk(app, scim):
    user = scim.create_user("entra@example.com", active=True)
    others = [scim.create_user(f"m{i}@example.com") for i in range(3)]
    group = scim.create_group("Entra", [o["id"] for o in others])
    body = bulk(
        scim,
        patch_op(
            f"/Users/{user['id']}",
            {
                "op": "Replace",
                "value": {
                    "active": "False",
                    "name.givenName": "Ent",
                    f"{ENTERPRISE}:department": "Sales",
                },
            },
        ),
        patch_op(
            f"/Groups/{group['id']}",
            {
                "op": "Remove",
                "path": "members",
                "value": [{"value": others[0]["id"]}, {"value": others[1]["id"]}],
            },
        ),
    )
    assert [op["status"] for op in body["Operations"]] == ["200", "200"]
    now = scim.get(f"/Users/{user['id']}").get_json()
    assert now["active"] is False
    assert now["name"]["givenName"] == "Ent"
    assert now[ENTERPRISE]["department"] == "Sales"
    assert member_names(app, group_named(app, "Entra")) == ["m2@example.com"]


def test_group_operations(app, scim):
    users = [scim.create_user(f"g{i}") for i in range(3)]
    group = scim.create_group("Team", [users[0]["id"]])
    body = bulk(
        scim,
        {
            "method": "PUT",
            "path": f"/Groups/{group['id']}",
            "version": group["meta"]["version"],
            "data": {
                "displayName": "Team 2",
                "members": [{"value": u["id"]} for u in users[1:]],
            },
        },
        {"method": "DELETE", "path": f"/Groups/{group['id']}", "version": 'W/"1"'},
    )
    team = group_named(app, "Team 2")
    assert body["Operations"] == [
        {
            "location": f"{BASE}/Groups/{group['id']}",
            "method": "PUT",
            "version": 'W/"2"',
            "status": "200",
        },
        {
            "location": f"{BASE}/Groups/{group['id']}",
            "method": "DELETE",
            "status": "412",
            "response": error(
                412, 'The resource has changed: its version is now W/"2".'
            ),
        },
    ]
    assert member_names(app, team) == ["g1", "g2"]


#
# Activity log
#


def test_each_operation_is_recorded_with_the_request(app, scim):
    scim.create_user("taken")
    bulk(scim, post_user("a", "new@example.com"), post_user("b", "taken"))
    writer.flush()
    with activity_db.connection_context():
        entries = list(ActivityEntry.select().order_by(ActivityEntry.id))
    new = user_named(app, "new@example.com")
    bulk_rows = [e for e in entries if e.path != "/scim/v2/Users" or e.summary]
    summary = [
        (
            e.method,
            e.path,
            e.status,
            e.resource_type,
            e.resource_id,
            e.target,
            e.summary,
        )
        for e in bulk_rows[-3:]
    ]
    assert summary == [
        (
            "POST",
            "/scim/v2/Users",
            201,
            "User",
            new.scim_id,
            "new@example.com",
            "Bulk: created",
        ),
        ("POST", "/scim/v2/Users", 409, "User", None, "taken", "Bulk"),
        (
            "POST",
            "/scim/v2/Bulk",
            200,
            "Bulk",
            None,
            None,
            "2 of 2 operations applied, 1 failed",
        ),
    ]
    assert bulk_rows[-2].scim_type == "uniqueness"
    # Every operation carries its request's sender and id.
    request_row = bulk_rows[-1]
    assert request_row.idp == "entra" and len(request_row.request_id) == 32
    for e in bulk_rows[-3:-1]:
        sender = (e.idp, e.token_key, e.client_address, e.user_agent, e.request_id)
        assert sender == (
            request_row.idp,
            request_row.token_key,
            request_row.client_address,
            request_row.user_agent,
            request_row.request_id,
        )


def test_passwords_in_operations_are_redacted(app, scim):
    bulk(scim, post_user("a", "pw@example.com", password="Secret-123"))
    writer.flush()
    with activity_db.connection_context():
        stored = [e.request_body or "" for e in ActivityEntry.select()]
    assert stored and not any("Secret-123" in text for text in stored)


#
# Loading a directory
#


def counting_transactions(monkeypatch):
    """Count the write transactions the Bulk user POSTs open."""
    from mdm.scim import resources

    opened = []
    real = resources.write_transaction

    def counted():
        opened.append(1)
        return real()

    monkeypatch.setattr(resources, "write_transaction", counted)
    return opened


def test_user_posts_share_transactions_and_still_fail_alone(app, scim, monkeypatch):
    scim.create_user("taken")
    operations = [post_user(f"u{n}", f"load{n:03d}") for n in range(250)]
    operations[120] = post_user("u120", "taken")
    operations[180] = {"method": "POST", "path": "/Users", "data": {"active": True}}
    opened = counting_transactions(monkeypatch)
    body = bulk(scim, *operations)
    results = body["Operations"]
    assert len(results) == 250
    assert results[120] == {
        "method": "POST",
        "bulkId": "u120",
        "status": "409",
        "response": error(
            409, "A user with userName 'taken' already exists.", "uniqueness"
        ),
    }
    assert results[180]["status"] == "400"
    assert results[180]["response"]["scimType"] == "invalidValue"
    created = [r for i, r in enumerate(results) if i not in (120, 180)]
    assert {r["status"] for r in created} == {"201"}
    with app.app_context(), database.connection_context():
        names = {u.user_name: u.scim_id for u in User.select()}
    expected = {f"load{n:03d}" for n in range(250) if n not in (120, 180)}
    assert set(names) == expected | {"taken"}
    for n, result in enumerate(results):
        if n not in (120, 180):
            assert result["location"] == f"{BASE}/Users/{names[f'load{n:03d}']}"
    # Ops 0-99, then 100-179 (the refused name fails alone inside it), then
    # 181-249: the operation that fails to parse ends a run.
    assert len(opened) == 3


def test_fail_on_errors_stops_inside_a_shared_transaction(app, scim):
    scim.create_user("taken1")
    scim.create_user("taken2")
    operations = [post_user(f"u{n}", f"load{n}") for n in range(10)]
    operations[3] = post_user("u3", "taken1")
    operations[6] = post_user("u6", "taken2")
    body = bulk(scim, *operations, failOnErrors=2)
    assert [op["status"] for op in body["Operations"]] == [
        "201",
        "201",
        "201",
        "409",
        "201",
        "201",
        "409",
    ]
    with app.app_context(), database.connection_context():
        names = {u.user_name for u in User.select()}
    assert names == {"taken1", "taken2", "load0", "load1", "load2", "load4", "load5"}
    # The rows past the stop left nothing behind: not in the kept count, not
    # in the substring index, and their names are free.
    assert scim.get("/Users?count=0").get_json()["totalResults"] == 7
    found = scim.get('/Users?filter=userName co "load"').get_json()
    assert sorted(r["userName"] for r in found["Resources"]) == [
        "load0",
        "load1",
        "load2",
        "load4",
        "load5",
    ]
    assert scim.get('/Users?filter=userName co "load8"').get_json()["totalResults"] == 0
    body = bulk(scim, post_user("again", "load8"), post_user("more", "load9"))
    assert [op["status"] for op in body["Operations"]] == ["201", "201"]
    assert scim.get('/Users?filter=userName co "load8"').get_json()["totalResults"] == 1


def test_a_name_twice_in_one_run_is_stored_once(app, scim):
    from mdm import webhooks
    from mdm.webhooks import WebhookEvent

    with app.app_context(), database.connection_context():
        webhooks.add_endpoint("https://hooks.example.com/in", ())
    operations = [post_user(f"u{n}", f"twice{n}") for n in range(6)]
    operations[2] = post_user("u2", "Twice0")  # userName is caseExact=false
    operations[4] = post_user("u4", "twice3")
    body = bulk(scim, *operations)
    assert [op["status"] for op in body["Operations"]] == [
        "201",
        "201",
        "409",
        "201",
        "409",
        "201",
    ]
    assert body["Operations"][2]["response"] == error(
        409, "A user with userName 'Twice0' already exists.", "uniqueness"
    )
    stored = {u.user_name: u for u in rows(app, User)}
    assert set(stored) == {"twice0", "twice1", "twice3", "twice5"}
    for n in (0, 1, 3, 5):
        location = body["Operations"][n]["location"]
        assert location == f"{BASE}/Users/{stored[f'twice{n}'].scim_id}"
        got = scim.get(location.removeprefix(BASE)).get_json()
        assert got["userName"] == f"twice{n}"
    # An event for each user stored, none for the refused ones.
    events = rows(app, WebhookEvent)
    assert sorted(event.resource_id for event in events) == sorted(
        user.scim_id for user in stored.values()
    )
    assert {event.type for event in events} == {"user.created"}


def test_a_run_splits_where_the_engine_binds_fewer_values(app, scim, monkeypatch):
    from mdm.scim import resources

    scim.create_user("taken")
    statements = []
    real = resources._insert_statement

    def counted(inserts):
        statements.append(len(inserts))
        return real(inserts)

    monkeypatch.setattr(resources, "_insert_statement", counted)
    # A user's INSERT binds a value for each column but its id, and two
    # more: three rows fit, four do not.
    binds = len(User._meta.sorted_fields) - 1 + 2
    monkeypatch.setattr(resources, "most_parameters", lambda: 3 * binds)
    operations = [post_user(f"u{n}", f"split{n}") for n in range(10)]
    operations[4] = post_user("u4", "taken")
    operations[7] = post_user("u7", "SPLIT2")  # taken two statements earlier
    body = bulk(scim, *operations)
    statuses = [op["status"] for op in body["Operations"]]
    assert statuses == ["201"] * 4 + ["409"] + ["201"] * 2 + ["409"] + ["201"] * 2
    assert statements == [3, 3, 3, 1]
    stored = {u.user_name: u.scim_id for u in rows(app, User)}
    kept = [n for n in range(10) if n not in (4, 7)]
    assert set(stored) == {"taken"} | {f"split{n}" for n in kept}
    for n in kept:
        location = f"{BASE}/Users/{stored[f'split{n}']}"
        assert body["Operations"][n]["location"] == location


def test_bulk_load_of_10000_users_in_batches(app, scim):
    """Ten requests of 1,000 operations load 10,000 users; the last adds them to a group."""
    app.config["ACTIVITY_LOG"] = False
    for batch in range(10):
        operations = [
            post_user(
                f"u{n}",
                f"user{n:05d}@example.com",
                displayName=f"User {n}",
                emails=[{"value": f"user{n:05d}@example.com", "primary": True}],
            )
            for n in range(batch * 1000, (batch + 1) * 1000)
        ]
        body = bulk(scim, *operations)
        assert {op["status"] for op in body["Operations"]} == {"201"}
    with app.app_context(), database.connection_context():
        assert User.select().count() == 10000
        ids = [u.scim_id for u in User.select(User.scim_id).order_by(User.id)]
    members = [{"value": scim_id} for scim_id in ids]
    body = bulk(
        scim,
        {
            "method": "POST",
            "path": "/Groups",
            "bulkId": "all",
            "data": {"displayName": "Everyone"},
        },
        {
            "method": "PATCH",
            "path": "/Groups/bulkId:all",
            "data": {
                "Operations": [
                    {"op": "add", "path": "members", "value": members[:1000]}
                ]
            },
        },
    )
    assert [op["status"] for op in body["Operations"]] == ["201", "200"]
    everyone = group_named(app, "Everyone")
    assert len(rows(app, Membership, Membership.group == everyone.id)) == 1000
    assert (
        scim.get('/Users?filter=userName eq "user09999@example.com"').get_json()[
            "totalResults"
        ]
        == 1
    )
