//! The discovery/JWKS fetcher and [`Verifier`] against a fake IdP.
//!
//! The IdP here is a deliberately tiny, hand-made HTTP/1.1 server on a loopback `TcpListener`: it is a FAKE,
//! because these unit-level tests must inject faults the real thing will not produce on demand (a wrong
//! discovery `issuer`, slow or broken JWKS responses, oversize bodies, going away mid-test) and count every
//! request exactly. The real oidc-provider IdP is exercised end to end by the server crate's integration
//! tests. Loopback `http://` issuers are allowed by configuration for exactly this purpose.

use crate::support::*;
use kubehero_authn::{AuthnError, AuthnObserver, FetchOutcome, IssuerConfig, NoopObserver, Verifier};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Up,
    /// Discovery and JWKS answer 503.
    Error,
    /// JWKS answers 200 with a body that is not JSON.
    Garbage,
    /// JWKS answers 200 with a 2 MiB body (over the 1 MiB cap).
    Huge,
    /// JWKS answers 302 to another path of this server (redirects must not be followed).
    Redirect,
}

#[derive(Default)]
struct Hits {
    discovery: AtomicUsize,
    jwks: AtomicUsize,
    other: AtomicUsize,
}

struct Shared {
    issuer: String,
    mode: Mutex<Mode>,
    /// Overrides the discovery document's `issuer`; `Some(Value::Null)` omits it.
    discovery_issuer: Mutex<Option<Value>>,
    jwks_uri: Mutex<Option<String>>,
    jwks: Mutex<String>,
    jwks_delay: Mutex<Duration>,
    hits: Hits,
}

struct FakeIdp {
    issuer: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl FakeIdp {
    async fn start(jwks: Value) -> FakeIdp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            issuer: issuer.clone(),
            mode: Mutex::new(Mode::Up),
            discovery_issuer: Mutex::new(None),
            jwks_uri: Mutex::new(None),
            jwks: Mutex::new(jwks.to_string()),
            jwks_delay: Mutex::new(Duration::ZERO),
            hits: Hits::default(),
        });
        let s = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else { return };
                tokio::spawn(serve(conn, Arc::clone(&s)));
            }
        });
        FakeIdp { issuer, shared, server }
    }

    fn jwks_hits(&self) -> usize {
        self.shared.hits.jwks.load(Ordering::SeqCst)
    }
    fn discovery_hits(&self) -> usize {
        self.shared.hits.discovery.load(Ordering::SeqCst)
    }
    fn other_hits(&self) -> usize {
        self.shared.hits.other.load(Ordering::SeqCst)
    }
    fn set_mode(&self, m: Mode) {
        *self.shared.mode.lock().unwrap() = m;
    }
    fn set_jwks(&self, v: Value) {
        *self.shared.jwks.lock().unwrap() = v.to_string();
    }
    fn set_delay(&self, d: Duration) {
        *self.shared.jwks_delay.lock().unwrap() = d;
    }
    fn set_discovery_issuer(&self, v: Option<Value>) {
        *self.shared.discovery_issuer.lock().unwrap() = v;
    }
    fn set_jwks_uri(&self, v: Option<String>) {
        *self.shared.jwks_uri.lock().unwrap() = v;
    }
    /// Stops accepting connections: the IdP is down (connection refused).
    async fn shut_down(&self) {
        self.server.abort();
        while !self.server.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn config(&self) -> IssuerConfig {
        let mut c = IssuerConfig::new(self.issuer.clone());
        c.audiences = vec![AUD.to_string()];
        c.http_timeout = Duration::from_secs(2);
        c
    }

    fn verifier(&self, cfg: IssuerConfig) -> Verifier {
        Verifier::new(vec![cfg], Arc::new(NoopObserver)).unwrap()
    }

    /// Claims from this IdP.
    fn claims(&self) -> Value {
        let mut c = claims();
        c["iss"] = json!(self.issuer);
        c
    }
}

