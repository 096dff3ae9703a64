"""Attribute filters read indexes (EXPLAIN shows each), and answer right as values change."""

import functools
import json
import logging
import re
from urllib.parse import quote

import pytest

from mdm.db import counted
from mdm.db import database
from mdm.db import schema_version
from mdm.db import set_schema_version
from mdm.models import ATTRIBUTE_COLUMNS
from mdm.models import GROUPING_COLUMNS
from mdm.models import INDEXED_ATTRIBUTES
from mdm.models import ONLY_SQLITE
from mdm.models import SCHEMA_VERSION
from mdm.models import User
from mdm.models import lowered
from mdm.models import migrate
from mdm.models import mirror_user
from mdm.models import new_id
from mdm.models import utcnow
from mdm.scim import filters
from mdm.scim import schema

from . import served
from .conftest import SCIM
from .conftest import TEST_DATABASE_URL
from .conftest import drop_value_counts
from .conftest import integrity_problems
from .conftest import issue_token
from .conftest import raw_connection

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
# Enough other users that PostgreSQL's planner, with statistics, prefers an
# index; SQLite prefers an equality index without any.
FILLER = 1000


@functools.cache
def _filler_rows():
    rows = []
    for i in range(FILLER):
        data = {
            "userName": f"filler{i}@example.com",
            "active": True,
            ENTERPRISE: {
                "department": f"Dept {i % 50}",
                "employeeNumber": str(100000 + i),
                "costCenter": f"CC{i % 40}",
                "organization": f"Org {i % 30}",
                "division": f"Div {i % 20}",
                "manager": {"value": f"filler-manager-{i % 60}"},
            },
        }
        user = User(scim_id=new_id(), source="entra")
        mirror_user(user, data)
        rows.append(
            {f.name: getattr(user, f.name) for f in User._meta.sorted_fields[1:]}
        )
    return rows


@pytest.fixture
def directory(app, scim):
    """Filler users, and three made through SCIM whose ids the tests expect."""
    with app.app_context(), database.connection_context():
        rows = _filler_rows()
        with database.atomic():
            for start in range(0, len(rows), 500):
                User.insert_many(rows[start : start + 500]).execute()
    ada = scim.create_user(
        "ada@example.com",
        active=False,
        **{
            ENTERPRISE: {
                "department": "Research",
                "employeeNumber": "E-1",
                "costCenter": "CC-R",
                "organization": "Analytical",
                "division": "Engines",
                "manager": {"value": "boss-1"},
            }
        },
    )
    bob = scim.create_user(
        "bob@example.com",
        **{
            ENTERPRISE: {
                "department": "research",
                "employeeNumber": "E-2",
                "costCenter": "cc-r",
                "organization": "ANALYTICAL",
                "division": "engines",
                "manager": {"value": "BOSS-1"},
            }
        },
    )
    # No enterprise attributes at all.
    cy = scim.create_user("cy@example.com", active=False)
    if TEST_DATABASE_URL:
        with app.app_context(), database.connection_context():
            # As autovacuum leaves a table: with statistics, and its pages
            # marked all-visible, so that a count can read an index alone.
            database.execute_sql('VACUUM ANALYZE "user"')
    return {"ada": ada["id"], "bob": bob["id"], "cy": cy["id"]}


def _ids(scim, text, extra=""):
    """Return (totalResults, ids) of a filtered /Users, checking the whole body."""
    response = scim.get(f"/Users?filter={quote(text)}&attributes=id{extra}")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    ids = [r["id"] for r in body["Resources"]]
    assert body == {
        "schemas": [LIST],
        "totalResults": body["totalResults"],
        "startIndex": 1,
        "itemsPerPage": len(ids),
        "Resources": [{"schemas": [USER], "id": i} for i in ids],
    }
    return body["totalResults"], ids


#
# Plans
#

PLANS = [
    (f'{ENTERPRISE}:department eq "Research"', "user_department"),
    (f'{ENTERPRISE}:department eq "Research" and active eq true', "user_department"),
    (f'active eq true and {ENTERPRISE}:department eq "Research"', "user_department"),
    (f'{ENTERPRISE}:employeeNumber eq "e-1"', "user_employee_number"),
    (
        f'{ENTERPRISE}:employeeNumber eq "E-2" and active eq true',
        "user_employee_number",
    ),
    (f'{ENTERPRISE}:costCenter eq "CC-R"', "user_cost_center"),
    (f'{ENTERPRISE}:organization eq "Analytical"', "user_organization"),
    (f'{ENTERPRISE}:division eq "Engines"', "user_division"),
    (f'{ENTERPRISE}:manager.value eq "boss-1"', "user_manager"),
    # Entra's legacy form: the complex attribute compared as its value.
    (f'{ENTERPRISE}:manager eq "boss-1"', "user_manager"),
    ('manager eq "boss-1"', "user_manager"),
]


def _explain(sql, params):
    if TEST_DATABASE_URL:
        rows = database.execute_sql("EXPLAIN " + sql, params).fetchall()
        return "\n".join(row[0] for row in rows)
    rows = database.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return "\n".join(row[-1] for row in rows)


