"""The console dashboard: directory counts, connection cards, request charts and banners."""

from datetime import datetime
from datetime import timedelta

import pytest
from bs4 import BeautifulSoup
from playhouse.test_utils import count_queries
from werkzeug.routing import BuildError

from mdm.activity import ActivityEntry
from mdm.activity import Refusal
from mdm.activity import activity_db
from mdm.activity import writer
from mdm.activity_store import recount
from mdm.console import dashboard
from mdm.db import database
from mdm.models import BearerToken
from mdm.models import OAuthClient
from mdm.models import utcnow

from .conftest import ScimClient
from .conftest import issue_token

# Half past an hour already gone, so rows placed minutes before NOW share its hourly bucket
# whatever the wall clock reads when the suite runs.
NOW = utcnow().replace(minute=30, second=0, microsecond=0) - timedelta(hours=1)


@pytest.fixture(autouse=True)
def frozen(monkeypatch):
    """Pin the dashboard's clock so rows placed relative to NOW land in known buckets."""
    monkeypatch.setattr(dashboard, "utcnow", lambda: NOW)


def add(*rows):
    """Insert activity rows directly, oldest first, as the writer would."""
    writer.flush()
    ids = []
    with activity_db.connection_context():
        for row in sorted(rows, key=lambda r: r["time"]):
            values = {"method": "GET", "path": "/scim/v2/Users", "status": 200}
            values.update(row)
            ids.append(ActivityEntry.create(**values).id)
    # Rows inserted by hand bypass the writer, which keeps the dashboard's rollup.
    recount()
    return ids


def ago(**delta):
    return NOW - timedelta(**delta)


def page(console):
    response = console.get("/admin/")
    assert response.status_code == 200
    return BeautifulSoup(response.data, "html.parser")


def banners(console):
    return [" ".join(b.get_text().split()) for b in page(console).select("div.banner")]


def card(soup, idp):
    return soup.select_one(f"#connection-{idp}")


def text(node):
    return " ".join(node.get_text().split())


#
# Access and empty state
#


