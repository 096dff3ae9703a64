"""PATCH engine tests: operations() validation and apply() on plain dicts, no HTTP."""

import pytest

from mdm.scim import filters
from mdm.scim import schema
from mdm.scim.errors import ScimError
from mdm.scim.patch import Operation
from mdm.scim.patch import apply
from mdm.scim.patch import operations

USER = schema.user_type()
ENTERPRISE = schema.ENTERPRISE_SCHEMA
CUSTOM = schema.DEFAULT_CUSTOM_SCHEMA


def patch(resource, *ops, resource_type=USER):
    """Run PatchOp operation objects against resource and return the Result."""
    body = {"schemas": [schema.PATCH_OP], "Operations": list(ops)}
    return apply(resource, operations(body), resource_type)


def group_patch(*ops, resource=None):
    """Patch a group resource; return (resource, Result)."""
    resource = resource if resource is not None else {"displayName": "Staff"}
    return resource, patch(resource, *ops, resource_type=schema.GROUP_TYPE)


def scim_error(ops, resource=None, resource_type=USER):
    """Return the ScimError that patching raises."""
    with pytest.raises(ScimError) as caught:
        patch(
            resource if resource is not None else {"userName": "bjensen"},
            *ops,
            resource_type=resource_type,
        )
    return caught.value


def bjensen():
    """Return the canonical dict of a provisioned user."""
    return {
        "userName": "bjensen@example.com",
        "externalId": "bjensen",
        "name": {
            "givenName": "Barbara",
            "familyName": "Jensen",
            "formatted": "Ms. Barbara Jensen",
        },
        "displayName": "Babs Jensen",
        "active": True,
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": True},
            {"value": "babs@home.example", "type": "home"},
        ],
        ENTERPRISE: {"employeeNumber": "701984", "department": "Tour Operations"},
    }


#
# operations()
#


def test_operations_lowercases_op_and_reads_keys_case_insensitively():
    body = {
        "operations": [
            {"Op": "Add", "Path": "nickName", "Value": "Babs"},
            {"op": "REPLACE", "value": {"active": False}},
            {"op": "remove", "path": ""},
            {"op": "remove", "path": "title", "value": None},
        ]
    }
    assert operations(body) == [
        Operation("add", "nickName", "Babs", True),
        Operation("replace", None, {"active": False}, True),
        Operation("remove", None, None, False),
        Operation("remove", "title", None, True),
    ]


def test_operations_empty_list_is_a_no_op():
    """The Entra validator expects Operations: [] to succeed (docs/entra.md §3.6)."""
    resource = bjensen()
    assert operations({"schemas": [schema.PATCH_OP], "Operations": []}) == []
    result = patch(resource)
    assert resource == bjensen()
    assert result.members == [] and result.ignored == []


@pytest.mark.parametrize(
    "body",
    [
        [],
        "Operations",
        None,
        {"schemas": [schema.PATCH_OP]},
        {"Operations": {"op": "add", "path": "title", "value": "x"}},
        {"Operations": "add"},
        {"Operations": ["add"]},
        {"Operations": [{"path": "title", "value": "x"}]},
        {"Operations": [{"op": "move", "path": "title"}]},
        {"Operations": [{"op": 1, "path": "title"}]},
    ],
)
def test_operations_rejects_malformed_bodies(body):
    with pytest.raises(ScimError) as caught:
        operations(body)
    assert (caught.value.status, caught.value.scim_type) == (400, "invalidSyntax")


def test_operations_unknown_op_names_it():
    with pytest.raises(ScimError) as caught:
        operations({"Operations": [{"op": "merge", "path": "title"}]})
    assert "merge" in caught.value.detail


def test_operations_rejects_non_string_path():
    with pytest.raises(ScimError) as caught:
        operations({"Operations": [{"op": "remove", "path": ["title"]}]})
    assert caught.value.scim_type == "invalidPath"


#
# Entra user shapes (docs/entra.md §3)
#


