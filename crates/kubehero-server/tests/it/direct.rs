//! Clusters that trust KubeHero directly: a real kube-apiserver v1.20.2 started with `--oidc-issuer-url` =
//! KubeHero (over HTTPS, the flags `GET /api/v1/clusters/{name}/direct` prints), real kubectl with
//! `kubehero token --direct` tokens straight to it.

use crate::kube::{tls_files, Kubectl};
use crate::support::*;
use kubehero_testkit::kubeapi::KubeApiServer;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// A control plane over HTTPS whose public URL (its issuer) is fixed before it starts.
pub(crate) async fn issuer_server(dir: &Path, extra: &[(&str, &str)]) -> (TestServer, Vec<u8>) {
    let (cert, key, ca) = tls_files(dir);
    let port = kubehero_testkit::oidc::free_port().unwrap();
    let (listen, public) = (format!("127.0.0.1:{port}"), format!("https://127.0.0.1:{port}"));
    let keys = api_keys_env();
    let mut env = vec![
        ("KUBEHERO_REQUIRE_AUTH", "true"),
        ("KUBEHERO_API_KEYS", &*keys),
        ("KUBEHERO_TLS_CERT", cert.to_str().unwrap()),
        ("KUBEHERO_TLS_KEY", key.to_str().unwrap()),
        ("KUBEHERO_LISTEN", &*listen),
        ("KUBEHERO_PUBLIC_URL", &*public),
    ];
    env.extend_from_slice(extra);
    (TestServer::start(&env, None).await, ca)
}

/// The kube-apiserver flags KubeHero prints for `cluster`, with its CA written into `dir`.
pub(crate) async fn oidc_flags(ts: &TestServer, cluster: &str, dir: &Path) -> Vec<String> {
    let r = ts.get(&format!("/api/v1/clusters/{cluster}/direct"), Some(ADMIN)).await;
    assert_eq!(r.status, reqwest::StatusCode::OK, "{}", r.body);
    let ca_file = dir.join("kubehero-ca.crt");
    std::fs::write(&ca_file, r.body["ca_pem"].as_str().unwrap()).unwrap();
    let printed = r.body["ca_file"].as_str().unwrap();
    r.body["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().replace(printed, ca_file.to_str().unwrap()))
        .collect()
}

/// A CLI login for `email` straight into the store (what `kubehero login` ends with).
pub(crate) async fn cli_login(ts: &TestServer, email: &str) -> String {
    let state = &ts.server.as_ref().unwrap().state;
    let (secret, rec) =
        kubehero_server::device::new_cli_token(email, Some(email.into()), vec![], None, crate::agents::now(), None)
            .unwrap();
    state.store.create_session(&rec).await.unwrap();
    secret
}

pub(crate) async fn bind(ts: &TestServer, email: &str, role: &str, cluster: &str, namespace: Option<&str>) {
    let body =
        json!({"subject": {"kind": "user", "name": email}, "role": role, "cluster": cluster, "namespace": namespace});
    let r = ts.call(reqwest::Method::POST, "/api/v1/role-bindings", Some(OWNER), Some(body)).await;
    assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.body);
}

/// A direct token (`kubehero token --direct`) for `cluster`.
pub(crate) async fn direct_token(ts: &TestServer, login: &str, cluster: &str) -> String {
    let r = ts
        .call(reqwest::Method::POST, &format!("/api/v1/clusters/{cluster}/token?direct=true"), Some(login), None)
        .await;
    assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.body);
    r.body["token"].as_str().unwrap().to_string()
}

