//! SCIM 2.0 provisioning at `/scim/v2` (RFC 7643, RFC 7644): the door through which the IdP keeps
//! KubeHero's copy of its people and groups current.
//!
//! - one bearer token, `KUBEHERO_SCIM_TOKEN`, checked by the identity service
//!   ([`kubehero_identity::scim_token`]: constant time, per-address throttle answered 429); without it the tree
//!   does not exist;
//! - every call is an audited action (`scim.user.patch`, …) of the `scim` principal, and so is every credential
//!   a deprovisioning suspends, restores or revokes (the identity service's deprovisioning effects);
//! - every error is a SCIM error body (`application/scim+json`, `status`, `scimType`).
//!
//! The protocol's pure parts (schemas, validation, PATCH, projection, filters) live in `kubehero-scim`; this
//! module stores, renders and applies the consequences.

pub(crate) mod groups;
pub(crate) mod users;
pub mod workos;

use crate::auth::Auth;
use crate::error::{ApiError, Code};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, IF_MATCH, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;
use kubehero_core::Action;
use kubehero_identity::scim_token::ScimRefusal;
use kubehero_scim::{schema, ResourceKind, ScimError};
use kubehero_store::StoreError;
use serde_json::Value;
use std::sync::Arc;

/// The media type of every SCIM answer.
pub const SCIM_JSON: &str = "application/scim+json";
/// Largest request body: a group replaced with some ten thousand members fits.
pub const MAX_SCIM_BODY: usize = 2 * 1024 * 1024;
/// Most resources in one page: what the service provider configuration advertises as `filter.maxResults`.
pub const MAX_RESULTS: i64 = schema::MAX_RESULTS as i64;

/// The base URL resources are located at: `KUBEHERO_PUBLIC_URL`, else what the client called.
fn base(public_url: Option<&str>, headers: &HeaderMap) -> String {
    match public_url {
        Some(u) => format!("{u}{PREFIX}"),
        None => {
            let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            let host: String =
                host.chars().filter(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(*c)).take(255).collect();
            format!("http://{host}{PREFIX}")
        }
    }
}

/// A SCIM error as an HTTP answer: the SCIM body, the API error in the extensions for the audit row.
#[derive(Debug)]
pub struct Failure(pub ScimError);

impl From<ScimError> for Failure {
    fn from(e: ScimError) -> Self {
        Failure(e)
    }
}

