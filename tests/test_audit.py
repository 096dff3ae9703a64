"""Audit trail: events the console and the CLI record, the Audit trail page and its exports."""

import csv
import io
import json
from datetime import timedelta
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest
from bs4 import BeautifulSoup

from mdm import activity
from mdm.activity import AuditEvent
from mdm.activity import activity_db
from mdm.db import database
from mdm.models import Admin
from mdm.models import BearerToken
from mdm.models import CustomAttribute
from mdm.models import utcnow

from .conftest import PASSWORD

HEADERS = ["Time", "Event", "Actor", "Address", "Details"]


def events(name=None):
    """Return recorded audit events, oldest first, after the writer catches up."""
    activity.writer.flush()
    with activity_db.connection_context():
        query = AuditEvent.select().order_by(AuditEvent.id)
        if name:
            query = query.where(AuditEvent.event == name)
        return list(query)


def add(event, minutes_ago=0, actor="alice", address="10.0.0.1", details=""):
    """Insert one audit event directly and return its id."""
    with activity_db.connection_context():
        return AuditEvent.insert(
            time=utcnow() - timedelta(minutes=minutes_ago),
            event=event,
            actor=actor,
            address=address,
            details=details,
        ).execute()


def page(response):
    assert response.status_code == 200, response.status_code
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def text(node):
    return " ".join(node.get_text().split())


def rows(soup):
    """Return the audit table's rows as {header: text}."""
    found = soup.main.find("table")
    if found is None:
        return []
    headers = [text(th) for th in found.select("thead th")]
    return [
        {h: text(td) for h, td in zip(headers, tr.find_all("td"), strict=True)}
        for tr in found.select("tbody tr")
    ]


def details_of(client, query=""):
    """Return the Details column of the audit page."""
    return [r["Details"] for r in rows(page(client.get(f"/admin/audit{query}")))]


def tokens(app, idp="entra"):
    with app.app_context(), database.connection_context():
        return list(
            BearerToken.select().where(BearerToken.idp == idp).order_by(BearerToken.id)
        )


#
# Events the console records
#


def test_sign_in_and_failed_sign_in(app, client, console):
    signed_in = events("Admin Signed In")
    assert len(signed_in) == 1
    assert signed_in[0].actor == "alice"
    assert signed_in[0].address == "127.0.0.1"

    other = app.test_client()
    response = other.post("/login", data={"username": "mallory", "password": "nope"})
    assert response.status_code == 200
    failed = events("Admin Sign-in Failed")
    assert len(failed) == 1
    assert failed[0].actor == ""
    assert "mallory" in failed[0].details
    assert "nope" not in failed[0].details


def test_token_lifecycle_events(app, console):
    response = console.post(
        "/admin/provisioning/entra/generate", data={"label": "prod", "expiry": "never"}
    )
    assert response.status_code == 302
    (token,) = tokens(app)
    url = f"/admin/provisioning/entra/tokens/{token.id}"
    console.post(f"{url}/deactivate")  # its only token: confirmed
    console.post(url, data={"action": "activate"})
    console.post(f"{url}/renew")
    console.post(f"{url}/remove")
    recorded = [e for e in events() if e.event.startswith("SCIM Token")]
    assert [e.event for e in recorded] == [
        "SCIM Token Created",
        "SCIM Token Disabled",
        "SCIM Token Enabled",
        "SCIM Token Renewed",
        "SCIM Token Deleted",
    ]
    for event in recorded:
        assert "IdP: Entra ID" in event.details
        assert event.actor == "alice"
        assert event.address == "127.0.0.1"
    assert token.key in recorded[0].details
    assert "prod" in recorded[0].details


def test_token_secret_never_in_audit(app, console):
    response = console.post(
        "/admin/provisioning/okta/generate",
        data={"expiry": "never"},
        follow_redirects=True,
    )
    soup = page(response)
    secret = soup.find("label", string="Token").find_next("input")["value"]
    assert secret
    assert all(secret not in e.details for e in events())
    assert secret not in console.get("/admin/audit").get_data(as_text=True)
    assert secret not in console.get("/admin/audit.json").get_data(as_text=True)
    created = events("SCIM Token Created")[0]
    assert "IdP: Okta" in created.details


def test_user_purged(app, console, scim):
    user = scim.create_user("gone@example.com")
    assert scim.delete(f"/Users/{user['id']}").status_code == 204
    response = console.post(f"/admin/users/{user['id']}/purge")
    assert response.status_code == 302
    (purged,) = events("User Purged")
    assert purged.actor == "alice"
    assert "gone@example.com" in purged.details
    assert user["id"] in purged.details
    assert "SCIM Entra ID" in purged.details


