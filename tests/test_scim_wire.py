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


#
# A schema URN joined by a dot: urn:...:User.manager
#

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CUSTOM = "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User"


def patch(scim, user, *operations):
    response = scim.patch(
        f"/Users/{user['id']}", {"schemas": [PATCH_OP], "Operations": list(operations)}
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture
def people(scim):
    boss = scim.create_user("boss@contoso.com")
    chief = scim.create_user("chief@contoso.com")
    user = scim.create_user(
        "alice@contoso.com", **{ENTERPRISE: {"employeeNumber": "7"}}
    )
    return boss["id"], chief["id"], user


def manager_of(scim, user):
    return scim.get(f"/Users/{user['id']}").get_json().get(ENTERPRISE)


@pytest.mark.parametrize("urn", [ENTERPRISE, ENTERPRISE.upper()])
def test_dotted_manager_paths_in_every_entra_shape(scim, people, urn):
    # It used to be ignored: 200 and no manager, so Entra sent it every cycle.
    boss, chief, user = people
    dotted = f"{urn}.manager"
    ref = f"http://localhost/scim/v2/Users/{boss}"
    sets = [
        {"op": "Add", "path": dotted, "value": boss},
        {"op": "add", "path": dotted, "value": {"value": boss}},
        {"op": "Add", "path": dotted, "value": [{"$ref": ref, "value": boss}]},
        {"op": "replace", "path": f"{urn}.manager.value", "value": boss},
        {"op": "replace", "value": {dotted: boss}},
        {"op": "replace", "value": {f"{urn}.manager.value": boss}},
    ]
    removals = [
        {"op": "replace", "path": dotted, "value": ""},
        {"op": "replace", "path": dotted, "value": {"value": ""}},
        {"op": "remove", "path": dotted},
    ]
    for operation in sets:
        patch(scim, user, {"op": "replace", "path": dotted, "value": chief})
        assert manager_of(scim, user) == {
            "employeeNumber": "7",
            "manager": {"value": chief},
        }
        body = patch(scim, user, operation)
        manager = {"value": boss}
        if isinstance(operation["value"], list):
            manager["$ref"] = ref  # kept as sent
        expected = {"employeeNumber": "7", "manager": manager}
        assert body[ENTERPRISE] == expected, operation
        assert manager_of(scim, user) == expected, operation
    for operation in removals:
        patch(scim, user, {"op": "add", "path": dotted, "value": boss})
        body = patch(scim, user, operation)
        assert body[ENTERPRISE] == {"employeeNumber": "7"}, operation
        assert manager_of(scim, user) == {"employeeNumber": "7"}, operation


def test_dotted_paths_in_filters_and_projections(scim, people):
    boss, _, user = people
    patch(scim, user, {"op": "add", "path": f"{ENTERPRISE}:manager", "value": boss})
    for text in [
        f'{ENTERPRISE}.manager eq "{boss}"',
        f'{ENTERPRISE}.manager.value eq "{boss}"',
        f'id eq "{user["id"]}" and {ENTERPRISE}.manager eq "{boss}"',
        f'{ENTERPRISE}.employeeNumber eq "7"',
    ]:
        found = scim.get("/Users?attributes=id&filter=" + quote(text)).get_json()
        assert found["Resources"] == [{"schemas": [USER], "id": user["id"]}], text
    projected = scim.get(
        f"/Users/{user['id']}?attributes={ENTERPRISE}.manager"
    ).get_json()
    assert projected == {
        "schemas": [USER, ENTERPRISE],
        "id": user["id"],
        ENTERPRISE: {"manager": {"value": boss}},
    }
    excluded = scim.get(
        f"/Users/{user['id']}?excludedAttributes={ENTERPRISE}.manager"
    ).get_json()
    assert excluded[ENTERPRISE] == {"employeeNumber": "7"}
    listed = scim.post(
        "/Users/.search",
        {
            "filter": 'userName eq "alice@contoso.com"',
            "attributes": [f"{ENTERPRISE}.manager"],
        },
    ).get_json()
    assert listed["Resources"][0][ENTERPRISE] == {"manager": {"value": boss}}


def test_dotted_keys_in_a_created_user(scim, people):
    boss, _, _ = people
    user = scim.create_user(
        "bob@contoso.com",
        **{
            f"{ENTERPRISE}.employeeNumber": "8",
            f"{ENTERPRISE}.manager": {"value": boss},
        },
    )
    assert user[ENTERPRISE] == {"employeeNumber": "8", "manager": {"value": boss}}
    assert manager_of(scim, user) == user[ENTERPRISE]


def test_dotted_paths_of_a_custom_extension(scim, runner):
    runner.invoke(args=["attribute", "add", "badge", "--type", "integer"])
    user = scim.create_user("jo@example.com", **{CUSTOM: {"badge": 1}})
    body = patch(scim, user, {"op": "replace", "path": f"{CUSTOM}.badge", "value": 2})
    assert body[CUSTOM] == {"badge": 2}
    body = patch(scim, user, {"op": "replace", "value": {f"{CUSTOM}.badge": 3}})
    assert body[CUSTOM] == {"badge": 3}
    found = scim.get("/Users?filter=" + quote(f"{CUSTOM}.badge eq 3")).get_json()
    assert [found_user["id"] for found_user in found["Resources"]] == [user["id"]]
    projected = scim.get(f"/Users/{user['id']}?attributes={CUSTOM}.badge").get_json()
    assert projected[CUSTOM] == {"badge": 3}


def test_dotted_names_without_a_urn_keep_their_meaning(scim):
    user = scim.create_user("n@example.com", name={"givenName": "Ann"})
    body = patch(
        scim,
        user,
        {"op": "replace", "path": "name.givenName", "value": "Anna"},
        {"op": "replace", "value": {"name.familyName": "Lee"}},
    )
    assert body["name"] == {"givenName": "Anna", "familyName": "Lee"}
    found = scim.get("/Users?filter=" + quote('name.givenName eq "Anna"')).get_json()
    assert found["totalResults"] == 1
    # Three names after a plain attribute are still no path.
    response = scim.get("/Users?filter=" + quote('name.givenName.x eq "Anna"'))
    assert response.status_code == 400
    assert response.get_json()["scimType"] == "invalidFilter"


#
# Wrong JSON types in complex multi-valued attributes
#

ADDRESS = "1 Main St, Springfield"


def test_an_address_sent_as_a_string_is_kept_as_its_formatted_text(app, scim):
    # It used to be answered 201 and dropped.
    user = scim.create_user("a@example.com", addresses=ADDRESS)
    assert user["addresses"] == [{"formatted": ADDRESS}]
    assert stored(app, user["id"])["addresses"] == [{"formatted": ADDRESS}]
    user = scim.create_user(
        "b@example.com", addresses=[ADDRESS, {"locality": "Paris", "type": "work"}]
    )
    assert user["addresses"] == [
        {"formatted": ADDRESS},
        {"locality": "Paris", "type": "work"},
    ]
    response = scim.put(
        f"/Users/{user['id']}",
        {"schemas": [USER], "userName": "b@example.com", "addresses": ["2 Side St"]},
    )
    assert response.status_code == 200
    assert response.get_json()["addresses"] == [{"formatted": "2 Side St"}]
    assert stored(app, user["id"])["addresses"] == [{"formatted": "2 Side St"}]


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "add", "path": "addresses", "value": ADDRESS},
        {"op": "Add", "path": "addresses", "value": [ADDRESS]},
        {"op": "replace", "path": "addresses", "value": ADDRESS},
        {"op": "replace", "value": {"addresses": ADDRESS}},
        {"op": "add", "value": {"addresses": [ADDRESS]}},
    ],
)
def test_an_address_string_in_a_patch_is_kept(app, scim, operation):
    user = scim.create_user("p@example.com")
    body = patch(scim, user, operation)
    assert body["addresses"] == [{"formatted": ADDRESS}]
    assert stored(app, user["id"])["addresses"] == [{"formatted": ADDRESS}]


