//! Dashboard sign-in: `/login` → the IdP (authorization code flow with PKCE, `state` and `nonce`) →
//! `/api/auth/callback` → a server-side session whose opaque id is the `kh_session` cookie.
//!
//! - The id_token goes through the same [`kubehero_authn::Verifier`] as bearer tokens; its `nonce` and `aud`
//!   (the client id) are then checked. Groups come from the id_token, or from userinfo when it has none.
//! - Nothing is stored before the person is signed in: what the callback needs (issuer, PKCE verifier, nonce,
//!   return path, expiry, and `state`) travels in the `kh_login` cookie, sealed (ChaCha20-Poly1305) with a key
//!   derived from `AUDIT_HMAC_KEY`, so `/login` can be called any number of times without growing the
//!   database. The cookie binds `state` to the browser; it lives ten minutes and is cleared by the callback (the
//!   IdP accepts each code once). The return path must be a local path, so the flow cannot redirect off-site.
//! - Sessions last 8 hours sliding (renewed on use, at most one store write a minute) under a 24-hour cap.
//! - Cookie-authenticated writes need the session's CSRF token (see [`crate::auth`]).

use crate::audit::{Recorded, RecordedWithChange, RequestContext};
use crate::config::LoginClient;
use crate::error::{ApiError, ApiResult, Code};
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use kubehero_authn::sha256_hex;
use kubehero_core::AuditActor;
use kubehero_store::SessionKind;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

pub const SESSION_COOKIE: &str = "kh_session";
const LOGIN_COOKIE: &str = "kh_login";
/// What the `kh_login` cookie's sealing key is derived with.
const STATE_LABEL: &[u8] = b"kubehero-login-state-v1";
pub use kubehero_identity::credential::{SESSION_IDLE_SECS, SESSION_MAX_SECS, SESSION_PREFIX, SESSION_TOUCH_SECS};
const ATTEMPT_SECS: i64 = 600;

/// The IdP endpoints sign-in needs, from discovery.
#[derive(Debug, Clone, Deserialize)]
struct Endpoints {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
    end_session_endpoint: Option<String>,
}

/// One issuer people may sign in with.
#[derive(Debug, Clone)]
pub struct LoginIssuer {
    pub issuer: String,
    pub group_prefix: String,
    pub groups_claim: String,
}

/// Sign-in state shared by the handlers.
pub struct Login {
    pub client: LoginClient,
    pub issuers: Vec<LoginIssuer>,
    /// Seal the pending sign-in into the `kh_login` cookie ([`crate::sealed`], under [`STATE_LABEL`]): sealed
    /// under the current audit HMAC key, opened under the key it names, so a sign-in begun before a rotation of
    /// `AUDIT_HMAC_KEY` (or on a replica that already has the new key) still finishes.
    keys: Arc<kubehero_audit::HmacKeys>,
    http: reqwest::Client,
    endpoints: Mutex<HashMap<String, Endpoints>>,
}

impl Login {
    /// Fails only if the HTTP client cannot be built (no TLS roots); never falls back to a client that
    /// follows redirects.
    pub fn new(
        client: LoginClient,
        issuers: Vec<LoginIssuer>,
        keys: Arc<kubehero_audit::HmacKeys>,
    ) -> Result<Login, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Login { keys, client, issuers, http, endpoints: Mutex::new(HashMap::new()) })
    }

    /// Seals a pending sign-in into a cookie value (`<audit key id>:<base64url>`).
    fn seal(&self, pending: &Pending) -> ApiResult<String> {
        let json = serde_json::to_string(pending).map_err(|e| ApiError::new(Code::Internal, e.to_string()))?;
        crate::sealed::seal(&self.keys, STATE_LABEL, &json)
            .map_err(|e| ApiError::new(Code::Internal, format!("sealing the sign-in state failed: {e}")))
    }

    /// Opens a cookie made by [`Login::seal`]; `None` if it was not made with one of our keys or was changed.
    fn open(&self, cookie: &str) -> Option<Pending> {
        let json = crate::sealed::open(&self.keys, STATE_LABEL, cookie, "the sign-in state").ok()?;
        serde_json::from_str(&json).ok()
    }

    fn secure(&self) -> bool {
        self.client.public_url.starts_with("https://")
    }

    fn redirect_uri(&self) -> String {
        format!("{}/api/auth/callback", self.client.public_url)
    }

    async fn endpoints(&self, issuer: &str) -> ApiResult<Endpoints> {
        if let Some(e) = self.endpoints.lock().get(issuer) {
            return Ok(e.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let e: Endpoints = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| idp_down(issuer, e))?
            .json()
            .await
            .map_err(|e| idp_down(issuer, e))?;
        if e.issuer != issuer {
            return Err(ApiError::new(Code::Unavailable, "the identity provider's discovery names another issuer"));
        }
        self.endpoints.lock().insert(issuer.to_string(), e.clone());
        Ok(e)
    }
}

