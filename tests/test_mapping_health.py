"""Mapping health: attributes a connection PATCHes that mdm ignores, counted and shown."""

import pytest
from bs4 import BeautifulSoup

from mdm import activity
from mdm.activity import activity_db
from mdm.activity_store import MAPPING_ISSUES_MAX
from mdm.activity_store import MappingIssue
from mdm.db import database
from mdm.models import CustomAttribute
from mdm.scim import schema

CUSTOM = "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User"


def patch_body(*ops):
    return {"schemas": [schema.PATCH_OP], "Operations": list(ops)}


def issues():
    """Return the stored counts as {(idp, type, attribute): requests}, after a flush."""
    activity.writer.flush()
    with activity_db.connection_context():
        return {
            (i.idp, i.resource_type, i.attribute): i.requests
            for i in MappingIssue.select()
        }


def soup_of(response):
    assert response.status_code == 200, response.status_code
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def send_unknowns(scim, okta):
    user = scim.create_user("ada@example.com")
    group = scim.create_group("Sales")
    ops = patch_body(
        {"op": "replace", "path": "badgeNumber", "value": "7"},
        {"op": "replace", "path": "name.nickname", "value": "x"},
        {"op": "replace", "value": {"badgeNumber": "8", "active": False}},
    )
    for _ in range(2):
        response = scim.patch(f"/Users/{user['id']}", ops)
        assert response.status_code == 200
    # The known attribute in the same request still applies.
    assert response.get_json()["active"] is False
    response = okta.patch(
        f"/Groups/{group['id']}",
        patch_body({"op": "replace", "path": "description", "value": "x"}),
    )
    assert response.status_code in (200, 204)
    return user


def test_ignored_attributes_are_counted_per_connection(app, scim, okta):
    send_unknowns(scim, okta)
    assert issues() == {
        # Named twice in one request, counted once per request.
        ("entra", "User", "badgeNumber"): 2,
        ("entra", "User", "name.nickname"): 2,
        ("okta", "Group", "description"): 1,
    }


def test_known_attributes_are_not_counted(app, scim):
    user = scim.create_user("bob@example.com")
    ops = patch_body({"op": "replace", "path": "displayName", "value": "Bob"})
    assert scim.patch(f"/Users/{user['id']}", ops).status_code == 200
    assert issues() == {}


def test_distinct_attributes_are_bounded(app, scim, monkeypatch):
    from mdm import activity_store

    monkeypatch.setattr(activity_store, "MAPPING_ISSUES_MAX", 3)
    user = scim.create_user("eve@example.com")
    ops = patch_body(
        *[{"op": "replace", "path": f"made{i}", "value": "x"} for i in range(6)]
    )
    assert scim.patch(f"/Users/{user['id']}", ops).status_code == 200
    assert len(issues()) == 3
    assert scim.patch(f"/Users/{user['id']}", ops).status_code == 200
    counted = issues()
    assert len(counted) == 3 and set(counted.values()) == {2}
    assert MAPPING_ISSUES_MAX == 500


def test_dashboard_panel_only_when_non_empty(app, console, scim, okta):
    assert soup_of(console.get("/admin/")).find(id="mapping-title") is None
    send_unknowns(scim, okta)
    activity.writer.flush()
    soup = soup_of(console.get("/admin/"))
    panel = soup.find(id="mapping-title").find_parent("section")
    rows = [
        [td.get_text(" ", strip=True) for td in tr.find_all("td")]
        for tr in panel.tbody.find_all("tr")
    ]
    assert [row[:3] for row in rows] == [["Entra ID", "2", "4"], ["Okta", "1", "1"]]
    links = [a["href"] for a in panel.tbody.find_all("a")]
    assert links == ["/admin/mapping/entra", "/admin/mapping/okta"]


def test_connection_page_gives_the_fix(app, console, scim, okta):
    send_unknowns(scim, okta)
    with app.app_context(), database.connection_context():
        CustomAttribute.create(name="defined")
    user = scim.create_user("cy@example.com")
    ops = patch_body(
        {"op": "replace", "path": f"{CUSTOM}:badge-no", "value": "1"},
    )
    assert scim.patch(f"/Users/{user['id']}", ops).status_code == 200
    activity.writer.flush()
    soup = soup_of(console.get("/admin/mapping/entra"))
    assert soup.h1.get_text() == "Mapping health: Entra ID"
    rows = {
        tr.find("td", {"data-label": "Attribute"}).get_text(): tr
        for tr in soup.tbody.find_all("tr")
    }
    assert set(rows) == {"badgeNumber", "name.nickname", f"{CUSTOM}:badge-no"}
    cost = rows["badgeNumber"]
    assert cost.find("td", {"data-label": "Requests"}).get_text() == "2"
    assert cost.find("td", {"data-label": "Resource"}).get_text() == "User"
    fix = cost.find("td", {"data-label": "Fix"})
    assert fix.get_text() == (
        "Define a custom attribute “badgeNumber”, or remove the mapping in Entra ID"
    )
    assert fix.a["href"] == "/admin/attributes"
    assert rows[f"{CUSTOM}:badge-no"].find("td", {"data-label": "Fix"}).get_text() == (
        "Define a custom attribute “badge-no”, or remove the mapping in Entra ID"
    )
    assert rows["name.nickname"].find("td", {"data-label": "Fix"}).get_text() == (
        "Remove the mapping in Entra ID"
    )
    okta_page = soup_of(console.get("/admin/mapping/okta"))
    [row] = okta_page.tbody.find_all("tr")
    assert row.find("td", {"data-label": "Fix"}).get_text() == (
        "Remove the mapping in Okta"
    )
    empty = soup_of(console.get("/admin/mapping/generic"))
    assert empty.find("p", class_="empty").get_text() == (
        "Generic SCIM sends no attributes that mdm ignores."
    )
    assert console.get("/admin/mapping/nosuch").status_code == 404


def test_clear_forgets_one_connection(app, console, scim, okta):
    send_unknowns(scim, okta)
    activity.writer.flush()
    response = console.post("/admin/mapping/entra/clear")
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/mapping/entra"
    assert issues() == {("okta", "Group", "description"): 1}
    with activity_db.connection_context():
        events = [
            (e.event, e.details)
            for e in activity.AuditEvent.select().where(
                activity.AuditEvent.event == "Mapping Health Cleared"
            )
        ]
    assert events == [("Mapping Health Cleared", "Entra ID: 2 attributes")]


@pytest.mark.parametrize("path", ["/admin/mapping/entra"])
def test_needs_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]
