"""Kill ``mdm serve`` with SIGKILL mid-load and check that every acknowledged write survived.

The harness of tests/test_durability.py (bench/crash.py runs the same
rounds from the command line): each round serves one scratch instance,
runs concurrent writers that create users and add them to one shared
group, SIGKILLs the server at a random moment, restarts it and checks
through the SCIM API, and then in the stopped database, that every
acknowledged user exists exactly once and every acknowledged membership
is present. With MDM_DATABASE_URL set, the servers use that PostgreSQL
database and the check reads it with psycopg2.
"""

import collections
import http.client
import json
import os
import random
import secrets
import sqlite3
import subprocess
import tempfile
import threading
import time

from . import served
from .served import MDM
from .served import ROOT

PREFIX = "/scim/v2"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
# What a client sees when the server dies under it: reset, refused, EOF, timeout.
CONNECTION_ERRORS = (OSError, http.client.HTTPException)
MAX_OPS_PER_WRITER = 100_000
MAX_PAGES = 1_000
PAGE = 500


def create_token(instance):
    """Create an Entra token on ``instance`` and return its secret."""
    env = dict(os.environ, MDM_INSTANCE_PATH=instance)
    return subprocess.run(
        [*MDM, "token", "create", "--idp", "entra"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    ).stdout.strip()


def start_server(instance, log_path, threads=8, timeout=30):
    """Start ``mdm serve`` on ``instance``; return (process, port) once it accepts."""
    env = dict(os.environ, MDM_INSTANCE_PATH=instance)
    return served.start(env, log_path, threads, timeout)


def stop_server(process, kill=False, timeout=10):
    """Stop the server (SIGKILL or SIGTERM) and return its exit code."""
    return served.stop(process, kill, timeout)


class Client:
    """One keep-alive connection to the server, reopened after an error."""

    def __init__(self, port, token, timeout=30):
        self.port = port
        self.timeout = timeout
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/scim+json",
        }
        self.conn = None

    def send(self, method, path, body=None):
        """Send one request and return (status, body bytes); raise on a connection error."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.timeout
            )
        data = json.dumps(body) if body is not None else None
        try:
            self.conn.request(method, PREFIX + path, body=data, headers=self.headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except CONNECTION_ERRORS:
            self.close()
            raise

    def json(self, method, path, body=None, expect=200):
        """Send a request that must answer ``expect`` and return its decoded JSON."""
        status, payload = self.send(method, path, body)
        if status != expect:
            raise RuntimeError(f"{method} {path}: {status} {payload[:300]!r}")
        return json.loads(payload)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def user_body(name):
    """A small Entra-like user."""
    return {
        "schemas": [USER_SCHEMA],
        "userName": name,
        "externalId": name.split("@")[0],
        "active": True,
        "displayName": name.split("@")[0],
        "emails": [{"primary": True, "type": "work", "value": name}],
    }


def add_member_body(user_id):
    """An Entra-style PATCH adding one member."""
    return {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "Add", "path": "members", "value": [{"value": user_id}]}],
    }


class Ledger:
    """What the server acknowledged, and what else the clients saw."""

    def __init__(self):
        self.lock = threading.Lock()
        self.users = {}  # userName -> id, for each 201
        self.members = set()  # user ids, for each 204 on the group PATCH
        self.client_errors = 0
        self.unexpected = []  # (method, status, body) for non-2xx answers


def writer(port, token, group_id, tag, stop, deadline, ledger):
    """Create users and add each to the group until stopped; record each 2xx."""
    client = Client(port, token)
    try:
        for seq in range(MAX_OPS_PER_WRITER):
            if stop.is_set() or time.monotonic() > deadline:
                break
            name = f"{tag}.{seq:06d}@crash.example.com"
            try:
                status, payload = client.send("POST", "/Users", user_body(name))
            except CONNECTION_ERRORS:
                # Only the kill breaks connections: this request was in flight.
                with ledger.lock:
                    ledger.client_errors += 1
                break
            if status != 201:
                with ledger.lock:
                    ledger.unexpected.append(("POST", status, payload[:200]))
                continue
            user_id = json.loads(payload)["id"]
            with ledger.lock:
                ledger.users[name] = user_id
            try:
                status, payload = client.send(
                    "PATCH", f"/Groups/{group_id}", add_member_body(user_id)
                )
            except CONNECTION_ERRORS:
                with ledger.lock:
                    ledger.client_errors += 1
                break
            with ledger.lock:
                if status == 204:
                    ledger.members.add(user_id)
                else:
                    ledger.unexpected.append(("PATCH", status, payload[:200]))
    finally:
        client.close()


def load_and_kill(
    process, port, token, group_id, tag, writers, seconds, rng, ledger, min_writes
):
    """Run the writers and SIGKILL the server after a random delay; return the delay."""
    stop = threading.Event()
    deadline = time.monotonic() + seconds + 30
    threads = [
        threading.Thread(
            target=writer,
            args=(port, token, group_id, f"{tag}.w{w}", stop, deadline, ledger),
            daemon=True,
        )
        for w in range(writers)
    ]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    before = len(ledger.users) + len(ledger.members)
    time.sleep(rng.uniform(0.5, 1.0) * seconds)
    # On a slow machine, wait (up to 4x seconds) for min_writes acknowledged writes.
    for _ in range(10_000):
        done = len(ledger.users) + len(ledger.members) - before
        if done >= min_writes or time.monotonic() - started > 4 * seconds:
            break
        time.sleep(0.01)
    delay = time.monotonic() - started
    stop_server(process, kill=True)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("a writer did not stop within 60 s")
    return delay


def live_users(client):
    """Return [(userName, id)] for every live user, paging through /Users."""
    found = []
    start = 1
    for _ in range(MAX_PAGES):
        page = client.json(
            "GET", f"/Users?attributes=userName&count={PAGE}&startIndex={start}"
        )
        resources = page.get("Resources", [])
        found += [(r["userName"], r["id"]) for r in resources]
        start += len(resources)
        if not resources or start > page["totalResults"]:
            return found
    raise RuntimeError(f"more than {MAX_PAGES} pages of users")


def verify_api(port, token, group_id, ledger):
    """Check the acknowledged writes through SCIM; return the problems found."""
    client = Client(port, token)
    try:
        users = live_users(client)
        group = client.json("GET", f"/Groups/{group_id}")
    finally:
        client.close()
    names = collections.Counter(name.lower() for name, _ in users)
    ids = {name.lower(): user_id for name, user_id in users}
    members = collections.Counter(m["value"] for m in group.get("members", []))
    lost, duplicated = set(), set()
    for name, user_id in ledger.users.items():
        count = names[name.lower()]
        if count == 0 or ids[name.lower()] != user_id:
            lost.add(name)
        elif count > 1:
            duplicated.add(name)
    return {
        "lost_users": lost,
        "duplicate_users": duplicated | {n for n, c in names.items() if c > 1},
        "lost_memberships": {m for m in ledger.members if members[m] == 0},
        "duplicate_memberships": {m for m, c in members.items() if c > 1},
    }


def verify_postgres(url, group_id, ledger):
    """Read the stopped server's PostgreSQL database directly and check it."""
    import psycopg2
    from playhouse.db_url import parse

    params = parse(url)
    db = psycopg2.connect(dbname=params.pop("database"), **params)
    try:
        cursor = db.cursor()
        # Constraints are enforced as rows are written; look for what they forbid.
        cursor.execute(
            'SELECT COUNT(*) FROM membership m LEFT JOIN "user" u ON u.id = m.user_id '
            "LEFT JOIN user_group g ON g.id = m.group_id "
            "WHERE u.id IS NULL OR g.id IS NULL"
        )
        orphans = cursor.fetchone()[0]
        cursor.execute('SELECT scim_id, user_name FROM "user"')
        stored = dict(cursor.fetchall())
        cursor.execute(
            'SELECT lower(user_name) FROM "user" GROUP BY 1 HAVING COUNT(*) > 1'
        )
        duplicates = {row[0] for row in cursor.fetchall()}
        cursor.execute(
            'SELECT u.scim_id FROM membership m JOIN "user" u ON u.id = m.user_id '
            "JOIN user_group g ON g.id = m.group_id WHERE g.scim_id = %s",
            (group_id,),
        )
        members = collections.Counter(row[0] for row in cursor.fetchall())
    finally:
        db.close()
    return _verdict("ok", orphans, stored, duplicates, members, ledger)


