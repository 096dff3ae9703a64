"""Webhooks through the served stack: the worker of ``mdm serve`` and a kill -9."""

import json
import time

from . import served
from .webhook_receiver import Receiver

SCIM = {"Content-Type": "application/scim+json"}
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def wait_for(receiver, count, timeout=60):
    deadline = time.monotonic() + timeout
    while len(receiver.requests) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(receiver.requests)


def test_kill_between_commit_and_delivery_loses_no_event(tmp_path):
    env = served.environment(
        tmp_path, WEBHOOK_RETRY_SCHEDULE="0.2", WEBHOOK_POLL_SECONDS="0.5"
    )
    port = served.free_port()
    url = f"http://127.0.0.1:{port}/hook"
    secret = served.mdm(env, "webhook", "add", url).stdout.strip()
    token = served.mdm(env, "token", "create", "--idp", "okta").stdout.strip()
    headers = {**SCIM, "Authorization": f"Bearer {token}"}
    log = tmp_path / "serve.log"
    # The receiver is down: every event the server acknowledges stays queued.
    process, mdm_port = served.start(env, log)
    ids = []
    try:
        for n in range(3):
            body = {"userName": f"u{n}@example.com"}
            response, raw = served.request(
                mdm_port, "POST", "/scim/v2/Users", body, headers
            )
            assert response.status == 201, raw
            ids.append(json.loads(raw)["id"])
        patch = {
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        }
        for user_id in ids:
            response, raw = served.request(
                mdm_port, "PATCH", f"/scim/v2/Users/{user_id}", patch, headers
            )
            assert response.status == 200, raw
    finally:
        served.stop(process, kill=True)
    with Receiver(port=port) as receiver:
        process, mdm_port = served.start(env, log)
        try:
            assert wait_for(receiver, 6) == 6
            time.sleep(1)  # nothing more arrives
        finally:
            served.stop(process)
        bodies = receiver.verified(secret)
    assert len(bodies) == 6
    okta = {"type": "connection", "idp": "okta", "name": "Okta"}
    for user_id in ids:
        mine = [b for b in bodies if b["data"]["resource"]["id"] == user_id]
        # In order per resource, whatever the interleaving between users.
        assert [b["type"] for b in mine] == ["user.created", "user.disabled"]
        assert [b["data"]["actor"] for b in mine] == [okta, okta]
        assert [b["data"]["resource"]["active"] for b in mine] == [True, False]
    listed = json.loads(served.mdm(env, "webhook", "list", "--json").stdout)
    assert [(e["state"], e["pending"]) for e in listed] == [("enabled", 0)]
    assert secret not in log.read_text()


def test_test_command_pings_through_the_cli(tmp_path):
    env = served.environment(tmp_path)
    with Receiver() as receiver:
        secret = served.mdm(env, "webhook", "add", receiver.url).stdout.strip()
        result = served.mdm(env, "webhook", "test", "1", check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Webhook 1: HTTP 200 (")
        [ping] = receiver.verified(secret)
    assert ping["type"] == "ping" and ping["data"] == {"endpoint": 1}
