//! `validate` on POST/PUT bodies (RFC 7644 §3.3, §3.5.1), including the shapes Okta and Entra ID send.

use kubehero_scim::{validate, ResourceKind, ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};
use serde_json::{json, Value};

fn user(body: Value) -> Value {
    validate(ResourceKind::User, body).unwrap_or_else(|e| panic!("{e}"))
}

fn user_err(body: Value) -> (u16, Option<&'static str>, String) {
    let err = validate(ResourceKind::User, body).unwrap_err();
    (err.status, err.scim_type, err.detail)
}

#[test]
fn minimal_user() {
    assert_eq!(
        user(json!({"schemas": [USER_SCHEMA], "userName": "bjensen"})),
        json!({"schemas": [USER_SCHEMA], "userName": "bjensen"})
    );
}

#[test]
fn okta_create_user_is_kept_faithfully() {
    // Okta's "Create User" request (developer.okta.com SCIM 2.0 reference).
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "test.user@okta.local",
        "name": { "givenName": "Test", "familyName": "User" },
        "emails": [{ "primary": true, "value": "test.user@okta.local", "type": "work" }],
        "displayName": "Test User",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "password": "1mz050nq",
        "active": true
    });
    assert_eq!(
        user(body),
        json!({
            "schemas": [USER_SCHEMA],
            "userName": "test.user@okta.local",
            "name": { "givenName": "Test", "familyName": "User" },
            "emails": [{ "primary": true, "value": "test.user@okta.local", "type": "work" }],
            "displayName": "Test User",
            "locale": "en-US",
            "externalId": "00ujl29u0le5T6Aj10h7",
            "active": true
        })
    );
}

#[test]
fn entra_create_user_with_capitalised_names_and_string_booleans() {
    let body = json!({
        "UserName": "UserName222",
        "Active": "True",
        "DisplayName": "lennay",
        "schemas": [ENTERPRISE_USER_SCHEMA, USER_SCHEMA],
        "externalId": "ext-222",
        "name": { "formatted": "Adrew Ryan", "FamilyName": "Ryan", "givenName": "Andrew" },
        "emails": [
            { "Primary": "True", "type": "work", "value": "testing@bob2.com" },
            { "Primary": false, "type": "home", "value": "testinghome@bob3.com" }
        ],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "Department": "bob",
            "Manager": { "Value": "SuzzyQ", "displayName": "Suzzy Q" }
        }
    });
    assert_eq!(
        user(body),
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "userName": "UserName222",
            "active": true,
            "displayName": "lennay",
            "externalId": "ext-222",
            "name": { "formatted": "Adrew Ryan", "familyName": "Ryan", "givenName": "Andrew" },
            "emails": [
                { "primary": true, "type": "work", "value": "testing@bob2.com" },
                { "primary": false, "type": "home", "value": "testinghome@bob3.com" }
            ],
            ENTERPRISE_USER_SCHEMA: { "department": "bob", "manager": { "value": "SuzzyQ" } }
        })
    );
}

