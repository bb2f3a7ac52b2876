//! Dashboard sign-in through the real npm `oidc-provider`: authorization code + PKCE + state + nonce, the
//! server-side session cookie, CSRF on cookie-authenticated writes, open-redirect and login-CSRF refusals,
//! logout through the IdP's end_session_endpoint, and sliding expiry under an absolute cap (injected clock).

use crate::support::*;
use kubehero_testkit::oidc::{free_port, OidcProvider, SignIn};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

struct ManualClock(AtomicI64);

impl kubehero_server::state::Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A KubeHero with browser sign-in, and the IdP it signs in with.
pub(crate) async fn setup(clock: Arc<dyn kubehero_server::state::Clock>) -> (TestServer, OidcProvider) {
    let port = free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let idp = OidcProvider::start_for(free_port().unwrap(), std::slice::from_ref(&base)).await.unwrap();
    let ts = TestServer::start_with_clock(
        &[
            ("KUBEHERO_LISTEN", &format!("127.0.0.1:{port}")),
            ("KUBEHERO_PUBLIC_URL", &base),
            ("KUBEHERO_REQUIRE_AUTH", "true"),
            ("OIDC_ISSUER_URL", &idp.issuer),
            ("OIDC_AUDIENCE", "kubehero"),
            ("KUBEHERO_OIDC_CLIENT_ID", "kubehero"),
            ("KUBEHERO_OIDC_CLIENT_SECRET", "kubehero-secret"),
            ("KUBEHERO_GROUP_ROLES", "kubehero-admins=admin,kubehero-owners=owner"),
        ],
        None,
        clock,
    )
    .await;
    ts.wait_issuer_healthy().await;
    (ts, idp)
}

fn cookie(s: &SignIn) -> String {
    format!("kh_session={}", s.cookies["kh_session"])
}

async fn with_cookie(ts: &TestServer, method: reqwest::Method, path: &str, cookie: &str) -> reqwest::RequestBuilder {
    ts.http.request(method, format!("{}{path}", ts.url)).header("cookie", cookie)
}

