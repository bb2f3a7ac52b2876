//! Starting `kubehero serve` as a child process and driving it over HTTP.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub const ADMIN: &str = "admin-key-0123456789abcdef";
pub const AUDIT_KEY: &str = "crash-test-audit-key-0123456789abcdef";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kubehero")
}

/// The settings every process of a test shares.
pub fn base_env(data_dir: &Path, database_url: &str) -> HashMap<String, String> {
    [
        ("KUBEHERO_DATA_DIR", data_dir.display().to_string()),
        ("KUBEHERO_AGENT_LISTEN", "127.0.0.1:0".to_string()),
        ("KUBEHERO_DATABASE_URL", database_url.to_string()),
        ("KUBEHERO_REQUIRE_AUTH", "true".into()),
        ("AUDIT_HMAC_KEY", AUDIT_KEY.into()),
        ("KUBEHERO_API_KEYS", format!("{ADMIN}:admin")),
        ("KUBEHERO_AUDIT_SIGNING_KEY", data_dir.join("signing.pk8").display().to_string()),
        ("KUBEHERO_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub struct Serve {
    pub child: Child,
    pub url: String,
}

impl Serve {
    /// Starts `kubehero serve` on a free port and waits until it answers.
    pub async fn start(env: &HashMap<String, String>) -> Serve {
        Self::start_on(env, kubehero_testkit::oidc::free_port().unwrap()).await
    }

    /// [`Serve::start`] on a given port (when the public URL must be known before the server starts). Serves
    /// HTTPS when the environment names a certificate (`KUBEHERO_TLS_CERT`).
    pub async fn start_on(env: &HashMap<String, String>, port: u16) -> Serve {
        let child = Command::new(bin())
            .arg("serve")
            .env_clear()
            .envs(env)
            .env("KUBEHERO_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let scheme = if env.contains_key("KUBEHERO_TLS_CERT") { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let http = client(env);
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{url}/healthz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "kubehero serve did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Serve { child, url }
    }

    /// SIGKILL: no shutdown path runs.
    pub async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }

    /// SIGTERM and wait for the graceful exit (final checkpoint).
    pub async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "serve exited with {status}");
    }
}

/// A client that trusts the serving certificate of `env` (`KUBEHERO_TLS_CERT`), if there is one.
pub fn client(env: &HashMap<String, String>) -> reqwest::Client {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(cert) = env.get("KUBEHERO_TLS_CERT") {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(cert).unwrap()).unwrap());
    }
    b.build().unwrap()
}

/// Checks that every answered request that `must` be durable has its row; returns how many others (plain
/// reads, whose rows are not awaited) have none.
pub fn check_every_answer_logged(
    answered: &Answered,
    ids: &[String],
    seqs: &[i64],
    must: impl Fn(u16) -> bool,
) -> usize {
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "sequence numbers have no gaps");
    let logged: HashSet<&String> = ids.iter().collect();
    let answered = answered.lock().unwrap();
    assert!(!answered.is_empty());
    let (missing, unlogged_reads): (Vec<_>, Vec<_>) =
        answered.iter().filter(|(id, _)| !logged.contains(id)).partition(|(_, status)| must(*status));
    assert!(
        missing.is_empty(),
        "{} answered requests have no audit row: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    unlogged_reads.len()
}

/// The load's requests: `POST /api/v1/clusters` answers 201 (or an error, also durable); `GET whoami` 200.
pub fn mutation_or_error(status: u16) -> bool {
    status != 200
}

/// Request ids of every request that got a response, with its status.
pub type Answered = Arc<Mutex<Vec<(String, u16)>>>;

/// `tasks` clients each loop: register a cluster (a mutation), then whoami; until `stop` is set. Requests
/// that get no response (the server died) are not recorded.
pub fn load(
    url: &str,
    tasks: usize,
    tag: &str,
    answered: Answered,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|t| {
            let (url, tag, answered, stop) = (url.to_string(), tag.to_string(), answered.clone(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let name = format!("{tag}-{t}-{i}");
                    let reqs = [
                        http.post(format!("{url}/api/v1/clusters")).json(&serde_json::json!({ "name": name })),
                        http.get(format!("{url}/api/v1/whoami")),
                    ];
                    for rb in reqs {
                        match rb.bearer_auth(ADMIN).send().await {
                            Ok(r) => {
                                let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
                                answered.lock().unwrap().push((id, r.status().as_u16()));
                            }
                            Err(_) => return,
                        }
                    }
                }
            })
        })
        .collect()
}

/// Runs `kubehero audit <args>` with `env`; returns (exit code, stdout).
pub async fn audit_cli(env: &HashMap<String, String>, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin()).arg("audit").args(args).env_clear().envs(env).output().await.unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every request id in the audit log, and the seqs in order.
pub async fn logged(database_url: &str) -> (Vec<String>, Vec<i64>) {
    let store = kubehero_store::open(database_url).await.unwrap();
    let mut ids = Vec::new();
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let rows = store.audit_rows(after, 10_000).await.unwrap();
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for r in rows {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            ids.push(v["request_id"].as_str().unwrap().to_string());
            seqs.push(r.seq);
        }
    }
    (ids, seqs)
}
