"""The console's Webhooks page: add (secret once), test, delivery log, redeliver, remove."""

from bs4 import BeautifulSoup

from mdm import webhooks
from mdm.db import database
from mdm.models import WebhookDelivery
from mdm.models import WebhookEndpoint

from .test_admin_auth import add_admin
from .test_admin_auth import csrf_app  # noqa: F401 (fixture)
from .test_admin_auth import csrf_login
from .test_webhooks import deliver
from .test_webhooks import rows
from .webhook_receiver import Receiver


def page(response):
    assert response.status_code == 200, response.status_code
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def flashes(soup):
    return [b.get_text(" ", strip=True) for b in soup.select(".flash")]


def banners(soup):
    return [b.get_text(" ", strip=True) for b in soup.select(".banner")]


def test_add_shows_the_secret_once_and_lists_the_endpoint(app, console, scim):
    with Receiver() as receiver:
        response = console.post(
            "/admin/webhooks",
            data={"url": receiver.url, "label": "HR", "events": "user.created"},
        )
        assert response.status_code == 302
        shown = page(console.get(response.location))
        secret = shown.find("input", id="secret")["value"]
        assert secret.startswith("whsec_")
        again = console.get(response.location)
        assert again.status_code == 410 and secret not in again.get_data(as_text=True)
        listing = page(console.get("/admin/webhooks"))
        cells = [td.get_text(" ", strip=True) for td in listing.select("tbody td")][:5]
        assert cells == [receiver.url, "HR", "user.created", "Enabled", "0"]
        assert secret not in str(listing)
        [endpoint] = rows(app, WebhookEndpoint)
        tested = console.post(f"/admin/webhooks/{endpoint.id}/test", data={})
        assert tested.status_code == 302
        log = page(console.get(tested.location))
        assert flashes(log)[0].startswith(f"Test event to {receiver.url}: HTTP 200 (")
        [ping] = receiver.verified(secret)
        assert ping["type"] == "ping"
        scim.create_user("ann@example.com")
        deliver(app)
        log = page(console.get(f"/admin/webhooks/{endpoint.id}"))
        cells = [td.get_text(" ", strip=True) for td in log.select("tbody td")]
        [delivery] = rows(app, WebhookDelivery)
        assert cells[0] == f"user.created {delivery.event.msg_id}"
        assert cells[3:7] == [
            "1",
            "Delivered (HTTP 200)",
            f"{delivery.latency_ms} ms",
            "—",
        ]
        redeliver = log.find("button", string="Redeliver").find_parent("form")["action"]
        assert console.post(redeliver, data={}).status_code == 302
        assert [d.status for d in rows(app, WebhookDelivery)] == ["pending"]
        deliver(app)
        ids = {h["webhook-id"] for _, h, _ in receiver.requests[1:]}
        assert ids == {delivery.event.msg_id}  # the same webhook-id again
    removed = console.post(f"/admin/webhooks/{endpoint.id}/remove", data={})
    assert removed.status_code == 302
    assert rows(app, WebhookEndpoint) == []


def test_refused_url_is_explained(console):
    soup = page(
        console.post("/admin/webhooks", data={"url": "http://hooks.example.com/"})
    )
    assert [e.get_text() for e in soup.select(".error")] == [
        "A webhook URL must use https:// unless it is on loopback "
        "(set MDM_WEBHOOK_ALLOW_HTTP=true to allow plain http)."
    ]


def test_rotate_shows_the_new_secret_once(app, console):
    with app.app_context(), database.connection_context():
        endpoint, old = webhooks.add_endpoint("https://hooks.example.com/")
    response = console.post(f"/admin/webhooks/{endpoint.id}/rotate", data={})
    shown = page(console.get(response.location))
    secret = shown.find("input", id="secret")["value"]
    assert secret != old and rows(app, WebhookEndpoint)[0].secret == secret
    assert shown.h1.get_text() == "Signing secret rotated"


def test_dashboard_shows_a_failing_endpoint(app, console):
    with app.app_context(), database.connection_context():
        endpoint, _ = webhooks.add_endpoint("https://hooks.example.com/")
    assert "hooks.example.com" not in console.get("/admin/").get_data(as_text=True)
    with app.app_context(), database.connection_context():
        WebhookEndpoint.update(state="failing").execute()
    assert (
        "Webhook https://hooks.example.com/ has failed for a day; its events stay "
        "queued and are retried. See its deliveries"
    ) in banners(page(console.get("/admin/")))


def test_webhook_forms_need_csrf(csrf_app):  # noqa: F811 (fixture)
    add_admin(csrf_app)
    with csrf_app.app_context(), database.connection_context():
        endpoint, _ = webhooks.add_endpoint("https://hooks.example.com/")
    console = csrf_app.test_client()
    csrf_login(console)
    base = f"/admin/webhooks/{endpoint.id}"
    for url, data in [
        ("/admin/webhooks", {"url": "https://other.example.com/"}),
        (f"{base}/test", {}),
        (f"{base}/rotate", {}),
        (f"{base}/remove", {}),
        (f"{base}/deliveries/1/redeliver", {}),
    ]:
        status = console.post(url, data=data).status_code
        assert status == 400, url
    [stored] = rows(csrf_app, WebhookEndpoint)
    assert stored.secret == endpoint.secret
