"""Benchmark an Entra-like provisioning cycle against mdm served by waitress.

Starts the server on a scratch instance (or targets --url with --token), then
runs each phase with N concurrent clients over keep-alive connections and
prints requests/s and p50/p99 latency per phase. A bare Flask + waitress
endpoint, the framework floor, is measured just before and just after each
phase, so every ratio compares figures taken moments apart on a machine
whose load drifts; unreported lookups warm the server up first. Then users
are looked up and created at a fixed offered rate (--rate, open loop): the
latency an IdP sees when the server is not saturated, counted from when
each request was due, so a server falling behind shows it.

    .venv/bin/python bench/provision.py --users 2000 --clients 8

--oauth provisions with an OAuth client's access token, fetched from the
token endpoint (whose latency it prints first), instead of a static token.

--database-url postgresql://… serves from PostgreSQL instead of SQLite: each
run gets a scratch schema in that database, dropped afterwards.
"""

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

FLOOR_APP = """
from flask import Flask
app = Flask(__name__)

@app.get("/ping")
def ping():
    return {"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 0, "Resources": [], "startIndex": 1, "itemsPerPage": 0}

import logging
import sys
from waitress import serve
logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth"
serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=int(sys.argv[2]), _quiet=True)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"server on port {port} did not start")


class Client:
    """One keep-alive connection sending SCIM requests."""

    def __init__(self, url, token):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.headers = {"Content-Type": "application/scim+json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def send(self, method, path, body=None):
        data = json.dumps(body) if body is not None else None
        started = time.perf_counter()
        self.conn.request(method, self.prefix + path, body=data, headers=self.headers)
        response = self.conn.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
        return response.status, payload, elapsed


def run_phase(name, jobs, url, token, clients, expect, rate=None, quiet=False):
    """Run callables job(client) -> (status, payload, seconds) across N clients.

    ``url`` may list several servers; clients are spread over them in turn.
    With ``rate``, job i is due i/rate seconds after the start (an open loop)
    and its latency runs from then, queueing for a free client included.
    """
    urls = url if isinstance(url, list) else [url]
    local = threading.local()
    latencies = []
    failures = []
    lock = threading.Lock()
    opened = []

    def work(item):
        index, job = item
        if not hasattr(local, "client"):
            with lock:
                target = urls[len(opened) % len(urls)]
                opened.append(target)
            local.client = Client(target, token)
        if rate:
            due = started + index / rate
            time.sleep(max(0.0, due - time.perf_counter()))
        status, payload, elapsed = job(local.client)
        if rate:
            elapsed = time.perf_counter() - due
        with lock:
            latencies.append(elapsed)
            if status not in expect:
                failures.append((status, payload[:200]))

    with ThreadPoolExecutor(clients) as pool:
        started = time.perf_counter()
        list(pool.map(work, enumerate(jobs)))
    wall = time.perf_counter() - started
    latencies.sort()
    row = {
        "phase": name,
        "requests": len(latencies),
        "rps": len(latencies) / wall if wall else 0.0,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else 0.0,
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))]
        if latencies
        else 0.0,
        "failures": len(failures),
        "rate": rate,
    }
    if not quiet:
        print(
            f"{name:<28} {row['requests']:>7} req {row['rps']:>8.0f} req/s "
            f"p50 {row['p50_ms']:>7.1f} ms  p99 {row['p99_ms']:>7.1f} ms"
            + (f"  FAILURES {len(failures)}: {failures[:2]}" if failures else "")
        )
    return row


@contextlib.contextmanager
def scratch_schema(url, keep=False):
    """Yield (URL, name) of a new, empty schema in the PostgreSQL database ``url``; drop it after unless ``keep``."""
    import secrets
    from urllib.parse import quote

    import psycopg2
    from playhouse.db_url import parse

    params = parse(url)
    conn = psycopg2.connect(dbname=params.pop("database"), **params)
    conn.autocommit = True
    name = f"bench_{secrets.token_hex(4)}"
    try:
        with conn.cursor() as cursor:
            # In public, as an administrator would install them, so that
            # migrate's own CREATE EXTENSION IF NOT EXISTS finds them there.
            cursor.execute("CREATE EXTENSION IF NOT EXISTS citext SCHEMA public")
            try:
                cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
            except psycopg2.Error as error:
                print(f"pg_trgm not installed: {error}".strip())
            cursor.execute(f"CREATE SCHEMA {name}")
        options = quote(f"-c search_path={name},public")
        yield f"{url}{'&' if '?' in url else '?'}options={options}", name
    finally:
        if not keep:
            with conn.cursor() as cursor:
                cursor.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        conn.close()


@contextlib.contextmanager
def scratch(database_url):
    """Yield (instance folder, database URL or None) for one benchmark server."""
    with tempfile.TemporaryDirectory() as instance:
        if not database_url:
            yield instance, None
            return
        with scratch_schema(database_url) as (url, _):
            yield instance, url


# The mdm command to serve with: this checkout's by default, or --mdm (dist/mdm).
MDM = [sys.executable, "-c", "from mdm.__main__ import main; main()"]


def start_server(
    instance,
    activity_log=True,
    database_url=None,
    token=None,
    threads=None,
    oauth=False,
    start_timeout=30,
):
    """Start mdm on a scratch instance and return (process, url, token)."""
    env = dict(os.environ, MDM_INSTANCE_PATH=instance)
    if database_url:
        env["MDM_DATABASE_URL"] = database_url
    env["MDM_ACTIVITY_LOG"] = "true" if activity_log else "false"
    mdm = MDM
    client = None
    if token is None and oauth:
        created = subprocess.run(
            [*mdm, "client", "create", "--idp", "entra"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
        client = dict(line.split(": ", 1) for line in created.splitlines())
    elif token is None:
        token = subprocess.run(
            [*mdm, "token", "create", "--idp", "entra"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.strip()
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen(
        [*mdm, "serve", "--port", str(port)]
        + (["--threads", str(threads)] if threads else []),
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(port, start_timeout)
    url = f"http://127.0.0.1:{port}/scim/v2"
    Client(url, token).send("GET", "/ServiceProviderConfig")
    print(f"first request answered {time.monotonic() - started:.2f} s after start")
    if client is not None:
        token = token_endpoint(port, client)
    return process, url, token


def token_endpoint(port, client, fetches=200):
    """Time ``fetches`` access-token requests one after another; return the last token."""
    form = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
        }
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    conn = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    for _ in range(fetches):
        started = time.perf_counter()
        conn.request("POST", "/oauth/token", body=form, headers=headers)
        response = conn.getresponse()
        body = json.loads(response.read())
        times.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise RuntimeError(f"token endpoint answered {response.status}: {body}")
    conn.close()
    times.sort()
    print(
        f"token endpoint: {fetches} fetches, p50 {statistics.median(times):.1f} ms, "
        f"p99 {times[int(len(times) * 0.99) - 1]:.1f} ms"
    )
    return body["access_token"]


def rss_mib(pid):
    """Return the resident memory of a process and its descendants (the binary's launcher)."""
    total = 0
    pids = [pid]
    while pids:
        pid = pids.pop()
        with open(f"/proc/{pid}/status") as f:
            total += next(
                int(line.split()[1]) for line in f if line.startswith("VmRSS:")
            )
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids += [int(child) for child in f.read().split()]
    return total / 1024


class Floor:
    """A bare Flask + waitress JSON endpoint, served while the benchmark runs."""

    def __init__(self, clients, threads=8):
        self.clients = clients
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-c", FLOOR_APP, str(self.port), str(threads)]
        )
        wait_for(self.port)

    def measure(self, requests=1000, quiet=True):
        """Return the floor's row for ``requests`` requests from the same clients."""
        jobs = [lambda c: c.send("GET", "/ping")] * requests
        url = f"http://127.0.0.1:{self.port}"
        return run_phase(
            "framework floor", jobs, url, None, self.clients, {200}, quiet=quiet
        )

    def close(self):
        self.process.terminate()
        self.process.wait()


