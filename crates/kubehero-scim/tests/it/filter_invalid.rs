//! Invalid filters: each must return a `FilterError` (never panic, never `Ok`).

use kubehero_scim::Filter;

/// (why it is invalid, input)
fn corpus() -> Vec<(&'static str, String)> {
    let mut cases: Vec<(&'static str, String)> = [
        ("empty", ""),
        ("only whitespace", "   \t "),
        ("unbalanced open paren", r#"(userName eq "a""#),
        ("unbalanced close paren", r#"userName eq "a")"#),
        ("empty parens", "()"),
        ("missing value", "userName eq"),
        ("missing value after space", "userName eq "),
        ("missing operator", "userName"),
        ("bad operator", r#"userName is "a""#),
        ("symbolic operator", r#"userName = "a""#),
        ("not without parens", r#"not userName eq "a""#),
        ("not at the end", "not"),
        ("unterminated string", r#"userName eq "abc"#),
        ("unterminated escape", r#"userName eq "abc\"#),
        ("invalid escape", r#"userName eq "\q""#),
        ("short unicode escape", r#"userName eq "\u12""#),
        ("non-hex unicode escape", r#"userName eq "\uZZZZ""#),
        ("lone high surrogate", r#"userName eq "\ud800""#),
        ("lone low surrogate", r#"userName eq "\udc00""#),
        ("high surrogate then non-surrogate", r#"userName eq "\ud800\u0041""#),
        ("raw control character in string", "userName eq \"a\u{1}b\""),
        ("trailing garbage", r#"userName eq "a" garbage"#),
        ("trailing and", "title pr and"),
        ("leading or", "or title pr"),
        ("double operator", "title pr or or title pr"),
        ("single-quoted string", "userName eq 'a'"),
        ("bare word value", "userName eq bjensen"),
        ("number with leading zero", "x eq 01"),
        ("number with trailing dot", "x eq 1."),
        ("number with letters", "x eq 12abc"),
        ("number out of range", "x eq 1e400"),
        ("unclosed value filter", r#"emails[type eq "work""#),
        ("empty value filter", "emails[]"),
        ("nested value filter", r#"emails[type[value eq "x"] pr]"#),
        ("sub-attribute after ] in a filter", r#"emails[type eq "work"].value eq "x""#),
        ("two sub-attributes", "name.given.x pr"),
        ("empty schema URI", ":userName pr"),
        ("attribute name starts with a digit", "1abc pr"),
        ("attribute name with trailing colon", r#"urn:x: eq "a""#),
        ("no space before operator", r#"userName"eq" "a""#),
        ("no space after operator", r#"userName eq"a""#),
        ("pr with a value", r#"title pr "x""#),
        ("bracket without path", r#"[type eq "work"]"#),
    ]
    .into_iter()
    .map(|(why, input)| (why, input.to_owned()))
    .collect();
    cases.push(("depth bomb of 10 000 parens", format!("{}a pr{}", "(".repeat(10_000), ")".repeat(10_000))));
    cases.push(("depth bomb under the length limit", format!("{}a pr{}", "(".repeat(3_000), ")".repeat(3_000))));
    cases.push(("not bomb", format!("{}a pr{}", "not (".repeat(1_000), ")".repeat(1_000))));
    cases.push(("unclosed paren bomb", "(".repeat(5_000)));
    cases.push(("100 KB input", format!(r#"userName eq "{}""#, "a".repeat(100 * 1024))));
    cases.push(("100 KB of and-chain", "a pr and ".repeat(12_000) + "a pr"));
    cases
}

#[test]
fn corpus_is_large_enough() {
    assert!(corpus().len() >= 25, "{} invalid filters", corpus().len());
}

#[test]
fn every_invalid_filter_is_an_error() {
    for (why, input) in corpus() {
        match Filter::parse(&input) {
            Ok(filter) => panic!("{why}: {:?} parsed as {filter}", input.get(..80).unwrap_or(&input)),
            Err(err) => {
                assert!(!err.message.is_empty(), "{why}: empty message");
                assert!(err.position <= input.len(), "{why}: position {} past the end", err.position);
            }
        }
    }
}

#[test]
fn errors_point_at_the_problem() {
    let err = Filter::parse(r#"userName xx "a""#).unwrap_err();
    assert_eq!(err.position, 9);
    assert!(err.message.contains("unknown operator `xx`"), "{}", err.message);

    let err = Filter::parse(r#"title pr and not userName eq "a""#).unwrap_err();
    assert_eq!(err.position, 13);
    assert!(err.message.contains("not"), "{}", err.message);

    let err = Filter::parse(r#"userName eq "abc"#).unwrap_err();
    assert_eq!(err.position, 12);
    assert!(err.message.contains("unterminated"), "{}", err.message);

    let err = Filter::parse(&format!("{}a pr{}", "(".repeat(3_000), ")".repeat(3_000))).unwrap_err();
    assert!(err.message.contains("nesting"), "{}", err.message);

    let err = Filter::parse(&"x".repeat(100 * 1024)).unwrap_err();
    assert!(err.message.contains("limit"), "{}", err.message);

    let err = Filter::parse("").unwrap_err();
    assert_eq!(err.to_string(), "invalid SCIM filter at byte 0: empty filter");
}