def test_dashboard_needs_sign_in(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_empty_state_points_to_user_provisioning(console):
    soup = page(console)
    start = soup.select_one(".dash-start")
    assert start is not None and "Get started" in text(start)
    assert start.find("a", string="User Provisioning")["href"] == (
        "/admin/provisioning/entra"
    )
    assert soup.select_one(".dash-counts") is None
    assert "No SCIM requests in the last 7 days" in text(soup)
    assert soup.select("svg.dash-chart") == []
    assert soup.select("div.banner") == []
    assert text(card(soup, "entra").select_one(".dash-state")) == "Not connected"


def test_page_is_not_cached_and_has_no_inline_styles(console):
    response = console.get("/admin/")
    assert response.headers["Cache-Control"] == "no-store"
    add({"time": ago(minutes=5)})
    soup = page(console)
    assert soup.select("[style]") == []
    assert soup.select("style") == []


#
# Directory counts
#


def test_counts_after_scim_provisioning(app, console, scim):
    ada = scim.create_user("ada@example.com")
    bea = scim.create_user("bea@example.com")
    cy = scim.create_user("cy@example.com")
    scim.create_user("dot@example.com")
    disable = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
    assert scim.patch(f"/Users/{bea['id']}", disable).status_code == 200
    staff = scim.create_group("Staff", members=[ada["id"], bea["id"], cy["id"]])
    gone = scim.create_group("Gone", members=[ada["id"]])
    scim.create_group("Empty")
    assert scim.delete(f"/Users/{cy['id']}").status_code == 204
    assert scim.delete(f"/Groups/{gone['id']}").status_code == 204
    assert staff["id"]

    with app.app_context(), database.connection_context():
        counts = dashboard.directory_counts()
    assert counts["active"] == 2
    assert counts["disabled"] == 1
    assert counts["deprovisioned"] == 1
    assert counts["groups"] == 2
    # Staff keeps ada and bea; cy is deprovisioned and Gone is a deleted group.
    assert counts["memberships"] == 2

    soup = page(console)
    assert soup.select_one(".dash-start") is None
    shown = {
        key: text(soup.select_one(f"#count-{key}"))
        for key in ("active", "disabled", "deprovisioned", "groups", "memberships")
    }
    assert shown == {
        "active": "2",
        "disabled": "1",
        "deprovisioned": "1",
        "groups": "2",
        "memberships": "2",
    }
    links = [a["href"] for a in soup.select(".dash-counts a")]
    assert "/admin/users?status=disabled" in links


def test_counts_are_aggregate_queries(app):
    """Counting runs COUNT queries, never loads rows into Python."""
    with app.app_context(), database.connection_context():
        with count_queries() as counted:
            dashboard.directory_counts()
    executed = [record.msg[0] for record in counted.get_queries()]
    selects = [sql for sql in executed if sql.lstrip().upper().startswith("SELECT")]
    assert 0 < len(selects) <= 4
    assert all(("COUNT(" in sql or "EXISTS(" in sql) for sql in selects), selects


#
# Chart data
#


def test_hourly_series_fills_and_clips_the_window():
    now = datetime(2025, 3, 10, 14, 25)
    rows = [
        ("2025-03-10 14", 3, 1),
        ("2025-03-10 12", 2, 0),
        ("2025-03-09 15", 5, 5),  # the oldest of 24 buckets
        ("2025-03-09 14", 9, 9),  # one hour too old
        ("2025-03-10 15", 1, 1),  # after now
        (None, 4, 4),
    ]
    series = dashboard.hourly_series(rows, now, 24)
    assert len(series) == 24
    assert series[0] == (datetime(2025, 3, 9, 15), 5, 5)
    assert series[-1] == (datetime(2025, 3, 10, 14), 3, 1)
    assert series[-3] == (datetime(2025, 3, 10, 12), 2, 0)
    assert series[-2] == (datetime(2025, 3, 10, 13), 0, 0)
    assert sum(b.ok for b in series) == 10
    assert sum(b.failed for b in series) == 6

    week = dashboard.hourly_series(rows, now, 168)
    assert len(week) == 168
    assert week[0].start == datetime(2025, 3, 3, 15)
    assert (sum(b.ok for b in week), sum(b.failed for b in week)) == (19, 15)
    days = dashboard.daily_totals(week)
    assert days[0][0].isoformat() == "2025-03-03"
    assert days[-1] == (datetime(2025, 3, 10).date(), 5, 1)
    assert sum(ok for _, ok, _ in days) == 19


def test_hourly_rows_group_by_hour_in_sql(app):
    base = NOW.replace(minute=0, second=0, microsecond=0)
    add(
        {"time": base + timedelta(minutes=1), "status": 200},
        {"time": base + timedelta(seconds=1), "status": 201},
        {"time": base + timedelta(seconds=2), "status": 409},
        {"time": base - timedelta(minutes=50), "status": 304},
        {"time": base - timedelta(minutes=40), "status": 500},
        {"time": base - timedelta(hours=30), "status": 401},
        {"time": base - timedelta(hours=200), "status": 200},
    )
    since = dashboard.window_start(NOW, 168)
    rows = dashboard.hourly_rows(since)
    label = "%Y-%m-%d %H"
    assert sorted(rows) == sorted(
        [
            (base.strftime(label), 2, 1),
            ((base - timedelta(hours=1)).strftime(label), 1, 1),
            ((base - timedelta(hours=30)).strftime(label), 0, 1),
        ]
    )
    day = dashboard.hourly_series(rows, NOW, 24)
    assert (day[-1].ok, day[-1].failed) == (2, 1)
    assert (day[-2].ok, day[-2].failed) == (1, 1)
    assert sum(b.ok + b.failed for b in day) == 5
    week = dashboard.hourly_series(rows, NOW, 168)
    assert sum(b.ok + b.failed for b in week) == 6


def test_charts_render_one_bar_per_hour(console):
    add(
        {"time": ago(minutes=1), "status": 200},
        {"time": ago(minutes=1), "status": 201},
        {"time": ago(minutes=1), "status": 404},
        {"time": ago(hours=3), "status": 500},
        {"time": ago(days=3), "status": 200},
    )
    soup = page(console)
    day = soup.select_one("svg#chart-day")
    week = soup.select_one("svg#chart-week")
    assert day["role"] == "img"
    assert day["aria-labelledby"] == "chart-day-title chart-day-desc"
    assert "last 24 hours" in day.find("title").get_text()
    assert "4 requests: 2 succeeded, 2 failed" in day.find("desc").get_text()
    bars = day.select("g.dash-bar")
    assert len(bars) == 24
    assert len(week.select("g.dash-bar")) == 168

    newest = bars[-1]
    hour = NOW.strftime("%Y-%m-%d %H:00")
    assert newest.find("title").get_text() == f"{hour} UTC: 2 succeeded, 1 failed"
    ok = newest.select_one("rect.dash-ok")
    failed = newest.select_one("rect.dash-failed")
    # Failures sit on top of successes, in proportion.
    assert float(ok["height"]) == pytest.approx(2 * float(failed["height"]))
    assert float(failed["y"]) + float(failed["height"]) == pytest.approx(float(ok["y"]))
    three_ago = bars[-4]
    assert three_ago.select_one("rect.dash-ok") is None
    assert three_ago.select_one("rect.dash-failed") is not None
    assert bars[-2].select("rect.dash-ok, rect.dash-failed") == []

    labels = [t.get_text() for t in day.select("text.dash-label")]
    assert len(labels) == 8
    assert all(label.endswith(":00") and int(label[:2]) % 3 == 0 for label in labels)
    week_labels = [t.get_text() for t in week.select("text.dash-label")]
    assert len(week_labels) == 7

    table = soup.select_one("table#table-day")
    assert "visually-hidden" in table["class"]
    assert len(table.select("tbody tr")) == 24
    last = [td.get_text() for td in table.select("tbody tr")[-1].find_all("td")]
    assert last == ["2", "1"]
    week_rows = soup.select("table#table-week tbody tr")
    assert len(week_rows) in (7, 8)
    assert sum(int(r.find_all("td")[0].get_text()) for r in week_rows) == 3
    assert "5 requests, 2 failed (40.0%)" in text(soup.select(".dash-summary")[1])


#
# Connection cards
#


def test_connection_card_last_success_error_and_day_counts(app, console):
    issue_token(app, "entra")
    add(
        {"time": ago(hours=30), "idp": "entra", "status": 500},
        {"time": ago(hours=3), "idp": "entra", "status": 200},
        {"time": ago(hours=1, minutes=50), "idp": "okta", "status": 201},
    )
    (error_id,) = add(
        {
            "time": ago(hours=2),
            "idp": "entra",
            "method": "POST",
            "status": 409,
            "scim_type": "uniqueness",
            "detail": "userName ada@example.com is taken.",
        }
    )
    add(
        {
            "time": ago(minutes=10),
            "idp": "entra",
            "method": "PATCH",
            "path": "/scim/v2/Users/abc",
        },
        {"time": ago(minutes=5), "idp": None, "status": 401},
    )
    soup = page(console)
    entra = card(soup, "entra")
    assert text(entra.select_one(".dash-tokens")) == "1 active"
    success = text(entra.select_one(".dash-last-success"))
    assert "PATCH /scim/v2/Users/abc" in success
    assert ago(minutes=10).strftime("%Y-%m-%d %H:%M") in success
    error = entra.select_one(".dash-last-error")
    assert "409" in text(error) and "uniqueness" in text(error)
    assert "userName ada@example.com is taken." in text(error)
    assert error.find("a")["href"] == f"/admin/activity/{error_id}"
    assert "10 min ago" in text(entra.select_one(".dash-last-request"))
    assert text(entra.select_one(".dash-day")) == "3 requests, 1 failed"
    assert text(entra.select_one(".dash-state")) == "Connected"

    okta = card(soup, "okta")
    assert text(okta.select_one(".dash-tokens")) == "0 active"
    assert text(okta.select_one(".dash-last-error")) == "None"
    assert text(okta.select_one(".dash-day")) == "1 request, 0 failed"
    generic = card(soup, "generic")
    assert text(generic.select_one(".dash-last-request")) == "No requests yet"
    assert text(generic.select_one(".dash-state")) == "Not connected"


def test_real_scim_traffic_shows_on_its_card(app, console, scim):
    scim.create_user("ada@example.com")
    assert scim.post("/Users", {"userName": "ada@example.com"}).status_code == 409
    writer.flush()
    entra = card(page(console), "entra")
    assert "POST /scim/v2/Users" in text(entra.select_one(".dash-last-success"))
    assert "409" in text(entra.select_one(".dash-last-error"))
    assert text(entra.select_one(".dash-day")) == "2 requests, 1 failed"


def test_a_bulk_request_counts_once_and_its_operations_apart(app, console, scim):
    response = scim.post(
        "/Bulk",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "a",
                    "data": {"userName": "a@x"},
                },
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "b",
                    "data": {"userName": "b@x"},
                },
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "c",
                    "data": {"userName": "a@x"},
                },
            ],
        },
    )
    assert response.status_code == 200
    writer.flush()
    entra = card(page(console), "entra")
    assert text(entra.select_one(".dash-day")) == (
        "1 request, 0 failed; 3 Bulk operations, 1 failed"
    )
    with app.app_context():
        rows = dashboard.hourly_rows(utcnow() - timedelta(hours=1))
    assert sum(ok + failed for _, ok, failed in rows) == 1


