"""Queries rendered once (mdm.db) read and write exactly what the ORM would."""

import logging

import pytest
from peewee import IntegrityError

from mdm.db import Prepared
from mdm.db import database
from mdm.db import insert
from mdm.db import load
from mdm.db import update
from mdm.models import BearerToken
from mdm.models import Group
from mdm.models import User
from mdm.models import mirror_user
from mdm.models import touch


@pytest.fixture
def db(app):
    with app.app_context(), database.connection_context():
        yield


def _user(name, **extra):
    user = User(source="entra")
    mirror_user(
        user,
        {"userName": name, "active": False, "emails": [{"value": name}], **extra},
    )
    return user


def _row(model, pk):
    cursor = database.execute_sql(
        f'SELECT * FROM "{model._meta.table_name}" WHERE id = {database.param}', [pk]
    )
    return dict(zip([d[0] for d in cursor.description], cursor.fetchone(), strict=True))


def _statements(action):
    statements = []

    class Handler(logging.Handler):
        def emit(self, record):
            if record.name == "peewee":
                statements.append(record.msg[0])

    logger = logging.getLogger("peewee")
    handler = Handler(logging.DEBUG)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        action()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return statements


def test_insert_writes_what_save_writes(db):
    ours, theirs = _user("a@x"), _user("b@x")
    theirs.scim_id, theirs.created = ours.scim_id + "-2", ours.created
    theirs.last_modified = ours.last_modified
    via_orm = _statements(lambda: theirs.save(force_insert=True))
    prepared = _statements(lambda: insert(ours))
    assert prepared == via_orm
    assert ours.id == theirs.id + 1 and not ours.is_dirty()
    mine, orm = _row(User, ours.id), _row(User, theirs.id)
    for column in ("id", "scim_id", "user_name", "email", "data"):
        mine.pop(column), orm.pop(column)
    assert mine == orm


def test_update_writes_what_save_writes(db):
    for name in ("a@x", "b@x"):
        insert(_user(name))
    ours = User.get(User.user_name == "a@x")
    theirs = User.get(User.user_name == "b@x")
    for user in (ours, theirs):
        mirror_user(
            user, {"userName": user.user_name, "displayName": "D", "active": True}
        )
        user.password_hash = "h"
        touch(user)
    theirs.created, theirs.last_modified = ours.created, ours.last_modified
    via_orm = _statements(theirs.save)
    prepared = _statements(lambda: update(ours))
    assert prepared == via_orm
    mine, orm = _row(User, ours.id), _row(User, theirs.id)
    for column in ("id", "scim_id", "user_name", "data"):
        mine.pop(column), orm.pop(column)
    assert mine == orm and mine["active"] == 1 and mine["version"] == 2


def test_insert_and_update_raise_integrity_errors(db):
    insert(_user("dup@x"))
    with pytest.raises(IntegrityError):
        insert(_user("DUP@x"))
    group = Group(display_name="G")
    insert(group)
    other = Group(display_name="H")
    insert(other)
    other.display_name = "g"
    with pytest.raises(IntegrityError):
        update(other)


def test_load_builds_what_the_orm_builds(db):
    insert(_user("a@x", displayName="A"))
    insert(_user("b@x"))
    query = Prepared(
        lambda name: User.select().where(User.user_name != name).order_by(User.id)
    )
    ours = query.rows(name="zzz")
    theirs = list(User.select().order_by(User.id))
    assert [u.__data__ for u in ours] == [u.__data__ for u in theirs]
    assert not any(u.is_dirty() for u in ours)
    cursor = database.execute_sql('SELECT * FROM "user" WHERE 1 = 0')
    assert load(User, cursor) == []


def test_prepared_binds_by_name_and_counts_as_a_statement(db):
    _, secret = BearerToken.issue("entra")
    key = secret.split("_")[1]
    query = Prepared(lambda key: BearerToken.select().where(BearerToken.key == key))
    statements = _statements(lambda: query.first(key=key))
    assert len(statements) == 1
    assert query.first(key=key).secret_hash == BearerToken.get().secret_hash
    assert query.first(key="nope") is None


def test_prepared_refuses_a_parameter_it_does_not_bind(db):
    query = Prepared(lambda name: User.select().where(User.user_name == name).limit(5))
    with pytest.raises(KeyError):
        query.rows(name="x")
