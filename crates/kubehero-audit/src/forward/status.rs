//! Progress of every sink, shared with the server's `/metrics` (`kubehero_audit_forward_lag_rows{sink}`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// One sink's progress, shared with `/metrics`.
#[derive(Debug)]
pub struct SinkStatus {
    pub(crate) name: String,
    pub(crate) delivered: AtomicI64,
    pub(crate) rows_total: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSnapshot {
    pub name: String,
    /// The sink's durable cursor: every row up to here was delivered.
    pub delivered_seq: i64,
    /// `head seq − delivered seq`: `kubehero_audit_forward_lag_rows{sink}`.
    pub lag_rows: i64,
    /// Rows delivered by this process (duplicates after a retry included).
    pub rows_total: u64,
    /// The last delivery error, cleared by the next success.
    pub last_error: Option<String>,
}

/// What every sink task reports; the server exports it and may call [`ForwardStatus::notify`] after writes so
/// sinks do not wait for their next poll.
#[derive(Debug, Default)]
pub struct ForwardStatus {
    head: AtomicI64,
    sinks: Mutex<Vec<Arc<SinkStatus>>>,
    pub(crate) wake: Notify,
}

impl ForwardStatus {
    pub fn new() -> Arc<ForwardStatus> {
        Arc::new(ForwardStatus::default())
    }

    /// Wakes every idle sink (e.g. after the audit writer committed).
    pub fn notify(&self) {
        self.wake.notify_waiters();
    }

    /// Records a newer chain head (sinks also read it themselves).
    pub fn set_head(&self, seq: i64) {
        self.head.fetch_max(seq, Ordering::Relaxed);
    }

    pub fn head(&self) -> i64 {
        self.head.load(Ordering::Relaxed)
    }

    /// Every sink, in the order they were started.
    pub fn snapshot(&self) -> Vec<SinkSnapshot> {
        let head = self.head();
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        sinks
            .iter()
            .map(|s| {
                let delivered = s.delivered.load(Ordering::Relaxed);
                SinkSnapshot {
                    name: s.name.clone(),
                    delivered_seq: delivered,
                    lag_rows: (head - delivered).max(0),
                    rows_total: s.rows_total.load(Ordering::Relaxed),
                    last_error: s.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                }
            })
            .collect()
    }

    pub(crate) fn register(&self, name: &str) -> Arc<SinkStatus> {
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sinks.iter().find(|s| s.name == name) {
            return s.clone();
        }
        let s = Arc::new(SinkStatus {
            name: name.to_string(),
            delivered: AtomicI64::new(0),
            rows_total: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        sinks.push(s.clone());
        s
    }
}

impl SinkStatus {
    pub(crate) fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
}
