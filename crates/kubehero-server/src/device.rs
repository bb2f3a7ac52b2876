//! CLI login with a device flow the control plane runs itself, shaped like RFC 8628: the CLI asks for a code,
//! the person opens `/device` on any device, signs in through the IdP (the dashboard sign-in), confirms the
//! code, and the polling CLI receives a CLI token (`khc_…`, 30 days, stored hashed, bound to the person).

use crate::audit::{Recorded, RecordedWithChange, RequestContext};
use crate::error::{ApiError, ApiResult};
use crate::login::{esc, read_cookie, urlencode, SESSION_COOKIE};
use crate::net::ClientAddr;
use crate::routes::Json;
use crate::state::AppState;
use crate::throttle;
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use kubehero_authn::sha256_hex;
use kubehero_core::AuditActor;
use kubehero_store::{DeviceAuthorization, DeviceStatus, SessionRecord};
use serde::Deserialize;
use serde_json::json;

pub use kubehero_identity::credential::{CLI_TOKEN_PREFIX, CLI_TOKEN_SECS};
const DEVICE_SECS: i64 = 600;
const POLL_INTERVAL_SECS: i64 = 5;
/// RFC 8628 §6.1: no vowels, no look-alikes.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

fn random(n: usize) -> ApiResult<Vec<u8>> {
    Ok(kubehero_identity::credential::random_bytes(n)?)
}

/// `XXXX-XXXX` from the 20-letter alphabet (bytes ≥ 240 are skipped so every letter is equally likely).
fn user_code() -> ApiResult<String> {
    let mut out = String::with_capacity(9);
    while out.len() < 9 {
        for b in random(16)? {
            if b < 240 && out.len() < 9 {
                if out.len() == 4 {
                    out.push('-');
                }
                out.push(char::from(USER_CODE_ALPHABET[usize::from(b % 20)]));
            }
        }
    }
    Ok(out)
}

/// `abcd efgh`, `ABCDEFGH`, `abcd-efgh` → `ABCD-EFGH`.
fn normalize_user_code(s: &str) -> Option<String> {
    let letters: String = s.chars().filter(|c| !matches!(c, '-' | ' ')).map(|c| c.to_ascii_uppercase()).collect();
    (letters.len() == 8 && letters.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)))
        .then(|| format!("{}-{}", &letters[..4], &letters[4..]))
}

/// A new CLI token for `who`: the secret (shown once) and its record.
pub fn new_cli_token(
    sub: &str,
    email: Option<String>,
    groups: Vec<String>,
    issuer: Option<String>,
    now: i64,
    user_agent: Option<String>,
) -> ApiResult<(String, SessionRecord)> {
    let who = kubehero_identity::SignedIn { sub: sub.to_string(), email, groups, issuer, user_agent };
    Ok(kubehero_identity::credential::mint_cli_token(who, now)?)
}

fn public_url(s: &AppState) -> ApiResult<String> {
    s.login.as_ref().map(|l| l.client.public_url.clone()).ok_or_else(|| {
        ApiError::not_found("CLI login needs browser sign-in: set KUBEHERO_OIDC_CLIENT_ID and OIDC_ISSUER_URL")
    })
}

/// Device authorizations that may be live at once (each lives `DEVICE_SECS`); past it, new ones get 429.
const MAX_LIVE_DEVICES: i64 = 10_000;

fn refused(mut r: Response) -> Response {
    r.extensions_mut().insert(Recorded {
        action: "auth.device_code",
        actor: AuditActor::unauthenticated("none"),
        plain_read: false,
    });
    r
}

/// `POST /api/auth/device/code`: a device code for the CLI and a user code for the person.
pub async fn code(State(s): State<AppState>, client: Option<axum::Extension<ClientAddr>>) -> ApiResult<Response> {
    let base = public_url(&s)?;
    if let Some(axum::Extension(ClientAddr(addr))) = client {
        if let Err(wait) = s.device_codes.take(addr) {
            return Ok(refused(throttle::too_many("too many sign-ins started from this address; retry later", wait)));
        }
    }
    if s.store.count_live_devices(s.clock.now()).await? >= MAX_LIVE_DEVICES {
        let message = "too many sign-ins are in progress; retry in a minute";
        return Ok(refused(throttle::too_many(message, 60)));
    }
    let device_code = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random(32)?);
    let now = s.clock.now();
    let mut attempts = 0;
    let user_code = loop {
        let code = user_code()?;
        let d = DeviceAuthorization {
            device_hash: sha256_hex(&device_code),
            user_code: code.clone(),
            status: DeviceStatus::Pending,
            sub: None,
            email: None,
            groups: Vec::new(),
            issuer: None,
            created_at: now,
            expires_at: now + DEVICE_SECS,
            last_poll_at: None,
        };
        match s.store.create_device(&d).await {
            Ok(()) => break code,
            // A user code still in use: draw another.
            Err(kubehero_store::StoreError::AlreadyExists(_)) if attempts < 5 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let verification_uri = format!("{base}/device");
    let body = json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": format!("{verification_uri}?user_code={user_code}"),
        "expires_in": DEVICE_SECS,
        "interval": POLL_INTERVAL_SECS,
    });
    let mut r = axum::Json(body).into_response();
    r.extensions_mut().insert(Recorded {
        action: "auth.device_code",
        actor: AuditActor::unauthenticated("none"),
        plain_read: false,
    });
    Ok(r)
}

