//! The OAuth 2.0 Device Authorization Grant, client side (RFC 8628).
//!
//! §3.1–3.2: request a device code; §3.3: show the person the verification URI and the user code;
//! §3.4–3.5: poll the token endpoint no faster than `interval`, keep polling on `authorization_pending`,
//! add 5 seconds to the interval on `slow_down`, stop on `expired_token` / `access_denied`, and back off
//! exponentially while the server cannot be reached. The device code is a secret (whoever holds it
//! receives the token), so it is a [`Token`] and never printed.

use super::client::{server_message, Answer, Api};
use super::credentials::Token;
use anyhow::{anyhow, bail, Context};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// RFC 8628 §3.2: "If no value is provided, clients MUST use 5 as the default."
const DEFAULT_INTERVAL: u64 = 5;
/// RFC 8628 §3.5: on `slow_down` "the interval MUST be increased by 5 seconds for this and all
/// subsequent requests".
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// Longest wait between two polls while the server is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A server may not keep the CLI waiting longer than this, whatever `expires_in` says.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// The device authorization response (RFC 8628 §3.2).
#[derive(Debug, Deserialize)]
pub struct DeviceCode {
    device_code: Token,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    #[serde(default = "default_interval")]
    pub interval: u64,
}

fn default_interval() -> u64 {
    DEFAULT_INTERVAL
}

/// The access token response (RFC 8628 §3.5, RFC 6749 §5.1).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub access_token: Token,
    pub token_type: String,
    /// Seconds.
    pub expires_in: Option<i64>,
}

/// What one poll of the token endpoint says to do next.
#[derive(Debug)]
enum Poll {
    Pending,
    SlowDown,
    Done(TokenResponse),
    Failed(anyhow::Error),
}

/// Runs one device authorization against `api` and returns the token.
pub async fn authorize(api: &Api) -> anyhow::Result<TokenResponse> {
    let code = request_code(api).await?;
    let lifetime = Duration::from_secs(code.expires_in).min(MAX_LIFETIME);
    let deadline = Instant::now() + lifetime;
    present(&code, lifetime);
    let mut interval = Duration::from_secs(code.interval.max(1));
    let mut wait = interval;
    let mut errors = kubehero_core::backoff::Backoff::new(interval, MAX_BACKOFF);
    let mut warned = false;
    let dots = std::io::stderr().is_terminal();
    loop {
        tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
        if Instant::now() >= deadline {
            bail!("the code {} expired before it was confirmed: run `kubehero login` again", code.user_code);
        }
        let body = serde_json::json!({ "device_code": code.device_code.expose() });
        let answer = match api.call(Method::POST, "/api/auth/device/token", None, Some(&body)).await {
            Ok(a) => a,
            Err(e) => {
                if !warned {
                    eprintln!("{e:#}; still waiting (retrying with backoff)…");
                    warned = true;
                }
                wait = errors.next_wait();
                continue;
            }
        };
        errors.reset();
        match classify(answer) {
            Poll::Pending => wait = interval,
            Poll::SlowDown => {
                interval += SLOW_DOWN_STEP;
                wait = interval;
            }
            Poll::Done(t) => {
                if dots {
                    eprintln!();
                }
                return Ok(t);
            }
            Poll::Failed(e) => {
                if dots {
                    eprintln!();
                }
                return Err(e);
            }
        }
        if dots {
            eprint!(".");
        }
    }
}

async fn request_code(api: &Api) -> anyhow::Result<DeviceCode> {
    let a = api
        .call(Method::POST, "/api/auth/device/code", None, Some(&serde_json::json!({})))
        .await
        .map_err(|e| e.with_hint())?;
    if a.status == StatusCode::NOT_FOUND {
        bail!("{} does not offer CLI sign-in (no device authorization endpoint): upgrade the server", api.server);
    }
    if !a.status.is_success() {
        bail!("{} refused to start a sign-in ({}): {}", api.server, a.status, server_message(&a));
    }
    serde_json::from_value(a.body)
        .with_context(|| format!("{} answered the device authorization with an unexpected body", api.server))
}

