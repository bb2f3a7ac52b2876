//! Integration tests of the audit log: the chain on SQLite and PostgreSQL, tampering and how the verifier names
//! it, the group-commit writer under load and failure, and several writers sharing one database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod chain;
mod forward;
mod store;
mod tamper;
mod writer;

use kubehero_audit::{AuditLog, HmacKeys};
use kubehero_core::{AuditActor, AuditEvent, AuditOutcome, AuditResult, AuditTarget};
use kubehero_store::Store;
use std::path::Path;
use std::sync::Arc;

/// Two HMAC keys (printable, so that a leak into a record would be visible as text too).
pub const KEY_A: &[u8] = b"kubehero-test-hmac-key-A-0123456789abcdef";
pub const KEY_B: &[u8] = b"kubehero-test-hmac-key-B-fedcba9876543210";

pub fn keys(current: &[u8], previous: &[&[u8]]) -> Arc<HmacKeys> {
    Arc::new(HmacKeys::new(current, previous).unwrap())
}

/// A distinct, realistic event; `i` shows up in the request id and the target.
pub fn event(i: usize) -> AuditEvent {
    AuditEvent {
        event_id: kubehero_audit::IdSource::new().unwrap().next_id(),
        time_ms: 1_764_000_000_000 + i as i64,
        actor: AuditActor {
            sub: "alice".to_string(),
            issuer: Some("https://idp.example".to_string()),
            email: Some("alice@example.com".to_string()),
            groups: vec!["sre".to_string()],
            kind: "person".to_string(),
            auth_method: "jwt".to_string(),
        },
        action: "policy.arm".to_string(),
        target: AuditTarget {
            kind: Some("policy".to_string()),
            id: Some(format!("p{i}")),
            cluster: Some(format!("prod-{}", i % 3)),
            namespace: Some("default".to_string()),
        },
        result: if i % 5 == 4 {
            AuditResult {
                outcome: AuditOutcome::Denied,
                code: Some("permission_denied".to_string()),
                status: 403,
                repeated: None,
                duration_ms: None,
            }
        } else {
            AuditResult::ok(200)
        },
        request_id: format!("req-{i}"),
        source: Some("10.0.0.7:51234".to_string()),
        user_agent: Some("kubehero-cli/0.1".to_string()),
    }
}

/// A SQLite database file in `dir`: its URL and an open store.
pub async fn sqlite_file(dir: &Path, name: &str) -> (String, Arc<dyn Store>) {
    let url = format!("sqlite:{}", dir.join(name).display());
    let store = kubehero_store::open(&url).await.unwrap();
    (url, store)
}

/// Records `n` events from `n` concurrent tasks; returns every seq handed out, sorted.
pub async fn record_concurrently(log: &AuditLog, n: usize, first: usize) -> Vec<i64> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in first..first + n {
        let log = log.clone();
        tasks.spawn(async move { log.record(event(i)).await });
    }
    let mut seqs = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        seqs.push(r.unwrap().unwrap());
    }
    seqs.sort_unstable();
    seqs
}

/// `seqs` is exactly `1..=n`.
pub fn assert_gapless(seqs: &[i64], n: i64) {
    let want: Vec<i64> = (1..=n).collect();
    assert_eq!(seqs, want.as_slice(), "seqs are not exactly 1..={n}");
}
