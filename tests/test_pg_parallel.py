"""PostgreSQL writes run side by side: row locks, retries, and one winner per race."""

import json
import threading
from urllib.parse import quote

import pytest

from mdm import create_app
from mdm.db import WRITE_ATTEMPTS
from mdm.db import database
from mdm.db import lock_row
from mdm.db import write_transaction
from mdm.models import User

from . import crashload as crash
from .conftest import ENGINE
from .conftest import database_config
from .conftest import integrity_problems
from .conftest import issue_token
from .conftest import live_server
from .conftest import raw_connection
from .test_multiprocess import _all_at_once
from .test_multiprocess import _call
from .test_multiprocess import servers  # noqa: F401 (a fixture)
from .test_races import Live

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def _rename(name):
    return {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": "displayName", "value": name}],
    }


if ENGINE == "postgresql":

    @pytest.fixture
    def served(tmp_path):
        """Serve a fresh app in this process; yield (app, Live)."""
        path = tmp_path / "mdm.sqlite"
        app = create_app(
            {"TESTING": True, "SECRET_KEY": "parallel", **database_config(path)}
        )
        _, secret = issue_token(app, "entra")
        with live_server(app) as port:
            yield app, Live(port, secret, path)

    def _create_user(live, name):
        status, body = live.call(
            "POST", "/Users", {"schemas": [USER], "userName": name}
        )
        assert status == 201, body
        return body["id"]

    def test_a_write_to_one_user_does_not_wait_for_a_write_to_another(served):
        """User A locked mid-write: a PATCH of B lands at once; A's waits, then builds on it."""
        app, live = served
        a, b = _create_user(live, "a@x"), _create_user(live, "b@x")
        held, release, done = threading.Event(), threading.Event(), threading.Event()

        def hold_a():
            # A write of A that has locked its row and not yet committed.
            with app.app_context(), database.connection_context():
                with write_transaction():
                    row = User.get(User.scim_id == a)
                    assert lock_row(User, row.id, row.version)
                    held.set()
                    release.wait(10)
                    User.update(display_name="Held", version=User.version + 1).where(
                        User.id == row.id
                    ).execute()
            done.set()

        holder = threading.Thread(target=hold_a, daemon=True)
        holder.start()
        assert held.wait(10)
        try:
            status, body = live.call("PATCH", f"/Users/{b}", _rename("Bee"))
            # Answered while A's transaction is still open.
            assert not done.is_set()
            assert (status, body["displayName"], body["meta"]["version"]) == (
                200,
                "Bee",
                'W/"2"',
            )
            patched = {}
            writer = threading.Thread(
                target=lambda: patched.update(
                    result=live.call("PATCH", f"/Users/{a}", _rename("Ay"))
                ),
                daemon=True,
            )
            writer.start()
            writer.join(0.5)
            assert writer.is_alive(), "the PATCH of A did not wait for A's row lock"
        finally:
            release.set()
        holder.join(10)
        writer.join(30)
        # The waiting PATCH saw A move on, and applied itself to the new version.
        status, body = patched["result"]
        assert (status, body["displayName"], body["meta"]["version"]) == (
            200,
            "Ay",
            'W/"3"',
        )
        conn = raw_connection(live.path)
        try:
            cursor = conn.cursor()
            cursor.execute(
                'SELECT scim_id, display_name, version FROM "user" ORDER BY id'
            )
            assert cursor.fetchall() == [(a, "Ay", 3), (b, "Bee", 2)]
        finally:
            conn.close()

    def _abort_updates(path, code, times):
        """Make the next ``times`` UPDATEs of users fail with SQLSTATE ``code``."""
        conn = raw_connection(path)
        try:
            cursor = conn.cursor()
            cursor.execute("CREATE SEQUENCE update_attempts")
            cursor.execute(
                "CREATE FUNCTION abort_update() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF nextval('update_attempts') <= {int(times)} THEN "
                f"RAISE EXCEPTION 'lost a race' USING ERRCODE = '{code}'; "
                "END IF; RETURN NEW; END $$"
            )
            cursor.execute(
                'CREATE TRIGGER abort_update BEFORE UPDATE ON "user" '
                "FOR EACH ROW EXECUTE FUNCTION abort_update()"
            )
        finally:
            conn.close()

    def _attempts_and_name(path, scim_id):
        conn = raw_connection(path)
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT last_value FROM update_attempts")
            (attempts,) = cursor.fetchone()
            cursor.execute(
                'SELECT display_name, version FROM "user" WHERE scim_id = %s',
                (scim_id,),
            )
            return attempts, cursor.fetchone()
        finally:
            conn.close()

    def test_writers_moving_users_between_values_keep_the_counts(served, tmp_path):
        """Parallel creates and moves across two departments: every count stays exact."""
        _, live = served
        enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
        users = [_create_user(live, f"mover{i}@x") for i in range(8)]

        def move(user, department):
            body = {
                "schemas": [PATCH_OP],
                "Operations": [
                    {"op": "replace", "value": {f"{enterprise}:department": department}}
                ],
            }
            return live.call("PATCH", f"/Users/{user}", body)[0]

        def create(i):
            body = {
                "schemas": [USER],
                "userName": f"new{i}@x",
                enterprise: {"department": "Sales" if i % 2 else "SUPPORT"},
            }
            return live.call("POST", "/Users", body)[0]

        for round_ in range(3):
            # Each user to the department the next one leaves: both values'
            # rows change in every PATCH, in both orders at once.
            calls = [
                lambda user=user, to=("Sales" if (i + round_) % 2 else "Support"): move(
                    user, to
                )
                for i, user in enumerate(users)
            ]
            calls += [lambda n=round_ * 4 + i: create(n) for i in range(4)]
            assert _all_at_once(calls) == [200] * 8 + [201] * 4
        assert integrity_problems(live.path) == []
        totals = {}
        for value in ("sales", "SUPPORT"):
            filter_ = f'{enterprise}:department eq "{value}"'
            status, body = live.call("GET", f"/Users?count=0&filter={quote(filter_)}")
            totals[value] = (status, body["totalResults"])
        # The last round left four movers in each department, and half of
        # the twelve created went to each.
        assert totals == {"sales": (200, 4 + 6), "SUPPORT": (200, 4 + 6)}

    @pytest.mark.parametrize("code", ["40001", "40P01"])
    def test_a_write_aborted_by_a_conflict_is_retried(served, code):
        """Serialization failures and deadlocks short of the limit: the PATCH lands once."""
        _, live = served
        user_id = _create_user(live, "retry@x")
        _abort_updates(live.path, code, WRITE_ATTEMPTS - 1)
        status, body = live.call("PATCH", f"/Users/{user_id}", _rename("Retried"))
        assert (status, body["displayName"], body["meta"]["version"]) == (
            200,
            "Retried",
            'W/"2"',
        )
        assert _attempts_and_name(live.path, user_id) == (
            WRITE_ATTEMPTS,
            ("Retried", 2),
        )

    @pytest.mark.parametrize("code", ["40001", "40P01"])
    def test_a_write_that_always_conflicts_is_a_503(served, code):
        """Every attempt aborted: a SCIM 503 asking for a retry, and nothing written."""
        _, live = served
        user_id = _create_user(live, "busy@x")
        _abort_updates(live.path, code, WRITE_ATTEMPTS)
        conn = live.connect()
        try:
            conn.request(
                "PATCH",
                f"/scim/v2/Users/{user_id}",
                body=json.dumps(_rename("Never")),
                headers={
                    "Authorization": f"Bearer {live.secret}",
                    "Content-Type": "application/scim+json",
                },
            )
            response = conn.getresponse()
            body = json.loads(response.read())
            assert (response.status, response.getheader("Retry-After")) == (503, "1")
        finally:
            conn.close()
        assert body == {
            "schemas": [ERROR],
            "status": "503",
            "detail": "The change conflicted with concurrent changes; retry the request.",
        }
        assert _attempts_and_name(live.path, user_id) == (
            WRITE_ATTEMPTS,
            (None, 1),
        )

    def test_races_across_two_processes_keep_one_winner_and_every_change(
        servers, tmp_path
    ):
        """userName races through two processes: one 201 each; concurrent PATCHes all land."""
        ports, token, logs = servers
        for round_ in range(3):
            calls = [
                (
                    lambda i=i, round_=round_: _call(
                        ports[i % 2],
                        token,
                        "POST",
                        "/Users",
                        crash.user_body(f"Same{round_}{'X' if i % 2 else 'x'}@x"),
                    )
                )
                for i in range(10)
            ]
            statuses = sorted(status for status, _ in _all_at_once(calls))
            assert statuses == [201] + [409] * 9
        status, listed = _call(ports[1], token, "GET", "/Users?count=10")
        assert status == 200
        assert sorted(user["userName"].lower() for user in listed["Resources"]) == [
            "same0x@x",
            "same1x@x",
            "same2x@x",
        ]

        # Ten PATCHes of one user, each adding an email, through both processes.
        user_id = listed["Resources"][0]["id"]
        emails = [f"e{i}@x" for i in range(10)]
        calls = [
            (
                lambda i=i, email=email: _call(
                    ports[i % 2],
                    token,
                    "PATCH",
                    f"/Users/{user_id}",
                    {
                        "schemas": [PATCH_OP],
                        "Operations": [
                            {"op": "add", "path": "emails", "value": [{"value": email}]}
                        ],
                    },
                )
            )
            for i, email in enumerate(emails)
        ]
        assert {status for status, _ in _all_at_once(calls)} == {200}
        status, body = _call(ports[0], token, "GET", f"/Users/{user_id}")
        assert status == 200
        stored = {email["value"] for email in body.get("emails", [])}
        assert stored >= set(emails)
        assert body["meta"]["version"] == f'W/"{1 + len(emails)}"'
        for log in logs:
            assert crash.server_errors(log) == []
        assert integrity_problems(tmp_path / "mdm.sqlite") == []
