"""Admin console browsing: users, user pages, purging, groups and custom attributes."""

from datetime import timedelta
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup

from mdm.db import database
from mdm.models import CustomAttribute
from mdm.models import Group
from mdm.models import Membership
from mdm.models import User
from mdm.models import mirror_user
from mdm.models import utcnow

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CUSTOM = "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User"
USER_HEADERS = [
    "Display name",
    "Username",
    "Email",
    "Source",
    "Status",
    "Groups",
    "Last updated",
]
GROUP_HEADERS = ["Name", "Source", "Members", "externalId", "Last updated"]


@pytest.fixture
def people(scim, okta):
    """Users from Entra ID and Okta in every status, and groups with members."""
    alice = scim.create_user(
        "alice@example.com",
        externalId="ext-alice",
        displayName="Alice Anders",
        name={"givenName": "Alice", "familyName": "Anders"},
        emails=[{"value": "alice@corp.example", "type": "work", "primary": True}],
    )
    bob = okta.create_user(
        "bob@example.com",
        externalId="ext-bob",
        displayName="Bob Brown",
        emails=[{"value": "bob@okta.example", "primary": True}],
    )
    carol = scim.create_user(
        "carol@example.com",
        externalId="ext-carol",
        displayName="Carol Clark",
        active=False,
        emails=[{"value": "carol@corp.example", "primary": True}],
    )
    dave = scim.create_user("dave@example.com", displayName="Dave Dunn")
    engineering = scim.create_group(
        "Engineering",
        members=[alice["id"], carol["id"], dave["id"]],
        externalId="grp-eng",
    )
    sales = okta.create_group("Sales", members=[bob["id"]], externalId="grp-sales")
    scim.create_group("Empty")
    assert scim.delete(f"/Users/{dave['id']}").status_code == 204
    return {
        "alice": alice,
        "bob": bob,
        "carol": carol,
        "dave": dave,
        "engineering": engineering,
        "sales": sales,
    }


def page(response):
    """Parse an HTML response."""
    assert response.status_code == 200, response.status_code
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def text(node):
    """Return a node's text with whitespace collapsed."""
    return " ".join(node.get_text().split())


def table(soup):
    """Return (headers, rows) of the page's table; each row maps header to cell."""
    found = soup.main.find("table")
    if found is None:
        return [], []
    headers = [text(th).rstrip(" ▲▼") for th in found.select("thead th")]
    rows = [
        dict(zip(headers, tr.find_all("td"), strict=True))
        for tr in found.select("tbody tr")
    ]
    return headers, rows


def column(soup, header):
    """Return the text of one column of the page's table."""
    return [text(row[header]) for row in table(soup)[1]]


def flashes(soup):
    """Return the flashed messages on a page."""
    return [text(f) for f in soup.select("div.flash")]


def definitions(soup, section=None):
    """Return {dt: dd} of the first definition list in ``section`` (or the page)."""
    scope = section or soup.main
    grid = scope.find("dl")
    return dict(
        zip(
            grid.find_all("dt", recursive=False),
            grid.find_all("dd", recursive=False),
            strict=True,
        )
    )


def card(soup, heading):
    """Return the card whose heading reads ``heading``."""
    title = soup.main.find("h2", string=heading)
    assert title is not None, f"no card {heading!r}"
    return title.find_parent("section")


def add_users(app, count, prefix="bulk", source="entra", group=None, **extra):
    """Create users straight in the database (fast), optionally in ``group``."""
    with app.app_context(), database.connection_context(), database.atomic():
        group_row = Group.get(Group.scim_id == group) if group else None
        for i in range(count):
            name = f"{prefix}{i:03d}"
            user = User(source=source, **extra)
            mirror_user(
                user,
                {
                    "schemas": [CORE],
                    "userName": name,
                    "displayName": f"{prefix.title()} {i:03d}",
                    "emails": [{"value": f"{name}@example.com", "primary": True}],
                },
            )
            user.save()
            if group_row is not None:
                Membership.create(group=group_row, user=user)


def usernames(console, url):
    """Return the Username column of a users page."""
    return column(page(console.get(url)), "Username")


#
# Users list
#


def test_users_empty_state(console):
    """Without users the page says so and points at User Provisioning."""
    soup = page(console.get("/admin/users"))
    empty = soup.main.find("p", class_="empty")
    assert text(empty).startswith("No users yet")
    assert empty.find("a")["href"] == "/admin/provisioning/entra"
    assert soup.main.find("table") is None


