//! Static API keys (`KUBEHERO_API_KEYS`), generated keys, and the verified-token cache.

use crate::support::*;
use kubehero_authn::{
    api_key_id, generate_api_key, looks_like_jwt, sha256_hex, verify_with_keys, AuthnError, StaticApiKeys, TokenCache,
    VerifiedToken, API_KEY_PREFIX,
};
use kubehero_core::Role;
use serde_json::json;
use std::sync::Arc;

const CI: &str = "ci-token-0123456789abcdef";
const OPS: &str = "ops-token-0123456789abcdef";

#[test]
fn parse_and_lookup() {
    let keys = StaticApiKeys::parse(&format!(" {CI} , {OPS}:admin, audit-token-0123456789:auditor ,")).unwrap();
    assert_eq!(keys.len(), 3);
    let m = keys.lookup(CI).unwrap();
    assert_eq!(m.role, Role::Viewer, "default role is viewer");
    assert_eq!(m.id, sha256_hex(CI)[..16], "sub = first 16 hex chars of SHA-256");
    assert_eq!(m.id, api_key_id(CI));
    assert_eq!(m.id.len(), 16);
    assert!(m.id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(keys.lookup(OPS).unwrap().role, Role::Admin);
    assert_eq!(keys.lookup("audit-token-0123456789").unwrap().role, Role::Auditor);
    for role in Role::ALL {
        let k = StaticApiKeys::parse(&format!("{CI}:{}", role.as_str())).unwrap();
        assert_eq!(k.lookup(CI).unwrap().role, role);
    }
    assert!(StaticApiKeys::parse("").unwrap().is_empty());
    assert!(StaticApiKeys::parse(" , ,").unwrap().is_empty());
}

#[test]
fn lookup_requires_the_exact_key() {
    let keys = StaticApiKeys::parse(&format!("{CI},{OPS}:owner")).unwrap();
    let mut near_misses = vec![
        String::new(),
        format!("{OPS}:owner"),
        CI.to_uppercase(),
        format!(" {CI}"),
        format!("{CI} "),
        format!("{CI}\n"),
        CI[..CI.len() - 1].to_string(),
        format!("{CI}0"),
        sha256_hex(CI),
        api_key_id(CI),
    ];
    // Same length, one character different, at every position.
    for i in 0..CI.len() {
        let mut b = CI.as_bytes().to_vec();
        b[i] ^= 0x01;
        near_misses.push(String::from_utf8(b).unwrap());
    }
    for m in near_misses {
        assert!(keys.lookup(&m).is_none(), "{m:?} must not match");
    }
    // Position in the list does not matter (every digest is compared, no early exit).
    let many: Vec<String> = (0..50).map(|i| format!("service-key-{i:04}-padding")).collect();
    let keys = StaticApiKeys::parse(&many.join(",")).unwrap();
    for (i, k) in many.iter().enumerate() {
        assert_eq!(keys.lookup(k).unwrap().id, api_key_id(k), "key {i}");
    }
}

#[test]
fn config_errors_name_the_index_never_the_token() {
    for (value, index) in [
        ("short", 0),
        (&format!("{CI},:admin") as &str, 1),
        (&format!("{CI}:superuser"), 0),
        (&format!("{CI}:"), 0),
        (&format!("{CI}:ADMIN-ish"), 0),
        (&format!("{CI},{CI}"), 1),
        (&format!("{CI},{OPS},{CI}:admin"), 2),
        ("has space 0123456789", 0),
        (&format!("{CI},tab\tin-token-0123456789"), 1),
    ] {
        let e = StaticApiKeys::parse(value).unwrap_err();
        assert!(matches!(e, AuthnError::InvalidApiKeyConfig { index: i, .. } if i == index), "{value:?}: {e:?}");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("token-0123") && !shown.contains("has space"), "{shown}");
    }
}

#[test]
fn debug_output_never_shows_keys() {
    let keys = StaticApiKeys::parse(&format!("{CI},{OPS}:admin")).unwrap();
    let d = format!("{keys:?}");
    assert!(!d.contains("token") && !d.contains(&sha256_hex(CI)[..8]), "{d}");
    let m = keys.lookup(CI).unwrap();
    assert!(!format!("{m:?}").contains(CI));
    let g = generate_api_key().unwrap();
    assert_eq!(format!("{g:?}|{g}"), "Secret(***)|Secret(***)");
}

