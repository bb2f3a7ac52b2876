//! Several control plane replicas, as production runs them: three `kubehero serve` processes on one throwaway
//! PostgreSQL behind a real HAProxy (TCP, health checks, redispatch), a real `kubehero agent` connected through
//! the load balancer to whichever replica it gave, a real kube-apiserver behind the agent, and real kubectl
//! through the load balancer. Under a load of mixed reads and writes: `kill -9` of the replica holding the
//! agent's tunnel, its restart, then a rolling restart of all three.

use crate::agents::{agent, tls, until};
use crate::support::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// One replica: its environment and ports, and the process when it runs.
struct Replica {
    env: HashMap<String, String>,
    port: u16,
    serve: Option<Serve>,
}

impl Replica {
    async fn start(&mut self) {
        self.serve = Some(Serve::start_on(&self.env, self.port).await);
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A value of this replica's `/metrics` (0 when absent or not answering).
    async fn metric(&self, http: &reqwest::Client, line_start: &str) -> f64 {
        let Ok(r) = http.get(format!("{}/metrics", self.url())).send().await else { return 0.0 };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(line_start))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// Counts of one kind of client request.
#[derive(Default)]
struct Tally {
    total: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn note(&self, ok: bool) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn text(&self) -> String {
        format!("{}/{}", self.failed.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed))
    }
}

/// What the load saw.
#[derive(Default)]
struct Seen {
    /// Cluster names whose creation was acknowledged (201, or 409 on a retry after a lost answer).
    created: Mutex<Vec<String>>,
    answered: Answered,
    writes: Tally,
    reads: Tally,
    kubectl: Tally,
}

/// A client loop until `stop`: creates a cluster, then reads whoami; a request whose answer is lost (the
/// replica died under it) is retried, as a client of an idempotent call would. Creating is made safe to retry by
/// its name: 409 on a retry means the lost attempt was committed.
async fn client_loop(http: reqwest::Client, lb: String, tag: String, seen: Arc<Seen>, stop: Arc<AtomicBool>) {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let name = format!("{tag}-{i}");
        let mut done = false;
        for attempt in 0..10 {
            let r = http.post(format!("{lb}/api/v1/clusters")).bearer_auth(ADMIN).json(&json!({"name": name})).send();
            if let Ok(r) = r.await {
                let status = r.status().as_u16();
                let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
                seen.answered.lock().unwrap().push((id, status));
                if status == 201 || (status == 409 && attempt > 0) {
                    seen.created.lock().unwrap().push(name.clone());
                    done = true;
                    break;
                }
                if status < 500 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        seen.writes.note(done);
        let mut ok = false;
        for _ in 0..10 {
            if let Ok(r) = http.get(format!("{lb}/api/v1/whoami")).bearer_auth(ADMIN).send().await {
                let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
                seen.answered.lock().unwrap().push((id, r.status().as_u16()));
                if r.status() == 200 {
                    ok = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        seen.reads.note(ok);
    }
}

async fn kubectl_ok(kubectl: &std::path::Path, kubeconfig: &std::path::Path) -> bool {
    // kubectl keeps a discovery cache under $HOME/.kube: the test's directory, never the repository.
    let home = kubeconfig.parent().unwrap_or(kubeconfig);
    let out = Command::new(kubectl)
        .args(["get", "namespaces", "--request-timeout=10s", "--kubeconfig"])
        .arg(kubeconfig)
        .env_clear()
        .env("HOME", home)
        .output()
        .await
        .unwrap();
    let ok = out.status.success() && String::from_utf8_lossy(&out.stdout).contains("kube-system");
    if !ok {
        eprintln!("kubectl failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    ok
}

/// Which replica holds the agent's tunnel, by its `kubehero_agents_connected`.
async fn holder(replicas: &[Replica], http: &reqwest::Client) -> Option<usize> {
    for (i, r) in replicas.iter().enumerate() {
        if r.serve.is_some() && r.metric(http, "kubehero_agents_connected").await >= 1.0 {
            return Some(i);
        }
    }
    None
}

#[tokio::test]
async fn three_replicas_behind_haproxy_lose_nothing_through_kill_9_and_rolling_restarts() {
    assert!(kubehero_testkit::haproxy::HaProxy::available(), "haproxy: run scripts/test (it installs it)");
    let Some(kubectl) = kubehero_testkit::kubectl::kubectl() else { panic!("kubectl 1.30: run scripts/test") };
    let pg = kubehero_testkit::postgres::TempPostgres::start().await.unwrap();
    let k = kubehero_testkit::kubeapi::KubeApiServer::start().await.unwrap();
    k.kubehero_rbac().await.unwrap();
    let shared = tempfile::tempdir().unwrap();
    let (cert, key, ca) = tls(shared.path());
    let ca_file = shared.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let free = || kubehero_testkit::oidc::free_port().unwrap();
    let (api_ports, agent_ports): (Vec<u16>, Vec<u16>) = (0..3).map(|_| (free(), free())).unzip();
    let lb = kubehero_testkit::haproxy::HaProxy::start(&[api_ports.clone(), agent_ports.clone()]).await.unwrap();
    let lb_url = format!("https://127.0.0.1:{}", lb.ports[0]);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| {
            let mut env = base_env(dirs[i].path(), &pg.url);
            env.insert("KUBEHERO_AUDIT_SIGNING_KEY".into(), shared.path().join("signing.pk8").display().to_string());
            env.insert("KUBEHERO_TLS_CERT".into(), cert.display().to_string());
            env.insert("KUBEHERO_TLS_KEY".into(), key.display().to_string());
            // Bound to one IP: the replica's peer URL defaults to https://127.0.0.1:<agent port>.
            env.insert("KUBEHERO_AGENT_LISTEN".into(), format!("127.0.0.1:{}", agent_ports[i]));
            env.insert("KUBEHERO_PUBLIC_URL".into(), lb_url.clone());
            Replica { env, port: api_ports[i], serve: None }
        })
        .collect();
    {
        let [a, b, c] = &mut replicas[..] else { unreachable!() };
        tokio::join!(a.start(), b.start(), c.start());
    }
    let http = client(&replicas[0].env);
    // HAProxy takes a replica into service after two good health checks.
    until("every replica in service", Duration::from_secs(20), async || {
        let mut up = 0;
        for _ in 0..6 {
            up += http.get(format!("{lb_url}/healthz")).send().await.is_ok() as usize;
        }
        up == 6
    })
    .await;

    // The cluster is registered through the load balancer; its agent connects through it too.
    let r =
        http.post(format!("{lb_url}/api/v1/clusters")).bearer_auth(ADMIN).json(&json!({"name": "lab", "join": true}));
    let added: Value = r.send().await.unwrap().json().await.unwrap();
    let sa = shared.path().join("sa.kubeconfig");
    std::fs::write(&sa, k.service_account_kubeconfig("kubehero-system", "kubehero-agent").await.unwrap()).unwrap();
    let lb_agents = format!("https://127.0.0.1:{}", lb.ports[1]);
    let _agent = agent(&lb_agents, "lab", &added["join"], &sa, &shared.path().join("agent"));
    let kubeconfig = shared.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster: {{server: \"{lb_url}/k8s/clusters/lab\", \
             certificate-authority: \"{}\"}}\nusers:\n- name: admin\n  user: {{token: \"{ADMIN}\"}}\n\
             contexts:\n- {{name: lab, context: {{cluster: lab, user: admin}}}}\ncurrent-context: lab\n",
            ca_file.display()
        ),
    )
    .unwrap();
    until("kubectl through the load balancer", Duration::from_secs(60), async || {
        kubectl_ok(&kubectl, &kubeconfig).await
    })
    .await;
    // Each kubectl run is a new connection, spread over the replicas: most land on one without the tunnel.
    for _ in 0..6 {
        assert!(kubectl_ok(&kubectl, &kubeconfig).await, "kubectl through any replica");
    }
    let mut forwarded = 0.0;
    for r in &replicas {
        forwarded += r.metric(&http, "kubehero_peer_streams_total{direction=\"out\"}").await;
    }
    assert!(forwarded >= 1.0, "requests that landed on another replica were forwarded to the tunnel's");

    // The load: 4 clients of the API, and kubectl in a loop, all through the load balancer.
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = (0..4)
        .map(|t| tokio::spawn(client_loop(http.clone(), lb_url.clone(), format!("c{t}"), seen.clone(), stop.clone())))
        .collect();
    {
        let (kubectl, kubeconfig, seen, stop) = (kubectl.clone(), kubeconfig.clone(), seen.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                seen.kubectl.note(kubectl_ok(&kubectl, &kubeconfig).await);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;

    // kill -9 of the replica holding the tunnel: the agent is back on another one within 30 s.
    let h = holder(&replicas, &http).await.expect("a replica holds the tunnel");
    replicas[h].serve.take().unwrap().kill9().await;
    let killed = Instant::now();
    while holder(&replicas, &http).await.is_none() {
        assert!(killed.elapsed() < Duration::from_secs(30), "the agent did not reconnect within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reconnect = killed.elapsed();
    until("kubectl after the kill", Duration::from_secs(30), async || kubectl_ok(&kubectl, &kubeconfig).await).await;
    replicas[h].start().await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Rolling restart, one by one (SIGTERM: a clean shutdown), each back in the pool before the next goes.
    let mut rolled = Vec::new();
    for r in replicas.iter_mut() {
        let t = Instant::now();
        r.serve.take().unwrap().terminate().await;
        r.start().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        rolled.push(t.elapsed());
    }
    let settled = Instant::now();
    while holder(&replicas, &http).await.is_none() {
        assert!(settled.elapsed() < Duration::from_secs(30), "the agent did not reconnect after the rolling restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "HA: agent back {reconnect:?} after the holder's kill -9; rolling restart steps {rolled:?}; failed/total: \
         writes {}, reads {}, kubectl {}",
        seen.writes.text(),
        seen.reads.text(),
        seen.kubectl.text()
    );
    for _ in 0..3 {
        assert!(kubectl_ok(&kubectl, &kubeconfig).await, "kubectl works through the load balancer at the end");
    }
    // Retried idempotent requests all succeeded.
    assert_eq!(seen.writes.failed.load(Ordering::Relaxed), 0, "writes failed after retries");
    assert_eq!(seen.reads.failed.load(Ordering::Relaxed), 0, "reads failed after retries");
    assert!(seen.writes.total.load(Ordering::Relaxed) > 10);

    // Nothing acknowledged is lost: every created cluster exists, every answered write has its audit row, and
    // the one chain the three replicas wrote verifies.
    for r in replicas.iter_mut() {
        r.serve.take().unwrap().terminate().await;
    }
    let store = kubehero_store::open(&pg.url).await.unwrap();
    let exists: HashSet<String> = store.list_clusters().await.unwrap().into_iter().map(|c| c.name).collect();
    let created = seen.created.lock().unwrap().clone();
    let lost: Vec<&String> = created.iter().filter(|n| !exists.contains(*n)).collect();
    assert!(lost.is_empty(), "{} acknowledged clusters are missing: {lost:?}", lost.len());
    let (ids, seqs) = logged(&pg.url).await;
    let unlogged_reads = check_every_answer_logged(&seen.answered, &ids, &seqs, mutation_or_error);
    eprintln!(
        "HA: {} acknowledged writes kept; {unlogged_reads} reads answered in the kill's last flush have no row",
        created.len()
    );
    let (code, out) = audit_cli(&replicas[0].env, &["verify"]).await;
    assert_eq!(code, 0, "{out}");
}
