"""The Users page's SCIM filter box and its saved searches."""

from urllib.parse import quote

import pytest
from bs4 import BeautifulSoup

from mdm import activity
from mdm.activity import AuditEvent
from mdm.activity import activity_db
from mdm.db import database
from mdm.models import SavedSearch

from .conftest import PASSWORD


@pytest.fixture
def people(scim):
    scim.create_user(
        "ada@contoso.com", active=False, emails=[{"value": "ada@contoso.com"}]
    )
    scim.create_user("bob@contoso.com", emails=[{"value": "bob@contoso.com"}])
    scim.create_user(
        "cy@fabrikam.com", active=False, emails=[{"value": "cy@fabrikam.com"}]
    )


def soup_of(response):
    assert response.status_code == 200, response.status_code
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def listed(response):
    """Return the usernames in the Users table, in order."""
    soup = soup_of(response)
    return [td.get_text(strip=True) for td in soup.select('td[data-label="Username"]')]


def test_scim_filter_narrows_the_list(console, people):
    wanted = 'emails co "contoso" and active eq false'
    assert listed(console.get(f"/admin/users?filter={quote(wanted)}")) == [
        "ada@contoso.com"
    ]
    # Combined with the page's own filters.
    both = f"/admin/users?filter={quote('active eq false')}&q=fabrikam"
    assert listed(console.get(both)) == ["cy@fabrikam.com"]
    assert listed(console.get("/admin/users?filter=")) == [
        "ada@contoso.com",
        "bob@contoso.com",
        "cy@fabrikam.com",
    ]


@pytest.mark.parametrize(
    "text, detail",
    [
        ("userName zz 1", "Bad SCIM filter: "),
        ('nosuch eq "x"', "Bad SCIM filter: "),
        ("(userName eq", "Bad SCIM filter: "),
        ("active eq", "Bad SCIM filter: "),
    ],
)
def test_bad_filter_shows_the_engine_detail(app, console, people, text, detail):
    from mdm.scim import filters
    from mdm.scim.errors import ScimError
    from mdm.scim.http import user_type

    with app.test_request_context(), database.connection_context():
        with pytest.raises(ScimError) as raised:
            filters.to_expression(filters.parse(text), user_type())
    soup = soup_of(console.get(f"/admin/users?filter={quote(text)}"))
    alert = soup.find(id="filter-problem")
    assert alert.get_text() == detail + (raised.value.detail or raised.value.scim_type)
    assert soup.find(id="filter")["value"] == text
    assert soup.find(id="filter")["aria-invalid"] == "true"
    # A bad filter lists nobody rather than everybody.
    assert not soup.select('td[data-label="Username"]')


def audit_events():
    activity.writer.flush()
    with activity_db.connection_context():
        return [
            (e.event, e.actor, e.details)
            for e in AuditEvent.select().order_by(AuditEvent.id)
            if "Search" in e.event
        ]


def test_save_reload_and_delete_a_search(app, console, people):
    page = soup_of(console.get("/admin/users?filter=active+eq+false&status=&page=2"))
    form = page.find("form", action="/admin/users/searches")
    assert form.find("input", {"name": "query"})["value"] == "filter=active+eq+false"
    response = console.post(
        "/admin/users/searches",
        data={"name": " Disabled ", "query": "filter=active+eq+false&page=3&x=1"},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/users?filter=active+eq+false"
    with app.app_context(), database.connection_context():
        [saved] = SavedSearch.select()
    assert (saved.name, saved.query, saved.created_by) == (
        "Disabled",
        "filter=active+eq+false",
        "alice",
    )
    page = soup_of(console.get("/admin/users"))
    link = page.select_one(".saved-list a")
    assert (link.get_text(), link["href"]) == (
        "Disabled",
        "/admin/users?filter=active+eq+false",
    )
    assert listed(console.get(link["href"])) == ["ada@contoso.com", "cy@fabrikam.com"]

    # Names are unique, whatever their case.
    again = console.post(
        "/admin/users/searches", data={"name": "disabled", "query": "q=x"}
    )
    assert again.headers["Location"] == "/admin/users?q=x"
    assert "A saved search named “disabled” already exists." in console.get(
        "/admin/users?q=x"
    ).get_data(as_text=True)

    nameless = console.post("/admin/users/searches", data={"name": " ", "query": ""})
    assert nameless.status_code == 302
    with app.app_context(), database.connection_context():
        assert SavedSearch.select().count() == 1

    delete = page.select_one(".saved-list form")["action"]
    assert delete == f"/admin/users/searches/{saved.id}/delete"
    assert console.post(delete).status_code == 302
    with app.app_context(), database.connection_context():
        assert SavedSearch.select().count() == 0
    assert console.post(delete).status_code == 302
    assert audit_events() == [
        ("Search Saved", "alice", "Disabled: filter=active+eq+false"),
        ("Saved Search Deleted", "alice", "Disabled"),
    ]


def test_no_save_form_without_a_search(console, people):
    page = soup_of(console.get("/admin/users"))
    assert page.find("form", action="/admin/users/searches") is None


def test_saved_search_forms_need_csrf(app, client, people):
    from mdm.models import Admin

    app.config["WTF_CSRF_ENABLED"] = True
    with app.app_context(), database.connection_context():
        admin = Admin(username="alice")
        admin.set_password(PASSWORD)
        admin.save()
        SavedSearch.create(name="Kept", query="q=a")
    login = soup_of(client.get("/login"))
    token = login.find("input", {"name": "csrf_token"})["value"]
    client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
    )
    page = soup_of(client.get("/admin/users?q=a"))
    assert client.post("/admin/users/searches", data={"name": "x"}).status_code == 400
    assert client.post("/admin/users/searches/1/delete").status_code == 400
    with app.app_context(), database.connection_context():
        assert [s.name for s in SavedSearch.select()] == ["Kept"]
    # The page's own forms carry the token and pass.
    token = page.select_one(".saved-list form input[name=csrf_token]")["value"]
    response = client.post(
        "/admin/users/searches",
        data={"name": "Mine", "query": "q=a", "csrf_token": token},
    )
    assert response.status_code == 302
    with app.app_context(), database.connection_context():
        assert SavedSearch.select().count() == 2
