//! Valid filters: every example of RFC 7644 §3.4.2.2 verbatim (with its `filter=` prefix removed), then
//! precedence, case, literal and path cases. Each has its expected AST and must survive a `Display` round trip.

use kubehero_scim::{AttrPath, CompValue, CompareOp, Filter};

use crate::support::sexpr;

const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// (filter, expected AST as an S-expression)
pub const VALID: &[(&str, &str)] = &[
    // RFC 7644 §3.4.2.2, the example list, verbatim.
    (r#"userName eq "bjensen""#, r#"(eq userName "bjensen")"#),
    (r#"name.familyName co "O'Malley""#, r#"(co name.familyName "O'Malley")"#),
    (r#"userName sw "J""#, r#"(sw userName "J")"#),
    (
        r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
        r#"(sw urn:ietf:params:scim:schemas:core:2.0:User:userName "J")"#,
    ),
    ("title pr", "(pr title)"),
    (r#"meta.lastModified gt "2011-05-13T04:42:34Z""#, r#"(gt meta.lastModified "2011-05-13T04:42:34Z")"#),
    (r#"meta.lastModified ge "2011-05-13T04:42:34Z""#, r#"(ge meta.lastModified "2011-05-13T04:42:34Z")"#),
    (r#"meta.lastModified lt "2011-05-13T04:42:34Z""#, r#"(lt meta.lastModified "2011-05-13T04:42:34Z")"#),
    (r#"meta.lastModified le "2011-05-13T04:42:34Z""#, r#"(le meta.lastModified "2011-05-13T04:42:34Z")"#),
    (r#"title pr and userType eq "Employee""#, r#"(and (pr title) (eq userType "Employee"))"#),
    (r#"title pr or userType eq "Intern""#, r#"(or (pr title) (eq userType "Intern"))"#),
    (
        r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
        r#"(eq schemas "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")"#,
    ),
    (
        r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
        r#"(and (eq userType "Employee") (or (co emails "example.com") (co emails.value "example.org")))"#,
    ),
    (
        r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
        r#"(and (ne userType "Employee") (not (or (co emails "example.com") (co emails.value "example.org"))))"#,
    ),
    (
        r#"userType eq "Employee" and (emails.type eq "work")"#,
        r#"(and (eq userType "Employee") (eq emails.type "work"))"#,
    ),
    (
        r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
        r#"(and (eq userType "Employee") (vp emails (and (eq type "work") (co value "@example.com"))))"#,
    ),
    (
        r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
        r#"(or (vp emails (and (eq type "work") (co value "@example.com"))) (vp ims (and (eq type "xmpp") (co value "@foo.com"))))"#,
    ),
    // RFC 7644 §3.4.2.2 prose: operators and attribute names are case-insensitive.
    (r#"userName Eq "john""#, r#"(eq userName "john")"#),
    (r#"UserName EQ "john""#, r#"(eq UserName "john")"#),
    // RFC 7644 §3.4.3 and §3.5.2 examples used as filters.
    (r#"displayName sw "smith""#, r#"(sw displayName "smith")"#),
    (r#"value eq "2819c223-7f76-453a-919d-413861904646""#, r#"(eq value "2819c223-7f76-453a-919d-413861904646")"#),
    (r#"type eq "work" and value ew "example.com""#, r#"(and (eq type "work") (ew value "example.com"))"#),
    (
        r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#,
        r#"(vp members (eq value "2819c223-7f76-453a-919d-413861904646"))"#,
    ),
    // Precedence: not > and > or, left associativity, grouping.
    ("a pr or b pr and c pr", "(or (pr a) (and (pr b) (pr c)))"),
    ("a pr and b pr or c pr", "(or (and (pr a) (pr b)) (pr c))"),
    ("a pr and b pr and c pr", "(and (and (pr a) (pr b)) (pr c))"),
    ("a pr or b pr or c pr", "(or (or (pr a) (pr b)) (pr c))"),
    ("a pr or (b pr or c pr)", "(or (pr a) (or (pr b) (pr c)))"),
    ("(a pr or b pr) and c pr", "(and (or (pr a) (pr b)) (pr c))"),
    ("not (a pr) and b pr", "(and (not (pr a)) (pr b))"),
    ("not(a pr) OR NOT (b pr)", "(or (not (pr a)) (not (pr b)))"),
    ("not (not (a pr))", "(not (not (pr a)))"),
    ("((((a pr))))", "(pr a)"),
    ("  a pr \t and\nb pr  ", "(and (pr a) (pr b))"),
    ("(a pr)and(b pr)", "(and (pr a) (pr b))"),
    (r#"emails[not (type eq "home")]"#, r#"(vp emails (not (eq type "home")))"#),
    (
        r#"emails[(type eq "work" or type eq "home") and primary eq true]"#,
        r#"(vp emails (and (or (eq type "work") (eq type "home")) (eq primary true)))"#,
    ),
    // Literals.
    ("active eq true", "(eq active true)"),
    ("active eq FALSE", "(eq active false)"),
    ("title eq null", "(eq title null)"),
    ("age gt 21", "(gt age 21)"),
    ("score le -1.5e3", "(le score -1500.0)"),
    ("x eq 0", "(eq x 0)"),
    (
        r#"x eq "tab\there \"quoted\" back\\slash \/ \u00e9 \ud83d\ude00""#,
        r#"(eq x "tab\there \"quoted\" back\\slash / é 😀")"#,
    ),
    (r#"x eq """#, r#"(eq x "")"#),
    (r#"displayName eq "Ünïcødé 名前""#, r#"(eq displayName "Ünïcødé 名前")"#),
    // Paths.
    (EMPLOYEE_NUMBER, r#"(eq urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber "701984")"#),
    (
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value pr",
        "(pr urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value)",
    ),
    ("members.$ref pr", "(pr members.$ref)"),
    ("x-custom_attr2 pr", "(pr x-custom_attr2)"),
];

const EMPLOYEE_NUMBER: &str =
    r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#;

#[test]
fn corpus_is_large_enough() {
    assert!(VALID.len() >= 40, "{} valid filters", VALID.len());
}

#[test]
fn every_valid_filter_parses_to_its_expected_shape() {
    for (input, expected) in VALID {
        let filter = Filter::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(sexpr(&filter), *expected, "input {input:?}");
    }
}

#[test]
fn every_valid_filter_round_trips_through_display() {
    for (input, _) in VALID {
        let filter = Filter::parse(input).unwrap();
        let printed = filter.to_string();
        let reparsed = Filter::parse(&printed).unwrap_or_else(|e| panic!("{input:?} printed as {printed:?}: {e}"));
        assert_eq!(reparsed, filter, "input {input:?} printed as {printed:?}");
        assert_eq!(reparsed.to_string(), printed, "Display is not a fixed point for {input:?}");
    }
}

#[test]
fn urn_prefixed_paths_split_at_the_last_colon() {
    let filter = Filter::parse(EMPLOYEE_NUMBER).unwrap();
    let expected = Filter::Compare {
        path: AttrPath { uri: Some(ENT.to_owned()), name: "employeeNumber".to_owned(), sub_attr: None },
        op: CompareOp::Eq,
        value: CompValue::String("701984".to_owned()),
    };
    assert_eq!(filter, expected);

    let path = AttrPath::parse("urn:ietf:params:scim:schemas:core:2.0:User:name.familyName").unwrap();
    assert_eq!(path.uri.as_deref(), Some("urn:ietf:params:scim:schemas:core:2.0:User"));
    assert_eq!(path.name, "name");
    assert_eq!(path.sub_attr.as_deref(), Some("familyName"));
}

#[test]
fn display_is_canonical() {
    let filter = Filter::parse(r#"userName EQ "a"   AND  NOT(title PR)"#).unwrap();
    assert_eq!(filter.to_string(), r#"userName eq "a" and not (title pr)"#);
    let filter = Filter::parse("a pr and (b pr or c pr)").unwrap();
    assert_eq!(filter.to_string(), "a pr and (b pr or c pr)");
    let filter = Filter::parse("a pr and (b pr and c pr)").unwrap();
    assert_eq!(filter.to_string(), "a pr and (b pr and c pr)");
}

#[test]
fn large_integers_and_floats_are_numbers() {
    let Filter::Compare { value: CompValue::Number(n), .. } = Filter::parse("x eq 18446744073709551615").unwrap()
    else {
        panic!("not a comparison");
    };
    assert_eq!(n.as_u64(), Some(u64::MAX));
    let Filter::Compare { value: CompValue::Number(n), .. } = Filter::parse("x eq -9223372036854775808").unwrap()
    else {
        panic!("not a comparison");
    };
    assert_eq!(n.as_i64(), Some(i64::MIN));
}

#[test]
fn input_at_the_length_limit_parses() {
    let value = "a".repeat(kubehero_scim::filter::MAX_FILTER_LEN - r#"x eq """#.len());
    let input = format!(r#"x eq "{value}""#);
    assert_eq!(input.len(), kubehero_scim::filter::MAX_FILTER_LEN);
    assert!(Filter::parse(&input).is_ok());
}

#[test]
fn nesting_at_the_depth_limit_parses() {
    let depth = kubehero_scim::filter::MAX_DEPTH;
    let input = format!("{}a pr{}", "(".repeat(depth), ")".repeat(depth));
    assert!(Filter::parse(&input).is_ok());
    let input = format!("{}a pr{}", "(".repeat(depth + 1), ")".repeat(depth + 1));
    assert!(Filter::parse(&input).unwrap_err().message.contains("nesting"));
}

/// Found by `cargo fuzz`: numbers must survive printing and parsing again exactly (no last-digit drift).
#[test]
fn numbers_round_trip_exactly() {
    for text in ["loginCount eq -1.5E34", "x[i eq -58e050]", "me5 ew 555555551555555555555", "a gt 0.1"] {
        let f = kubehero_scim::Filter::parse(text).unwrap();
        assert_eq!(kubehero_scim::Filter::parse(&f.to_string()).unwrap(), f, "{text}");
    }
}
