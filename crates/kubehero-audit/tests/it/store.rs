//! Two writers on one database, as two replicas would run: each has its own store handle (its own pool) and
//! its own `AuditLog`; the locked chain head makes them take turns, so the log stays one gapless chain.

use crate::{assert_gapless, keys, record_concurrently, KEY_A};
use kubehero_audit::{verify_store, AuditLog, ChainSealer};
use kubehero_store::Store;
use kubehero_testkit::postgres::TempPostgres;
use std::collections::HashSet;
use std::sync::Arc;

const EACH: usize = 500;

async fn two_writers(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let keys = keys(KEY_A, &[]);
    let log_a = AuditLog::start(a.clone(), ChainSealer::new(keys.clone()), 256);
    let log_b = AuditLog::start(b.clone(), ChainSealer::new(keys.clone()), 256);
    let (sa, sb) = tokio::join!(record_concurrently(&log_a, EACH, 0), record_concurrently(&log_b, EACH, EACH));
    assert_eq!((sa.len(), sb.len()), (EACH, EACH));
    let mut all: Vec<i64> = sa.iter().chain(&sb).copied().collect();
    all.sort_unstable();
    assert_gapless(&all, 2 * EACH as i64);
    // Each writer committed its own rows.
    assert_eq!(log_a.stats().rows.load(std::sync::atomic::Ordering::Relaxed), EACH as u64);
    assert_eq!(log_b.stats().rows.load(std::sync::atomic::Ordering::Relaxed), EACH as u64);

    for store in [&a, &b] {
        let report = verify_store(&**store, &keys, &[]).await.unwrap();
        assert_eq!((report.rows, report.last_seq), (2 * EACH as u64, 2 * EACH as i64));
    }
    let rows = a.audit_rows(0, 10_000).await.unwrap();
    let request_ids: HashSet<String> = rows
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["request_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(request_ids.len(), 2 * EACH, "every event is recorded exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_postgres_database() {
    let pg = TempPostgres::start().await.unwrap();
    let a = kubehero_store::open(&pg.url).await.unwrap();
    let b = kubehero_store::open(&pg.url).await.unwrap();
    two_writers(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("audit.db").display());
    let a = kubehero_store::open(&url).await.unwrap();
    let b = kubehero_store::open(&url).await.unwrap();
    two_writers(a, b).await;
}
