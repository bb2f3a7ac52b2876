//! A seeded never-panics loop: 20 000 pseudo-random byte strings plus mutations of the valid corpus go through
//! the filter parser, the PATCH path parser, `Display` and the evaluator under `catch_unwind`.

use std::panic::catch_unwind;

use kubehero_scim::{matches, Filter, PatchPath};
use serde_json::json;

use crate::filter_valid::VALID;

/// xorshift64* (Vigna); deterministic, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
}

/// Bytes a filter is made of, so random strings reach deep into the grammar; plus some that are not.
const ALPHABET: &[u8] = b"()[]\"\\ .:$-_aenotrpwqsglcu019eEu\t\n\x00\x7f\xc3\xa9\xff";
const WORDS: &[&str] = &[" and ", " or ", "not (", " eq ", " pr", "\"", "\\u", "\\ud800", "[", "]", ")", "(", ".", ":"];

fn random_input(rng: &mut XorShift) -> String {
    let len = rng.below(64);
    let mut bytes = Vec::with_capacity(len);
    for _ in 0..len {
        if rng.below(4) == 0 {
            bytes.push(u8::try_from(rng.next() & 0xff).unwrap_or(0));
        } else {
            bytes.push(ALPHABET[rng.below(ALPHABET.len())]);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn mutate(rng: &mut XorShift, input: &str) -> String {
    let mut chars: Vec<char> = input.chars().collect();
    for _ in 0..=rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(5) {
            0 if !chars.is_empty() => {
                chars.remove(at.min(chars.len() - 1));
            }
            1 => chars.insert(at, char::from(ALPHABET[rng.below(ALPHABET.len())])),
            2 => {
                let word = WORDS[rng.below(WORDS.len())];
                for (i, c) in word.chars().enumerate() {
                    chars.insert(at + i, c);
                }
            }
            3 => chars.truncate(at),
            _ => {
                let tail: Vec<char> = chars.get(at..).unwrap_or(&[]).to_vec();
                chars.extend(tail);
            }
        }
    }
    chars.into_iter().collect()
}

fn exercise(input: &str) -> (bool, bool) {
    let resource = json!({"userName": "a", "emails": [{"value": "x", "type": "work"}], "name": {"givenName": "b"}});
    let filter_ok = match Filter::parse(input) {
        Ok(filter) => {
            let printed = filter.to_string();
            assert_eq!(Filter::parse(&printed).as_ref(), Ok(&filter), "round trip of {input:?} via {printed:?}");
            let _ = matches(&filter, &resource);
            true
        }
        Err(err) => {
            assert!(err.position <= input.len().max(kubehero_scim::filter::MAX_FILTER_LEN));
            false
        }
    };
    let path_ok = match PatchPath::parse(input) {
        Ok(path) => {
            assert_eq!(PatchPath::parse(&path.to_string()).as_ref(), Ok(&path), "round trip of path {input:?}");
            true
        }
        Err(_) => false,
    };
    (filter_ok, path_ok)
}

#[test]
fn parsers_never_panic_on_random_or_mutated_input() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut inputs: Vec<String> = (0..20_000).map(|_| random_input(&mut rng)).collect();
    for round in 0..100 {
        for (valid, _) in VALID {
            if round == 0 {
                inputs.push((*valid).to_owned());
            }
            inputs.push(mutate(&mut rng, valid));
        }
    }
    let mut parsed = 0usize;
    for input in &inputs {
        let outcome = catch_unwind(|| exercise(input));
        match outcome {
            Ok((filter_ok, _)) => parsed += usize::from(filter_ok),
            Err(_) => panic!("panicked on {input:?}"),
        }
    }
    // The loop is only worth running if some mutants still parse.
    assert!(parsed > VALID.len(), "only {parsed} of {} inputs parsed", inputs.len());
}

/// Vocabulary for generated PATCH bodies and resources: real keys, paths and values, in odd cases.
const KEYS: &[&str] = &[
    "schemas",
    "Operations",
    "op",
    "path",
    "value",
    "members",
    "Members",
    "emails",
    "userName",
    "displayName",
    "active",
    "name",
    "givenName",
    "primary",
    "type",
    "id",
    "meta",
    "groups",
    "$ref",
    "display",
    "manager",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
    "name.givenName",
    "emails[type eq \"work\"].value",
    "externalId",
];
const PATHS: &[&str] = &[
    "members",
    "members[value eq \"u1\"]",
    "members[value eq \"u1\"].display",
    "emails",
    "emails[type eq \"work\"]",
    "emails[type eq \"work\"].value",
    "emails[primary eq true].primary",
    "emails.value",
    "name",
    "name.givenName",
    "userName",
    "displayName",
    "active",
    "id",
    "meta",
    "groups",
    "externalId",
    "title[value eq \"x\"]",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
    "urn:ietf:params:scim:schemas:core:2.0:User:emails[value co \"@\"].type",
];
const OPS: &[&str] = &["add", "Add", "remove", "Remove", "replace", "REPLACE", "move", ""];
const STRINGS: &[&str] = &["True", "false", "", "work", "User", "Group", "u1", "u2", "x@y.z", "urn:x"];

fn pick<'a>(rng: &mut XorShift, from: &[&'a str]) -> &'a str {
    from[rng.below(from.len())]
}

