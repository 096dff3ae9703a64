"""The substring index: SCIM co/sw/ew and the console search find what LIKE found, fast."""

import json
import logging
import os
import random
import string

import pytest

from mdm import create_app
from mdm.db import database
from mdm.models import User
from mdm.models import utcnow

from . import served
from .conftest import ENGINE
from .conftest import database_config
from .conftest import raw_connection
from .test_admin_browse import add_users
from .test_admin_browse import usernames

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

# (userName, displayName, givenName, familyName, emails, externalId, department, title)
PEOPLE = [
    (
        "bjensen@example.com",
        "Barbara Jensen",
        "Barbara",
        "Jensen",
        ["bjensen@example.com", "babs@Home.Example.org"],
        "EXT-bj-001",
        "Sales",
        "Tour Guide",
    ),
    (
        "100%done",
        "Percent_Sign 100%",
        "Pér",
        "Ça_va",
        ["pct%@x.io"],
        "ext%_01",
        "R&D",
        None,
    ),
    (
        "a_b",
        "Under_Score",
        "Zoë",
        "Ørsted",
        ["under_score@x.io", "a.b@x.io"],
        "a_b-EXT",
        "Ops",
        "Night_Owl",
    ),
    ("東京太郎", "東京 Taro", "太郎", "東京", ["taro@東京.jp"], "東京-1", "営業", None),
    ("MiXeD.CaSe", "mIxEd CASE user", "MIXED", "case", [], "MiXeD", None, "QA"),
    (
        'quo"te',
        'Say "hi" \\ back',
        "Back\\slash",
        "O'Neil",
        ['q"uote@x.io', "back\\slash@x.io"],
        'x"y',
        "Dept 7",
        "Dept 70 lead",
    ),
    ("abab", "ab", "aba", None, ["ab@ab.ab"], "ABAB", "Dept 70", None),
]

ATTRIBUTES = {
    "userName": 0,
    "displayName": 1,
    "name.givenName": 2,
    "name.familyName": 3,
    "emails.value": 4,
    "externalId": 5,
}

FIXED_PATTERNS = [
    "%",
    "_",
    "%_",
    "100%",
    "_b",
    "a_b",
    "_sc",
    "xam",
    "EXAMPLE",
    "ample.co",
    "東京",
    "京太郎",
    "Ørs",
    "zzz",
    "ab",
    "aba",
    "ABAB",
    'o"t',
    '"hi"',
    "\\ b",
    "k\\s",
    "Dept 7",
    "ept 70",
    "x.io",
    "@x.io",
    "e",
    "E",
]

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold(text):
    """Lower ASCII letters only, as SQLite's LIKE and NOCASE compare."""
    return text.translate(_ASCII_LOWER)


def patterns():
    """Return the fixed patterns and pieces of the stored values, their ASCII case shuffled."""
    rng = random.Random(16)
    found = list(FIXED_PATTERNS)
    values = [
        v for person in PEOPLE for v in person if isinstance(v, str) and len(v) > 3
    ]
    for value in values:
        for size in (3, 4, 6):
            start = rng.randrange(0, max(1, len(value) - size + 1))
            piece = value[start : start + size]
            found.append(
                "".join(c.swapcase() if rng.random() < 0.5 else c for c in piece)
            )
    return list(dict.fromkeys(found))


def matches(value, op, pattern, exact=False):
    """Return whether ``value`` passes ``op`` ``pattern``, the Python reference."""
    if value is None:
        return False
    if not exact:
        value, pattern = fold(value), fold(pattern)
    if op == "co":
        return pattern in value
    if op == "sw":
        return value.startswith(pattern)
    return value.endswith(pattern)


def expected(attribute, op, pattern):
    index = ATTRIBUTES[attribute]
    exact = attribute == "externalId"
    found = set()
    for person in PEOPLE:
        values = person[index] if attribute == "emails.value" else [person[index]]
        if any(matches(v, op, pattern, exact) for v in values):
            found.add(person[0])
    return found


