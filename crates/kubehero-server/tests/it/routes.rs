//! The route × role × scope matrix (driven through the router in process with `tower::oneshot`), and the walk
//! over the route table (over real HTTP): every route declares a permission,
//! every API route refuses a request without a credential when auth is required, and every route is in the
//! hand-written matrix below (so a new route cannot ship without its expected allow/deny row).

use crate::support::*;
use kubehero_server::routes::{table, Permission};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const SCOPED: &str = "scoped-admin-key-0123456789"; // viewer + admin on clusters prod-*
const NS: &str = "ns-admin-key-0123456789abc"; // viewer + admin on prod-eu/payments

/// Who is asking, in matrix column order.
fn principals() -> Vec<(&'static str, Option<&'static str>)> {
    vec![
        ("anonymous", None),
        ("viewer", Some(VIEWER)),
        ("member", Some(MEMBER)),
        ("auditor", Some(AUDITOR)),
        ("admin", Some(ADMIN)),
        ("owner", Some(OWNER)),
        ("scoped-admin prod-*", Some(SCOPED)),
        ("ns-admin prod-eu/payments", Some(NS)),
    ]
}

async fn matrix_server() -> TestServer {
    let keys = format!("{},{SCOPED}:viewer,{NS}:viewer", api_keys_env());
    let file = format!(
        r#"
        [[bindings]]
        user = "{}"
        role = "admin"
        cluster = "prod-*"
        [[bindings]]
        user = "{}"
        role = "admin"
        cluster = "prod-eu"
        namespace = "payments"
        "#,
        key_sub(SCOPED),
        key_sub(NS)
    );
    let env = [("KUBEHERO_API_KEYS", &*keys), ("KUBEHERO_PUBLIC_URL", "https://kubehero.example.com")];
    let ts = TestServer::start(&env, Some(&file)).await;
    for c in ["prod-eu", "staging"] {
        let r = ts.post("/api/v1/clusters", Some(OWNER), json!({ "name": c })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    ts
}

struct Matrix<'a> {
    ts: &'a TestServer,
    covered: BTreeSet<(String, String)>,
    counter: usize,
}

impl Matrix<'_> {
    fn fresh(&mut self) -> usize {
        self.counter += 1;
        self.counter
    }

    /// Sends one request per principal (built by `make`, which may create fresh fixtures first) and checks
    /// allow (2xx) or deny (403) against `expect` (`A`/`D` per principal column).
    async fn row<F, Fut>(&mut self, method: Method, template: &str, expect: &str, mut make: F)
    where
        F: FnMut(usize, usize) -> Fut,
        Fut: std::future::Future<Output = (String, Option<Value>)>,
    {
        self.covered.insert((method.to_string(), template.to_string()));
        let expect: Vec<char> = expect.chars().filter(|c| !c.is_whitespace()).collect();
        assert_eq!(expect.len(), principals().len(), "{template}: one letter per principal");
        for (i, (who, token)) in principals().into_iter().enumerate() {
            let n = self.fresh();
            let (path, body) = make(i, n).await;
            // In process (tower oneshot), no TCP: the matrix is about the router, its layers and handlers.
            let r = self.ts.oneshot(method.clone(), &path, token, body).await;
            match expect[i] {
                // Authorized, but the request itself is not applicable to this credential.
                'B' => assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {path} as {who}: {}", r.body),
                'A' => assert!(
                    r.status.is_success(),
                    "{method} {path} as {who}: expected allow, got {} {}",
                    r.status,
                    r.body
                ),
                _ => {
                    assert_eq!(
                        r.status,
                        StatusCode::FORBIDDEN,
                        "{method} {path} as {who}: expected 403, got {}",
                        r.body
                    );
                    assert_eq!(error_code(&r), "permission_denied");
                }
            }
        }
    }
}

