"""A large group's members are streamed: the same bytes, read in chunks from one snapshot."""

import json
import socket
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest
from peewee import Value
from playhouse.test_utils import count_queries

from mdm import activity
from mdm.db import database
from mdm.models import Group
from mdm.models import Membership
from mdm.models import User
from mdm.models import mirror_user
from mdm.models import utcnow
from mdm.scim import groups

from . import served
from .conftest import ScimClient
from .conftest import directory_statements
from .conftest import issue_token
from .test_admin_browse import add_users
from .test_admin_browse import column
from .test_admin_browse import page
from .test_admin_browse import text

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def seed(app, size, name="Big", display=True):
    """Create a group of ``size`` new users directly in the database; return its SCIM id."""
    with app.app_context(), database.connection_context():
        group = Group.create(display_name=name)
        users = []
        for i in range(size):
            user = User()
            data = {"userName": f"{name}-{i}@example.com", "active": True}
            # Every seventh user has no displayName: its member has no display.
            if display and i % 7:
                data["displayName"] = f"{name} user {i}"
            mirror_user(user, data)
            users.append(user)
        User.bulk_create(users, batch_size=500)
        prefix = f"{name}-"
        Membership.insert_from(
            User.select(Value(group.id), User.id)
            .where(User.user_name.startswith(prefix))
            .order_by(User.id.desc()),  # members in another order than the users
            [Membership.group, Membership.user],
        ).execute()
        return group.scim_id


class WholeClient(ScimClient):
    """Read each answer to its end, so a streamed one is closed before the next request."""

    def request(self, *args, **kwargs):
        return super().request(*args, buffered=True, **kwargs)


@pytest.fixture
def scim(app, client):
    _, secret = issue_token(app, "entra")
    return WholeClient(client, secret)


def streamed(response):
    """Tell whether a response was streamed: it went out without a Content-Length."""
    return "Content-Length" not in response.headers


@pytest.fixture
def small_chunks(monkeypatch):
    """Stream groups of more than two members, two at a time."""
    monkeypatch.setattr(groups, "MEMBER_CHUNK", 2)


def whole(scim, path, **kwargs):
    """GET ``path`` answered in one piece (chunks larger than any test group)."""
    saved = groups.MEMBER_CHUNK
    groups.MEMBER_CHUNK = 10**9
    try:
        response = scim.get(path, **kwargs)
        assert not streamed(response)
        return response
    finally:
        groups.MEMBER_CHUNK = saved


def entries(**where):
    activity.writer.flush()
    with activity.activity_db.connection_context():
        query = activity.ActivityEntry.select().order_by(activity.ActivityEntry.id)
        return [e for e in query if all(getattr(e, k) == v for k, v in where.items())]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?attributes=members",
        "?attributes=displayName,members",
        "?excludedAttributes=meta",
        "?excludedAttributes=externalId,displayName",
    ],
)
def test_streamed_body_is_the_whole_body(app, scim, small_chunks, query):
    group_id = seed(app, 9)
    scim.patch(
        f"/Groups/{group_id}",
        {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "add", "path": "externalId", "value": "ext-\u00e9"}],
        },
    )
    path = f"/Groups/{group_id}{query}"
    response = scim.get(path)
    assert response.status_code == 200 and streamed(response)
    expected = whole(scim, path)
    assert response.get_data() == expected.get_data()
    for header in ("ETag", "Content-Type", "Location"):
        assert response.headers.get(header) == expected.headers.get(header)
    members = json.loads(response.get_data())["members"]
    assert len(members) == 9
    assert sum("display" not in member for member in members) == 2


@pytest.mark.parametrize(
    "query",
    ["", "?attributes=members", "?excludedAttributes=meta", "?sortBy=displayName"],
)
def test_a_listed_page_with_many_members_is_streamed(app, scim, small_chunks, query):
    for size in (3, 0, 1, 5):
        seed(app, size, name=f"G{size}")
    response = scim.get(f"/Groups{query}")
    assert response.status_code == 200 and streamed(response)
    assert response.get_data() == whole(scim, f"/Groups{query}").get_data()
    body = response.get_json()
    assert body["totalResults"] == 4
    assert sorted(len(r["members"]) for r in body["Resources"]) == [0, 1, 3, 5]
    search = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": 'displayName sw "G"',
    }
    found = scim.post("/Groups/.search", search)
    assert found.status_code == 200 and streamed(found)
    assert found.get_data() == whole(scim, "/Groups", query_string=None).get_data()


