//! The `members`-only PATCH fast path: recognising a Group PATCH that only adds, removes or replaces members
//! by id, so the server can apply it without loading (and rewriting) a group of 10 000 members.

use serde_json::Value;

use crate::filter::{CompValue, CompareOp, Filter};
use crate::path::PatchPath;
use crate::schema::{GROUP_SCHEMA, PATCH_OP};

use super::get_ci;
use super::patch::OpKind;

/// A change to a Group's member ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberOp {
    /// Add these users; ids already members are kept once.
    Add(Vec<String>),
    /// Remove these users; ids that are not members are ignored.
    Remove(Vec<String>),
    /// Remove every member.
    RemoveAll,
    /// The members become exactly these users.
    Replace(Vec<String>),
}

/// `Some(ops)` when every operation of the PATCH `body` only touches a Group's `members` in a way that ids
/// express, in order:
///
/// - `{"op":"add","path":"members","value":[{"value":"a"},{"value":"b"}]}` → `Add([a, b])`
/// - `{"op":"remove","path":"members[value eq \"a\"]"}` (also `… or value eq "b"`) → `Remove([a])`
/// - `{"op":"Remove","path":"members","value":[{"value":"a"}]}` (Entra ID) → `Remove([a])`
/// - `{"op":"remove","path":"members"}` → `RemoveAll`
/// - `{"op":"replace","path":"members","value":[…]}` → `Replace([…])`
/// - `{"op":"add"|"replace","value":{"members":[…]}}` → `Add`/`Replace`
///
/// Each member record needs a non-empty string `value`; a `type` other than `User` makes the answer `None`;
/// `$ref` and `display` are ignored, as [`super::validate`] ignores them. `None` otherwise (including for
/// malformed bodies): the server then loads the group and calls [`super::apply_patch`], which also produces
/// the right error.
///
/// One difference with [`super::apply_patch`]: a `members[value eq "x"]` removal of a non-member is a no-op
/// here, where `apply_patch` answers 400 `noTarget` (RFC 7644 §3.5.2.2). Okta and Entra ID accept both.
pub fn member_only_ops(body: &Value) -> Option<Vec<MemberOp>> {
    let body = body.as_object()?;
    let schemas = get_ci(body, "schemas")?.as_array()?;
    if !schemas.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP))) {
        return None;
    }
    let operations = get_ci(body, "Operations")?.as_array()?;
    if operations.is_empty() {
        return None;
    }
    operations.iter().map(member_op).collect()
}

fn member_op(op: &Value) -> Option<MemberOp> {
    let op = op.as_object()?;
    let kind = OpKind::parse(get_ci(op, "op")?.as_str()?)?;
    let value = get_ci(op, "value").filter(|v| !v.is_null());
    let path = match get_ci(op, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(path)) => Some(path.as_str()),
        Some(_) => return None,
    };
    let Some(path) = path else {
        let fields = value?.as_object()?;
        let (key, members) = match fields.len() {
            1 => fields.iter().next()?,
            _ => return None,
        };
        if !is_members(None, key) {
            return None;
        }
        return match kind {
            OpKind::Add => Some(MemberOp::Add(member_ids(members)?)),
            OpKind::Replace => Some(MemberOp::Replace(member_ids(members)?)),
            OpKind::Remove => None,
        };
    };
    match PatchPath::parse(path).ok()? {
        PatchPath::Attr(attr) if attr.sub_attr.is_none() && is_members(attr.uri.as_deref(), &attr.name) => match kind {
            OpKind::Add => Some(MemberOp::Add(member_ids(value?)?)),
            OpKind::Replace => Some(MemberOp::Replace(member_ids(value?)?)),
            OpKind::Remove => match value {
                None => Some(MemberOp::RemoveAll),
                Some(listed) => Some(MemberOp::Remove(member_ids(listed)?)),
            },
        },
        PatchPath::ValuePath { attr, filter, sub_attr: None }
            if kind == OpKind::Remove
                && value.is_none()
                && attr.sub_attr.is_none()
                && is_members(attr.uri.as_deref(), &attr.name) =>
        {
            let mut ids = Vec::new();
            value_eq_ids(&filter, &mut ids)?;
            Some(MemberOp::Remove(dedup(ids)))
        }
        _ => None,
    }
}

fn is_members(uri: Option<&str>, name: &str) -> bool {
    uri.is_none_or(|u| u.eq_ignore_ascii_case(GROUP_SCHEMA)) && name.eq_ignore_ascii_case("members")
}

/// The ids of `value eq "a" or value eq "b"`.
fn value_eq_ids(filter: &Filter, ids: &mut Vec<String>) -> Option<()> {
    match filter {
        Filter::Compare { path, op: CompareOp::Eq, value: CompValue::String(id) }
            if path.uri.is_none() && path.sub_attr.is_none() && path.name.eq_ignore_ascii_case("value") =>
        {
            ids.push(id.clone());
            Some(())
        }
        Filter::Or(left, right) => {
            value_eq_ids(left, ids)?;
            value_eq_ids(right, ids)
        }
        _ => None,
    }
}

/// The ids of `[{"value": "a"}, …]` (a lone record or id string stands for a one-element array).
fn member_ids(value: &Value) -> Option<Vec<String>> {
    let records: Vec<&Value> = match value {
        Value::Array(records) => records.iter().collect(),
        other => vec![other],
    };
    let mut ids = Vec::with_capacity(records.len());
    for record in records {
        let id = match record {
            Value::String(id) => id,
            Value::Object(fields) => {
                match get_ci(fields, "type") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(t)) if t.eq_ignore_ascii_case("User") => {}
                    Some(_) => return None,
                }
                match get_ci(fields, "value") {
                    Some(Value::String(id)) => id,
                    _ => return None,
                }
            }
            _ => return None,
        };
        if id.is_empty() {
            return None;
        }
        ids.push(id.clone());
    }
    Some(dedup(ids))
}

fn dedup(ids: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.into_iter().filter(|id| seen.insert(id.clone())).collect()
}