def _queries(caplog, request):
    """Run ``request`` and return the statements it ran."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        request()
    return [
        record.msg
        for record in caplog.records
        if record.name == "peewee" and isinstance(record.msg, tuple)
    ]


def _user_queries(caplog, request):
    """Run ``request`` and return the statements it ran against the user table."""
    return [
        (sql, params)
        for sql, params in _queries(caplog, request)
        if 'FROM "user" AS "t1" WHERE' in sql and sql.startswith("SELECT")
    ]


# How each engine reads the users of a grouping attribute's value it keeps
# counted (db.value_counted): PostgreSQL by the value lowercased, SQLite by
# the value as NOCASE compares it.
VALUE_COUNT = (
    "SELECT coalesce(sum(live), 0), coalesce(sum(active), 0) FROM user_value_count "
    + (
        "WHERE attribute = %s AND value = lower(%s)"
        if TEST_DATABASE_URL
        else "WHERE attribute = ? AND value = ?"
    )
)


@pytest.mark.parametrize(("text", "index"), PLANS)
def test_filter_plan_uses_index(app, scim, directory, caplog, text, index):
    # count=1 with a match: the page and the totalResults count both run.
    statements = _queries(caplog, lambda: _ids(scim, text, "&count=1"))
    queries = [q for q in statements if 'FROM "user" AS "t1" WHERE' in q[0]]
    column = index.removeprefix("user_")
    # A grouping attribute's count is read from the counts triggers keep
    # (schema 16 on PostgreSQL, 17 on SQLite), not from the users' index.
    kept = column in GROUPING_COLUMNS
    assert len(queries) == (1 if kept else 2), queries
    if kept:
        value = re.search(r'eq "([^"]*)"', text).group(1)
        assert [q for q in statements if "user_value_count" in q[0]] == [
            (VALUE_COUNT, (column, value))
        ]
    else:
        assert queries[1][0].startswith("SELECT COUNT(")
    with app.app_context(), database.connection_context():
        if TEST_DATABASE_URL:
            database.execute_sql("SET enable_seqscan = off")
        for sql, _ in queries:
            # As every list query writes it: live users only.
            assert '"t1"."deprovisioned_at" IS NULL' in sql
        # The page, in id order, comes off the index in that order: no sort
        # of every match (20,000 users of a department at a million).
        page_plan = _explain(*queries[0])
        # Either of the value's indexes: SQLite keeps equal keys in rowid
        # order, so (value, active) gives "and active eq true" in id order too.
        assert re.search(rf"{index}(_count)? ", page_plan), page_plan
        if TEST_DATABASE_URL:
            # The page's ids first, off the index alone (resources._ids_first),
            # as an array; then only the page's own rows, by primary key.
            head, _, page_plan = page_plan.partition("\n")
            assert head.startswith("Index Scan using user_pkey "), head
            assert "= ANY(ARRAY(SELECT" in queries[0][0]
            assert "Index Only Scan using " + index in page_plan, page_plan
        assert "TEMP B-TREE" not in page_plan and "Sort" not in page_plan, page_plan
        if kept:
            # Its rows of the value, one per shard, off the primary key.
            count_plan = _explain(VALUE_COUNT, (column, value))
            if TEST_DATABASE_URL:
                assert "Index Scan using user_value_count_pkey " in count_plan
            else:
                assert count_plan == (
                    "SEARCH user_value_count USING INDEX "
                    "sqlite_autoindex_user_value_count_1 (attribute=? AND value=?)"
                )
            return
        # totalResults of any other is counted from the index alone, however
        # many match: every attribute here is a column (schema 14), never an
        # expression over the document, whose index neither engine counts
        # from alone.
        count_plan = _explain(*queries[1])
        if TEST_DATABASE_URL:
            assert f"Index Only Scan using {index} " in count_plan, count_plan
        else:
            assert f"COVERING INDEX {index} " in count_plan, count_plan


# Filters on a mirrored column: SQLite reads its single-column index,
# PostgreSQL the console's sort index on the same key (schema 12 dropped the
# single-column ones there).
COLUMN_PLANS = [
    ('displayName eq "Nobody Here"', "user_display_name", "user_sort_display_name"),
]


@pytest.mark.parametrize(("text", "sqlite_index", "pg_index"), COLUMN_PLANS)
def test_column_filters_read_an_index_on_each_engine(
    app, scim, directory, caplog, text, sqlite_index, pg_index
):
    queries = _user_queries(caplog, lambda: _ids(scim, text))
    assert queries
    index = pg_index if TEST_DATABASE_URL else sqlite_index
    with app.app_context(), database.connection_context():
        if TEST_DATABASE_URL:
            database.execute_sql("SET enable_seqscan = off")
        for sql, params in queries:
            plan = _explain(sql, params)
            assert index in plan, f"{sql}\n{plan}"


def test_single_column_indexes_are_kept_on_sqlite_only(app):
    """PostgreSQL's sort indexes cover them; an upgrade from schema 11 drops them."""
    columns = {
        "user_user_name_all": "user_name",
        "user_display_name": "display_name",
        "user_email": "email",
        "user_last_modified": "last_modified",
    }
    assert set(columns) == set(ONLY_SQLITE)
    with app.app_context(), database.connection_context():
        present = {index.name for index in database.get_indexes("user")}
        if not TEST_DATABASE_URL:
            assert set(ONLY_SQLITE) <= present
            return
        assert not present & set(ONLY_SQLITE)
        for name, column in columns.items():
            database.execute_sql(f'CREATE INDEX "{name}" ON "user" ("{column}")')
        set_schema_version(database, "mdm", 11)
        migrate()
        present = {index.name for index in database.get_indexes("user")}
    assert not present & set(ONLY_SQLITE)


WHOLE_DIRECTORY = [
    None,
    "active eq true",
    "active eq false",
    'active eq "True"',
    "active eq False",
    "urn:ietf:params:scim:schemas:core:2.0:User:active eq true",
]


def _direct_count(app, text):
    with app.app_context(), database.connection_context():
        query = User.live()
        if text is not None:
            query = query.where(User.active == ("true" in text.lower()))
        return query.count()


@pytest.mark.parametrize("text", WHOLE_DIRECTORY)
def test_whole_directory_totals_are_the_kept_counts(app, scim, directory, caplog, text):
    """totalResults of every live user, or every (in)active one, counts no row."""
    extra = f"&filter={quote(text)}" if text else ""

    def listed():
        response = scim.get(f"/Users?attributes=id&count=1{extra}")
        assert response.status_code == 200, response.get_json()
        listed.total = response.get_json()["totalResults"]

    queries = _user_queries(caplog, listed)
    assert not [q for q in queries if q[0].startswith("SELECT COUNT(")], queries
    assert listed.total == _direct_count(app, text)
    assert listed.total > 1
    if text == "active eq false":
        # The page itself reads the few disabled users off their index.
        with app.app_context(), database.connection_context():
            if TEST_DATABASE_URL:
                database.execute_sql("SET enable_seqscan = off")
            plan = _explain(*queries[0])
        assert "user_disabled" in plan, plan


def _change_everything(scim, app, directory):
    """Create, disable, enable, deprovision, purge and re-provision users."""
    ada, bob, cy = directory["ada"], directory["bob"], directory["cy"]
    replace = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

    def patch(user, value):
        body = {
            "schemas": [replace],
            "Operations": [{"op": "Replace", "path": "active", "value": value}],
        }
        assert scim.patch(f"/Users/{user}", body).status_code == 200

    patch(ada, "True")  # Entra's string boolean
    patch(bob, False)
    patch(bob, False)  # no change
    assert scim.delete(f"/Users/{cy}").status_code == 204
    new = scim.create_user("dee@example.com", active=False)
    assert scim.delete(f"/Users/{new['id']}").status_code == 204
    # The same userName again: a new user (the old one is deprovisioned).
    scim.create_user("dee@example.com")
    with app.app_context(), database.connection_context():
        User.delete().where(User.scim_id == cy).execute()  # purged
        # A row written past the app, as a restore or a script would.
        user = User(scim_id=new_id(), source="entra")
        mirror_user(user, {"userName": "raw@example.com", "active": True})
        user.save(force_insert=True)


