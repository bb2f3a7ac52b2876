//! `kubehero login --browser`: a loopback-redirect sign-in with PKCE (RFC 8252 §7.3, RFC 7636).
//!
//! The CLI listens on `127.0.0.1:<ephemeral port>`, sends the person's browser to
//! `{server}/cli/authorize?redirect_uri=http://127.0.0.1:<port>/callback&state=…&code_challenge=…&code_challenge_method=S256`,
//! and waits (at most [`CALLBACK_TIMEOUT`]) for the server to redirect the browser back to
//! `/callback?code=…&state=…`. A callback whose `state` is not this login's (compared in constant time) is
//! answered 400 and ignored: the CLI keeps waiting for the real one. The code is then exchanged with the
//! `code_verifier` at `/api/auth/cli/token`, so whoever intercepts the code alone cannot redeem it.
//!
//! Security rules: `state`, the verifier and the code are never printed; the listener is bound to the IPv4
//! loopback only; each connection gets [`REQUEST_TIMEOUT`] to send its request head (at most
//! [`MAX_REQUEST`] bytes), so idle pre-connections from the browser cannot hold the CLI.

use super::client::{server_message, Api};
use super::credentials::Token;
use super::device::TokenResponse;
use anyhow::{anyhow, bail, Context};
use base64::Engine;
use reqwest::{Method, StatusCode};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long the CLI waits for the browser to come back.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one connection may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read from one connection.
const MAX_REQUEST: usize = 16 * 1024;

/// What the server sent back through the browser, `state` already checked.
enum Outcome {
    Code(Token),
    Error(String),
}

/// A callback carrying this login's `state`, with the connection to answer on.
struct Callback {
    outcome: Outcome,
    stream: TcpStream,
}

/// Runs one loopback-redirect sign-in against `api` and returns the token. `open` tries to start a browser
/// (the address is printed either way).
pub async fn authorize(api: &Api, open: bool) -> anyhow::Result<TokenResponse> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.context("listening on 127.0.0.1 for the sign-in")?;
    let port = listener.local_addr().context("reading the loopback port")?.port();
    let state = random_b64(32)?;
    let verifier = Token::new(random_b64(48)?);
    let challenge = challenge(verifier.expose());
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let url = format!(
        "{}/cli/authorize?redirect_uri={}&state={state}&code_challenge={challenge}&code_challenge_method=S256",
        api.server,
        encode(&redirect_uri)
    );
    eprintln!("Open this address in a browser on this computer to sign in:\n  {url}");
    if open {
        if open_browser(&url) {
            eprintln!("Opened a browser; if none appeared, open the address above yourself.");
        } else {
            eprintln!("Could not start a browser (xdg-open/open); open the address above yourself.");
        }
    }
    eprintln!(
        "Waiting for the browser (at most {} min; for a browser on another device, use `kubehero login` without \
         --browser)…",
        CALLBACK_TIMEOUT.as_secs() / 60
    );

    let cb = tokio::time::timeout(CALLBACK_TIMEOUT, wait_for_callback(listener, state)).await.map_err(|_| {
        anyhow!(
            "no sign-in came back from the browser within {} min: run `kubehero login --browser` again (or \
                 `kubehero login` to confirm a code from any device)",
            CALLBACK_TIMEOUT.as_secs() / 60
        )
    })??;
    let Callback { outcome, mut stream } = cb;
    let result = match outcome {
        Outcome::Code(code) => exchange(api, &code, &verifier).await,
        Outcome::Error(e) if e == "access_denied" => Err(anyhow!(
            "the sign-in was denied in the browser: run `kubehero login --browser` again if that was a mistake"
        )),
        Outcome::Error(e) => {
            Err(anyhow!("the server ended the sign-in with the error {e:?}: run `kubehero login --browser` again"))
        }
    };
    let page = match &result {
        Ok(_) => page(StatusCode::OK, "Signed in", "Signed in — you can close this window and return to the terminal."),
        Err(_) => page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The sign-in did not complete; the terminal says why. You can close this window.",
        ),
    };
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let _ = stream.write_all(page.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
    result
}

/// Accepts connections until one brings a callback with `state`; answers the others itself.
async fn wait_for_callback(listener: TcpListener, state: String) -> anyhow::Result<Callback> {
    let (tx, mut rx) = mpsc::channel::<Callback>(1);
    let state = std::sync::Arc::new(state);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted.context("accepting a connection on the loopback listener")?;
                let (tx, state) = (tx.clone(), state.clone());
                tokio::spawn(async move {
                    if let Ok(Some(cb)) = tokio::time::timeout(REQUEST_TIMEOUT, serve(stream, &state)).await {
                        let _ = tx.send(cb).await;
                    }
                });
            }
            Some(cb) = rx.recv() => return Ok(cb),
        }
    }
}

