//! Verification of the chain and its checkpoints, streaming, from the database or an export.
//!
//! Rows are fed in order with [`ChainVerifier::push`]; the verifier keeps one row of look-ahead so that it
//! can say *what* happened at the first bad sequence number, not only where:
//! - `deleted`: numbers are missing (a gap, or later rows renumbered down so their records name a later seq);
//! - `inserted`: a row that was not sealed there (a repeated number, or later rows renumbered up);
//! - `reordered`: rows are present but out of order (a swap, or a row moved earlier);
//! - `modified`: the row's content no longer matches its MAC while the chain after it is intact, or a column the
//!   database indexes (actor, action, outcome, cluster, time, event id) differs from the signed record;
//! - `truncated`: a signed checkpoint names rows beyond the last one present;
//! - `unknown_key`: the row names an HMAC key the verifier was not given.
//!
//! In an export the seq is part of each record's text, so renumbering rewrites records: on the failure path the
//! verifier also tries the next record with its seq set back, to tell such a deletion or insertion from a
//! modification.
//!
//! The common path is one HMAC per row over the stored text and, for rows read from a database, one read of the
//! record by position to derive the column digest its indexed columns must agree with
//! ([`kubehero_core::AuditColumns`]); [`crate::verify_store`] does that on a second core.

use crate::chain::{checkpoint_message, leading_seq_and_key, row_mac};
use crate::hex;
use crate::keys::{verify_signature, HmacKeys};
use kubehero_core::{AuditColumns, Checkpoint, GENESIS_MAC};
use kubehero_store::StoredAuditRow;
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

/// What was found at the first bad sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    Modified,
    Deleted,
    Inserted,
    Reordered,
    Truncated,
    UnknownKey,
    BadCheckpoint,
}

impl Tamper {
    pub fn as_str(self) -> &'static str {
        match self {
            Tamper::Modified => "modified",
            Tamper::Deleted => "deleted",
            Tamper::Inserted => "inserted",
            Tamper::Reordered => "reordered",
            Tamper::Truncated => "truncated",
            Tamper::UnknownKey => "unknown_key",
            Tamper::BadCheckpoint => "bad_checkpoint",
        }
    }
}

/// The chain is broken at `seq`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chain broken at seq {seq}: {} ({detail})", kind.as_str())]
pub struct VerifyFailure {
    pub seq: i64,
    pub kind: Tamper,
    pub detail: String,
}

/// The chain is intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub rows: u64,
    /// The last sequence number verified (0 for an empty log).
    pub last_seq: i64,
    /// Checkpoints whose signature and MAC matched.
    pub checkpoints: u64,
    /// The newest checkpoint's seq, if any.
    pub last_checkpoint: Option<i64>,
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rows verified, intact through seq {}", self.rows, self.last_seq)?;
        match self.last_checkpoint {
            Some(s) => write!(f, " ({} signed checkpoints, newest at seq {s})", self.checkpoints),
            None => write!(f, " (no signed checkpoint yet)"),
        }
    }
}

/// Streaming verifier.
pub struct ChainVerifier<'k> {
    keys: &'k HmacKeys,
    /// Checkpoint MACs by seq, from checkpoints whose signature verified.
    checkpoint_macs: BTreeMap<i64, String>,
    checkpoints: u64,
    next_seq: i64,
    prev: [u8; 32],
    pending: Option<StoredAuditRow>,
    rows: u64,
}

fn fail(seq: i64, kind: Tamper, detail: impl Into<String>) -> VerifyFailure {
    VerifyFailure { seq, kind, detail: detail.into() }
}

