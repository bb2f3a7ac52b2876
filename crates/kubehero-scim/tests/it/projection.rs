//! `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5) with the `returned` rules.

use kubehero_scim::{Projection, ResourceKind, ENTERPRISE_USER_SCHEMA, USER_SCHEMA};
use serde_json::{json, Value};

use crate::patch_ops::{stored_group, stored_user};

fn project(attributes: Option<&str>, excluded: Option<&str>) -> Value {
    Projection::from_query(attributes, excluded).unwrap().apply(ResourceKind::User, &stored_user())
}

#[test]
fn default_returns_everything_stored() {
    assert_eq!(project(None, None), stored_user());
    assert_eq!(project(Some(""), Some(" ")), stored_user());
    assert!(Projection::from_query(None, None).unwrap().is_default());
}

#[test]
fn attributes_keep_only_those_plus_always() {
    assert_eq!(
        project(Some("userName,displayName"), None),
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "id": "2819c223",
            "userName": "bjensen@example.com",
            "displayName": "Babs Jensen"
        })
    );
}

#[test]
fn attributes_are_case_insensitive_and_may_be_urn_qualified() {
    let out = project(Some(" USERNAME , urn:ietf:params:scim:schemas:core:2.0:User:externalId"), None);
    assert_eq!(out["userName"], "bjensen@example.com");
    assert_eq!(out["externalId"], "bjensen");
    assert!(out.get("meta").is_none());
}

#[test]
fn sub_attribute_selection() {
    let out = project(Some("name.givenName,emails.value"), None);
    assert_eq!(out["name"], json!({ "givenName": "Barbara" }));
    assert_eq!(out["emails"], json!([{ "value": "bjensen@example.com" }, { "value": "babs@jensen.org" }]));
    assert!(out.get("userName").is_none());
}

#[test]
fn extension_selection() {
    let out = project(Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"), None);
    assert_eq!(out[ENTERPRISE_USER_SCHEMA], json!({ "department": "Tour Operations" }));
    let out = project(Some(ENTERPRISE_USER_SCHEMA), None);
    assert_eq!(out[ENTERPRISE_USER_SCHEMA], stored_user()[ENTERPRISE_USER_SCHEMA]);
    // Unqualified names are core attributes: `department` selects nothing.
    let out = project(Some("department"), None);
    assert!(out.get(ENTERPRISE_USER_SCHEMA).is_none());
}

#[test]
fn excluded_attributes() {
    let out = project(
        None,
        Some(
            "emails,name.familyName,meta,id,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
        ),
    );
    assert!(out.get("emails").is_none());
    assert!(out.get("meta").is_none());
    assert_eq!(out["id"], "2819c223", "`returned: always` cannot be excluded");
    assert_eq!(out["name"], json!({ "givenName": "Barbara" }));
    assert_eq!(out[ENTERPRISE_USER_SCHEMA], json!({ "department": "Tour Operations" }));
    assert_eq!(out["userName"], "bjensen@example.com");
    let out = project(None, Some(ENTERPRISE_USER_SCHEMA));
    assert!(out.get(ENTERPRISE_USER_SCHEMA).is_none());
}

#[test]
fn attributes_win_over_excluded_attributes() {
    let out = project(Some("displayName"), Some("displayName"));
    assert_eq!(out["displayName"], "Babs Jensen");
    assert!(out.get("userName").is_none());
}

#[test]
fn unknown_names_select_nothing() {
    let out = project(Some("phoneNumbers,name.nickName,urn:example:x:1.0:User:badge"), None);
    assert_eq!(out, json!({ "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "2819c223" }));
}

#[test]
fn bad_paths_are_invalid_value() {
    for bad in ["user name", "emails[type eq \"work\"]", "name..givenName", "1abc", ":x", "a.b.c"] {
        let err = Projection::from_query(Some(bad), None).unwrap_err();
        assert_eq!((err.status, err.scim_type), (400, Some("invalidValue")), "{bad}");
        let err = Projection::from_query(None, Some(bad)).unwrap_err();
        assert_eq!(err.scim_type, Some("invalidValue"), "{bad}");
    }
    let many = vec!["userName"; 300].join(",");
    assert!(Projection::from_query(Some(&many), None).is_err());
    let long = "a".repeat(9000);
    assert!(Projection::from_query(Some(&long), None).is_err());
}

#[test]
fn group_members_projection() {
    let project = |a: Option<&str>, e: Option<&str>| {
        Projection::from_query(a, e).unwrap().apply(ResourceKind::Group, &stored_group())
    };
    let out = project(Some("displayName"), None);
    assert!(out.get("members").is_none());
    let out = project(None, Some("members"));
    assert_eq!(out["displayName"], "Tour Guides");
    assert!(out.get("members").is_none());
    let out = project(Some("members.value"), None);
    assert_eq!(out["members"], json!([{ "value": "u1" }, { "value": "u2" }]));
}
