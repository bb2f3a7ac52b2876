//! The malformed-token corpus: one table of attacks covering every class of RFC 8725 §2 (and the JOSE/JWT
//! bug classes seen in the wild), each run through the full JWT pipeline ([`verify_with_keys`]) and, where
//! no network could be involved, through [`Verifier::verify`] as well. Every case must be refused, with the
//! expected [`AuthnError`] variant. Positive controls built by the same helpers must verify, so a broken
//! harness (bad keys, wrong issuer, a verifier that rejects everything) cannot pass trivially.

use crate::support::*;
use kubehero_authn::{verify_with_keys, AuthnError, KeySet, NoopObserver, Verifier, MAX_TOKEN_LEN};
use ring::hmac;
use ring::signature::KeyPair;
use serde_json::{json, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// What a case must be refused with.
type Check = fn(&AuthnError) -> bool;

struct Case {
    name: &'static str,
    token: String,
    /// The key set the verifier holds; the standard [`keyset`] unless the attack needs another.
    keys: KeySet,
    expect: Check,
}

fn case(name: &'static str, token: String, expect: Check) -> Case {
    Case { name, token, keys: keyset(), expect }
}

fn with_keys(name: &'static str, token: String, keys: KeySet, expect: Check) -> Case {
    Case { name, token, keys, expect }
}

// ---- token builders -------------------------------------------------------------------------------------

fn rs256(claims: &Value) -> String {
    sign(&keys().rsa, &hdr("RS256", "rsa"), claims)
}

fn es256(claims: &Value) -> String {
    sign(&keys().ec256, &hdr("ES256", "ec256"), claims)
}

/// The standard claims with `f` applied.
fn claims_with(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut c = claims();
    if let Value::Object(m) = &mut c {
        f(m);
    }
    c
}

fn without(name: &str) -> Value {
    claims_with(|m| {
        m.remove(name);
    })
}

fn set(name: &str, v: Value) -> Value {
    claims_with(|m| {
        m.insert(name.to_string(), v);
    })
}

/// A signed RS256 token whose header is `header` (raw JSON text).
fn rs256_header(header: &str) -> String {
    sign_raw(&keys().rsa, "RS256", header, &claims().to_string())
}

/// A signed RS256 token whose payload is `payload` (raw JSON text or bytes).
fn rs256_payload(payload: impl AsRef<[u8]>) -> String {
    let input = format!("{}.{}", b64(r#"{"alg":"RS256","kid":"rsa","typ":"JWT"}"#), b64(payload));
    let sig = sign_input(&keys().rsa, "RS256", input.as_bytes());
    format!("{input}.{}", b64(sig))
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_string).collect()
}

/// `token` with its signature replaced by `sig` (raw bytes).
fn with_sig(token: &str, sig: &[u8]) -> String {
    let p = parts(token);
    format!("{}.{}.{}", p[0], p[1], b64(sig))
}

fn sig_bytes(token: &str) -> Vec<u8> {
    kubehero_authn::jws::b64_decode(&parts(token)[2]).unwrap()
}

/// HMAC of the signing input of a header/claims pair, with `secret` as the key.
fn hmac_token(alg: &str, kid: &str, secret: &[u8]) -> String {
    let algorithm = match alg {
        "HS384" => hmac::HMAC_SHA384,
        "HS512" => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    };
    let input = format!("{}.{}", b64(hdr(alg, kid).to_string()), b64(claims().to_string()));
    let tag = hmac::sign(&hmac::Key::new(algorithm, secret), input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// The RSA public key as an attacker would find it: DER `RSAPublicKey`.
fn rsa_public_der() -> Vec<u8> {
    match &keys().rsa {
        Key::Rsa(kp) => kp.public().as_ref().to_vec(),
        _ => unreachable!(),
    }
}

/// A fixed-width ECDSA `r || s` signature re-encoded as DER `SEQUENCE { INTEGER r, INTEGER s }`.
fn ecdsa_fixed_to_der(fixed: &[u8]) -> Vec<u8> {
    fn int(b: &[u8]) -> Vec<u8> {
        let b = &b[b.iter().position(|&x| x != 0).unwrap_or(b.len() - 1)..];
        let mut v = vec![0x02];
        if b[0] & 0x80 != 0 {
            v.push(b.len() as u8 + 1);
            v.push(0);
        } else {
            v.push(b.len() as u8);
        }
        v.extend_from_slice(b);
        v
    }
    let (r, s) = fixed.split_at(fixed.len() / 2);
    let mut body = int(r);
    body.extend(int(s));
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

/// The order n of P-256, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The standard key set plus an `oct` key with kid `hmac` (which must be skipped).
fn keyset_with_oct(secret: &[u8]) -> KeySet {
    let k = keys();
    let doc = json!({"keys":[
        {"kty":"oct","kid":"hmac","k":b64(secret),"alg":"HS256"},
        jwk(&k.rsa, Some("rsa"), None),
        jwk(&k.ec256, Some("ec256"), Some("ES256")),
    ]});
    let (set, skipped) = KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap();
    assert_eq!(set.len(), 2, "{skipped:?}");
    assert!(!set.contains_kid("hmac"), "an oct key must never be loaded");
    set
}

// ---- expectations ---------------------------------------------------------------------------------------

fn malformed(e: &AuthnError) -> bool {
    matches!(e, AuthnError::Malformed(_))
}
fn unsupported_alg(e: &AuthnError) -> bool {
    matches!(e, AuthnError::UnsupportedAlgorithm(_))
}
fn unknown_key(e: &AuthnError) -> bool {
    *e == AuthnError::UnknownKey
}
fn bad_sig(e: &AuthnError) -> bool {
    *e == AuthnError::BadSignature
}
fn audience(e: &AuthnError) -> bool {
    *e == AuthnError::InvalidAudience
}

// ---- the corpus -----------------------------------------------------------------------------------------

fn corpus() -> Vec<Case> {
    let k = keys();
    let good = rs256(&claims());
    let gp = parts(&good);
    let mut v = Vec::new();

    // RFC 8725 §2.1 / §3.1: "none" and its spellings, with and without a signature.
    v.push(case("alg none, empty signature", format!("{}.{}.", b64(r#"{"alg":"none"}"#), gp[1]), malformed));
    for (name, alg) in [("alg none", "none"), ("alg None", "None"), ("alg NONE", "NONE"), ("alg nOnE", "nOnE")] {
        let t = rs256_header(&format!(r#"{{"alg":"{alg}","kid":"rsa"}}"#));
        v.push(case(name, t, |e| matches!(e, AuthnError::UnsupportedAlgorithm(a) if a.eq_ignore_ascii_case("none"))));
    }
    v.push(case("alg missing", rs256_header(r#"{"kid":"rsa"}"#), |e| {
        *e == AuthnError::UnsupportedAlgorithm("(missing)".into())
    }));
    v.push(case("alg not a string", rs256_header(r#"{"alg":["RS256"],"kid":"rsa"}"#), unsupported_alg));
    v.push(case("alg null", rs256_header(r#"{"alg":null,"kid":"rsa"}"#), unsupported_alg));
    v.push(case("alg lower-case rs256", rs256_header(r#"{"alg":"rs256","kid":"rsa"}"#), unsupported_alg));
    v.push(case("alg with trailing space", rs256_header(r#"{"alg":"RS256 ","kid":"rsa"}"#), unsupported_alg));
    v.push(case("alg with NUL", rs256_header(r#"{"alg":"RS256\u0000","kid":"rsa"}"#), unsupported_alg));

    // RFC 8725 §2.1 / §3.1: key confusion — HS256 keyed with the RSA public key (DER, JWK text, modulus).
    let der = rsa_public_der();
    v.push(case("HS256 keyed with RSA public key DER", hmac_token("HS256", "rsa", &der), |e| {
        *e == AuthnError::UnsupportedAlgorithm("HS256".into())
    }));
    let jwk_text = jwk(&k.rsa, Some("rsa"), None).to_string();
    v.push(case("HS256 keyed with RSA JWK text", hmac_token("HS256", "rsa", jwk_text.as_bytes()), unsupported_alg));
    v.push(case("HS384 keyed with RSA public key", hmac_token("HS384", "rsa", &der), unsupported_alg));
    v.push(case("HS512 keyed with RSA public key", hmac_token("HS512", "rsa", &der), unsupported_alg));
    let ec_point = match &k.ec256 {
        Key::Ec256(kp) => kp.public_key().as_ref().to_vec(),
        _ => unreachable!(),
    };
    v.push(case("HS256 keyed with EC public point", hmac_token("HS256", "ec256", &ec_point), unsupported_alg));
    // An `oct` key in the JWKS is never loaded, so neither HMAC nor an asymmetric alg can select it.
    let secret = b"an-hmac-secret-that-the-idp-published-by-mistake";
    v.push(with_keys(
        "HS256 with oct key in JWKS",
        hmac_token("HS256", "hmac", secret),
        keyset_with_oct(secret),
        unsupported_alg,
    ));
    v.push(with_keys(
        "RS256 naming the oct key's kid",
        sign(&k.rsa, &hdr("RS256", "hmac"), &claims()),
        keyset_with_oct(secret),
        unknown_key,
    ));

    // RFC 8725 §3.1 / §3.2: algorithms off the allow-list.
    v.push(case("PS256", sign(&k.rsa, &hdr("PS256", "rsa"), &claims()), |e| {
        *e == AuthnError::UnsupportedAlgorithm("PS256".into())
    }));
    v.push(case("PS384", rs256_header(r#"{"alg":"PS384","kid":"rsa"}"#), unsupported_alg));
    v.push(case(
        "ES512",
        sign_raw(&k.ec384, "ES384", r#"{"alg":"ES512","kid":"ec384"}"#, &claims().to_string()),
        unsupported_alg,
    ));
    v.push(case(
        "EdDSA",
        sign_raw(&k.ec256, "ES256", r#"{"alg":"EdDSA","kid":"ec256"}"#, &claims().to_string()),
        unsupported_alg,
    ));
    v.push(case(
        "ES256K",
        sign_raw(&k.ec256, "ES256", r#"{"alg":"ES256K","kid":"ec256"}"#, &claims().to_string()),
        unsupported_alg,
    ));
    v.push(case("RSA1_5 (a JWE alg)", rs256_header(r#"{"alg":"RSA1_5","kid":"rsa"}"#), unsupported_alg));

    // RFC 8725 §3.1: alg/key mismatch — a header alg the selected key must not be used for.
    v.push(case("RS256 header on the EC key's kid", sign(&k.rsa, &hdr("RS256", "ec256"), &claims()), unknown_key));
    v.push(case("ES256 header on the ES384 key's kid", sign(&k.ec256, &hdr("ES256", "ec384"), &claims()), unknown_key));
    v.push(case("ES384 header on the P-256 key", sign(&k.ec384, &hdr("ES384", "ec256"), &claims()), unknown_key));
    v.push(case(
        "RS256 header on a key pinned to RS512",
        sign(&k.rsa_other, &hdr("RS256", "rsa-rs512"), &claims()),
        unknown_key,
    ));
    v.push(case("ES256 header on an RSA key", sign(&k.ec256, &hdr("ES256", "rsa"), &claims()), unknown_key));
    v.push(case(
        "RS512 header, RS256 signature",
        sign_raw(&k.rsa, "RS256", r#"{"alg":"RS512","kid":"rsa"}"#, &claims().to_string()),
        bad_sig,
    ));

    // Key selection.
    v.push(case("kid unknown", sign(&k.rsa, &hdr("RS256", "nope"), &claims()), unknown_key));
    v.push(case("kid empty", sign(&k.rsa, &hdr("RS256", ""), &claims()), unknown_key));
    v.push(case("kid of the skipped 1024-bit key", sign(&k.rsa, &hdr("RS256", "weak"), &claims()), unknown_key));
    v.push(case("kid not a string", rs256_header(r#"{"alg":"RS256","kid":7}"#), malformed));
    v.push(case("no kid, signed by a foreign key", sign(&k.ec256_other, &json!({"alg":"ES256"}), &claims()), bad_sig));

    // RFC 8725 §3.10 / RFC 7515 §4.1: keys by reference or by value are never followed.
    for (name, header, param) in [
        ("jku header", r#"{"alg":"RS256","kid":"rsa","jku":"https://evil.example/jwks"}"#, "jku"),
        ("x5u header", r#"{"alg":"RS256","kid":"rsa","x5u":"https://evil.example/cert.pem"}"#, "x5u"),
        ("x5c header", r#"{"alg":"RS256","kid":"rsa","x5c":["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}"#, "x5c"),
        ("enc header (JWE)", r#"{"alg":"RS256","kid":"rsa","enc":"A256GCM"}"#, "enc"),
        ("zip header", r#"{"alg":"RS256","kid":"rsa","zip":"DEF"}"#, "zip"),
        ("b64=false header (RFC 7797)", r#"{"alg":"RS256","kid":"rsa","b64":false}"#, "b64"),
    ] {
        v.push(Case { name, token: rs256_header(header), keys: keyset(), expect: forbidden_check(param) });
    }
    // The attacker embeds their own public key and signs with it (CVE-2018-0114).
    let embedded = json!({"alg":"ES256","kid":"attacker","jwk":jwk(&k.ec256_other, Some("attacker"), None)});
    v.push(case("embedded jwk header", sign(&k.ec256_other, &embedded, &claims()), |e| {
        *e == AuthnError::ForbiddenHeader("jwk")
    }));

    // RFC 7515 §4.1.11: crit.
    v.push(case(
        "crit unknown extension",
        rs256_header(r#"{"alg":"RS256","kid":"rsa","crit":["exp"],"exp":1}"#),
        |e| *e == AuthnError::CriticalHeader,
    ));
    v.push(case("crit empty array", rs256_header(r#"{"alg":"RS256","kid":"rsa","crit":[]}"#), |e| {
        *e == AuthnError::CriticalHeader
    }));
    v.push(case("crit b64", rs256_header(r#"{"alg":"RS256","kid":"rsa","crit":["b64"],"b64":true}"#), |e| {
        *e == AuthnError::CriticalHeader
    }));

    // RFC 7515 §4 / RFC 8725 §3.2: duplicate members.
    v.push(case("duplicate alg in header", rs256_header(r#"{"alg":"RS256","kid":"rsa","alg":"none"}"#), malformed));
    v.push(case("duplicate kid in header", rs256_header(r#"{"alg":"RS256","kid":"weak","kid":"rsa"}"#), malformed));
    v.push(case(
        "duplicate alg via escape",
        rs256_header(r#"{"alg":"RS256","kid":"rsa","\u0061lg":"RS256"}"#),
        malformed,
    ));
    let dup_sub = claims().to_string().replacen('{', r#"{"sub":"admin","#, 1);
    v.push(case("duplicate sub claim", rs256_payload(dup_sub), malformed));
    let dup_iss = claims().to_string().replacen('{', r#"{"iss":"https://evil.example","#, 1);
    v.push(case("duplicate iss claim", rs256_payload(dup_iss), malformed));
    let dup_exp = claims().to_string().replacen('{', &format!(r#"{{"exp":{},"#, NOW + 10 * 365 * 86400), 1);
    v.push(case("duplicate exp claim", rs256_payload(dup_exp), malformed));
    let dup_nested = claims().to_string().replacen('{', r#"{"meta":{"role":"viewer","role":"owner"},"#, 1);
    v.push(case("duplicate member in a nested claim", rs256_payload(dup_nested), malformed));

    // RFC 7519 §4.1.1 / OIDC: issuer.
    v.push(case("wrong iss", rs256(&set("iss", json!("https://evil.example.com"))), |e| {
        *e == AuthnError::UnknownIssuer
    }));
    v.push(case("iss with trailing slash", rs256(&set("iss", json!(format!("{ISS}/")))), |e| {
        *e == AuthnError::UnknownIssuer
    }));
    v.push(case("iss differing in case", rs256(&set("iss", json!("https://IDP.example.com"))), |e| {
        *e == AuthnError::UnknownIssuer
    }));
    v.push(case("missing iss", rs256(&without("iss")), |e| *e == AuthnError::MissingClaim("iss")));
    v.push(case("iss not a string", rs256(&set("iss", json!([ISS]))), |e| *e == AuthnError::InvalidClaim("iss")));

    // RFC 7519 §4.1.3 / RFC 8725 §3.9: audience.
    v.push(case("wrong aud", rs256(&set("aud", json!("someone-else"))), audience));
    v.push(case("missing aud", rs256(&without("aud")), audience));
    v.push(case("aud array without ours", rs256(&set("aud", json!(["a", "b"]))), audience));
    v.push(case("aud empty array", rs256(&set("aud", json!([]))), audience));
    v.push(case("aud number", rs256(&set("aud", json!(1))), audience));
    v.push(case("aud array with a non-string", rs256(&set("aud", json!([AUD, 1]))), audience));
    v.push(case("aud prefix of ours", rs256(&set("aud", json!("kube"))), audience));

    // RFC 7519 §4.1.4–§4.1.6: times (60 s skew).
    v.push(case("expired beyond skew", rs256(&set("exp", json!(NOW - 61))), |e| *e == AuthnError::Expired));
    v.push(case("expired long ago", rs256(&set("exp", json!(0))), |e| *e == AuthnError::Expired));
    v.push(case("exp missing", rs256(&without("exp")), |e| *e == AuthnError::MissingClaim("exp")));
    v.push(case("exp a numeric string", rs256(&set("exp", json!((NOW + 600).to_string()))), |e| {
        *e == AuthnError::InvalidClaim("exp")
    }));
    v.push(case("exp null", rs256(&set("exp", json!(null))), |e| *e == AuthnError::InvalidClaim("exp")));
    v.push(case("exp boolean", rs256(&set("exp", json!(true))), |e| *e == AuthnError::InvalidClaim("exp")));
    v.push(case("exp absurdly large", rs256(&set("exp", json!(1e300))), |e| *e == AuthnError::InvalidClaim("exp")));
    v.push(case("exp u64::MAX", rs256(&set("exp", json!(u64::MAX))), |e| *e == AuthnError::InvalidClaim("exp")));
    v.push(case("nbf in the future beyond skew", rs256(&set("nbf", json!(NOW + 61))), |e| {
        *e == AuthnError::NotYetValid
    }));
    v.push(case("nbf a string", rs256(&set("nbf", json!("0"))), |e| *e == AuthnError::InvalidClaim("nbf")));
    v.push(case("iat far in the future", rs256(&set("iat", json!(NOW + 3600))), |e| *e == AuthnError::NotYetValid));
    v.push(case("iat nonsense", rs256(&set("iat", json!({"t":1}))), |e| *e == AuthnError::InvalidClaim("iat")));

    // Identity claims (checked after the signature).
    v.push(case("sub missing", rs256(&without("sub")), |e| *e == AuthnError::MissingClaim("sub")));
    v.push(case("sub empty", rs256(&set("sub", json!(""))), |e| *e == AuthnError::InvalidClaim("sub")));
    v.push(case("sub a number", rs256(&set("sub", json!(42))), |e| *e == AuthnError::InvalidClaim("sub")));
    v.push(case("groups an object", rs256(&set("groups", json!({"admin":true}))), |e| {
        *e == AuthnError::InvalidClaim("groups")
    }));
    v.push(case("groups with a non-string", rs256(&set("groups", json!(["eng", 1]))), |e| {
        *e == AuthnError::InvalidClaim("groups")
    }));
    v.push(case("kh_roles a bare string", rs256(&set("kh_roles", json!("admin"))), |e| {
        *e == AuthnError::InvalidClaim("kh_roles")
    }));
    v.push(case("email not a string", rs256(&set("email", json!(["a@b"]))), |e| {
        *e == AuthnError::InvalidClaim("email")
    }));

    // RFC 7515 §5.2: signature integrity.
    v.push(case("signature stripped", format!("{}.{}.", gp[0], gp[1]), malformed));
    let s = sig_bytes(&good);
    v.push(case("signature truncated by one byte", with_sig(&good, &s[..s.len() - 1]), bad_sig));
    v.push(case("signature extended by one byte", with_sig(&good, &[&s[..], &[0]].concat()), bad_sig));
    v.push(case("RSA signature all zeros", with_sig(&good, &vec![0; s.len()]), bad_sig));
    v.push(case("signature from another key", sign(&k.rsa_other, &hdr("RS256", "rsa"), &claims()), bad_sig));
    let mut flipped = s.clone();
    flipped[s.len() / 2] ^= 0x01;
    v.push(case("signature bit flipped", with_sig(&good, &flipped), bad_sig));
    let mut last = s.clone();
    *last.last_mut().unwrap() ^= 0x80;
    v.push(case("signature last bit flipped", with_sig(&good, &last), bad_sig));
    let admin_claims = set("groups", json!(["kubehero-owners"]));
    v.push(case(
        "payload swapped after signing",
        format!("{}.{}.{}", gp[0], b64(admin_claims.to_string()), gp[2]),
        bad_sig,
    ));
    let other_header = b64(r#"{"alg":"RS256","kid":"rsa","typ":"at+jwt"}"#);
    v.push(case("header swapped after signing", format!("{other_header}.{}.{}", gp[1], gp[2]), bad_sig));
    let es_good = es256(&claims());
    let es_other = sign(&k.ec256_other, &hdr("ES256", "ec256"), &claims());
    v.push(case("ES256 signature from another key", es_other, bad_sig));
    let es_sig = sig_bytes(&es_good);
    v.push(case("ES256 signature truncated", with_sig(&es_good, &es_sig[..63]), bad_sig));
    let mut es_flip = es_sig.clone();
    es_flip[40] ^= 0x04;
    v.push(case("ES256 signature bit flipped", with_sig(&es_good, &es_flip), bad_sig));
    // RFC 7518 §3.4: ECDSA signatures are fixed-width r || s, never DER.
    v.push(case("ES256 signature in DER form", with_sig(&es_good, &ecdsa_fixed_to_der(&es_sig)), bad_sig));
    let es384 = sign(&k.ec384, &hdr("ES384", "ec384"), &claims());
    v.push(case("ES384 signature in DER form", with_sig(&es384, &ecdsa_fixed_to_der(&sig_bytes(&es384))), bad_sig));
    // CVE-2022-21449 "psychic signatures": r = s = 0, and r = s = n.
    v.push(case("ES256 r = s = 0", with_sig(&es_good, &[0; 64]), bad_sig));
    v.push(case("ES384 r = s = 0", with_sig(&es384, &[0; 96]), bad_sig));
    v.push(case("ES256 r = s = n", with_sig(&es_good, &[P256_N, P256_N].concat()), bad_sig));
    let mut r_zero = es_sig.clone();
    r_zero[..32].fill(0);
    v.push(case("ES256 r = 0, real s", with_sig(&es_good, &r_zero), bad_sig));

    // RFC 7515 §7.1: compact serialization structure and strict base64url.
    v.push(case("two parts", format!("{}.{}", gp[0], gp[1]), malformed));
    v.push(case("four parts", format!("{good}.{}", gp[2]), malformed));
    v.push(case("four parts, empty fourth", format!("{good}."), malformed));
    v.push(case("empty string", String::new(), malformed));
    v.push(case("whitespace only", " \t\r\n".to_string(), malformed));
    v.push(case("dots only", "..".to_string(), malformed));
    v.push(case("leading space", format!(" {good}"), malformed));
    v.push(case("trailing newline", format!("{good}\n"), malformed));
    v.push(case("Bearer prefix left on", format!("Bearer {good}"), malformed));
    let std_sig = base64::Engine::encode(&base64::engine::general_purpose::STANDARD_NO_PAD, &s);
    let std_sig = if std_sig.contains(['+', '/']) { std_sig } else { format!("{std_sig}+/") };
    v.push(case("non-base64url chars (+ /)", format!("{}.{}.{std_sig}", gp[0], gp[1]), malformed));
    v.push(case("base64 padding", format!("{}.{}.{}==", gp[0], gp[1], &gp[2][..gp[2].len() - 2]), malformed));
    v.push(case("padding on header", format!("{}=.{}.{}", gp[0], gp[1], gp[2]), malformed));
    v.push(case("percent-encoded char", format!("{}.{}%3D.{}", gp[0], gp[1], gp[2]), malformed));
    v.push(case("non-ASCII char", format!("{}.{}é.{}", gp[0], gp[1], gp[2]), malformed));
    v.push(case("header not JSON", format!("{}.{}.{}", b64("alg=RS256"), gp[1], gp[2]), malformed));
    v.push(case("header JSON array", rs256_header(r#"[{"alg":"RS256","kid":"rsa"}]"#), malformed));
    v.push(case("header JSON string", rs256_header(r#""RS256""#), malformed));
    v.push(case("header with trailing data", rs256_header(r#"{"alg":"RS256","kid":"rsa"}{}"#), malformed));
    v.push(case("header with UTF-8 BOM", rs256_header("\u{feff}{\"alg\":\"RS256\",\"kid\":\"rsa\"}"), malformed));
    v.push(case("payload not an object", rs256_payload(r#"["iss","aud"]"#), malformed));
    v.push(case("payload a JSON string", rs256_payload(format!("{:?}", claims().to_string())), malformed));
    v.push(case("payload not JSON", rs256_payload("iss=https://idp.example.com"), malformed));
    v.push(case("payload invalid UTF-8", rs256_payload(b"{\"sub\":\"\xff\xfe\"}"), malformed));
    v.push(case("payload lone surrogate", rs256_payload(r#"{"sub":"\ud800"}"#), malformed));
    v.push(case(
        "deeply nested claims",
        rs256_payload(format!(r#"{{"x":{}1{}}}"#, "[".repeat(1_000), "]".repeat(1_000))),
        |e| *e == AuthnError::Malformed("JSON nested too deeply"),
    ));
    v.push(case(
        "deeply nested header",
        rs256_header(&format!(r#"{{"alg":"RS256","x":{}{}}}"#, "{\"a\":".repeat(64), "}".repeat(64))),
        malformed,
    ));
    v.push(case("typ not a string", rs256_header(r#"{"alg":"RS256","kid":"rsa","typ":1}"#), malformed));
    v.push(case("cty not a string", rs256_header(r#"{"alg":"RS256","kid":"rsa","cty":{}}"#), malformed));

    // Size: refused before any decoding (garbage that would be Malformed proves the order).
    v.push(case("oversize garbage", "!".repeat(MAX_TOKEN_LEN + 1), |e| *e == AuthnError::TooLarge));
    v.push(case("oversize, many dots", ".".repeat(MAX_TOKEN_LEN * 4), |e| *e == AuthnError::TooLarge));
    let big = rs256(&set("pad", json!("x".repeat(MAX_TOKEN_LEN))));
    assert!(big.len() > MAX_TOKEN_LEN);
    v.push(case("oversize, correctly signed", big, |e| *e == AuthnError::TooLarge));

    v
}

fn forbidden_check(param: &'static str) -> Check {
    match param {
        "jku" => |e| *e == AuthnError::ForbiddenHeader("jku"),
        "x5u" => |e| *e == AuthnError::ForbiddenHeader("x5u"),
        "x5c" => |e| *e == AuthnError::ForbiddenHeader("x5c"),
        "enc" => |e| *e == AuthnError::ForbiddenHeader("enc"),
        "zip" => |e| *e == AuthnError::ForbiddenHeader("zip"),
        "b64" => |e| *e == AuthnError::ForbiddenHeader("b64"),
        _ => |_| false,
    }
}

fn run(token: &str, keys: &KeySet) -> Result<kubehero_authn::VerifiedToken, AuthnError> {
    catch_unwind(AssertUnwindSafe(|| verify_with_keys(token, &cfg(), keys, NOW)))
        .unwrap_or_else(|_| panic!("verify_with_keys panicked"))
}

#[test]
fn every_attack_is_rejected_with_the_expected_error() {
    let cases = corpus();
    assert!(cases.len() >= 40, "the corpus must hold at least 40 attacks, has {}", cases.len());
    let mut names = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for c in &cases {
        assert!(names.insert(c.name), "duplicate case name {:?}", c.name);
        match catch_unwind(AssertUnwindSafe(|| verify_with_keys(&c.token, &cfg(), &c.keys, NOW))) {
            Err(_) => failures.push(format!("{}: PANICKED", c.name)),
            Ok(Ok(v)) => failures.push(format!("{}: ACCEPTED as {:?}", c.name, v.sub)),
            Ok(Err(e)) if !(c.expect)(&e) => failures.push(format!("{}: wrong error {e:?}", c.name)),
            Ok(Err(e)) => {
                // Errors never echo the token.
                assert!(c.token.len() < 8 || !format!("{e} {e:?}").contains(&c.token[..8]), "{}: {e}", c.name);
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    eprintln!("corpus: {} attacks rejected", cases.len());
}

/// The multi-issuer [`Verifier`] runs the same checks; with keys installed (no fetch), every case whose
/// refusal cannot involve an unknown-`kid` refetch must get the same error there.
#[tokio::test]
async fn verifier_agrees_with_the_pipeline() {
    let mut checked = 0;
    for c in corpus() {
        let reference = verify_with_keys(&c.token, &cfg(), &c.keys, NOW).unwrap_err();
        if reference == AuthnError::UnknownKey {
            continue; // would refetch from https://idp.example.com; fetch.rs covers that path.
        }
        let verifier = Verifier::new(vec![cfg()], Arc::new(NoopObserver)).unwrap();
        assert!(verifier.install_keys(ISS, c.keys.clone()));
        let got = verifier.verify(&c.token, NOW).await;
        assert_eq!(got, Err(reference), "{}", c.name);
        checked += 1;
    }
    assert!(checked >= 40, "{checked}");
}

// ---- positive controls ----------------------------------------------------------------------------------

#[test]
fn positive_controls_verify() {
    let k = keys();
    let controls: Vec<(&str, String)> = vec![
        ("RS256", rs256(&claims())),
        ("ES256", es256(&claims())),
        ("ES384", sign(&k.ec384, &hdr("ES384", "ec384"), &claims())),
        ("RS512 on the pinned key", sign(&k.rsa_other, &hdr("RS512", "rsa-rs512"), &claims())),
        ("no kid", sign(&k.ec256, &json!({"alg":"ES256"}), &claims())),
        ("exp at the skew edge", rs256(&set("exp", json!(NOW - 60)))),
        ("nbf at the skew edge", rs256(&set("nbf", json!(NOW + 60)))),
        ("iat at the skew edge", rs256(&set("iat", json!(NOW + 60)))),
        ("aud array with ours", rs256(&set("aud", json!(["x", AUD])))),
        ("second configured aud", rs256(&set("aud", json!("other-aud")))),
        ("exp as a float", rs256(&set("exp", json!(NOW as f64 + 0.5)))),
        ("raw payload builder", rs256_payload(claims().to_string())),
        ("raw header builder", rs256_header(r#"{"alg":"RS256","kid":"rsa"}"#)),
        ("unknown non-critical header", rs256_header(r#"{"alg":"RS256","kid":"rsa","x-custom":1}"#)),
        ("whitespace inside JSON", rs256_header("{ \"alg\" : \"RS256\",\n\"kid\":\"rsa\" }")),
        ("exactly 16 KiB", exactly_max_len()),
    ];
    for (name, token) in controls {
        let v = run(&token, &keyset()).unwrap_or_else(|e| panic!("positive control {name:?} rejected: {e:?}"));
        assert_eq!(v.sub, "alice", "{name}");
        assert_eq!(v.issuer, ISS, "{name}");
    }
    // The oct-key set still verifies the asymmetric keys it holds.
    assert!(verify_with_keys(&rs256(&claims()), &cfg(), &keyset_with_oct(b"s"), NOW).is_ok());
}

/// A correctly signed token of exactly [`MAX_TOKEN_LEN`] bytes (the limit is inclusive).
fn exactly_max_len() -> String {
    let base = rs256(&set("pad", json!(""))).len();
    // 3 payload bytes become 4 base64 chars; find a pad length that lands exactly on the limit.
    for extra in (MAX_TOKEN_LEN - base) * 3 / 4 - 4..(MAX_TOKEN_LEN - base) * 3 / 4 + 4 {
        let t = rs256(&set("pad", json!("x".repeat(extra))));
        if t.len() == MAX_TOKEN_LEN {
            return t;
        }
    }
    panic!("no pad length gives exactly {MAX_TOKEN_LEN} bytes");
}

/// Each signature-level case starts from a token that verifies: the base tokens are positive controls.
#[test]
fn mutation_bases_are_valid() {
    let good = rs256(&claims());
    assert!(run(&good, &keyset()).is_ok());
    let s = sig_bytes(&good);
    assert!(run(&with_sig(&good, &s), &keyset()).is_ok(), "re-encoding the signature is lossless");
    let es = es256(&claims());
    assert!(run(&with_sig(&es, &sig_bytes(&es)), &keyset()).is_ok());
    // The DER re-encoding is a real DER ECDSA signature (it would verify under ring's ASN.1 algorithm).
    let der = ecdsa_fixed_to_der(&sig_bytes(&es));
    let Key::Ec256(kp) = &keys().ec256 else { unreachable!() };
    let input = &es[..es.rfind('.').unwrap()];
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, kp.public_key().as_ref())
        .verify(input.as_bytes(), &der)
        .expect("DER conversion is correct");
}