fn idp_down(issuer: &str, e: reqwest::Error) -> ApiError {
    tracing::warn!(issuer, error = %e.without_url(), "identity provider unreachable during sign-in");
    ApiError::new(Code::Unavailable, "the identity provider cannot be reached; try again shortly")
}

fn random_b64(n: usize) -> ApiResult<String> {
    Ok(kubehero_identity::credential::random_b64(n)?)
}

/// A local path to return to after sign-in; anything else (absolute URLs, `//host`, `/\host`, control
/// characters) becomes `/`.
pub fn safe_return_path(p: Option<&str>) -> String {
    match p {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && p.len() <= 2048
                && !p.chars().any(|c| c.is_control() || c == '\\') =>
        {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

fn cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let c = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The value of cookie `name`, if the request carries it.
pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    for v in headers.get_all(COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some(value) = pair.trim_start().strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                return Some(value.trim_end());
            }
        }
    }
    None
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// HTML-escapes text for the pages below.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn login_of(s: &AppState) -> ApiResult<&Arc<Login>> {
    s.login.as_ref().ok_or_else(|| {
        ApiError::not_found("browser sign-in is not configured: set KUBEHERO_OIDC_CLIENT_ID and OIDC_ISSUER_URL")
    })
}

/// A sign-in between `/login` and the callback, sealed into the `kh_login` cookie.
#[derive(Serialize, Deserialize)]
struct Pending {
    /// The `state` parameter sent to the IdP.
    state: String,
    issuer: String,
    verifier: String,
    nonce: String,
    return_to: String,
    /// Unix seconds.
    expires_at: i64,
}

#[derive(Debug, Deserialize)]
pub struct LoginParams {
    return_to: Option<String>,
    issuer: Option<String>,
}

/// `GET /login`: with one issuer, straight to it; with several, a page listing them.
pub async fn login(State(s): State<AppState>, Query(q): Query<LoginParams>) -> ApiResult<Response> {
    let login = login_of(&s)?;
    let return_to = safe_return_path(q.return_to.as_deref());
    let issuer = match (&q.issuer, login.issuers.as_slice()) {
        (Some(i), all) => all.iter().find(|x| &x.issuer == i).ok_or_else(|| ApiError::invalid("unknown issuer"))?,
        (None, [only]) => only,
        (None, all) => {
            let items: String = all
                .iter()
                .map(|i| {
                    let href = format!("/login?issuer={}&return_to={}", urlencode(&i.issuer), urlencode(&return_to));
                    format!("<li><a href=\"{}\">{}</a></li>", esc(&href), esc(&i.issuer))
                })
                .collect();
            return Ok(html(StatusCode::OK, page("Sign in", &format!("<h1>Sign in with</h1><ul>{items}</ul>"))));
        }
    };
    let ep = login.endpoints(&issuer.issuer).await?;
    let (state, nonce, verifier) = (random_b64(32)?, random_b64(32)?, random_b64(48)?);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
    let sealed = login.seal(&Pending {
        state: state.clone(),
        issuer: issuer.issuer.clone(),
        verifier,
        nonce: nonce.clone(),
        return_to,
        expires_at: s.clock.now() + ATTEMPT_SECS,
    })?;
    let sep = if ep.authorization_endpoint.contains('?') { '&' } else { '?' };
    let to = format!(
        "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope=openid%20email%20profile%20groups\
         &state={state}&nonce={nonce}&code_challenge={challenge}&code_challenge_method=S256",
        ep.authorization_endpoint,
        urlencode(&login.client.client_id),
        urlencode(&login.redirect_uri()),
    );
    let mut r = redirect(&to);
    r.headers_mut().append(SET_COOKIE, cookie(LOGIN_COOKIE, &sealed, "/api/auth", ATTEMPT_SECS, login.secure()));
    Ok(r)
}