/// RFC 8628 §3.3: tell the person where to go and which code to confirm.
fn present(code: &DeviceCode, lifetime: Duration) {
    eprintln!("Open {} and confirm code {}", code.verification_uri, code.user_code);
    let complete = code.verification_uri_complete.as_deref().unwrap_or(&code.verification_uri);
    if complete != code.verification_uri {
        eprintln!("  (or open {complete} , which fills the code in)");
    }
    eprintln!("Waiting for confirmation (the code expires in {} min)…", lifetime.as_secs().div_ceil(60));
}

/// RFC 8628 §3.5: the token endpoint's answer to one poll.
fn classify(a: Answer) -> Poll {
    if a.status.is_success() {
        return match serde_json::from_value::<TokenResponse>(a.body) {
            Ok(t) if t.token_type.eq_ignore_ascii_case("bearer") && !t.access_token.expose().is_empty() => {
                Poll::Done(t)
            }
            Ok(t) => Poll::Failed(anyhow!("the server issued an unusable token (type {:?})", t.token_type)),
            Err(e) => Poll::Failed(anyhow!("the server's token response has an unexpected body: {e}")),
        };
    }
    match a.body["error"].as_str() {
        Some("authorization_pending") => Poll::Pending,
        Some("slow_down") => Poll::SlowDown,
        Some("expired_token") => {
            Poll::Failed(anyhow!("the code expired before it was confirmed: run `kubehero login` again"))
        }
        Some("invalid_grant") => {
            Poll::Failed(anyhow!("the server no longer knows this sign-in (invalid_grant): run `kubehero login` again"))
        }
        Some("access_denied") => Poll::Failed(anyhow!(
            "the sign-in was denied in the browser: run `kubehero login` again if that was a mistake"
        )),
        _ => Poll::Failed(anyhow!("the server refused the sign-in ({}): {}", a.status, server_message(&a))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn answer(status: u16, body: serde_json::Value) -> Answer {
        Answer { status: StatusCode::from_u16(status).unwrap(), body }
    }

    #[test]
    fn polls_are_classified_as_rfc_8628_section_3_5_says() {
        assert!(matches!(classify(answer(400, json!({"error": "authorization_pending"}))), Poll::Pending));
        assert!(matches!(classify(answer(400, json!({"error": "slow_down"}))), Poll::SlowDown));
        for (error, says) in [("expired_token", "expired"), ("access_denied", "denied")] {
            match classify(answer(400, json!({ "error": error }))) {
                Poll::Failed(e) => assert!(e.to_string().contains(says), "{e}"),
                p => panic!("{error}: {p:?}"),
            }
        }
        let ok = json!({"access_token": "khc_x", "token_type": "Bearer", "expires_in": 2592000});
        match classify(answer(200, ok)) {
            Poll::Done(t) => assert_eq!((t.access_token.expose(), t.expires_in), ("khc_x", Some(2_592_000))),
            p => panic!("{p:?}"),
        }
        let not_bearer = json!({"access_token": "x", "token_type": "mac"});
        assert!(matches!(classify(answer(200, not_bearer)), Poll::Failed(_)));
        assert!(matches!(classify(answer(500, json!({"code": "internal"}))), Poll::Failed(_)));
    }

    #[test]
    fn the_interval_defaults_to_five_seconds() {
        let c: DeviceCode = serde_json::from_value(json!({
            "device_code": "dc", "user_code": "ABCD-EFGH", "verification_uri": "https://kh/device", "expires_in": 600
        }))
        .unwrap();
        assert_eq!((c.interval, c.verification_uri_complete), (5, None));
        assert!(!format!("{:?}", c.device_code).contains("dc"));
    }
}
