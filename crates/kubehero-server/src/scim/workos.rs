//! WorkOS Directory Sync, the hosted edition's directory broker: `POST /webhooks/workos` receives WorkOS's
//! events and applies each one exactly like the SCIM operation it matches, with that operation's audit row and
//! effects (deactivation and deletion deprovision; leaving a group ends what the group gave).
//!
//! | event                      | applied as                                                            |
//! |----------------------------|-----------------------------------------------------------------------|
//! | `dsync.user.created`       | `POST /Users` (or `PUT` when the user exists; adopts a sign-in user)   |
//! | `dsync.user.updated`       | `PUT /Users/{id}` (`state: inactive` deactivates, as `active: false`)  |
//! | `dsync.user.deleted`       | `DELETE /Users/{id}`                                                   |
//! | `dsync.group.created`      | `POST /Groups` (or `PUT` when the group exists)                       |
//! | `dsync.group.updated`      | `PUT /Groups/{id}` (its name; members unchanged)                      |
//! | `dsync.group.deleted`      | `DELETE /Groups/{id}`                                                  |
//! | `dsync.group.user_added`   | `PATCH /Groups/{id}` add member (user and group made when missing)    |
//! | `dsync.group.user_removed` | `PATCH /Groups/{id}` remove member                                    |
//!
//! Users and groups are matched by `externalId` = WorkOS's directory user or group id. Other events are
//! acknowledged and recorded, and change nothing.
//!
//! The request is authenticated by its `WorkOS-Signature` header (`t=<unix ms>, v1=<hex>`): HMAC-SHA256 with
//! the webhook's secret (`KUBEHERO_WORKOS_WEBHOOK_SECRET`) over `<t>.<raw body>`, at most 180 s old (WorkOS's
//! own SDKs' tolerance), compared in constant time. A missing or wrong signature is a durable `workos.refused`
//! row and 401, and nothing is applied.

use crate::audit::{Recorded, RecordedWithChange, RequestContext};
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kubehero_core::{Action, AuditActor, AuditResult, AuditTarget, Secret};
use kubehero_store::{Change, DirectoryGroup, DirectoryUser, GroupSelect, MemberChange, UserOrigin, UserSelect};
use serde::Deserialize;
use serde_json::{json, Value};

/// The webhook's path.
pub const PATH: &str = "/webhooks/workos";
/// The signature header WorkOS sends.
pub const SIGNATURE_HEADER: &str = "workos-signature";
/// How old (or how far ahead) a signed request may be.
const TOLERANCE_MS: i64 = 180_000;
/// The largest event body accepted (a user with many raw attributes stays far below).
pub const MAX_BODY: usize = 256 * 1024;

/// The webhook's secret.
pub struct Webhook {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Webhook(..)")
    }
}

/// Why a signature is refused (the row's code; the message never echoes what was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Malformed,
    Stale,
    Mismatch,
}

impl SignatureError {
    fn message(self) -> &'static str {
        match self {
            SignatureError::Missing => "the WorkOS-Signature header is missing",
            SignatureError::Malformed => "the WorkOS-Signature header is not t=<ms>, v1=<hex>",
            SignatureError::Stale => "the signature's timestamp is more than 180 s from now (a replay, or a clock off)",
            SignatureError::Mismatch => "the signature does not match the body (check KUBEHERO_WORKOS_WEBHOOK_SECRET)",
        }
    }
}

impl Webhook {
    pub fn new(secret: &Secret) -> Webhook {
        Webhook { key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose().as_bytes()) }
    }

    /// Checks `header` (the `WorkOS-Signature` value) for `body` at `now_ms`.
    pub fn verify(&self, header: Option<&str>, body: &[u8], now_ms: i64) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let (mut t, mut v1) = (None, None);
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => t = Some(v.trim()),
                Some(("v1", v)) => v1 = Some(v.trim()),
                _ => {}
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else { return Err(SignatureError::Malformed) };
        let ts: i64 = t.parse().map_err(|_| SignatureError::Malformed)?;
        let tag = kubehero_core::hex::decode(v1).filter(|t| t.len() == 32).ok_or(SignatureError::Malformed)?;
        if (now_ms - ts).abs() > TOLERANCE_MS {
            return Err(SignatureError::Stale);
        }
        let mut signed = Vec::with_capacity(t.len() + 1 + body.len());
        signed.extend_from_slice(t.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        ring::hmac::verify(&self.key, &signed, &tag).map_err(|_| SignatureError::Mismatch)
    }

    /// The `WorkOS-Signature` value for `body` at `ts_ms` (what WorkOS sends; for tests and tools).
    pub fn sign(&self, body: &[u8], ts_ms: i64) -> String {
        let mut signed = ts_ms.to_string().into_bytes();
        signed.push(b'.');
        signed.extend_from_slice(body);
        let tag = ring::hmac::sign(&self.key, &signed);
        format!("t={ts_ms}, v1={}", kubehero_core::hex::encode(tag.as_ref()))
    }
}

