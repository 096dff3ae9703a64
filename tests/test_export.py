"""Users and User Groups exports: console downloads, `mdm user|group export`, streaming."""

import csv
import io
import json
import urllib.request

import pytest

from mdm.console import directory_export
from mdm.db import database
from mdm.models import Group
from mdm.models import Membership
from mdm.models import User

from . import served
from .conftest import live_server

USER_HEADER = (
    "id,userName,displayName,givenName,familyName,email,externalId,department,"
    "title,active,status,source,groups,created,lastModified,deprovisionedAt"
)
GROUP_HEADER = (
    "id,displayName,externalId,source,created,lastModified,memberId,memberUserName"
)


@pytest.fixture
def directory(app, scim):
    """Three users (one disabled, one deprovisioned) and two groups; return their ids."""
    ada = scim.create_user(
        "ada@contoso.com",
        displayName='=HYPERLINK("x")',
        name={"givenName": "Ada", "familyName": "Lovelace"},
        emails=[{"value": "ada@contoso.com", "primary": True}],
        externalId="e-ada",
        title="+Engineer",
    )
    bob = scim.create_user("bob@fabrikam.com", active=False, displayName="Bob")
    gone = scim.create_user("gone@contoso.com", displayName="Gone")
    sales = scim.create_group("@Sales", [ada["id"], bob["id"], gone["id"]])
    assert scim.delete(f"/Users/{gone['id']}").status_code == 204
    empty = scim.create_group("Empty", externalId="-1")
    return {"ada": ada, "bob": bob, "gone": gone, "sales": sales, "empty": empty}


