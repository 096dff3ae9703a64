"""Hostile requests: each gets an exact SCIM answer, leaks nothing, and leaves the server serving."""

import io
import json

import pytest

from mdm import create_app
from mdm.db import database
from mdm.models import User

from .conftest import ScimClient
from .conftest import database_config
from .conftest import issue_token

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CUSTOM = "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCIM = "application/scim+json"
LEAKS = ("Traceback", 'File "', "SELECT", "sqlite", "syntax error", 'near "')
MB = 1024 * 1024


class Server:
    """One app shared by the module: building an app per case would cost minutes."""

    def __init__(self, app):
        self.app = app
        _, secret = issue_token(app, "entra")
        self.scim = ScimClient(app.test_client(), secret)
        runner = app.test_cli_runner()
        for name, kind in (("badge", "integer"), ("remote", "boolean")):
            runner.invoke(args=["attribute", "add", name, "--type", kind])
        self.user = self.scim.create_user(
            "bjensen@example.com",
            displayName="Barbara Jensen",
            emails=[{"value": "bjensen@example.com", "type": "work"}],
        )["id"]
        self.scim.create_user("pct%_x@example.com")
        self.group = self.scim.create_group("Staff", members=[self.user])["id"]

    def path(self, path):
        return path.replace("{user}", self.user).replace("{group}", self.group)

    def send(self, method, path, body=None, headers=None, **kwargs):
        return self.scim.request(method, self.path(path), body, headers, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            **database_config(folder / "mdm.sqlite"),
            "WTF_CSRF_ENABLED": False,
        }
    )
    yield Server(app)
    if not database.is_closed():
        database.close()


def assert_clean(response):
    """Check the SCIM content type and that no traceback or SQL leaked."""
    assert response.headers["Content-Type"] == SCIM
    text = response.get_data(as_text=True)
    for leak in LEAKS:
        assert leak not in text, text[:500]


def assert_error(response, status, scim_type=None):
    """Check an exact SCIM Error response (RFC 7644 §3.12)."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert_clean(response)
    body = response.get_json()
    assert set(body) <= {"schemas", "status", "scimType", "detail"}
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    assert body.get("scimType") == scim_type
    assert isinstance(body["detail"], str) and body["detail"]


def assert_serving(server):
    """Check that an ordinary request still succeeds afterwards."""
    response = server.scim.get('/Users?filter=userName eq "bjensen@example.com"')
    assert response.status_code == 200
    body = response.get_json()
    assert body["schemas"] == [LIST]
    assert body["totalResults"] == 1
    assert body["Resources"][0]["id"] == server.user


def created(server, response, status=201):
    """Check a success answer, delete what it created, and return its body."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert_clean(response)
    body = response.get_json()
    kind = "Users" if CORE in body["schemas"] else "Groups"
    assert server.scim.delete(f"/{kind}/{body['id']}").status_code == 204
    return body


#
# Malformed bodies on every endpoint that reads one
#

BODY_ENDPOINTS = [
    ("POST", "/Users"),
    ("PUT", "/Users/{user}"),
    ("PATCH", "/Users/{user}"),
    ("POST", "/Groups"),
    ("PUT", "/Groups/{group}"),
    ("PATCH", "/Groups/{group}"),
    ("POST", "/Users/.search"),
    ("POST", "/Groups/.search"),
    ("POST", "/.search"),
]

MALFORMED = [
    pytest.param(b"", id="empty"),
    pytest.param(b"  \n", id="whitespace"),
    pytest.param(b"{", id="open-brace"),
    pytest.param(b'{"userName": ', id="truncated"),
    pytest.param(b'{"userName": "x"', id="unclosed-object"),
    pytest.param(b"{'userName': 'x'}", id="single-quotes"),
    pytest.param(b'{"userName": "x",}', id="trailing-comma"),
    pytest.param(b'{"a": 1}{"b": 2}', id="two-objects"),
    pytest.param(b"{} trailing", id="trailing-garbage"),
    pytest.param(b'{"userName": "x" /* c */}', id="comment"),
    pytest.param(b"undefined", id="undefined"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'[{"userName": "x"}]', id="array-of-object"),
    pytest.param(b'"text"', id="string"),
    pytest.param(b"42", id="number"),
    pytest.param(b"-1.5e3", id="float"),
    pytest.param(b"null", id="null"),
    pytest.param(b"true", id="boolean"),
    pytest.param(b"\xff\xfe", id="bad-utf8"),
    pytest.param(b'{"userName": "\xc3\x28"}', id="bad-utf8-in-string"),
    pytest.param(b'{"userName": "\xed\xa0\x80"}', id="utf8-encoded-surrogate"),
    pytest.param(b'{"userName": "x\xff"}', id="latin1-byte"),
    pytest.param("{}".encode("utf-16"), id="utf16"),
    pytest.param(b"\xef\xbb\xbf{}", id="utf8-bom"),
    pytest.param(b'{"userName": "x", "a": NaN}', id="nan"),
    pytest.param(b'{"userName": "x", "a": Infinity}', id="infinity"),
    pytest.param(b'{"userName": "x", "a": -Infinity}', id="minus-infinity"),
    pytest.param(b'{"userName": "\\ud800"}', id="lone-surrogate-escape"),
    pytest.param(b'{"\\udfff": 1}', id="lone-surrogate-key"),
    pytest.param(b'{"a": ["x", {"b": "\\udc00y"}]}', id="nested-lone-surrogate"),
    pytest.param(b'{"userName": "a\x00b"}', id="raw-nul-in-string"),
    pytest.param(b'{"userName": "a\nb"}', id="raw-newline-in-string"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-arrays"),
    pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="deep-objects"),
    pytest.param(b'{"x": ' + b"1" * 5000 + b"}", id="5000-digit-number"),
]


@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_body_is_invalid_syntax(server, method, path, raw):
    """Any body that is not one JSON object is 400 invalidSyntax."""
    assert_error(server.send(method, path, raw), 400, "invalidSyntax")
    assert_serving(server)


@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ],
)
def test_non_json_content_type_is_415(server, method, path, content_type):
    """A body labelled as something other than JSON is refused."""
    response = server.send(method, path, b"{}", {"Content-Type": content_type})
    assert_error(response, 415, "invalidSyntax")
    assert_serving(server)


#
# Wrong types for every User attribute (POST and PUT)
#

STRING_WRONG = [True, [], {}, ["x"], {"a": 1}, [None]]
MULTI_WRONG = [5, 1.5, True, [5], [[1]], [{"value": {}}], [{"value": []}]]
BOOLEAN_WRONG = ["yes", 5, 1.5, [], {}, ["true"]]


