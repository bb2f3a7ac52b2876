//! `/scim/v2/Groups`: the IdP's groups and their members, which feed roles (`KUBEHERO_GROUP_ROLES`, bindings).
//!
//! Members live in their own table: a PATCH that only adds or removes members (what Okta's group push and
//! Entra ID send) is applied as a delta without reading the group's other members.

use super::{
    allow, if_match, json_body, list_page, mentions, meta, not_modified, projection, resource_reply, Ctx, Failure,
    ListParams, ScimResult,
};
use crate::audit::{Audited, RecordedWithChange};
use crate::auth::Auth;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kubehero_core::Action;
use kubehero_scim::{CompValue, CompareOp, Filter, MemberOp, Projection, ResourceKind, ScimError};
use kubehero_store::{Change, DirectoryGroup, GroupMember, GroupSelect, MemberChange, StoreError};
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};

const KIND: ResourceKind = ResourceKind::Group;

/// The SCIM representation of a stored group; `members` is `None` when the answer leaves them out.
fn render(base: &str, g: &DirectoryGroup, members: Option<&[GroupMember]>) -> Value {
    let mut v = match &g.resource {
        Value::Object(m) => Value::Object(m.clone()),
        _ => serde_json::json!({}),
    };
    v["id"] = Value::String(g.id.clone());
    v["displayName"] = Value::String(g.display_name.clone());
    v["meta"] = meta(KIND, base, &g.id, g.created_at, g.updated_at, g.version);
    if let Some(members) = members.filter(|m| !m.is_empty()) {
        v["members"] = members
            .iter()
            .map(|m| {
                // No `display`: clients compare members with what they sent, which has none.
                serde_json::json!({
                    "value": m.user_id,
                    "$ref": format!("{base}/Users/{}", m.user_id),
                    "type": "User",
                })
            })
            .collect();
    }
    v
}

/// Whether an answer shaped by `p` shows members (they are read only then).
fn shows_members(p: &Projection) -> bool {
    let probe = serde_json::json!({
        "schemas": [kubehero_scim::schema::GROUP_SCHEMA],
        "id": "probe",
        "displayName": "probe",
        "members": [{ "value": "probe" }],
    });
    p.apply(KIND, &probe).get("members").is_some()
}

async fn members_of(state: &AppState, id: &str) -> Result<Vec<GroupMember>, Failure> {
    Ok(state.store.group_members(id).await?)
}

/// A store error from a write naming members: an unknown member is the client's invalid value, not a 404.
fn member_err(e: StoreError) -> Failure {
    match e {
        StoreError::NotFound(what) if what.starts_with("user") => {
            Failure(ScimError::invalid_value(format!("member {} is not a provisioned user", short(&what))))
        }
        other => Failure::from(other),
    }
}

fn short(s: &str) -> String {
    s.chars().take(100).collect()
}

/// The ids of a validated resource's `members`, and the resource without them (members are stored apart).
fn split_members(mut resource: Value) -> (Value, Vec<String>) {
    let ids = match resource.as_object_mut().and_then(|o| o.remove("members")) {
        Some(Value::Array(a)) => {
            a.iter().filter_map(|m| m.get("value").and_then(Value::as_str)).map(str::to_string).collect()
        }
        _ => Vec::new(),
    };
    let mut seen = HashSet::new();
    let ids = ids.into_iter().filter(|i| seen.insert(i.clone())).collect();
    (resource, ids)
}

fn display_name(resource: &Value) -> Result<String, Failure> {
    Ok(resource
        .get("displayName")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ScimError::invalid_value("displayName is required"))?
        .to_string())
}

fn external_id(resource: &Value) -> Option<String> {
    resource.get("externalId").and_then(Value::as_str).map(str::to_string)
}

