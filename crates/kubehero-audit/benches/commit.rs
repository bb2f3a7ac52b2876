//! Durable audited appends per second: group commit against one transaction per row.
//!
//! For SQLite (a file on disk, WAL, `synchronous=FULL`) and PostgreSQL (a throwaway cluster with `fsync` on,
//! `synchronous_commit=on`), 64 tasks each call `AuditLog::record` in a loop for ~3 s, first with
//! `max_batch` 512 (group commit) and then with `max_batch` 1. Reported: rows/s, the average batch, and the
//! latency `record` adds to a request (p50/p99). Target: group/single >= 3x. The machine is shared and noisy,
//! so each mode runs several rounds, interleaved, and the best round is reported.
//! Run with `cargo bench -p kubehero-audit --bench commit` (release profile).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kubehero_audit::{AuditLog, ChainSealer, HmacKeys};
use kubehero_core::{AuditActor, AuditEvent, AuditResult, AuditTarget};
use kubehero_store::Store;
use kubehero_testkit::postgres::TempPostgres;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TASKS: usize = 64;
const RUN: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;
const GROUP: usize = 512;

fn event(i: usize) -> AuditEvent {
    AuditEvent {
        event_id: kubehero_audit::IdSource::new().unwrap().next_id(),
        time_ms: 1_764_000_000_000 + i as i64,
        actor: AuditActor {
            sub: "alice".to_string(),
            issuer: Some("https://idp.example.com".into()),
            email: Some("alice@example.com".to_string()),
            groups: vec!["sre".to_string()],
            kind: "person".to_string(),
            auth_method: "jwt".to_string(),
        },
        action: "policy.arm".to_string(),
        target: AuditTarget {
            kind: Some("policy".to_string()),
            id: Some(format!("p{i}")),
            cluster: Some("prod".to_string()),
            namespace: Some("default".to_string()),
        },
        result: AuditResult::ok(200),
        request_id: format!("req-{i}"),
        source: Some("10.0.0.7:51234".to_string()),
        user_agent: Some("kubehero-cli/0.1".to_string()),
    }
}

struct Round {
    rows: u64,
    commits: u64,
    secs: f64,
    latencies: Vec<Duration>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.secs
    }
    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

async fn round(store: Arc<dyn Store>, sealer: ChainSealer, max_batch: usize) -> Round {
    let log = AuditLog::start(store, sealer, max_batch);
    let started = Instant::now();
    let deadline = started + RUN;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let log = log.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut i = t;
            while Instant::now() < deadline {
                let e = event(i);
                let sent = Instant::now();
                log.record(e).await.unwrap();
                latencies.push(sent.elapsed());
                i += TASKS;
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(l) = tasks.join_next().await {
        latencies.extend(l.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let stats = log.stats();
    let (rows, commits) = (stats.rows.load(Ordering::Relaxed), stats.commits.load(Ordering::Relaxed));
    assert_eq!(rows, latencies.len() as u64);
    Round { rows, commits, secs, latencies }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn backend(name: &str, store: Arc<dyn Store>, sealer: &ChainSealer) -> Vec<String> {
    let mut best: [Option<Round>; 2] = [None, None];
    for r in 0..ROUNDS {
        for (slot, max_batch) in [(0, GROUP), (1, 1)] {
            let got = round(store.clone(), sealer.clone(), max_batch).await;
            eprintln!(
                "{name} round {}/{ROUNDS} max_batch {max_batch}: {:.0} rows/s ({} rows, {} commits)",
                r + 1,
                got.rate(),
                got.rows,
                got.commits
            );
            if best[slot].as_ref().is_none_or(|b| got.rate() > b.rate()) {
                best[slot] = Some(got);
            }
        }
    }
    let [Some(group), Some(single)] = best else { unreachable!() };
    let mut lines = Vec::new();
    for (mode, r) in
        [(format!("group commit (max_batch {GROUP})"), &group), ("one row per transaction".into(), &single)]
    {
        lines.push(format!(
            "| {name} | {mode} | {:.0} | {:.1} | {} | {} |",
            r.rate(),
            r.rows as f64 / r.commits as f64,
            ms(r.percentile(0.50)),
            ms(r.percentile(0.99)),
        ));
    }
    lines.push(format!("| {name} | **ratio group/single** | **{:.1}x** | | | |", group.rate() / single.rate()));
    lines
}

fn fs_type(path: &str) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best = ("?".to_string(), 0);
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 2 && path.starts_with(f[1]) && f[1].len() >= best.1 {
            best = (format!("{} on {}", f[2], f[1]), f[1].len());
        }
    }
    best.0
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let keys = Arc::new(HmacKeys::new(b"kubehero-bench-hmac-key-0123456789abcdef", &[]).unwrap());
        let sealer = ChainSealer::new(keys);
        let mut table = vec![
            format!("{TASKS} tasks recording in a loop for {RUN:?}, best of {ROUNDS} rounds per mode"),
            String::new(),
            "| backend | mode | rows/s | rows/commit | latency p50 | latency p99 |".to_string(),
            "|---|---|---:|---:|---:|---:|".to_string(),
        ];

        // The target directory, never tmpfs: the point is the cost of a flush to disk.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let path = dir.path().join("commit.db");
        eprintln!("SQLite file: {} ({})", path.display(), fs_type(&dir.path().display().to_string()));
        let sqlite = kubehero_store::open(&format!("sqlite:{}", path.display())).await.unwrap();
        table.extend(backend("SQLite (WAL, synchronous=FULL)", sqlite, &sealer).await);

        eprintln!(
            "starting PostgreSQL with fsync on (data under {})",
            fs_type(&std::env::temp_dir().display().to_string())
        );
        let pg = TempPostgres::start_durable().await.unwrap();
        let postgres = kubehero_store::open(&pg.url).await.unwrap();
        table.extend(backend("PostgreSQL (fsync=on)", postgres, &sealer).await);

        println!("{}", table.join("\n"));
    });
}