fn random_json(rng: &mut XorShift, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    match rng.below(if depth >= 3 { 5 } else { 9 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => json!(rng.next() % 1000),
        3 => Value::String(pick(rng, STRINGS).to_owned()),
        4 => Value::String(random_input(rng)),
        5 | 6 => Value::Array((0..rng.below(4)).map(|_| random_json(rng, depth + 1)).collect()),
        _ => {
            let mut map = serde_json::Map::new();
            for _ in 0..rng.below(4) {
                let key = pick(rng, KEYS).to_owned();
                map.insert(key, random_json(rng, depth + 1));
            }
            Value::Object(map)
        }
    }
}

fn random_patch(rng: &mut XorShift) -> serde_json::Value {
    let operations: Vec<serde_json::Value> = (0..=rng.below(3))
        .map(|_| {
            let mut op = serde_json::Map::new();
            op.insert("op".to_owned(), json!(pick(rng, OPS)));
            match rng.below(4) {
                0 => {}
                1 => {
                    let path = pick(rng, PATHS);
                    op.insert("path".to_owned(), json!(mutate(rng, path)));
                }
                _ => {
                    op.insert("path".to_owned(), json!(pick(rng, PATHS)));
                }
            }
            if rng.below(5) != 0 {
                op.insert("value".to_owned(), random_json(rng, 1));
            }
            serde_json::Value::Object(op)
        })
        .collect();
    let mut body = json!({ "schemas": [kubehero_scim::PATCH_OP], "Operations": operations });
    if rng.below(10) == 0 {
        body = random_json(rng, 0);
    }
    body
}

fn user_resource() -> serde_json::Value {
    json!({
        "schemas": [kubehero_scim::USER_SCHEMA, kubehero_scim::ENTERPRISE_USER_SCHEMA],
        "id": "u", "userName": "a", "active": true, "name": { "givenName": "b" },
        "emails": [{ "value": "x@y.z", "type": "work", "primary": true }, { "value": "h@y.z", "type": "home" }],
        "groups": [{ "value": "g" }],
        kubehero_scim::ENTERPRISE_USER_SCHEMA: { "department": "d", "manager": { "value": "m" } }
    })
}

fn group_resource() -> serde_json::Value {
    json!({
        "schemas": [kubehero_scim::GROUP_SCHEMA], "id": "g", "displayName": "G",
        "members": [{ "value": "u1" }, { "value": "u2", "type": "User" }]
    })
}

fn exercise_patch(body: &serde_json::Value) {
    use kubehero_scim::{apply_patch, member_only_ops, validate, ResourceKind};
    for (kind, resource) in [(ResourceKind::User, user_resource()), (ResourceKind::Group, group_resource())] {
        let mut patched = resource.clone();
        match apply_patch(kind, &mut patched, body) {
            // Whatever a PATCH produces is a valid resource that keeps the server-managed `id`.
            Ok(()) => {
                assert_eq!(patched["id"], resource["id"]);
                let mut stripped = patched.clone();
                if let Some(map) = stripped.as_object_mut() {
                    map.remove("id");
                    map.remove("groups");
                }
                assert!(validate(kind, stripped).is_ok(), "PATCH result does not validate: {patched}");
            }
            Err(err) => {
                assert_eq!(patched, resource, "failed PATCH changed the resource");
                assert!(err.status == 400, "{err}");
            }
        }
        let _ = validate(kind, body.clone());
    }
    let _ = member_only_ops(body);
}

#[test]
fn patch_and_validate_never_panic_on_random_bodies() {
    let mut rng = XorShift(0x0DDB_1A5E_5BAD_5EED);
    let mut applied = 0usize;
    for _ in 0..6_000 {
        let body = random_patch(&mut rng);
        if catch_unwind(|| exercise_patch(&body)).is_err() {
            panic!("panicked on {body}");
        }
        let mut user = user_resource();
        applied += usize::from(kubehero_scim::apply_patch(kubehero_scim::ResourceKind::User, &mut user, &body).is_ok());
    }
    assert!(applied > 100, "only {applied} random PATCH bodies applied");
}

#[test]
fn patch_never_panics_on_mutated_client_bodies() {
    let corpus = [
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}"#,
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}"#,
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove","path":"members[value eq \"u1\"]"}]}"#,
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Remove","path":"members","value":[{"value":"u1"}]}]}"#,
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"members","value":[{"$ref":null,"value":"u3"}]}]}"#,
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"emails[type eq \"work\"].value","value":"a@b.c"},{"op":"Replace","path":"name.familyName","value":"F"}]}"#,
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":"m2"}]}"#,
        r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"name.givenName":"G","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"D"}}}]}"#,
    ];
    let mut rng = XorShift(0x5EED_0FC0_FFEE);
    let mut parsed = 0usize;
    for round in 0..400 {
        for text in corpus {
            let mutated = if round == 0 { text.to_owned() } else { mutate(&mut rng, text) };
            let Ok(body) = serde_json::from_str::<serde_json::Value>(&mutated) else { continue };
            parsed += 1;
            if catch_unwind(|| exercise_patch(&body)).is_err() {
                panic!("panicked on {mutated}");
            }
        }
    }
    assert!(parsed > corpus.len() * 10, "only {parsed} mutated bodies parsed as JSON");
}

