//! kubectl through KubeHero: real kubectl 1.30 → the control plane (TLS) → the agent's tunnel → a real
//! kube-apiserver v1.20.2. The cluster's RBAC decides what each KubeHero role may do (the agent impersonates
//! `kubehero:<user>` with the groups `kubehero:role:<role>`); KubeHero refuses what it must refuse itself.

use crate::support::*;
use kubehero_agent::client::ControlPlane;
use kubehero_agent::run::AgentConfig;
use kubehero_agent::state::{State, StateDir};
use kubehero_agent::upstream::{Forwarder, Upstream};
use kubehero_testkit::kubeapi::KubeApiServer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A serving certificate for 127.0.0.1 (PEM chain, PEM key).
pub(crate) fn tls_files(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap().self_signed(&key).unwrap();
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k, cert.pem().into_bytes())
}

/// Registers `cluster`, runs its agent (the real agent code) towards the API server of `kubeconfig`, and waits
/// until its tunnel is up. Sending `true` (or dropping the sender) stops the agent.
pub(crate) async fn connect_agent(
    ts: &TestServer,
    cluster: &str,
    kubeconfig: &Path,
    state: &Path,
) -> tokio::sync::watch::Sender<bool> {
    let r = ts
        .call(reqwest::Method::POST, "/api/v1/clusters", Some(ADMIN), Some(json!({"name": cluster, "join": true})))
        .await;
    assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.body);
    run_agent(ts, cluster, &r.body["join"], kubeconfig, state).await
}

/// [`connect_agent`] for a cluster registered already: a new join token, then the agent.
pub(crate) async fn connect_agent_registered(
    ts: &TestServer,
    cluster: &str,
    kubeconfig: &Path,
    state: &Path,
) -> tokio::sync::watch::Sender<bool> {
    let path = format!("/api/v1/clusters/{cluster}/join-tokens");
    let r = ts.call(reqwest::Method::POST, &path, Some(ADMIN), Some(json!({}))).await;
    assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.body);
    run_agent(ts, cluster, &r.body, kubeconfig, state).await
}

pub(crate) async fn run_agent(
    ts: &TestServer,
    cluster: &str,
    join: &Value,
    kubeconfig: &Path,
    state: &Path,
) -> tokio::sync::watch::Sender<bool> {
    let upstream = Arc::new(Upstream::from_kubeconfig(kubeconfig).unwrap());
    let agent_port = ts.server.as_ref().unwrap().agent_addr.unwrap().port();
    let cfg = AgentConfig {
        server: ControlPlane::parse(&format!("https://127.0.0.1:{agent_port}")).unwrap(),
        cluster: cluster.into(),
        join_token: join["token"].as_str().map(str::to_string),
        ca_hash: join["ca_hash"].as_str().map(str::to_string),
        state: State::Dir(StateDir::new(state)),
        version: "test".into(),
        reconnect_min: Duration::from_millis(200),
        reconnect_max: Duration::from_secs(1),
    };
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(kubehero_agent::run::run(cfg, Arc::new(Forwarder(upstream)), rx));
    let hub = ts.server.as_ref().unwrap().state.agents.hub.clone();
    let t0 = Instant::now();
    while hub.open(cluster).await.is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "the agent of {cluster} did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rbac_applied(ts, cluster).await;
    stop
}

/// Waits until RBAC sync has applied the control plane's objects in `cluster` (at most a few seconds after
/// its agent connects, or after a change), without errors; gives the agent's report.
pub(crate) async fn rbac_applied(ts: &TestServer, cluster: &str) -> kubehero_agent::rbac::Report {
    let state = &ts.server.as_ref().unwrap().state;
    let t0 = Instant::now();
    loop {
        let want = kubehero_server::kube::rbac::desired(state, cluster).generation;
        if let Some((_, r)) = state.rbac_pushes.report(cluster).filter(|(_, r)| r.generation == want) {
            assert!(r.errors.is_empty(), "RBAC sync in {cluster}: {:?}", r.errors);
            return r;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "RBAC sync never applied in {cluster}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Clone)]
pub(crate) struct Kubectl {
    pub(crate) bin: PathBuf,
    pub(crate) home: PathBuf,
}

impl Kubectl {
    /// Runs kubectl with `kubeconfig`; (success, stdout, stderr).
    pub(crate) async fn run(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        use tokio::io::AsyncWriteExt;
        let mut c = tokio::process::Command::new(&self.bin);
        // Flags first: whatever follows `--` is the command of `kubectl exec`.
        c.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.home.join("cache"))
            .arg("--request-timeout=20s")
            .args(args)
            .env_clear()
            .env("HOME", &self.home)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).await.unwrap();
        } else {
            drop(child.stdin.take());
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), s(&out.stdout), s(&out.stderr))
    }
}