def body(person):
    user_name, display, given, family, emails, external, department, title = person
    data = {"schemas": [CORE, ENTERPRISE], "userName": user_name}
    data["displayName"] = display
    data["name"] = {
        k: v for k, v in (("givenName", given), ("familyName", family)) if v
    }
    data["emails"] = [
        {"value": e, "type": "work", "primary": i == 0} for i, e in enumerate(emails)
    ]
    data["externalId"] = external
    if department:
        data[ENTERPRISE] = {"department": department}
    if title:
        data["title"] = title
    return data


@pytest.fixture
def people(scim):
    return {p[0]: scim.post("/Users", body(p)).get_json()["id"] for p in PEOPLE}


def filtered(scim, text):
    response = scim.get("/Users", query_string={"filter": text, "count": 100})
    assert response.status_code == 200, response.get_json()
    return {r["userName"] for r in response.get_json()["Resources"]}


def filter_text(attribute, op, pattern):
    return f"{attribute} {op} {json.dumps(pattern, ensure_ascii=False)}"


def test_scim_substring_filters_match_the_reference(scim, people):
    for pattern in patterns():
        for attribute in ATTRIBUTES:
            for op in ("co", "sw", "ew"):
                text = filter_text(attribute, op, pattern)
                assert filtered(scim, text) == expected(attribute, op, pattern), text


@pytest.mark.parametrize("pattern", ["xam", "X.IO", "%@", "東京", 'q"u', "e"])
def test_every_spelling_of_an_email_filter_matches(scim, people, pattern):
    wanted = expected("emails.value", "co", pattern)
    quoted = json.dumps(pattern, ensure_ascii=False)
    for text in (
        f"emails co {quoted}",
        f"emails.value co {quoted}",
        f"emails[value co {quoted}]",
        f'emails[type eq "work" and value co {quoted}]',
    ):
        assert filtered(scim, text) == wanted, text


def test_email_equality_matches_the_reference(scim, people):
    """emails eq: whole values only, ASCII case ignored, whatever the index narrows."""
    emails = [e for person in PEOPLE for e in person[4]]
    values = [*emails, *(e.swapcase() for e in emails), *(e[1:] for e in emails)]
    for value in values:
        wanted = {
            person[0]
            for person in PEOPLE
            if any(fold(e) == fold(value) for e in person[4])
        }
        quoted = json.dumps(value, ensure_ascii=False)
        for text in (
            f"emails.value eq {quoted}",
            f"emails eq {quoted}",
            f'emails[type eq "work" and value eq {quoted}]',
        ):
            assert filtered(scim, text) == wanted, text
    assert filtered(scim, 'emails eq "babs@home.example.org"') == {
        "bjensen@example.com"
    }


def console_expected(pattern, gone=()):
    found = set()
    for person in PEOPLE:
        user_name, display, given, family, emails, external, department, title = person
        if user_name in gone:
            continue
        primary = emails[0] if emails else None
        columns = (display, user_name, primary, given, family, department, title)
        if any(matches(v, "co", pattern) for v in columns) or external == pattern:
            found.add(user_name)
    return found


def test_console_search_matches_the_reference(console, scim, people):
    for pattern in [*patterns(), "MiXeD", "ext%_01"]:
        url = "/admin/users?" + _query(q=pattern)
        assert set(usernames(console, url)) == console_expected(pattern), pattern


def _query(**args):
    from urllib.parse import urlencode

    return urlencode(args)