#[test]
fn extension_without_its_urn_in_schemas_gets_it() {
    let out = user(json!({
        "schemas": [USER_SCHEMA],
        "userName": "a",
        ENTERPRISE_USER_SCHEMA: { "employeeNumber": "42" }
    }));
    assert_eq!(out["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
    assert_eq!(out[ENTERPRISE_USER_SCHEMA], json!({"employeeNumber": "42"}));
    // A URN-qualified attribute at the top level lands in the extension too.
    let out = user(json!({
        "schemas": [USER_SCHEMA],
        "userName": "a",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter": "4130"
    }));
    assert_eq!(out[ENTERPRISE_USER_SCHEMA], json!({"costCenter": "4130"}));
    // A listed extension with no data stays listed; unknown URNs are dropped; duplicates collapse.
    let out = user(json!({
        "schemas": [USER_SCHEMA, "urn:example:custom:1.0:User", ENTERPRISE_USER_SCHEMA, USER_SCHEMA.to_uppercase()],
        "userName": "a"
    }));
    assert_eq!(out["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
}

#[test]
fn read_only_unknown_and_empty_values_are_dropped() {
    let out = user(json!({
        "schemas": [USER_SCHEMA],
        "id": "client-chosen",
        "meta": { "resourceType": "User" },
        "userName": "a",
        "groups": [{ "value": "g1" }],
        "nickName": "",
        "title": null,
        "emails": [],
        "name": { "givenName": "", "familyName": null },
        "phoneNumbers": [{ "value": "555" }],
        "favouriteColour": "blue",
        ENTERPRISE_USER_SCHEMA: { "manager": { "displayName": "only read-only" }, "department": "" }
    }));
    assert_eq!(out, json!({"schemas": [USER_SCHEMA], "userName": "a"}));
}

#[test]
fn duplicate_records_collapse() {
    let out = user(json!({
        "schemas": [USER_SCHEMA],
        "userName": "a",
        "emails": [{ "value": "a@x", "type": "work" }, { "type": "work", "value": "a@x" }, { "value": "b@x" }]
    }));
    assert_eq!(out["emails"], json!([{ "value": "a@x", "type": "work" }, { "value": "b@x" }]));
}

#[test]
fn schemas_are_required() {
    for body in [
        json!({"userName": "a"}),
        json!({"schemas": "urn:ietf:params:scim:schemas:core:2.0:User", "userName": "a"}),
        json!({"schemas": [GROUP_SCHEMA], "userName": "a"}),
        json!({"schemas": [1], "userName": "a"}),
        json!([{"schemas": [USER_SCHEMA], "userName": "a"}]),
        json!("userName"),
    ] {
        assert_eq!(user_err(body.clone()).1, Some("invalidSyntax"), "{body}");
    }
}

#[test]
fn required_attributes() {
    for body in [
        json!({"schemas": [USER_SCHEMA]}),
        json!({"schemas": [USER_SCHEMA], "userName": ""}),
        json!({"schemas": [USER_SCHEMA], "userName": null}),
    ] {
        let (status, scim_type, detail) = user_err(body);
        assert_eq!((status, scim_type), (400, Some("invalidValue")));
        assert!(detail.contains("userName"), "{detail}");
    }
    let err = validate(ResourceKind::Group, json!({"schemas": [GROUP_SCHEMA], "members": []})).unwrap_err();
    assert_eq!(err.scim_type, Some("invalidValue"));
    assert!(err.detail.contains("displayName"));
}

#[test]
fn type_errors_name_the_attribute() {
    let cases = [
        (json!({"userName": 42}), "userName"),
        (json!({"userName": "a", "active": "yes"}), "active"),
        (json!({"userName": "a", "active": 1}), "active"),
        (json!({"userName": "a", "name": "Barbara Jensen"}), "name"),
        (json!({"userName": "a", "name": {"givenName": ["Barbara"]}}), "name.givenName"),
        (json!({"userName": "a", "emails": [{"value": "a@x", "primary": "maybe"}]}), "emails.primary"),
        (json!({"userName": "a", "emails": [7]}), "emails"),
        (json!({"userName": "a", ENTERPRISE_USER_SCHEMA: "engineering"}), ENTERPRISE_USER_SCHEMA),
        (json!({"userName": "a", ENTERPRISE_USER_SCHEMA: {"manager": 7}}), "manager"),
    ];
    for (mut body, attr) in cases {
        body["schemas"] = json!([USER_SCHEMA]);
        let (status, scim_type, detail) = user_err(body.clone());
        assert_eq!((status, scim_type), (400, Some("invalidValue")), "{body}");
        assert!(detail.contains(attr), "{body}: {detail}");
    }
}

#[test]
fn booleans_accept_entra_strings_in_any_case() {
    for (given, stored) in [("True", true), ("FALSE", false), ("true", true), ("false", false)] {
        let out = user(json!({"schemas": [USER_SCHEMA], "userName": "a", "active": given}));
        assert_eq!(out["active"], stored);
    }
}

#[test]
fn two_primary_emails_are_rejected() {
    let (_, scim_type, detail) = user_err(json!({
        "schemas": [USER_SCHEMA],
        "userName": "a",
        "emails": [{"value": "a@x", "primary": true}, {"value": "b@x", "primary": "True"}]
    }));
    assert_eq!(scim_type, Some("invalidValue"));
    assert!(detail.contains("primary"), "{detail}");
}

#[test]
fn same_attribute_twice_in_different_case_is_rejected() {
    let (_, scim_type, _) = user_err(json!({"schemas": [USER_SCHEMA], "userName": "a", "USERNAME": "b"}));
    assert_eq!(scim_type, Some("invalidSyntax"));
}

#[test]
fn group_members_are_stored_by_id() {
    let out = validate(
        ResourceKind::Group,
        json!({
            "schemas": [GROUP_SCHEMA],
            "id": "g1",
            "DisplayName": "Tour Guides",
            "externalId": "okta-00g1",
            "members": [
                { "value": "u1", "display": "Babs Jensen", "$ref": "https://kh.example.com/scim/v2/Users/u1" },
                { "value": "u2", "type": "user" },
                { "value": "u1", "type": "User" },
                { "$ref": null, "value": "u3" }
            ]
        }),
    )
    .unwrap();
    assert_eq!(
        out,
        json!({
            "schemas": [GROUP_SCHEMA],
            "displayName": "Tour Guides",
            "externalId": "okta-00g1",
            "members": [{ "value": "u1" }, { "value": "u2", "type": "User" }, { "value": "u3" }]
        })
    );
}

#[test]
fn group_member_errors() {
    for (members, needle) in [
        (json!([{ "display": "no id" }]), "members.value"),
        (json!([{ "value": "g2", "type": "Group" }]), "members.type"),
        (json!([{ "value": 7 }]), "members.value"),
    ] {
        let err =
            validate(ResourceKind::Group, json!({"schemas": [GROUP_SCHEMA], "displayName": "g", "members": members}))
                .unwrap_err();
        assert_eq!(err.scim_type, Some("invalidValue"), "{members}");
        assert!(err.detail.contains(needle), "{members}: {}", err.detail);
    }
}

#[test]
fn validate_is_idempotent() {
    let once = user(json!({
        "schemas": [ENTERPRISE_USER_SCHEMA, USER_SCHEMA],
        "userName": "a",
        "Emails": {"value": "a@x", "Primary": "True"},
        ENTERPRISE_USER_SCHEMA: {"manager": "boss"}
    }));
    assert_eq!(once["emails"], json!([{"value": "a@x", "primary": true}]));
    assert_eq!(once[ENTERPRISE_USER_SCHEMA]["manager"], json!({"value": "boss"}));
    assert_eq!(user(once.clone()), once);
}