#[tokio::test]
async fn kubectl_through_kubehero_reaches_a_real_cluster_as_the_identity_kubehero_decides() {
    let bin = kubehero_testkit::kubectl::kubectl().expect("kubectl 1.30: run scripts/test (it fetches it)");
    let k = KubeApiServer::start().await.unwrap();
    k.kubehero_rbac().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = tls_files(dir.path());
    let idp = kubehero_testkit::oidc::OidcProvider::start().await.unwrap();
    let ts = TestServer::start(
        &[
            ("KUBEHERO_REQUIRE_AUTH", "true"),
            ("KUBEHERO_API_KEYS", &*api_keys_env()),
            ("KUBEHERO_TLS_CERT", cert.to_str().unwrap()),
            ("KUBEHERO_TLS_KEY", key.to_str().unwrap()),
            ("OIDC_ISSUER_URL", &idp.issuer),
            ("OIDC_AUDIENCE", "kubehero"),
        ],
        None,
    )
    .await;

    // Register the cluster and run its agent with a service account that may only impersonate.
    let kc = k.service_account_kubeconfig("kubehero-system", "kubehero-agent").await.unwrap();
    std::fs::write(dir.path().join("sa.kubeconfig"), kc).unwrap();
    let stop = connect_agent(&ts, "lab", &dir.path().join("sa.kubeconfig"), &dir.path().join("agent")).await;

    let kubectl = Kubectl { bin, home: dir.path().join("home") };
    let server = format!("{}/k8s/clusters/lab", ts.url);
    let config = |name: &str, token: &str| {
        let p = dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&p, kubehero_testkit::kubectl::token_kubeconfig(&server, &ca, token)).unwrap();
        p
    };
    let (admin, viewer) = (config("admin", ADMIN), config("viewer", VIEWER));

    // kubectl speaks HTTP/2 to the control plane (TLS ALPN): every connection it opens is counted as h2.
    let connections = |protocol: &str| {
        let line = format!("kubehero_connections_total{{protocol=\"{protocol}\"}} ");
        let ts = &ts;
        async move {
            let m = ts.get("/metrics", None).await;
            m.body
                .as_str()
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix(&line)?.parse::<u64>().ok())
                .unwrap_or(0)
        }
    };
    let (h2_before, h1_before) = (connections("h2").await, connections("http/1.1").await);

    // Discovery and reads.
    let (ok, out, err) = kubectl.run(&admin, &["get", "namespaces", "-o", "name"], None).await;
    assert!(ok && out.contains("namespace/default"), "{out}{err}");
    // Writes: create, client-side apply, server-side apply, delete.
    let (ok, _, err) =
        kubectl.run(&admin, &["create", "configmap", "one", "-n", "default", "--from-literal=a=b"], None).await;
    assert!(ok, "{err}");
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: two, namespace: default}\ndata: {k: v}\n";
    let (ok, _, err) = kubectl.run(&admin, &["apply", "-f", "-"], Some(manifest)).await;
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl.run(&admin, &["apply", "--server-side", "-f", "-"], Some(manifest)).await;
    assert!(ok, "{err}");
    let (ok, out, err) =
        kubectl.run(&viewer, &["get", "configmap", "two", "-n", "default", "-o", "jsonpath={.data.k}"], None).await;
    assert!(ok && out == "v", "{out}{err}");
    let (h2_after, h1_after) = (connections("h2").await, connections("http/1.1").await);
    assert!(h2_after >= h2_before + 5, "five kubectl runs, {} HTTP/2 connections", h2_after - h2_before);
    assert_eq!(h1_after, h1_before, "no kubectl connection used HTTP/1.1");

    // A watch receives an event made 5 s later.
    let mut watch = tokio::process::Command::new(&kubectl.bin)
        .args(["get", "configmaps", "-n", "default", "-w", "-o", "name", "--kubeconfig"])
        .arg(&viewer)
        .arg("--cache-dir")
        .arg(kubectl.home.join("cache"))
        .env_clear()
        .env("HOME", &kubectl.home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (ok, _, err) = kubectl.run(&admin, &["create", "configmap", "later", "-n", "default"], None).await;
    assert!(ok, "{err}");
    let mut stdout = watch.stdout.take().unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(15), async {
        use tokio::io::AsyncReadExt;
        let mut all = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf).await {
            if n == 0 {
                break;
            }
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
            if all.contains("configmap/later") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "the watch through KubeHero saw the new configmap");
    let _ = watch.kill().await;

    // The cluster's RBAC answers for the groups KubeHero sent. `auth can-i` itself is a SelfSubjectAccessReview,
    // which RBAC allows through `system:authenticated`: the group the API server adds to impersonated users.
    let (_, out, _) = kubectl.run(&viewer, &["auth", "can-i", "create", "configmaps", "-n", "default"], None).await;
    assert_eq!(out.trim(), "no");
    let (_, out, _) = kubectl.run(&viewer, &["auth", "can-i", "list", "configmaps", "-n", "default"], None).await;
    assert_eq!(out.trim(), "yes");
    let (_, out, _) = kubectl.run(&admin, &["auth", "can-i", "create", "configmaps", "-n", "default"], None).await;
    assert_eq!(out.trim(), "yes");
    let (ok, _, err) = kubectl.run(&viewer, &["delete", "configmap", "one", "-n", "default"], None).await;
    assert!(!ok && err.contains("forbidden") && err.contains("kubehero:"), "{err}");
    // --as is never honoured.
    let (ok, _, err) =
        kubectl.run(&viewer, &["--as", "system:admin", "get", "secrets", "-n", "kube-system"], None).await;
    assert!(!ok && err.contains("impersonation"), "{err}");
    // A person without a binding for the cluster is refused by KubeHero.
    let person = idp.client_credentials("kubehero", "kubehero-secret").await.unwrap();
    let nobody = config("nobody", &person);
    let (ok, _, err) = kubectl.run(&nobody, &["get", "configmaps", "-n", "default"], None).await;
    assert!(!ok && err.contains("no KubeHero role on cluster lab"), "{err}");
    let (ok, _, err) = kubectl.run(&admin, &["delete", "configmap", "one", "-n", "default"], None).await;
    assert!(ok, "{err}");

    // kubectl exec: no kubelet runs here, so the API server itself answers (the pod has no node); through
    // KubeHero kubectl gets the very answer it gets directly.
    let direct = dir.path().join("direct.kubeconfig");
    std::fs::write(&direct, k.admin_kubeconfig()).unwrap();
    let sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default, namespace: default}\n";
    let (ok, _, err) = kubectl.run(&admin, &["apply", "-f", "-"], Some(sa)).await;
    assert!(ok, "{err}");
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: default}\nspec:\n  automountServiceAccountToken: false\n  containers: [{name: c, image: busybox}]\n";
    let (ok, _, err) = kubectl.run(&admin, &["apply", "-f", "-"], Some(pod)).await;
    assert!(ok, "{err}");
    let (ok1, _, via) = kubectl.run(&admin, &["exec", "web", "-n", "default", "--", "ls"], None).await;
    let (ok2, _, straight) = kubectl.run(&direct, &["exec", "web", "-n", "default", "--", "ls"], None).await;
    assert!(!ok1 && !ok2);
    assert!(straight.contains("does not have a host assigned"), "{straight}");
    assert_eq!(via.trim(), straight.trim(), "kubectl exec through KubeHero gets the API server's own answer");

    // Every request is an audit row with the Kubernetes verb, resource and namespace.
    let r = ts.get("/api/v1/audit?cluster=lab&limit=500", Some(AUDITOR)).await;
    let rows = r.body["items"].as_array().unwrap().clone();
    let has = |action: &str, kind: &str| {
        rows.iter()
            .any(|i| i["action"] == action && i["target"]["kind"] == kind && i["target"]["namespace"] == "default")
    };
    assert!(has("k8s.create", "configmaps"), "{rows:?}");
    assert!(has("k8s.delete", "configmaps"));
    assert!(has("k8s.watch", "configmaps"));
    assert!(rows.iter().any(|i| i["action"] == "k8s.list" && i["result"]["outcome"] == "denied"), "the refused person");

    // A cluster that is not connected is said so.
    let _ = stop.send(true);
    let t0 = Instant::now();
    loop {
        let (ok, _, err) = kubectl.run(&admin, &["get", "namespaces"], None).await;
        if !ok && err.contains("cluster lab is not connected") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{err}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An HTTPS upstream in this test standing in for an API server's exec endpoint (no kubelet runs here, so no
/// real container can answer): it answers an upgrade with 101, echoes every byte, and tells which identity
/// headers reached it.
async fn echo_upstream(dir: &Path) -> (String, Vec<u8>, Arc<std::sync::Mutex<Vec<String>>>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap().self_signed(&key).unwrap();
    let _ = dir;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen2.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        for (n, v) in req.headers() {
                            if n.as_str().starts_with("impersonate-") || n == "authorization" {
                                seen.lock().unwrap().push(format!("{n}: {}", v.to_str().unwrap_or("")));
                            }
                        }
                        let mut res = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")));
                        if let Some(proto) = req.headers().get("upgrade").cloned() {
                            let on = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                if let Ok(up) = on.await {
                                    let mut io = hyper_util::rt::TokioIo::new(up);
                                    let (mut r, mut w) = tokio::io::split(&mut io);
                                    let _ = tokio::io::copy(&mut r, &mut w).await;
                                }
                            });
                            *res.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                            res.headers_mut().insert("upgrade", proto);
                            res.headers_mut().insert("connection", hyper::header::HeaderValue::from_static("Upgrade"));
                            if let Some(p) = req.headers().get("sec-websocket-protocol").cloned() {
                                res.headers_mut().insert("sec-websocket-protocol", p);
                            }
                        }
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).with_upgrades().await;
            });
        }
    });
    (format!("https://127.0.0.1:{}", addr.port()), cert.pem().into_bytes(), seen)
}