def test_emails_as_strings_still_become_values(scim):
    user = scim.create_user("e@example.com", emails="e@example.com")
    assert user["emails"] == [{"value": "e@example.com"}]
    body = patch(scim, user, {"op": "add", "path": "emails", "value": "f@example.com"})
    assert body["emails"] == [{"value": "e@example.com"}, {"value": "f@example.com"}]


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (42, "addresses must be an array, not a number."),
        ([42], "addresses must be an object, not a number."),
        ([[ADDRESS]], "addresses must be an object, not an array."),
        ([True], "addresses must be an object, not a boolean."),
        (
            [{"streetAddress": {"line": ADDRESS}}],
            "addresses.streetAddress must be a string, not an object.",
        ),
    ],
)
def test_other_wrong_types_are_invalid_value_and_change_nothing(
    app, scim, value, detail
):
    user = scim.create_user("w@example.com", addresses=[{"locality": "Paris"}])
    before = stored(app, user["id"])
    response = scim.post(
        "/Users", {"schemas": [USER], "userName": "x@y", "addresses": value}
    )
    assert response.status_code == 400
    assert response.get_json() == error(400, detail, "invalidValue")
    response = scim.put(
        f"/Users/{user['id']}",
        {"schemas": [USER], "userName": "w@example.com", "addresses": value},
    )
    assert response.status_code == 400
    assert response.get_json()["scimType"] == "invalidValue"
    operation = {"op": "replace", "path": "addresses", "value": value}
    response = scim.patch(
        f"/Users/{user['id']}", {"schemas": [PATCH_OP], "Operations": [operation]}
    )
    assert response.status_code == 400
    assert response.get_json()["scimType"] == "invalidValue"
    assert stored(app, user["id"]) == before
    assert scim.get("/Users").get_json()["totalResults"] == 1
