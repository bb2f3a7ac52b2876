//! `/scim/v2/Users`: people as the IdP provisions them.

use super::{
    allow, if_match, json_body, list_page, mentions, meta, not_modified, projection, resource_reply, Ctx, Failure,
    ListParams, ScimResult,
};
use crate::audit::Audited;
use crate::auth::Auth;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kubehero_core::Action;
use kubehero_scim::{CompValue, CompareOp, Filter, Projection, ResourceKind, ScimError};
use kubehero_store::{Change, DirectoryUser, Membership, UserOrigin, UserSelect};
use serde_json::Value;
use std::collections::HashMap;

const KIND: ResourceKind = ResourceKind::User;

/// The identity facts of a validated User resource.
struct Facts {
    user_name: String,
    external_id: Option<String>,
    active: bool,
    emails: Vec<String>,
}

impl Facts {
    fn of(resource: &Value) -> Result<Facts, Failure> {
        let user_name = resource
            .get("userName")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ScimError::invalid_value("userName is required"))?
            .to_string();
        let emails = resource
            .get("emails")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|e| e.get("value").and_then(Value::as_str)).map(str::to_string).collect())
            .unwrap_or_default();
        Ok(Facts {
            user_name,
            external_id: resource.get("externalId").and_then(Value::as_str).map(str::to_string),
            active: resource.get("active").and_then(Value::as_bool).unwrap_or(true),
            emails,
        })
    }

    /// `user` with these facts and this resource, adopted by SCIM.
    fn apply(self, user: &DirectoryUser, resource: Value, now: i64) -> DirectoryUser {
        DirectoryUser {
            user_name: self.user_name,
            external_id: self.external_id,
            active: self.active,
            emails: self.emails,
            resource,
            origin: UserOrigin::Scim,
            updated_at: now,
            ..user.clone()
        }
    }
}

/// The SCIM representation of a stored user.
pub(super) fn render(base: &str, u: &DirectoryUser, groups: &[Membership]) -> Value {
    let mut v = match &u.resource {
        Value::Object(m) => Value::Object(m.clone()),
        _ => serde_json::json!({}),
    };
    v["id"] = Value::String(u.id.clone());
    v["meta"] = meta(KIND, base, &u.id, u.created_at, u.updated_at, u.version);
    if !groups.is_empty() {
        v["groups"] = groups
            .iter()
            .map(|m| {
                serde_json::json!({
                    "value": m.group_id,
                    "display": m.display_name,
                    "$ref": format!("{base}/Groups/{}", m.group_id),
                    "type": "direct",
                })
            })
            .collect();
    }
    v
}

async fn groups_of(state: &AppState, users: &[DirectoryUser]) -> Result<HashMap<String, Vec<Membership>>, Failure> {
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    let mut by_user: HashMap<String, Vec<Membership>> = HashMap::new();
    if ids.is_empty() {
        return Ok(by_user);
    }
    for m in state.store.memberships(&ids).await? {
        by_user.entry(m.user_id.clone()).or_default().push(m);
    }
    for v in by_user.values_mut() {
        v.sort_by(|a, b| a.display_name.cmp(&b.display_name));
    }
    Ok(by_user)
}

async fn render_one(state: &AppState, ctx: &Ctx, u: &DirectoryUser) -> Result<Value, Failure> {
    let groups = groups_of(state, std::slice::from_ref(u)).await?;
    Ok(render(&ctx.base, u, groups.get(&u.id).map_or(&[], Vec::as_slice)))
}

/// An index the store can answer a filter's candidates from: an `eq` on `id`, `userName`, `externalId` or an
/// email, alone or in an `and`. The whole filter is still evaluated on the candidates.
fn pushdown(f: &Filter) -> Option<UserSelect<'_>> {
    match f {
        Filter::Compare { path, op: CompareOp::Eq, value: CompValue::String(s) }
            if path.uri.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(kubehero_scim::schema::USER_SCHEMA)) =>
        {
            match (path.name.to_ascii_lowercase().as_str(), path.sub_attr.as_deref()) {
                ("id", None) => Some(UserSelect::Id(s)),
                ("username", None) => Some(UserSelect::UserName(s)),
                ("externalid", None) => Some(UserSelect::ExternalId(s)),
                ("emails", None) => Some(UserSelect::Email(s)),
                ("emails", Some(sub)) if sub.eq_ignore_ascii_case("value") => Some(UserSelect::Email(s)),
                _ => None,
            }
        }
        Filter::ValuePath { path, filter } if path.name.eq_ignore_ascii_case("emails") && path.uri.is_none() => {
            email_value_eq(filter).map(UserSelect::Email)
        }
        Filter::And(l, r) => pushdown(l).or_else(|| pushdown(r)),
        _ => None,
    }
}

