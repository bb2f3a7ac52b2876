//! `apply_patch` (RFC 7644 §3.5.2): each operation shape, its error cases, atomicity.

use kubehero_scim::{
    apply_patch, ResourceKind, ScimError, ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, PATCH_OP, USER_SCHEMA,
};
use serde_json::{json, Value};

pub fn stored_user() -> Value {
    json!({
        "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
        "id": "2819c223",
        "meta": { "resourceType": "User", "version": "W/\"1\"" },
        "userName": "bjensen@example.com",
        "externalId": "bjensen",
        "name": { "givenName": "Barbara", "familyName": "Jensen" },
        "displayName": "Babs Jensen",
        "active": true,
        "emails": [
            { "value": "bjensen@example.com", "type": "work", "primary": true },
            { "value": "babs@jensen.org", "type": "home" }
        ],
        "groups": [{ "value": "g1", "display": "Tour Guides" }],
        ENTERPRISE_USER_SCHEMA: { "employeeNumber": "701984", "department": "Tour Operations" }
    })
}

pub fn stored_group() -> Value {
    json!({
        "schemas": [GROUP_SCHEMA],
        "id": "g1",
        "meta": { "resourceType": "Group" },
        "displayName": "Tour Guides",
        "members": [{ "value": "u1" }, { "value": "u2", "type": "User" }]
    })
}

pub fn ops(operations: Value) -> Value {
    json!({ "schemas": [PATCH_OP], "Operations": operations })
}

pub fn patch(kind: ResourceKind, resource: &Value, operations: Value) -> Result<Value, ScimError> {
    let mut patched = resource.clone();
    apply_patch(kind, &mut patched, &ops(operations)).map(|()| patched)
}

pub fn patch_user(operations: Value) -> Value {
    patch(ResourceKind::User, &stored_user(), operations).unwrap_or_else(|e| panic!("{e}"))
}

pub fn patch_group(operations: Value) -> Value {
    patch(ResourceKind::Group, &stored_group(), operations).unwrap_or_else(|e| panic!("{e}"))
}

fn user_err(operations: Value) -> ScimError {
    let original = stored_user();
    let mut resource = original.clone();
    let err = apply_patch(ResourceKind::User, &mut resource, &ops(operations)).unwrap_err();
    assert_eq!(resource, original, "a failed PATCH must leave the resource unchanged");
    err
}

fn group_err(operations: Value) -> ScimError {
    patch(ResourceKind::Group, &stored_group(), operations).unwrap_err()
}

#[test]
fn replace_simple_attribute_keeps_server_fields() {
    let out = patch_user(json!([{ "op": "replace", "path": "displayName", "value": "Barbara J" }]));
    let mut expected = stored_user();
    expected["displayName"] = json!("Barbara J");
    assert_eq!(out, expected);
}

#[test]
fn add_sets_an_absent_attribute_and_op_is_case_insensitive() {
    let out = patch_user(json!([{ "op": "ADD", "path": "nickName", "value": "Babs" }]));
    assert_eq!(out["nickName"], "Babs");
}

#[test]
fn path_names_are_case_insensitive_and_stored_canonically() {
    let out = patch_user(json!([{ "op": "replace", "path": "NAME.GIVENNAME", "value": "Barb" }]));
    assert_eq!(out["name"], json!({ "givenName": "Barb", "familyName": "Jensen" }));
}

#[test]
fn replace_complex_attribute_merges_sub_attributes() {
    let out = patch_user(json!([{ "op": "replace", "path": "name", "value": { "middleName": "Jane" } }]));
    assert_eq!(out["name"], json!({ "givenName": "Barbara", "familyName": "Jensen", "middleName": "Jane" }));
}

#[test]
fn add_to_multi_valued_appends_without_duplicates() {
    let out = patch_user(json!([{
        "op": "add",
        "path": "emails",
        "value": [{ "value": "babs@jensen.org", "type": "home" }, { "value": "b@other.org", "type": "other" }]
    }]));
    assert_eq!(out["emails"].as_array().unwrap().len(), 3);
    assert_eq!(out["emails"][2], json!({ "value": "b@other.org", "type": "other" }));
}

#[test]
fn replace_multi_valued_without_filter_replaces_the_array() {
    let out = patch_user(json!([{ "op": "replace", "path": "emails", "value": [{ "value": "new@x.org" }] }]));
    assert_eq!(out["emails"], json!([{ "value": "new@x.org" }]));
}

