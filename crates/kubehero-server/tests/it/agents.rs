//! Cluster agents against a real kube-apiserver v1.20.2 + etcd (testkit): `cluster add` with a join token →
//! the agent (the real agent code, in this process) joins with a service account's kubeconfig → connected with
//! the API server's version → streams opened by the control plane reach the API server → removal closes the
//! tunnel within a second and the agent's reconnects are refused. Renewal under a continuous stream of
//! requests, expiry without renewal, and revocation, with 20-second certificates.

use crate::support::*;
use http_body_util::BodyExt;
use kubehero_agent::client::{AgentError, ControlPlane};
use kubehero_agent::run::AgentConfig;
use kubehero_agent::state::StateDir;
use kubehero_agent::upstream::{Forwarder, Upstream};
use kubehero_testkit::kubeapi::KubeApiServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn hub(ts: &TestServer) -> Arc<kubehero_server::agent::hub::Hub> {
    ts.server.as_ref().unwrap().state.agents.hub.clone()
}

fn agent_url(ts: &TestServer) -> String {
    format!("https://127.0.0.1:{}", ts.server.as_ref().unwrap().agent_addr.unwrap().port())
}

/// `GET path` through a tunnel stream to the cluster's API server.
async fn through_tunnel(ts: &TestServer, cluster: &str, path: &str) -> Result<(u16, Value), String> {
    through_tunnel_with(ts, cluster, path, None).await
}

