//! The route table of every surface (public, sign-in, the API, SCIM). Every route is declared here with the
//! permission it needs, and the router is built only from this table, so a route without a declared
//! permission cannot exist; `tests/it/routes.rs` walks the table and checks every route enforces what it
//! declares. Each surface is a set of routes, an authenticator adapter over `kubehero-identity` and an error
//! shape: the API's (`auth.rs`, `{"code","message","request_id"}`), SCIM's (`scim/`, RFC 7644 errors).

pub(crate) mod access;
mod agent_cas;
mod api_keys;
pub(crate) mod audit;
mod bindings;
pub(crate) mod breakglass;
pub(crate) mod clusters;
mod health;
mod issuer;
mod policies;
mod sessions;
pub(crate) mod settings;
pub(crate) mod shares;
mod whoami;

use crate::auth::authenticate_request;
use crate::error::ApiError;
use crate::middleware::{observe, tag_route};
use crate::scim;
use crate::state::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{Method, StatusCode};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use kubehero_core::Action;
use serde::de::DeserializeOwned;

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// No authentication at all: health and metrics.
    Public,
    /// Browser sign-in: the handler itself starts, checks (with CSRF) or ends the dashboard session.
    SignIn,
    /// Authentication, then the handler authorizes this action (on a target it determines).
    Requires(Action),
    /// The IdP's SCIM client token (`/scim/v2`, answered in the SCIM error schema), then the handler
    /// authorizes this provisioning action. The routes exist only when `KUBEHERO_SCIM_TOKEN` is set.
    Provisioning(Action),
    /// A webhook signed by a directory broker (WorkOS Directory Sync: `WorkOS-Signature`, checked by the
    /// handler); each event is applied and recorded as the SCIM operation it matches. Exists only when its
    /// secret is set (`KUBEHERO_WORKOS_WEBHOOK_SECRET`).
    Signed,
    /// The Kubernetes surface (`/k8s/clusters/…`, every method, answered in Kubernetes `Status` objects): any
    /// KubeHero credential, then a role for that cluster and namespace from a group mapping or binding.
    Kube,
}

/// One declared route.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub permission: Permission,
}

/// Largest JSON body accepted by the API.
pub const MAX_BODY: usize = 64 * 1024;

fn spec(method: Method, path: &'static str, permission: Permission) -> RouteSpec {
    RouteSpec { method, path, permission }
}