async fn serve(mut conn: tokio::net::TcpStream, s: Arc<Shared>) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req);
    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
    let mode = *s.mode.lock().unwrap();
    let (status, body): (&str, Vec<u8>) = match path.as_str() {
        "/.well-known/openid-configuration" => {
            s.hits.discovery.fetch_add(1, Ordering::SeqCst);
            if mode == Mode::Error {
                ("503 Service Unavailable", b"down".to_vec())
            } else {
                let mut doc = json!({
                    "issuer": s.issuer,
                    "jwks_uri": s.jwks_uri.lock().unwrap().clone().unwrap_or(format!("{}/jwks", s.issuer)),
                });
                match s.discovery_issuer.lock().unwrap().clone() {
                    Some(Value::Null) => {
                        doc.as_object_mut().unwrap().remove("issuer");
                    }
                    Some(v) => doc["issuer"] = v,
                    None => {}
                }
                ("200 OK", doc.to_string().into_bytes())
            }
        }
        "/jwks" => {
            s.hits.jwks.fetch_add(1, Ordering::SeqCst);
            let delay = *s.jwks_delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            match mode {
                Mode::Up => ("200 OK", s.jwks.lock().unwrap().clone().into_bytes()),
                Mode::Error => ("503 Service Unavailable", b"down".to_vec()),
                Mode::Garbage => ("200 OK", b"{\"keys\": [ this is not json".to_vec()),
                Mode::Huge => ("200 OK", vec![b' '; 2 * 1024 * 1024]),
                Mode::Redirect => ("302 Found", Vec::new()),
            }
        }
        _ => {
            s.hits.other.fetch_add(1, Ordering::SeqCst);
            ("404 Not Found", Vec::new())
        }
    };
    let location =
        if status.starts_with("302") { format!("Location: {}/redirected-jwks\r\n", s.issuer) } else { String::new() };
    let head = format!(
        "HTTP/1.1 {status}\r\n{location}Content-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(&body).await;
    let _ = conn.shutdown().await;
}

fn jwks_of(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

fn k1() -> Value {
    jwk(&keys().rsa, Some("k1"), None)
}

fn k2() -> Value {
    jwk(&keys().ec256, Some("k2"), Some("ES256"))
}

fn token_k1(idp: &FakeIdp) -> String {
    sign(&keys().rsa, &hdr("RS256", "k1"), &idp.claims())
}

fn token_k2(idp: &FakeIdp) -> String {
    sign(&keys().ec256, &hdr("ES256", "k2"), &idp.claims())
}

/// A warmed-up verifier: keys fetched once.
async fn warm(idp: &FakeIdp, cfg: IssuerConfig) -> Verifier {
    let v = idp.verifier(cfg);
    assert!(v.refresh_now().await.is_empty(), "warm-up fetch failed");
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 1));
    assert!(v.verify(&token_k1(idp), NOW).await.is_ok());
    v
}

