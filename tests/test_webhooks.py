"""Lifecycle webhooks: the outbox, Standard Webhooks signing, delivery, retries and the CLI."""

import json
from datetime import datetime

import pytest
from standardwebhooks import Webhook

from mdm import webhooks
from mdm.db import database
from mdm.models import User
from mdm.models import WebhookDelivery
from mdm.models import WebhookEndpoint
from mdm.models import WebhookEvent

from .webhook_receiver import Receiver

ENTRA = {"type": "connection", "idp": "entra", "name": "Entra ID"}
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def add_endpoint(app, url, events=()):
    with app.app_context(), database.connection_context():
        return webhooks.add_endpoint(url, events)


def deliver(app, rounds=1):
    """Run the worker's delivery in this thread ``rounds`` times; return how many went."""
    with app.app_context(), database.connection_context():
        worker = webhooks.Worker(app.config)
        return sum(worker.drain() for _ in range(rounds))


def rows(app, model, *order):
    with app.app_context(), database.connection_context():
        return list(model.select().order_by(*(order or (model.id,))))


@pytest.fixture
def receiver():
    with Receiver() as found:
        yield found


@pytest.fixture
def hooked(app, receiver):
    """An endpoint on the receiver; returns its secret."""
    _, secret = add_endpoint(app, receiver.url)
    return secret


def received(receiver, secret):
    """Return (type, data) of every delivery, each verified with standardwebhooks."""
    return [(body["type"], body["data"]) for body in receiver.verified(secret)]


def test_no_endpoint_writes_no_event(app, scim):
    scim.create_user("ann@example.com")
    assert rows(app, WebhookEvent) == []


def test_user_lifecycle_events_carry_the_resource_as_returned(
    app, scim, receiver, hooked
):
    created = scim.create_user("ann@example.com", displayName="Ann")
    user_id = created["id"]
    disabled = scim.patch(
        f"/Users/{user_id}",
        {
            "schemas": [PATCH],
            "Operations": [
                {"op": "replace", "path": "active", "value": False},
                {"op": "replace", "path": "displayName", "value": "Ann B"},
            ],
        },
    ).get_json()
    enabled = scim.patch(
        f"/Users/{user_id}",
        {
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "value": {"active": True}}],
        },
    ).get_json()
    assert scim.delete(f"/Users/{user_id}").status_code == 204
    assert deliver(app) == 5
    gone = dict(enabled, meta={**enabled["meta"]})
    with app.app_context(), database.connection_context():
        row = User.get(User.scim_id == user_id)
        gone["meta"]["version"] = f'W/"{row.version}"'
        gone["meta"]["lastModified"] = (
            row.last_modified.isoformat(timespec="milliseconds") + "Z"
        )
    assert received(receiver, hooked) == [
        ("user.created", {"resource": created, "actor": ENTRA}),
        ("user.disabled", {"resource": disabled, "actor": ENTRA}),
        ("user.updated", {"resource": disabled, "actor": ENTRA}),
        ("user.enabled", {"resource": enabled, "actor": ENTRA}),
        ("user.deprovisioned", {"resource": gone, "actor": ENTRA}),
    ]
    ids = [headers["webhook-id"] for _, headers, _ in receiver.requests]
    assert len(set(ids)) == 5 and all(i.startswith("msg_") for i in ids)
    assert [d.status for d in rows(app, WebhookDelivery)] == ["delivered"] * 5


def test_no_change_writes_no_event(app, scim, receiver, hooked):
    user = scim.create_user("ann@example.com")
    body = {
        "schemas": [PATCH],
        "Operations": [
            {"op": "replace", "path": "userName", "value": user["userName"]}
        ],
    }
    assert scim.patch(f"/Users/{user['id']}", body).status_code == 200
    assert [e.type for e in rows(app, WebhookEvent)] == ["user.created"]


def test_password_is_never_in_a_payload(app, scim, receiver, hooked):
    scim.create_user("ann@example.com", password="Secret-Pass-1234")
    deliver(app)
    [(kind, data)] = received(receiver, hooked)
    assert kind == "user.created"
    assert "password" not in json.dumps(data).lower()
    assert "Secret-Pass-1234" not in receiver.requests[0][2].decode()


