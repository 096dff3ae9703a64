"""The Users page filtered to a group: right rows in every order, keyset pages, plans on indexes."""

import json
import logging
from datetime import datetime
from datetime import timedelta
from urllib.parse import urlencode

import pytest

from mdm.console import directory
from mdm.db import database
from mdm.db import postgres
from mdm.models import Group
from mdm.models import Membership
from mdm.models import User
from mdm.models import mirror_user

from .test_admin_browse import column
from .test_admin_browse import page

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
SIZE = 160
SOURCES = ("entra", "okta", "generic")
SORTS = {
    "name": "display_name",
    "username": "user_name",
    "email": "email",
    "source": "source",
    "updated": "last_modified",
}
# (COUNT_CAP, MEMBER_COUNT_CAP): counted and sorted from the memberships;
# read from the memberships, paged by key; walked in order, paged by key.
PATHS = {
    "small": (10000, 5000),
    "small-keyset": (20, 5000),
    "large": (20, 10),
}


def seed(app):
    """Make a group of most of SIZE users, with sort keys out of id order, ties and NULLs."""
    base = datetime(2026, 1, 1)
    with app.app_context(), database.connection_context(), database.atomic():
        group = Group.create(display_name="Big")
        Group.create(display_name="Other")
        for i in range(SIZE):
            user = User(source=SOURCES[i % 3])
            data = {"schemas": [CORE], "userName": f"u{(i * 29) % SIZE:03d}"}
            if i % 7:
                data["displayName"] = f"d{(i * 37) % 50:03d}"
            if i % 5:
                data["emails"] = [{"value": f"e{(i * 53) % SIZE:03d}@example.com"}]
            mirror_user(user, data)
            user.last_modified = base + timedelta(minutes=(i * 11) % 20)
            if i % 10 == 0:
                user.deprovisioned_at = base
            user.save()
            if i % 4 != 3:
                Membership.create(group=group, user=user)
        return group.scim_id


def expected(app, group_id, sort, order):
    """Return the group's userNames in the page's order, worked out in Python."""
    field = SORTS[sort]
    with app.app_context(), database.connection_context():
        rows = list(
            User.select()
            .join(Membership)
            .join(Group)
            .where(Group.scim_id == group_id)
            .dicts()
        )
    # NULL keys first ascending and last descending; ties in id order, reversed
    # with the key.
    nulls = [r for r in rows if r[field] is None]
    values = [r for r in rows if r[field] is not None]
    nulls.sort(key=lambda r: r["id"], reverse=order == "desc")
    values.sort(key=lambda r: (r[field], r["id"]), reverse=order == "desc")
    ordered = nulls + values if order == "asc" else values + nulls
    return [r["user_name"] for r in ordered]


def walk(console, url, rel):
    """Follow ``rel`` links from ``url``; return each page's userNames and its pager text."""
    pages = []
    while url:
        soup = page(console.get(url))
        nav = soup.main.find("nav", class_="pager")
        if nav is None:
            break
        pages.append((column(soup, "Username"), " ".join(nav.get_text().split())))
        link = nav.find("a", rel=rel)
        url = link["href"] if link else None
    return pages


@pytest.fixture
def caps(app, monkeypatch):
    """Set the Users page's count cap and the group size past which it walks in order."""

    def set_caps(path):
        count_cap, member_cap = PATHS[path]
        app.config["COUNT_CAP"] = count_cap
        monkeypatch.setattr(directory, "MEMBER_COUNT_CAP", member_cap)

    return set_caps


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("sort", SORTS)
def test_group_filtered_pages_list_members_in_order(
    app, console, caps, path, sort, order
):
    caps(path)
    group_id = seed(app)
    want = expected(app, group_id, sort, order)
    assert len(want) == 120
    url = "/admin/users?" + urlencode({"group": group_id, "sort": sort, "order": order})
    forward = walk(console, url, "next")
    # Every member exactly once, in order, 50 to a page.
    assert [names for names, _ in forward] == [want[:50], want[50:100], want[100:]]
    if path == "small":
        assert [nav for _, nav in forward] == [
            "1–50 of 120 users Page 1 of 3 Next Last",
            "51–100 of 120 users First Previous Page 2 of 3 Next Last",
            "101–120 of 120 users First Previous Page 3 of 3",
        ]
    else:
        assert [nav for _, nav in forward] == [
            "1–50 of more than 20 users Page 1 Next",
            "51–100 of more than 20 users First Previous Page 2 Next",
            "101–120 of more than 20 users First Previous Page 3",
        ]
    # And back from the last page by its Previous links.
    backward = walk(console, walk_to_last(console, url), "prev")
    assert [names for names, _ in backward] == [want[100:], want[50:100], want[:50]]


def walk_to_last(console, url):
    """Return the URL of the last page reached by Next links."""
    while True:
        link = (
            page(console.get(url))
            .main.find("nav", class_="pager")
            .find("a", rel="next")
        )
        if link is None:
            return url
        url = link["href"]


