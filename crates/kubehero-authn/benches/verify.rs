//! Verification throughput: is the JWT pipeline bound by the signature check, and does the token cache pay?
//!
//! For RS256 (2048-bit) and ES256, N distinct tokens (distinct `sub`/`jti`) are generated once, then on one
//! thread:
//! - raw:    ring's `UnparsedPublicKey::verify` on each token's signing input and decoded signature;
//! - cold:   the full public pipeline per token — `verify_with_keys` (size, base64, strict JSON, header and
//!   claim checks, key selection, signature, claim extraction), building the `Principal` the way the server
//!   does (group bindings → grants) and `kubehero_core::authorize`; every token distinct, nothing cached;
//! - cached: a `TokenCache` hit for a repeated token, then the same principal build and `authorize`.
//!
//! Targets: cold/raw >= 0.85 (the pipeline adds at most ~15 % over the signature itself) and
//! cached/cold <= 0.10. The machine is shared and noisy, so each measurement runs several rounds and the
//! best round is reported. Run with `cargo bench -p kubehero-authn --bench verify` (release profile).
//! Test keys are generated at run time (ring for EC, the openssl CLI for RSA); nothing is committed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use kubehero_authn::{verify_with_keys, IssuerConfig, KeySet, TokenCache, VerifiedToken};
use kubehero_core::{
    authorize, normalize_grants, Action, AuthMethod, Binding, BindingSubject, Grant, Principal, PrincipalKind, Role,
    Scope, Target,
};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};
use serde_json::json;
use std::hint::black_box;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const N: usize = 2000;
const ROUNDS: usize = 5;
const ISS: &str = "https://idp.example.com";
const AUD: &str = "kubehero";
const NOW: i64 = 1_700_000_000;

fn b64(b: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn rsa_key() -> RsaKeyPair {
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-outform", "DER"])
        .stderr(Stdio::null())
        .output()
        .expect("the openssl CLI is needed to generate the RSA bench key");
    assert!(out.status.success());
    // OpenSSL 3.0 writes PKCS#1 here, later versions PKCS#8.
    RsaKeyPair::from_pkcs8(&out.stdout).or_else(|_| RsaKeyPair::from_der(&out.stdout)).unwrap()
}

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

struct Alg {
    name: &'static str,
    kid: &'static str,
    signer: Signer,
    /// The public key as ring's `UnparsedPublicKey` wants it, and the matching algorithm.
    public: Vec<u8>,
    raw_alg: &'static dyn signature::VerificationAlgorithm,
}

impl Alg {
    fn sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Rsa(kp) => {
                let mut sig = vec![0; kp.public().modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig).unwrap();
                sig
            }
            Signer::Ec(kp) => kp.sign(&rng, input).unwrap().as_ref().to_vec(),
        }
    }

    fn jwk(&self) -> serde_json::Value {
        match &self.signer {
            Signer::Rsa(kp) => {
                let c: ring::rsa::PublicKeyComponents<Vec<u8>> = kp.public().into();
                json!({"kty":"RSA","kid":self.kid,"alg":self.name,"use":"sig","n":b64(&c.n),"e":b64(&c.e)})
            }
            Signer::Ec(kp) => {
                let p = kp.public_key().as_ref();
                json!({"kty":"EC","kid":self.kid,"alg":self.name,"crv":"P-256","x":b64(&p[1..33]),"y":b64(&p[33..])})
            }
        }
    }
}

struct Token {
    jwt: String,
    signing_input_len: usize,
    signature: Vec<u8>,
}

fn make_tokens(alg: &Alg) -> Vec<Token> {
    let header = b64(json!({"alg":alg.name,"kid":alg.kid,"typ":"JWT"}).to_string());
    (0..N)
        .map(|i| {
            let claims = json!({
                "iss": ISS, "aud": AUD, "sub": format!("user-{i:05}"), "jti": format!("{:016x}", i * 7919),
                "email": format!("user-{i:05}@example.com"), "iat": NOW - 10, "exp": NOW + 3600,
                "groups": ["engineering", if i % 2 == 0 { "sre" } else { "dev" }],
            });
            let input = format!("{header}.{}", b64(claims.to_string()));
            let signature = alg.sign(input.as_bytes());
            let jwt = format!("{input}.{}", b64(&signature));
            Token { jwt, signing_input_len: input.len(), signature }
        })
        .collect()
}

/// The server's principal construction, reduced to what authorization reads: group bindings → grants,
/// legacy `kh_roles` only when nothing matched, `viewer` by default.
fn principal(v: &VerifiedToken, bindings: &[Binding]) -> Principal {
    let mut grants: Vec<Grant> = bindings
        .iter()
        .filter(|b| b.applies_to(&kubehero_core::subject_key(Some(&v.issuer), &v.sub), v.email.as_deref(), &v.groups))
        .map(|b| Grant { role: b.role, scope: b.scope.clone() })
        .collect();
    if grants.is_empty() {
        grants.extend(v.legacy_roles.iter().filter_map(|r| r.parse::<Role>().ok()).map(Grant::global));
    }
    Principal {
        kind: PrincipalKind::Person,
        sub: v.sub.clone(),
        email: v.email.clone(),
        groups: v.groups.clone(),
        issuer: Some(v.issuer.clone()),
        auth_method: AuthMethod::Jwt,
        owner: None,
        grants: normalize_grants(grants),
        expires_at: Some(v.exp),
    }
}

