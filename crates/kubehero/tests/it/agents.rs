//! Cluster agents under faults, with the real binaries (`kubehero serve`, `kubehero agent`) and a real
//! kube-apiserver v1.20.2 (testkit): the control plane killed with SIGKILL and started again (the agent comes
//! back without a new join token), and the network path dropped by a proxy in this test that stops forwarding
//! (a hand-made proxy: no real program holds connections open while passing nothing, which is the failure a
//! dead load balancer or a cut link looks like) — the control plane marks the cluster disconnected within
//! 30 s, and the agent reconnects once the path returns.

use crate::support::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

async fn clusters(url: &str) -> Vec<Value> {
    let r = reqwest::Client::new().get(format!("{url}/api/v1/clusters")).bearer_auth(ADMIN).send().await;
    match r {
        Ok(r) => {
            r.json::<Value>().await.map(|v| v["items"].as_array().cloned().unwrap_or_default()).unwrap_or_default()
        }
        Err(_) => Vec::new(),
    }
}

async fn state_of(url: &str, name: &str) -> Value {
    clusters(url).await.into_iter().find(|c| c["name"] == name).unwrap_or(Value::Null)
}

async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !check().await {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t0.elapsed()
}

/// Registers `name` with a join token.
async fn add(url: &str, name: &str) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/clusters"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": name, "join": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["join"].clone()
}

/// `kubehero agent` towards `server` with a service account's kubeconfig.
fn agent(server: &str, name: &str, join: &Value, kubeconfig: &std::path::Path, state: &std::path::Path) -> Child {
    Command::new(bin())
        .arg("agent")
        .env_clear()
        .env("KUBEHERO_AGENT_SERVER", server)
        .env("KUBEHERO_AGENT_CLUSTER", name)
        .env("KUBEHERO_AGENT_JOIN_TOKEN", join["token"].as_str().unwrap())
        .env("KUBEHERO_AGENT_CA_HASH", join["ca_hash"].as_str().unwrap())
        .env("KUBEHERO_AGENT_KUBECONFIG", kubeconfig)
        .env("KUBEHERO_AGENT_STATE_DIR", state)
        .env("KUBEHERO_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn after_a_kill_9_of_the_control_plane_the_agent_comes_back_without_a_new_join_token() {
    let k = kubehero_testkit::kubeapi::KubeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("kubehero.db").display());
    let mut env = base_env(dir.path(), &db);
    let agent_port = kubehero_testkit::oidc::free_port().unwrap();
    env.insert("KUBEHERO_AGENT_LISTEN".into(), format!("127.0.0.1:{agent_port}"));
    let port = kubehero_testkit::oidc::free_port().unwrap();
    let serve = Serve::start_on(&env, port).await;
    let kubeconfig = dir.path().join("sa.kubeconfig");
    std::fs::write(&kubeconfig, k.service_account_kubeconfig("kubehero-system", "agent").await.unwrap()).unwrap();
    let join = add(&serve.url, "edge-1").await;
    let _agent =
        agent(&format!("https://127.0.0.1:{agent_port}"), "edge-1", &join, &kubeconfig, &dir.path().join("agent"));
    until("connected", Duration::from_secs(30), async || {
        state_of(&serve.url, "edge-1").await["kubernetes_version"] == "v1.20.2"
    })
    .await;

    let url = serve.url.clone();
    serve.kill9().await;
    let restarted = now();
    let serve = Serve::start_on(&env, port).await;
    let took = until("back after the restart", Duration::from_secs(60), async || {
        let c = state_of(&url, "edge-1").await;
        c["state"] == "connected" && c["since"].as_i64().is_some_and(|s| s >= restarted)
    })
    .await;
    eprintln!("the agent was back {took:?} after the control plane answered again");
    // No second join: one certificate, issued at the first join.
    let certs: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/clusters/edge-1/certificates", serve.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(certs["items"].as_array().unwrap().len(), 1, "{certs}");
    serve.terminate().await;
}

/// A TCP proxy that can stop forwarding while keeping every connection open.
struct Blackhole {
    addr: std::net::SocketAddr,
    forwarding: Arc<AtomicBool>,
}