def test_users_table(console, people):
    """The table shows name, username, email, source, status, groups and update time."""
    soup = page(console.get("/admin/users"))
    headers, rows = table(soup)
    assert headers == USER_HEADERS
    by_name = {text(r["Username"]): r for r in rows}
    assert list(by_name) == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
    ]
    alice = by_name["alice@example.com"]
    link = alice["Display name"].find("a")
    assert text(link) == "Alice Anders"
    assert link["href"] == f"/admin/users/{people['alice']['id']}"
    assert text(alice["Email"]) == "alice@corp.example"
    assert text(alice["Source"]) == "SCIM Entra ID"
    assert text(by_name["bob@example.com"]["Source"]) == "SCIM Okta"
    statuses = {name: text(row["Status"]) for name, row in by_name.items()}
    assert statuses == {
        "alice@example.com": "Active",
        "bob@example.com": "Active",
        "carol@example.com": "Disabled",
        "dave@example.com": "Deprovisioned",
    }
    groups = alice["Groups"].find_all("a")
    assert [(text(a), a["href"]) for a in groups] == [
        ("Engineering", f"/admin/groups/{people['engineering']['id']}")
    ]
    assert [text(a) for a in by_name["bob@example.com"]["Groups"].find_all("a")] == [
        "Sales"
    ]
    assert text(by_name["dave@example.com"]["Email"]) == "—"
    updated = alice["Last updated"].find("time")
    assert updated is not None and updated["datetime"].endswith("Z")
    assert text(updated)[:4].isdigit()


def test_users_filter_form(console, people):
    """The filter form offers search, source, status and group, all sent by GET."""
    soup = page(console.get("/admin/users"))
    form = soup.main.find("form", role="search")
    assert form["method"].lower() == "get"
    labels = {
        text(label): form.find(id=label["for"]) for label in form.find_all("label")
    }
    assert set(labels) == {"Search", "Source", "Status", "Group", "SCIM filter"}
    options = {
        name: [text(o) for o in control.find_all("option")]
        for name, control in labels.items()
        if control.name == "select"
    }
    assert options["Source"] == [
        "All sources",
        "SCIM Entra ID",
        "SCIM Okta",
        "Generic SCIM",
    ]
    assert options["Status"] == ["All statuses", "Active", "Disabled", "Deprovisioned"]
    assert options["Group"] == ["All groups", "Empty", "Engineering", "Sales"]


@pytest.mark.parametrize(
    "query",
    [
        "Anders",
        "alice anders",
        "ALICE@EXAMPLE",
        "corp.example",
        "ext-alice",
        "Alice",
    ],
)
def test_search_users(console, people, query):
    """Search matches display name, username, email or externalId."""
    expected = ["alice@example.com"]
    if query == "corp.example":
        expected = ["alice@example.com", "carol@example.com"]
    soup = page(console.get("/admin/users", query_string={"q": query}))
    assert column(soup, "Username") == expected
    assert soup.main.find("input", id="q")["value"] == query


def test_search_without_match(console, people):
    """A search that matches nothing says so."""
    soup = page(console.get("/admin/users?q=zzz"))
    assert soup.main.find("table") is None
    assert text(soup.main.find("p", class_="empty")) == "No users match these filters."
    clear = soup.main.find("a", string="Clear")
    assert clear["href"] == "/admin/users"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("50%", ["half"]),
        ("%", ["half"]),
        ("a_b", ["underscore"]),
        ("_", ["underscore"]),
        ("\\", ["backslash"]),
    ],
)
def test_search_treats_wildcards_literally(console, scim, query, expected):
    """% and _ in a search match themselves, not any text."""
    scim.create_user("half", displayName="50% off")
    scim.create_user("fifty", displayName="500 off")
    scim.create_user("underscore", displayName="a_b")
    scim.create_user("axb", displayName="axb")
    scim.create_user("backslash", displayName="back\\slash")
    assert usernames(console, f"/admin/users?q={query.replace('%', '%25')}") == (
        expected
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("source=okta", ["bob@example.com"]),
        (
            "source=entra",
            ["alice@example.com", "carol@example.com", "dave@example.com"],
        ),
        ("source=generic", []),
        ("status=active", ["alice@example.com", "bob@example.com"]),
        ("status=disabled", ["carol@example.com"]),
        ("status=deprovisioned", ["dave@example.com"]),
        ("source=entra&status=active", ["alice@example.com"]),
        ("q=example.com&status=disabled", ["carol@example.com"]),
    ],
)
def test_filter_users(console, people, args, expected):
    """Source and status filters narrow the list and stay selected."""
    soup = page(console.get(f"/admin/users?{args}"))
    assert column(soup, "Username") == expected
    for key, value in parse_qs(args).items():
        if key == "q":
            continue
        selected = soup.main.find("select", id=key).find("option", selected=True)
        assert selected["value"] == value[0]


def test_filter_users_by_group(console, people):
    """The group filter lists that group's members, whatever their status."""
    engineering = people["engineering"]["id"]
    soup = page(console.get(f"/admin/users?group={engineering}"))
    assert column(soup, "Username") == [
        "alice@example.com",
        "carol@example.com",
        "dave@example.com",
    ]
    selected = soup.main.find("select", id="group").find("option", selected=True)
    assert text(selected) == "Engineering"
    soup = page(console.get(f"/admin/users?group={engineering}&status=active"))
    assert column(soup, "Username") == ["alice@example.com"]
    assert column(
        page(console.get(f"/admin/users?group={people['sales']['id']}")), "Username"
    ) == ["bob@example.com"]


def test_filter_by_unknown_group_matches_nobody(console, people):
    """A group filter naming no group lists no users rather than everyone."""
    soup = page(console.get("/admin/users?group=no-such-group"))
    assert column(soup, "Username") == []
    assert text(soup.main.find("p", class_="empty")) == "No users match these filters."