def test_kept_counts_follow_every_change(app, scim, directory):
    _change_everything(scim, app, directory)
    for text in WHOLE_DIRECTORY:
        extra = f"&filter={quote(text)}" if text else ""
        response = scim.get(f"/Users?attributes=id&count=0{extra}")
        assert response.get_json()["totalResults"] == _direct_count(app, text), text


def test_kept_counts_are_read_through_their_key_however_spread(
    app, scim, directory, caplog, tmp_path
):
    """The every-user count reads its shards' rows by key, not every page they once filled."""
    with app.app_context(), database.connection_context():
        if TEST_DATABASE_URL:
            # A load of 20,000 users in one transaction writes as many
            # versions of a shard's row, left over about 130 pages.
            database.execute_sql(
                "DO $$ BEGIN FOR i IN 1..20000 LOOP "
                "UPDATE user_count SET live = live WHERE shard = 0; END LOOP; END $$"
            )
    if TEST_DATABASE_URL:
        conn = raw_connection(tmp_path / "mdm.sqlite")
        try:
            conn.cursor().execute("VACUUM (ANALYZE) user_count")
        finally:
            conn.close()
    statements = _queries(
        caplog, lambda: scim.get("/Users?attributes=id&count=0").get_json()
    )
    reads = [q for q in statements if "FROM user_count" in q[0]]
    assert len(reads) == 1, statements
    with app.app_context(), database.connection_context():
        plan = _explain(*reads[0])
        assert counted(User) == (
            _direct_count(app, None),
            _direct_count(app, "active eq true"),
        )
    if TEST_DATABASE_URL:
        assert "user_count_pkey" in plan, plan
        assert "Seq Scan" not in plan, plan
    else:
        assert plan == "SEARCH user_count USING INTEGER PRIMARY KEY (rowid>?)", plan


def test_an_upgrade_counts_the_users_already_there(app, scim, directory):
    _change_everything(scim, app, directory)
    with app.app_context(), database.connection_context():
        if TEST_DATABASE_URL:
            database.execute_sql("DROP TABLE user_count CASCADE")
            database.execute_sql("DROP FUNCTION user_count_change CASCADE")
        else:
            for name in ("insert", "delete", "update"):
                database.execute_sql(f"DROP TRIGGER user_count_{name}")
            database.execute_sql("DROP TABLE user_count")
        set_schema_version(database, "mdm", 10)
        migrate()
        assert counted(User) == (
            _direct_count(app, None),
            _direct_count(app, "active eq true"),
        )
    # And keeps counting afterwards.
    scim.create_user("after@example.com")
    response = scim.get("/Users?attributes=id&count=0")
    assert response.get_json()["totalResults"] == _direct_count(app, None)


# Filters of a grouping attribute's value, whose totalResults is read from
# the counts triggers keep (schema 16, 17 on SQLite), and the value each
# names: (column, text, active or None).
VALUE_TOTALS = {
    f'{ENTERPRISE}:department eq "RESEARCH"': ("department", "research", None),
    f'{ENTERPRISE}:department eq "research" and active eq true': (
        "department",
        "research",
        True,
    ),
    f'active eq "False" and {ENTERPRISE}:department eq "Research"': (
        "department",
        "research",
        False,
    ),
    f'{ENTERPRISE}:department eq "Dept 3"': ("department", "dept 3", None),
    f'{ENTERPRISE}:department eq "Nowhere"': ("department", "nowhere", None),
    f'{ENTERPRISE}:costCenter eq "cc-r" and active eq false': (
        "cost_center",
        "cc-r",
        False,
    ),
    f'{ENTERPRISE}:organization eq "Analytical"': ("organization", "analytical", None),
    f'{ENTERPRISE}:division eq "Div 7"': ("division", "div 7", None),
    f'{ENTERPRISE}:manager.value eq "boss-1"': ("manager", "boss-1", None),
    'manager eq "BOSS-1"': ("manager", "boss-1", None),
}


def _value_totals(app):
    """Count, user by user, the live users each of VALUE_TOTALS names."""
    with app.app_context(), database.connection_context():
        columns = [getattr(User, c) for c in GROUPING_COLUMNS]
        rows = list(User.live().select(User.active, *columns).tuples())
    totals = {}
    for text, (column, value, active) in VALUE_TOTALS.items():
        at = 1 + GROUPING_COLUMNS.index(column)
        totals[text] = sum(
            1
            for row in rows
            if (row[at] or "").lower() == value and active in (None, row[0])
        )
    return totals


def _move_everyone(app, scim, directory):
    """Move users between values every way a write can, one user or many at once."""
    ada, bob, cy = directory["ada"], directory["bob"], directory["cy"]

    def patch(user, *operations):
        body = {"schemas": [PATCH], "Operations": list(operations)}
        response = scim.patch(f"/Users/{user}", body)
        assert response.status_code == 200, response.get_json()

    # Entra's pathless replace with a dotted key, and its string boolean.
    patch(bob, {"op": "Replace", "value": {f"{ENTERPRISE}:department": "Dept 3"}})
    patch(ada, {"op": "Replace", "path": "active", "value": "True"})
    patch(
        ada,
        {"op": "remove", "path": f"{ENTERPRISE}:manager"},
        {"op": "replace", "path": f"{ENTERPRISE}:costCenter", "value": "CC-R"},
    )
    body = scim.get(f"/Users/{cy}").get_json()
    body[ENTERPRISE] = {"department": "RESEARCH", "division": "Div 7"}
    assert scim.put(f"/Users/{cy}", body).status_code == 200
    operations = [
        {
            "method": "POST",
            "path": "/Users",
            "bulkId": str(i),
            "data": {
                "schemas": [USER],
                "userName": f"bulk{i}@example.com",
                "active": i != 1,
                ENTERPRISE: {"department": "Research", "costCenter": "cc-R"},
            },
        }
        for i in range(3)
    ]
    bulk = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"]}
    response = scim.post("/Bulk", {**bulk, "Operations": operations})
    assert response.status_code == 200, response.get_json()
    with app.app_context(), database.connection_context():
        in_dept_3 = list(
            User.select(User.scim_id)
            .where(User.department == "Dept 3")
            .order_by(User.id)
            .limit(3)
            .scalars()
        )
    assert scim.delete(f"/Users/{in_dept_3[0]}").status_code == 204
    patch(in_dept_3[1], {"op": "remove", "path": f"{ENTERPRISE}:department"})
    with app.app_context(), database.connection_context():
        # Purged: a deprovisioned user's row goes, and so does a live one's.
        User.delete().where(User.scim_id.in_(in_dept_3[::2])).execute()
        # A script's statements, each of many rows at once, past the app.
        fillers = User.select(User.id).where(User.user_name.startswith("filler"))
        User.update(department="research", active=False).where(
            User.id.in_(fillers.order_by(User.id).limit(7))
        ).execute()
        User.update(deprovisioned_at=utcnow()).where(
            User.id.in_(fillers.order_by(User.id.desc()).limit(5))
        ).execute()
        # The same value spelt otherwise: counted as the same.
        User.update(department="RESEARCH").where(
            User.user_name == "bulk0@example.com"
        ).execute()


