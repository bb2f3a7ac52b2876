//! Project Wycheproof JWS and JWK vectors (tests/vectors/, see its README for provenance).
//!
//! Each group carries a key (`public`, a JWK or a JWK Set; groups with only a `private` key — HMAC groups —
//! use that, which exercises the rule that `oct` keys are never loaded) and compact JWS strings. The vectors
//! are raw JWS, not JWTs, so they go through [`verify_jws_with_keys`] (header + signature only).
//!
//! - `"invalid"` vectors must be rejected.
//! - `"valid"` vectors must verify, unless this verifier's stricter policy refuses them. Each such refusal
//!   must be one of these documented reasons, and the reason must actually apply to the vector:
//!   1. the header `alg` is not on the allow-list (HS*, PS*, ES512 — RFC 8725 §3.1, issue #2);
//!   2. a part is empty (Wycheproof's `emptyPayload`: a JWT never has an empty payload, and the parser refuses
//!      empty parts outright);
//!   3. the string contains a character outside the base64url alphabet (Wycheproof marks two such HMAC
//!      vectors valid because lenient decoders skip the character; this parser is strict, RFC 7515 §2).
//!
//! Every vector is also run through the full JWT pipeline ([`verify_with_keys`]), which must reject all of
//! them (the payloads are not claim sets from our issuer). Nothing may panic.

use crate::support::*;
use kubehero_authn::{verify_jws_with_keys, verify_with_keys, Alg, AuthnError, JwsHeader, KeySet};
use serde_json::Value;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// The key set a group's vectors are verified with, and the reasons keys were skipped.
fn group_keys(group: &Value) -> (KeySet, Vec<String>) {
    let key = match group.get("public") {
        Some(v) if v.is_object() => v,
        _ => match group.get("private") {
            Some(v) if v.is_object() => v,
            _ => return (KeySet::empty(), vec![]),
        },
    };
    let result = catch_unwind(|| {
        if key.get("keys").is_some() {
            KeySet::from_jwks_json(key.to_string().as_bytes()).unwrap()
        } else {
            KeySet::from_jwk_values(std::slice::from_ref(key))
        }
    });
    result.unwrap_or_else(|_| panic!("KeySet parsing panicked on {}", group["comment"]))
}

fn verify_jws(jws: &str, keys: &KeySet) -> Result<(JwsHeader, Vec<u8>), AuthnError> {
    catch_unwind(AssertUnwindSafe(|| verify_jws_with_keys(jws, keys))).unwrap_or_else(|_| panic!("panic on {jws:?}"))
}

fn is_b64url_or_dot(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

/// The header's `alg`, decoded leniently (for classifying a refusal, never for verifying).
fn header_alg(jws: &str) -> Option<String> {
    let h = jws.split('.').next()?;
    let bytes = kubehero_authn::jws::b64_decode(h).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_string)
}

/// Why the stricter policy may refuse a vector Wycheproof calls valid; `None` if it must verify.
fn policy_refusal(jws: &str, err: &AuthnError) -> Result<&'static str, String> {
    match err {
        AuthnError::UnsupportedAlgorithm(a) => match header_alg(jws) {
            Some(alg) if Alg::from_name(&alg).is_none() && *a == alg => Ok("alg not on the allow-list"),
            other => Err(format!("UnsupportedAlgorithm({a}) but the header alg is {other:?}")),
        },
        AuthnError::Malformed("empty part") if jws.split('.').any(str::is_empty) => Ok("empty part"),
        AuthnError::Malformed("invalid base64url") if !jws.chars().all(is_b64url_or_dot) => {
            Ok("non-base64url character (strict decoding)")
        }
        other => Err(format!("{other:?} is not a documented policy refusal")),
    }
}

struct Tally {
    valid_ok: usize,
    valid_refused: BTreeMap<&'static str, usize>,
    invalid_rejected: BTreeMap<&'static str, usize>,
}

fn run_file(name: &str) -> Tally {
    let doc = load(name);
    let mut tally = Tally { valid_ok: 0, valid_refused: BTreeMap::new(), invalid_rejected: BTreeMap::new() };
    let mut failures = Vec::new();
    let mut count = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let (keys, _) = group_keys(group);
        for t in group["tests"].as_array().unwrap() {
            count += 1;
            let id =
                format!("{name} tcId {} ({}, {})", t["tcId"], t["comment"].as_str().unwrap_or(""), group["comment"]);
            let jws = t["jws"].as_str().unwrap();
            let r = verify_jws(jws, &keys);
            match (t["result"].as_str().unwrap(), &r) {
                ("valid", Ok(_)) => tally.valid_ok += 1,
                ("valid", Err(e)) => match policy_refusal(jws, e) {
                    Ok(reason) => *tally.valid_refused.entry(reason).or_default() += 1,
                    Err(why) => failures.push(format!("{id}: valid vector refused: {why}")),
                },
                ("invalid", Ok(_)) => failures.push(format!("{id}: invalid vector ACCEPTED")),
                ("invalid", Err(e)) => *tally.invalid_rejected.entry(e.reason()).or_default() += 1,
                (other, _) => failures.push(format!("{id}: unknown result {other:?}")),
            }
            // The full JWT pipeline rejects everything here too, without panicking.
            let jwt = catch_unwind(AssertUnwindSafe(|| verify_with_keys(jws, &cfg(), &keys, NOW)));
            match jwt {
                Err(_) => failures.push(format!("{id}: verify_with_keys panicked")),
                Ok(Ok(_)) => failures.push(format!("{id}: accepted as a JWT")),
                Ok(Err(_)) => {}
            }
        }
    }
    assert_eq!(count, doc["numberOfTests"].as_u64().unwrap() as usize, "{name}: every vector ran");
    assert!(failures.is_empty(), "{name}: {} failures:\n{}", failures.len(), failures.join("\n"));
    eprintln!(
        "{name}: {count} vectors; valid verified {}, valid refused by policy {:?}, invalid rejected {:?}",
        tally.valid_ok, tally.valid_refused, tally.invalid_rejected
    );
    tally
}

