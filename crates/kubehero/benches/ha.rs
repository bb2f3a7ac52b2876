//! One replica against three, in one run: the real `kubehero serve` binary on one throwaway PostgreSQL
//! (testkit) behind a real HAProxy (Debian `haproxy`, TCP mode, round robin), 48 keep-alive connections
//! spread over the replicas by the load balancer:
//! - `GET /api/v1/whoami` with an API key (a read: its audit row is not awaited);
//! - `POST /api/v1/clusters` (an audited write: its row is durable before the answer).
//!
//! The figure is requests/s through HAProxy with 3 replicas divided by the same with 1. On a machine with two
//! cores the three replicas, PostgreSQL, HAProxy and this load generator share the same cores, so the ratio shows
//! what replication costs or gains here, not what it gains on three machines.
//!
//! Run: `cargo bench -p kubehero --bench ha` (needs `haproxy` and PostgreSQL, which `scripts/test` installs).

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use kubehero_testkit::haproxy::HaProxy;
use kubehero_testkit::oidc::free_port;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "bench-admin-key-0123456789abcdef";
const HMAC: &str = "bench-audit-hmac-key-0123456789abcdef";
const CONNECTIONS: usize = 48;
const ROUND: Duration = Duration::from_secs(5);

/// Requests/s of `POST` (a new cluster name per request) or `GET` on `path` through `port`.
async fn load(port: u16, write: bool, names: Arc<AtomicUsize>) -> (f64, usize) {
    let deadline = Instant::now() + ROUND;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let names = names.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors) = (0usize, 0usize);
            let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return (0, 1) };
            let _ = stream.set_nodelay(true);
            let Ok((mut send, conn)) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
            else {
                return (0, 1);
            };
            tokio::spawn(conn);
            while Instant::now() < deadline {
                let req = if write {
                    let n = names.fetch_add(1, Ordering::Relaxed);
                    hyper::Request::post("/api/v1/clusters")
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(format!("{{\"name\":\"bench-{n}\"}}"))))
                } else {
                    hyper::Request::get("/api/v1/whoami").body(Full::new(Bytes::new()))
                };
                let Ok(mut req) = req else { break };
                req.headers_mut().insert("host", hyper::header::HeaderValue::from_static("127.0.0.1"));
                if let Ok(v) = format!("Bearer {ADMIN}").parse() {
                    req.headers_mut().insert("authorization", v);
                }
                match send.send_request(req).await {
                    Ok(res) => {
                        let good = res.status().is_success();
                        let _ = res.into_body().collect().await;
                        if good {
                            ok += 1;
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (ok, errors)
        }));
    }
    let (mut ok, mut errors) = (0, 0);
    for t in tasks {
        if let Ok((o, e)) = t.await {
            ok += o;
            errors += e;
        }
    }
    (ok as f64 / ROUND.as_secs_f64(), errors)
}

async fn replica(
    pg: &str,
    dir: &std::path::Path,
    key: &std::path::Path,
    port: u16,
) -> anyhow::Result<tokio::process::Child> {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubehero"))
        .arg("serve")
        .env_clear()
        .env("KUBEHERO_LISTEN", format!("127.0.0.1:{port}"))
        .env("KUBEHERO_AGENT_LISTEN", "127.0.0.1:0")
        .env("KUBEHERO_DATA_DIR", dir)
        .env("KUBEHERO_DATABASE_URL", pg)
        .env("KUBEHERO_REQUIRE_AUTH", "true")
        .env("AUDIT_HMAC_KEY", HMAC)
        .env("KUBEHERO_API_KEYS", format!("{ADMIN}:admin"))
        .env("KUBEHERO_AUDIT_SIGNING_KEY", key)
        .env("KUBEHERO_LOG", "error")
        .kill_on_drop(true)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "a replica did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(child)
}

/// Waits until every server behind `lb` answers through it.
async fn in_service(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut up = 0;
        for _ in 0..6 {
            up += reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.is_ok() as usize;
        }
        if up == 6 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "HAProxy did not take the replicas into service");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    anyhow::ensure!(HaProxy::available(), "haproxy is not installed: run scripts/test once");
    let pg = kubehero_testkit::postgres::TempPostgres::start().await?;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("signing.pk8");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_, _>>()?;
    let mut children = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let d = dir.path().join(format!("r{i}"));
        std::fs::create_dir_all(&d)?;
        children.push(replica(&pg.url, &d, &key, *p).await?);
    }
    let one = HaProxy::start(&[vec![ports[0]]]).await?;
    let three = HaProxy::start(std::slice::from_ref(&ports)).await?;
    in_service(one.ports[0]).await?;
    in_service(three.ports[0]).await?;
    let names = Arc::new(AtomicUsize::new(0));
    // Warm-up: connections, pools and caches of every replica.
    load(three.ports[0], false, names.clone()).await;
    println!("{:<40} {:>12} {:>12} {:>8}", "through HAProxy", "1 replica/s", "3 replicas/s", "3 vs 1");
    for (label, write) in [("GET /api/v1/whoami (API key)", false), ("POST /api/v1/clusters (audited write)", true)] {
        // Alternate, best of two each, so a noisy moment does not fall on one side only.
        let (mut a, mut b) = (0f64, 0f64);
        let mut errors = 0;
        for _ in 0..2 {
            let (r, e) = load(one.ports[0], write, names.clone()).await;
            a = a.max(r);
            errors += e;
            let (r, e) = load(three.ports[0], write, names.clone()).await;
            b = b.max(r);
            errors += e;
        }
        println!("{label:<40} {a:>12.0} {b:>12.0} {:>7.2}x", b / a.max(1.0));
        if errors > 0 {
            println!("  ({errors} requests failed)");
        }
    }
    println!("cores: {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    drop(children);
    Ok(())
}
