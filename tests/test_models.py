"""Model operations: saving, uniqueness, and the reads every SCIM request makes."""

from datetime import timedelta

import pytest
from peewee import IntegrityError
from playhouse.test_utils import count_queries

from mdm.db import database
from mdm.db import postgres
from mdm.db import records
from mdm.models import ENTERPRISE_USER
from mdm.models import LISTED_USER
from mdm.models import BearerToken
from mdm.models import CustomAttribute
from mdm.models import Group
from mdm.models import ListedUser
from mdm.models import Membership
from mdm.models import OAuthClient
from mdm.models import User
from mdm.models import groups_of
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


def test_a_saved_user_reads_back_as_written(db):
    user = _user("a@x", displayName="A")
    user.save(force_insert=True)
    assert not user.is_dirty()
    mirror_user(user, {"userName": "a@x", "displayName": "D", "active": True})
    user.password_hash = "h"
    touch(user)
    assert user.save() == 1
    stored = User.get_by_id(user.id)
    assert (stored.display_name, stored.active, stored.version) == ("D", True, 2)
    assert stored.password_hash == "h" and stored.email is None
    assert stored.created == user.created


def test_live_names_are_unique_regardless_of_case(db):
    _user("dup@x").save(force_insert=True)
    with pytest.raises(IntegrityError), database.atomic():
        _user("DUP@x").save(force_insert=True)
    Group.create(display_name="G")
    other = Group.create(display_name="H")
    other.display_name = "g"
    with pytest.raises(IntegrityError), database.atomic():
        other.save()


def test_authenticate_reads_the_token_and_definitions_in_one_statement(db):
    CustomAttribute.create(name="costCenter", type="string")
    CustomAttribute.create(name="badge", type="integer")
    _, secret = BearerToken.issue("entra")
    with count_queries() as counted:
        token = BearerToken.authenticate(secret)
    assert counted.count == 1
    assert token.idp == "entra"
    assert token.custom_attributes == (("costCenter", "string"), ("badge", "integer"))
    assert CustomAttribute.definitions() == [
        ("costCenter", "string"),
        ("badge", "integer"),
    ]
    assert BearerToken.authenticate(secret[:-1] + "x") is None
    assert BearerToken.authenticate("mdm_nope_secret") is None


def test_an_access_token_is_read_with_its_client_in_one_statement(db):
    CustomAttribute.create(name="costCenter", type="string")
    client, _ = OAuthClient.issue("entra", "prod")
    access, _ = client.grant(timedelta(hours=1))
    with count_queries() as counted:
        found, reason = OAuthClient.authenticate(access)
    assert counted.count == 1
    assert reason is None
    assert (found.client_id, found.idp, found.key) == (
        client.client_id,
        "entra",
        client.client_id,
    )
    assert found.custom_attributes == (("costCenter", "string"),)
    assert OAuthClient.authenticate(access[:-1] + "x")[1] == "wrong secret"
    assert OAuthClient.authenticate("mdmat_nope_secret") == (
        None,
        "unknown access token",
    )


def test_a_stale_token_copy_never_writes_an_old_secret_back(db):
    token, old = BearerToken.issue("entra")
    stale = BearerToken.get_by_id(token.id)
    new = BearerToken.get_by_id(token.id).renew()
    stale.set_active(False)
    assert BearerToken.authenticate(new) is None
    stale.set_active(True)
    assert BearerToken.authenticate(new).id == token.id
    assert BearerToken.authenticate(old) is None


def test_groups_of_lists_live_groups_by_name(db):
    users = [_user(f"u{i}@x") for i in range(2)]
    for user in users:
        user.save(force_insert=True)
    b, a = Group.create(display_name="B"), Group.create(display_name="A")
    gone = Group.create(display_name="C", deprovisioned_at=a.created)
    for group in (b, a, gone):
        Membership.create(group=group, user=users[0])
    expected = [(a.scim_id, "A"), (b.scim_id, "B")]
    assert groups_of([users[0].id]) == {users[0].id: expected}
    assert groups_of([u.id for u in users]) == {users[0].id: expected}
    assert groups_of([]) == {}


def test_groups_of_answers_any_number_of_users_in_few_queries(db):
    """A query per 512 users on SQLite; one array parameter on PostgreSQL."""
    users = [_user(f"u{i}@x") for i in range(600)]
    User.bulk_create(users)
    users = list(User.select().order_by(User.id))
    groups = [Group.create(display_name=name) for name in ("B", "A")]
    # Every third user in B, every fifth in A too, the rest in none.
    Membership.insert_many(
        [(groups[0].id, u.id) for u in users[::3]]
        + [(groups[1].id, u.id) for u in users[::5]],
        fields=[Membership.group, Membership.user],
    ).execute()
    a, b = (groups[1].scim_id, "A"), (groups[0].scim_id, "B")
    expected = {}
    for at, user in enumerate(users):
        found = ([a] if at % 5 == 0 else []) + ([b] if at % 3 == 0 else [])
        if found:
            expected[user.id] = found
    for count in (0, 1, 3, 100, 128, 129, 512, 600):
        pks = [u.id for u in users[:count]]
        with count_queries() as counted:
            found = groups_of(pks)
        assert found == {pk: expected[pk] for pk in pks if pk in expected}
        if count == 0:
            assert counted.count == 0
        elif postgres():
            assert counted.count == 1
        else:
            assert counted.count == (2 if count > 512 else 1)


ENTERPRISE_VALUES = {
    "department": "Sales",
    "employeeNumber": "7",
    "costCenter": "CC-1",
    "organization": "Org",
    "division": "Div",
    "manager": {"value": "m-1"},
}


def test_a_listed_user_reads_every_column_as_the_model_does(db):
    whole = User(source="entra")
    mirror_user(
        whole,
        {
            "userName": "w@x",
            "externalId": "e-1",
            "title": "Boss",
            "name": {"givenName": "G", "familyName": "F"},
            ENTERPRISE_USER: ENTERPRISE_VALUES,
            "active": True,
        },
    )
    bare = _user("b@x")
    whole.save(force_insert=True)
    bare.save(force_insert=True)
    # A time stored on a whole second (no fraction in SQLite's text) reads too.
    on_the_second = bare.created.replace(microsecond=0)
    User.update(created=on_the_second).where(User.id == bare.id).execute()
    query = User.select(*LISTED_USER).order_by(User.id)
    listed = records(query, ListedUser)
    models = list(query)
    assert [type(row) for row in listed] == [ListedUser, ListedUser]
    for row, model in zip(listed, models, strict=True):
        for field in LISTED_USER:
            value = getattr(row, field.name)
            assert value == getattr(model, field.name), field.name
            assert type(value) is type(getattr(model, field.name)), field.name
        assert row.attributes == model.attributes
        # Every column the document's text went to is listed.
        assert row.attributes == User.get_by_id(row.id).attributes
    assert listed[0].attributes[ENTERPRISE_USER] == ENTERPRISE_VALUES
    assert listed[1].created == on_the_second
    assert listed[1].external_id is None and listed[1].given_name is None
    assert listed[0].attributes["name"] == {"givenName": "G", "familyName": "F"}
    assert listed[0].department == "Sales" and listed[0].title == "Boss"
    assert records(query.where(User.id < 0), ListedUser) == []