/// `value eq "…"` inside `emails[…]`, alone or in an `and`.
fn email_value_eq(f: &Filter) -> Option<&str> {
    match f {
        Filter::Compare { path, op: CompareOp::Eq, value: CompValue::String(s) }
            if path.name.eq_ignore_ascii_case("value") && path.sub_attr.is_none() =>
        {
            Some(s)
        }
        Filter::And(l, r) => email_value_eq(l).or_else(|| email_value_eq(r)),
        _ => None,
    }
}

/// The number of users matching the parameters, and the page they ask for.
pub(super) async fn query(state: &AppState, ctx: &Ctx, params: &ListParams) -> Result<(i64, Vec<Value>), Failure> {
    let projection = params.projection()?;
    let (total, page) = match params.parsed_filter()? {
        None => state.store.select_users(UserSelect::All, params.offset(), params.count).await?,
        Some(f) => {
            let select = pushdown(&f).unwrap_or(UserSelect::All);
            let (_, candidates) = state.store.select_users(select, 0, i64::MAX).await?;
            // The read-only `groups` are rendered only when the filter looks at them.
            let groups = if mentions(&f, "groups") { groups_of(state, &candidates).await? } else { HashMap::new() };
            let case = kubehero_scim::case_exact(KIND);
            params.page(
                candidates
                    .into_iter()
                    .filter(|u| {
                        let v = render(&ctx.base, u, groups.get(&u.id).map_or(&[], Vec::as_slice));
                        kubehero_scim::matches_with(&f, &v, &case)
                    })
                    .collect(),
            )
        }
    };
    let groups = groups_of(state, &page).await?;
    let items = page
        .iter()
        .map(|u| projection.apply(KIND, &render(&ctx.base, u, groups.get(&u.id).map_or(&[], Vec::as_slice))))
        .collect();
    Ok((total, items))
}

pub async fn list(State(state): State<AppState>, auth: Auth, ctx: Ctx, RawQuery(q): RawQuery) -> ScimResult {
    allow(&auth, Action::ScimUserRead)?;
    let params = ListParams::from_query(q.as_deref())?;
    let (total, items) = query(&state, &ctx, &params).await?;
    Ok(super::reply(StatusCode::OK, &list_page(total, params.start_index, items)))
}

pub async fn search(
    State(state): State<AppState>,
    auth: Auth,
    ctx: Ctx,
    body: Result<Bytes, BytesRejection>,
) -> ScimResult {
    allow(&auth, Action::ScimUserRead)?;
    let params = ListParams::from_search(&json_body(body)?)?;
    let (total, items) = query(&state, &ctx, &params).await?;
    Ok(super::reply(StatusCode::OK, &list_page(total, params.start_index, items)))
}

/// A single user answer, shaped by `attributes`/`excludedAttributes`.
fn single(status: StatusCode, v: &Value, projection: &Projection) -> Response {
    resource_reply(status, &projection.apply(KIND, v))
}

pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ScimResult {
    allow(&auth, Action::ScimUserRead)?;
    let projection = projection(q.as_deref())?;
    let user = state.store.get_user(&id).await?;
    if not_modified(&headers, &super::etag(user.version)) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    Ok(single(StatusCode::OK, &render_one(&state, &ctx, &user).await?, &projection))
}

/// A person who signed in before the IdP provisioned them, whom this SCIM resource describes: same
/// `userName`, or one of its emails, case-insensitively.
async fn just_in_time_match(state: &AppState, facts: &Facts) -> Result<Option<DirectoryUser>, Failure> {
    let mut names: Vec<&str> = vec![&facts.user_name];
    names.extend(facts.emails.iter().map(String::as_str));
    for name in names {
        for select in [UserSelect::UserName(name), UserSelect::Email(name)] {
            let (_, found) = state.store.select_users(select, 0, 2).await?;
            if let Some(u) = found.into_iter().find(|u| u.origin == UserOrigin::Jit) {
                return Ok(Some(u));
            }
        }
    }
    Ok(None)
}

pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    audited: Audited,
    ctx: Ctx,
    RawQuery(q): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ScimResult {
    allow(&auth, Action::ScimUserCreate)?;
    let projection = projection(q.as_deref())?;
    let resource = kubehero_scim::validate(KIND, json_body(body)?)?;
    let facts = Facts::of(&resource)?;
    let now = state.clock.now();
    let user = match just_in_time_match(&state, &facts).await? {
        // Reconciliation: the IdP now describes someone KubeHero created at sign-in; SCIM adopts them.
        Some(jit) => {
            let adopted = facts.apply(&jit, resource, now);
            let change = Change::UpdateUser { user: &adopted, expected_version: Some(jit.version) };
            let changed = audited.apply(change, Action::ScimUserCreate, &target(&jit), StatusCode::CREATED).await?;
            let stored = kubehero_store::changed_user(changed)?;
            state.identity.user_changed(&ctx.request_id, &jit, &stored).await?;
            stored
        }
        None => {
            let user = DirectoryUser {
                id: kubehero_identity::credential::random_uuid()?,
                user_name: facts.user_name,
                external_id: facts.external_id,
                active: facts.active,
                subject: None,
                emails: facts.emails,
                resource,
                origin: UserOrigin::Scim,
                version: 1,
                created_at: now,
                updated_at: now,
                deleted_at: None,
            };
            let change = Change::CreateUsers(std::slice::from_ref(&user));
            audited.apply(change, Action::ScimUserCreate, &target(&user), StatusCode::CREATED).await?;
            user
        }
    };
    state.identity.directory.changed();
    let v = render_one(&state, &ctx, &user).await?;
    let mut res = single(StatusCode::CREATED, &v, &projection);
    Audited::mark_done(&mut res, target(&user));
    Ok(res)
}

fn target(u: &DirectoryUser) -> kubehero_core::AuditTarget {
    target_id(&u.id)
}

fn target_id(id: &str) -> kubehero_core::AuditTarget {
    crate::audit::target_of("scim_user", id, None, None)
}

/// Stores a new version of a user and applies what changed (suspension, restoration).
async fn store_change(
    state: &AppState,
    ctx: &Ctx,
    (audited, action): (&Audited, Action),
    current: &DirectoryUser,
    resource: Value,
    expected: Option<i64>,
) -> Result<DirectoryUser, Failure> {
    let facts = Facts::of(&resource)?;
    let next = facts.apply(current, resource, state.clock.now());
    let change = Change::UpdateUser { user: &next, expected_version: expected };
    let changed = audited.apply(change, action, &target(current), StatusCode::OK).await?;
    let stored = kubehero_store::changed_user(changed)?;
    state.identity.directory.changed();
    state.identity.user_changed(&ctx.request_id, current, &stored).await?;
    Ok(stored)
}

pub async fn replace(
    State(state): State<AppState>,
    audited: Audited,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ScimResult {
    allow(audited.auth(), Action::ScimUserReplace)?;
    let projection = projection(q.as_deref())?;
    let resource = kubehero_scim::validate(KIND, json_body(body)?)?;
    let current = state.store.get_user(&id).await?;
    let how = (&audited, Action::ScimUserReplace);
    let stored = store_change(&state, &ctx, how, &current, resource, if_match(&headers)).await?;
    let mut res = single(StatusCode::OK, &render_one(&state, &ctx, &stored).await?, &projection);
    Audited::mark_done(&mut res, target(&stored));
    Ok(res)
}

pub async fn patch(
    State(state): State<AppState>,
    audited: Audited,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ScimResult {
    allow(audited.auth(), Action::ScimUserPatch)?;
    let projection = projection(q.as_deref())?;
    let body = json_body(body)?;
    let current = state.store.get_user(&id).await?;
    let mut resource = current.resource.clone();
    kubehero_scim::apply_patch(KIND, &mut resource, &body)?;
    let resource = kubehero_scim::validate(KIND, resource)?;
    let how = (&audited, Action::ScimUserPatch);
    let stored = store_change(&state, &ctx, how, &current, resource, if_match(&headers)).await?;
    let mut res = single(StatusCode::OK, &render_one(&state, &ctx, &stored).await?, &projection);
    Audited::mark_done(&mut res, target(&stored));
    Ok(res)
}

pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    audited: Audited,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ScimResult {
    allow(&auth, Action::ScimUserDelete)?;
    let change = Change::DeleteUser { id: &id, expected_version: if_match(&headers), at: state.clock.now() };
    let changed = audited.apply(change, Action::ScimUserDelete, &target_id(&id), StatusCode::NO_CONTENT).await?;
    let user = kubehero_store::changed_user(changed)?;
    state.identity.directory.changed();
    state.identity.user_deleted(&ctx.request_id, &user).await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    Audited::mark_done(&mut res, target(&user));
    Ok(res)
}