def _user_cases():
    cases = []
    for name in (
        "displayName",
        "nickName",
        "profileUrl",
        "title",
        "userType",
        "preferredLanguage",
        "locale",
        "timezone",
        "externalId",
        "password",
        "name.givenName",
        f"{CORE}:title",
    ):
        cases += [(name, value) for value in STRING_WRONG]
    cases += [("userName", value) for value in [*STRING_WRONG, None, ""]]
    cases += [("active", value) for value in BOOLEAN_WRONG]
    cases += [("name", value) for value in ["x", 5, True, [], ["x"], [None]]]
    cases += [("name", {"givenName": value}) for value in [[], {}, True]]
    for name in (
        "emails",
        "phoneNumbers",
        "ims",
        "photos",
        "entitlements",
        "roles",
        "x509Certificates",
    ):
        cases += [(name, value) for value in MULTI_WRONG]
        cases.append((name, [{"value": "v", "primary": "maybe"}]))
        cases.append((name, [{"value": "v", "type": ["work"]}]))
    cases += [("addresses", value) for value in [5, True, [5], [[1]]]]
    cases.append(("addresses", [{"streetAddress": {}}]))
    cases.append(("addresses", [{"primary": 2}]))
    cases += [(ENT, value) for value in ["x", 5, True, [], ["x"]]]
    for sub in ("employeeNumber", "costCenter", "organization", "division"):
        cases += [(ENT, {sub: value}) for value in STRING_WRONG]
    cases += [(ENT, {"department": value}) for value in STRING_WRONG]
    cases += [
        (ENT, {"manager": value})
        for value in [True, 1.5, [[1]], {"value": {}}, {"value": []}, [{"value": []}]]
    ]
    cases += [(f"{ENT}:department", value) for value in [[], {}]]
    cases += [(CUSTOM, value) for value in ["x", 5, []]]
    cases += [(CUSTOM, {"badge": value}) for value in ["x", 1.5, True, [], {}, "1e3"]]
    cases += [(CUSTOM, {"remote": value}) for value in ["x", 5, 1.5, [], {}]]
    cases += [(f"{CUSTOM}:badge", value) for value in ["nine", [9]]]
    return [
        pytest.param(n, v, id=f"{n.split(':')[-1]}={json.dumps(v)}") for n, v in cases
    ]


USER_WRONG_TYPES = _user_cases()


def user_body(name, value, user_name="wrong@example.com"):
    body = {"schemas": [CORE, ENT], "userName": user_name}
    if name == "userName":
        body["userName"] = value
    else:
        body[name] = value
    return body


@pytest.mark.parametrize(("name", "value"), USER_WRONG_TYPES)
def test_post_user_with_wrong_type_is_invalid_value(server, name, value):
    """POST /Users refuses a value of the wrong type with 400 invalidValue."""
    assert_error(
        server.send("POST", "/Users", user_body(name, value)), 400, "invalidValue"
    )
    assert_serving(server)


@pytest.mark.parametrize(("name", "value"), USER_WRONG_TYPES)
def test_put_user_with_wrong_type_is_invalid_value(server, name, value):
    """PUT /Users/{id} refuses a value of the wrong type and keeps the user."""
    body = user_body(name, value, "bjensen@example.com")
    assert_error(server.send("PUT", "/Users/{user}", body), 400, "invalidValue")
    assert server.send("GET", "/Users/{user}").get_json()["displayName"] == (
        "Barbara Jensen"
    )
    assert_serving(server)


PATCH_WRONG_TYPES = [
    ("userName", None),
    ("userName", []),
    ("userName", {}),
    ("userName", True),
    ("displayName", {"a": 1}),
    ("displayName", ["x"]),
    ("title", True),
    ("externalId", {}),
    ("active", "maybe"),
    ("active", 5),
    ("active", []),
    ("name", "x"),
    ("name", 5),
    ("name", ["x"]),
    ("name.givenName", []),
    ("name.givenName", {}),
    ("emails", 5),
    ("emails", [5]),
    ("emails", [[1]]),
    ("emails", True),
    ("emails", [{"value": ["x"]}]),
    ('emails[type eq "work"].value', ["x"]),
    ('emails[type eq "work"]', 5),
    ('emails[type eq "work"].primary', "maybe"),
    ("phoneNumbers", [{"value": []}] * 2 + [7]),
    ("addresses", [5]),
    ('addresses[type eq "work"].streetAddress', ["x"]),
    ("roles", 1.5),
    ("x509Certificates", [[]]),
    ("password", []),
    ("password", {}),
    (ENT, 5),
    (ENT, "x"),
    (ENT, ["x"]),
    (f"{ENT}:department", []),
    (f"{ENT}:department", True),
    (f"{ENT}:manager", True),
    (f"{ENT}:manager", 1.5),
    (f"{ENT}:manager", {"value": ["x"]}),
    (f"{ENT}:manager.value", True),
    ("manager", [[1]]),
    (CUSTOM, "x"),
    (f"{CUSTOM}:badge", "x"),
    (f"{CUSTOM}:badge", 1.5),
    (f"{CUSTOM}:remote", "x"),
    ("badge", []),
]


@pytest.mark.parametrize("op", ["add", "replace"])
@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param(p, v, id=f"{p.split(':')[-1]}={json.dumps(v)}")
        for p, v in PATCH_WRONG_TYPES
    ],
)
def test_patch_user_with_wrong_type_is_invalid_value(server, op, path, value):
    """A PATCH value of the wrong type is 400 invalidValue and changes nothing."""
    before = server.send("GET", "/Users/{user}").get_json()
    body = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": op, "path": path, "value": value}],
    }
    assert_error(server.send("PATCH", "/Users/{user}", body), 400, "invalidValue")
    assert server.send("GET", "/Users/{user}").get_json() == before
    assert_serving(server)


#
# Wrong types for Group attributes and members
#

GROUP_WRONG_TYPES = [
    ("displayName", None),
    ("displayName", ""),
    ("displayName", True),
    ("displayName", []),
    ("displayName", {}),
    ("displayName", ["Staff"]),
    ("displayName", "x" * 1025),
    ("displayName", "a\x00b"),
    ("externalId", []),
    ("externalId", {"a": 1}),
    ("externalId", False),
    ("externalId", "a\x00b"),
    ("members", 5),
    ("members", True),
    ("members", [5]),
    ("members", [None]),
    ("members", [{}]),
    ("members", [{"value": 5}]),
    ("members", [{"value": ""}]),
    ("members", [{"value": None}]),
    ("members", [{"value": ["x"]}]),
    ("members", [[]]),
    ("members", {"display": "x"}),
]


def group_body(name, value, display_name="Wrong"):
    body = {"schemas": [GROUP], "displayName": display_name}
    body[name] = value
    return body


@pytest.mark.parametrize(
    ("name", "value"),
    [pytest.param(n, v, id=f"{n}={json.dumps(v)[:30]}") for n, v in GROUP_WRONG_TYPES],
)
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/Groups"), ("PUT", "/Groups/{group}")]
)
def test_group_with_wrong_type_is_invalid_value(server, method, path, name, value):
    """POST and PUT /Groups refuse wrong types with 400 invalidValue."""
    body = group_body(name, value, "Staff" if method == "PUT" else "Wrong")
    assert_error(server.send(method, path, body), 400, "invalidValue")
    assert_serving(server)


GROUP_PATCH_WRONG_TYPES = [
    ("replace", "displayName", None),
    ("replace", "displayName", ""),
    ("replace", "displayName", []),
    ("replace", "displayName", {"a": 1}),
    ("replace", "displayName", "x" * 1025),
    ("replace", "externalId", []),
    ("add", "members", 5),
    ("add", "members", [5]),
    ("add", "members", [{"value": 7}]),
    ("add", "members", [{"value": ""}]),
    ("add", "members", [None]),
    ("replace", "members", [{"value": []}]),
    ("replace", "members", True),
    ("remove", "members", [{"value": 5}]),
    ("remove", "members", 3.5),
    ("replace", None, {"displayName": []}),
    ("replace", None, {"members": 5}),
    ("replace", None, 5),
    ("add", None, ["x"]),
]


@pytest.mark.parametrize(
    ("op", "path", "value"),
    [
        pytest.param(o, p, v, id=f"{o}-{p}={json.dumps(v)[:30]}")
        for o, p, v in GROUP_PATCH_WRONG_TYPES
    ],
)
def test_patch_group_with_wrong_type_is_invalid_value(server, op, path, value):
    """A group PATCH with a wrong-typed value is 400 invalidValue; members are kept."""
    operation = {"op": op, "value": value}
    if path is not None:
        operation["path"] = path
    body = {"schemas": [PATCH_OP], "Operations": [operation]}
    assert_error(server.send("PATCH", "/Groups/{group}", body), 400, "invalidValue")
    group = server.send("GET", "/Groups/{group}").get_json()
    assert group["displayName"] == "Staff"
    assert [m["value"] for m in group["members"]] == [server.user]
    assert_serving(server)