#[test]
fn replace_with_value_filter_and_sub_attribute() {
    let out =
        patch_user(json!([{ "op": "replace", "path": "emails[type eq \"work\"].value", "value": "bj@corp.com" }]));
    assert_eq!(out["emails"][0], json!({ "value": "bj@corp.com", "type": "work", "primary": true }));
    assert_eq!(out["emails"][1], stored_user()["emails"][1]);
}

#[test]
fn replace_with_compound_value_filter() {
    let out = patch_user(json!([{
        "op": "replace",
        "path": "emails[type eq \"home\" and value co \"@jensen\"]",
        "value": { "value": "babs@jensen.net", "type": "home" }
    }]));
    assert_eq!(out["emails"][1], json!({ "value": "babs@jensen.net", "type": "home" }));
}

#[test]
fn setting_primary_demotes_the_other_records() {
    let out = patch_user(json!([{ "op": "replace", "path": "emails[type eq \"home\"].primary", "value": true }]));
    assert_eq!(out["emails"][0]["primary"], false);
    assert_eq!(out["emails"][1]["primary"], true);
    let out = patch_user(json!([{ "op": "add", "path": "emails", "value": [{ "value": "n@x", "primary": "True" }] }]));
    assert_eq!(out["emails"][0]["primary"], false);
    assert_eq!(out["emails"][2], json!({ "value": "n@x", "primary": true }));
}

#[test]
fn add_with_filter_that_matches_nothing_creates_the_described_record() {
    let out = patch_user(json!([{ "op": "add", "path": "emails[type eq \"other\"].value", "value": "o@x.org" }]));
    assert_eq!(out["emails"][2], json!({ "type": "other", "value": "o@x.org" }));
}

#[test]
fn filter_that_matches_nothing_is_no_target_for_replace_and_remove() {
    for op in ["replace", "remove"] {
        let err = user_err(json!([{ "op": op, "path": "emails[type eq \"other\"].value", "value": "x" }]));
        assert_eq!((err.status, err.scim_type), (400, Some("noTarget")), "{op}");
    }
    let err = user_err(json!([{ "op": "add", "path": "emails[value co \"zzz\"].value", "value": "x" }]));
    assert_eq!(err.scim_type, Some("noTarget"));
}

#[test]
fn remove_attribute_sub_attribute_and_filtered_records() {
    let out = patch_user(json!([
        { "op": "remove", "path": "displayName" },
        { "op": "remove", "path": "name.familyName" },
        { "op": "remove", "path": "emails[type eq \"home\"]" }
    ]));
    assert!(out.get("displayName").is_none());
    assert_eq!(out["name"], json!({ "givenName": "Barbara" }));
    assert_eq!(out["emails"], json!([{ "value": "bjensen@example.com", "type": "work", "primary": true }]));
    // Removing the last sub-attribute removes the complex attribute.
    let out = patch_user(
        json!([{ "op": "remove", "path": "name.givenName" }, { "op": "remove", "path": "name.familyName" }]),
    );
    assert!(out.get("name").is_none());
}

#[test]
fn remove_without_path_is_no_target() {
    let err = user_err(json!([{ "op": "remove", "value": { "displayName": "x" } }]));
    assert_eq!(err.scim_type, Some("noTarget"));
}

#[test]
fn read_only_paths_are_mutability_errors() {
    for path in ["id", "meta", "groups", "meta.version", "groups[value eq \"g1\"]", "groups.display"] {
        for op in ["add", "replace", "remove"] {
            let err = user_err(json!([{ "op": op, "path": path, "value": "x" }]));
            assert_eq!((err.status, err.scim_type), (400, Some("mutability")), "{op} {path}");
        }
    }
    let err = user_err(json!([{
        "op": "replace",
        "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.displayName",
        "value": "x"
    }]));
    assert_eq!(err.scim_type, Some("mutability"));
}

#[test]
fn read_only_keys_in_a_path_less_value_are_dropped() {
    let out = patch_user(json!([{
        "op": "replace",
        "value": { "id": "other", "meta": {}, "schemas": [], "groups": [], "title": "Tour Guide" }
    }]));
    let mut expected = stored_user();
    expected["title"] = json!("Tour Guide");
    assert_eq!(out, expected);
}

