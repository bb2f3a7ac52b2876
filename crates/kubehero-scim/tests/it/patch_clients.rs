//! PATCH bodies exactly as Okta and Microsoft Entra ID send them (Okta's SCIM 2.0 provisioning reference;
//! Microsoft's "Develop and plan provisioning for a SCIM endpoint" request examples and its known
//! non-compliance list).

use kubehero_scim::{apply_patch, member_only_ops, MemberOp, ResourceKind, ENTERPRISE_USER_SCHEMA};
use serde_json::{json, Value};

use crate::patch_ops::{stored_group, stored_user};

fn apply(kind: ResourceKind, resource: &Value, body: &str) -> Value {
    let body: Value = serde_json::from_str(body).unwrap();
    let mut patched = resource.clone();
    apply_patch(kind, &mut patched, &body).unwrap_or_else(|e| panic!("{e}"));
    patched
}

#[test]
fn okta_deactivate_user() {
    let out = apply(
        ResourceKind::User,
        &stored_user(),
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}"#,
    );
    let mut expected = stored_user();
    expected["active"] = json!(false);
    assert_eq!(out, expected);
}

#[test]
fn okta_update_password_is_ignored_and_profile_fields_apply() {
    let out = apply(
        ResourceKind::User,
        &stored_user(),
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"password":"t1meMa$heen","name":{"givenName":"Another"}}}]}"#,
    );
    assert!(out.get("password").is_none());
    assert_eq!(out["name"]["givenName"], "Another");
}

#[test]
fn okta_group_rename_with_id_in_value() {
    let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"id":"abf4dd94-a4c0-4f67-89c9-76b03340cb9b","displayName":"Test SCIMv2"}}]}"#;
    let out = apply(ResourceKind::Group, &stored_group(), body);
    assert_eq!(out["displayName"], "Test SCIMv2");
    assert_eq!(out["id"], "g1");
    assert_eq!(member_only_ops(&serde_json::from_str(body).unwrap()), None);
}

#[test]
fn okta_group_push_add_members() {
    let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"members","value":[{"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173","display":"test.user@okta.local"}]}]}"#;
    let out = apply(ResourceKind::Group, &stored_group(), body);
    assert_eq!(out["members"][2], json!({ "value": "23a35c27-23d3-4c03-b4c5-6443c09e7173" }));
    assert_eq!(
        member_only_ops(&serde_json::from_str(body).unwrap()),
        Some(vec![MemberOp::Add(vec!["23a35c27-23d3-4c03-b4c5-6443c09e7173".to_owned()])])
    );
}

#[test]
fn okta_group_push_remove_member() {
    let group = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "id": "g1",
        "displayName": "Test SCIMv2",
        "members": [{ "value": "89bb1940-b905-4575-9e7f-6f887cfb368e" }, { "value": "u2" }]
    });
    let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove","path":"members[value eq \"89bb1940-b905-4575-9e7f-6f887cfb368e\"]"}]}"#;
    let out = apply(ResourceKind::Group, &group, body);
    assert_eq!(out["members"], json!([{ "value": "u2" }]));
    assert_eq!(
        member_only_ops(&serde_json::from_str(body).unwrap()),
        Some(vec![MemberOp::Remove(vec!["89bb1940-b905-4575-9e7f-6f887cfb368e".to_owned()])])
    );
}

#[test]
fn entra_disable_user() {
    let out = apply(
        ResourceKind::User,
        &stored_user(),
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}"#,
    );
    assert_eq!(out["active"], false);
}

#[test]
fn entra_update_user_multi_valued_properties() {
    let out = apply(
        ResourceKind::User,
        &stored_user(),
        r#"{
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
                {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"}
            ]
        }"#,
    );
    assert_eq!(out["emails"][0], json!({ "value": "updatedEmail@microsoft.com", "type": "work", "primary": true }));
    assert_eq!(out["name"], json!({ "givenName": "Barbara", "familyName": "updatedFamilyName" }));
}

