//! Fuzzes the SCIM filter parser (RFC 7644 §3.4.2.2) with arbitrary bytes: it must never panic, its canonical
//! `Display` must parse back to the same AST, and evaluating the AST against a resource must not panic.
#![no_main]

use std::sync::OnceLock;

use kubehero_scim::{matches, Filter};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

/// A User with every JSON type, a multi-valued complex attribute and an extension, so evaluation walks
/// every branch of the matcher.
fn resource() -> &'static Value {
    static RESOURCE: OnceLock<Value> = OnceLock::new();
    RESOURCE.get_or_init(|| {
        json!({
            "schemas": [
                "urn:ietf:params:scim:schemas:core:2.0:User",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
            ],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "bjensen",
            "userName": "bjensen@example.com",
            "name": { "familyName": "Jensen", "givenName": "Barbara", "formatted": null },
            "title": "Tour Guide",
            "active": true,
            "loginCount": 42,
            "score": -1.5e3,
            "nickName": "",
            "emails": [
                { "value": "bjensen@example.com", "type": "work", "primary": true },
                { "value": "babs@jensen.org", "type": "home" }
            ],
            "groups": [],
            "members": [{ "value": "x", "$ref": "https://example.com/v2/Users/x", "display": "X" }],
            "meta": {
                "resourceType": "User",
                "created": "2010-01-23T04:56:22Z",
                "lastModified": "2011-05-13T04:42:34Z",
                "version": "W/\"a330bc54f0671c9\""
            },
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "employeeNumber": "701984",
                "manager": { "value": "26118915-6090-4610-87e4-49d8ca9f808d", "displayName": "John Smith" }
            }
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let Ok(filter) = Filter::parse(s) else { return };
    let canonical = filter.to_string();
    match Filter::parse(&canonical) {
        Ok(again) => assert_eq!(again, filter, "round trip of {s:?} through {canonical:?} changed the AST"),
        Err(e) => panic!("canonical form {canonical:?} of {s:?} does not parse: {e}"),
    }
    let _ = matches(&filter, resource());
});
