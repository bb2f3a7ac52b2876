//! Authentication: the one middleware that turns the request's credential into a [`Principal`], and the
//! [`Auth`] extractor handlers use to get it.
//!
//! Rules (ARCHITECTURE.md invariants 2, 4, 6):
//! - a credential that is present but fails any check is 401, in every mode; it never falls back to anonymous;
//! - without a credential: anonymous `viewer` in open mode, 401 with `KUBEHERO_REQUIRE_AUTH=true`;
//! - tokens are never logged: these functions are `#[instrument(skip_all)]` and errors carry reasons only;
//! - a JWT is routed by its unverified `iss` to exactly one configured issuer; nothing a token names is fetched;
//! - with SCIM on, every person (and every managed key's owner) then passes [`crate::directory::admit`]:
//!   deprovisioned people are refused whatever credential they hold.

use crate::error::{ApiError, Code};
use crate::grants::Identity;
use crate::state::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kubehero_authn::{sha256_hex, AuthnError, VerifiedToken, API_KEY_PREFIX};
use kubehero_core::{AuthMethod, Principal, PrincipalKind};
use std::sync::Arc;
use std::time::Instant;

/// The authenticated principal of a request, put in the request extensions by [`authenticate_request`].
#[derive(Debug, Clone)]
pub struct Auth(pub Arc<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Auth>().cloned().ok_or_else(|| {
            tracing::error!(path = %parts.uri.path(), "route is not behind the authentication layer");
            ApiError::new(Code::Internal, "internal error; the server log has details")
        })
    }
}

/// Middleware on every API route: authenticates, then hands the principal to the handler.
#[tracing::instrument(skip_all)]
pub async fn authenticate_request(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match authenticate(&state, req.method(), req.headers()).await {
        Ok(p) => {
            let auth = Auth(Arc::new(p));
            req.extensions_mut().insert(auth.clone());
            let mut res = next.run(req).await;
            // For the audit point, which sees only the response.
            res.extensions_mut().insert(auth);
            res
        }
        Err(e) => e.into_response(),
    }
}

/// Extracts the bearer token. `Ok(None)` when there is no `Authorization` header.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::unauthenticated("more than one Authorization header"));
    }
    let v = v.to_str().map_err(|_| ApiError::unauthenticated("the Authorization header is not ASCII"))?;
    let (scheme, token) =
        v.split_once(' ').ok_or_else(|| ApiError::unauthenticated("use Authorization: Bearer <token>"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthenticated("only the Bearer scheme is supported"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::unauthenticated("empty bearer token"));
    }
    Ok(Some(token))
}

/// Authenticates a request's headers into a principal.
#[tracing::instrument(skip_all)]
pub async fn authenticate(state: &AppState, method: &Method, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = match bearer(headers) {
        Ok(Some(t)) => t,
        Ok(None) if headers.contains_key(axum::http::header::COOKIE) => {
            if let Some(secret) = crate::login::read_cookie(headers, crate::login::SESSION_COOKIE) {
                let r = cookie_session(state, method, headers, secret).await;
                state.metrics.authentication("session", if r.is_ok() { "ok" } else { "rejected" });
                return r;
            }
            return anonymous_or_refused(state);
        }
        Ok(None) => return anonymous_or_refused(state),
        Err(e) => {
            state.metrics.authentication("none", "malformed_header");
            return Err(e);
        }
    };
    if token.starts_with(crate::device::CLI_TOKEN_PREFIX) {
        let r = cli_token(state, token).await.map(|(p, _)| p);
        state.metrics.authentication("cli_token", if r.is_ok() { "ok" } else { "rejected" });
        return r;
    }
    if token.starts_with(API_KEY_PREFIX) {
        let r = match managed_api_key(state, token).await {
            Ok(p) => crate::directory::admit(state, p).await,
            Err(e) => Err(e),
        };
        state.metrics.authentication("api_key", if r.is_ok() { "ok" } else { "rejected" });
        return r;
    }
    if let Some(m) = state.api_keys.lookup(token) {
        state.metrics.authentication("api_key", "ok");
        return Ok(key_principal(state, m.id, m.role, None, None));
    }
    match jwt(state, token).await {
        Ok(p) => {
            let p = crate::directory::admit(state, p).await?;
            state.metrics.authentication("jwt", "ok");
            Ok(p)
        }
        Err(e) => {
            state.metrics.authentication("jwt", e.reason());
            tracing::info!(reason = e.reason(), "bearer token rejected");
            Err(ApiError::unauthenticated(format!("invalid bearer token: {e}")))
        }
    }
}