def floor(clients, requests):
    """Measure a bare Flask + waitress JSON endpoint on this machine."""
    server = Floor(clients)
    try:
        return server.measure(requests, quiet=False)
    finally:
        server.close()


def user_body(name, external_id, given_name, i):
    """Return an Entra-like User for POST /Users."""
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "externalId": external_id,
        "userName": name,
        "active": True,
        "displayName": f"{given_name} {i}",
        "emails": [{"primary": True, "type": "work", "value": name}],
        "name": {"givenName": given_name, "familyName": str(i)},
    }


def warm_up(url, token, clients, requests=400):
    """Send unreported lookups first, so the first phase is not charged for start-up."""
    jobs = [
        (lambda c, i=i: c.send("GET", f'/Users?filter=userName+eq+"warm.up{i}"'))
        for i in range(requests)
    ]
    run_phase("warm-up", jobs, url, token, clients, {200}, quiet=True)


def beside_floor(floor):
    """Return run_phase, measuring ``floor`` (if any) just before and after each phase."""
    if floor is None:
        return run_phase

    def phase(name, jobs, url, token, clients, expect, **options):
        before = floor.measure()["rps"]
        row = run_phase(name, jobs, url, token, clients, expect, **options)
        # The mean of the floor just before and just after the phase.
        row["floor_rps"] = (before + floor.measure()["rps"]) / 2
        return row

    return phase


