//! Share links: a person who holds a role on a cluster (or one namespace of it) makes a link that gives that
//! role — or a lower one — to whoever accepts it (or only to named people and groups), until it expires and at
//! most `max_uses` times. The link is `<public url>/share/<token>`; the token is random, shown once and stored
//! as its SHA-256. Opening it signs the person in through the IdP if needed (the link is the sign-in's return
//! path), shows what it gives, and accepting makes a role binding that ends with the share: it works at once
//! through the proxy and, where RBAC sync runs, directly. Revoking a share deletes every binding made from it,
//! so open streams using them are cut within seconds. Every step is a durable audit row: `share.create`,
//! `share.open`, `share.accept`, `share.refuse` (with the reason as its code), `share.revoke`, `share.expire`.

use super::Json;
use crate::audit::{target_of, Audited, Recorded, RecordedWithChange, RequestContext};
use crate::auth::{allow, Auth};
use crate::error::{ApiError, ApiResult, Code};
use crate::login::{esc, urlencode};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use kubehero_core::{
    Action, AuditActor, AuditResult, AuditTarget, Binding, BindingSubject, Principal, PrincipalKind, Role, Scope,
    Target,
};
use kubehero_store::{Change, Share, StoredBinding};
use serde::Deserialize;
use serde_json::json;

/// The longest a share lasts.
pub const MAX_SECS: i64 = 30 * 86_400;
const MIN_SECS: i64 = 5;
/// The most people one share can be accepted by.
const MAX_USES: i64 = 1_000;
/// The most recipients one share names.
const MAX_RECIPIENTS: usize = 100;
/// A share link's token starts with this.
pub const TOKEN_PREFIX: &str = "khl_";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateShare {
    role: Role,
    /// How long the link (and every grant made from it) lasts: 5 s to 30 days.
    expires_in_secs: i64,
    /// How many people may accept it (default: any number).
    #[serde(default)]
    max_uses: Option<i64>,
    /// Who may accept it: emails and `group:<name>` (default: anyone who signs in).
    #[serde(default)]
    to: Vec<String>,
    /// One namespace of the cluster instead of all of it.
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptShare {
    /// The link's token (the last part of `/share/<token>`), or the whole link.
    token: String,
}

fn target(sh: &Share) -> Target<'_> {
    Target::in_namespace(&sh.cluster, sh.namespace.as_deref())
}

fn audit_target(sh: &Share) -> AuditTarget {
    target_of("share", &sh.id, Some(&sh.cluster), sh.namespace.as_deref())
}

/// The link people open: needs `KUBEHERO_PUBLIC_URL`.
fn link(s: &AppState, token: &str) -> ApiResult<String> {
    let base = s.public_url.as_deref().ok_or_else(|| {
        ApiError::new(
            Code::FailedPrecondition,
            "share links need KUBEHERO_PUBLIC_URL (the address people open them at); set it and restart",
        )
    })?;
    Ok(format!("{}/share/{token}", base.trim_end_matches('/')))
}

/// Whether `p` holds, from a group mapping or binding, a role on the share's scope that covers `role`.
fn may_share(s: &AppState, p: &Principal, cluster: &str, namespace: Option<&str>, role: Role) -> bool {
    let t = Target::in_namespace(cluster, namespace);
    s.identity
        .bindings
        .explicit_grants(p)
        .iter()
        .any(|g| g.role.covers(role) && kubehero_core::authz::scope_covers(&g.scope, t))
}

/// An email (`a@b`) or `group:<name>`: printable, at most 256 bytes.
fn valid_recipient(r: &str) -> bool {
    let ok_text = !r.is_empty() && r.len() <= 256 && !r.chars().any(|c| c.is_control() || c.is_whitespace());
    let group = r.strip_prefix("group:").is_some_and(|g| !g.is_empty());
    let email = r.split_once('@').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('@'));
    ok_text && (group || email)
}