#[derive(Debug, Deserialize)]
pub struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    access_token: Option<String>,
}

/// `GET /api/auth/callback`: finishes sign-in and starts the session.
pub async fn callback(
    State(s): State<AppState>,
    context: RequestContext,
    headers: HeaderMap,
    Query(q): Query<CallbackParams>,
) -> Response {
    match finish(&s, &context, &headers, q).await {
        Ok((session_cookie, return_to)) => {
            let mut r = redirect(&return_to);
            let secure = s.login.as_ref().is_some_and(|l| l.secure());
            r.headers_mut().append(SET_COOKIE, session_cookie);
            r.headers_mut().append(SET_COOKIE, cookie(LOGIN_COOKIE, "", "/api/auth", 0, secure));
            r.extensions_mut().insert(RecordedWithChange);
            r
        }
        Err(e) => {
            let mut r = e.into_response();
            r.extensions_mut().insert(Recorded {
                action: "auth.login",
                actor: AuditActor::unauthenticated("oidc"),
                plain_read: false,
            });
            r
        }
    }
}

/// Finishes a sign-in: the session and its `auth.login` row commit together.
async fn finish(
    s: &AppState,
    context: &RequestContext,
    headers: &HeaderMap,
    q: CallbackParams,
) -> ApiResult<(HeaderValue, String)> {
    let login = login_of(s)?;
    if let Some(e) = q.error {
        return Err(ApiError::unauthenticated(format!("the identity provider refused the sign-in: {}", esc(&e))));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return Err(ApiError::invalid("code and state are required"));
    };
    // The flow must have started in this browser: the state comes back in the cookie set by /login.
    let attempt = read_cookie(headers, LOGIN_COOKIE)
        .and_then(|c| login.open(c))
        .filter(|p| bool::from(subtle::ConstantTimeEq::ct_eq(p.state.as_bytes(), state.as_bytes())))
        .ok_or_else(|| ApiError::invalid("this sign-in did not start in this browser; start again at /login"))?;
    let now = s.clock.now();
    if attempt.expires_at <= now {
        return Err(ApiError::invalid("this sign-in expired; start again at /login"));
    }
    let ep = login.endpoints(&attempt.issuer).await?;
    let redirect_uri = login.redirect_uri();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", attempt.verifier.as_str()),
        ("client_id", login.client.client_id.as_str()),
    ];
    let mut req = login.http.post(&ep.token_endpoint).form(&form);
    if let Some(secret) = &login.client.client_secret {
        req = req.basic_auth(&login.client.client_id, Some(secret.expose()));
    }
    let res = req.send().await.map_err(|e| idp_down(&attempt.issuer, e))?;
    if !res.status().is_success() {
        return Err(ApiError::unauthenticated(format!(
            "the identity provider refused the code exchange ({})",
            res.status().as_u16()
        )));
    }
    let tokens: TokenResponse = res.json().await.map_err(|e| idp_down(&attempt.issuer, e))?;
    let id_token = tokens.id_token.ok_or_else(|| ApiError::unauthenticated("the token response has no id_token"))?;
    let v = s
        .identity
        .verifier
        .verify(&id_token, now)
        .await
        .map_err(|e| ApiError::unauthenticated(format!("invalid id_token: {e}")))?;
    let claims = verified_payload(&id_token)?;
    if claims.get("nonce").and_then(|n| n.as_str()) != Some(attempt.nonce.as_str()) {
        return Err(ApiError::unauthenticated("invalid id_token: nonce mismatch"));
    }
    let aud_ok = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => a == &login.client.client_id,
        Some(serde_json::Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(login.client.client_id.as_str())),
        _ => false,
    };
    if !aud_ok || v.issuer != attempt.issuer {
        return Err(ApiError::unauthenticated("invalid id_token: not issued to this client"));
    }
    let issuer = login.issuers.iter().find(|i| i.issuer == attempt.issuer);
    let mut groups = v.groups.clone();
    if let (Some(i), Some(userinfo), Some(access)) = (issuer, &ep.userinfo_endpoint, &tokens.access_token) {
        if !claims.contains_key(&i.groups_claim) {
            groups = userinfo_groups(login, userinfo, access, i).await.unwrap_or_default();
        }
    }
    // The directory decides before a session exists: a deprovisioned person gets none; one the IdP has not
    // provisioned yet is created just-in-time, for SCIM to adopt later.
    match &*s.identity.directory.standing(Some(&v.issuer), &v.sub, v.email.as_deref()).await? {
        kubehero_identity::directory::Standing::Inactive | kubehero_identity::directory::Standing::Deleted => {
            return Err(ApiError::unauthenticated("this person was deprovisioned by the identity provider"));
        }
        kubehero_identity::directory::Standing::Unknown => {
            s.identity.provision_at_sign_in(&v.issuer, &v.sub, v.email.as_deref()).await?;
        }
        kubehero_identity::directory::Standing::Active { .. } => {}
    }
    let who = kubehero_identity::SignedIn {
        sub: v.sub.clone(),
        email: v.email.clone(),
        groups,
        issuer: Some(v.issuer.clone()),
        user_agent: headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|u| u.to_str().ok())
            .map(|u| u.chars().take(256).collect()),
    };
    let (secret, record) = kubehero_identity::credential::mint_session(who, now)?;
    let actor = person(&record, "oidc");
    let change = kubehero_store::Change::CreateSession(&record);
    context.apply(&actor, change, "auth.login", &Default::default(), StatusCode::SEE_OTHER).await?;
    Ok((cookie(SESSION_COOKIE, &secret, "/", SESSION_MAX_SECS, login.secure()), attempt.return_to))
}

