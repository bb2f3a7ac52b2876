//! Issue 4's figures, in one process:
//! - authenticating a request by dashboard session cookie or CLI token vs by a JWT already in the verified-token
//!   cache (the cheapest bearer path): ns/op and ratio (target ≤ 1.0);
//! - store writes made by sliding renewal under continuous use (one request a second for ten simulated
//!   minutes): target at most one a minute.
//!
//! `cargo bench -p kubehero-server --bench auth`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::http::{HeaderMap, HeaderValue, Method};
use kubehero_authn::{sha256_hex, VerifiedToken};
use kubehero_server::config::ServerConfig;
use kubehero_server::state::{AppState, Clock};
use kubehero_store::{SessionKind, SessionRecord};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

const ITERS: u32 = 200_000;

async fn time(state: &AppState, headers: &HeaderMap) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..ITERS {
            let p = kubehero_server::auth::authenticate(state, &Method::GET, headers).await.unwrap();
            std::hint::black_box(p);
        }
        best = best.min(t.elapsed().as_nanos() as f64 / f64::from(ITERS));
    }
    best
}

fn headers(name: &str, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    h
}

fn session(secret: &str, kind: SessionKind, now: i64) -> SessionRecord {
    let hash = sha256_hex(secret);
    SessionRecord {
        id: hash[..16].to_string(),
        hash,
        kind,
        sub: "alice".into(),
        email: Some("alice@example.com".into()),
        groups: vec!["kubehero-admins".into(), "dev".into()],
        issuer: Some("https://idp.example.com".into()),
        csrf: Some("csrf".into()),
        created_at: now,
        last_seen_at: now,
        expires_at: now + 8 * 3600,
        absolute_expires_at: now + 24 * 3600,
        revoked_at: None,
        user_agent: None,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let env: HashMap<String, String> = [
            ("KUBEHERO_DATA_DIR", dir.path().display().to_string()),
            ("KUBEHERO_AGENT_LISTEN", "127.0.0.1:0".to_string()),
            ("KUBEHERO_GROUP_ROLES", "kubehero-admins=admin".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let cfg = ServerConfig::from_parts(&env, Default::default()).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let clock = Arc::new(ManualClock(AtomicI64::new(now)));
        let store = kubehero_server::open_store(&cfg).await.unwrap();
        let state = kubehero_server::build_state(&cfg, store.clone(), clock.clone()).await.unwrap();

        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
        state.identity.token_cache.insert(
            jwt,
            Arc::new(VerifiedToken {
                issuer: "https://idp.example.com".into(),
                sub: "alice".into(),
                email: Some("alice@example.com".into()),
                groups: vec!["kubehero-admins".into(), "dev".into()],
                legacy_roles: vec![],
                exp: now + 3600,
                raw_sub: "alice".into(),
            }),
        );
        let cookie_secret = "khs_benchmarksessionsecret0123456789abcdefghijkl";
        store.create_session(&session(cookie_secret, SessionKind::Session, now)).await.unwrap();
        let cli_secret = "khc_benchmarkclitokensecret0123456789abcdefghijkl";
        store.create_session(&session(cli_secret, SessionKind::CliToken, now)).await.unwrap();

        let jwt_ns = time(&state, &headers("authorization", &format!("Bearer {jwt}"))).await;
        let cookie_ns = time(&state, &headers("cookie", &format!("kh_session={cookie_secret}"))).await;
        let cli_ns = time(&state, &headers("authorization", &format!("Bearer {cli_secret}"))).await;

        println!("\nAuthentication cost, {ITERS} requests per round, best of 3, one thread");
        println!("| credential | ns/request | ratio to cached JWT | target |");
        println!("|---|---:|---:|---|");
        println!("| JWT, verified-token cache hit | {jwt_ns:.0} | 1.00 | baseline |");
        println!("| dashboard session cookie | {cookie_ns:.0} | {:.2} | <= 1.0 |", cookie_ns / jwt_ns);
        println!("| CLI token | {cli_ns:.0} | {:.2} | <= 1.0 |", cli_ns / jwt_ns);

        // Continuous use: one request a second for ten minutes of (simulated) time.
        let renewals = |s: &AppState| {
            s.metrics
                .render()
                .lines()
                .find_map(|l| l.strip_prefix("kubehero_session_renewals_total ").map(|v| v.parse::<u64>().unwrap()))
                .unwrap_or(0)
        };
        let before = renewals(&state);
        let h = headers("cookie", &format!("kh_session={cookie_secret}"));
        for _ in 0..600 {
            clock.0.fetch_add(1, Ordering::SeqCst);
            kubehero_server::auth::authenticate(&state, &Method::GET, &h).await.unwrap();
        }
        let writes = renewals(&state) - before;
        println!("\nSliding renewal: 600 requests over 10 simulated minutes -> {writes} store writes (target <= 10)");
    });
}