def verify_file(path, group_id, ledger):
    """Open the stopped server's database with sqlite3 and check it directly."""
    if os.environ.get("MDM_DATABASE_URL"):
        return verify_postgres(os.environ["MDM_DATABASE_URL"], group_id, ledger)
    db = sqlite3.connect(path, timeout=30)
    try:
        integrity = [row[0] for row in db.execute("PRAGMA integrity_check")]
        foreign = db.execute("PRAGMA foreign_key_check").fetchall()
        stored = dict(db.execute("SELECT scim_id, user_name FROM user"))
        duplicates = {
            name
            for name, _ in db.execute(
                "SELECT user_name, COUNT(*) FROM user "
                "GROUP BY user_name COLLATE NOCASE HAVING COUNT(*) > 1"
            )
        }
        members = collections.Counter(
            row[0]
            for row in db.execute(
                "SELECT u.scim_id FROM membership m "
                "JOIN user u ON u.id = m.user_id "
                "JOIN user_group g ON g.id = m.group_id WHERE g.scim_id = ?",
                (group_id,),
            )
        )
    finally:
        db.close()
    integrity = "ok" if integrity == ["ok"] else "; ".join(integrity)
    return _verdict(integrity, len(foreign), stored, duplicates, members, ledger)


def _verdict(integrity, foreign, stored, duplicates, members, ledger):
    return {
        "integrity": integrity,
        "foreign_key_violations": foreign,
        "lost_users": {
            name
            for name, user_id in ledger.users.items()
            if stored.get(user_id, "").lower() != name.lower()
        },
        "duplicate_users": duplicates,
        "lost_memberships": {m for m in ledger.members if members[m] == 0},
        "duplicate_memberships": {m for m, c in members.items() if c > 1},
    }