#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    device_code: String,
}

fn oauth_error(error: &'static str) -> Response {
    let mut r = (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": error }))).into_response();
    r.extensions_mut().insert(crate::middleware::ForeignErrorBody);
    r
}

/// `POST /api/auth/device/token`: what the CLI polls. RFC 8628 §3.5 answers.
pub async fn token(
    State(s): State<AppState>,
    context: RequestContext,
    headers: HeaderMap,
    Json(req): Json<TokenRequest>,
) -> ApiResult<Response> {
    let now = s.clock.now();
    let hash = sha256_hex(&req.device_code);
    let Some(d) = s.store.poll_device(&hash, now).await? else {
        return Ok(oauth_error("invalid_grant"));
    };
    if now >= d.expires_at && d.status != DeviceStatus::Approved {
        return Ok(oauth_error("expired_token"));
    }
    match d.status {
        DeviceStatus::Denied => return Ok(oauth_error("access_denied")),
        DeviceStatus::Consumed => return Ok(oauth_error("invalid_grant")),
        DeviceStatus::Pending if d.last_poll_at.is_some_and(|t| now - t < POLL_INTERVAL_SECS - 1) => {
            return Ok(oauth_error("slow_down"))
        }
        DeviceStatus::Pending => return Ok(oauth_error("authorization_pending")),
        DeviceStatus::Approved => {}
    }
    if !s.store.consume_device(&hash).await? {
        return Ok(oauth_error("invalid_grant"));
    }
    issue_token(&context, &headers, d, now, "device").await
}

/// Issues the CLI token an approved (and just consumed) authorization stands for, as the OAuth token
/// response; the sign-in is an `auth.login` audit row with `method` (device or loopback).
async fn issue_token(
    context: &RequestContext,
    headers: &HeaderMap,
    d: DeviceAuthorization,
    now: i64,
    method: &str,
) -> ApiResult<Response> {
    let sub = d.sub.clone().unwrap_or_default();
    let ua = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(256).collect());
    let (secret, record) = new_cli_token(&sub, d.email.clone(), d.groups.clone(), d.issuer.clone(), now, ua)?;
    let actor = crate::login::person(&record, method);
    let change = kubehero_store::Change::CreateSession(&record);
    context.apply(&actor, change, "auth.login", &Default::default(), StatusCode::OK).await?;
    let mut r = axum::Json(json!({ "access_token": secret, "token_type": "Bearer", "expires_in": CLI_TOKEN_SECS }))
        .into_response();
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.extensions_mut().insert(RecordedWithChange);
    Ok(r)
}

fn html(body: String) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(Debug, Deserialize)]
pub struct DeviceQuery {
    user_code: Option<String>,
}

/// `GET /device`: after sign-in, the person confirms (or denies) the code their terminal shows.
pub async fn page(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<DeviceQuery>) -> ApiResult<Response> {
    public_url(&s)?;
    let here = match &q.user_code {
        Some(c) => format!("/device?user_code={}", urlencode(c)),
        None => "/device".to_string(),
    };
    let session = match read_cookie(&headers, SESSION_COOKIE) {
        Some(secret) => s.identity.session(secret).await.ok(),
        None => None,
    };
    let Some((principal, session)) = session else {
        let mut r = StatusCode::SEE_OTHER.into_response();
        let to = format!("/login?return_to={}", urlencode(&here));
        r.headers_mut().insert(LOCATION, HeaderValue::from_str(&to).unwrap_or(HeaderValue::from_static("/login")));
        return Ok(r);
    };
    let code = q.user_code.as_deref().and_then(normalize_user_code).unwrap_or_default();
    Ok(html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Confirm CLI login · KubeHero</title>\
         </head><body><h1>Sign in a terminal</h1><p>Signed in as <strong>{sub}</strong>. Confirm only a code that \
         your own terminal shows.</p><form method=\"post\" action=\"/device\">\
         <label>Code <input name=\"user_code\" value=\"{code}\" autocomplete=\"off\"></label>\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button name=\"decision\" value=\"approve\" id=\"approve\">Approve</button> \
         <button name=\"decision\" value=\"deny\" id=\"deny\">Deny</button></form></body></html>",
        sub = esc(&principal.sub),
        code = esc(&code),
        csrf = esc(session.csrf.as_deref().unwrap_or_default()),
    )))
}