#[test]
fn projection_never_panics_on_random_attribute_lists() {
    use kubehero_scim::{Projection, ResourceKind};
    let valid = [
        "userName,emails.value",
        "name.givenName, urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User,members,meta.version",
    ];
    let mut rng = XorShift(0x00A7_712B_07E5);
    let mut accepted = 0usize;
    for i in 0..10_000 {
        let list = match i % 3 {
            0 => random_input(&mut rng),
            1 => {
                let seed = valid[rng.below(valid.len())];
                mutate(&mut rng, seed)
            }
            _ => (0..rng.below(5)).map(|_| pick(&mut rng, PATHS)).collect::<Vec<_>>().join(","),
        };
        let outcome = catch_unwind(|| {
            let mut ok = 0;
            for (attributes, excluded) in [(Some(list.as_str()), None), (None, Some(list.as_str()))] {
                if let Ok(projection) = Projection::from_query(attributes, excluded) {
                    ok += 1;
                    for (kind, resource) in
                        [(ResourceKind::User, user_resource()), (ResourceKind::Group, group_resource())]
                    {
                        let out = projection.apply(kind, &resource);
                        assert_eq!(out["id"], resource["id"], "`id` is always returned");
                    }
                }
            }
            ok
        });
        match outcome {
            Ok(ok) => accepted += ok,
            Err(_) => panic!("panicked on {list:?}"),
        }
    }
    assert!(accepted > 1000, "only {accepted} attribute lists accepted");
}
