"""Kill mdm with SIGKILL mid-load and check that every acknowledged write survived.

Each round serves one scratch instance (the same one every round), runs
concurrent writers that create users and add them to one shared group, sends
SIGKILL to the server at a random moment, then restarts it and checks through
the SCIM API, and with sqlite3 once it is stopped, that every acknowledged user
exists exactly once, every acknowledged membership is present, and
PRAGMA integrity_check answers "ok". Exits non-zero on any loss.

    .venv/bin/python bench/crash.py --rounds 5 --writers 4 --seconds-per-round 2

With MDM_DATABASE_URL (or --database-url) naming a PostgreSQL database, the
servers use it instead and the check reads it with psycopg2.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# The harness is the durability test's own, so both run the same rounds.
from tests.crashload import run  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seconds-per-round", type=float, default=2.0)
    parser.add_argument("--instance", help="instance folder to reuse (default: temp)")
    parser.add_argument("--seed", type=int, help="seed for the kill delays")
    parser.add_argument(
        "--database-url", help="a scratch PostgreSQL database instead of SQLite"
    )
    parser.add_argument(
        "--min-writes", type=int, default=0, help="acknowledged writes before a kill"
    )
    args = parser.parse_args()
    if args.database_url:
        os.environ["MDM_DATABASE_URL"] = args.database_url
    s = run(
        args.rounds,
        args.writers,
        args.seconds_per_round,
        args.instance,
        args.seed,
        args.min_writes,
    )
    verified = s["acknowledged_users"] - len(s["lost_users"])
    print(
        f"\nrounds {s['rounds']} ({s['writers']} writers, {s['seconds_total']} s); "
        f"acknowledged users {s['acknowledged_users']}, "
        f"acknowledged memberships {s['acknowledged_memberships']}; "
        f"verified {verified} users present exactly once, "
        f"{s['acknowledged_memberships'] - len(s['lost_memberships'])} memberships; "
        f"integrity {', '.join(s['integrity'])}; "
        f"{s['client_errors']} requests cut off by the kills (not acknowledged)"
    )
    for key in (
        "lost_users",
        "duplicate_users",
        "lost_memberships",
        "duplicate_memberships",
        "unexpected_responses",
        "server_errors",
    ):
        if s[key]:
            print(f"{key}: {len(s[key])}: {s[key][:5]}")
    if s["foreign_key_violations"]:
        print(f"foreign key violations: {s['foreign_key_violations']}")
    print("OK" if s["ok"] else "FAILED")
    return 0 if s["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