#
# Control characters and very long strings
#

NUL_BODIES = [
    ("/Users", {"userName": "a\x00b"}),
    ("/Users", {"userName": "n@x", "displayName": "\x00"}),
    ("/Users", {"userName": "n@x", "name": {"givenName": "Bar\x00bara"}}),
    ("/Users", {"userName": "n@x", "emails": [{"value": "a@x\x00"}]}),
    ("/Users", {"userName": "n@x", "emails": [{"value": "a@x", "type": "\x00"}]}),
    ("/Users", {"userName": "n@x", "externalId": "e\x00"}),
    ("/Users", {"userName": "n@x", "password": "pass\x00word"}),
    ("/Users", {"userName": "n@x", ENT: {"department": "\x00"}}),
    ("/Users", {"userName": "n@x", ENT: {"manager": "m\x00"}}),
    ("/Groups", {"displayName": "G\x00"}),
]


@pytest.mark.parametrize(("path", "body"), NUL_BODIES)
def test_nul_in_a_string_is_invalid_value(server, path, body):
    """NUL cannot be stored faithfully, so it is refused."""
    assert_error(server.send("POST", path, body), 400, "invalidValue")
    assert_serving(server)


@pytest.mark.parametrize(
    "text",
    [
        "tab\there",
        "bell\x07",
        "esc\x1b[31m",
        "del\x7f",
        "line\u2028sep",
        "bidi\u202e",
        "\ufeffbom",
    ],
)
def test_other_control_characters_round_trip(server, text):
    """Control characters other than NUL are stored and returned unchanged."""
    response = server.send(
        "POST", "/Users", {"userName": f"ctl{len(text)}@x", "title": text}
    )
    assert created(server, response)["title"] == text
    assert_serving(server)


LONG_STRINGS = [
    ("/Users", {"userName": "u" * 1025}),
    ("/Users", {"userName": "n@x", "title": "t" * 65537}),
    ("/Users", {"userName": "n@x", "displayName": "d" * MB}),
    ("/Users", {"userName": "n@x", "externalId": "e" * 65537}),
    ("/Users", {"userName": "n@x", "password": "p" * 1025}),
    ("/Users", {"userName": "n@x", "emails": [{"value": "e" * 65537}]}),
    ("/Users", {"userName": "n@x", "name": {"givenName": "g" * 65537}}),
    ("/Users", {"userName": "n@x", ENT: {"department": "d" * 65537}}),
    ("/Groups", {"displayName": "g" * 1025}),
]


@pytest.mark.parametrize(("path", "body"), LONG_STRINGS)
def test_over_long_string_is_invalid_value(server, path, body):
    """Strings past their limits (1024 for unique names, 64 KiB otherwise) are 400."""
    assert_error(server.send("POST", path, body), 400, "invalidValue")
    assert_serving(server)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/Users", {"userName": "u" * 1024}),
        ("/Users", {"userName": "long@x", "title": "t" * 65536}),
        ("/Users", {"userName": "long@x", "unknownBlob": "b" * MB}),
        ("/Groups", {"displayName": "g" * 1024}),
    ],
)
def test_strings_at_their_limit_are_accepted(server, path, body):
    """A string exactly at its limit, or a 1 MB unknown attribute, is fine."""
    created(server, server.send("POST", path, body))
    assert_serving(server)


def _scattered(size, seed):
    """Return ``size`` bytes of UTF-8 text that neither compresses nor shrinks when lowercased."""
    # Three-byte CJK characters in no order, and "İ", whose lowercase is a
    # byte longer: the worst an index entry of the value and its lowercased
    # copy can be, past what PostgreSQL's compression of a long entry saves.
    chars = [chr(0x4E00 + (seed * 7919 + i * 104729) % 20000) for i in range(size)]
    text = "".join("İ" if i % 3 == 0 else c for i, c in enumerate(chars))
    while len(text.encode()) > size:
        text = text[:-1]
    return text + "a" * (size - len(text.encode()))


# Values the database indexes, each one byte over the 1,500 it accepts, in
# characters that take two and three bytes: PostgreSQL answered 500 for such
# a value past its index's 2,704-byte entries, however few characters.
INDEXED_VALUES = [
    ("/Users", lambda v: {"userName": v}),
    ("/Users", lambda v: {"userName": "n@x", "displayName": v}),
    ("/Users", lambda v: {"userName": "n@x", "externalId": v}),
    ("/Users", lambda v: {"userName": "n@x", "emails": [{"value": v}]}),
    ("/Users", lambda v: {"userName": "n@x", ENT: {"department": v}}),
    ("/Users", lambda v: {"userName": "n@x", ENT: {"employeeNumber": v}}),
    ("/Users", lambda v: {"userName": "n@x", ENT: {"costCenter": v}}),
    ("/Users", lambda v: {"userName": "n@x", ENT: {"organization": v}}),
    ("/Users", lambda v: {"userName": "n@x", ENT: {"division": v}}),
    ("/Users", lambda v: {"userName": "n@x", ENT: {"manager": {"value": v}}}),
    ("/Users", lambda v: {"userName": "n@x", ENT: {"manager": v}}),
    ("/Groups", lambda v: {"displayName": v}),
    ("/Groups", lambda v: {"displayName": "g", "externalId": v}),
]


@pytest.mark.parametrize(("path", "body"), INDEXED_VALUES)
def test_indexed_values_are_limited_in_bytes(server, path, body):
    """An indexed value of 1,500 bytes in UTF-8 is stored, and found; one more is 400."""
    value = _scattered(1500, INDEXED_VALUES.index((path, body)))
    stored = created(server, server.send("POST", path, body(value)))
    assert value in json.dumps(stored, ensure_ascii=False)
    longer = value + "a"
    response = server.send("POST", path, body(longer))
    assert_error(response, 400, "invalidValue")
    assert "1500 bytes" in response.get_json()["detail"]
    assert_serving(server)


def test_a_patch_to_an_over_long_indexed_value_is_refused(server):
    """Entra's pathless replace of a department past 1,500 bytes: 400, nothing changed."""
    made = server.send("POST", "/Users", {"userName": "p@x", ENT: {"department": "HR"}})
    assert made.status_code == 201
    target = made.get_json()
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "Replace", "value": {f"{ENT}:department": _scattered(1501, 99)}}
        ],
    }
    response = server.send("PATCH", f"/Users/{target['id']}", body)
    assert_error(response, 400, "invalidValue")
    after = server.scim.get(f"/Users/{target['id']}").get_json()
    assert after == target
    assert server.scim.delete(f"/Users/{target['id']}").status_code == 204
    assert_serving(server)


#
# Sizes: oversized, nested, lying Content-Length, chunked
#


@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
def test_oversized_body_is_413_fast(server, method, path):
    """A body over MAX_CONTENT_LENGTH (2 MB) is refused before it is parsed."""
    raw = b'{"userName": "' + b"x" * (3 * MB) + b'"}'
    response = server.send(method, path, raw)
    assert_error(response, 413)
    assert_serving(server)


def test_declared_oversized_content_length_is_413(server):
    """A Content-Length over the limit is refused without reading the body."""
    response = server.send(
        "POST",
        "/Users",
        b'{"userName": "cl@x"}',
        environ_overrides={"CONTENT_LENGTH": str(10**30)},
    )
    assert_error(response, 413)
    assert_serving(server)


