//! The kinds of credential KubeHero issues or accepts, their prefixes and lifetimes, and minting the ones it
//! issues itself (dashboard sessions, CLI tokens). Secrets are random (ring's system generator); a failure to
//! get randomness is an error, never a weaker fallback. Only their SHA-256 is stored.

use crate::IdentityError;
use base64::Engine;
use kubehero_authn::sha256_hex;
use kubehero_store::{SessionKind, SessionRecord};
use ring::rand::{SecureRandom, SystemRandom};

pub use kubehero_authn::API_KEY_PREFIX;
/// Prefix of CLI tokens (`kubehero login`).
pub const CLI_TOKEN_PREFIX: &str = "khc_";
/// Prefix of dashboard session secrets (the `kh_session` cookie).
pub const SESSION_PREFIX: &str = "khs_";
/// A session's idle lifetime: each use slides it (seed: 8 h sliding).
pub const SESSION_IDLE_SECS: i64 = 8 * 3600;
/// A session's absolute cap, however active.
pub const SESSION_MAX_SECS: i64 = 24 * 3600;
/// A session or CLI token's `last_seen_at` is written at most this often.
pub const SESSION_TOUCH_SECS: i64 = 60;
/// A CLI token's lifetime (seed: 30 days; `kubehero auth rotate` replaces it).
pub const CLI_TOKEN_SECS: i64 = 30 * 86_400;

/// What a presented credential is, by its shape: what metrics and audit rows call it, including when it is
/// refused (nothing of the credential itself is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// An OIDC JWT from a configured issuer.
    Jwt,
    /// A managed (`khk_…`) or static API key.
    ApiKey,
    /// A CLI token (`khc_…`).
    CliToken,
    /// A per-cluster access token (`khx_…`), good only on its cluster's Kubernetes surface.
    ClusterToken,
    /// A dashboard session cookie.
    Session,
    /// The SCIM client's bearer token.
    ScimToken,
    /// No credential at all.
    None,
}

impl CredentialKind {
    /// The kind of a bearer token, by its prefix or shape. Static API keys have no fixed shape, so anything
    /// that is neither a CLI token, a managed key nor a JWT is taken for one.
    pub fn of_bearer(token: &str) -> CredentialKind {
        if token.starts_with(CLI_TOKEN_PREFIX) {
            CredentialKind::CliToken
        } else if token.starts_with(crate::cluster_token::PREFIX) {
            CredentialKind::ClusterToken
        } else if token.starts_with(API_KEY_PREFIX) {
            CredentialKind::ApiKey
        } else if kubehero_authn::looks_like_jwt(token) {
            CredentialKind::Jwt
        } else {
            CredentialKind::ApiKey
        }
    }

    /// The snake-case name used in metrics labels and audit rows.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Jwt => "jwt",
            CredentialKind::ApiKey => "api_key",
            CredentialKind::CliToken => "cli_token",
            CredentialKind::ClusterToken => "cluster_token",
            CredentialKind::Session => "session",
            CredentialKind::ScimToken => "scim",
            CredentialKind::None => "none",
        }
    }
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, IdentityError> {
    let mut b = vec![0u8; n];
    SystemRandom::new().fill(&mut b).map_err(|_| IdentityError::NoRandomness)?;
    Ok(b)
}

/// `n` random bytes, base64url without padding.
pub fn random_b64(n: usize) -> Result<String, IdentityError> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(n)?))
}

/// A random (version 4) UUID, for resource ids.
pub fn random_uuid() -> Result<String, IdentityError> {
    let mut b = random_bytes(16)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String =
        b.iter().flat_map(|x| [HEX[usize::from(x >> 4)], HEX[usize::from(x & 15)]]).map(char::from).collect();
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The person a session or CLI token is minted for: what their sign-in established.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub sub: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub issuer: Option<String>,
    /// The client's user agent, shortened.
    pub user_agent: Option<String>,
}

fn record(secret: &str, kind: SessionKind, who: SignedIn, now: i64, idle: i64, max: i64) -> SessionRecord {
    let hash = sha256_hex(secret);
    SessionRecord {
        id: hash[..16].to_string(),
        hash,
        kind,
        sub: who.sub,
        email: who.email,
        groups: who.groups,
        issuer: who.issuer,
        csrf: None,
        created_at: now,
        last_seen_at: now,
        expires_at: now + idle,
        absolute_expires_at: now + max,
        revoked_at: None,
        user_agent: who.user_agent,
    }
}

/// A new CLI token: the secret (shown once) and its record (to store).
pub fn mint_cli_token(who: SignedIn, now: i64) -> Result<(String, SessionRecord), IdentityError> {
    let secret = format!("{CLI_TOKEN_PREFIX}{}", random_b64(32)?);
    let r = record(&secret, SessionKind::CliToken, who, now, CLI_TOKEN_SECS, CLI_TOKEN_SECS);
    Ok((secret, r))
}

/// A new dashboard session with its CSRF token: the secret (the cookie) and its record (to store).
pub fn mint_session(who: SignedIn, now: i64) -> Result<(String, SessionRecord), IdentityError> {
    let secret = format!("{SESSION_PREFIX}{}", random_b64(32)?);
    let mut r = record(&secret, SessionKind::Session, who, now, SESSION_IDLE_SECS, SESSION_MAX_SECS);
    r.csrf = Some(random_b64(24)?);
    Ok((secret, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_shape() {
        assert_eq!(CredentialKind::of_bearer("khc_abc"), CredentialKind::CliToken);
        assert_eq!(CredentialKind::of_bearer("khk_abc"), CredentialKind::ApiKey);
        assert_eq!(CredentialKind::of_bearer("eyJh.eyJz.sig"), CredentialKind::Jwt);
        assert_eq!(CredentialKind::of_bearer("some-static-key-0123456789"), CredentialKind::ApiKey);
    }

    #[test]
    fn uuids_are_version_4() {
        let u = random_uuid().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(u, random_uuid().unwrap());
    }

    #[test]
    fn minted_secrets_are_stored_only_as_hashes() {
        let who = SignedIn { sub: "a".into(), email: None, groups: vec![], issuer: None, user_agent: None };
        let (secret, r) = mint_cli_token(who.clone(), 100).unwrap();
        assert!(secret.starts_with(CLI_TOKEN_PREFIX));
        assert_eq!(r.hash, sha256_hex(&secret));
        assert!(!format!("{r:?}").contains(&secret));
        assert_eq!(r.expires_at, 100 + CLI_TOKEN_SECS);
        let (secret, r) = mint_session(who, 100).unwrap();
        assert!(secret.starts_with(SESSION_PREFIX) && r.csrf.is_some());
        assert_eq!((r.expires_at, r.absolute_expires_at), (100 + SESSION_IDLE_SECS, 100 + SESSION_MAX_SECS));
    }
}
