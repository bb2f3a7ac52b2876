//! Agents at scale, in one run:
//! 1. 1,000 agents' tunnel clients (the real agent code, `kubehero_agent::run`, many in this process) join and
//!    connect to one real `kubehero serve` on SQLite: the control plane's RSS before and with 1,000 idle
//!    tunnels, and the memory per tunnel (target: RSS ≤ 256 MiB);
//! 2. the control plane is killed (SIGKILL) and started again: how long until all 1,000 are back (target
//!    ≤ 60 s), with the histogram of reconnect times (spread by full jitter, not all in the same second);
//! 3. the added latency of one stream through a tunnel (open a stream, one HTTP/1.1 request) against a direct
//!    TCP connection to the same upstream (connect, the same request), p50 and p99 (target: p50 added
//!    ≤ 0.5 ms on loopback), with the control plane in this process so the bench can open streams itself.
//!
//! Run: `cargo bench -p kubehero --bench agents` (`KUBEHERO_BENCH_AGENTS=N` for another count; needs
//! `ulimit -n` above 3 × N). Prints a table.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use kubehero_agent::client::ControlPlane;
use kubehero_agent::run::{AgentConfig, RECONNECT_MAX, RECONNECT_MIN};
use kubehero_agent::state::StateDir;
use kubehero_agent::tunnel::{Stream, StreamHandler};
use kubehero_testkit::process::rss_kib;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "bench-admin-key-0123456789abcdef";
const HMAC: &str = "bench-audit-hmac-key-0123456789abcdef";

/// Answers every request on a stream with a fixed `/version` body (what the control plane reads at connect), and
/// the control plane's RBAC push as an agent with `--rbac-sync=false` does (409, once per change: an answer the
/// control plane could not read would be pushed again every 2 s, which is not what idle tunnels cost).
struct Version;

impl StreamHandler for Version {
    fn handle(&self, stream: Stream) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let mut res = hyper::Response::new(Full::new(Bytes::from_static(br#"{"gitVersion":"v0.0.0-bench"}"#)));
                if req.headers().contains_key(kubehero_agent::rbac::CONTROL_HEADER) {
                    *res.status_mut() = hyper::StatusCode::CONFLICT;
                }
                Ok::<_, std::convert::Infallible>(res)
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(stream, svc).await;
        })
    }
}

/// Pipes every stream to a TCP upstream (what a byte-transparent forwarder costs).
struct Pipe(std::net::SocketAddr);

impl StreamHandler for Pipe {
    fn handle(&self, stream: Stream) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let to = self.0;
        Box::pin(async move {
            if let Ok(mut up) = tokio::net::TcpStream::connect(to).await {
                let _ = up.set_nodelay(true);
                let mut s = hyper_util::rt::TokioIo::new(stream);
                let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
            }
        })
    }
}

fn serve_env(dir: &std::path::Path, api: u16, agent: u16) -> HashMap<String, String> {
    [
        ("KUBEHERO_LISTEN", format!("127.0.0.1:{api}")),
        ("KUBEHERO_AGENT_LISTEN", format!("127.0.0.1:{agent}")),
        ("KUBEHERO_DATA_DIR", dir.display().to_string()),
        ("KUBEHERO_REQUIRE_AUTH", "true".into()),
        ("AUDIT_HMAC_KEY", HMAC.into()),
        ("KUBEHERO_API_KEYS", format!("{ADMIN}:admin")),
        ("KUBEHERO_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn spawn_cp(env: &HashMap<String, String>, api: u16) -> anyhow::Result<tokio::process::Child> {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubehero"))
        .arg("serve")
        .env_clear()
        .envs(env)
        .kill_on_drop(true)
        .spawn()?;
    let t0 = Instant::now();
    let http = reqwest::Client::new();
    while !http.get(format!("http://127.0.0.1:{api}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "kubehero serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(child)
}

async fn connected(http: &reqwest::Client, api: u16) -> usize {
    let Ok(r) = http.get(format!("http://127.0.0.1:{api}/metrics")).send().await else { return 0 };
    let text = r.text().await.unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix("kubehero_agents_connected ")?.trim().parse().ok()).unwrap_or(0)
}

/// Registers `n` clusters with join tokens, 16 at a time.
async fn register(http: &reqwest::Client, api: u16, prefix: &str, n: usize) -> anyhow::Result<Vec<(String, Value)>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (http, sem, name) = (http.clone(), sem.clone(), format!("{prefix}{i:04}"));
        tasks.spawn(async move {
            let _p = sem.acquire().await;
            let r = http
                .post(format!("http://127.0.0.1:{api}/api/v1/clusters"))
                .bearer_auth(ADMIN)
                .json(&json!({"name": name, "join": true}))
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "registering {name}: {}", r.status());
            let body: Value = r.json().await?;
            Ok::<_, anyhow::Error>((name, body["join"].clone()))
        });
    }
    let mut out = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        out.push(r??);
    }
    Ok(out)
}

