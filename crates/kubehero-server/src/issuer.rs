//! KubeHero's own OIDC issuer: what lets a cluster's API server trust KubeHero directly
//! (`--oidc-issuer-url`, or a JWT authenticator in `AuthenticationConfiguration`). The issuer is
//! `KUBEHERO_PUBLIC_URL`; it publishes `/.well-known/openid-configuration` and its JWKS at `/openid/v1/jwks`,
//! and signs the short-lived direct tokens of `kubehero token --direct`: ES256 with its own keys, or RS256 (for
//! API servers that take nothing else, e.g. managed ones) with operator-made keys from `KUBEHERO_ISSUER_RSA_KEYS`.
//!
//! Keys live in the store with their private half sealed (see [`crate::sealed`]), so every replica signs with
//! the same key and publishes the same set. A rotation adds a key that is published at once and signs only
//! after `KUBEHERO_ISSUER_KEY_LEAD_SECS`; the key it replaces stays published for a day after. So an API server
//! with a cached JWKS never meets a token whose key it cannot find (and go-oidc, behind kube-apiserver, fetches
//! the JWKS again when it meets an unknown `kid`).

use base64::Engine;
use kubehero_store::{IssuerKey, Store, StoreError};
use parking_lot::RwLock;
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::sync::Arc;

/// The label the issuer keys' sealing key is derived under.
const SEAL_LABEL: &[u8] = b"kubehero-issuer-key-v1";
/// How long a replaced key stays in the JWKS.
pub const KEEP_SECS: i64 = 86_400;
/// The id of the first key (fixed, so replicas starting together make only one).
const FIRST_KEY_ID: &str = "kubehero-1";

/// Why the issuer could not load, make or use a key (never holding the key).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IssuerError(pub String);

/// One key's place in the rotation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyState {
    pub kid: String,
    pub alg: String,
    pub created_at: i64,
    /// When it signs (or signed) from.
    pub signs_from: i64,
    /// When a newer key took over (`None`: it still signs, or has not yet started).
    pub replaced_at: Option<i64>,
    /// `staged`, `signing`, `published` (replaced, still in the JWKS) or `dropped`.
    pub state: &'static str,
}

/// An RS256 key from `KUBEHERO_ISSUER_RSA_KEYS` (ring signs RSA but cannot make RSA keys: the operator does).
struct RsaKey {
    kid: String,
    pair: Arc<RsaKeyPair>,
    jwk: Value,
}

/// Reads RSA private keys (PKCS#8 or PKCS#1 PEM); the first signs RS256 tokens, the rest stay published.
fn load_rsa(files: &[std::path::PathBuf]) -> Result<Vec<RsaKey>, IssuerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let mut keys = Vec::new();
    for f in files {
        let bad = |why: &str| IssuerError(format!("KUBEHERO_ISSUER_RSA_KEYS: {}: {why}", f.display()));
        let der = PrivateKeyDer::from_pem_file(f).map_err(|e| bad(&e.to_string()))?;
        let pair = match &der {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err(bad("not an RSA private key")),
        }
        .map_err(|e| bad(&format!("not a usable RSA key ({e}); make one with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`")))?;
        let parts: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
        let (n, e) = (b64(&parts.n), b64(&parts.e));
        let thumbprint = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = b64(ring::digest::digest(&ring::digest::SHA256, thumbprint.as_bytes()).as_ref());
        let jwk = json!({"kty": "RSA", "n": n, "e": e, "kid": kid, "alg": "RS256", "use": "sig"});
        keys.push(RsaKey { kid, pair: Arc::new(pair), jwk });
    }
    Ok(keys)
}

struct Loaded {
    /// The key rows' ids, to open the signing key again only when they change.
    rows: String,
    signer: Option<(String, Arc<EcdsaKeyPair>)>,
    keys: Vec<KeyState>,
    jwks: Value,
}

/// The issuer's keys, as this replica last read them.
pub struct Issuer {
    /// `KUBEHERO_PUBLIC_URL`; `None`: the issuer is off.
    url: Option<String>,
    seal: Arc<kubehero_audit::HmacKeys>,
    lead: i64,
    loaded: RwLock<Loaded>,
    rsa: Vec<RsaKey>,
    /// Tokens whose signature was checked (by SHA-256), with their claims: an API server's replicas and cache
    /// misses ask about the same token again; expiry and issuer are checked every time.
    verified: parking_lot::Mutex<lru::LruCache<[u8; 32], (String, Value)>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("url", &self.url).finish_non_exhaustive()
    }
}

