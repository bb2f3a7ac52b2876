//! Against the real npm `oidc-provider`: client-credentials and authorization-code tokens (RS256 and ES256),
//! group → role mappings including scoped ones, people minting API keys, and IdP faults (down at start-up,
//! down after warm-up, unknown-`kid` floods, key rotation).

use crate::support::*;
use base64::Engine;
use kubehero_testkit::oidc::OidcProvider;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

fn header(token: &str) -> Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

fn idp_file(issuer: &str, extra: &str) -> String {
    format!(
        r#"
        [[issuers]]
        issuer = "{issuer}"
        audiences = ["kubehero", "kubehero-es"]
        retry_max_secs = 1
        group_roles = {{ "kubehero-admins" = "admin", "kubehero-owners" = "owner", "auditors" = "auditor", "kubehero-members" = "member", "system:service-clients" = "member" }}
        {extra}
        [[bindings]]
        group = "oncall"
        role = "admin"
        cluster = "prod-*"
        [[bindings]]
        user = "dave@example.com"
        role = "admin"
        cluster = "staging"
        namespace = "web"
        "#
    )
}

async fn wait_healthy(ts: &TestServer) {
    for _ in 0..100 {
        let r = ts.get("/readyz", None).await;
        if r.body["issuers"][0]["healthy"] == true {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("issuer never became healthy");
}

#[tokio::test]
async fn client_credentials_rs256_and_es256() {
    let idp = OidcProvider::start().await.unwrap();
    let ts = TestServer::start(
        &[
            ("OIDC_ISSUER_URL", &idp.issuer),
            ("OIDC_AUDIENCE", "kubehero"),
            ("KUBEHERO_GROUP_ROLES", "system:service-clients=member"),
        ],
        None,
    )
    .await;
    wait_healthy(&ts).await;
    for (client, secret, alg) in
        [("kubehero", "kubehero-secret", "RS256"), ("kubehero-es", "kubehero-es-secret", "ES256")]
    {
        let token = idp.client_credentials(client, secret).await.unwrap();
        assert_eq!(header(&token)["alg"], alg);
        let me = ts.whoami(&token).await;
        assert_eq!(me["sub"], client);
        assert_eq!(me["groups"], json!(["system:service-clients"]));
        assert_eq!(me["roles"], json!(["member"]));
        assert_eq!(me["role"], "member");
        assert_eq!(me["auth_method"], "jwt");
        assert_eq!(me["issuer"], idp.issuer);
        // Tampering with the payload breaks the signature: 401, never anonymous.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut claims: Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&parts[1]).unwrap())
                .unwrap();
        claims["groups"] = json!(["kubehero-owners"]);
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        let r = ts.get("/api/v1/whoami", Some(&parts.join("."))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let m = ts.get("/metrics", None).await;
    assert!(m
        .body
        .as_str()
        .unwrap()
        .contains(&format!("kubehero_jwks_fetches_total{{issuer=\"{}\",outcome=\"ok\"}}", idp.issuer)));
}

#[tokio::test]
async fn authorization_code_tokens_map_to_roles() {
    let idp = OidcProvider::start().await.unwrap();
    let ts = TestServer::start(&[("KUBEHERO_REQUIRE_AUTH", "true")], Some(&idp_file(&idp.issuer, ""))).await;
    wait_healthy(&ts).await;
    let cases: &[(&str, &str, &str, Value, Value)] = &[
        ("alice", "kubehero", "admin", json!(["admin"]), json!([])),
        ("bob", "kubehero-es", "viewer", json!(["viewer"]), json!([])),
        (
            "carol",
            "kubehero",
            "viewer",
            json!(["viewer"]),
            json!([{ "role": "admin", "cluster": "prod-*", "namespace": null }]),
        ),
        (
            "dave",
            "kubehero-es",
            "viewer",
            json!(["viewer"]),
            json!([{ "role": "admin", "cluster": "staging", "namespace": "web" }]),
        ),
        ("erin", "kubehero", "owner", json!(["owner"]), json!([])),
        ("frank", "kubehero", "member", json!(["member"]), json!([])), // legacy kh_roles fallback
        ("grace", "kubehero-es", "member", json!(["auditor", "member"]), json!([])),
    ];
    for (login, client, role, roles, scoped) in cases {
        let secret = format!("{client}-secret");
        let tokens = idp.authcode(login, client, &secret).await.unwrap();
        let alg = if *client == "kubehero-es" { "ES256" } else { "RS256" };
        assert_eq!(header(&tokens.id_token)["alg"], alg);
        let me = ts.whoami(&tokens.id_token).await;
        assert_eq!(me["sub"], *login, "{me}");
        assert_eq!(me["email"], format!("{login}@example.com"));
        assert_eq!(me["role"], *role, "{login}: {me}");
        assert_eq!(me["roles"], *roles, "{login}: {me}");
        assert_eq!(me["scoped_roles"], *scoped, "{login}: {me}");
    }
    // The scoped mapping is enforced, not only displayed: carol arms in prod-*, not elsewhere.
    let erin = idp.authcode("erin", "kubehero", "kubehero-secret").await.unwrap().id_token;
    let carol = idp.authcode("carol", "kubehero", "kubehero-secret").await.unwrap().id_token;
    assert_eq!(
        ts.post("/api/v1/clusters", Some(&carol), json!({ "name": "prod-eu" })).await.status,
        StatusCode::CREATED
    );
    assert_eq!(ts.post("/api/v1/clusters", Some(&carol), json!({ "name": "dev" })).await.status, StatusCode::FORBIDDEN);
    assert_eq!(ts.post("/api/v1/clusters", Some(&erin), json!({ "name": "dev" })).await.status, StatusCode::CREATED);
}

#[tokio::test]
async fn group_prefix_separates_issuers() {
    let idp = OidcProvider::start().await.unwrap();
    let file = format!(
        r#"
        [[issuers]]
        issuer = "{}"
        audiences = ["kubehero"]
        group_prefix = "acme:"
        group_roles = {{ "acme:kubehero-admins" = "admin" }}
        "#,
        idp.issuer
    );
    // The unprefixed global mapping must not match prefixed groups.
    let ts = TestServer::start(&[("KUBEHERO_GROUP_ROLES", "kubehero-admins=owner")], Some(&file)).await;
    wait_healthy(&ts).await;
    let alice = idp.authcode("alice", "kubehero", "kubehero-secret").await.unwrap().id_token;
    let me = ts.whoami(&alice).await;
    assert_eq!(me["groups"], json!(["acme:kubehero-admins", "acme:dev"]));
    assert_eq!(me["role"], "admin");
}

#[tokio::test]
async fn people_mint_api_keys_no_higher_than_their_role() {
    let idp = OidcProvider::start().await.unwrap();
    let ts = TestServer::start(&[], Some(&idp_file(&idp.issuer, ""))).await;
    wait_healthy(&ts).await;
    let alice = idp.authcode("alice", "kubehero", "kubehero-secret").await.unwrap().id_token;
    let bob = idp.authcode("bob", "kubehero", "kubehero-secret").await.unwrap().id_token;
    let r = ts.post("/api/v1/api-keys", Some(&alice), json!({ "name": "ci", "role": "owner" })).await;
    assert_eq!(error_code(&r), "permission_denied");
    let r = ts.post("/api/v1/api-keys", Some(&bob), json!({ "name": "ci", "role": "viewer" })).await;
    assert_eq!(error_code(&r), "permission_denied", "viewers mutate nothing");
    let r =
        ts.post("/api/v1/api-keys", Some(&alice), json!({ "name": "ci", "role": "admin", "expires_in_days": 7 })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let key = r.body["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("khk_"));
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(id, key_sub(&key));
    assert!(r.body.get("hash").is_none());
    // Shown once: listing never carries the key.
    let list = ts.get("/api/v1/api-keys", Some(&alice)).await;
    assert!(!list.body.to_string().contains(&key));
    assert_eq!(list.body["items"][0]["owner"], "alice");
    assert_eq!(ts.get("/api/v1/api-keys", Some(&bob)).await.body["items"], json!([]), "bob sees only his own");
    let me = ts.whoami(&key).await;
    assert_eq!(me["sub"], id);
    assert_eq!(me["role"], "admin");
    assert_eq!(me["kind"], "api_key");
    // Revocation is immediate.
    let r = ts.call(Method::DELETE, &format!("/api/v1/api-keys/{id}"), Some(&bob), None).await;
    assert_eq!(error_code(&r), "permission_denied");
    let r = ts.call(Method::DELETE, &format!("/api/v1/api-keys/{id}"), Some(&alice), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = ts.get("/api/v1/whoami", Some(&key)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn idp_down_at_startup_then_recovers() {
    let mut idp = OidcProvider::start().await.unwrap();
    let token = idp.client_credentials("kubehero", "kubehero-secret").await.unwrap();
    idp.stop().await;
    let ts = TestServer::start(&[("KUBEHERO_API_KEYS", &api_keys_env())], Some(&idp_file(&idp.issuer, ""))).await;
    // Ready (the database is fine), with the issuer reported unhealthy.
    let r = ts.get("/readyz", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["issuers"][0]["healthy"], false);
    assert!(r.body["issuers"][0]["last_error"].is_string() || r.body["issuers"][0]["last_error"].is_null());
    let r = ts.get("/api/v1/whoami", Some(&token)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "its tokens get 401");
    assert_eq!(ts.whoami(ADMIN).await["role"], "admin", "other credentials keep working");
    idp.restart(false).await.unwrap();
    wait_healthy(&ts).await;
    assert_eq!(ts.whoami(&token).await["sub"], "kubehero", "recovers by itself");
}

#[tokio::test]
async fn idp_down_after_warmup_keeps_cached_keys() {
    let mut idp = OidcProvider::start().await.unwrap();
    let ts = TestServer::start(&[], Some(&idp_file(&idp.issuer, ""))).await;
    wait_healthy(&ts).await;
    let t1 = idp.client_credentials("kubehero", "kubehero-secret").await.unwrap();
    let t2 = idp.client_credentials("kubehero-es", "kubehero-es-secret").await.unwrap();
    ts.whoami(&t1).await;
    idp.stop().await;
    // t2 was never seen: it is verified now, with the cached keys.
    assert_eq!(ts.whoami(&t2).await["sub"], "kubehero-es");
    assert_eq!(ts.get("/readyz", None).await.body["issuers"][0]["healthy"], true);
}

#[tokio::test]
async fn unknown_kid_flood_refetches_at_most_once_per_cooldown() {
    let idp = OidcProvider::start().await.unwrap();
    let ts = TestServer::start(&[], Some(&idp_file(&idp.issuer, "jwks_refetch_cooldown_secs = 60"))).await;
    wait_healthy(&ts).await;
    let good = idp.client_credentials("kubehero", "kubehero-secret").await.unwrap();
    ts.whoami(&good).await;
    let before = idp.jwks_hits().await.unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let h = json!({ "alg": "RS256", "kid": format!("attacker-{i}"), "typ": "at+jwt" });
        let forged = format!(
            "{}.{}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_string()),
            parts[1],
            parts[2]
        );
        let (http, url) = (ts.http.clone(), ts.url.clone());
        tasks.push(tokio::spawn(async move {
            http.get(format!("{url}/api/v1/whoami")).bearer_auth(forged).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    let after = idp.jwks_hits().await.unwrap();
    assert!(after - before <= 1, "{} JWKS fetches for 200 unknown kids", after - before);
    // Unknown kid but a foreign issuer: never fetched at all.
    let mut claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["iss"] = json!("http://127.0.0.1:1");
    let h = json!({ "alg": "RS256", "kid": "x" });
    let forged = format!(
        "{}.{}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_string()),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(ts.get("/api/v1/whoami", Some(&forged)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(idp.jwks_hits().await.unwrap(), after);
}

#[tokio::test]
async fn key_rotation_needs_one_refetch() {
    let mut idp = OidcProvider::start().await.unwrap();
    let ts = TestServer::start(&[], Some(&idp_file(&idp.issuer, ""))).await;
    wait_healthy(&ts).await;
    let old = idp.client_credentials("kubehero", "kubehero-secret").await.unwrap();
    ts.whoami(&old).await;
    idp.restart(true).await.unwrap();
    let new = idp.client_credentials("kubehero", "kubehero-secret").await.unwrap();
    assert_ne!(header(&new)["kid"], header(&old)["kid"]);
    let before = idp.jwks_hits().await.unwrap();
    assert_eq!(ts.whoami(&new).await["sub"], "kubehero");
    assert_eq!(idp.jwks_hits().await.unwrap() - before, 1, "exactly one refetch");
}
