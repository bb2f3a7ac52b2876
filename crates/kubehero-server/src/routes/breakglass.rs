//! Break-glass: an owner seals one-time emergency codes for a cluster in advance; using one needs no IdP, no
//! SCIM and no session, and gives `owner` on that cluster for the code's TTL — as a CLI token of its own
//! (subject `breakglass:<code id>`) and a role binding that both end at the TTL. A use is impossible to make
//! quietly: a durable `breakglass.use` row (syslog severity *alert*, and every forwarder sink is woken for
//! it at once), a warning in the log, `kubehero_breakglass_uses_total` and `kubehero_breakglass_unacknowledged`
//! in `/metrics`, and a banner on the dashboard until an owner acknowledges it. Each code works once, however
//! many try it at once. Codes are stored as their SHA-256.

use super::Json;
use crate::audit::{target_of, Audited, RecordedWithChange, RequestContext};
use crate::auth::{allow, Auth};
use crate::error::{ApiError, ApiResult, Code};
use crate::login::esc;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use kubehero_core::{Action, AuditActor, AuditResult, Binding, BindingSubject, Role, Scope, Target};
use kubehero_store::{BreakglassCode, Change, StoredBinding};
use serde::Deserialize;
use serde_json::json;

/// A break-glass code starts with this.
pub const CODE_PREFIX: &str = "khb_";
/// The subject of the person behind a used code: `breakglass:<code id>` (the cluster sees
/// `kubehero:breakglass:<code id>`).
pub const SUBJECT_PREFIX: &str = "breakglass:";
const MAX_CODES: usize = 10;
const MIN_TTL: i64 = 120;
const MAX_TTL: i64 = 86_400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCodes {
    /// How many codes: 1 to 10 (default 3).
    #[serde(default)]
    count: Option<usize>,
    /// How long a use gives `owner`: 120 s to 24 h (default 1 h).
    #[serde(default)]
    ttl_secs: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UseCode {
    code: String,
    /// Why (an incident): required, kept in the audit log and shown on the banner.
    reason: String,
}

fn code_target(c: &BreakglassCode) -> kubehero_core::AuditTarget {
    target_of("breakglass_code", &c.id, Some(&c.cluster), None)
}

/// `POST /api/v1/clusters/{name}/breakglass` (CreateCodes) — permission: `breakglass.create` (owners of the
/// cluster). The codes are in this answer only.
pub async fn create(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Auth(p): Auth,
    audited: Audited,
    Json(b): Json<CreateCodes>,
) -> ApiResult<Response> {
    allow(&p, Action::BreakglassCreate, Target::cluster(&name))?;
    let count = b.count.unwrap_or(3);
    if !(1..=MAX_CODES).contains(&count) {
        return Err(ApiError::invalid(format!("count: between 1 and {MAX_CODES}")));
    }
    let ttl = b.ttl_secs.unwrap_or(3600);
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(ApiError::invalid(format!("ttl_secs: between {MIN_TTL} and {MAX_TTL} (24 hours)")));
    }
    s.store.get_cluster(&name).await?;
    let now = s.clock.now();
    let mut secrets = Vec::with_capacity(count);
    let mut codes = Vec::with_capacity(count);
    for _ in 0..count {
        let random = kubehero_identity::credential::random_bytes(20)?;
        let secret = format!("{CODE_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random));
        let id = format!("bg_{}", kubehero_audit::hex::encode(&kubehero_identity::credential::random_bytes(8)?));
        let hash = kubehero_authn::sha256_hex(&secret);
        codes.push(BreakglassCode::sealed(id.clone(), hash, &name, ttl, p.subject_key(), now));
        secrets.push(json!({ "id": id, "code": secret }));
    }
    let t = target_of("cluster", &name, Some(&name), None);
    audited.apply_named(Change::CreateBreakglassCodes(&codes), "breakglass.create", &t, StatusCode::CREATED).await?;
    let mut r = (StatusCode::CREATED, axum::Json(json!({ "cluster": name, "ttl_secs": ttl, "codes": secrets })))
        .into_response();
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Audited::mark_done(&mut r, t);
    Ok(r)
}

/// A code as listed: `unused`, `revoked`, `used` (not yet acknowledged) or `acknowledged`.
fn state(c: &BreakglassCode) -> &'static str {
    match (c.revoked_at, c.used_at, c.acknowledged_at) {
        (Some(_), _, _) => "revoked",
        (_, Some(_), Some(_)) => "acknowledged",
        (_, Some(_), None) => "used",
        _ => "unused",
    }
}