/// One delivered event.
#[derive(Debug, Deserialize)]
struct Event {
    event: String,
    #[serde(default)]
    id: String,
    data: Value,
}

/// A WorkOS directory user (`object: directory_user`).
#[derive(Debug, Deserialize)]
struct WorkosUser {
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    emails: Vec<WorkosEmail>,
    #[serde(default)]
    email: Option<String>,
    /// `active`, `inactive` (suspended or unassigned in the IdP).
    #[serde(default)]
    state: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WorkosEmail {
    value: String,
    #[serde(default)]
    primary: Option<bool>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// A WorkOS directory group (`object: directory_group`).
#[derive(Debug, Deserialize)]
struct WorkosGroup {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct Membership {
    user: WorkosUser,
    group: WorkosGroup,
}

impl WorkosUser {
    /// The SCIM User resource this directory user is stored as.
    fn resource(&self) -> Result<Value, ApiError> {
        let primary = self.emails.iter().find(|e| e.primary == Some(true)).or(self.emails.first());
        let user_name = self
            .username
            .clone()
            .filter(|u| !u.trim().is_empty())
            .or_else(|| primary.map(|e| e.value.clone()))
            .or_else(|| self.email.clone())
            .ok_or_else(|| ApiError::invalid("the directory user has neither a username nor an email"))?;
        let mut emails: Vec<Value> = self
            .emails
            .iter()
            .map(|e| json!({"value": e.value, "primary": e.primary.unwrap_or(false), "type": e.kind.as_deref().unwrap_or("work")}))
            .collect();
        if emails.is_empty() {
            if let Some(e) = &self.email {
                emails.push(json!({"value": e, "primary": true, "type": "work"}));
            }
        }
        let resource = json!({
            "schemas": [kubehero_scim::schema::USER_SCHEMA],
            "userName": user_name,
            "externalId": self.id,
            "name": {"givenName": self.first_name, "familyName": self.last_name},
            "emails": emails,
            "active": self.state.as_deref().is_none_or(|s| s == "active"),
        });
        kubehero_scim::validate(kubehero_scim::ResourceKind::User, strip_nulls(resource))
            .map_err(|e| ApiError::invalid(format!("the directory user is not a valid user: {}", e.detail)))
    }
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect())
        }
        other => other,
    }
}

/// Applies events for one request: its context, and the directory as the actor of every row.
struct Apply<'a> {
    state: &'a AppState,
    ctx: &'a RequestContext,
    request_id: String,
    actor: AuditActor,
    /// Whether a change (with its row) was written.
    wrote: std::sync::atomic::AtomicBool,
}

fn user_target(id: &str) -> AuditTarget {
    crate::audit::target_of("scim_user", id, None, None)
}

fn group_target(id: &str) -> AuditTarget {
    crate::audit::target_of("scim_group", id, None, None)
}