/// `POST /api/v1/clusters/{name}/shares` (CreateShare) — permission: `share.create` (anyone signed in, for a
/// role no higher than their own on that scope).
pub async fn create(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Auth(p): Auth,
    audited: Audited,
    Json(b): Json<CreateShare>,
) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ShareCreate, Target::in_namespace(&name, b.namespace.as_deref()))?;
    if p.kind != PrincipalKind::Person {
        return Err(ApiError::invalid("only people share clusters (an API key's access is set when it is made)"));
    }
    if !(MIN_SECS..=MAX_SECS).contains(&b.expires_in_secs) {
        return Err(ApiError::invalid(format!("expires_in_secs: between {MIN_SECS} and {MAX_SECS} (30 days)")));
    }
    if b.max_uses.is_some_and(|m| !(1..=MAX_USES).contains(&m)) {
        return Err(ApiError::invalid(format!("max_uses: between 1 and {MAX_USES}")));
    }
    if b.to.len() > MAX_RECIPIENTS {
        return Err(ApiError::invalid(format!("to: at most {MAX_RECIPIENTS} recipients")));
    }
    if let Some(bad) = b.to.iter().find(|r| !valid_recipient(r)) {
        return Err(ApiError::invalid(format!(
            "to: {:?} is neither an email nor group:<name>",
            bad.chars().take(64).collect::<String>()
        )));
    }
    crate::config::validate_scope(Some(name.clone()), b.namespace.clone()).map_err(ApiError::invalid)?;
    s.store.get_cluster(&name).await?;
    let scope = match &b.namespace {
        Some(ns) => format!("namespace {ns} of cluster {name}"),
        None => format!("cluster {name}"),
    };
    if !may_share(&s, &p, &name, b.namespace.as_deref(), b.role) {
        return Err(ApiError::new(
            Code::PermissionDenied,
            format!("you can share only a role you hold on {scope}: you hold no role there that covers {}", b.role),
        ));
    }
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kubehero_identity::credential::random_bytes(32)?)
    );
    let url = link(&s, &token)?;
    let now = s.clock.now();
    let mut to: Vec<String> = b.to.iter().map(|r| r.to_lowercase()).collect();
    to.sort();
    to.dedup();
    let share = Share {
        id: format!("sh_{}", kubehero_audit::hex::encode(&kubehero_identity::credential::random_bytes(10)?)),
        token_hash: kubehero_authn::sha256_hex(&token),
        cluster: name,
        namespace: b.namespace,
        role: b.role.as_str().to_string(),
        created_by: p.subject_key(),
        created_by_email: p.email.clone(),
        created_at: now,
        expires_at: now + b.expires_in_secs,
        max_uses: b.max_uses,
        uses: 0,
        recipients: to,
        revoked_at: None,
        revoked_by: None,
        expired_at: None,
    };
    let t = audit_target(&share);
    audited.apply_named(Change::CreateShare(&share), "share.create", &t, StatusCode::CREATED).await?;
    let mut body = json!(share);
    body["url"] = json!(url);
    body["token"] = json!(token);
    let mut r = (StatusCode::CREATED, axum::Json(body)).into_response();
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Audited::mark_done(&mut r, t);
    Ok(r)
}

/// A share as listed: its state, who accepted it and whether the caller may revoke it.
fn listed(s: &AppState, p: &Principal, sh: &Share, grants: &[kubehero_store::ShareGrant]) -> serde_json::Value {
    let now = s.clock.now();
    let mut v = json!(sh);
    v["state"] = json!(sh.closed(now).unwrap_or("open"));
    v["accepted_by"] = json!(grants.iter().filter(|g| g.share_id == sh.id).map(|g| &g.subject).collect::<Vec<_>>());
    v["can_revoke"] = json!(sh.revoked_at.is_none() && may_revoke(p, sh));
    v
}

/// Whether `p` may revoke (and so sees) `sh`: its creator, or an admin or owner of its scope.
pub(crate) fn may_revoke(p: &Principal, sh: &Share) -> bool {
    let owned = sh.created_by == p.subject_key();
    kubehero_core::authorize(p, Action::ShareRevoke, target(sh).owned(owned)).is_allowed()
}

/// `GET /api/v1/clusters/{name}/shares` — permission: `share.list`. One's own shares of the cluster, and (for
/// its admins and owners) everyone's.
pub async fn list(State(s): State<AppState>, Path(name): Path<String>, Auth(p): Auth) -> ApiResult<impl IntoResponse> {
    allow(&p, Action::ShareList, Target::cluster(&name))?;
    let grants = s.store.list_share_grants().await?;
    let items: Vec<_> = s
        .store
        .list_shares()
        .await?
        .into_iter()
        .filter(|sh| sh.cluster == name && may_revoke(&p, sh))
        .map(|sh| listed(&s, &p, &sh, &grants))
        .collect();
    Ok(axum::Json(json!({ "items": items })))
}