def cycle(url, token, users, clients, batch, floor=None):
    """Run the Entra-like cycle and return the rows."""
    rows = []
    phase = beside_floor(floor)
    names = [f"bench.user{i:06d}@contoso.com" for i in range(users)]

    def miss(name):
        return lambda c: c.send("GET", f'/Users?filter=userName+eq+"{name}"')

    rows.append(
        phase(
            "userName eq (miss)", [miss(n) for n in names], url, token, clients, {200}
        )
    )

    ids = {}

    def create(i, name):
        def job(c):
            status, payload, elapsed = c.send(
                "POST", "/Users", user_body(name, f"ext{i}", "User", i)
            )
            if status == 201:
                ids[name] = json.loads(payload)["id"]
            return status, payload, elapsed

        return job

    rows.append(
        phase(
            "create user",
            [create(i, n) for i, n in enumerate(names)],
            url,
            token,
            clients,
            {201},
        )
    )
    user_ids = [ids[n] for n in names if n in ids]
    groups = max(1, users // 500)
    group_ids = []

    def create_group(i):
        def job(c):
            status, payload, elapsed = c.send(
                "POST",
                "/Groups",
                {"displayName": f"Bench Group {i}", "externalId": f"g{i}"},
            )
            if status == 201:
                group_ids.append(json.loads(payload)["id"])
            return status, payload, elapsed

        return job

    rows.append(
        phase(
            "create group",
            [create_group(i) for i in range(groups)],
            url,
            token,
            1,
            {201},
        )
    )

    def add(group_id, chunk):
        body = {
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "Add", "path": "members", "value": [{"value": u} for u in chunk]}
            ],
        }
        return lambda c: c.send("PATCH", f"/Groups/{group_id}", body)

    jobs = []
    for gi, group_id in enumerate(group_ids):
        members = user_ids[gi::groups]
        for start in range(0, len(members), batch):
            jobs.append(add(group_id, members[start : start + batch]))
    rows.append(phase(f"PATCH add members x{batch}", jobs, url, token, clients, {204}))

    def update(uid, i):
        body = {
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "Replace", "path": "displayName", "value": f"Renamed {i}"},
                {"op": "Replace", "path": "active", "value": "False"},
            ],
        }
        return lambda c: c.send("PATCH", f"/Users/{uid}", body)

    rows.append(
        phase(
            "PATCH user (Entra mode A)",
            [update(u, i) for i, u in enumerate(user_ids)],
            url,
            token,
            clients,
            {200},
        )
    )
    rows.append(
        phase("userName eq (hit)", [miss(n) for n in names], url, token, clients, {200})
    )
    rows.append(
        phase(
            "GET user by id",
            [lambda c, u=u: c.send("GET", f"/Users/{u}") for u in user_ids],
            url,
            token,
            clients,
            {200},
        )
    )
    pages = [
        (lambda c, s=s: c.send("GET", f"/Users?startIndex={s}&count=100"))
        for s in range(1, users + 1, 100)
    ]
    rows.append(phase("list users, 100 per page", pages, url, token, clients, {200}))
    return rows