@pytest.fixture
def sortable(scim, okta):
    """Four users whose columns each sort in a different order."""
    rows = [
        (scim, "delta", "Bravo", "charlie@x.example"),
        (okta, "alpha", "Delta", "bravo@x.example"),
        (scim, "charlie", "Alpha", "delta@x.example"),
        (okta, "bravo", "Charlie", "alpha@x.example"),
    ]
    for client, user_name, display, email in rows:
        client.create_user(
            user_name, displayName=display, emails=[{"value": email, "primary": True}]
        )
    return [row[1] for row in rows]


@pytest.mark.parametrize(
    ("sort", "header"),
    [
        ("name", "Display name"),
        ("username", "Username"),
        ("email", "Email"),
        ("source", "Source"),
    ],
)
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sort_users(console, sortable, sort, header, order):
    """Each sortable column sorts both ways and marks itself with aria-sort."""
    soup = page(console.get(f"/admin/users?sort={sort}&order={order}"))
    values = column(soup, header)
    assert len(values) == 4
    expected = sorted(values, key=str.lower, reverse=order == "desc")
    assert values == expected
    if sort != "source":
        assert len(set(values)) == 4
    marked = soup.main.find("th", attrs={"aria-sort": True})
    assert text(marked).rstrip(" ▲▼") == header
    assert marked["aria-sort"] == ("descending" if order == "desc" else "ascending")


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sort_users_by_last_updated(console, sortable, order):
    """Sorting by Last updated follows the order users were last changed."""
    expected = sortable if order == "asc" else sortable[::-1]
    assert usernames(console, f"/admin/users?sort=updated&order={order}") == expected


@pytest.mark.parametrize("args", ["sort=bogus", "sort=password_hash", "order=sideways"])
def test_unknown_sort_falls_back_to_username(console, sortable, args):
    """An unknown sort key or order sorts by username ascending."""
    assert usernames(console, f"/admin/users?{args}") == sorted(sortable)


def test_sort_links_live_in_the_url(console, sortable):
    """Header links flip the order and keep the filters; the page reflects the URL."""
    soup = page(console.get("/admin/users?q=x.example&source=okta"))
    headers = {
        text(th).rstrip(" ▲▼"): th.find("a")["href"]
        for th in soup.main.select("thead th")
        if th.find("a")
    }
    assert set(headers) == {
        "Display name",
        "Username",
        "Email",
        "Source",
        "Last updated",
    }
    name_link = urlsplit(headers["Display name"])
    assert name_link.path == "/admin/users"
    args = parse_qs(name_link.query)
    assert args == {
        "q": ["x.example"],
        "source": ["okta"],
        "sort": ["name"],
        "order": ["asc"],
    }
    soup = page(console.get(headers["Display name"]))
    assert column(soup, "Display name") == ["Charlie", "Delta"]
    flip = soup.main.find("th", attrs={"aria-sort": "ascending"}).find("a")["href"]
    assert parse_qs(urlsplit(flip).query)["order"] == ["desc"]
    soup = page(console.get(flip))
    assert column(soup, "Display name") == ["Delta", "Charlie"]
    form = soup.main.find("form", role="search")
    hidden = {i["name"]: i["value"] for i in form.find_all("input", type="hidden")}
    assert hidden == {"sort": "name", "order": "desc"}
    assert form.find("input", id="q")["value"] == "x.example"


def test_users_pagination(app, console):
    """More than 50 users are paged; page links keep the query string."""
    add_users(app, 120)
    add_users(app, 3, prefix="other")
    url = "/admin/users?q=bulk&sort=username&order=desc"
    soup = page(console.get(url))
    first = column(soup, "Username")
    assert first == [f"bulk{i:03d}" for i in range(119, 69, -1)]
    nav = soup.main.find("nav", class_="pager")
    assert text(nav).startswith("1–50 of 120 users")
    assert "Page 1 of 3" in text(nav)
    assert nav.find("a", rel="prev") is None
    next_url = nav.find("a", rel="next")["href"]
    args = parse_qs(urlsplit(next_url).query)
    assert args == {
        "q": ["bulk"],
        "sort": ["username"],
        "order": ["desc"],
        "page": ["2"],
    }
    last_url = nav.find("a", string="Last")["href"]
    assert parse_qs(urlsplit(last_url).query)["page"] == ["3"]

    soup = page(console.get(next_url))
    second = column(soup, "Username")
    assert second == [f"bulk{i:03d}" for i in range(69, 19, -1)]
    nav = soup.main.find("nav", class_="pager")
    assert text(nav).startswith("51–100 of 120 users")
    prev_args = parse_qs(urlsplit(nav.find("a", rel="prev")["href"]).query)
    assert prev_args["page"] == ["1"] and prev_args["q"] == ["bulk"]

    soup = page(console.get(last_url))
    third = column(soup, "Username")
    assert third == [f"bulk{i:03d}" for i in range(19, -1, -1)]
    nav = soup.main.find("nav", class_="pager")
    assert text(nav).startswith("101–120 of 120 users")
    assert nav.find("a", rel="next") is None
    assert sorted(first + second + third) == [f"bulk{i:03d}" for i in range(120)]


