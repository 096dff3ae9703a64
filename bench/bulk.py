"""Benchmark loading a directory through /Bulk against one POST per user.

Starts the server on two scratch instances (or targets --url with --token),
creates the same users one request per user with N concurrent clients, then
in Bulk batches, and prints users/s for each with the speed-up.

    .venv/bin/python bench/bulk.py --users 10000 --batch 1000
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.provision import Client  # noqa: E402
from bench.provision import run_phase  # noqa: E402
from bench.provision import start_server  # noqa: E402

BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def user(n, prefix):
    """Return a user as Entra provisions it, with typical attributes."""
    name = f"{prefix}{n:06d}@example.com"
    return {
        "schemas": [USER, ENTERPRISE],
        "userName": name,
        "externalId": f"{prefix}-{n}",
        "active": True,
        "displayName": f"User {n}",
        "name": {"givenName": "User", "familyName": str(n)},
        "emails": [{"value": name, "type": "work", "primary": True}],
        ENTERPRISE: {"department": f"Dept {n % 20}", "employeeNumber": str(n)},
    }


def one_per_user(url, token, users, clients):
    bodies = [user(n, "single") for n in range(users)]
    jobs = [lambda c, body=body: c.send("POST", "/Users", body) for body in bodies]
    return run_phase("POST /Users, one per user", jobs, url, token, clients, {201})


def bulk(url, token, users, batch):
    """Send the users in Bulk batches on one connection; return users/s."""
    client = Client(url, token)
    started = time.perf_counter()
    latencies = []
    for first in range(0, users, batch):
        operations = [
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": str(n),
                "data": user(n, "bulk"),
            }
            for n in range(first, min(first + batch, users))
        ]
        status, payload, elapsed = client.send(
            "POST", "/Bulk", {"schemas": [BULK_REQUEST], "Operations": operations}
        )
        results = json.loads(payload).get("Operations", []) if status == 200 else []
        if [r["status"] for r in results] != ["201"] * len(operations):
            raise RuntimeError(f"Bulk batch failed: {status} {payload[:300]!r}")
        latencies.append(elapsed)
    wall = time.perf_counter() - started
    rate = users / wall
    print(
        f"{'POST /Bulk, ' + str(batch) + ' per request':<28} {len(latencies):>7} req "
        f"{rate:>8.0f} users/s  slowest request {max(latencies) * 1000:.0f} ms"
    )
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=1000, help="operations per Bulk")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--url", help="target an existing server's SCIM base URL")
    parser.add_argument("--token", help="bearer token for --url")
    args = parser.parse_args()

    rates = {}
    for mode in ("single", "bulk"):
        with tempfile.TemporaryDirectory() as instance:
            process = None
            if args.url:
                url, token = args.url, args.token
            else:
                process, url, token = start_server(instance)
            try:
                if mode == "single":
                    row = one_per_user(url, token, args.users, args.clients)
                    rates[mode] = row["rps"]
                else:
                    rates[mode] = bulk(url, token, args.users, args.batch)
            finally:
                if process is not None:
                    process.terminate()
                    process.wait()
    print(
        f"\nBulk loads {rates['bulk'] / rates['single']:.1f}x as many users per second "
        f"as one request per user ({rates['bulk']:.0f} vs {rates['single']:.0f})."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
