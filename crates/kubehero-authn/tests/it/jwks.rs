//! `KeySet::from_jwks_json`: unusable or unsafe keys are skipped one by one with a reason, usable keys are
//! decoded once and then reused, and malformed documents fail as a whole.

use crate::support::*;
use kubehero_authn::jwk::MAX_KEYS;
use kubehero_authn::{verify_jws_with_keys, verify_with_keys, AuthnError, KeySet};
use serde_json::{json, Value};

fn parse(keys: Value) -> (KeySet, Vec<String>) {
    KeySet::from_jwks_json(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
}

/// Parses a one-key set and returns the skip reason, or `None` if the key was kept.
fn skip_reason(key: Value) -> Option<String> {
    let (set, skipped) = parse(json!([key]));
    assert_eq!(set.len() + skipped.len(), 1);
    skipped.into_iter().next()
}

fn rsa_jwk() -> Value {
    jwk(&keys().rsa, Some("rsa"), None)
}

fn ec_jwk() -> Value {
    jwk(&keys().ec256, Some("ec"), None)
}

fn patched(mut base: Value, name: &str, v: Value) -> Value {
    base[name] = v;
    base
}

/// A synthetic odd modulus of exactly `bits` bits (not a real key; parsing does not need one).
fn modulus(bits: usize) -> Vec<u8> {
    let len = bits.div_ceil(8);
    let mut n: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(151).wrapping_add(89)).collect();
    let top_bits = bits - (len - 1) * 8;
    n[0] = (n[0] | 0x80) >> (8 - top_bits);
    n[0] |= 1 << (top_bits - 1);
    *n.last_mut().unwrap() |= 1;
    n
}

#[test]
fn usable_keys_are_kept() {
    assert_eq!(skip_reason(rsa_jwk()), None);
    assert_eq!(skip_reason(ec_jwk()), None);
    assert_eq!(skip_reason(jwk(&keys().ec384, None, Some("ES384"))), None);
    assert_eq!(skip_reason(patched(rsa_jwk(), "use", json!("sig"))), None);
    assert_eq!(skip_reason(patched(rsa_jwk(), "key_ops", json!(["verify"]))), None);
    assert_eq!(skip_reason(patched(rsa_jwk(), "key_ops", json!(["sign", "verify"]))), None);
    assert_eq!(skip_reason(patched(rsa_jwk(), "x5c", json!(["MIIB"]))), None, "x5c ignored, never used");
    assert_eq!(skip_reason(patched(rsa_jwk(), "x5u", json!("https://evil.example/c"))), None, "x5u ignored");
    for alg in ["RS256", "RS384", "RS512"] {
        assert_eq!(skip_reason(patched(rsa_jwk(), "alg", json!(alg))), None, "{alg}");
    }
    assert_eq!(skip_reason(json!({"kty":"RSA","n":b64(modulus(2048)),"e":"AQAB"})), None);
    assert_eq!(skip_reason(json!({"kty":"RSA","n":b64(modulus(8192)),"e":"AQAB"})), None);
    // Leading zero bytes do not count towards the size.
    let mut n = vec![0, 0];
    n.extend(modulus(2048));
    assert_eq!(skip_reason(json!({"kty":"RSA","n":b64(n),"e":"AAEAAQ"})), None);
    // Private parts of a key are ignored, not used.
    assert_eq!(skip_reason(patched(ec_jwk(), "d", json!("AAAA"))), None);
}