/// `GET /api/v1/breakglass` — permission: `breakglass.list` (auditors and owners): every code and its use.
pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::BreakglassList, Target::NONE)?;
    let items: Vec<_> = s
        .store
        .list_breakglass()
        .await?
        .into_iter()
        .map(|c| {
            let mut v = json!(c);
            v["state"] = json!(state(&c));
            v
        })
        .collect();
    Ok(axum::Json(json!({ "items": items })))
}

async fn find(s: &AppState, id: &str) -> ApiResult<BreakglassCode> {
    s.store
        .list_breakglass()
        .await?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no break-glass code {id:?}")))
}

/// `DELETE /api/v1/breakglass/{id}` — permission: `breakglass.create` (owners of its cluster): an unused code
/// can no longer be used.
pub async fn revoke(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Auth(p): Auth,
    audited: Audited,
) -> ApiResult<impl IntoResponse> {
    let c = find(&s, &id).await?;
    allow(&p, Action::BreakglassCreate, Target::cluster(&c.cluster))?;
    let t = code_target(&c);
    let change = Change::RevokeBreakglass { id: &id, at: s.clock.now() };
    audited.apply_named(change, "breakglass.revoke", &t, StatusCode::OK).await?;
    Ok((StatusCode::OK, Audited::done(t), axum::Json(json!({ "id": id, "revoked": true }))))
}

/// `POST /api/v1/breakglass/{id}/acknowledge` — permission: `breakglass.acknowledge` (owners of its cluster):
/// an owner has seen the use; its dashboard banner ends.
pub async fn acknowledge(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Auth(p): Auth,
    ctx: RequestContext,
) -> ApiResult<impl IntoResponse> {
    let t = acknowledge_as(&s, &p, &ctx, &id).await?;
    Ok((StatusCode::OK, Audited::done(t), axum::Json(json!({ "id": id, "acknowledged": true }))))
}

/// Acknowledges the use of code `id` as `p` (an owner of its cluster), with its durable row: the API's and
/// the banner's button.
async fn acknowledge_as(
    s: &AppState,
    p: &kubehero_core::Principal,
    ctx: &RequestContext,
    id: &str,
) -> ApiResult<kubehero_core::AuditTarget> {
    let c = find(s, id).await?;
    allow(p, Action::BreakglassAcknowledge, Target::cluster(&c.cluster))?;
    let (t, by) = (code_target(&c), p.subject_key());
    let change = Change::AcknowledgeBreakglass { id, by: &by, at: s.clock.now() };
    ctx.apply(&AuditActor::of(p), change, "breakglass.acknowledge", &t, StatusCode::OK).await?;
    Ok(t)
}

/// The codes used and not yet acknowledged, newest first (the dashboard's banner).
pub async fn unacknowledged(s: &AppState) -> ApiResult<Vec<BreakglassCode>> {
    Ok(s.store.list_breakglass().await?.into_iter().filter(|c| state(c) == "used").collect())
}

/// What a use gives back.
struct Used {
    code: BreakglassCode,
    token: String,
    expires_at: i64,
}

/// Why a code gave nothing.
fn refusal(kind: &str) -> ApiError {
    match kind {
        "throttled" => {
            ApiError::new(Code::ResourceExhausted, "too many break-glass attempts from this address; retry in a minute")
        }
        "reason" => ApiError::invalid("reason: say why, in 1-500 printable characters (an incident number)"),
        "used" => {
            ApiError::new(Code::FailedPrecondition, "this break-glass code was already used: each code works once")
        }
        "revoked" => ApiError::new(Code::FailedPrecondition, "this break-glass code was revoked by an owner"),
        _ => ApiError::unauthenticated("not a valid break-glass code"),
    }
}

