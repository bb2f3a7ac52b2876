//! PATCH paths (RFC 7644 §3.5.2), including the examples of §3.5.2.1–§3.5.2.3.

use kubehero_scim::{AttrPath, Filter, PatchPath};

const VALID: &[&str] = &[
    "members",
    "name.familyName",
    "displayName",
    r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#,
    r#"emails[type eq "work" and value ew "example.com"]"#,
    r#"members[value eq "2819c223-7f76-453a-919d-413861904646"].displayName"#,
    r#"addresses[type eq "work"].streetAddress"#,
    r#"emails[type eq "work"].value"#,
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
    r#"urn:ietf:params:scim:schemas:core:2.0:User:emails[type eq "work"].value"#,
];

#[test]
fn valid_paths_parse_and_round_trip() {
    for input in VALID {
        let path = PatchPath::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(path.to_string(), *input);
        assert_eq!(PatchPath::parse(&path.to_string()).unwrap(), path);
    }
}

#[test]
fn value_path_with_sub_attribute() {
    let path = PatchPath::parse(r#"emails[type eq "work"].value"#).unwrap();
    let PatchPath::ValuePath { attr, filter, sub_attr } = path else { panic!("not a value path") };
    assert_eq!(attr, AttrPath::new("emails"));
    assert_eq!(filter, Filter::parse(r#"type eq "work""#).unwrap());
    assert_eq!(sub_attr.as_deref(), Some("value"));
}

#[test]
fn attribute_path_with_urn() {
    let path = PatchPath::parse("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value").unwrap();
    let PatchPath::Attr(attr) = path else { panic!("not an attribute path") };
    assert_eq!(attr.uri.as_deref(), Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"));
    assert_eq!(attr.name, "manager");
    assert_eq!(attr.sub_attr.as_deref(), Some("value"));
}

#[test]
fn invalid_paths_are_errors() {
    let invalid = [
        "",
        " members",
        "members ",
        "members[",
        r#"members[value eq "x""#,
        "members[]",
        r#"members[value eq "x"]."#,
        r#"members[value eq "x"].a.b"#,
        r#"members[value eq "x"]value"#,
        r#"members[value eq "x"][type eq "y"]"#,
        r#"members[value[a pr] pr]"#,
        "name.familyName.x",
        "1name",
        ":name",
        "name eq",
        "members.",
        "(members)",
    ];
    for input in invalid {
        assert!(PatchPath::parse(input).is_err(), "{input:?} parsed");
    }
    let bomb = format!("a[{}b pr{}]", "(".repeat(5_000), ")".repeat(5_000));
    assert!(PatchPath::parse(&bomb).is_err());
}
