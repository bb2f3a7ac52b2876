//! The audit point: every request that reaches an API handler, and every refused credential, becomes one
//! audit row before its response leaves (ARCHITECTURE.md invariant 1).
//!
//! - each API route is wrapped by [`mark`], which puts the route's action and the target named by its path
//!   into the response; handlers may add a more precise [`AuditTarget`] (a policy's cluster, say);
//! - the authentication middleware puts the principal into the response;
//! - [`crate::middleware::observe`] turns all that into an [`AuditEvent`], waits until the group-commit writer
//!   has made it durable, and only then answers. If the row cannot be written the answer is 503
//!   `unavailable`, whatever the handler did;
//! - the one exception is a plain read ([`durability`]): under `KUBEHERO_AUDIT_READS=async` (the default) its row
//!   goes into the same chain through the same writer but the answer does not wait for the flush.

use crate::auth::Auth;
use crate::config::ServerConfig;
use crate::error::{ApiError, Code};
use crate::StartError;
use axum::extract::{MatchedPath, Request};
use axum::http::header::USER_AGENT;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use kubehero_audit::{HmacKeys, SigningKey};
use kubehero_core::{Action, AuditActor, AuditEvent, AuditOutcome, AuditResult, AuditTarget};
use kubehero_identity::Durability;
use std::path::Path;

/// A sign-in route's own record of what happened (login, logout): the action and who it was about.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub action: &'static str,
    pub actor: AuditActor,
    /// A request that changes nothing (a Kubernetes `get`, `list` or `watch`): its row follows
    /// `KUBEHERO_AUDIT_READS` like the API's plain reads.
    pub plain_read: bool,
}

/// The action of the route that handled a request, put into the response by [`mark`].
#[derive(Debug, Clone, Copy)]
pub struct AuditAction(pub Action);

/// Wraps one API route: records its action and the target its path names.
pub async fn mark(action: Action, req: Request, next: Next) -> Response {
    let target = path_target(action, &req);
    let mut res = next.run(req).await;
    res.extensions_mut().insert(AuditAction(action));
    if res.extensions().get::<AuditTarget>().is_none() {
        res.extensions_mut().insert(target);
    }
    res
}

/// A precise target for the audit row, returned by handlers that know more than their path says (the id of
/// a created resource, a policy's cluster).
pub fn target(kind: &str, id: &str, cluster: Option<&str>, namespace: Option<&str>) -> axum::Extension<AuditTarget> {
    axum::Extension(target_of(kind, id, cluster, namespace))
}

/// An audit target.
pub fn target_of(kind: &str, id: &str, cluster: Option<&str>, namespace: Option<&str>) -> AuditTarget {
    AuditTarget {
        kind: Some(kind.to_string()),
        id: Some(id.to_string()),
        cluster: cluster.map(str::to_string),
        namespace: namespace.map(str::to_string),
    }
}

/// The resource kind an action is about.
fn kind_of(action: Action) -> Option<&'static str> {
    let name = action.as_str();
    let kind = name.split('.').next()?;
    Some(match kind {
        "whoami" => return None,
        "role_binding" => "role_binding",
        "api_key" => "api_key",
        "settings" => "setting",
        "scim" => match name.split('.').nth(1) {
            Some("user") => "scim_user",
            Some("group") => "scim_group",
            _ => "scim",
        },
        other => other,
    })
}

/// The `{name}`/`{id}`/`{key}` path parameter, found by lining the path up with its route template.
fn path_target(action: Action, req: &Request) -> AuditTarget {
    let mut target = AuditTarget { kind: kind_of(action).map(str::to_string), ..Default::default() };
    if let Some(template) = req.extensions().get::<MatchedPath>() {
        for (t, v) in template.as_str().split('/').zip(req.uri().path().split('/')) {
            if t.starts_with('{') {
                target.id = Some(truncate(v, 256));
            }
        }
    }
    if target.kind.as_deref() == Some("cluster") {
        target.cluster.clone_from(&target.id);
    }
    target
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// What the audit row needs from the request, taken before the handler consumes it.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub source: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
    /// `jwt`, `api_key`, `cli_token`, `session` or `none`: only ever the kind of a refused credential, never
    /// any of it.
    pub credential: &'static str,
}

impl RequestFacts {
    pub fn of(req: &Request) -> RequestFacts {
        Self::from_parts(req.extensions(), req.headers())
    }

