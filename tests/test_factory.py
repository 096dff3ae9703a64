"""The app factory: configuration precedence, instance folder and secret key."""

import os
import stat

from mdm import create_app


def test_defaults_put_database_and_secret_in_instance(tmp_path, monkeypatch):
    monkeypatch.setenv("MDM_INSTANCE_PATH", str(tmp_path / "inst"))
    app = create_app()
    assert app.instance_path == str(tmp_path / "inst")
    assert app.config["DATABASE"] == str(tmp_path / "inst" / "mdm.sqlite")
    assert os.path.exists(app.config["DATABASE"])
    key_file = tmp_path / "inst" / "secret_key"
    assert app.config["SECRET_KEY"] == key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The key survives a restart.
    assert create_app().config["SECRET_KEY"] == app.config["SECRET_KEY"]


def test_instance_config_then_environment(tmp_path, monkeypatch):
    inst = tmp_path / "inst"
    inst.mkdir()
    (inst / "config.py").write_text(
        "SCIM_MAX_RESULTS = 50\nSCIM_DEFAULT_COUNT = 7\nSECRET_KEY = 'from-file'\n"
    )
    monkeypatch.setenv("MDM_INSTANCE_PATH", str(inst))
    monkeypatch.setenv("MDM_SCIM_DEFAULT_COUNT", "9")
    monkeypatch.setenv("MDM_SCIM_ENABLED", "false")
    app = create_app()
    assert app.config["SCIM_MAX_RESULTS"] == 50
    assert app.config["SCIM_DEFAULT_COUNT"] == 9
    assert app.config["SCIM_ENABLED"] is False
    assert app.config["SECRET_KEY"] == "from-file"
    assert not (inst / "secret_key").exists()


def test_html_404_outside_scim(client):
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