/// Uses a code: checks it, makes the owner binding and CLI token, writes the durable `breakglass.use` row with
/// them; a refusal is a durable `breakglass.refuse` row (with its reason as the code).
async fn use_code(s: &AppState, ctx: &RequestContext, code: &str, reason: &str) -> ApiResult<Result<Used, ApiError>> {
    let refused = |why: &'static str, c: Option<&BreakglassCode>| {
        let result = AuditResult::denied(why, refusal(why).code.status().as_u16());
        let t = c.map(code_target).unwrap_or_default();
        async move {
            ctx.record(&AuditActor::unauthenticated("breakglass"), "breakglass.refuse", &t, result).await?;
            Ok::<_, ApiError>(Err(refusal(why)))
        }
    };
    if let Some(addr) = ctx.source() {
        if s.breakglass_attempts.take(addr).is_err() {
            return refused("throttled", None).await;
        }
    }
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > 500 || reason.chars().any(char::is_control) {
        return refused("reason", None).await;
    }
    let code = code.trim();
    if !code.starts_with(CODE_PREFIX) || code.len() > 128 {
        return refused("unknown_code", None).await;
    }
    let Some(c) = s.store.find_breakglass_by_hash(&kubehero_authn::sha256_hex(code)).await? else {
        return refused("unknown_code", None).await;
    };
    match state(&c) {
        "revoked" => return refused("revoked", Some(&c)).await,
        "used" | "acknowledged" => return refused("used", Some(&c)).await,
        _ => {}
    }
    let now = s.clock.now();
    let expires_at = now + c.ttl_secs;
    let sub = format!("{SUBJECT_PREFIX}{}", c.id);
    let (token, mut session) = crate::device::new_cli_token(&sub, None, Vec::new(), None, now, None)?;
    session.expires_at = expires_at;
    session.absolute_expires_at = expires_at;
    let binding = StoredBinding {
        id: format!("rb_{}", kubehero_audit::hex::encode(&kubehero_identity::credential::random_bytes(10)?)),
        binding: Binding {
            subject: BindingSubject::User(sub.clone()),
            role: Role::Owner,
            scope: Scope::Cluster { cluster: c.cluster.clone() },
        },
        created_by: sub.clone(),
        created_at: now,
        expires_at: Some(expires_at),
    };
    let from = ctx.source().map(|a| a.to_string());
    let change = Change::UseBreakglass {
        id: &c.id,
        at: now,
        reason,
        from: from.as_deref(),
        binding: &binding,
        session: &session,
    };
    let actor =
        AuditActor { sub: sub.clone(), kind: "person".into(), auth_method: "breakglass".into(), ..Default::default() };
    match ctx.apply(&actor, change, "breakglass.use", &code_target(&c), StatusCode::OK).await {
        Ok(_) => {}
        // Used (or revoked) by a request that won the race.
        Err(kubehero_store::StoreError::Conflict(m)) => {
            return refused(if m.contains("revoked") { "revoked" } else { "used" }, Some(&c)).await
        }
        Err(e) => return Err(e.into()),
    }
    if let Err(e) = s.identity.bindings.reload().await {
        tracing::warn!(error = %e, "reloading role bindings after a break-glass use failed; the periodic reload will");
    }
    s.metrics.breakglass_used(&c.cluster);
    tracing::warn!(
        cluster = %c.cluster,
        code = %c.id,
        reason = %reason,
        until = expires_at,
        "BREAK-GLASS: emergency owner access to a cluster was used; an owner must acknowledge it"
    );
    Ok(Ok(Used { code: c, token, expires_at }))
}

/// `POST /api/v1/breakglass/use` (UseCode) — no credential: the code is the proof. Works with the IdP down.
/// Answers a CLI token that holds `owner` on the code's cluster until `expires_at`.
pub async fn use_api(State(s): State<AppState>, ctx: RequestContext, Json(b): Json<UseCode>) -> ApiResult<Response> {
    let mut r = match use_code(&s, &ctx, &b.code, &b.reason).await? {
        Ok(u) => axum::Json(json!({
            "access_token": u.token,
            "token_type": "Bearer",
            "cluster": u.code.cluster,
            "role": "owner",
            "expires_at": u.expires_at,
            "code_id": u.code.id,
        }))
        .into_response(),
        Err(e) => e.into_response(),
    };
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.extensions_mut().insert(RecordedWithChange);
    Ok(r)
}

fn page(status: StatusCode, body: &str) -> Response {
    let mut r = (status, crate::login::page("Break-glass access", body)).into_response();
    let h = r.headers_mut();
    h.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // A refusal is a page for a person, not the API's JSON error.
    r.extensions_mut().insert(crate::middleware::ForeignErrorBody);
    r
}

const FORM: &str = "<form method=\"post\" action=\"/breakglass\">\
     <p><label>Code <input name=\"code\" autocomplete=\"off\" required></label></p>\
     <p><label>Reason <input name=\"reason\" placeholder=\"INC-1234: the IdP is down\" required></label></p>\
     <button type=\"submit\" id=\"use\">Use the code</button></form>";

