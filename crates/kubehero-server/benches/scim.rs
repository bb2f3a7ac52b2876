//! Issue 5's figures, over real HTTP against one server on an SQLite file, with 100,000 users, 1,000 groups
//! and one group of 10,000 members:
//! - `GET /Users?filter=userName eq "…"` (another letter case each time) and pages of 100 users: p50/p99,
//!   and their ratio to `GET /ServiceProviderConfig`, the baseline that pays the same token check and durable
//!   audit row but reads nothing;
//! - `PATCH /Groups/{id}` adding 1,000 members to the 10,000-member group (the body Entra ID sends);
//! - deprovisioning: from sending `PATCH active=false` to the last of a person's four credentials (session
//!   cookie, CLI token, API key, IdP JWT) being refused.
//!
//! `cargo bench -p kubehero-server --bench scim`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kubehero_authn::{sha256_hex, VerifiedToken};
use kubehero_server::config::ServerConfig;
use kubehero_store::{
    ApiKeyRecord, DirectoryGroup, DirectoryUser, MemberChange, SessionKind, SessionRecord, UserOrigin,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-scim-token-0123456789abcdef0123456789";
const USERS: usize = 100_000;
const GROUPS: usize = 1_000;
const BIG: usize = 10_000;
const ROUNDS: usize = 500;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn user(i: usize, at: i64) -> DirectoryUser {
    let name = format!("person-{i}@example.com");
    DirectoryUser {
        id: format!("u-{i:06}"),
        user_name: name.clone(),
        external_id: Some(format!("person-{i}")),
        active: true,
        subject: None,
        emails: vec![name.clone()],
        resource: json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": name,
            "externalId": format!("person-{i}"),
            "name": { "givenName": "Person", "familyName": format!("Number {i}") },
            "emails": [{ "value": name, "type": "work", "primary": true }],
            "active": true,
        }),
        origin: UserOrigin::Scim,
        version: 1,
        created_at: at,
        updated_at: at,
        deleted_at: None,
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let pct = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    Stats { p50: pct(0.50), p99: pct(0.99), max: *v.last().unwrap() }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Duration) {
        let mut rb = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(TOKEN);
        if let Some(b) = body {
            rb = rb.header("content-type", "application/scim+json").body(b.to_string());
        }
        let t = Instant::now();
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let _ = r.bytes().await.unwrap();
        (status, t.elapsed())
    }

    async fn timed(&self, n: usize, mut path: impl FnMut(usize) -> String) -> Stats {
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let (status, d) = self.send(reqwest::Method::GET, &path(i), None).await;
            assert_eq!(status, 200, "{}", path(i));
            v.push(d);
        }
        stats(v)
    }
}

