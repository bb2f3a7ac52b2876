//! The group-commit writer: every request hands its event to one writer task and waits; the writer takes
//! everything queued, appends it in one transaction (one flush), and answers each waiter with its seq. While
//! a commit is in flight the next batch gathers, so batches grow with load and durability is never weakened.
//!
//! Two ways in, one chain: [`AuditLog::record`] answers once the row is durable; [`AuditLog::enqueue`] answers
//! once the row is queued (plain reads, whose requests do not wait for the disk). Both share the bounded queue,
//! so a full queue makes either wait for room: a row is never dropped for lack of space. What `enqueue`d rows
//! can lose is only what a crash (or a refused commit) takes before their batch is flushed; [`AuditLog::flush`]
//! waits until everything queued before it is durable (clean shutdown calls it).

use crate::chain::{sign_checkpoint, ChainSealer};
use crate::keys::SigningKey;
use kubehero_core::AuditEvent;
use kubehero_store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Why an event could not be recorded. The caller must not answer the request as if it had been.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The store refused or could not be reached; nothing of the batch was written.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// The writer has stopped (shutdown).
    #[error("audit log is shut down")]
    Closed,
}

/// One queued request: an event (absent for a flush marker) and, unless it was only enqueued, whom to tell.
struct Job {
    event: Option<AuditEvent>,
    done: Option<oneshot::Sender<Result<i64, AuditError>>>,
}

/// Counters the server exports in `/metrics`.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub rows: AtomicU64,
    pub commits: AtomicU64,
    pub failures: AtomicU64,
    /// Enqueued (not awaited) rows whose batch the store refused: their requests were already answered.
    pub lost_enqueued: AtomicU64,
    /// The last append failed (cleared by the next one that succeeds): `/readyz` answers 503 meanwhile.
    pub failing: std::sync::atomic::AtomicBool,
}

/// A handle to the writer task. Cloning is cheap; the task stops when every handle is dropped.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
    sealer: Arc<dyn kubehero_core::Sealer>,
    status: Arc<crate::forward::ForwardStatus>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

/// Events waiting for the writer before `record` applies back-pressure.
const QUEUE: usize = 16 * 1024;

impl AuditLog {
    /// Starts the writer. `max_batch` bounds one transaction (1 turns group commit off, for comparison).
    pub fn start(store: Arc<dyn Store>, sealer: ChainSealer, max_batch: usize) -> AuditLog {
        Self::start_notifying(store, sealer, max_batch, crate::forward::ForwardStatus::new())
    }

    /// [`AuditLog::start`], telling `status` the new head after every commit (so forwarders wake for rows
    /// nobody waited for, too).
    pub fn start_notifying(
        store: Arc<dyn Store>,
        sealer: ChainSealer,
        max_batch: usize,
        status: Arc<crate::forward::ForwardStatus>,
    ) -> AuditLog {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let sealer: Arc<dyn kubehero_core::Sealer> = Arc::new(sealer);
        tokio::spawn(run(store, sealer.clone(), rx, max_batch.max(1), stats.clone(), status.clone()));
        AuditLog { tx, stats, sealer, status }
    }

    /// Records `event` and returns its seq once it is durable.
    pub async fn record(&self, event: AuditEvent) -> Result<i64, AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Job { event: Some(event), done: Some(done) }).await.map_err(|_| AuditError::Closed)?;
        wait.await.map_err(|_| AuditError::Closed)?
    }

    /// Queues `event` for the chain without waiting for its commit; waits only while the queue is full.
    pub async fn enqueue(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.tx.send(Job { event: Some(event), done: None }).await.map_err(|_| AuditError::Closed)
    }

    /// Waits until every event queued before this call has been committed (or refused), and returns the last
    /// seq committed by then.
    pub async fn flush(&self) -> Result<i64, AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Job { event: None, done: Some(done) }).await.map_err(|_| AuditError::Closed)?;
        wait.await.map_err(|_| AuditError::Closed)?
    }

    /// Records several events (they share group commits) and returns once every one is durable, with the
    /// last seq (0 for none).
    pub async fn record_all(&self, events: Vec<AuditEvent>) -> Result<i64, AuditError> {
        let mut waits = Vec::with_capacity(events.len());
        for event in events {
            let (done, wait) = oneshot::channel();
            self.tx.send(Job { event: Some(event), done: Some(done) }).await.map_err(|_| AuditError::Closed)?;
            waits.push(wait);
        }
        let mut last = 0;
        for wait in waits {
            last = wait.await.map_err(|_| AuditError::Closed)??;
        }
        Ok(last)
    }

    /// What seals rows into this chain, for writes that append their own rows in their transaction
    /// ([`kubehero_store::ChangeStore::apply`]); tell [`AuditLog::committed`] about them afterwards.
    pub fn sealer(&self) -> &Arc<dyn kubehero_core::Sealer> {
        &self.sealer
    }

    /// Rows committed outside the writer (with a change): counted, and the forwarders woken.
    pub fn committed(&self, rows: &[kubehero_core::SealedRow]) {
        if let Some(last) = rows.last() {
            self.stats.failing.store(false, Ordering::Relaxed);
            self.stats.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
            self.status.set_head(last.seq);
            self.status.notify();
        }
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }
}

