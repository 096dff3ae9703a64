"""SCIM error handling: every failure is a SCIM Error body, never HTML or a 500."""

import pytest

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def error(status, detail, scim_type=None):
    body = {"schemas": [ERROR], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return body


def test_unknown_path_is_scim_404(scim):
    response = scim.get("/Devices")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/scim+json"
    assert response.get_json() == error(404, "No SCIM endpoint at /scim/v2/Devices.")


def test_wrong_method_is_scim_405(scim):
    response = scim.delete("/Schemas")
    assert response.status_code == 405
    assert response.headers["Content-Type"] == "application/scim+json"
    assert response.get_json() == error(
        405, "DELETE is not supported on /scim/v2/Schemas."
    )
    assert "GET" in response.headers["Allow"]


def test_me_is_501(scim):
    assert scim.get("/Me").get_json() == error(
        501, "/Me is not supported: tokens are not tied to a user."
    )


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"", "The request body is empty; a JSON object is required."),
        (b"\xff\xfe", "The request body is not valid UTF-8."),
        (b"[1, 2]", "The request body must be a JSON object."),
        (b'"text"', "The request body must be a JSON object."),
        (b"[" * 100000 + b"]" * 100000, "The request body is nested too deeply."),
    ],
)
def test_malformed_bodies_are_invalid_syntax(scim, raw, detail):
    response = scim.post("/Users", raw)
    assert response.status_code == 400
    assert response.get_json() == error(400, detail, "invalidSyntax")


def test_broken_json_is_invalid_syntax(scim):
    response = scim.post("/Users", b'{"userName": ')
    assert response.status_code == 400
    body = response.get_json()
    assert body["scimType"] == "invalidSyntax"
    assert body["detail"].startswith("The request body is not valid JSON")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/scim+json; charset=utf-8",
        "application/json; charset=UTF-8",
    ],
)
def test_json_content_types_are_accepted(scim, content_type):
    response = scim.post(
        "/Users", {"userName": "ct@x"}, headers={"Content-Type": content_type}
    )
    assert response.status_code == 201


def test_form_content_type_is_refused(scim):
    response = scim.post(
        "/Users",
        b"userName=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert response.get_json()["scimType"] == "invalidSyntax"


def test_oversized_body_is_413(scim):
    response = scim.post("/Users", b"{" + b" " * (3 * 1024 * 1024) + b"}")
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/scim+json"
    assert response.get_json()["status"] == "413"


@pytest.mark.parametrize(
    "text",
    [
        "userName eq",
        'userName xx "a"',
        '(userName eq "a"',
        'nope eq "a"',
        "active gt true",
    ],
)
def test_invalid_filters_are_invalid_filter(scim, text):
    response = scim.get(f"/Users?filter={text}")
    assert response.status_code == 400
    assert response.get_json()["scimType"] == "invalidFilter"


def test_trailing_slash_double_slash_and_unknown_params(scim):
    assert scim.get("/Users/?aadOptscim062020").status_code == 200
    assert (
        scim.client.get(
            "/scim/v2//Users?aadOptscim062020&filter=userName+eq+%22x%22",
            headers={"Authorization": f"Bearer {scim.secret}"},
        ).get_json()["totalResults"]
        == 0
    )


@pytest.mark.parametrize("parameter", ["attributes", "excludedAttributes"])
def test_too_many_projected_attributes_is_400_invalid_value(scim, parameter):
    names = ",".join(f"x{i}" for i in range(1001))
    response = scim.get(f"/Users?{parameter}={names}")
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/scim+json"
    assert response.get_json() == error(
        400,
        f"{parameter} lists 1001 names; at most 1000 are accepted.",
        "invalidValue",
    )


def test_too_many_projected_attributes_in_a_search_body(scim):
    response = scim.post(
        "/Users/.search", {"attributes": [f"x{i}" for i in range(5000)]}
    )
    assert response.status_code == 400
    assert response.get_json() == error(
        400,
        "attributes lists 5000 names; at most 1000 are accepted.",
        "invalidValue",
    )


def test_repeated_projected_attributes_count_once(scim):
    scim.post("/Users", {"schemas": [USER], "userName": "repeat@example.com"})
    names = ",".join(["userName", "USERNAME", "username"] * 333)
    response = scim.get(f"/Users?attributes={names}&count=50")
    assert response.status_code == 200
    body = response.get_json()
    assert body["totalResults"] == 1
    assert body["Resources"] == [
        {
            "schemas": [USER],
            "id": body["Resources"][0]["id"],
            "userName": "repeat@example.com",
        }
    ]


def test_repeated_names_count_towards_the_limit(scim):
    # Each name is work before repeats can be told apart.
    names = ",".join(["userName", "USERNAME", "username"] * 40_000)
    response = scim.get(f"/Users?attributes={names}")
    assert response.status_code == 400
    assert response.get_json() == error(
        400, "attributes lists 120000 names; at most 1000 are accepted.", "invalidValue"
    )


def test_unexpected_errors_are_scim_500_without_traceback(app, scim, monkeypatch):
    from mdm.scim import views

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(views, "search_users", boom)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = scim.get("/Users")
    assert response.status_code == 500
    assert response.get_json() == error(500, "Internal server error.")
    assert "secret internals" not in response.get_data(as_text=True)