def stored(app):
    """Return {SCIM id: (created, lastModified)} as the exports print them."""
    with app.app_context(), database.connection_context():
        rows = list(User.select()) + list(Group.select())
    return {
        r.scim_id: (
            r.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            r.last_modified.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        for r in rows
    }


def expected_users_csv(app, d, which=("ada", "bob", "gone")):
    times = stored(app)
    lines = {
        "ada": [
            d["ada"]["id"],
            "ada@contoso.com",
            '\'=HYPERLINK("x")',
            "Ada",
            "Lovelace",
            "ada@contoso.com",
            "e-ada",
            "",
            "'+Engineer",
            "true",
            "active",
            "entra",
            "'@Sales",
            *times[d["ada"]["id"]],
            "",
        ],
        "bob": [
            d["bob"]["id"],
            "bob@fabrikam.com",
            "Bob",
            "",
            "",
            "",
            "",
            "",
            "",
            "false",
            "disabled",
            "entra",
            "'@Sales",
            *times[d["bob"]["id"]],
            "",
        ],
    }
    with app.app_context(), database.connection_context():
        gone = User.get(User.scim_id == d["gone"]["id"])
    lines["gone"] = [
        d["gone"]["id"],
        "gone@contoso.com",
        "Gone",
        "",
        "",
        "",
        "",
        "",
        "",
        "true",
        "deprovisioned",
        "entra",
        # Kept until purged, as the Users page shows it.
        "'@Sales",
        *times[d["gone"]["id"]],
        gone.deprovisioned_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    ]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(USER_HEADER.split(","))
    for name in which:
        writer.writerow(lines[name])
    return out.getvalue()


def test_users_csv_is_the_whole_directory_defused(app, console, directory):
    response = console.get("/admin/users.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith(
        'attachment; filename="users-'
    )
    assert response.get_data(as_text=True) == expected_users_csv(app, directory)


def test_users_csv_keeps_the_page_filters(app, console, directory):
    d = directory
    cases = {
        "status=disabled": ("bob",),
        "status=deprovisioned": ("gone",),
        "q=contoso": ("ada", "gone"),
        f"group={d['sales']['id']}": ("ada", "bob", "gone"),
        "filter=" + urllib.parse.quote('userName co "contoso" and active eq true'): (
            "ada",
            "gone",
        ),
        "source=okta": (),
        "group=nosuchgroup": (),
    }
    for query, which in cases.items():
        body = console.get(f"/admin/users.csv?{query}").get_data(as_text=True)
        assert body == expected_users_csv(app, d, which), query


def test_bad_filter_export_goes_back_with_the_message(console, directory):
    response = console.get("/admin/users.csv?filter=userName+zz+1&status=active")
    assert response.status_code == 302
    assert response.headers["Location"] == (
        "/admin/users?filter=userName+zz+1&status=active"
    )
    page = console.get(response.headers["Location"]).get_data(as_text=True)
    assert "Bad SCIM filter:" in page


def test_users_json(app, console, directory):
    d = directory
    times = stored(app)
    response = console.get("/admin/users.json?status=active")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == [
        {
            "id": d["ada"]["id"],
            "userName": "ada@contoso.com",
            "displayName": '=HYPERLINK("x")',
            "givenName": "Ada",
            "familyName": "Lovelace",
            "email": "ada@contoso.com",
            "externalId": "e-ada",
            "department": None,
            "title": "+Engineer",
            "active": True,
            "status": "active",
            "source": "entra",
            "groups": [{"id": d["sales"]["id"], "displayName": "@Sales"}],
            "created": times[d["ada"]["id"]][0],
            "lastModified": times[d["ada"]["id"]][1],
            "deprovisionedAt": None,
        }
    ]


def expected_groups_csv(app, d):
    times = stored(app)
    sales, empty = d["sales"], d["empty"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(GROUP_HEADER.split(","))
    head = [sales["id"], "'@Sales", "", "entra", *times[sales["id"]]]
    writer.writerow(head + [d["ada"]["id"], "ada@contoso.com"])
    writer.writerow(head + [d["bob"]["id"], "bob@fabrikam.com"])
    writer.writerow([empty["id"], "Empty", "'-1", "entra", *times[empty["id"]], "", ""])
    return out.getvalue()


def test_groups_csv_one_row_per_live_member(app, console, directory):
    response = console.get("/admin/groups.csv")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith(
        'attachment; filename="user-groups-'
    )
    assert response.get_data(as_text=True) == expected_groups_csv(app, directory)


def test_groups_json_and_search(app, console, directory):
    d = directory
    times = stored(app)
    body = console.get("/admin/groups.json?q=sales").get_data(as_text=True)
    assert json.loads(body) == [
        {
            "id": d["sales"]["id"],
            "displayName": "@Sales",
            "externalId": None,
            "source": "entra",
            "created": times[d["sales"]["id"]][0],
            "lastModified": times[d["sales"]["id"]][1],
            "members": [
                {"id": d["ada"]["id"], "userName": "ada@contoso.com"},
                {"id": d["bob"]["id"], "userName": "bob@fabrikam.com"},
            ],
        }
    ]
    assert console.get("/admin/groups.json?q=nothing").get_json() == []


def test_export_links_carry_the_page_filters(console, directory):
    users = console.get("/admin/users?status=disabled&q=bob&page=1")
    html = users.get_data(as_text=True)
    assert 'href="/admin/users.csv?status=disabled&amp;q=bob"' in html
    assert 'href="/admin/users.json?status=disabled&amp;q=bob"' in html
    groups = console.get("/admin/groups?q=sales").get_data(as_text=True)
    assert 'href="/admin/groups.csv?q=sales"' in groups
    assert 'href="/admin/groups.json?q=sales"' in groups


def test_exports_need_sign_in(client):
    for url in ("/admin/users.csv", "/admin/users.json", "/admin/groups.csv"):
        response = client.get(url)
        assert response.status_code == 302
        assert "/login" in response.headers["Location"]


def test_group_members_stream_in_batches(app, console, directory, monkeypatch):
    # Batches of one: every member and every group crosses a batch boundary.
    monkeypatch.setattr(directory_export, "EXPORT_BATCH", 1)
    assert console.get("/admin/groups.csv").get_data(
        as_text=True
    ) == expected_groups_csv(app, directory)
    assert console.get("/admin/users.csv").get_data(as_text=True) == expected_users_csv(
        app, directory
    )
    groups = json.loads(console.get("/admin/groups.json").get_data(as_text=True))
    assert [len(g["members"]) for g in groups] == [2, 0]


def test_cli_exports_to_files(app, runner, directory, tmp_path):
    d = directory
    out = tmp_path / "users.csv"
    result = runner.invoke(args=["user", "export", "--output", str(out)])
    assert result.exit_code == 0, result.output
    # The CLI lists provisioned users only, as `mdm user list` does.
    assert out.read_bytes().decode() == expected_users_csv(app, d, ("ada", "bob"))
    result = runner.invoke(
        args=["user", "export", "--format", "json", "--filter", "active eq false"]
    )
    assert result.exit_code == 0
    assert [u["userName"] for u in json.loads(result.output)] == ["bob@fabrikam.com"]
    out = tmp_path / "groups.csv"
    result = runner.invoke(args=["group", "export", "-o", str(out)])
    assert result.exit_code == 0
    assert out.read_bytes().decode() == expected_groups_csv(app, d)
    result = runner.invoke(
        args=[
            "group",
            "export",
            "--format",
            "json",
            "--filter",
            'displayName eq "Empty"',
        ]
    )
    assert [g["displayName"] for g in json.loads(result.output)] == ["Empty"]


def test_cli_bad_filter_and_format(runner, directory):
    result = runner.invoke(args=["user", "export", "--filter", "userName zz 1"])
    assert result.exit_code == 2
    assert "Bad --filter:" in result.output
    result = runner.invoke(args=["group", "export", "--format", "xml"])
    assert result.exit_code == 2
    assert "'xml' is not one of 'csv', 'json'" in result.output


def test_mdm_user_export_command_writes_the_file(tmp_path):
    instance = tmp_path / "instance"
    env = served.environment(instance)
    out = tmp_path / "out.json"
    finished = served.mdm(env, "user", "export", "--format", "json", "-o", str(out))
    assert finished.returncode == 0
    assert json.loads(out.read_text()) == []
    finished = served.mdm(env, "group", "export")
    # Read in text mode: the CSV line ending arrives as "\n".
    assert finished.stdout == GROUP_HEADER + "\n"


def test_served_export_of_thousands_of_users(app, console):
    # A few batches' worth, read over HTTP from the real server.
    total = 3 * directory_export.EXPORT_BATCH + 7
    with app.app_context(), database.connection_context():
        User.insert_many(
            [{"user_name": f"u{i:05}@example.com"} for i in range(total)]
        ).execute()
        group = Group.create(display_name="All")
        Membership.insert_from(
            User.select(group.id, User.id), [Membership.group, Membership.user]
        ).execute()
    cookie = console.get_cookie("session")
    with live_server(app) as port:
        headers = {"Cookie": f"session={cookie.value}"}
        for path in ("/admin/users.csv", "/admin/groups.csv"):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}{path}", headers=headers
            )
            with urllib.request.urlopen(request) as response:
                rows = list(csv.reader(io.TextIOWrapper(response, "utf-8")))
            assert len(rows) == total + 1, path
            names = [row[1 if path == "/admin/users.csv" else 7] for row in rows[1:]]
            assert names == [f"u{i:05}@example.com" for i in range(total)]