fn verified_cache() -> parking_lot::Mutex<lru::LruCache<[u8; 32], (String, Value)>> {
    parking_lot::Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::MIN.saturating_add(4095)))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A new P-256 key: its sealed PKCS#8 and public JWK, the `kid` its RFC 7638 thumbprint.
fn new_key(seal: &kubehero_audit::HmacKeys, now: i64, id: Option<&str>) -> Result<IssuerKey, IssuerError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| IssuerError("making an issuer key failed".into()))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| IssuerError("the new issuer key cannot be read back".into()))?;
    let point = pair.public_key().as_ref();
    let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
    // RFC 7638: the required members in lexicographic order, no spaces.
    let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = id.map_or_else(
        || b64(ring::digest::digest(&ring::digest::SHA256, thumbprint.as_bytes()).as_ref()),
        str::to_string,
    );
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"});
    let sealed = crate::sealed::seal(seal, SEAL_LABEL, &b64(pkcs8.as_ref()))
        .map_err(|e| IssuerError(format!("sealing the issuer key: {e}")))?;
    Ok(IssuerKey { id: kid, alg: "ES256".into(), public_jwk: jwk.to_string(), sealed_key: sealed, created_at: now })
}

/// Which key signs at `now`, and which are published: each key signs from its creation plus the lead (the
/// first at once) until the next one starts.
fn schedule(rows: &[IssuerKey], lead: i64, now: i64) -> Vec<KeyState> {
    let starts: Vec<i64> =
        rows.iter().enumerate().map(|(i, k)| if i == 0 { k.created_at } else { k.created_at + lead }).collect();
    // The signer: the newest key whose time has come.
    let signer = starts.iter().rposition(|s| *s <= now);
    rows.iter()
        .enumerate()
        .map(|(i, k)| {
            let replaced_at = signer.filter(|s| *s > i).and_then(|_| starts.get(i + 1).copied());
            let state = match (Some(i) == signer, replaced_at) {
                (true, _) => "signing",
                (false, Some(at)) if now < at + KEEP_SECS => "published",
                (false, Some(_)) => "dropped",
                (false, None) => "staged",
            };
            KeyState {
                kid: k.id.clone(),
                alg: k.alg.clone(),
                created_at: k.created_at,
                signs_from: starts[i],
                replaced_at,
                state,
            }
        })
        .collect()
}

impl Issuer {
    /// Loads the keys (making the first one on a fresh store). `url`: `KUBEHERO_PUBLIC_URL`; `rsa`:
    /// `KUBEHERO_ISSUER_RSA_KEYS`.
    pub async fn start(
        url: Option<String>,
        seal: Arc<kubehero_audit::HmacKeys>,
        (lead, rsa): (i64, &[std::path::PathBuf]),
        store: &dyn Store,
        now: i64,
    ) -> Result<Issuer, IssuerError> {
        let empty = Loaded { rows: String::new(), signer: None, keys: Vec::new(), jwks: json!({"keys": []}) };
        let rsa = load_rsa(rsa)?;
        let issuer = Issuer { url, seal, lead, loaded: RwLock::new(empty), rsa, verified: verified_cache() };
        if store.issuer_keys().await.map_err(|e| IssuerError(format!("reading issuer keys: {e}")))?.is_empty() {
            let first = new_key(&issuer.seal, now, Some(FIRST_KEY_ID))?;
            match store.insert_issuer_key(&first).await {
                Ok(()) => tracing::info!("created the first signing key of KubeHero's OIDC issuer"),
                Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(IssuerError(format!("storing the first issuer key: {e}"))),
            }
        }
        issuer.refresh(store, now).await?;
        Ok(issuer)
    }

