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
    /// The issuer that vouched for a person: with `sub`, who they are (two issuers may both say `alice`).
    /// Absent for API keys, agents, anonymous callers and rows written before issuers were recorded, so those
    /// rows keep their canonical form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
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
        let kind = p.kind.as_str().to_string();
        AuditActor {
            sub: p.sub.clone(),
            issuer: p.issuer.clone(),
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

impl AuditActor {
    /// The actor's [`crate::subject_key`]: what the `actor_sub` column holds and `?actor=` filters on.
    pub fn subject_key(&self) -> String {
        crate::subject_key(self.issuer.as_deref(), &self.sub)
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

    /// The canonical text of `event` sealed at `seq` under `key_id`, without building the record first:
    /// exactly `AuditRecord::new(seq, key_id, time, event).canonical()`, with no copy of the event.
    pub fn canonical_of(seq: i64, key_id: &str, time: &str, event: &AuditEvent) -> String {
        /// [`AuditRecord`]'s fields, in its order, borrowed.
        #[derive(Serialize)]
        struct Borrowed<'a> {
            v: u32,
            seq: i64,
            key_id: &'a str,
            event_id: &'a str,
            time: &'a str,
            time_ms: i64,
            actor: &'a AuditActor,
            action: &'a str,
            target: &'a AuditTarget,
            result: &'a AuditResult,
            request_id: &'a str,
            source: &'a Option<String>,
            user_agent: &'a Option<String>,
        }
        let b = Borrowed {
            v: AUDIT_FORMAT_VERSION,
            seq,
            key_id,
            event_id: &event.event_id,
            time,
            time_ms: event.time_ms,
            actor: &event.actor,
            action: &event.action,
            target: &event.target,
            result: &event.result,
            request_id: &event.request_id,
            source: &event.source,
            user_agent: &event.user_agent,
        };
        serde_json::to_string(&b).unwrap_or_default()
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

/// The copies of record fields a store keeps beside the body for indexes and filters (`event_id`, `time_ms`,
/// `actor_sub`, `action`, `outcome`, `cluster`). They are not covered by the MAC themselves, so the verifier
/// derives them from the signed body with [`AuditColumns::from_body`] and reports any difference as a
/// modification: a changed column could otherwise hide a row from a filtered read while the chain verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditColumns {
    pub event_id: String,
    pub time_ms: i64,
    /// The actor's [`crate::subject_key`].
    pub actor_sub: String,
    pub action: String,
    /// [`AuditOutcome::as_str`].
    pub outcome: String,
    pub cluster: Option<String>,
}

impl AuditColumns {
    /// The columns a body implies; `None` when the body is not a record.
    pub fn from_body(body: &str) -> Option<AuditColumns> {
        #[derive(Deserialize)]
        struct Actor<'a> {
            #[serde(borrow)]
            sub: std::borrow::Cow<'a, str>,
            #[serde(borrow, default)]
            issuer: Option<std::borrow::Cow<'a, str>>,
        }
        #[derive(Deserialize)]
        struct Target {
            cluster: Option<String>,
        }
        #[derive(Deserialize)]
        struct Outcome {
            outcome: AuditOutcome,
        }
        #[derive(Deserialize)]
        struct Light<'a> {
            event_id: String,
            time_ms: i64,
            #[serde(borrow)]
            actor: Actor<'a>,
            action: String,
            target: Target,
            result: Outcome,
        }
        let l: Light<'_> = serde_json::from_str(body).ok()?;
        Some(AuditColumns {
            event_id: l.event_id,
            time_ms: l.time_ms,
            actor_sub: crate::subject_key(l.actor.issuer.as_deref(), &l.actor.sub),
            action: l.action,
            outcome: l.result.outcome.as_str().to_string(),
            cluster: l.target.cluster,
        })
    }

    /// The name of the first column that differs from `other`, if any.
    pub fn first_difference(&self, other: &AuditColumns) -> Option<&'static str> {
        [
            ("event_id", self.event_id == other.event_id),
            ("time_ms", self.time_ms == other.time_ms),
            ("actor_sub", self.actor_sub == other.actor_sub),
            ("action", self.action == other.action),
            ("outcome", self.outcome == other.outcome),
            ("cluster", self.cluster == other.cluster),
        ]
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(name, _)| name)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_canonical_text_is_the_record_text() {
        let p = Principal::anonymous();
        let mut event = AuditEvent {
            event_id: "e1".into(),
            time_ms: 1_764_000_000_123,
            actor: AuditActor::of(&p),
            action: "whoami".into(),
            target: AuditTarget { kind: Some("cluster".into()), id: Some("x\"y".into()), ..Default::default() },
            result: AuditResult { outcome: AuditOutcome::Denied, code: Some("permission_denied".into()), status: 403 },
            request_id: "r1".into(),
            source: Some("127.0.0.1".into()),
            user_agent: None,
        };
        for issuer in [None, Some("https://idp.example".to_string())] {
            event.actor.issuer = issuer;
            let full = AuditRecord::new(7, "k1", "2025-11-24T16:00:00.123Z".into(), &event).canonical();
            assert_eq!(AuditRecord::canonical_of(7, "k1", "2025-11-24T16:00:00.123Z", &event), full);
        }
        assert_eq!(event.actor.kind, "anonymous");
    }
}