/// kube-apiserver 1.20 first fetches the issuer's discovery document 10 s after it starts (and every 10 s
/// until that works): until then every OIDC token is refused ("authenticator not initialized").
pub(crate) async fn wait_for_oidc(kubectl: &Kubectl, kubeconfig: &Path) {
    let t0 = std::time::Instant::now();
    loop {
        let (ok, _, err) = kubectl.run(kubeconfig, &["auth", "can-i", "get", "namespaces"], None).await;
        if ok || !err.contains("Unauthorized") {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(40), "the API server never accepted KubeHero's issuer: {err}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn jwt_part(jwt: &str, i: usize) -> Value {
    use base64::Engine;
    let part = jwt.split('.').nth(i).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn an_api_server_started_with_kubehero_as_its_oidc_issuer_takes_direct_tokens_through_a_key_rotation() {
    let bin = kubehero_testkit::kubectl::kubectl().expect("kubectl 1.30: run scripts/test (it fetches it)");
    let dir = tempfile::tempdir().unwrap();
    let (ts, _) = issuer_server(dir.path(), &[("KUBEHERO_ISSUER_KEY_LEAD_SECS", "1")]).await;
    for c in ["lab", "other"] {
        let r = ts.call(reqwest::Method::POST, "/api/v1/clusters", Some(ADMIN), Some(json!({"name": c}))).await;
        assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.body);
    }
    // Discovery and the JWKS, as an API server reads them.
    let d = ts.get("/.well-known/openid-configuration", None).await;
    assert_eq!(d.body["issuer"], ts.url.as_str());
    let jwks = ts.get("/openid/v1/jwks", None).await;
    assert_eq!(jwks.body["keys"].as_array().unwrap().len(), 1);

    let k = KubeApiServer::start_with(&oidc_flags(&ts, "lab", dir.path()).await).await.unwrap();
    k.kubehero_rbac().await.unwrap();
    // Its agent keeps the kubehero:<role> ClusterRoles there (RBAC sync).
    let kc = dir.path().join("sa.kubeconfig");
    std::fs::write(&kc, k.service_account_kubeconfig("kubehero-system", "kubehero-agent").await.unwrap()).unwrap();
    let _agent = crate::kube::connect_agent_registered(&ts, "lab", &kc, &dir.path().join("agent")).await;
    let dana = cli_login(&ts, "dana@example.com").await;
    bind(&ts, "dana@example.com", "viewer", "lab", None).await;
    bind(&ts, "dana@example.com", "viewer", "other", None).await;

    let token = direct_token(&ts, &dana, "lab").await;
    let claims = jwt_part(&token, 1);
    assert_eq!(claims["aud"], "lab");
    assert_eq!(claims["username"], "dana@example.com");
    assert!(claims["groups"].as_array().unwrap().contains(&json!("kubehero:role:viewer")), "{claims}");
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 600);

    let kubectl = Kubectl { bin, home: dir.path().join("home") };
    let config = |name: &str, token: &str| {
        let p = dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&p, kubehero_testkit::kubectl::token_kubeconfig(&k.url, &k.ca_pem, token)).unwrap();
        p
    };
    let direct = config("direct", &token);
    wait_for_oidc(&kubectl, &direct).await;
    let (ok, out, err) = kubectl.run(&direct, &["auth", "can-i", "list", "configmaps", "-n", "default"], None).await;
    assert!(ok && out.trim() == "yes", "{out}{err}");
    let (_, out, _) = kubectl.run(&direct, &["auth", "can-i", "create", "configmaps", "-n", "default"], None).await;
    assert_eq!(out.trim(), "no");
    let (ok, _, err) = kubectl.run(&direct, &["get", "configmaps", "-n", "default"], None).await;
    assert!(ok, "{err}");
    // The API server sees KubeHero's identity.
    let (ok, _, err) = kubectl.run(&direct, &["delete", "configmap", "x", "-n", "default"], None).await;
    assert!(!ok && err.contains("User \"kubehero:dana@example.com\""), "{err}");

    // A token minted for another cluster's audience is refused by this one.
    let elsewhere = config("elsewhere", &direct_token(&ts, &dana, "other").await);
    let (ok, _, err) = kubectl.run(&elsewhere, &["get", "configmaps", "-n", "default"], None).await;
    assert!(!ok && err.contains("Unauthorized"), "{err}");

    // Rotation while the API server holds the old JWKS: the new key is published at once and signs a second
    // later; tokens of both keys keep working.
    let old_kid = jwt_part(&token, 0)["kid"].clone();
    let r = ts.call(reqwest::Method::POST, "/api/v1/issuer-keys/rotate", Some(OWNER), None).await;
    assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["state"], "staged");
    assert_eq!(ts.get("/openid/v1/jwks", None).await.body["keys"].as_array().unwrap().len(), 2);
    let mut fresh = direct_token(&ts, &dana, "lab").await;
    for _ in 0..50 {
        if jwt_part(&fresh, 0)["kid"] != old_kid {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        fresh = direct_token(&ts, &dana, "lab").await;
    }
    assert_ne!(jwt_part(&fresh, 0)["kid"], old_kid, "the new key signs after its lead time");
    for (name, t) in [("old", &token), ("new", &fresh)] {
        let (ok, _, err) = kubectl.run(&config(name, t), &["get", "configmaps", "-n", "default"], None).await;
        assert!(ok, "a token of the {name} key: {err}");
    }
    let keys = ts.get("/api/v1/issuer-keys", Some(OWNER)).await;
    let states: Vec<&str> =
        keys.body["items"].as_array().unwrap().iter().map(|k| k["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["published", "signing"]);
}

/// `kubectl auth can-i` checks of the matrix, each with the answer of viewer, member, auditor, admin, owner and
/// of a member of namespace `team-a` only ('Y'/'N'): the role taxonomy as the RBAC sync objects express it.
const MATRIX: &[(&[&str], &str)] = &[
    (&["get", "configmaps", "-n", "default"], "YYYYYN"),
    (&["list", "secrets", "-n", "default"], "NNNYYN"),
    (&["create", "deployments.apps", "-n", "default"], "NYNYYN"),
    (&["delete", "pods", "-n", "default"], "NYNYYN"),
    (&["create", "pods/exec", "-n", "default"], "NYNYYN"),
    (&["create", "rolebindings.rbac.authorization.k8s.io", "-n", "default"], "NNNYYN"),
    (&["create", "clusterrolebindings.rbac.authorization.k8s.io"], "NNNNYN"),
    (&["list", "clusterroles.rbac.authorization.k8s.io"], "NNYYYN"),
    (&["list", "events", "-n", "default"], "NNYYYN"),
    (&["list", "nodes"], "YYYYYN"),
    (&["create", "namespaces"], "NNNYYN"),
    (&["create", "configmaps", "-n", "team-a"], "NYNYYY"),
    (&["get", "secrets", "-n", "team-a"], "NNNYYN"),
];
const PEOPLE: [(&str, &str, Option<&str>); 6] = [
    ("viewer@example.com", "viewer", None),
    ("member@example.com", "member", None),
    ("auditor@example.com", "auditor", None),
    ("admin@example.com", "admin", None),
    ("owner@example.com", "owner", None),
    ("team-a@example.com", "member", Some("team-a")),
];

/// Runs the whole matrix through one door (`configs[i]`: person i's kubeconfig), a person's checks in parallel.
async fn answers(door: &'static str, kubectl: &Kubectl, configs: &[std::path::PathBuf]) -> Vec<String> {
    let mut rows = vec![String::new(); MATRIX.len()];
    for config in configs {
        let mut runs = tokio::task::JoinSet::new();
        for (i, (check, _)) in MATRIX.iter().enumerate() {
            let (kubectl, config) = (kubectl.clone(), config.clone());
            runs.spawn(async move {
                let mut args = vec!["auth", "can-i"];
                args.extend_from_slice(check);
                let (_, out, err) = kubectl.run(&config, &args, None).await;
                let answer = match out.trim() {
                    "yes" => 'Y',
                    "no" => 'N',
                    _ => panic!("{door}: kubectl --kubeconfig {} auth can-i {check:?}: {out}{err}", config.display()),
                };
                (i, answer)
            });
        }
        let mut got = vec!['?'; MATRIX.len()];
        while let Some(r) = runs.join_next().await {
            let (i, a) = r.unwrap();
            got[i] = a;
        }
        for (row, a) in rows.iter_mut().zip(got) {
            row.push(a);
        }
    }
    rows
}

/// The same people ask the same questions of three real kube-apiservers v1.20.2: one reached only through
/// KubeHero's proxy, one that trusts KubeHero's OIDC issuer, one that asks KubeHero's TokenReview webhook. Each
/// runs an agent with RBAC sync. The answers match the role taxonomy, and so each other.
#[tokio::test]
async fn the_proxy_the_issuer_and_the_webhook_give_each_role_the_same_rights() {
    let bin = kubehero_testkit::kubectl::kubectl().expect("kubectl 1.30: run scripts/test (it fetches it)");
    let dir = tempfile::tempdir().unwrap();
    let (ts, ca) = issuer_server(dir.path(), &[]).await;
    for c in ["lab-proxy", "lab-oidc", "lab-hook"] {
        let r = ts.call(reqwest::Method::POST, "/api/v1/clusters", Some(ADMIN), Some(json!({"name": c}))).await;
        assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.body);
    }
    let hook = ts.call(reqwest::Method::POST, "/api/v1/clusters/lab-hook/webhook", Some(ADMIN), None).await;
    assert_eq!(hook.status, reqwest::StatusCode::CREATED, "{}", hook.body);
    let hook_file = dir.path().join("webhook.kubeconfig");
    std::fs::write(&hook_file, hook.body["kubeconfig"].as_str().unwrap()).unwrap();
    let hook_flags: Vec<String> = hook.body["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            f.as_str()
                .unwrap()
                .replace(hook.body["kubeconfig_file"].as_str().unwrap(), hook_file.to_str().unwrap())
                .replace("<its --service-account-issuer>", "https://kubernetes.default.svc")
        })
        .collect();
    let oidc = oidc_flags(&ts, "lab-oidc", dir.path()).await;
    let mut servers = Vec::new();
    for (name, flags) in [("lab-proxy", vec![]), ("lab-oidc", oidc), ("lab-hook", hook_flags)] {
        let k = KubeApiServer::start_with(&flags).await.unwrap();
        k.kubehero_rbac().await.unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&k.ca_pem).unwrap())
            .build()
            .unwrap();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}});
        let r = http
            .post(format!("{}/api/v1/namespaces", k.url))
            .bearer_auth(kubehero_testkit::kubeapi::ADMIN_TOKEN)
            .json(&ns)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let kc = dir.path().join(format!("{name}.sa.kubeconfig"));
        std::fs::write(&kc, k.service_account_kubeconfig("kubehero-system", "kubehero-agent").await.unwrap()).unwrap();
        let stop =
            crate::kube::connect_agent_registered(&ts, name, &kc, &dir.path().join(format!("{name}.agent"))).await;
        servers.push((name, k, stop));
    }
    let mut logins = Vec::new();
    for (email, role, ns) in PEOPLE {
        bind(&ts, email, role, "lab-*", ns).await;
        logins.push(cli_login(&ts, email).await);
    }
    for (name, _, _) in &servers {
        let r = crate::kube::rbac_applied(&ts, name).await;
        assert!(r.conflicts.is_empty(), "{r:?}");
    }

    let kubectl = Kubectl { bin, home: dir.path().join("home") };
    let write = |door: &str, i: usize, server: &str, ca: &[u8], token: &str| {
        let p = dir.path().join(format!("{door}-{i}.kubeconfig"));
        std::fs::write(&p, kubehero_testkit::kubectl::token_kubeconfig(server, ca, token)).unwrap();
        p
    };
    // Through the proxy: the CLI login itself (any KubeHero credential works there).
    let proxy_url = format!("{}/k8s/clusters/lab-proxy", ts.url);
    let proxy: Vec<_> = logins.iter().enumerate().map(|(i, l)| write("proxy", i, &proxy_url, &ca, l)).collect();
    // Straight to the API server that trusts the issuer: direct tokens.
    let k_oidc = &servers[1].1;
    let mut issuer = Vec::new();
    for (i, l) in logins.iter().enumerate() {
        issuer.push(write("oidc", i, &k_oidc.url, &k_oidc.ca_pem, &direct_token(&ts, l, "lab-oidc").await));
    }
    wait_for_oidc(&kubectl, &issuer[0]).await;
    // Straight to the API server that asks the webhook: per-cluster tokens, and a direct token for one person.
    let k_hook = &servers[2].1;
    let mut webhook = Vec::new();
    for (i, l) in logins.iter().enumerate() {
        let token = if i == 0 {
            direct_token(&ts, l, "lab-hook").await
        } else {
            let r = ts.call(reqwest::Method::POST, "/api/v1/clusters/lab-hook/token", Some(l), None).await;
            r.body["token"].as_str().unwrap().to_string()
        };
        webhook.push(write("hook", i, &k_hook.url, &k_hook.ca_pem, &token));
    }

    let expected: Vec<String> = MATRIX.iter().map(|(_, a)| a.to_string()).collect();
    for (door, configs) in [("proxy", &proxy), ("issuer", &issuer), ("webhook", &webhook)] {
        let got = answers(door, &kubectl, configs).await;
        for (i, (check, _)) in MATRIX.iter().enumerate() {
            assert_eq!(got[i], expected[i], "{door}: auth can-i {check:?} (viewer member auditor admin owner team-a)");
        }
    }
    assert!(MATRIX.len() * PEOPLE.len() >= 40);
    // Every review the webhook answered is in the audit log.
    let rows = ts.get("/api/v1/audit?action=k8s.tokenreview&limit=500", Some(OWNER)).await;
    assert!(!rows.body["items"].as_array().unwrap().is_empty(), "{}", rows.body);
}