/// The CSRF token from the landing page's sign-out form.
async fn csrf_of(ts: &TestServer, cookie: &str) -> String {
    let page = with_cookie(ts, reqwest::Method::GET, "/", cookie).await.send().await.unwrap().text().await.unwrap();
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[at..at + page[at..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn sign_in_session_csrf_and_logout() {
    let (ts, idp) = setup(Arc::new(kubehero_server::state::SystemClock)).await;
    let s = idp.sign_in(&ts.url, "/login?return_to=/api/v1/whoami", "alice").await.unwrap();
    assert_eq!(s.location, format!("{}/api/v1/whoami", ts.url));
    assert!(s.cookies["kh_session"].starts_with("khs_"));
    let c = cookie(&s);
    let me: serde_json::Value =
        with_cookie(&ts, reqwest::Method::GET, "/api/v1/whoami", &c).await.send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (me["sub"].as_str(), me["role"].as_str(), me["auth_method"].as_str()),
        (Some("alice"), Some("admin"), Some("session"))
    );
    assert_eq!(me["groups"], json!(["kubehero-admins", "dev"]));

    // The landing page shows identity and roles.
    let page = with_cookie(&ts, reqwest::Method::GET, "/", &c).await.send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<strong>alice</strong>") && page.contains("<strong>admin</strong>"), "{page}");
    assert!(page.contains("kubehero login --server"));

    // Cookie-authenticated writes need the CSRF token.
    let body = json!({ "name": "prod-eu" });
    let r = with_cookie(&ts, reqwest::Method::POST, "/api/v1/clusters", &c).await.json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = with_cookie(&ts, reqwest::Method::POST, "/api/v1/clusters", &c)
        .await
        .header("x-csrf-token", "wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let csrf = csrf_of(&ts, &c).await;
    let r = with_cookie(&ts, reqwest::Method::POST, "/api/v1/clusters", &c)
        .await
        .header("x-csrf-token", &csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Logout without the token is refused; with it the session ends and the IdP's end_session is next.
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirect
        .post(format!("{}/api/auth/logout", ts.url))
        .header("cookie", &c)
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = no_redirect
        .post(format!("{}/api/auth/logout", ts.url))
        .header("cookie", &c)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().unwrap();
    assert!(to.starts_with(&format!("{}/session/end", idp.issuer)), "{to}");
    assert!(r.headers()["set-cookie"].to_str().unwrap().starts_with("kh_session=; Path=/; Max-Age=0"));
    let r = with_cookie(&ts, reqwest::Method::GET, "/api/v1/whoami", &c).await.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = no_redirect.get(format!("{}/", ts.url)).header("cookie", &c).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/login?return_to=/", "signed out: sent to sign in again");

    // Sign-in and sign-out are audit rows.
    let store = ts.state().store.clone();
    let all = store.query_audit(&kubehero_store::AuditQuery { limit: 100, ..Default::default() }).await.unwrap();
    let actions: Vec<String> = all
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.body).unwrap())
        .filter(|v| v["action"].as_str().unwrap().starts_with("auth.log"))
        .map(|v| format!("{} {}", v["action"].as_str().unwrap(), v["actor"]["sub"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, ["auth.logout alice", "auth.login alice"]);
}

#[tokio::test]
async fn open_redirects_and_login_csrf_are_refused() {
    let (ts, idp) = setup(Arc::new(kubehero_server::state::SystemClock)).await;
    for evil in ["https://evil.example/x", "//evil.example", "/\\evil.example", "javascript:alert(1)"] {
        let start = format!("/login?return_to={}", kubehero_server::login::urlencode(evil));
        let s = idp.sign_in(&ts.url, &start, "bob").await.unwrap();
        assert_eq!(s.location, format!("{}/", ts.url), "{evil}: only local paths");
    }
    // A callback that did not start in this browser (no kh_login cookie, or another state) is refused.
    let r = ts.get("/api/auth/callback?code=abc&state=def", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = ts
        .http
        .get(format!("{}/api/auth/callback?code=abc&state=def", ts.url))
        .header("cookie", "kh_login=def")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "unknown state");
    let r = ts.get("/api/auth/callback?error=access_denied", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// Bytes of the SQLite database and its WAL.
fn db_bytes(ts: &TestServer) -> u64 {
    ["kubehero.db", "kubehero.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(ts.data_dir().join(f)).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn pre_authentication_requests_grow_the_database_by_a_bounded_amount() {
    let (ts, _idp) = setup(Arc::new(kubehero_server::state::SystemClock)).await;
    let before = db_bytes(&ts);
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let long = format!("/{}", "a".repeat(2000));
    let login = format!("{}/login?return_to={}", ts.url, kubehero_server::login::urlencode(&long));
    // 10,000 sign-ins started (nothing stored: the pending sign-in is sealed into its cookie) and 10,000
    // device codes asked for from four addresses, 16 at a time.
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let statuses = Arc::new(parking_lot::Mutex::new(std::collections::BTreeMap::<(bool, u16), usize>::new()));
    let mut work = Vec::new();
    for w in 0..16 {
        let (no_redirects, login, sent, statuses) =
            (no_redirects.clone(), login.clone(), sent.clone(), statuses.clone());
        let from: std::net::IpAddr = format!("127.0.0.{}", 2 + w % 4).parse().unwrap();
        let device = reqwest::Client::builder().local_address(from).build().unwrap();
        let url = format!("{}/api/auth/device/code", ts.url);
        work.push(tokio::spawn(async move {
            while sent.fetch_add(1, Ordering::Relaxed) < 10_000 {
                let a = no_redirects.get(&login).send().await.unwrap().status().as_u16();
                let b = device.post(&url).send().await.unwrap().status().as_u16();
                let mut st = statuses.lock();
                *st.entry((true, a)).or_default() += 1;
                *st.entry((false, b)).or_default() += 1;
            }
        }));
    }
    for w in work {
        w.await.unwrap();
    }
    let statuses = statuses.lock().clone();
    let redirected: usize =
        statuses.iter().filter(|((login, s), _)| *login && (300..400).contains(s)).map(|(_, n)| n).sum();
    assert_eq!(redirected, 10_000, "{statuses:?}");
    // Each address had its burst of 10 (plus what refilled meanwhile); the rest were told to retry.
    let devices_ok = statuses.get(&(false, 200)).copied().unwrap_or(0);
    assert!((40..=60).contains(&devices_ok), "{statuses:?}");
    assert_eq!(statuses.get(&(false, 429)).copied().unwrap_or(0), 10_000 - devices_ok, "{statuses:?}");

    // The audit rows of the device codes: a few per address and result, the rest counted into one row each.
    kubehero_server::record_sampled(ts.state()).await;
    ts.state().identity.audit.flush().await.unwrap();
    let rows = ts.state().store.audit_rows(0, 100_000).await.unwrap();
    let device_rows: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
        .filter(|b| b["action"] == "auth.device_code")
        .collect();
    assert!(device_rows.len() <= 4 * 2 * 6, "{} rows", device_rows.len());
    let stood_for: u64 = device_rows.iter().map(|b| b["result"]["repeated"].as_u64().unwrap_or(1)).sum();
    assert_eq!(stood_for, 10_000, "every request is accounted for");
    let grown = db_bytes(&ts).saturating_sub(before);
    println!("20,000 unauthenticated requests: database +{grown} bytes, {} audit rows", device_rows.len());
    assert!(grown < 2 * 1024 * 1024, "the database grew by {grown} bytes");
}

#[tokio::test]
async fn sessions_slide_for_8_hours_under_a_24_hour_cap() {
    let clock = Arc::new(ManualClock(AtomicI64::new(now())));
    let (ts, idp) = setup(clock.clone()).await;
    let s = idp.sign_in(&ts.url, "/login", "erin").await.unwrap();
    let c = cookie(&s);
    let whoami = |c: String| {
        let ts = &ts;
        async move { with_cookie(ts, reqwest::Method::GET, "/api/v1/whoami", &c).await.send().await.unwrap().status() }
    };
    let sessions = || async { ts.state().store.list_sessions(Some("erin")).await.unwrap() };
    let start = sessions().await[0].clone();
    // Continuous use within a minute: no store write.
    for _ in 0..5 {
        clock.0.fetch_add(10, Ordering::SeqCst);
        assert_eq!(whoami(c.clone()).await, StatusCode::OK);
    }
    assert_eq!(sessions().await[0].last_seen_at, start.last_seen_at, "at most one write a minute");
    // Activity every 7 hours keeps it alive past 8 hours...
    for _ in 0..3 {
        clock.0.fetch_add(7 * 3600, Ordering::SeqCst);
        assert_eq!(whoami(c.clone()).await, StatusCode::OK);
    }
    // ...but never past the absolute cap of 24 hours.
    clock.0.fetch_add(3 * 3600 + 1, Ordering::SeqCst);
    assert_eq!(whoami(c.clone()).await, StatusCode::UNAUTHORIZED);
    // Idle for more than 8 hours ends a fresh session.
    clock.0.store(now(), Ordering::SeqCst);
    let s = idp.sign_in(&ts.url, "/login", "erin").await.unwrap();
    clock.0.fetch_add(8 * 3600, Ordering::SeqCst);
    assert_eq!(whoami(cookie(&s)).await, StatusCode::UNAUTHORIZED);
}

/// The device flow over HTTP: the CLI's requests, a person approving in a browser session, the CLI token.
#[tokio::test]
async fn device_flow_issues_a_cli_token_that_rotates_and_revokes() {
    let (ts, idp) = setup(Arc::new(kubehero_server::state::SystemClock)).await;
    let post = |path: &str, body: serde_json::Value| ts.http.post(format!("{}{path}", ts.url)).json(&body).send();
    let code: serde_json::Value = post("/api/auth/device/code", json!({})).await.unwrap().json().await.unwrap();
    let user_code = code["user_code"].as_str().unwrap().to_string();
    assert_eq!(code["verification_uri"], format!("{}/device", ts.url));
    assert_eq!(code["interval"], 5);
    let device = json!({ "device_code": code["device_code"] });
    let r = post("/api/auth/device/token", device.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "authorization_pending");
    let r = post("/api/auth/device/token", device.clone()).await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "slow_down", "polling faster than the interval");

    // The person opens the complete URL, signs in, lands on the confirmation page, approves.
    let start = format!("/device?user_code={user_code}");
    let s = idp
        .sign_in(&ts.url, &format!("/login?return_to={}", kubehero_server::login::urlencode(&start)), "alice")
        .await
        .unwrap();
    assert_eq!(s.location, format!("{}{start}", ts.url));
    let c = cookie(&s);
    let page = with_cookie(&ts, reqwest::Method::GET, &start, &c).await.send().await.unwrap().text().await.unwrap();
    assert!(page.contains(&user_code) && page.contains("<strong>alice</strong>"), "{page}");
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let csrf = &page[at..at + page[at..].find('"').unwrap()];
    let form = |csrf: &str| {
        [("user_code", user_code.to_lowercase()), ("csrf", csrf.to_string()), ("decision", "approve".into())]
    };
    let r = with_cookie(&ts, reqwest::Method::POST, "/device", &c).await.form(&form("forged")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "CSRF");
    let r = with_cookie(&ts, reqwest::Method::POST, "/device", &c).await.form(&form(csrf)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = with_cookie(&ts, reqwest::Method::POST, "/device", &c).await.form(&form(csrf)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT, "a code is approved once");

    let tok: serde_json::Value = post("/api/auth/device/token", device.clone()).await.unwrap().json().await.unwrap();
    let token = tok["access_token"].as_str().unwrap().to_string();
    assert!(token.starts_with("khc_"));
    assert_eq!(tok["expires_in"], 30 * 86_400);
    let r = post("/api/auth/device/token", device).await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_grant", "single use");
    let me = ts.whoami(&token).await;
    assert_eq!(
        (me["sub"].as_str(), me["role"].as_str(), me["auth_method"].as_str()),
        (Some("alice"), Some("admin"), Some("cli_token"))
    );
    // CLI tokens are bearer credentials: no CSRF needed.
    assert_eq!(ts.post("/api/v1/clusters", Some(&token), json!({ "name": "dev" })).await.status, StatusCode::CREATED);

    // Rotation: the new token works, the old one is refused at once.
    let r = ts.post("/api/v1/auth/rotate", Some(&token), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new = r.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(ts.get("/api/v1/whoami", Some(&token)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(ts.whoami(&new).await["sub"], "alice");
    // Own sessions and tokens are listed and revocable; the revoked token is refused at once.
    let list = ts.get("/api/v1/auth/sessions", Some(&new)).await;
    let kinds: Vec<&str> = list.body["items"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "cli_token").count(), 2);
    assert!(kinds.contains(&"session"));
    assert!(!list.body.to_string().contains(&new), "tokens are never listed");
    let id = &kubehero_authn::sha256_hex(&new)[..16];
    let r = ts.call(reqwest::Method::DELETE, &format!("/api/v1/auth/sessions/{id}"), Some(&new), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(ts.get("/api/v1/whoami", Some(&new)).await.status, StatusCode::UNAUTHORIZED);
    // Someone else's session: not found for a non-owner.
    let bob = idp.sign_in(&ts.url, "/login", "bob").await.unwrap();
    let alice_session = &kubehero_authn::sha256_hex(&s.cookies["kh_session"])[..16];
    let r = ts
        .http
        .delete(format!("{}/api/v1/auth/sessions/{alice_session}", ts.url))
        .header("cookie", cookie(&bob))
        .header("x-csrf-token", csrf_of(&ts, &cookie(&bob)).await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// `kubehero login --browser`'s server side: a loopback redirect with a one-time code bound to PKCE.
#[tokio::test]
async fn loopback_code_is_bound_to_pkce_and_used_once() {
    use base64::Engine as _;
    let (ts, idp) = setup(Arc::new(kubehero_server::state::SystemClock)).await;
    let s = idp.sign_in(&ts.url, "/login", "alice").await.unwrap();
    let c = cookie(&s);
    let verifier = "a-verifier-that-is-long-enough-0123456789abcdef";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
    let redirect = "http://127.0.0.1:5555/callback";
    let q = format!(
        "/cli/authorize?redirect_uri={}&state=st1&code_challenge={challenge}&code_challenge_method=S256",
        kubehero_server::login::urlencode(redirect)
    );
    for bad in ["https://evil.example/callback", "http://127.0.0.1:5555/other", "http://evil.example:5555/callback"] {
        let path = q.replace(&kubehero_server::login::urlencode(redirect), &kubehero_server::login::urlencode(bad));
        let r = with_cookie(&ts, reqwest::Method::GET, &path, &c).await.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let page = with_cookie(&ts, reqwest::Method::GET, &q, &c).await.send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<strong>alice</strong>"), "{page}");
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let csrf = page[at..at + page[at..].find('"').unwrap()].to_string();
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let form = [
        ("redirect_uri", redirect),
        ("state", "st1"),
        ("code_challenge", challenge.as_str()),
        ("csrf", csrf.as_str()),
        ("decision", "approve"),
    ];
    let r =
        no_redirect.post(format!("{}/cli/authorize", ts.url)).header("cookie", &c).form(&form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert!(to.starts_with("http://127.0.0.1:5555/callback?code=") && to.ends_with("&state=st1"), "{to}");
    let code = to.split("code=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let exchange = |verifier: &str| {
        ts.http
            .post(format!("{}/api/auth/cli/token", ts.url))
            .json(&json!({ "code": code, "code_verifier": verifier }))
            .send()
    };
    let r = exchange("not-the-verifier").await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_grant", "PKCE");
    let tok: serde_json::Value = exchange(verifier).await.unwrap().json().await.unwrap();
    let token = tok["access_token"].as_str().unwrap();
    assert_eq!(ts.whoami(token).await["auth_method"], "cli_token");
    let r = exchange(verifier).await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_grant", "single use");
}

#[tokio::test]
async fn several_idps_are_listed_on_the_sign_in_page() {
    let port = free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let a = OidcProvider::start_for(free_port().unwrap(), std::slice::from_ref(&base)).await.unwrap();
    let b = OidcProvider::start_for(free_port().unwrap(), std::slice::from_ref(&base)).await.unwrap();
    let file = format!(
        "[[issuers]]\nissuer = \"{}\"\naudiences = [\"kubehero\"]\n[[issuers]]\nissuer = \"{}\"\naudiences = [\"kubehero\"]\ngroup_prefix = \"b:\"\n",
        a.issuer, b.issuer
    );
    let ts = TestServer::start(
        &[
            ("KUBEHERO_LISTEN", &format!("127.0.0.1:{port}")),
            ("KUBEHERO_PUBLIC_URL", &base),
            ("KUBEHERO_OIDC_CLIENT_ID", "kubehero"),
            ("KUBEHERO_OIDC_CLIENT_SECRET", "kubehero-secret"),
        ],
        Some(&file),
    )
    .await;
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = no_redirect.get(format!("{base}/login?return_to=/x")).send().await.unwrap().text().await.unwrap();
    for idp in [&a.issuer, &b.issuer] {
        assert!(page.contains(&kubehero_server::login::urlencode(idp)), "{page}");
    }
    // Signing in through the second one: its prefixed groups.
    let start = format!("/login?issuer={}&return_to=/api/v1/whoami", kubehero_server::login::urlencode(&b.issuer));
    let s = b.sign_in(&ts.url, &start, "carol").await.unwrap();
    let me: serde_json::Value = with_cookie(&ts, reqwest::Method::GET, "/api/v1/whoami", &cookie(&s))
        .await
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["groups"], json!(["b:oncall", "b:dev"]));
    assert_eq!(me["issuer"], b.issuer);
}
