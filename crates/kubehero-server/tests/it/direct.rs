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
