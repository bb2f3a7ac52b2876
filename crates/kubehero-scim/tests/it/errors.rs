//! `ScimError` (RFC 7644 §3.12): statuses, `scimType` keywords and the JSON body.

use kubehero_scim::{Filter, ScimError, ERROR_SCHEMA};
use serde_json::json;

#[test]
fn constructors_match_table_9() {
    let cases = [
        (ScimError::invalid_filter("x"), 400, Some("invalidFilter")),
        (ScimError::too_many("x"), 400, Some("tooMany")),
        (ScimError::uniqueness("x"), 409, Some("uniqueness")),
        (ScimError::mutability("x"), 400, Some("mutability")),
        (ScimError::invalid_syntax("x"), 400, Some("invalidSyntax")),
        (ScimError::invalid_path("x"), 400, Some("invalidPath")),
        (ScimError::no_target("x"), 400, Some("noTarget")),
        (ScimError::invalid_value("x"), 400, Some("invalidValue")),
        (ScimError::invalid_vers("x"), 400, Some("invalidVers")),
        (ScimError::sensitive("x"), 403, Some("sensitive")),
        (ScimError::not_found("x"), 404, None),
        (ScimError::precondition_failed("x"), 412, None),
        (ScimError::bad_request("x"), 400, None),
    ];
    for (err, status, scim_type) in cases {
        assert_eq!((err.status, err.scim_type), (status, scim_type), "{err}");
    }
}

#[test]
fn json_body_has_a_string_status() {
    let err = ScimError::uniqueness("userName bjensen is already taken");
    assert_eq!(
        err.to_json(),
        json!({
            "schemas": [ERROR_SCHEMA],
            "status": "409",
            "scimType": "uniqueness",
            "detail": "userName bjensen is already taken"
        })
    );
    let not_found = ScimError::not_found("no such user").to_json();
    assert_eq!(not_found["status"], "404");
    assert!(not_found.get("scimType").is_none());
}

#[test]
fn filter_errors_become_invalid_filter_with_the_position() {
    let err: ScimError = Filter::parse("userName eq").unwrap_err().into();
    assert_eq!(err.status, 400);
    assert_eq!(err.scim_type, Some("invalidFilter"));
    assert!(err.detail.contains("byte 11"), "{}", err.detail);
}

#[test]
fn details_quote_little_client_input() {
    let long = "x".repeat(5000);
    let errors = [
        ScimError::from(Filter::parse(&format!("userName eq \"a\" {long}")).unwrap_err()),
        kubehero_scim::Projection::from_query(Some(&format!("a b{long}")), None).unwrap_err(),
        kubehero_scim::apply_patch(
            kubehero_scim::ResourceKind::User,
            &mut json!({"schemas": [kubehero_scim::USER_SCHEMA], "userName": "a"}),
            &json!({"schemas": [kubehero_scim::PATCH_OP], "Operations": [{"op": long, "path": "x"}]}),
        )
        .unwrap_err(),
        kubehero_scim::apply_patch(
            kubehero_scim::ResourceKind::User,
            &mut json!({"schemas": [kubehero_scim::USER_SCHEMA], "userName": "a"}),
            &json!({"schemas": [kubehero_scim::PATCH_OP], "Operations": [{"op": "add", "path": format!("a b{long}"), "value": 1}]}),
        )
        .unwrap_err(),
    ];
    for err in errors {
        assert!(err.detail.len() < 200, "{}", err.detail);
    }
}