/// [`through_tunnel`] with one extra header.
async fn through_tunnel_with(
    ts: &TestServer,
    cluster: &str,
    path: &str,
    header: Option<(&str, &str)>,
) -> Result<(u16, Value), String> {
    let stream = hub(ts).open(cluster).await.map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(stream).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::builder().uri(path).header("host", "kubernetes");
    if let Some((n, v)) = header {
        req = req.header(n, v);
    }
    let req = req.body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let res = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !check().await {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

async fn cluster_state(ts: &TestServer, name: &str) -> Value {
    let r = ts.get("/api/v1/clusters", Some(VIEWER)).await;
    r.body["items"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap_or(Value::Null)
}

/// Registers `name` with a join token; returns the `join` object.
async fn add(ts: &TestServer, name: &str) -> Value {
    let r = ts.call(Method::POST, "/api/v1/clusters", Some(ADMIN), Some(json!({"name": name, "join": true}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let join = r.body["join"].clone();
    assert!(join["token"].as_str().unwrap().starts_with("khj_"));
    assert!(join["agent_command"].as_str().unwrap().contains("--ca-hash sha256:"));
    assert!(join["helm_command"].as_str().unwrap().starts_with("helm install"));
    join
}

fn agent_config(ts: &TestServer, cluster: &str, join: &Value, state: &std::path::Path) -> AgentConfig {
    AgentConfig {
        server: ControlPlane::parse(&agent_url(ts)).unwrap(),
        cluster: cluster.into(),
        join_token: join["token"].as_str().map(str::to_string),
        ca_hash: join["ca_hash"].as_str().map(str::to_string),
        state: kubehero_agent::state::State::Dir(StateDir::new(state)),
        version: "test-agent".into(),
        reconnect_min: Duration::from_millis(200),
        reconnect_max: Duration::from_secs(1),
    }
}

async fn upstream(k: &KubeApiServer, dir: &std::path::Path, sa: &str) -> Arc<Upstream> {
    let kc = k.service_account_kubeconfig("kubehero-system", sa).await.unwrap();
    let path = dir.join(format!("{sa}.kubeconfig"));
    std::fs::write(&path, kc).unwrap();
    Arc::new(Upstream::from_kubeconfig(&path).unwrap())
}

#[tokio::test]
async fn an_agent_joins_connects_serves_streams_and_is_cut_off_when_its_cluster_is_removed() {
    let k = KubeApiServer::start().await.unwrap();
    let ts =
        TestServer::start(&[("KUBEHERO_REQUIRE_AUTH", "true"), ("KUBEHERO_API_KEYS", &*api_keys_env())], None).await;
    let dir = tempfile::tempdir().unwrap();
    let join = add(&ts, "prod-eu").await;
    assert_eq!(cluster_state(&ts, "prod-eu").await["state"], "pending");

    // A join token is single use, for its own cluster only; a wrong one is refused; none of it is a 5xx.
    let cp = ControlPlane::parse(&agent_url(&ts)).unwrap();
    let hash = join["ca_hash"].as_str().unwrap();
    let other = cp.join("prod-us", join["token"].as_str().unwrap(), hash).await.unwrap_err();
    assert!(matches!(&other, AgentError::Refused { status: 401, .. }), "{other}");
    let wrong = cp.join("prod-eu", "khj_wrong", hash).await.unwrap_err();
    assert!(matches!(&wrong, AgentError::Refused { status: 401, .. }), "{wrong}");
    // A control plane whose CA does not match the pinned hash is not trusted.
    let bad_pin = format!("sha256:{}", "0".repeat(64));
    let untrusted = cp.join("prod-eu", join["token"].as_str().unwrap(), &bad_pin).await.unwrap_err();
    assert!(matches!(&untrusted, AgentError::Unreachable(m) if m.contains("hash")), "{untrusted}");

    // The agent joins with a service account's kubeconfig and holds its tunnel.
    let state_dir = dir.path().join("agent");
    let cfg = agent_config(&ts, "prod-eu", &join, &state_dir);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let handler = Arc::new(Forwarder(upstream(&k, dir.path(), "kubehero-agent").await));
    let agent = tokio::spawn(kubehero_agent::run::run(cfg.clone(), handler.clone(), stop_rx));
    wait_for("connected with the API server's version", Duration::from_secs(20), async || {
        let c = cluster_state(&ts, "prod-eu").await;
        c["state"] == "connected" && c["kubernetes_version"] == "v1.20.2"
    })
    .await;
    let c = cluster_state(&ts, "prod-eu").await;
    assert_eq!(c["agent_version"], "test-agent");
    assert!(c["cert_not_after"].as_i64().unwrap() > c["since"].as_i64().unwrap() + 6 * 86400, "7-day certificate");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state_dir.join("agent.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The used token cannot join again.
    let reused = cp.join("prod-eu", join["token"].as_str().unwrap(), hash).await.unwrap_err();
    assert!(
        matches!(&reused, AgentError::Refused { status: 401, message, .. } if message.contains("already used")),
        "{reused}"
    );

    // A stream that carries identity headers of its own is refused by the agent (the control plane never sends
    // one: it says whom to impersonate in its own headers).
    for h in [("authorization", "Bearer x"), ("impersonate-user", "system:admin"), ("x-remote-user", "root")] {
        let (status, body) = through_tunnel_with(&ts, "prod-eu", "/version", Some(h)).await.unwrap();
        assert_eq!(status, 400, "{h:?}: {body}");
    }
    // Streams reach the API server as the service account.
    let (status, version) = through_tunnel(&ts, "prod-eu", "/version").await.unwrap();
    assert_eq!((status, version["gitVersion"].as_str()), (200, Some("v1.20.2")));
    let (status, api) = through_tunnel(&ts, "prod-eu", "/api").await.unwrap();
    assert_eq!(status, 200, "{api}");
    assert_eq!(api["kind"], "APIVersions");
    let (status, denied) = through_tunnel(&ts, "prod-eu", "/api/v1/namespaces/kube-system/secrets").await.unwrap();
    assert_eq!(status, 403, "the service account has no rights on secrets: {denied}");
    assert!(denied["message"].as_str().unwrap().contains("system:serviceaccount:kubehero-system:kubehero-agent"));
    // Many concurrent streams over the one tunnel.
    let many = futures_join((0..32).map(|_| through_tunnel(&ts, "prod-eu", "/version"))).await;
    assert!(many.iter().all(|r| r.as_ref().is_ok_and(|(s, _)| *s == 200)));

    let metrics = async || reqwest::get(format!("{}/metrics", ts.url)).await.unwrap().text().await.unwrap();
    let m = metrics().await;
    assert!(m.contains("kubehero_agents_connected 1"), "{m}");
    assert!(m.contains("kubehero_agent_certificate_expiry_seconds{cluster=\"prod-eu\"}"), "{m}");
    let total: u64 = m.lines().find_map(|l| l.strip_prefix("kubehero_tunnel_streams_total ")?.parse().ok()).unwrap();
    assert!(total >= 35, "{total}");
    wait_for("streams closed", Duration::from_secs(5), async || {
        metrics().await.contains("kubehero_tunnel_streams_open 0")
    })
    .await;

    // A new join token for a re-install does not disturb the connected agent.
    let r = ts.call(Method::POST, "/api/v1/clusters/prod-eu/join-tokens", Some(ADMIN), Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(through_tunnel(&ts, "prod-eu", "/version").await.is_ok());
    // The re-install: the agent restarted with the new token joins again (a restart without one reuses).
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    let mut cfg = cfg.clone();
    cfg.join_token = r.body["token"].as_str().map(str::to_string);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(kubehero_agent::run::run(cfg, handler.clone(), stop_rx));
    wait_for("joined again", Duration::from_secs(20), async || {
        let certs = ts.get("/api/v1/clusters/prod-eu/certificates", Some(VIEWER)).await;
        certs.body["items"].as_array().unwrap().len() == 2 && hub(&ts).open("prod-eu").await.is_ok()
    })
    .await;

    // Removal closes the tunnel within a second, and the agent's reconnects are refused.
    let r = ts.call(Method::DELETE, "/api/v1/clusters/prod-eu", Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let took =
        wait_for("tunnel closed", Duration::from_secs(1), async || hub(&ts).open("prod-eu").await.is_err()).await;
    assert!(took < Duration::from_secs(1));
    assert_eq!(cluster_state(&ts, "prod-eu").await["state"], "removed");
    let creds = StateDir::new(&state_dir).load().unwrap().unwrap();
    let Err(refused) = cp.tunnel(&creds, "test", handler.clone()).await else {
        panic!("a removed cluster's agent got a tunnel");
    };
    assert!(matches!(refused, AgentError::Unreachable(_)), "refused at the TLS handshake: {refused}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(hub(&ts).open("prod-eu").await.is_err(), "the agent did not get back in");

    // Every step is in the audit log.
    let r = ts.get("/api/v1/audit?cluster=prod-eu&limit=100", Some(AUDITOR)).await;
    let actions: Vec<&str> = r.body["items"].as_array().unwrap().iter().filter_map(|i| i["action"].as_str()).collect();
    for a in
        ["cluster.register", "cluster.join_token", "agent.join", "agent.connect", "agent.disconnect", "cluster.delete"]
    {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
}

async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let handles: Vec<_> = fs.map(Box::pin).collect();
    for h in handles {
        out.push(h.await);
    }
    out
}

#[tokio::test]
async fn twenty_second_certificates_renew_under_load_expire_without_renewal_and_can_be_revoked() {
    let k = KubeApiServer::start().await.unwrap();
    let ts = TestServer::start(
        &[
            ("KUBEHERO_REQUIRE_AUTH", "true"),
            ("KUBEHERO_API_KEYS", &*api_keys_env()),
            ("KUBEHERO_AGENT_CERT_TTL_SECS", "20"),
        ],
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let handler = Arc::new(Forwarder(upstream(&k, dir.path(), "kubehero-agent").await));

    // "renewing": the full agent, which renews at about two thirds of 20 s.
    let join = add(&ts, "renewing").await;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = agent_config(&ts, "renewing", &join, &dir.path().join("renewing"));
    let agent = tokio::spawn(kubehero_agent::run::run(cfg, handler.clone(), stop_rx));

    // "stale": joined, then a bare tunnel with no renewal: the control plane closes it when its certificate
    // expires.
    let join2 = add(&ts, "stale").await;
    let cp = ControlPlane::parse(&agent_url(&ts)).unwrap();
    let creds = cp.join("stale", join2["token"].as_str().unwrap(), join2["ca_hash"].as_str().unwrap()).await.unwrap();
    let expires = creds.facts().unwrap().not_after;
    let stale = tokio::spawn(cp.tunnel(&creds, "test", handler.clone()).await.unwrap());

    // "revoked": joined and connected, then revoked.
    let join3 = add(&ts, "revoked").await;
    let (stop3, stop3_rx) = tokio::sync::watch::channel(false);
    let cfg3 = agent_config(&ts, "revoked", &join3, &dir.path().join("revoked"));
    let agent3 = tokio::spawn(kubehero_agent::run::run(cfg3, handler.clone(), stop3_rx));

    for c in ["renewing", "stale", "revoked"] {
        wait_for(c, Duration::from_secs(20), async || hub(&ts).open(c).await.is_ok()).await;
    }
    let r = ts.call(Method::POST, "/api/v1/clusters/revoked/certificates/revoke", Some(ADMIN), Some(json!({}))).await;
    assert_eq!((r.status, r.body["revoked"].as_u64()), (StatusCode::OK, Some(1)), "{}", r.body);
    let took =
        wait_for("revoked tunnel closed", Duration::from_secs(1), async || hub(&ts).open("revoked").await.is_err())
            .await;
    assert!(took < Duration::from_secs(1));

    // A watch opened now, on the tunnel of the first certificate, must keep streaming across the swaps.
    let admin = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&k.ca_pem).unwrap())
        .build()
        .unwrap();
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "ns-watch"},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "ns-watch"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ns-watch"},
        "subjects": [{"kind": "ServiceAccount", "name": "kubehero-agent", "namespace": "kubehero-system"}]});
    for (path, body) in [(format!("{rbac}/clusterroles"), role), (format!("{rbac}/clusterrolebindings"), binding)] {
        let r = admin
            .post(format!("{}{path}", k.url))
            .bearer_auth(kubehero_testkit::kubeapi::ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<String>();
    let watch = {
        let stream = hub(&ts).open("renewing").await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(stream).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("/api/v1/namespaces?watch=1&timeoutSeconds=300")
            .header("host", "kubernetes")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        tokio::spawn(async move {
            let _keep = send;
            let mut body = res.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    let _ = events_tx.send(String::from_utf8_lossy(data).into_owned());
                }
            }
        })
    };

    // 35 s of continuous requests through the renewing agent: every one answered across the renewals.
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(35) {
        let (status, _) =
            through_tunnel(&ts, "renewing", "/version").await.unwrap_or_else(|e| panic!("request {n} failed: {e}"));
        assert_eq!(status, 200);
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let certs = ts.get("/api/v1/clusters/renewing/certificates", Some(VIEWER)).await;
    let issued = certs.body["items"].as_array().unwrap().len();
    assert!(issued >= 3, "a join and at least two renewals in 35 s, got {issued}: {}", certs.body);
    // The watch from before the renewals still delivers.
    while events.try_recv().is_ok() {}
    k.create_namespace("after-renewals").await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.recv().await {
            if e.contains("after-renewals") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "the watch opened before the renewals saw the new namespace");
    watch.abort();

    // The bare tunnel was closed at its certificate's expiry (long passed now).
    assert!(crate::agents::now() > expires);
    assert!(hub(&ts).open("stale").await.is_err(), "an expired certificate's tunnel is closed");
    let _ = tokio::time::timeout(Duration::from_secs(5), stale).await.expect("the agent end saw the tunnel close");
    assert_eq!(cluster_state(&ts, "stale").await["state"], "disconnected");

    let _ = stop.send(true);
    let _ = stop3.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), agent3).await;
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Credentials for `cluster` signed by a CA the control plane has never seen, trusting the real listener.
fn foreign_credentials(cluster: &str, trust: &str) -> kubehero_agent::state::Credentials {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::default();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name.push(rcgen::DnType::CommonName, cluster);
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    kubehero_agent::state::Credentials {
        key_pem: key.serialize_pem(),
        cert_pem: cert.pem(),
        ca_pem: trust.to_string(),
        joined_with: None,
    }
}

#[tokio::test]
async fn bad_agents_get_clear_answers_and_disturb_no_other_tunnel() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ts =
        TestServer::start(&[("KUBEHERO_REQUIRE_AUTH", "true"), ("KUBEHERO_API_KEYS", &*api_keys_env())], None).await;
    let handler: Arc<dyn kubehero_agent::tunnel::StreamHandler> = Arc::new(Version);
    let cp = ControlPlane::parse(&agent_url(&ts)).unwrap();

    // A good agent, whose tunnel must keep working through everything below.
    let join = add(&ts, "good").await;
    let good = cp.join("good", join["token"].as_str().unwrap(), join["ca_hash"].as_str().unwrap()).await.unwrap();
    let good_conn = tokio::spawn(cp.tunnel(&good, "test", handler.clone()).await.unwrap());
    wait_for("good connected", Duration::from_secs(10), async || hub(&ts).open("good").await.is_ok()).await;
    let addr = ts.server.as_ref().unwrap().agent_addr.unwrap();

    // Garbage instead of TLS: the connection is closed.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert!(n == 0 || buf[0] == 0x15, "garbage gets a TLS alert or a close");
    // A stalled handshake is closed after 10 s.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t0 = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(15), stalled.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
    assert!(t0.elapsed() >= Duration::from_secs(9), "closed by the handshake timeout, not at once");

    // A certificate from another CA, and an expired one from the right CA: refused at the handshake.
    let foreign = foreign_credentials("good", &good.ca_pem);
    let Err(e) = cp.tunnel(&foreign, "test", handler.clone()).await else { panic!("a foreign certificate got in") };
    assert!(matches!(e, AgentError::Unreachable(_)), "{e}");
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = kubehero_agent::pki::csr_pem(&key, "good").unwrap();
    let state = &ts.server.as_ref().unwrap().state;
    let old = state.agents.ca.issue(&csr, "good", 60, crate::agents::now() - 3600).unwrap();
    let expired = kubehero_agent::state::Credentials {
        key_pem: key.serialize_pem(),
        cert_pem: old.cert_pem,
        ca_pem: good.ca_pem.clone(),
        joined_with: None,
    };
    let Err(e) = cp.tunnel(&expired, "test", handler.clone()).await else { panic!("an expired certificate got in") };
    assert!(matches!(e, AgentError::Unreachable(_)), "{e}");
    // Renewal needs a certificate; a CSR for another cluster is refused.
    let csr_other = kubehero_agent::pki::csr_pem(&key, "other").unwrap();
    let r = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(good.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
        .post(format!("{}/agent/v1/renew", agent_url(&ts)))
        .json(&json!({"csr_pem": csr_other}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Another replica's stream request: only the replicas' own credential opens one, never nothing, a forged
    // one, or one for another cluster; with it, a stream for a cluster whose tunnel is here is switched (101),
    // for one whose tunnel is not, 404.
    let tls = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(good.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let peers = &state.agents.peers;
    let now = crate::agents::now();
    let stream = async |cluster: &str, credentials: Vec<String>| {
        let mut rb = tls
            .get(format!("{}/peer/v1/streams/{cluster}", agent_url(&ts)))
            .header("connection", "Upgrade")
            .header("upgrade", kubehero_server::agent::peer::PROTOCOL);
        for c in credentials {
            rb = rb.header(kubehero_server::agent::peer::AUTH_HEADER, c);
        }
        rb.send().await.unwrap().status().as_u16()
    };
    assert_eq!(stream("good", vec![]).await, 401);
    assert_eq!(stream("good", vec![format!("{now}.AAAA")]).await, 401);
    assert_eq!(stream("good", peers.credentials("other", now)).await, 401);
    assert_eq!(stream("good", peers.credentials("good", now - 120)).await, 401, "too old");
    assert_eq!(stream("good", peers.credentials("good", now)).await, 101);
    // A replica mid-rotation sends one value per key; one that checks under this replica's key is enough.
    let mut rotating = vec![format!("{now}.AAAA")];
    rotating.extend(peers.credentials("good", now));
    assert_eq!(stream("good", rotating).await, 101);
    assert_eq!(stream("nowhere", peers.credentials("nowhere", now)).await, 404);
    let join2 = add(&ts, "second").await;
    let err = cp.join("second", "khj_nope", join2["ca_hash"].as_str().unwrap()).await.unwrap_err();
    assert!(matches!(err, AgentError::Refused { status: 401, .. }), "{err}");

    // A second tunnel for the same cluster replaces the first (newest wins); the cluster stays reachable.
    let second = tokio::spawn(cp.tunnel(&good, "test", handler.clone()).await.unwrap());
    wait_for("replaced", Duration::from_secs(5), async || {
        let m = reqwest::get(format!("{}/metrics", ts.url)).await.unwrap().text().await.unwrap();
        m.contains("kubehero_agent_tunnels_replaced_total 1")
    })
    .await;
    assert_eq!(through_tunnel(&ts, "good", "/version").await.unwrap().0, 200);
    let _ =
        tokio::time::timeout(Duration::from_secs(5), good_conn).await.expect("the replaced tunnel closes once idle");
    assert_eq!(through_tunnel(&ts, "good", "/version").await.unwrap().0, 200, "the good cluster never lost its path");
    second.abort();
}

/// Answers every request with a fixed `/version`.
struct Version;

impl kubehero_agent::tunnel::StreamHandler for Version {
    fn handle(
        &self,
        stream: kubehero_agent::tunnel::Stream,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(br#"{"gitVersion":"v0.0.0-test"}"#),
                )))
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(stream, svc).await;
        })
    }
}

#[tokio::test]
async fn in_a_cluster_the_agent_keeps_its_key_and_certificate_in_a_secret_and_reuses_them() {
    use kubehero_testkit::kubeapi::ADMIN_TOKEN;
    let k = KubeApiServer::start().await.unwrap();
    let ts =
        TestServer::start(&[("KUBEHERO_REQUIRE_AUTH", "true"), ("KUBEHERO_API_KEYS", &*api_keys_env())], None).await;
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(&k, dir.path(), "kubehero-agent").await;
    // The agent's service account may create Secrets and read and update its own one, nothing else.
    let admin = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&k.ca_pem).unwrap())
        .build()
        .unwrap();
    let ns = "/apis/rbac.authorization.k8s.io/v1/namespaces/kubehero-system";
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "agent-state"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
                  {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["kubehero-agent-state"], "verbs": ["get", "update"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "agent-state"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agent-state"},
        "subjects": [{"kind": "ServiceAccount", "name": "kubehero-agent", "namespace": "kubehero-system"}]});
    for (path, body) in [(format!("{ns}/roles"), role), (format!("{ns}/rolebindings"), binding)] {
        let r = admin.post(format!("{}{path}", k.url)).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let state = kubehero_agent::state::State::Secret {
        upstream: up.clone(),
        namespace: "kubehero-system".into(),
        name: "kubehero-agent-state".into(),
    };
    let join = add(&ts, "in-pod").await;
    let mut cfg = agent_config(&ts, "in-pod", &join, dir.path());
    cfg.state = state.clone();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let first = tokio::spawn(kubehero_agent::run::run(cfg.clone(), Arc::new(Forwarder(up.clone())), rx));
    wait_for("connected", Duration::from_secs(20), async || hub(&ts).open("in-pod").await.is_ok()).await;
    let secret: Value = admin
        .get(format!("{}/api/v1/namespaces/kubehero-system/secrets/kubehero-agent-state", k.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(secret["metadata"]["labels"]["app.kubernetes.io/managed-by"], "kubehero");
    assert!(secret["data"]["agent.key"].is_string() && secret["data"]["agent.crt"].is_string());
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), first).await;
    wait_for("disconnected", Duration::from_secs(10), async || hub(&ts).open("in-pod").await.is_err()).await;

    // A restarted agent (a new pod) has no join token, only the Secret.
    cfg.join_token = None;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let second = tokio::spawn(kubehero_agent::run::run(cfg, Arc::new(Forwarder(up)), rx));
    wait_for("back from the Secret", Duration::from_secs(20), async || hub(&ts).open("in-pod").await.is_ok()).await;
    let certs = ts.get("/api/v1/clusters/in-pod/certificates", Some(VIEWER)).await;
    assert_eq!(certs.body["items"].as_array().unwrap().len(), 1, "no second join: {}", certs.body);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), second).await;
}

#[tokio::test]
async fn the_built_in_ca_rolls_over_without_losing_a_renewing_agent() {
    let ts = TestServer::start(
        &[
            ("KUBEHERO_REQUIRE_AUTH", "true"),
            ("KUBEHERO_API_KEYS", &*api_keys_env()),
            ("KUBEHERO_AGENT_CERT_TTL_SECS", "20"),
        ],
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let handler: Arc<dyn kubehero_agent::tunnel::StreamHandler> = Arc::new(Version);
    let state = ts.server.as_ref().unwrap().state.clone();
    let cp = ControlPlane::parse(&agent_url(&ts)).unwrap();

    // "roll": a full agent that renews every ~13 s. "old": a bare tunnel with an hour-long certificate from the
    // first CA, which never renews.
    let join = add(&ts, "roll").await;
    let old_hash = join["ca_hash"].as_str().unwrap().to_string();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let cfg = agent_config(&ts, "roll", &join, &dir.path().join("roll"));
    let agent = tokio::spawn(kubehero_agent::run::run(cfg, handler.clone(), rx));
    add(&ts, "old").await;
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = kubehero_agent::pki::csr_pem(&key, "old").unwrap();
    let issued = state.agents.ca.issue(&csr, "old", 3600, crate::agents::now()).unwrap();
    let old_creds = kubehero_agent::state::Credentials {
        key_pem: key.serialize_pem(),
        cert_pem: issued.cert_pem,
        ca_pem: state.agents.ca.bundle_pem(),
        joined_with: None,
    };
    let old_tunnel = tokio::spawn(cp.tunnel(&old_creds, "test", handler.clone()).await.unwrap());
    for c in ["roll", "old"] {
        wait_for(c, Duration::from_secs(10), async || hub(&ts).open(c).await.is_ok()).await;
    }
    let issued_count = async |c: &str| {
        ts.get(&format!("/api/v1/clusters/{c}/certificates"), Some(VIEWER)).await.body["items"]
            .as_array()
            .unwrap()
            .len()
    };

    // 1. Stage: the new CA is trusted and reaches the agent at its next renewal; the old one still signs.
    let r = ts.call(Method::POST, "/api/v1/agent-cas", Some(OWNER), Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let new_id = r.body["id"].as_str().unwrap().to_string();
    let new_hash = r.body["ca_hash"].as_str().unwrap().to_string();
    assert_eq!(state.agents.ca.hash(), old_hash, "staged, not signing");
    let n = issued_count("roll").await;
    wait_for("a renewal after staging", Duration::from_secs(25), async || issued_count("roll").await > n).await;
    let stored = StateDir::new(dir.path().join("roll")).load().unwrap().unwrap();
    assert_eq!(kubehero_agent::pki::pem_certs(&stored.ca_pem).unwrap().len(), 2, "the agent trusts both CAs");

    // 2. Activate: the new CA signs (certificates and the listener); the agent's next renewal is from it.
    let r = ts.call(Method::POST, &format!("/api/v1/agent-cas/{new_id}/activate"), Some(OWNER), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(state.agents.ca.hash(), new_hash);
    let n = issued_count("roll").await;
    wait_for("a renewal after activation", Duration::from_secs(25), async || issued_count("roll").await > n).await;
    wait_for("the renewed tunnel", Duration::from_secs(5), async || hub(&ts).open("roll").await.is_ok()).await;

    // 3. Retire the first CA: the tunnel whose certificate it signed closes; the renewed agent stays.
    let cas = ts.get("/api/v1/agent-cas", Some(OWNER)).await;
    let signing: Vec<&Value> = cas.body["items"].as_array().unwrap().iter().filter(|c| c["signing"] == true).collect();
    assert_eq!(signing.len(), 1);
    assert_eq!(signing[0]["id"], new_id.as_str());
    let r = ts.call(Method::POST, &format!("/api/v1/agent-cas/{new_id}/retire"), Some(OWNER), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "the signing CA cannot be retired: {}", r.body);
    let r = ts.call(Method::POST, "/api/v1/agent-cas/builtin-1/retire", Some(OWNER), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let took =
        wait_for("old tunnel closed", Duration::from_secs(1), async || hub(&ts).open("old").await.is_err()).await;
    assert!(took < Duration::from_secs(1));
    let _ = tokio::time::timeout(Duration::from_secs(5), old_tunnel).await;
    for _ in 0..10 {
        assert_eq!(through_tunnel(&ts, "roll", "/version").await.unwrap().0, 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
}

/// A CA (certificate PEM, key PEM) as cert-manager would write it.
fn file_ca() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(rcgen::DnType::CommonName, "cert-manager agent CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    (ca.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

#[tokio::test]
async fn a_ca_from_files_signs_agents_and_is_re_read_when_the_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = file_ca();
    let (cert_path, key_path) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let ts = TestServer::start(
        &[
            ("KUBEHERO_REQUIRE_AUTH", "true"),
            ("KUBEHERO_API_KEYS", &*api_keys_env()),
            ("KUBEHERO_AGENT_CA_CERT", cert_path.to_str().unwrap()),
            ("KUBEHERO_AGENT_CA_KEY", key_path.to_str().unwrap()),
        ],
        None,
    )
    .await;
    let file_hash =
        kubehero_agent::pki::cert_facts(&kubehero_agent::pki::pem_certs(&cert).unwrap()[0]).unwrap().spki_hash;
    let join = add(&ts, "cm").await;
    assert_eq!(join["ca_hash"], file_hash.as_str());
    let cp = ControlPlane::parse(&agent_url(&ts)).unwrap();
    let creds = cp.join("cm", join["token"].as_str().unwrap(), &file_hash).await.unwrap();
    let handler: Arc<dyn kubehero_agent::tunnel::StreamHandler> = Arc::new(Version);
    let _t = tokio::spawn(cp.tunnel(&creds, "test", handler).await.unwrap());
    wait_for("connected", Duration::from_secs(10), async || hub(&ts).open("cm").await.is_ok()).await;
    let r = ts.call(Method::POST, "/api/v1/agent-cas", Some(OWNER), Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "files are rolled over by editing them: {}", r.body);

    // Rollover step 1 as cert-manager does it: the new CA is added after the current one.
    let (next, _) = file_ca();
    tokio::time::sleep(Duration::from_millis(1100)).await; // a later modification time
    std::fs::write(&cert_path, format!("{cert}{next}")).unwrap();
    wait_for("both CAs listed", Duration::from_secs(5), async || {
        ts.get("/api/v1/agent-cas", Some(OWNER)).await.body["items"].as_array().is_some_and(|i| i.len() == 2)
    })
    .await;
    let state = &ts.server.as_ref().unwrap().state;
    assert_eq!(state.agents.ca.hash(), file_hash, "the first certificate still signs");
    assert!(hub(&ts).open("cm").await.is_ok(), "the open tunnel is not disturbed");
}