    /// The issuer URL, when `KUBEHERO_PUBLIC_URL` is set.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// Reads the keys again (another replica may have rotated) and moves the signer on when its time came.
    pub async fn refresh(&self, store: &dyn Store, now: i64) -> Result<(), IssuerError> {
        let rows = store.issuer_keys().await.map_err(|e| IssuerError(format!("reading issuer keys: {e}")))?;
        let keys = schedule(&rows, self.lead, now);
        let signing = keys.iter().position(|k| k.state == "signing");
        let stamp: String = rows.iter().map(|k| format!("{};", k.id)).collect();
        let same_signer = {
            let l = self.loaded.read();
            l.rows == stamp && l.signer.as_ref().map(|s| &s.0) == signing.map(|i| &rows[i].id)
        };
        let signer = match signing {
            Some(i) if !same_signer => Some((rows[i].id.clone(), Arc::new(self.open(&rows[i])?))),
            Some(_) => self.loaded.read().signer.clone(),
            None => None,
        };
        let jwks: Vec<Value> = rows
            .iter()
            .zip(&keys)
            .filter(|(_, s)| s.state != "dropped")
            .filter_map(|(k, _)| serde_json::from_str(&k.public_jwk).ok())
            .chain(self.rsa.iter().map(|k| k.jwk.clone()))
            .collect();
        *self.loaded.write() = Loaded { rows: stamp, signer, keys, jwks: json!({ "keys": jwks }) };
        Ok(())
    }

