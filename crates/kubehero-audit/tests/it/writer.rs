//! The group-commit writer: it batches under concurrency (and does not when `max_batch` is 1); when the store
//! fails every waiter gets `Unavailable` within a bounded time and nothing partial is written; after recovery
//! records succeed and the chain still verifies.

use crate::{assert_gapless, event, keys, record_concurrently, sqlite_file, KEY_A};
use kubehero_audit::{verify_store, AuditError, AuditLog, ChainSealer};
use kubehero_store::Store;
use kubehero_testkit::postgres::TempPostgres;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upper bound for every waiter to hear of a store failure: a few store timeouts (5 s each), never a hang.
const FAILURE_BOUND: Duration = Duration::from_secs(45);

fn sealer() -> ChainSealer {
    ChainSealer::new(keys(KEY_A, &[]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_concurrent_records() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = sqlite_file(dir.path(), "audit.db").await;
    let log = AuditLog::start(store.clone(), sealer(), 256);
    assert_gapless(&record_concurrently(&log, 64, 0).await, 64);
    let (rows, commits) = (log.stats().rows.load(Ordering::Relaxed), log.stats().commits.load(Ordering::Relaxed));
    assert_eq!(rows, 64);
    assert!(commits < rows, "64 concurrent records took {commits} commits: no batching");

    // max_batch 1: one transaction per row.
    let log = AuditLog::start(store.clone(), sealer(), 1);
    let seqs = record_concurrently(&log, 64, 64).await;
    assert_eq!(seqs, (65..=128).collect::<Vec<i64>>());
    let (rows, commits) = (log.stats().rows.load(Ordering::Relaxed), log.stats().commits.load(Ordering::Relaxed));
    assert_eq!((rows, commits), (64, 64));
    assert_eq!(verify_store(&*store, &keys(KEY_A, &[]), &[]).await.unwrap().rows, 128);
}

/// Records 64 events while the store is failing: every one must come back `Unavailable` within the bound.
async fn all_refused(log: &AuditLog, first: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in first..first + 64 {
        let log = log.clone();
        tasks.spawn(async move { log.record(event(i)).await });
    }
    let results = tokio::time::timeout(FAILURE_BOUND, async {
        let mut results = Vec::new();
        while let Some(r) = tasks.join_next().await {
            results.push(r.unwrap());
        }
        results
    })
    .await
    .unwrap_or_else(|_| panic!("waiters still blocked after {FAILURE_BOUND:?}"));
    assert_eq!(results.len(), 64);
    for r in results {
        assert!(matches!(r, Err(AuditError::Unavailable(_))), "{r:?}");
    }
    started.elapsed()
}

/// The log holds exactly rows 1..=n, the head agrees, and the chain verifies.
async fn assert_exactly(store: &dyn Store, n: i64) {
    let rows = store.audit_rows(0, 10_000).await.unwrap();
    assert_gapless(&rows.iter().map(|r| r.seq).collect::<Vec<_>>(), n);
    assert_eq!(store.audit_head().await.unwrap().0, n);
    assert_eq!(verify_store(store, &keys(KEY_A, &[]), &[]).await.unwrap().rows, n as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_by_another_process_refuses_then_recovers() {
    // Running as root makes a read-only file writable anyway, so the failure is another connection holding
    // the write lock past the busy timeout, as a stuck process would.
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = sqlite_file(dir.path(), "audit.db").await;
    let log = AuditLog::start(store.clone(), sealer(), 256);
    assert_gapless(&record_concurrently(&log, 10, 0).await, 10);

    let other = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut lock = other.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *lock).await.unwrap();
    let took = all_refused(&log, 100).await;
    eprintln!("sqlite: 64 waiters refused within {took:?}");
    assert!(log.stats().failures.load(Ordering::Relaxed) >= 1);
    sqlx::query("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);
    other.close().await;

    assert_exactly(&*store, 10).await;
    let seqs = record_concurrently(&log, 20, 200).await;
    assert_eq!(seqs, (11..=30).collect::<Vec<i64>>());
    assert_exactly(&*store, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_refuses_then_recovers() {
    let pg = TempPostgres::start().await.unwrap();
    let store = kubehero_store::open(&pg.url).await.unwrap();
    let log = AuditLog::start(store.clone(), sealer(), 256);
    assert_gapless(&record_concurrently(&log, 10, 0).await, 10);

    pg.stop_server();
    let took = all_refused(&log, 100).await;
    eprintln!("postgres: 64 waiters refused within {took:?}");
    pg.start_server();
    let mut up = false;
    for _ in 0..100 {
        if store.ping().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "PostgreSQL did not come back");

    assert_exactly(&*store, 10).await;
    let seqs = record_concurrently(&log, 20, 200).await;
    assert_eq!(seqs, (11..=30).collect::<Vec<i64>>());
    assert_exactly(&*store, 30).await;
}

/// A row the database refuses half-way through a batch (a repeated event id) rolls the whole batch back.
async fn failed_batch_writes_nothing(store: Arc<dyn Store>) {
    let sealer = sealer();
    let mut dup = event(0);
    dup.event_id = "0123456789abcdef0123456789abcdef".to_string();
    store.append_audit(&[event(1), dup.clone()], &sealer.shared()).await.unwrap();
    let head = store.audit_head().await.unwrap();

    // Directly: rows before and after the bad one in one append, none survives.
    let batch = [event(2), event(3), dup.clone(), event(4)];
    assert!(store.append_audit(&batch, &sealer.shared()).await.is_err());
    assert_eq!(store.audit_head().await.unwrap(), head);
    assert_exactly(&*store, 2).await;

    // Through the writer: whatever batch the bad event lands in fails as a whole; the others commit.
    let log = AuditLog::start(store.clone(), sealer, 256);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 10..74 {
        let log = log.clone();
        let e = if i == 40 { dup.clone() } else { event(i) };
        tasks.spawn(async move { (i, log.record(e).await) });
    }
    let mut ok = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            (40, r) => assert!(matches!(r, Err(AuditError::Unavailable(_))), "{r:?}"),
            (_, Ok(seq)) => ok.push(seq),
            (_, Err(e)) => assert!(matches!(e, AuditError::Unavailable(_)), "{e:?}"),
        }
    }
    ok.sort_unstable();
    let n = 2 + ok.len() as i64;
    assert_eq!(ok, (3..=n).collect::<Vec<i64>>(), "acknowledged seqs are not the rows after the head");
    assert_exactly(&*store, n).await;
    assert!(log.stats().failures.load(Ordering::Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_failed_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = sqlite_file(dir.path(), "audit.db").await;
    failed_batch_writes_nothing(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_failed_batch_writes_nothing() {
    let pg = TempPostgres::start().await.unwrap();
    failed_batch_writes_nothing(kubehero_store::open(&pg.url).await.unwrap()).await;
}
