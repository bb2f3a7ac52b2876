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

pub(crate) async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
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
pub(crate) fn agent(
    server: &str,
    name: &str,
    join: &Value,
    kubeconfig: &std::path::Path,
    state: &std::path::Path,
) -> Child {
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

/// A serving certificate for 127.0.0.1: (cert path, key path, cert PEM).
pub(crate) fn tls(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap().self_signed(&key).unwrap();
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k, cert.pem().into_bytes())
}

/// An owner's static API key of [`tls_lab`].
const OWNER: &str = "owner-key-0123456789abcdef";

/// `kubehero serve` over TLS (its certificate written to `<dir>/ca.pem`) with the group `ops` mapped to admin,
/// and a real kube-apiserver registered as `lab` with the real `kubehero agent` connected.
struct Lab {
    url: String,
    http: reqwest::Client,
    db: String,
    _serve: Child,
    _agent: Child,
    _k: kubehero_testkit::kubeapi::KubeApiServer,
}

async fn tls_lab(dir: &std::path::Path) -> Lab {
    let k = kubehero_testkit::kubeapi::KubeApiServer::start().await.unwrap();
    k.kubehero_rbac().await.unwrap();
    let db = format!("sqlite:{}", dir.join("kubehero.db").display());
    let (cert, key, ca) = tls(dir);
    std::fs::write(dir.join("ca.pem"), &ca).unwrap();
    let mut env = base_env(dir, &db);
    let agent_port = kubehero_testkit::oidc::free_port().unwrap();
    env.insert("KUBEHERO_AGENT_LISTEN".into(), format!("127.0.0.1:{agent_port}"));
    env.insert("KUBEHERO_TLS_CERT".into(), cert.display().to_string());
    env.insert("KUBEHERO_TLS_KEY".into(), key.display().to_string());
    env.insert("KUBEHERO_GROUP_ROLES".into(), "ops=admin".into());
    env.insert("KUBEHERO_API_KEYS".into(), format!("{ADMIN}:admin,{OWNER}:owner"));
    let port = kubehero_testkit::oidc::free_port().unwrap();
    let serve = Command::new(bin())
        .arg("serve")
        .env_clear()
        .envs(&env)
        .env("KUBEHERO_LISTEN", format!("127.0.0.1:{port}"))
        .env("KUBEHERO_PUBLIC_URL", format!("https://127.0.0.1:{port}"))
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let http =
        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap()).build().unwrap();
    until("serve", Duration::from_secs(30), async || http.get(format!("{url}/healthz")).send().await.is_ok()).await;
    let r = http.post(format!("{url}/api/v1/clusters")).bearer_auth(ADMIN).json(&json!({"name": "lab", "join": true}));
    let added: Value = r.send().await.unwrap().json().await.unwrap();
    let kubeconfig = dir.join("sa.kubeconfig");
    std::fs::write(&kubeconfig, k.service_account_kubeconfig("kubehero-system", "kubehero-agent").await.unwrap())
        .unwrap();
    let agent =
        agent(&format!("https://127.0.0.1:{agent_port}"), "lab", &added["join"], &kubeconfig, &dir.join("agent"));
    Lab { url, http, db, _serve: serve, _agent: agent, _k: k }
}

/// A CLI login of a person, as `kubehero login` would have stored it: its token and record.
async fn person_login(db: &str, name: &str, groups: &[&str]) -> (String, kubehero_store::SessionRecord) {
    let store = kubehero_store::open(db).await.unwrap();
    let groups = groups.iter().map(|g| g.to_string()).collect();
    let (login, rec) =
        kubehero_server::device::new_cli_token(name, Some(format!("{name}@example.com")), groups, None, now(), None)
            .unwrap();
    store.create_session(&rec).await.unwrap();
    (login, rec)
}

