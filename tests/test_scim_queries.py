"""Listing costs a fixed number of SQL queries, whatever the page size (no N+1)."""

import pytest
from playhouse.test_utils import count_queries

from mdm.db import database
from mdm.models import Group
from mdm.models import Membership
from mdm.models import User
from mdm.models import mirror_user

from .conftest import directory_statements


@pytest.fixture
def directory(app):
    """Seed 150 users in 3 groups directly in the database."""
    with app.app_context(), database.connection_context():
        groups = [Group.create(display_name=f"G{i}") for i in range(3)]
        for i in range(150):
            user = User()
            mirror_user(
                user,
                {
                    "userName": f"u{i}@x",
                    "emails": [{"value": f"u{i}@x", "type": "work"}],
                    "active": True,
                },
            )
            user.save(force_insert=True)
            for group in groups[: i % 3 + 1]:
                Membership.create(group=group, user=user)
    return groups


def test_user_list_page_of_100(scim, directory):
    scim.get("/Users?count=0")  # records the token's first use
    with count_queries() as counted:
        response = scim.get("/Users?startIndex=1&count=100")
    assert response.status_code == 200
    body = response.get_json()
    assert body["itemsPerPage"] == 100 and body["totalResults"] == 150
    assert all(r["groups"] for r in body["Resources"])
    # token with the custom attributes, page, groups of the page, count
    assert len(directory_statements(counted)) == 4, counted.get_queries()


def test_group_with_members(scim, directory):
    scim.get("/Users?count=0")
    group_id = directory[0].scim_id
    with count_queries() as counted:
        body = scim.get(f"/Groups/{group_id}").get_json()
    assert len(body["members"]) == 150
    # token, group, members
    assert len(directory_statements(counted)) == 3, counted.get_queries()
    with count_queries() as counted:
        listed = scim.get("/Groups").get_json()
    assert [len(g["members"]) for g in listed["Resources"]] == [150, 100, 50]
    # token, page, members of the page
    assert len(directory_statements(counted)) == 3, counted.get_queries()