@pytest.mark.parametrize(
    ("declared", "detail"),
    [
        ("100000", "shorter than its Content-Length"),
        ("5", "not valid JSON"),
        ("0", "empty"),
        ("-5", "empty"),
        ("abc", "empty"),
    ],
)
def test_lying_content_length_fails_fast(server, declared, detail):
    """A Content-Length that disagrees with the body is 400 at once, never a hang."""
    response = server.send(
        "POST",
        "/Users",
        b'{"userName": "liar@example.com"}',
        environ_overrides={"CONTENT_LENGTH": declared},
    )
    assert_error(response, 400, "invalidSyntax")
    assert detail in response.get_json()["detail"]
    assert_serving(server)


def _chunked(server, raw, terminated):
    environ = {"HTTP_TRANSFER_ENCODING": "chunked"}
    if terminated:
        environ["wsgi.input_terminated"] = True
    return server.scim.client.post(
        "/scim/v2/Users",
        input_stream=io.BytesIO(raw),
        headers={"Authorization": f"Bearer {server.scim.secret}", "Content-Type": SCIM},
        environ_overrides=environ,
    )


def test_chunked_body_from_a_terminating_server_is_read(server):
    """A chunked body is read when the WSGI server terminates the stream."""
    created(server, _chunked(server, b'{"userName": "chunk@example.com"}', True))
    assert_serving(server)


def test_chunked_body_without_termination_is_not_waited_for(server):
    """Without wsgi.input_terminated the body is not read (no hang): it is empty."""
    response = _chunked(server, b'{"userName": "chunk@example.com"}', False)
    assert_error(response, 400, "invalidSyntax")
    assert_serving(server)


def test_oversized_chunked_body_is_413_not_truncated(server):
    """A chunked body over the limit is 413, not silently cut to 2 MB and parsed."""
    raw = b'{"userName": "big-chunk@example.com"}' + b" " * (3 * MB)
    assert_error(_chunked(server, raw, True), 413)
    assert_serving(server)


def test_moderately_nested_unknown_attribute_is_ignored(server):
    """Nesting that JSON can parse, under an unknown attribute, is ignored."""
    raw = b'{"userName": "nest@example.com", "x": ' + b"[" * 500 + b"]" * 500 + b"}"
    assert "x" not in created(server, server.send("POST", "/Users", raw))
    assert_serving(server)


def test_nested_arrays_in_an_attribute_are_invalid_value(server):
    """Arrays nested where an element belongs are 400 invalidValue."""
    body = {"userName": "nest@example.com", "emails": [[[[{"value": "a@x"}]]]]}
    assert_error(server.send("POST", "/Users", body), 400, "invalidValue")
    assert_serving(server)


#
# Unknown schemas and attributes are ignored
#


@pytest.mark.parametrize(
    "schemas",
    [
        ["urn:example:unknown"],
        [CORE, "urn:example:unknown"],
        [],
        "not-a-list",
        [1, None, {}],
        None,
    ],
)
def test_unknown_schemas_are_ignored(server, schemas):
    """The schemas attribute is informative: odd values do not fail a create."""
    body = {"userName": "schemas@example.com", "schemas": schemas}
    assert created(server, server.send("POST", "/Users", body))["schemas"] == [CORE]
    assert_serving(server)


@pytest.mark.parametrize(
    "extra",
    [
        {"urn:example:unknown:2.0:User": {"a": 1}},
        {"urn:example:unknown:2.0:User:attr": 5},
        {"unknownAttribute": [1, {"a": None}]},
        {
            "id": "client-chosen",
            "meta": {"created": "yesterday"},
            "groups": [{"value": "x"}],
        },
        {"": "empty key"},
        {"name.nope": 1, "emails.value": "x"},
    ],
)
def test_unknown_and_read_only_attributes_are_ignored(server, extra):
    """Unknown and read-only attributes do not fail a create and are not stored."""
    body = {"userName": "extra@example.com", **extra}
    user = created(server, server.send("POST", "/Users", body))
    assert set(user) == {"schemas", "id", "meta", "userName", "active"}
    assert_serving(server)


#
# Filters
#

FILTER_ENDPOINTS = [
    ("GET", "/Users"),
    ("GET", "/Groups"),
    ("POST", "/Users/.search"),
    ("POST", "/Groups/.search"),
    ("POST", "/.search"),
]


def search(server, method, path, **params):
    if method == "POST":
        return server.send("POST", path, {"schemas": [LIST], **params})
    return server.scim.client.get(
        f"/scim/v2{path}",
        query_string=params,
        headers={"Authorization": f"Bearer {server.scim.secret}"},
    )


BAD_FILTERS = [
    "userName eq",
    'userName xx "a"',
    'userName "a"',
    '(userName eq "a"',
    'userName eq "a")',
    'userName eq "a" and',
    'and userName eq "a"',
    "or or",
    "not",
    "not (",
    'not userName eq "a"',
    "(",
    ")",
    "[",
    "]",
    '"',
    '""',
    "emails[",
    "emails[]",
    'emails[type eq "x"',
    'emails[type eq "x"].',
    'emails[type eq "x"].value',
    'emails[type eq "x"].value eq',
    'emails[type eq "x"][value eq "y"]',
    'emails[value eq "a" and emails[type eq "b"]]',
    'userName eq "unterminated',
    'userName eq "bad \\q escape"',
    'userName eq "a" "b"',
    'userName eq "a" userName eq "b"',
    "userName eq 1e400",
    "userName eq " + "9" * 5000,
    'userName eq "\\ud800"',
    'userName eq "a\x01b"',
    "\x00",
    'userName\x00eq "a"',
    "(" * 17 + "userName pr" + ")" * 17,
    "not (" * 17 + "userName pr" + ")" * 17,
    "userName pr and " * 500 + "userName pr",
    'userName eq "' + "a" * 10_000 + '"',
    "x" * 10_001,
    'nope eq "a"',
    'name.nope eq "a"',
    "urn:example:x:y eq 1",
    'urn: eq "a"',
    "meta eq 1",
    'meta.created gt "not a date"',
    "meta.created gt 5",
    'meta.created co "2020"',
    "meta.created gt null",
    "x.y.z eq 1",
    "1 eq 1",
    '$ref eq "x"',
    f'{CUSTOM}:badge gt "{"9" * 400}"',
]


@pytest.mark.parametrize(("method", "path"), FILTER_ENDPOINTS)
@pytest.mark.parametrize(
    "text", [pytest.param(t, id=repr(t)[:40]) for t in BAD_FILTERS]
)
def test_bad_filter_is_invalid_filter(server, method, path, text):
    """Malformed, unknown or ill-typed filters are 400 invalidFilter everywhere."""
    assert_error(search(server, method, path, filter=text), 400, "invalidFilter")
    assert_serving(server)


INJECTIONS = [
    'userName eq "x\' OR 1=1 --"',
    'userName eq "\\"; DROP TABLE user; --"',
    'userName eq "x\'); DELETE FROM user; --"',
    "displayName eq \"x') OR ('1'='1\"",
    "externalId eq x'--",
    'userName co "\' UNION ALL SELECT 1, 2 --"',
    'userName eq "*"',
    'userName sw "\\u0000"',
    "emails[value eq \"' OR ''='\"]",
    'name.givenName eq "1\\" OR \\"1\\"=\\"1"',
    'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "\'"',
    'members[value eq "\' OR 1=1 --"]',
    'id eq "\' OR 1=1 --"',
]