@pytest.mark.parametrize(("requested", "shown"), [("0", 1), ("99", 3), ("x", 1)])
def test_users_page_out_of_range(app, console, requested, shown):
    """A page number out of range, or not a number, shows the nearest page."""
    add_users(app, 120)
    soup = page(console.get(f"/admin/users?page={requested}"))
    assert f"Page {shown} of 3" in text(soup.main.find("nav", class_="pager"))


#
# User page
#


def test_user_page_shows_every_attribute(app, console, scim, runner):
    """The user page shows core, enterprise and custom attributes, groups and record data."""
    result = runner.invoke(args=["attribute", "add", "badgeNumber"])
    assert result.exit_code == 0, result.output
    manager = scim.create_user("boss@example.com", displayName="The Boss")
    user = scim.create_user(
        "erin@example.com",
        schemas=[CORE, ENTERPRISE, CUSTOM],
        externalId="ext-erin",
        displayName="Erin Evans",
        title="Engineer",
        name={"givenName": "Erin", "familyName": "Evans"},
        emails=[{"value": "erin@corp.example", "type": "work", "primary": True}],
        phoneNumbers=[{"value": "+1 555 0100", "type": "work"}],
        **{
            ENTERPRISE: {
                "employeeNumber": "E-1001",
                "department": "R&D",
                "manager": {"value": manager["id"]},
            },
            CUSTOM: {"badgeNumber": "B-42"},
        },
    )
    group = scim.create_group("Builders", members=[user["id"]])

    soup = page(console.get(f"/admin/users/{user['id']}"))
    assert text(soup.main.find("h1")) == "Erin Evans"
    assert text(soup.main.find("span", class_="status")) == "Active"

    record = {text(k): v for k, v in definitions(soup, card(soup, "Record")).items()}
    assert text(record["Username"]) == "erin@example.com"
    assert text(record["Source"]) == "SCIM Entra ID"
    assert text(record["SCIM id"]) == user["id"]
    assert text(record["externalId"]) == "ext-erin"
    (boss,) = record["Manager"].find_all("a")
    assert (text(boss), boss["href"]) == ("The Boss", f"/admin/users/{manager['id']}")
    with app.app_context(), database.connection_context():
        row = User.get(User.scim_id == user["id"])
    created = record["Created"].find("time")
    assert created["datetime"] == row.created.isoformat() + "Z"
    updated = record["Last updated"].find("time")
    assert updated["datetime"] == row.last_modified.isoformat() + "Z"

    attributes = card(soup, "Attributes")
    assert text(attributes.find(class_="badge")) == "Managed by Entra ID"
    core = {text(k): v for k, v in definitions(soup, attributes).items()}
    assert text(core["displayName"]) == "Erin Evans"
    assert text(core["title"]) == "Engineer"
    assert text(core["externalId"]) == "ext-erin"
    assert "erin@corp.example" in text(core["emails"])
    assert "+1 555 0100" in text(core["phoneNumbers"])
    name = {
        text(k): text(v)
        for k, v in zip(
            core["name"].find_all("dt"), core["name"].find_all("dd"), strict=True
        )
    }
    assert name == {"givenName": "Erin", "familyName": "Evans"}

    # Plain headings, each with its schema URN as the detail.
    headings = {
        text(h3): text(h3.find_next_sibling("p")) for h3 in attributes.find_all("h3")
    }
    assert headings == {
        "Enterprise attributes": ENTERPRISE,
        "Custom attributes": CUSTOM,
    }
    sections = {
        {"Enterprise attributes": ENTERPRISE, "Custom attributes": CUSTOM}[
            text(h3)
        ]: h3.find_next_sibling("dl")
        for h3 in attributes.find_all("h3")
    }
    assert set(sections) == {ENTERPRISE, CUSTOM}
    enterprise = {
        text(k): v
        for k, v in zip(
            sections[ENTERPRISE].find_all("dt", recursive=False),
            sections[ENTERPRISE].find_all("dd", recursive=False),
            strict=True,
        )
    }
    assert text(enterprise["employeeNumber"]) == "E-1001"
    assert text(enterprise["department"]) == "R&D"
    assert manager["id"] in text(enterprise["manager"])
    custom = dict(
        zip(
            [text(dt) for dt in sections[CUSTOM].find_all("dt")],
            [text(dd) for dd in sections[CUSTOM].find_all("dd")],
            strict=True,
        )
    )
    assert custom == {"badgeNumber": "B-42"}

    links = card(soup, "Groups").find_all("a")
    assert [(text(a), a["href"]) for a in links] == [
        ("Builders", f"/admin/groups/{group['id']}")
    ]