    fn open(&self, key: &IssuerKey) -> Result<EcdsaKeyPair, IssuerError> {
        let what = format!("the issuer key {:?}", key.id);
        let text = crate::sealed::open(&self.seal, SEAL_LABEL, &key.sealed_key, &what).map_err(|e| IssuerError(e.0))?;
        let der = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| IssuerError(format!("{what} is not base64 inside its seal")))?;
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &ring::rand::SystemRandom::new())
            .map_err(|_| IssuerError(format!("{what} is not a P-256 key")))
    }

    /// A new key for a rotation (the caller stores it with its audit row, then calls [`Issuer::refresh`]): it is
    /// published at once and signs after the lead time.
    pub fn new_key(&self, now: i64) -> Result<IssuerKey, IssuerError> {
        new_key(&self.seal, now, None)
    }

    /// Every key and its place in the rotation, oldest first.
    pub fn keys(&self) -> Vec<KeyState> {
        self.loaded.read().keys.clone()
    }

    /// Whether a key with this `kid` is published.
    fn publishes(&self, kid: &str) -> bool {
        self.loaded.read().jwks["keys"].as_array().is_some_and(|keys| keys.iter().any(|k| k["kid"] == kid))
    }

    /// The published keys (`{"keys": [...]}`).
    pub fn jwks(&self) -> Value {
        self.loaded.read().jwks.clone()
    }

    /// The discovery document, when the issuer is on.
    pub fn discovery(&self) -> Option<Value> {
        let url = self.url.as_deref()?;
        Some(json!({
            "issuer": url,
            "jwks_uri": format!("{url}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": if self.rsa.is_empty() { json!(["ES256"]) } else { json!(["ES256", "RS256"]) },
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "email", "username", "groups", "auth_method"],
        }))
    }

    /// The claims of a token this issuer signed with a key it still publishes, whose `iss` is this issuer and
    /// which is valid at `now` (30 s of clock skew allowed); why not otherwise.
    pub fn verify(&self, token: &str, now: i64) -> Result<Value, String> {
        let url = self.url.as_deref().ok_or("KubeHero's issuer is off")?;
        let digest: [u8; 32] =
            ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref().try_into().map_err(|_| "digest")?;
        let cached = self.verified.lock().get(&digest).cloned();
        let claims = match cached {
            // Its key must still be published (a dropped key ends its tokens).
            Some((kid, claims)) if self.publishes(&kid) => claims,
            _ => {
                let (kid, claims) = self.check_signature(token)?;
                self.verified.lock().put(digest, (kid, claims.clone()));
                claims
            }
        };
        if claims["iss"] != url {
            return Err("issued by another issuer".into());
        }
        match (claims["exp"].as_i64(), claims["nbf"].as_i64().unwrap_or(0)) {
            (Some(exp), nbf) if nbf <= now + 30 && now < exp + 30 => Ok(claims),
            (Some(_), _) => Err("the token has expired or is not yet valid".into()),
            (None, _) => Err("the token has no expiry".into()),
        }
    }

    /// The `kid` and claims of a token whose ES256 signature verifies with a published key.
    fn check_signature(&self, token: &str) -> Result<(String, Value), String> {
        let d = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|_| "not a JWT");
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err("not a JWT".into());
        };
        let header: Value = serde_json::from_slice(&d(h)?).map_err(|_| "not a JWT")?;
        if header["alg"] == "RS256" {
            let key = self
                .rsa
                .iter()
                .find(|k| header["kid"] == k.kid.as_str())
                .ok_or("not signed by a key KubeHero's issuer publishes")?;
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                key.pair.public().as_ref(),
            )
            .verify(format!("{h}.{c}").as_bytes(), &d(sig)?)
            .map_err(|_| "the signature does not verify")?;
            let claims: Value = serde_json::from_slice(&d(c)?).map_err(|_| "the claims are not JSON")?;
            return Ok((key.kid.clone(), claims));
        }
        if header["alg"] != "ES256" {
            return Err("not signed by KubeHero's issuer (alg)".into());
        }
        let jwks = self.jwks();
        let jwk = jwks["keys"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["kid"] == header["kid"]))
            .ok_or("not signed by a key KubeHero's issuer publishes")?;
        let mut point = vec![4u8];
        point.extend(d(jwk["x"].as_str().unwrap_or_default())?);
        point.extend(d(jwk["y"].as_str().unwrap_or_default())?);
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(format!("{h}.{c}").as_bytes(), &d(sig)?)
            .map_err(|_| "the signature does not verify")?;
        let claims: Value = serde_json::from_slice(&d(c)?).map_err(|_| "the claims are not JSON")?;
        Ok((header["kid"].as_str().unwrap_or_default().to_string(), claims))
    }

    /// A compact JWS of `claims` (which must hold `iss`, `aud`, `exp`): `ES256` with the current signing key, or
    /// `RS256` with the first key of `KUBEHERO_ISSUER_RSA_KEYS`.
    pub fn sign(&self, claims: &Value, alg: &str) -> Result<String, IssuerError> {
        let rng = ring::rand::SystemRandom::new();
        let input = |kid: &str| {
            let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
            format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()))
        };
        if alg == "RS256" {
            let key = self.rsa.first().ok_or_else(|| {
                IssuerError("RS256 needs an RSA key: set KUBEHERO_ISSUER_RSA_KEYS on the control plane".into())
            })?;
            let input = input(&key.kid);
            let mut sig = vec![0u8; key.pair.public().modulus_len()];
            key.pair
                .sign(&ring::signature::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                .map_err(|_| IssuerError("signing failed".into()))?;
            return Ok(format!("{input}.{}", b64(&sig)));
        }
        let (kid, pair) =
            self.loaded.read().signer.clone().ok_or_else(|| IssuerError("the issuer has no signing key".into()))?;
        let input = input(&kid);
        let sig = pair.sign(&rng, input.as_bytes()).map_err(|_| IssuerError("signing failed".into()))?;
        Ok(format!("{input}.{}", b64(sig.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, created_at: i64) -> IssuerKey {
        IssuerKey { id: id.into(), alg: "ES256".into(), public_jwk: "{}".into(), sealed_key: String::new(), created_at }
    }

    #[test]
    fn a_token_verifies_with_the_published_key() {
        let seal = kubehero_audit::HmacKeys::new(b"test-audit-hmac-key-0123456789abcdef", &[]).unwrap();
        for id in [Some("kubehero-1"), None] {
            let key = new_key(&seal, 0, id).unwrap();
            let issuer = Issuer {
                url: None,
                seal: Arc::new(kubehero_audit::HmacKeys::new(b"test-audit-hmac-key-0123456789abcdef", &[]).unwrap()),
                lead: 0,
                loaded: RwLock::new(Loaded { rows: String::new(), signer: None, keys: Vec::new(), jwks: json!({}) }),
                rsa: Vec::new(),
                verified: verified_cache(),
            };
            let pair = issuer.open(&key).unwrap();
            issuer.loaded.write().signer = Some((key.id.clone(), Arc::new(pair)));
            let jwt = issuer.sign(&json!({"a": 1}), "ES256").unwrap();
            let jwk: Value = serde_json::from_str(&key.public_jwk).unwrap();
            let d = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap();
            let mut point = vec![4u8];
            point.extend(d(jwk["x"].as_str().unwrap()));
            point.extend(d(jwk["y"].as_str().unwrap()));
            let (input, sig) = jwt.rsplit_once('.').unwrap();
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(input.as_bytes(), &d(sig))
                .unwrap();
        }
    }

    #[test]
    fn a_new_key_is_published_before_it_signs_and_the_old_one_after() {
        let rows = [key("a", 0), key("b", 1000)];
        let states = |now| schedule(&rows, 600, now).iter().map(|k| k.state).collect::<Vec<_>>();
        assert_eq!(states(500), ["signing", "staged"]);
        assert_eq!(states(1100), ["signing", "staged"]);
        assert_eq!(states(1600), ["published", "signing"]);
        assert_eq!(states(1600 + KEEP_SECS), ["dropped", "signing"]);
    }
}