def test_value_totals_follow_every_change(app, scim, directory, caplog, tmp_path):
    """totalResults of a value's users stays what counting them finds, whatever moved them."""
    before = _value_totals(app)
    assert [t for t, n in before.items() if not n] == [
        f'{ENTERPRISE}:department eq "Nowhere"'
    ]
    _move_everyone(app, scim, directory)
    # The last holders of a value move off it.
    for name in ("ada", "bob"):
        operation = {"op": "remove", "path": f"{ENTERPRISE}:division"}
        body = {"schemas": [PATCH], "Operations": [operation]}
        assert scim.patch(f"/Users/{directory[name]}", body).status_code == 200
    expected = _value_totals(app)

    def listed():
        listed.totals = {}
        for text in VALUE_TOTALS:
            response = scim.get(f"/Users?filter={quote(text)}&attributes=id&count=0")
            assert response.status_code == 200, response.get_json()
            listed.totals[text] = response.get_json()["totalResults"]

    statements = _queries(caplog, listed)
    assert listed.totals == expected
    # ada, cy put in, three by Bulk, seven by the script; bob moved out.
    assert expected[f'{ENTERPRISE}:department eq "RESEARCH"'] == 1 + 1 + 3 + 7
    # Every one of them read the kept counts, and they equal a count of every
    # value's users, not only these.
    assert [sql for sql, _ in statements if sql.startswith("SELECT COUNT(")] == []
    assert integrity_problems(tmp_path / "mdm.sqlite") == []
    with app.app_context(), database.connection_context():
        kept = database.execute_sql(
            "SELECT attribute, lower(value), live, active FROM user_value_count"
        ).fetchall()
    if not TEST_DATABASE_URL:
        # SQLite drops the row of a value nobody holds; PostgreSQL keeps a
        # row per shard, whose sum alone is right.
        assert [row for row in kept if row[2:] == (0, 0)] == []
        assert "engines" not in {value for _, value, _, _ in kept}


# Spellings the engines may fold together or apart: SQLite's NOCASE folds
# ASCII letters only; PostgreSQL's lower() follows the database's locale.
SPELLINGS = ["Émile", "émile", "ÉMILE", "Straße", "STRASSE", "strasse", "ǅ", "ǆ", "Ǆ"]


def test_value_totals_count_what_the_filter_finds(app, scim, tmp_path):
    """totalResults from the kept counts is the number of users the same filter lists."""
    for at, spelling in enumerate(SPELLINGS * 2):
        scim.create_user(
            f"s{at}@example.com",
            active=at % 3 != 0,
            **{ENTERPRISE: {"department": spelling, "division": spelling.lower()}},
        )
    for spelling in [*SPELLINGS, "EMILE", "straße"]:
        for attribute in ("department", "division"):
            for extra in ("", " and active eq true", " and active eq false"):
                text = f'{ENTERPRISE}:{attribute} eq "{spelling}"{extra}'
                body = scim.get(f"/Users?filter={quote(text)}&attributes=id").get_json()
                assert body["totalResults"] == len(body["Resources"]), text
    assert integrity_problems(tmp_path / "mdm.sqlite") == []


@pytest.mark.parametrize(
    "sort", ["", "&sortBy=userName&sortOrder=descending", "&sortBy=name.familyName"]
)
def test_deep_pages_find_their_ids_first(app, scim, directory, caplog, sort):
    """From startIndex 1,001 a page skips index entries, then reads its own rows."""
    pages = {}

    def listed():
        for start in (990, 1001):
            response = scim.get(
                f"/Users?attributes=id&startIndex={start}&count=5{sort}"
            )
            assert response.status_code == 200, response.get_json()
            body = response.get_json()
            assert body["totalResults"] == FILLER + 3
            pages[start] = [r["id"] for r in body["Resources"]]

    queries = _user_queries(caplog, listed)
    # The last 500 users, read the ordinary way (offset 503).
    response = scim.get(f"/Users?attributes=id&startIndex=504&count=500{sort}")
    last = [r["id"] for r in response.get_json()["Resources"]]
    assert len(last) == 500
    assert pages == {990: last[486:491], 1001: last[497:500]}
    shallow, deep = (sql for sql, _ in queries if not sql.startswith("SELECT COUNT("))
    assert "IN (SELECT" not in shallow and "ANY(ARRAY(" not in shallow
    # On PostgreSQL as an array, run once (db.among).
    among = "= ANY(ARRAY(SELECT" if TEST_DATABASE_URL else "IN (SELECT"
    assert f'WHERE ("t1"."id" {among} "t1"."id" FROM "user"' in deep