def test_user_page_okta_source(console, okta):
    """An Okta user is shown as managed by Okta."""
    user = okta.create_user("olga@example.com")
    soup = page(console.get(f"/admin/users/{user['id']}"))
    assert text(soup.main.find(class_="badge")) == "Managed by Okta"
    record = {
        text(k): text(v) for k, v in definitions(soup, card(soup, "Record")).items()
    }
    assert record["Source"] == "SCIM Okta"
    assert record["externalId"] == "—"
    assert record["Manager"] == "—"
    assert text(card(soup, "Groups").find("p", class_="empty")) == "Not in any group."


def test_user_page_names_a_manager_missing_from_the_directory(console, scim):
    user = scim.create_user(
        "fay@example.com",
        schemas=[CORE, ENTERPRISE],
        **{ENTERPRISE: {"manager": {"value": "not-provisioned-yet"}}},
    )
    soup = page(console.get(f"/admin/users/{user['id']}"))
    record = {text(k): v for k, v in definitions(soup, card(soup, "Record")).items()}
    manager = record["Manager"]
    assert text(manager) == "not-provisioned-yet (not in the directory)"
    assert manager.find("a") is None


def test_unknown_user_is_404(console):
    """A user id that does not exist answers 404."""
    assert console.get("/admin/users/no-such-user").status_code == 404
    assert console.get("/admin/users/no-such-user/purge").status_code == 404


def test_markup_in_names_is_escaped(console, scim):
    """Names that look like HTML are shown as text, never as markup."""
    payload = "<script>alert(1)</script>"
    image = '<img src=x onerror="alert(2)">'
    user = scim.create_user("xss@example.com", displayName=payload, title=image)
    group = scim.create_group(image, members=[user["id"]])
    pages = [
        "/admin/users",
        f"/admin/users/{user['id']}",
        "/admin/groups",
        f"/admin/groups/{group['id']}",
        f"/admin/users?q={payload}",
    ]
    for url in pages:
        response = console.get(url)
        soup = page(response)
        assert all(s.get("src") for s in soup.find_all("script")), url
        assert soup.find("img") is None, url
        assert "<script>alert" not in response.get_data(as_text=True), url
    soup = page(console.get("/admin/users"))
    (row,) = table(soup)[1]
    assert text(row["Display name"]) == payload
    assert text(row["Groups"]) == image
    soup = page(console.get(f"/admin/users/{user['id']}"))
    assert text(soup.main.find("h1")) == payload
    assert soup.title.get_text().startswith(payload)


#
# Purging deprovisioned users
#


def test_deprovisioned_user_offers_purge(console, people):
    """A user deleted over SCIM shows its status and a Purge action."""
    soup = page(console.get(f"/admin/users/{people['dave']['id']}"))
    assert text(soup.main.find("span", class_="status")) == "Deprovisioned"
    purge = soup.main.find("a", string="Purge")
    assert purge["href"] == f"/admin/users/{people['dave']['id']}/purge"
    live = page(console.get(f"/admin/users/{people['alice']['id']}"))
    assert live.main.find("a", string="Purge") is None


def test_purge_a_deprovisioned_user(app, console, people):
    """Purge confirms, then deletes the user and its memberships."""
    dave = people["dave"]["id"]
    with app.app_context(), database.connection_context():
        pk = User.get(User.scim_id == dave).id
        assert Membership.select().where(Membership.user == pk).count() == 1
    url = f"/admin/users/{dave}/purge"
    soup = page(console.get(url))
    assert text(soup.main.find("h1")) == "Purge dave@example.com?"
    assert text(soup.main.find("button", type="submit")) == "Purge user"
    assert soup.main.find("a", string="Cancel")["href"] == f"/admin/users/{dave}"

    response = console.post(url)
    assert response.status_code == 302
    assert urlsplit(response.location).path == "/admin/users"
    assert "User dave@example.com purged." in flashes(
        page(console.get(response.location))
    )
    with app.app_context(), database.connection_context():
        assert User.get_or_none(User.scim_id == dave) is None
        assert Membership.select().where(Membership.user == pk).count() == 0
        assert User.select().count() == 3
        engineering = Group.get(Group.scim_id == people["engineering"]["id"])
        assert engineering.memberships.count() == 2
    assert console.get(f"/admin/users/{dave}").status_code == 404


def test_purging_a_live_user_is_refused(app, console, people):
    """A provisioned user cannot be purged, by GET or by a forced POST."""
    alice = people["alice"]["id"]
    for method in (console.get, console.post):
        response = method(f"/admin/users/{alice}/purge")
        assert response.status_code == 302
        assert urlsplit(response.location).path == f"/admin/users/{alice}"
        soup = page(console.get(response.location))
        assert (
            "Only deprovisioned users can be purged; this user is still provisioned."
            in flashes(soup)
        )
    with app.app_context(), database.connection_context():
        user = User.get(User.scim_id == alice)
        assert user.deprovisioned_at is None
        assert user.memberships.count() == 1