/// `POST /device` (form): approve or deny, CSRF-checked.
pub async fn decide(
    State(s): State<AppState>,
    context: RequestContext,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    public_url(&s)?;
    let secret = read_cookie(&headers, SESSION_COOKIE).ok_or_else(|| ApiError::unauthenticated("sign in first"))?;
    let (principal, session) = s.identity.session(secret).await?;
    let form: std::collections::HashMap<String, String> = crate::login::form_fields(&body);
    if !crate::auth::csrf_matches(session.csrf.as_deref(), form.get("csrf").map(String::as_str)) {
        return Err(ApiError::denied("missing or wrong CSRF token"));
    }
    let code = form
        .get("user_code")
        .and_then(|c| normalize_user_code(c))
        .ok_or_else(|| ApiError::invalid("enter the 8-letter code your terminal shows"))?;
    let approve = form.get("decision").map(String::as_str) == Some("approve");
    let action = if approve { "auth.device_approve" } else { "auth.device_deny" };
    let change =
        kubehero_store::Change::DecideDevice { user_code: &code, approve, who: Some(&session), now: s.clock.now() };
    let decided = context.apply(&AuditActor::of(&principal), change, action, &Default::default(), StatusCode::OK).await;
    let d = decided.and_then(kubehero_store::changed_device).map_err(|e| match e {
        kubehero_store::StoreError::NotFound(_) => ApiError::not_found("no such code"),
        kubehero_store::StoreError::Conflict(_) => ApiError::new(
            crate::error::Code::FailedPrecondition,
            "this code was already used or has expired; run `kubehero login` again",
        ),
        other => other.into(),
    })?;
    let mut r = html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>KubeHero</title></head><body>\
         <h1 id=\"result\">{}</h1><p>You can close this window.</p></body></html>",
        if approve { "Approved: return to your terminal" } else { "Denied" }
    ));
    r.extensions_mut().insert(RecordedWithChange);
    tracing::info!(user_code = %d.user_code, sub = %principal.sub, approve, "device authorization decided");
    Ok(r)
}

/// Lifetime of a loopback authorization code.
const LOOPBACK_CODE_SECS: i64 = 120;

/// The only redirect URIs `kubehero login --browser` may ask for: its own loopback listener.
fn loopback_redirect(uri: &str) -> Option<&str> {
    let rest = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"].iter().find_map(|p| uri.strip_prefix(p))?;
    let port = rest.strip_suffix("/callback")?;
    (!port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0))
    .then_some(uri)
}

#[derive(Debug, Deserialize)]
pub struct AuthorizeParams {
    redirect_uri: String,
    state: String,
    code_challenge: String,
    #[serde(default)]
    code_challenge_method: Option<String>,
}

impl AuthorizeParams {
    fn check(&self) -> ApiResult<()> {
        if loopback_redirect(&self.redirect_uri).is_none() {
            return Err(ApiError::invalid(
                "redirect_uri must be http://127.0.0.1:PORT/callback (the CLI's own listener)",
            ));
        }
        if self.code_challenge_method.as_deref().is_some_and(|m| m != "S256") {
            return Err(ApiError::invalid("code_challenge_method must be S256"));
        }
        let b64 = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if self.code_challenge.len() != 43
            || !b64(&self.code_challenge)
            || self.state.is_empty()
            || self.state.len() > 128
            || !b64(&self.state)
        {
            return Err(ApiError::invalid("code_challenge (S256, base64url) and state are required"));
        }
        Ok(())
    }
}

fn loopback_hash(code: &str, challenge: &str) -> String {
    // The code is bound to the PKCE challenge: only the holder of the verifier can find it again.
    sha256_hex(&format!("{code}.{challenge}"))
}