def test_search_follows_updates_deletes_and_purges(app, console, scim, people):
    jensen = people["bjensen@example.com"]
    changed = body(PEOPLE[0]) | {
        "userName": "bjones@example.com",
        "displayName": "Barbara Jones",
        "emails": [{"value": "barbara.jones@corp.test", "primary": True}],
    }
    assert scim.put(f"/Users/{jensen}", changed).status_code == 200
    assert filtered(scim, 'userName co "jensen"') == set()
    assert filtered(scim, 'emails.value co "babs@home"') == set()
    assert filtered(scim, 'emails co "JONES@corp"') == {"bjones@example.com"}
    assert filtered(scim, 'displayName sw "barbara jo"') == {"bjones@example.com"}
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "displayName", "value": "Bee Jay"}],
    }
    assert scim.patch(f"/Users/{jensen}", patch).status_code == 200
    assert filtered(scim, 'displayName co "jones"') == set()
    assert filtered(scim, 'displayName ew "ee jay"') == {"bjones@example.com"}
    assert usernames(console, "/admin/users?q=Bee+Jay") == ["bjones@example.com"]

    # A SCIM DELETE keeps the row: SCIM stops seeing it, the console still does.
    assert scim.delete(f"/Users/{people['a_b']}").status_code == 204
    assert filtered(scim, 'userName co "a_b"') == set()
    assert usernames(console, "/admin/users?q=Under_Sc") == ["a_b"]
    with app.app_context(), database.connection_context():
        assert User.purge(utcnow()) == 1
    assert usernames(console, "/admin/users?q=Under_Sc") == []
    assert filtered(scim, 'emails co "x.io"') == {"100%done", 'quo"te'}
    if ENGINE == "sqlite":
        # The purged row left the index itself, not only the results.
        with app.app_context(), database.connection_context():
            rows = database.execute_sql(
                "SELECT rowid FROM user_search WHERE user_search MATCH '\"der\"'"
            ).fetchall()
            assert rows == []
    # A name freed by the purge is provisioned again and found.
    scim.create_user("a_b", displayName="Again")
    assert filtered(scim, 'userName sw "a_b"') == {"a_b"}
    assert usernames(console, "/admin/users?q=Again") == ["a_b"]


#
# Plans: the index answers each operator and the console search
#


@pytest.fixture
def statements(caplog):
    """Return a function listing the SELECTs run since it was last called."""
    caplog.set_level(logging.DEBUG, logger="peewee")

    def taken():
        found = [
            r.msg
            for r in caplog.records
            if r.name == "peewee" and isinstance(r.msg, tuple)
        ]
        caplog.clear()
        return [(sql, params) for sql, params in found if sql.startswith("SELECT")]

    return taken


@pytest.fixture
def crowd(app, people):
    """Add users enough that PostgreSQL's planner weighs indexes as at scale."""
    if ENGINE == "sqlite":
        return
    with app.app_context(), database.connection_context():
        database.execute_sql(
            'INSERT INTO "user" (scim_id, user_name, display_name, active, data, '
            "source, version, created, last_modified) "
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
            "WHERE i < 3000) SELECT 'filler-' || i, 'filler' || i || '@corp.test', "
            "'Filler ' || i, TRUE, '{}', 'generic', 1, now(), now() FROM n"
        )
        # VACUUM empties the GIN index's list of pending entries, as autovacuum
        # does in a running database.
        database.execute_sql('VACUUM ANALYZE "user"')


def plan(sql, params):
    """Return the query plan of ``sql`` as one text."""
    if ENGINE == "sqlite":
        rows = database.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return "\n".join(row[-1] for row in rows)
    # A few rows cost less to read whole; forbid that so the plan shows
    # what a large table gets.
    database.execute_sql("SET enable_seqscan = off")
    database.execute_sql("SET enable_indexscan = off")
    try:
        rows = database.execute_sql("EXPLAIN " + sql, params).fetchall()
    finally:
        database.execute_sql("RESET enable_seqscan")
        database.execute_sql("RESET enable_indexscan")
    return "\n".join(row[0] for row in rows)


def uses_index(text):
    if ENGINE == "sqlite":
        return "SCAN user_search VIRTUAL TABLE" in text
    return "Bitmap Index Scan on user_search" in text


def searches(taken):
    return [s for s in taken if "user_search" in s[0] or "ILIKE" in s[0]]


@pytest.mark.parametrize(
    "text",
    [
        'userName co "jensen"',
        'userName sw "bjen"',
        'userName ew "ple.com"',
        'displayName co "arbara"',
        'name.givenName sw "Barb"',
        'name.familyName ew "ensen"',
        'externalId co "bj-0"',
        'emails.value co "home.ex"',
        'emails[value ew "ple.org"]',
        'emails[type eq "work" and value sw "babs@"]',
        'emails.value eq "babs@home.example.org"',
        'emails eq "BABS@home.example.org"',
        'emails[type eq "work" and value eq "babs@home.EXAMPLE.org"]',
    ],
)
def test_substring_filters_use_the_index(app, scim, crowd, statements, text):
    statements()
    assert filtered(scim, text) == {"bjensen@example.com"}
    taken = searches(statements())
    assert taken, "no search statement ran"
    with app.app_context(), database.connection_context():
        for sql, params in taken:
            assert uses_index(plan(sql, params)), plan(sql, params)