#[test]
fn required_attributes_cannot_be_removed() {
    let err = user_err(json!([{ "op": "remove", "path": "userName" }]));
    assert_eq!(err.scim_type, Some("mutability"));
    let err = user_err(json!([{ "op": "replace", "path": "userName", "value": "" }]));
    assert_eq!(err.scim_type, Some("invalidValue"));
    let err = group_err(json!([{ "op": "remove", "path": "displayName" }]));
    assert_eq!(err.scim_type, Some("mutability"));
}

#[test]
fn unknown_attributes_are_ignored() {
    let out = patch_user(json!([
        { "op": "add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "555" },
        { "op": "replace", "path": "addresses", "value": [{ "country": "NL" }] },
        { "op": "remove", "path": "urn:example:custom:1.0:User:badge" },
        { "op": "replace", "path": "name.nickName", "value": "x" },
        { "op": "replace", "value": { "favouriteColour": "blue", "name.middleInitial": "J" } }
    ]));
    assert_eq!(out, stored_user());
}

#[test]
fn malformed_bodies() {
    let user = stored_user();
    let cases = [
        (json!({ "Operations": [{ "op": "remove", "path": "title" }] }), "invalidSyntax"),
        (json!({ "schemas": [USER_SCHEMA], "Operations": [{ "op": "remove", "path": "title" }] }), "invalidSyntax"),
        (json!({ "schemas": [PATCH_OP], "Operations": [] }), "invalidSyntax"),
        (json!({ "schemas": [PATCH_OP] }), "invalidSyntax"),
        (json!({ "schemas": [PATCH_OP], "Operations": [{ "op": "move", "path": "title" }] }), "invalidSyntax"),
        (json!({ "schemas": [PATCH_OP], "Operations": [{ "path": "title" }] }), "invalidSyntax"),
        (json!({ "schemas": [PATCH_OP], "Operations": ["remove"] }), "invalidSyntax"),
        (json!({ "schemas": [PATCH_OP], "Operations": [{ "op": "add", "path": "title" }] }), "invalidValue"),
        (json!({ "schemas": [PATCH_OP], "Operations": [{ "op": "add", "value": "x" }] }), "invalidValue"),
        (
            json!({ "schemas": [PATCH_OP], "Operations": [{ "op": "add", "path": "emails[type eq]", "value": "x" }] }),
            "invalidPath",
        ),
        (
            json!({ "schemas": [PATCH_OP], "Operations": [{ "op": "add", "path": "userName.first", "value": "x" }] }),
            "invalidPath",
        ),
        (
            json!({ "schemas": [PATCH_OP], "Operations": [{ "op": "add", "path": "title[value eq \"x\"]", "value": "x" }] }),
            "invalidPath",
        ),
        (json!({ "schemas": [PATCH_OP], "Operations": [{ "op": "add", "path": 7, "value": "x" }] }), "invalidPath"),
        (
            json!({ "schemas": [PATCH_OP], "Operations": [{ "op": "replace", "path": "active", "value": "maybe" }] }),
            "invalidValue",
        ),
        (
            json!({ "schemas": [PATCH_OP], "Operations": [{ "op": "replace", "path": "name", "value": "Babs" }] }),
            "invalidValue",
        ),
    ];
    for (body, scim_type) in cases {
        let mut resource = user.clone();
        let err = apply_patch(ResourceKind::User, &mut resource, &body).unwrap_err();
        assert_eq!((err.status, err.scim_type), (400, Some(scim_type)), "{body}: {err}");
        assert_eq!(resource, user);
    }
}

#[test]
fn patch_is_atomic() {
    let err = user_err(json!([
        { "op": "replace", "path": "displayName", "value": "changed" },
        { "op": "remove", "path": "emails[type eq \"fax\"]" }
    ]));
    assert_eq!(err.scim_type, Some("noTarget"));
    assert!(err.detail.starts_with("Operations[1]"), "{}", err.detail);
}

#[test]
fn extension_paths() {
    let out = patch_user(json!([
        { "op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Sales" },
        { "op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value", "value": "m1" },
        { "op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber" }
    ]));
    assert_eq!(out[ENTERPRISE_USER_SCHEMA], json!({ "department": "Sales", "manager": { "value": "m1" } }));

    // The whole extension, by its URN, with an object value (scim2-tester, Entra ID).
    let whole = json!({ "costCenter": "4130", "division": "West", "manager": { "value": "m2" } });
    let out = patch_user(json!([{ "op": "add", "path": ENTERPRISE_USER_SCHEMA, "value": whole }]));
    assert_eq!(out[ENTERPRISE_USER_SCHEMA]["costCenter"], "4130");
    assert_eq!(out[ENTERPRISE_USER_SCHEMA]["manager"], json!({ "value": "m2" }));
    assert_eq!(out[ENTERPRISE_USER_SCHEMA]["employeeNumber"], "701984");

    let out = patch_user(json!([{ "op": "remove", "path": ENTERPRISE_USER_SCHEMA }]));
    assert!(out.get(ENTERPRISE_USER_SCHEMA).is_none());
    assert_eq!(out["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));

    // A core-schema URN prefix names the core attribute.
    let out = patch_user(
        json!([{ "op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:title", "value": "T" }]),
    );
    assert_eq!(out["title"], "T");
}

#[test]
fn extension_is_added_to_schemas_when_first_written() {
    let mut user = stored_user();
    user["schemas"] = json!([USER_SCHEMA]);
    user.as_object_mut().unwrap().remove(ENTERPRISE_USER_SCHEMA);
    let out = patch(
        ResourceKind::User,
        &user,
        json!([{
            "op": "add",
            "value": { "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Ops" }
        }]),
    )
    .unwrap();
    assert_eq!(out["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
    assert_eq!(out[ENTERPRISE_USER_SCHEMA], json!({ "department": "Ops" }));
}

#[test]
fn group_members_add_remove_replace() {
    let out = patch_group(
        json!([{ "op": "add", "path": "members", "value": [{ "value": "u3" }, { "value": "u1" }, { "value": "u4" }] }]),
    );
    assert_eq!(
        out["members"],
        json!([{ "value": "u1" }, { "value": "u2", "type": "User" }, { "value": "u3" }, { "value": "u4" }])
    );

    let out = patch_group(json!([{ "op": "remove", "path": "members[value eq \"u1\"]" }]));
    assert_eq!(out["members"], json!([{ "value": "u2", "type": "User" }]));

    let out = patch_group(json!([{ "op": "remove", "path": "members" }]));
    assert!(out.get("members").is_none());

    let out = patch_group(json!([{ "op": "replace", "path": "members", "value": [{ "value": "u9" }] }]));
    assert_eq!(out["members"], json!([{ "value": "u9" }]));

    // `members.value` is case-exact: `U1` is another member.
    let err = group_err(json!([{ "op": "remove", "path": "members[value eq \"U1\"]" }]));
    assert_eq!(err.scim_type, Some("noTarget"));
}

#[test]
fn immutable_member_value_cannot_change() {
    let err = group_err(json!([{ "op": "replace", "path": "members[value eq \"u1\"].value", "value": "u7" }]));
    assert_eq!(err.scim_type, Some("mutability"));
    let err = group_err(json!([{ "op": "replace", "path": "members[value eq \"u1\"]", "value": { "value": "u7" } }]));
    assert_eq!(err.scim_type, Some("mutability"));
    let err = group_err(json!([{ "op": "remove", "path": "members[value eq \"u1\"].value" }]));
    assert_eq!(err.scim_type, Some("mutability"));
    let err = group_err(json!([{ "op": "add", "path": "members[value eq \"u1\"].display", "value": "x" }]));
    assert_eq!(err.scim_type, Some("mutability"));
    let err = group_err(json!([{ "op": "add", "path": "members", "value": [{ "value": "g2", "type": "Group" }] }]));
    assert_eq!(err.scim_type, Some("invalidValue"));
}

#[test]
fn boolean_strings_are_coerced() {
    let out = patch_user(json!([{ "op": "replace", "path": "active", "value": "False" }]));
    assert_eq!(out["active"], false);
    let out = patch_user(json!([{ "op": "replace", "value": { "active": "TRUE" } }]));
    assert_eq!(out["active"], true);
}

#[test]
fn replace_with_null_unassigns() {
    let out = patch_user(json!([{ "op": "replace", "path": "displayName", "value": null }]));
    assert!(out.get("displayName").is_none());
    let out = patch_user(json!([{ "op": "replace", "path": "emails", "value": [] }]));
    assert!(out.get("emails").is_none());
}