impl<'k> ChainVerifier<'k> {
    /// Checks the checkpoints' signatures first (against `trusted` public keys when given, otherwise against
    /// the key each checkpoint names) and then expects rows from seq 1.
    pub fn new(
        keys: &'k HmacKeys,
        checkpoints: &[Checkpoint],
        trusted: &[String],
    ) -> Result<ChainVerifier<'k>, VerifyFailure> {
        let mut checkpoint_macs = BTreeMap::new();
        for c in checkpoints {
            if !trusted.is_empty() && !trusted.iter().any(|t| t.eq_ignore_ascii_case(&c.public_key)) {
                return Err(fail(c.seq, Tamper::BadCheckpoint, "checkpoint signed by an untrusted key"));
            }
            if !verify_signature(&c.public_key, &checkpoint_message(c.seq, &c.mac, c.time_ms), &c.signature) {
                return Err(fail(c.seq, Tamper::BadCheckpoint, "checkpoint signature does not verify"));
            }
            if let Some(other) = checkpoint_macs.insert(c.seq, c.mac.clone()) {
                if other != c.mac {
                    return Err(fail(c.seq, Tamper::BadCheckpoint, "two signed checkpoints disagree"));
                }
            }
        }
        Ok(ChainVerifier {
            keys,
            checkpoint_macs,
            checkpoints: checkpoints.len() as u64,
            next_seq: 1,
            prev: hex::decode32(GENESIS_MAC).unwrap_or([0; 32]),
            pending: None,
            rows: 0,
        })
    }

    /// The last seq whose row (and the chain up to it) verified.
    pub fn verified_through(&self) -> i64 {
        self.next_seq - 1
    }

    /// Feeds the next row in stored order.
    pub fn push(&mut self, row: StoredAuditRow) -> Result<(), VerifyFailure> {
        if let Some(r) = self.pending.take() {
            self.check(r, Some(&row))?;
        }
        self.pending = Some(row);
        Ok(())
    }

    /// Ends the stream: checks the last row and the checkpoints beyond it.
    pub fn finish(mut self) -> Result<VerifyReport, VerifyFailure> {
        if let Some(r) = self.pending.take() {
            self.check(r, None)?;
        }
        let last_seq = self.next_seq - 1;
        if let Some((&seq, _)) = self.checkpoint_macs.range(last_seq + 1..).next() {
            return Err(fail(
                last_seq + 1,
                Tamper::Truncated,
                format!("a signed checkpoint covers seq {seq}, but the log ends at seq {last_seq}"),
            ));
        }
        Ok(VerifyReport {
            rows: self.rows,
            last_seq,
            checkpoints: self.checkpoints,
            last_checkpoint: self.checkpoint_macs.keys().next_back().copied(),
        })
    }

    /// The row's MAC if it verifies as row `seq` after `prev`.
    fn verified_mac(&self, row: &StoredAuditRow, seq: i64, prev: &[u8; 32]) -> Option<[u8; 32]> {
        let key = self.keys.get(&row.key_id)?;
        let m = hex::decode32(&row.mac)?;
        bool::from(row_mac(key, prev, seq, &row.body).ct_eq(&m)).then_some(m)
    }

    fn mac_ok(&self, row: &StoredAuditRow, seq: i64, prev: &[u8; 32]) -> bool {
        self.verified_mac(row, seq, prev).is_some()
    }

    fn check(&mut self, r: StoredAuditRow, next: Option<&StoredAuditRow>) -> Result<(), VerifyFailure> {
        let k = self.next_seq;
        if let Some(mac) = (r.seq == k).then(|| self.verified_mac(&r, k, &self.prev)).flatten() {
            if let Some(cp) = self.checkpoint_macs.get(&k) {
                if !cp.eq_ignore_ascii_case(&r.mac) {
                    return Err(fail(k, Tamper::Modified, "the chain was rewritten: a signed checkpoint disagrees"));
                }
            }
            if let Some(f) = r.columns.as_deref().and_then(|stored| column_mismatch(k, &r.body, stored)) {
                return Err(f);
            }
            self.prev = mac;
            self.next_seq += 1;
            self.rows += 1;
            return Ok(());
        }
        Err(self.classify(&r, next))
    }

    /// Whether `row` is the row sealed at `seq` after `prev`, once the `seq` its record declares is set back to
    /// `seq`. In an export the number is part of the record's text, so this recognises renumbered rows.
    fn sealed_as(&self, row: &StoredAuditRow, seq: i64, prev: &[u8; 32]) -> bool {
        match with_seq(&row.body, seq) {
            Some(body) => self.mac_ok(&StoredAuditRow { body, ..row.clone() }, seq, prev),
            None => false,
        }
    }

    fn classify(&self, r: &StoredAuditRow, next: Option<&StoredAuditRow>) -> VerifyFailure {
        let k = self.next_seq;
        let declared = |row: &StoredAuditRow| leading_seq_and_key(&row.body).map(|(s, _)| s);
        if r.seq > k {
            // A lower number after this one: rows were moved, not removed.
            if let Some(n) = next.filter(|n| n.seq < r.seq) {
                return fail(k, Tamper::Reordered, format!("seq {} comes before seq {}", r.seq, n.seq));
            }
            return fail(k, Tamper::Deleted, format!("rows {k}..{} are missing", r.seq - 1));
        }
        if r.seq < k {
            if r.seq == k - 1 {
                return fail(r.seq, Tamper::Inserted, format!("a second row numbered {}", r.seq));
            }
            return fail(r.seq, Tamper::Reordered, format!("seq {} comes after seq {}", r.seq, k - 1));
        }
        if self.keys.get(&r.key_id).is_none() {
            return fail(k, Tamper::UnknownKey, format!("no HMAC key with id {:?} was given", r.key_id));
        }
        match declared(r) {
            Some(d) if d > k => {
                // Renumbered down after a deletion, the next record was sealed after this one; after a swap,
                // before it.
                if next.and_then(declared).is_some_and(|e| e < d) {
                    return fail(k, Tamper::Reordered, format!("the record sealed as seq {d} is stored at seq {k}"));
                }
                return fail(k, Tamper::Deleted, format!("rows from seq {k} were deleted and later rows renumbered"));
            }
            Some(d) if d < k => {
                return fail(k, Tamper::Inserted, format!("the record sealed as seq {d} is repeated at seq {k}"));
            }
            _ => {}
        }
        if let Some(n) = next {
            if declared(n) == Some(k) || self.sealed_as(n, k, &self.prev) {
                return fail(k, Tamper::Inserted, format!("a row was inserted at seq {k}; later rows renumbered"));
            }
            if let Some(m) = hex::decode32(&r.mac).filter(|_| n.seq == k + 1) {
                if self.sealed_as(n, k + 1, &m) {
                    return fail(k, Tamper::Modified, "the record's content changed after it was sealed");
                }
                // An export whose later records were renumbered down over deleted rows.
                if let Some(gap) = (1..=RENUMBER_SEARCH).find(|g| self.sealed_as(n, k + 1 + g, &m)) {
                    return fail(
                        k,
                        Tamper::Deleted,
                        format!("rows {k}..{} were deleted and later rows renumbered", k + gap - 1),
                    );
                }
            }
        }
        fail(k, Tamper::Modified, "the row does not match its MAC")
    }
}