/// The payload of a token whose signature was verified.
fn verified_payload(token: &str) -> ApiResult<serde_json::Map<String, serde_json::Value>> {
    let payload = token.split('.').nth(1).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::unauthenticated("invalid id_token payload"))
}

async fn userinfo_groups(login: &Login, url: &str, access: &str, i: &LoginIssuer) -> Option<Vec<String>> {
    let v: serde_json::Value = login.http.get(url).bearer_auth(access).send().await.ok()?.json().await.ok()?;
    let raw = match v.get(&i.groups_claim)? {
        serde_json::Value::Array(a) => a.iter().filter_map(|g| g.as_str().map(str::to_string)).collect(),
        serde_json::Value::String(g) => vec![g.clone()],
        _ => Vec::new(),
    };
    Some(raw.into_iter().map(|g| format!("{}{g}", i.group_prefix)).collect())
}

/// `POST /api/auth/logout`: ends the session (CSRF-checked), clears the cookie, and sends the browser to the
/// IdP's `end_session_endpoint` when it has one, else to `/login`.
pub async fn logout(
    State(s): State<AppState>,
    context: RequestContext,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let login = login_of(&s)?;
    let secret = read_cookie(&headers, SESSION_COOKIE).ok_or_else(|| ApiError::unauthenticated("not signed in"))?;
    let session = s
        .store
        .find_session_by_hash(&sha256_hex(secret))
        .await?
        .filter(|x| x.kind == SessionKind::Session)
        .ok_or_else(|| ApiError::unauthenticated("not signed in"))?;
    let form = form_fields(&body);
    let sent = form
        .get("csrf")
        .cloned()
        .or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).map(str::to_string));
    if !crate::auth::csrf_matches(session.csrf.as_deref(), sent.as_deref()) {
        return Err(ApiError::denied("missing or wrong CSRF token"));
    }
    let change = kubehero_store::Change::RevokeSession { id: &session.id, at: s.clock.now() };
    context
        .apply(&person(&session, "session"), change, "auth.logout", &Default::default(), StatusCode::SEE_OTHER)
        .await?;
    s.identity.credentials.forget_id(&session.id);
    let to = match session.issuer.as_deref() {
        Some(i) => match login.endpoints(i).await.ok().and_then(|e| e.end_session_endpoint) {
            Some(end) => format!(
                "{end}{}client_id={}&post_logout_redirect_uri={}",
                if end.contains('?') { '&' } else { '?' },
                urlencode(&login.client.client_id),
                urlencode(&format!("{}/login", login.client.public_url))
            ),
            None => "/login".to_string(),
        },
        None => "/login".to_string(),
    };
    let mut r = redirect(&to);
    r.headers_mut().append(SET_COOKIE, cookie(SESSION_COOKIE, "", "/", 0, login.secure()));
    r.extensions_mut().insert(RecordedWithChange);
    Ok(r)
}