#[test]
fn generated_keys() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let k = generate_api_key().unwrap();
        let s = k.expose();
        assert!(s.starts_with(API_KEY_PREFIX) && API_KEY_PREFIX == "khk_", "{}", &s[..4]);
        let body = &s[API_KEY_PREFIX.len()..];
        assert_eq!(body.len(), 43, "32 random bytes, base64url without padding");
        assert_eq!(kubehero_authn::jws::b64_decode(body).unwrap().len(), 32);
        assert!(!looks_like_jwt(s));
        assert!(seen.insert(s.to_string()), "generated keys are unique");
        // A generated key is a valid static key.
        let parsed = StaticApiKeys::parse(&format!("{s}:member")).unwrap();
        assert_eq!(parsed.lookup(s).unwrap().role, Role::Member);
    }
    assert!(looks_like_jwt("a.b.c"));
    assert!(!looks_like_jwt("a.b") && !looks_like_jwt("a.b.c.d"));
}

fn vt(sub: &str, exp: i64) -> Arc<VerifiedToken> {
    Arc::new(VerifiedToken {
        issuer: ISS.into(),
        sub: sub.into(),
        email: None,
        groups: vec!["g".into()],
        legacy_roles: vec![],
        exp,
        raw_sub: sub.into(),
    })
}

#[test]
fn cache_hit_returns_the_same_result() {
    let cache = TokenCache::new(16);
    let token = sign(&keys().rsa, &hdr("RS256", "rsa"), &claims());
    assert!(cache.get(&token, NOW).is_none());
    let verified = Arc::new(verify_with_keys(&token, &cfg(), &keyset(), NOW).unwrap());
    cache.insert(&token, Arc::clone(&verified));
    let hit = cache.get(&token, NOW).unwrap();
    assert!(Arc::ptr_eq(&hit, &verified), "a hit is the very result that was inserted");
    assert_eq!(*hit, verify_with_keys(&token, &cfg(), &keyset(), NOW).unwrap());
    assert_eq!(cache.len(), 1);
    // A different token (even one character) misses.
    let mut other = token.clone();
    other.pop();
    assert!(cache.get(&other, NOW).is_none());
    assert!(cache.get(&format!("{token} "), NOW).is_none());
    // The cache is keyed by a digest; its Debug shows no token.
    assert!(!format!("{cache:?}").contains(&token[..20]));
    cache.clear();
    assert!(cache.is_empty() && cache.get(&token, NOW).is_none());
}

#[test]
fn cache_is_bounded() {
    let cache = TokenCache::new(100);
    for i in 0..1000 {
        cache.insert(&format!("token-{i}"), vt(&i.to_string(), NOW + 600));
        assert!(cache.len() <= 100);
    }
    assert_eq!(cache.len(), 100);
    assert!(cache.get("token-0", NOW).is_none(), "oldest evicted");
    assert_eq!(cache.get("token-999", NOW).unwrap().sub, "999");
    // Least recently *used*: a read keeps an entry alive.
    let cache = TokenCache::new(2);
    cache.insert("a", vt("a", NOW + 600));
    cache.insert("b", vt("b", NOW + 600));
    assert!(cache.get("a", NOW).is_some());
    cache.insert("c", vt("c", NOW + 600));
    assert!(cache.get("a", NOW).is_some() && cache.get("b", NOW).is_none());
    // Capacity 0 still holds one entry rather than panicking.
    let tiny = TokenCache::new(0);
    tiny.insert("x", vt("x", NOW + 1));
    assert_eq!(tiny.len(), 1);
}

#[test]
fn cache_never_returns_past_exp() {
    let cache = TokenCache::new(8);
    cache.insert("t", vt("t", NOW));
    assert!(cache.get("t", NOW - 1000).is_some());
    assert!(cache.get("t", NOW).is_some(), "valid through exp");
    assert!(cache.get("t", NOW + 1).is_none(), "never past exp");
    assert!(cache.is_empty(), "an expired entry is dropped when found");
    assert!(cache.get("t", NOW).is_none(), "and stays gone");
    // A token verified inside the skew window (exp slightly past) is never served from cache.
    let c = {
        let mut c = claims();
        c["exp"] = json!(NOW - 30);
        c
    };
    let token = sign(&keys().rsa, &hdr("RS256", "rsa"), &c);
    let v = verify_with_keys(&token, &cfg(), &keyset(), NOW).unwrap();
    cache.insert(&token, Arc::new(v));
    assert!(cache.get(&token, NOW).is_none());
}
