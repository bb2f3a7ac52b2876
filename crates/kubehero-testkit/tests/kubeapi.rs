//! The kube-apiserver fixture against itself: it starts, reports v1.20.2, authenticates the admin token,
//! authorizes with RBAC, and lets the admin impersonate (what the kube proxy of the next issues relies on).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kubehero_testkit::kubeapi::{KubeApiServer, ADMIN_TOKEN};

#[tokio::test]
async fn a_real_kube_apiserver_authenticates_authorizes_and_impersonates() {
    let k = KubeApiServer::start().await.unwrap();
    assert_eq!(k.version, "v1.20.2");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&k.ca_pem).unwrap())
        .build()
        .unwrap();
    let get = |path: &str, token: Option<&str>, as_user: Option<&str>| {
        let mut rb = http.get(format!("{}{path}", k.url));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(u) = as_user {
            rb = rb.header("Impersonate-User", u);
        }
        rb.send()
    };
    assert_eq!(get("/api/v1/namespaces", Some(ADMIN_TOKEN), None).await.unwrap().status(), 200);
    assert_eq!(get("/api/v1/namespaces", Some("wrong-token"), None).await.unwrap().status(), 401);
    // RBAC: an impersonated user with no bindings is forbidden.
    let r = get("/api/v1/namespaces", Some(ADMIN_TOKEN), Some("bob")).await.unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    assert!(k.admin_kubeconfig().contains(&k.url));
}