#[tokio::test]
async fn spdy_and_websocket_upgrades_pass_byte_for_byte_through_the_control_plane_tunnel_and_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream_url, upstream_ca, seen) = echo_upstream(dir.path()).await;
    let ts =
        TestServer::start(&[("KUBEHERO_REQUIRE_AUTH", "true"), ("KUBEHERO_API_KEYS", &*api_keys_env())], None).await;
    std::fs::write(
        dir.path().join("up.kubeconfig"),
        kubehero_testkit::kubectl::token_kubeconfig(&upstream_url, &upstream_ca, "agent-own-token"),
    )
    .unwrap();
    let _agent = connect_agent(&ts, "echo", &dir.path().join("up.kubeconfig"), &dir.path().join("agent")).await;
    let addr = ts.server.as_ref().unwrap().addr;
    for (upgrade, extra) in [
        ("SPDY/3.1", ("x-stream-protocol-version", "v4.channel.k8s.io")),
        ("websocket", ("sec-websocket-protocol", "v5.channel.k8s.io")),
    ] {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn.with_upgrades());
        let req = hyper::Request::builder()
            .method(if upgrade == "websocket" { "GET" } else { "POST" })
            .uri("/k8s/clusters/echo/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true&stdout=true")
            .header("host", "cp")
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("connection", "Upgrade")
            .header("upgrade", upgrade)
            .header(extra.0, extra.1)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let mut res = send.send_request(req).await.unwrap();
        assert_eq!(res.status(), 101, "{upgrade}");
        assert_eq!(res.headers()["upgrade"], upgrade);
        let up = hyper::upgrade::on(&mut res).await.unwrap();
        let mut io = hyper_util::rt::TokioIo::new(up);
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let payload: Vec<u8> = (0..=255u8).cycle().take(256 * 1024).collect();
        let (mut r, mut w) = tokio::io::split(&mut io);
        let writer = async {
            w.write_all(&payload).await.unwrap();
            w.flush().await.unwrap();
        };
        let reader = async {
            let mut got = vec![0u8; payload.len()];
            r.read_exact(&mut got).await.unwrap();
            got
        };
        let ((), got) =
            tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(writer, reader) }).await.unwrap();
        assert!(got == payload, "{upgrade}: 256 KiB echoed byte for byte");
    }
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|h| h.starts_with("impersonate-user: kubehero:")), "{seen:?}");
    assert!(seen.iter().any(|h| h == "impersonate-group: kubehero:role:admin"), "{seen:?}");
    assert!(seen.iter().any(|h| h == "authorization: Bearer agent-own-token"), "the agent's own credential: {seen:?}");
    assert!(!seen.iter().any(|h| h.contains(ADMIN)), "the caller's key never reaches the cluster: {seen:?}");
}