/// Every route with its permission and handler.
pub fn table() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    use Action::*;
    use Permission::*;
    const GET: MethodFilter = MethodFilter::GET;
    const POST: MethodFilter = MethodFilter::POST;
    const PUT: MethodFilter = MethodFilter::PUT;
    const PATCH: MethodFilter = MethodFilter::PATCH;
    const DELETE: MethodFilter = MethodFilter::DELETE;
    let r = |method: Method, path, perm, h: MethodRouter<AppState>| (spec(method, path, perm), h);
    vec![
        r(Method::GET, "/healthz", Public, on(MethodFilter::GET, health::healthz)),
        r(Method::GET, "/readyz", Public, on(MethodFilter::GET, health::readyz)),
        r(Method::GET, "/metrics", Public, on(MethodFilter::GET, health::metrics)),
        r(Method::GET, "/", SignIn, on(MethodFilter::GET, crate::login::home)),
        r(Method::GET, "/login", SignIn, on(MethodFilter::GET, crate::login::login)),
        r(Method::GET, "/ui/app.css", Public, on(MethodFilter::GET, crate::ui::css)),
        r(Method::GET, "/ui/app.js", Public, on(MethodFilter::GET, crate::ui::js)),
        r(Method::GET, "/ui/clusters", SignIn, on(MethodFilter::GET, crate::ui::clusters::list)),
        r(Method::GET, "/ui/clusters/{name}", SignIn, on(MethodFilter::GET, crate::ui::clusters::detail)),
        r(
            Method::GET,
            "/ui/clusters/{name}/kubeconfig",
            SignIn,
            on(MethodFilter::GET, crate::ui::clusters::kubeconfig),
        ),
        r(Method::GET, "/ui/access", SignIn, on(MethodFilter::GET, crate::ui::access::page_of_access)),
        r(Method::GET, "/ui/policies", SignIn, on(MethodFilter::GET, crate::ui::policies::list)),
        r(Method::GET, "/ui/policies/{id}", SignIn, on(MethodFilter::GET, crate::ui::policies::detail)),
        r(Method::GET, "/ui/audit", SignIn, on(MethodFilter::GET, crate::ui::audit::page_of_audit)),
        r(Method::GET, "/ui/audit/export", SignIn, on(MethodFilter::GET, crate::ui::audit::export)),
        r(Method::GET, "/ui/audit/tail", SignIn, on(MethodFilter::GET, crate::ui::audit::tail)),
        r(Method::GET, "/ui/credentials", SignIn, on(MethodFilter::GET, crate::ui::credentials::page_of_credentials)),
        r(Method::GET, "/ui/people", SignIn, on(MethodFilter::GET, crate::ui::directory::people)),
        r(Method::GET, "/ui/bindings", SignIn, on(MethodFilter::GET, crate::ui::directory::bindings)),
        r(Method::GET, "/ui/settings", SignIn, on(MethodFilter::GET, crate::ui::directory::settings)),
        r(Method::GET, "/api/auth/callback", SignIn, on(MethodFilter::GET, crate::login::callback)),
        r(Method::POST, "/api/auth/logout", SignIn, on(MethodFilter::POST, crate::login::logout)),
        r(Method::POST, "/api/auth/device/code", SignIn, on(MethodFilter::POST, crate::device::code)),
        r(Method::POST, "/api/auth/device/token", SignIn, on(MethodFilter::POST, crate::device::token)),
        r(Method::GET, "/device", SignIn, on(MethodFilter::GET, crate::device::page)),
        r(Method::POST, "/device", SignIn, on(MethodFilter::POST, crate::device::decide)),
        r(Method::GET, "/cli/authorize", SignIn, on(MethodFilter::GET, crate::device::authorize_page)),
        r(Method::POST, "/cli/authorize", SignIn, on(MethodFilter::POST, crate::device::authorize)),
        r(Method::POST, "/api/auth/cli/token", SignIn, on(MethodFilter::POST, crate::device::exchange)),
        r(Method::GET, "/api/v1/openapi.json", Public, on(MethodFilter::GET, openapi)),
        r(Method::GET, "/.well-known/openid-configuration", Public, on(MethodFilter::GET, issuer::discovery)),
        r(Method::GET, "/openid/v1/jwks", Public, on(MethodFilter::GET, issuer::jwks)),
        r(Method::GET, "/api/v1/issuer-keys", Requires(SettingsRead), on(MethodFilter::GET, issuer::list)),
        r(Method::POST, "/api/v1/issuer-keys/rotate", Requires(SettingsWrite), on(MethodFilter::POST, issuer::rotate)),
        r(Method::GET, "/api/v1/whoami", Requires(WhoAmI), on(MethodFilter::GET, whoami::whoami)),
        r(Method::GET, "/api/v1/clusters", Requires(ClusterList), on(MethodFilter::GET, clusters::list)),
        r(Method::POST, "/api/v1/clusters", Requires(ClusterRegister), on(MethodFilter::POST, clusters::register)),
        r(Method::GET, "/api/v1/clusters/{name}", Requires(ClusterGet), on(MethodFilter::GET, clusters::get)),
        r(
            Method::POST,
            "/api/v1/clusters/{name}/join-tokens",
            Requires(ClusterRegister),
            on(MethodFilter::POST, clusters::join_token),
        ),
        r(Method::POST, "/api/v1/clusters/{name}/token", Requires(ClusterGet), on(MethodFilter::POST, clusters::token)),
        r(Method::GET, "/api/v1/clusters/{name}/direct", Requires(ClusterGet), on(MethodFilter::GET, clusters::direct)),
        r(Method::GET, "/api/v1/clusters/{name}/rbac", Requires(ClusterGet), on(MethodFilter::GET, clusters::rbac)),
        r(
            Method::POST,
            "/api/v1/clusters/{name}/webhook",
            Requires(ClusterRegister),
            on(MethodFilter::POST, clusters::webhook),
        ),
        r(
            Method::GET,
            "/api/v1/clusters/{name}/certificates",
            Requires(ClusterGet),
            on(MethodFilter::GET, clusters::certificates),
        ),
        r(
            Method::POST,
            "/api/v1/clusters/{name}/certificates/revoke",
            Requires(ClusterDelete),
            on(MethodFilter::POST, clusters::revoke),
        ),
        r(
            Method::DELETE,
            "/api/v1/clusters/{name}",
            Requires(ClusterDelete),
            on(MethodFilter::DELETE, clusters::delete),
        ),
        r(Method::GET, "/api/v1/access-requests", Requires(AccessRequest), on(MethodFilter::GET, access::list)),
        r(Method::POST, "/api/v1/access-requests", Requires(AccessRequest), on(MethodFilter::POST, access::create)),
        r(
            Method::POST,
            "/api/v1/access-requests/{id}/approve",
            Requires(AccessDecide),
            on(MethodFilter::POST, access::approve),
        ),
        r(
            Method::POST,
            "/api/v1/access-requests/{id}/deny",
            Requires(AccessDecide),
            on(MethodFilter::POST, access::deny),
        ),
        r(Method::GET, "/api/v1/clusters/{name}/shares", Requires(ShareList), on(MethodFilter::GET, shares::list)),
        r(
            Method::POST,
            "/api/v1/clusters/{name}/shares",
            Requires(ShareCreate),
            on(MethodFilter::POST, shares::create),
        ),
        r(
            Method::DELETE,
            "/api/v1/clusters/{name}/shares/{id}",
            Requires(ShareRevoke),
            on(MethodFilter::DELETE, shares::revoke),
        ),
        r(Method::POST, "/api/v1/shares/accept", Requires(ShareAccept), on(MethodFilter::POST, shares::accept_api)),
        r(Method::GET, "/share/{token}", SignIn, on(MethodFilter::GET, shares::open)),
        r(Method::POST, "/share/{token}", SignIn, on(MethodFilter::POST, shares::accept_form)),
        r(Method::GET, "/share/{token}/kubeconfig", SignIn, on(MethodFilter::GET, shares::kubeconfig)),
        r(
            Method::POST,
            "/api/v1/clusters/{name}/breakglass",
            Requires(BreakglassCreate),
            on(MethodFilter::POST, breakglass::create),
        ),
        r(Method::GET, "/api/v1/breakglass", Requires(BreakglassList), on(MethodFilter::GET, breakglass::list)),
        r(
            Method::DELETE,
            "/api/v1/breakglass/{id}",
            Requires(BreakglassCreate),
            on(MethodFilter::DELETE, breakglass::revoke),
        ),
        r(
            Method::POST,
            "/api/v1/breakglass/{id}/acknowledge",
            Requires(BreakglassAcknowledge),
            on(MethodFilter::POST, breakglass::acknowledge),
        ),
        // The code is the credential: no sign-in (it is for when sign-in does not work).
        r(Method::POST, "/api/v1/breakglass/use", SignIn, on(MethodFilter::POST, breakglass::use_api)),
        r(Method::GET, "/breakglass", SignIn, on(MethodFilter::GET, breakglass::form)),
        r(Method::POST, "/breakglass", SignIn, on(MethodFilter::POST, breakglass::use_form)),
        r(Method::POST, "/breakglass/acknowledge", SignIn, on(MethodFilter::POST, breakglass::acknowledge_form)),
        r(Method::GET, "/api/v1/agent-cas", Requires(SettingsRead), on(MethodFilter::GET, agent_cas::list)),
        r(Method::POST, "/api/v1/agent-cas", Requires(SettingsWrite), on(MethodFilter::POST, agent_cas::stage)),
        r(
            Method::POST,
            "/api/v1/agent-cas/{id}/activate",
            Requires(SettingsWrite),
            on(MethodFilter::POST, agent_cas::activate),
        ),
        r(
            Method::POST,
            "/api/v1/agent-cas/{id}/retire",
            Requires(SettingsWrite),
            on(MethodFilter::POST, agent_cas::retire),
        ),
        r(Method::GET, "/api/v1/policies", Requires(PolicyList), on(MethodFilter::GET, policies::list)),
        r(Method::POST, "/api/v1/policies", Requires(PolicyCreate), on(MethodFilter::POST, policies::create)),
        r(Method::GET, "/api/v1/policies/{id}", Requires(PolicyGet), on(MethodFilter::GET, policies::get)),
        r(Method::PUT, "/api/v1/policies/{id}", Requires(PolicyUpdate), on(MethodFilter::PUT, policies::update)),
        r(Method::GET, "/api/v1/policies/{id}/history", Requires(PolicyGet), on(MethodFilter::GET, policies::history)),
        r(Method::POST, "/api/v1/policies/{id}/arm", Requires(PolicyArm), on(MethodFilter::POST, policies::arm)),
        r(
            Method::POST,
            "/api/v1/policies/{id}/disarm",
            Requires(PolicyDisarm),
            on(MethodFilter::POST, policies::disarm),
        ),
        r(Method::POST, "/api/v1/policies/{id}/undo", Requires(PolicyUndo), on(MethodFilter::POST, policies::undo)),
        r(Method::GET, "/api/v1/role-bindings", Requires(RoleBindingList), on(MethodFilter::GET, bindings::list)),
        r(Method::POST, "/api/v1/role-bindings", Requires(RoleBindingCreate), on(MethodFilter::POST, bindings::create)),
        r(
            Method::DELETE,
            "/api/v1/role-bindings/{id}",
            Requires(RoleBindingDelete),
            on(MethodFilter::DELETE, bindings::delete),
        ),
        r(Method::GET, "/api/v1/api-keys", Requires(ApiKeyList), on(MethodFilter::GET, api_keys::list)),
        r(Method::POST, "/api/v1/api-keys", Requires(ApiKeyCreate), on(MethodFilter::POST, api_keys::create)),
        r(Method::DELETE, "/api/v1/api-keys/{id}", Requires(ApiKeyRevoke), on(MethodFilter::DELETE, api_keys::revoke)),
        r(Method::GET, "/api/v1/settings", Requires(SettingsRead), on(MethodFilter::GET, settings::list)),
        r(Method::GET, "/api/v1/settings/{key}", Requires(SettingsRead), on(MethodFilter::GET, settings::get)),
        r(Method::PUT, "/api/v1/settings/{key}", Requires(SettingsWrite), on(MethodFilter::PUT, settings::put)),
        r(Method::GET, "/api/v1/audit", Requires(AuditRead), on(MethodFilter::GET, audit::list)),
        r(Method::GET, "/api/v1/auth/sessions", Requires(SessionList), on(MethodFilter::GET, sessions::list)),
        r(
            Method::DELETE,
            "/api/v1/auth/sessions/{id}",
            Requires(SessionRevoke),
            on(MethodFilter::DELETE, sessions::revoke),
        ),
        r(Method::POST, "/api/v1/auth/rotate", Requires(TokenRotate), on(MethodFilter::POST, sessions::rotate)),
        // SCIM 2.0 (RFC 7644 §3): discovery, users, groups, searches.
        r(
            Method::GET,
            "/scim/v2/ServiceProviderConfig",
            Provisioning(ScimDiscover),
            on(GET, scim::service_provider_config),
        ),
        r(Method::GET, "/scim/v2/ResourceTypes", Provisioning(ScimDiscover), on(GET, scim::resource_types)),
        r(Method::GET, "/scim/v2/ResourceTypes/{id}", Provisioning(ScimDiscover), on(GET, scim::resource_type)),
        r(Method::GET, "/scim/v2/Schemas", Provisioning(ScimDiscover), on(GET, scim::schemas)),
        r(Method::GET, "/scim/v2/Schemas/{id}", Provisioning(ScimDiscover), on(GET, scim::schema_by_id)),
        r(Method::GET, "/scim/v2/Users", Provisioning(ScimUserRead), on(GET, scim::users::list)),
        r(Method::POST, "/scim/v2/Users", Provisioning(ScimUserCreate), on(POST, scim::users::create)),
        r(Method::POST, "/scim/v2/Users/.search", Provisioning(ScimUserRead), on(POST, scim::users::search)),
        r(Method::GET, "/scim/v2/Users/{id}", Provisioning(ScimUserRead), on(GET, scim::users::get)),
        r(Method::PUT, "/scim/v2/Users/{id}", Provisioning(ScimUserReplace), on(PUT, scim::users::replace)),
        r(Method::PATCH, "/scim/v2/Users/{id}", Provisioning(ScimUserPatch), on(PATCH, scim::users::patch)),
        r(Method::DELETE, "/scim/v2/Users/{id}", Provisioning(ScimUserDelete), on(DELETE, scim::users::delete)),
        r(Method::GET, "/scim/v2/Groups", Provisioning(ScimGroupRead), on(GET, scim::groups::list)),
        r(Method::POST, "/scim/v2/Groups", Provisioning(ScimGroupCreate), on(POST, scim::groups::create)),
        r(Method::POST, "/scim/v2/Groups/.search", Provisioning(ScimGroupRead), on(POST, scim::groups::search)),
        r(Method::GET, "/scim/v2/Groups/{id}", Provisioning(ScimGroupRead), on(GET, scim::groups::get)),
        r(Method::PUT, "/scim/v2/Groups/{id}", Provisioning(ScimGroupReplace), on(PUT, scim::groups::replace)),
        r(Method::PATCH, "/scim/v2/Groups/{id}", Provisioning(ScimGroupPatch), on(PATCH, scim::groups::patch)),
        r(Method::DELETE, "/scim/v2/Groups/{id}", Provisioning(ScimGroupDelete), on(DELETE, scim::groups::delete)),
        r(Method::POST, "/scim/v2/.search", Provisioning(ScimUserRead), on(POST, scim::root_search)),
        r(Method::POST, scim::workos::PATH, Signed, on(POST, scim::workos::receive)),
        r(Method::GET, "/k8s/clusters/{name}", Kube, axum::routing::any(crate::kube::proxy)),
        r(Method::GET, "/k8s/clusters/{name}/{*path}", Kube, axum::routing::any(crate::kube::proxy)),
    ]
}

