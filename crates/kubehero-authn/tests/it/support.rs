//! Test keys (generated at test time, never committed), JWK builders and token signing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use kubehero_authn::{IssuerConfig, KeySet};
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub const ISS: &str = "https://idp.example.com";
pub const AUD: &str = "kubehero";
pub const NOW: i64 = 1_700_000_000;

/// A signing key of one of the shapes under test.
pub enum Key {
    Rsa(RsaKeyPair),
    Ec256(EcdsaKeyPair),
    Ec384(EcdsaKeyPair),
}

pub struct Keys {
    pub rsa: Key,
    pub rsa_other: Key,
    pub ec256: Key,
    pub ec256_other: Key,
    pub ec384: Key,
    /// Modulus of a 1024-bit RSA key (ring refuses to sign with it; only its JWK is needed).
    pub weak_rsa_n: Vec<u8>,
}

/// A private RSA key from the openssl CLI, DER. OpenSSL 3.0's `genpkey -outform DER` writes the traditional
/// PKCS#1 `RSAPrivateKey` rather than PKCS#8 (later versions write PKCS#8), so [`rsa_keypair`] accepts both.
fn openssl_rsa_pkcs8(bits: u32) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", &format!("rsa_keygen_bits:{bits}"), "-outform", "DER"])
        .stderr(Stdio::null())
        .output()
        .expect("openssl CLI is needed to generate RSA test keys");
    assert!(out.status.success(), "openssl genpkey failed");
    out.stdout
}

fn rsa_keypair(der: &[u8]) -> RsaKeyPair {
    RsaKeyPair::from_pkcs8(der)
        .or_else(|_| RsaKeyPair::from_der(der))
        .expect("openssl produced an RSA key ring accepts")
}

fn openssl_modulus(pkcs8: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["pkey", "-inform", "DER", "-noout", "-text_pub"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(pkcs8).unwrap();
    let out = child.wait_with_output().unwrap();
    // "Modulus:\n    00:c3:...\nExponent: 65537 (0x10001)"
    let text = String::from_utf8(out.stdout).unwrap();
    let start = text.find("Modulus:").unwrap() + "Modulus:".len();
    let end = text.find("Exponent").unwrap();
    let hex: String = text[start..end].chars().filter(|c| c.is_ascii_hexdigit()).collect();
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    bytes.into_iter().skip_while(|&b| b == 0).collect()
}

fn ec(alg: &'static signature::EcdsaSigningAlgorithm) -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap()
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: Key::Rsa(rsa_keypair(&openssl_rsa_pkcs8(2048))),
        rsa_other: Key::Rsa(rsa_keypair(&openssl_rsa_pkcs8(2048))),
        ec256: Key::Ec256(ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)),
        ec256_other: Key::Ec256(ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)),
        ec384: Key::Ec384(ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING)),
        weak_rsa_n: openssl_modulus(&openssl_rsa_pkcs8(1024)),
    })
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The public JWK of `key`, with optional `kid` and `alg`.
pub fn jwk(key: &Key, kid: Option<&str>, alg: Option<&str>) -> Value {
    let mut v = match key {
        Key::Rsa(kp) => {
            let c: PublicKeyComponents<Vec<u8>> = kp.public().into();
            json!({"kty":"RSA","n":b64(&c.n),"e":b64(&c.e)})
        }
        Key::Ec256(kp) | Key::Ec384(kp) => {
            let p = kp.public_key().as_ref();
            let len = (p.len() - 1) / 2;
            let crv = if len == 32 { "P-256" } else { "P-384" };
            json!({"kty":"EC","crv":crv,"x":b64(&p[1..1 + len]),"y":b64(&p[1 + len..])})
        }
    };
    if let Some(k) = kid {
        v["kid"] = json!(k);
    }
    if let Some(a) = alg {
        v["alg"] = json!(a);
    }
    v
}

/// Signs `input` with `key` the way `alg` requires (RSA encodings chosen by name; EC keys have theirs).
pub fn sign_input(key: &Key, alg: &str, input: &[u8]) -> Vec<u8> {
    let rng = SystemRandom::new();
    match key {
        Key::Rsa(kp) => {
            let enc: &'static dyn signature::RsaEncoding = match alg {
                "RS384" => &signature::RSA_PKCS1_SHA384,
                "RS512" => &signature::RSA_PKCS1_SHA512,
                "PS256" => &signature::RSA_PSS_SHA256,
                _ => &signature::RSA_PKCS1_SHA256,
            };
            let mut sig = vec![0; kp.public().modulus_len()];
            kp.sign(enc, &rng, input, &mut sig).unwrap();
            sig
        }
        Key::Ec256(kp) | Key::Ec384(kp) => kp.sign(&rng, input).unwrap().as_ref().to_vec(),
    }
}

/// A compact JWS from raw header and payload JSON text (so tests can write duplicates and oddities).
pub fn sign_raw(key: &Key, alg: &str, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = sign_input(key, alg, input.as_bytes());
    format!("{input}.{}", b64(sig))
}

pub fn sign(key: &Key, header: &Value, claims: &Value) -> String {
    let alg = header["alg"].as_str().unwrap_or("RS256").to_string();
    sign_raw(key, &alg, &header.to_string(), &claims.to_string())
}

pub fn claims() -> Value {
    json!({"iss":ISS,"aud":AUD,"sub":"alice","email":"alice@example.com","exp":NOW + 600,"iat":NOW,"groups":["eng","ops"]})
}

pub fn hdr(alg: &str, kid: &str) -> Value {
    json!({"alg":alg,"kid":kid,"typ":"JWT"})
}

pub fn cfg() -> IssuerConfig {
    let mut c = IssuerConfig::new(ISS);
    c.audiences = vec![AUD.to_string(), "other-aud".to_string()];
    c
}

/// The standard test key set: `rsa` (no alg), `rsa-rs512` (alg RS512), `ec256` (alg ES256), `ec384` (no alg),
/// and the skipped `weak` 1024-bit RSA key.
pub fn keyset() -> KeySet {
    let k = keys();
    let doc = json!({"keys":[
        jwk(&k.rsa, Some("rsa"), None),
        jwk(&k.rsa_other, Some("rsa-rs512"), Some("RS512")),
        jwk(&k.ec256, Some("ec256"), Some("ES256")),
        jwk(&k.ec384, Some("ec384"), None),
        {"kty":"RSA","kid":"weak","n":b64(&k.weak_rsa_n),"e":"AQAB"},
    ]});
    let (set, skipped) = KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap();
    assert_eq!(set.len(), 4, "{skipped:?}");
    set
}