def offered_load(url, token, users, clients, rate, floor=None):
    """Look up and create ``users`` new users at ``rate`` requests/s; return the rows."""
    phase = beside_floor(floor)
    names = [f"bench.paced{i:06d}@contoso.com" for i in range(users)]
    lookups = [
        (lambda c, n=n: c.send("GET", f'/Users?filter=userName+eq+"{n}"'))
        for n in names
    ]
    creates = [
        (
            lambda c, i=i, n=n: c.send(
                "POST", "/Users", user_body(n, f"paced{i}", "Paced", i)
            )
        )
        for i, n in enumerate(names)
    ]
    return [
        phase(
            f"userName eq at {rate}/s", lookups, url, token, clients, {200}, rate=rate
        ),
        phase(
            f"create user at {rate}/s", creates, url, token, clients, {201}, rate=rate
        ),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=10, help="members per PATCH")
    parser.add_argument(
        "--threads", type=int, help="server worker threads (default: mdm serve's)"
    )
    parser.add_argument(
        "--rate",
        type=int,
        default=100,
        help="requests/s of the open-loop phases (Entra needs 25; 0 skips them)",
    )
    parser.add_argument(
        "--rate-users", type=int, default=1000, help="users the open-loop phases add"
    )
    parser.add_argument(
        "--mdm", help="serve with this mdm command, such as dist/mdm (the binary)"
    )
    parser.add_argument("--url", help="target an existing server's SCIM base URL")
    parser.add_argument("--token", help="bearer token for --url")
    parser.add_argument(
        "--oauth",
        action="store_true",
        help="provision with an OAuth client's access token instead of a static token",
    )
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument(
        "--database-url", help="serve from this PostgreSQL database (a scratch schema)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes sharing the database; clients are spread over them",
    )
    parser.add_argument(
        "--compare-activity-log",
        action="store_true",
        help="run the cycle with the activity log off, then on, and compare",
    )
    args = parser.parse_args()
    if args.mdm:
        global MDM
        MDM = [os.path.abspath(args.mdm)]

    if args.compare_activity_log:
        return compare_activity_log(args, floor(args.clients, max(2000, args.users)))
    rows = []
    processes = []
    with scratch(args.database_url) as (instance, database_url):
        if args.url:
            url, token = args.url, args.token
        else:
            process, url, token = start_server(
                instance,
                database_url=database_url,
                threads=args.threads,
                oauth=args.oauth,
            )
            processes.append(process)
            if args.processes > 1:
                url = [url]
                for _ in range(args.processes - 1):
                    process, more, _ = start_server(
                        instance,
                        database_url=database_url,
                        token=token,
                        threads=args.threads,
                    )
                    processes.append(process)
                    url.append(more)
        base = Floor(args.clients)
        try:
            warm_up(url, token, args.clients)
            rows.append(base.measure(max(2000, args.users), quiet=False))
            rows += cycle(url, token, args.users, args.clients, args.batch, base)
            if args.rate:
                print(
                    f"\nopen loop: {args.rate} requests/s from {args.clients} clients"
                )
                rows += offered_load(
                    url, token, args.rate_users, args.clients, args.rate, base
                )
            for process in processes:
                print(f"server memory after the cycle: {rss_mib(process.pid):.0f} MiB")
        finally:
            base.close()
            for process in processes:
                process.terminate()
                process.wait()
    print("\nratios to the framework floor measured around each phase:")
    for row in rows[1:]:
        if not row["rate"]:
            print(
                f"  {row['phase']:<28} {row['rps'] / row['floor_rps']:6.2f}"
                f"  (floor {row['floor_rps']:.0f} req/s)"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 1 if any(r["failures"] for r in rows) else 0


def compare_activity_log(args, floor_row):
    """Run the same cycle with the activity log off and on; print the throughput ratio."""
    totals = {}
    for enabled in (False, True):
        label = "on" if enabled else "off"
        print(f"\n-- activity log {label} --")
        with scratch(args.database_url) as (instance, database_url):
            process, url, token = start_server(instance, enabled, database_url)
            try:
                phases = cycle(url, token, args.users, args.clients, args.batch)
            finally:
                process.terminate()
                process.wait()
        requests = sum(p["requests"] for p in phases)
        seconds = sum(p["requests"] / p["rps"] for p in phases if p["rps"])
        totals[label] = requests / seconds
        print(f"whole cycle: {totals[label]:.0f} req/s")
    ratio = totals["on"] / totals["off"]
    print(
        f"\nactivity log on/off throughput: {ratio:.3f} "
        f"(floor {floor_row['rps']:.0f} req/s)"
    )
    return 0 if ratio >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