    fn from_parts(ext: &axum::http::Extensions, headers: &HeaderMap) -> RequestFacts {
        RequestFacts {
            source: ext.get::<crate::net::ClientAddr>().map(|c| c.0),
            user_agent: headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(|v| truncate(v, 256)),
            credential: credential_kind(headers),
        }
    }
}

/// A handler's way to write its change and that change's audit row in one transaction (ARCHITECTURE.md
/// invariant 1): it builds the row it would get for its success answer, [`Audited::apply`]s the change with it,
/// and answers with [`Audited::done`] in its response so the audit point does not write a second row. If the
/// change is refused (a conflict, a missing row, the audit insert failing), nothing was written and the audit
/// point records the failure as for any other error.
pub struct Audited {
    auth: Auth,
    context: RequestContext,
    actor: AuditActor,
}

/// What a row written with a change needs from its request (its id, source address and user agent), for the
/// sign-in routes, whose actor is the person signing in rather than an authenticated principal.
pub struct RequestContext {
    state: crate::state::AppState,
    facts: RequestFacts,
    request_id: String,
}

/// In a response: its audit row was committed with its change.
#[derive(Debug, Clone, Copy)]
pub struct RecordedWithChange;

impl axum::extract::FromRequestParts<crate::state::AppState> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, Self::Rejection> {
        let request_id =
            parts.extensions.get::<crate::middleware::RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        Ok(RequestContext {
            state: state.clone(),
            facts: RequestFacts::from_parts(&parts.extensions, &parts.headers),
            request_id,
        })
    }
}

impl axum::extract::FromRequestParts<crate::state::AppState> for Audited {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, Self::Rejection> {
        let auth = Auth::from_request_parts(parts, state).await?;
        let Ok(context) = RequestContext::from_request_parts(parts, state).await;
        Ok(Audited { actor: AuditActor::of(&auth.0), auth, context })
    }
}

impl RequestContext {
    /// Applies `change` with the row of `action` by `actor` on `target` answered `status`, in one transaction
    /// ([`kubehero_identity::Identity::apply`]).
    pub async fn apply(
        &self,
        actor: &AuditActor,
        change: kubehero_store::Change<'_>,
        action: &str,
        target: &AuditTarget,
        status: axum::http::StatusCode,
    ) -> Result<kubehero_store::Changed, kubehero_store::StoreError> {
        let event = self.event(actor, action, target, AuditResult::ok(status.as_u16()));
        self.state.identity.apply(change, event).await
    }

    /// Writes the row of `action` by `actor` on `target` with `result`, durably, for an answer that changes
    /// nothing but must be on record before it is sent (a refused share link or break-glass code). The caller
    /// marks its response [`RecordedWithChange`].
    pub async fn record(
        &self,
        actor: &AuditActor,
        action: &str,
        target: &AuditTarget,
        result: AuditResult,
    ) -> Result<(), ApiError> {
        let event = self.event(actor, action, target, result);
        self.state.identity.record(event, Durability::Durable).await.map_err(ApiError::from)
    }

    /// The row of `action` by `actor` on `target` with `result`, for this request.
    fn event(&self, actor: &AuditActor, action: &str, target: &AuditTarget, result: AuditResult) -> AuditEvent {
        AuditEvent {
            event_id: self.state.identity.ids.next_id(),
            time_ms: self.state.clock.now_ms(),
            actor: actor.clone(),
            action: action.to_string(),
            target: target.clone(),
            result,
            request_id: self.request_id.clone(),
            source: self.facts.source.map(|a| a.to_string()),
            user_agent: self.facts.user_agent.clone(),
        }
    }

    /// The request's id (what its rows carry).
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The client's address, when known.
    pub fn source(&self) -> Option<std::net::IpAddr> {
        self.facts.source
    }
}

impl Audited {
    /// Who is asking (the same principal as the `Auth` extractor's).
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Applies `change` with the row of `action` on `target` answered `status`, in one transaction.
    pub async fn apply(
        &self,
        change: kubehero_store::Change<'_>,
        action: Action,
        target: &AuditTarget,
        status: axum::http::StatusCode,
    ) -> Result<kubehero_store::Changed, kubehero_store::StoreError> {
        self.context.apply(&self.actor, change, action.as_str(), target, status).await
    }

    /// [`Audited::apply`] with a row named more precisely than the permission that allowed it (a join token
    /// is issued under `cluster.register` and recorded as `cluster.join_token`).
    pub async fn apply_named(
        &self,
        change: kubehero_store::Change<'_>,
        action: &str,
        target: &AuditTarget,
        status: axum::http::StatusCode,
    ) -> Result<kubehero_store::Changed, kubehero_store::StoreError> {
        self.context.apply(&self.actor, change, action, target, status).await
    }