def test_keyset_links_name_rows_not_offsets(app, console, caps):
    caps("large")
    group_id = seed(app)
    soup = page(console.get(f"/admin/users?group={group_id}"))
    href = soup.main.find("nav", class_="pager").find("a", rel="next")["href"]
    with app.app_context(), database.connection_context():
        last = User.get(User.user_name == column(soup, "Username")[-1])
    assert href == (f"/admin/users?group={group_id}&page=2&after={last.id}")
    # A key whose row is gone (or a bad one) leaves the page number, read by
    # OFFSET: not an error.
    want = expected(app, group_id, "username", "asc")
    gone = page(console.get(f"/admin/users?group={group_id}&page=2&after=999999"))
    assert column(gone, "Username") == want[50:100]
    bad = page(console.get(f"/admin/users?group={group_id}&page=2&before=x"))
    assert column(bad, "Username") == want[50:100]


def user_queries(caplog, request):
    """Run ``request``; return the statements that read a page of user rows."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        request()
    found = []
    for record in caplog.records:
        if record.name != "peewee" or not isinstance(record.msg, tuple):
            continue
        sql, params = record.msg
        reads_users = 'FROM "user"' in sql or 'JOIN "user"' in sql
        if sql.startswith("SELECT") and reads_users and "LIMIT" in sql:
            if "ORDER BY" in sql and "COUNT" not in sql:
                found.append((sql, params))
    return found


def explain(sql, params):
    """Return the plan of a statement as text."""
    if postgres():
        with database.atomic():
            # Too few rows here for PostgreSQL to prefer an index to a sort
            # on its own: forbidding sorts shows whether an index serves the
            # order at all (if none does, the plan still sorts).
            database.execute_sql("SET LOCAL enable_sort = off")
            rows = database.execute_sql("EXPLAIN " + sql, params).fetchall()
        return "\n".join(row[0] for row in rows)
    rows = database.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return "\n".join(row[-1] for row in rows)


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("sort", SORTS)
def test_large_group_page_walks_the_sort_index(app, console, caps, caplog, sort, order):
    caps("large")
    group_id = seed(app)
    url = "/admin/users?" + urlencode({"group": group_id, "sort": sort, "order": order})
    queries = user_queries(caplog, lambda: console.get(url))
    nav = page(console.get(url)).main.find("nav", class_="pager")
    deep = nav.find("a", rel="next")["href"]
    queries += user_queries(caplog, lambda: console.get(deep))
    assert queries
    with app.app_context(), database.connection_context():
        for sql, params in queries:
            assert "EXISTS" in sql
            assert "JOIN" not in sql
            plan = explain(sql, params)
            assert "TEMP B-TREE" not in plan, plan
            assert "Sort" not in plan, plan


def test_small_group_page_reads_memberships(app, console, caps, caplog):
    caps("small")
    group_id = seed(app)
    queries = user_queries(
        caplog, lambda: console.get(f"/admin/users?group={group_id}")
    )
    assert queries
    for sql, _ in queries:
        assert sql.index('FROM "membership"') < sql.index('JOIN "user"')
        assert ("CROSS JOIN" in sql) != postgres()
        assert "EXISTS" not in sql


def export_names(console, args):
    response = console.get("/admin/users.json?" + urlencode(args))
    assert response.status_code == 200
    return sorted(
        row["userName"] for row in json.loads(response.get_data(as_text=True))
    )


@pytest.mark.parametrize("path", ["small", "large"])
@pytest.mark.parametrize(
    "args",
    [
        {},
        {"q": "e01"},
        {"status": "active", "source": "okta"},
        {"filter": 'displayName sw "d00"'},
        {"q": "U1", "sort": "name", "order": "desc"},
        {"group": "no-such-group"},
    ],
)
def test_export_and_page_agree(app, console, caps, path, args):
    caps(path)
    group_id = seed(app)
    args = {"group": group_id, **args}
    url = "/admin/users?" + urlencode(args)
    listed = sorted(name for names, _ in walk(console, url, "next") for name in names)
    assert listed == export_names(console, args)
    assert bool(listed) == (args["group"] == group_id)


def test_bad_filter_shows_on_the_page_and_redirects_the_export(app, console, caps):
    caps("large")
    group_id = seed(app)
    args = {"group": group_id, "filter": "userName zz 1"}
    soup = page(console.get("/admin/users?" + urlencode(args)))
    problem = soup.main.find(id="filter-problem")
    assert problem.get_text().startswith("Bad SCIM filter")
    assert (
        soup.main.find("select", id="group").find("option", selected=True)["value"]
        == group_id
    )
    response = console.get("/admin/users.csv?" + urlencode(args))
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/users?" + urlencode(args)


@pytest.mark.parametrize("path", ["small", "large"])
def test_group_member_search_uses_the_substring_index(app, console, caps, caplog, path):
    caps(path)
    group_id = seed(app)
    with app.app_context(), database.connection_context():
        members = {
            u.user_name
            for u in User.select()
            .join(Membership)
            .join(Group)
            .where(
                (Group.scim_id == group_id)
                & User.deprovisioned_at.is_null()
                & User.user_name.startswith("u01")
            )
        }
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        soup = page(console.get(f"/admin/groups/{group_id}?q=U01"))
    assert column(soup, "Username") == sorted(members)
    statements = [r.msg[0] for r in caplog.records if isinstance(r.msg, tuple)]
    marker = "ILIKE" if postgres() else "user_search MATCH"
    assert any(marker in sql and "membership" in sql for sql in statements)