def test_purge_all_deprovisioned(app, console, people, scim):
    """Purge all shows the count, then deletes exactly the deprovisioned users."""
    assert scim.delete(f"/Users/{people['carol']['id']}").status_code == 204
    soup = page(console.get("/admin/users"))
    link = soup.main.find("a", string=lambda s: s and s.startswith("Purge all"))
    assert text(link) == "Purge all deprovisioned (2)"
    assert link["href"] == "/admin/users/purge-deprovisioned"

    soup = page(console.get(link["href"]))
    assert text(soup.main.find("h1")) == "Purge 2 deprovisioned users?"
    # It lists whom it deletes, most recently deprovisioned first.
    assert [text(li) for li in soup.main.select("ul.values li")] == [
        "carol@example.com (SCIM Entra ID)",
        "dave@example.com (SCIM Entra ID)",
    ]
    button = soup.main.find("button", type="submit")
    assert text(button) == "Purge 2 users"
    assert not button.has_attr("disabled")

    response = console.post(link["href"], data=hidden_fields(soup))
    assert response.status_code == 302
    soup = page(console.get(response.location))
    assert "Purged 2 deprovisioned users." in flashes(soup)
    assert column(soup, "Username") == ["alice@example.com", "bob@example.com"]
    assert soup.main.find("a", string=lambda s: s and s.startswith("Purge all")) is None
    with app.app_context(), database.connection_context():
        left = sorted(u.user_name for u in User.select())
        assert left == ["alice@example.com", "bob@example.com"]
        members = Membership.select().join(User).where(User.user_name.in_(left))
        assert members.count() == Membership.select().count() == 2


def hidden_fields(soup):
    """Return the hidden inputs of the page's form, as a browser would post them."""
    form = soup.main.find("form", method="post")
    return {i["name"]: i["value"] for i in form.find_all("input", type="hidden")}


def test_purge_all_with_nothing_to_purge(app, console, scim):
    """With no deprovisioned user there is no purge page, and a bare POST purges nothing."""
    scim.create_user("live@example.com")
    response = console.get("/admin/users/purge-deprovisioned")
    assert urlsplit(response.location).path == "/admin/users"
    assert "No deprovisioned users to purge." in flashes(
        page(console.get("/admin/users"))
    )
    response = console.post("/admin/users/purge-deprovisioned")
    assert urlsplit(response.location).path == "/admin/users/purge-deprovisioned"
    with app.app_context(), database.connection_context():
        assert User.select().count() == 1


def test_purge_all_leaves_users_deprovisioned_after_the_page_was_shown(
    app, console, scim
):
    first = scim.create_user("first@example.com")
    later = scim.create_user("later@example.com")
    assert scim.delete(f"/Users/{first['id']}").status_code == 204
    soup = page(console.get("/admin/users/purge-deprovisioned"))
    assert [text(li) for li in soup.main.select("ul.values li")] == [
        "first@example.com (SCIM Entra ID)"
    ]
    # The IdP deletes another user while the admin reads the page.
    with app.app_context(), database.connection_context():
        User.update(deprovisioned_at=utcnow() + timedelta(seconds=1)).where(
            User.scim_id == later["id"]
        ).execute()
    console.post("/admin/users/purge-deprovisioned", data=hidden_fields(soup))
    with app.app_context(), database.connection_context():
        assert [u.user_name for u in User.select()] == ["later@example.com"]


def test_deprovisioned_user_name_can_be_reused(app, console, scim):
    """A new user may take a deprovisioned user's name; purge removes only the old one."""
    old = scim.create_user("reuse@example.com")
    scim.delete(f"/Users/{old['id']}")
    new = scim.create_user("reuse@example.com")
    assert console.post(f"/admin/users/{old['id']}/purge").status_code == 302
    with app.app_context(), database.connection_context():
        assert [u.scim_id for u in User.select()] == [new["id"]]


#
# Groups
#


def test_groups_empty_state(console):
    """Without groups the page says so."""
    soup = page(console.get("/admin/groups"))
    assert text(soup.main.find("p", class_="empty")).startswith("No groups yet")


def test_groups_table(app, console, people):
    """Groups show name, source, live member count, externalId and update time."""
    soup = page(console.get("/admin/groups"))
    headers, rows = table(soup)
    assert headers == GROUP_HEADERS
    by_name = {text(r["Name"]): r for r in rows}
    assert list(by_name) == ["Empty", "Engineering", "Sales"]
    engineering = by_name["Engineering"]
    link = engineering["Name"].find("a")
    assert link["href"] == f"/admin/groups/{people['engineering']['id']}"
    assert text(engineering["Source"]) == "SCIM Entra ID"
    assert text(by_name["Sales"]["Source"]) == "SCIM Okta"
    # dave was deleted over SCIM and keeps his row: he is not counted.
    assert text(engineering["Members"]) == "2"
    assert text(by_name["Sales"]["Members"]) == "1"
    assert text(by_name["Empty"]["Members"]) == "0"
    assert text(engineering["externalId"]) == "grp-eng"
    assert text(by_name["Empty"]["externalId"]) == "—"
    assert engineering["Last updated"].find("time") is not None
    with app.app_context(), database.connection_context():
        User.update(deprovisioned_at=utcnow()).where(
            User.scim_id == people["carol"]["id"]
        ).execute()
    rows = table(page(console.get("/admin/groups")))[1]
    counts = {text(r["Name"]): text(r["Members"]) for r in rows}
    assert counts["Engineering"] == "1"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("engin", ["Engineering"]),
        ("E", ["Empty", "Engineering", "Sales"]),
        ("grp-sales", ["Sales"]),
        ("100%", ["100% Club"]),
        ("nothing", []),
    ],
)
def test_search_groups(console, people, scim, query, expected):
    """Group search matches the name (with literal wildcards) or the externalId."""
    scim.create_group("100% Club")
    scim.create_group("1000 Club")
    soup = page(console.get("/admin/groups", query_string={"q": query}))
    assert column(soup, "Name") == expected
    assert soup.main.find("input", id="q")["value"] == query
    if not expected:
        assert (
            text(soup.main.find("p", class_="empty")) == f"No groups match “{query}”."
        )


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sort_groups_by_name(console, people, order):
    """Groups sort by name both ways."""
    names = column(page(console.get(f"/admin/groups?sort=name&order={order}")), "Name")
    assert names == sorted(names, reverse=order == "desc")
    assert len(names) == 3


