"""Redaction works on the parsed body: JSON escapes cannot smuggle a secret into the log."""

import json

import pytest

from mdm import activity
from mdm.activity import ActivityEntry
from mdm.activity import activity_db

from .test_activity import file_bytes

SECRET = "Hunter2-escaped"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
# "password" as a client may spell it on the wire: JSON \u escapes, lower- and
# upper-case hex digits and letters, bare or as a full attribute URN.
SPELLINGS = [
    "pass\\u0077ord",
    "PASS\\u0057ORD",
    "p\\u0061\\u0073\\u0073word",
    "PASSW\\u004FRD",
    "passw\\u006fRD",
    f"{USER}:p\\u0061ssword",
    "urn:ietf:params:scim:schemas:core:2.0:User:\\u0070assword",
]


def wire(template, name):
    """Return a JSON text with ``name`` (already escaped) in place of NAME."""
    text = json.dumps(template).replace("NAME", name)
    json.loads(text)  # still valid JSON
    assert "password" not in text.lower()
    return text


def stored(app):
    """Return the request bodies of every activity row, oldest first."""
    activity.writer.flush()
    with activity_db.connection_context():
        return [
            e.request_body
            for e in ActivityEntry.select().order_by(ActivityEntry.id)
            if e.status < 400
        ]


def assert_redacted(app, bodies):
    assert bodies
    for body in bodies:
        assert SECRET not in body
        assert "[redacted]" in body
    assert SECRET.encode() not in file_bytes(app)


def create(scim, name="kim@example.com"):
    response = scim.post("/Users", {"schemas": [USER], "userName": name})
    assert response.status_code == 201
    return response.get_json()["id"]


@pytest.mark.parametrize("name", SPELLINGS)
def test_post_with_an_escaped_password_key(app, scim, name):
    text = wire({"schemas": [USER], "userName": "e@example.com", "NAME": SECRET}, name)
    response = scim.post("/Users", text)
    assert response.status_code == 201, response.get_json()
    assert_redacted(app, stored(app))


@pytest.mark.parametrize("name", SPELLINGS)
def test_patch_with_an_escaped_password_path(app, scim, name):
    user_id = create(scim)
    text = wire(
        {
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "NAME", "value": SECRET}],
        },
        name,
    )
    response = scim.patch(f"/Users/{user_id}", text)
    assert response.status_code in (200, 204), response.get_json()
    assert_redacted(app, stored(app)[1:])


@pytest.mark.parametrize("name", SPELLINGS)
def test_pathless_patch_with_an_escaped_password_key(app, scim, name):
    user_id = create(scim)
    text = wire(
        {
            "schemas": [PATCH],
            "Operations": [
                {"op": "replace", "value": {"NAME": SECRET, "displayName": "Kim"}}
            ],
        },
        name,
    )
    response = scim.patch(f"/Users/{user_id}", text)
    assert response.status_code in (200, 204), response.get_json()
    assert_redacted(app, stored(app)[1:])


@pytest.mark.parametrize("name", SPELLINGS)
def test_bulk_with_an_escaped_password_key_and_path(app, scim, name):
    user_id = create(scim)
    text = wire(
        {
            "schemas": [BULK],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "one",
                    "data": {
                        "schemas": [USER],
                        "userName": "b@example.com",
                        "NAME": SECRET,
                    },
                },
                {
                    "method": "PATCH",
                    "path": f"/Users/{user_id}",
                    "data": {
                        "schemas": [PATCH],
                        "Operations": [
                            {"op": "replace", "path": "NAME", "value": SECRET}
                        ],
                    },
                },
            ],
        },
        name,
    )
    response = scim.post("/Bulk", text)
    assert response.status_code == 200, response.get_json()
    statuses = [op["status"] for op in response.get_json()["Operations"]]
    assert statuses == ["201", "200"] or statuses == ["201", "204"]
    # The Bulk request itself and each of its two operations.
    bodies = stored(app)[1:]
    assert len(bodies) == 3
    assert_redacted(app, bodies)


def test_a_lone_surrogate_escape_is_kept_escaped():
    assert activity.body_text(b'{"displayName": "a\\ud800b"}') == (
        '{"displayName": "a\\ud800b"}'
    )


def test_text_without_escapes_or_secrets_is_kept_as_sent():
    raw = b'{"userName":  "kim@example.com"}'
    assert activity.body_text(raw) == raw.decode()