    /// The response extensions of an answer whose row [`Audited::apply`] wrote: the target (for metrics and
    /// logs) and the mark that keeps the audit point from writing another row.
    pub fn done(target: AuditTarget) -> (axum::Extension<AuditTarget>, axum::Extension<RecordedWithChange>) {
        (axum::Extension(target), axum::Extension(RecordedWithChange))
    }

    /// [`Audited::done`] for a response built by hand.
    pub fn mark_done(res: &mut Response, target: AuditTarget) {
        res.extensions_mut().insert(target);
        res.extensions_mut().insert(RecordedWithChange);
    }
}

/// The audit event for a finished request, or `None` when the request is not audited (health, metrics,
/// unknown routes).
pub fn event_for(
    res: &Response,
    facts: RequestFacts,
    request_id: &str,
    event_id: String,
    now_ms: i64,
) -> Option<AuditEvent> {
    let status = res.status();
    let error = res.extensions().get::<ApiError>();
    let ext = res.extensions();
    if ext.get::<RecordedWithChange>().is_some() {
        return None;
    }
    let (action, actor) = match (ext.get::<Recorded>(), ext.get::<AuditAction>(), ext.get::<Auth>()) {
        (Some(r), _, _) => (r.action.to_string(), r.actor.clone()),
        (None, Some(a), Some(auth)) => (a.0.as_str().to_string(), AuditActor::of(&auth.0)),
        // Refused by the authentication middleware: the handler never ran and nobody is trusted.
        _ if error.is_some_and(|e| e.code == Code::Unauthenticated) => {
            ("auth.failed".to_string(), AuditActor::unauthenticated(facts.credential))
        }
        _ => return None,
    };
    let outcome = match error.map(|e| e.code) {
        None if status.is_success() || status.is_redirection() => AuditOutcome::Ok,
        Some(Code::PermissionDenied | Code::Unauthenticated) => AuditOutcome::Denied,
        _ => AuditOutcome::Error,
    };
    let code = match outcome {
        AuditOutcome::Ok => None,
        _ => {
            Some(error.map_or_else(|| Code::from_status(status).as_str().to_string(), |e| e.code.as_str().to_string()))
        }
    };
    Some(AuditEvent {
        event_id,
        time_ms: now_ms,
        actor,
        action,
        target: res.extensions().get::<AuditTarget>().cloned().unwrap_or_default(),
        result: AuditResult { outcome, code, status: status.as_u16(), repeated: None, duration_ms: None },
        request_id: request_id.to_string(),
        source: facts.source.map(|a| a.to_string()),
        user_agent: facts.user_agent,
    })
}

/// How long a finished request's answer waits for its row; `None`: not recorded (a plain read under
/// `KUBEHERO_AUDIT_READS=off`). Only a *plain read* may skip the wait: a `GET`/`HEAD` that succeeded, is no
/// sign-in event, and did not read the audit log itself. Mutations, denials, refused credentials, errors,
/// sign-in and sign-out, and audit-log reads are always durable.
pub fn durability(
    res: &Response,
    event: &AuditEvent,
    read: bool,
    reads: crate::config::AuditReads,
) -> Option<Durability> {
    let api_read = res.extensions().get::<Recorded>().is_none()
        && res.extensions().get::<AuditAction>().is_some_and(|a| a.0 != Action::AuditRead);
    let kube_read = res.extensions().get::<Recorded>().is_some_and(|r| r.plain_read);
    let plain_read = read && event.result.outcome == AuditOutcome::Ok && (api_read || kube_read);
    match (plain_read, reads) {
        (false, _) | (true, crate::config::AuditReads::Durable) => Some(Durability::Durable),
        (true, crate::config::AuditReads::Async) => Some(Durability::Queued),
        (true, crate::config::AuditReads::Off) => None,
    }
}

/// What kind of credential a refused request carried, without keeping any of it: the bearer token's kind by
/// its prefix or shape (`cli_token`, `api_key`, `jwt`), else `session` for a session cookie, else `none`.
fn credential_kind(headers: &HeaderMap) -> &'static str {
    use kubehero_identity::CredentialKind;
    let kind = match headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(v) => CredentialKind::of_bearer(v.split_once(' ').map_or("", |(_, t)| t.trim())),
        None if crate::login::read_cookie(headers, crate::login::SESSION_COOKIE).is_some() => CredentialKind::Session,
        None => CredentialKind::None,
    };
    kind.as_str()
}

