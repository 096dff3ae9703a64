"""Input that older identity providers and careless clients send: understood, or refused."""

from urllib.parse import quote

import pytest

from mdm.db import database
from mdm.models import User

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def error(status, detail, scim_type):
    return {
        "schemas": [ERROR],
        "status": str(status),
        "scimType": scim_type,
        "detail": detail,
    }


def stored(app, user_id):
    with app.app_context(), database.connection_context():
        return User.get(User.scim_id == user_id).attributes


#
# Unquoted words in filters
#


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        (
            "userName eq abc",
            "Invalid filter: unquoted 'abc': a string must be in double quotes "
            "at position 13.",
        ),
        (
            "displayName eq Alice",
            "Invalid filter: unquoted 'Alice': a string must be in double quotes "
            "at position 16.",
        ),
        (
            'emails[type eq work].value eq "abc@example.com"',
            "Invalid filter: unquoted 'work': a string must be in double quotes "
            "at position 16.",
        ),
        (
            "externalId co jyoung",
            "Invalid filter: unquoted 'jyoung': a string must be in double quotes "
            "at position 15.",
        ),
    ],
)
def test_an_unquoted_word_is_invalid_filter(scim, text, detail):
    # It used to be read as a string and answer 200: a typo looked like "no
    # such user", and an IdP then creates a duplicate.
    scim.create_user("abc", displayName="Alice", externalId="jyoung")
    for query in (quote(text), text.replace(" ", "+")):
        response = scim.get(f"/Users?filter={query}")
        assert response.status_code == 400
        assert response.headers["Content-Type"] == "application/scim+json"
        assert response.get_json() == error(400, detail, "invalidFilter")


def test_the_legacy_unquoted_external_id_lookup_still_works(scim):
    # Microsoft's 2017 provisioning docs show filter=externalId eq jyoung.
    user = scim.create_user("jyoung@example.com", externalId="jyoung")
    for query in (
        "externalId eq jyoung",
        "externalId+eq+jyoung",
        "EXTERNALID eq jyoung",
    ):
        body = scim.get(f"/Users?filter={query}").get_json()
        assert body["totalResults"] == 1, query
        assert body["Resources"][0]["id"] == user["id"]
    assert (
        scim.get("/Users?filter=externalId eq nobody").get_json()["totalResults"] == 0
    )


@pytest.mark.parametrize(
    "text", ["active eq true", "active eq False", "title eq null", "title ne NULL"]
)
def test_keywords_stay_unquoted(scim, text):
    scim.create_user("a@example.com", active=True)
    assert scim.get("/Users?filter=" + quote(text)).status_code == 200


def test_an_unquoted_word_in_a_patch_path_is_invalid_path(app, scim):
    user = scim.create_user("p@example.com", emails=[{"value": "p@x", "type": "work"}])
    before = stored(app, user["id"])
    operation = {"op": "replace", "path": "emails[type eq work].value", "value": "q@x"}
    response = scim.patch(
        f"/Users/{user['id']}", {"schemas": [PATCH_OP], "Operations": [operation]}
    )
    assert response.status_code == 400
    assert response.get_json() == error(
        400,
        "Invalid path: unquoted 'work': a string must be in double quotes "
        "at position 16.",
        "invalidPath",
    )
    assert stored(app, user["id"]) == before
