//! KubeHero's tamper-evident audit log.
//!
//! - [`chain`]: the HMAC chain over canonical records, checkpoint signatures, the JSONL export format;
//! - [`writer`]: the group-commit writer every request waits on, and the periodic checkpointer;
//! - [`verify`]: streaming verification that names the first bad sequence number and what happened there;
//! - [`keys`]: HMAC keys (current + previous, by id) and the Ed25519 checkpoint key.

pub mod chain;
pub mod forward;
pub mod hex;
pub mod keys;
pub mod verify;
pub mod writer;

pub use chain::{export_line, parse_export_line, ChainSealer, ExportLine};
pub use keys::{key_id, HmacKeys, SigningKey};
pub use verify::{ChainVerifier, Tamper, VerifyFailure, VerifyReport};
pub use writer::{AuditError, AuditLog};

use kubehero_store::Store;
use ring::rand::{SecureRandom, SystemRandom};

/// Rows read from the database per round trip while verifying or exporting.
pub const PAGE: i64 = 10_000;

/// A random 128-bit event id, hex.
/// Ids for requests and audit events without a system call each: 64 random bits drawn once from the OS, then
/// a counter. Unique within a process, and across processes and replicas with overwhelming probability. They
/// are identifiers, not secrets: after the first, the next is predictable, and nothing relies on it not being.
#[derive(Debug)]
pub struct IdSource {
    prefix: [u8; 8],
    counter: std::sync::atomic::AtomicU64,
}

impl IdSource {
    /// Fails only when the OS has no randomness: then the caller must not start (never a clock fallback).
    pub fn new() -> Result<IdSource, String> {
        let mut prefix = [0u8; 8];
        SystemRandom::new().fill(&mut prefix).map_err(|_| "the operating system gave no randomness".to_string())?;
        Ok(IdSource { prefix, counter: std::sync::atomic::AtomicU64::new(0) })
    }

    /// The next id: 32 lowercase hex characters.
    pub fn next_id(&self) -> String {
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.prefix);
        b[8..].copy_from_slice(&n.to_be_bytes());
        hex::encode(&b)
    }
}

/// Why verification could not complete, or where it found the chain broken.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Broken(#[from] VerifyFailure),
    #[error("{0}")]
    Read(String),
}

/// Verifies the whole log in `store` and its checkpoints.
pub async fn verify_store(store: &dyn Store, keys: &HmacKeys, trusted: &[String]) -> Result<VerifyReport, VerifyError> {
    let checkpoints = store.checkpoints().await.map_err(|e| VerifyError::Read(e.to_string()))?;
    let mut v = ChainVerifier::new(keys, &checkpoints, trusted)?;
    let read = |after| async move {
        store.audit_rows_with_columns(after, PAGE).await.map_err(|e| VerifyError::Read(e.to_string()))
    };
    let mut rows = read(0).await?;
    // The first row whose indexed columns differ from its record (reported once the chain through it is known
    // to be intact; a broken chain at or before it is the finding then).
    let mut column_failure: Option<VerifyFailure> = None;
    // Reading the next page (on the store's side), checking this page's chain, and comparing its columns with
    // its records (on a second core) overlap.
    while let Some(last) = rows.last().map(|r| r.seq) {
        let columns: Vec<(i64, String, String)> =
            rows.iter_mut().filter_map(|r| r.columns.take().map(|c| (r.seq, r.body.clone(), c))).collect();
        let (next, checked, compared) = tokio::join!(
            read(last),
            async {
                for r in std::mem::take(&mut rows) {
                    v.push(r)?;
                }
                Ok::<(), VerifyFailure>(())
            },
            tokio::task::spawn_blocking(move || verify::first_column_mismatch(&columns))
        );
        if column_failure.is_none() {
            column_failure = compared.map_err(|e| VerifyError::Read(format!("column check task: {e}")))?;
        }
        match (checked, &column_failure) {
            (Err(chain), Some(col)) if col.seq < chain.seq => return Err(col.clone().into()),
            (Err(chain), _) => return Err(chain.into()),
            (Ok(()), Some(col)) if v.verified_through() >= col.seq => return Err(col.clone().into()),
            _ => {}
        }
        rows = next?;
    }
    let report = v.finish()?;
    match column_failure {
        Some(col) => Err(col.into()),
        None => Ok(report),
    }
}

/// Verifies an export read line by line.
pub fn verify_lines<I, S>(lines: I, keys: &HmacKeys, trusted: &[String]) -> Result<VerifyReport, VerifyError>
where
    I: IntoIterator<Item = std::io::Result<S>>,
    S: AsRef<str>,
{
    let mut rows = Vec::new();
    let mut checkpoints = Vec::new();
    for (n, line) in lines.into_iter().enumerate() {
        let line = line.map_err(|e| VerifyError::Read(e.to_string()))?;
        let line = line.as_ref().trim_end();
        if line.is_empty() {
            continue;
        }
        match parse_export_line(line).map_err(|e| VerifyError::Read(format!("line {}: {e}", n + 1)))? {
            ExportLine::Row(r) => rows.push(r),
            ExportLine::Checkpoint(c) => checkpoints.push(c),
        }
    }
    let mut v = ChainVerifier::new(keys, &checkpoints, trusted)?;
    for r in rows {
        v.push(r)?;
    }
    Ok(v.finish()?)
}

/// Writes rows with `seq > after` and then every checkpoint, one JSON object per line. Returns the rows written.
pub async fn export<W: std::io::Write>(store: &dyn Store, after: i64, out: &mut W) -> Result<u64, String> {
    let mut after = after;
    let mut n = 0;
    loop {
        let rows = store.audit_rows(after, PAGE).await.map_err(|e| e.to_string())?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for r in &rows {
            writeln!(out, "{}", export_line(r)).map_err(|e| e.to_string())?;
            n += 1;
        }
    }
    for c in store.checkpoints().await.map_err(|e| e.to_string())? {
        writeln!(out, "{}", chain::checkpoint_line(&c)).map_err(|e| e.to_string())?;
    }
    Ok(n)
}