/// The HMAC keys: `AUDIT_HMAC_KEY` (+ previous keys), or in open mode a key generated once into the data
/// directory (only when `create`; readers such as `audit verify` never create one). Returns the keys and
/// whether the generated key is in use.
pub fn load_hmac_keys(config: &ServerConfig, create: bool) -> Result<(HmacKeys, bool), StartError> {
    let previous: Vec<&[u8]> = config.audit_previous_keys.iter().map(|k| k.expose().as_bytes()).collect();
    let generated_path = config.data_dir.join("audit-hmac.key");
    let (current, generated) = match &config.audit_hmac_key {
        Some(k) => (k.expose().as_bytes().to_vec(), false),
        None if create => (generated_key(&generated_path)?, true),
        None => (
            std::fs::read(&generated_path).map_err(|e| {
                StartError::Audit(format!(
                    "AUDIT_HMAC_KEY is unset and {} cannot be read ({e}); set AUDIT_HMAC_KEY to the key the \
                     server uses",
                    generated_path.display()
                ))
            })?,
            true,
        ),
    };
    let keys = HmacKeys::new(&current, &previous).map_err(StartError::Audit)?;
    Ok((keys, generated))
}

fn generated_key(path: &Path) -> Result<Vec<u8>, StartError> {
    if let Ok(k) = std::fs::read(path) {
        return Ok(k);
    }
    let mut raw = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| StartError::Audit("no randomness for the audit key".into()))?;
    create_private(path, kubehero_audit::hex::encode(&raw).as_bytes())?;
    std::fs::read(path).map_err(|e| StartError::Audit(format!("cannot read {}: {e}", path.display())))
}

/// The checkpoint signing key from its file, created on first start.
/// The chain's newest row must be sealed with a key this process knows (its `AUDIT_HMAC_KEY` or one of
/// `KUBEHERO_AUDIT_PREVIOUS_KEYS`): otherwise it holds a different key from the server's, and every row it
/// wrote would later fail `audit verify` as `unknown_key`. Refuses with the fix.
pub async fn check_hmac_key_matches_chain(
    store: &dyn kubehero_store::Store,
    keys: &HmacKeys,
) -> Result<(), StartError> {
    let unavailable = |e: kubehero_store::StoreError| StartError::Audit(e.to_string());
    let (seq, _) = store.audit_head().await.map_err(unavailable)?;
    if seq == 0 {
        return Ok(());
    }
    let last = store.audit_rows(seq - 1, 1).await.map_err(unavailable)?;
    match last.first() {
        Some(row) if keys.get(&row.key_id).is_none() => Err(StartError::Audit(format!(
            "AUDIT_HMAC_KEY: the audit chain's newest row (seq {seq}) is sealed with key id {}, which is neither this \
             AUDIT_HMAC_KEY (key id {}) nor in KUBEHERO_AUDIT_PREVIOUS_KEYS; rows written with it would not verify. \
             Fix: use the server's AUDIT_HMAC_KEY (after a rotation, list the old key in \
             KUBEHERO_AUDIT_PREVIOUS_KEYS)",
            row.key_id,
            keys.current_id()
        ))),
        _ => Ok(()),
    }
}

/// How recent a checkpoint signed with another key must be to mean that another replica is running with it.
const OTHER_SIGNER_WINDOW_MS: i64 = 10 * 60 * 1000;

/// Replicas on one database must sign checkpoints with one key, or `audit verify` later reports the other's
/// checkpoints as `bad_checkpoint`. A checkpoint signed with another key in the last ten minutes means a
/// replica runs with it: refuse to start, naming the fix. An older one is a rotated key: a warning.
pub async fn check_signing_key_shared(
    store: &dyn kubehero_store::Store,
    key: &SigningKey,
    path: &Path,
    now_ms: i64,
) -> Result<(), StartError> {
    let Some((public, at)) = store.last_checkpoint_key().await.map_err(|e| StartError::Audit(e.to_string()))? else {
        return Ok(());
    };
    if public.eq_ignore_ascii_case(key.public_hex()) {
        return Ok(());
    }
    let ago_s = (now_ms - at).max(0) / 1000;
    if now_ms - at < OTHER_SIGNER_WINDOW_MS {
        return Err(StartError::Audit(format!(
            "KUBEHERO_AUDIT_SIGNING_KEY {}: another replica signed an audit checkpoint {ago_s} s ago with a different \
             key (public key {}…); replicas on one database must share one signing key. Fix: give this replica the \
             same key file as the others",
            path.display(),
            &public[..public.len().min(16)]
        )));
    }
    tracing::warn!(
        previous = %&public[..public.len().min(16)],
        current = %&key.public_hex()[..16.min(key.public_hex().len())],
        "the newest audit checkpoint was signed with another key ({ago_s} s ago): a rotated key; verify with \
         `kubehero audit verify --public-key <old> --public-key <new>`"
    );
    Ok(())
}

