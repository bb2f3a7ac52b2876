//! The audit point: one row per API request and per refused credential, durable before the answer, with the
//! request id of the response, no secret anywhere, readable by auditors and owners with filters and a
//! cursor, and 503 when the row cannot be written.

use crate::support::*;
use kubehero_audit::HmacKeys;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn rid(r: &Resp) -> String {
    r.headers["x-request-id"].to_str().unwrap().to_string()
}

/// Every row of the log, oldest first, read through the API as the owner (paging with the cursor).
async fn all_rows(ts: &TestServer) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/audit?limit=3&cursor={c}"),
            None => "/api/v1/audit?limit=3".to_string(),
        };
        let r = ts.get(&path, Some(OWNER)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        rows.extend(r.body["items"].as_array().unwrap().iter().cloned());
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    rows.reverse();
    rows
}

#[tokio::test]
async fn every_request_and_refused_credential_is_one_row() {
    let ts =
        TestServer::start(&[("KUBEHERO_REQUIRE_AUTH", "true"), ("KUBEHERO_API_KEYS", &api_keys_env())], None).await;
    let a = ts.get("/api/v1/whoami", Some(VIEWER)).await;
    let b = ts.post("/api/v1/clusters", Some(ADMIN), json!({ "name": "prod-eu" })).await;
    let c = ts.post("/api/v1/clusters", Some(VIEWER), json!({ "name": "prod-us" })).await;
    let d = ts.get("/api/v1/clusters/nope", Some(VIEWER)).await;
    let e = ts.get("/api/v1/whoami", Some("not-a-valid-key-0123456789")).await;
    let f = ts.get("/api/v1/clusters", None).await;
    let p = ts.post("/api/v1/policies", Some(MEMBER), json!({ "name": "p", "cluster": "prod-eu", "spec": {} })).await;
    let id = p.body["id"].as_str().unwrap().to_string();
    let g = ts.post(&format!("/api/v1/policies/{id}/arm"), Some(ADMIN), json!({})).await;
    // Not audited: health, metrics and unknown routes reach no handler.
    ts.get("/healthz", None).await;
    ts.get("/metrics", None).await;
    ts.get("/api/v1/nothing-here", Some(VIEWER)).await;

    let rows = all_rows(&ts).await;
    // The owner's own reads of the log are rows too: drop them.
    let rows: Vec<&Value> = rows.iter().filter(|r| r["action"] != "audit.read").collect();
    let summary: Vec<(String, String, String, Option<String>)> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["result"]["outcome"].as_str().unwrap().to_string(),
                r["request_id"].as_str().unwrap().to_string(),
                r["result"]["code"].as_str().map(str::to_string),
            )
        })
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        summary,
        [
            (s("whoami"), s("ok"), rid(&a), None),
            (s("cluster.register"), s("ok"), rid(&b), None),
            (s("cluster.register"), s("denied"), rid(&c), Some(s("permission_denied"))),
            (s("cluster.get"), s("error"), rid(&d), Some(s("not_found"))),
            (s("auth.failed"), s("denied"), rid(&e), Some(s("unauthenticated"))),
            (s("auth.failed"), s("denied"), rid(&f), Some(s("unauthenticated"))),
            (s("policy.create"), s("ok"), rid(&p), None),
            (s("policy.arm"), s("ok"), rid(&g), None),
        ]
    );
    assert_eq!(rows[0]["actor"]["sub"], key_sub(VIEWER));
    assert_eq!(rows[0]["actor"]["auth_method"], "api_key");
    assert_eq!(
        rows[1]["target"],
        json!({ "kind": "cluster", "id": "prod-eu", "cluster": "prod-eu", "namespace": null })
    );
    assert_eq!(
        rows[4]["actor"],
        json!({ "sub": "", "email": null, "groups": [], "kind": "unknown", "auth_method": "api_key" })
    );
    assert_eq!(rows[5]["actor"]["auth_method"], "none");
    assert_eq!(rows[7]["target"]["cluster"], "prod-eu");
    assert_eq!(rows[7]["target"]["id"], id.as_str());
    assert_eq!(rows[0]["source"], "127.0.0.1");
    // Sequence numbers have no gaps, every row carries a MAC.
    let seqs: Vec<i64> = all_rows(&ts).await.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    // No credential appears anywhere in the log.
    let text = serde_json::to_string(&all_rows(&ts).await).unwrap();
    for secret in [VIEWER, ADMIN, MEMBER, OWNER, "not-a-valid-key-0123456789", TEST_AUDIT_KEY] {
        assert!(!text.contains(secret), "{secret} leaked into the audit log");
    }
    // The chain verifies with the configured key.
    let keys = HmacKeys::new(TEST_AUDIT_KEY.as_bytes(), &[]).unwrap();
    let report = kubehero_audit::verify_store(&*ts.state().store, &keys, &[]).await.unwrap();
    let (head, _) = ts.state().store.audit_head().await.unwrap();
    assert_eq!((report.rows as i64, report.last_seq), (head, head));
    assert!(head > *seqs.last().unwrap(), "the reads of the log are rows too");
}