async fn policy(ts: &TestServer, token: &str, cluster: &str, ns: Option<&str>, n: usize) -> Value {
    let r = ts
        .post(
            "/api/v1/policies",
            Some(token),
            json!({ "name": format!("p{n}"), "cluster": cluster, "namespace": ns, "spec": { "n": n } }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

async fn armed(ts: &TestServer, cluster: &str, ns: Option<&str>, n: usize) -> String {
    let id = policy(ts, OWNER, cluster, ns, n).await["id"].as_str().unwrap().to_string();
    let r = ts.post(&format!("/api/v1/policies/{id}/arm"), Some(OWNER), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    id
}

/// A break-glass code of prod-eu straight into the store, used when `used`; gives back its id.
async fn breakglass_code(ts: &TestServer, n: usize, used: bool) -> String {
    let hash = format!("{n:064x}");
    let code = kubehero_store::BreakglassCode::sealed(format!("bg_matrix_{n}"), hash, "prod-eu", 600, "erin".into(), 1);
    let store = &ts.state().store;
    store.apply(kubehero_store::Change::CreateBreakglassCodes(std::slice::from_ref(&code)), None).await.unwrap();
    if used {
        let sub = format!("breakglass:{}", code.id);
        let binding = kubehero_store::StoredBinding {
            id: format!("rb_matrix_bg_{n}"),
            binding: kubehero_core::Binding {
                subject: kubehero_core::BindingSubject::User(sub.clone()),
                role: kubehero_core::Role::Owner,
                scope: kubehero_core::Scope::Cluster { cluster: "prod-eu".into() },
            },
            created_by: sub.clone(),
            created_at: 1,
            expires_at: Some(2),
        };
        let (_, session) = kubehero_server::device::new_cli_token(&sub, None, Vec::new(), None, 1, None).unwrap();
        let use_it = kubehero_store::Change::UseBreakglass {
            id: &code.id,
            at: 1,
            reason: "INC-1",
            from: None,
            binding: &binding,
            session: &session,
        };
        store.apply(use_it, None).await.unwrap();
    }
    code.id
}

#[tokio::test]
async fn route_role_scope_matrix() {
    let ts = matrix_server().await;
    let ts = &ts;
    let mut m = Matrix { ts, covered: BTreeSet::new(), counter: 0 };
    //                                                  anon view memb aud adm own scop ns
    m.row(Method::GET, "/api/v1/whoami", "A A A A A A A A", |_, _| async { ("/api/v1/whoami".into(), None) }).await;
    m.row(Method::GET, "/api/v1/clusters", "A A A A A A A A", |_, _| async { ("/api/v1/clusters".into(), None) }).await;
    m.row(Method::GET, "/api/v1/clusters/{name}", "A A A A A A A A", |_, _| async {
        ("/api/v1/clusters/prod-eu".into(), None)
    })
    .await;
    m.row(Method::POST, "/api/v1/clusters", "D D D D A A A D", |_, n| async move {
        ("/api/v1/clusters".into(), Some(json!({ "name": format!("prod-{n}") })))
    })
    .await;
    m.row(Method::POST, "/api/v1/clusters", "D D D D A A D D", |_, n| async move {
        ("/api/v1/clusters".into(), Some(json!({ "name": format!("dev-{n}") })))
    })
    .await;
    m.row(Method::POST, "/api/v1/clusters/{name}/join-tokens", "D D D D A A A D", |_, _| async {
        ("/api/v1/clusters/prod-eu/join-tokens".into(), Some(json!({})))
    })
    .await;
    // Minted from a CLI login only: these principals hold API keys.
    m.row(Method::POST, "/api/v1/clusters/{name}/token", "B B B B B B B B", |_, _| async {
        ("/api/v1/clusters/prod-eu/token".into(), None)
    })
    .await;
    m.row(Method::GET, "/api/v1/clusters/{name}/direct", "A A A A A A A A", |_, _| async {
        ("/api/v1/clusters/prod-eu/direct".into(), None)
    })
    .await;
    m.row(Method::GET, "/api/v1/clusters/{name}/rbac", "A A A A A A A A", |_, _| async {
        ("/api/v1/clusters/prod-eu/rbac".into(), None)
    })
    .await;
    m.row(Method::POST, "/api/v1/clusters/{name}/webhook", "D D D D A A A D", |_, _| async {
        ("/api/v1/clusters/prod-eu/webhook".into(), None)
    })
    .await;
    m.row(Method::GET, "/api/v1/clusters/{name}/certificates", "A A A A A A A A", |_, _| async {
        ("/api/v1/clusters/prod-eu/certificates".into(), None)
    })
    .await;
    m.row(Method::POST, "/api/v1/clusters/{name}/certificates/revoke", "D D D D A A A D", |_, _| async {
        ("/api/v1/clusters/prod-eu/certificates/revoke".into(), Some(json!({})))
    })
    .await;
    m.row(Method::DELETE, "/api/v1/clusters/{name}", "D D D D A A A D", |_, n| async move {
        ts.post("/api/v1/clusters", Some(OWNER), json!({ "name": format!("prod-x{n}") })).await;
        (format!("/api/v1/clusters/prod-x{n}"), None)
    })
    .await;
    m.row(Method::DELETE, "/api/v1/clusters/{name}", "D D D D A A D D", |_, n| async move {
        ts.post("/api/v1/clusters", Some(OWNER), json!({ "name": format!("dev-x{n}") })).await;
        (format!("/api/v1/clusters/dev-x{n}"), None)
    })
    .await;

    m.row(Method::GET, "/api/v1/policies", "A A A A A A A A", |_, _| async { ("/api/v1/policies".into(), None) }).await;
    m.row(Method::POST, "/api/v1/policies", "D D A D A A A A", |_, n| async move {
        let body = json!({ "name": format!("new{n}"), "cluster": "prod-eu", "namespace": "payments", "spec": {} });
        ("/api/v1/policies".into(), Some(body))
    })
    .await;
    m.row(Method::POST, "/api/v1/policies", "D D A D A A D D", |_, n| async move {
        let body = json!({ "name": format!("new{n}"), "cluster": "staging", "spec": {} });
        ("/api/v1/policies".into(), Some(body))
    })
    .await;
    let shared = policy(ts, MEMBER, "prod-eu", Some("payments"), 0).await;
    let shared_id = shared["id"].as_str().unwrap().to_string();
    let sid = &shared_id;
    m.row(Method::GET, "/api/v1/policies/{id}", "A A A A A A A A", |_, _| async move {
        (format!("/api/v1/policies/{sid}"), None)
    })
    .await;
    m.row(Method::GET, "/api/v1/policies/{id}/history", "A A A A A A A A", |_, _| async move {
        (format!("/api/v1/policies/{sid}/history"), None)
    })
    .await;
    // Edit a member's own draft in prod-eu/payments: the member (owner of it) and admins covering it.
    m.row(Method::PUT, "/api/v1/policies/{id}", "D D A D A A A A", |_, n| async move {
        let p = policy(ts, MEMBER, "prod-eu", Some("payments"), n).await;
        let body = json!({ "name": format!("edited{n}"), "spec": { "e": 1 }, "version": p["version"] });
        (format!("/api/v1/policies/{}", p["id"].as_str().unwrap()), Some(body))
    })
    .await;
    // Someone else's draft in staging: only global admins.
    m.row(Method::PUT, "/api/v1/policies/{id}", "D D D D A A D D", |_, n| async move {
        let p = policy(ts, OWNER, "staging", None, n).await;
        let body = json!({ "name": format!("edited{n}"), "spec": {}, "version": p["version"] });
        (format!("/api/v1/policies/{}", p["id"].as_str().unwrap()), Some(body))
    })
    .await;
    m.row(Method::POST, "/api/v1/policies/{id}/arm", "D D D D A A A A", |_, n| async move {
        let p = policy(ts, OWNER, "prod-eu", Some("payments"), n).await;
        (format!("/api/v1/policies/{}/arm", p["id"].as_str().unwrap()), None)
    })
    .await;
    m.row(Method::POST, "/api/v1/policies/{id}/arm", "D D D D A A D D", |_, n| async move {
        let p = policy(ts, OWNER, "staging", None, n).await;
        (format!("/api/v1/policies/{}/arm", p["id"].as_str().unwrap()), None)
    })
    .await;
    m.row(Method::POST, "/api/v1/policies/{id}/arm", "D D D D A A A D", |_, n| async move {
        let p = policy(ts, OWNER, "prod-eu", Some("web"), n).await;
        (format!("/api/v1/policies/{}/arm", p["id"].as_str().unwrap()), None)
    })
    .await;
    m.row(Method::POST, "/api/v1/policies/{id}/disarm", "D D D D A A A A", |_, n| async move {
        (format!("/api/v1/policies/{}/disarm", armed(ts, "prod-eu", Some("payments"), n).await), None)
    })
    .await;
    m.row(Method::POST, "/api/v1/policies/{id}/undo", "D D D D A A A A", |_, n| async move {
        (format!("/api/v1/policies/{}/undo", armed(ts, "prod-eu", Some("payments"), n).await), None)
    })
    .await;
    m.row(Method::POST, "/api/v1/policies/{id}/undo", "D D D D A A D D", |_, n| async move {
        (format!("/api/v1/policies/{}/undo", armed(ts, "staging", None, n).await), None)
    })
    .await;

    m.row(Method::GET, "/api/v1/role-bindings", "A A A A A A A A", |_, _| async {
        ("/api/v1/role-bindings".into(), None)
    })
    .await;
    m.row(Method::POST, "/api/v1/role-bindings", "D D D D D A D D", |_, n| async move {
        let body =
            json!({ "subject": { "kind": "group", "name": format!("g{n}") }, "role": "admin", "cluster": "prod-*" });
        ("/api/v1/role-bindings".into(), Some(body))
    })
    .await;
    m.row(Method::DELETE, "/api/v1/role-bindings/{id}", "D D D D D A D D", |_, n| async move {
        let body = json!({ "subject": { "kind": "user", "name": format!("u{n}@example.com") }, "role": "viewer" });
        let r = ts.post("/api/v1/role-bindings", Some(OWNER), body).await;
        (format!("/api/v1/role-bindings/{}", r.body["id"].as_str().unwrap()), None)
    })
    .await;

    m.row(Method::GET, "/api/v1/api-keys", "A A A A A A A A", |_, _| async { ("/api/v1/api-keys".into(), None) }).await;
    // Static API keys are service accounts: they cannot mint keys whatever their role (people do that; the
    // IdP tests cover people creating keys).
    m.row(Method::POST, "/api/v1/api-keys", "D D D D D D D D", |_, n| async move {
        ("/api/v1/api-keys".into(), Some(json!({ "name": format!("k{n}"), "role": "viewer" })))
    })
    .await;
    // Revoke a managed key owned by the member principal: that member and owners.
    m.row(Method::DELETE, "/api/v1/api-keys/{id}", "D D A D D A D D", |_, n| async move {
        let store = ts.server.as_ref().unwrap().state.store.clone();
        let hash = kubehero_authn::sha256_hex(&format!("khk_matrix_{n}"));
        let rec = kubehero_store::ApiKeyRecord {
            id: hash[..16].to_string(),
            hash,
            name: format!("k{n}"),
            role: kubehero_core::Role::Viewer,
            owner: key_sub(MEMBER),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
        };
        store.create_api_key(&rec).await.unwrap();
        (format!("/api/v1/api-keys/{}", rec.id), None)
    })
    .await;

    m.row(Method::GET, "/api/v1/settings", "D D D A D A D D", |_, _| async { ("/api/v1/settings".into(), None) }).await;
    m.row(Method::GET, "/api/v1/settings/{key}", "D D D A D A D D", |_, _| async {
        ("/api/v1/settings/idp".into(), None)
    })
    .await;
    m.row(Method::PUT, "/api/v1/settings/{key}", "D D D D D A D D", |_, _| async {
        ("/api/v1/settings/idp".into(), Some(json!({ "client_id": "kubehero", "client_secret": "s3cret" })))
    })
    .await;

    m.row(Method::GET, "/api/v1/access-requests", "A A A A A A A A", |_, _| async {
        ("/api/v1/access-requests".into(), None)
    })
    .await;
    // API keys do not ask for access (people do): the request is authorized, then refused as not applicable.
    m.row(Method::POST, "/api/v1/access-requests", "B B B B B B B B", |_, _| async {
        let body = json!({"cluster": "prod-eu", "role": "viewer", "duration_secs": 600, "reason": "INC-1"});
        ("/api/v1/access-requests".into(), Some(body))
    })
    .await;
    for action in ["approve", "deny"] {
        let template = format!("/api/v1/access-requests/{{id}}/{action}");
        m.row(Method::POST, &template, "D D D D A A A A", |_, n| async move {
            // A person's pending request in prod-eu/payments, straight into the store.
            let request = kubehero_store::AccessRequest {
                id: format!("ar_matrix_{action}_{n}"),
                requester: format!("https://idp.example#dana{n}"),
                requester_email: None,
                cluster: "prod-eu".into(),
                namespace: Some("payments".into()),
                role: "member".into(),
                duration_secs: 600,
                reason: "INC-1".into(),
                state: "pending".into(),
                created_at: 1,
                decided_by: None,
                decided_at: None,
                comment: None,
                binding_id: None,
                expires_at: None,
                first_approver: None,
            };
            let store = &ts.server.as_ref().unwrap().state.store;
            store.apply(kubehero_store::Change::CreateAccessRequest(&request), None).await.unwrap();
            (format!("/api/v1/access-requests/{}/{action}", request.id), Some(json!({})))
        })
        .await;
    }
    m.row(Method::GET, "/api/v1/clusters/{name}/shares", "A A A A A A A A", |_, _| async {
        ("/api/v1/clusters/prod-eu/shares".into(), None)
    })
    .await;
    // People share what they hold (these principals are API keys): authorized, then refused as not applicable.
    m.row(Method::POST, "/api/v1/clusters/{name}/shares", "B B B B B B B B", |_, _| async {
        ("/api/v1/clusters/prod-eu/shares".into(), Some(json!({"role": "viewer", "expires_in_secs": 600})))
    })
    .await;
    m.row(Method::POST, "/api/v1/shares/accept", "B B B B B B B B", |_, _| async {
        ("/api/v1/shares/accept".into(), Some(json!({"token": "khl_x"})))
    })
    .await;
    m.row(Method::DELETE, "/api/v1/clusters/{name}/shares/{id}", "D D D D A A A A", |_, n| async move {
        // A person's share of prod-eu/payments, straight into the store.
        let share = kubehero_store::Share {
            id: format!("sh_matrix_{n}"),
            token_hash: format!("{n:064x}"),
            cluster: "prod-eu".into(),
            namespace: Some("payments".into()),
            role: "viewer".into(),
            created_by: format!("https://idp.example#dana{n}"),
            created_by_email: None,
            created_at: 1,
            expires_at: i64::MAX / 2,
            max_uses: None,
            uses: 0,
            recipients: Vec::new(),
            revoked_at: None,
            revoked_by: None,
            expired_at: None,
        };
        ts.state().store.apply(kubehero_store::Change::CreateShare(&share), None).await.unwrap();
        (format!("/api/v1/clusters/prod-eu/shares/{}", share.id), None)
    })
    .await;
    m.row(Method::POST, "/api/v1/clusters/{name}/breakglass", "D D D D D A D D", |_, _| async {
        ("/api/v1/clusters/prod-eu/breakglass".into(), Some(json!({"count": 1})))
    })
    .await;
    m.row(Method::GET, "/api/v1/breakglass", "D D D A D A D D", |_, _| async { ("/api/v1/breakglass".into(), None) })
        .await;
    m.row(Method::DELETE, "/api/v1/breakglass/{id}", "D D D D D A D D", |_, n| async move {
        let id = breakglass_code(ts, n, false).await;
        (format!("/api/v1/breakglass/{id}"), None)
    })
    .await;
    m.row(Method::POST, "/api/v1/breakglass/{id}/acknowledge", "D D D D D A D D", |_, n| async move {
        let id = breakglass_code(ts, n, true).await;
        (format!("/api/v1/breakglass/{id}/acknowledge"), Some(json!({})))
    })
    .await;
    m.row(Method::GET, "/api/v1/agent-cas", "D D D A D A D D", |_, _| async { ("/api/v1/agent-cas".into(), None) })
        .await;
    m.row(Method::POST, "/api/v1/agent-cas", "D D D D D A D D", |_, _| async {
        ("/api/v1/agent-cas".into(), Some(json!({})))
    })
    .await;
    m.row(Method::GET, "/api/v1/issuer-keys", "D D D A D A D D", |_, _| async { ("/api/v1/issuer-keys".into(), None) })
        .await;
    m.row(Method::POST, "/api/v1/issuer-keys/rotate", "D D D D D A D D", |_, _| async {
        ("/api/v1/issuer-keys/rotate".into(), None)
    })
    .await;
    for action in ["activate", "retire"] {
        let template = format!("/api/v1/agent-cas/{{id}}/{action}");
        m.row(Method::POST, &template, "D D D D D A D D", |_, _| async move {
            let r = ts.post("/api/v1/agent-cas", Some(OWNER), json!({})).await;
            (format!("/api/v1/agent-cas/{}/{action}", r.body["id"].as_str().unwrap()), None)
        })
        .await;
    }
    m.row(Method::GET, "/api/v1/audit", "D D D A D A D D", |_, _| async { ("/api/v1/audit?limit=5".into(), None) })
        .await;

    // Sign-ins: everyone lists their own; revoking someone else's is for owners; only CLI tokens rotate
    // (these principals hold API keys, so rotation is a 400 for every one of them that may try).
    m.row(Method::GET, "/api/v1/auth/sessions", "A A A A A A A A", |_, _| async {
        ("/api/v1/auth/sessions".into(), None)
    })
    .await;
    m.row(Method::DELETE, "/api/v1/auth/sessions/{id}", "D D D D D A D D", |_, n| async move {
        let (_, rec) =
            kubehero_server::device::new_cli_token(&format!("someone-{n}"), None, vec![], None, 1, None).unwrap();
        let rec = kubehero_store::SessionRecord { expires_at: i64::MAX / 2, absolute_expires_at: i64::MAX / 2, ..rec };
        ts.state().store.create_session(&rec).await.unwrap();
        (format!("/api/v1/auth/sessions/{}", rec.id), None)
    })
    .await;
    m.row(Method::POST, "/api/v1/auth/rotate", "B B B B B B B B", |_, _| async {
        ("/api/v1/auth/rotate".into(), Some(json!({})))
    })
    .await;

    // Every API route of the table has a row above.
    let declared: BTreeSet<(String, String)> = table()
        .into_iter()
        .filter(|(s, _)| matches!(s.permission, Permission::Requires(_)))
        .map(|(s, _)| (s.method.to_string(), s.path.to_string()))
        .collect();
    let missing: Vec<_> = declared.difference(&m.covered).collect();
    assert!(missing.is_empty(), "routes without a matrix row: {missing:?}");
    let extra: Vec<_> = m.covered.difference(&declared).collect();
    assert!(extra.is_empty(), "matrix rows for routes that do not exist: {extra:?}");
}

/// Walks the route table: with `KUBEHERO_REQUIRE_AUTH=true` every non-public route refuses a request
/// without a credential (401 + WWW-Authenticate) and with a bad one; public routes answer without one.
#[tokio::test]
async fn every_route_declares_and_enforces_its_permission() {
    let env = [
        ("KUBEHERO_REQUIRE_AUTH", "true"),
        ("KUBEHERO_API_KEYS", &*api_keys_env()),
        ("KUBEHERO_SCIM_TOKEN", SCIM),
        ("KUBEHERO_WORKOS_WEBHOOK_SECRET", "whsec-route-walk"),
    ];
    let ts = TestServer::start(&env, None).await;
    let routes = table();
    assert!(routes.len() >= 25);
    let mut provisioning = Vec::new();
    for (spec, _) in routes {
        let path = spec
            .path
            .replace("{name}", "prod")
            .replace("{id}", "x")
            .replace("{key}", "idp")
            .replace("{*path}", "api/v1/namespaces");
        let method = Method::from_bytes(spec.method.as_str().as_bytes()).unwrap();
        match spec.permission {
            Permission::Public => {
                let public = ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", "/ui/app.css", "/ui/app.js"];
                let issuer = ["/.well-known/openid-configuration", "/openid/v1/jwks"];
                assert!(public.contains(&spec.path) || issuer.contains(&spec.path), "{} is public", spec.path);
                let r = ts.call(method, &path, None, None).await;
                // The issuer's documents exist only with KUBEHERO_PUBLIC_URL (not set here).
                let expected = if issuer.contains(&spec.path) { StatusCode::NOT_FOUND } else { StatusCode::OK };
                assert_eq!(r.status, expected, "{path}: {}", r.body);
            }
            Permission::SignIn => {
                // Sign-in routes manage the dashboard session themselves; without a session they never
                // answer with data: they redirect to /login, or (sign-in not configured here) say so.
                let sign_in = ["/", "/login", "/api/auth/callback", "/api/auth/logout", "/device", "/cli/authorize"];
                let device = ["/api/auth/device/code", "/api/auth/device/token", "/api/auth/cli/token"];
                let share = ["/share/{token}", "/share/{token}/kubeconfig"];
                let breakglass = ["/breakglass", "/api/v1/breakglass/use", "/breakglass/acknowledge"];
                let dashboard = [
                    "/ui/clusters",
                    "/ui/clusters/{name}",
                    "/ui/clusters/{name}/kubeconfig",
                    "/ui/access",
                    "/ui/policies",
                    "/ui/policies/{id}",
                    "/ui/audit",
                    "/ui/audit/export",
                    "/ui/audit/tail",
                    "/ui/credentials",
                    "/ui/people",
                    "/ui/bindings",
                    "/ui/settings",
                ];
                let known = [&sign_in[..], &device, &share, &breakglass, &dashboard].concat();
                assert!(known.contains(&spec.path), "{}", spec.path);
                let path = path.replace("{token}", "khl_x");
                let r = ts.call(method.clone(), &path, None, Some(json!({ "device_code": "x" }))).await;
                if spec.path == "/breakglass" && method == Method::GET {
                    // The break-glass form is for when sign-in does not work: it holds nothing but the form.
                    assert_eq!(r.status, StatusCode::OK, "{path}");
                    continue;
                }
                // Break-glass with no code: refused as unauthenticated.
                let ok =
                    [StatusCode::SEE_OTHER, StatusCode::NOT_FOUND, StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED];
                assert!(ok.contains(&r.status), "{method} {path}: {}", r.status);
            }
            Permission::Requires(action) => {
                assert!(spec.path.starts_with("/api/v1/"), "{}", spec.path);
                let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
                let r = ts.call(method.clone(), &path, None, body.clone()).await;
                assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path} ({action:?}) without credential");
                assert!(r.headers.get("www-authenticate").is_some());
                assert_eq!(error_code(&r), "unauthenticated");
                let r = ts.call(method.clone(), &path, Some("not-a-valid-token"), body).await;
                assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path} with a bad credential");
            }
            Permission::Kube => {
                // Kubernetes' own error shape, for every method kubectl may send.
                assert!(spec.path.starts_with("/k8s/clusters/"), "{}", spec.path);
                for m in [Method::GET, Method::POST, Method::PATCH, Method::DELETE] {
                    for token in [None, Some("not-a-valid-token")] {
                        let r = ts.call(m.clone(), &path, token, None).await;
                        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{m} {path}");
                        assert_eq!((r.body["kind"].as_str(), r.body["code"].as_u64()), (Some("Status"), Some(401)));
                    }
                }
                let r = ts.call(Method::GET, &path, Some(ADMIN), None).await;
                assert_eq!(r.status, StatusCode::NOT_FOUND, "an unknown cluster: {}", r.body);
                assert_eq!(r.body["reason"], "NotFound");
            }
            Permission::Signed => {
                // The directory broker's webhook: no KubeHero credential opens it, only its signature.
                assert_eq!(spec.path, "/webhooks/workos");
                for token in [None, Some(ADMIN), Some(SCIM)] {
                    let r = ts.call(method.clone(), &path, token, Some(json!({}))).await;
                    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} with {token:?}");
                    assert_eq!(error_code(&r), "unauthenticated");
                }
            }
            Permission::Provisioning(action) => {
                assert!(spec.path.starts_with("/scim/v2/"), "{}", spec.path);
                // The SCIM client's token passes the authenticator and the declared action's check.
                let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
                let r = ts.call(method.clone(), &path, Some(SCIM), body.clone()).await;
                let refused = [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN, StatusCode::METHOD_NOT_ALLOWED];
                assert!(!refused.contains(&r.status), "{method} {path} ({action:?}) with the SCIM token: {}", r.status);
                provisioning.push((method, path, body));
            }
        }
    }
    // No credential, or any other credential (an owner's API key), is refused on every SCIM route in the SCIM
    // error schema; after ten failures the address is throttled (429) whatever it sends.
    let mut refusals = 0;
    for (method, path, body) in provisioning {
        for token in [None, Some(OWNER)] {
            let r = ts.call(method.clone(), &path, token, body.clone()).await;
            assert!(
                r.status == StatusCode::UNAUTHORIZED || (refusals >= 10 && r.status == StatusCode::TOO_MANY_REQUESTS),
                "{method} {path} with {token:?}: {}",
                r.status
            );
            assert_eq!(r.headers["content-type"], "application/scim+json", "{method} {path}");
            assert!(r.body["schemas"].to_string().contains("urn:ietf:params:scim:api:messages:2.0:Error"));
            refusals += 1;
        }
    }
    // The SCIM token is no credential anywhere else.
    assert_eq!(ts.get("/api/v1/whoami", Some(SCIM)).await.status, StatusCode::UNAUTHORIZED);
}

const SCIM: &str = "scim-token-for-the-route-walk-0123456789";

/// The OpenAPI document names every `/api/v1` route of the table (and nothing else) with its permission, and
/// its request bodies are what the real deserializers accept: each schema's example is accepted as it is and
/// refused with an unknown field added (`additionalProperties: false` is `deny_unknown_fields`).
#[tokio::test]
async fn the_openapi_document_matches_the_route_table_and_the_bodies() {
    let ts =
        TestServer::start(&[("KUBEHERO_REQUIRE_AUTH", "true"), ("KUBEHERO_API_KEYS", &*api_keys_env())], None).await;
    let r = ts.get("/api/v1/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.body;
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            documented.insert((
                method.to_uppercase(),
                path.clone(),
                op["x-kubehero-permission"].as_str().unwrap().to_string(),
            ));
        }
    }
    let declared: BTreeSet<(String, String, String)> = table()
        .into_iter()
        .filter(|(spec, _)| spec.path.starts_with("/api/v1/"))
        .map(|(spec, _)| {
            let perm = match spec.permission {
                Permission::Requires(a) => a.as_str().to_string(),
                _ => "public".to_string(),
            };
            (spec.method.as_str().to_string(), spec.path.to_string(), perm)
        })
        .collect();
    assert_eq!(documented, declared);

    let schemas = &doc["components"]["schemas"];
    let example = |name: &str| schemas[name]["example"].clone();
    let with_extra = |mut v: Value| {
        v["surprise"] = json!(1);
        v
    };
    // In an order that makes each example valid: the cluster the policy names exists first.
    let bodies: [(&str, &str, &str, &str); 5] = [
        ("POST", "/api/v1/clusters", "RegisterCluster", ADMIN),
        ("POST", "/api/v1/policies", "CreatePolicy", ADMIN),
        ("POST", "/api/v1/role-bindings", "CreateBinding", OWNER),
        ("POST", "/api/v1/api-keys", "CreateKey", OWNER),
        ("PUT", "/api/v1/settings/integrations", "Setting", OWNER),
    ];
    let mut policy_id = String::new();
    for (method, path, schema, who) in bodies {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        if schema != "Setting" {
            let r = ts.call(method.clone(), path, Some(who), Some(with_extra(example(schema)))).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{schema} with an unknown field: {}", r.body);
        }
        let r = ts.call(method, path, Some(who), Some(example(schema))).await;
        if schema == "CreateKey" {
            // Keys are created by people (a signed-in person), not by the API key this test holds: the body
            // was accepted and the handler said so.
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{schema} example: {}", r.body);
            continue;
        }
        assert!(r.status.is_success(), "{schema} example: {} {}", r.status, r.body);
        if schema == "CreatePolicy" {
            policy_id = r.body["id"].as_str().unwrap().to_string();
        }
    }
    let path = format!("/api/v1/policies/{policy_id}");
    let r = ts.call(Method::PUT, &path, Some(ADMIN), Some(with_extra(example("UpdatePolicy")))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = ts.call(Method::PUT, &path, Some(ADMIN), Some(example("UpdatePolicy"))).await;
    assert!(r.status.is_success(), "UpdatePolicy example: {}", r.body);
}