def test_custom_attribute_events(app, console):
    response = console.post(
        "/admin/attributes", data={"name": "costCenter", "type": "string"}
    )
    assert response.status_code == 302
    with app.app_context(), database.connection_context():
        attribute = CustomAttribute.get(CustomAttribute.name == "costCenter")
    console.post(f"/admin/attributes/{attribute.id}/delete")
    (added,) = events("Custom Attribute Added")
    (deleted,) = events("Custom Attribute Deleted")
    assert added.details.startswith("costCenter")
    assert deleted.details.startswith("costCenter")
    assert added.actor == deleted.actor == "alice"


#
# Events the CLI records
#


def test_cli_token_create(app, runner):
    result = runner.invoke(args=["token", "create", "--idp", "okta"])
    assert result.exit_code == 0, result.output
    (created,) = events("SCIM Token Created")
    assert created.actor == "cli"
    assert "IdP: Okta" in created.details
    secret = result.stdout.strip().splitlines()[0]
    assert secret not in created.details


#
# The Audit trail page
#


def test_requires_sign_in(client):
    for url in ("/admin/audit", "/admin/audit.csv", "/admin/audit.json"):
        response = client.get(url)
        assert response.status_code == 302
        assert urlsplit(response.headers["Location"]).path == "/login"


def test_empty_state(app, client):
    # Sign in without recording: the event table starts empty.
    with app.app_context(), database.connection_context():
        admin = Admin(username="alice")
        admin.set_password(PASSWORD)
        admin.save()
    client.post("/login", data={"username": "alice", "password": PASSWORD})
    activity.writer.flush()
    with activity_db.connection_context():
        AuditEvent.delete().execute()
    soup = page(client.get("/admin/audit"))
    assert soup.main.find("h1").get_text() == "Audit Trail"
    assert soup.main.find("table") is None
    assert "No audit events yet" in text(soup.main.find(class_="empty"))


def test_list_newest_first_with_columns(console):
    events()
    add("SCIM Token Created", minutes_ago=5, details="IdP: Entra ID; token k1")
    add("User Purged", minutes_ago=1, actor="bob", details="x (id)")
    soup = page(console.get("/admin/audit"))
    table = soup.main.find("table")
    assert [text(th) for th in table.select("thead th")] == HEADERS
    found = rows(soup)
    assert [r["Event"] for r in found] == [
        "Admin Signed In",
        "User Purged",
        "SCIM Token Created",
    ]
    assert found[1]["Actor"] == "bob"
    assert found[2]["Details"] == "IdP: Entra ID; token k1"
    for td in table.select("tbody td"):
        assert td["data-label"] in HEADERS
    assert console.get("/admin/audit").headers["Cache-Control"] == "no-store"


@pytest.fixture
def trail(console):
    """Events that differ in every filtered column."""
    events()  # the sign-in event first
    add("SCIM Token Created", minutes_ago=10, details="IdP: Entra ID; token a1")
    add("SCIM Token Deleted", minutes_ago=60 * 30, actor="cli", details="IdP: Okta; b2")
    add("Admin Sign-in Failed", minutes_ago=60 * 24 * 10, actor="", details="u 'eve'")
    add("User Purged", minutes_ago=5, actor="Bob", details="100% gone_user")
    return console


@pytest.mark.parametrize(
    "query, expected",
    [
        ("?event=SCIM+Token+Created", ["IdP: Entra ID; token a1"]),
        ("?event=User+Purged", ["100% gone_user"]),
        ("?actor=cli", ["IdP: Okta; b2"]),
        ("?actor=bob", ["100% gone_user"]),
        ("?q=okta", ["IdP: Okta; b2"]),
        ("?q=%25", ["100% gone_user"]),
        ("?q=_", ["100% gone_user"]),
        ("?q=eve", ["u 'eve'"]),
        ("?range=1h", ["—", "100% gone_user", "IdP: Entra ID; token a1"]),
        (
            "?range=7d",
            ["—", "100% gone_user", "IdP: Entra ID; token a1", "IdP: Okta; b2"],
        ),
        ("?event=SCIM+Token+Created&actor=cli", []),
    ],
)
def test_filters(trail, query, expected):
    assert details_of(trail, query) == expected


def test_date_filters(trail):
    three_days_ago = (utcnow() - timedelta(days=3)).date().isoformat()
    assert details_of(trail, f"?to={three_days_ago}") == ["u 'eve'"]
    assert "u 'eve'" not in details_of(trail, f"?from={three_days_ago}")
    soup = page(trail.get("/admin/audit?to=31/12/2020"))
    assert "Ignored the “To” date" in text(soup.main.find(class_="banner"))