fn config(cp: &ControlPlane, dir: &std::path::Path, name: &str, join: &Value) -> AgentConfig {
    AgentConfig {
        server: cp.clone(),
        cluster: name.to_string(),
        join_token: join["token"].as_str().map(str::to_string),
        ca_hash: join["ca_hash"].as_str().map(str::to_string),
        state: kubehero_agent::state::State::Dir(StateDir::new(dir.join(name))),
        version: "bench".into(),
        reconnect_min: RECONNECT_MIN,
        reconnect_max: RECONNECT_MAX,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn http_get(io: impl hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static) -> anyhow::Result<()> {
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let req = hyper::Request::builder().uri("/version").header("host", "upstream").body(Empty::<Bytes>::new())?;
    let res = send.send_request(req).await?;
    anyhow::ensure!(res.status().is_success());
    res.into_body().collect().await?;
    Ok(())
}

/// Phase 3: one stream through a tunnel vs a direct TCP connection, with the control plane in this process.
async fn stream_overhead() -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    // The upstream: a plain HTTP/1.1 server.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let up_addr = upstream.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = upstream.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(Version.handle_tcp(tcp));
        }
    });
    let dir = tempfile::tempdir()?;
    let mut env = serve_env(dir.path(), 0, 0);
    env.insert("KUBEHERO_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("KUBEHERO_AGENT_LISTEN".into(), "127.0.0.1:0".into());
    let cfg = kubehero_server::config::ServerConfig::from_parts(&env, Default::default())?;
    let server = kubehero_server::start(&cfg).await?;
    let api = server.addr.port();
    let http = reqwest::Client::new();
    let joined = register(&http, api, "lat", 1).await?;
    let agent_port = server.agent_addr.map(|a| a.port()).unwrap_or(0);
    let cp = ControlPlane::parse(&format!("https://127.0.0.1:{agent_port}"))?;
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let (name, join) = &joined[0];
    let agent_cfg = config(&cp, dir.path(), name, join);
    tokio::spawn(kubehero_agent::run::run(agent_cfg, Arc::new(Pipe(up_addr)), rx));
    let hub = server.state.agents.hub.clone();
    let t0 = Instant::now();
    while hub.open(name).await.is_err() {
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "the latency agent did not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut direct, mut tunnel) = (Vec::new(), Vec::new());
    for round in 0..6000 {
        let t = Instant::now();
        if round % 2 == 0 {
            let tcp = tokio::net::TcpStream::connect(up_addr).await?;
            tcp.set_nodelay(true)?;
            http_get(hyper_util::rt::TokioIo::new(tcp)).await?;
            if round >= 1000 {
                direct.push(t.elapsed());
            }
        } else {
            let s = hub.open(name).await?;
            http_get(s).await?;
            if round >= 1000 {
                tunnel.push(t.elapsed());
            }
        }
    }
    direct.sort();
    tunnel.sort();
    Ok((direct, tunnel))
}

trait HandleTcp {
    fn handle_tcp(self, tcp: tokio::net::TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

impl HandleTcp for Version {
    fn handle_tcp(self, tcp: tokio::net::TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                    br#"{"gitVersion":"v0.0.0-bench"}"#,
                ))))
            });
            let io = hyper_util::rt::TokioIo::new(tcp);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("KUBEHERO_BENCH_AGENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let limit = kubehero_server::listener::open_files_limit().unwrap_or(0);
    if limit < 3 * n + 500 {
        println!("agents bench skipped: `ulimit -n` is {limit} (needs at least {})", 3 * n + 500);
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (api, agent) = (kubehero_testkit::oidc::free_port()?, kubehero_testkit::oidc::free_port()?);
    let env = serve_env(&dir.path().join("cp"), api, agent);
    let mut cp_child = spawn_cp(&env, api).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(cp_child.id().unwrap_or(0));

    let t_reg = Instant::now();
    let joined = register(&http, api, "c", n).await?;
    eprintln!("registered {n} clusters in {:.1} s", t_reg.elapsed().as_secs_f64());
    let rss_registered = rss_kib(cp_child.id().unwrap_or(0));
    let cp = ControlPlane::parse(&format!("https://127.0.0.1:{agent}"))?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let handler: Arc<dyn StreamHandler> = Arc::new(Version);
    let t_join = Instant::now();
    let mut agents = Vec::with_capacity(n);
    for (name, join) in &joined {
        let cfg = config(&cp, &dir.path().join("agents"), name, join);
        agents.push(tokio::spawn(kubehero_agent::run::run(cfg, handler.clone(), rx.clone())));
    }
    while connected(&http, api).await < n {
        anyhow::ensure!(t_join.elapsed() < Duration::from_secs(300), "not all agents connected");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let join_secs = t_join.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_tunnels = rss_kib(cp_child.id().unwrap_or(0));
    let rss_agents = rss_kib(std::process::id());

    // Restart: SIGKILL, then the same settings and database.
    cp_child.start_kill()?;
    cp_child.wait().await?;
    let t_restart = Instant::now();
    let mut cp_child = spawn_cp(&env, api).await?;
    let started = t_restart.elapsed();
    let mut samples: Vec<(f64, usize)> = Vec::new();
    let back = loop {
        let c = connected(&http, api).await;
        samples.push((t_restart.elapsed().as_secs_f64(), c));
        if c >= n {
            break Some(t_restart.elapsed());
        }
        if t_restart.elapsed() > Duration::from_secs(120) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let rss_after_restart = rss_kib(cp_child.id().unwrap_or(0));
    let _ = stop.send(true);
    for a in agents {
        a.abort();
    }
    let _ = cp_child.start_kill();

    let (direct, tunnel) = stream_overhead().await?;

    let mib = |k: u64| k as f64 / 1024.0;
    println!("\nAgents: {n} tunnels to one `kubehero serve` (SQLite), agents in this process");
    println!("| figure | value |");
    println!("|---|---:|");
    println!("| cp RSS idle | {:.1} MiB |", mib(rss_idle));
    println!("| cp RSS with {n} clusters registered | {:.1} MiB |", mib(rss_registered));
    println!("| cp RSS with {n} idle tunnels (target <= 256 MiB) | {:.1} MiB |", mib(rss_tunnels));
    println!("| cp memory per tunnel | {:.1} KiB |", (rss_tunnels.saturating_sub(rss_registered)) as f64 / n as f64);
    println!("| agent-side memory per tunnel (this process / {n}) | {:.1} KiB |", rss_agents as f64 / n as f64);
    println!("| first join + connect of all {n} | {join_secs:.1} s |");
    println!("| cp restart (SIGKILL) until it answered | {:.1} s |", started.as_secs_f64());
    match back {
        Some(d) => println!("| all {n} back after the restart (target <= 60 s) | {:.1} s |", d.as_secs_f64()),
        None => println!("| all {n} back after the restart (target <= 60 s) | NOT within 120 s |"),
    }
    println!("| cp RSS after the restart with {n} tunnels | {:.1} MiB |", mib(rss_after_restart));
    println!("\nReconnects after the restart, per 2-second window (full jitter spreads them):");
    let mut prev = 0usize;
    let mut window = 2.0;
    let mut hist = Vec::new();
    for (t, c) in &samples {
        if *t >= window {
            hist.push((window, c.saturating_sub(prev)));
            prev = *c;
            window += 2.0;
        }
    }
    if let Some((t, c)) = samples.last() {
        hist.push((t.ceil(), c.saturating_sub(prev)));
    }
    let most = hist.iter().map(|(_, c)| *c).max().unwrap_or(1).max(1);
    for (t, c) in hist {
        let bar = "#".repeat((c * 50).div_ceil(most));
        println!("{:>5.0} s {c:>5} {bar}", t);
    }
    let (d50, d99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
    let (t50, t99) = (percentile(&tunnel, 0.5), percentile(&tunnel, 0.99));
    println!("\nOne stream and one HTTP/1.1 request, {} of each, interleaved:", direct.len());
    println!("| path | p50 | p99 |");
    println!("|---|---:|---:|");
    println!("| direct TCP to the upstream | {:.3} ms | {:.3} ms |", ms(d50), ms(d99));
    println!("| through the tunnel (cp → agent → upstream) | {:.3} ms | {:.3} ms |", ms(t50), ms(t99));
    println!(
        "| added by the tunnel (target p50 <= 0.5 ms) | {:.3} ms | {:.3} ms |",
        ms(t50) - ms(d50),
        ms(t99) - ms(d99)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
