//! HTTP calls from the CLI to one KubeHero server.
//!
//! Security rules: the token travels only in the `Authorization` header (marked sensitive), redirects are
//! not followed (an API never redirects; following one could carry the request elsewhere), and no error
//! built here contains a token: messages name the server, the status and the server's own message.

use super::credentials::Token;
use anyhow::{anyhow, bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// A client for one server.
pub struct Api {
    http: reqwest::Client,
    /// Normalised server URL (see [`normalize_server`]).
    pub server: String,
    /// The token comes from `KUBEHERO_TOKEN` (changes what a 401 tells the user to do).
    pub token_from_env: bool,
}

/// A response: its status and its JSON body (`Null` when the body is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

/// The server could not be reached or did not answer in time.
#[derive(Debug)]
pub struct Unreachable {
    server: String,
    source: reqwest::Error,
}

impl std::fmt::Display for Unreachable {
    /// The whole cause chain on one line (reqwest's own message is only "error sending request").
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot reach {}", self.server)?;
        let mut cause: Option<&dyn std::error::Error> = Some(&self.source);
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl std::error::Error for Unreachable {}

impl Unreachable {
    /// The error with what to do next.
    pub fn with_hint(self) -> anyhow::Error {
        anyhow!("{self}; check the server URL and that the server is running")
    }
}

impl Api {
    pub fn new(server: &str) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("kubehero-cli/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Api { http, server: server.to_string(), token_from_env: false })
    }

    /// One request; `Err` only when no response arrived.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&Token>,
        body: Option<&Value>,
    ) -> Result<Answer, Unreachable> {
        let unreachable = |source: reqwest::Error| Unreachable { server: self.server.clone(), source };
        let mut rb = self.http.request(method, format!("{}{path}", self.server));
        if let Some(t) = token {
            rb = rb.bearer_auth(t.expose());
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let r = rb.send().await.map_err(unreachable)?;
        let status = r.status();
        let bytes = r.bytes().await.map_err(unreachable)?;
        Ok(Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) })
    }

    /// A request that must succeed (2xx); any other answer becomes a one-line error saying what to do.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        token: &Token,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let a = self.call(method, path, Some(token), body).await.map_err(|e| e.with_hint())?;
        if a.status.is_success() {
            return Ok(a.body);
        }
        Err(self.refusal(&a, token))
    }

    /// The error for a non-2xx answer to a request made with `token`.
    pub fn refusal(&self, a: &Answer, token: &Token) -> anyhow::Error {
        let s = &self.server;
        match a.status {
            StatusCode::UNAUTHORIZED if self.token_from_env => anyhow!(
                "{s} rejected the {} in KUBEHERO_TOKEN ({}): set a valid one, or unset it to use `kubehero login`",
                token.kind(),
                server_message(a)
            ),
            StatusCode::UNAUTHORIZED => anyhow!(
                "{s} rejected the stored {} ({}): run `kubehero login --server {s}`{}",
                token.kind(),
                server_message(a),
                if token.is_cli_token() { "" } else { " (or `kubehero login --token-stdin`)" }
            ),
            StatusCode::FORBIDDEN => {
                anyhow!("{s} refused: {}; ask an owner of the server for access", server_message(a))
            }
            st if st.is_redirection() => anyhow!(
                "{s} answered with a redirect ({st}): check the server URL (https rather than http? a path prefix?)"
            ),
            st => anyhow!("{s} answered {st}: {}", server_message(a)),
        }
    }
}

/// The server's error message with its code and request id (`{"code","message","request_id"}`), or the
/// RFC 8628 / RFC 6749 `error` field.
pub fn server_message(a: &Answer) -> String {
    let b = &a.body;
    let message = b["message"].as_str().or(b["error_description"].as_str());
    let code = b["code"].as_str().or(b["error"].as_str());
    let mut out = match (message, code) {
        (Some(m), Some(c)) => format!("{m} ({c})"),
        (Some(m), None) => m.to_string(),
        (None, Some(c)) => c.to_string(),
        (None, None) => "no error details".to_string(),
    };
    if let Some(id) = b["request_id"].as_str() {
        out.push_str(&format!(", request id {id}"));
    }
    out
}

/// `https://host[:port][/prefix]` without a trailing slash; only http and https.
pub fn normalize_server(url: &str) -> anyhow::Result<String> {
    let u = url.trim().trim_end_matches('/');
    let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(['?', '#', ' ', '@']) => Ok(u.to_string()),
        _ => bail!("{url:?} is not a server URL: pass --server https://HOST[:PORT]"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn server_urls_are_normalised_or_refused() {
        assert_eq!(normalize_server("https://kh.example.com/").unwrap(), "https://kh.example.com");
        assert_eq!(normalize_server(" http://127.0.0.1:8080 ").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(normalize_server("https://h/prefix//").unwrap(), "https://h/prefix");
        for bad in ["kh.example.com", "ftp://h", "https://", "https://h?x=1", "https://user:pw@h"] {
            assert!(normalize_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_messages_carry_code_and_request_id() {
        let a = Answer {
            status: StatusCode::FORBIDDEN,
            body: serde_json::json!({"code": "forbidden", "message": "needs owner", "request_id": "r1"}),
        };
        assert_eq!(server_message(&a), "needs owner (forbidden), request id r1");
        let a = Answer { status: StatusCode::BAD_REQUEST, body: serde_json::json!({"error": "slow_down"}) };
        assert_eq!(server_message(&a), "slow_down");
    }

    #[test]
    fn a_401_says_how_to_log_in_and_never_shows_the_token() {
        let api = Api::new("https://kh").unwrap();
        let a = Answer { status: StatusCode::UNAUTHORIZED, body: serde_json::json!({"code": "unauthenticated"}) };
        let e = api.refusal(&a, &Token::new("khc_secret")).to_string();
        assert!(e.contains("kubehero login --server https://kh"), "{e}");
        assert!(!e.contains("khc_secret"), "{e}");
    }
}