impl Apply<'_> {
    async fn find_user(&self, external_id: &str) -> Result<Option<DirectoryUser>, ApiError> {
        let (_, found) = self.state.store.select_users(UserSelect::ExternalId(external_id), 0, 1).await?;
        Ok(found.into_iter().next())
    }

    async fn find_group(&self, external_id: &str) -> Result<Option<DirectoryGroup>, ApiError> {
        let (_, found) = self.state.store.select_groups(GroupSelect::ExternalId(external_id), 0, 1).await?;
        Ok(found.into_iter().next())
    }

    /// A sign-in (just-in-time) user the directory now describes, found by username or email.
    async fn jit_user(&self, resource: &Value) -> Result<Option<DirectoryUser>, ApiError> {
        let mut names: Vec<&str> = resource["userName"].as_str().into_iter().collect();
        if let Some(emails) = resource["emails"].as_array() {
            names.extend(emails.iter().filter_map(|e| e["value"].as_str()));
        }
        for name in names {
            for select in [UserSelect::UserName(name), UserSelect::Email(name)] {
                let (_, found) = self.state.store.select_users(select, 0, 2).await?;
                if let Some(u) = found.into_iter().find(|u| u.origin == UserOrigin::Jit) {
                    return Ok(Some(u));
                }
            }
        }
        Ok(None)
    }

    async fn apply(
        &self,
        change: Change<'_>,
        action: Action,
        target: &AuditTarget,
    ) -> Result<kubehero_store::Changed, ApiError> {
        let status = match action {
            Action::ScimUserCreate | Action::ScimGroupCreate => StatusCode::CREATED,
            Action::ScimUserDelete | Action::ScimGroupDelete => StatusCode::NO_CONTENT,
            _ => StatusCode::OK,
        };
        let changed = self.ctx.apply(&self.actor, change, action.as_str(), target, status).await?;
        self.wrote.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(changed)
    }

    /// Applies one event; `false` for a kind of event this webhook does not handle.
    async fn event(&self, name: &str, data: Value) -> Result<bool, ApiError> {
        match name {
            "dsync.user.created" | "dsync.user.updated" => {
                self.upsert_user(&parse(name, data)?).await?;
            }
            "dsync.user.deleted" => self.delete_user(&parse(name, data)?).await?,
            "dsync.group.created" | "dsync.group.updated" => {
                self.upsert_group(&parse(name, data)?).await?;
            }
            "dsync.group.deleted" => self.delete_group(&parse(name, data)?).await?,
            "dsync.group.user_added" => self.membership(&parse(name, data)?, true).await?,
            "dsync.group.user_removed" => self.membership(&parse(name, data)?, false).await?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Creates or updates the user (`dsync.user.created`/`updated`, and before a membership change).
    async fn upsert_user(&self, u: &WorkosUser) -> Result<DirectoryUser, ApiError> {
        let resource = u.resource()?;
        let now = self.state.clock.now();
        let facts = |base: &DirectoryUser, resource: Value| DirectoryUser {
            user_name: resource["userName"].as_str().unwrap_or_default().to_string(),
            external_id: Some(u.id.clone()),
            active: resource["active"].as_bool().unwrap_or(true),
            emails: resource["emails"]
                .as_array()
                .map(|a| a.iter().filter_map(|e| e["value"].as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            resource,
            origin: UserOrigin::Scim,
            updated_at: now,
            ..base.clone()
        };
        let existing = match self.find_user(&u.id).await? {
            Some(x) => Some((x, Action::ScimUserReplace)),
            None => self.jit_user(&resource).await?.map(|x| (x, Action::ScimUserCreate)),
        };
        let user = match existing {
            Some((current, action)) => {
                let next = facts(&current, resource);
                if same_user(&current, &next) {
                    return Ok(current);
                }
                let change = Change::UpdateUser { user: &next, expected_version: Some(current.version) };
                let changed = self.apply(change, action, &user_target(&current.id)).await?;
                let stored = kubehero_store::changed_user(changed)?;
                self.state.identity.directory.changed();
                self.state.identity.user_changed(&self.request_id, &current, &stored).await?;
                stored
            }
            None => {
                let blank = DirectoryUser {
                    id: kubehero_identity::credential::random_uuid()?,
                    user_name: String::new(),
                    external_id: None,
                    active: true,
                    subject: None,
                    emails: Vec::new(),
                    resource: Value::Null,
                    origin: UserOrigin::Scim,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                    deleted_at: None,
                };
                let user = facts(&blank, resource);
                let change = Change::CreateUsers(std::slice::from_ref(&user));
                self.apply(change, Action::ScimUserCreate, &user_target(&user.id)).await?;
                self.state.identity.directory.changed();
                user
            }
        };
        Ok(user)
    }

    async fn delete_user(&self, u: &WorkosUser) -> Result<(), ApiError> {
        let Some(current) = self.find_user(&u.id).await? else { return Ok(()) };
        let change = Change::DeleteUser { id: &current.id, expected_version: None, at: self.state.clock.now() };
        let changed = self.apply(change, Action::ScimUserDelete, &user_target(&current.id)).await?;
        let user = kubehero_store::changed_user(changed)?;
        self.state.identity.directory.changed();
        self.state.identity.user_deleted(&self.request_id, &user).await?;
        Ok(())
    }

    /// Creates or renames the group.
    async fn upsert_group(&self, g: &WorkosGroup) -> Result<DirectoryGroup, ApiError> {
        let now = self.state.clock.now();
        let resource = json!({
            "schemas": [kubehero_scim::schema::GROUP_SCHEMA],
            "displayName": g.name,
            "externalId": g.id,
        });
        match self.find_group(&g.id).await? {
            Some(current) if current.display_name == g.name => Ok(current),
            Some(current) => {
                let next =
                    DirectoryGroup { display_name: g.name.clone(), resource, updated_at: now, ..current.clone() };
                let change = Change::UpdateGroup { group: &next, members: MemberChange::Keep, expected_version: None };
                let changed = self.apply(change, Action::ScimGroupReplace, &group_target(&current.id)).await?;
                self.state.identity.directory.changed();
                Ok(kubehero_store::changed_group(changed)?)
            }
            None => {
                let group = DirectoryGroup {
                    id: kubehero_identity::credential::random_uuid()?,
                    display_name: g.name.clone(),
                    external_id: Some(g.id.clone()),
                    resource,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                };
                let change = Change::CreateGroup { group: &group, members: &[] };
                self.apply(change, Action::ScimGroupCreate, &group_target(&group.id)).await?;
                self.state.identity.directory.changed();
                Ok(group)
            }
        }
    }

    async fn delete_group(&self, g: &WorkosGroup) -> Result<(), ApiError> {
        let Some(current) = self.find_group(&g.id).await? else { return Ok(()) };
        let change = Change::DeleteGroup { id: &current.id, expected_version: None };
        let changed = self.apply(change, Action::ScimGroupDelete, &group_target(&current.id)).await?;
        let (group, members) = kubehero_store::changed_deleted_group(changed)?;
        self.state.identity.directory.changed();
        self.state.identity.members_removed(&self.request_id, &group, &members).await?;
        Ok(())
    }

    async fn membership(&self, m: &Membership, add: bool) -> Result<(), ApiError> {
        let user = match (add, self.find_user(&m.user.id).await?) {
            (_, Some(u)) if !add => u,
            (true, _) => self.upsert_user(&m.user).await?,
            // Removing someone KubeHero never heard of changes nothing.
            (false, _) => return Ok(()),
        };
        let group = match (add, self.find_group(&m.group.id).await?) {
            (false, Some(g)) => g,
            (false, None) => return Ok(()),
            (true, _) => self.upsert_group(&m.group).await?,
        };
        let ids = [user.id.clone()];
        let was_member = self.state.store.memberships(&ids).await?.into_iter().any(|x| x.group_id == group.id);
        if was_member == add {
            return Ok(());
        }
        let members = if add {
            MemberChange::Edit { add: &ids, remove: &[] }
        } else {
            MemberChange::Edit { add: &[], remove: &ids }
        };
        let next = DirectoryGroup { updated_at: self.state.clock.now(), ..group.clone() };
        let change = Change::UpdateGroup { group: &next, members, expected_version: None };
        let changed = self.apply(change, Action::ScimGroupPatch, &group_target(&group.id)).await?;
        let stored = kubehero_store::changed_group(changed)?;
        self.state.identity.directory.changed();
        if !add {
            self.state.identity.members_removed(&self.request_id, &stored, &ids).await?;
        }
        Ok(())
    }
}

fn same_user(a: &DirectoryUser, b: &DirectoryUser) -> bool {
    (&a.user_name, &a.external_id, a.active, &a.emails, &a.resource, a.origin)
        == (&b.user_name, &b.external_id, b.active, &b.emails, &b.resource, b.origin)
}

fn parse<T: serde::de::DeserializeOwned>(event: &str, data: Value) -> Result<T, ApiError> {
    serde_json::from_value(data).map_err(|e| ApiError::invalid(format!("{event}: the event's data is not valid: {e}")))
}

/// `POST /webhooks/workos`.
pub async fn receive(State(state): State<AppState>, ctx: RequestContext, headers: HeaderMap, body: Bytes) -> Response {
    let Some(hook) = state.workos.as_ref() else {
        return ApiError::not_found("WorkOS Directory Sync is not enabled (KUBEHERO_WORKOS_WEBHOOK_SECRET)")
            .into_response();
    };
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if let Err(e) = hook.verify(signature, &body, state.clock.now_ms()) {
        state.metrics.authentication("workos", "rejected");
        let actor = AuditActor::unauthenticated("workos_signature");
        let target = AuditTarget { kind: Some("webhook".into()), id: Some("workos".into()), ..Default::default() };
        let code = match e {
            SignatureError::Stale => "signature_stale",
            _ => "unauthenticated",
        };
        if let Err(err) = ctx.record(&actor, "workos.refused", &target, AuditResult::denied(code, 401)).await {
            return err.into_response();
        }
        let mut res = ApiError::unauthenticated(e.message()).into_response();
        res.extensions_mut().insert(RecordedWithChange);
        return res;
    }
    state.metrics.authentication("workos", "ok");
    let event: Event = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return refuse_body(ApiError::invalid(format!("the body is not a WorkOS event: {e}"))),
    };
    let directory = event.data.get("directory_id").and_then(Value::as_str).unwrap_or("unknown").to_string();
    let actor = AuditActor {
        sub: format!("workos:{directory}"),
        kind: "provisioner".into(),
        auth_method: "workos_signature".into(),
        ..Default::default()
    };
    let request_id = ctx.request_id().to_string();
    let apply = Apply { state: &state, ctx: &ctx, request_id, actor: actor.clone(), wrote: Default::default() };
    let name = event.event.clone();
    let done = apply.event(&name, event.data).await;
    match done {
        Ok(applied) => {
            tracing::info!(event = %name, id = %event.id, applied, "WorkOS event received");
            let mut res = (StatusCode::OK, axum::Json(json!({"received": true, "applied": applied}))).into_response();
            // Each change wrote its row. An event that changed nothing (a redelivery, another kind of event) gets
            // one row saying so.
            let action = match (applied, apply.wrote.load(std::sync::atomic::Ordering::Relaxed)) {
                (_, true) => None,
                (true, false) => Some("workos.unchanged"),
                (false, false) => Some("workos.ignored"),
            };
            match action {
                None => drop(res.extensions_mut().insert(RecordedWithChange)),
                Some(action) => drop(res.extensions_mut().insert(Recorded { action, actor, plain_read: false })),
            }
            res
        }
        Err(e) => {
            tracing::warn!(event = %name, id = %event.id, error = %e.message, "a WorkOS event could not be applied");
            let mut res = e.into_response();
            res.extensions_mut().insert(Recorded { action: "workos.failed", actor, plain_read: false });
            res
        }
    }
}

/// A body that is not an event: recorded as a failed delivery.
fn refuse_body(e: ApiError) -> Response {
    let mut res = e.into_response();
    res.extensions_mut().insert(Recorded {
        action: "workos.failed",
        actor: AuditActor::unauthenticated("workos_signature"),
        plain_read: false,
    });
    res
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signatures_as_workos_makes_them() {
        let hook = Webhook::new(&Secret::new("whsec_test".to_string()));
        let body = br#"{"id":"event_1","event":"dsync.user.created","data":{}}"#;
        let header = hook.sign(body, 1_700_000_000_000);
        assert!(header.starts_with("t=1700000000000, v1="));
        assert_eq!(hook.verify(Some(&header), body, 1_700_000_000_000), Ok(()));
        assert_eq!(hook.verify(Some(&header), body, 1_700_000_180_000), Ok(()));
        assert_eq!(hook.verify(Some(&header), body, 1_700_000_180_001), Err(SignatureError::Stale));
        assert_eq!(hook.verify(Some(&header), b"{}", 1_700_000_000_000), Err(SignatureError::Mismatch));
        assert_eq!(hook.verify(None, body, 0), Err(SignatureError::Missing));
        for bad in ["", "t=1", "v1=00", "t=x, v1=00", "t=1700000000000, v1=zz", "t=1700000000000, v1=0"] {
            assert_eq!(hook.verify(Some(bad), body, 1_700_000_000_000), Err(SignatureError::Malformed), "{bad}");
        }
        let other = Webhook::new(&Secret::new("whsec_other".to_string()));
        assert_eq!(other.verify(Some(&header), body, 1_700_000_000_000), Err(SignatureError::Mismatch));
    }
}
