//! What the agent and the control plane's agent listener say to each other (HTTP/1.1 over TLS 1.3).
//!
//! - `POST /agent/v1/join` (no client certificate): a join token and a CSR → the first certificate.
//! - `POST /agent/v1/renew` (client certificate): a CSR for a new key → the next certificate.
//! - `GET /agent/v1/tunnel` with `Upgrade: kubehero-tunnel/1` (client certificate) → `101`, after which the
//!   connection carries HTTP/2 with the roles turned round: the control plane is the client and opens one
//!   `CONNECT` stream per request it sends to the cluster; the agent is the server.
//!
//! Errors are `{"error": {"code": …, "message": …}}` like the API's.

use serde::{Deserialize, Serialize};

pub const JOIN_PATH: &str = "/agent/v1/join";
pub const RENEW_PATH: &str = "/agent/v1/renew";
pub const TUNNEL_PATH: &str = "/agent/v1/tunnel";
/// The `Upgrade` token of the tunnel.
pub const TUNNEL_PROTOCOL: &str = "kubehero-tunnel/1";
/// The agent's version, sent on the tunnel request.
pub const AGENT_VERSION_HEADER: &str = "x-kubehero-agent-version";
/// The authority of the tunnel's `CONNECT` streams (the agent forwards every stream to its API server).
pub const STREAM_AUTHORITY: &str = "kube-apiserver.kubehero:443";
/// A join token's prefix.
pub const JOIN_TOKEN_PREFIX: &str = "khj_";

/// `POST /agent/v1/join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub cluster: String,
    /// `khj_…`; never logged.
    pub token: String,
    /// PEM; its subject CN must be `cluster`.
    pub csr_pem: String,
}

/// `POST /agent/v1/renew`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr_pem: String,
}

/// The answer to a join or renewal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertResponse {
    /// The client certificate (PEM).
    pub cert_pem: String,
    /// Every CA the control plane trusts for agents, newest first (PEM): the agent trusts these for the
    /// control plane's listener from now on.
    pub ca_pem: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// An error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// Headers the control plane puts on a stream's request to say whom the agent must impersonate (the user, each
/// group, the uid, each extra); the agent turns them into `Impersonate-*` and refuses a request that carries an
/// `Authorization`, `Impersonate-*` or `X-Remote-*` header of its own.
pub const IMPERSONATE_USER: &str = "kubehero-impersonate-user";
pub const IMPERSONATE_GROUP: &str = "kubehero-impersonate-group";
pub const IMPERSONATE_UID: &str = "kubehero-impersonate-uid";
/// Followed by the extra's key, percent-encoded as `Impersonate-Extra-` keys are.
pub const IMPERSONATE_EXTRA: &str = "kubehero-impersonate-extra-";
