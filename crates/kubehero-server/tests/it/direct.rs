//! Clusters that trust KubeHero directly: real kube-apiservers v1.20.2 started with `--oidc-issuer-url` =
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
    // An operator-made RSA key for RS256 tokens (ring cannot make RSA keys).
    let rsa = dir.path().join("issuer-rsa.pem");
    let made = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&rsa)
        .output()
        .unwrap();
    assert!(made.status.success());
    let env = [("KUBEHERO_ISSUER_KEY_LEAD_SECS", "1"), ("KUBEHERO_ISSUER_RSA_KEYS", rsa.to_str().unwrap())];
    let (ts, _) = issuer_server(dir.path(), &env).await;
    for c in ["lab", "other"] {
        let r = ts.call(reqwest::Method::POST, "/api/v1/clusters", Some(ADMIN), Some(json!({"name": c}))).await;
        assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.body);
    }
    // A cluster whose tokens are RS256, with the same audience as `lab` (so the same API server takes them).
    let rs = json!({"name": "lab-rsa", "labels": {"kubehero.io/audience": "lab", "kubehero.io/signing-alg": "RS256"}});
    let r = ts.call(reqwest::Method::POST, "/api/v1/clusters", Some(ADMIN), Some(rs)).await;
    assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.body);
    // Discovery and the JWKS, as an API server reads them.
    let d = ts.get("/.well-known/openid-configuration", None).await;
    assert_eq!(d.body["issuer"], ts.url.as_str());
    let jwks = ts.get("/openid/v1/jwks", None).await;
    assert_eq!(jwks.body["keys"].as_array().unwrap().len(), 2, "the first ES256 key and the RSA key");

    let flags: Vec<String> = oidc_flags(&ts, "lab", dir.path())
        .await
        .into_iter()
        .map(|f| if f == "--oidc-signing-algs=ES256" { "--oidc-signing-algs=ES256,RS256".into() } else { f })
        .collect();
    let k = KubeApiServer::start_with(&flags).await.unwrap();
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

    // RS256, for API servers that take nothing else.
    bind(&ts, "dana@example.com", "viewer", "lab-rsa", None).await;
    let rs256 = direct_token(&ts, &dana, "lab-rsa").await;
    assert_eq!(jwt_part(&rs256, 0)["alg"], "RS256");
    assert_eq!(ts.get("/openid/v1/jwks", None).await.body["keys"].as_array().unwrap().len(), 2, "ES256 and RS256");
    let (ok, _, err) = kubectl.run(&config("rs256", &rs256), &["get", "configmaps", "-n", "default"], None).await;
    assert!(ok, "an RS256 token: {err}");

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
    assert_eq!(ts.get("/openid/v1/jwks", None).await.body["keys"].as_array().unwrap().len(), 3);
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
        k.create_namespace("team-a").await.unwrap();
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