def test_a_listed_page_with_few_members_is_sent_whole(app, scim, small_chunks):
    seed(app, 1, name="One")
    seed(app, 1, name="Two")
    response = scim.get("/Groups?excludedAttributes=meta")
    assert response.status_code == 200 and not streamed(response)
    assert [len(r["members"]) for r in response.get_json()["Resources"]] == [1, 1]


def test_a_streamed_list_is_logged_without_its_body(app, scim, small_chunks):
    seed(app, 5)
    response = scim.get("/Groups?count=10")
    assert streamed(response) and len(response.get_json()["Resources"]) == 1
    [entry] = entries(method="GET", path="/scim/v2/Groups")
    assert entry.status == 200 and entry.summary == "listed 1 of 1; members streamed"
    assert entry.response_body is None


def test_empty_and_chunk_sized_groups(app, scim, small_chunks):
    for size in (0, 1, 2, 4):
        group_id = seed(app, size, name=f"G{size}")
        path = f"/Groups/{group_id}"
        response = scim.get(path)
        assert streamed(response) == (size >= 2)
        assert response.get_data() == whole(scim, path).get_data()
        assert len(response.get_json()["members"]) == size


def test_created_and_replaced_groups_stream_the_same_body(app, scim, small_chunks):
    ids = [scim.create_user(f"u{i}@example.com")["id"] for i in range(5)]
    created = scim.create_group("Made", ids)
    response = scim.put(
        f"/Groups/{created['id']}",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Made",
            "members": [{"value": i} for i in reversed(ids)],
        },
    )
    assert response.status_code == 200 and streamed(response)
    body = response.get_data()
    assert body == whole(scim, f"/Groups/{created['id']}").get_data()
    assert [m["value"] for m in json.loads(body)["members"]] == ids[::-1]


def test_excluded_members_are_not_read(app, scim, small_chunks):
    group_id = seed(app, 5)
    scim.get("/Users?count=0")  # the token's first use is recorded once
    activity.writer.flush()
    with count_queries() as counted:
        response = scim.get(f"/Groups/{group_id}?excludedAttributes=members")
    assert response.status_code == 200 and not streamed(response)
    body = response.get_json()
    assert "members" not in body and body["displayName"] == "Big"
    # token, group: no member is read
    assert len(directory_statements(counted)) == 2, counted.get_queries()


def _picked(*names):
    return lambda member: {k: v for k, v in member.items() if k in names} or None


def _dropped(*names):
    return lambda member: {k: v for k, v in member.items() if k not in names}


@pytest.mark.parametrize(
    ("query", "shape"),
    [
        ("?attributes=members.value", _picked("value")),
        ("?attributes=members.display", _picked("display")),
        ("?attributes=members.display,members.value", _picked("display", "value")),
        (
            "?attributes=displayName,members.type,members.value",
            _picked("type", "value"),
        ),
        ("?attributes=members.value,members", _dropped()),
        ("?excludedAttributes=members.$ref", _dropped("$ref")),
        (
            "?excludedAttributes=meta,members.display,members.type",
            _dropped("display", "type"),
        ),
    ],
)
def test_a_projection_of_member_parts_is_streamed(
    app, scim, small_chunks, query, shape
):
    """Members' parts are shaped as each chunk is sent, to the bytes sent whole."""
    group_id = seed(app, 9)
    path = f"/Groups/{group_id}{query}"
    response = scim.get(path)
    assert response.status_code == 200 and streamed(response)
    assert response.get_data() == whole(scim, path).get_data()
    full = whole(scim, f"/Groups/{group_id}").get_json()["members"]
    assert len(full) == 9 and sum("display" in m for m in full) == 7
    expected = [shaped for shaped in map(shape, full) if shaped is not None]
    members = response.get_json()["members"]
    assert members == expected
    # Each member keeps its own order of parts, whatever order they were named in.
    order = ["value", "$ref", "display", "type"]
    for member in members:
        assert list(member) == [k for k in order if k in member]
    listed = scim.get(f"/Groups{query}")
    assert streamed(listed)
    assert listed.get_json()["Resources"][0]["members"] == expected


