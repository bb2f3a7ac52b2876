//! Valid tokens verify: every accepted algorithm, both `aud` shapes, both `groups` shapes, the legacy
//! `kh_roles` fallback, username/group configuration, and the clock-skew edges.

use crate::support::*;
use kubehero_authn::{verify_with_keys, AuthnError, NoopObserver, VerifiedToken, Verifier, CLOCK_SKEW_SECS};
use serde_json::{json, Value};
use std::sync::Arc;

fn with(name: &str, v: Value) -> Value {
    let mut c = claims();
    c[name] = v;
    c
}

fn without(name: &str) -> Value {
    let mut c = claims();
    c.as_object_mut().unwrap().remove(name);
    c
}

fn verify(token: &str) -> Result<VerifiedToken, AuthnError> {
    verify_with_keys(token, &cfg(), &keyset(), NOW)
}

fn rs256(c: &Value) -> String {
    sign(&keys().rsa, &hdr("RS256", "rsa"), c)
}

#[test]
fn every_allowed_algorithm_verifies() {
    let k = keys();
    for (alg, key, kid) in [
        ("RS256", &k.rsa, "rsa"),
        ("RS384", &k.rsa, "rsa"),
        ("RS512", &k.rsa, "rsa"),
        ("RS512", &k.rsa_other, "rsa-rs512"),
        ("ES256", &k.ec256, "ec256"),
        ("ES384", &k.ec384, "ec384"),
    ] {
        let token = sign(key, &hdr(alg, kid), &claims());
        let v = verify(&token).unwrap_or_else(|e| panic!("{alg} with kid {kid}: {e:?}"));
        assert_eq!(
            v,
            VerifiedToken {
                issuer: ISS.into(),
                sub: "alice".into(),
                email: Some("alice@example.com".into()),
                groups: vec!["eng".into(), "ops".into()],
                legacy_roles: vec![],
                exp: NOW + 600,
                raw_sub: "alice".into(),
            },
            "{alg}"
        );
        // Without a kid, the compatible keys are tried.
        let no_kid = sign(key, &json!({"alg":alg}), &claims());
        assert!(verify(&no_kid).is_ok(), "{alg} without kid");
    }
}

#[tokio::test]
async fn the_verifier_accepts_what_the_pipeline_accepts() {
    let verifier = Verifier::new(vec![cfg()], Arc::new(NoopObserver)).unwrap();
    assert_eq!(verifier.verify(&rs256(&claims()), NOW).await, Err(AuthnError::IssuerUnavailable(ISS.into())));
    assert!(verifier.install_keys(ISS, keyset()));
    assert!(!verifier.install_keys("https://other.example.com", keyset()));
    let k = keys();
    for (alg, key, kid) in [("RS256", &k.rsa, "rsa"), ("ES256", &k.ec256, "ec256"), ("ES384", &k.ec384, "ec384")] {
        let token = sign(key, &hdr(alg, kid), &claims());
        assert_eq!(verifier.verify(&token, NOW).await, verify(&token), "{alg}");
        assert!(verifier.verify(&token, NOW).await.is_ok());
    }
    let health = verifier.health();
    assert_eq!(health.len(), 1);
    assert!(health[0].healthy);
    assert_eq!(health[0].keys, 4);
}

#[test]
fn audience_string_or_array() {
    for aud in [json!(AUD), json!("other-aud"), json!([AUD]), json!(["x", "y", AUD]), json!(["other-aud", AUD])] {
        assert!(verify(&rs256(&with("aud", aud.clone()))).is_ok(), "{aud}");
    }
    // With no configured audience the match is skipped, but the shape still counts.
    let mut open = cfg();
    open.audiences.clear();
    for aud in [json!("anything"), json!(["a", "b"])] {
        assert!(verify_with_keys(&rs256(&with("aud", aud.clone())), &open, &keyset(), NOW).is_ok(), "{aud}");
    }
    assert!(verify_with_keys(&rs256(&without("aud")), &open, &keyset(), NOW).is_ok());
    assert_eq!(
        verify_with_keys(&rs256(&with("aud", json!(1))), &open, &keyset(), NOW),
        Err(AuthnError::InvalidAudience)
    );
}

