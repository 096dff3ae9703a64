"""Benchmark mdm at directory scale: 100,000 users and a group of 100,000 members.

The directory is seeded straight into the scratch database (not through the
API, which would take most of an hour on two cores), then the server is
started on it and each operation is measured on the big group and on a
10-member group in the same run, each beside the framework floor measured
just before and after it.

    .venv/bin/python bench/scale.py --users 100000
"""

import argparse
import http.client
import json
import os
import re
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.provision import PATCH_OP  # noqa: E402
from bench.provision import Floor  # noqa: E402
from bench.provision import beside_floor  # noqa: E402
from bench.provision import start_server  # noqa: E402

ADMIN_PASSWORD = "bench-password-1234"


def seed(instance, users):
    """Create users, a big group holding all of them, and a 10-member group."""
    os.environ["MDM_INSTANCE_PATH"] = instance
    from mdm import create_app
    from mdm.db import database
    from mdm.models import Admin
    from mdm.models import Group
    from mdm.models import Membership
    from mdm.models import User
    from mdm.models import mirror_user
    from mdm.models import new_id

    app = create_app()
    started = time.perf_counter()
    fields = User._meta.sorted_fields
    with app.app_context(), database.connection_context():
        rows = []
        for i in range(users):
            data = {
                "userName": f"user{i:06d}@contoso.com",
                "externalId": f"ext{i:06d}",
                "active": True,
                "displayName": f"User {i}",
                "name": {"givenName": "User", "familyName": str(i)},
                "emails": [
                    {
                        "value": f"user{i:06d}@contoso.com",
                        "type": "work",
                        "primary": True,
                    }
                ],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                    "department": f"Dept {i % 50}",
                    "employeeNumber": str(100000 + i),
                },
            }
            user = User(scim_id=new_id(), source="entra")
            mirror_user(user, data)
            rows.append(
                {f.name: getattr(user, f.name) for f in fields if not f.primary_key}
            )
        with database.atomic():
            for start in range(0, users, 1000):
                User.insert_many(rows[start : start + 1000]).execute()
        big = Group.create(display_name="All Staff", source="entra")
        small = Group.create(display_name="Small Team", source="entra")
        ids = [pk for (pk,) in User.select(User.id).order_by(User.id).tuples()]
        with database.atomic():
            for start in range(0, len(ids), 1000):
                Membership.insert_many(
                    [{"group": big.id, "user": pk} for pk in ids[start : start + 1000]]
                ).execute()
            Membership.insert_many(
                [{"group": small.id, "user": pk} for pk in ids[:10]]
            ).execute()
        admin = Admin(username="bench")
        admin.set_password(ADMIN_PASSWORD)
        admin.save()
        scim_ids = [s for (s,) in User.select(User.scim_id).order_by(User.id).tuples()]
        result = (big.scim_id, small.scim_id, scim_ids)
    database.close_all()
    print(f"seeded {users} users in {time.perf_counter() - started:.1f} s")
    return result


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        match = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    return int(match.group(1)) / 1024 if match else float("nan")


def admin_cookie(port):
    """Sign in to the console and return the session cookie header."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/login")
    response = conn.getresponse()
    page = response.read().decode()
    cookie = response.getheader("Set-Cookie").split(";")[0]
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode(
        {"csrf_token": csrf, "username": "bench", "password": ADMIN_PASSWORD}
    )
    conn.request(
        "POST",
        "/login",
        body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
    )
    response = conn.getresponse()
    response.read()
    return response.getheader("Set-Cookie").split(";")[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    base = Floor(args.clients)
    with tempfile.TemporaryDirectory() as instance:
        big, small, user_ids = seed(instance, args.users)
        server, url, token = start_server(instance)
        try:
            port = urllib.parse.urlsplit(url).port
            rows = measure(url, token, port, big, small, user_ids, args, base)
            rss = rss_mb(server.pid)
        finally:
            base.close()
            server.terminate()
            server.wait()
        db_bytes = os.path.getsize(os.path.join(instance, "mdm.sqlite"))
    print(f"\nserver RSS after the run: {rss:.0f} MB")
    print(
        f"database: {db_bytes / 1e6:.1f} MB, {db_bytes / args.users:.0f} bytes per user"
    )
    print("\nratios to the framework floor measured around each phase:")
    for row in rows:
        print(
            f"  {row['phase']:<48} {row['rps'] / row['floor_rps']:6.2f}"
            f"  (floor {row['floor_rps']:.0f} req/s)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "rows": rows,
                    "rss_mb": rss,
                    "db_bytes_per_user": db_bytes / args.users,
                },
                f,
                indent=2,
            )


def measure(url, token, port, big, small, user_ids, args, floor):
    """Measure each operation on the big and the small group."""
    run_phase = beside_floor(floor)
    rows = []
    n = args.repeat
    outsiders = user_ids[-(n * 10) :]

    def add(group, i):
        chunk = outsiders[(i * 10) % len(outsiders) :][:10]
        body = {
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "Add", "path": "members", "value": [{"value": u} for u in chunk]}
            ],
        }
        return lambda c: c.send("PATCH", f"/Groups/{group}", body)

    def remove(group, i):
        body = {
            "schemas": [PATCH_OP],
            "Operations": [
                {
                    "op": "Remove",
                    "path": "members",
                    "value": [{"value": outsiders[(i * 10) % len(outsiders)]}],
                }
            ],
        }
        return lambda c: c.send("PATCH", f"/Groups/{group}", body)

    for label, group in (("10-member group", small), ("100k-member group", big)):
        rows.append(
            run_phase(
                f"PATCH add 10 members, {label}",
                [add(group, i) for i in range(n)],
                url,
                token,
                args.clients,
                {204},
            )
        )
        rows.append(
            run_phase(
                f"PATCH remove 1 member, {label}",
                [remove(group, i) for i in range(n)],
                url,
                token,
                args.clients,
                {204},
            )
        )
    for label, name in (
        ("10-member group", "small team"),
        ("100k-member group", "all staff"),
    ):
        rows.append(
            run_phase(
                f"displayName eq excl. members, {label}",
                [
                    lambda c, name=name: c.send(
                        "GET",
                        f'/Groups?excludedAttributes=members&filter=displayName+eq+"{name.replace(" ", "+")}"',
                    )
                ]
                * n,
                url,
                token,
                args.clients,
                {200},
            )
        )
    rows.append(
        run_phase(
            "userName eq",
            [
                lambda c, i=i: c.send(
                    "GET",
                    f'/Users?filter=userName+eq+"user{(i * 7919) % len(user_ids):06d}@contoso.com"',
                )
                for i in range(n * 5)
            ],
            url,
            token,
            args.clients,
            {200},
        )
    )
    total = len(user_ids)
    for label, start in (("first page", 1), ("deep page", max(1, total - 100))):
        rows.append(
            run_phase(
                f"list users, {label}",
                [lambda c, s=start: c.send("GET", f"/Users?startIndex={s}&count=100")]
                * (n // 4),
                url,
                token,
                args.clients,
                {200},
            )
        )
    cookie = admin_cookie(port)
    console = http.client.HTTPConnection("127.0.0.1", port)
    timings = []
    for page in (1, 2, total // 100, total // 50):
        started = time.perf_counter()
        console.request("GET", f"/admin/users?page={page}", headers={"Cookie": cookie})
        response = console.getresponse()
        response.read()
        timings.append((page, response.status, (time.perf_counter() - started) * 1000))
    for page, status, ms in timings:
        print(f"admin Users page {page:<6} status {status}  {ms:7.1f} ms")
    return rows


if __name__ == "__main__":
    main()