def test_parts_of_values_keep_every_value_and_their_own_order(app, scim):
    """emails.type,emails.value keeps both from every email, also one without a type."""
    user = scim.create_user(
        "parts@example.com",
        emails=[
            {"value": "a@example.com", "type": "work", "primary": True},
            {"value": "b@example.com"},
            {"type": "home", "display": "no value"},
        ],
    )
    body = scim.get(
        f"/Users/{user['id']}?attributes=emails.type,emails.value,name.familyName"
    ).get_json()
    assert body["emails"] == [
        {"value": "a@example.com", "type": "work"},
        {"value": "b@example.com"},
        {"type": "home"},
    ]
    assert list(body["emails"][0]) == ["value", "type"]
    assert "name" not in body  # no familyName stored: nothing to show
    both = scim.get(f"/Users/{user['id']}?attributes=emails.value,emails").get_json()
    assert both["emails"] == scim.get(f"/Users/{user['id']}").get_json()["emails"]


def test_if_none_match_and_head(app, scim, small_chunks):
    group_id = seed(app, 5)
    response = scim.get(f"/Groups/{group_id}")
    etag = response.headers["ETag"]
    unchanged = scim.get(f"/Groups/{group_id}", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.get_data() == b""
    assert unchanged.headers["ETag"] == etag
    head = scim.request("HEAD", f"/Groups/{group_id}")
    assert head.status_code == 200 and head.get_data() == b""
    assert head.headers["ETag"] == etag
    # The connection is back: a write and a read still go through.
    assert scim.delete(f"/Groups/{group_id}").status_code == 204
    assert scim.get(f"/Groups/{group_id}").status_code == 404


def test_a_streamed_get_is_logged_without_its_body(app, scim, small_chunks):
    group_id = seed(app, 5)
    response = scim.get(f"/Groups/{group_id}")
    assert streamed(response) and len(response.get_json()["members"]) == 5
    [entry] = entries(method="GET", path=f"/scim/v2/Groups/{group_id}")
    assert entry.status == 200
    assert entry.summary == "members streamed"
    assert entry.target == "Big"
    assert entry.response_body is None


def test_a_patch_with_a_projection_keeps_its_summary(app, scim, small_chunks):
    group_id = seed(app, 5)
    user = scim.create_user("late@example.com")
    response = scim.patch(
        f"/Groups/{group_id}?attributes=members",
        {
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "add", "path": "members", "value": [{"value": user["id"]}]}
            ],
        },
    )
    assert response.status_code == 200 and streamed(response)
    assert response.get_json()["members"][-1]["value"] == user["id"]
    [entry] = entries(method="PATCH")
    assert entry.summary == "members +1/\u22120; members streamed"


def test_member_patch_costs_the_same_at_any_size(app, scim):
    small, large = seed(app, 10, name="Small"), seed(app, 3000, name="Large")
    scim.get("/Users?count=0")
    newcomers = [scim.create_user(f"n{i}@example.com")["id"] for i in range(4)]
    statements = []
    for group_id in (small, large):
        for op, user_id in (("add", newcomers[0]), ("remove", newcomers[0])):
            activity.writer.flush()
            with count_queries() as counted:
                response = scim.patch(
                    f"/Groups/{group_id}",
                    {
                        "schemas": [PATCH_OP],
                        "Operations": [
                            {"op": op, "path": "members", "value": [{"value": user_id}]}
                        ],
                    },
                )
            assert response.status_code == 204
            statements.append(directory_statements(counted))
    # The same statements, whatever the group's size: nothing counts or reads members.
    assert statements[:2] == statements[2:], statements
    with app.app_context(), database.connection_context():
        sizes = [
            Membership.select().join(Group).where(Group.scim_id == group_id).count()
            for group_id in (small, large)
        ]
    assert sizes == [10, 3000]


#
# The served stack
#


@pytest.fixture
def server(app, tmp_path):
    """Serve the test database with ``mdm serve``; yield (port, token secret)."""
    _, secret = issue_token(app, "okta")
    env = served.environment(tmp_path, THREADS=2)
    process, port = served.start(env, tmp_path / "serve.log", threads=2)
    try:
        yield port, secret
    finally:
        assert served.stop(process) == 0


