//! Starting a server for a test and talking to it.

use kubehero_server::config::{FileConfig, ServerConfig};
use kubehero_server::RunningServer;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::HashMap;

/// Static API keys of every role, as `KUBEHERO_API_KEYS` would list them.
pub const VIEWER: &str = "viewer-key-0123456789abcdef";
pub const MEMBER: &str = "member-key-0123456789abcdef";
pub const AUDITOR: &str = "auditor-key-0123456789abcdef";
pub const ADMIN: &str = "admin-key-0123456789abcdef";
pub const OWNER: &str = "owner-key-0123456789abcdef";

pub fn api_keys_env() -> String {
    format!("{VIEWER}:viewer,{MEMBER}:member,{AUDITOR}:auditor,{ADMIN}:admin,{OWNER}:owner")
}

/// The `sub` of a static API key: the first 16 hex chars of its SHA-256.
pub fn key_sub(key: &str) -> String {
    kubehero_authn::sha256_hex(key)[..16].to_string()
}

pub struct TestServer {
    pub url: String,
    pub server: Option<RunningServer>,
    pub http: reqwest::Client,
    pub _dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// The audit HMAC key of servers that require authentication (open-mode servers generate their own).
pub const TEST_AUDIT_KEY: &str = "test-audit-hmac-key-0123456789abcdef";

impl TestServer {
    /// Starts a server on SQLite in a temp dir with the given env and optional config-file TOML.
    pub async fn start(env: &[(&str, &str)], file: Option<&str>) -> TestServer {
        Self::start_with_clock(env, file, std::sync::Arc::new(kubehero_server::state::SystemClock)).await
    }

    /// [`TestServer::start`] with an injected clock (session expiry tests).
    pub async fn start_with_clock(
        env: &[(&str, &str)],
        file: Option<&str>,
        clock: std::sync::Arc<dyn kubehero_server::state::Clock>,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut map: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        map.entry("KUBEHERO_LISTEN".into()).or_insert_with(|| "127.0.0.1:0".into());
        map.entry("KUBEHERO_AGENT_LISTEN".into()).or_insert_with(|| "127.0.0.1:0".into());
        map.insert("KUBEHERO_DATA_DIR".into(), dir.path().display().to_string());
        if map.get("KUBEHERO_REQUIRE_AUTH").is_some_and(|v| v == "true") {
            map.entry("AUDIT_HMAC_KEY".into()).or_insert_with(|| TEST_AUDIT_KEY.into());
        }
        let file: FileConfig = file.map(|f| toml::from_str(f).unwrap()).unwrap_or_default();
        let cfg = ServerConfig::from_parts(&map, file).unwrap();
        let store = kubehero_server::open_store(&cfg).await.unwrap();
        let server = kubehero_server::start_with(&cfg, store, clock).await.unwrap();
        // With TLS configured, the test client trusts the server's own certificate.
        let (scheme, http) = match map.get("KUBEHERO_TLS_CERT") {
            Some(cert) => {
                let pem = std::fs::read(cert).unwrap();
                let root = reqwest::Certificate::from_pem(&pem).unwrap();
                ("https", reqwest::Client::builder().add_root_certificate(root).build().unwrap())
            }
            None => ("http", reqwest::Client::new()),
        };
        TestServer { url: format!("{scheme}://{}", server.addr), server: Some(server), http, _dir: dir }
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut rb = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp { status, headers, body }
    }

    /// The same request as [`TestServer::call`], handed to the router in process with `tower::oneshot`: no
    /// TCP, no HTTP client, the router and its layers exactly as `serve` builds them.
    pub async fn oneshot(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        use tower::ServiceExt;
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(axum::body::Body::from(b.to_string())),
            None => req.body(axum::body::Body::empty()),
        };
        let res = kubehero_server::routes::app(self.state().clone()).oneshot(req.unwrap()).await.unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        let bytes = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp { status, headers, body }
    }

    /// The running server's state (store, audit log).
    pub fn state(&self) -> &kubehero_server::state::AppState {
        &self.server.as_ref().unwrap().state
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().to_path_buf()
    }

    /// Shuts the server down (final checkpoint included) and waits.
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// Polls `GET path` with `token` until it answers 200 (10 s at most), e.g. after a database restart.
    pub async fn wait_ok(&self, path: &str, token: Option<&str>) {
        for _ in 0..50 {
            if self.get(path, token).await.status == StatusCode::OK {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        panic!("GET {path} never answered 200");
    }

    /// Waits until the first configured issuer is healthy in `/readyz` (its keys are loaded).
    pub async fn wait_issuer_healthy(&self) {
        for _ in 0..100 {
            if self.get("/readyz", None).await.body["issuers"][0]["healthy"] == true {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("issuer never became healthy");
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn whoami(&self, token: &str) -> Value {
        let r = self.get("/api/v1/whoami", Some(token)).await;
        assert_eq!(r.status, StatusCode::OK, "whoami: {}", r.body);
        r.body
    }
}

/// Asserts the error shape of ARCHITECTURE.md and returns the code.
pub fn error_code(r: &Resp) -> String {
    let rid = r.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(!rid.is_empty(), "every response carries X-Request-Id");
    assert_eq!(r.body["request_id"], Value::String(rid), "error body carries the request id: {}", r.body);
    assert!(r.body["message"].is_string(), "{}", r.body);
    r.body["code"].as_str().unwrap_or_default().to_string()
}