#[tokio::test]
async fn discovery_issuer_must_match_exactly() {
    let idp = FakeIdp::start(jwks_of(&[k1()])).await;
    let v = idp.verifier(idp.config());
    let port = idp.issuer.rsplit(':').next().unwrap().to_string();
    for bad in [
        json!(format!("{}/", idp.issuer)),
        json!(format!("http://localhost:{port}")),
        json!(idp.issuer.to_uppercase()),
        json!("https://evil.example.com"),
        json!([idp.issuer]),
        Value::Null,
    ] {
        idp.set_discovery_issuer(Some(bad.clone()));
        let failed = v.refresh_now().await;
        assert_eq!(failed.len(), 1, "{bad}");
        assert!(failed[0].1.contains("issuer"), "{bad}: {}", failed[0].1);
        assert_eq!(v.verify(&token_k1(&idp), NOW).await, Err(AuthnError::IssuerUnavailable(idp.issuer.clone())));
    }
    assert_eq!(idp.jwks_hits(), 0, "keys are never fetched from an IdP that names another issuer");
    assert!(!v.health()[0].healthy);
    idp.set_discovery_issuer(None);
    assert!(v.refresh_now().await.is_empty());
    assert!(v.verify(&token_k1(&idp), NOW).await.is_ok());
    assert!(v.health()[0].healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_flood_fetches_at_most_once_per_cooldown() {
    let idp = FakeIdp::start(jwks_of(&[k1()])).await;
    // Default cooldown: 30 s. A slow JWKS response keeps the one refetch in flight while the flood piles up.
    let v = warm(&idp, idp.config()).await;
    idp.set_delay(Duration::from_millis(300));
    let tokens: Vec<String> =
        (0..200).map(|i| sign(&keys().rsa, &hdr("RS256", &format!("random-{i}")), &idp.claims())).collect();
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let v = v.clone();
            tokio::spawn(async move { v.verify(&t, NOW).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Err(AuthnError::UnknownKey));
    }
    assert_eq!(idp.jwks_hits(), 2, "warm-up + exactly one refetch for 200 concurrent unknown kids");
    assert_eq!(idp.discovery_hits(), 2);
    // A second flood inside the cooldown window fetches nothing.
    for i in 0..50 {
        let t = sign(&keys().rsa, &hdr("RS256", &format!("again-{i}")), &idp.claims());
        assert_eq!(v.verify(&t, NOW).await, Err(AuthnError::UnknownKey));
    }
    assert_eq!(idp.jwks_hits(), 2);
    // Known keys keep verifying throughout.
    assert!(v.verify(&token_k1(&idp), NOW).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_unknown_kids_refetch_once_per_window() {
    let idp = FakeIdp::start(jwks_of(&[k1()])).await;
    let mut cfg = idp.config();
    let cooldown = Duration::from_millis(250);
    cfg.refetch_cooldown = cooldown;
    let v = warm(&idp, cfg).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut i = 0;
    while start.elapsed() < Duration::from_millis(1300) {
        let t = sign(&keys().ec256, &hdr("ES256", &format!("paced-{i}")), &idp.claims());
        let v = v.clone();
        tasks.push(tokio::spawn(async move { v.verify(&t, NOW).await }));
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Err(AuthnError::UnknownKey));
    }
    let elapsed = start.elapsed();
    let refetches = idp.jwks_hits() - 1;
    let bound = (elapsed.as_millis() / cooldown.as_millis()) as usize + 1;
    assert!(refetches >= 2, "the cooldown expires and allows another refetch ({refetches})");
    assert!(refetches <= bound, "{refetches} refetches for {i} tokens in {elapsed:?} (bound {bound})");
}

#[tokio::test]
async fn rotation_new_key_works_after_one_refetch() {
    let idp = FakeIdp::start(jwks_of(&[k1()])).await;
    let v = warm(&idp, idp.config()).await;
    idp.set_jwks(jwks_of(&[k2()]));
    assert!(v.verify(&token_k2(&idp), NOW).await.is_ok(), "new kid triggers a refetch and verifies");
    assert_eq!(idp.jwks_hits(), 2);
    for _ in 0..10 {
        assert!(v.verify(&token_k2(&idp), NOW).await.is_ok());
    }
    assert_eq!(idp.jwks_hits(), 2, "the rotated key is cached");
    // The retired key is gone from the new set; within the cooldown its tokens fail without a fetch.
    assert_eq!(v.verify(&token_k1(&idp), NOW).await, Err(AuthnError::UnknownKey));
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn rotation_with_overlap_keeps_both_keys() {
    let idp = FakeIdp::start(jwks_of(&[k1()])).await;
    let v = warm(&idp, idp.config()).await;
    idp.set_jwks(jwks_of(&[k1(), k2()]));
    assert!(v.verify(&token_k2(&idp), NOW).await.is_ok());
    assert!(v.verify(&token_k1(&idp), NOW).await.is_ok());
    assert_eq!(idp.jwks_hits(), 2);
    assert_eq!(v.health()[0].keys, 2);
}

#[tokio::test]
async fn idp_down_after_warm_up_cached_keys_still_verify() {
    let idp = FakeIdp::start(jwks_of(&[k1()])).await;
    let v = warm(&idp, idp.config()).await;
    idp.shut_down().await;
    assert!(v.verify(&token_k1(&idp), NOW).await.is_ok());
    let failed = v.refresh_now().await;
    assert_eq!(failed.len(), 1, "the refresh fails: connection refused");
    assert!(v.verify(&token_k1(&idp), NOW).await.is_ok(), "the failed refresh kept the keys");
    // An unknown kid tries its one refetch, which fails; the cached keys stay.
    assert_eq!(v.verify(&token_k2(&idp), NOW).await, Err(AuthnError::UnknownKey));
    assert!(v.verify(&token_k1(&idp), NOW).await.is_ok());
    let h = &v.health()[0];
    assert!(h.healthy && h.keys == 1 && h.last_error.is_some() && h.last_success_unix.is_some(), "{h:?}");
}

#[derive(Default)]
struct Counting {
    ok: AtomicUsize,
    error: AtomicUsize,
}

impl AuthnObserver for Counting {
    fn jwks_fetch(&self, _issuer: &str, outcome: FetchOutcome) {
        match outcome {
            FetchOutcome::Ok => self.ok.fetch_add(1, Ordering::SeqCst),
            FetchOutcome::Error => self.error.fetch_add(1, Ordering::SeqCst),
        };
    }
}

#[tokio::test]
async fn failed_refresh_keeps_old_keys() {
    let idp = FakeIdp::start(jwks_of(&[k1()])).await;
    let observer = Arc::new(Counting::default());
    let mut cfg = idp.config();
    cfg.http_timeout = Duration::from_millis(500);
    let v = Verifier::new(vec![cfg], observer.clone()).unwrap();
    assert!(v.refresh_now().await.is_empty());
    // Meanwhile the IdP "rotated" to k2, but every later fetch fails in a different way.
    idp.set_jwks(jwks_of(&[k2()]));
    type Fault<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let faults: Vec<Fault<'_>> = vec![
        ("HTTP 503", Box::new(|| idp.set_mode(Mode::Error))),
        ("JWKS not JSON", Box::new(|| idp.set_mode(Mode::Garbage))),
        ("JWKS over 1 MiB", Box::new(|| idp.set_mode(Mode::Huge))),
        ("JWKS redirected", Box::new(|| idp.set_mode(Mode::Redirect))),
        (
            "JWKS slower than the timeout",
            Box::new(|| {
                idp.set_mode(Mode::Up);
                idp.set_delay(Duration::from_secs(3));
            }),
        ),
        (
            "jwks_uri on a non-loopback http URL",
            Box::new(|| {
                idp.set_delay(Duration::ZERO);
                idp.set_jwks_uri(Some("http://jwks.example.com/keys".into()));
            }),
        ),
        (
            "JWKS with no usable key",
            Box::new(|| {
                idp.set_jwks_uri(None);
                idp.set_jwks(json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}));
            }),
        ),
    ];
    for (i, (name, inject)) in faults.iter().enumerate() {
        inject();
        let started = Instant::now();
        let failed = v.refresh_now().await;
        assert_eq!(failed.len(), 1, "{name}: the refresh must fail");
        assert!(started.elapsed() < Duration::from_secs(2), "{name}: bounded by the timeout");
        assert!(v.verify(&token_k1(&idp), NOW).await.is_ok(), "{name}: old keys kept");
        assert_eq!(observer.error.load(Ordering::SeqCst), i + 1, "{name}");
        let h = &v.health()[0];
        assert!(h.healthy && h.last_error.is_some(), "{name}: {h:?}");
        // Errors never carry key material or bodies.
        assert!(!h.last_error.as_deref().unwrap().contains("this is not json"), "{h:?}");
    }
    assert_eq!(observer.ok.load(Ordering::SeqCst), 1);
    assert_eq!(idp.other_hits(), 0, "the redirect was not followed");
    // Recovery: the next good fetch installs the new set.
    idp.set_jwks(jwks_of(&[k2()]));
    assert!(v.refresh_now().await.is_empty());
    assert!(v.verify(&token_k2(&idp), NOW).await.is_ok());
    assert!(v.health()[0].last_error.is_none());
}

#[tokio::test]
async fn unknown_kid_refetch_only_after_cheap_checks_pass() {
    let idp = FakeIdp::start(jwks_of(&[k1()])).await;
    let v = warm(&idp, idp.config()).await;
    let k = keys();
    let unknown = |claims: &Value| sign(&k.rsa, &hdr("RS256", "not-yet-published"), claims);
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut c = idp.claims();
        f(&mut c);
        c
    };
    let cases: Vec<(&str, String, AuthnError)> = vec![
        ("wrong aud", unknown(&edit(&|c| c["aud"] = json!("other"))), AuthnError::InvalidAudience),
        (
            "missing aud",
            unknown(&edit(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            })),
            AuthnError::InvalidAudience,
        ),
        ("expired", unknown(&edit(&|c| c["exp"] = json!(NOW - 3600))), AuthnError::Expired),
        (
            "missing exp",
            unknown(&edit(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
            AuthnError::MissingClaim("exp"),
        ),
        ("nbf in the future", unknown(&edit(&|c| c["nbf"] = json!(NOW + 3600))), AuthnError::NotYetValid),
        ("unconfigured iss", unknown(&edit(&|c| c["iss"] = json!("http://127.0.0.1:9"))), AuthnError::UnknownIssuer),
        (
            "missing iss",
            unknown(&edit(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            })),
            AuthnError::MissingClaim("iss"),
        ),
        (
            "alg off the list",
            sign_raw(&k.rsa, "PS256", r#"{"alg":"PS256","kid":"not-yet-published"}"#, &idp.claims().to_string()),
            AuthnError::UnsupportedAlgorithm("PS256".into()),
        ),
    ];
    for (name, token, err) in cases {
        for _ in 0..5 {
            assert_eq!(v.verify(&token, NOW).await, Err(err.clone()), "{name}");
        }
        assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 1), "{name}: no refetch");
    }
    // Control: the same unknown kid with good claims does refetch.
    assert_eq!(v.verify(&unknown(&idp.claims()), NOW).await, Err(AuthnError::UnknownKey));
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn urls_named_by_a_token_are_never_fetched() {
    let idp = FakeIdp::start(jwks_of(&[k1()])).await;
    let other = FakeIdp::start(jwks_of(&[k2()])).await;
    let v = warm(&idp, idp.config()).await;
    let k = keys();
    for (param, value) in [
        ("jku", json!(format!("{}/evil-jwks", idp.issuer))),
        ("x5u", json!(format!("{}/evil-cert", idp.issuer))),
        ("jku", json!(format!("{}/jwks", other.issuer))),
    ] {
        let mut h = hdr("ES256", "k2");
        h[param] = value;
        let t = sign(&k.ec256, &h, &idp.claims());
        assert!(matches!(v.verify(&t, NOW).await, Err(AuthnError::ForbiddenHeader(_))), "{param}");
    }
    // A token whose iss is another (unconfigured) IdP: nothing is fetched from it.
    let t = sign(&k.ec256, &hdr("ES256", "k2"), &other.claims());
    assert_eq!(v.verify(&t, NOW).await, Err(AuthnError::UnknownIssuer));
    assert_eq!(idp.other_hits(), 0);
    assert_eq!((other.discovery_hits(), other.jwks_hits(), other.other_hits()), (0, 0, 0));
    assert_eq!(idp.jwks_hits(), 1);
}

