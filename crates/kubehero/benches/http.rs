//! HTTP figures, measured in one run against the real `kubehero serve` binary (default settings, so plain
//! reads are audited without waiting for the flush), 64 keep-alive connections:
//! - `GET /healthz`, the baseline;
//! - `GET /api/v1/whoami` with one repeated RS256 token (verification cache warm): ratio to healthz (≥ 0.8);
//! - `GET /api/v1/whoami` with a fresh ES256 token on every request (each one verified): ratio to the raw
//!   single-core ES256 verifications/s measured here with ring (≥ 0.7). The tokens are signed with the test
//!   IdP's own ES256 key, so they are as real as the IdP's (issuer, `kid`, audience);
//! - idle RSS of the serving process (target ≤ 64 MiB).
//!
//! Run: `cargo bench -p kubehero --bench http` (needs the npm oidc-provider from `scripts/test`).
//! The load generator runs in this process on the same two cores as the server, so absolute numbers are
//! low; the ratio is what the issue asks for.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use kubehero_testkit::oidc::{free_port, OidcProvider};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 64;
const ROUND: Duration = Duration::from_secs(4);
/// Enough distinct ES256 tokens for the fresh-token rounds (none is presented twice).
const FRESH_TOKENS: usize = 120_000;

struct Stats {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// What each request presents.
#[derive(Clone)]
enum Tokens {
    None,
    Same(String),
    /// A different token per request, taken in order from a pre-minted list (never repeated in a run).
    Fresh(Arc<Vec<String>>, Arc<AtomicUsize>),
}

impl Tokens {
    fn next(&self) -> Option<&str> {
        match self {
            Tokens::None => None,
            Tokens::Same(t) => Some(t),
            Tokens::Fresh(all, i) => all.get(i.fetch_add(1, Ordering::Relaxed)).map(String::as_str),
        }
    }
}

async fn load(port: u16, path: &'static str, tokens: Tokens) -> Stats {
    let deadline = Instant::now() + ROUND;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let token = tokens.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                return (lat, 1);
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut send, conn)) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
            else {
                return (lat, 1);
            };
            tokio::spawn(conn);
            while Instant::now() < deadline {
                let mut req = hyper::Request::get(path).header("host", "127.0.0.1");
                match (&token, token.next()) {
                    (Tokens::None, _) => {}
                    (_, Some(t)) => req = req.header("authorization", format!("Bearer {t}")),
                    (_, None) => break, // out of fresh tokens
                }
                let Ok(req) = req.body(Empty::<Bytes>::new()) else {
                    break;
                };
                let t0 = Instant::now();
                match send.send_request(req).await {
                    Ok(res) => {
                        let ok = res.status().is_success();
                        let _ = res.into_body().collect().await;
                        if ok {
                            lat.push(t0.elapsed());
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
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or_default()
    };
    Stats { rps: all.len() as f64 / ROUND.as_secs_f64(), p50: pct(0.50), p99: pct(0.99), errors }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Raw ES256 verifications per second on one core with ring: the ceiling of a cold verifier.
fn raw_es256_per_sec(public: &[u8], token: &str) -> f64 {
    use base64::Engine;
    let (input, sig) = token.rsplit_once('.').unwrap_or_default();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).unwrap_or_default();
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, public);
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed() < Duration::from_secs(2) {
        for _ in 0..100 {
            if key.verify(input.as_bytes(), &sig).is_ok() {
                n += 1;
            }
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let idp = OidcProvider::start().await?;
    let rs256 = idp.client_credentials("kubehero", "kubehero-secret").await?;
    let minter = idp.es256_minter()?;
    let t0 = Instant::now();
    let fresh: Vec<String> =
        (0..FRESH_TOKENS as u64).map(|i| minter.mint(&format!("user-{i}"), "kubehero", i)).collect::<Result<_, _>>()?;
    eprintln!("minted {FRESH_TOKENS} ES256 tokens in {:.1} s", t0.elapsed().as_secs_f64());
    let raw = raw_es256_per_sec(&minter.public_key(), &fresh[0]);
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubehero"))
        .arg("serve")
        .env_clear()
        .env("KUBEHERO_LISTEN", format!("127.0.0.1:{port}"))
        .env("KUBEHERO_DATA_DIR", dir.path())
        .env("OIDC_ISSUER_URL", &idp.issuer)
        .env("OIDC_AUDIENCE", "kubehero")
        .env("KUBEHERO_GROUP_ROLES", "system:service-clients=member")
        .env("KUBEHERO_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    wait_until_token_accepted(port, &rs256).await?;
    wait_until_token_accepted(port, &fresh[FRESH_TOKENS - 1]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(pid).unwrap_or(0);

    // Warm-up, then alternate the endpoints and keep each one's best round.
    let next = Arc::new(AtomicUsize::new(0));
    let cases = [
        ("GET /healthz", "/healthz", Tokens::None),
        ("GET /api/v1/whoami, one RS256 token (cache warm)", "/api/v1/whoami", Tokens::Same(rs256.clone())),
        ("GET /api/v1/whoami, fresh ES256 token each", "/api/v1/whoami", Tokens::Fresh(Arc::new(fresh), next.clone())),
    ];
    for (_, path, tokens) in &cases[..2] {
        load(port, path, tokens.clone()).await;
    }
    let mut best: Vec<Option<Stats>> = cases.iter().map(|_| None).collect();
    for _ in 0..2 {
        for (i, (_, path, tokens)) in cases.iter().enumerate() {
            let s = load(port, path, tokens.clone()).await;
            if best[i].as_ref().is_none_or(|b| s.rps > b.rps) {
                best[i] = Some(s);
            }
        }
    }
    let loaded = rss_kib(pid).unwrap_or(0);
    let best: Vec<Stats> = best.into_iter().flatten().collect();
    let [h, warm, cold] = best.as_slice() else { anyhow::bail!("no measurements") };
    println!(
        "\nHTTP, {CONNECTIONS} connections, {}s rounds, best of 2 (load generator shares the 2 cores)",
        ROUND.as_secs()
    );
    println!("| endpoint | req/s | p50 | p99 | errors | ratio |");
    println!("|---|---:|---:|---:|---:|---:|");
    for ((name, _, _), s) in cases.iter().zip([h, warm, cold]) {
        println!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {} | {:.2} x healthz |",
            s.rps,
            s.p50.as_secs_f64() * 1e3,
            s.p99.as_secs_f64() * 1e3,
            s.errors,
            s.rps / h.rps
        );
    }
    println!("| raw ES256 verify, ring, one core | {raw:.0} | | | | |");
    println!("\nwarm whoami / healthz: {:.2} (target >= 0.80)", warm.rps / h.rps);
    println!("fresh-ES256 whoami / raw single-core ES256 verifies: {:.2} (target >= 0.70)", cold.rps / raw);
    println!("fresh tokens used: {} of {FRESH_TOKENS}", next.load(Ordering::Relaxed).min(FRESH_TOKENS));
    println!(
        "idle RSS of kubehero serve: {:.1} MiB (target <= 64 MiB); after load: {:.1} MiB",
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0
    );
    let _ = child.kill().await;
    Ok(())
}

/// Waits for the server, then checks the token is accepted (so the bench measures a success path).
async fn wait_until_token_accepted(port: u16, token: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            // The issuer's keys arrive in the background; retry until the JWT is accepted.
            loop {
                let req = hyper::Request::get("/api/v1/whoami")
                    .header("host", "127.0.0.1")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Empty::<Bytes>::new())?;
                let res = send.send_request(req).await?;
                let ok = res.status().is_success();
                let _ = res.into_body().collect().await;
                if ok {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    anyhow::bail!("whoami with the JWT never succeeded");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("kubehero serve did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