def test_group_events_and_member_batches(app, scim, receiver, hooked):
    ann = scim.create_user("ann@example.com")["id"]
    bob = scim.create_user("bob@example.com")["id"]
    group = scim.create_group("Staff", members=[ann])
    gid = group["id"]
    renamed = scim.patch(
        f"/Groups/{gid}",
        {
            "schemas": [PATCH],
            "Operations": [
                {"op": "replace", "path": "displayName", "value": "All staff"},
                {"op": "add", "path": "members", "value": [{"value": bob}]},
                {"op": "remove", "path": f'members[value eq "{ann}"]'},
            ],
        },
        headers={"Prefer": "return=representation"},
    )
    assert renamed.status_code in (200, 204)
    replaced = scim.put(
        f"/Groups/{gid}",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "All staff",
            "members": [{"value": bob}, {"value": ann}],
        },
    ).get_json()
    assert scim.delete(f"/Groups/{gid}").status_code == 204
    deliver(app)
    events = received(receiver, hooked)[2:]  # after the two users
    without_members = {k: v for k, v in group.items() if k != "members"}
    with app.app_context(), database.connection_context():
        from mdm.models import Group

        final = Group.get(Group.scim_id == gid)
    v2 = dict(without_members, displayName="All staff")
    v2["meta"] = {**group["meta"], "version": 'W/"2"'}
    v3 = {k: v for k, v in replaced.items() if k != "members"}
    gone = dict(v3, meta={**v3["meta"], "version": f'W/"{final.version}"'})
    gone["meta"]["lastModified"] = (
        final.last_modified.isoformat(timespec="milliseconds") + "Z"
    )
    for _, data in events:
        if data["resource"]["meta"]["version"] == 'W/"2"':
            data["resource"]["meta"]["lastModified"] = group["meta"]["lastModified"]
    assert events == [
        ("group.created", {"resource": without_members, "actor": ENTRA}),
        (
            "group.members_added",
            {"resource": without_members, "actor": ENTRA, "members": [{"value": ann}]},
        ),
        ("group.updated", {"resource": v2, "actor": ENTRA}),
        (
            "group.members_removed",
            {"resource": v2, "actor": ENTRA, "members": [{"value": ann}]},
        ),
        (
            "group.members_added",
            {"resource": v2, "actor": ENTRA, "members": [{"value": bob}]},
        ),
        # The replace re-lists bob (no news) and adds ann back.
        (
            "group.members_added",
            {"resource": v3, "actor": ENTRA, "members": [{"value": ann}]},
        ),
        ("group.deleted", {"resource": gone, "actor": ENTRA}),
    ]


def test_endpoint_gets_only_the_types_it_asked_for(app, scim, receiver):
    _, secret = add_endpoint(app, receiver.url, ("user.deprovisioned",))
    user = scim.create_user("ann@example.com")
    scim.delete(f"/Users/{user['id']}")
    deliver(app)
    assert [kind for kind, _ in received(receiver, secret)] == ["user.deprovisioned"]


def test_bulk_writes_events(app, scim, receiver, hooked):
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "a",
                "data": {"userName": "ann@example.com"},
            },
            {
                "method": "POST",
                "path": "/Groups",
                "bulkId": "g",
                "data": {"displayName": "G", "members": [{"value": "bulkId:a"}]},
            },
        ],
    }
    assert scim.post("/Bulk", body).status_code == 200
    deliver(app)
    kinds = [kind for kind, _ in received(receiver, hooked)]
    assert kinds == ["user.created", "group.created", "group.members_added"]


def test_retries_keep_the_webhook_id_and_back_off(app, scim):
    app.config["WEBHOOK_RETRY_SCHEDULE"] = "0,3600"
    with Receiver([500, 503]) as receiver:
        _, secret = add_endpoint(app, receiver.url)
        scim.create_user("ann@example.com")
        deliver(app, rounds=3)
        [delivery] = rows(app, WebhookDelivery)
        assert (delivery.status, delivery.attempts, delivery.last_status) == (
            "pending",
            2,
            503,
        )
        # The second retry waits the schedule's second step, an hour.
        assert 3590 < (delivery.next_try - delivery.first_failed_at).total_seconds()
        with app.app_context(), database.connection_context():
            WebhookDelivery.update(next_try=delivery.first_failed_at).execute()
        deliver(app)
        ids = {headers["webhook-id"] for _, headers, _ in receiver.requests}
        assert len(receiver.requests) == 3 and len(ids) == 1
        assert [kind for kind, _ in received(receiver, secret)] == ["user.created"] * 3
    [delivery] = rows(app, WebhookDelivery)
    assert (delivery.status, delivery.attempts, delivery.last_status) == (
        "delivered",
        3,
        200,
    )


def test_default_schedule_retries_within_a_minute_then_for_a_day():
    assert sum(webhooks.RETRY_SCHEDULE[:3]) < 60
    # The last step repeats, so retries go on past a day (then "failing").
    assert webhooks.RETRY_SCHEDULE[-1] == 8 * 3600
    assert sum(webhooks.RETRY_SCHEDULE) + 4 * 8 * 3600 >= 24 * 3600


