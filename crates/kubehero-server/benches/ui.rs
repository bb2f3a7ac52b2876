//! Issue 16's figure: every dashboard page rendered with 1,000 clusters and 100,000 audit rows (the audit page
//! paged, 50 rows), over real HTTP against one server on an SQLite file, signed in with a dashboard session.
//! Each page's p50/p99 time to the last byte, and its ratio to `GET /api/v1/clusters` (the JSON list of the same
//! 1,000 clusters, the baseline a page is compared with) measured in the same run.
//!
//! `cargo bench -p kubehero-server --bench ui`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kubehero_core::{AuditActor, AuditEvent, AuditResult, AuditTarget};
use kubehero_server::config::ServerConfig;
use kubehero_store::{Cluster, ClusterStatus, ConnectionState};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLUSTERS: usize = 1_000;
const ROWS: usize = 100_000;
const ROUNDS: usize = 60;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let env: HashMap<String, String> = [
            ("KUBEHERO_DATA_DIR", dir.path().display().to_string()),
            ("KUBEHERO_AGENT_LISTEN", "127.0.0.1:0".to_string()),
            ("KUBEHERO_LISTEN", "127.0.0.1:0".to_string()),
            ("KUBEHERO_REQUIRE_AUTH", "true".to_string()),
            ("AUDIT_HMAC_KEY", "bench-audit-hmac-key-0123456789abcdef".to_string()),
            ("KUBEHERO_GROUP_ROLES", "owners=owner".to_string()),
            ("KUBEHERO_PUBLIC_URL", "https://kubehero.example.com".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let cfg = ServerConfig::from_parts(&env, Default::default()).unwrap();
        let store = kubehero_server::open_store(&cfg).await.unwrap();
        let at = now();
        let seeding = Instant::now();
        for i in 0..CLUSTERS {
            let name = format!("cluster-{i:04}");
            let c = Cluster {
                name: name.clone(),
                api_server_url: Some(format!("https://{name}.example.com:6443")),
                labels: Default::default(),
                created_by: "seed".into(),
                created_at: at,
            };
            store.create_cluster(&c).await.unwrap();
            let status = ClusterStatus {
                cluster: name,
                state: if i.is_multiple_of(10) { ConnectionState::Disconnected } else { ConnectionState::Connected },
                since: at - 3600,
                last_seen: Some(at),
                agent_version: Some("0.1.0".into()),
                kubernetes_version: Some("v1.30.4".into()),
                cert_not_after: Some(at + 7 * 86_400),
                replica: None,
            };
            store.put_cluster_status(&status).await.unwrap();
        }
        let server = kubehero_server::start_with(&cfg, store.clone(), Arc::new(kubehero_server::state::SystemClock))
            .await
            .unwrap();
        let state = &server.state;
        let event = |i: usize| AuditEvent {
            event_id: format!("seed-{i}"),
            time_ms: at * 1000 - (ROWS - i) as i64,
            actor: AuditActor {
                sub: format!("person-{}", i % 500),
                kind: "person".into(),
                auth_method: "cli_token".into(),
                ..Default::default()
            },
            action: if i.is_multiple_of(7) { "k8s.create".into() } else { "k8s.get".into() },
            target: AuditTarget {
                kind: Some("configmaps".into()),
                id: Some(format!("cm-{i}")),
                cluster: Some(format!("cluster-{:04}", i % CLUSTERS)),
                namespace: Some("default".into()),
            },
            result: AuditResult::ok(200),
            request_id: format!("r-{i}"),
            source: None,
            user_agent: None,
        };
        for chunk in (0..ROWS).collect::<Vec<_>>().chunks(5_000) {
            state.identity.audit.record_all(chunk.iter().map(|i| event(*i)).collect()).await.unwrap();
        }
        println!("seeded {CLUSTERS} clusters and {ROWS} audit rows in {:.1} s", seeding.elapsed().as_secs_f64());

        // An owner's dashboard session, as the sign-in would have made it.
        let who = kubehero_identity::SignedIn {
            sub: "olivia".into(),
            email: Some("olivia@example.com".into()),
            groups: vec!["owners".into()],
            issuer: None,
            user_agent: None,
        };
        let (secret, rec) = kubehero_identity::credential::mint_session(who, now()).unwrap();
        store.create_session(&rec).await.unwrap();
        let cookie = format!("kh_session={secret}");
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let base = format!("http://{}", server.addr);
        let time = async |path: &str| {
            let mut v = Vec::with_capacity(ROUNDS);
            for _ in 0..ROUNDS {
                let t = Instant::now();
                let r = http.get(format!("{base}{path}")).header("cookie", &cookie).send().await.unwrap();
                let status = r.status().as_u16();
                let body = r.bytes().await.unwrap();
                v.push(t.elapsed());
                assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
            }
            (pct(&mut v, 0.5), pct(&mut v, 0.99))
        };
        // Warm-up: connections, page cache, statement caches.
        for p in ["/api/v1/clusters", "/ui/clusters", "/ui/audit"] {
            time(p).await;
        }
        let pages = [
            "/api/v1/clusters",
            "/",
            "/ui/clusters",
            "/ui/clusters/cluster-0500",
            "/ui/access",
            "/ui/policies",
            "/ui/audit",
            "/ui/audit?action=k8s.create&cluster=cluster-0007",
            "/ui/credentials",
            "/ui/bindings",
            "/ui/people",
            "/ui/settings",
        ];
        let mut results = Vec::new();
        for p in pages {
            results.push((p, time(p).await));
        }
        let base_p50 = (results[0].1).0;
        println!(
            "\n{:<52} {:>9} {:>9} {:>10}",
            "page (1,000 clusters, 100,000 audit rows)", "p50 ms", "p99 ms", "p50 ratio"
        );
        for (p, (p50, p99)) in &results {
            println!("{p:<52} {:>9.2} {:>9.2} {:>9.2}×", ms(*p50), ms(*p99), ms(*p50) / ms(base_p50));
        }
        let worst = results.iter().map(|(_, (_, p99))| *p99).max().unwrap();
        println!("\nslowest page p99: {:.1} ms (the bar: 100 ms server time)", ms(worst));
    });
}
