"""The data folder is owner-only: every file mdm creates in it, backups too, under umask 022."""

import os
import stat

from . import served
from .conftest import ENGINE
from .conftest import PASSWORD

# The usual umask, which leaves new files readable by every user.
UMASK_022 = ["sh", "-c", 'umask 022 && exec "$@"', "sh"]
COMMAND = UMASK_022 + served.MDM


def modes(folder):
    """Return {name: permission bits} for ``folder`` (as ".") and every file in it."""
    found = {".": stat.S_IMODE(os.stat(folder).st_mode)}
    for name in os.listdir(folder):
        found[name] = stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode)
    return found


def mdm(env, *args, **kwargs):
    return served.mdm(env, *args, command=COMMAND, **kwargs)


def test_every_file_in_the_data_folder_is_owner_only(tmp_path):
    instance = tmp_path / "data"
    env = served.environment(instance)
    secret = mdm(env, "token", "create", "--idp", "entra").stdout.strip()
    mdm(env, "admin", "create", "alice", "--password-stdin", input=PASSWORD)
    process, port = served.start(env, tmp_path / "serve.log", command=COMMAND)
    try:
        headers = {"Authorization": f"Bearer {secret}"}
        body = {"userName": "perm@example.org"}
        response, _ = served.request(port, "POST", "/scim/v2/Users", body, headers)
        assert response.status == 201
        # While serving: the write-ahead log and shared-memory files exist too.
        serving = modes(instance)
    finally:
        assert served.stop(process) == 0
    expected = {"secret_key"}
    if ENGINE == "sqlite":
        expected |= {"mdm.sqlite", "mdm.sqlite-wal", "mdm.sqlite-shm"}
        expected |= {"activity.sqlite", "activity.sqlite-wal", "activity.sqlite-shm"}
    assert expected <= set(serving)
    assert serving == {".": 0o700} | {name: 0o600 for name in serving if name != "."}
    after = modes(instance)
    assert after == {".": 0o700} | {name: 0o600 for name in after if name != "."}


def test_backup_is_owner_only(tmp_path):
    env = served.environment(tmp_path / "data")
    mdm(env, "token", "create", "--idp", "entra")
    target = tmp_path / "copy.sqlite"
    done = mdm(env, "backup", str(target), check=False)
    if ENGINE == "sqlite":
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        # It refuses to write over a file, as before.
        again = mdm(env, "backup", str(target), check=False)
        assert again.returncode == 1
        assert f"{target} exists; choose a new file." in again.stderr
    else:
        assert done.returncode == 1 and not target.exists()


def test_an_older_install_is_tightened_on_start_and_says_so_once(tmp_path):
    instance = tmp_path / "data"
    env = served.environment(instance)
    mdm(env, "token", "create", "--idp", "entra")
    os.chmod(instance, 0o755)
    for name in os.listdir(instance):
        os.chmod(instance / name, 0o644)
    loose = sorted(os.listdir(instance))

    done = mdm(env, "token", "list")
    warnings = [line for line in done.stderr.splitlines() if "owner-only" in line]
    assert len(warnings) == 1, done.stderr
    assert warnings[0].startswith("Readable by other users, now owner-only: ")
    for name in loose:
        assert f"{instance / name} (644)" in warnings[0]
    assert f"{instance} (755)" in done.stderr
    after = modes(instance)
    assert after == {".": 0o700} | {name: 0o600 for name in after if name != "."}

    done = mdm(env, "token", "list")
    assert "owner-only" not in done.stderr
