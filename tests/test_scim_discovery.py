"""Discovery endpoints: ServiceProviderConfig, Schemas, ResourceTypes (RFC 7644 §4)."""

BASE = "http://localhost/scim/v2"
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
CUSTOM = "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User"


def test_service_provider_config(client):
    response = client.get("/scim/v2/ServiceProviderConfig")
    assert response.headers["Content-Type"] == "application/scim+json"
    body = response.get_json()
    assert body["patch"] == {"supported": True}
    assert body["bulk"] == {
        "supported": True,
        "maxOperations": 1000,
        "maxPayloadSize": 1048576,
    }
    assert body["filter"] == {"supported": True, "maxResults": 500}
    assert body["sort"] == body["etag"] == body["changePassword"] == {"supported": True}
    assert body["authenticationSchemes"][0]["type"] == "oauthbearertoken"
    assert body["meta"] == {
        "resourceType": "ServiceProviderConfig",
        "location": f"{BASE}/ServiceProviderConfig",
    }


def test_schemas_list_what_is_stored(client, runner):
    body = client.get("/scim/v2/Schemas").get_json()
    assert [s["id"] for s in body["Resources"]] == [CORE, ENTERPRISE, GROUP]
    assert body["totalResults"] == 3
    user = body["Resources"][0]
    names = [a["name"] for a in user["attributes"]]
    assert names == [
        "userName", "name", "displayName", "nickName", "profileUrl", "title",
        "userType", "preferredLanguage", "locale", "timezone", "active", "password",
        "emails", "phoneNumbers", "ims", "photos", "addresses", "groups",
        "entitlements", "roles", "x509Certificates",
    ]  # fmt: skip
    user_name = user["attributes"][0]
    assert user_name == {
        "name": "userName",
        "type": "string",
        "multiValued": False,
        "description": "Unique identifier for the user, used to sign in.",
        "required": True,
        "mutability": "readWrite",
        "returned": "default",
        "caseExact": False,
        "uniqueness": "server",
    }
    assert user["meta"] == {
        "resourceType": "Schema",
        "location": f"{BASE}/Schemas/{CORE}",
    }
    assert "null" not in client.get("/scim/v2/Schemas").get_data(as_text=True)

    runner.invoke(args=["attribute", "add", "badge", "--type", "integer"])
    body = client.get("/scim/v2/Schemas").get_json()
    custom = body["Resources"][2]
    assert custom["id"] == CUSTOM
    assert [(a["name"], a["type"]) for a in custom["attributes"]] == [
        ("badge", "integer")
    ]
    one = client.get(f"/scim/v2/Schemas/{CUSTOM}").get_json()
    assert one == custom


def test_resource_types(client, runner):
    body = client.get("/scim/v2/ResourceTypes").get_json()
    assert body["Resources"][0] == {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "User resources",
        "schema": CORE,
        "schemaExtensions": [{"schema": ENTERPRISE, "required": False}],
        "meta": {
            "resourceType": "ResourceType",
            "location": f"{BASE}/ResourceTypes/User",
        },
    }
    assert (
        client.get("/scim/v2/ResourceTypes/Group").get_json()["endpoint"] == "/Groups"
    )
    missing = client.get("/scim/v2/ResourceTypes/Device")
    assert missing.status_code == 404
    assert missing.get_json()["detail"] == "ResourceType Device not found."


def test_public_url_sets_locations(app, scim):
    app.config["PUBLIC_URL"] = "https://mdm.example.com/"
    user = scim.create_user("pub@x")
    assert (
        user["meta"]["location"]
        == f"https://mdm.example.com/scim/v2/Users/{user['id']}"
    )


def test_forwarded_headers_are_trusted_only_when_configured(tmp_path):
    from mdm import create_app

    from .conftest import ScimClient
    from .conftest import database_config
    from .conftest import issue_token

    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "mdm.example.org"}
    for hops, expected in [(0, "http://localhost"), (1, "https://mdm.example.org")]:
        app = create_app(
            {
                "TESTING": True,
                **database_config(tmp_path / f"{hops}.db"),
                "PROXY_FIX": hops,
                "TRUSTED_HOSTS": ["mdm.example.org"],
            }
        )
        _, secret = issue_token(app)
        scim = ScimClient(app.test_client(), secret)
        response = scim.post("/Users", {"userName": "p@x"}, headers=forwarded)
        user = response.get_json()
        assert response.headers["Location"] == f"{expected}/scim/v2/Users/{user['id']}"