def test_group_page_members_paginated_and_searchable(app, console, scim):
    """A group page lists live members 50 at a time, searchable, linking to users."""
    group = scim.create_group("Everyone", externalId="grp-all")
    add_users(app, 60, group=group["id"])
    add_users(app, 1, prefix="gone", group=group["id"], deprovisioned_at=utcnow())
    url = f"/admin/groups/{group['id']}"
    soup = page(console.get(url))
    assert text(soup.main.find("h1")) == "Everyone"
    facts = {text(k): text(v) for k, v in definitions(soup).items()}
    assert facts["Source"] == "SCIM Entra ID"
    assert facts["SCIM id"] == group["id"]
    assert facts["externalId"] == "grp-all"
    headers, rows = table(soup)
    assert headers == ["Display name", "Username", "Email", "Status"]
    assert len(rows) == 50
    assert [text(r["Username"]) for r in rows] == [f"bulk{i:03d}" for i in range(50)]
    with app.app_context(), database.connection_context():
        first = User.get(User.user_name == "bulk000")
    link = rows[0]["Display name"].find("a")
    assert (text(link), link["href"]) == ("Bulk 000", f"/admin/users/{first.scim_id}")
    nav = soup.main.find("nav", class_="pager")
    assert text(nav).startswith("1–50 of 60 members")

    soup = page(console.get(nav.find("a", rel="next")["href"]))
    assert column(soup, "Username") == [f"bulk{i:03d}" for i in range(50, 60)]

    soup = page(console.get(url, query_string={"q": "bulk05"}))
    assert column(soup, "Username") == [f"bulk{i:03d}" for i in range(50, 60)]
    assert soup.main.find("input", id="q")["value"] == "bulk05"
    soup = page(console.get(url, query_string={"q": "gone"}))
    assert text(soup.main.find("p", class_="empty")) == "No members match “gone”."


def test_group_members_pages_keep_the_search(app, console, scim):
    """Member page links keep the search term."""
    group = scim.create_group("Many")
    add_users(app, 55, group=group["id"])
    add_users(app, 5, prefix="other", group=group["id"])
    soup = page(console.get(f"/admin/groups/{group['id']}?q=bulk"))
    nav = soup.main.find("nav", class_="pager")
    assert text(nav).startswith("1–50 of 55 members")
    args = parse_qs(urlsplit(nav.find("a", rel="next")["href"]).query)
    assert args == {"q": ["bulk"], "page": ["2"]}


def test_unknown_group_is_404(console):
    """A group id that does not exist answers 404."""
    assert console.get("/admin/groups/no-such-group").status_code == 404


#
# Custom attributes
#


def schema_attributes(client):
    """Return {name: type} of the custom extension advertised in /Schemas."""
    response = client.get("/scim/v2/Schemas")
    assert response.status_code == 200
    for schema in response.get_json()["Resources"]:
        if schema["id"] == CUSTOM:
            return {a["name"]: a["type"] for a in schema["attributes"]}
    return {}


def test_attributes_page_empty(console):
    """Without custom attributes the page says so and shows the add form."""
    soup = page(console.get("/admin/attributes"))
    assert text(soup.main.find("p", class_="empty")) == "No custom attributes yet."
    assert soup.main.find("code", string=CUSTOM) is not None
    form = soup.main.find("form", method="post")
    name = form.find(id=form.find("label", string="Attribute name")["for"])
    assert name["name"] == "name"
    kind = form.find(id=form.find("label", string="Type")["for"])
    assert [o["value"] for o in kind.find_all("option")] == [
        "string",
        "boolean",
        "integer",
    ]
    assert form.find("input", type="submit")["value"] == "Add attribute"