impl From<kubehero_identity::IdentityError> for Failure {
    fn from(e: kubehero_identity::IdentityError) -> Self {
        match e {
            kubehero_identity::IdentityError::Store(e) => Failure::from(e),
            kubehero_identity::IdentityError::AuditUnavailable(_) => Failure(ScimError {
                status: 503,
                scim_type: None,
                detail: "the audit log cannot be written; retry later".into(),
            }),
            other => {
                let api = ApiError::from(other);
                Failure(ScimError { status: api.code.status().as_u16(), scim_type: None, detail: api.message })
            }
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure(match e {
            StoreError::NotFound(what) => ScimError::not_found(format!("{what} not found")),
            StoreError::AlreadyExists(what) => ScimError::uniqueness(format!("{what} already exists")),
            StoreError::Conflict(_) => {
                ScimError::precondition_failed("the resource changed since the version in If-Match")
            }
            other => {
                let api = ApiError::from(other);
                let status = api.code.status().as_u16();
                ScimError { status, scim_type: None, detail: api.message }
            }
        })
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut res = (status, self.0.to_json().to_string()).into_response();
        res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
        let code = Code::from_status(status);
        res.extensions_mut().insert(ApiError::new(code, self.0.detail.clone()));
        res.extensions_mut().insert(crate::middleware::ForeignErrorBody);
        res
    }
}

pub type ScimResult = Result<Response, Failure>;

/// A SCIM JSON answer.
pub fn reply(status: StatusCode, body: &Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    res
}

/// A single resource: its body, `ETag` from `meta.version`, and `Location` when it was just created.
pub fn resource_reply(status: StatusCode, body: &Value) -> Response {
    let mut res = reply(status, body);
    if let Some(v) = body.pointer("/meta/version").and_then(Value::as_str).and_then(|v| HeaderValue::from_str(v).ok()) {
        res.headers_mut().insert(ETAG, v);
    }
    if status == StatusCode::CREATED {
        if let Some(l) =
            body.pointer("/meta/location").and_then(Value::as_str).and_then(|v| HeaderValue::from_str(v).ok())
        {
            res.headers_mut().insert(LOCATION, l);
        }
    }
    res
}

/// The weak ETag of a stored version.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// The version an `If-Match` header requires: `None` without the header or with `*`; a value that is no
/// version of ours can never match, so it is `Some(-1)`.
pub fn if_match(headers: &HeaderMap) -> Option<i64> {
    let v = headers.get(IF_MATCH)?.to_str().unwrap_or("-");
    let v = v.trim();
    if v == "*" {
        return None;
    }
    let first = v.split(',').next().unwrap_or("").trim();
    let unquoted = first.trim_start_matches("W/").trim_matches('"');
    Some(unquoted.parse::<i64>().unwrap_or(-1))
}

/// `attributes`/`excludedAttributes` of a single-resource request.
pub fn projection(query: Option<&str>) -> Result<kubehero_scim::Projection, Failure> {
    ListParams::from_query(query)?.projection()
}

/// Whether a filter looks at attribute `name` anywhere (then what it names must be rendered to evaluate it).
pub fn mentions(f: &kubehero_scim::Filter, name: &str) -> bool {
    use kubehero_scim::Filter;
    match f {
        Filter::Compare { path, .. } | Filter::Present(path) | Filter::ValuePath { path, .. } => {
            path.name.eq_ignore_ascii_case(name)
        }
        Filter::Not(i) => mentions(i, name),
        Filter::And(l, r) | Filter::Or(l, r) => mentions(l, name) || mentions(r, name),
    }
}

/// Whether `If-None-Match` names the resource's current ETag (then the answer is 304).
pub fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(axum::http::header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

/// A JSON request body, with SCIM errors for a body too large or not JSON.
pub fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, Failure> {
    let bytes = body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Failure(ScimError {
                status: 413,
                scim_type: None,
                detail: format!("request body larger than {MAX_SCIM_BODY} bytes"),
            })
        } else if crate::routes::stalled(&rej) {
            Failure(ScimError { status: 408, scim_type: None, detail: "the request body stopped arriving".into() })
        } else {
            Failure(ScimError::invalid_syntax("the request body could not be read"))
        }
    })?;
    if kubehero_core::names::json_has_odd_char(&bytes) {
        return Err(Failure(ScimError::invalid_value(
            "the body holds a control character or a bidirectional formatting character (U+202E and the like); \
             text attributes may not contain them",
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure(ScimError::invalid_syntax(format!(
            "the request body is not JSON (line {}, column {})",
            e.line(),
            e.column()
        )))
    })
}

/// Per-request facts handlers need: the resource base URL, the request id for rows they add.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub base: String,
    pub request_id: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Ctx {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Ctx>()
            .cloned()
            .ok_or_else(|| Failure(ScimError { status: 500, scim_type: None, detail: "internal error".into() }))
    }
}

/// The SCIM authentication middleware: the token (or 401/429 in the SCIM error schema), then the
/// provisioner principal for the handler and the audit point.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(token) = state.identity.scim.as_ref() else {
        return Failure(ScimError::not_found("SCIM is not enabled")).into_response();
    };
    let addr = req.extensions().get::<crate::net::ClientAddr>().map(|c| c.0);
    let presented = presented_token(req.headers());
    let principal = match token.check(presented, addr) {
        Ok(p) => p,
        Err(refusal) => return scim_refused(&state, refusal),
    };
    state.metrics.authentication("scim", "ok");
    let request_id = req.extensions().get::<crate::middleware::RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let base = base(state.public_url.as_deref(), req.headers());
    req.extensions_mut().insert(Ctx { base, request_id });
    let auth = Auth(Arc::new(principal));
    req.extensions_mut().insert(auth.clone());
    let mut res = next.run(req).await;
    res.extensions_mut().insert(auth);
    res
}

/// A refused SCIM token: 401 (or 429 with `Retry-After`) in the SCIM error schema, recorded as
/// `scim.auth_failed`.
fn scim_refused(state: &AppState, refusal: ScimRefusal) -> Response {
    let throttled = matches!(refusal, ScimRefusal::Throttled { .. });
    state.metrics.authentication("scim", if throttled { "throttled" } else { "rejected" });
    {
        let mut res = if let ScimRefusal::Throttled { retry_after_secs: wait } = refusal {
            let mut r = Failure(ScimError {
                status: 429,
                scim_type: None,
                detail: "too many failed attempts from this address; retry later".into(),
            })
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            r
        } else {
            let mut r = Failure(ScimError {
                status: 401,
                scim_type: None,
                detail: "invalid or missing SCIM bearer token".into(),
            })
            .into_response();
            r.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer realm=\"kubehero-scim\""));
            r
        };
        res.extensions_mut().insert(crate::audit::Recorded {
            action: "scim.auth_failed",
            actor: kubehero_core::AuditActor::unauthenticated("scim"),
            plain_read: false,
        });
        res
    }
}

fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let v = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = v.to_str().ok()?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks the one authorization function for the provisioner, like every API handler does.
pub fn allow(auth: &Auth, action: Action) -> Result<(), Failure> {
    match kubehero_core::authorize(&auth.0, action, kubehero_core::Target::NONE) {
        kubehero_core::Decision::Allow => Ok(()),
        kubehero_core::Decision::Deny { needed } => {
            Err(Failure(ScimError { status: 403, scim_type: None, detail: format!("requires {needed}") }))
        }
    }
}

fn not_allowed() -> Failure {
    Failure(ScimError { status: 405, scim_type: None, detail: "method not allowed on this SCIM endpoint".into() })
}

/// Where the SCIM surface is mounted.
pub const PREFIX: &str = "/scim/v2";

/// The SCIM surface from the route table's provisioning routes (paths under [`PREFIX`], already marked with
/// their actions): the SCIM token authenticator, SCIM-shaped 404 and 405, and the SCIM body limit.
pub fn surface(routes: Vec<(&'static str, MethodRouter<AppState>)>, state: AppState) -> Router<AppState> {
    let mut r = Router::new();
    for (path, handler) in routes {
        r = r.route(path.strip_prefix(PREFIX).unwrap_or(path), handler);
    }
    r.fallback(|| async { Failure(ScimError::not_found("no such SCIM endpoint")) })
        .method_not_allowed_fallback(|| async { not_allowed() })
        .route_layer(axum::middleware::from_fn_with_state(state, authenticate))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_SCIM_BODY))
}

pub(crate) async fn service_provider_config(auth: Auth, ctx: Ctx) -> ScimResult {
    allow(&auth, Action::ScimDiscover)?;
    Ok(reply(StatusCode::OK, &schema::service_provider_config(&ctx.base)))
}

pub(crate) async fn resource_types(auth: Auth, ctx: Ctx) -> ScimResult {
    allow(&auth, Action::ScimDiscover)?;
    Ok(reply(StatusCode::OK, &list_response(schema::resource_types(&ctx.base), 1)))
}