#[test]
fn issuer_urls_must_be_https_except_loopback() {
    for bad in [
        "http://idp.example.com",
        "http://10.0.0.1:8080",
        "http://127.0.0.2:8080",
        "http://localhost.evil.com",
        "ftp://idp.example.com",
        "https://user:pw@idp.example.com",
        "https://idp.example.com?x=1",
        "https://idp.example.com#frag",
        " https://idp.example.com",
        "idp.example.com",
        "",
    ] {
        let r = Verifier::new(vec![IssuerConfig::new(bad)], Arc::new(NoopObserver));
        assert!(matches!(r, Err(AuthnError::InvalidIssuerConfig(_))), "{bad:?} must be refused");
    }
    for good in ["https://idp.example.com", "http://127.0.0.1:5556", "http://localhost:5556/dex", "http://[::1]:9000"] {
        assert!(Verifier::new(vec![IssuerConfig::new(good)], Arc::new(NoopObserver)).is_ok(), "{good}");
    }
    let dup = vec![IssuerConfig::new("https://a.example"), IssuerConfig::new("https://a.example")];
    assert!(matches!(Verifier::new(dup, Arc::new(NoopObserver)), Err(AuthnError::InvalidIssuerConfig(_))));
    let mut empty_aud = IssuerConfig::new("https://a.example");
    empty_aud.audiences = vec![String::new()];
    assert!(Verifier::new(vec![empty_aud], Arc::new(NoopObserver)).is_err());
}

#[tokio::test]
async fn start_fetches_in_the_background() {
    let idp = FakeIdp::start(jwks_of(&[k1()])).await;
    let v = idp.verifier(idp.config());
    v.start();
    v.start(); // idempotent
    let deadline = Instant::now() + Duration::from_secs(10);
    while !v.health()[0].healthy {
        assert!(Instant::now() < deadline, "background fetch never succeeded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(v.verify(&token_k1(&idp), NOW).await.is_ok());
    assert_eq!(idp.jwks_hits(), 1, "one fetch per TTL (1 h), not per call");
}