@pytest.mark.parametrize(
    ("last", "state"),
    [
        (timedelta(hours=2), "Cycle overdue"),
        (timedelta(minutes=81), "Cycle overdue"),
        (timedelta(minutes=79), "Connected"),
        (timedelta(minutes=10), "Connected"),
    ],
)
def test_entra_cycle_overdue(app, console, last, state):
    issue_token(app, "entra")
    add({"time": NOW - last, "idp": "entra"})
    entra = card(page(console), "entra")
    assert text(entra.select_one(".dash-state")) == state
    assert ("provisioning cycle about every 40 minutes" in text(entra)) == (
        state == "Cycle overdue"
    )


def test_no_requests_yet_and_quiet_push_connections(app, console):
    issue_token(app, "entra")
    issue_token(app, "okta")
    add({"time": ago(hours=5), "idp": "okta"})
    soup = page(console)
    assert text(card(soup, "entra").select_one(".dash-state")) == "No requests yet"
    # Okta pushes changes as they happen: hours of quiet are not an overdue cycle.
    assert text(card(soup, "okta").select_one(".dash-state")) == "Connected"


def test_connection_state_rules():
    state = dashboard.connection_state
    token = object()
    assert state("entra", [], 0, None, NOW)[0] == "Not connected"
    assert state("entra", [token], 1, None, NOW)[0] == "No requests yet"
    assert state("entra", [token], 0, None, NOW)[0] == "No active token"
    assert state("entra", [token], 0, ago(minutes=5), NOW)[0] == "No active token"
    assert state("entra", [token], 1, ago(hours=2), NOW)[0] == "Cycle overdue"
    assert state("entra", [token], 1, ago(minutes=10), NOW)[0] == "Connected"
    assert state("generic", [token], 1, ago(hours=2), NOW)[0] == "Connected"