def test_console_search_uses_the_index(app, console, crowd, statements):
    statements()
    assert usernames(console, "/admin/users?q=jensen") == ["bjensen@example.com"]
    taken = [s for s in statements() if "user" in s[0] and "LIKE" in s[0]]
    # The first page holds the one match, so it is also the count.
    assert len(taken) == 1 and "COUNT" not in taken[0][0]
    add_users(app, 60, prefix="clanmember")
    statements()
    found = usernames(console, "/admin/users?q=clanmem")
    assert found == [f"clanmember{i:03d}" for i in range(50)]
    more = [s for s in statements() if "user" in s[0] and "LIKE" in s[0]]
    assert len(more) == 2 and sum("COUNT" in sql for sql, _ in more) == 1
    with app.app_context(), database.connection_context():
        for sql, params in taken + more:
            assert uses_index(plan(sql, params)), plan(sql, params)


def test_short_patterns_scan_without_the_index(app, scim, people, statements):
    statements()
    assert filtered(scim, 'userName co "ab"') == {"abab"}
    taken = [s for s in statements() if "LIKE" in s[0]]
    assert taken and not any("user_search" in sql for sql, _ in taken)


#
# Upgrades
#


def _drop_index(path):
    conn = raw_connection(path)
    try:
        cursor = conn.cursor()
        if ENGINE == "sqlite":
            for trigger in ("insert", "update", "delete"):
                cursor.execute(f"DROP TRIGGER user_search_{trigger}")
            cursor.execute("DROP TABLE user_search")
        else:
            cursor.execute("DROP INDEX user_search")
    finally:
        conn.close()


def test_a_schema_9_database_gets_the_index_on_start(tmp_path):
    """A database from before the index is indexed by the served stack's upgrade."""
    instance = tmp_path / "instance"
    env = served.environment(instance)
    path = os.path.join(instance, "mdm.sqlite")
    secret = served.mdm(env, "token", "create", "--idp", "entra").stdout.strip()
    auth = {
        "Authorization": f"Bearer {secret}",
        "Content-Type": "application/scim+json",
    }
    log = tmp_path / "serve.log"
    process, port = served.start(env, log)
    try:
        for person in PEOPLE:
            response, raw = served.request(
                port, "POST", "/scim/v2/Users", body(person), auth
            )
            assert response.status == 201, raw
    finally:
        assert served.stop(process) == 0
    _drop_index(path)

    process, port = served.start(env, log)
    try:
        for text, wanted in (
            ('userName co "jensen"', {"bjensen@example.com"}),
            ('emails co "x.io"', {"100%done", "a_b", 'quo"te'}),
            ('externalId ew "EXT"', {"a_b"}),
        ):
            path_query = "/scim/v2/Users?" + _query(filter=text)
            response, raw = served.request(port, "GET", path_query, headers=auth)
            assert response.status == 200, raw
            found = {r["userName"] for r in json.loads(raw)["Resources"]}
            assert found == wanted, text
    finally:
        assert served.stop(process) == 0

    # The index was rebuilt from the rows and the triggers keep it.
    app = create_app({"TESTING": True, **database_config(path)})
    with app.app_context(), database.connection_context():
        if ENGINE == "sqlite":
            count = database.execute_sql(
                "SELECT COUNT(*) FROM user_search WHERE user_search MATCH '\"jen\"'"
            ).fetchone()[0]
            assert count == 1
        else:
            count = database.execute_sql(
                # Other tests' schemas may hold one too: this schema's only.
                "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'user_search' "
                "AND schemaname = current_schema()"
            ).fetchone()[0]
            assert count == 1