def test_a_day_of_failures_marks_the_endpoint_failing(app, scim):
    app.config.update(WEBHOOK_RETRY_SCHEDULE="0", WEBHOOK_FAILING_HOURS=0)
    with Receiver([500, 500]) as receiver:
        add_endpoint(app, receiver.url)
        scim.create_user("ann@example.com")
        deliver(app)
        [endpoint] = rows(app, WebhookEndpoint)
        assert endpoint.state == "failing"
        deliver(app)  # 500 again: still failing, queue kept
        deliver(app)  # 200: healthy again
    [endpoint] = rows(app, WebhookEndpoint)
    assert (endpoint.state, endpoint.failing_since) == ("enabled", None)


def test_gone_disables_the_endpoint(app, scim):
    with Receiver([410]) as receiver:
        add_endpoint(app, receiver.url)
        scim.create_user("ann@example.com")
        scim.create_user("bob@example.com")
        deliver(app)
        assert len(receiver.requests) == 1
    [endpoint] = rows(app, WebhookEndpoint)
    assert endpoint.state == "disabled"
    assert [d.status for d in rows(app, WebhookDelivery)] == ["disabled", "disabled"]
    scim.create_user("cy@example.com")
    assert len(rows(app, WebhookEvent)) == 2  # a disabled endpoint gets nothing new


def test_redirect_is_not_followed(app, scim):
    with Receiver([302], headers={"Location": "/elsewhere"}) as receiver:
        add_endpoint(app, receiver.url)
        scim.create_user("ann@example.com")
        deliver(app)
        assert [path for path, _, _ in receiver.requests] == ["/hook"]
    [delivery] = rows(app, WebhookDelivery)
    assert (delivery.status, delivery.last_status) == ("pending", 302)


def test_connection_error_retries(app, scim, receiver):
    add_endpoint(app, "http://127.0.0.1:9/hook")
    scim.create_user("ann@example.com")
    deliver(app)
    [delivery] = rows(app, WebhookDelivery)
    assert (delivery.status, delivery.attempts, delivery.last_status) == (
        "pending",
        1,
        None,
    )
    assert delivery.last_error


def test_order_per_resource_holds(app, scim):
    app.config["WEBHOOK_RETRY_SCHEDULE"] = "3600"
    with Receiver([500]) as receiver:
        _, secret = add_endpoint(app, receiver.url)
        ann = scim.create_user("ann@example.com")["id"]
        body = {
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "value": {"title": "X"}}],
        }
        scim.patch(f"/Users/{ann}", body)
        scim.create_user("bob@example.com")
        deliver(app)
        # ann's update waits behind her failed creation; bob's creation goes.
        assert sent(receiver, secret) == [
            ("user.created", "ann@example.com"),
            ("user.created", "bob@example.com"),
        ]
        with app.app_context(), database.connection_context():
            WebhookDelivery.update(next_try=datetime(2000, 1, 1)).execute()
        deliver(app)
        assert sent(receiver, secret)[2:] == [
            ("user.created", "ann@example.com"),
            ("user.updated", "ann@example.com"),
        ]


def sent(receiver, secret):
    return [
        (body["type"], body["data"]["resource"]["userName"])
        for body in receiver.verified(secret)
    ]


def test_large_member_change_makes_a_bounded_number_of_events(app, scim, receiver):
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024 * 1024
    count = 100_000
    with app.app_context(), database.connection_context():
        for start in range(0, count, 5000):
            User.insert_many(
                [
                    {"user_name": f"u{i}@example.com", "scim_id": f"u-{i}"}
                    for i in range(start, start + 5000)
                ]
            ).execute()
    add_endpoint(app, receiver.url)
    group = scim.create_group("Everyone")
    body = {
        "schemas": [PATCH],
        "Operations": [
            {
                "op": "add",
                "path": "members",
                "value": [{"value": f"u-{i}"} for i in range(count)],
            }
        ],
    }
    assert scim.patch(f"/Groups/{group['id']}", body).status_code in (200, 204)
    with app.app_context(), database.connection_context():
        added = list(
            WebhookEvent.select()
            .where(WebhookEvent.type == "group.members_added")
            .order_by(WebhookEvent.id)
        )
    assert len(added) == count // webhooks.MEMBERS_PER_EVENT
    ids = [m["value"] for e in added for m in json.loads(e.payload)["members"]]
    assert ids == [f"u-{i}" for i in range(count)]


def test_https_is_required_off_loopback(app, runner):
    refused = runner.invoke(args=["webhook", "add", "http://hooks.example.com/x"])
    assert refused.exit_code == 1
    assert "must use https:// unless it is on loopback" in refused.output
    assert "MDM_WEBHOOK_ALLOW_HTTP" in refused.output
    assert runner.invoke(args=["webhook", "add", "ftp://x/y"]).exit_code == 1
    assert (
        runner.invoke(args=["webhook", "add", "https://hooks.example.com/x"]).exit_code
        == 0
    )
    assert runner.invoke(args=["webhook", "add", "http://[::1]:8000/x"]).exit_code == 0
    app.config["WEBHOOK_ALLOW_HTTP"] = "true"
    assert (
        runner.invoke(args=["webhook", "add", "http://hooks.example.com/x"]).exit_code
        == 0
    )


