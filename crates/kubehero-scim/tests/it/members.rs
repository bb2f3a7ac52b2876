//! `member_only_ops`: the Group PATCH fast path, and its agreement with `apply_patch`.

use kubehero_scim::{apply_patch, member_only_ops, MemberOp, ResourceKind, GROUP_SCHEMA};
use serde_json::{json, Value};

use crate::patch_ops::{ops, stored_group};

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn recognised_shapes() {
    let cases = [
        (
            json!([{ "op": "add", "path": "members", "value": [{ "value": "a" }, { "value": "b", "type": "User" }] }]),
            vec![MemberOp::Add(ids(&["a", "b"]))],
        ),
        (json!([{ "op": "Add", "path": "members", "value": { "value": "a" } }]), vec![MemberOp::Add(ids(&["a"]))]),
        (json!([{ "op": "remove", "path": "members[value eq \"a\"]" }]), vec![MemberOp::Remove(ids(&["a"]))]),
        (
            json!([{ "op": "remove", "path": "members[value eq \"a\" or value eq \"b\"]" }]),
            vec![MemberOp::Remove(ids(&["a", "b"]))],
        ),
        (json!([{ "op": "remove", "path": "members" }]), vec![MemberOp::RemoveAll]),
        (
            json!([{ "op": "Remove", "path": "Members", "value": [{ "value": "a" }] }]),
            vec![MemberOp::Remove(ids(&["a"]))],
        ),
        (json!([{ "op": "replace", "path": "members", "value": [] }]), vec![MemberOp::Replace(vec![])]),
        (
            json!([{ "op": "replace", "path": "members", "value": [{ "value": "c" }, { "value": "c" }] }]),
            vec![MemberOp::Replace(ids(&["c"]))],
        ),
        (json!([{ "op": "add", "value": { "members": [{ "value": "a" }] } }]), vec![MemberOp::Add(ids(&["a"]))]),
        (
            json!([{ "op": "replace", "value": { "Members": [{ "value": "a", "display": "A" }] } }]),
            vec![MemberOp::Replace(ids(&["a"]))],
        ),
        (
            json!([{ "op": "add", "path": "urn:ietf:params:scim:schemas:core:2.0:Group:members", "value": [{ "value": "a" }] }]),
            vec![MemberOp::Add(ids(&["a"]))],
        ),
        (
            json!([
                { "op": "add", "path": "members", "value": [{ "value": "a" }] },
                { "op": "remove", "path": "members[value eq \"b\"]" }
            ]),
            vec![MemberOp::Add(ids(&["a"])), MemberOp::Remove(ids(&["b"]))],
        ),
    ];
    for (operations, expected) in cases {
        assert_eq!(member_only_ops(&ops(operations.clone())), Some(expected), "{operations}");
    }
}

#[test]
fn everything_else_takes_the_slow_path() {
    let cases = [
        json!([{ "op": "replace", "path": "displayName", "value": "x" }]),
        json!([{ "op": "add", "path": "members", "value": [{ "value": "a" }] }, { "op": "replace", "path": "displayName", "value": "x" }]),
        json!([{ "op": "replace", "value": { "members": [], "displayName": "x" } }]),
        json!([{ "op": "remove", "path": "members[display eq \"a\"]" }]),
        json!([{ "op": "remove", "path": "members[value co \"a\"]" }]),
        json!([{ "op": "remove", "path": "members[value eq \"a\"].type" }]),
        json!([{ "op": "replace", "path": "members[value eq \"a\"]", "value": { "value": "b" } }]),
        json!([{ "op": "add", "path": "members", "value": [{ "display": "no id" }] }]),
        json!([{ "op": "add", "path": "members", "value": [{ "value": "" }] }]),
        json!([{ "op": "add", "path": "members", "value": [{ "value": "g", "type": "Group" }] }]),
        json!([{ "op": "add", "path": "members" }]),
        json!([{ "op": "move", "path": "members" }]),
        json!([{ "op": "remove" }]),
        json!([]),
        json!("members"),
    ];
    for operations in cases {
        assert_eq!(member_only_ops(&ops(operations.clone())), None, "{operations}");
    }
    assert_eq!(member_only_ops(&json!({ "Operations": [{ "op": "remove", "path": "members" }] })), None);
    assert_eq!(member_only_ops(&json!(null)), None);
}

/// Applies member ops to a list of ids, the way the server's fast path would.
fn apply_ops(mut members: Vec<String>, member_ops: &[MemberOp]) -> Vec<String> {
    for op in member_ops {
        match op {
            MemberOp::Add(add) => {
                for id in add {
                    if !members.contains(id) {
                        members.push(id.clone());
                    }
                }
            }
            MemberOp::Remove(remove) => members.retain(|m| !remove.contains(m)),
            MemberOp::RemoveAll => members.clear(),
            MemberOp::Replace(replace) => members.clone_from(replace),
        }
    }
    members
}

fn member_ids(group: &Value) -> Vec<String> {
    group["members"].as_array().into_iter().flatten().map(|m| m["value"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn fast_path_agrees_with_apply_patch() {
    let bodies = [
        json!([{ "op": "add", "path": "members", "value": [{ "value": "u3" }, { "value": "u1" }] }]),
        json!([{ "op": "remove", "path": "members[value eq \"u1\"]" }]),
        json!([{ "op": "Remove", "path": "members", "value": [{ "value": "u2" }, { "value": "zz" }] }]),
        json!([{ "op": "remove", "path": "members" }, { "op": "add", "path": "members", "value": [{ "value": "u5" }] }]),
        json!([{ "op": "replace", "path": "members", "value": [{ "value": "u7" }, { "value": "u8" }] }]),
        json!([{ "op": "add", "value": { "members": [{ "value": "u9" }] } }]),
    ];
    for operations in bodies {
        let body = ops(operations.clone());
        let fast = apply_ops(member_ids(&stored_group()), &member_only_ops(&body).unwrap());
        let mut slow = stored_group();
        apply_patch(ResourceKind::Group, &mut slow, &body).unwrap();
        assert_eq!(fast, member_ids(&slow), "{operations}");
    }
}

#[test]
fn ten_thousand_members() {
    let members: Vec<Value> = (0..10_000).map(|i| json!({ "value": format!("user-{i}") })).collect();
    let mut group = json!({ "schemas": [GROUP_SCHEMA], "id": "big", "displayName": "Everyone", "members": members });
    let body = ops(json!([
        { "op": "add", "path": "members", "value": [{ "value": "user-10000" }, { "value": "user-5" }] },
        { "op": "remove", "path": "members[value eq \"user-0\"]" }
    ]));
    apply_patch(ResourceKind::Group, &mut group, &body).unwrap();
    let ids = member_ids(&group);
    assert_eq!(ids.len(), 10_000);
    assert_eq!(ids.last().map(String::as_str), Some("user-10000"));
    assert_eq!(ids.first().map(String::as_str), Some("user-1"));
}