pub(crate) async fn resource_type(
    auth: Auth,
    ctx: Ctx,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ScimResult {
    allow(&auth, Action::ScimDiscover)?;
    let found = schema::resource_type(&ctx.base, &id).ok_or_else(|| ScimError::not_found("no such resource type"))?;
    Ok(reply(StatusCode::OK, &found))
}

pub(crate) async fn schemas(auth: Auth, ctx: Ctx) -> ScimResult {
    allow(&auth, Action::ScimDiscover)?;
    Ok(reply(StatusCode::OK, &list_response(schema::schemas(&ctx.base), 1)))
}

pub(crate) async fn schema_by_id(
    auth: Auth,
    ctx: Ctx,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ScimResult {
    allow(&auth, Action::ScimDiscover)?;
    let found = schema::schema(&ctx.base, &id).ok_or_else(|| ScimError::not_found("no such schema"))?;
    Ok(reply(StatusCode::OK, &found))
}

/// `POST /.search` at the root (RFC 7644 §3.4.3): users, then groups, as one paged result.
pub(crate) async fn root_search(
    State(state): State<AppState>,
    auth: Auth,
    ctx: Ctx,
    body: Result<Bytes, BytesRejection>,
) -> ScimResult {
    allow(&auth, Action::ScimUserRead)?;
    allow(&auth, Action::ScimGroupRead)?;
    let params = ListParams::from_search(&json_body(body)?)?;
    let (users_total, mut items) = users::query(&state, &ctx, &params).await?;
    let skipped = (params.start_index - 1 - users_total).max(0);
    let rest = ListParams { start_index: skipped + 1, count: params.count - items.len() as i64, ..params.clone() };
    let (groups_total, groups) = groups::query(&state, &ctx, &rest).await?;
    items.extend(groups);
    Ok(reply(StatusCode::OK, &list_page(users_total + groups_total, params.start_index, items)))
}

/// A `ListResponse` of every item, starting at `start_index`.
pub fn list_response(items: Vec<Value>, start_index: i64) -> Value {
    list_page(items.len() as i64, start_index, items)
}

/// A `ListResponse` page.
pub fn list_page(total: i64, start_index: i64, items: Vec<Value>) -> Value {
    serde_json::json!({
        "schemas": [schema::LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": items.len(),
        "Resources": items,
    })
}

/// Listing parameters from the query string or a `.search` body (RFC 7644 §3.4.2, §3.4.3).
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    pub filter: Option<String>,
    pub start_index: i64,
    pub count: i64,
    pub attributes: Option<String>,
    pub excluded: Option<String>,
}

impl ListParams {
    /// From a query string; names are matched case-insensitively, as SCIM clients differ.
    pub fn from_query(query: Option<&str>) -> Result<ListParams, Failure> {
        let mut p = ListParams { start_index: 1, count: 100, ..Default::default() };
        for (k, v) in form_pairs(query.unwrap_or("")) {
            match k.to_ascii_lowercase().as_str() {
                "filter" => p.filter = Some(v),
                "startindex" => p.start_index = parse_int("startIndex", &v)?,
                "count" => p.count = parse_int("count", &v)?,
                "attributes" => p.attributes = Some(v),
                "excludedattributes" => p.excluded = Some(v),
                _ => {}
            }
        }
        Ok(p.clamped())
    }

    /// From a `SearchRequest` body.
    pub fn from_search(body: &Value) -> Result<ListParams, Failure> {
        let schemas = body.get("schemas").and_then(Value::as_array);
        if !schemas.is_some_and(|s| s.iter().any(|v| v.as_str() == Some(schema::SEARCH_REQUEST))) {
            return Err(Failure(ScimError::invalid_syntax(format!(
                "a search needs schemas [{:?}]",
                schema::SEARCH_REQUEST
            ))));
        }
        let list = |key: &str| -> Option<String> {
            match body.get(key)? {
                Value::String(s) => Some(s.clone()),
                Value::Array(a) => Some(a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")),
                _ => None,
            }
        };
        let int = |key: &str, default: i64| -> Result<i64, Failure> {
            match body.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => {
                    v.as_i64().ok_or_else(|| Failure(ScimError::invalid_value(format!("{key} must be an integer"))))
                }
            }
        };
        Ok(ListParams {
            filter: body.get("filter").and_then(Value::as_str).map(str::to_string),
            start_index: int("startIndex", 1)?,
            count: int("count", 100)?,
            attributes: list("attributes"),
            excluded: list("excludedAttributes"),
        }
        .clamped())
    }

    pub fn projection(&self) -> Result<kubehero_scim::Projection, Failure> {
        Ok(kubehero_scim::Projection::from_query(self.attributes.as_deref(), self.excluded.as_deref())?)
    }

    /// The parsed filter, if any (400 `invalidFilter` when it does not parse).
    pub fn parsed_filter(&self) -> Result<Option<kubehero_scim::Filter>, Failure> {
        Ok(self.filter.as_deref().map(kubehero_scim::Filter::parse).transpose().map_err(ScimError::from)?)
    }

    /// 0-based offset of the first resource asked for.
    pub fn offset(&self) -> i64 {
        self.start_index - 1
    }

    /// Every match counted, and the page of them asked for.
    pub fn page<T>(&self, matched: Vec<T>) -> (i64, Vec<T>) {
        let total = matched.len() as i64;
        (total, matched.into_iter().skip(self.offset() as usize).take(self.count as usize).collect())
    }

    /// RFC 7644 §3.4.2.4: a `startIndex` below 1 is 1, a negative `count` is 0, and we cap `count`.
    fn clamped(mut self) -> Self {
        self.start_index = self.start_index.max(1);
        self.count = self.count.clamp(0, MAX_RESULTS);
        self
    }
}

fn parse_int(name: &str, v: &str) -> Result<i64, Failure> {
    v.trim().parse::<i64>().map_err(|_| Failure(ScimError::invalid_value(format!("{name} must be an integer"))))
}

/// `application/x-www-form-urlencoded` pairs, percent-decoded.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// `meta` of a stored resource.
pub fn meta(kind: ResourceKind, base: &str, id: &str, created: i64, updated: i64, version: i64) -> Value {
    serde_json::json!({
        "resourceType": kind.name(),
        "created": crate::routes::rfc3339(created),
        "lastModified": crate::routes::rfc3339(updated),
        "location": format!("{base}{}/{id}", kind.endpoint()),
        "version": etag(version),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode() {
        let p = ListParams::from_query(Some("filter=userName%20eq%20%22a%2Bb%40x%22&startIndex=0&COUNT=5000")).unwrap();
        assert_eq!(p.filter.as_deref(), Some("userName eq \"a+b@x\""));
        assert_eq!((p.start_index, p.count), (1, MAX_RESULTS));
    }

    #[test]
    fn if_match_versions() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h), None);
        h.insert(IF_MATCH, HeaderValue::from_static("W/\"3\""));
        assert_eq!(if_match(&h), Some(3));
        h.insert(IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(if_match(&h), None);
        h.insert(IF_MATCH, HeaderValue::from_static("\"abc\""));
        assert_eq!(if_match(&h), Some(-1));
    }
}