#[test]
fn json_web_signature_vectors() {
    let t = run_file("json_web_signature_test.json");
    // Not vacuous: the RS256/RS384/RS512/ES256 valid vectors (incl. RFC 7520 figure 13) really verify.
    assert!(t.valid_ok >= 10, "only {} valid vectors verified", t.valid_ok);
    assert!(t.invalid_rejected.get("bad_signature").copied().unwrap_or(0) >= 100, "{:?}", t.invalid_rejected);
}

#[test]
fn json_web_key_vectors() {
    let t = run_file("json_web_key_test.json");
    assert!(t.valid_ok >= 1, "the rs256 keyset vector verifies");
}

/// JWK vectors whose key itself is the defect: the key must be skipped when the set is parsed (so nothing
/// can ever verify against it), and the reason must name the defect.
#[test]
fn invalid_jwk_keys_are_skipped() {
    let doc = load("json_web_key_test.json");
    let expected: &[(&str, &str)] = &[
        ("jws_rsa_roca_key", "ROCA"),
        ("keysize_too_small", "below 2048"),
        ("exponentOne", "exponent"),
        // HMAC (`oct`) keys carrying an `alg` are refused for the alg before the kty is looked at.
        ("HS256", "unsupported alg \"HS256\""),
        ("HS384", "unsupported alg \"HS384\""),
        ("HS512", "unsupported alg \"HS512\""),
        ("wrong_algorithm", "unsupported alg \"ES521\""),
        ("invalid_algorithm", "unsupported alg \"ES224\""),
        ("invalid_use", "use"),
        ("wrong_curve", "alg does not match crv P-384"),
        ("wrong_kty", "alg does not match kty RSA"),
        ("invalid_aes_gcm_key", "A256GCM"),
        ("invalid_aes_kw_key", "A256KW"),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for group in doc["testGroups"].as_array().unwrap() {
        let comment = group["comment"].as_str().unwrap();
        let (keys, skipped) = group_keys(group);
        if let Some((_, why)) = expected.iter().find(|(c, _)| *c == comment) {
            seen.insert(comment);
            assert!(keys.is_empty(), "{comment}: the invalid key was loaded");
            assert!(skipped.iter().any(|r| r.contains(why)), "{comment}: {skipped:?} should mention {why:?}");
        }
        if comment == "rs256" && group["tests"][0]["comment"] == "rejectsWrongUse" {
            seen.insert("rs256 rejectsWrongUse");
            assert!(keys.is_empty() && skipped[0].contains("use"), "{skipped:?}");
        }
        if comment == "invalid_point" {
            // Right-sized coordinates off the curve: kept at parse time, refused by ring at verification.
            seen.insert(comment);
            let jws = group["tests"][0]["jws"].as_str().unwrap();
            assert_eq!(verify_jws(jws, &keys).unwrap_err(), AuthnError::BadSignature);
        }
        if comment == "jws_duplicate_kid" || comment == "jws_mixedSymmetryKeyset" {
            // HMAC keys in these sets are skipped; the tokens are HS256 and refused by alg.
            seen.insert(comment);
            assert!(skipped.iter().any(|r| r.contains("oct") || r.contains("HS256")), "{skipped:?}");
            assert!(!keys.contains_kid("kid-aes-sign"), "the HMAC key was loaded");
        }
    }
    assert_eq!(seen.len(), expected.len() + 4, "every listed group was found: {seen:?}");
}

/// Wycheproof's JWS groups with per-key `use`/`key_ops` (RFC 7517 §4.2–4.3): an encryption key is never a
/// verification key.
#[test]
fn jws_wrong_use_and_key_ops_keys_are_skipped() {
    let doc = load("json_web_signature_test.json");
    let mut seen = 0;
    for group in doc["testGroups"].as_array().unwrap() {
        let t0 = &group["tests"][0]["comment"];
        if t0 == "rejectWrongUse" || t0 == "rejectWrongKeyOps" {
            seen += 1;
            let (keys, skipped) = group_keys(group);
            assert!(keys.is_empty(), "{}", group["comment"]);
            assert!(skipped[0].contains("use") || skipped[0].contains("key_ops"), "{skipped:?}");
        }
    }
    assert_eq!(seen, 4);
}