/// `kubehero kubeconfig` + `kubehero token` as kubectl's exec plugin, with the real binaries, a real kubectl and a
/// real kube-apiserver: contexts that work, per-cluster tokens refused everywhere else, and 20 kubectl processes
/// started at once causing one mint.
#[tokio::test]
async fn kubeconfig_and_token_give_kubectl_per_cluster_tokens_minted_once_for_many() {
    let Some(kubectl) = kubehero_testkit::kubectl::kubectl() else { panic!("kubectl 1.30: run scripts/test") };
    let dir = tempfile::tempdir().unwrap();
    let lab = tls_lab(dir.path()).await;
    let (url, http, db) = (lab.url.clone(), lab.http.clone(), lab.db.clone());
    let post = async |path: &str, body: Value| {
        let r = http.post(format!("{url}{path}")).bearer_auth(ADMIN).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
    };
    post("/api/v1/clusters", json!({"name": "other"})).await;

    // A CLI login of a person in the `ops` group (admin).
    let store = kubehero_store::open(&db).await.unwrap();
    let (login, rec) = person_login(&db, "dana", &["ops"]).await;
    let config_dir = dir.path().join("cli");
    let home = dir.path().join("home");
    let cli_env = |extra: &[(&str, &str)]| {
        let mut e: Vec<(String, String)> = vec![
            ("KUBEHERO_TOKEN".into(), login.clone()),
            ("KUBEHERO_SERVER".into(), url.clone()),
            ("KUBEHERO_CONFIG_DIR".into(), config_dir.display().to_string()),
            ("HOME".into(), home.display().to_string()),
            // The CLI trusts the system's roots, or SSL_CERT_FILE for a private CA.
            ("SSL_CERT_FILE".into(), dir.path().join("ca.pem").display().to_string()),
        ];
        e.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        e
    };
    // The kubehero CLI as the person runs it.
    let cli =
        async |args: &[&str]| Command::new(bin()).args(args).env_clear().envs(cli_env(&[])).output().await.unwrap();
    let kc = dir.path().join("kubeconfig");
    let ca_file = dir.path().join("ca.pem");
    let out = cli(&[
        "kubeconfig",
        "--cluster",
        "lab",
        "-o",
        kc.to_str().unwrap(),
        "--certificate-authority",
        ca_file.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written = std::fs::read_to_string(&kc).unwrap();
    assert!(
        written.contains("client.authentication.k8s.io/v1") && written.contains("provideClusterInfo: true"),
        "{written}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777, 0o600);

    let run = |args: Vec<String>| {
        let mut c = Command::new(&kubectl);
        c.args(&args).arg("--kubeconfig").arg(&kc).arg("--request-timeout=30s").env_clear().envs(cli_env(&[]));
        c.output()
    };
    until("the agent", Duration::from_secs(30), async || {
        run(vec!["--context".into(), "kubehero-lab".into(), "get".into(), "namespaces".into()])
            .await
            .unwrap()
            .status
            .success()
    })
    .await;
    let mints = async || {
        let rows = store
            .query_audit(&kubehero_store::AuditQuery {
                action: Some("cluster.token".into()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        rows.len()
    };
    assert_eq!(mints().await, 1, "one mint so far, then the cache");

    // 20 kubectl processes at once with an empty cache: one mint, every one answered.
    for f in std::fs::read_dir(&config_dir).unwrap() {
        let p = f.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().ends_with(".json") && p.to_string_lossy().contains("cluster-token")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    let before = mints().await;
    let runs: Vec<_> = (0..20)
        .map(|i| {
            run(vec![
                "--context".into(),
                "kubehero-lab".into(),
                "get".into(),
                "namespaces".into(),
                "--cache-dir".into(),
                format!("{}/c{i}", home.display()),
            ])
        })
        .collect();
    for r in runs {
        let out = r.await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(mints().await - before, 1, "20 parallel kubectl processes, one mint");

    // The token is refused on another cluster and by the rest of the API.
    let token_out = cli(&["token", "--cluster", "lab"]).await;
    let cred: Value = serde_json::from_slice(&token_out.stdout).unwrap();
    assert_eq!(cred["kind"], "ExecCredential");
    let khx = cred["status"]["token"].as_str().unwrap().to_string();
    assert!(khx.starts_with("khx_"));
    let r = http.get(format!("{url}/k8s/clusters/other/api")).bearer_auth(&khx).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("another cluster"));
    let r = http.get(format!("{url}/api/v1/whoami")).bearer_auth(&khx).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http.get(format!("{url}/k8s/clusters/lab/api")).bearer_auth(&khx).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // `kubehero token --direct`: a JWT of KubeHero's own issuer for the cluster's API server itself.
    let out = cli(&["token", "--cluster", "lab", "--direct"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cred: Value = serde_json::from_slice(&out.stdout).unwrap();
    let jwt = cred["status"]["token"].as_str().unwrap();
    let claims: Value = {
        use base64::Engine;
        let part = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    assert_eq!((claims["aud"].as_str(), claims["username"].as_str()), (Some("lab"), Some("dana@example.com")));
    assert!(claims["groups"].as_array().unwrap().contains(&json!("kubehero:role:admin")), "{claims}");
    // `kubehero kubeconfig --direct` needs the cluster's API server URL, and says so.
    let direct_kc = dir.path().join("direct.kubeconfig");
    let out = cli(&["kubeconfig", "--direct", "--cluster", "lab", "-o", direct_kc.to_str().unwrap()]).await;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--api-server-url"));
    // RBAC sync ran (the kubectl calls above relied on its roles): `kubehero cluster rbac diff` finds nothing to do.
    let out = cli(&["cluster", "rbac", "diff", "lab"]).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("in step"), "{said}{}", String::from_utf8_lossy(&out.stderr));
    // Without a CLI login and without a terminal, kubehero token says what to run and exits non-zero (a person at
    // a terminal would be signed in through the device flow on stderr).
    let fresh = dir.path().join("fresh-cli");
    let out = Command::new(bin())
        .args(["token", "--cluster", "lab", "--server", &url])
        .env_clear()
        .env("KUBEHERO_CONFIG_DIR", &fresh)
        .env(
            "KUBERNETES_EXEC_INFO",
            r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}"#,
        )
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing kubectl could mistake for a credential");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kubehero login"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Revoking the CLI login ends its per-cluster tokens at once.
    store.revoke_session(&rec.id, now()).await.unwrap();
    let t0 = std::time::Instant::now();
    loop {
        let r = http.get(format!("{url}/k8s/clusters/lab/api")).bearer_auth(&khx).send().await.unwrap();
        if r.status() == 401 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the revoked login's token still works");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(lab);
}

/// Share links and break-glass from the real CLI, with kubectl running `kubehero token` as its exec plugin:
/// `share create` prints a link, `kubeconfig --share` accepts it and writes a context that works with the
/// shared role only, `share list` shows who accepted, `share revoke` ends it; `breakglass create` seals codes,
/// `breakglass use` (no login) gives owner on the cluster once and writes the context, `breakglass ack` ends the
/// banner.
#[tokio::test]
async fn share_links_and_break_glass_from_the_cli() {
    let Some(kubectl) = kubehero_testkit::kubectl::kubectl() else { panic!("kubectl 1.30: run scripts/test") };
    let dir = tempfile::tempdir().unwrap();
    let lab = tls_lab(dir.path()).await;
    let (carol, _) = person_login(&lab.db, "carol", &["ops"]).await;
    let (bob, _) = person_login(&lab.db, "bob", &[]).await;
    let ca = dir.path().join("ca.pem");
    // The kubehero CLI (and kubectl, which runs it) as one person: their token, config dir and HOME.
    let env_of = |token: Option<&str>, who: &str| {
        let mut e = vec![
            ("KUBEHERO_CONFIG_DIR".to_string(), dir.path().join(who).join("cli").display().to_string()),
            ("HOME".to_string(), dir.path().join(who).display().to_string()),
            ("SSL_CERT_FILE".to_string(), ca.display().to_string()),
        ];
        if let Some(t) = token {
            e.push(("KUBEHERO_TOKEN".to_string(), t.to_string()));
            e.push(("KUBEHERO_SERVER".to_string(), lab.url.clone()));
        }
        e
    };
    let cli = async |env: &[(String, String)], args: &[&str]| {
        let out = Command::new(bin()).args(args).env_clear().envs(env.iter().cloned()).output().await.unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let kubectl_as = async |env: &[(String, String)], kc: &std::path::Path, args: &[&str]| {
        let out = Command::new(&kubectl)
            .args(args)
            .arg("--kubeconfig")
            .arg(kc)
            .arg("--request-timeout=30s")
            .env_clear()
            .envs(env.iter().cloned())
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (carol_env, bob_env) = (env_of(Some(&carol), "carol"), env_of(Some(&bob), "bob"));

    // Carol (admin) shares viewer on lab with bob; owner is more than she holds.
    let (ok, _, err) = cli(&carol_env, &["share", "create", "lab", "--role", "owner", "--expires", "1h"]).await;
    assert!(!ok && err.contains("only a role you hold"), "{err}");
    let (ok, out, err) =
        cli(&carol_env, &["share", "create", "lab", "--role", "viewer", "--expires", "1h", "--to", "bob@example.com"])
            .await;
    assert!(ok, "{err}");
    let link = out.split_whitespace().find(|w| w.contains("/share/khl_")).unwrap().to_string();

    // Bob: `kubehero kubeconfig --share LINK`, then kubectl through `kubehero token`.
    let kc = dir.path().join("bob.kubeconfig");
    let (ok, out, err) = cli(
        &bob_env,
        &["kubeconfig", "--share", &link, "-o", kc.to_str().unwrap(), "--certificate-authority", ca.to_str().unwrap()],
    )
    .await;
    assert!(ok && out.contains("Accepted: viewer on lab, shared by carol@example.com"), "{out}{err}");
    let t0 = Instant::now();
    loop {
        let (ok, _, err) = kubectl_as(&bob_env, &kc, &["get", "configmaps", "-n", "default"]).await;
        if ok {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "bob's shared viewer never worked: {err}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (ok, _, err) = kubectl_as(&bob_env, &kc, &["create", "configmap", "nope", "-n", "default"]).await;
    assert!(!ok && err.contains("forbidden"), "viewer only: {err}");
    let (ok, out, _) = cli(&carol_env, &["share", "list", "lab"]).await;
    let row = out.lines().find(|l| l.starts_with("sh_")).unwrap_or_default().to_string();
    assert!(ok && row.contains("open") && row.contains("bob"), "{out}");
    let id = row.split_whitespace().next().unwrap().to_string();
    let (ok, out, err) = cli(&carol_env, &["share", "revoke", "lab", &id]).await;
    assert!(ok && out.contains("1 grant(s)"), "{out}{err}");
    let (ok, _, err) = kubectl_as(&bob_env, &kc, &["get", "configmaps", "-n", "default"]).await;
    assert!(!ok && err.contains("no KubeHero role"), "{err}");
    let (ok, _, err) = cli(&bob_env, &["kubeconfig", "--share", &link, "-o", kc.to_str().unwrap()]).await;
    assert!(!ok && err.contains("revoked"), "{err}");

    // Break-glass: an owner seals two codes; someone with no login uses one.
    let owner_env = env_of(Some(OWNER), "owner");
    let (ok, out, err) =
        cli(&owner_env, &["breakglass", "create", "--cluster", "lab", "--count", "2", "--ttl", "10m"]).await;
    assert!(ok, "{err}");
    let codes: Vec<String> = out.split_whitespace().filter(|w| w.starts_with("khb_")).map(str::to_string).collect();
    assert_eq!(codes.len(), 2, "{out}");
    let oncall_env = env_of(None, "oncall");
    let kc = dir.path().join("oncall.kubeconfig");
    let use_args = [
        "breakglass",
        "use",
        &codes[0],
        "--reason",
        "INC-7: IdP down",
        "--server",
        &lab.url,
        "-o",
        kc.to_str().unwrap(),
        "--certificate-authority",
        ca.to_str().unwrap(),
    ];
    let (ok, out, err) = cli(&oncall_env, &use_args).await;
    assert!(ok && err.contains("BREAK-GLASS: owner on cluster lab"), "{out}{err}");
    let (ok, out, err) = kubectl_as(&oncall_env, &kc, &["auth", "can-i", "*", "*", "--all-namespaces"]).await;
    assert!(ok && out.trim() == "yes", "{out}{err}");
    let (ok, _, err) = cli(&oncall_env, &use_args).await;
    assert!(!ok && err.contains("already used"), "{err}");
    let (ok, out, _) = cli(&owner_env, &["breakglass", "list"]).await;
    let used = out.lines().find(|l| l.contains(" used ")).unwrap_or_default().to_string();
    assert!(ok && used.contains("INC-7"), "{out}");
    let (ok, out, err) = cli(&owner_env, &["breakglass", "ack", used.split_whitespace().next().unwrap()]).await;
    assert!(ok && out.contains("Acknowledged"), "{out}{err}");
}
