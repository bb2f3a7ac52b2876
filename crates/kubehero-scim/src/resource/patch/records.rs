//! Record-level PATCH surgery on multi-valued attributes: value filters (`emails[type eq "work"]`), their
//! sub-attributes, immutable sub-attributes, and the record an `add` at an unmatched filter creates.

use serde_json::{Map, Value};

use crate::error::ScimError;
use crate::filter::{matches_with, CaseExact, CompValue, CompareOp, Filter};
use crate::schema::defs::{AttrDef, Mutability};

use crate::resource::normalize::{demote_other_primaries, normalize_single};
use crate::resource::remove_ci;

use super::{sub_label, OpKind};

/// Sets `sub` to `new` in the records at `indices`; an immutable sub-attribute may be set but not changed.
pub(super) fn set_sub(
    records: &mut [Value],
    indices: &[usize],
    sub: &AttrDef,
    new: Option<&Value>,
    label: &str,
) -> Result<(), ScimError> {
    for &index in indices {
        let Some(Value::Object(record)) = records.get_mut(index) else { continue };
        let old = remove_ci(record, sub.name);
        if sub.mutability == Mutability::Immutable && old.is_some() && old.as_ref() != new {
            return Err(ScimError::mutability(format!("`{label}` is immutable")));
        }
        if let Some(new) = new {
            record.insert(sub.name.to_owned(), new.clone());
        }
    }
    demote_other_primaries(records, indices);
    Ok(())
}

fn sub_case_exact(def: &AttrDef) -> CaseExact {
    CaseExact::new(def.sub_attributes.iter().filter(|s| s.case_exact).map(|s| s.name))
}

pub(super) fn matching(records: &[Value], def: &AttrDef, filter: &Filter) -> Vec<usize> {
    let case_exact = sub_case_exact(def);
    records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_object() && matches_with(filter, r, &case_exact))
        .map(|(i, _)| i)
        .collect()
}

/// `add`/`replace` at `def[filter]` or `def[filter].sub`.
pub(super) fn write_filtered(
    op: OpKind,
    records: &mut Vec<Value>,
    def: &'static AttrDef,
    filter: &Filter,
    sub: Option<&'static AttrDef>,
    new: Option<Value>,
) -> Result<(), ScimError> {
    let matched = matching(records, def, filter);
    if matched.is_empty() {
        if op == OpKind::Replace {
            return Err(ScimError::no_target(format!("no value of `{}` matches the filter", def.name)));
        }
        return add_described_record(records, def, filter, sub, new);
    }
    if let Some(sub) = sub {
        return set_sub(records, &matched, sub, new.as_ref(), &sub_label(def, sub));
    }
    match (op, new) {
        (OpKind::Replace, None) => drop_records(records, &matched),
        (OpKind::Replace, Some(new)) => {
            for &index in &matched {
                if let Some(record) = records.get_mut(index) {
                    check_immutable_subs(def, record, &new)?;
                    *record = new.clone();
                }
            }
        }
        (_, Some(Value::Object(new))) => {
            for &index in &matched {
                if let Some(Value::Object(record)) = records.get_mut(index) {
                    for (key, value) in &new {
                        let old = remove_ci(record, key);
                        if def.sub(key).is_some_and(|s| s.mutability == Mutability::Immutable)
                            && old.as_ref().is_some_and(|old| old != value)
                        {
                            return Err(ScimError::mutability(format!("`{}.{key}` is immutable", def.name)));
                        }
                        record.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (_, _) => {}
    }
    demote_other_primaries(records, &matched);
    Ok(())
}

/// Removes the records at `indices` (sorted, as [`matching`] returns them).
pub(super) fn drop_records(records: &mut Vec<Value>, indices: &[usize]) {
    let mut doomed = indices.iter().copied().peekable();
    let mut index = 0;
    records.retain(|_| {
        let keep = doomed.peek() != Some(&index);
        if !keep {
            doomed.next();
        }
        index += 1;
        keep
    });
}

fn check_immutable_subs(def: &AttrDef, old: &Value, new: &Value) -> Result<(), ScimError> {
    for sub in def.sub_attributes.iter().filter(|s| s.mutability == Mutability::Immutable) {
        if let (Some(before), Some(after)) = (old.get(sub.name), new.get(sub.name)) {
            if before != after {
                return Err(ScimError::mutability(format!("`{}` is immutable", sub_label(def, sub))));
            }
        }
    }
    Ok(())
}

/// `add` at a value filter that matches nothing: appends the record the filter describes
/// (`emails[type eq "work"].value` → `{"type": "work", "value": …}`), or 400 `noTarget` when the filter does
/// not describe one.
fn add_described_record(
    records: &mut Vec<Value>,
    def: &'static AttrDef,
    filter: &Filter,
    sub: Option<&'static AttrDef>,
    new: Option<Value>,
) -> Result<(), ScimError> {
    let Some(mut record) = described_record(def, filter) else {
        return Err(ScimError::no_target(format!(
            "no value of `{}` matches the filter, and the filter does not describe a new one",
            def.name
        )));
    };
    match (sub, new) {
        (_, None) => return Ok(()),
        (Some(sub), Some(new)) => {
            record.insert(sub.name.to_owned(), new);
        }
        (None, Some(Value::Object(new))) => record.extend(new),
        (None, Some(_)) => {
            return Err(ScimError::invalid_value(format!("a value of `{}` must be an object", def.name)))
        }
    }
    if let Some(record) = normalize_single(def, &Value::Object(record), def.name)? {
        records.push(record);
        let added = records.len() - 1;
        demote_other_primaries(records, &[added]);
    }
    Ok(())
}

/// The sub-attribute values an `eq`/`and` filter pins down: `type eq "work"` → `{"type": "work"}`.
fn described_record(def: &AttrDef, filter: &Filter) -> Option<Map<String, Value>> {
    match filter {
        Filter::Compare { path, op: CompareOp::Eq, value } if path.uri.is_none() && path.sub_attr.is_none() => {
            let sub = def.sub(&path.name)?;
            if sub.is_read_only() {
                return None;
            }
            let value = match value {
                CompValue::String(s) => Value::String(s.clone()),
                CompValue::Bool(b) => Value::Bool(*b),
                CompValue::Number(n) => Value::Number(n.clone()),
                CompValue::Null => return None,
            };
            let mut record = Map::new();
            record.insert(sub.name.to_owned(), value);
            Some(record)
        }
        Filter::And(left, right) => {
            let mut record = described_record(def, left)?;
            for (key, value) in described_record(def, right)? {
                if record.get(&key).is_some_and(|v| v != &value) {
                    return None;
                }
                record.insert(key, value);
            }
            Some(record)
        }
        _ => None,
    }
}
