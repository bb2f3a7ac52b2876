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
    /// Set on a row that stands for several identical requests without a credential (same action, result
    /// and source within one minute): how many. Absent (not 1) on every other row, so rows written before
    /// this field existed keep their canonical text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated: Option<u64>,
    /// How long what the row closes lasted, in milliseconds: set on the row that ends a stream (a watch's
    /// `k8s.watch_end`), absent everywhere else (so older rows keep their canonical text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl AuditResult {
    /// A success with this HTTP status.
    pub fn ok(status: u16) -> AuditResult {
        AuditResult { outcome: AuditOutcome::Ok, code: None, status, repeated: None, duration_ms: None }
    }

    /// A refusal with this reason (`code`) and HTTP status.
    pub fn denied(code: &str, status: u16) -> AuditResult {
        AuditResult {
            outcome: AuditOutcome::Denied,
            code: Some(code.to_string()),
            status,
            repeated: None,
            duration_ms: None,
        }
    }
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
/// compares them with the signed body and reports any difference as a modification: a changed column could
/// otherwise hide a row from a filtered read while the chain verifies.
///
/// For speed they travel as one **column digest**: each text value prefixed with its length in characters
/// (`len:value`), separated by `,` — `event_id,time_ms,actor_sub,action,outcome,cluster` with a NULL cluster
/// as `-`. Length prefixes make the encoding injective (no value can shift into the next). The store builds it
/// in SQL ([`AuditColumns::digest_of_body`] builds the same text from a body).
pub struct AuditColumns;

impl AuditColumns {
    /// The column digest a signed body implies; `None` when the body is not a record. Canonical bodies are
    /// read by position (each key this needs occurs once in the record format, and a key pattern cannot
    /// occur inside an escaped string); anything else goes through a full parse.
    pub fn digest_of_body(body: &str) -> Option<String> {
        Self::digest_by_position(body).or_else(|| Self::digest_by_parse(body))
    }

    fn digest_by_position(body: &str) -> Option<String> {
        // Members are read in the record's fixed order, each search starting where the previous one ended.
        let mut at = 0;
        let next = |at: &mut usize, key: &str| -> Option<&str> {
            let (raw, end) = raw_field(body, *at, key)?;
            *at = end;
            Some(raw)
        };
        let event_id = json_string(next(&mut at, "event_id")?)?;
        let time_ms: i64 = next(&mut at, "time_ms")?.parse().ok()?;
        let sub = json_string(next(&mut at, "sub")?)?;
        let issuer = match raw_field(body, at, "issuer") {
            // Only the actor's own member (before its `email`) is the issuer.
            Some((raw, end)) if body.get(at..end).is_some_and(|s| !s.contains("\"email\":")) => Some(json_string(raw)?),
            _ => None,
        };
        let action = json_string(next(&mut at, "action")?)?;
        let cluster = match next(&mut at, "cluster")? {
            "null" => None,
            raw => Some(json_string(raw)?),
        };
        let outcome = json_string(next(&mut at, "outcome")?)?;
        AuditOutcome::parse(&outcome)?;
        Some(
            ColumnValues {
                event_id: Some(&event_id),
                time_ms,
                actor_issuer: issuer.as_deref(),
                actor_sub: Some(&sub),
                action: Some(&action),
                outcome: Some(&outcome),
                cluster: cluster.as_deref(),
            }
            .digest(),
        )
    }

