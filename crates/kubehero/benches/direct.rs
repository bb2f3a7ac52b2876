//! Clusters that trust KubeHero directly, in one run with the real `kubehero serve` (TLS, SQLite):
//! 1. the TokenReview webhook as an API server calls it (mutual TLS, the webhook kubeconfig's certificate),
//!    4 then 16 concurrent callers for 4 s each, with a direct token and with a per-cluster token (the CLI
//!    login behind each, and the direct token's signature, cached after the first review), against
//!    `GET /api/v1/whoami` with the CLI login itself on the API listener in the same run: req/s, p50, p99
//!    (target p99 ≤ 2 ms with a warm cache);
//! 2. RBAC sync of 1,000 RoleBindings (200 namespaces × 5 roles from 1,000 namespace-scoped bindings) plus the
//!    10 cluster-wide objects into a real kube-apiserver v1.20.2 with the agent's own code: the first apply
//!    (everything created), an apply with nothing to do, and one that puts back 100 deleted RoleBindings.
//!
//! Run: `cargo bench -p kubehero --bench direct`. Prints a table.

use base64::Engine;
use kubehero_agent::rbac::Desired;
use kubehero_agent::upstream::Upstream;
use kubehero_testkit::kubeapi::{KubeApiServer, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "bench-owner-key-0123456789abcdef";

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `clients` loops of `send()` for `round`: (req/s, sorted latencies of answers that `ok` accepts).
async fn load<F, Fut>(clients: usize, round: Duration, send: F) -> (f64, Vec<Duration>)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let deadline = Instant::now() + round;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                if send().await {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort();
    (all.len() as f64 / round.as_secs_f64(), all)
}

fn tls(dir: &std::path::Path) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf, Vec<u8>)> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])?.self_signed(&key)?;
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&c, cert.pem())?;
    std::fs::write(&k, key.serialize_pem())?;
    Ok((c, k, cert.pem().into_bytes()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cert, key, ca) = tls(dir.path())?;
    let (port, agent_port) = (kubehero_testkit::oidc::free_port()?, kubehero_testkit::oidc::free_port()?);
    let url = format!("https://127.0.0.1:{port}");
    let db = format!("sqlite:{}", dir.path().join("kubehero.db").display());
    // 1,000 namespace-scoped bindings: 200 namespaces × 5 roles.
    let roles = ["viewer", "member", "auditor", "admin", "owner"];
    let mut file = String::new();
    for i in 0..1000 {
        file.push_str(&format!(
            "[[bindings]]\nuser = \"p{i}@example.com\"\nrole = \"{}\"\ncluster = \"bench\"\nnamespace = \"ns{}\"\n",
            roles[i % 5],
            i / 5
        ));
    }
    std::fs::write(dir.path().join("kubehero.toml"), file)?;
    let mut cp = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubehero"))
        .arg("serve")
        .env_clear()
        .env("KUBEHERO_LISTEN", format!("127.0.0.1:{port}"))
        .env("KUBEHERO_AGENT_LISTEN", format!("127.0.0.1:{agent_port}"))
        .env("KUBEHERO_PUBLIC_URL", &url)
        .env("KUBEHERO_TLS_CERT", &cert)
        .env("KUBEHERO_TLS_KEY", &key)
        .env("KUBEHERO_DATABASE_URL", &db)
        .env("KUBEHERO_DATA_DIR", dir.path())
        .env("KUBEHERO_CONFIG", dir.path().join("kubehero.toml"))
        .env("KUBEHERO_REQUIRE_AUTH", "true")
        .env("AUDIT_HMAC_KEY", "bench-audit-hmac-key-0123456789abcdef")
        .env("KUBEHERO_API_KEYS", format!("{ADMIN}:owner"))
        .env("KUBEHERO_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let http = reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&ca)?).build()?;
    let t0 = Instant::now();
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(30), "kubehero serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let post = async |path: &str, token: &str| -> anyhow::Result<Value> {
        Ok(http
            .post(format!("{url}{path}"))
            .bearer_auth(token)
            .json(&json!({"name": "bench"}))
            .send()
            .await?
            .json()
            .await?)
    };
    post("/api/v1/clusters", ADMIN).await?;
    let hook = post("/api/v1/clusters/bench/webhook", ADMIN).await?;
    // A person bound cluster-wide, with a CLI login as `kubehero login` stores it.
    let store = kubehero_store::open(&db).await?;
    let (login, rec) =
        kubehero_server::device::new_cli_token("dana", Some("dana@example.com".into()), vec![], None, time_now(), None)
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    store.create_session(&rec).await?;
    let bind = json!({"subject": {"kind": "user", "name": "dana@example.com"}, "role": "viewer", "cluster": "bench"});
    let r = http.post(format!("{url}/api/v1/role-bindings")).bearer_auth(ADMIN).json(&bind).send().await?;
    anyhow::ensure!(r.status().is_success(), "binding: {}", r.text().await?);
    let direct = post("/api/v1/clusters/bench/token?direct=true", &login).await?["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let khx = post("/api/v1/clusters/bench/token", &login).await?["token"].as_str().unwrap_or_default().to_string();

    // 1. The webhook, as an API server calls it.
    let kc: Value = serde_yaml_ng::from_str(hook["kubeconfig"].as_str().unwrap_or_default())?;
    let b64 = |v: &Value| base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default());
    let mut identity = b64(&kc["users"][0]["user"]["client-certificate-data"])?;
    identity.extend(b64(&kc["users"][0]["user"]["client-key-data"])?);
    let webhook = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&b64(
            &kc["clusters"][0]["cluster"]["certificate-authority-data"]
        )?)?)
        .identity(reqwest::Identity::from_pem(&identity)?)
        .build()?;
    let review_url = kc["clusters"][0]["cluster"]["server"].as_str().unwrap_or_default().to_string();
    let review = |token: String| {
        let (client, url) = (webhook.clone(), review_url.clone());
        move || {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            async move {
                let body =
                    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
                match client.post(&url).json(&body).send().await {
                    Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["status"]["authenticated"] == true),
                    Err(_) => false,
                }
            }
        }
    };
    let whoami = {
        let (client, url, login) = (http.clone(), format!("{url}/api/v1/whoami"), login.clone());
        move || {
            let (client, url, login) = (client.clone(), url.clone(), login.clone());
            async move { client.get(&url).bearer_auth(&login).send().await.is_ok_and(|r| r.status().is_success()) }
        }
    };
    let first: Value = webhook
        .post(&review_url)
        .json(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": direct}}))
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(first["status"]["authenticated"] == true, "the webhook refused the bench's token: {first}");
    let round = Duration::from_secs(4);
    load(16, Duration::from_secs(1), review(direct.clone())).await;
    load(16, Duration::from_secs(1), whoami.clone()).await;
    let mut rows = Vec::new();
    for callers in [4, 16] {
        rows.push(("GET /api/v1/whoami, CLI login (baseline)", callers, load(callers, round, whoami.clone()).await));
        rows.push(("TokenReview, direct token", callers, load(callers, round, review(direct.clone())).await));
        rows.push(("TokenReview, per-cluster token", callers, load(callers, round, review(khx.clone())).await));
    }
    println!("\nTokenReview webhook (kubehero serve, TLS, SQLite; caches warm), one run");
    println!("| call | callers | req/s | p50 | p99 |");
    println!("|---|---:|---:|---:|---:|");
    for (name, callers, (rps, lat)) in &rows {
        println!("| {name} | {callers} | {rps:.0} | {:.2} ms | {:.2} ms |", ms(pct(lat, 0.5)), ms(pct(lat, 0.99)));
    }
    for chunk in rows.chunks(3) {
        let (base, d, k) = (&chunk[0].2, &chunk[1].2, &chunk[2].2);
        println!(
            "{} callers: TokenReview p99 {:.2} ms direct / {:.2} ms per-cluster (target <= 2 ms); req/s vs whoami {:.2} / {:.2}",
            chunk[0].1,
            ms(pct(&d.1, 0.99)),
            ms(pct(&k.1, 0.99)),
            d.0 / base.0,
            k.0 / base.0
        );
    }

    // 2. RBAC sync of the 1,000 namespace-scoped bindings into a real API server.
    let k = KubeApiServer::start().await?;
    k.kubehero_rbac().await?;
    let direct_api =
        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&k.ca_pem)?).build()?;
    let mut made = tokio::task::JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    for i in 0..200 {
        let (client, url, sem) = (direct_api.clone(), format!("{}/api/v1/namespaces", k.url), sem.clone());
        made.spawn(async move {
            let _p = sem.acquire().await;
            let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns{i}")}});
            let _ = client.post(url).bearer_auth(ADMIN_TOKEN).json(&ns).send().await;
        });
    }
    while made.join_next().await.is_some() {}
    let kc = dir.path().join("sa.kubeconfig");
    std::fs::write(&kc, k.service_account_kubeconfig("kubehero-system", "kubehero-agent").await?)?;
    let upstream = Upstream::from_kubeconfig(&kc)?;
    let got: Value =
        http.get(format!("{url}/api/v1/clusters/bench/rbac")).bearer_auth(ADMIN).send().await?.json().await?;
    let desired = Desired {
        generation: got["generation"].as_str().unwrap_or_default().to_string(),
        objects: got["objects"].as_array().cloned().unwrap_or_default(),
    };
    let timed = async |what: &str| {
        let t = Instant::now();
        let r = kubehero_agent::rbac::apply(&upstream, &desired).await;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "| {what} | {} | {} | {} | {} | {secs:.2} s |",
            r.created.len(),
            r.updated.len(),
            r.deleted.len(),
            r.errors.len() + r.conflicts.len()
        );
    };
    println!(
        "\nRBAC sync into kube-apiserver v1.20.2: {} objects (1,000 RoleBindings), one run",
        desired.objects.len()
    );
    println!("| apply | created | updated | deleted | errors | time |");
    println!("|---|---:|---:|---:|---:|---:|");
    timed("first (everything missing)").await;
    timed("nothing to do (list and compare)").await;
    for i in 0..100 {
        let path = format!(
            "{}/apis/rbac.authorization.k8s.io/v1/namespaces/ns{i}/rolebindings/kubehero:role:{}",
            k.url,
            roles[(i * 5) % 5]
        );
        let _ = direct_api.delete(path).bearer_auth(ADMIN_TOKEN).send().await;
    }
    timed("100 RoleBindings deleted by hand").await;
    let _ = cp.start_kill();
    Ok(())
}

fn time_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