/// The most selective index a filter allows: `id`, then `displayName`, then membership, then `externalId`.
fn pushdown(f: &Filter) -> Option<GroupSelect<'_>> {
    fn rank(s: &GroupSelect<'_>) -> u8 {
        match s {
            GroupSelect::Id(_) => 0,
            GroupSelect::DisplayName(_) => 1,
            GroupSelect::Member(_) => 2,
            GroupSelect::ExternalId(_) => 3,
            GroupSelect::All => 4,
        }
    }
    match f {
        Filter::Compare { path, op: CompareOp::Eq, value: CompValue::String(s) } => {
            match (path.name.to_ascii_lowercase().as_str(), path.sub_attr.as_deref()) {
                ("id", None) => Some(GroupSelect::Id(s)),
                ("displayname", None) => Some(GroupSelect::DisplayName(s)),
                ("externalid", None) => Some(GroupSelect::ExternalId(s)),
                ("members", Some(sub)) if sub.eq_ignore_ascii_case("value") => Some(GroupSelect::Member(s)),
                _ => None,
            }
        }
        Filter::ValuePath { path, filter } if path.name.eq_ignore_ascii_case("members") => match &**filter {
            Filter::Compare { path, op: CompareOp::Eq, value: CompValue::String(s) }
                if path.name.eq_ignore_ascii_case("value") =>
            {
                Some(GroupSelect::Member(s))
            }
            _ => None,
        },
        Filter::And(l, r) => match (pushdown(l), pushdown(r)) {
            (Some(a), Some(b)) => Some(if rank(&a) <= rank(&b) { a } else { b }),
            (a, b) => a.or(b),
        },
        _ => None,
    }
}

/// The number of groups matching the parameters, and the page they ask for.
pub(super) async fn query(state: &AppState, ctx: &Ctx, params: &ListParams) -> Result<(i64, Vec<Value>), Failure> {
    let projection = params.projection()?;
    let (total, page) = match params.parsed_filter()? {
        None => state.store.select_groups(GroupSelect::All, params.offset(), params.count).await?,
        Some(f) => {
            let (_, candidates) =
                state.store.select_groups(pushdown(&f).unwrap_or(GroupSelect::All), 0, i64::MAX).await?;
            let case = kubehero_scim::case_exact(KIND);
            // Members are read only when the filter looks at them (Entra ID's membership check does).
            let by_members = mentions(&f, "members");
            let mut matched = Vec::new();
            for g in candidates {
                let members = if by_members { Some(members_of(state, &g.id).await?) } else { None };
                if kubehero_scim::matches_with(&f, &render(&ctx.base, &g, members.as_deref()), &case) {
                    matched.push(g);
                }
            }
            params.page(matched)
        }
    };
    let with_members = shows_members(&projection);
    let mut items = Vec::with_capacity(page.len());
    for g in &page {
        let members = if with_members { Some(members_of(state, &g.id).await?) } else { None };
        items.push(projection.apply(KIND, &render(&ctx.base, g, members.as_deref())));
    }
    Ok((total, items))
}

pub async fn list(State(state): State<AppState>, auth: Auth, ctx: Ctx, RawQuery(q): RawQuery) -> ScimResult {
    allow(&auth, Action::ScimGroupRead)?;
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
    allow(&auth, Action::ScimGroupRead)?;
    let params = ListParams::from_search(&json_body(body)?)?;
    let (total, items) = query(&state, &ctx, &params).await?;
    Ok(super::reply(StatusCode::OK, &list_page(total, params.start_index, items)))
}

/// A single group answer, reading members only when the answer shows them.
async fn answer(
    state: &AppState,
    ctx: &Ctx,
    status: StatusCode,
    g: &DirectoryGroup,
    projection: &Projection,
) -> Result<Response, Failure> {
    let members = if shows_members(projection) { Some(members_of(state, &g.id).await?) } else { None };
    let mut res = resource_reply(status, &projection.apply(KIND, &render(&ctx.base, g, members.as_deref())));
    res.extensions_mut().insert(target(g));
    Ok(res)
}