async fn jwt(state: &AppState, token: &str) -> Result<Principal, AuthnError> {
    let now = state.clock.now();
    let verified = match state.token_cache.get(token, now) {
        Some(v) => v,
        None => {
            let started = Instant::now();
            let v = state.verifier.verify(token, now).await;
            state.metrics.verification(started.elapsed().as_secs_f64());
            let v = Arc::new(v?);
            state.token_cache.insert(token, v.clone());
            v
        }
    };
    Ok(person_principal(state, &verified))
}

fn person_principal(state: &AppState, v: &VerifiedToken) -> Principal {
    let grants = state.bindings.grants_for(&Identity {
        issuer: Some(&v.issuer),
        sub: &v.sub,
        email: v.email.as_deref(),
        groups: &v.groups,
        legacy_roles: &v.legacy_roles,
    });
    Principal {
        kind: PrincipalKind::Person,
        sub: v.sub.clone(),
        email: v.email.clone(),
        groups: v.groups.clone(),
        issuer: Some(v.issuer.clone()),
        auth_method: AuthMethod::Jwt,
        owner: None,
        grants,
        expires_at: Some(v.exp),
    }
}

fn key_principal(
    state: &AppState,
    id: String,
    role: kubehero_core::Role,
    owner: Option<String>,
    expires_at: Option<i64>,
) -> Principal {
    let grants = state.bindings.grants_for_key(&id, role);
    Principal {
        kind: PrincipalKind::ApiKey,
        sub: id,
        email: None,
        groups: Vec::new(),
        issuer: None,
        auth_method: AuthMethod::ApiKey,
        owner,
        grants,
        expires_at,
    }
}

/// A `khk_…` key created through the API: looked up by its SHA-256 on every request, so revocation takes
/// effect at once on every replica.
async fn managed_api_key(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let hash = sha256_hex(token);
    let rec = state.store.find_api_key_by_hash(&hash).await.map_err(ApiError::from)?;
    let now = state.clock.now();
    let Some(rec) = rec else {
        return Err(ApiError::unauthenticated("invalid bearer token: unknown API key"));
    };
    if rec.revoked_at.is_some() {
        return Err(ApiError::unauthenticated("invalid bearer token: API key revoked"));
    }
    if rec.expires_at.is_some_and(|e| now >= e) {
        return Err(ApiError::unauthenticated("invalid bearer token: API key expired"));
    }
    Ok(key_principal(state, rec.id, rec.role, Some(rec.owner), rec.expires_at))
}

/// Authorizes `action` on `target` for `p` through the one pure function; handlers call it before anything
/// else that acts on the request.
pub fn allow(p: &Principal, action: kubehero_core::Action, target: kubehero_core::Target<'_>) -> Result<(), ApiError> {
    match kubehero_core::authorize(p, action, target) {
        kubehero_core::Decision::Allow => Ok(()),
        kubehero_core::Decision::Deny { needed } => {
            Err(ApiError::denied(format!("{} requires {needed}", action.as_str())))
        }
    }
}

/// No credential: the anonymous viewer in open mode, 401 with `KUBEHERO_REQUIRE_AUTH=true`.
fn anonymous_or_refused(state: &AppState) -> Result<Principal, ApiError> {
    if state.require_auth {
        state.metrics.authentication("none", "missing_credential");
        return Err(ApiError::unauthenticated("authentication required: send Authorization: Bearer <token>"));
    }
    state.metrics.authentication("anonymous", "ok");
    Ok(Principal::anonymous())
}

/// A dashboard session from the `kh_session` cookie. Writes (anything but GET/HEAD/OPTIONS) must carry the
/// session's CSRF token in `X-CSRF-Token`: a cookie alone is sent by the browser on cross-site requests too.
async fn cookie_session(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    secret: &str,
) -> Result<Principal, ApiError> {
    let (principal, session) = session_principal(state, secret).await?;
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        if !csrf_matches(session.csrf.as_deref(), sent) {
            return Err(ApiError::denied(
                "missing or wrong CSRF token (send X-CSRF-Token with cookie-authenticated writes)",
            ));
        }
    }
    Ok(principal)
}