/// The webhook as an API server calls it, with the webhook kubeconfig's certificate: every bad input gets the
/// right answer (a bad token is `authenticated: false`, never an HTTP error) and an audit row.
#[tokio::test]
async fn the_webhook_answers_bad_tokens_and_bad_callers_rightly_and_audits_each() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let (ts, _) = issuer_server(dir.path(), &[("KUBEHERO_SCIM_TOKEN", "scim-token-for-the-webhook-test-0123")]).await;
    for c in ["lab", "other"] {
        let r = ts.call(reqwest::Method::POST, "/api/v1/clusters", Some(ADMIN), Some(json!({"name": c}))).await;
        assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.body);
    }
    let hook = ts.call(reqwest::Method::POST, "/api/v1/clusters/lab/webhook", Some(ADMIN), None).await;
    let kc: Value = serde_yaml_ng::from_str(hook.body["kubeconfig"].as_str().unwrap()).unwrap();
    let b64 = |v: &Value| base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
    let user = &kc["users"][0]["user"];
    let mut identity = b64(&user["client-certificate-data"]);
    identity.extend(b64(&user["client-key-data"]));
    let url = kc["clusters"][0]["cluster"]["server"].as_str().unwrap().to_string();
    let ca = reqwest::Certificate::from_pem(&b64(&kc["clusters"][0]["cluster"]["certificate-authority-data"])).unwrap();
    let client = |with_cert: bool| {
        let mut b = reqwest::Client::builder().add_root_certificate(ca.clone()).tls_built_in_root_certs(false);
        if with_cert {
            b = b.identity(reqwest::Identity::from_pem(&identity).unwrap());
        }
        b.build().unwrap()
    };
    let apiserver = client(true);
    let review = async |token: &str, audiences: Option<Vec<&str>>| -> Value {
        let mut body =
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
        if let Some(a) = audiences {
            body["spec"]["audiences"] = json!(a);
        }
        let r = apiserver.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "a review is answered, whatever the token");
        r.json().await.unwrap()
    };

    let email = "dana@example.com";
    bind(&ts, email, "viewer", "lab", None).await;
    bind(&ts, email, "viewer", "other", None).await;
    let login = cli_login(&ts, email).await;
    let direct = direct_token(&ts, &login, "lab").await;
    let ok = review(&direct, None).await;
    assert_eq!(ok["status"]["authenticated"], true, "{ok}");
    assert_eq!(ok["status"]["user"]["username"], "kubehero:dana@example.com");
    assert!(ok["status"]["user"]["groups"].as_array().unwrap().contains(&json!("kubehero:role:viewer")));
    // v1beta1 is answered in v1beta1; the audiences asked for are honoured.
    let mut beta =
        json!({"apiVersion": "authentication.k8s.io/v1beta1", "kind": "TokenReview", "spec": {"token": direct}});
    let r: Value = apiserver.post(&url).json(&beta).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (r["apiVersion"].as_str(), r["status"]["authenticated"].as_bool()),
        (Some("authentication.k8s.io/v1beta1"), Some(true))
    );
    let aud = review(&direct, Some(vec!["https://kubernetes.default.svc", "lab"])).await;
    assert_eq!(aud["status"]["audiences"], json!(["lab"]));
    let vault = review(&direct, Some(vec!["vault"])).await;
    assert_eq!(vault["status"]["authenticated"], false, "a review for another audience: {vault}");

    // Tokens of another cluster, garbage, an expired per-cluster token.
    let for_other = direct_token(&ts, &login, "other").await;
    let r = review(&for_other, None).await;
    assert_eq!(r["status"]["authenticated"], false);
    assert!(r["status"]["error"].as_str().unwrap().contains("audience"), "{r}");
    let khx_other = ts.call(reqwest::Method::POST, "/api/v1/clusters/other/token", Some(&login), None).await;
    let r = review(khx_other.body["token"].as_str().unwrap(), None).await;
    assert!(r["status"]["error"].as_str().unwrap().contains("another cluster"), "{r}");
    for junk in ["", "x", "a.b.c", "khx_", &"A".repeat(5000)] {
        assert_eq!(review(junk, None).await["status"]["authenticated"], false, "{junk:.20}");
    }
    let mut parts: Vec<String> = direct.split('.').map(str::to_string).collect();
    let mut claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    claims["exp"] = json!(1);
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    let r = review(&parts.join("."), None).await;
    assert!(r["status"]["error"].as_str().unwrap().contains("signature"), "a changed token: {r}");

    // The person is deprovisioned (SCIM active=false): her token is refused at the next review.
    let scim = |method: reqwest::Method, path: String, body: Value| {
        ts.http
            .request(method, format!("{}/scim/v2{path}", ts.url))
            .bearer_auth("scim-token-for-the-webhook-test-0123")
            .header("content-type", "application/scim+json")
            .json(&body)
            .send()
    };
    let user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": email,
        "emails": [{"primary": true, "value": email}], "active": true});
    let created: Value = scim(reqwest::Method::POST, "/Users".into(), user).await.unwrap().json().await.unwrap();
    let fresh_login = cli_login(&ts, email).await;
    let fresh = direct_token(&ts, &fresh_login, "lab").await;
    assert_eq!(review(&fresh, None).await["status"]["authenticated"], true);
    let off = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"active": false}}]});
    let r = scim(reqwest::Method::PATCH, format!("/Users/{}", created["id"].as_str().unwrap()), off).await.unwrap();
    assert!(r.status().is_success());
    assert_eq!(review(&fresh, None).await["status"]["authenticated"], false, "deprovisioned");

    // A malformed review is a 400; a caller without a certificate a 401.
    beta["kind"] = json!("SubjectAccessReview");
    assert_eq!(apiserver.post(&url).json(&beta).send().await.unwrap().status(), 400);
    assert_eq!(apiserver.post(&url).body("{not json").send().await.unwrap().status(), 400);
    let r = client(false).post(&url).json(&json!({"kind": "TokenReview"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // The webhook's certificate cannot hold a tunnel.
    let tunnel = url.replace("/api/v1/tokenreview", "/agent/v1/tunnel");
    assert_eq!(apiserver.get(&tunnel).send().await.unwrap().status(), 401);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = ts.get("/api/v1/audit?action=k8s.tokenreview&limit=500", Some(OWNER)).await;
    let items = rows.body["items"].as_array().unwrap();
    let denied = items.iter().filter(|i| i["result"]["outcome"] == "denied").count();
    let allowed = items.iter().filter(|i| i["result"]["outcome"] == "ok").count();
    assert!(allowed >= 4 && denied >= 12, "{allowed} ok, {denied} denied: {}", rows.body);
    assert!(items.iter().any(|i| i["actor"]["email"] == email), "a review names the person it found");
}

/// RBAC sync against a real API server: a KubeHero binding reaches the cluster within 5 s; a deleted managed
/// ClusterRole and an edited managed RoleBinding are put back within 30 s; an unmanaged object with a similar
/// name is never touched.
#[tokio::test]
async fn rbac_sync_applies_changes_and_puts_back_drift_but_leaves_other_objects_alone() {
    let k = KubeApiServer::start().await.unwrap();
    k.kubehero_rbac().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ts =
        TestServer::start(&[("KUBEHERO_REQUIRE_AUTH", "true"), ("KUBEHERO_API_KEYS", &*api_keys_env())], None).await;
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&k.ca_pem).unwrap())
        .build()
        .unwrap();
    let admin = kubehero_testkit::kubeapi::ADMIN_TOKEN;
    let rbac = format!("{}/apis/rbac.authorization.k8s.io/v1", k.url);
    let get = async |path: &str| -> (u16, Value) {
        let r = http.get(format!("{rbac}{path}")).bearer_auth(admin).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or_default())
    };
    k.create_namespace("team-a").await.unwrap();
    // Someone's own ClusterRole with a name like KubeHero's, without the label.
    let theirs = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "kubehero:viewer-extra"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
    let r = http.post(format!("{rbac}/clusterroles")).bearer_auth(admin).json(&theirs).send().await.unwrap();
    assert!(r.status().is_success());

    let kc = dir.path().join("sa.kubeconfig");
    std::fs::write(&kc, k.service_account_kubeconfig("kubehero-system", "kubehero-agent").await.unwrap()).unwrap();
    let _agent = crate::kube::connect_agent(&ts, "lab", &kc, &dir.path().join("agent")).await;
    assert_eq!(get("/clusterroles/kubehero:viewer").await.0, 200);

    // A KubeHero change: a namespace-scoped binding becomes a RoleBinding in that namespace within 5 s.
    let t0 = std::time::Instant::now();
    bind(&ts, "dana@example.com", "member", "lab", Some("team-a")).await;
    let path = "/namespaces/team-a/rolebindings/kubehero:role:member";
    while get(path).await.0 != 200 {
        assert!(t0.elapsed() < Duration::from_secs(5), "the RoleBinding did not appear within 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, rb) = get(path).await;
    assert_eq!(rb["subjects"][0]["name"], "kubehero:role:member:ns:team-a");
    assert_eq!(rb["metadata"]["labels"]["app.kubernetes.io/managed-by"], "kubehero");

    // Drift: the viewer ClusterRole deleted, the RoleBinding's subject changed.
    let r = http.delete(format!("{rbac}/clusterroles/kubehero:viewer")).bearer_auth(admin).send().await.unwrap();
    assert!(r.status().is_success());
    let mut edited = rb.clone();
    edited["subjects"] = json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "someone-else"}]);
    let r = http.put(format!("{rbac}{path}")).bearer_auth(admin).json(&edited).send().await.unwrap();
    assert!(r.status().is_success());
    let t0 = std::time::Instant::now();
    loop {
        let viewer = get("/clusterroles/kubehero:viewer").await.0 == 200;
        let subject = get(path).await.1["subjects"][0]["name"].clone();
        if viewer && subject == "kubehero:role:member:ns:team-a" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "drift not put back within 30 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Theirs is as it was.
    let (status, still) = get("/clusterroles/kubehero:viewer-extra").await;
    assert_eq!(status, 200);
    assert_eq!(still["rules"], theirs["rules"]);
    assert!(still["metadata"]["labels"].is_null());

    // The binding removed: its RoleBinding goes.
    let list = ts.get("/api/v1/role-bindings", Some(OWNER)).await;
    let id = list.body["items"].as_array().unwrap().iter().find(|b| b["namespace"] == "team-a").unwrap()["id"].clone();
    let r = ts
        .call(reqwest::Method::DELETE, &format!("/api/v1/role-bindings/{}", id.as_str().unwrap()), Some(OWNER), None)
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let t0 = std::time::Instant::now();
    while get(path).await.0 != 404 {
        assert!(t0.elapsed() < Duration::from_secs(5), "the RoleBinding was not deleted within 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A real API server with namespace `team-a`, registered as `lab` with its agent connected and RBAC synced.
pub(crate) async fn lab_with_agent(ts: &TestServer, dir: &Path) -> (KubeApiServer, tokio::sync::watch::Sender<bool>) {
    let k = KubeApiServer::start().await.unwrap();
    k.kubehero_rbac().await.unwrap();
    k.create_namespace("team-a").await.unwrap();
    let kc = dir.join("sa.kubeconfig");
    std::fs::write(&kc, k.service_account_kubeconfig("kubehero-system", "kubehero-agent").await.unwrap()).unwrap();
    let agent = crate::kube::connect_agent(ts, "lab", &kc, &dir.join("agent")).await;
    (k, agent)
}

/// Whether RBAC sync's RoleBinding of `member` in `team-a` is in the cluster.
pub(crate) async fn member_rolebinding_in_team_a(k: &KubeApiServer) -> bool {
    let path = "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/rolebindings/kubehero:role:member";
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&k.ca_pem).unwrap())
        .build()
        .unwrap();
    let r = http.get(format!("{}{path}", k.url)).bearer_auth(kubehero_testkit::kubeapi::ADMIN_TOKEN).send().await;
    r.unwrap().status() == 200
}

/// A time-bound binding (what elevation and share links are made of): it grants through the proxy, through
/// RBAC sync and in direct tokens until its moment, then nothing: the open watch it allowed is cut, the
/// RoleBinding it implied is deleted, a direct token minted under it does not outlive it; the sweep deletes the
/// row with an audit row.
#[tokio::test]
async fn a_time_bound_binding_ends_everywhere_at_its_moment() {
    let bin = kubehero_testkit::kubectl::kubectl().expect("kubectl 1.30: run scripts/test (it fetches it)");
    let dir = tempfile::tempdir().unwrap();
    let (ts, ca) = issuer_server(dir.path(), &[]).await;
    let (k, _agent) = lab_with_agent(&ts, dir.path()).await;
    let state = &ts.server.as_ref().unwrap().state;

    let until = crate::agents::now() + 6;
    for (role, namespace) in [("viewer", None), ("member", Some("team-a"))] {
        let body = json!({"subject": {"kind": "user", "name": "dana@example.com"}, "role": role, "cluster": "lab",
            "namespace": namespace, "expires_at": until});
        let r = ts.call(reqwest::Method::POST, "/api/v1/role-bindings", Some(OWNER), Some(body)).await;
        assert_eq!(r.status, reqwest::StatusCode::CREATED, "{}", r.body);
        assert_eq!(r.body["expires_at"], until);
    }
    let past = json!({"subject": {"kind": "user", "name": "x@example.com"}, "role": "viewer", "expires_at": 1});
    assert_eq!(ts.call(reqwest::Method::POST, "/api/v1/role-bindings", Some(OWNER), Some(past)).await.status, 400);
    let login = cli_login(&ts, "dana@example.com").await;
    let direct = direct_token(&ts, &login, "lab").await;
    assert!(jwt_part(&direct, 1)["exp"].as_i64().unwrap() <= until, "a direct token does not outlive the binding");
    crate::kube::rbac_applied(&ts, "lab").await;
    let exists = async || member_rolebinding_in_team_a(&k).await;
    assert!(exists().await, "RBAC sync made the RoleBinding of the namespace-scoped grant");

    let kubectl = Kubectl { bin, home: dir.path().join("home") };
    let config = dir.path().join("dana.kubeconfig");
    let server = format!("{}/k8s/clusters/lab", ts.url);
    std::fs::write(&config, kubehero_testkit::kubectl::token_kubeconfig(&server, &ca, &login)).unwrap();
    let (ok, _, err) = kubectl.run(&config, &["create", "configmap", "during", "-n", "team-a"], None).await;
    assert!(ok, "{err}");
    let mut watch = crate::kube::open_watch(&kubectl, &config, &state.kube_streams).await;

    // The moment passes: the watch is cut, requests are refused, the RoleBinding goes.
    let left = until - crate::agents::now();
    let took = crate::kube::exits_within(&mut watch, Duration::from_secs(u64::try_from(left).unwrap_or(0) + 4)).await;
    assert!(crate::agents::now() >= until, "cut only at the binding's end (after {took:?})");
    let (ok, _, err) = kubectl.run(&config, &["get", "configmaps", "-n", "team-a"], None).await;
    assert!(!ok && err.contains("no KubeHero role"), "{err}");
    let t0 = std::time::Instant::now();
    while exists().await {
        assert!(t0.elapsed() < Duration::from_secs(5), "the RoleBinding outlived its binding");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The sweep deletes the rows, each with an audit row.
    assert_eq!(state.identity.expire_bindings().await.unwrap(), 2);
    let listed = ts.get("/api/v1/role-bindings", Some(OWNER)).await;
    assert!(listed.body["items"].as_array().unwrap().iter().all(|b| b["expires_at"].is_null()), "{}", listed.body);
    let rows = ts.get("/api/v1/audit?action=role_binding.expire", Some(OWNER)).await;
    assert_eq!(rows.body["items"].as_array().unwrap().len(), 2, "{}", rows.body);
}

/// Time-bound elevation with real kubectl through the proxy and RBAC sync: a request, self-approval refused,
/// approval by an admin, kubectl gains the role, expiry takes it away from the proxy and the synced RBAC;
/// approving twice, or twice at once, grants once.
#[tokio::test]
async fn elevation_is_approved_by_another_admin_and_ends_on_its_own() {
    let bin = kubehero_testkit::kubectl::kubectl().expect("kubectl 1.30: run scripts/test (it fetches it)");
    let dir = tempfile::tempdir().unwrap();
    let (ts, ca) = issuer_server(dir.path(), &[]).await;
    let (k, _agent) = lab_with_agent(&ts, dir.path()).await;
    bind(&ts, "dana@example.com", "viewer", "lab", None).await;
    bind(&ts, "erin@example.com", "admin", "lab", None).await;
    let (dana, erin) = (cli_login(&ts, "dana@example.com").await, cli_login(&ts, "erin@example.com").await);
    let call = async |method: reqwest::Method, path: &str, who: &str, body: Option<Value>| {
        ts.call(method, path, Some(who), body).await
    };
    let ask =
        json!({"cluster": "lab", "namespace": "team-a", "role": "member", "duration_secs": 8, "reason": "INC-1234"});

    // Bad input first: too long, no reason, an unknown cluster.
    for bad in [
        json!({"cluster": "lab", "role": "member", "duration_secs": 90_000, "reason": "x"}),
        json!({"cluster": "lab", "role": "member", "duration_secs": 60, "reason": " "}),
    ] {
        assert_eq!(call(reqwest::Method::POST, "/api/v1/access-requests", &dana, Some(bad)).await.status, 400);
    }
    let nowhere = json!({"cluster": "nowhere", "role": "member", "duration_secs": 60, "reason": "x"});
    assert_eq!(call(reqwest::Method::POST, "/api/v1/access-requests", &dana, Some(nowhere)).await.status, 404);

    // An admin's own request cannot be approved by that admin.
    let own = call(
        reqwest::Method::POST,
        "/api/v1/access-requests",
        &erin,
        Some(json!({"cluster": "lab", "role": "admin", "duration_secs": 60, "reason": "x"})),
    )
    .await;
    let own_id = own.body["id"].as_str().unwrap().to_string();
    let r =
        call(reqwest::Method::POST, &format!("/api/v1/access-requests/{own_id}/approve"), &erin, Some(json!({}))).await;
    assert_eq!(r.status, 403, "{}", r.body);

    let kubectl = Kubectl { bin, home: dir.path().join("home") };
    let config = dir.path().join("dana.kubeconfig");
    let server = format!("{}/k8s/clusters/lab", ts.url);
    std::fs::write(&config, kubehero_testkit::kubectl::token_kubeconfig(&server, &ca, &dana)).unwrap();
    let create = async |name: &str| kubectl.run(&config, &["create", "configmap", name, "-n", "team-a"], None).await;
    let (ok, _, err) = create("before").await;
    assert!(!ok && err.contains("forbidden"), "a viewer cannot yet: {err}");

    let r = call(reqwest::Method::POST, "/api/v1/access-requests", &dana, Some(ask.clone())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let listed = call(reqwest::Method::GET, "/api/v1/access-requests", &erin, None).await;
    let mine = listed.body["items"].as_array().unwrap().iter().find(|i| i["id"] == id.as_str()).unwrap().clone();
    assert_eq!(mine["can_decide"], true, "{mine}");
    let r = call(reqwest::Method::POST, &format!("/api/v1/access-requests/{id}/approve"), &dana, Some(json!({}))).await;
    assert_eq!(r.status, 403, "the requester (a viewer) cannot approve: {}", r.body);
    let r = call(
        reqwest::Method::POST,
        &format!("/api/v1/access-requests/{id}/approve"),
        &erin,
        Some(json!({"comment": "ok for INC-1234"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let until = r.body["expires_at"].as_i64().unwrap();
    let again =
        call(reqwest::Method::POST, &format!("/api/v1/access-requests/{id}/approve"), &erin, Some(json!({}))).await;
    assert_eq!(again.status, 409, "decided once: {}", again.body);

    // The role works through the proxy, and RBAC sync binds it in the namespace.
    let (ok, _, err) = create("during").await;
    assert!(ok, "{err}");
    let synced = async || member_rolebinding_in_team_a(&k).await;
    let t0 = std::time::Instant::now();
    while !synced().await {
        assert!(t0.elapsed() < Duration::from_secs(5), "RBAC sync did not bind the elevation");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // It ends on its own: refused through the proxy, unbound in the cluster.
    while crate::agents::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, _, err) = create("after").await;
    assert!(!ok && err.contains("forbidden"), "{err}");
    let t0 = std::time::Instant::now();
    while synced().await {
        assert!(t0.elapsed() < Duration::from_secs(5), "the elevation's RoleBinding outlived it");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Two approvals at once: one wins, one is told it was decided.
    let r = call(reqwest::Method::POST, "/api/v1/access-requests", &dana, Some(ask)).await;
    let id = r.body["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/access-requests/{id}/approve");
    let (a, b) = tokio::join!(
        call(reqwest::Method::POST, &path, &erin, Some(json!({}))),
        call(reqwest::Method::POST, &path, OWNER, Some(json!({})))
    );
    let mut codes = [a.status.as_u16(), b.status.as_u16()];
    codes.sort();
    assert_eq!(codes, [200, 409], "{} {}", a.body, b.body);
    let bindings = ts.get("/api/v1/role-bindings", Some(OWNER)).await;
    let elevated = bindings.body["items"].as_array().unwrap().iter().filter(|b| b["expires_at"].is_i64()).count();
    assert_eq!(elevated, 1, "granted once");
    let rows = ts.get("/api/v1/audit?action=access.approve", Some(OWNER)).await;
    assert_eq!(rows.body["items"].as_array().unwrap().len(), 2, "{}", rows.body);
}

/// An owner's access policy for clusters `la*`: at most an hour, only erin and gina approve, and two of them
/// must; the first approval grants nothing, the same person cannot give both, and two at once grant once.
#[tokio::test]
async fn an_access_policy_limits_duration_names_approvers_and_wants_two() {
    let dir = tempfile::tempdir().unwrap();
    let (ts, _) = issuer_server(dir.path(), &[]).await;
    let r = ts.call(reqwest::Method::POST, "/api/v1/clusters", Some(ADMIN), Some(json!({"name": "lab"}))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    for who in ["erin", "frank", "gina"] {
        bind(&ts, &format!("{who}@example.com"), "admin", "lab", None).await;
    }
    let [dana, erin, frank, gina] = [
        cli_login(&ts, "dana@example.com").await,
        cli_login(&ts, "erin@example.com").await,
        cli_login(&ts, "frank@example.com").await,
        cli_login(&ts, "gina@example.com").await,
    ];
    let put = async |doc: Value| ts.call(reqwest::Method::PUT, "/api/v1/settings/access", Some(OWNER), Some(doc)).await;
    for bad in [
        json!({"policies": [{"clusters": "lab", "approvals": 3}]}),
        json!({"policies": [{"clusters": "lab", "max_duration_secs": 0}]}),
        json!({"policies": [{"clusters": "lab", "surprise": true}]}),
        json!({"rules": []}),
    ] {
        let r = put(bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    let policy = json!({"policies": [{"clusters": "la*", "max_duration_secs": 3600,
        "approvers": ["erin@example.com", "gina@example.com"], "approvals": 2}]});
    assert_eq!(put(policy).await.status, 200);
    let ask = async |secs: i64, role: &str| {
        let body = json!({"cluster": "lab", "role": role, "duration_secs": secs, "reason": "INC-77"});
        ts.call(reqwest::Method::POST, "/api/v1/access-requests", Some(&dana), Some(body)).await
    };
    let r = ask(7200, "member").await;
    assert!(r.status == 400 && r.body["message"].as_str().unwrap().contains("at most 3600"), "{}", r.body);
    let id = ask(600, "member").await.body["id"].as_str().unwrap().to_string();
    let approve = async |who: &str, id: &str| {
        let path = format!("/api/v1/access-requests/{id}/approve");
        ts.call(reqwest::Method::POST, &path, Some(who), Some(json!({}))).await
    };
    // What each decider is offered: (can_decide, can_approve).
    let offered = async |who: &str, id: &str| {
        let got = ts.get("/api/v1/access-requests", Some(who)).await;
        let r = got.body["items"].as_array().unwrap().iter().find(|r| r["id"] == id).unwrap().clone();
        (r["can_decide"].as_bool().unwrap(), r["can_approve"].as_bool().unwrap())
    };
    assert_eq!(offered(&frank, &id).await, (true, false), "frank may deny, not approve");
    assert_eq!(offered(&erin, &id).await, (true, true));
    let r = approve(&frank, &id).await;
    assert_eq!(r.status, 403, "frank is an admin the policy does not name: {}", r.body);
    let r = approve(&erin, &id).await;
    assert_eq!((r.status.as_u16(), r.body["state"].as_str()), (200, Some("pending")), "{}", r.body);
    assert_eq!(r.body["first_approver"], "erin@example.com");
    assert_eq!(offered(&erin, &id).await, (true, false), "erin gave the first approval");
    assert_eq!(offered(&gina, &id).await, (true, true));
    let r = approve(&erin, &id).await;
    assert_eq!(r.status, 409, "not twice by one person: {}", r.body);
    let r = approve(&gina, &id).await;
    assert_eq!((r.status.as_u16(), r.body["state"].as_str()), (200, Some("approved")), "{}", r.body);
    let holds = async |id: &str| {
        let got = ts.get("/api/v1/access-requests", Some(&dana)).await;
        let r = got.body["items"].as_array().unwrap().iter().find(|r| r["id"] == id).unwrap().clone();
        r
    };
    assert!(holds(&id).await["binding_id"].is_string());

    // A second grant of a role dana holds until then is refused with why.
    let id = ask(600, "member").await.body["id"].as_str().unwrap().to_string();
    approve(&erin, &id).await;
    let r = approve(&gina, &id).await;
    assert!(r.status == 409 && r.body["message"].as_str().unwrap().contains("already holds member"), "{}", r.body);

    // Two approvers at once: whoever is first is the first approval, the other grants; one binding.
    let id = ask(600, "viewer").await.body["id"].as_str().unwrap().to_string();
    let (a, b) = tokio::join!(approve(&erin, &id), approve(&gina, &id));
    assert!(a.status == 200 && b.status == 200, "{} {}", a.body, b.body);
    assert_eq!(holds(&id).await["state"], "approved");
    let bindings = ts.get("/api/v1/role-bindings", Some(OWNER)).await;
    let timed = bindings.body["items"].as_array().unwrap().iter().filter(|b| b["expires_at"].is_i64()).count();
    assert_eq!(timed, 2, "one binding per approved request: {}", bindings.body);
}