def test_time_ranges_read_their_index_and_keep_id_order(app, scim, directory, caplog):
    """A range on meta.lastModified or meta.created reads its index, not every user."""
    ada = scim.get(f"/Users/{directory['ada']}").get_json()["meta"]
    with app.app_context(), database.connection_context():
        everyone = list(User.select(User.scim_id).order_by(User.id).scalars())
    assert len(everyone) == FILLER + 3
    cases = [
        (f'meta.lastModified ge "{ada["lastModified"]}"', ["ada", "bob", "cy"]),
        (
            f'meta.lastModified ge "{ada["lastModified"]}" and active eq false',
            ["ada", "cy"],
        ),
        (f'active eq true and meta.created gt "{ada["created"]}"', ["bob"]),
    ]
    for text, names in cases:
        queries = _user_queries(caplog, lambda text=text: _ids(scim, text))
        assert _ids(scim, text) == (len(names), [directory[n] for n in names])
        # Both engines walked every live user in id order for a few recent ones.
        with app.app_context(), database.connection_context():
            if TEST_DATABASE_URL:
                database.execute_sql("SET enable_seqscan = off")
            plan = _explain(*queries[0])
        if TEST_DATABASE_URL:
            assert "user_pkey" not in plan and "user_live_id" not in plan, plan
            index = "user_created" if "created" in text else "user_sort_last_modified"
            assert f"using {index} " in plan, plan
        else:
            assert "user_live_id" not in plan, plan
            index = "user_created" if "created" in text else "user_last_modified"
            assert f"INDEX {index} " in plan, plan
    # The newest 53 of 1,003, five to a page: walking ids from the first
    # looks cheap to PostgreSQL, which takes matches to be spread evenly.
    with app.app_context(), database.connection_context():
        since = User.select(User.created).order_by(User.id).offset(950).scalar()
    recent = f'meta.created ge "{since.isoformat()}Z"'
    queries = _user_queries(caplog, lambda: _ids(scim, recent, "&count=5"))
    assert _ids(scim, recent, "&count=5") == (53, everyone[950:955])
    with app.app_context(), database.connection_context():
        plan = _explain(*queries[0])
    assert "user_pkey" not in plan and "user_live_id" not in plan, plan
    # Many matches: still in id order, on a first page and a deep one.
    older = f'meta.created lt "{ada["created"]}"'
    assert _ids(scim, older, "&count=5") == (FILLER, everyone[:5])
    response = scim.get(
        f"/Users?filter={quote(older)}&attributes=id&startIndex=998&count=5"
    )
    assert [r["id"] for r in response.get_json()["Resources"]] == everyone[997:1000]
    wide = 'meta.lastModified gt "2000-01-01T00:00:00Z"'
    response = scim.get(
        f"/Users?filter={quote(wide)}&attributes=id&startIndex=1001&count=5"
    )
    assert [r["id"] for r in response.get_json()["Resources"]] == everyone[1000:]


def test_console_disabled_users_uses_index(app, console, directory, caplog):
    """The console's default order, by userName."""
    # More than a page, so that the count runs too.
    with app.app_context(), database.connection_context():
        first = User.select(User.id).order_by(User.id).limit(60)
        User.update(active=False).where(User.id.in_(first)).execute()
    queries = [
        (sql, params)
        for sql, params in _user_queries(
            caplog, lambda: console.get("/admin/users?status=disabled")
        )
        if 'NOT "t1"."active"' in sql
    ]
    # The page and its count.
    assert len(queries) == 2, queries
    with app.app_context(), database.connection_context():
        if TEST_DATABASE_URL:
            database.execute_sql("SET enable_seqscan = off")
        for sql, params in queries:
            plan = _explain(sql, params)
            assert "user_disabled" in plan, f"{sql}\n{plan}"


if TEST_DATABASE_URL:

    def test_the_planner_knows_how_few_users_an_attribute_value_matches(app, directory):
        """Statistics on each indexed attribute's column: an estimate of one row, not 0.5%."""
        with app.app_context(), database.connection_context():
            query = (
                User.live()
                .where(
                    filters.to_expression(
                        filters.parse(f'{ENTERPRISE}:employeeNumber eq "100007"'),
                        schema.user_type(),
                    )
                )
                .order_by(User.id)
                .limit(100)
            )
            plan = _explain(*query.sql())
        # Without them the guess is 0.5% of the rows: 5 of these 1,003.
        assert "user_employee_number" in plan, plan
        assert "rows=1 " in plan, plan


def test_a_schema_10_database_gets_the_counting_columns(app):
    """Indexes made by schema 10 without deprovisioned_at are rebuilt with it."""
    rebuilt = ["user_live_id", "user_disabled", "user_department"]
    with app.app_context(), database.connection_context():
        for name in rebuilt:
            database.execute_sql(f'DROP INDEX "{name}"')
        database.execute_sql(
            'CREATE INDEX "user_live_id" ON "user" ("id") '
            'WHERE ("deprovisioned_at" IS NULL)'
        )
        database.execute_sql(
            'CREATE INDEX "user_disabled" ON "user" ("id") '
            'WHERE (NOT "active" AND ("deprovisioned_at" IS NULL))'
        )
        database.execute_sql(
            'CREATE INDEX "user_department" ON "user" ("department", "active") '
            'WHERE (("department" IS NOT NULL) AND ("deprovisioned_at" IS NULL))'
        )
        set_schema_version(database, "mdm", 10)
        migrate()
        columns = {
            index.name: index.columns
            for index in database.get_indexes("user")
            if index.name in rebuilt
        }
        version = schema_version(database, "mdm")
    # PostgreSQL needs no column its index's condition implies (schema 13),
    # and indexes the department's lowercased copy (schema 15).
    kept = ["active"] if TEST_DATABASE_URL else ["active", "deprovisioned_at"]
    department = lowered("department") if TEST_DATABASE_URL else "department"
    assert columns == {
        "user_live_id": ["id", *kept],
        "user_disabled": ["id", *kept],
        "user_department": [department, "id", *kept],
    }
    assert version == SCHEMA_VERSION


def _definitions(names):
    """Return the SQL of each of the user table's indexes among ``names``."""
    return {
        index.name: index.sql
        for index in database.get_indexes("user")
        if index.name in names
    }


def test_a_schema_11_database_gets_id_after_each_value(app):
    """The department and attribute indexes of schema 11 are rebuilt with id second."""
    rebuilt = ["user_department", *INDEXED_ATTRIBUTES]
    # As each engine writes an index's definition: "id" quoted or not.
    kept = "" if TEST_DATABASE_URL else ', "?deprovisioned_at"?'
    with_id = re.compile(rf'(?<=[ (])"?id"?, "?active"?{kept}\)')

    with app.app_context(), database.connection_context():
        for name, sql in _definitions(rebuilt).items():
            database.execute_sql(f'DROP INDEX "{name}"')
            database.execute_sql(re.sub(r'(?<=[ (])"?id"?, ', "", sql, count=1))
        old = _definitions(rebuilt)
        set_schema_version(database, "mdm", 11)
        migrate()
        new = _definitions(rebuilt)
        version = schema_version(database, "mdm")
    assert set(old) == set(new) == set(rebuilt)
    assert not any(with_id.search(sql) for sql in old.values()), old
    assert all(with_id.search(sql) for sql in new.values()), new
    assert version == SCHEMA_VERSION