#
# Banners
#


def test_healthy_connection_shows_no_banner(app, console):
    issue_token(app, "entra", expires_in_days=365)
    add(*({"time": ago(minutes=m), "idp": "entra"} for m in range(1, 20)))
    assert banners(console) == []


def test_recent_401_banner(app, client, console):
    """A token of this server that no longer works raises the bad-token alarm."""
    token, secret = issue_token(app, "entra")
    with database.connection_context():
        BearerToken.get_by_id(token.id).set_active(False)
    assert ScimClient(client, secret).get("/Users").status_code == 401
    writer.flush()
    shown = banners(console)
    assert len(shown) == 1
    assert "1 request in the last 80 minutes was refused with 401" in shown[0]
    assert shown[0].endswith(
        "Entra ID is using a token or client secret that is inactive, removed, "
        "renewed or expired; Entra will quarantine provisioning. See refused requests"
    )


def refusal(minutes, **fields):
    """Insert one refusal count whose last request was ``minutes`` before NOW."""
    writer.flush()
    values = {
        "bucket": ago(minutes=minutes).replace(second=0),
        "status": 401,
        "reason": "inactive token",
        "idp": "entra",
        "token_key": "abc123",
        "client_address": "10.0.0.1",
        "requests": 1,
        "last_time": ago(minutes=minutes),
    }
    values.update(fields)
    with activity_db.connection_context():
        Refusal.create(**values)