/// Constant-time comparison of a session's CSRF token with the one a request sent.
pub fn csrf_matches(expected: Option<&str>, sent: Option<&str>) -> bool {
    match (expected, sent) {
        (Some(e), Some(s)) if !e.is_empty() => bool::from(subtle::ConstantTimeEq::ct_eq(e.as_bytes(), s.as_bytes())),
        _ => false,
    }
}

/// The person behind a session secret, checking revocation, idle expiry and the absolute cap, and sliding the
/// idle expiry (at most one store write a minute).
pub async fn session_principal(
    state: &AppState,
    secret: &str,
) -> Result<(Principal, Arc<kubehero_store::SessionRecord>), ApiError> {
    let now = state.clock.now();
    let invalid = || ApiError::unauthenticated("session expired or signed out; sign in again at /login");
    let key = crate::credentials::key(secret);
    let mut session = lookup(state, &key).await?.ok_or_else(invalid)?;
    if session.kind != kubehero_store::SessionKind::Session
        || session.revoked_at.is_some()
        || now >= session.expires_at
        || now >= session.absolute_expires_at
    {
        return Err(invalid());
    }
    if now - session.last_seen_at >= crate::login::SESSION_TOUCH_SECS {
        let expires = (now + crate::login::SESSION_IDLE_SECS).min(session.absolute_expires_at);
        session = renew(state, &key, &session, now, expires).await?;
    }
    let principal = crate::directory::admit(state, person(state, &session, AuthMethod::Session)).await?;
    Ok((principal, session))
}

/// A CLI token (`khc_…`): looked up by its SHA-256 on every request, so rotation and revocation apply at once.
/// `last_seen_at` is written at most once a minute.
pub async fn cli_token(
    state: &AppState,
    token: &str,
) -> Result<(Principal, Arc<kubehero_store::SessionRecord>), ApiError> {
    let now = state.clock.now();
    let invalid = || ApiError::unauthenticated("invalid bearer token: CLI token unknown, revoked or expired");
    let key = crate::credentials::key(token);
    let mut t = lookup(state, &key).await?.ok_or_else(invalid)?;
    if t.kind != kubehero_store::SessionKind::CliToken || t.revoked_at.is_some() || now >= t.expires_at {
        return Err(invalid());
    }
    if now - t.last_seen_at >= crate::login::SESSION_TOUCH_SECS {
        t = renew(state, &key, &t, now, t.expires_at).await?;
    }
    let principal = crate::directory::admit(state, person(state, &t, AuthMethod::CliToken)).await?;
    Ok((principal, t))
}

/// The person a session or CLI token belongs to, with the grants their sign-in groups hold now.
fn person(state: &AppState, r: &kubehero_store::SessionRecord, method: AuthMethod) -> Principal {
    let grants = state.bindings.grants_for(&Identity {
        issuer: r.issuer.as_deref(),
        sub: &r.sub,
        email: r.email.as_deref(),
        groups: &r.groups,
        legacy_roles: &[],
    });
    Principal {
        kind: PrincipalKind::Person,
        sub: r.sub.clone(),
        email: r.email.clone(),
        groups: r.groups.clone(),
        issuer: r.issuer.clone(),
        auth_method: method,
        owner: None,
        grants,
        expires_at: Some(r.expires_at),
    }
}

/// A session or CLI token by its secret's key: from the short-lived cache, else from the store.
async fn lookup(state: &AppState, key: &[u8; 32]) -> Result<Option<Arc<kubehero_store::SessionRecord>>, ApiError> {
    if let Some(r) = state.credentials.get(key) {
        return Ok(Some(r));
    }
    let hash: String = kubehero_audit::hex::encode(key);
    let found = state.store.find_session_by_hash(&hash).await?.map(Arc::new);
    if let Some(r) = &found {
        state.credentials.put(*key, Arc::clone(r));
    }
    Ok(found)
}

/// Slides a session or CLI token: one store write, counted.
async fn renew(
    state: &AppState,
    key: &[u8; 32],
    r: &kubehero_store::SessionRecord,
    now: i64,
    expires_at: i64,
) -> Result<Arc<kubehero_store::SessionRecord>, ApiError> {
    state.store.touch_session(&r.id, now, expires_at).await?;
    state.metrics.session_renewal();
    let renewed = Arc::new(kubehero_store::SessionRecord { last_seen_at: now, expires_at, ..r.clone() });
    state.credentials.touched(key, Arc::clone(&renewed));
    Ok(renewed)
}
