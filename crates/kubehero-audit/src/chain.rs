//! The chain: `mac_i = HMAC-SHA256(key, mac_{i-1} ‖ seq_i ‖ canonical(row_i))`, with `mac_0` 32 zero bytes,
//! `seq_i` as 8 big-endian bytes and `canonical(row_i)` the record's JSON text (see
//! [`kubehero_core::AuditRecord`]). Checkpoints sign `"kubehero-audit-checkpoint-v1" ‖ seq ‖ mac ‖ time_ms`.
//!
//! The export format is one JSON object per line: the canonical record with `"mac"` appended as its last
//! member, so the exact bytes the MAC covers are the line minus that fixed-length suffix. Checkpoints are
//! lines of the form `{"checkpoint":{…}}`.

use crate::hex;
use crate::keys::{HmacKeys, SigningKey};
use kubehero_core::{AuditEvent, AuditRecord, Checkpoint, SealedRow, Sealer};
use kubehero_store::StoredAuditRow;
use ring::hmac;
use std::sync::Arc;

/// `,"mac":"` + 64 hex + `"}`.
const MAC_SUFFIX_LEN: usize = 8 + 64 + 2;

/// The MAC of a row.
pub fn row_mac(key: &hmac::Key, prev_mac: &[u8; 32], seq: i64, body: &str) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(prev_mac);
    ctx.update(&seq.to_be_bytes());
    ctx.update(body.as_bytes());
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T16:25:45.123Z`.
pub fn rfc3339_ms(time_ms: i64) -> String {
    let nanos = i128::from(time_ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// Seals events with the current HMAC key.
#[derive(Debug, Clone)]
pub struct ChainSealer {
    keys: Arc<HmacKeys>,
}

impl ChainSealer {
    pub fn new(keys: Arc<HmacKeys>) -> ChainSealer {
        ChainSealer { keys }
    }

    /// As the trait object [`kubehero_store::AuditStore::append_audit`] takes.
    pub fn shared(&self) -> Arc<dyn Sealer> {
        Arc::new(self.clone())
    }
}

impl Sealer for ChainSealer {
    fn seal(&self, seq: i64, prev_mac: &str, event: &AuditEvent) -> SealedRow {
        let key_id = self.keys.current_id();
        let body = AuditRecord::canonical_of(seq, key_id, &rfc3339_ms(event.time_ms), event);
        let prev = hex::decode32(prev_mac).unwrap_or([0u8; 32]);
        let mac = match self.keys.current() {
            Some(k) => hex::encode(&row_mac(k, &prev, seq, &body)),
            None => String::new(),
        };
        SealedRow {
            seq,
            key_id: key_id.to_string(),
            mac,
            body,
            time_ms: event.time_ms,
            actor_sub: event.actor.subject_key(),
            action: event.action.clone(),
            outcome: event.result.outcome,
            cluster: event.target.cluster.clone(),
            event_id: event.event_id.clone(),
        }
    }
}

/// The bytes a checkpoint signature covers.
pub fn checkpoint_message(seq: i64, mac_hex: &str, time_ms: i64) -> Vec<u8> {
    let mut m = b"kubehero-audit-checkpoint-v1".to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&hex::decode32(mac_hex).unwrap_or([0u8; 32]));
    m.extend_from_slice(&time_ms.to_be_bytes());
    m
}

/// Signs the chain head `(seq, mac)` at `time_ms`.
pub fn sign_checkpoint(key: &SigningKey, seq: i64, mac: &str, time_ms: i64) -> Checkpoint {
    Checkpoint {
        seq,
        mac: mac.to_string(),
        time_ms,
        public_key: key.public_hex().to_string(),
        signature: key.sign(&checkpoint_message(seq, mac, time_ms)),
    }
}

/// One export line for a row: the canonical record with `"mac"` appended.
pub fn export_line(row: &StoredAuditRow) -> String {
    let body = row.body.strip_suffix('}').unwrap_or(&row.body);
    format!("{body},\"mac\":\"{}\"}}", row.mac)
}

/// One export line for a checkpoint.
pub fn checkpoint_line(c: &Checkpoint) -> String {
    serde_json::json!({ "checkpoint": c }).to_string()
}

/// A parsed export line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportLine {
    Row(StoredAuditRow),
    Checkpoint(Checkpoint),
}

/// Parses an export line without a full JSON parse on the common path: the record's text is the line minus
/// the `"mac"` suffix, and `seq` and `key_id` are its first members.
pub fn parse_export_line(line: &str) -> Result<ExportLine, String> {
    if line.starts_with("{\"checkpoint\":") {
        #[derive(serde::Deserialize)]
        struct Wrapper {
            checkpoint: Checkpoint,
        }
        let w: Wrapper = serde_json::from_str(line).map_err(|e| format!("bad checkpoint line: {e}"))?;
        return Ok(ExportLine::Checkpoint(w.checkpoint));
    }
    let n = line.len();
    if n <= MAC_SUFFIX_LEN || !line.is_char_boundary(n - MAC_SUFFIX_LEN) {
        return Err("line too short to be an audit record".into());
    }
    let (head, suffix) = line.split_at(n - MAC_SUFFIX_LEN);
    let mac = suffix
        .strip_prefix(",\"mac\":\"")
        .and_then(|s| s.strip_suffix("\"}"))
        .filter(|m| m.len() == 64 && m.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("the line does not end with a \"mac\" member")?;
    let body = format!("{head}}}");
    let (seq, key_id) = leading_seq_and_key(&body).ok_or("the record does not start with v, seq and key_id")?;
    Ok(ExportLine::Row(StoredAuditRow { seq, key_id, mac: mac.to_string(), body, columns: None }))
}

/// `seq` and `key_id` from a canonical record's text: `{"v":1,"seq":N,"key_id":"K",…`.
pub(crate) fn leading_seq_and_key(body: &str) -> Option<(i64, String)> {
    let rest = body.strip_prefix("{\"v\":")?;
    let rest = &rest[rest.find(',')?..];
    let rest = rest.strip_prefix(",\"seq\":")?;
    let end = rest.find(',')?;
    let seq: i64 = rest[..end].parse().ok()?;
    let rest = rest[end..].strip_prefix(",\"key_id\":\"")?;
    let key_id = &rest[..rest.find('"')?];
    Some((seq, key_id.to_string()))
}