/// Starts `kubectl get configmaps -w` with `kubeconfig`; the child and whether it is still running is checked by
/// the caller.
fn watch_configmaps(kubectl: &Kubectl, kubeconfig: &Path, namespace: &str) -> tokio::process::Child {
    tokio::process::Command::new(&kubectl.bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(kubectl.home.join("cache"))
        .args(["get", "configmaps", "-n", namespace, "-w", "-o", "name"])
        .env_clear()
        .env("HOME", &kubectl.home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Starts a watch with `kubeconfig`, waits until it is open and running, and gives back the process.
pub(crate) async fn open_watch(
    kubectl: &Kubectl,
    kubeconfig: &Path,
    streams: &kubehero_server::kube::streams::Streams,
) -> tokio::process::Child {
    open_watch_in(kubectl, kubeconfig, streams, "default").await
}

/// [`open_watch`] of the configmaps of `namespace`.
pub(crate) async fn open_watch_in(
    kubectl: &Kubectl,
    kubeconfig: &Path,
    streams: &kubehero_server::kube::streams::Streams,
    namespace: &str,
) -> tokio::process::Child {
    let before = streams.len();
    let mut w = watch_configmaps(kubectl, kubeconfig, namespace);
    let t0 = Instant::now();
    while streams.len() <= before {
        assert!(t0.elapsed() < Duration::from_secs(20), "the watch never opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(w.try_wait().unwrap().is_none(), "the watch runs while its caller has access");
    w
}

/// Waits until the watch process exits, at most 2.5 s.
async fn cut_within_2_5_s(w: &mut tokio::process::Child) {
    let took = exits_within(w, Duration::from_secs(3)).await;
    assert!(took <= Duration::from_millis(2500), "closed after {took:?}");
}

/// Waits until the process exits; how long it took.
pub(crate) async fn exits_within(child: &mut tokio::process::Child, limit: Duration) -> Duration {
    let t0 = Instant::now();
    tokio::time::timeout(limit, child.wait()).await.expect("the watch was not closed in time").unwrap();
    t0.elapsed()
}

#[tokio::test]
async fn losing_access_closes_an_open_watch_within_two_seconds() {
    const SCIM_TOKEN: &str = "scim-token-for-the-kube-streams-0123456789";
    let bin = kubehero_testkit::kubectl::kubectl().expect("kubectl 1.30: run scripts/test (it fetches it)");
    let k = KubeApiServer::start().await.unwrap();
    k.kubehero_rbac().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = tls_files(dir.path());
    let ts = TestServer::start(
        &[
            ("KUBEHERO_REQUIRE_AUTH", "true"),
            ("KUBEHERO_API_KEYS", &*api_keys_env()),
            ("KUBEHERO_TLS_CERT", cert.to_str().unwrap()),
            ("KUBEHERO_TLS_KEY", key.to_str().unwrap()),
            ("KUBEHERO_SCIM_TOKEN", SCIM_TOKEN),
        ],
        None,
    )
    .await;
    let kc = k.service_account_kubeconfig("kubehero-system", "kubehero-agent").await.unwrap();
    std::fs::write(dir.path().join("sa.kubeconfig"), kc).unwrap();
    let _agent = connect_agent(&ts, "lab", &dir.path().join("sa.kubeconfig"), &dir.path().join("agent")).await;
    let state = ts.server.as_ref().unwrap().state.clone();
    // Dana signs in with the CLI; a binding makes her a viewer of the cluster.
    let dana_login = async || {
        let email = Some("dana@example.com".into());
        let (secret, rec) =
            kubehero_server::device::new_cli_token("dana", email, vec![], None, crate::agents::now(), None).unwrap();
        state.store.create_session(&rec).await.unwrap();
        (secret, rec)
    };
    let (login, rec) = dana_login().await;
    let bind = async || {
        let body = json!({"subject": {"kind": "user", "name": "dana@example.com"}, "role": "viewer", "cluster": "lab"});
        let r = ts.call(reqwest::Method::POST, "/api/v1/role-bindings", Some(OWNER), Some(body)).await;
        assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    };
    let kubectl = Kubectl { bin, home: dir.path().join("home") };
    let dana = dir.path().join("dana.kubeconfig");
    let server = format!("{}/k8s/clusters/lab", ts.url);
    std::fs::write(&dana, kubehero_testkit::kubectl::token_kubeconfig(&server, &ca, &login)).unwrap();
    let streams = &state.kube_streams;

    // 1. The binding is removed: the watch ends within 2 s.
    let binding = bind().await;
    let mut w = open_watch(&kubectl, &dana, streams).await;
    let r = ts.call(reqwest::Method::DELETE, &format!("/api/v1/role-bindings/{binding}"), Some(OWNER), None).await;
    assert!(r.status.is_success());
    cut_within_2_5_s(&mut w).await;

    // 2. Her CLI login is revoked: the same.
    bind().await;
    let mut w = open_watch(&kubectl, &dana, streams).await;
    let r = ts.call(reqwest::Method::DELETE, &format!("/api/v1/auth/sessions/{}", rec.id), Some(OWNER), None).await;
    assert!(r.status.is_success(), "{}", r.body);
    cut_within_2_5_s(&mut w).await;

    // 3. The IdP deactivates her through SCIM: the same, for a fresh CLI login of hers.
    let scim = |method: reqwest::Method, path: String, body: Value| {
        ts.http
            .request(method, format!("{}/scim/v2{path}", ts.url))
            .bearer_auth(SCIM_TOKEN)
            .header("content-type", "application/scim+json")
            .json(&body)
            .send()
    };
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "dana@example.com",
        "emails": [{"primary": true, "value": "dana@example.com"}], "active": true,
    });
    let created: Value = scim(reqwest::Method::POST, "/Users".into(), user).await.unwrap().json().await.unwrap();
    let (login2, _) = dana_login().await;
    std::fs::write(&dana, kubehero_testkit::kubectl::token_kubeconfig(&server, &ca, &login2)).unwrap();
    let mut w = open_watch(&kubectl, &dana, streams).await;
    let off = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"active": false}}]});
    let r = scim(reqwest::Method::PATCH, format!("/Users/{}", created["id"].as_str().unwrap()), off).await.unwrap();
    assert!(r.status().is_success());
    cut_within_2_5_s(&mut w).await;

    // Each watch has a start row and an end row.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows =
        ts.get("/api/v1/audit?cluster=lab&limit=500", Some(AUDITOR)).await.body["items"].as_array().unwrap().clone();
    let count = |a: &str| rows.iter().filter(|i| i["action"] == a).count();
    assert!(count("k8s.watch") >= 3 && count("k8s.watch_end") >= 3, "{rows:?}");
    // An end row says how long the watch was open and carries its start row's request id.
    for end in rows.iter().filter(|i| i["action"] == "k8s.watch_end") {
        assert!(end["result"]["duration_ms"].as_u64().is_some(), "{end}");
        let start = rows.iter().find(|i| i["action"] == "k8s.watch" && i["request_id"] == end["request_id"]);
        let start = start.unwrap_or_else(|| panic!("no start row for {end}"));
        assert!(end["time_ms"].as_i64() >= start["time_ms"].as_i64());
    }
}
