"""Time the console's Users page filtered to a group of every user, in each sort, shallow and deep.

Seeds USERS users straight into a new SQLite instance (or a scratch PostgreSQL
schema), all in one group, with bench/scale.py's helpers, then times pages in
process through the test client: medians of 5 after one warm-up request.

    python bench/users_page.py --users 200000 [--database-url URL] [--code DIR]

``--code`` imports mdm from another checkout, to time the code before a change
on the same data.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--code", default="")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.code:
        sys.path.insert(0, os.path.abspath(args.code))
    sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from bench import scale

    with tempfile.TemporaryDirectory() as instance:
        if args.database_url:
            with scale.scratch_schema(args.database_url) as (url, _):
                run(scale, instance, url, args)
        else:
            run(scale, instance, "", args)


def run(scale, instance, url, args):
    """Seed the directory, then print one timed row per page."""
    import mdm
    from mdm.db import database
    from mdm.models import Admin
    from mdm.models import Group
    from mdm.models import User

    print(f"mdm from {os.path.dirname(mdm.__file__)}")
    app = scale.open_app(instance, url)
    app.config["WTF_CSRF_ENABLED"] = False
    started = time.perf_counter()
    with database.connection_context():
        admin = Admin(username="bench")
        admin.set_password("bench-password-1")
        admin.save()
    scale.seed_users(0, args.users)
    with database.connection_context():
        big, small = scale.create_groups()
        scale.fill_groups(big, small)
        if not url:
            database.execute_sql("ANALYZE")
        else:
            database.execute_sql('ANALYZE "user"')
            database.execute_sql('ANALYZE "membership"')
        deep = {}
        for key, field in (("username", User.user_name), ("name", User.display_name)):
            row = User.select(User.id).order_by(field, User.id).offset(99999).first()
            deep[key] = row.id
        assert Group.get(Group.scim_id == big)
    print(f"seeded {args.users} users in {time.perf_counter() - started:.0f} s")
    client = app.test_client()
    response = client.post(
        "/login", data={"username": "bench", "password": "bench-password-1"}
    )
    assert response.status_code == 302, response.status_code
    pages = [("all users", "/admin/users")]
    for sort in ("username", "name", "email", "source", "updated"):
        for order in ("asc", "desc"):
            pages.append(
                (
                    f"group, {sort} {order}",
                    f"/admin/users?group={big}&sort={sort}&order={order}",
                )
            )
    pages += [
        ("group, page 2,000 by OFFSET", f"/admin/users?group={big}&page=2000"),
        (
            "group, page 2,001 by key (username)",
            f"/admin/users?group={big}&page=2001&after={deep['username']}",
        ),
        (
            "group, page 2,001 by key (name)",
            f"/admin/users?group={big}&sort=name&page=2001&after={deep['name']}",
        ),
        ("group, search 'user0123'", f"/admin/users?group={big}&q=user0123"),
        ("small group", f"/admin/users?group={small}"),
        ("big group page", f"/admin/groups/{big}"),
        ("big group page, search 'user0123'", f"/admin/groups/{big}?q=user0123"),
    ]
    for what, path in pages:
        times = []
        for i in range(args.repeat + 1):
            begun = time.perf_counter()
            response = client.get(path)
            elapsed = (time.perf_counter() - begun) * 1000
            assert response.status_code == 200, (path, response.status_code)
            if i:
                times.append(elapsed)
        print(f"{what:40} {statistics.median(times):8.1f} ms")


if __name__ == "__main__":
    main()