def test_401_banner_only_within_the_cycle(console):
    refusal(81)
    refusal(5, status=404, client_address="10.0.0.4")
    assert banners(console) == []
    refusal(79, client_address="10.0.0.2")
    refusal(2, client_address="10.0.0.3")
    (shown,) = banners(console)
    assert "2 requests in the last 80 minutes were refused with 401" in shown


def test_expiring_token_banner(app, console):
    token, _ = issue_token(app, "okta", expires_in_days=10)
    issue_token(app, "entra", expires_in_days=60)
    (shown,) = banners(console)
    assert f"Okta token {token.key} expires in 10 days" in shown
    assert "/admin/provisioning/okta" in str(page(console).select_one("div.banner"))


def test_inactive_expiring_token_has_no_expiry_banner(app, console):
    token, _ = issue_token(app, "okta", expires_in_days=10)
    with app.app_context(), database.connection_context():
        BearerToken.get_by_id(token.id).set_active(False)
    assert banners(console) == []


def test_no_active_token_banner_only_after_activity(app, console):
    token, _ = issue_token(app, "entra")
    with app.app_context(), database.connection_context():
        BearerToken.get_by_id(token.id).set_active(False)
    assert banners(console) == []
    add({"time": ago(days=2), "idp": "entra"})
    (shown,) = banners(console)
    assert shown.startswith("Entra ID has no active token")
    soup = page(console)
    assert text(card(soup, "entra").select_one(".dash-state")) == "No active token"


def test_scim_disabled_banner(app, console):
    assert banners(console) == []
    app.config["SCIM_ENABLED"] = False
    (shown,) = banners(console)
    assert "Provisioning is disabled by the operator" in shown


def test_activity_links(app):
    with app.test_request_context():
        assert dashboard.activity_entry_url(7) == "/admin/activity/7"
        assert dashboard.activity_url() == "/admin/activity"
        assert dashboard.activity_url(idp="okta", range="24h") == (
            "/admin/activity?idp=okta&range=24h"
        )


def test_activity_links_work_before_the_log_pages_exist(app, console, monkeypatch):
    """The dashboard renders even when the activity endpoints are not registered."""
    real_url_for = dashboard.url_for

    def url_for(endpoint, **values):
        if endpoint.startswith("console.activity"):
            raise BuildError(endpoint, values, "GET")
        return real_url_for(endpoint, **values)

    monkeypatch.setattr(dashboard, "url_for", url_for)
    issue_token(app, "entra")
    (entry_id,) = add({"time": ago(minutes=3), "idp": "entra", "status": 500})
    soup = page(console)
    link = card(soup, "entra").select_one(".dash-last-error a")
    assert link["href"] == f"/admin/activity/{entry_id}"
    day = card(soup, "entra").select_one(".dash-day a")
    assert day["href"] == "/admin/activity?idp=entra&range=24h"


def banner_classes(console):
    return [
        (b["class"][-1], " ".join(b.get_text().split()))
        for b in page(console).select("div.banner")
    ]


def test_unknown_clients_knocking_raise_no_bad_token_alarm(client, console):
    """No token, someone else's token or a guessed key: counted, told apart, no alarm."""
    for authorization in (None, "Bearer eyJhbGciOi.x.y", "Bearer mdm_0123abcd_guess"):
        headers = {"User-Agent": "python-requests/2.32"}
        if authorization:
            headers["Authorization"] = authorization
        assert client.get("/scim/v2/Users", headers=headers).status_code == 401
    writer.flush()
    assert banner_classes(console) == [
        (
            "info",
            "Unknown clients are knocking: 3 requests in the last 80 minutes were "
            "refused with 401, with no token or one this server never issued. They "
            "are counted, not logged; no identity provider is affected. "
            "See refused requests",
        )
    ]


