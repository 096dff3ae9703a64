"""``mdm copy-db``: a SQLite installation moved to PostgreSQL with every row, counts verified."""

from mdm import create_app
from mdm.activity import writer
from mdm.db import database
from mdm.models import Admin
from mdm.models import BearerToken
from mdm.models import CustomAttribute

from .conftest import ENGINE
from .conftest import ScimClient
from .conftest import database_url
from .conftest import issue_token


def sqlite_app(tmp_path):
    """An installation on SQLite, whatever engine the suite runs on."""
    return create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test",
            "WTF_CSRF_ENABLED": False,
            "DATABASE": str(tmp_path / "source.sqlite"),
        }
    )


def test_copy_db_needs_a_postgresql_url(tmp_path):
    app = sqlite_app(tmp_path)
    result = app.test_cli_runner().invoke(
        args=["copy-db", "--to", str(tmp_path / "x.sqlite")]
    )
    assert result.exit_code == 1
    assert "postgresql://" in result.output


if ENGINE == "postgresql":

    def test_copy_db_moves_everything(tmp_path):
        app = sqlite_app(tmp_path)
        runner = app.test_cli_runner()
        client = app.test_client()
        _, secret = issue_token(app, "entra")
        scim = ScimClient(client, secret)
        with app.app_context(), database.connection_context():
            CustomAttribute.create(name="badge", type="string")
            admin = Admin(username="Root")
            admin.set_password("correct horse battery")
            admin.save()
        bjensen = scim.create_user(
            "BJensen@x",
            displayName="Barbara",
            emails=[{"value": "bj@x", "primary": True}],
        )
        gone = scim.create_user("gone@x")
        scim.delete(f"/Users/{gone['id']}")
        group = scim.create_group("Admins", members=[bjensen["id"]])
        writer.flush()

        url = database_url(tmp_path / "target")
        result = runner.invoke(args=["copy-db", "--to", url])
        assert result.exit_code == 0, result.output
        for line in ("user: 2", "membership: 1", "bearer_token: 1", "admin: 1"):
            assert line in result.output
        assert "custom_attribute: 1" in result.output
        assert "Copied and verified" in result.output

        # Copying again would mix two directories: refused, nothing changed.
        again = runner.invoke(args=["copy-db", "--to", url])
        assert again.exit_code == 1
        assert "empty database" in again.output

        moved = create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "test",
                "WTF_CSRF_ENABLED": False,
                "DATABASE_URL": url,
            }
        )
        moved_scim = ScimClient(moved.test_client(), secret)
        found = moved_scim.get('/Users?filter=userName eq "bjensen@X"').get_json()
        assert [r["id"] for r in found["Resources"]] == [bjensen["id"]]
        assert moved_scim.get(f"/Users/{gone['id']}").status_code == 404
        members = moved_scim.get(f"/Groups/{group['id']}").get_json()["members"]
        assert [m["value"] for m in members] == [bjensen["id"]]
        # The kept counts follow the copied rows: one live user, none deprovisioned.
        listed = moved_scim.get("/Users?count=0").get_json()
        assert listed["totalResults"] == 1
        # New rows get fresh ids after the copied ones.
        moved_scim.create_user("new@x")
        moved_scim.create_group("New group")
        listed = moved_scim.get("/Users?count=0&filter=active eq true").get_json()
        assert listed["totalResults"] == 2
        with moved.app_context(), database.connection_context():
            assert Admin.get(Admin.username == "root").check_password(
                "correct horse battery"
            )
            assert CustomAttribute.definitions() == [("badge", "string")]
            assert BearerToken.authenticate(secret) is not None
        console = moved.test_client()
        console.post(
            "/login", data={"username": "root", "password": "correct horse battery"}
        )
        activity = console.get("/admin/activity").get_data(as_text=True)
        assert "BJensen@x" in activity