@pytest.mark.parametrize(("method", "path"), FILTER_ENDPOINTS)
@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_looking_filters_match_nothing(server, method, path, text):
    """Filter values are bound parameters: SQL in them matches nothing and runs nothing."""
    response = search(server, method, path, filter=text)
    if response.status_code == 400:
        # The filter names an attribute the resource type lacks (userName on Groups).
        assert_error(response, 400, "invalidFilter")
    else:
        assert response.status_code == 200
        assert_clean(response)
        assert response.get_json()["totalResults"] == 0
    assert_serving(server)


@pytest.mark.parametrize(
    ("text", "total"),
    [
        ('userName co "%"', 1),
        ('userName sw "%"', 0),
        ('userName ew "%"', 0),
        ('userName co "_"', 1),
        ('userName sw "_"', 0),
        ('userName co "%_"', 1),
        ('userName sw "pct%_"', 1),
        ('userName sw "pct_"', 0),
        ('userName co "\\\\"', 0),
        ('userName co "*"', 0),
        ('userName co "[a-z]"', 0),
        ('userName co ""', 2),
        ('userName ew "@EXAMPLE.COM"', 2),
        ('emails.value co "%"', 0),
        ('emails[value co "_"]', 0),
    ],
)
def test_like_wildcards_in_substring_filters_are_literal(server, text, total):
    """% and _ in co/sw/ew match themselves, not any characters."""
    for method, path in (("GET", "/Users"), ("POST", "/Users/.search")):
        response = search(server, method, path, filter=text)
        assert response.status_code == 200
        assert_clean(response)
        assert response.get_json()["totalResults"] == total
    assert_serving(server)


def test_sixteen_nested_parentheses_are_accepted(server):
    """Nesting up to the limit still runs."""
    text = "(" * 16 + 'userName eq "bjensen@example.com"' + ")" * 16
    response = search(server, "GET", "/Users", filter=text)
    assert response.status_code == 200
    assert response.get_json()["totalResults"] == 1
    assert_serving(server)


def test_ten_thousand_character_filter_is_accepted(server):
    """A filter of exactly 10,000 characters is parsed and runs."""
    text = 'userName eq "' + "a" * (10_000 - 14) + '"'
    assert len(text) == 10_000
    response = search(server, "GET", "/Users", filter=text)
    assert response.status_code == 200
    assert response.get_json()["totalResults"] == 0
    assert_serving(server)


def test_long_or_chain_runs(server):
    """The longest or chain a filter may have (100 terms) compiles and runs."""
    text = " or ".join(f'id eq "{i}"' for i in range(99))
    text += ' or userName eq "bjensen@example.com"'
    response = search(server, "POST", "/Users/.search", filter=text)
    assert response.status_code == 200
    assert response.get_json()["totalResults"] == 1
    assert_serving(server)


@pytest.mark.parametrize(
    "text",
    [
        "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User:badge eq 99999999999999999999999",
        "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User:badge lt -99999999999999999999999",
        'urn:ietf:params:scim:schemas:extension:ivanti:2.0:User:badge gt "'
        + "9" * 300
        + '"',
        "badge ge 1e308",
        "badge le 9223372036854775808",
    ],
)
def test_huge_numbers_compare_instead_of_overflowing(server, text):
    """Integers beyond 64 bits compare as reals instead of failing in SQLite."""
    response = search(server, "GET", "/Users", filter=text)
    assert response.status_code == 200
    assert_clean(response)
    assert response.get_json()["totalResults"] == 0
    assert_serving(server)


#
# Paging, sorting and projection parameters
#

BAD_LIST_PARAMS = [
    ({"startIndex": "abc"}, "invalidValue"),
    ({"startIndex": "1.5"}, "invalidValue"),
    ({"startIndex": "0x10"}, "invalidValue"),
    ({"startIndex": "1\x00"}, "invalidValue"),
    ({"startIndex": "9" * 5000}, "invalidValue"),
    ({"count": "abc"}, "invalidValue"),
    ({"count": "NaN"}, "invalidValue"),
    ({"count": "1e3"}, "invalidValue"),
    ({"count": "\x00"}, "invalidValue"),
    ({"sortBy": "nope"}, "invalidValue"),
    ({"sortBy": "groups"}, "invalidValue"),
    ({"sortBy": "meta"}, "invalidValue"),
    ({"sortBy": "password"}, "invalidValue"),
    ({"sortBy": "name.nope"}, "invalidValue"),
    ({"sortBy": "name"}, "invalidValue"),
    ({"sortBy": 'emails[type eq "work"]'}, "invalidValue"),
    ({"sortBy": "\x00"}, "invalidValue"),
    ({"sortBy": "userName,displayName"}, "invalidValue"),
    ({"sortBy": "urn:example:x:y"}, "invalidValue"),
    ({"sortBy": "s" * 20_000}, "invalidValue"),
    ({"sortOrder": "up"}, "invalidValue"),
    ({"sortOrder": "asc"}, "invalidValue"),
    ({"sortOrder": "\x00"}, "invalidValue"),
    ({"filter": "\x00"}, "invalidFilter"),
]


@pytest.mark.parametrize(
    ("params", "scim_type"),
    [pytest.param(p, t, id=repr(p)[:40]) for p, t in BAD_LIST_PARAMS],
)
@pytest.mark.parametrize("path", ["/Users", "/Groups"])
def test_bad_list_parameters_are_400(server, path, params, scim_type):
    """Unusable paging and sorting parameters are 400 with the matching scimType."""
    if path == "/Groups" and params.get("sortBy") in ("groups", "password"):
        params = {"sortBy": "members"}
    response = search(server, "GET", path, **params)
    assert_error(response, 400, scim_type)
    assert_serving(server)


BAD_SEARCH_BODIES = [
    {"startIndex": "abc"},
    {"startIndex": [1]},
    {"startIndex": {}},
    {"startIndex": True},
    {"count": "x"},
    {"count": [1]},
    {"count": False},
    {"sortBy": 5},
    {"sortBy": ["userName"]},
    {"sortOrder": 5},
    {"sortOrder": ["ascending"]},
    {"attributes": 5},
    {"attributes": [1]},
    {"attributes": {"userName": True}},
    {"excludedAttributes": [None]},
]


@pytest.mark.parametrize(
    "body", [pytest.param(b, id=repr(b)) for b in BAD_SEARCH_BODIES]
)
@pytest.mark.parametrize("path", ["/Users/.search", "/Groups/.search", "/.search"])
def test_bad_search_request_fields_are_invalid_value(server, path, body):
    """SearchRequest fields of the wrong JSON type are 400 invalidValue."""
    assert_error(server.send("POST", path, body), 400, "invalidValue")
    assert_serving(server)


@pytest.mark.parametrize("path", ["/Users/.search", "/Groups/.search", "/.search"])
@pytest.mark.parametrize(
    ("raw", "scim_type"),
    [
        (b'{"startIndex": 1e400}', "invalidValue"),
        (b'{"count": -1e400}', "invalidValue"),
        (b'{"filter": 5}', "invalidFilter"),
        (b'{"filter": ["userName pr"]}', "invalidFilter"),
        (b'{"filter": {"op": "eq"}}', "invalidFilter"),
    ],
)
def test_search_numbers_out_of_range_are_400(server, path, raw, scim_type):
    """JSON numbers too large for an integer are refused, not a 500."""
    assert_error(server.send("POST", path, raw), 400, scim_type)
    assert_serving(server)