#[tokio::test]
async fn filters_and_permissions() {
    let ts = TestServer::start(&[("KUBEHERO_API_KEYS", &api_keys_env())], None).await;
    for name in ["a", "b", "c"] {
        ts.post("/api/v1/clusters", Some(ADMIN), json!({ "name": name })).await;
    }
    ts.post("/api/v1/clusters", Some(VIEWER), json!({ "name": "d" })).await;
    let ts = &ts;
    let q = |path: &'static str| async move { ts.get(path, Some(AUDITOR)).await };
    let r = q("/api/v1/audit?action=cluster.register&result=ok").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 3, "{}", r.body);
    let r = q("/api/v1/audit?result=denied").await;
    assert_eq!(r.body["items"][0]["actor"]["sub"], key_sub(VIEWER));
    let r = q("/api/v1/audit?cluster=b").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let sub = key_sub(ADMIN);
    let r = ts.get(&format!("/api/v1/audit?actor={sub}&since=2020-01-01T00:00:00Z"), Some(AUDITOR)).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 3);
    let r = q("/api/v1/audit?until=2020-01-01T00:00:00Z").await;
    assert_eq!(r.body["items"], json!([]));
    for bad in [
        "/api/v1/audit?limit=0",
        "/api/v1/audit?result=maybe",
        "/api/v1/audit?cursor=x",
        "/api/v1/audit?since=yesterday",
        "/api/v1/audit?colour=red",
    ] {
        let r = ts.get(bad, Some(AUDITOR)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
        assert_eq!(error_code(&r), "invalid_argument");
    }
    assert_eq!(ts.get("/api/v1/audit", Some(ADMIN)).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn unwritable_audit_log_refuses_requests_with_503() {
    let pg = kubehero_testkit::postgres::TempPostgres::start().await.unwrap();
    // Durable reads, so that a read (which needs no database itself) shows the refusal; under the default
    // (async) a read's answer does not wait for its row, while every write still does.
    let env = [
        ("KUBEHERO_API_KEYS", &*api_keys_env()),
        ("KUBEHERO_DATABASE_URL", &pg.url),
        ("KUBEHERO_AUDIT_READS", "durable"),
    ];
    let ts = TestServer::start(&env, None).await;
    assert_eq!(ts.get("/api/v1/whoami", Some(VIEWER)).await.status, StatusCode::OK);
    pg.stop_server();
    // whoami with a static key needs no database, but its audit row does: it is refused, not answered.
    let r = ts.call(Method::GET, "/api/v1/whoami", Some(VIEWER), None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(error_code(&r), "unavailable");
    assert!(r.body.get("sub").is_none(), "the handler's answer is not sent");
    let m = ts.get("/metrics", None).await;
    assert!(m.body.as_str().unwrap().contains("kubehero_audit_refused_requests_total 1"), "{}", m.body);
    pg.start_server();
    ts.wait_ok("/api/v1/whoami", Some(VIEWER)).await; // recovers once the database is back
    let keys_path = ts.data_dir().join("audit-hmac.key");
    let keys = HmacKeys::new(&std::fs::read(keys_path).unwrap(), &[]).unwrap();
    let report = kubehero_audit::verify_store(&*ts.state().store, &keys, &[]).await.unwrap();
    assert!(report.rows >= 2);
}

#[tokio::test]
async fn shutdown_writes_a_signed_checkpoint_and_keys_persist() {
    let mut ts = TestServer::start(&[("KUBEHERO_API_KEYS", &api_keys_env())], None).await;
    ts.get("/api/v1/whoami", Some(VIEWER)).await;
    let key_file = ts.data_dir().join("audit-hmac.key");
    let meta = std::fs::metadata(&key_file).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600);
    let store = ts.state().store.clone();
    ts.stop().await;
    let head = store.audit_head().await.unwrap();
    let cps = store.checkpoints().await.unwrap();
    assert_eq!(cps.last().map(|c| (c.seq, c.mac.clone())), Some(head.clone()), "checkpoint at the head");
    let keys = HmacKeys::new(&std::fs::read(&key_file).unwrap(), &[]).unwrap();
    let report = kubehero_audit::verify_store(&*store, &keys, &[]).await.unwrap();
    assert_eq!(report.last_checkpoint, Some(head.0));
}

#[tokio::test]
async fn serve_forwards_to_syslog_and_reports_lag() {
    let syslog = kubehero_testkit::rsyslog::Rsyslog::start().await.unwrap();
    let sink = format!("tcp://127.0.0.1:{}", syslog.port);
    let ts =
        TestServer::start(&[("KUBEHERO_API_KEYS", &api_keys_env()), ("KUBEHERO_AUDIT_FORWARD", &sink)], None).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(rid(&ts.get("/api/v1/whoami", Some(VIEWER)).await));
    }
    let msgs = syslog
        .wait_for(std::time::Duration::from_secs(20), |m| {
            let text = serde_json::to_string(m).unwrap();
            ids.iter().all(|id| text.contains(id.as_str()))
        })
        .await
        .unwrap();
    assert!(msgs.len() >= 20);
    let m = ts.get("/metrics", None).await;
    let text = m.body.as_str().unwrap();
    let line = text.lines().find(|l| l.starts_with("kubehero_audit_forward_lag_rows{")).unwrap();
    assert!(line.contains(&format!("sink=\"syslog+{sink}\"")), "{line}");
    // A bad sink URL stops start-up with a message naming the variable.
    let mut env: std::collections::HashMap<String, String> =
        [("KUBEHERO_AUDIT_FORWARD", "ftp://x")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.insert("KUBEHERO_DATA_DIR".into(), ts.data_dir().display().to_string());
    let e = kubehero_server::config::ServerConfig::from_parts(&env, Default::default()).unwrap_err().to_string();
    assert!(e.starts_with("KUBEHERO_AUDIT_FORWARD") && e.contains("Fix:"), "{e}");
}

/// `KUBEHERO_AUDIT_READS`: plain reads go into the one chain without their answer waiting (async, the
/// default), or as durable rows, or not at all (off) — where a denied read is still recorded. After a clean
/// shutdown every answered read is in the chain, and the chain verifies.
#[tokio::test]
async fn audit_levels_for_plain_reads() {
    for level in ["async", "durable", "off"] {
        let mut ts = TestServer::start(
            &[
                ("KUBEHERO_REQUIRE_AUTH", "true"),
                ("KUBEHERO_API_KEYS", &api_keys_env()),
                ("KUBEHERO_AUDIT_READS", level),
            ],
            None,
        )
        .await;
        let mut reads = Vec::new();
        for _ in 0..200 {
            reads.push(rid(&ts.get("/api/v1/clusters", Some(VIEWER)).await));
        }
        let denied = rid(&ts.get("/api/v1/settings", Some(VIEWER)).await);
        let refused = rid(&ts.get("/api/v1/clusters", Some("not-a-valid-key-0123456789")).await);
        let write = rid(&ts.post("/api/v1/clusters", Some(ADMIN), json!({ "name": "prod" })).await);
        let url = format!("sqlite:{}", ts.data_dir().join("kubehero.db").display());
        ts.stop().await;

        let store = kubehero_store::open(&url).await.unwrap();
        let rows = store.audit_rows(0, 10_000).await.unwrap();
        let ids: std::collections::HashSet<String> = rows
            .iter()
            .map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["request_id"].as_str().unwrap().to_string())
            .collect();
        for id in [&denied, &refused, &write] {
            assert!(ids.contains(id), "{level}: a denial, a refused credential and a write are always recorded");
        }
        let recorded = reads.iter().filter(|id| ids.contains(*id)).count();
        let expected = if level == "off" { 0 } else { reads.len() };
        assert_eq!(recorded, expected, "{level}: plain reads in the chain after a clean shutdown");
        let keys = HmacKeys::new(TEST_AUDIT_KEY.as_bytes(), &[]).unwrap();
        let report = kubehero_audit::verify_store(&*store, &keys, &[]).await.unwrap();
        assert_eq!(report.rows as usize, rows.len(), "{level}");
    }
}

/// A refused credential's row names its kind by shape (never any of the credential): a bad CLI token is a
/// `cli_token`, a bad managed key an `api_key`, a malformed JWT a `jwt`, a stale session cookie a `session`.
#[tokio::test]
async fn refused_credentials_are_labelled_by_kind() {
    let ts = TestServer::start(&[("KUBEHERO_API_KEYS", &api_keys_env())], None).await;
    let cases = [
        ("khc_not-a-real-cli-token-000000000000", "cli_token"),
        ("khk_not-a-real-managed-key-00000000000", "api_key"),
        ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "jwt"),
    ];
    let mut ids = Vec::new();
    for (token, _) in cases {
        let r = ts.get("/api/v1/whoami", Some(token)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        ids.push(rid(&r));
    }
    let r = ts.http.get(format!("{}/api/v1/whoami", ts.url)).header("cookie", "kh_session=khs_stale").send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    ids.push(r.headers()["x-request-id"].to_str().unwrap().to_string());
    let rows = all_rows(&ts).await;
    let expected = cases.iter().map(|(_, k)| *k).chain(["session"]);
    for (id, kind) in ids.iter().zip(expected) {
        let row = rows.iter().find(|r| r["request_id"] == json!(id)).unwrap();
        assert_eq!(row["action"], "auth.failed");
        assert_eq!(row["actor"]["auth_method"], kind, "{row}");
        assert!(!row.to_string().contains("not-a-real"), "no part of the credential is kept: {row}");
    }
}