/// Builds the whole application from the route table.
pub fn app(state: AppState) -> Router {
    let mut public = Router::new();
    let mut api = Router::new();
    let mut kube = Router::new();
    let mut provisioning = Vec::new();
    let mut paths: Vec<(&'static str, Permission, MethodRouter<AppState>)> = Vec::new();
    for (spec, handler) in table() {
        // Every API and SCIM route is an audited action: `mark` tells the audit point which one.
        let handler = match spec.permission {
            Permission::Requires(action) | Permission::Provisioning(action) => {
                handler.layer(axum::middleware::from_fn(move |req, next| crate::audit::mark(action, req, next)))
            }
            Permission::Public | Permission::SignIn | Permission::Kube | Permission::Signed => handler,
        };
        match paths.iter_mut().find(|(p, _, _)| *p == spec.path) {
            Some(entry) => entry.2 = std::mem::take(&mut entry.2).merge(handler),
            None => paths.push((spec.path, spec.permission, handler)),
        }
    }
    for (path, perm, handler) in paths {
        match perm {
            Permission::Public | Permission::SignIn => public = public.route(path, handler),
            Permission::Requires(_) => api = api.route(path, handler),
            Permission::Provisioning(_) => provisioning.push((path, handler)),
            Permission::Kube => kube = kube.route(path, handler),
            // Only with its secret; otherwise an unknown route.
            Permission::Signed if state.workos.is_some() => {
                public = public.route(path, handler.layer(DefaultBodyLimit::max(scim::workos::MAX_BODY)))
            }
            Permission::Signed => {}
        }
    }
    // Kubernetes bodies (apply of a large object) are the cluster's to limit, and they stream.
    let kube = kube.layer(DefaultBodyLimit::disable());
    let api = api
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authenticate_request))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    let mut router = Router::new().merge(public).merge(api).merge(kube);
    // SCIM exists only with its token: without it `/scim/v2/…` is an unknown route (404).
    if state.identity.scim.is_some() {
        router = router.nest(crate::scim::PREFIX, crate::scim::surface(provisioning, state.clone()));
    }
    router
        .route_layer(axum::middleware::from_fn(tag_route))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(crate::error::Code::Unimplemented, "method not allowed on this route")
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The API's OpenAPI 3.0 document: every `/api/v1` route with its permission and request body
/// (`tests/it/routes.rs` checks it against the route table and the real deserializers).
pub const OPENAPI: &str = include_str!("../openapi/openapi.json");

