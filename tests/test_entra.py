"""Replay of Microsoft Entra ID provisioning traffic against /scim/v2.

Every flow runs in two client modes (docs/entra.md §1):

* mode A, the default "scim" job: capitalised ``Add``/``Replace``/``Remove``, booleans
  as the strings ``"True"``/``"False"``, one operation per attribute, and member removal
  with ``path: "members"`` and a value array whose elements carry ``"$ref": null``;
* mode B, the Tenant URL with ``?aadOptscim062020``: the flag rides on every query
  string, operations are lowercase, booleans are JSON booleans, plain attributes are
  folded into one no-path ``replace`` with dotted and URN-qualified keys, and members
  are removed with ``members[value eq "<id>"]``.

The case labels (C1, U5, G4, P3, ...) are those of the replay inventory in §9.
"""

import copy
from urllib.parse import quote_plus

import pytest

from mdm.db import database
from mdm.models import User

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ADSCIM = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
MANAGER = f"{ENTERPRISE}:manager"
CUSTOM_EXTENSION = "urn:ietf:params:scim:schemas:extension:CustomExtension:2.0:User"
BASE = "http://localhost/scim/v2"
FLAG = "aadOptscim062020"
PROBE = "0f3b2c8e-6d1a-4c2e-9a51-2f4e7d9b1c33"
EMPTY_LIST = {
    "schemas": [LIST],
    "totalResults": 0,
    "startIndex": 1,
    "itemsPerPage": 0,
    "Resources": [],
}


class Entra:
    """Send requests shaped like one Entra provisioning mode ("A" or "B")."""

    def __init__(self, scim, mode):
        self.scim = scim
        self.mode = mode

    def url(self, path):
        """Carry the feature flag of a mode-B Tenant URL on every request."""
        if self.mode == "A":
            return path
        route, _, query = path.partition("?")
        return f"{route}?{FLAG}" + (f"&{query}" if query else "")

    def get(self, path, **kwargs):
        return self.scim.get(self.url(path), **kwargs)

    def post(self, path, body, **kwargs):
        return self.scim.post(self.url(path), body, **kwargs)

    def put(self, path, body, **kwargs):
        return self.scim.put(self.url(path), body, **kwargs)

    def delete(self, path, **kwargs):
        return self.scim.delete(self.url(path), **kwargs)

    def patch(self, path, *operations):
        body = {"schemas": [PATCH], "Operations": list(operations)}
        return self.scim.patch(self.url(path), body)

    def op(self, name):
        """Return an op name in this mode's casing: ``Replace`` or ``replace``."""
        return name.capitalize() if self.mode == "A" else name.lower()

    def boolean(self, value):
        """Return a boolean as this mode sends it: ``"True"`` or ``True``."""
        return str(value) if self.mode == "A" else value

    def update(self, changes):
        """Return the operations that change several user attributes (P3 / P4)."""
        if self.mode == "A":
            return [
                {"op": "Replace", "path": path, "value": value}
                for path, value in changes.items()
            ]
        # Mode B: filtered multi-valued paths stay path operations; the rest is
        # folded into one no-path replace keyed by dotted / URN-qualified names.
        filtered = [
            {"op": "replace", "path": path, "value": value}
            for path, value in changes.items()
            if "[" in path
        ]
        plain = {path: value for path, value in changes.items() if "[" not in path}
        return filtered + ([{"op": "replace", "value": plain}] if plain else [])

    def add_members(self, *ids):
        if self.mode == "A":
            value = [{"$ref": None, "value": i} for i in ids]
        else:
            value = [{"value": i} for i in ids]
        return {"op": self.op("add"), "path": "members", "value": value}

    def remove_member(self, user_id):
        if self.mode == "A":
            return {
                "op": "Remove",
                "path": "members",
                "value": [{"$ref": None, "value": user_id}],
            }
        return {"op": "remove", "path": f'members[value eq "{user_id}"]'}

    def find(self, path):
        """GET a list, check it is a 200 ListResponse, and return its Resources."""
        response = self.get(path)
        assert response.status_code == 200, response.get_json()
        assert response.headers["Content-Type"] == "application/scim+json"
        body = response.get_json()
        assert body["schemas"] == [LIST]
        assert body["totalResults"] == len(body["Resources"])
        return body["Resources"]


@pytest.fixture(params=["A", "B"])
def entra(request, scim):
    return Entra(scim, request.param)


def meta(kind, body, version, created=None):
    return {
        "resourceType": kind,
        "created": created or body["meta"]["created"],
        "lastModified": body["meta"]["lastModified"],
        "location": f"{BASE}/{kind}s/{body['id']}",
        "version": f'W/"{version}"',
    }