def test_a_removed_token_in_use_raises_the_bad_token_alarm(app, client, console):
    token, secret = issue_token(app, "entra")
    response = console.post(f"/admin/provisioning/entra/tokens/{token.id}/remove")
    assert response.status_code == 302
    with database.connection_context():
        assert BearerToken.select().count() == 0
    assert ScimClient(client, secret).get("/Users").status_code == 401
    writer.flush()
    (shown,) = banner_classes(console)
    assert shown == (
        "danger",
        "1 request in the last 80 minutes was refused with 401. Entra ID is using "
        "a token or client secret that is inactive, removed, renewed or expired; "
        "Entra will quarantine provisioning. See refused requests",
    )


def test_a_renewed_tokens_old_secret_raises_the_bad_token_alarm(app, client, console):
    token, secret = issue_token(app, "okta")
    response = console.post(f"/admin/provisioning/okta/tokens/{token.id}/renew")
    assert response.status_code == 302
    assert ScimClient(client, secret).get("/Users").status_code == 401
    writer.flush()
    ((category, message),) = banner_classes(console)
    assert category == "danger"
    assert message.startswith(
        "1 request in the last 80 minutes was refused with 401. Okta is using a token"
    )


def test_a_renewed_client_secret_in_use_raises_the_bad_token_alarm(
    app, client, console
):
    with database.connection_context():
        oauth_client, secret = OAuthClient.issue("entra")
    response = console.post(
        f"/admin/provisioning/entra/clients/{oauth_client.id}/renew"
    )
    assert response.status_code == 302
    # The IdP still has the old secret: the token endpoint refuses it, and
    # the refusal is counted under the client, its body never read.
    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": oauth_client.client_id,
            "client_secret": secret,
        },
    )
    assert response.status_code == 401
    writer.flush()
    with activity_db.connection_context():
        rows = list(Refusal.select())
    assert [
        (r.status, r.reason, r.idp, r.token_key, r.method, r.path, r.requests)
        for r in rows
    ] == [
        (
            401,
            "wrong client secret",
            "entra",
            oauth_client.client_id,
            "POST",
            "/oauth/token",
            1,
        )
    ]
    (shown,) = banner_classes(console)
    assert shown == (
        "danger",
        "1 request in the last 80 minutes was refused with 401. Entra ID is using "
        "a token or client secret that is inactive, removed, renewed or expired; "
        "Entra will quarantine provisioning. See refused requests",
    )


def test_an_unknown_client_id_is_counted_without_its_name(client, console):
    response = client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "anything-a-caller-chose",
            "client_secret": "x",
        },
        headers={"User-Agent": "python-requests/2.32"},
    )
    assert response.status_code == 401
    writer.flush()
    with activity_db.connection_context():
        rows = list(Refusal.select())
    assert [(r.reason, r.idp, r.token_key, r.path) for r in rows] == [
        ("unknown client", "", "", "/oauth/token")
    ]
    ((category, _),) = banner_classes(console)
    assert category == "info"


def test_an_idp_user_agent_raises_the_bad_token_alarm(client, console):
    response = client.get(
        "/scim/v2/Users",
        headers={
            "Authorization": "Bearer some-token-from-an-old-server",
            "User-Agent": "Azure AD SCIM Provisioning",
        },
    )
    assert response.status_code == 401
    assert client.get("/scim/v2/Users").status_code == 401
    writer.flush()
    shown = banner_classes(console)
    assert [category for category, _ in shown] == ["danger", "info"]
    assert "was refused with 401. Entra ID is using a token" in shown[0][1]
    assert shown[1][1].startswith("Unknown clients are knocking: 1 request in")
    soup = page(console)
    assert soup.select("div.banner a")[0]["href"] == "/admin/activity/refused"