/// `DELETE /api/v1/clusters/{name}/shares/{id}` — permission: `share.revoke` (its creator, or an admin or owner
/// of its scope). Ends every grant made from it.
pub async fn revoke(
    State(s): State<AppState>,
    Path((name, id)): Path<(String, String)>,
    Auth(p): Auth,
    audited: Audited,
) -> ApiResult<impl IntoResponse> {
    let sh = s.store.get_share(&id).await?;
    if sh.cluster != name {
        return Err(ApiError::not_found(format!("cluster {name} has no share {id:?}")));
    }
    allow(&p, Action::ShareRevoke, target(&sh).owned(sh.created_by == p.subject_key()))?;
    let t = audit_target(&sh);
    let by = p.subject_key();
    let change = Change::RevokeShare { id: &id, by: &by, at: s.clock.now() };
    let ended = kubehero_store::changed_count(audited.apply_named(change, "share.revoke", &t, StatusCode::OK).await?)?;
    reload(&s).await;
    Ok((StatusCode::OK, Audited::done(t), axum::Json(json!({ "id": id, "revoked": true, "grants_ended": ended }))))
}

async fn reload(s: &AppState) {
    if let Err(e) = s.identity.bindings.reload().await {
        tracing::warn!(error = %e, "reloading role bindings after a share change failed; the periodic reload will");
    }
}

/// Why a link gives nothing to this person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Unknown,
    Revoked,
    Expired,
    UsedUp,
    NotRecipient,
    OwnLink,
}

impl Refusal {
    fn of_closed(why: &str) -> Refusal {
        match why {
            "revoked" => Refusal::Revoked,
            "expired" => Refusal::Expired,
            _ => Refusal::UsedUp,
        }
    }

    /// The audit row's code.
    fn reason(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown_link",
            Refusal::Revoked => "revoked",
            Refusal::Expired => "expired",
            Refusal::UsedUp => "used_up",
            Refusal::NotRecipient => "not_recipient",
            Refusal::OwnLink => "own_link",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::Unknown => "This share link is not valid: it was mistyped, or never existed.",
            Refusal::Revoked => "This share link was revoked by the person who made it (or an admin).",
            Refusal::Expired => "This share link has expired. Ask the person who shared it for a new one.",
            Refusal::UsedUp => "This share link has been used as many times as it allows.",
            Refusal::NotRecipient => {
                "This share link was made for other people: your email and groups are not among \
                 its recipients."
            }
            Refusal::OwnLink => "This is your own share link: send it to the person you want to share with.",
        }
    }

    fn error(self) -> ApiError {
        let code = match self {
            Refusal::Unknown => Code::NotFound,
            Refusal::NotRecipient | Refusal::OwnLink => Code::PermissionDenied,
            Refusal::Revoked | Refusal::Expired | Refusal::UsedUp => Code::FailedPrecondition,
        };
        ApiError::new(code, self.message())
    }

    fn status(self) -> StatusCode {
        match self {
            Refusal::Unknown => StatusCode::NOT_FOUND,
            Refusal::NotRecipient | Refusal::OwnLink => StatusCode::FORBIDDEN,
            Refusal::Revoked | Refusal::Expired | Refusal::UsedUp => StatusCode::GONE,
        }
    }
}

/// The token of a link or of the whole URL.
fn token_of(link: &str) -> &str {
    let t = link.trim().trim_end_matches('/');
    t.rsplit('/').next().unwrap_or(t)
}

/// The share a token names if `p` may accept it now; else why not (with the share, when there is one).
async fn check(s: &AppState, p: &Principal, token: &str) -> ApiResult<Result<Share, (Option<Share>, Refusal)>> {
    let token = token_of(token);
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return Ok(Err((None, Refusal::Unknown)));
    }
    let Some(sh) = s.store.find_share_by_hash(&kubehero_authn::sha256_hex(token)).await? else {
        return Ok(Err((None, Refusal::Unknown)));
    };
    let refusal = if let Some(why) = sh.closed(s.clock.now()) {
        Refusal::of_closed(why)
    } else if sh.created_by == p.subject_key() {
        Refusal::OwnLink
    } else if !is_recipient(&sh, p) {
        Refusal::NotRecipient
    } else {
        return Ok(Ok(sh));
    };
    Ok(Err((Some(sh), refusal)))
}

fn is_recipient(sh: &Share, p: &Principal) -> bool {
    if sh.recipients.is_empty() {
        return true;
    }
    let email = p.email.as_deref().map(str::to_lowercase);
    sh.recipients.iter().any(|r| match r.strip_prefix("group:") {
        Some(g) => p.groups.iter().any(|mine| mine.eq_ignore_ascii_case(g)),
        None => email.as_deref() == Some(r.as_str()),
    })
}