#[test]
fn unsafe_or_unusable_keys_are_skipped_with_a_reason() {
    let k = keys();
    let weak = json!({"kty":"RSA","kid":"weak","n":b64(&k.weak_rsa_n),"e":"AQAB"});
    let cases: Vec<(&str, Value, &str)> = vec![
        ("oct", json!({"kty":"oct","k":"c2VjcmV0","kid":"h"}), "oct"),
        ("oct with alg HS256", json!({"kty":"oct","k":"c2VjcmV0","alg":"HS256"}), "HS256"),
        ("1024-bit RSA", weak, "1024 bits is below 2048"),
        ("2047-bit RSA", json!({"kty":"RSA","n":b64(modulus(2047)),"e":"AQAB"}), "below 2048"),
        ("8200-bit RSA", json!({"kty":"RSA","n":b64(modulus(8200)),"e":"AQAB"}), "above 8192"),
        ("even modulus", json!({"kty":"RSA","n":b64([&modulus(2048)[..255], &[2]].concat()),"e":"AQAB"}), "even"),
        ("exponent 1", patched(rsa_jwk(), "e", json!("AQ")), "exponent"),
        ("exponent 2", patched(rsa_jwk(), "e", json!("Ag")), "exponent"),
        ("exponent empty", patched(rsa_jwk(), "e", json!("")), "exponent"),
        ("exponent 5 bytes", patched(rsa_jwk(), "e", json!("AQAAAAE")), "exponent"),
        ("RSA missing n", json!({"kty":"RSA","e":"AQAB"}), "missing n"),
        ("RSA n not base64url", patched(rsa_jwk(), "n", json!("a+b/")), "not base64url"),
        ("RSA n a number", patched(rsa_jwk(), "n", json!(12345)), "not a string"),
        ("OKP", json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}), "kty"),
        ("kty missing", json!({"n":"AQAB","e":"AQAB"}), "missing kty"),
        ("kty lower-case", patched(rsa_jwk(), "kty", json!("rsa")), "kty"),
        ("P-521", patched(ec_jwk(), "crv", json!("P-521")), "curve"),
        ("secp256k1", patched(ec_jwk(), "crv", json!("secp256k1")), "curve"),
        ("P-384 label on P-256 coordinates", patched(ec_jwk(), "crv", json!("P-384")), "48 bytes"),
        ("EC missing crv", json!({"kty":"EC","x":"AA","y":"AA"}), "missing crv"),
        ("EC short x", patched(ec_jwk(), "x", json!(b64([1u8; 31]))), "32 bytes"),
        ("EC missing y", json!({"kty":"EC","crv":"P-256","x":b64([1u8; 32])}), "missing y"),
        ("use enc", patched(rsa_jwk(), "use", json!("enc")), "use"),
        ("use SIG", patched(rsa_jwk(), "use", json!("SIG")), "use"),
        ("use not a string", patched(rsa_jwk(), "use", json!(["sig"])), "use"),
        ("key_ops without verify", patched(rsa_jwk(), "key_ops", json!(["encrypt"])), "key_ops"),
        ("key_ops not an array", patched(rsa_jwk(), "key_ops", json!("verify")), "key_ops"),
        ("RSA key with alg ES256", patched(rsa_jwk(), "alg", json!("ES256")), "alg does not match"),
        ("P-256 key with alg ES384", patched(ec_jwk(), "alg", json!("ES384")), "alg does not match"),
        ("P-384 key with alg ES256", jwk(&k.ec384, None, Some("ES256")), "alg does not match"),
        ("EC key with alg RS256", patched(ec_jwk(), "alg", json!("RS256")), "alg does not match"),
        ("alg PS256", patched(rsa_jwk(), "alg", json!("PS256")), "unsupported alg"),
        ("alg HS256 on RSA", patched(rsa_jwk(), "alg", json!("HS256")), "unsupported alg"),
        ("alg RSA-OAEP", patched(rsa_jwk(), "alg", json!("RSA-OAEP")), "unsupported alg"),
        ("kid not a string", patched(rsa_jwk(), "kid", json!(1)), "kid"),
    ];
    for (name, key, why) in cases {
        let reason = skip_reason(key).unwrap_or_else(|| panic!("{name}: key was kept"));
        assert!(reason.contains(why), "{name}: reason {reason:?} should mention {why:?}");
    }
    // Non-object entries are skipped, not fatal.
    for entry in [json!("a string"), json!(null), json!([rsa_jwk()]), json!(1)] {
        assert!(skip_reason(entry.clone()).unwrap().contains("not a JSON object"), "{entry}");
    }
}

#[test]
fn skip_reasons_never_contain_key_material() {
    let k = keys();
    let n = b64(&k.weak_rsa_n);
    let (set, skipped) = parse(json!([
        {"kty":"RSA","kid":"weak\u{7}","n":n,"e":"AQAB"},
        {"kty":"oct","k":"c3VwZXItc2VjcmV0LWhtYWMta2V5"},
    ]));
    assert!(set.is_empty());
    for r in &skipped {
        assert!(!r.contains(&n[..16]) && !r.contains("c3VwZXItc2Vj"), "{r}");
        assert!(r.chars().all(|c| c.is_ascii_graphic() || c == ' '), "sanitized: {r:?}");
    }
}

