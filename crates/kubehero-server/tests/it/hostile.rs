//! Hostile clients against the real listener over TCP: slow headers, idle keep-alive, a full connection
//! table, and heads the HTTP layer refuses (each answered in the API's error shape with a request id).

use crate::support::TestServer;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes` on a new connection and reads until the server closes it.
async fn exchange(url: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(url.trim_start_matches("http://")).await.unwrap();
    // The server may answer and close before it reads everything (a refused head): ignore a broken pipe.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

/// The status, headers and JSON body of the last response in `raw`.
fn last_response(raw: &[u8]) -> (u16, String, Value) {
    let text = String::from_utf8_lossy(raw);
    let start = text.rfind("HTTP/1.1 ").expect("a response");
    let (head, body) = text[start..].split_once("\r\n\r\n").expect("a complete head");
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), serde_json::from_str(body).unwrap_or(Value::Null))
}

fn assert_shaped(raw: &[u8], status: u16, code: &str) {
    let (got, head, body) = last_response(raw);
    assert_eq!(got, status, "{head}");
    assert_eq!(body["code"], code, "{body}");
    let id = body["request_id"].as_str().unwrap();
    assert!(!id.is_empty());
    assert!(head.contains(&format!("x-request-id: {id}")), "{head}");
}

#[tokio::test]
async fn http_layer_errors_have_the_api_shape_and_a_request_id() {
    let srv = TestServer::start(&[("KUBEHERO_SCIM_TOKEN", &"s".repeat(40))], None).await;
    // A control byte in a header value: the HTTP parser's own refusal.
    let raw = exchange(&srv.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n").await;
    assert_shaped(&raw, 400, "invalid_argument");
    // A 70 KB URL, and 120 headers.
    let long = format!("GET /api/v1/whoami?q={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    assert_shaped(&exchange(&srv.url, long.as_bytes()).await, 414, "out_of_range");
    let many: String = (0..120).map(|i| format!("X-{i}: y\r\n")).collect();
    let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_shaped(&exchange(&srv.url, head.as_bytes()).await, 431, "out_of_range");
    // The same limit on the second request of a kept-alive connection.
    let two = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n{head}");
    assert_shaped(&exchange(&srv.url, two.as_bytes()).await, 431, "out_of_range");
    // Under /scim, SCIM's error schema.
    let raw = exchange(&srv.url, b"GET /scim/v2/Users HTTP/1.1\r\nHost: x\r\nX-A: \x01\r\n\r\n").await;
    let (status, head, body) = last_response(&raw);
    assert_eq!(status, 400);
    assert!(head.contains("x-request-id: "), "{head}");
    assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error", "{body}");
    // A chunked body over the limit: 413, not "failed to buffer".
    let chunk = "a".repeat(8192);
    let mut req = String::from(
        "POST /api/v1/clusters HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..40 {
        req.push_str(&format!("2000\r\n{chunk}\r\n"));
    }
    req.push_str("0\r\n\r\n");
    assert_shaped(&exchange(&srv.url, req.as_bytes()).await, 413, "out_of_range");
}

#[tokio::test]
async fn slow_clients_are_closed_while_others_are_answered() {
    let srv = TestServer::start(&[("KUBEHERO_HEADER_TIMEOUT_SECS", "2")], None).await;
    let addr = srv.url.trim_start_matches("http://").to_string();
    // 300 clients that send a header byte every half second and never finish.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let addr = addr.clone();
        slow.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return started.elapsed(),
                        Ok(_) => {}
                    },
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        if s.write_all(b"a").await.is_err() {
                            return started.elapsed();
                        }
                    }
                }
                assert!(started.elapsed() < Duration::from_secs(30), "a slow client was never closed");
            }
        }));
    }
    // Meanwhile everyone else is answered.
    for _ in 0..20 {
        assert_eq!(srv.get("/healthz", None).await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in slow {
        let held = s.await.unwrap();
        assert!(held < Duration::from_secs(10), "a slow client held its connection for {held:?}");
    }
    assert_eq!(srv.get("/healthz", None).await.status, StatusCode::OK);
    // An idle keep-alive connection is closed by the same clock.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "an idle keep-alive connection stayed open");
    assert_eq!(last_response(&out).0, 200);
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_408_and_the_connection_freed() {
    let srv = TestServer::start(
        &[("KUBEHERO_HEADER_TIMEOUT_SECS", "2"), ("KUBEHERO_API_KEYS", &crate::support::api_keys_env())],
        None,
    )
    .await;
    let started = Instant::now();
    let head = format!(
        "POST /api/v1/clusters HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"na",
        crate::support::ADMIN
    );
    let raw = exchange(&srv.url, head.as_bytes()).await;
    assert_shaped(&raw, 408, "deadline_exceeded");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
}

#[tokio::test]
async fn at_the_connection_cap_silent_connections_make_room_for_new_clients() {
    // A header timeout far longer than the client below waits: it is served because the cap closes the oldest
    // connection that never sent a request, not because one timed out.
    let srv =
        TestServer::start(&[("KUBEHERO_HEADER_TIMEOUT_SECS", "60"), ("KUBEHERO_MAX_CONNECTIONS", "16")], None).await;
    let addr = srv.url.trim_start_matches("http://").to_string();
    // Fill every slot with connections that say nothing.
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New clients are served at once, one silent connection closed for each.
    for _ in 0..3 {
        let raw = exchange(&srv.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert_eq!(last_response(&raw).0, 200);
    }
    let mut closed = 0;
    for mut c in idle.drain(..) {
        let mut buf = [0u8; 1];
        if matches!(tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await, Ok(Ok(0) | Err(_))) {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no silent connection was closed to make room");
    let metrics = srv.get("/metrics", None).await.body;
    let text = metrics.as_str().unwrap();
    let reached = text
        .lines()
        .find_map(|l| l.strip_prefix("kubehero_connection_limit_reached_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap();
    assert!(reached >= 1.0, "{text}");
}

/// Odd bytes (NUL, newlines, bidi controls) in every kind of input, and unknown nested fields: each one a 400
/// (401 for a token) on the given server, nothing stored, no 5xx.
async fn odd_bytes_corpus(ts: &TestServer, idp: &kubehero_testkit::oidc::OidcProvider) {
    use crate::support::{ADMIN, OWNER};
    use serde_json::json;
    let scim_token = "s".repeat(40);
    let user = |name: &str| json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name });
    let group = |name: &str| json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name });
    let cases: Vec<(&str, reqwest::Method, String, Option<Value>, &str)> = vec![
        ("NUL in a path id", reqwest::Method::GET, "/api/v1/clusters/a%00b".into(), None, ADMIN),
        ("NUL in a policy id", reqwest::Method::GET, "/api/v1/policies/p%00".into(), None, ADMIN),
        ("NUL in ?cluster=", reqwest::Method::GET, "/api/v1/policies?cluster=a%00b".into(), None, ADMIN),
        ("bidi in ?actor=", reqwest::Method::GET, "/api/v1/audit?actor=%E2%80%AEx".into(), None, OWNER),
        (
            "NUL in a cluster name",
            reqwest::Method::POST,
            "/api/v1/clusters".into(),
            Some(json!({ "name": "a\u{0}" })),
            ADMIN,
        ),
        (
            "newline in api_server_url",
            reqwest::Method::POST,
            "/api/v1/clusters".into(),
            Some(json!({ "name": "ok-1", "api_server_url": "https://k.example.com\nHost: evil" })),
            ADMIN,
        ),
        (
            "bidi in a label",
            reqwest::Method::POST,
            "/api/v1/clusters".into(),
            Some(json!({ "name": "ok-2", "labels": { "team": "a\u{202e}b" } })),
            ADMIN,
        ),
        (
            "NUL in a policy name",
            reqwest::Method::POST,
            "/api/v1/policies".into(),
            Some(json!({ "name": "p\u{0}", "cluster": "base", "spec": {} })),
            ADMIN,
        ),
        (
            "NUL in a binding's group",
            reqwest::Method::POST,
            "/api/v1/role-bindings".into(),
            Some(json!({ "subject": { "kind": "group", "name": "g\u{0}" }, "role": "viewer" })),
            OWNER,
        ),
        (
            "an unknown field in a nested object",
            reqwest::Method::POST,
            "/api/v1/role-bindings".into(),
            Some(json!({ "subject": { "kind": "group", "name": "g", "admin": true }, "role": "viewer" })),
            OWNER,
        ),
        ("SCIM userName with NUL", reqwest::Method::POST, "/scim/v2/Users".into(), Some(user("a\u{0}b")), "scim"),
        (
            "SCIM userName with a trailing space",
            reqwest::Method::POST,
            "/scim/v2/Users".into(),
            Some(user("seed1@example.com ")),
            "scim",
        ),
        (
            "SCIM userName of 100,000 characters",
            reqwest::Method::POST,
            "/scim/v2/Users".into(),
            Some(user(&"u".repeat(100_000))),
            "scim",
        ),
        (
            "SCIM displayName with bidi",
            reqwest::Method::POST,
            "/scim/v2/Groups".into(),
            Some(group("ops\u{2066}")),
            "scim",
        ),
        (
            "SCIM filter with NUL",
            reqwest::Method::GET,
            "/scim/v2/Users?filter=userName%20eq%20%22a%00%22".into(),
            None,
            "scim",
        ),
    ];
    for (what, method, path, body, who) in cases {
        let token = if who == "scim" { scim_token.as_str() } else { who };
        let mut rb = ts.http.request(method, format!("{}{path}", ts.url)).bearer_auth(token);
        if let Some(b) = &body {
            rb = rb.json(b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {text}");
    }
    // A signed token whose sub holds a NUL: refused as a credential, never a database error.
    let minter = idp.es256_minter().unwrap();
    for sub in ["a\u{0}b", "admin\u{202e}", "line\nbreak"] {
        let token = minter.mint(sub, "kubehero", 1).unwrap();
        assert_eq!(ts.get("/api/v1/whoami", Some(&token)).await.status, StatusCode::UNAUTHORIZED, "{sub:?}");
    }
    // Nothing of it was stored.
    let clusters = ts.get("/api/v1/clusters", Some(ADMIN)).await.body;
    assert_eq!(clusters["items"].as_array().unwrap().len(), 1, "{clusters}");
}

#[tokio::test]
async fn odd_bytes_get_a_clear_400_on_sqlite_and_postgres() {
    let idp = kubehero_testkit::oidc::OidcProvider::start().await.unwrap();
    let pg = kubehero_testkit::postgres::TempPostgres::start().await.unwrap();
    for database in [None, Some(pg.url.as_str())] {
        let keys = crate::support::api_keys_env();
        let scim = "s".repeat(40);
        let mut env = vec![
            ("KUBEHERO_REQUIRE_AUTH", "true"),
            ("KUBEHERO_API_KEYS", keys.as_str()),
            ("KUBEHERO_SCIM_TOKEN", scim.as_str()),
            ("OIDC_ISSUER_URL", idp.issuer.as_str()),
            ("OIDC_AUDIENCE", "kubehero"),
        ];
        if let Some(url) = database {
            env.push(("KUBEHERO_DATABASE_URL", url));
        }
        let ts = TestServer::start(&env, None).await;
        ts.wait_issuer_healthy().await;
        let base =
            ts.post("/api/v1/clusters", Some(crate::support::ADMIN), serde_json::json!({ "name": "base" })).await;
        assert_eq!(base.status, StatusCode::CREATED);
        odd_bytes_corpus(&ts, &idp).await;
    }
}