impl Blackhole {
    async fn start(to: std::net::SocketAddr) -> Blackhole {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let forwarding = Arc::new(AtomicBool::new(true));
        let f = forwarding.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(to).await else { return };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, f.clone()));
                    pump(sr, cw, f).await;
                });
            }
        });
        Blackhole { addr, forwarding }
    }
}

/// Copies while forwarding is on; while it is off, holds what it read and reads nothing more.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, on: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while !on.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while !on.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_dropped_network_path_is_noticed_within_30_s_and_the_agent_reconnects_when_it_returns() {
    let k = kubehero_testkit::kubeapi::KubeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("kubehero.db").display());
    let mut env: HashMap<String, String> = base_env(dir.path(), &db);
    let agent_port = kubehero_testkit::oidc::free_port().unwrap();
    env.insert("KUBEHERO_AGENT_LISTEN".into(), format!("127.0.0.1:{agent_port}"));
    let serve = Serve::start(&env).await;
    let proxy = Blackhole::start(format!("127.0.0.1:{agent_port}").parse().unwrap()).await;
    let kubeconfig = dir.path().join("sa.kubeconfig");
    std::fs::write(&kubeconfig, k.service_account_kubeconfig("kubehero-system", "agent").await.unwrap()).unwrap();
    let join = add(&serve.url, "edge-2").await;
    let server = format!("https://127.0.0.1:{}", proxy.addr.port());
    let _agent = agent(&server, "edge-2", &join, &kubeconfig, &dir.path().join("agent"));
    until("connected", Duration::from_secs(30), async || state_of(&serve.url, "edge-2").await["state"] == "connected")
        .await;

    proxy.forwarding.store(false, Ordering::Relaxed);
    let noticed = until("marked disconnected", Duration::from_secs(30), async || {
        state_of(&serve.url, "edge-2").await["state"] == "disconnected"
    })
    .await;
    eprintln!("the dead path was noticed after {noticed:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let returned = now();
    proxy.forwarding.store(true, Ordering::Relaxed);
    let back = until("reconnected", Duration::from_secs(60), async || {
        let c = state_of(&serve.url, "edge-2").await;
        c["state"] == "connected" && c["since"].as_i64().is_some_and(|s| s >= returned)
    })
    .await;
    eprintln!("the agent was back {back:?} after the path returned");
    serve.terminate().await;
}

async fn cli(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).env_clear().envs(env.iter().copied()).output().await.unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn cluster_commands_register_list_issue_tokens_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("kubehero.db").display());
    let serve = Serve::start(&base_env(dir.path(), &db)).await;
    let config = dir.path().join("cli");
    let env = [
        ("KUBEHERO_TOKEN", ADMIN),
        ("KUBEHERO_SERVER", serve.url.as_str()),
        ("KUBEHERO_CONFIG_DIR", config.to_str().unwrap()),
    ];
    let (code, out, err) = cli(&env, &["cluster", "add", "lab-1", "--join-ttl", "30m"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("khj_") && out.contains("--ca-hash sha256:") && out.contains("helm install"), "{out}");
    assert!(out.contains("kubehero agent --server https://"), "{out}");
    let (code, out, _) = cli(&env, &["cluster", "list"]).await;
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with("lab-1") && l.contains("pending")), "{out}");
    let (code, out, err) = cli(&env, &["cluster", "join-token", "lab-1"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("khj_"));
    let (code, _, err) = cli(&env, &["cluster", "add", "Not A Name"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("DNS label") || err.contains("invalid"), "{err}");
    let (code, _, err) = cli(&env, &["cluster", "remove", "lab-1"]).await;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = cli(&env, &["cluster", "list"]).await;
    assert!(out.lines().any(|l| l.starts_with("lab-1") && l.contains("removed")), "{out}");
    let viewer_env = [("KUBEHERO_TOKEN", "nope"), env[1], env[2]];
    let (code, _, err) = cli(&viewer_env, &["cluster", "add", "lab-2"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("rejected"), "{err}");
    serve.terminate().await;
}