#[test]
fn one_bad_key_never_fails_the_set() {
    let k = keys();
    let (set, skipped) = parse(json!([
        {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
        jwk(&k.rsa, Some("rsa"), None),
        {"kty":"RSA","kid":"weak","n":b64(&k.weak_rsa_n),"e":"AQAB"},
        patched(jwk(&k.ec256, Some("enc"), None), "use", json!("enc")),
        jwk(&k.ec256, Some("ec256"), Some("ES256")),
        {"kty":"OKP","crv":"Ed25519","x":"AA","kid":"ed"},
    ]));
    assert_eq!(set.len(), 2, "{skipped:?}");
    assert_eq!(skipped.len(), 4);
    assert!(set.contains_kid("rsa") && set.contains_kid("ec256"));
    for kid in ["hmac", "weak", "enc", "ed"] {
        assert!(!set.contains_kid(kid), "{kid}");
    }
    let kids: Vec<_> = set.keys().iter().map(|k| k.kid()).collect();
    assert_eq!(kids, [Some("rsa"), Some("ec256")], "order preserved");
    // A token naming a skipped key's kid fails as an unknown key even when signed by the real key.
    let t = sign(&k.ec256, &hdr("ES256", "enc"), &claims());
    assert_eq!(verify_with_keys(&t, &cfg(), &set, NOW), Err(AuthnError::UnknownKey));
}

#[test]
fn duplicate_kid_keeps_the_first_key() {
    let k = keys();
    let (set, skipped) = parse(json!([jwk(&k.rsa, Some("dup"), None), jwk(&k.rsa_other, Some("dup"), None)]));
    assert_eq!(set.len(), 1);
    assert!(skipped[0].contains("duplicate kid"), "{skipped:?}");
    assert!(verify_with_keys(&sign(&k.rsa, &hdr("RS256", "dup"), &claims()), &cfg(), &set, NOW).is_ok());
    assert_eq!(
        verify_with_keys(&sign(&k.rsa_other, &hdr("RS256", "dup"), &claims()), &cfg(), &set, NOW),
        Err(AuthnError::BadSignature)
    );
}

#[test]
fn key_count_is_capped() {
    let keys_json: Vec<Value> = (0..MAX_KEYS + 10).map(|i| jwk(&keys().ec256, Some(&format!("k{i}")), None)).collect();
    let (set, skipped) = parse(Value::Array(keys_json));
    assert_eq!(set.len(), MAX_KEYS);
    assert_eq!(skipped.len(), 10);
    assert!(skipped.iter().all(|r| r.contains("more than")));
}

#[test]
fn parsed_once_then_reused() {
    // One parse yields decoded keys that verify every algorithm, any number of times, from clones too;
    // verification never goes back to the JWK JSON.
    let set = keyset();
    let clone = set.clone();
    let k = keys();
    let tokens = [
        sign(&k.rsa, &hdr("RS256", "rsa"), &claims()),
        sign(&k.rsa, &hdr("RS384", "rsa"), &claims()),
        sign(&k.rsa_other, &hdr("RS512", "rsa-rs512"), &claims()),
        sign(&k.ec256, &hdr("ES256", "ec256"), &claims()),
        sign(&k.ec384, &hdr("ES384", "ec384"), &claims()),
    ];
    for _ in 0..20 {
        for t in &tokens {
            assert!(verify_with_keys(t, &cfg(), &set, NOW).is_ok());
            assert!(verify_jws_with_keys(t, &clone).is_ok());
        }
    }
    // from_jwk_values on already-parsed JSON gives the same set.
    let doc = json!([jwk(&k.rsa, Some("rsa"), None), {"kty":"oct","k":"AA"}]);
    let (a, ra) = KeySet::from_jwk_values(doc.as_array().unwrap());
    let (b, rb) = parse(doc);
    assert_eq!((a.len(), ra.len()), (b.len(), rb.len()));
    assert!(KeySet::empty().is_empty());
}

#[test]
fn invalid_ec_point_is_kept_but_never_verifies() {
    // Coordinates of the right size that are not on the curve: ring refuses the point at verification.
    let mut bad = jwk(&keys().ec256, Some("ec"), None);
    let mut y = kubehero_authn::jws::b64_decode(bad["y"].as_str().unwrap()).unwrap();
    y[31] ^= 1;
    bad["y"] = json!(b64(y));
    let (set, _) = parse(json!([bad]));
    let t = sign(&keys().ec256, &hdr("ES256", "ec"), &claims());
    assert_eq!(verify_with_keys(&t, &cfg(), &set, NOW), Err(AuthnError::BadSignature));
}

#[test]
fn malformed_documents_fail_as_a_whole() {
    let good_key = rsa_jwk().to_string();
    let docs: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"   ".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        format!("[{good_key}]").into_bytes(),
        b"{}".to_vec(),
        b"{\"keys\":{}}".to_vec(),
        b"{\"keys\":null}".to_vec(),
        b"{\"keys\":\"\"}".to_vec(),
        b"{\"Keys\":[]}".to_vec(),
        b"{\"keys\":[],\"keys\":[]}".to_vec(),
        // Strict JSON applies at every depth: a duplicate member inside one key fails the document.
        format!("{{\"keys\":[{}]}}", good_key.replacen('{', "{\"kid\":\"a\",", 1).replacen("}", ",\"kid\":\"b\"}", 1))
            .into_bytes(),
        format!("{{\"keys\":[{good_key}]}} trailing").into_bytes(),
        format!("{{\"keys\":[{good_key}]").into_bytes(),
        b"{\"keys\":[\xff]}".to_vec(),
        format!("{{\"keys\":{}{}}}", "[".repeat(100), "]".repeat(100)).into_bytes(),
        b"\xef\xbb\xbf{\"keys\":[]}".to_vec(),
    ];
    for doc in docs {
        let r = KeySet::from_jwks_json(&doc);
        assert!(matches!(r, Err(AuthnError::Malformed(_))), "{:?}: {r:?}", String::from_utf8_lossy(&doc));
    }
    assert!(KeySet::from_jwks_json(b"{\"keys\":[]}").unwrap().0.is_empty());
    // Extra top-level members are fine.
    let ok = format!("{{\"keys\":[{good_key}],\"other\":1}}");
    assert_eq!(KeySet::from_jwks_json(ok.as_bytes()).unwrap().0.len(), 1);
}