def test_served_get_of_a_large_group_has_every_member(app, server):
    group_id = seed(app, 4000)
    port, secret = server
    auth = {"Authorization": f"Bearer {secret}"}
    response, raw = served.request(
        port, "GET", f"/scim/v2/Groups/{group_id}", headers=auth
    )
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/scim+json"
    assert response.getheader("ETag")
    body = json.loads(raw)
    with app.app_context(), database.connection_context():
        expected = [
            user_id
            for (user_id,) in Membership.select(User.scim_id)
            .join(User)
            .join_from(Membership, Group)
            .where(Group.scim_id == group_id)
            .order_by(Membership.id)
            .tuples()
        ]
    assert len(expected) == 4000
    assert [m["value"] for m in body["members"]] == expected
    projected, raw = served.request(
        port,
        "GET",
        f"/scim/v2/Groups/{group_id}?attributes=members.value",
        headers=auth,
    )
    assert projected.status == 200 and projected.getheader("Content-Length") is None
    assert json.loads(raw)["members"] == [{"value": user_id} for user_id in expected]
    unchanged, raw = served.request(
        port,
        "GET",
        f"/scim/v2/Groups/{group_id}",
        headers={**auth, "If-None-Match": response.getheader("ETag")},
    )
    assert unchanged.status == 304 and raw == b""


def test_a_client_that_leaves_mid_stream_frees_its_connection(app, server):
    group_id = seed(app, 4000)
    port, secret = server
    request = (
        f"GET /scim/v2/Groups/{group_id} HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {secret}\r\n\r\n"
    ).encode()
    # More departures than the server has threads and connections to spare.
    for _ in range(6):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(request)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    auth = {"Authorization": f"Bearer {secret}"}
    user = served.request(
        port,
        "POST",
        "/scim/v2/Users",
        {"userName": "after@example.com"},
        headers={**auth, "Content-Type": "application/scim+json"},
    )
    assert user[0].status == 201
    response, raw = served.request(
        port, "GET", f"/scim/v2/Groups/{group_id}", headers=auth
    )
    assert response.status == 200 and len(json.loads(raw)["members"]) == 4000


#
# The console's group page
#


@pytest.fixture
def small_cap(monkeypatch):
    """Count members exactly up to 60; past that, page by keyset."""
    from mdm.console import directory

    monkeypatch.setattr(directory, "MEMBER_COUNT_CAP", 60)


def test_console_group_page_counts_up_to_the_cap(app, console, scim, small_cap):
    group = scim.create_group("Sixty")
    add_users(app, 60, group=group["id"])
    add_users(app, 3, prefix="gone", group=group["id"], deprovisioned_at=utcnow())
    soup = page(console.get(f"/admin/groups/{group['id']}"))
    nav = soup.main.find("nav", class_="pager")
    assert text(nav).startswith("1–50 of 60 members")
    assert column(soup, "Username") == [f"bulk{i:03d}" for i in range(50)]


def test_console_large_group_pages_by_key(app, console, scim, small_cap):
    group = scim.create_group("Many")
    # Users in the group and out of it, interleaved by name, and one gone.
    add_users(app, 130, group=group["id"])
    add_users(app, 40, prefix="bulk-out")
    add_users(app, 1, prefix="bulk-gone", group=group["id"], deprovisioned_at=utcnow())
    url = f"/admin/groups/{group['id']}"
    names = [f"bulk{i:03d}" for i in range(130)]
    seen = []
    soup = page(console.get(url))
    nav = soup.main.find("nav", class_="pager")
    assert text(nav).startswith("More than 60 members")
    assert nav.find("a", string="First") is None
    while True:
        seen += column(soup, "Username")
        nav = soup.main.find("nav", class_="pager")
        following = nav.find("a", rel="next")
        if following is None:
            break
        soup = page(console.get(following["href"]))
    assert seen == names
    assert [len(seen[i : i + 50]) for i in (0, 50, 100)] == [50, 50, 30]

    # A search keeps its term on every page; a bad key starts again.
    soup = page(console.get(url, query_string={"q": "bulk1", "after": "x"}))
    assert column(soup, "Username") == [f"bulk{i:03d}" for i in range(100, 130)]
    soup = page(console.get(url, query_string={"q": "bulk0"}))
    following = soup.main.find("nav", class_="pager").find("a", rel="next")
    args = parse_qs(urlsplit(following["href"]).query)
    assert args["q"] == ["bulk0"]
    soup = page(console.get(following["href"]))
    assert column(soup, "Username") == [f"bulk{i:03d}" for i in range(50, 100)]
