//! The evaluator on an RFC 7643 §8.2-style User with emails, name, groups and the enterprise extension.

use kubehero_scim::{matches, matches_with, CaseExact, Filter};
use serde_json::{json, Value};

fn user() -> Value {
    json!({
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
        ],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "BJensen-Ext",
        "userName": "bjensen@example.com",
        "name": { "familyName": "Jensen", "givenName": "Barbara", "middleName": null, "honorificPrefix": "" },
        "displayName": "Babs Jensen",
        "title": "Tour Guide",
        "userType": "Employee",
        "active": true,
        "loginCount": 42,
        "emails": [
            { "value": "bjensen@example.com", "type": "work", "primary": true },
            { "value": "babs@jensen.org", "type": "home" }
        ],
        "groups": [
            { "value": "e9e30dba-f08f-4109-8486-d5c6a331660a", "display": "Tour Guides", "$ref": "https://example.com/v2/Groups/e9e30dba" },
            { "value": "fc348aa8-3835-40eb-a20b-c726e15c55b5", "display": "Employees" }
        ],
        "x509Certificates": [],
        "meta": { "resourceType": "User", "lastModified": "2011-05-13T04:42:34Z" },
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "employeeNumber": "701984",
            "manager": { "value": "26118915-6090-4610-87e4-49d8ca9f808d", "displayName": "John Smith" }
        }
    })
}

fn check(filter: &str, expected: bool) {
    let parsed = Filter::parse(filter).unwrap_or_else(|e| panic!("{filter:?}: {e}"));
    assert_eq!(matches(&parsed, &user()), expected, "{filter}");
}

#[test]
fn comparisons_on_simple_attributes() {
    check(r#"userName eq "bjensen@example.com""#, true);
    check(r#"userName eq "BJENSEN@example.COM""#, true); // userName is caseExact=false
    check(r#"USERNAME eq "bjensen@example.com""#, true); // attribute names are case-insensitive
    check(r#"userName ne "bjensen@example.com""#, false);
    check(r#"userName ne "other""#, true);
    check(r#"userName sw "BJ""#, true);
    check(r#"userName ew "@EXAMPLE.com""#, true);
    check(r#"displayName co "bs je""#, true);
    check(r#"displayName co "xyz""#, false);
    check(r#"userType eq "Employee" and active eq true"#, true);
    check("active eq false", false);
    check("active ne false", true);
    check("loginCount gt 41 and loginCount lt 43 and loginCount ge 42 and loginCount le 42", true);
    check("loginCount eq 42.0", true);
    check(r#"loginCount eq "42""#, false); // no cross-type comparison
    check(r#"meta.lastModified gt "2011-05-13T04:42:33Z""#, true);
    check(r#"meta.lastModified lt "2011-05-13T04:42:34Z""#, false);
}

#[test]
fn case_exact_attributes() {
    check(r#"id eq "2819c223-7f76-453a-919d-413861904646""#, true);
    check(r#"id eq "2819C223-7F76-453A-919D-413861904646""#, false); // id is caseExact=true
    check(r#"externalId eq "bjensen-ext""#, false);
    let filter = Filter::parse(r#"userName eq "BJENSEN@example.com""#).unwrap();
    assert!(!matches_with(&filter, &user(), &CaseExact::new(["userName"])));
    let filter = Filter::parse(r#"emails[value eq "BABS@jensen.org"]"#).unwrap();
    assert!(matches(&filter, &user()));
    assert!(!matches_with(&filter, &user(), &CaseExact::new(["emails.value"])));
}

#[test]
fn presence() {
    check("title pr", true);
    check("nickName pr", false); // absent
    check("name.middleName pr", false); // null
    check("name.honorificPrefix pr", false); // empty string
    check("x509Certificates pr", false); // empty array
    check("emails pr", true);
    check("name pr", true);
    check("nickName eq null and name.middleName eq null and x509Certificates eq null", true);
    check("title eq null", false);
    check("title ne null", true);
}

#[test]
fn multi_valued_and_complex_attributes() {
    check(r#"emails.type eq "home""#, true); // any value matches
    check(r#"emails.type eq "other""#, false);
    check(r#"emails co "jensen.org""#, true); // complex value compares through `value`
    check(r#"groups.display eq "employees""#, true);
    check(r#"groups.$ref sw "https://""#, true);
    check(r#"emails[type eq "work" and value co "@example.com"]"#, true);
    check(r#"emails[type eq "home" and value co "@example.com"]"#, false); // both on the same value
    check(r#"emails[type eq "work" and primary eq true]"#, true);
    check(r#"emails[not (type eq "work")]"#, true);
    check(r#"groups[display sw "tour"] and emails[type eq "home"]"#, true);
    check(r#"ims[type eq "xmpp"]"#, false);
}

#[test]
fn rfc_examples_on_the_user() {
    check(r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#, true);
    check(r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#, false);
    check(r#"title pr and userType eq "Employee""#, true);
    check(r#"title pr or userType eq "Intern""#, true);
    check(r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#, true);
    check(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "bj""#, true);
    check(r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#, true);
}

#[test]
fn extension_attributes() {
    check(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#, true);
    check(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.displayName sw "john""#, true);
    check(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager co "6090""#, true);
    check(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:userName pr"#, false); // not in the extension
    check(r#"urn:example:unknown:2.0:User:userName pr"#, false);
    check(r#"employeeNumber pr"#, false); // extension attributes need their URI
}

#[test]
fn non_object_resources_never_match() {
    let filter = Filter::parse("a pr").unwrap();
    for resource in [json!(null), json!(1), json!("a"), json!([{"a": 1}])] {
        assert!(!matches(&filter, &resource));
    }
    assert!(matches(&Filter::parse("not (a pr)").unwrap(), &json!(null)));
}