def test_a_schema_12_database_keeps_deprovisioned_at_only_where_sqlite_needs_it(app):
    """Schema 13 rebuilds PostgreSQL's counted indexes without the column; SQLite's stay."""
    rebuilt = ["user_live_id", "user_disabled", "user_department", *INDEXED_ATTRIBUTES]

    with app.app_context(), database.connection_context():
        for name, sql in _definitions(rebuilt).items():
            if "deprovisioned_at" not in sql.split(" WHERE ")[0]:
                # As schema 12 built it on either engine.
                database.execute_sql(f'DROP INDEX "{name}"')
                head, _, where = sql.partition(" WHERE ")
                old = re.sub(r"active\)$", "active, deprovisioned_at)", head)
                database.execute_sql(f"{old} WHERE {where}")
        old = _definitions(rebuilt)
        set_schema_version(database, "mdm", 12)
        migrate()
        new = _definitions(rebuilt)
        version = schema_version(database, "mdm")
    assert set(old) == set(new) == set(rebuilt)
    carried = {
        name: "deprovisioned_at" in sql.split(" WHERE ")[0] for name, sql in new.items()
    }
    assert all("deprovisioned_at" in sql.split(" WHERE ")[0] for sql in old.values())
    assert carried == dict.fromkeys(rebuilt, not TEST_DATABASE_URL)
    assert version == SCHEMA_VERSION


def test_memberships_by_group_alone_are_indexed_only_on_sqlite(app):
    """PostgreSQL's (group, user) index serves a group's lookups; schema 13 drops the other."""
    with app.app_context(), database.connection_context():
        if TEST_DATABASE_URL:
            # As schema 12 built it there.
            database.execute_sql(
                'CREATE INDEX "membership_group_id" ON "membership" ("group_id")'
            )
        set_schema_version(database, "mdm", 12)
        migrate()
        names = {index.name for index in database.get_indexes("membership")}
    assert "membership_group_id_user_id" in names
    assert ("membership_group_id" in names) == (not TEST_DATABASE_URL)


def test_migrate_creates_missing_indexes(app):
    with app.app_context(), database.connection_context():
        names = [
            "user_department",
            "user_disabled",
            "user_disabled_name",
            *INDEXED_ATTRIBUTES,
        ]
        for name in names:
            database.execute_sql(f'DROP INDEX "{name}"')
        # As a schema-9 database made before them: migrate adds them again.
        migrate()
        migrate()
        present = {index.name for index in database.get_indexes("user")}
        assert set(names) <= present


#
# Behaviour
#


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f'{ENTERPRISE}:department eq "RESEARCH"', ["ada", "bob"]),
        (f'{ENTERPRISE}:department eq "Research" and active eq true', ["bob"]),
        (f'{ENTERPRISE}:department eq "Research" and active eq false', ["ada"]),
        (f'{ENTERPRISE}:department ne "Research" and active eq false', ["cy"]),
        (f"not ({ENTERPRISE}:department pr) and active eq false", ["cy"]),
        ("active eq false", ["ada", "cy"]),
        ("active eq False", ["ada", "cy"]),
        ("active ne true", ["ada", "cy"]),
        (f'{ENTERPRISE}:employeeNumber eq "e-2"', ["bob"]),
        (f'{ENTERPRISE}:employeeNumber eq "E-3"', []),
        (f'{ENTERPRISE}:costCenter eq "CC-r"', ["ada", "bob"]),
        (f'{ENTERPRISE}:organization eq "analytical"', ["ada", "bob"]),
        (f'{ENTERPRISE}:division eq "ENGINES" and active eq true', ["bob"]),
        (f'{ENTERPRISE}:manager.value eq "Boss-1"', ["ada", "bob"]),
        ('manager eq "boss-1" and active eq false', ["ada"]),
        (f'{ENTERPRISE}:manager.value ne "boss-1" and active eq false', ["cy"]),
    ],
)
def test_indexed_filters_find_the_right_users(scim, directory, text, expected):
    want = [directory[name] for name in expected]
    assert _ids(scim, text) == (len(want), want)


def test_filters_follow_updates(scim, directory):
    ada, bob = directory["ada"], directory["bob"]
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "replace", "path": f"{ENTERPRISE}:department", "value": "Ops"},
            {"op": "replace", "path": f"{ENTERPRISE}:employeeNumber", "value": "E-9"},
            {"op": "replace", "path": f"{ENTERPRISE}:manager.value", "value": "b2"},
            {"op": "replace", "path": "active", "value": True},
        ],
    }
    assert scim.patch(f"/Users/{ada}", patch).status_code == 200
    removed = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": f"{ENTERPRISE}:costCenter"}],
    }
    assert scim.patch(f"/Users/{bob}", removed).status_code == 200
    assert scim.delete(f"/Users/{directory['cy']}").status_code == 204

    assert _ids(scim, f'{ENTERPRISE}:department eq "research"') == (1, [bob])
    assert _ids(scim, f'{ENTERPRISE}:department eq "ops"') == (1, [ada])
    assert _ids(scim, f'{ENTERPRISE}:employeeNumber eq "E-1"') == (0, [])
    assert _ids(scim, f'{ENTERPRISE}:employeeNumber eq "e-9"') == (1, [ada])
    assert _ids(scim, f'{ENTERPRISE}:manager.value eq "B2"') == (1, [ada])
    assert _ids(scim, f'{ENTERPRISE}:manager eq "boss-1"') == (1, [bob])
    assert _ids(scim, f'{ENTERPRISE}:costCenter eq "cc-r"') == (1, [ada])
    # Deprovisioned users are not listed, and ada is active again.
    assert _ids(scim, "active eq false") == (0, [])
    assert _ids(scim, f'{ENTERPRISE}:department eq "Ops" and active eq true') == (
        1,
        [ada],
    )