    fn digest_by_parse(body: &str) -> Option<String> {
        use std::borrow::Cow;
        #[derive(Deserialize)]
        struct Actor<'a> {
            #[serde(borrow)]
            sub: Cow<'a, str>,
            #[serde(borrow, default)]
            issuer: Option<Cow<'a, str>>,
        }
        #[derive(Deserialize)]
        struct Target<'a> {
            #[serde(borrow, default)]
            cluster: Option<Cow<'a, str>>,
        }
        #[derive(Deserialize)]
        struct Outcome {
            outcome: AuditOutcome,
        }
        #[derive(Deserialize)]
        struct Light<'a> {
            #[serde(borrow)]
            event_id: Cow<'a, str>,
            time_ms: i64,
            #[serde(borrow)]
            actor: Actor<'a>,
            #[serde(borrow)]
            action: Cow<'a, str>,
            #[serde(borrow)]
            target: Target<'a>,
            result: Outcome,
        }
        let l: Light<'_> = serde_json::from_str(body).ok()?;
        Some(
            ColumnValues {
                event_id: Some(&l.event_id),
                time_ms: l.time_ms,
                actor_issuer: l.actor.issuer.as_deref(),
                actor_sub: Some(&l.actor.sub),
                action: Some(&l.action),
                outcome: Some(l.result.outcome.as_str()),
                cluster: l.target.cluster.as_deref(),
            }
            .digest(),
        )
    }

    /// The name of the first column in which two digests differ.
    pub fn first_difference(a: &str, b: &str) -> &'static str {
        const NAMES: [&str; 6] = ["event_id", "time_ms", "actor_sub", "action", "outcome", "cluster"];
        let (mut a, mut b) = (a, b);
        for name in NAMES {
            let (x, rest_a) = take_field(a);
            let (y, rest_b) = take_field(b);
            if x != y {
                return name;
            }
            (a, b) = (rest_a, rest_b);
        }
        "cluster"
    }
}

/// The values a column digest is made of, wherever they come from: a record's body, or a database row (where a
/// text column that should never be NULL may have been set to NULL, and then reads as `-`).
#[derive(Debug, Clone, Copy)]
pub struct ColumnValues<'a> {
    pub event_id: Option<&'a str>,
    pub time_ms: i64,
    /// With [`ColumnValues::actor_sub`], the actor's subject key; `None` where the column already holds it.
    pub actor_issuer: Option<&'a str>,
    pub actor_sub: Option<&'a str>,
    pub action: Option<&'a str>,
    pub outcome: Option<&'a str>,
    pub cluster: Option<&'a str>,
}

impl ColumnValues<'_> {
    /// The column digest: `len:value` text fields (length in characters), `,` between fields, `-` for NULL;
    /// the outcome (one of a fixed set) without a length.
    pub fn digest(&self) -> String {
        use std::fmt::Write;
        let chars = |v: &str| if v.is_ascii() { v.len() } else { v.chars().count() };
        let text = |out: &mut String, v: Option<&str>| match v {
            Some(v) => {
                let _ = write!(out, "{}:{v}", chars(v));
            }
            None => out.push('-'),
        };
        let mut out = String::with_capacity(128);
        text(&mut out, self.event_id);
        let _ = write!(out, ",{},", self.time_ms);
        match (self.actor_issuer, self.actor_sub) {
            (Some(iss), Some(sub)) => {
                let sep = crate::principal::SUBJECT_KEY_SEPARATOR;
                let _ = write!(out, "{}:{iss}{sep}{sub}", chars(iss) + 1 + chars(sub));
            }
            (_, sub) => text(&mut out, sub),
        }
        out.push(',');
        text(&mut out, self.action);
        out.push(',');
        out.push_str(self.outcome.unwrap_or("-"));
        out.push(',');
        text(&mut out, self.cluster);
        out
    }
}