def test_patch_p1_replace_work_email_in_place_and_family_name():
    resource = bjensen()
    patch(
        resource,
        {
            "op": "Replace",
            "path": 'emails[type eq "work"].value',
            "value": "updated@example.com",
        },
        {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
    )
    expected = bjensen()
    expected["emails"][0]["value"] = "updated@example.com"
    expected["name"]["familyName"] = "updatedFamilyName"
    assert resource == expected


def test_patch_p2_replace_user_name():
    resource = bjensen()
    patch(
        resource,
        {"op": "Replace", "path": "userName", "value": "5b50642d@testuser.com"},
    )
    assert resource == {**bjensen(), "userName": "5b50642d@testuser.com"}


def test_patch_p3_one_op_per_attribute_with_extension_urn_path():
    resource = {"userName": "u1", "active": True}
    patch(
        resource,
        {"op": "Replace", "path": "displayName", "value": "Pvlo"},
        {
            "op": "Replace",
            "path": 'emails[type eq "work"].value',
            "value": "Tb@test.example",
        },
        {"op": "Replace", "path": "name.givenName", "value": "Gtfd"},
        {"op": "Replace", "path": "name.familyName", "value": "Pkqf"},
        {"op": "Replace", "path": "externalId", "value": "Eqpj"},
        {"op": "Replace", "path": f"{ENTERPRISE}:employeeNumber", "value": "Eqpj"},
    )
    assert resource == {
        "userName": "u1",
        "active": True,
        "displayName": "Pvlo",
        "emails": [{"type": "work", "value": "Tb@test.example"}],
        "name": {"givenName": "Gtfd", "familyName": "Pkqf"},
        "externalId": "Eqpj",
        ENTERPRISE: {"employeeNumber": "Eqpj"},
    }


@pytest.mark.parametrize("op", ["replace", "add", "Add"])
def test_patch_p4_no_path_value_with_dotted_and_urn_keys(op):
    """Mode B keys are paths, never literal keys (docs/entra.md §3.2)."""
    resource = bjensen()
    patch(
        resource,
        {
            "op": "replace",
            "path": 'emails[type eq "work"].value',
            "value": "Tm@test.example",
        },
        {
            "op": op,
            "value": {
                "displayName": "Bjfe",
                "name.givenName": "Kkom",
                "name.familyName": "Unua",
                f"{ENTERPRISE}:employeeNumber": "Aklq",
                "active": False,
            },
        },
    )
    expected = bjensen()
    expected["emails"][0]["value"] = "Tm@test.example"
    expected["displayName"] = "Bjfe"
    expected["name"].update(givenName="Kkom", familyName="Unua")
    expected[ENTERPRISE]["employeeNumber"] = "Aklq"
    expected["active"] = False
    assert resource == expected


@pytest.mark.parametrize("op", ["Add", "add"])
def test_patch_p5_add_attribute_that_had_no_value(op):
    resource = bjensen()
    patch(resource, {"op": op, "path": "nickName", "value": "Babs"})
    assert resource == {**bjensen(), "nickName": "Babs"}


def test_patch_p6_adds_on_a_missing_filter_merge_into_one_element():
    resource = {"userName": "u1"}
    patch(
        resource,
        {
            "op": "add",
            "path": 'addresses[type eq "work"].formatted',
            "value": "USZLTUSJXBYV",
        },
        {
            "op": "add",
            "path": 'addresses[type eq "work"].locality',
            "value": "OSGODHEVDCVD",
        },
        {
            "op": "add",
            "path": 'addresses[type eq "work"].region',
            "value": "YMVMOEMXAYGD",
        },
    )
    assert resource == {
        "userName": "u1",
        "addresses": [
            {
                "type": "work",
                "formatted": "USZLTUSJXBYV",
                "locality": "OSGODHEVDCVD",
                "region": "YMVMOEMXAYGD",
            }
        ],
    }


def test_patch_p6_email_variant_creates_elements_and_moves_primary():
    resource = bjensen()
    patch(
        resource,
        {
            "op": "add",
            "path": 'emails[type eq "other"].value',
            "value": "o@example.com",
        },
        {"op": "add", "path": 'emails[type eq "other"].display', "value": "Other"},
        {"op": "add", "path": 'emails[type eq "other"].primary', "value": True},
        {"op": "add", "path": 'emails[type eq "home"].primary', "value": False},
    )
    assert resource["emails"] == [
        {"value": "bjensen@example.com", "type": "work", "primary": False},
        {"value": "babs@home.example", "type": "home", "primary": False},
        {
            "type": "other",
            "value": "o@example.com",
            "display": "Other",
            "primary": True,
        },
    ]


def test_patch_p7_value_path_replace_creates_missing_elements():
    resource = bjensen()
    patch(
        resource,
        {
            "op": "replace",
            "path": 'emails[type eq "work"].value',
            "value": "lg@example.ca",
        },
        {
            "op": "replace",
            "path": 'phoneNumbers[type eq "work"].value',
            "value": "07-272-0828",
        },
        {
            "op": "replace",
            "path": 'addresses[type eq "work"].streetAddress',
            "value": "2809 Johns",
        },
        {
            "op": "replace",
            "path": 'addresses[type eq "work"].locality',
            "value": "KMYVNUJVVZWC",
        },
    )
    expected = bjensen()
    expected["emails"][0]["value"] = "lg@example.ca"
    expected["phoneNumbers"] = [{"type": "work", "value": "07-272-0828"}]
    expected["addresses"] = [
        {"type": "work", "streetAddress": "2809 Johns", "locality": "KMYVNUJVVZWC"}
    ]
    assert resource == expected


def test_patch_p7_verbose_primary_eq_true_filters():
    resource = bjensen()
    patch(
        resource,
        {
            "op": "replace",
            "path": "emails[primary eq true].value",
            "value": "new@example.com",
        },
        {"op": "replace", "path": "roles[primary eq true].value", "value": "Admin"},
        {
            "op": "replace",
            "path": "roles[primary eq true].display",
            "value": "Administrator",
        },
        {
            "op": "replace",
            "path": "x509Certificates[primary eq true].value",
            "value": "MIIB",
        },
    )
    expected = bjensen()
    expected["emails"][0]["value"] = "new@example.com"
    expected["roles"] = [
        {"primary": True, "value": "Admin", "display": "Administrator"}
    ]
    expected["x509Certificates"] = [{"primary": True, "value": "MIIB"}]
    assert resource == expected


MANAGER = f"{ENTERPRISE}:manager"


@pytest.mark.parametrize(
    "op",
    [
        {
            "op": "Add",
            "path": "manager",
            "value": [{"$ref": "https://example.com/scim/Users/m1", "value": "m1"}],
        },
        {"op": "Add", "path": MANAGER, "value": "m1"},
        {"op": "replace", "path": MANAGER, "value": "m1"},
        {"op": "add", "path": MANAGER, "value": {"value": "m1"}},
        {"op": "replace", "path": MANAGER.upper(), "value": {"Value": "m1"}},
        {"op": "replace", "path": f"{MANAGER}.value", "value": "m1"},
        {"op": "replace", "value": {MANAGER: "m1"}},
        {"op": "replace", "value": {f"{MANAGER}.value": "m1"}},
        {
            "op": "add",
            "value": {ENTERPRISE: {"manager": {"value": "m1", "displayName": "Boss"}}},
        },
    ],
)
def test_patch_p8_manager_shapes(op):
    resource = {"userName": "u1", ENTERPRISE: {"manager": {"value": "m0"}}}
    patch(resource, op)
    manager = resource[ENTERPRISE]["manager"]
    assert manager["value"] == "m1"
    assert set(manager) <= {"value", "$ref"}


def test_patch_p8_new_manager_drops_the_old_ref():
    resource = {
        "userName": "u1",
        ENTERPRISE: {
            "manager": {"value": "m0", "$ref": "https://example.com/Users/m0"}
        },
    }
    patch(resource, {"op": "replace", "path": MANAGER, "value": "m2"})
    assert resource == {"userName": "u1", ENTERPRISE: {"manager": {"value": "m2"}}}


@pytest.mark.parametrize(
    "op",
    [
        {"op": "replace", "path": MANAGER, "value": ""},
        {"op": "replace", "path": MANAGER, "value": {"value": ""}},
        {"op": "replace", "path": MANAGER, "value": None},
        {"op": "replace", "path": MANAGER, "value": []},
        {"op": "remove", "path": MANAGER},
        {"op": "remove", "path": "Manager"},
        {"op": "remove", "path": f"{MANAGER}.value"},
        {"op": "replace", "value": {MANAGER: ""}},
    ],
)
def test_patch_p8_manager_removal(op):
    resource = {
        "userName": "u1",
        ENTERPRISE: {
            "manager": {"value": "m0", "$ref": "https://example.com/Users/m0"}
        },
    }
    patch(resource, op)
    assert resource == {"userName": "u1"}


def test_patch_p9_roles_with_json_in_a_string():
    resource = {"userName": "u1"}
    encoded = '{"id":"06b07648","value":"Admin","displayName":"Admin"}'
    patch(resource, {"op": "Add", "path": "roles", "value": [{"value": encoded}]})
    assert resource == {"userName": "u1", "roles": [{"value": encoded}]}


def test_patch_p9_roles_replace_and_string_true_filter():
    resource = {"userName": "u1"}
    patch(
        resource,
        {
            "op": "replace",
            "path": "roles",
            "value": [
                {
                    "primary": False,
                    "type": "WindowsAzureActiveDirectoryRole",
                    "display": "User",
                    "value": "User",
                },
            ],
        },
        {"op": "replace", "path": 'roles[primary eq "True"].value', "value": "Admin"},
        {"op": "replace", "path": 'roles[primary eq "True"].display', "value": "Admin"},
    )
    assert resource == {
        "userName": "u1",
        "roles": [
            {
                "primary": False,
                "type": "WindowsAzureActiveDirectoryRole",
                "display": "User",
                "value": "User",
            },
            {"primary": True, "value": "Admin", "display": "Admin"},
        ],
    }


@pytest.mark.parametrize("value", [False, "False", "false"])
def test_patch_p10_disable_leaves_coercion_to_parse(value):
    resource = bjensen()
    patch(resource, {"op": "Replace", "path": "active", "value": value})
    assert resource == {**bjensen(), "active": value}


@pytest.mark.parametrize("empty", ["", None])
def test_patch_p11_null_update_clears_attributes(empty):
    resource = {**bjensen(), "title": "Tour Guide"}
    patch(
        resource,
        {"op": "replace", "path": "title", "value": empty},
        {"op": "replace", "path": "name.givenName", "value": empty},
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": empty},
        {"op": "replace", "path": f"{ENTERPRISE}:department", "value": empty},
        {"op": "replace", "path": 'phoneNumbers[type eq "work"].value', "value": empty},
    )
    expected = bjensen()
    del expected["name"]["givenName"]
    expected["emails"] = [{"value": "babs@home.example", "type": "home"}]
    del expected[ENTERPRISE]["department"]
    assert resource == expected


@pytest.mark.parametrize("empty", ["", None])
def test_patch_p11_null_update_without_path(empty):
    resource = {**bjensen(), "title": "Tour Guide"}
    patch(
        resource,
        {
            "op": "replace",
            "value": {
                "title": empty,
                "name.givenName": empty,
                "name.familyName": empty,
                "name.formatted": empty,
                f"{ENTERPRISE}:department": empty,
                f"{ENTERPRISE}:employeeNumber": empty,
            },
        },
    )
    expected = bjensen()
    del expected["name"]
    del expected[ENTERPRISE]
    assert resource == expected


def test_patch_p13_reference_collection_replace():
    resource = bjensen()
    patch(
        resource,
        {"op": "Replace", "path": "userName", "value": "newusername"},
        {"op": "Replace", "path": "active", "value": False},
    )
    assert resource == {**bjensen(), "userName": "newusername", "active": False}


def test_patch_okta_deactivate():
    resource = bjensen()
    patch(resource, {"op": "replace", "value": {"active": False}})
    assert resource == {**bjensen(), "active": False}


#
# Names, keys and values
#


def test_patch_names_are_case_insensitive_and_stored_canonically():
    resource = {"userName": "u1"}
    patch(
        resource,
        {"op": "ADD", "path": "Name.GivenName", "value": "Barbara"},
        {"op": "add", "path": f"{ENTERPRISE.upper()}:DEPARTMENT", "value": "Sales"},
        {"op": "add", "path": 'EMAILS[Type eq "work"].Value', "value": "b@example.com"},
        {"op": "add", "value": {"DisplayName": "Babs", "NAME.FAMILYNAME": "Jensen"}},
        {
            "op": "add",
            "path": "phoneNumbers",
            "value": [{"Value": "555-0100", "Type": "mobile", "Primary": True}],
        },
    )
    assert resource == {
        "userName": "u1",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        ENTERPRISE: {"department": "Sales"},
        "emails": [{"type": "work", "value": "b@example.com"}],
        "displayName": "Babs",
        "phoneNumbers": [{"value": "555-0100", "type": "mobile", "primary": True}],
    }


def test_patch_no_path_complex_value_merges_on_add_and_replace():
    resource = bjensen()
    patch(resource, {"op": "add", "value": {"name": {"middleName": "J"}}})
    patch(resource, {"op": "replace", "value": {"Name": {"GivenName": "Barb"}}})
    expected = bjensen()
    expected["name"].update(middleName="J", givenName="Barb")
    assert resource == expected


def test_patch_path_complex_replace_merges():
    """Replacing name keeps the sub-attributes left out (merge, not overwrite)."""
    resource = bjensen()
    patch(resource, {"op": "replace", "path": "name", "value": {"familyName": "Smith"}})
    expected = bjensen()
    expected["name"]["familyName"] = "Smith"
    assert resource == expected


def test_patch_extension_object_merges_by_path_and_by_key():
    resource = bjensen()
    patch(
        resource,
        {
            "op": "add",
            "path": ENTERPRISE,
            "value": {"costCenter": "4130", "Manager.Value": "m1"},
        },
        {"op": "replace", "value": {ENTERPRISE: {"division": "Theme Park"}}},
    )
    expected = bjensen()
    expected[ENTERPRISE].update(
        costCenter="4130", manager={"value": "m1"}, division="Theme Park"
    )
    assert resource == expected


def test_patch_remove_extension_urn_removes_the_extension():
    resource = bjensen()
    patch(resource, {"op": "remove", "path": ENTERPRISE})
    expected = bjensen()
    del expected[ENTERPRISE]
    assert resource == expected


def test_patch_custom_extension_attributes():
    resource_type = schema.user_type(
        CUSTOM, [("badge", "string"), ("floor", "integer")]
    )
    resource = {"userName": "u1"}
    patch(
        resource,
        {"op": "add", "path": f"{CUSTOM}:badge", "value": "B-12"},
        {"op": "add", "value": {f"{CUSTOM}:floor": 3}},
        resource_type=resource_type,
    )
    assert resource == {"userName": "u1", CUSTOM: {"badge": "B-12", "floor": 3}}


def test_patch_unknown_attributes_are_noted_and_active_still_applies():
    """Unknown attributes must not block a disable (docs/entra.md §3.5)."""
    resource = bjensen()
    result = patch(
        resource,
        {"op": "replace", "path": "nickNames", "value": "Babs"},
        {"op": "replace", "path": f"{CUSTOM}:badge", "value": "B-12"},
        {"op": "replace", "path": "name.nickName", "value": "x"},
        {
            "op": "replace",
            "value": {
                "active": False,
                "urn:example:params:scim:schemas:extension:acme:2.0:User:costCode": "7",
                "name": {"givenName": "Barb", "suffix": "Jr"},
                "emails[": "broken",
            },
        },
    )
    expected = bjensen()
    expected["active"] = False
    expected["name"]["givenName"] = "Barb"
    assert resource == expected
    assert len(result.ignored) == 6
    assert all(note.startswith("Ignored ") for note in result.ignored)
    assert "nickNames" in result.ignored[0]


def test_patch_read_only_attributes_in_a_value_are_skipped_silently():
    resource = bjensen()
    result = patch(
        resource,
        {
            "op": "replace",
            "value": {
                "id": "other",
                "schemas": [schema.USER_SCHEMA],
                "meta": {"resourceType": "User"},
                "groups": [{"value": "g1"}],
                "displayName": "Barb",
            },
        },
        {
            "op": "replace",
            "path": MANAGER,
            "value": {"value": "m1", "displayName": "Boss"},
        },
    )
    expected = bjensen()
    expected["displayName"] = "Barb"
    expected[ENTERPRISE]["manager"] = {"value": "m1"}
    assert resource == expected
    assert result.ignored == []


@pytest.mark.parametrize(
    "path", ["id", "meta.created", "groups", f"{MANAGER}.displayName"]
)
def test_patch_read_only_path_is_a_mutability_error(path):
    error = scim_error([{"op": "replace", "path": path, "value": "x"}])
    assert error.scim_type == "mutability"


#
# Multi-valued attributes
#


def test_patch_add_to_multi_valued_appends_single_object_and_skips_duplicates():
    resource = bjensen()
    patch(
        resource,
        {
            "op": "add",
            "path": "emails",
            "value": {"value": "b2@example.com", "type": "other"},
        },
        {
            "op": "add",
            "path": "emails",
            "value": [{"value": "babs@home.example", "type": "home"}],
        },
        {"op": "add", "value": {"emails": [{"value": "b3@example.com"}]}},
    )
    expected = bjensen()
    expected["emails"] += [
        {"value": "b2@example.com", "type": "other"},
        {"value": "b3@example.com"},
    ]
    assert resource == expected


def test_patch_add_primary_element_clears_the_other_primary():
    resource = bjensen()
    patch(
        resource,
        {
            "op": "add",
            "path": "emails",
            "value": [{"value": "new@example.com", "type": "other", "primary": True}],
        },
    )
    assert resource["emails"] == [
        {"value": "bjensen@example.com", "type": "work", "primary": False},
        {"value": "babs@home.example", "type": "home"},
        {"value": "new@example.com", "type": "other", "primary": True},
    ]


def test_patch_primary_set_through_a_filter_is_unique():
    resource = bjensen()
    patch(
        resource,
        {"op": "replace", "path": 'emails[type eq "home"].primary', "value": "True"},
    )
    assert resource["emails"] == [
        {"value": "bjensen@example.com", "type": "work", "primary": False},
        {"value": "babs@home.example", "type": "home", "primary": "True"},
    ]


def test_patch_re_adding_the_primary_element_keeps_it_primary():
    resource = bjensen()
    patch(
        resource,
        {
            "op": "add",
            "path": "emails",
            "value": [
                {"value": "bjensen@example.com", "type": "work", "primary": True}
            ],
        },
    )
    assert resource == bjensen()


def test_patch_replace_multi_valued_without_filter_replaces_the_list():
    resource = bjensen()
    patch(
        resource,
        {
            "op": "replace",
            "path": "emails",
            "value": [
                {"value": "a@example.com", "primary": True},
                {"value": "b@example.com"},
            ],
        },
    )
    assert resource["emails"] == [
        {"value": "a@example.com", "primary": True},
        {"value": "b@example.com"},
    ]


def test_patch_replace_filtered_element_with_object_merges_it():
    resource = bjensen()
    patch(
        resource,
        {
            "op": "replace",
            "path": 'emails[type eq "home"]',
            "value": {"value": "babs@new.example", "display": "Home"},
        },
    )
    assert resource["emails"][1] == {
        "value": "babs@new.example",
        "type": "home",
        "display": "Home",
    }


def test_patch_sub_attribute_of_every_element_without_filter():
    resource = bjensen()
    patch(resource, {"op": "replace", "path": "emails.display", "value": "Babs"})
    assert [email["display"] for email in resource["emails"]] == ["Babs", "Babs"]


def test_patch_add_with_compound_equality_filter_creates_element():
    resource = {"userName": "u1"}
    patch(
        resource,
        {
            "op": "add",
            "path": 'emails[type eq "work" and primary eq true].value',
            "value": "w@example.com",
        },
    )
    assert resource["emails"] == [
        {"type": "work", "primary": True, "value": "w@example.com"}
    ]


def test_patch_replace_on_a_missing_non_equality_filter_is_no_target():
    error = scim_error(
        [{"op": "replace", "path": 'emails[value co "x"].type', "value": "home"}]
    )
    assert error.scim_type == "noTarget"


@pytest.mark.parametrize(
    "op",
    [
        {"op": "add", "path": "emails", "value": 5},
        {"op": "add", "path": "emails", "value": [5]},
        {"op": "add", "value": "displayName"},
        {"op": "replace", "value": ["displayName"]},
        {"op": "replace", "path": "name", "value": "Barbara"},
        {"op": "replace", "path": "displayName", "value": {"value": "x"}},
        {"op": "replace", "path": 'emails[type eq "work"]', "value": "x@example.com"},
        {"op": "add", "path": "title"},
        {"op": "replace", "value": {ENTERPRISE: "x"}},
    ],
)
def test_patch_wrong_value_shape_is_invalid_value(op):
    assert scim_error([op]).scim_type == "invalidValue"


@pytest.mark.parametrize(
    "path",
    ['emails[type eq "work"', "emails[type zz 1]", 'name[givenName eq "x"]', "a..b"],
)
def test_patch_bad_path_is_invalid_path(path):
    assert (
        scim_error([{"op": "replace", "path": path, "value": "x"}]).scim_type
        == "invalidPath"
    )


#
# remove
#


def test_patch_remove_without_path_is_no_target():
    error = scim_error([{"op": "remove", "value": {"title": "x"}}])
    assert (error.status, error.scim_type) == (400, "noTarget")


def test_patch_remove_attribute_and_sub_attribute():
    resource = bjensen()
    patch(
        resource,
        {"op": "remove", "path": "displayName"},
        {"op": "Remove", "path": "name.formatted"},
        {"op": "remove", "path": f"{ENTERPRISE}:employeeNumber"},
    )
    expected = bjensen()
    del expected["displayName"]
    del expected["name"]["formatted"]
    del expected[ENTERPRISE]["employeeNumber"]
    assert resource == expected


def test_patch_remove_filtered_elements_and_sub_attributes():
    resource = bjensen()
    patch(
        resource,
        {"op": "remove", "path": 'emails[type eq "home"]'},
        {"op": "remove", "path": 'emails[type eq "work"].primary'},
    )
    assert resource["emails"] == [{"value": "bjensen@example.com", "type": "work"}]


def test_patch_remove_multi_valued_with_value_list_removes_only_listed():
    resource = bjensen()
    patch(
        resource,
        {"op": "remove", "path": "emails", "value": [{"value": "BABS@home.example"}]},
    )
    assert resource["emails"] == [bjensen()["emails"][0]]


def test_patch_remove_multi_valued_with_empty_value_list_removes_nothing():
    resource = bjensen()
    patch(resource, {"op": "remove", "path": "emails", "value": []})
    assert resource == bjensen()


def test_patch_remove_whole_multi_valued_attribute():
    resource = bjensen()
    patch(resource, {"op": "remove", "path": "emails"})
    expected = bjensen()
    del expected["emails"]
    assert resource == expected


def test_patch_remove_something_absent_is_a_no_op():
    resource = {"userName": "u1"}
    result = patch(
        resource,
        {"op": "remove", "path": "title"},
        {"op": "remove", "path": "name.givenName"},
        {"op": "remove", "path": 'emails[type eq "work"]'},
        {"op": "remove", "path": MANAGER},
        {"op": "remove", "path": ENTERPRISE},
    )
    assert resource == {"userName": "u1"}
    assert result.ignored == []


#
# Group members (docs/entra.md §4)
#


def test_group_patch_g_p1_rename_leaves_membership_alone():
    resource, result = group_patch(
        {"op": "Replace", "path": "displayName", "value": "1879db59updatedDisplayName"}
    )
    assert resource == {"displayName": "1879db59updatedDisplayName"}
    assert result.members == []


@pytest.mark.parametrize(
    "value",
    [{"displayName": "MSADPJJZWBUS"}, {"externalId": "663fa3a8-e2b6"}],
)
def test_group_patch_g_p2_no_path_replace_leaves_membership_alone(value):
    resource, result = group_patch({"op": "replace", "value": value})
    assert resource == {"displayName": "Staff", **value}
    assert result.members == []


@pytest.mark.parametrize(
    "value",
    [
        [{"$ref": None, "value": "u1"}],
        [{"value": "u1"}],
        [{"Value": "u1", "display": "One", "type": "User"}],
        {"value": "u1"},
        "u1",
        ["u1", {"value": "u1"}],
    ],
)
def test_group_patch_g_p3_add_member_shapes(value):
    resource, result = group_patch({"op": "Add", "path": "members", "value": value})
    assert resource == {"displayName": "Staff"}
    assert result.members == [("add", ["u1"])]


def test_group_patch_g_p3_add_several_members():
    _, result = group_patch(
        {"op": "add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]},
        {"op": "add", "path": "Members", "value": [{"value": "u3"}]},
    )
    assert result.members == [("add", ["u1", "u2"]), ("add", ["u3"])]


def test_group_patch_g_p4_remove_with_value_list_removes_only_those():
    _, result = group_patch(
        {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": "u1"}]}
    )
    assert result.members == [("remove", ["u1"])]


@pytest.mark.parametrize(
    ("path", "ids"),
    [
        ('members[value eq "u7"]', ["u7"]),
        ('members[Value eq "u7" or value eq "u8"]', ["u7", "u8"]),
    ],
)
def test_group_patch_g_p5_remove_by_value_filter(path, ids):
    _, result = group_patch({"op": "remove", "path": path})
    assert result.members == [("remove", ids)]


def test_group_patch_remove_by_other_filter_is_remove_where():
    path = 'members[display sw "Test" and value ne "u1"]'
    _, result = group_patch({"op": "remove", "path": path})
    assert result.members == [("remove_where", filters.parse_path(path).filter)]


def test_group_patch_g_p6_replace_members_replaces_the_list():
    _, result = group_patch(
        {"op": "replace", "path": "members", "value": [{"value": "805d32c6"}]},
        {"op": "replace", "path": "members", "value": []},
    )
    assert result.members == [("replace", ["805d32c6"]), ("replace", [])]


def test_group_patch_g_p7_add_then_remove_same_member_in_order():
    _, result = group_patch(
        {"op": "add", "path": "members", "value": [{"value": "u1"}]},
        {"op": "remove", "path": "members", "value": [{"value": "u1"}]},
    )
    assert result.members == [("add", ["u1"]), ("remove", ["u1"])]


def test_group_patch_g_p8_remove_all():
    _, result = group_patch({"op": "remove", "path": "members"})
    assert result.members == [("remove_all", None)]


def test_group_patch_no_path_value_with_members():
    resource, result = group_patch(
        {"op": "add", "value": {"members": [{"value": "u1"}]}},
        {
            "op": "replace",
            "value": {"displayName": "Crew", "members": [{"value": "u2"}]},
        },
    )
    assert resource == {"displayName": "Crew"}
    assert result.members == [("add", ["u1"]), ("replace", ["u2"])]


@pytest.mark.parametrize(
    "value", [[{"value": 5}], [{"display": "u1"}], [{"value": ""}], [None], 5]
)
def test_group_patch_bad_member_value_is_invalid_value(value):
    error = scim_error(
        [{"op": "add", "path": "members", "value": value}],
        {"displayName": "Staff"},
        schema.GROUP_TYPE,
    )
    assert error.scim_type == "invalidValue"


@pytest.mark.parametrize(
    "op",
    [
        {"op": "add", "path": 'members[value eq "u1"]', "value": {"value": "u1"}},
        {"op": "remove", "path": "members.value"},
    ],
)
def test_group_patch_member_filter_outside_remove_is_invalid_path(op):
    error = scim_error([op], {"displayName": "Staff"}, schema.GROUP_TYPE)
    assert error.scim_type == "invalidPath"


@pytest.mark.parametrize(
    "path", ['emails[foo eq "x"].value', 'emails[primary eq "maybe"].value']
)
def test_patch_filter_the_element_cannot_answer_is_invalid_path(path):
    error = scim_error([{"op": "replace", "path": path, "value": "x"}], bjensen())
    assert error.scim_type == "invalidPath"


def test_patch_filter_compares_case_insensitively():
    resource = bjensen()
    patch(
        resource,
        {"op": "replace", "path": 'emails[type eq "WORK"].display', "value": "W"},
    )
    assert resource["emails"][0]["display"] == "W"
    assert len(resource["emails"]) == 2


def test_group_patch_remove_members_given_as_strings():
    _, result = group_patch(
        {"op": "remove", "path": "members", "value": ["u1", "u2"]},
        {"op": "remove", "path": "members", "value": "u3"},
        {"op": "remove", "path": "members", "value": []},
    )
    assert result.members == [("remove", ["u1", "u2"]), ("remove", ["u3"])]


def test_group_patch_replace_members_with_null_clears_them():
    _, result = group_patch({"op": "replace", "path": "members", "value": None})
    assert result.members == [("replace", [])]
