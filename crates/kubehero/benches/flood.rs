//! Memory of the real `kubehero serve` binary before, during and after a flood of 10,000 connections that
//! each send part of a request head and then nothing (a slowloris flood), and whether the server still
//! answers meanwhile. The header timeout (8 s here, long enough that each flood is wholly open at once) must close every one of them. Two floods, one after
//! the other: the second must not raise RSS above the first (what a flood takes is reused, not leaked).
//! glibc keeps freed heap for reuse rather than returning it, so RSS after a flood stays near its peak; the
//! workspace forbids `unsafe`, which rules out calling `malloc_trim`.
//!
//! Run: `cargo bench -p kubehero --bench flood` (needs `ulimit -n` above 10,000 plus headroom; it says so
//! otherwise). Prints a table; the figures are the ratios of RSS during and after to RSS before.

use kubehero_testkit::process::rss_kib;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const FLOOD: usize = 10_000;

async fn healthz(port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/healthz");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
    client.get(url).send().await.is_ok_and(|r| r.status().is_success())
}

async fn open_connections(port: u16) -> Option<u64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("kubehero_connections_open ")?.trim().parse().ok())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let limit = kubehero_server::listener::open_files_limit().unwrap_or(0);
    if limit < FLOOD + 1_000 {
        println!("flood bench skipped: `ulimit -n` is {limit} (needs at least {})", FLOOD + 1_000);
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let port = kubehero_testkit::oidc::free_port()?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubehero"))
        .arg("serve")
        .env_clear()
        .env("KUBEHERO_LISTEN", format!("127.0.0.1:{port}"))
        .env("KUBEHERO_DATA_DIR", dir.path())
        .env("KUBEHERO_AGENT_LISTEN", "127.0.0.1:0")
        .env("KUBEHERO_HEADER_TIMEOUT_SECS", "8")
        .envs(std::env::vars().filter(|(k, _)| k.starts_with("MALLOC_")))
        .env("KUBEHERO_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let started = Instant::now();
    while !healthz(port).await {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(20), "the server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..200 {
        healthz(port).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);

    let mut rows = vec![("before (idle, warmed)".to_string(), before)];
    let mut served = Vec::new();
    for round in 1..=2 {
        let flood = flood(port, pid).await?;
        println!("flood {round}: {FLOOD} connections opened in {:.1} s", flood.opened.as_secs_f64());
        rows.push((format!("flood {round}: during ({} open)", flood.open_during), flood.during));
        rows.push((format!("flood {round}: after ({} open)", flood.open_after), flood.after));
        served.push(flood.served_meanwhile);
    }
    let served_after = healthz(port).await;
    let _ = child.kill().await;

    let mib = |k: u64| k as f64 / 1024.0;
    println!("slowloris floods of {FLOOD} connections each, header timeout 8 s");
    println!("{:<36} {:>10} {:>13}", "moment", "RSS MiB", "ratio/before");
    for (moment, kib) in rows {
        println!("{moment:<36} {:>10.1} {:>13.2}", mib(kib), kib as f64 / before as f64);
    }
    println!("others answered during the floods: {served:?}; after: {served_after}");
    Ok(())
}

struct Flood {
    opened: Duration,
    open_during: u64,
    during: u64,
    open_after: u64,
    after: u64,
    served_meanwhile: bool,
}

/// One flood: open [`FLOOD`] connections that send part of a head, measure, wait until the server has closed
/// them, measure again.
async fn flood(port: u16, pid: u32) -> anyhow::Result<Flood> {
    let start = Instant::now();
    let mut conns = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: flood\r\nX-Slow: ").await?;
        conns.push(s);
    }
    let opened = start.elapsed();
    let served_meanwhile = healthz(port).await;
    let open_during = open_connections(port).await.unwrap_or(0);
    let during = rss_kib(pid);
    // The header timeout closes them; wait until the server holds (almost) none.
    let mut open_after = open_during;
    let wait = Instant::now();
    while wait.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        open_after = open_connections(port).await.unwrap_or(u64::MAX);
        if open_after <= 2 {
            break;
        }
    }
    drop(conns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Flood { opened, open_during, during, open_after, after: rss_kib(pid), served_meanwhile })
}