@pytest.mark.parametrize(
    ("params", "start", "per_page"),
    [
        ({"startIndex": "9" * 30}, 2**53, 0),
        ({"startIndex": "9223372036854775808"}, 2**53, 0),
        ({"startIndex": "-5"}, 1, 2),
        ({"startIndex": "0"}, 1, 2),
        ({"count": "9" * 30}, 1, 2),
        ({"count": "-5"}, 1, 0),
        ({"count": "0"}, 1, 0),
        ({"startIndex": "2", "count": "1"}, 2, 1),
        ({"startIndex": " 1 ", "count": " 1 "}, 1, 1),
        ({"startIndex": ""}, 1, 2),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_out_of_range_paging_is_clamped(server, method, params, start, per_page):
    """Huge, negative and zero startIndex/count are clamped (RFC 7644 §3.4.2.4)."""
    path = "/Users/.search" if method == "POST" else "/Users"
    response = search(server, method, path, **params)
    assert response.status_code == 200
    assert_clean(response)
    body = response.get_json()
    assert (body["startIndex"], body["itemsPerPage"], body["totalResults"]) == (
        start,
        per_page,
        2,
    )
    assert_serving(server)


def test_huge_start_index_on_cross_type_search_is_empty(server):
    """/.search pages past users and groups without overflowing."""
    response = server.send("POST", "/.search", {"startIndex": 10**30, "count": 10})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["totalResults"], body["itemsPerPage"]) == (3, 0)
    assert_serving(server)


@pytest.mark.parametrize(
    "params",
    [
        {"sortBy": ""},
        {"sortBy": "emails"},
        {"sortBy": "emails.value"},
        {"sortBy": "USERNAME", "sortOrder": "DESCENDING"},
        {"sortBy": f"{ENT}:manager"},
        {"sortBy": f"{CUSTOM}:badge"},
        {"sortBy": "meta.resourceType"},
        {"sortOrder": "descending"},
    ],
)
def test_odd_but_valid_sorting_is_accepted(server, params):
    """Sorting by multi-valued, complex or extension attributes runs."""
    response = search(server, "GET", "/Users", **params)
    assert response.status_code == 200
    assert_clean(response)
    assert response.get_json()["totalResults"] == 2
    assert_serving(server)


@pytest.mark.parametrize(
    ("params", "keys"),
    [
        ({"attributes": "nope"}, {"schemas", "id"}),
        ({"attributes": ",,,"}, None),
        ({"attributes": " , "}, None),
        ({"attributes": "userName;emails"}, {"schemas", "id"}),
        ({"attributes": "userName emails"}, {"schemas", "id"}),
        (
            {"attributes": "userName,,displayName"},
            {"schemas", "id", "userName", "displayName"},
        ),
        ({"attributes": "USERNAME"}, {"schemas", "id", "userName"}),
        ({"attributes": "\x00"}, {"schemas", "id"}),
        ({"attributes": "a," * 999}, {"schemas", "id"}),
        ({"attributes": "password"}, {"schemas", "id"}),
        ({"attributes": 'emails[type eq "work"]'}, {"schemas", "id"}),
        ({"attributes": "urn:example:x:y"}, {"schemas", "id"}),
        ({"excludedAttributes": "nope"}, None),
        ({"excludedAttributes": "id,schemas"}, None),
        ({"excludedAttributes": ";;"}, None),
        ({"excludedAttributes": "\x00"}, None),
    ],
)
@pytest.mark.parametrize("path", ["/Users", "/Users/{user}"])
def test_odd_projections_ignore_unknown_names(server, path, params, keys):
    """Unknown attribute names and odd separators are ignored, never an error."""
    if path == "/Users":
        params = {"filter": 'userName sw "bj"', **params}
    response = server.scim.client.get(
        f"/scim/v2{server.path(path)}",
        query_string=params,
        headers={"Authorization": f"Bearer {server.scim.secret}"},
    )
    assert response.status_code == 200
    assert_clean(response)
    body = response.get_json()
    resource = body["Resources"][0] if "Resources" in body else body
    full = {
        "schemas",
        "id",
        "meta",
        "userName",
        "displayName",
        "active",
        "emails",
        "groups",
    }
    assert set(resource) == (keys or full)
    assert_serving(server)


#
# PATCH: operations, paths and read-only targets
#

BAD_OPERATIONS = [
    ({}, "invalidSyntax"),
    ({"Operations": None}, "invalidSyntax"),
    ({"Operations": 5}, "invalidSyntax"),
    ({"Operations": "replace"}, "invalidSyntax"),
    ({"Operations": {"op": "replace"}}, "invalidSyntax"),
    ({"Operations": [5]}, "invalidSyntax"),
    ({"Operations": [None]}, "invalidSyntax"),
    ({"Operations": [[]]}, "invalidSyntax"),
    ({"Operations": ["replace"]}, "invalidSyntax"),
    ({"Operations": [{}]}, "invalidSyntax"),
    ({"Operations": [{"op": "move", "path": "title", "value": "x"}]}, "invalidSyntax"),
    ({"Operations": [{"op": "copy", "path": "title", "value": "x"}]}, "invalidSyntax"),
    ({"Operations": [{"op": "test", "path": "title", "value": "x"}]}, "invalidSyntax"),
    ({"Operations": [{"op": "", "path": "title", "value": "x"}]}, "invalidSyntax"),
    ({"Operations": [{"op": 5, "path": "title", "value": "x"}]}, "invalidSyntax"),
    ({"Operations": [{"op": None, "path": "title"}]}, "invalidSyntax"),
    ({"Operations": [{"op": ["add"], "path": "title"}]}, "invalidSyntax"),
    ({"Operations": [{"op": "add", "path": 5, "value": "x"}]}, "invalidPath"),
    ({"Operations": [{"op": "add", "path": ["title"], "value": "x"}]}, "invalidPath"),
    ({"Operations": [{"op": "add", "path": {}, "value": "x"}]}, "invalidPath"),
    ({"Operations": [{"op": "add", "path": "emails[", "value": "x"}]}, "invalidPath"),
    (
        {"Operations": [{"op": "add", "path": "emails[type eq]", "value": "x"}]},
        "invalidPath",
    ),
    ({"Operations": [{"op": "add", "path": "emails]", "value": "x"}]}, "invalidPath"),
    ({"Operations": [{"op": "add", "path": "..", "value": "x"}]}, "invalidPath"),
    ({"Operations": [{"op": "add", "path": "title.", "value": "x"}]}, "invalidPath"),
    ({"Operations": [{"op": "add", "path": "a b", "value": "x"}]}, "invalidPath"),
    ({"Operations": [{"op": "add", "path": "\x00", "value": "x"}]}, "invalidPath"),
    (
        {"Operations": [{"op": "add", "path": "t" * 10_001, "value": "x"}]},
        "invalidPath",
    ),
    (
        {"Operations": [{"op": "add", "path": "title[value eq 1]", "value": "x"}]},
        "invalidPath",
    ),
    (
        {"Operations": [{"op": "add", "path": "name[givenName eq 1]", "value": "x"}]},
        "invalidPath",
    ),
    (
        {
            "Operations": [
                {"op": "add", "path": 'emails[type eq "a"][type eq "b"]', "value": "x"}
            ]
        },
        "invalidPath",
    ),
    (
        {
            "Operations": [
                {"op": "add", "path": "emails[nope eq 1].value", "value": "x"}
            ]
        },
        "invalidPath",
    ),
    (
        {"Operations": [{"op": "remove", "path": "emails[primary gt true]"}]},
        "invalidPath",
    ),
    (
        {
            "Operations": [
                {
                    "op": "add",
                    "path": 'emails[type eq "x" or type eq "y"].value',
                    "value": "a",
                }
            ]
        },
        "noTarget",
    ),
    ({"Operations": [{"op": "remove"}]}, "noTarget"),
    ({"Operations": [{"op": "remove", "path": ""}]}, "noTarget"),
    ({"Operations": [{"op": "add", "path": "title"}]}, "invalidValue"),
    ({"Operations": [{"op": "replace"}]}, "invalidValue"),
    ({"Operations": [{"op": "add", "value": "not an object"}]}, "invalidValue"),
    ({"Operations": [{"op": "replace", "value": ["x"]}]}, "invalidValue"),
    ({"Operations": [{"op": "remove", "path": CORE}]}, "invalidPath"),
    ({"Operations": [{"op": "add", "path": "id", "value": "x"}]}, "mutability"),
    ({"Operations": [{"op": "replace", "path": "id", "value": "x"}]}, "mutability"),
    ({"Operations": [{"op": "remove", "path": "id"}]}, "mutability"),
    ({"Operations": [{"op": "replace", "path": "meta", "value": {}}]}, "mutability"),
    (
        {"Operations": [{"op": "replace", "path": "meta.created", "value": "2020"}]},
        "mutability",
    ),
    ({"Operations": [{"op": "remove", "path": "meta.version"}]}, "mutability"),
    (
        {"Operations": [{"op": "add", "path": "groups", "value": [{"value": "g"}]}]},
        "mutability",
    ),
    ({"Operations": [{"op": "remove", "path": "groups"}]}, "mutability"),
    (
        {
            "Operations": [
                {"op": "replace", "path": 'groups[value eq "g"].display', "value": "x"}
            ]
        },
        "mutability",
    ),
]


@pytest.mark.parametrize(
    ("body", "scim_type"),
    [pytest.param(b, t, id=repr(b)[:60]) for b, t in BAD_OPERATIONS],
)
def test_bad_patch_operations_are_400(server, body, scim_type):
    """Unknown ops, malformed paths and read-only targets are 400 with the RFC's scimType."""
    before = server.send("GET", "/Users/{user}").get_json()
    body = {"schemas": [PATCH_OP], **body}
    assert_error(server.send("PATCH", "/Users/{user}", body), 400, scim_type)
    assert server.send("GET", "/Users/{user}").get_json() == before
    assert_serving(server)


GROUP_BAD_OPERATIONS = [
    (
        {"Operations": [{"op": "move", "path": "displayName", "value": "x"}]},
        "invalidSyntax",
    ),
    ({"Operations": [{"op": "add", "path": "members[", "value": "x"}]}, "invalidPath"),
    (
        {
            "Operations": [
                {
                    "op": "add",
                    "path": 'members[value eq "x"]',
                    "value": [{"value": "x"}],
                }
            ]
        },
        "invalidPath",
    ),
    (
        {"Operations": [{"op": "add", "path": "members.value", "value": "x"}]},
        "invalidPath",
    ),
    ({"Operations": [{"op": "remove", "path": "members[nope eq 1]"}]}, "invalidPath"),
    (
        {"Operations": [{"op": "remove", "path": "members[value gt true] or"}]},
        "invalidPath",
    ),
    (
        {
            "Operations": [
                {"op": "replace", "path": "displayName[value eq 1]", "value": "x"}
            ]
        },
        "invalidPath",
    ),
    ({"Operations": [{"op": "replace", "path": "id", "value": "x"}]}, "mutability"),
    (
        {"Operations": [{"op": "replace", "path": "meta.lastModified", "value": "x"}]},
        "mutability",
    ),
    ({"Operations": [{"op": "remove"}]}, "noTarget"),
    ({"Operations": [{"op": "remove", "path": GROUP}]}, "invalidPath"),
]


@pytest.mark.parametrize(
    ("body", "scim_type"),
    [pytest.param(b, t, id=repr(b)[:60]) for b, t in GROUP_BAD_OPERATIONS],
)
def test_bad_group_patch_operations_are_400(server, body, scim_type):
    """Group PATCH errors are 400 with the RFC's scimType; members are kept."""
    body = {"schemas": [PATCH_OP], **body}
    assert_error(server.send("PATCH", "/Groups/{group}", body), 400, scim_type)
    group = server.send("GET", "/Groups/{group}").get_json()
    assert [m["value"] for m in group["members"]] == [server.user]
    assert_serving(server)


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "add", "path": "nope", "value": "x"},
        {"op": "replace", "path": "urn:example:x:y", "value": 1},
        {"op": "remove", "path": "name.nope"},
        {"op": "add", "path": "schemas", "value": ["x"]},
        {"op": "replace", "value": {"nope": 1, "id": "x", "meta": {}, "groups": []}},
        {"op": "add", "path": f"{CORE}:id", "value": "x"},
    ],
)
def test_unknown_patch_targets_are_ignored(server, operation):
    """Unknown attributes are skipped (Entra sends some) and the user stays as it was."""
    before = server.send("GET", "/Users/{user}").get_json()
    body = {"schemas": [PATCH_OP], "Operations": [operation]}
    response = server.send("PATCH", "/Users/{user}", body)
    assert response.status_code == 200
    assert_clean(response)
    assert response.get_json() == before
    assert_serving(server)


