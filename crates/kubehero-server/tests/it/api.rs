//! Error shapes, request ids, open vs required auth, health, metrics, and resource lifecycles.

use crate::support::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn open_mode_is_anonymous_viewer_but_bad_credentials_are_401() {
    let ts = TestServer::start(&[("KUBEHERO_API_KEYS", &api_keys_env())], None).await;
    let me = ts.get("/api/v1/whoami", None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["sub"], "anonymous");
    assert_eq!(me.body["role"], "viewer");
    assert_eq!(me.body["auth_method"], "anonymous");
    for bad in ["garbage", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "khk_unknown", "a.b.c"] {
        let r = ts.get("/api/v1/whoami", Some(bad)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(error_code(&r), "unauthenticated");
        assert!(!r.body["message"].as_str().unwrap().contains(bad) || bad.len() < 6, "token echoed: {}", r.body);
    }
    // Malformed Authorization headers are 401 too, never anonymous.
    for h in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "bearer"] {
        let r = ts.http.get(format!("{}/api/v1/whoami", ts.url)).header("authorization", h).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{h:?}");
    }
    let me = ts.whoami(ADMIN).await;
    assert_eq!(me["sub"], key_sub(ADMIN));
    assert_eq!(me["roles"], json!(["admin"]));
    assert_eq!(me["role"], "admin");
    assert_eq!(me["auth_method"], "api_key");
}

#[tokio::test]
async fn require_auth_refuses_missing_credentials() {
    let ts =
        TestServer::start(&[("KUBEHERO_REQUIRE_AUTH", "true"), ("KUBEHERO_API_KEYS", &api_keys_env())], None).await;
    let r = ts.get("/api/v1/clusters", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"kubehero\"");
    assert_eq!(error_code(&r), "unauthenticated");
    assert_eq!(ts.get("/api/v1/clusters", Some(VIEWER)).await.status, StatusCode::OK);
    assert_eq!(ts.get("/healthz", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn errors_have_one_shape_and_request_ids() {
    let ts = TestServer::start(&[("KUBEHERO_API_KEYS", &api_keys_env())], None).await;
    let r = ts.get("/no/such/route", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&r), "not_found");
    let r = ts.call(Method::PATCH, "/api/v1/clusters", Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&r), "unimplemented");
    let r = ts.get("/api/v1/clusters/nope", Some(VIEWER)).await;
    assert_eq!(error_code(&r), "not_found");
    // Malformed JSON, wrong types, unknown fields, missing content type: 400 invalid_argument.
    for body in ["{", "[]", "{\"name\": 5}", "{\"name\":\"a\",\"extra\":1}", "\u{0}"] {
        let r = ts
            .http
            .post(format!("{}/api/v1/clusters", ts.url))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body:?}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["code"], "invalid_argument");
    }
    let r = ts.http.post(format!("{}/api/v1/clusters", ts.url)).bearer_auth(ADMIN).body("{}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Oversize body: 413 out_of_range, and the server keeps serving.
    let big = format!("{{\"name\":\"{}\"}}", "a".repeat(200_000));
    let r = ts
        .http
        .post(format!("{}/api/v1/clusters", ts.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "out_of_range");
    // Invalid names: 400; duplicates: 409 already_exists.
    let r = ts.post("/api/v1/clusters", Some(ADMIN), json!({ "name": "Bad_Name" })).await;
    assert_eq!(error_code(&r), "invalid_argument");
    assert_eq!(ts.post("/api/v1/clusters", Some(ADMIN), json!({ "name": "prod" })).await.status, StatusCode::CREATED);
    let r = ts.post("/api/v1/clusters", Some(ADMIN), json!({ "name": "prod" })).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(error_code(&r), "already_exists");
    // A caller's sane request id is kept; an unsafe one is replaced.
    let r = ts.http.get(format!("{}/healthz", ts.url)).header("x-request-id", "lb-1234").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "lb-1234");
    let r = ts.http.get(format!("{}/healthz", ts.url)).header("x-request-id", "<script>").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"].len(), 32);
}