async fn run(
    store: Arc<dyn Store>,
    sealer: Arc<dyn kubehero_core::Sealer>,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    stats: Arc<WriterStats>,
    status: Arc<crate::forward::ForwardStatus>,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
    let mut last = 0;
    while rx.recv_many(&mut jobs, max_batch).await > 0 {
        gather_unawaited(&mut rx, &mut jobs, max_batch).await;
        // Which jobs carry a row (the rest are flush markers), before the events are taken out.
        let carries: Vec<bool> = jobs.iter().map(|j| j.event.is_some()).collect();
        let events: Vec<AuditEvent> = jobs.iter_mut().filter_map(|j| j.event.take()).collect();
        let appended = if events.is_empty() { Ok(Vec::new()) } else { store.append_audit(&events, &sealer).await };
        match appended {
            Ok(rows) => {
                stats.failing.store(false, Ordering::Relaxed);
                if let Some(r) = rows.last() {
                    last = r.seq;
                    stats.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
                    stats.commits.fetch_add(1, Ordering::Relaxed);
                    status.set_head(last);
                    status.notify();
                }
                // Rows come back in job order; a flush marker is answered with the head after this commit.
                let mut seqs = rows.iter().map(|r| r.seq);
                for (job, carries) in jobs.drain(..).zip(carries) {
                    let seq = if carries { seqs.next().unwrap_or(last) } else { last };
                    if let Some(done) = job.done {
                        let _ = done.send(Ok(seq));
                    }
                }
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                stats.failing.store(true, Ordering::Relaxed);
                tracing::error!(error = %e, rows = jobs.len(), "audit append failed; the requests are refused");
                let err = AuditError::Unavailable(e.to_string());
                // Everything queued meanwhile would wait out the same timeout: refuse it now too.
                while let Ok(job) = rx.try_recv() {
                    jobs.push(job);
                }
                for job in jobs.drain(..) {
                    match job.done {
                        Some(done) => {
                            let _ = done.send(Err(err.clone()));
                        }
                        None => {
                            stats.lost_enqueued.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
}

/// How long a batch of rows that nobody waits for (plain reads) may gather before it is committed. Fewer,
/// fuller commits write fewer pages per row; a crash may lose at most this long (plus one commit) of them.
const UNAWAITED_LINGER: Duration = Duration::from_millis(10);

/// While every queued job is an unawaited row, keeps gathering for up to [`UNAWAITED_LINGER`]: stops at once
/// when the batch is full or a job someone waits for (a durable row, a flush) arrives.
async fn gather_unawaited(rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>, max_batch: usize) {
    let unawaited = |jobs: &[Job]| jobs.iter().all(|j| j.done.is_none());
    if !unawaited(jobs) {
        return;
    }
    let deadline = tokio::time::Instant::now() + UNAWAITED_LINGER;
    while jobs.len() < max_batch && unawaited(jobs) {
        match tokio::time::timeout_at(deadline, rx.recv_many(jobs, max_batch - jobs.len())).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Writes a signed checkpoint of the current head if it moved since `last` (the previous checkpoint's seq).
/// Returns the seq checkpointed.
pub async fn checkpoint_once(store: &dyn Store, key: &SigningKey, last: i64, now_ms: i64) -> Result<i64, String> {
    let (seq, mac) = store.audit_head().await.map_err(|e| e.to_string())?;
    if seq > last {
        store.add_checkpoint(&sign_checkpoint(key, seq, &mac, now_ms)).await.map_err(|e| e.to_string())?;
    }
    Ok(seq)
}

/// Checkpoints every `every` until `stop` fires, then once more.
pub async fn run_checkpoints(
    store: Arc<dyn Store>,
    key: Arc<SigningKey>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = 0;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.changed() => true,
        };
        match checkpoint_once(&*store, &key, last, now_ms()).await {
            Ok(seq) => last = seq,
            Err(e) => tracing::warn!(error = %e, "audit checkpoint failed; will retry"),
        }
        if stopping || *stop.borrow() {
            return;
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