def test_operations_beyond_the_cap_are_refused(server):
    """500 operations apply; 501 are refused whole with invalidValue, nothing changed."""
    user = server.scim.create_user("ops@example.com", displayName="Before")
    operations = [
        {"op": "replace", "path": "displayName", "value": f"Name {i}"}
        for i in range(500)
    ]
    response = server.send("PATCH", f"/Users/{user['id']}", {"Operations": operations})
    assert response.status_code == 200
    assert response.get_json()["displayName"] == "Name 499"
    operations.append({"op": "replace", "path": "displayName", "value": "Too many"})
    refused = server.send("PATCH", f"/Users/{user['id']}", {"Operations": operations})
    assert refused.status_code == 400
    assert refused.get_json() == {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": "400",
        "scimType": "invalidValue",
        "detail": "A PATCH may carry at most 500 operations; this one has 501. "
        "Split it into several requests.",
    }
    assert (
        server.scim.get(f"/Users/{user['id']}").get_json()["displayName"] == "Name 499"
    )
    assert server.scim.delete(f"/Users/{user['id']}").status_code == 204
    assert_serving(server)


def test_multi_valued_arrays_are_capped(server):
    """1,000 roles are stored; 1,001 are refused with invalidValue, by POST and by PATCH."""
    roles = [f"role-{i}" for i in range(1000)]
    response = server.send(
        "POST", "/Users", {"userName": "roles@example.com", "roles": roles}
    )
    user = response.get_json()
    assert response.status_code == 201
    assert len(user["roles"]) == 1000
    too_many = server.send(
        "POST", "/Users", {"userName": "roles2@example.com", "roles": [*roles, "x"]}
    )
    assert too_many.status_code == 400
    assert (
        too_many.get_json()["detail"]
        == "roles has 1001 values; at most 1000 are stored."
    )
    body = {"Operations": [{"op": "add", "path": "roles", "value": ["extra"]}]}
    patched = server.send("PATCH", f"/Users/{user['id']}", body)
    assert patched.status_code == 400
    assert patched.get_json()["scimType"] == "invalidValue"
    assert len(server.scim.get(f"/Users/{user['id']}").get_json()["roles"]) == 1000
    assert server.scim.delete(f"/Users/{user['id']}").status_code == 204
    assert_serving(server)