#[test]
fn entra_update_user_single_valued_and_extension_attributes() {
    let out = apply(
        ResourceKind::User,
        &stored_user(),
        r#"{
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "Replace", "path": "userName", "value": "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"},
                {"op": "Replace", "path": "name.givenName", "value": "Kim"},
                {"op": "Add", "path": "nickName", "value": "Babs"},
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "kim@contoso.com"},
                {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Marketing"},
                {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "2819c223-7f76-453a-919d-ab1234567891"},
                {"op": "Add", "path": "externalId", "value": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"}
            ]
        }"#,
    );
    assert_eq!(out["userName"], "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com");
    assert_eq!(out["name"]["givenName"], "Kim");
    assert_eq!(out["nickName"], "Babs");
    assert_eq!(out["emails"][0]["value"], "kim@contoso.com");
    assert_eq!(out["externalId"], "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef");
    assert_eq!(
        out[ENTERPRISE_USER_SCHEMA],
        json!({
            "employeeNumber": "701984",
            "department": "Marketing",
            "manager": { "value": "2819c223-7f76-453a-919d-ab1234567891" }
        })
    );
}

#[test]
fn entra_path_less_replace_with_qualified_keys() {
    // Entra ID without the `aadOptscim062020` flag: one path-less operation with dotted and URN keys.
    let out = apply(
        ResourceKind::User,
        &stored_user(),
        r#"{
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{
                "op": "Replace",
                "value": {
                    "active": "False",
                    "name.givenName": "Barb",
                    "emails[type eq \"work\"].value": "barb@contoso.com",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Finance",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"costCenter": "CC-1"}
                }
            }]
        }"#,
    );
    assert_eq!(out["active"], false);
    assert_eq!(out["name"]["givenName"], "Barb");
    assert_eq!(out["emails"][0]["value"], "barb@contoso.com");
    assert_eq!(out[ENTERPRISE_USER_SCHEMA]["department"], "Finance");
    assert_eq!(out[ENTERPRISE_USER_SCHEMA]["costCenter"], "CC-1");
}

#[test]
fn entra_add_work_email_when_the_user_has_none() {
    let mut user = stored_user();
    user.as_object_mut().unwrap().remove("emails");
    let out = apply(
        ResourceKind::User,
        &user,
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"emails[type eq \"work\"].value","value":"new@contoso.com"}]}"#,
    );
    assert_eq!(out["emails"], json!([{ "type": "work", "value": "new@contoso.com" }]));
}

#[test]
fn entra_group_add_members() {
    let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"members","value":[{"$ref":null,"value":"f648f8d5ea4e4cd38e9c"}]}]}"#;
    let out = apply(ResourceKind::Group, &stored_group(), body);
    assert_eq!(out["members"][2], json!({ "value": "f648f8d5ea4e4cd38e9c" }));
    assert_eq!(
        member_only_ops(&serde_json::from_str(body).unwrap()),
        Some(vec![MemberOp::Add(vec!["f648f8d5ea4e4cd38e9c".to_owned()])])
    );
}

#[test]
fn entra_group_remove_members_by_value_list() {
    let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Remove","path":"members","value":[{"value":"u1"},{"value":"not-a-member"}]}]}"#;
    let out = apply(ResourceKind::Group, &stored_group(), body);
    assert_eq!(out["members"], json!([{ "value": "u2", "type": "User" }]));
    assert_eq!(
        member_only_ops(&serde_json::from_str(body).unwrap()),
        Some(vec![MemberOp::Remove(vec!["u1".to_owned(), "not-a-member".to_owned()])])
    );
}

#[test]
fn entra_group_several_members_in_one_operation_and_rename() {
    let body = r#"{
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "Add", "path": "members", "value": [{"value": "a"}, {"value": "b"}]},
            {"op": "Replace", "path": "displayName", "value": "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"}
        ]
    }"#;
    let out = apply(ResourceKind::Group, &stored_group(), body);
    assert_eq!(out["members"].as_array().unwrap().len(), 4);
    assert_eq!(out["displayName"], "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName");
    assert_eq!(member_only_ops(&serde_json::from_str(body).unwrap()), None);
}
