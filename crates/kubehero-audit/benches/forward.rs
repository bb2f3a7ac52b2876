//! Forwarding throughput: 100 000 rows in SQLite forwarded to a real rsyslog over TCP (RFC 6587 octet counting),
//! against a same-run baseline that writes the same pre-formatted frames straight to the socket.
//!
//! `cargo bench -p kubehero-audit --bench forward` (rows: `KUBEHERO_BENCH_ROWS`, default 100 000). Needs rsyslog
//! (scripts/test installs it). Prints a markdown table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kubehero_audit::forward::{format_rfc5424, run_with, ForwardOptions, ForwardStatus, SinkSpec};
use kubehero_audit::{ChainSealer, HmacKeys};
use kubehero_core::{AuditActor, AuditEvent, AuditResult, AuditTarget};
use kubehero_testkit::rsyslog::Rsyslog;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

fn event(i: usize) -> AuditEvent {
    AuditEvent {
        event_id: kubehero_audit::IdSource::new().unwrap().next_id(),
        time_ms: 1_764_000_000_000 + i as i64,
        actor: AuditActor {
            sub: format!("user-{}", i % 100),
            issuer: Some("https://idp.example.com".into()),
            email: Some("alice@example.com".into()),
            groups: vec!["sre".into(), "platform".into()],
            kind: "person".into(),
            auth_method: "jwt".into(),
        },
        action: "policy.arm".into(),
        target: AuditTarget {
            kind: Some("policy".into()),
            id: Some(format!("p{i}")),
            cluster: Some(format!("prod-{}", i % 3)),
            namespace: Some("default".into()),
        },
        result: AuditResult::ok(200),
        request_id: format!("req-{i}"),
        source: Some("10.0.0.7:51234".into()),
        user_agent: Some("kubectl/v1.31".into()),
    }
}

/// Lines rsyslog has written so far.
fn received(rs: &Rsyslog) -> usize {
    std::fs::read(rs.dir().join("out/rfc5424.log")).map(|b| bytecount(&b)).unwrap_or(0)
}

fn bytecount(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

async fn wait_received(rs: &Rsyslog, n: usize) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(300);
    while received(rs) < n {
        assert!(Instant::now() < deadline, "rsyslog received {} of {n}", received(rs));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Instant::now()
}

#[tokio::main]
async fn main() {
    let rows: usize = std::env::var("KUBEHERO_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let store = kubehero_store::open(&format!("sqlite:{}", dir.path().join("bench.db").display())).await.unwrap();
    let sealer = ChainSealer::new(Arc::new(HmacKeys::new(b"0123456789abcdef0123456789abcdef", &[]).unwrap()));
    let t = Instant::now();
    let events: Vec<AuditEvent> = (0..rows).map(event).collect();
    for chunk in events.chunks(2000) {
        store.append_audit(chunk, &sealer.shared()).await.unwrap();
    }
    eprintln!("seeded {rows} rows in {:.1} s", t.elapsed().as_secs_f64());

    let mut table = Vec::new();
    for batch_rows in [1000usize, 5000] {
        let rs = Rsyslog::start().await.unwrap();
        let url = format!("tcp://127.0.0.1:{}", rs.port);
        // Each run has its own rsyslog port, so its sink name and cursor are fresh.
        let spec = SinkSpec::parse(&url).unwrap();
        let opts = ForwardOptions { once: true, batch_rows, ..ForwardOptions::default() };
        let (_stop, rx) = tokio::sync::watch::channel(false);
        let t = Instant::now();
        run_with(store.clone(), vec![spec], opts, ForwardStatus::new(), rx).await.unwrap();
        let sent = t.elapsed();
        let done = wait_received(&rs, rows).await - t;
        table.push((format!("forwarder, SQLite → rsyslog TCP, batch {batch_rows}"), sent, done));
    }

    // Baseline: the same RFC 5424 frames, pre-formatted, written straight to the socket in 1 MiB writes.
    let all = store.audit_rows(0, rows as i64 + 1).await.unwrap();
    let mut frames = Vec::with_capacity(all.len() * 900);
    for r in &all {
        let m = format_rfc5424(r, "bench-host", std::process::id());
        write!(frames, "{} {m}", m.len()).unwrap();
    }
    let rs = Rsyslog::start().await.unwrap();
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", rs.port)).await.unwrap();
    let t = Instant::now();
    for chunk in frames.chunks(1 << 20) {
        sock.write_all(chunk).await.unwrap();
    }
    sock.flush().await.unwrap();
    let sent = t.elapsed();
    let done = wait_received(&rs, rows).await - t;
    table.push(("baseline: pre-formatted frames straight to the socket".into(), sent, done));

    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!("\n{rows} rows, {:.0} bytes/row on the wire\n", frames.len() as f64 / rows as f64);
    println!("| path | sent (s) | rows/s sent | all received by rsyslog (s) | rows/s end to end |");
    println!("|---|---:|---:|---:|---:|");
    for (what, sent, done) in table {
        println!(
            "| {what} | {:.2} | {:.0} | {:.2} | {:.0} |",
            sent.as_secs_f64(),
            rate(sent),
            done.as_secs_f64(),
            rate(done)
        );
    }
}