/// A write's answer, whose audit row was committed with the change.
fn recorded(answer: Result<Response, Failure>) -> Result<Response, Failure> {
    answer.map(|mut res| {
        res.extensions_mut().insert(RecordedWithChange);
        res
    })
}

fn target(g: &DirectoryGroup) -> kubehero_core::AuditTarget {
    target_id(&g.id)
}

fn target_id(id: &str) -> kubehero_core::AuditTarget {
    crate::audit::target_of("scim_group", id, None, None)
}

pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    ctx: Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ScimResult {
    allow(&auth, Action::ScimGroupRead)?;
    let projection = projection(q.as_deref())?;
    let g = state.store.get_group(&id).await?;
    if not_modified(&headers, &super::etag(g.version)) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    answer(&state, &ctx, StatusCode::OK, &g, &projection).await
}

pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    audited: Audited,
    ctx: Ctx,
    RawQuery(q): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> ScimResult {
    allow(&auth, Action::ScimGroupCreate)?;
    let projection = projection(q.as_deref())?;
    let (resource, members) = split_members(kubehero_scim::validate(KIND, json_body(body)?)?);
    let now = state.clock.now();
    let g = DirectoryGroup {
        id: kubehero_identity::credential::random_uuid()?,
        display_name: display_name(&resource)?,
        external_id: external_id(&resource),
        resource,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    let change = Change::CreateGroup { group: &g, members: &members };
    audited.apply(change, Action::ScimGroupCreate, &target(&g), StatusCode::CREATED).await.map_err(member_err)?;
    state.identity.directory.changed();
    recorded(answer(&state, &ctx, StatusCode::CREATED, &g, &projection).await)
}

/// Writes a group's new resource and member change, then applies what the change removed.
async fn store_change(
    state: &AppState,
    ctx: &Ctx,
    (audited, action, status): (&Audited, Action, StatusCode),
    current: &DirectoryGroup,
    resource: Value,
    (change, removed): (MemberChange<'_>, &[String]),
    expected: Option<i64>,
) -> Result<DirectoryGroup, Failure> {
    let next = DirectoryGroup {
        display_name: display_name(&resource)?,
        external_id: external_id(&resource),
        resource,
        updated_at: state.clock.now(),
        ..current.clone()
    };
    let change = Change::UpdateGroup { group: &next, members: change, expected_version: expected };
    let changed = audited.apply(change, action, &target(current), status).await.map_err(member_err)?;
    let stored = kubehero_store::changed_group(changed)?;
    state.identity.directory.changed();
    state.identity.members_removed(&ctx.request_id, &stored, removed).await?;
    Ok(stored)
}

/// Who of `before` is not in `after`.
fn gone(before: &[GroupMember], after: &[String]) -> Vec<String> {
    let keep: HashSet<&str> = after.iter().map(String::as_str).collect();
    before.iter().filter(|m| !keep.contains(m.user_id.as_str())).map(|m| m.user_id.clone()).collect()
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
    allow(audited.auth(), Action::ScimGroupReplace)?;
    let projection = projection(q.as_deref())?;
    let (resource, members) = split_members(kubehero_scim::validate(KIND, json_body(body)?)?);
    let current = state.store.get_group(&id).await?;
    let removed = gone(&members_of(&state, &id).await?, &members);
    let how = (&audited, Action::ScimGroupReplace, StatusCode::OK);
    let change = MemberChange::Replace(&members);
    let stored = store_change(&state, &ctx, how, &current, resource, (change, &removed), if_match(&headers)).await?;
    recorded(answer(&state, &ctx, StatusCode::OK, &stored, &projection).await)
}

/// Member-only operations as one delta, or `None` when they need the current members (remove all, replace).
fn delta(ops: &[MemberOp]) -> Option<(Vec<String>, Vec<String>)> {
    let mut add: Vec<String> = Vec::new();
    let mut remove: BTreeSet<String> = BTreeSet::new();
    let mut added: HashSet<String> = HashSet::new();
    for op in ops {
        match op {
            MemberOp::Add(ids) => {
                for id in ids {
                    remove.remove(id);
                    if added.insert(id.clone()) {
                        add.push(id.clone());
                    }
                }
            }
            MemberOp::Remove(ids) => {
                for id in ids {
                    if added.remove(id) {
                        add.retain(|a| a != id);
                    }
                    remove.insert(id.clone());
                }
            }
            MemberOp::RemoveAll | MemberOp::Replace(_) => return None,
        }
    }
    Some((add, remove.into_iter().collect()))
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
    allow(audited.auth(), Action::ScimGroupPatch)?;
    let projection = projection(q.as_deref())?;
    let body = json_body(body)?;
    let expected = if_match(&headers);
    let current = state.store.get_group(&id).await?;
    let fast = kubehero_scim::member_only_ops(&body).and_then(|ops| delta(&ops));
    // RFC 7644 §3.5.2: 200 with the resource, or 204. A group's members can run to tens of thousands, so the
    // whole group is sent back only when the client asks for attributes; otherwise 204 and the new ETag.
    let status = if projection.is_default() { StatusCode::NO_CONTENT } else { StatusCode::OK };
    let how = (&audited, Action::ScimGroupPatch, status);
    let stored = match fast {
        Some((add, remove)) => {
            // Only those actually in the group leave it (and get a row).
            let ids: Vec<String> = remove.clone();
            let removed: Vec<String> = if ids.is_empty() {
                Vec::new()
            } else {
                state
                    .store
                    .memberships(&ids)
                    .await?
                    .into_iter()
                    .filter(|m| m.group_id == id)
                    .map(|m| m.user_id)
                    .collect()
            };
            let change = MemberChange::Edit { add: &add, remove: &remove };
            store_change(&state, &ctx, how, &current, current.resource.clone(), (change, &removed), expected).await?
        }
        None => {
            let before = members_of(&state, &id).await?;
            let mut full = render(&ctx.base, &current, Some(&before));
            kubehero_scim::apply_patch(KIND, &mut full, &body)?;
            let (resource, members) = split_members(kubehero_scim::validate(KIND, full)?);
            let removed = gone(&before, &members);
            let change = MemberChange::Replace(&members);
            store_change(&state, &ctx, how, &current, resource, (change, &removed), expected).await?
        }
    };
    if status == StatusCode::NO_CONTENT {
        let mut res = StatusCode::NO_CONTENT.into_response();
        if let Ok(v) = axum::http::HeaderValue::from_str(&super::etag(stored.version)) {
            res.headers_mut().insert(axum::http::header::ETAG, v);
        }
        Audited::mark_done(&mut res, target(&stored));
        return Ok(res);
    }
    recorded(answer(&state, &ctx, StatusCode::OK, &stored, &projection).await)
}

pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    audited: Audited,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ScimResult {
    allow(&auth, Action::ScimGroupDelete)?;
    let change = Change::DeleteGroup { id: &id, expected_version: if_match(&headers) };
    let changed = audited.apply(change, Action::ScimGroupDelete, &target_id(&id), StatusCode::NO_CONTENT).await?;
    let (g, members) = kubehero_store::changed_deleted_group(changed)?;
    state.identity.directory.changed();
    state.identity.members_removed(&ctx.request_id, &g, &members).await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    Audited::mark_done(&mut res, target(&g));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ops_fold_into_one_delta() {
        let ops = vec![
            MemberOp::Add(vec!["a".into(), "b".into()]),
            MemberOp::Remove(vec!["b".into(), "c".into()]),
            MemberOp::Add(vec!["c".into()]),
        ];
        assert_eq!(delta(&ops), Some((vec!["a".to_string(), "c".to_string()], vec!["b".to_string()])));
        assert_eq!(delta(&[MemberOp::RemoveAll]), None);
    }
}