/// A tiny deterministic generator, so runs are comparable.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
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
            ("KUBEHERO_SCIM_TOKEN", TOKEN.to_string()),
            ("KUBEHERO_GROUP_ROLES", "group-0=admin".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let cfg = ServerConfig::from_parts(&env, Default::default()).unwrap();
        let store = kubehero_server::open_store(&cfg).await.unwrap();
        let at = now();

        let seeding = Instant::now();
        let extra = 10 * 1000;
        let all: Vec<DirectoryUser> = (0..USERS + extra).map(|i| user(i, at)).collect();
        for chunk in all.chunks(10_000) {
            store.create_users(chunk).await.unwrap();
        }
        let mut big_id = String::new();
        for g in 0..GROUPS {
            let group = DirectoryGroup {
                id: format!("g-{g:04}"),
                display_name: format!("group-{g}"),
                external_id: None,
                resource: json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": format!("group-{g}") }),
                version: 1,
                created_at: at,
                updated_at: at,
            };
            let members: Vec<String> = (0..10).map(|k| format!("u-{:06}", (g * 10 + k) % USERS)).collect();
            store.create_group(&group, &members).await.unwrap();
            if g == 1 {
                big_id = group.id.clone();
                let ids: Vec<String> = (0..BIG).map(|i| format!("u-{:06}", (i * 7) % USERS)).collect();
                store.update_group(&group, MemberChange::Edit { add: &ids, remove: &[] }, None).await.unwrap();
            }
        }
        println!(
            "seeded {USERS} users (+{extra} to add later), {GROUPS} groups, one of {BIG} members in {:.1} s",
            seeding.elapsed().as_secs_f64()
        );

        let server = kubehero_server::start_with(&cfg, store.clone(), Arc::new(kubehero_server::state::SystemClock))
            .await
            .unwrap();
        let c = Client { http: reqwest::Client::new(), base: format!("http://{}/scim/v2", server.addr) };
        // Warm-up: connections, page cache, statement caches.
        c.timed(50, |_| "/ServiceProviderConfig".to_string()).await;
        c.timed(50, |i| format!("/Users?filter=userName%20eq%20%22person-{i}%40example.com%22")).await;

        let mut rng = Lcg(42);
        let baseline = c.timed(ROUNDS, |_| "/ServiceProviderConfig".to_string()).await;
        let names: Vec<usize> = (0..ROUNDS).map(|_| rng.next(USERS)).collect();
        let lookup = c
            .timed(ROUNDS, |i| format!("/Users?filter=userName%20eq%20%22PERSON-{}%40Example.com%22", names[i]))
            .await;
        let starts: Vec<usize> = (0..ROUNDS).map(|_| 1 + rng.next(USERS - 100)).collect();
        let page = c.timed(ROUNDS, |i| format!("/Users?startIndex={}&count=100", starts[i])).await;

        let mut patch = Vec::new();
        for round in 0..10 {
            let value: Vec<Value> =
                (0..1000).map(|k| json!({ "value": format!("u-{:06}", USERS + round * 1000 + k) })).collect();
            let body = json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{ "op": "Add", "path": "members", "value": value }],
            });
            let (status, d) = c.send(reqwest::Method::PATCH, &format!("/Groups/{big_id}"), Some(&body)).await;
            assert_eq!(status, 204);
            patch.push(d);
        }
        let patch = stats(patch);

        // Deprovisioning: person-0's four credentials, refused after one PATCH.
        let state = &server.state;
        let sub = "person-0";
        let cookie = "khs_benchsessionsecret0123456789abcdefghijklmnop";
        let cli = "khc_benchclitokensecret0123456789abcdefghijklmnop";
        for (secret, kind) in [(cookie, SessionKind::Session), (cli, SessionKind::CliToken)] {
            let hash = sha256_hex(secret);
            store
                .create_session(&SessionRecord {
                    id: hash[..16].to_string(),
                    hash,
                    kind,
                    sub: sub.into(),
                    email: Some("person-0@example.com".into()),
                    groups: vec![],
                    issuer: Some("https://idp.example.com".into()),
                    csrf: Some("csrf".into()),
                    created_at: at,
                    last_seen_at: at,
                    expires_at: at + 8 * 3600,
                    absolute_expires_at: at + 24 * 3600,
                    revoked_at: None,
                    user_agent: None,
                })
                .await
                .unwrap();
        }
        let key = "khk_benchapikeysecret0123456789abcdefghijklmnop";
        let key_hash = sha256_hex(key);
        store
            .create_api_key(&ApiKeyRecord {
                id: key_hash[..16].to_string(),
                hash: key_hash,
                name: "bench".into(),
                role: kubehero_core::Role::Member,
                owner: sub.into(),
                created_at: at,
                expires_at: None,
                revoked_at: None,
            })
            .await
            .unwrap();
        // The IdP JWT as the verified-token cache holds it after its first use (verification is not measured).
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwZXJzb24tMCJ9.c2lnbmF0dXJl";
        state.identity.token_cache.insert(
            jwt,
            Arc::new(VerifiedToken {
                issuer: "https://idp.example.com".into(),
                sub: sub.into(),
                email: Some("person-0@example.com".into()),
                groups: vec![],
                legacy_roles: vec![],
                exp: at + 3600,
                raw_sub: sub.into(),
            }),
        );
        let api = format!("http://{}/api/v1/whoami", server.addr);
        let whoami = |cred: usize| {
            let rb = c.http.get(&api);
            let rb = match cred {
                0 => rb.header("cookie", format!("kh_session={cookie}")),
                1 => rb.bearer_auth(cli),
                2 => rb.bearer_auth(key),
                _ => rb.bearer_auth(jwt),
            };
            async move { rb.send().await.unwrap().status().as_u16() }
        };
        for cred in 0..4 {
            assert_eq!(whoami(cred).await, 200, "credential {cred} works before");
        }
        let set = |active: bool| {
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{ "op": "replace", "value": { "active": active } }],
            })
        };
        let mut deprovision = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let (status, _) = c.send(reqwest::Method::PATCH, "/Users/u-000000", Some(&set(false))).await;
            assert_eq!(status, 200);
            let mut remaining: Vec<usize> = (0..4).collect();
            while !remaining.is_empty() {
                let mut still = Vec::new();
                for cred in remaining {
                    if whoami(cred).await != 401 {
                        still.push(cred);
                    }
                }
                remaining = still;
                assert!(t.elapsed() < Duration::from_secs(10), "credentials still accepted after 10 s");
            }
            deprovision.push(t.elapsed());
            let (status, _) = c.send(reqwest::Method::PATCH, "/Users/u-000000", Some(&set(true))).await;
            assert_eq!(status, 200);
            for cred in 0..4 {
                assert_eq!(whoami(cred).await, 200, "credential {cred} restored");
            }
        }
        let deprovision = stats(deprovision);

        println!("\nSCIM over HTTP, one client, {ROUNDS} requests per row (each answered after its durable audit row)");
        println!("| request | p50 ms | p99 ms | p50 / baseline p50 | target |");
        println!("|---|---:|---:|---:|---|");
        let row = |name: &str, s: &Stats, target: &str| {
            println!(
                "| {name} | {:.2} | {:.2} | {:.2} | {target} |",
                ms(s.p50),
                ms(s.p99),
                s.p50.as_secs_f64() / baseline.p50.as_secs_f64()
            );
        };
        row("GET /ServiceProviderConfig (baseline)", &baseline, "-");
        row("GET /Users?filter=userName eq (other case)", &lookup, "p99 <= 5 ms");
        row("GET /Users?startIndex=random&count=100", &page, "<= 20 ms");
        println!(
            "| PATCH /Groups/{{big}} add 1,000 members (10 rounds, 10,000 -> 20,000) | {:.1} | max {:.1} | {:.1} | <= 200 ms |",
            ms(patch.p50),
            ms(patch.max),
            patch.p50.as_secs_f64() / baseline.p50.as_secs_f64()
        );
        println!(
            "| PATCH active=false -> last of 4 credentials refused (10 rounds) | {:.1} | max {:.1} | {:.1} | < 1 s |",
            ms(deprovision.p50),
            ms(deprovision.max),
            deprovision.p50.as_secs_f64() / baseline.p50.as_secs_f64()
        );
        server.shutdown().await;
    });
}