pub fn load_signing_key(path: &Path) -> Result<SigningKey, StartError> {
    match std::fs::read(path) {
        Ok(der) => SigningKey::from_pkcs8(&der)
            .map_err(|e| StartError::Audit(format!("KUBEHERO_AUDIT_SIGNING_KEY {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (_, der) = SigningKey::generate().map_err(StartError::Audit)?;
            if create_private(path, &der)? {
                tracing::info!(path = %path.display(), "created the audit checkpoint signing key");
            }
            // Whoever created it first (another replica sharing the file, say), this is the key.
            let der = std::fs::read(path).map_err(|e| {
                StartError::Audit(format!("cannot read KUBEHERO_AUDIT_SIGNING_KEY {}: {e}", path.display()))
            })?;
            SigningKey::from_pkcs8(&der)
                .map_err(|e| StartError::Audit(format!("KUBEHERO_AUDIT_SIGNING_KEY {}: {e}", path.display())))
        }
        Err(e) => Err(StartError::Audit(format!("cannot read KUBEHERO_AUDIT_SIGNING_KEY {}: {e}", path.display()))),
    }
}

/// Creates a file readable by its owner only, atomically: it appears whole or not at all, and when another
/// process created it first that one is kept. Returns whether this call created it.
fn create_private(path: &Path, bytes: &[u8]) -> Result<bool, StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|source| StartError::DataDir { path: dir.display().to_string(), source })?;
    }
    let err = |e: std::io::Error| StartError::Audit(format!("cannot write {}: {e}", path.display()));
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(err(e)),
    }
}

/// Rows of requests without a credential that one source may have written one by one per window; more are
/// counted into one row (see [`Sampler`]).
const SAMPLED_PER_WINDOW: u32 = 5;
/// Sources tracked at once; past it, new sources share one count (source left empty).
const SAMPLED_SOURCES: usize = 10_000;

/// Keeps refused or anonymous requests (the actor has no credential) from turning a flood into as many audit
/// rows. Per (action, outcome, code, source) and window (one minute, ended by [`Sampler::drain`]): the first
/// five are written as usual; the rest are counted, and at the end of the window the last of them is written
/// once with `result.repeated` = how many it stands for. Requests with a credential are never sampled.
#[derive(Default)]
pub struct Sampler {
    slots: parking_lot::Mutex<std::collections::HashMap<SampleKey, Slot>>,
}

#[derive(Hash, PartialEq, Eq)]
struct SampleKey {
    action: String,
    outcome: kubehero_core::AuditOutcome,
    code: Option<String>,
    source: Option<String>,
}

#[derive(Default)]
struct Slot {
    written: u32,
    counted: u64,
    last: Option<AuditEvent>,
}

impl Sampler {
    /// Whether `event` is written now (`false`: it was counted into its window's row).
    pub fn admit(&self, event: &AuditEvent) -> bool {
        if !event.actor.sub.is_empty() {
            return true;
        }
        let mut key = SampleKey {
            action: event.action.clone(),
            outcome: event.result.outcome,
            code: event.result.code.clone(),
            source: event.source.clone(),
        };
        let mut slots = self.slots.lock();
        if slots.len() >= SAMPLED_SOURCES && !slots.contains_key(&key) {
            key.source = None;
        }
        let slot = slots.entry(key).or_default();
        if slot.written < SAMPLED_PER_WINDOW {
            slot.written += 1;
            return true;
        }
        slot.counted += 1;
        slot.last = Some(event.clone());
        false
    }

    /// Ends the window: one row for each request kind that was counted, standing for all of them.
    pub fn drain(&self) -> Vec<AuditEvent> {
        let slots = std::mem::take(&mut *self.slots.lock());
        slots
            .into_iter()
            .filter_map(|(key, slot)| {
                let mut event = slot.last?;
                event.result.repeated = Some(slot.counted);
                event.source = key.source;
                Some(event)
            })
            .collect()
    }
}