@pytest.fixture
def crowd(server):
    """Two thousand users stored directly for membership PATCHes, then purged."""
    rows = [
        {
            "scim_id": f"crowd-{i:04d}",
            "user_name": f"crowd{i}@example.com",
            "data": "{}",
        }
        for i in range(2000)
    ]
    with server.app.app_context(), database.connection_context():
        for start in range(0, len(rows), 500):
            User.insert_many(rows[start : start + 500]).execute()
    yield [row["scim_id"] for row in rows]
    with server.app.app_context(), database.connection_context():
        User.delete().where(User.scim_id.startswith("crowd-")).execute()


def test_members_patch_with_two_thousand_ids(server, crowd):
    """One operation adding 2,000 members, then removing them, is quick."""
    group = server.scim.create_group("Crowd")["id"]
    add = {
        "Operations": [
            {"op": "add", "path": "members", "value": [{"value": i} for i in crowd]}
        ]
    }
    assert server.send("PATCH", f"/Groups/{group}", add).status_code == 204
    listed = server.send("GET", f"/Groups/{group}").get_json()["members"]
    assert len(listed) == 2000
    remove = {
        "Operations": [
            {"op": "remove", "path": "members", "value": [{"value": i} for i in crowd]}
        ]
    }
    assert server.send("PATCH", f"/Groups/{group}", remove).status_code == 204
    projected = server.send("GET", f"/Groups/{group}?attributes=members").get_json()
    assert projected["members"] == []
    assert server.scim.delete(f"/Groups/{group}").status_code == 204
    assert_serving(server)


def test_hundreds_of_one_member_operations(server, crowd):
    """Entra-style one-member operations, 450 in one request, apply in order."""
    group = server.scim.create_group("One By One")["id"]
    operations = [
        {"op": "add", "path": "members", "value": [{"value": i}]} for i in crowd[:300]
    ]
    operations += [
        {"op": "remove", "path": f'members[value eq "{i}"]'} for i in crowd[:150]
    ]
    response = server.send("PATCH", f"/Groups/{group}", {"Operations": operations})
    assert response.status_code == 204
    listed = server.send("GET", f"/Groups/{group}").get_json()["members"]
    assert [m["value"] for m in listed] == crowd[150:300]
    assert server.scim.delete(f"/Groups/{group}").status_code == 204
    assert_serving(server)


def test_members_patch_with_unknown_and_odd_ids(server):
    """Unknown, huge or odd member ids are skipped, never an error."""
    odd = [
        "x" * 100_000,
        "' OR 1=1 --",
        "\u2603",
        "..%2F..%2Fetc",
        server.group,
        "a\x01b",
    ]
    body = {
        "Operations": [
            {"op": "add", "path": "members", "value": [{"value": i} for i in odd]}
        ]
    }
    assert server.send("PATCH", "/Groups/{group}", body).status_code == 204
    group = server.send("GET", "/Groups/{group}").get_json()
    assert [m["value"] for m in group["members"]] == [server.user]
    assert_serving(server)


#
# Odd ids in URLs
#

ODD_IDS = [
    "x" * 300,
    "x" * 5000,
    "..%2F..%2Fetc",
    "..%2f..%2fetc%2fpasswd",
    "a%2Fb",
    "%E2%98%83",
    "\u2603",
    "%00",
    "a%00b",
    "%FF",
    "%ED%A0%80",
    "%C0%AE%C0%AE",
    "'%20OR%201=1%20--",
    "%22%3B%20DROP%20TABLE%20user%3B%20--",
    "%20",
    "..",
    "%2e%2e",
    "%25",
    "null",
    "-1",
    "9" * 30,
    ".search",
]


@pytest.mark.parametrize("odd", [pytest.param(i, id=i[:30]) for i in ODD_IDS])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/Users/", None),
        ("PUT", "/Users/", {"userName": "odd@example.com"}),
        ("PATCH", "/Users/", {"Operations": []}),
        ("DELETE", "/Users/", None),
        ("GET", "/Groups/", None),
        ("PUT", "/Groups/", {"displayName": "Odd"}),
        ("PATCH", "/Groups/", {"Operations": []}),
        ("DELETE", "/Groups/", None),
    ],
)
def test_odd_ids_are_404(server, method, path, body, odd):
    """Ids that match nothing, however odd, are a SCIM 404."""
    assert_error(server.send(method, path + odd, body), 404)
    assert_serving(server)


#
# Methods
#

METHODS = [
    (
        "/Users",
        ["PUT", "PATCH", "DELETE", "TRACE", "PROPFIND", "FOO"],
        {"GET", "HEAD", "OPTIONS", "POST"},
    ),
    (
        "/Users/{user}",
        ["POST", "TRACE"],
        {"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"},
    ),
    (
        "/Groups",
        ["PUT", "PATCH", "DELETE", "TRACE"],
        {"GET", "HEAD", "OPTIONS", "POST"},
    ),
    (
        "/Groups/{group}",
        ["POST", "TRACE"],
        {"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"},
    ),
    ("/.search", ["GET", "PUT", "PATCH", "DELETE", "HEAD"], {"POST", "OPTIONS"}),
    ("/Bulk", ["GET", "PUT", "PATCH", "DELETE", "HEAD"], {"POST", "OPTIONS"}),
    (
        "/Me",
        ["TRACE", "CONNECT"],
        {"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"},
    ),
    (
        "/ServiceProviderConfig",
        ["POST", "PUT", "PATCH", "DELETE"],
        {"GET", "HEAD", "OPTIONS"},
    ),
    ("/Schemas", ["POST", "PUT", "PATCH", "DELETE"], {"GET", "HEAD", "OPTIONS"}),
    (
        f"/Schemas/{CORE}",
        ["POST", "PUT", "PATCH", "DELETE"],
        {"GET", "HEAD", "OPTIONS"},
    ),
    ("/ResourceTypes", ["POST", "PUT", "PATCH", "DELETE"], {"GET", "HEAD", "OPTIONS"}),
    (
        "/ResourceTypes/User",
        ["POST", "PUT", "PATCH", "DELETE"],
        {"GET", "HEAD", "OPTIONS"},
    ),
]


@pytest.mark.parametrize(
    ("path", "method", "allowed"),
    [
        pytest.param(path, method, allowed, id=f"{method} {path[:30]}")
        for path, methods, allowed in METHODS
        for method in methods
    ],
)
def test_wrong_method_is_405_with_allow(server, path, method, allowed):
    """A method the endpoint lacks is a SCIM 405 that lists the allowed ones."""
    body = {} if method in ("POST", "PUT", "PATCH") else None
    response = server.send(method, path, body)
    if method == "HEAD":
        assert response.status_code == 405
        assert response.get_data() == b""
        assert_clean(response)
    else:
        assert_error(response, 405)
    assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed
    assert_serving(server)


@pytest.mark.parametrize(
    "path",
    ["/Users", "/Users/{user}", "/Groups", "/Groups/{group}", "/ServiceProviderConfig"],
)
def test_head_is_200_without_a_body(server, path):
    """HEAD answers like GET, without the body."""
    response = server.send("HEAD", path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == SCIM
    assert response.get_data() == b""
    if "{" in path:
        assert response.headers["ETag"] == server.send("GET", path).headers["ETag"]
    assert_serving(server)


@pytest.mark.parametrize(
    "path",
    [
        "/Users",
        "/Users/{user}",
        "/Groups",
        "/Groups/{group}",
        "/.search",
        "/Bulk",
        "/Me",
        "/Schemas",
    ],
)
def test_options_is_answered(server, path):
    """OPTIONS gets a non-5xx answer listing the methods."""
    response = server.send("OPTIONS", path)
    assert response.status_code == 200
    assert_clean(response)
    assert "OPTIONS" in response.headers["Allow"]
    assert_serving(server)
