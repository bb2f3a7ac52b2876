//! The API surface's authenticator adapter: the one middleware that takes the request's credential (the
//! `Authorization` header or the session cookie) to [`kubehero_identity::Identity`] and hands the
//! [`Principal`] to handlers through the [`Auth`] extractor.
//!
//! Rules (ARCHITECTURE.md invariants 2, 4, 6):
//! - a credential that is present but fails any check is 401, in every mode; it never falls back to anonymous;
//! - without a credential: anonymous `viewer` in open mode, 401 with `KUBEHERO_REQUIRE_AUTH=true`;
//! - tokens are never logged: these functions are `#[instrument(skip_all)]` and errors carry reasons only;
//! - cookie-authenticated writes need the session's CSRF token.

use crate::error::{ApiError, Code};
use crate::state::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kubehero_core::Principal;
use std::sync::Arc;

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

/// Authenticates a request's headers into a principal: the `Authorization` bearer token, else the dashboard
/// session cookie (whose writes must carry its CSRF token), else nobody. The identity service decides.
#[tracing::instrument(skip_all)]
pub async fn authenticate(state: &AppState, method: &Method, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let identity = &state.identity;
    match bearer(headers) {
        Ok(Some(token)) => Ok(identity.bearer(token).await?),
        Ok(None) => match crate::login::read_cookie(headers, crate::login::SESSION_COOKIE) {
            Some(secret) => cookie_session(state, method, headers, secret).await,
            None => Ok(identity.anonymous()?),
        },
        Err(e) => {
            state.metrics.authentication("none", "malformed_header");
            Err(e)
        }
    }
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

/// A dashboard session from the `kh_session` cookie. Writes (anything but GET/HEAD/OPTIONS) must carry the
/// session's CSRF token in `X-CSRF-Token`: a cookie alone is sent by the browser on cross-site requests too.
async fn cookie_session(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    secret: &str,
) -> Result<Principal, ApiError> {
    let (principal, session) = state.identity.session(secret).await?;
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