/// `GET /cli/authorize`: the page `kubehero login --browser` opens; after sign-in the person approves.
pub async fn authorize_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(q): Query<AuthorizeParams>,
) -> ApiResult<Response> {
    public_url(&s)?;
    q.check()?;
    let session = match read_cookie(&headers, SESSION_COOKIE) {
        Some(secret) => s.identity.session(secret).await.ok(),
        None => None,
    };
    let Some((principal, session)) = session else {
        let here = uri.path_and_query().map_or("/cli/authorize", |p| p.as_str());
        let mut r = StatusCode::SEE_OTHER.into_response();
        let to = format!("/login?return_to={}", urlencode(here));
        r.headers_mut().insert(LOCATION, HeaderValue::from_str(&to).unwrap_or(HeaderValue::from_static("/login")));
        return Ok(r);
    };
    let hidden = |n: &str, v: &str| format!("<input type=\"hidden\" name=\"{n}\" value=\"{}\">", esc(v));
    Ok(html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in the CLI · KubeHero</title>\
         </head><body><h1>Sign in the kubehero CLI on this computer?</h1><p>Signed in as <strong>{sub}</strong>. \
         Approve only if you just ran <code>kubehero login --browser</code>.</p>\
         <form method=\"post\" action=\"/cli/authorize\">{a}{b}{c}{d}\
         <button name=\"decision\" value=\"approve\" id=\"approve\">Approve</button> \
         <button name=\"decision\" value=\"deny\" id=\"deny\">Deny</button></form></body></html>",
        sub = esc(&principal.sub),
        a = hidden("redirect_uri", &q.redirect_uri),
        b = hidden("state", &q.state),
        c = hidden("code_challenge", &q.code_challenge),
        d = hidden("csrf", session.csrf.as_deref().unwrap_or_default()),
    )))
}

/// `POST /cli/authorize` (form, CSRF-checked): sends the browser back to the CLI's loopback listener with a
/// one-time code (120 s) bound to the PKCE challenge, or with `error=access_denied`.
pub async fn authorize(State(s): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> ApiResult<Response> {
    public_url(&s)?;
    let secret = read_cookie(&headers, SESSION_COOKIE).ok_or_else(|| ApiError::unauthenticated("sign in first"))?;
    let (principal, session) = s.identity.session(secret).await?;
    let form = crate::login::form_fields(&body);
    if !crate::auth::csrf_matches(session.csrf.as_deref(), form.get("csrf").map(String::as_str)) {
        return Err(ApiError::denied("missing or wrong CSRF token"));
    }
    let field = |n: &str| form.get(n).cloned().unwrap_or_default();
    let q = AuthorizeParams {
        redirect_uri: field("redirect_uri"),
        state: field("state"),
        code_challenge: field("code_challenge"),
        code_challenge_method: None,
    };
    q.check()?;
    let approve = form.get("decision").map(String::as_str) == Some("approve");
    let to = if approve {
        let code = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random(32)?);
        let now = s.clock.now();
        s.store
            .create_device(&DeviceAuthorization {
                device_hash: loopback_hash(&code, &q.code_challenge),
                user_code: user_code()?,
                status: DeviceStatus::Approved,
                sub: Some(session.sub.clone()),
                email: session.email.clone(),
                groups: session.groups.clone(),
                issuer: session.issuer.clone(),
                created_at: now,
                expires_at: now + LOOPBACK_CODE_SECS,
                last_poll_at: None,
            })
            .await?;
        format!("{}?code={code}&state={}", q.redirect_uri, q.state)
    } else {
        format!("{}?error=access_denied&state={}", q.redirect_uri, q.state)
    };
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(LOCATION, HeaderValue::from_str(&to).map_err(|_| ApiError::invalid("bad redirect"))?);
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let action = if approve { "auth.cli_authorize" } else { "auth.cli_deny" };
    r.extensions_mut().insert(Recorded { action, actor: AuditActor::of(&principal), plain_read: false });
    Ok(r)
}

#[derive(Debug, Deserialize)]
pub struct CodeExchange {
    code: String,
    code_verifier: String,
}

/// `POST /api/auth/cli/token`: the CLI exchanges its loopback code and PKCE verifier for a CLI token.
pub async fn exchange(
    State(s): State<AppState>,
    context: RequestContext,
    headers: HeaderMap,
    Json(req): Json<CodeExchange>,
) -> ApiResult<Response> {
    let now = s.clock.now();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(ring::digest::digest(&ring::digest::SHA256, req.code_verifier.as_bytes()));
    let hash = loopback_hash(&req.code, &challenge);
    let Some(d) = s.store.poll_device(&hash, now).await? else {
        return Ok(oauth_error("invalid_grant"));
    };
    if d.status != DeviceStatus::Approved || now >= d.expires_at || !s.store.consume_device(&hash).await? {
        return Ok(oauth_error("invalid_grant"));
    }
    issue_token(&context, &headers, d, now, "loopback").await
}