def test_add_attribute(app, console, client):
    """Adding an attribute shows its full path and /Schemas advertises it at once."""
    assert schema_attributes(client) == {}
    response = console.post(
        "/admin/attributes", data={"name": "badgeNumber", "type": "integer"}
    )
    assert response.status_code == 302
    soup = page(console.get(response.location))
    assert "Attribute badgeNumber added; /Schemas now advertises it." in flashes(soup)
    headers, rows = table(soup)
    assert headers == ["Name", "Type", "Attribute path for the IdP", "Added", "Actions"]
    (row,) = rows
    assert text(row["Name"]) == "badgeNumber"
    assert text(row["Type"]) == "integer"
    path = row["Attribute path for the IdP"].find("textarea")
    assert path.string == f"{CUSTOM}:badgeNumber"
    assert path.has_attr("readonly")
    assert path["aria-label"] == "Attribute path for badgeNumber"
    copy = row["Attribute path for the IdP"].find("button")
    assert (text(copy), copy["data-copy"]) == ("Copy", path["id"])
    assert schema_attributes(client) == {"badgeNumber": "integer"}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "This field is required."),
        ("1badge", "Start with a letter; use letters, digits, - and _ only."),
        ("has space", "Start with a letter; use letters, digits, - and _ only."),
        ("dot.name", "Start with a letter; use letters, digits, - and _ only."),
        ("colon:name", "Start with a letter; use letters, digits, - and _ only."),
        ("a" * 65, "Field cannot be longer than 64 characters."),
    ],
)
def test_invalid_attribute_name(app, console, client, name, message):
    """An invalid name is refused with a form error."""
    response = console.post("/admin/attributes", data={"name": name, "type": "string"})
    soup = page(response)
    errors = [text(p) for p in soup.main.select("p.error")]
    assert message in errors
    with app.app_context(), database.connection_context():
        assert CustomAttribute.select().count() == 0
    assert schema_attributes(client) == {}


@pytest.mark.parametrize("duplicate", ["badgeNumber", "BADGENUMBER"])
def test_duplicate_attribute_name(app, console, runner, duplicate):
    """A name already defined (in any case) is refused with a form error."""
    assert runner.invoke(args=["attribute", "add", "badgeNumber"]).exit_code == 0
    response = console.post(
        "/admin/attributes", data={"name": duplicate, "type": "string"}
    )
    soup = page(response)
    errors = [text(p) for p in soup.main.select("p.error")]
    if duplicate == "badgeNumber":
        message = "An attribute called badgeNumber already exists."
    else:
        message = (
            "An attribute called badgeNumber already exists; attribute names ignore "
            f"case, so {duplicate} would be the same attribute."
        )
    assert message in errors
    with app.app_context(), database.connection_context():
        assert [a.name for a in CustomAttribute.select()] == ["badgeNumber"]


def test_invalid_attribute_type(app, console):
    """A type outside the choices is refused."""
    response = console.post(
        "/admin/attributes", data={"name": "badge", "type": "binary"}
    )
    assert response.status_code == 200
    with app.app_context(), database.connection_context():
        assert CustomAttribute.select().count() == 0


def test_delete_attribute(app, console, client, runner):
    """Delete confirms, then removes the attribute from the page and /Schemas."""
    assert runner.invoke(args=["attribute", "add", "badgeNumber"]).exit_code == 0
    assert runner.invoke(args=["attribute", "add", "costCenter"]).exit_code == 0
    assert set(schema_attributes(client)) == {"badgeNumber", "costCenter"}
    soup = page(console.get("/admin/attributes"))
    rows = {text(r["Name"]): r for r in table(soup)[1]}
    delete_url = rows["badgeNumber"]["Actions"].find("a", string="Delete")["href"]

    soup = page(console.get(delete_url))
    assert text(soup.main.find("h1")) == "Delete attribute badgeNumber?"
    assert text(soup.main.find("button", type="submit")) == "Delete attribute"
    assert soup.main.find("a", string="Cancel")["href"] == "/admin/attributes"
    assert set(schema_attributes(client)) == {"badgeNumber", "costCenter"}

    response = console.post(delete_url)
    assert response.status_code == 302
    soup = page(console.get(response.location))
    assert "Attribute badgeNumber deleted." in flashes(soup)
    assert column(soup, "Name") == ["costCenter"]
    assert schema_attributes(client) == {"costCenter": "string"}
    assert console.get(delete_url).status_code == 404


def test_search_covers_department_and_title(console, scim):
    scim.create_user(
        "gil@example.com",
        schemas=[CORE, ENTERPRISE],
        title="Field Technician",
        **{ENTERPRISE: {"department": "Logistics"}},
    )
    scim.create_user("hal@example.com", title="Engineer")
    for query, found in [
        ("logist", ["gil@example.com"]),
        ("TECHNICIAN", ["gil@example.com"]),
        ("engineer", ["hal@example.com"]),
    ]:
        soup = page(console.get(f"/admin/users?q={query}"))
        assert column(soup, "Username") == found, query
    # A PATCH keeps the mirror current.
    (gil,) = [
        u
        for u in scim.get("/Users").get_json()["Resources"]
        if u["userName"] == "gil@example.com"
    ]
    response = scim.patch(
        f"/Users/{gil['id']}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "Replace", "path": f"{ENTERPRISE}:department", "value": "Sales"}
            ],
        },
    )
    assert response.status_code == 200
    assert column(page(console.get("/admin/users?q=logist")), "Username") == []
    assert column(page(console.get("/admin/users?q=sales")), "Username") == [
        "gil@example.com"
    ]
