"""Export links, SCIM filter search with saved searches and mapping health, in Chromium.

Debian's chromium is required; the tests fail, not skip, when it is missing.
Screenshots go to $MDM_SCREENSHOTS when it is set.
"""

import csv
import io
import json

from playwright.sync_api import expect

from mdm import activity

from .conftest import issue_token
from .test_e2e_browser import live  # noqa: F401 (fixture)
from .test_e2e_browser import page  # noqa: F401 (fixture)
from .test_e2e_browser import scim
from .test_e2e_browser import setup_admin
from .test_e2e_browser import shot
from .test_e2e_layout import MEASURE

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def provision(app, base):
    """Create three users and a group over SCIM; return the bearer secret."""
    _, secret = issue_token(app, "entra")
    ids = {}
    for name, active in (
        ("ann@contoso.com", True),
        ("bo@contoso.com", False),
        ("cy@fabrikam.com", False),
    ):
        status, body = scim(
            base,
            secret,
            "POST",
            "/Users",
            {
                "userName": name,
                "active": active,
                "emails": [{"value": name, "primary": True}],
            },
        )
        assert status == 201
        ids[name] = body["id"]
    status, _ = scim(
        base,
        secret,
        "POST",
        "/Groups",
        {"displayName": "Sales", "members": [{"value": i} for i in ids.values()]},
    )
    assert status == 201
    return secret, ids


def usernames(page):  # noqa: F811 (fixture name)
    return page.locator('td[data-label="Username"]').all_inner_texts()


def check_layout(page, name):  # noqa: F811 (fixture name)
    """Screenshot at desktop and phone widths; nothing may overflow."""
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        shot(page, f"{name}-{width}")
        assert page.evaluate(MEASURE) == [], f"{name} at {width}px"
    page.set_viewport_size({"width": 1280, "height": 900})


def test_export_links_download_the_filtered_directory(live, page):  # noqa: F811
    app, base = live
    setup_admin(page, app, base)
    provision(app, base)
    page.goto(f"{base}/admin/users?status=disabled")
    expect(page.get_by_role("link", name="Export CSV")).to_have_attribute(
        "href", "/admin/users.csv?status=disabled"
    )
    check_layout(page, "directory-users")
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    download = info.value
    assert download.suggested_filename.startswith("users-")
    with open(download.path(), encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["userName"] for r in rows] == ["bo@contoso.com", "cy@fabrikam.com"]
    assert {r["groups"] for r in rows} == {"Sales"}

    page.goto(f"{base}/admin/groups")
    check_layout(page, "directory-groups")
    with page.expect_download() as info:
        page.get_by_role("link", name="Export JSON").click()
    with open(info.value.path(), encoding="utf-8") as handle:
        groups = json.load(handle)
    assert [g["displayName"] for g in groups] == ["Sales"]
    assert sorted(m["userName"] for m in groups[0]["members"]) == [
        "ann@contoso.com",
        "bo@contoso.com",
        "cy@fabrikam.com",
    ]


def test_scim_filter_search_saved_and_reloaded(live, page):  # noqa: F811
    app, base = live
    setup_admin(page, app, base)
    provision(app, base)
    page.goto(f"{base}/admin/users")
    page.get_by_label("SCIM filter").fill("userName zz 1")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("alert")).to_contain_text("Bad SCIM filter:")
    check_layout(page, "directory-bad-filter")

    page.get_by_label("SCIM filter").fill('emails co "contoso" and active eq false')
    page.get_by_role("button", name="Apply").click()
    assert usernames(page) == ["bo@contoso.com"]
    page.get_by_label("Save this search as").fill("Disabled Contoso")
    page.get_by_role("button", name="Save this search").click()
    expect(page.get_by_text("Search “Disabled Contoso” saved.")).to_be_visible()
    check_layout(page, "directory-saved-search")

    page.get_by_role("link", name="Clear").click()
    assert len(usernames(page)) == 3
    page.get_by_role("link", name="Disabled Contoso").click()
    assert usernames(page) == ["bo@contoso.com"]
    expect(page.get_by_label("SCIM filter")).to_have_value(
        'emails co "contoso" and active eq false'
    )
    # The export links carry the SCIM filter too.
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    with open(info.value.path(), encoding="utf-8") as handle:
        text = handle.read()
    assert [r["userName"] for r in csv.DictReader(io.StringIO(text))] == [
        "bo@contoso.com"
    ]

    page.get_by_role("button", name="Delete saved search Disabled Contoso").click()
    expect(page.get_by_text("Saved search “Disabled Contoso” deleted.")).to_be_visible()
    expect(page.get_by_role("link", name="Disabled Contoso")).to_have_count(0)


def test_mapping_health_panel_and_page(live, page):  # noqa: F811
    app, base = live
    setup_admin(page, app, base)
    secret, ids = provision(app, base)
    status, _ = scim(
        base,
        secret,
        "PATCH",
        f"/Users/{ids['ann@contoso.com']}",
        {
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "replace", "path": "badgeNumber", "value": "17"},
                {"op": "replace", "path": "name.nickname", "value": "Annie"},
            ],
        },
    )
    assert status == 200
    activity.writer.flush()
    page.goto(f"{base}/admin/")
    panel = page.locator(
        "section", has=page.get_by_role("heading", name="Mapping health")
    )
    expect(panel).to_contain_text("Entra ID")
    check_layout(page, "directory-dashboard-mapping")
    panel.get_by_role("link", name="Entra ID").click()
    expect(page.get_by_role("heading", name="Mapping health: Entra ID")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="badgeNumber")
    expect(
        row.get_by_role("link", name="Define a custom attribute “badgeNumber”")
    ).to_be_visible()
    check_layout(page, "directory-mapping-entra")
    row.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Custom Attributes")).to_be_visible()