/// `GET /breakglass`: the form (no sign-in: it is for when sign-in does not work).
pub async fn form() -> Response {
    page(
        StatusCode::OK,
        &format!(
            "<h1>Break-glass access</h1><p>For emergencies only. Using a code gives owner on its cluster for a \
             limited time, alerts every configured audit sink and shows a banner to everyone until an owner \
             acknowledges it.</p>{FORM}"
        ),
    )
}

/// `POST /breakglass` (form): uses a code and shows the token once, with how to use it.
pub async fn use_form(State(s): State<AppState>, ctx: RequestContext, body: axum::body::Bytes) -> ApiResult<Response> {
    let form = crate::login::form_fields(&body);
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let mut r = match use_code(&s, &ctx, get("code"), get("reason")).await? {
        Ok(u) => {
            let server = s.public_url.as_deref().unwrap_or_default();
            page(
                StatusCode::OK,
                &format!(
                    "<h1 id=\"granted\">Owner access to {cluster} until {until}</h1>\
                     <p>This token is shown once. Use it with the CLI:</p>\
                     <pre id=\"token-use\">export KUBEHERO_TOKEN={token}\n\
                     kubehero kubeconfig --server {server} --cluster {cluster}\nkubectl --context kubehero-{cluster} \
                     get namespaces</pre>",
                    cluster = esc(&u.code.cluster),
                    until = esc(&super::rfc3339(u.expires_at)),
                    token = esc(&u.token),
                    server = esc(server),
                ),
            )
        }
        Err(e) => page(
            e.code.status(),
            &format!("<h1>Break-glass access</h1><p id=\"refused\">{}</p>{FORM}", esc(&e.message)),
        ),
    };
    r.extensions_mut().insert(RecordedWithChange);
    Ok(r)
}

/// The banner every signed-in page shows while a use is not acknowledged; owners get the button.
pub async fn banner(s: &AppState, p: &kubehero_core::Principal, csrf: &str) -> String {
    let Ok(used) = unacknowledged(s).await else {
        return String::new();
    };
    used.iter()
        .map(|c| {
            let owner = kubehero_core::authorize(p, Action::BreakglassAcknowledge, Target::cluster(&c.cluster))
                .is_allowed();
            let button = if owner {
                format!(
                    " <form method=\"post\" action=\"/breakglass/acknowledge\"><input type=\"hidden\" name=\"csrf\" \
                     value=\"{}\"><input type=\"hidden\" name=\"id\" value=\"{}\"><button type=\"submit\" \
                     id=\"acknowledge-{}\">Acknowledge</button></form>",
                    esc(csrf),
                    esc(&c.id),
                    esc(&c.id)
                )
            } else {
                " An owner must acknowledge it.".to_string()
            };
            format!(
                "<div role=\"alert\" class=\"breakglass\" id=\"breakglass-{id}\"><strong>Break-glass access was \
                 used</strong> on cluster {cluster} at {at} (reason: {reason}); owner access until {until}.{button}</div>",
                id = esc(&c.id),
                cluster = esc(&c.cluster),
                at = esc(&super::rfc3339(c.used_at.unwrap_or_default())),
                reason = esc(c.reason.as_deref().unwrap_or_default()),
                until = esc(&super::rfc3339(c.expires_at.unwrap_or_default())),
            )
        })
        .collect()
}

/// `POST /breakglass/acknowledge` (the banner's form, CSRF-checked): an owner acknowledges a use.
pub async fn acknowledge_form(
    State(s): State<AppState>,
    ctx: RequestContext,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let secret = crate::login::read_cookie(&headers, crate::login::SESSION_COOKIE)
        .ok_or_else(|| ApiError::unauthenticated("sign in first"))?;
    let (p, session) = s.identity.session(secret).await?;
    let form = crate::login::form_fields(&body);
    if !crate::auth::csrf_matches(session.csrf.as_deref(), form.get("csrf").map(String::as_str)) {
        return Err(ApiError::denied("missing or wrong CSRF token"));
    }
    acknowledge_as(&s, &p, &ctx, form.get("id").map(String::as_str).unwrap_or_default()).await?;
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(axum::http::header::LOCATION, HeaderValue::from_static("/"));
    r.extensions_mut().insert(RecordedWithChange);
    Ok(r)
}
