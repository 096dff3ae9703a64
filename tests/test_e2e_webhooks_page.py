"""The Webhooks page in a real Chromium: add, secret once, test, deliveries, redeliver.

Debian's chromium is required; the tests fail, not skip, when it is missing.
Screenshots go to $MDM_SCREENSHOTS when it is set.
"""

import time

from playwright.sync_api import expect

from mdm import webhooks

from .conftest import issue_token
from .test_e2e_browser import live  # noqa: F401 (fixture)
from .test_e2e_browser import page  # noqa: F401 (fixture)
from .test_e2e_browser import scim
from .test_e2e_browser import setup_admin
from .test_e2e_browser import shot
from .webhook_receiver import Receiver


def wait_for(receiver, count, timeout=30):
    deadline = time.monotonic() + timeout
    while len(receiver.requests) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(receiver.requests)


def test_webhooks_page(live, page):  # noqa: F811 (fixtures)
    app, base = live
    worker = webhooks.start(app)
    try:
        with Receiver() as receiver:
            _run(app, base, page, receiver)
    finally:
        worker.stop()


def _run(app, base, page, receiver):  # noqa: F811 (fixture name)
    setup_admin(page, app, base)
    page.get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    expect(page.get_by_text("No webhook endpoints yet.")).to_be_visible()
    shot(page, "webhooks-empty")

    page.get_by_label("URL").fill("http://hooks.example.com/")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.get_by_role("alert")).to_contain_text("must use https://")
    shot(page, "webhooks-refused")

    page.get_by_label("URL").fill(receiver.url)
    page.get_by_label("Label").fill("HR system")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.get_by_role("heading", name="Webhook added")).to_be_visible()
    secret = page.get_by_label("Signing secret").input_value()
    assert secret.startswith("whsec_")
    shot(page, "webhooks-secret")
    page.reload()
    expect(
        page.get_by_role("heading", name="Secret no longer available")
    ).to_be_visible()
    page.get_by_role("link", name="Back to Webhooks").click()

    row = page.get_by_role("row").filter(has_text=receiver.url)
    expect(row).to_contain_text("HR system")
    expect(row).to_contain_text("Enabled")
    row.get_by_role("button", name="Send test").click()
    expect(page.get_by_role("status").first).to_contain_text("HTTP 200")
    [ping] = receiver.verified(secret)
    assert ping["type"] == "ping"

    _, token = issue_token(app, "entra")
    status, user = scim(base, token, "POST", "/Users", {"userName": "ann@example.com"})
    assert status == 201
    assert wait_for(receiver, 2) == 2  # the worker woke on the commit
    page.reload()
    delivered = page.get_by_role("row").filter(has_text="user.created")
    expect(delivered).to_contain_text("Delivered (HTTP 200)")
    shot(page, "webhooks-deliveries")
    delivered.get_by_role("button", name="Redeliver").click()
    expect(page.get_by_text("Queued for delivery again.")).to_be_visible()
    assert wait_for(receiver, 3) == 3
    ids = [headers["webhook-id"] for _, headers, _ in receiver.requests[1:]]
    assert ids[0] == ids[1]
    assert [b["data"]["resource"]["id"] for b in receiver.verified(secret)[1:]] == [
        user["id"],
        user["id"],
    ]

    page.get_by_role("link", name="Webhooks", exact=True).first.click()
    shot(page, "webhooks-list")
    page.get_by_role("row").filter(has_text=receiver.url).get_by_role(
        "link", name="Remove"
    ).click()
    page.get_by_role("button", name="Remove webhook").click()
    expect(page.get_by_text("No webhook endpoints yet.")).to_be_visible()