/// Row `seq`'s indexed columns (as the `stored` column digest) against its record `body`: the finding when
/// they differ.
fn column_mismatch(seq: i64, body: &str, stored: &str) -> Option<VerifyFailure> {
    let column = match AuditColumns::digest_of_body(body) {
        Some(signed) if signed == stored => return None,
        Some(signed) => AuditColumns::first_difference(stored, &signed),
        None => "body",
    };
    Some(fail(seq, Tamper::Modified, format!("the indexed column {column} differs from the signed record")))
}

/// The first of `rows` — `(seq, body, column digest)` — whose indexed columns differ from its record.
pub fn first_column_mismatch(rows: &[(i64, String, String)]) -> Option<VerifyFailure> {
    rows.iter().find_map(|(seq, body, stored)| column_mismatch(*seq, body, stored))
}

/// How many deleted rows the verifier looks for when a renumbered export hides a deletion (failure path only).
const RENUMBER_SEARCH: i64 = 1024;

/// `body` with the `seq` member of its leading `{"v":…,"seq":N,` replaced by `seq`.
fn with_seq(body: &str, seq: i64) -> Option<String> {
    let rest = body.strip_prefix("{\"v\":")?;
    let start = body.len() - rest.len() + rest.find(',')? + ",\"seq\":".len();
    body.get(start - ",\"seq\":".len()..start).filter(|m| *m == ",\"seq\":")?;
    let end = start + body[start..].find(',')?;
    Some(format!("{}{seq}{}", &body[..start], &body[end..]))
}