/// The audit actor of the person a session or CLI token belongs to, signing in or out by `method`.
pub fn person(record: &kubehero_store::SessionRecord, method: &str) -> AuditActor {
    AuditActor {
        sub: record.sub.clone(),
        issuer: record.issuer.clone(),
        email: record.email.clone(),
        groups: record.groups.clone(),
        kind: "person".into(),
        auth_method: method.into(),
    }
}

/// The fields of an `application/x-www-form-urlencoded` body (first value of each name).
pub fn form_fields(body: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · KubeHero</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"stylesheet\" href=\"/ui/app.css\"></head><body><main id=\"main\">{body}</main></body></html>",
        esc(title)
    )
}

/// `GET /`: who you are, your roles and how to install the CLI; sign-in when there is no session.
pub async fn home(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let Some(secret) = read_cookie(&headers, SESSION_COOKIE) else {
        return Ok(redirect("/login?return_to=/"));
    };
    let Ok(p) = s.identity.session(secret).await else {
        return Ok(redirect("/login?return_to=/"));
    };
    let (principal, session) = p;
    let roles: Vec<String> = principal.roles().iter().map(|r| r.to_string()).collect();
    let scoped: Vec<String> = principal
        .scoped_grants()
        .map(|g| format!("{} in {}", g.role, esc(&serde_json::to_string(&g.scope).unwrap_or_default())))
        .collect();
    let body = format!(
        "<p id=\"who\">You are <strong>{sub}</strong>{email}.</p>\
         <p id=\"role\">Role: <strong>{role}</strong> (holds: {roles}{scoped})</p>\
         <p id=\"groups\">Groups: {groups}</p>\
         <div class=\"cards\"><section><h2><a href=\"/ui/clusters\">Clusters</a></h2><p>Every cluster and its state, \
         kubeconfigs, share links.</p></section><section><h2><a href=\"/ui/access\">Access</a></h2><p>What you hold and \
         why, requests to approve, asking for more.</p></section></div>\
         <h2>Install the CLI</h2>\
         <pre>cargo install --git &lt;this repository&gt; kubehero\nkubehero login --server {url}</pre>",
        sub = esc(&principal.sub),
        email = principal.email.as_deref().map(|e| format!(" ({})", esc(e))).unwrap_or_default(),
        role = esc(principal.display_role().as_str()),
        roles = esc(&roles.join(", ")),
        scoped = if scoped.is_empty() { String::new() } else { format!("; scoped: {}", scoped.join(", ")) },
        groups = esc(&principal.groups.join(", ")),
        url = esc(&s.login.as_ref().map(|l| l.client.public_url.clone()).unwrap_or_default()),
    );
    crate::ui::page(&s, &principal, &session, crate::ui::Section::Home, "Signed in to KubeHero", &body).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A Login whose current audit HMAC key is `current`, with `previous` kept.
    fn login(current: &[u8], previous: &[&[u8]]) -> Login {
        let client = LoginClient { client_id: "kubehero".into(), client_secret: None, public_url: "https://kh".into() };
        let keys = kubehero_audit::HmacKeys::new(current, previous).unwrap();
        Login::new(client, Vec::new(), Arc::new(keys)).unwrap()
    }

    #[test]
    fn a_sign_in_begun_before_a_key_rotation_still_finishes() {
        let pending = Pending {
            state: "s".into(),
            issuer: "https://idp".into(),
            verifier: "v".into(),
            nonce: "n".into(),
            return_to: "/".into(),
            expires_at: 100,
        };
        let (k7, k8) = ([7u8; 32], [8u8; 32]);
        let (old, rotated) = (login(&k7, &[]), login(&k8, &[&k7]));
        let cookie = old.seal(&pending).unwrap();
        assert_eq!(rotated.open(&cookie).map(|p| p.state), Some("s".to_string()), "opened with the previous key");
        assert!(login(&k8, &[]).open(&cookie).is_none(), "another key");
        let fresh = rotated.seal(&pending).unwrap();
        assert!(old.open(&fresh).is_none(), "sealed with the new key");
        let mut changed = fresh.into_bytes();
        changed[20] ^= 1;
        assert!(rotated.open(&String::from_utf8_lossy(&changed)).is_none(), "changed");
    }
}
