//! The audit record: what happened, who did it, to what, with which result. One type for every source (API,
//! SCIM, login, proxy, failed authentication) so that one writer, one chain and one verifier serve them all.
//!
//! A record never holds a credential: the actor is identified by `sub` (an API key by the first 16 hex chars
//! of its hash), and the user agent and source address are the only request data kept.
//!
//! The canonical form that the HMAC chain covers is the JSON serialization of [`AuditRecord`], whose field
//! order is fixed by this struct: `seq` and `key_id` come first so that a reader can find them by position.

use crate::principal::Principal;
use serde::{Deserialize, Serialize};

/// Version of the canonical record format, the first member of every record.
pub const AUDIT_FORMAT_VERSION: u32 = 1;

/// What row 1 chains from: 32 zero bytes, hex.
pub const GENESIS_MAC: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuditActor {
    pub sub: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    /// `person`, `api_key`, `agent`, `anonymous`, or `unknown` for a failed authentication.
    pub kind: String,
    /// `jwt`, `api_key`, `session`, `cli_token`, `mtls`, `anonymous`, `scim`, or `none`.
    pub auth_method: String,
}

impl AuditActor {
    /// The actor of an authenticated (or anonymous) principal.
    pub fn of(p: &Principal) -> AuditActor {
        let kind = serde_plain(&p.kind);
        AuditActor {
            sub: p.sub.clone(),
            email: p.email.clone(),
            groups: p.groups.clone(),
            kind,
            auth_method: p.auth_method.as_str().to_string(),
        }
    }

    /// The actor of a request whose credential was refused: nothing about it is trusted or kept.
    pub fn unauthenticated(method: &str) -> AuditActor {
        AuditActor {
            sub: String::new(),
            kind: "unknown".to_string(),
            auth_method: method.to_string(),
            ..Default::default()
        }
    }
}

fn serde_plain<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".to_string(),
    }
}

/// What was acted on. Every member is optional: `whoami` has no target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuditTarget {
    /// `cluster`, `policy`, `role_binding`, `api_key`, `setting`, `audit`, …
    pub kind: Option<String>,
    /// The resource's id or name.
    pub id: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    Ok,
    Denied,
    Error,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<AuditOutcome> {
        match s {
            "ok" => Some(AuditOutcome::Ok),
            "denied" => Some(AuditOutcome::Denied),
            "error" => Some(AuditOutcome::Error),
            _ => None,
        }
    }
}

/// The result of the action: outcome, the API error code when not ok, and the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditResult {
    pub outcome: AuditOutcome,
    /// The error `code` (`permission_denied`, `unauthenticated`, `not_found`, …); `None` when ok.
    pub code: Option<String>,
    pub status: u16,
}

/// One event before it is sealed into the chain: everything except `seq`, `key_id` and the MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Random, unique; lets a SIEM recognise a row delivered twice.
    pub event_id: String,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub actor: AuditActor,
    /// Dotted action name: `cluster.register`, `policy.arm`, `auth.failed`, …
    pub action: String,
    pub target: AuditTarget,
    pub result: AuditResult,
    /// Equal to the response's `X-Request-Id`.
    pub request_id: String,
    /// The peer address the request came from.
    pub source: Option<String>,
    pub user_agent: Option<String>,
}

/// A sealed record: the event with its place in the chain. Its JSON serialization is the canonical form the
/// MAC covers (field order is part of the format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub v: u32,
    pub seq: i64,
    pub key_id: String,
    pub event_id: String,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub time_ms: i64,
    pub actor: AuditActor,
    pub action: String,
    pub target: AuditTarget,
    pub result: AuditResult,
    pub request_id: String,
    pub source: Option<String>,
    pub user_agent: Option<String>,
}

impl AuditRecord {
    /// Seals `event` at `seq` under `key_id`; `time` is the RFC 3339 rendering of `event.time_ms` made by
    /// the caller (this crate does no clock or calendar work).
    pub fn new(seq: i64, key_id: &str, time: String, event: &AuditEvent) -> AuditRecord {
        AuditRecord {
            v: AUDIT_FORMAT_VERSION,
            seq,
            key_id: key_id.to_string(),
            event_id: event.event_id.clone(),
            time,
            time_ms: event.time_ms,
            actor: event.actor.clone(),
            action: event.action.clone(),
            target: event.target.clone(),
            result: event.result.clone(),
            request_id: event.request_id.clone(),
            source: event.source.clone(),
            user_agent: event.user_agent.clone(),
        }
    }

    /// The canonical bytes the MAC covers.
    pub fn canonical(&self) -> String {
        // Serializing a struct of strings, integers, options and vectors cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A row as stored: the canonical record text, and its MAC (lowercase hex) over the previous MAC, `seq` and
/// that text. Everything else a store keeps (indexed columns for filters) is derived from `body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow {
    pub seq: i64,
    pub key_id: String,
    pub mac: String,
    pub body: String,
    /// Copies of record fields for indexes and filters.
    pub time_ms: i64,
    pub actor_sub: String,
    pub action: String,
    pub outcome: AuditOutcome,
    pub cluster: Option<String>,
    pub event_id: String,
}

/// Computes a row's place in the chain. Implemented by the audit crate (HMAC keys live there); stores call it
/// inside their append transaction, once the previous MAC and the next sequence number are known.
pub trait Sealer: Send + Sync {
    /// Seals `event` as row `seq` following `prev_mac`.
    fn seal(&self, seq: i64, prev_mac: &str, event: &AuditEvent) -> SealedRow;
}

/// A signed statement of the chain head at a time: detects a cut-off tail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    /// MAC of row `seq`, lowercase hex.
    pub mac: String,
    pub time_ms: i64,
    /// Ed25519 public key, lowercase hex.
    pub public_key: String,
    /// Ed25519 signature, lowercase hex.
    pub signature: String,
}