#[tokio::test]
async fn policy_lifecycle_keeps_history() {
    let ts = TestServer::start(&[("KUBEHERO_API_KEYS", &api_keys_env())], None).await;
    ts.post("/api/v1/clusters", Some(ADMIN), json!({ "name": "prod" })).await;
    let r =
        ts.post("/api/v1/policies", Some(MEMBER), json!({ "name": "deny-exec", "cluster": "nope", "spec": {} })).await;
    assert_eq!(error_code(&r), "invalid_argument", "unregistered cluster");
    let p = ts
        .post("/api/v1/policies", Some(MEMBER), json!({ "name": "deny-exec", "cluster": "prod", "spec": { "a": 1 } }))
        .await;
    assert_eq!(p.status, StatusCode::CREATED);
    assert_eq!(p.body["state"], "draft");
    let id = p.body["id"].as_str().unwrap().to_string();
    let put = |v: i64| json!({ "name": "deny-exec", "spec": { "a": 2 }, "version": v });
    let r = ts.call(Method::PUT, &format!("/api/v1/policies/{id}"), Some(MEMBER), Some(put(1))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["version"], 2);
    let r = ts.call(Method::PUT, &format!("/api/v1/policies/{id}"), Some(MEMBER), Some(put(1))).await;
    assert_eq!(error_code(&r), "failed_precondition", "stale version");
    let arm = ts.post(&format!("/api/v1/policies/{id}/arm"), Some(ADMIN), json!({})).await;
    assert_eq!(arm.body["state"], "armed");
    let r = ts.post(&format!("/api/v1/policies/{id}/arm"), Some(ADMIN), json!({})).await;
    assert_eq!(error_code(&r), "failed_precondition", "already armed");
    let r = ts.call(Method::PUT, &format!("/api/v1/policies/{id}"), Some(MEMBER), Some(put(3))).await;
    assert_eq!(error_code(&r), "failed_precondition", "armed policies are not editable");
    assert_eq!(
        ts.post(&format!("/api/v1/policies/{id}/disarm"), Some(ADMIN), json!({})).await.body["state"],
        "disarmed"
    );
    assert_eq!(ts.post(&format!("/api/v1/policies/{id}/undo"), Some(ADMIN), json!({})).await.body["state"], "armed");
    let h = ts.get(&format!("/api/v1/policies/{id}/history"), Some(VIEWER)).await;
    let actions: Vec<_> =
        h.body["items"].as_array().unwrap().iter().map(|t| t["action"].as_str().unwrap().to_string()).collect();
    assert_eq!(actions, ["create", "update", "arm", "disarm", "undo"]);
    let seqs: Vec<_> = h.body["items"].as_array().unwrap().iter().map(|t| t["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(h.body["items"][4]["actor"], key_sub(ADMIN));
    // Each undo steps one further back (it does not undo the undo): the arm is undone next, then nothing is left.
    let undo = format!("/api/v1/policies/{id}/undo");
    assert_eq!(ts.post(&undo, Some(ADMIN), json!({})).await.body["state"], "draft");
    let r = ts.post(&undo, Some(ADMIN), json!({})).await;
    assert_eq!(error_code(&r), "failed_precondition", "{}", r.body);
}

#[tokio::test]
async fn settings_redact_secrets_and_bindings_apply_at_once() {
    let ts = TestServer::start(&[("KUBEHERO_API_KEYS", &api_keys_env())], None).await;
    let r = ts
        .call(
            Method::PUT,
            "/api/v1/settings/idp",
            Some(OWNER),
            Some(json!({ "client_id": "kh", "client_secret": "s3cret", "nested": { "api_token": "t" } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = ts.get("/api/v1/settings/idp", Some(AUDITOR)).await;
    assert_eq!(r.body["client_secret"], "***");
    assert_eq!(r.body["nested"]["api_token"], "***");
    assert_eq!(r.body["client_id"], "kh");
    assert!(!ts.get("/api/v1/settings", Some(OWNER)).await.body.to_string().contains("s3cret"));
    assert_eq!(ts.get("/api/v1/settings/nope", Some(OWNER)).await.status, StatusCode::NOT_FOUND);
    // A user binding for the viewer key's sub makes it a scoped admin immediately.
    let r = ts
        .post(
            "/api/v1/role-bindings",
            Some(OWNER),
            json!({ "subject": { "kind": "user", "name": key_sub(VIEWER) }, "role": "admin", "cluster": "prod-*" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let me = ts.whoami(VIEWER).await;
    assert_eq!(me["scoped_roles"], json!([{ "role": "admin", "cluster": "prod-*", "namespace": null }]));
    assert_eq!(
        ts.post("/api/v1/clusters", Some(VIEWER), json!({ "name": "prod-1" })).await.status,
        StatusCode::CREATED
    );
    let bad = ts
        .post(
            "/api/v1/role-bindings",
            Some(OWNER),
            json!({ "subject": { "kind": "group", "name": "g" }, "role": "admin", "namespace": "x" }),
        )
        .await;
    assert_eq!(error_code(&bad), "invalid_argument");
    let dup = ts
        .post(
            "/api/v1/role-bindings",
            Some(OWNER),
            json!({ "subject": { "kind": "user", "name": key_sub(VIEWER) }, "role": "admin", "cluster": "prod-*" }),
        )
        .await;
    assert_eq!(error_code(&dup), "already_exists");
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let ts = TestServer::start(&[("KUBEHERO_API_KEYS", &api_keys_env())], None).await;
    ts.get("/api/v1/whoami", Some(VIEWER)).await;
    ts.get("/api/v1/whoami", Some("bogus")).await;
    let r = ts.get("/readyz", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["database"]["backend"], "sqlite");
    let m = ts.get("/metrics", None).await;
    let text = m.body.as_str().unwrap();
    assert!(text.contains("kubehero_authentications_total{method=\"api_key\",result=\"ok\"} 1"), "{text}");
    assert!(text.contains("kubehero_authentications_total{method=\"jwt\""), "{text}");
    assert!(text.contains("kubehero_token_verification_seconds"), "{text}");
    assert!(!text.contains(VIEWER));
    // The classic text format by default: every counter's TYPE names its `_total` samples.
    assert!(m.headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    assert!(text.contains("# TYPE kubehero_audit_rows_written_total counter\n"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("kubehero_audit_rows_written_total ")), "{text}");
    assert!(!text.contains("# EOF"), "{text}");
    // OpenMetrics when asked for.
    let open = ts
        .http
        .get(format!("{}/metrics", ts.url))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(open.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = open.text().await.unwrap();
    assert!(text.contains("# TYPE kubehero_audit_rows_written counter\n") && text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test]
async fn postgres_backend_serves_the_same_api() {
    let pg = kubehero_testkit::postgres::TempPostgres::start().await.unwrap();
    let ts =
        TestServer::start(&[("KUBEHERO_API_KEYS", &api_keys_env()), ("KUBEHERO_DATABASE_URL", &pg.url)], None).await;
    assert_eq!(ts.get("/readyz", None).await.body["database"]["backend"], "postgres");
    assert_eq!(ts.post("/api/v1/clusters", Some(ADMIN), json!({ "name": "prod" })).await.status, StatusCode::CREATED);
    assert_eq!(ts.get("/api/v1/clusters", Some(VIEWER)).await.body["items"][0]["name"], "prod");
    // The database going away is 503 unavailable for requests that need it, and /readyz says so.
    pg.stop_server();
    let r = ts.get("/api/v1/clusters", Some(VIEWER)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(error_code(&r), "unavailable");
    assert_eq!(ts.get("/readyz", None).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ts.get("/healthz", None).await.status, StatusCode::OK);
    pg.start_server();
    ts.wait_ok("/api/v1/clusters", Some(VIEWER)).await; // recovers once the database is back
}

#[tokio::test]
async fn the_data_dir_is_private_and_its_database_files_are_0600() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("new").join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let env: std::collections::HashMap<String, String> =
        [("KUBEHERO_DATA_DIR".to_string(), dir.display().to_string())].into_iter().collect();
    let cfg = kubehero_server::config::ServerConfig::from_parts(&env, Default::default()).unwrap();
    let store = kubehero_server::open_store(&cfg).await.unwrap();
    store
        .create_cluster(&kubehero_store::Cluster {
            name: "c".into(),
            api_server_url: None,
            labels: Default::default(),
            created_by: "t".into(),
            created_at: 1,
        })
        .await
        .unwrap();
    assert_eq!(mode(&dir), 0o700);
    for f in ["kubehero.db", "kubehero.db-wal", "kubehero.db-shm"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    drop(store);
    // A directory and database left readable by an older version are tightened at start-up.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join("kubehero.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = kubehero_server::open_store(&cfg).await.unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("kubehero.db")), 0o600);
}

#[tokio::test]
async fn an_unknown_id_is_not_found_for_whoever_may_see_the_kind() {
    let ts = TestServer::start(&[("KUBEHERO_API_KEYS", &api_keys_env())], None).await;
    assert_eq!(ts.post("/api/v1/clusters", Some(ADMIN), json!({ "name": "prod" })).await.status, StatusCode::CREATED);
    let b = ts
        .post(
            "/api/v1/role-bindings",
            Some(OWNER),
            json!({ "subject": { "kind": "group", "name": "g" }, "role": "viewer" }),
        )
        .await;
    let binding = b.body["id"].as_str().unwrap().to_string();
    // A viewer may see clusters and bindings: unknown ones are not found, known ones are not theirs to delete.
    let known = format!("/api/v1/role-bindings/{binding}");
    for (path, code) in [
        ("/api/v1/clusters/nope", "not_found"),
        ("/api/v1/clusters/prod", "permission_denied"),
        ("/api/v1/role-bindings/rb_nope", "not_found"),
        (known.as_str(), "permission_denied"),
    ] {
        assert_eq!(error_code(&ts.call(Method::DELETE, path, Some(VIEWER), None).await), code, "{path}");
    }
    assert_eq!(error_code(&ts.call(Method::POST, "/api/v1/policies/nope/arm", Some(VIEWER), None).await), "not_found");
    assert_eq!(
        error_code(&ts.call(Method::DELETE, "/api/v1/api-keys/0123456789abcdef", Some(MEMBER), None).await),
        "not_found"
    );
}