/// Records a refusal, durably.
async fn refuse(ctx: &RequestContext, p: &Principal, sh: Option<&Share>, why: Refusal) -> ApiResult<Refusal> {
    let result = AuditResult::denied(why.reason(), why.status().as_u16());
    let t = sh.map(audit_target).unwrap_or_default();
    ctx.record(&AuditActor::of(p), "share.refuse", &t, result).await?;
    Ok(why)
}

/// The person's grant from this share, if they accepted it already.
async fn accepted(s: &AppState, p: &Principal, sh: &Share) -> ApiResult<Option<kubehero_store::ShareGrant>> {
    let me = p.subject_key();
    Ok(s.store.list_share_grants().await?.into_iter().find(|g| g.share_id == sh.id && g.subject == me))
}

/// Accepts an open share for `p`: the share, and whether this made the grant (`false`: accepted before).
/// A refusal is recorded and given back with the share it concerns.
async fn accept(
    s: &AppState,
    ctx: &RequestContext,
    p: &Principal,
    token: &str,
) -> ApiResult<Result<(Share, bool), (Option<Share>, Refusal)>> {
    if p.kind != PrincipalKind::Person {
        return Err(ApiError::invalid("only people accept share links"));
    }
    let sh = match check(s, p, token).await? {
        Ok(sh) => sh,
        Err((sh, why)) => {
            let why = refuse(ctx, p, sh.as_ref(), why).await?;
            return Ok(Err((sh, why)));
        }
    };
    if accepted(s, p, &sh).await?.is_some() {
        return Ok(Ok((sh, false)));
    }
    let role = sh.role.parse::<Role>().map_err(|_| ApiError::new(Code::Internal, "the share names no role"))?;
    let scope = match &sh.namespace {
        Some(ns) => Scope::Namespace { cluster: sh.cluster.clone(), namespace: ns.clone() },
        None => Scope::Cluster { cluster: sh.cluster.clone() },
    };
    let now = s.clock.now();
    let binding = StoredBinding {
        id: format!("rb_{}", kubehero_audit::hex::encode(&kubehero_identity::credential::random_bytes(10)?)),
        binding: Binding { subject: BindingSubject::User(p.subject_key()), role, scope },
        created_by: sh.created_by.clone(),
        created_at: now,
        expires_at: Some(sh.expires_at),
    };
    // An expired binding of the same person, role and scope (not yet swept) would block the new one.
    s.identity.expire_bindings().await?;
    let change = Change::AcceptShare { share_id: &sh.id, binding: &binding, at: now };
    match ctx.apply(&AuditActor::of(p), change, "share.accept", &audit_target(&sh), StatusCode::OK).await {
        Ok(_) => {}
        // Used up, revoked or expired in the meantime.
        Err(kubehero_store::StoreError::Conflict(m)) => {
            let why = [("revoked", Refusal::Revoked), ("expired", Refusal::Expired)]
                .into_iter()
                .find_map(|(w, r)| m.contains(w).then_some(r))
                .unwrap_or(Refusal::UsedUp);
            let e = refuse(ctx, p, Some(&sh), why).await?;
            return Ok(Err((Some(sh), e)));
        }
        Err(kubehero_store::StoreError::AlreadyExists(_)) => {
            return Err(ApiError::new(
                Code::AlreadyExists,
                format!("you already hold {} on this scope through a role binding; nothing to accept", sh.role),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    reload(s).await;
    Ok(Ok((sh, true)))
}

/// What an accepted share gives, for the CLI.
fn accepted_json(s: &AppState, sh: &Share) -> serde_json::Value {
    json!({
        "share_id": sh.id,
        "cluster": sh.cluster,
        "namespace": sh.namespace,
        "role": sh.role,
        "expires_at": sh.expires_at,
        "shared_by": sh.created_by_email.as_deref().unwrap_or(&sh.created_by),
        "server": s.public_url.as_deref().map(|u| format!("{}/k8s/clusters/{}", u.trim_end_matches('/'), sh.cluster)),
    })
}

/// `POST /api/v1/shares/accept` (AcceptShare) — permission: `share.accept` (anyone signed in; the token is the
/// proof). What `kubehero kubeconfig --share <link>` calls.
pub async fn accept_api(
    State(s): State<AppState>,
    Auth(p): Auth,
    ctx: RequestContext,
    Json(b): Json<AcceptShare>,
) -> ApiResult<Response> {
    allow(&p, Action::ShareAccept, Target::NONE)?;
    match accept(&s, &ctx, &p, &b.token).await? {
        Ok((sh, made)) => {
            let mut r = axum::Json(accepted_json(&s, &sh)).into_response();
            // Accepted before: the audit point records this call as any other.
            if made {
                Audited::mark_done(&mut r, audit_target(&sh));
            } else {
                r.extensions_mut().insert(audit_target(&sh));
            }
            Ok(r)
        }
        Err((sh, why)) => {
            let mut r = why.error().into_response();
            Audited::mark_done(&mut r, sh.as_ref().map(audit_target).unwrap_or_default());
            Ok(r)
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The page a link opens.

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let mut r = (status, crate::login::page(title, body)).into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // A refusal is a page for a person, not the API's JSON error.
    r.extensions_mut().insert(crate::middleware::ForeignErrorBody);
    r
}

fn refused_page(why: Refusal) -> Response {
    let body = format!(
        "<h1>Share link refused</h1><p id=\"refused\" data-reason=\"{}\">{}</p><p><a href=\"/\">Go to \
         KubeHero</a></p>",
        why.reason(),
        esc(why.message())
    );
    let mut r = page(why.status(), "Share link refused", &body);
    r.extensions_mut().insert(RecordedWithChange);
    r
}

fn rfc3339(t: i64) -> String {
    super::rfc3339(t)
}

fn what_it_gives(sh: &Share) -> String {
    let scope = match &sh.namespace {
        Some(ns) => format!("namespace <strong id=\"namespace\">{}</strong> of the cluster", esc(ns)),
        None => "the whole cluster".to_string(),
    };
    let uses = match sh.max_uses {
        Some(m) => format!("; {} of {m} uses left", (m - sh.uses).max(0)),
        None => String::new(),
    };
    format!(
        "<dl><dt>Cluster</dt><dd id=\"cluster\">{cluster}</dd><dt>Role</dt><dd id=\"role\">{role}</dd>\
         <dt>Scope</dt><dd id=\"scope\">{scope}</dd><dt>Until</dt><dd id=\"expires\">{until}{uses}</dd>\
         <dt>Shared by</dt><dd id=\"shared-by\">{by}</dd></dl>",
        cluster = esc(&sh.cluster),
        role = esc(&sh.role),
        until = esc(&rfc3339(sh.expires_at)),
        by = esc(sh.created_by_email.as_deref().unwrap_or(&sh.created_by)),
    )
}

fn here(token: &str) -> String {
    format!("/share/{}", urlencode(token))
}

/// For the pages: the signed-in person, their session and the share they may accept; or the answer to give
/// instead (the sign-in that comes back here, or the recorded refusal).
async fn gate(
    s: &AppState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    token: &str,
) -> ApiResult<Result<(Principal, std::sync::Arc<kubehero_store::SessionRecord>, Share), Response>> {
    let (p, session) = match crate::ui::signed_in(s, headers, &here(token)).await {
        Ok(x) => x,
        Err(redirect) => return Ok(Err(redirect)),
    };
    match check(s, &p, token).await? {
        Ok(sh) => Ok(Ok((p, session, sh))),
        Err((sh, why)) => Ok(Err(refused_page(refuse(ctx, &p, sh.as_ref(), why).await?))),
    }
}

/// `GET /share/{token}`: signs the person in (coming back here), then shows what the link gives, with the
/// button that accepts it and the CLI line; or why it gives nothing.
pub async fn open(
    State(s): State<AppState>,
    Path(token): Path<String>,
    ctx: RequestContext,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (p, session, sh) = match gate(&s, &ctx, &headers, &token).await? {
        Ok(x) => x,
        Err(answer) => return Ok(answer),
    };
    let cli = link(&s, &token).map(|l| format!("kubehero kubeconfig --share {l}")).unwrap_or_default();
    let action = match accepted(&s, &p, &sh).await? {
        Some(g) => format!(
            "<p id=\"accepted\">You accepted this link at {}.</p><p><a id=\"download\" \
             href=\"{here}/kubeconfig\" download=\"kubeconfig-{cluster}.yaml\">Download kubeconfig</a></p>",
            esc(&rfc3339(g.accepted_at)),
            here = esc(&here(&token)),
            cluster = esc(&sh.cluster),
        ),
        None => format!(
            "<form method=\"post\" action=\"{here}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\" id=\"accept\">Accept and download kubeconfig</button></form>",
            here = esc(&here(&token)),
            csrf = esc(session.csrf.as_deref().unwrap_or_default()),
        ),
    };
    let body = format!(
        "<h1>{by} shared a cluster with you</h1>{what}{action}\
         <h2>With the CLI</h2><pre id=\"cli\">{cli}</pre>\
         <p>Signed in as {me}. Accepting gives you this role until the link ends; it is recorded in the audit log.</p>",
        by = esc(sh.created_by_email.as_deref().unwrap_or(&sh.created_by)),
        what = what_it_gives(&sh),
        cli = esc(&cli),
        me = esc(p.email.as_deref().unwrap_or(&p.sub)),
    );
    let mut r = page(StatusCode::OK, "Shared cluster", &body);
    r.extensions_mut().insert(audit_target(&sh));
    r.extensions_mut().insert(Recorded { action: "share.open", actor: AuditActor::of(&p), plain_read: false });
    Ok(r)
}

/// `POST /share/{token}` (form, CSRF-checked): accepts the link, then shows the download.
pub async fn accept_form(
    State(s): State<AppState>,
    Path(token): Path<String>,
    ctx: RequestContext,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let (p, session) = match crate::ui::signed_in(&s, &headers, &here(&token)).await {
        Ok(x) => x,
        Err(redirect) => return Ok(redirect),
    };
    let form = crate::login::form_fields(&body);
    if !crate::auth::csrf_matches(session.csrf.as_deref(), form.get("csrf").map(String::as_str)) {
        return Err(ApiError::denied("missing or wrong CSRF token: reload the share page and try again"));
    }
    let (sh, made) = match accept(&s, &ctx, &p, &token).await? {
        Ok(x) => x,
        Err((_, why)) => return Ok(refused_page(why)),
    };
    let body = format!(
        "<h1 id=\"granted\">Access granted</h1>{what}<p><a id=\"download\" href=\"{here}/kubeconfig\" \
         download=\"kubeconfig-{cluster}.yaml\">Download kubeconfig</a></p>\
         <p>It runs <code>kubehero token</code> for credentials: install the CLI and run <code>kubehero login \
         --server {server}</code> once.</p>",
        what = what_it_gives(&sh),
        here = esc(&here(&token)),
        cluster = esc(&sh.cluster),
        server = esc(s.public_url.as_deref().unwrap_or_default()),
    );
    let mut r = page(StatusCode::OK, "Access granted", &body);
    if made {
        Audited::mark_done(&mut r, audit_target(&sh));
    } else {
        r.extensions_mut().insert(audit_target(&sh));
        r.extensions_mut().insert(Recorded { action: "share.accept", actor: AuditActor::of(&p), plain_read: false });
    }
    Ok(r)
}

/// `GET /share/{token}/kubeconfig`: the kubeconfig of an accepted share (a context for its cluster whose user
/// runs `kubehero token`).
pub async fn kubeconfig(
    State(s): State<AppState>,
    Path(token): Path<String>,
    ctx: RequestContext,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (p, _, sh) = match gate(&s, &ctx, &headers, &token).await? {
        Ok(x) => x,
        Err(answer) => return Ok(answer),
    };
    if accepted(&s, &p, &sh).await?.is_none() {
        let mut r = StatusCode::SEE_OTHER.into_response();
        r.headers_mut()
            .insert(LOCATION, HeaderValue::from_str(&here(&token)).map_err(|_| ApiError::invalid("bad link"))?);
        return Ok(r);
    }
    let base = s.public_url.as_deref().unwrap_or_default().trim_end_matches('/').to_string();
    let doc = crate::kube::kubeconfig::document_for(&base, &sh.cluster, s.serving_ca_pem.as_deref());
    // JSON is YAML: kubectl reads it as any kubeconfig, and `kubectl config view --flatten` merges it.
    let yaml = serde_json::to_string_pretty(&doc)
        .map_err(|e| ApiError::new(Code::Internal, format!("writing the kubeconfig: {e}")))?;
    let mut r = (StatusCode::OK, yaml).into_response();
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/yaml"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let file = format!("attachment; filename=\"kubeconfig-{}.yaml\"", sh.cluster);
    if let Ok(v) = HeaderValue::from_str(&file) {
        r.headers_mut().insert(CONTENT_DISPOSITION, v);
    }
    r.extensions_mut().insert(audit_target(&sh));
    r.extensions_mut().insert(Recorded { action: "share.kubeconfig", actor: AuditActor::of(&p), plain_read: true });
    Ok(r)
}
