"""Run the real ``mdm`` command in a scratch instance: the CLI and the served stack."""

import http.client
import json
import os
import socket
import subprocess
import sys
import time

from .conftest import ROOT
from .conftest import TEST_DATABASE_URL
from .conftest import database_url

MDM = [sys.executable, "-c", "from mdm.__main__ import main; main()"]


def environment(instance, **settings):
    """Return the environment of an ``mdm`` process on ``instance``, with MDM_* ``settings``."""
    env = dict(os.environ, MDM_INSTANCE_PATH=str(instance))
    if TEST_DATABASE_URL:
        env["MDM_DATABASE_URL"] = database_url(os.path.join(instance, "mdm.sqlite"))
    env.update({f"MDM_{name}": str(value) for name, value in settings.items()})
    return env


def mdm(env, *args, input=None, check=True, command=MDM, cwd=ROOT):
    """Run one ``mdm`` command (``input`` on its stdin) and return the finished process."""
    return subprocess.run(
        [*command, *args],
        env=env,
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        check=check,
        timeout=60,
    )


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(env, log_path, threads=None, timeout=30, command=MDM, cwd=ROOT, host=None):
    """Start ``mdm serve`` on a free port; return (process, port) once it accepts."""
    port = free_port()
    more = ["--threads", str(threads)] if threads else []
    if host:
        more += ["--host", host]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [*command, "serve", "--port", str(port), *more],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"mdm serve exited with {process.returncode}; see {log_path}"
            )
        try:
            with socket.create_connection((host or "127.0.0.1", port), timeout=1):
                return process, port
        except OSError:
            time.sleep(0.05)
    stop(process, kill=True)
    raise RuntimeError(f"mdm serve did not listen on {port} within {timeout} s")


def stop(process, kill=False, timeout=10):
    """Stop the server with SIGTERM, or SIGKILL (also if it hangs); return its exit code."""
    if process.poll() is None:
        if kill:
            process.kill()
        else:
            process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=timeout)


def request(port, method, path, body=None, headers=(), address="127.0.0.1"):
    """Send one HTTP request to the served stack; return (response, raw body)."""
    conn = http.client.HTTPConnection(address, port, timeout=30)
    try:
        conn.request(
            method,
            path,
            body=json.dumps(body) if body is not None else None,
            headers=dict(headers),
        )
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()