def test_event_select_lists_distinct_events(trail):
    soup = page(trail.get("/admin/audit?event=User+Purged"))
    select = soup.main.find("select", id="event")
    options = [o["value"] for o in select.find_all("option")]
    assert options == [
        "",
        "Admin Sign-in Failed",
        "Admin Signed In",
        "SCIM Token Created",
        "SCIM Token Deleted",
        "User Purged",
    ]
    assert select.find("option", selected=True)["value"] == "User Purged"
    assert soup.main.find("label", attrs={"for": "event"})
    assert soup.main.find("label", attrs={"for": "actor"})
    actors = [o["value"] for o in soup.main.find("datalist").find_all("option")]
    assert actors == ["Bob", "alice", "cli"]
    assert text(soup.main.find(class_="empty") or soup.main) != ""


def test_no_matches(trail):
    soup = page(trail.get("/admin/audit?q=zzz-nothing"))
    assert (
        text(soup.main.find(class_="empty")) == "No audit events match these filters."
    )


def test_pagination(console):
    events()
    for i in range(60):
        add("User Purged", details=f"u{i}")
    assert details_of(console, "?event=User+Purged")[0] == "u59"
    soup = page(console.get("/admin/audit?event=User+Purged"))
    nav = soup.main.find("nav", class_="pager")
    assert "1–50 of 60 events" in text(nav)
    link = nav.find("a", rel="next")["href"]
    assert parse_qs(urlsplit(link).query) == {"event": ["User Purged"], "page": ["2"]}
    assert details_of(console, "?event=User+Purged&page=2") == [
        f"u{i}" for i in range(9, -1, -1)
    ]


def test_export_links_keep_filters(trail):
    soup = page(trail.get("/admin/audit?actor=cli&page=2"))
    for label, path in (
        ("Export CSV", "/admin/audit.csv"),
        ("Export JSON", "/admin/audit.json"),
    ):
        href = soup.main.find("a", string=label)["href"]
        assert urlsplit(href).path == path
        assert parse_qs(urlsplit(href).query) == {"actor": ["cli"]}


def test_csv_export_is_injection_safe(console):
    events()
    for details in ['=HYPERLINK("http://x")', "+1", "@SUM(1)", "-1", "fine"]:
        add("Custom Attribute Added", details=details)
    add("Admin Signed In", actor="=cmd")
    response = console.get("/admin/audit.csv?event=Custom+Attribute+Added")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["Cache-Control"] == "no-store"
    found = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["details"] for r in found] == [
        "fine",
        "'-1",
        "'@SUM(1)",
        "'+1",
        '\'=HYPERLINK("http://x")',
    ]
    assert list(found[0]) == ["id", "time_utc", "event", "actor", "address", "details"]
    everything = list(
        csv.DictReader(
            io.StringIO(console.get("/admin/audit.csv").get_data(as_text=True))
        )
    )
    assert everything[0]["actor"] == "'=cmd"


def test_json_export(console):
    events()
    add("SCIM Token Created", actor="cli", details='IdP: Okta; "quoted"')
    add("User Purged", details="=not-a-formula")
    response = console.get("/admin/audit.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert ".json" in response.headers["Content-Disposition"]
    data = json.loads(response.get_data(as_text=True))
    assert [e["event"] for e in data] == [
        "User Purged",
        "SCIM Token Created",
        "Admin Signed In",
    ]
    assert data[0]["details"] == "=not-a-formula"  # JSON needs no formula escaping
    assert data[1] == {
        "id": data[1]["id"],
        "time": data[1]["time"],
        "event": "SCIM Token Created",
        "actor": "cli",
        "address": "10.0.0.1",
        "details": 'IdP: Okta; "quoted"',
    }
    assert data[1]["time"].endswith("Z")
    filtered = json.loads(
        console.get("/admin/audit.json?actor=cli").get_data(as_text=True)
    )
    assert [e["event"] for e in filtered] == ["SCIM Token Created"]
    empty = json.loads(console.get("/admin/audit.json?q=zzz").get_data(as_text=True))
    assert empty == []


def test_console_events_show_on_the_page(app, console):
    console.post(
        "/admin/provisioning/entra/generate", data={"label": "prod", "expiry": "never"}
    )
    events()
    soup = page(console.get("/admin/audit?event=SCIM+Token+Created"))
    (row,) = rows(soup)
    assert row["Actor"] == "alice"
    assert "IdP: Entra ID" in row["Details"]
