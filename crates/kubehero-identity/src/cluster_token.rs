//! Per-cluster access tokens (`khx_…`): what `kubehero token` hands kubectl. Minted by the control plane from a
//! CLI login for one cluster, short-lived (10 minutes by default), and accepted only on that cluster's
//! Kubernetes surface: every other cluster and the rest of the API refuse them. A token holds its CLI login's
//! digest, its cluster and its expiry under an HMAC (a key derived from `AUDIT_HMAC_KEY`, shared by replicas);
//! each use re-reads the CLI login, so revoking the login (or deprovisioning the person) ends its tokens at once.

use crate::resolve::refused;
use crate::{Identity, IdentityError};
use base64::Engine;
use kubehero_core::{AuthMethod, Principal};
use kubehero_store::{SessionKind, SessionRecord};
use std::sync::Arc;

/// The prefix of a per-cluster token.
pub const PREFIX: &str = "khx_";
/// The default lifetime.
pub const DEFAULT_TTL_SECS: i64 = 600;

/// What a token says: the CLI login's SHA-256 (hex), the cluster, the expiry (Unix seconds).
struct Claims {
    s: String,
    c: String,
    e: i64,
}

/// Mints and opens per-cluster tokens.
pub struct ClusterTokens {
    /// Mints under the current audit HMAC key's; opens under any, so the tokens kubectl holds keep working
    /// across a rotation of `AUDIT_HMAC_KEY`.
    macs: crate::macs::Macs,
}

impl std::fmt::Debug for ClusterTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTokens(<key>)")
    }
}

impl ClusterTokens {
    pub fn new(keys: &[[u8; 32]]) -> ClusterTokens {
        ClusterTokens { macs: crate::macs::Macs::new(keys) }
    }

    /// A token for `cluster`, until `expires_at`, standing on the CLI login whose digest is `login_hash`.
    pub fn mint(&self, login_hash: &str, cluster: &str, expires_at: i64) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = serde_json::json!({ "s": login_hash, "c": cluster, "e": expires_at }).to_string();
        let body = format!("{PREFIX}{}", b64.encode(claims));
        format!("{body}.{}", b64.encode(self.macs.sign(body.as_bytes())))
    }

    fn open(&self, token: &str) -> Option<Claims> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (body, mac) = token.rsplit_once('.')?;
        if !self.macs.verify(body.as_bytes(), &b64.decode(mac).ok()?) {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&b64.decode(body.strip_prefix(PREFIX)?).ok()?).ok()?;
        Some(Claims { s: v["s"].as_str()?.to_string(), c: v["c"].as_str()?.to_string(), e: v["e"].as_i64()? })
    }
}

impl Identity {
    /// The person behind a per-cluster token presented to `cluster`'s Kubernetes surface.
    pub async fn cluster_token(
        &self,
        token: &str,
        cluster: &str,
    ) -> Result<(Principal, Arc<SessionRecord>), IdentityError> {
        let r = self.cluster_token_inner(token, cluster).await;
        self.observer.authentication("cluster_token", if r.is_ok() { "ok" } else { "rejected" });
        r
    }

    async fn cluster_token_inner(
        &self,
        token: &str,
        cluster: &str,
    ) -> Result<(Principal, Arc<SessionRecord>), IdentityError> {
        let now = self.clock.now();
        let claims =
            self.cluster_tokens.open(token).ok_or_else(|| refused("invalid bearer token: not a per-cluster token"))?;
        if claims.c != cluster {
            return Err(refused("invalid bearer token: this per-cluster token is for another cluster"));
        }
        if now >= claims.e {
            return Err(refused(
                "invalid bearer token: the per-cluster token has expired; kubehero token mints a new one",
            ));
        }
        self.behind_login(&claims.s, claims.e).await
    }

    /// The person of the CLI login whose SHA-256 (hex) is `login_hash`, as of now: what a token minted from
    /// that login (a per-cluster token, or a direct token's `sid`) stands for until `expires_at`. Refused when
    /// the login was revoked or expired, or the person was deprovisioned.
    pub async fn behind_login(
        &self,
        login_hash: &str,
        expires_at: i64,
    ) -> Result<(Principal, Arc<SessionRecord>), IdentityError> {
        let now = self.clock.now();
        let key = hex_32(login_hash).ok_or_else(|| refused("invalid bearer token: not a KubeHero cluster token"))?;
        let login = self
            .lookup_digest(&key, login_hash)
            .await?
            .filter(|l| l.kind == SessionKind::CliToken && l.revoked_at.is_none() && now < l.expires_at)
            .ok_or_else(|| refused("invalid bearer token: the CLI login behind this token was revoked or expired"))?;
        let mut principal = self.admit(self.person(&login, AuthMethod::CliToken)).await?;
        principal.expires_at = Some(expires_at.min(login.expires_at));
        Ok((principal, login))
    }
}

fn hex_32(s: &str) -> Option<[u8; 32]> {
    kubehero_core::hex::decode(s)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_open_only_with_their_key_and_unchanged() {
        let t = ClusterTokens::new(&[[7; 32]]);
        let tok = t.mint(&"a".repeat(64), "prod", 100);
        assert!(tok.starts_with(PREFIX));
        let c = t.open(&tok).unwrap();
        assert_eq!((c.c.as_str(), c.e), ("prod", 100));
        assert!(ClusterTokens::new(&[[8; 32]]).open(&tok).is_none(), "another key");
        // After a rotation (the new key first, the old one kept as previous) the tokens kubectl holds still open;
        // new ones are minted under the new key.
        let rotated = ClusterTokens::new(&[[8; 32], [7; 32]]);
        assert!(rotated.open(&tok).is_some());
        assert!(t.open(&rotated.mint(&"a".repeat(64), "prod", 100)).is_none());
        let forged = tok.replacen("khx_", "khx_e", 1);
        assert!(t.open(&forged).is_none());
        assert!(t.open("khx_nothing").is_none());
    }
}