/// The raw JSON value of the first member `key` at or after byte `from` of a canonical record (a string with
/// its quotes, a number, or `null`), and where it ends. The member must start right after `{` or `,`, so a key
/// pattern inside an escaped string, whose quotes are all preceded by `\`, never matches.
fn raw_field<'a>(body: &'a str, from: usize, key: &str) -> Option<(&'a str, usize)> {
    let bytes = body.as_bytes();
    let mut search = from;
    let value = loop {
        let i = search + body.get(search..)?.find(key)?;
        let starts = i >= 2 && bytes[i - 1] == b'"' && matches!(bytes[i - 2], b'{' | b',');
        let ends = body.get(i + key.len()..).is_some_and(|r| r.starts_with("\":"));
        if starts && ends {
            break i + key.len() + 2;
        }
        search = i + 1;
    };
    let rest = body.get(value..)?;
    let len = if rest.starts_with('"') {
        let b = rest.as_bytes();
        let mut i = 1;
        loop {
            match b.get(i)? {
                b'\\' => i += 2,
                b'"' => break i + 1,
                _ => i += 1,
            }
        }
    } else {
        rest.find([',', '}', ']']).unwrap_or(rest.len())
    };
    Some((rest.get(..len)?, value + len))
}

/// A JSON string's value; escapes (rare in these fields) go through the JSON parser.
fn json_string(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(raw).ok().map(std::borrow::Cow::Owned)
    } else {
        Some(std::borrow::Cow::Borrowed(inner))
    }
}

/// One field of a column digest and the rest after its `,`.
fn take_field(s: &str) -> (&str, &str) {
    // A length-prefixed value may contain ',': skip exactly its length in characters.
    let end = match s.split_once(':') {
        Some((len, rest)) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => {
            let n: usize = len.parse().unwrap_or(0);
            let value_bytes: usize = rest.chars().take(n).map(char::len_utf8).sum();
            len.len() + 1 + value_bytes
        }
        _ => s.find(',').unwrap_or(s.len()),
    };
    let end = end.min(s.len());
    let (field, rest) = s.split_at(end);
    (field, rest.strip_prefix(',').unwrap_or(rest))
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
            result: AuditResult {
                outcome: AuditOutcome::Denied,
                code: Some("permission_denied".into()),
                status: 403,
                repeated: None,
                duration_ms: None,
            },
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

    #[test]
    fn column_digests_are_injective_and_name_the_column() {
        let p = Principal::anonymous();
        let mut event = AuditEvent {
            event_id: "e,1:x".into(),
            time_ms: 5,
            actor: AuditActor::of(&p),
            action: "whoami".into(),
            target: AuditTarget { cluster: Some("prod,eu".into()), ..Default::default() },
            result: AuditResult::ok(200),
            request_id: "r".into(),
            source: None,
            user_agent: None,
        };
        event.actor.issuer = Some("https://i".into());
        let body = AuditRecord::canonical_of(1, "k", "t", &event);
        let d = AuditColumns::digest_of_body(&body).unwrap();
        assert_eq!(d, "5:e,1:x,5,19:https://i#anonymous,6:whoami,ok,7:prod,eu");
        // The same characters split differently between two columns is another digest.
        let shifted = "5:e,1:x,5,18:https://i#anonymou,7:swhoami,ok,7:prod,eu";
        assert_ne!(d, shifted);
        assert_eq!(AuditColumns::first_difference(shifted, &d), "actor_sub");
        assert_eq!(AuditColumns::first_difference("5:e,1:x,5,19:https://i#anonymous,6:whoami,ok,-", &d), "cluster");
        assert_eq!(
            AuditColumns::first_difference("5:e,1:x,6,19:https://i#anonymous,6:whoami,ok,7:prod,eu", &d),
            "time_ms"
        );
        assert!(AuditColumns::digest_of_body("{}").is_none());
        // Reading by position agrees with a full parse, also with escapes and look-alike text in other fields.
        event.user_agent = Some(",\"action\":\"forged\",\"sub\":\"x".into());
        event.actor.sub = "a\"b\\c,\u{1}é".into();
        event.target.cluster = None;
        let body = AuditRecord::canonical_of(2, "k", "t", &event);
        let fast = AuditColumns::digest_by_position(&body).unwrap();
        assert_eq!(Some(fast.clone()), AuditColumns::digest_by_parse(&body));
        assert!(fast.ends_with(",6:whoami,ok,-"), "{fast}");
    }
}