def test_cli_add_list_rotate_test_remove(app, runner, receiver):
    added = runner.invoke(
        args=[
            "webhook",
            "add",
            receiver.url,
            "--events",
            "user.created",
            "--label",
            "HR",
        ]
    )
    assert added.exit_code == 0, added.output
    secret = added.stdout.strip()
    assert secret.startswith("whsec_")
    assert 24 <= len(__import__("base64").b64decode(secret[6:])) <= 64
    listed = runner.invoke(args=["webhook", "list", "--json"])
    [row] = json.loads(listed.stdout)
    assert row == {
        "id": row["id"],
        "url": receiver.url,
        "label": "HR",
        "events": ["user.created"],
        "state": "enabled",
        "pending": 0,
        "created_at": row["created_at"],
        "failing_since": None,
    }
    assert secret not in listed.output
    assert secret not in runner.invoke(args=["webhook", "list"]).output
    tested = runner.invoke(args=["webhook", "test", str(row["id"])])
    assert tested.exit_code == 0 and tested.stdout.startswith(
        f"Webhook {row['id']}: HTTP 200"
    )
    [ping] = receiver.verified(secret)
    assert ping["type"] == "ping"
    rotated = runner.invoke(args=["webhook", "rotate-secret", str(row["id"])])
    new_secret = rotated.stdout.strip()
    assert new_secret.startswith("whsec_") and new_secret != secret
    runner.invoke(args=["webhook", "test", str(row["id"])])
    _, headers, body = receiver.requests[-1]
    Webhook(new_secret).verify(body, {k.lower(): v for k, v in headers.items()})
    assert runner.invoke(args=["webhook", "bad", "--events", "x"]).exit_code == 2
    unknown = runner.invoke(
        args=["webhook", "add", receiver.url, "--events", "user.nope"]
    )
    assert unknown.exit_code == 1 and "Unknown event type 'user.nope'" in unknown.output
    assert runner.invoke(args=["webhook", "remove", str(row["id"])]).exit_code == 0
    assert rows(app, WebhookEndpoint) == []
    missing = runner.invoke(args=["webhook", "remove", "99"])
    assert missing.exit_code == 1 and "No webhook with id 99." in missing.output


def test_at_most_ten_endpoints(app, runner):
    for n in range(10):
        assert (
            runner.invoke(
                args=["webhook", "add", f"https://h{n}.example.com/"]
            ).exit_code
            == 0
        )
    over = runner.invoke(args=["webhook", "add", "https://h.example.com/"])
    assert over.exit_code == 1 and "already 10 webhook endpoints" in over.output


def test_cli_purge_sends_user_purged(app, scim, runner, receiver, hooked):
    user = scim.create_user("ann@example.com")
    scim.delete(f"/Users/{user['id']}")
    assert runner.invoke(args=["user", "purge", "--yes"]).exit_code == 0
    deliver(app)
    kind, data = received(receiver, hooked)[-1]
    assert kind == "user.purged"
    assert data["actor"] == {"type": "cli"}
    assert data["resource"]["id"] == user["id"]
    assert data["resource"]["userName"] == "ann@example.com"


def test_console_purge_sends_user_purged_by_the_admin(
    app, scim, console, receiver, hooked
):
    user = scim.create_user("ann@example.com")
    scim.delete(f"/Users/{user['id']}")
    response = console.post(f"/admin/users/{user['id']}/purge", data={})
    assert response.status_code == 302
    deliver(app)
    kind, data = received(receiver, hooked)[-1]
    assert (kind, data["actor"]) == ("user.purged", {"type": "admin", "name": "alice"})
    assert data["resource"]["id"] == user["id"]


def test_secret_is_only_in_its_column(app, runner, scim, receiver, tmp_path):
    added = runner.invoke(args=["webhook", "add", receiver.url])
    secret = added.stdout.strip()
    runner.invoke(args=["webhook", "list"])
    scim.create_user("ann@example.com")
    deliver(app)
    with app.app_context(), database.connection_context():
        assert WebhookEndpoint.get().secret == secret
        for model in (WebhookEvent, WebhookDelivery):
            for row in model.select().dicts():
                assert secret not in json.dumps(row, default=str)
        from mdm.activity import writer
        from mdm.activity_store import AuditEvent
        from mdm.activity_store import activity_db

        writer.flush()
        with activity_db.connection_context():
            audits = [(a.event, a.details) for a in AuditEvent.select()]
    [endpoint] = rows(app, WebhookEndpoint)
    assert ("Webhook Added", f"webhook {endpoint.id}: {receiver.url}") in audits
    assert all(secret not in details for _, details in audits)