def test_served_upgrade_adds_the_indexes_filters_use(app, tmp_path):
    """``mdm serve`` on a schema-9 database without them creates them, then uses them."""
    _, secret = issue_token(app)
    names = ["user_department", "user_disabled", *INDEXED_ATTRIBUTES]
    with app.app_context(), database.connection_context():
        for name in names:
            database.execute_sql(f'DROP INDEX "{name}"')
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": SCIM}
    process, port = served.start(served.environment(tmp_path), tmp_path / "serve.log")
    try:
        created = []
        for user_name, number in (
            ("ada@example.com", "E-1"),
            ("bob@example.com", None),
        ):
            body = {"schemas": [USER], "userName": user_name}
            if number:
                body[ENTERPRISE] = {"employeeNumber": number, "department": "Ops"}
            response, raw = served.request(
                port, "POST", "/scim/v2/Users", body, headers
            )
            assert response.status == 201, raw
            created.append(json.loads(raw)["id"])
        text = (
            f'{ENTERPRISE}:employeeNumber eq "e-1" and {ENTERPRISE}:department eq "OPS"'
        )
        path = f"/scim/v2/Users?filter={quote(text)}&attributes=id"
        response, raw = served.request(port, "GET", path, headers=headers)
        assert response.status == 200, raw
        assert json.loads(raw) == {
            "schemas": [LIST],
            "totalResults": 1,
            "startIndex": 1,
            "itemsPerPage": 1,
            "Resources": [{"schemas": [USER], "id": created[0]}],
        }
    finally:
        assert served.stop(process) == 0
    with app.app_context(), database.connection_context():
        present = {index.name for index in database.get_indexes("user")}
    assert set(names) <= present


def _drop_lowered():
    """Drop PostgreSQL's lowercased copies of the attribute columns, as before schema 15."""
    drop_value_counts()  # which count by them, from schema 16
    for column in ATTRIBUTE_COLUMNS.values():
        database.execute_sql(f'ALTER TABLE "user" DROP COLUMN "{lowered(column)}"')


def test_a_schema_13_database_gets_the_attribute_columns(app, scim, directory):
    """Schema 14 fills the new columns from the documents and indexes them, not expressions."""
    added = list(INDEXED_ATTRIBUTES)
    columns = [name.removeprefix("user_") for name in added]
    texts = [
        f'{ENTERPRISE}:employeeNumber eq "e-2"',
        f'{ENTERPRISE}:costCenter eq "CC-r"',
        f'{ENTERPRISE}:organization eq "analytical" and active eq false',
        f'{ENTERPRISE}:division eq "ENGINES"',
        f'{ENTERPRISE}:manager.value eq "Boss-1"',
        f'{ENTERPRISE}:costCenter eq "cc7"',
        f'{ENTERPRISE}:costCenter pr and {ENTERPRISE}:division eq "div 3"',
    ]
    found = {text: _ids(scim, text) for text in texts}
    people = ("ada", "bob", "cy")
    bodies = {n: scim.get(f"/Users/{directory[n]}").get_json() for n in people}
    with app.app_context(), database.connection_context():
        stored = {u.id: (u.attributes, u.data) for u in User.select()}
        # As schema 13 stored them: each document whole but for the text of
        # its older columns, and an expression index over it for each
        # attribute (with PostgreSQL's statistics on the expression).
        for name in added:
            database.execute_sql(f'DROP INDEX "{name}"')
        for column in set(columns) & set(GROUPING_COLUMNS):
            database.execute_sql(f'DROP INDEX "user_{column}_count"')
        if TEST_DATABASE_URL:
            _drop_lowered()
        else:
            drop_value_counts()  # whose triggers read the columns
        for column in columns:
            database.execute_sql(f'ALTER TABLE "user" DROP COLUMN "{column}"')
        for pk, (attributes, data) in stored.items():
            document = json.loads(data)
            if ENTERPRISE in attributes:
                document[ENTERPRISE] = attributes[ENTERPRISE]
            database.execute_sql(
                'UPDATE "user" SET data = %s WHERE id = %s'.replace(
                    "%s", "%s" if TEST_DATABASE_URL else "?"
                ),
                (json.dumps(document), pk),
            )
        value = 'json_extract(data, \'$."{}"."employeeNumber"\')'
        if TEST_DATABASE_URL:
            value = "((data::jsonb -> '{}' ->> 'employeeNumber')::citext)"
            database.execute_sql(
                f'CREATE STATISTICS "user_employee_number_values" ON ({value}) '
                'FROM "user"'.format(ENTERPRISE)
            )
        database.execute_sql(
            f'CREATE INDEX "user_employee_number" ON "user" ({value}, id, active) '
            "WHERE deprovisioned_at IS NULL".format(ENTERPRISE)
        )
        set_schema_version(database, "mdm", 13)
        migrate()
        version = schema_version(database, "mdm")
        definitions = _definitions(added)
        mirrored = {
            u.user_name: [getattr(u, c) for c in columns]
            for u in User.select().where(User.user_name.in_(["ada@example.com"]))
        }
        if TEST_DATABASE_URL:
            statistics = database.execute_sql(
                "SELECT stxname FROM pg_statistic_ext "
                "WHERE stxnamespace = current_schema()::regnamespace"
            ).fetchall()
            assert statistics == []
            database.execute_sql('VACUUM ANALYZE "user"')
    assert version == SCHEMA_VERSION
    assert set(definitions) == set(added)
    for name, sql in definitions.items():
        assert "json" not in sql and name.removeprefix("user_") in sql, sql
    assert mirrored == {
        "ada@example.com": ["E-1", "CC-R", "Analytical", "Engines", "boss-1"]
    }
    # The same users found, counted from the new indexes, and the same
    # resources served, from documents that still hold the values.
    assert {text: _ids(scim, text) for text in texts} == found
    assert {n: scim.get(f"/Users/{directory[n]}").get_json() for n in people} == bodies
    # Rewritten, a document leaves out what its columns hold.
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "displayName", "value": "Ada"}],
    }
    response = scim.patch(f"/Users/{directory['ada']}", patch)
    assert response.status_code == 200, response.get_json()
    with app.app_context(), database.connection_context():
        document = json.loads(User.get(User.scim_id == directory["ada"]).data)
    assert document[ENTERPRISE] == {"manager": {"value": "boss-1"}}
    expected = dict(bodies["ada"], displayName="Ada", meta=response.get_json()["meta"])
    assert scim.get(f"/Users/{directory['ada']}").get_json() == expected