#[test]
fn groups_string_or_array() {
    assert_eq!(verify(&rs256(&with("groups", json!(["a", "b"])))).unwrap().groups, ["a", "b"]);
    assert_eq!(verify(&rs256(&with("groups", json!("solo")))).unwrap().groups, ["solo"]);
    assert!(verify(&rs256(&with("groups", json!([])))).unwrap().groups.is_empty());
    assert!(verify(&rs256(&without("groups"))).unwrap().groups.is_empty());

    let mut c = cfg();
    c.groups_claim = "roles".into();
    c.group_prefix = "oidc:".into();
    let token = rs256(&with("roles", json!(["admins"])));
    let v = verify_with_keys(&token, &c, &keyset(), NOW).unwrap();
    assert_eq!(v.groups, ["oidc:admins"], "configured claim, prefixed; `groups` ignored");
    let v = verify_with_keys(&rs256(&with("roles", json!("x"))), &c, &keyset(), NOW).unwrap();
    assert_eq!(v.groups, ["oidc:x"]);
}

#[test]
fn legacy_kh_roles_fallback() {
    let token = rs256(&with("kh_roles", json!(["Admin", "VIEWER", "unknown-role"])));
    let v = verify(&token).unwrap();
    assert_eq!(v.legacy_roles, ["admin", "viewer", "unknown-role"], "lower-cased; mapping to roles is the server's");
    assert_eq!(v.groups, ["eng", "ops"], "groups still extracted");
    let mut c = without("groups");
    c["kh_roles"] = json!(["owner"]);
    let v = verify(&rs256(&c)).unwrap();
    assert!(v.groups.is_empty());
    assert_eq!(v.legacy_roles, ["owner"]);
    assert!(verify(&rs256(&claims())).unwrap().legacy_roles.is_empty());
}

#[test]
fn username_claim_configuration() {
    let mut c = cfg();
    c.username_claim = "email".into();
    let v = verify_with_keys(&rs256(&claims()), &c, &keyset(), NOW).unwrap();
    assert_eq!((v.sub.as_str(), v.raw_sub.as_str()), ("alice@example.com", "alice"));
    c.username_claim = "preferred_username".into();
    let v = verify_with_keys(&rs256(&with("preferred_username", json!("al"))), &c, &keyset(), NOW).unwrap();
    assert_eq!(v.sub, "al");
    assert_eq!(verify_with_keys(&rs256(&claims()), &c, &keyset(), NOW), Err(AuthnError::MissingClaim("username")));
    // email is optional under the default configuration.
    assert_eq!(verify(&rs256(&without("email"))).unwrap().email, None);
}

#[test]
fn clock_skew_edges() {
    assert_eq!(CLOCK_SKEW_SECS, 60);
    for (exp, ok) in [(NOW - 59, true), (NOW - 60, true), (NOW - 61, false), (NOW, true), (NOW + 1, true)] {
        let r = verify(&rs256(&with("exp", json!(exp))));
        if ok {
            assert_eq!(r.unwrap().exp, exp, "exp = now - {}", NOW - exp);
        } else {
            assert_eq!(r, Err(AuthnError::Expired), "exp = now - {}", NOW - exp);
        }
    }
    for (nbf, ok) in [(NOW + 59, true), (NOW + 60, true), (NOW + 61, false), (NOW - 1000, true)] {
        let r = verify(&rs256(&with("nbf", json!(nbf))));
        assert_eq!(r.is_ok(), ok, "nbf = now + {}: {r:?}", nbf - NOW);
        if !ok {
            assert_eq!(r, Err(AuthnError::NotYetValid));
        }
    }
    for (iat, ok) in [(NOW + 60, true), (NOW + 61, false), (NOW - 86_400, true)] {
        assert_eq!(verify(&rs256(&with("iat", json!(iat)))).is_ok(), ok, "iat = now + {}", iat - NOW);
    }
    // iat and nbf are optional.
    let mut c = without("iat");
    c.as_object_mut().unwrap().remove("nbf");
    assert!(verify(&rs256(&c)).is_ok());
    // The same token moves from valid to expired as the clock advances.
    let token = rs256(&with("exp", json!(NOW)));
    assert!(verify_with_keys(&token, &cfg(), &keyset(), NOW + 60).is_ok());
    assert_eq!(verify_with_keys(&token, &cfg(), &keyset(), NOW + 61), Err(AuthnError::Expired));
}

#[test]
fn unknown_claims_and_header_params_are_ignored() {
    let mut c = claims();
    c["jti"] = json!("abc");
    c["nested"] = json!({"a":[1,2,{"b":null}]});
    c["azp"] = json!("client");
    let header = json!({"alg":"RS256","kid":"rsa","typ":"at+jwt","cty":"JWT","x-vendor":{"a":1}});
    assert!(verify(&sign(&keys().rsa, &header, &c)).is_ok());
}