/// `GET /api/v1/openapi.json` — permission: public.
async fn openapi() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// A JSON body extractor whose rejections keep the API's error shape.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            });
        if !json {
            return Err(ApiError::invalid("send Content-Type: application/json"));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(crate::error::Code::OutOfRange, format!("request body larger than {MAX_BODY} bytes"))
            } else if stalled(&rej) {
                ApiError::new(crate::error::Code::DeadlineExceeded, "the request body stopped arriving")
            } else {
                ApiError::invalid("the request body could not be read")
            }
        })?;
        // One rule for every text the API stores (names, labels, URLs, specs): see core::names::odd_char.
        if kubehero_core::names::json_has_odd_char(&bytes) {
            return Err(ApiError::invalid(
                "the body holds a control character or a bidirectional formatting character (U+202E and the like); \
                 text fields may not contain them",
            ));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

/// Whether a body read failed because the body stalled ([`crate::listener::StallGuard`]): its error is somewhere
/// in the rejection's chain of sources.
pub fn stalled(rej: &axum::extract::rejection::BytesRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rej);
    while let Some(e) = cause {
        if e.is::<crate::listener::BodyStalled>() {
            return true;
        }
        cause = e.source();
    }
    false
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    match rej {
        JsonRejection::JsonSyntaxError(e) => ApiError::invalid(format!("malformed JSON: {}", e.body_text())),
        JsonRejection::JsonDataError(e) => ApiError::invalid(format!("invalid request body: {}", e.body_text())),
        other => ApiError::invalid(other.body_text()),
    }
}

/// Current time as RFC 3339, for responses.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}