def server_errors(log_path):
    """Return the lines of a server log that report an error."""
    with open(log_path, errors="replace") as f:
        return [
            line.rstrip()
            for line in f
            if "Traceback" in line or "locked" in line or "Error" in line
        ]


def run(rounds, writers, seconds, instance=None, seed=None, min_writes=0):
    """Run the crash rounds and return a summary dict whose "ok" is False on any loss."""
    if instance is None:
        with tempfile.TemporaryDirectory(prefix="mdm-crash-") as scratch:
            return run(rounds, writers, seconds, scratch, seed, min_writes)
    rng = random.Random(seed)
    run_id = secrets.token_hex(3)
    database = os.path.join(instance, "mdm.sqlite")
    token = create_token(instance)
    ledger = Ledger()
    group_id = None
    problems = collections.defaultdict(set)
    summary = {
        "rounds": rounds,
        "writers": writers,
        "seconds": seconds,
        "instance": instance,
        "per_round": [],
        "integrity": [],
        "foreign_key_violations": 0,
        "server_errors": [],
    }
    started = time.monotonic()
    for number in range(1, rounds + 1):
        log_path = os.path.join(instance, f"crash-{run_id}-round{number}.log")
        before = (len(ledger.users), len(ledger.members), ledger.client_errors)
        process, port = start_server(instance, log_path)
        try:
            if group_id is None:
                client = Client(port, token)
                try:
                    body = {"schemas": [GROUP_SCHEMA], "displayName": f"Crash {run_id}"}
                    group_id = client.json("POST", "/Groups", body, expect=201)["id"]
                finally:
                    client.close()
            delay = load_and_kill(
                process,
                port,
                token,
                group_id,
                f"crash-{run_id}.r{number}",
                writers,
                seconds,
                rng,
                ledger,
                min_writes,
            )
            killed_with = process.returncode
            process, port = start_server(instance, log_path)
            found = verify_api(port, token, group_id, ledger)
        finally:
            stop_server(process)
        checked = verify_file(database, group_id, ledger)
        for source in (found, checked):
            for key in (
                "lost_users",
                "duplicate_users",
                "lost_memberships",
                "duplicate_memberships",
            ):
                problems[key] |= source[key]
        summary["integrity"].append(checked["integrity"])
        summary["foreign_key_violations"] += checked["foreign_key_violations"]
        summary["server_errors"] += server_errors(log_path)
        row = {
            "round": number,
            "kill_after": round(delay, 2),
            "kill_exit": killed_with,
            "users": len(ledger.users) - before[0],
            "memberships": len(ledger.members) - before[1],
            "client_errors": ledger.client_errors - before[2],
            "integrity": checked["integrity"],
            "lost": len(found["lost_users"] | checked["lost_users"])
            + len(found["lost_memberships"] | checked["lost_memberships"]),
        }
        summary["per_round"].append(row)
        print(
            f"round {number}: SIGKILL after {row['kill_after']:.2f} s; acknowledged "
            f"{row['users']} users, {row['memberships']} memberships; "
            f"{row['client_errors']} requests cut off by the kill; "
            f"lost so far {row['lost']}; integrity {row['integrity']}",
            flush=True,
        )
    summary.update(
        {
            "acknowledged_users": len(ledger.users),
            "acknowledged_memberships": len(ledger.members),
            "client_errors": ledger.client_errors,
            "unexpected_responses": ledger.unexpected,
            "seconds_total": round(time.monotonic() - started, 1),
        }
    )
    for key in (
        "lost_users",
        "duplicate_users",
        "lost_memberships",
        "duplicate_memberships",
    ):
        summary[key] = sorted(problems[key])
    summary["ok"] = (
        not any(summary[key] for key in problems)
        and all(result == "ok" for result in summary["integrity"])
        and summary["foreign_key_violations"] == 0
        and not ledger.unexpected
        and not summary["server_errors"]
    )
    return summary