def error(status, detail, scim_type=None):
    body = {"schemas": [ERROR], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return body


def changed(user, body, version):
    """Copy ``user`` with the meta of the updated ``body`` at ``version``."""
    expected = copy.deepcopy(user)
    expected["meta"] = meta("User", body, version, user["meta"]["created"])
    return expected


def by_user_name(user_name):
    return "/Users?filter=" + quote_plus(f'userName eq "{user_name}"')


def default_user(user_name="alice@contoso.com", external_id="alice"):
    """A POST body with every default Entra attribute mapping populated (§3.3)."""
    return {
        "schemas": [CORE, ENTERPRISE],
        "externalId": external_id,
        "userName": user_name,
        "active": True,
        "displayName": "Alice Smith",
        "title": "Engineer",
        "preferredLanguage": "en-US",
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {
            "formatted": "Alice Smith",
            "familyName": "Smith",
            "givenName": "Alice",
        },
        "addresses": [
            {
                "type": "work",
                "formatted": "Building 1",
                "streetAddress": "1 Main St",
                "locality": "Redmond",
                "region": "WA",
                "postalCode": "98052",
                "country": "US",
            }
        ],
        "phoneNumbers": [
            {"type": "work", "value": "+1 425 555 0100"},
            {"type": "mobile", "value": "+1 425 555 0101"},
            {"type": "fax", "value": "+1 425 555 0102"},
        ],
        ENTERPRISE: {"employeeNumber": "12345", "department": "R&D"},
        "roles": [],
    }


def provision(entra, body=None):
    """Match on userName (miss), then create: the U1 → U2 sequence."""
    body = body or default_user()
    assert entra.find(by_user_name(body["userName"])) == []
    response = entra.post("/Users", body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def person(entra, user_name, display_name):
    """Create a plain user (a manager or a group member) and return it."""
    response = entra.post(
        "/Users",
        {
            "schemas": [CORE],
            "userName": user_name,
            "displayName": display_name,
            "active": True,
        },
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def member(user):
    return {
        "value": user["id"],
        "$ref": f"{BASE}/Users/{user['id']}",
        "display": user["displayName"],
        "type": "User",
    }


def members_of(entra, group_id):
    response = entra.get(f"/Groups/{group_id}")
    assert response.status_code == 200
    return sorted(m["value"] for m in response.get_json().get("members", []))


def new_group(entra, display_name, external_id="8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159"):
    """Match on displayName (miss), then create an empty group: G1 → G2."""
    probe = "/Groups?excludedAttributes=members&filter=" + quote_plus(
        f'displayName eq "{display_name}"'
    )
    assert entra.find(probe) == []
    response = entra.post(
        "/Groups",
        {
            "schemas": [GROUP, ADSCIM],
            "externalId": external_id,
            "displayName": display_name,
            "meta": {"resourceType": "Group"},
        },
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def assert_no_content(response):
    assert response.status_code == 204, response.get_data(as_text=True)
    assert response.get_data() == b""


#
# C1–C5: Test Connection, authentication, discovery, routing
#


@pytest.mark.parametrize(
    "query",
    [
        f"filter=userName+eq+%22{PROBE}%22",
        f'filter=userName+eq+"{PROBE}"',
        f'filter=userName eq "{PROBE}"',
        f"filter=externalId+eq+%22{PROBE}%22",
        f"filter=USERNAME+eq+%22{PROBE.upper()}%22",
    ],
)
def test_c1_test_connection_user_probe_is_an_empty_list(entra, query):
    person(entra, "someone@contoso.com", "Someone")
    response = entra.get(f"/Users?{query}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/scim+json"
    assert response.get_json() == EMPTY_LIST


def test_c2_test_connection_group_probe_is_an_empty_list(entra):
    new_group(entra, "Existing")
    response = entra.get(
        f"/Groups?excludedAttributes=members&filter=displayName+eq+%22{PROBE}%22"
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/scim+json"
    assert response.get_json() == EMPTY_LIST


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-the-secret"}, {"Authorization": "Bearer"}],
)
def test_c3_missing_or_wrong_token_is_a_scim_401(client, entra, headers):
    response = client.get(
        "/scim/v2" + entra.url(f"/Users?filter=userName+eq+%22{PROBE}%22"),
        headers=headers,
    )
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/scim+json"
    body = response.get_json(force=True)
    assert set(body) == {"schemas", "status", "detail"}
    assert body["schemas"] == [ERROR] and body["status"] == "401"
    assert body["detail"]


def test_c3_request_without_user_agent_is_served(app, entra):
    bare = app.test_client()
    bare.environ_base.pop("HTTP_USER_AGENT", None)
    auth = {"Authorization": f"Bearer {entra.scim.secret}"}
    probe = bare.get(
        "/scim/v2" + entra.url(f"/Users?filter=userName+eq+%22{PROBE}%22"),
        headers=auth,
    )
    assert probe.status_code == 200
    assert probe.get_json() == EMPTY_LIST
    created = bare.post(
        "/scim/v2" + entra.url("/Users"),
        json=default_user(),
        headers={**auth, "Content-Type": "application/scim+json"},
    )
    assert created.status_code == 201


def test_c4_discovery(entra):
    schemas = entra.find("/Schemas")
    assert [s["id"] for s in schemas][:3] == [CORE, ENTERPRISE, GROUP]
    user_schema = schemas[0]
    names = {a["name"] for a in user_schema["attributes"]}
    assert {"userName", "name", "emails", "active"} <= names
    types = entra.find("/ResourceTypes")
    assert types[0]["endpoint"] == "/Users"
    assert types[0]["schemaExtensions"] == [{"schema": ENTERPRISE, "required": False}]
    assert types[1]["endpoint"] == "/Groups"
    config = entra.get("/ServiceProviderConfig")
    assert config.status_code == 200
    assert config.headers["Content-Type"] == "application/scim+json"
    assert config.get_json()["patch"] == {"supported": True}
    assert config.get_json()["filter"]["supported"] is True


@pytest.mark.parametrize("route", ["//Users", "/Users/"])
def test_c5_tenant_url_with_trailing_slash_still_routes(entra, route):
    response = entra.post(route, default_user())
    assert response.status_code == 201, response.get_json()
    user = response.get_json()
    assert entra.find(f"{route}?filter=userName+eq+%22alice@contoso.com%22") == [user]
    by_id = entra.get(f"{route.rstrip('/')}/{user['id']}")
    assert by_id.status_code == 200 and by_id.get_json() == user
    groups = entra.get(route.replace("Users", "Groups"))
    assert groups.status_code == 200


#
# U1–U4: match, create, read, filter
#


def docs_user():
    return {
        "schemas": [CORE, ENTERPRISE],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_00aa00aa@testuser.com",
        "active": True,
        "emails": [
            {
                "primary": True,
                "type": "work",
                "value": "Test_User_11bb11bb@testuser.com",
            }
        ],
        "meta": {"resourceType": "User"},
        "name": {
            "formatted": "givenName familyName",
            "familyName": "familyName",
            "givenName": "givenName",
        },
        "roles": [],
    }


def docs_user_created():
    return {
        "schemas": [CORE],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_00aa00aa@testuser.com",
        "active": True,
        "emails": [
            {
                "primary": True,
                "type": "work",
                "value": "Test_User_11bb11bb@testuser.com",
            }
        ],
        "name": {
            "formatted": "givenName familyName",
            "familyName": "familyName",
            "givenName": "givenName",
        },
    }


def default_user_created():
    body = default_user()
    del body["meta"], body["roles"]
    return body


def legacy_user():
    """The older tutorial's example: explicit nulls and a mistyped extension URN."""
    return {
        "schemas": [
            CORE,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0User",
        ],
        "externalId": "jyoung",
        "userName": "Test_User_ab6490ee@testuser.com",
        "active": True,
        "addresses": None,
        "displayName": "Test_User_ab6490ee",
        "emails": [
            {
                "primary": True,
                "type": "work",
                "value": "Test_User_fd0ea19b@testuser.com",
            }
        ],
        "meta": {"resourceType": "User"},
        "name": {"familyName": "familyName", "givenName": "givenName"},
        "phoneNumbers": None,
        "preferredLanguage": None,
        "title": None,
        "department": None,
        "manager": None,
        "roles": [],
    }


def legacy_user_created():
    return {
        "schemas": [CORE],
        "externalId": "jyoung",
        "userName": "Test_User_ab6490ee@testuser.com",
        "active": True,
        "displayName": "Test_User_ab6490ee",
        "emails": [
            {
                "primary": True,
                "type": "work",
                "value": "Test_User_fd0ea19b@testuser.com",
            }
        ],
        "name": {"familyName": "familyName", "givenName": "givenName"},
    }


def validator_user(roles_primary="True"):
    return {
        "userName": "julien.vonrueden@ondricka.us",
        "active": True,
        "displayName": "NDSQQTECVAAC",
        "title": "CJSGUNOAAMMQ",
        "emails": [{"type": "work", "value": "thaddeus@hammes.info", "primary": True}],
        "preferredLanguage": "hi",
        "name": {
            "givenName": "Elfrieda",
            "familyName": "Urban",
            "formatted": "Myah",
            "middleName": "Cindy",
            "honorificPrefix": "Minerva",
            "honorificSuffix": "Micaela",
        },
        "addresses": [
            {
                "type": "work",
                "formatted": "ZQEHBLETAAQE",
                "streetAddress": "25928 Katlyn Row",
                "locality": "YRAKBQCGOHZF",
                "region": "XCCVLAIDMQYR",
                "postalCode": "cx47 4mz",
                "primary": True,
                "country": "Sierra Leone",
            }
        ],
        "phoneNumbers": [
            {"type": "work", "value": "10-040-1308", "primary": True},
            {"type": "mobile", "value": "10-040-1308"},
            {"type": "fax", "value": "10-040-1308"},
        ],
        ENTERPRISE: {
            "employeeNumber": "OXYYEGWVLTGW",
            "department": "ZYWTBPDFHIIP",
            "costCenter": "ASHTVSKANCGL",
            "organization": "DPQRRHJMBXZE",
            "division": "WXNFEJQDRAVI",
            "manager": {"value": "XYMKVVRYDIOO"},
        },
        "roles": [
            {
                "primary": roles_primary,
                "display": "MRONYWGFFHXQ",
                "value": "WDEIISGWWQBE",
                "type": "XVTUOHMYUFRL",
            }
        ],
        "userType": "GZILLRZCFPNC",
        "nickName": "FOGSIQTKHIPG",
        "locale": "en-US",
        "timezone": "America/Guayaquil",
        "profileUrl": "https://example.com/profiles/ndsqq",
        "schemas": [CORE, ENTERPRISE],
    }


def validator_user_created():
    body = validator_user(roles_primary=True)
    body["schemas"] = [CORE, ENTERPRISE]
    return body


@pytest.mark.parametrize(
    ("posted", "stored"),
    [
        (docs_user, docs_user_created),
        (default_user, default_user_created),
        (legacy_user, legacy_user_created),
        (validator_user, validator_user_created),
    ],
    ids=["docs", "default-mapping", "legacy-nulls", "validator"],
)
def test_u1_u2_u3_match_miss_then_create_then_read(entra, posted, stored):
    user_name = posted()["userName"]
    assert entra.find(by_user_name(user_name)) == []
    # The validator labels its bodies with a charset parameter.
    content_type = "application/scim+json"
    if posted is validator_user:
        content_type += "; charset=utf-8"
    response = entra.post("/Users", posted(), headers={"Content-Type": content_type})
    assert response.status_code == 201, response.get_json()
    assert response.headers["Content-Type"] == "application/scim+json"
    body = response.get_json()
    assert body == {**stored(), "id": body["id"], "meta": meta("User", body, 1)}
    assert response.headers["Location"] == body["meta"]["location"]
    # U3: Entra keeps the returned id and reads the user back by it.
    again = entra.get(f"/Users/{body['id']}")
    assert again.status_code == 200 and again.get_json() == body
    assert entra.find(by_user_name(user_name)) == [body]


def test_u3_unknown_id_is_a_scim_404(entra):
    unknown = "23B51B0E5D7AE9110A49411D@7cca31655d49f3640a494224"
    response = entra.get(f"/Users/{unknown}")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/scim+json"
    body = response.get_json()
    assert body["schemas"] == [ERROR] and body["status"] == "404"
    assert "scimType" not in body


def test_u4_matching_filters_find_exactly_one_user(entra):
    user = provision(entra)
    person(entra, "alice@contoso.com.au", "Other Alice")  # no prefix matching
    for text in [
        'userName eq "alice@contoso.com"',
        'userName eq "ALICE@Contoso.COM"',
        'externalId eq "alice"',
        'emails[type eq "work"].value eq "alice@contoso.com"',
        'emails[type eq "work"].value eq "Alice@Contoso.com"',
    ]:
        assert entra.find("/Users?filter=" + quote_plus(text)) == [user], text
        assert entra.find(f"/Users?filter={text}") == [user], text


#
# U5: PATCH shapes P1–P7, P11, P12, no-op
#


def test_u5_p1_replace_work_email_in_place_and_family_name(entra):
    user = provision(entra)
    response = entra.patch(
        f"/Users/{user['id']}",
        {
            "op": entra.op("replace"),
            "path": 'emails[type eq "work"].value',
            "value": "updatedEmail@contoso.com",
        },
        {
            "op": entra.op("replace"),
            "path": "name.familyName",
            "value": "updatedFamilyName",
        },
    )
    assert response.status_code == 200
    body = response.get_json()
    expected = changed(user, body, 2)
    expected["emails"] = [
        {"primary": True, "type": "work", "value": "updatedEmail@contoso.com"}
    ]
    expected["name"]["familyName"] = "updatedFamilyName"  # formatted is not recomputed
    assert body == expected
    assert entra.get(f"/Users/{user['id']}").get_json() == body


def test_u5_p2_replace_user_name(entra):
    user = provision(entra)
    new_name = "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"
    response = entra.patch(
        f"/Users/{user['id']}",
        {"op": entra.op("replace"), "path": "userName", "value": new_name},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body == {**changed(user, body, 2), "userName": new_name}
    assert entra.find(by_user_name(new_name)) == [body]
    assert entra.find(by_user_name("alice@contoso.com")) == []


def test_u5_p3_p4_many_attributes_in_the_mode_shape(entra):
    user = provision(entra)
    operations = entra.update(
        {
            'emails[type eq "work"].value': "TestBcwqnm@test.microsoft.com",
            "displayName": "Pvlo",
            "name.givenName": "Gtfd",
            "name.familyName": "Pkqf",
            "externalId": "Eqpj",
            f"{ENTERPRISE}:employeeNumber": "Aklq",
        }
    )
    if entra.mode == "B":
        assert len(operations) == 2 and "path" not in operations[1]
    response = entra.patch(f"/Users/{user['id']}", *operations)
    assert response.status_code == 200
    body = response.get_json()
    expected = changed(user, body, 2)
    expected["emails"][0]["value"] = "TestBcwqnm@test.microsoft.com"
    expected["displayName"] = "Pvlo"
    expected["name"] = {
        "formatted": "Alice Smith",
        "givenName": "Gtfd",
        "familyName": "Pkqf",
    }
    expected["externalId"] = "Eqpj"
    expected[ENTERPRISE] = {"employeeNumber": "Aklq", "department": "R&D"}
    assert body == expected
    assert "name.givenName" not in body and f"{ENTERPRISE}:employeeNumber" not in body
    assert entra.get(f"/Users/{user['id']}").get_json() == body
    assert entra.find("/Users?filter=externalId+eq+%22Eqpj%22") == [body]


def test_u5_p5_add_attribute_that_had_no_value(entra):
    user = provision(entra)
    response = entra.patch(
        f"/Users/{user['id']}",
        {"op": entra.op("add"), "path": "nickName", "value": "Babs"},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body == {**changed(user, body, 2), "nickName": "Babs"}


def test_u5_p6_adds_on_a_missing_element_merge_into_one(entra):
    user = provision(entra, {**default_user(), "addresses": None})
    assert "addresses" not in user
    response = entra.patch(
        f"/Users/{user['id']}",
        {
            "op": entra.op("add"),
            "path": 'addresses[type eq "work"].formatted',
            "value": "USZLTUSJXBYV",
        },
        {
            "op": entra.op("add"),
            "path": 'addresses[type eq "work"].locality',
            "value": "OSGODHEVDCVD",
        },
        {
            "op": entra.op("add"),
            "path": 'addresses[type eq "work"].region',
            "value": "YMVMOEMXAYGD",
        },
    )
    assert response.status_code == 200
    body = response.get_json()
    expected = changed(user, body, 2)
    expected["addresses"] = [
        {
            "type": "work",
            "formatted": "USZLTUSJXBYV",
            "locality": "OSGODHEVDCVD",
            "region": "YMVMOEMXAYGD",
        }
    ]
    assert body == expected


def test_u5_p7_value_path_replace_creates_and_updates_elements(entra):
    body = default_user()
    body["phoneNumbers"] = [{"type": "mobile", "value": "+1 425 555 0101"}]
    del body["addresses"]
    user = provision(entra, body)
    response = entra.patch(
        f"/Users/{user['id']}",
        {
            "op": entra.op("replace"),
            "path": 'emails[type eq "work"].value',
            "value": "lilian.graham@millszboncak.ca",
        },
        {
            "op": entra.op("replace"),
            "path": 'phoneNumbers[type eq "work"].value',
            "value": "07-272-0828",
        },
        {
            "op": entra.op("replace"),
            "path": 'addresses[type eq "work"].streetAddress',
            "value": "2809 Johns Walk",
        },
        {
            "op": entra.op("replace"),
            "path": 'addresses[type eq "work"].locality',
            "value": "KMYVNUJVVZWC",
        },
    )
    assert response.status_code == 200
    patched = response.get_json()
    expected = changed(user, patched, 2)
    expected["emails"][0]["value"] = "lilian.graham@millszboncak.ca"
    expected["phoneNumbers"] = [
        {"type": "mobile", "value": "+1 425 555 0101"},
        {"type": "work", "value": "07-272-0828"},
    ]
    expected["addresses"] = [
        {"type": "work", "streetAddress": "2809 Johns Walk", "locality": "KMYVNUJVVZWC"}
    ]
    assert patched == expected


@pytest.mark.parametrize("empty", ["", None], ids=["empty-string", "null"])
def test_u5_p11_empty_and_null_values_clear_attributes(entra, empty):
    user = provision(entra)
    changes = {
        "title": empty,
        "name.givenName": empty,
        'emails[type eq "work"].value': empty,
        f"{ENTERPRISE}:department": empty,
        'phoneNumbers[type eq "fax"].value': empty,
        "preferredLanguage": empty,
    }
    response = entra.patch(f"/Users/{user['id']}", *entra.update(changes))
    assert response.status_code == 200
    body = response.get_json()
    expected = changed(user, body, 2)
    del expected["title"], expected["preferredLanguage"]
    del expected["name"]["givenName"]
    del expected["emails"]
    del expected[ENTERPRISE]["department"]
    expected["phoneNumbers"] = expected["phoneNumbers"][:2]
    assert body == expected
    assert entra.get(f"/Users/{user['id']}").get_json() == body


def test_u5_p12_empty_operations_and_no_op_change_nothing(entra):
    user = provision(entra)
    empty = entra.scim.patch(
        entra.url(f"/Users/{user['id']}"), {"schemas": [PATCH], "Operations": []}
    )
    assert empty.status_code == 200
    assert empty.get_json() == user
    same = entra.patch(
        f"/Users/{user['id']}",
        *entra.update({"displayName": "Alice Smith", "title": "Engineer"}),
        {"op": entra.op("replace"), "path": "active", "value": entra.boolean(True)},
    )
    assert same.status_code == 200
    assert same.get_json() == user  # same version, same lastModified
    assert entra.get(f"/Users/{user['id']}").get_json() == user


def test_u5_verbose_replace_attributes_request(entra):
    """The validator's "Patch User - Replace Attributes Verbose": ~36 path ops."""
    user = provision(entra)
    replace = entra.op("replace")
    values = {
        "displayName": "OXQBMAHZJBPS",
        "title": "PSZHZFOBIPYK",
        "preferredLanguage": "fr-CA",
        "userType": "Employee",
        "nickName": "ZLBWQMTRTTHT",
        "locale": "fr-CA",
        "timezone": "America/Toronto",
        "profileUrl": "https://example.com/profiles/oxqb",
        "name.givenName": "Lorine",
        "name.familyName": "Wolff",
        "name.formatted": "Lorine Wolff",
        "name.middleName": "Ann",
        "name.honorificPrefix": "Dr.",
        "name.honorificSuffix": "III",
        'emails[type eq "work"].value': "lorine@wolff.example",
        "emails[primary eq true].display": "Lorine at work",
        'phoneNumbers[type eq "work"].value': "02-143-0090",
        'phoneNumbers[type eq "mobile"].value': "02-143-0091",
        'phoneNumbers[type eq "fax"].value': "02-143-0092",
        'addresses[type eq "work"].formatted': "QHRYXSJAJQEM",
        'addresses[type eq "work"].streetAddress': "62 Maple Ave",
        'addresses[type eq "work"].locality': "Toronto",
        'addresses[type eq "work"].region': "ON",
        'addresses[type eq "work"].postalCode': "M5V 2T6",
        'addresses[type eq "work"].country': "CA",
        "roles[primary eq true].value": "Admin",
        "roles[primary eq true].display": "Administrator",
        "roles[primary eq true].type": "WindowsAzureActiveDirectoryRole",
        "ims[primary eq true].value": "lorine.im",
        "ims[primary eq true].type": "skype",
        "photos[primary eq true].value": "https://example.com/photos/lorine.jpg",
        "photos[primary eq true].type": "photo",
        "x509Certificates[primary eq true].value": "MIIDQzCCAqygAwIBAgICEAAwDQYJ",
        f"{ENTERPRISE}:employeeNumber": "FCJNQTRXLKZD",
        f"{ENTERPRISE}:department": "ZDDJHMDXQQWN",
        f"{ENTERPRISE}:costCenter": "YJPVKQGFJAEH",
        f"{ENTERPRISE}:organization": "UYWRMPGZXWLR",
        f"{ENTERPRISE}:division": "TRWFSBHKTHCE",
    }
    assert len(values) >= 36
    operations = [
        {"op": replace, "path": path, "value": value} for path, value in values.items()
    ]
    response = entra.patch(f"/Users/{user['id']}", *operations)
    assert response.status_code == 200, response.get_json()
    body = entra.get(f"/Users/{user['id']}").get_json()
    assert body == response.get_json()
    assert body["displayName"] == "OXQBMAHZJBPS"
    assert body["timezone"] == "America/Toronto"
    assert body["name"] == {
        "givenName": "Lorine",
        "familyName": "Wolff",
        "formatted": "Lorine Wolff",
        "middleName": "Ann",
        "honorificPrefix": "Dr.",
        "honorificSuffix": "III",
    }
    assert body["emails"] == [
        {
            "primary": True,
            "type": "work",
            "value": "lorine@wolff.example",
            "display": "Lorine at work",
        }
    ]
    assert [p["value"] for p in body["phoneNumbers"]] == [
        "02-143-0090",
        "02-143-0091",
        "02-143-0092",
    ]
    assert body["addresses"][0]["locality"] == "Toronto"
    assert len(body["addresses"]) == 1
    assert body["roles"] == [
        {
            "primary": True,
            "value": "Admin",
            "display": "Administrator",
            "type": "WindowsAzureActiveDirectoryRole",
        }
    ]
    assert body[ENTERPRISE] == {
        "employeeNumber": "FCJNQTRXLKZD",
        "department": "ZDDJHMDXQQWN",
        "costCenter": "YJPVKQGFJAEH",
        "organization": "UYWRMPGZXWLR",
        "division": "TRWFSBHKTHCE",
    }


def test_u5_unsupported_attributes_do_not_block_the_disable(entra):
    """docs/entra.md §3.5: an unknown attribute must not 400 the whole PATCH."""
    user = provision(entra)
    operations = entra.update(
        {
            "extensionAttribute1": "x",
            f"{CUSTOM_EXTENSION}:costCode": "7",
            "active": entra.boolean(False),
        }
    )
    response = entra.patch(f"/Users/{user['id']}", *operations)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body == {**changed(user, body, 2), "active": False}
    assert entra.get(f"/Users/{user['id']}").get_json() == body


#
# U6: manager set, change and remove
#


def manager_set(entra, manager_id):
    yield {
        "op": entra.op("add"),
        "path": "manager",
        "value": [{"$ref": f"{BASE}/Users/{manager_id}", "value": manager_id}],
    }
    yield {"op": entra.op("add"), "path": MANAGER, "value": manager_id}
    yield {"op": entra.op("add"), "path": MANAGER, "value": {"value": manager_id}}
    yield {"op": entra.op("replace"), "value": {MANAGER: manager_id}}


def manager_change(entra, manager_id):
    yield {"op": entra.op("replace"), "path": MANAGER, "value": manager_id}
    yield {"op": entra.op("replace"), "path": MANAGER, "value": {"value": manager_id}}


def manager_remove(entra):
    yield {"op": entra.op("replace"), "path": MANAGER, "value": ""}
    yield {"op": entra.op("replace"), "path": MANAGER, "value": {"value": ""}}
    yield {"op": entra.op("remove"), "path": MANAGER}


def managed_by(entra, user_id, manager_id, qualified=False):
    """Ask whether the user has that manager, as the legacy pre-check does (§2.3)."""
    attribute = MANAGER if qualified else "manager"
    text = f'id eq "{user_id}" and {attribute} eq "{manager_id}"'
    found = entra.find("/Users?attributes=id&filter=" + quote_plus(text))
    assert found in ([], [{"schemas": [CORE], "id": user_id}])
    return bool(found)


@pytest.mark.parametrize("set_shape", range(4))
@pytest.mark.parametrize("change_shape", range(2))
@pytest.mark.parametrize("remove_shape", range(3))
def test_u6_manager_set_change_remove(entra, set_shape, change_shape, remove_shape):
    boss = person(entra, "boss@contoso.com", "Boss")
    chief = person(entra, "chief@contoso.com", "Chief")
    user = provision(entra)
    path = f"/Users/{user['id']}"

    response = entra.patch(path, list(manager_set(entra, boss["id"]))[set_shape])
    assert response.status_code == 200, response.get_json()
    body = entra.get(path).get_json()
    assert body == response.get_json()
    assert body[ENTERPRISE]["manager"]["value"] == boss["id"]
    assert set(body[ENTERPRISE]["manager"]) <= {"value", "$ref"}
    assert body[ENTERPRISE]["employeeNumber"] == "12345"
    assert "manager" not in body
    assert managed_by(entra, user["id"], boss["id"], qualified=True)

    changes = list(manager_change(entra, chief["id"]))
    response = entra.patch(path, changes[change_shape])
    assert response.status_code == 200, response.get_json()
    body = entra.get(path).get_json()
    assert body == {
        **changed(user, body, 3),
        ENTERPRISE: {
            "employeeNumber": "12345",
            "department": "R&D",
            "manager": {"value": chief["id"]},
        },
    }
    assert managed_by(entra, user["id"], chief["id"], qualified=True)
    assert not managed_by(entra, user["id"], boss["id"], qualified=True)

    response = entra.patch(path, list(manager_remove(entra))[remove_shape])
    assert response.status_code == 200, response.get_json()
    body = entra.get(path).get_json()
    assert body[ENTERPRISE].get("manager") in (None, {"value": ""})
    assert body[ENTERPRISE]["employeeNumber"] == "12345"
    assert not managed_by(entra, user["id"], chief["id"], qualified=True)


def test_u6_legacy_manager_precheck_filter(entra):
    """Legacy ``id eq "u" and manager eq "m"&attributes=id`` (docs/entra.md §2)."""
    boss = person(entra, "boss@contoso.com", "Boss")
    user = provision(entra)
    assert not managed_by(entra, user["id"], boss["id"])
    response = entra.patch(
        f"/Users/{user['id']}",
        {"op": entra.op("add"), "path": MANAGER, "value": boss["id"]},
    )
    assert response.status_code == 200
    assert managed_by(entra, user["id"], boss["id"])
    assert not managed_by(entra, boss["id"], boss["id"])


#
# U7: disable and re-enable
#


@pytest.mark.parametrize(
    ("off", "on"),
    [("False", "True"), (False, True), ("false", "true")],
)
def test_u7_disable_and_enable_keep_the_user_visible(entra, off, on):
    user = provision(entra)
    path = f"/Users/{user['id']}"
    response = entra.patch(
        path, {"op": entra.op("replace"), "path": "active", "value": off}
    )
    assert response.status_code == 200
    disabled = response.get_json()
    assert disabled == {**changed(user, disabled, 2), "active": False}
    # "The only time the user shouldn't be returned is when it's hard deleted."
    assert entra.get(path).get_json() == disabled
    assert entra.find(by_user_name("alice@contoso.com")) == [disabled]
    assert entra.find("/Users?filter=externalId+eq+%22alice%22") == [disabled]
    assert entra.find("/Users?filter=active+eq+false") == [disabled]

    response = entra.patch(
        path, {"op": entra.op("replace"), "path": "active", "value": on}
    )
    assert response.status_code == 200
    enabled = response.get_json()
    assert enabled == changed(user, enabled, 3)
    assert enabled["active"] is True
    assert entra.get(path).get_json() == enabled


def test_u7_disable_in_a_no_path_replace(entra):
    user = provision(entra)
    path = f"/Users/{user['id']}"
    response = entra.patch(
        path,
        {
            "op": entra.op("replace"),
            "value": {"active": entra.boolean(False), "displayName": "Alice (left)"},
        },
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body == {
        **changed(user, body, 2),
        "active": False,
        "displayName": "Alice (left)",
    }
    assert entra.find(by_user_name("alice@contoso.com")) == [body]


#
# U8–U10: conflicts, invalid bodies, delete and re-create, roles
#


def test_u8_duplicate_user_is_409_uniqueness(entra):
    provision(entra)
    for user_name in ("alice@contoso.com", "Alice@Contoso.com"):
        response = entra.post("/Users", default_user(user_name))
        assert response.status_code == 409
        assert response.headers["Content-Type"] == "application/scim+json"
        body = response.get_json()
        assert set(body) == {"schemas", "status", "scimType", "detail"}
        assert body["schemas"] == [ERROR]
        assert body["status"] == "409" and body["scimType"] == "uniqueness"
        assert user_name in body["detail"]
    assert len(entra.find(by_user_name("alice@contoso.com"))) == 1


def test_u8_missing_user_name_is_400(entra):
    body = default_user()
    del body["userName"]
    response = entra.post("/Users", body)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/scim+json"
    error_body = response.get_json()
    assert error_body["schemas"] == [ERROR]
    assert error_body["status"] == "400"
    assert error_body["scimType"] == "invalidValue"
    assert "userName" in error_body["detail"]
    assert entra.find("/Users") == []


def test_u9_delete_then_404_then_recreate(entra):
    user = provision(entra)
    path = f"/Users/{user['id']}"
    assert_no_content(entra.delete(path))
    gone = entra.get(path)
    assert gone.status_code == 404 and gone.get_json()["status"] == "404"
    second = entra.delete(path)
    assert second.status_code == 404
    assert second.get_json()["schemas"] == [ERROR]
    patch_gone = entra.patch(
        path,
        {"op": entra.op("replace"), "path": "active", "value": entra.boolean(False)},
    )
    assert patch_gone.status_code == 404
    again = provision(entra)
    assert again["id"] != user["id"]
    assert again == {**default_user_created(), "id": again["id"], "meta": again["meta"]}


def test_u10_roles_with_json_inside_a_string(entra):
    user = provision(entra)
    encoded = (
        '{"id":"06b07648-ecfe-589f-9d2f-6325724a46ee","value":"Admin",'
        '"displayName":"Admin"}'
    )
    response = entra.patch(
        f"/Users/{user['id']}",
        {"op": entra.op("add"), "path": "roles", "value": [{"value": encoded}]},
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body == {**changed(user, body, 2), "roles": [{"value": encoded}]}

    response = entra.patch(
        f"/Users/{user['id']}",
        {
            "op": entra.op("replace"),
            "path": "roles",
            "value": [
                {
                    "primary": False,
                    "type": "WindowsAzureActiveDirectoryRole",
                    "display": "User",
                    "value": "User",
                }
            ],
        },
        {
            "op": entra.op("replace"),
            "path": 'roles[primary eq "True"].value',
            "value": "Admin",
        },
    )
    assert response.status_code == 200, response.get_json()
    roles = entra.get(f"/Users/{user['id']}").get_json()["roles"]
    assert roles == [
        {
            "primary": False,
            "type": "WindowsAzureActiveDirectoryRole",
            "display": "User",
            "value": "User",
        },
        {"primary": True, "value": "Admin"},
    ]


#
# G1–G9: groups
#


@pytest.mark.parametrize(
    "posted",
    [
        {
            "schemas": [GROUP, ADSCIM],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "Sales",
            "meta": {"resourceType": "Group"},
        },
        {
            "schemas": [GROUP],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "Sales",
            "members": [],
            "meta": {"resourceType": "Group"},
        },
    ],
    ids=["adscim-schema", "empty-members"],
)
def test_g1_g2_match_miss_then_create_then_read(entra, posted):
    probe = "/Groups?excludedAttributes=members&filter=displayName+eq+%22Sales%22"
    assert entra.find(probe) == []
    response = entra.post("/Groups", posted)
    assert response.status_code == 201, response.get_json()
    assert response.headers["Content-Type"] == "application/scim+json"
    group = response.get_json()
    assert group == {
        "schemas": [GROUP],
        "id": group["id"],
        "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
        "meta": meta("Group", group, 1),
        "displayName": "Sales",
        "members": [],
    }
    assert response.headers["Location"] == group["meta"]["location"]

    without = {k: v for k, v in group.items() if k != "members"}
    by_id = entra.get(f"/Groups/{group['id']}?excludedAttributes=members")
    assert by_id.status_code == 200 and by_id.get_json() == without
    for name in ("Sales", "sales", "SALES"):
        found = entra.find(
            "/Groups?excludedAttributes=members&filter="
            + quote_plus(f'displayName eq "{name}"')
        )
        assert found == [without]
    assert entra.find("/Groups?filter=displayName+eq+%22sales%22") == [group]
    by_external_id = (
        "/Groups?filter=externalId+eq+%228aa1a0c0-c4c3-4bc0-b4a5-2ef676900159%22"
    )
    assert entra.find(by_external_id) == [group]


def test_g2_excluded_members_on_a_group_with_members(entra):
    ann = person(entra, "ann@contoso.com", "Ann")
    group = new_group(entra, "Sales")
    assert_no_content(
        entra.patch(f"/Groups/{group['id']}", entra.add_members(ann["id"]))
    )
    body = entra.get(f"/Groups/{group['id']}?excludedAttributes=members").get_json()
    assert "members" not in body
    found = entra.find(
        "/Groups?excludedAttributes=members&filter=displayName+eq+%22SALES%22"
    )
    assert found == [body]
    assert entra.get(f"/Groups/{group['id']}").get_json()["members"] == [member(ann)]


@pytest.mark.parametrize("shape", ["path", "no-path"])
def test_g3_rename_leaves_membership_alone(entra, shape):
    ann = person(entra, "ann@contoso.com", "Ann")
    group = new_group(entra, "Sales")
    path = f"/Groups/{group['id']}"
    assert_no_content(entra.patch(path, entra.add_members(ann["id"])))
    if shape == "path":
        rename = {"op": entra.op("replace"), "path": "displayName", "value": "Sales EU"}
    else:
        rename = {"op": entra.op("replace"), "value": {"displayName": "Sales EU"}}
    assert_no_content(entra.patch(path, rename))
    assert_no_content(
        entra.patch(
            path,
            {"op": entra.op("replace"), "value": {"externalId": "663fa3a8-e2b6"}},
        )
    )
    body = entra.get(path).get_json()
    assert body == {
        "schemas": [GROUP],
        "id": group["id"],
        "externalId": "663fa3a8-e2b6",
        "meta": {**body["meta"], "created": group["meta"]["created"]},
        "displayName": "Sales EU",
        "members": [member(ann)],
    }
    assert body["meta"]["location"] == group["meta"]["location"]
    assert entra.find("/Groups?filter=displayName+eq+%22Sales%22") == []
    assert entra.find("/Groups?filter=displayName+eq+%22sales+eu%22") == [body]


def test_g4_add_member_shapes_and_idempotent_re_add(entra):
    users = [person(entra, f"u{i}@contoso.com", f"U{i}") for i in range(6)]
    ids = [u["id"] for u in users]
    group = new_group(entra, "Team")
    path = f"/Groups/{group['id']}"

    # One member per operation: what Entra sends in production.
    assert_no_content(entra.patch(path, entra.add_members(ids[0])))
    assert members_of(entra, group["id"]) == [ids[0]]
    # Re-adding an existing member is a success, not a 409.
    assert_no_content(entra.patch(path, entra.add_members(ids[0])))
    # Several members in one value array.
    assert_no_content(entra.patch(path, entra.add_members(ids[1], ids[2])))
    # Several operations in one request (one already a member).
    assert_no_content(
        entra.patch(
            path,
            entra.add_members(ids[3]),
            entra.add_members(ids[4]),
            entra.add_members(ids[2], ids[5]),
        )
    )
    body = entra.get(path).get_json()
    assert sorted(m["value"] for m in body["members"]) == sorted(ids)
    assert len(body["members"]) == 6
    assert sorted(body["members"], key=lambda m: m["value"]) == sorted(
        (member(u) for u in users), key=lambda m: m["value"]
    )


def test_g5_remove_member_removes_only_that_member(entra):
    ann = person(entra, "ann@contoso.com", "Ann")
    bob = person(entra, "bob@contoso.com", "Bob")
    cy = person(entra, "cy@contoso.com", "Cy")
    group = new_group(entra, "Team")
    path = f"/Groups/{group['id']}"
    assert_no_content(
        entra.patch(path, entra.add_members(ann["id"], bob["id"], cy["id"]))
    )

    assert_no_content(entra.patch(path, entra.remove_member(bob["id"])))
    assert members_of(entra, group["id"]) == sorted([ann["id"], cy["id"]])
    # Removing a user who is not (or no longer) a member is a success.
    assert_no_content(entra.patch(path, entra.remove_member(bob["id"])))
    outsider = person(entra, "out@contoso.com", "Out")
    assert_no_content(entra.patch(path, entra.remove_member(outsider["id"])))
    assert_no_content(entra.patch(path, entra.remove_member("no-such-user")))
    assert members_of(entra, group["id"]) == sorted([ann["id"], cy["id"]])
    # The removed user itself is untouched.
    assert entra.get(f"/Users/{bob['id']}").status_code == 200
    assert "groups" not in entra.get(f"/Users/{bob['id']}").get_json()


def test_g6_replace_members_replaces_the_whole_list(entra):
    ann = person(entra, "ann@contoso.com", "Ann")
    bob = person(entra, "bob@contoso.com", "Bob")
    group = new_group(entra, "Team")
    path = f"/Groups/{group['id']}"
    assert_no_content(entra.patch(path, entra.add_members(ann["id"])))
    # RFC 7644 §3.5.2.3 semantics (the server's documented choice).
    assert_no_content(
        entra.patch(
            path,
            {
                "op": entra.op("replace"),
                "path": "members",
                "value": [{"value": bob["id"]}],
            },
        )
    )
    assert entra.get(path).get_json()["members"] == [member(bob)]


def test_g6_add_and_remove_same_member_in_one_request(entra):
    ann = person(entra, "ann@contoso.com", "Ann")
    bob = person(entra, "bob@contoso.com", "Bob")
    group = new_group(entra, "Team")
    path = f"/Groups/{group['id']}"
    assert_no_content(entra.patch(path, entra.add_members(bob["id"])))
    assert_no_content(
        entra.patch(path, entra.add_members(ann["id"]), entra.remove_member(ann["id"]))
    )
    assert entra.get(path).get_json()["members"] == [member(bob)]


def test_g7_membership_check_filters(entra):
    ann = person(entra, "ann@contoso.com", "Ann")
    bob = person(entra, "bob@contoso.com", "Bob")
    group = new_group(entra, "Team")
    other = new_group(entra, "Other")
    assert_no_content(
        entra.patch(f"/Groups/{group['id']}", entra.add_members(ann["id"]))
    )
    gid = group["id"]
    cases = [
        (f'id eq "{gid}" and members eq "{ann["id"]}"', 1),
        (f'id eq "{gid}" and members eq "{bob["id"]}"', 0),
        (f'id eq "{other["id"]}" and members eq "{ann["id"]}"', 0),
        (f'members[value eq "{ann["id"]}"]', 1),
        (f'members[value eq "{bob["id"]}"]', 0),
    ]
    for text, count in cases:
        found = entra.find("/Groups?attributes=id&filter=" + quote_plus(text))
        expected = [{"schemas": [GROUP], "id": gid}] if count else []
        assert found == expected, text


def test_g9_duplicate_group_then_delete_twice(entra):
    group = new_group(entra, "Sales")
    for name in ("Sales", "sALES"):
        response = entra.post(
            "/Groups", {"schemas": [GROUP], "displayName": name, "externalId": "x"}
        )
        assert response.status_code == 409
        body = response.get_json()
        assert body["schemas"] == [ERROR]
        assert body["status"] == "409" and body["scimType"] == "uniqueness"
    path = f"/Groups/{group['id']}"
    assert_no_content(entra.delete(path))
    gone = entra.get(path)
    assert gone.status_code == 404 and gone.get_json()["status"] == "404"
    second = entra.delete(path)
    assert second.status_code == 404 and second.get_json()["schemas"] == [ERROR]
    assert entra.find("/Groups?filter=displayName+eq+%22Sales%22") == []
    assert new_group(entra, "Sales")["id"] != group["id"]


def test_g_full_entra_group_cycle(entra):
    """One provisioning cycle: probe, create, members one by one, rename, unassign."""
    users = [person(entra, f"m{i}@contoso.com", f"M{i}") for i in range(3)]
    group = new_group(entra, "Marketing")
    path = f"/Groups/{group['id']}"
    assert entra.get(f"{path}?excludedAttributes=members").status_code == 200
    for user in users:
        assert_no_content(entra.patch(path, entra.add_members(user["id"])))
    assert_no_content(
        entra.patch(
            path,
            {"op": entra.op("replace"), "path": "displayName", "value": "Marketing EU"},
        )
    )
    assert_no_content(entra.patch(path, entra.remove_member(users[0]["id"])))
    body = entra.get(path).get_json()
    assert body["displayName"] == "Marketing EU"
    assert body["members"] == [member(users[1]), member(users[2])]
    user = entra.get(f"/Users/{users[1]['id']}").get_json()
    assert user["groups"] == [
        {
            "value": group["id"],
            "$ref": f"{BASE}/Groups/{group['id']}",
            "display": "Marketing EU",
            "type": "direct",
        }
    ]
    assert_no_content(entra.delete(path))
    assert "groups" not in entra.get(f"/Users/{users[1]['id']}").get_json()


#
# L1: paging
#


def test_l1_paging_echoes_start_index(entra):
    for i in range(12):
        person(entra, f"page{i:02d}@contoso.com", f"Page {i}")
    seen = []
    starts = []
    start = 1
    while True:
        response = entra.get(f"/Users?startIndex={start}&count=5")
        assert response.status_code == 200
        page = response.get_json()
        assert page["startIndex"] == start
        assert page["totalResults"] == 12
        assert page["itemsPerPage"] == len(page["Resources"])
        starts.append(start)
        seen += [r["id"] for r in page["Resources"]]
        if start + len(page["Resources"]) > page["totalResults"]:
            break
        start += len(page["Resources"])
    assert starts == [1, 6, 11]
    assert len(seen) == len(set(seen)) == 12
    two = entra.get("/Users?startIndex=1&count=2").get_json()
    assert two["itemsPerPage"] == 2 and len(two["Resources"]) == 2


def test_user_lifecycle_is_stored_with_the_entra_source(app, entra):
    user = provision(entra)
    with app.app_context(), database.connection_context():
        assert User.get(User.scim_id == user["id"]).source == "entra"