/// Reads one request; answers anything but a callback with this login's `state`, and hands that one back.
async fn serve(mut stream: TcpStream, state: &str) -> Option<Callback> {
    let head = read_head(&mut stream).await?;
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/callback" {
        respond(&mut stream, page(StatusCode::NOT_FOUND, "Not found", "Nothing here.")).await;
        return None;
    }
    if method != "GET" {
        respond(&mut stream, page(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", "Use GET.")).await;
        return None;
    }
    let param = |name: &str| {
        query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).and_then(|(_, v)| decode(v))
    };
    let got = param("state").unwrap_or_default();
    if !constant_time_eq(got.as_bytes(), state.as_bytes()) {
        eprintln!("Ignored a sign-in callback that does not belong to this login (wrong state); still waiting…");
        let body = "This response does not belong to the sign-in the terminal is waiting for. Start the sign-in \
                    again from the terminal.";
        respond(&mut stream, page(StatusCode::BAD_REQUEST, "Unexpected sign-in response", body)).await;
        return None;
    }
    let outcome = match (param("code"), param("error")) {
        (_, Some(e)) => Outcome::Error(e.chars().filter(|c| c.is_ascii_graphic()).take(64).collect()),
        (Some(c), None) if !c.is_empty() => Outcome::Code(Token::new(c)),
        _ => Outcome::Error("no code in the callback".into()),
    };
    Some(Callback { outcome, stream })
}

/// The request line and headers, or `None` when the peer sends nothing usable.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        if buf.len() >= MAX_REQUEST {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).ok().filter(|s| !s.is_empty())
}

async fn respond(stream: &mut TcpStream, response: String) {
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A whole HTTP/1.1 response with a small HTML page (`title` and `text` are fixed strings, never input).
fn page(status: StatusCode, title: &str, text: &str) -> String {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>KubeHero: {title}</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         Referrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
}

/// Redeems the code with the PKCE verifier.
async fn exchange(api: &Api, code: &Token, verifier: &Token) -> anyhow::Result<TokenResponse> {
    let body = serde_json::json!({ "code": code.expose(), "code_verifier": verifier.expose() });
    let a = api.call(Method::POST, "/api/auth/cli/token", None, Some(&body)).await.map_err(|e| e.with_hint())?;
    if a.status.is_success() {
        let t: TokenResponse = serde_json::from_value(a.body)
            .map_err(|e| anyhow!("{} answered the code exchange with an unexpected body: {e}", api.server))?;
        if !t.token_type.eq_ignore_ascii_case("bearer") || t.access_token.expose().is_empty() {
            bail!("{} issued an unusable token (type {:?})", api.server, t.token_type);
        }
        return Ok(t);
    }
    match (a.status, a.body["error"].as_str()) {
        (_, Some("invalid_grant")) => bail!(
            "{} refused the sign-in code (invalid_grant: expired, already used, or not issued for this login): run \
             `kubehero login --browser` again",
            api.server
        ),
        (StatusCode::NOT_FOUND, _) => bail!(
            "{} does not offer browser sign-in for the CLI (no /api/auth/cli/token): upgrade the server or use \
             `kubehero login`",
            api.server
        ),
        (st, _) => bail!("{} refused the code exchange ({st}): {}", api.server, server_message(&a)),
    }
}

/// Best effort: hands an http(s) URL to the desktop's opener, without a shell, and does not wait for it.
fn open_browser(url: &str) -> bool {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return false;
    }
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    tokio::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

fn random_b64(n: usize) -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut b).map_err(|_| anyhow!("the system random generator failed"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// RFC 7636 §4.2, S256: `BASE64URL(SHA256(ASCII(code_verifier)))`.
fn challenge(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Equal contents, in time independent of where they differ (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` and `+` in a query value; `None` when the result is not UTF-8 or an escape is broken.
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_challenge_is_unpadded_base64url_of_the_sha256() {
        // Computed independently: base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWjOEjXk"),
            "VYFANLqdx_HDV6BqEhluZJ63rtrIPROSSFdB3P6G83I"
        );
    }

    #[test]
    fn query_values_round_trip_and_state_compares() {
        assert_eq!(encode("http://127.0.0.1:5/callback"), "http%3A%2F%2F127.0.0.1%3A5%2Fcallback");
        assert_eq!(decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%4"), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"abc", b"ab"));
        let s = random_b64(32).unwrap();
        assert_eq!(s.len(), 43);
        assert_eq!(random_b64(48).unwrap().len(), 64);
    }

    #[tokio::test]
    async fn only_a_callback_with_the_state_is_handed_back() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let waiting = tokio::spawn(wait_for_callback(listener, "good".into()));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            out
        };
        // An idle connection does not block the others.
        let _idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        assert!(get("/favicon.ico").await.starts_with("HTTP/1.1 404"));
        assert!(get("/callback?code=c&state=bad").await.starts_with("HTTP/1.1 400"));
        assert!(!waiting.is_finished());
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET /callback?code=c%2B1&state=good HTTP/1.1\r\n\r\n").await.unwrap();
        let cb = waiting.await.unwrap().unwrap();
        assert!(matches!(cb.outcome, Outcome::Code(ref t) if t.expose() == "c+1"));
    }
}
