"""The mdm command: token and attribute management."""

import hashlib

from mdm.db import database
from mdm.models import BearerToken
from mdm.models import CustomAttribute

from . import served


def _tokens(app):
    with app.app_context(), database.connection_context():
        return list(BearerToken.select().order_by(BearerToken.id))


def test_token_create_prints_only_the_secret_on_stdout(app, runner):
    result = runner.invoke(
        args=["token", "create", "--idp", "entra", "--label", "prod"]
    )
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert secret.startswith("mdm_") and "\n" not in secret
    assert "Target SCIM URL: http://127.0.0.1:8080/scim/v2" in result.stderr
    (token,) = _tokens(app)
    assert token.idp == "entra" and token.label == "prod" and token.active
    # Only a hash is stored.
    assert token.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in (token.secret_hash, token.key)


def test_third_token_for_a_connection_is_refused(app, runner):
    for _ in range(2):
        assert runner.invoke(args=["token", "create", "--idp", "okta"]).exit_code == 0
    result = runner.invoke(args=["token", "create", "--idp", "okta"])
    assert result.exit_code == 1
    assert "Okta already has 2 tokens" in result.stderr
    assert len(_tokens(app)) == 2
    # Other connections have their own slots.
    assert runner.invoke(args=["token", "create", "--idp", "entra"]).exit_code == 0


def test_token_lifecycle_commands(app, runner):
    runner.invoke(args=["token", "create", "--idp", "generic", "--expires-in", "90"])
    (token,) = _tokens(app)
    assert token.expires_at is not None
    assert runner.invoke(args=["token", "set-inactive", str(token.id)]).exit_code == 0
    assert _tokens(app)[0].active is False
    assert runner.invoke(args=["token", "set-active", str(token.id)]).exit_code == 0
    assert _tokens(app)[0].active is True
    renewed = runner.invoke(args=["token", "renew", str(token.id)])
    assert renewed.exit_code == 0
    new_secret = renewed.stdout.strip()
    assert (
        _tokens(app)[0].secret_hash == hashlib.sha256(new_secret.encode()).hexdigest()
    )
    listing = runner.invoke(args=["token", "list"])
    assert "generic" in listing.stdout and new_secret not in listing.stdout
    assert runner.invoke(args=["token", "remove", str(token.id)]).exit_code == 0
    assert _tokens(app) == []
    missing = runner.invoke(args=["token", "remove", "99"])
    assert missing.exit_code == 1 and "No token with id 99" in missing.stderr


def test_attribute_add_list_remove(app, runner):
    result = runner.invoke(args=["attribute", "add", "costCode", "--type", "integer"])
    assert result.exit_code == 0
    urn = "urn:ietf:params:scim:schemas:extension:ivanti:2.0:User"
    assert result.stdout.strip() == f"{urn}:costCode"
    assert runner.invoke(args=["attribute", "add", "costcode"]).exit_code == 1
    assert runner.invoke(args=["attribute", "add", "9bad"]).exit_code == 1
    listing = runner.invoke(args=["attribute", "list"])
    assert listing.stdout == f"{urn}:costCode\tinteger\n"
    assert runner.invoke(args=["attribute", "remove", "costCode"]).exit_code == 0
    with app.app_context(), database.connection_context():
        assert CustomAttribute.select().count() == 0


def test_help_and_usage_errors_touch_nothing(tmp_path):
    instance = tmp_path / "instance"
    env = dict(served.environment(instance))
    calls = [
        (["--help"], 0),
        (["--version"], 0),
        (["token", "--help"], 0),
        (["token"], 2),
        (["token", "create"], 2),  # --idp is missing
        (["serve", "--port", "none"], 2),
        (["no-such-command"], 2),
    ]
    for args, code in calls:
        finished = served.mdm(env, *args, check=False, cwd=tmp_path)
        assert finished.returncode == code, (args, finished.stderr)
        assert "Traceback" not in finished.stderr
        assert list(tmp_path.iterdir()) == [], args
    # The first command that needs the data creates it.
    assert served.mdm(env, "token", "list", cwd=tmp_path).stderr == "No tokens.\n"
    assert (instance / "secret_key").exists()