fn bindings() -> Vec<Binding> {
    vec![
        Binding { subject: BindingSubject::Group("sre".into()), role: Role::Admin, scope: Scope::Global },
        Binding {
            subject: BindingSubject::Group("dev".into()),
            role: Role::Member,
            scope: Scope::Cluster { cluster: "prod-*".into() },
        },
        Binding { subject: BindingSubject::Group("auditors".into()), role: Role::Auditor, scope: Scope::Global },
    ]
}

/// Runs `f` over every token `ROUNDS` times and returns the best round's mean time per op.
fn best_per_op(tokens: &[Token], mut f: impl FnMut(&Token)) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for t in tokens {
            f(t);
        }
        best = best.min(start.elapsed() / tokens.len() as u32);
    }
    best
}

fn ops(d: Duration) -> f64 {
    1.0 / d.as_secs_f64()
}

fn main() {
    let rng = SystemRandom::new();
    let ec_pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref(), &rng).unwrap();
    let rsa = rsa_key();
    let algs = [
        Alg {
            name: "RS256",
            kid: "rsa",
            public: rsa.public().as_ref().to_vec(),
            signer: Signer::Rsa(rsa),
            raw_alg: &signature::RSA_PKCS1_2048_8192_SHA256,
        },
        Alg {
            name: "ES256",
            kid: "ec",
            public: ec.public_key().as_ref().to_vec(),
            signer: Signer::Ec(ec),
            raw_alg: &signature::ECDSA_P256_SHA256_FIXED,
        },
    ];
    let jwks = json!({"keys": algs.iter().map(Alg::jwk).collect::<Vec<_>>()}).to_string();
    let (keys, skipped) = KeySet::from_jwks_json(jwks.as_bytes()).unwrap();
    assert!(skipped.is_empty() && keys.len() == 2, "{skipped:?}");
    let mut cfg = IssuerConfig::new(ISS);
    cfg.audiences = vec![AUD.into()];
    let bindings = bindings();
    let target = Target::cluster("prod-eu-1");

    println!("kubehero-authn verify bench: N = {N} distinct tokens per alg, best of {ROUNDS} rounds, 1 thread");
    println!();
    println!(
        "{:<6} {:>12} {:>12} {:>10} {:>14} {:>12} {:>14}",
        "alg", "raw ops/s", "cold ops/s", "cold/raw", "cached ns/op", "cold ns/op", "cached/cold"
    );
    let mut ok = true;
    for alg in &algs {
        let tokens = make_tokens(alg);
        // Sanity: everything verifies and is allowed before anything is timed.
        for t in &tokens {
            let v = verify_with_keys(&t.jwt, &cfg, &keys, NOW).unwrap();
            assert!(authorize(&principal(&v, &bindings), Action::ClusterGet, target).is_allowed());
            UnparsedPublicKey::new(alg.raw_alg, &alg.public)
                .verify(&t.jwt.as_bytes()[..t.signing_input_len], &t.signature)
                .unwrap();
        }

        let raw = best_per_op(&tokens, |t| {
            let key = UnparsedPublicKey::new(alg.raw_alg, &alg.public);
            let r = key.verify(black_box(&t.jwt.as_bytes()[..t.signing_input_len]), black_box(&t.signature));
            black_box(r.is_ok());
        });
        let cold = best_per_op(&tokens, |t| {
            let v = verify_with_keys(black_box(&t.jwt), &cfg, &keys, NOW).unwrap();
            let p = principal(&v, &bindings);
            black_box(authorize(&p, Action::ClusterGet, target));
        });
        let cache = TokenCache::new(10_000);
        let repeated = &tokens[0];
        cache.insert(&repeated.jwt, Arc::new(verify_with_keys(&repeated.jwt, &cfg, &keys, NOW).unwrap()));
        // The same repeated token N times per round (a client reusing its bearer token).
        let same: Vec<&Token> = std::iter::repeat_n(repeated, N).collect();
        let mut best_cached = Duration::MAX;
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for t in &same {
                let v = cache.get(black_box(&t.jwt), NOW).unwrap();
                let p = principal(&v, &bindings);
                black_box(authorize(&p, Action::ClusterGet, target));
            }
            best_cached = best_cached.min(start.elapsed() / N as u32);
        }

        let cold_raw = ops(cold) / ops(raw);
        let cached_cold = best_cached.as_secs_f64() / cold.as_secs_f64();
        ok &= cold_raw >= 0.85 && cached_cold <= 0.10;
        println!(
            "{:<6} {:>12.0} {:>12.0} {:>10.3} {:>14.0} {:>12.0} {:>14.4}",
            alg.name,
            ops(raw),
            ops(cold),
            cold_raw,
            best_cached.as_nanos(),
            cold.as_nanos(),
            cached_cold
        );
    }
    println!();
    println!("targets: cold/raw >= 0.85, cached/cold <= 0.10 — {}", if ok { "met" } else { "NOT MET" });
}