@pytest.mark.parametrize(
    "text",
    [
        f'{ENTERPRISE}:department eq "dept 7"',
        f'{ENTERPRISE}:costCenter eq "CC7" and active eq true',
        f'active eq true and {ENTERPRISE}:manager eq "FILLER-MANAGER-7"',
    ],
)
def test_pages_of_a_value_are_in_id_order(app, scim, directory, text):
    """Read ids first on PostgreSQL or not, pages of a value's users run in id order."""
    with app.app_context(), database.connection_context():
        node = filters.parse(text)
        where = filters.to_expression(node, schema.user_type())
        everyone = list(
            User.live().where(where).order_by(User.id).select(User.scim_id).scalars()
        )
    assert len(everyone) > 10
    pages = []
    for start in range(1, len(everyone) + 1, 7):
        response = scim.get(
            f"/Users?filter={quote(text)}&attributes=id&startIndex={start}&count=7"
        )
        body = response.get_json()
        assert body["totalResults"] == len(everyone)
        pages += [r["id"] for r in body["Resources"]]
    assert pages == everyone


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f'{ENTERPRISE}:employeeNumber ge "e-1"', ["ada", "bob"]),
        (f'{ENTERPRISE}:employeeNumber gt "E-1"', ["bob"]),
        (f'{ENTERPRISE}:department le "RESEARCH" and active eq false', ["ada"]),
        (f'{ENTERPRISE}:department lt "research" and active eq false', []),
        (
            f'{ENTERPRISE}:manager.value gt "BOSS-0" and '
            f'{ENTERPRISE}:manager.value lt "boss-2"',
            ["ada", "bob"],
        ),
        (f'{ENTERPRISE}:costCenter ne "cc-R" and active eq false', ["cy"]),
    ],
)
def test_attribute_order_ignores_case(scim, directory, text, expected):
    """Ranges and ne compare as eq does, ignoring case (on PostgreSQL, the lowered copies)."""
    want = [directory[name] for name in expected]
    assert _ids(scim, text) == (len(want), want)


def test_a_value_written_past_the_app_is_found(app, scim, directory):
    """PostgreSQL generates the lowered copy on every write, a script's too."""
    with app.app_context(), database.connection_context():
        User.update(department="Raw Ops", cost_center=None).where(
            User.scim_id == directory["bob"]
        ).execute()
    assert _ids(scim, f'{ENTERPRISE}:department eq "RAW OPS"') == (
        1,
        [directory["bob"]],
    )
    assert _ids(scim, f'{ENTERPRISE}:costCenter eq "cc-r"') == (
        1,
        [directory["ada"]],
    )


def test_a_schema_14_database_gets_the_counting_indexes(app, scim, directory):
    """Schema 15 adds each grouping attribute's (value, active) index, and on
    PostgreSQL indexes the lowered copies instead of the citext columns."""
    texts = [
        f'{ENTERPRISE}:department eq "RESEARCH"',
        f'{ENTERPRISE}:department eq "research" and active eq true',
        f'{ENTERPRISE}:employeeNumber eq "e-2"',
        f'{ENTERPRISE}:costCenter eq "CC-r" and active eq false',
        f'{ENTERPRISE}:organization eq "analytical"',
        f'{ENTERPRISE}:division eq "div 3"',
        f'{ENTERPRISE}:manager eq "BOSS-1"',
        f'{ENTERPRISE}:employeeNumber gt "E-1"',
    ]
    found = {text: _ids(scim, text) for text in texts}
    pages = [f"user_{column}" for column in ATTRIBUTE_COLUMNS.values()]
    counts = [f"user_{column}_count" for column in GROUPING_COLUMNS]
    with app.app_context(), database.connection_context():
        built = _definitions(pages)
        # As schema 14 built them: no counting indexes, and on PostgreSQL no
        # lowered copies, the citext columns indexed instead.
        for name in counts:
            database.execute_sql(f'DROP INDEX "{name}"')
        if TEST_DATABASE_URL:
            for name in pages:
                database.execute_sql(f'DROP INDEX "{name}"')
            _drop_lowered()
            for sql in built.values():
                database.execute_sql(sql.replace("_lower", ""))
        old = _definitions(pages + counts)
        set_schema_version(database, "mdm", 14)
        migrate()
        version = schema_version(database, "mdm")
        new = _definitions(pages + counts)
        if TEST_DATABASE_URL:
            # The upgrade vacuumed the table it rewrote: counts read no row.
            database.execute_sql("SET enable_seqscan = off")
            plan = database.execute_sql(
                'EXPLAIN (ANALYZE, COSTS OFF) SELECT count(*) FROM "user" '
                "WHERE deprovisioned_at IS NULL AND department_lower = 'dept 7'"
            ).fetchall()
            plan = "\n".join(row[0] for row in plan)
            assert "Index Only Scan using user_department_count" in plan, plan
            assert "Heap Fetches: 0" in plan, plan
            copies = database.execute_sql(
                'SELECT department_lower, manager_lower FROM "user" '
                "WHERE user_name = 'ada@example.com'"
            ).fetchall()
            assert copies == [("research", "boss-1")]
    assert version == SCHEMA_VERSION
    assert set(old) == set(pages) and set(new) == set(pages + counts)
    for name, sql in new.items():
        column = name.removeprefix("user_").removesuffix("_count")
        if TEST_DATABASE_URL:
            column = lowered(column)
        assert re.search(rf'\("?{column}"?, ', sql), sql
    if TEST_DATABASE_URL:
        assert all("_lower" not in sql for sql in old.values()), old
    assert {text: _ids(scim, text) for text in texts} == found


def test_a_database_without_value_counts_gets_them(app, scim, directory, tmp_path):
    """Schema 16 (17 on SQLite) counts the users of every grouping value there, then keeps counting."""
    _move_everyone(app, scim, directory)
    expected = _value_totals(app)
    with app.app_context(), database.connection_context():
        drop_value_counts()
        set_schema_version(database, "mdm", 15 if TEST_DATABASE_URL else 16)
        migrate()
        assert schema_version(database, "mdm") == SCHEMA_VERSION
    assert integrity_problems(tmp_path / "mdm.sqlite") == []
    totals = {
        text: _ids(scim, text, "&count=0")[0]
        for text in VALUE_TOTALS
        if " and " not in text
    }
    assert totals == {text: expected[text] for text in totals}
    research = f'{ENTERPRISE}:department eq "RESEARCH"'
    scim.create_user("after@example.com", **{ENTERPRISE: {"department": "Research"}})
    assert _ids(scim, research, "&count=0")[0] == expected[research] + 1
    assert integrity_problems(tmp_path / "mdm.sqlite") == []
