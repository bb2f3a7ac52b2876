//! Normalising one attribute value against its definition (RFC 7643 §2.3 types, §2.4 multi-valued
//! attributes, §2.5 unassigned values): type checks, canonical names, `"True"`/`"False"` booleans, read-only
//! and derived sub-attributes dropped, duplicates and empty values removed.
//!
//! `Ok(None)` means the value is unassigned (`null`, `""`, `[]`, `{}` or only unassigned parts).

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::error::ScimError;
use crate::schema::defs::{AttrDef, AttrType, Mutability};

use super::get_ci;

/// Normalises a value of `def`; `label` names the attribute in errors (`emails`, `name.givenName`).
pub(crate) fn normalize(def: &'static AttrDef, value: &Value, label: &str) -> Result<Option<Value>, ScimError> {
    if !def.multi_valued {
        return normalize_single(def, value, label);
    }
    let items: Vec<&Value> = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => items.iter().collect(),
        // A lone value where an array is expected: read it as a one-element array.
        other => vec![other],
    };
    let mut out = Vec::with_capacity(items.len());
    let mut seen = HashSet::with_capacity(items.len());
    for item in items {
        if let Some(record) = normalize_single(def, item, label)? {
            if seen.insert(record_key(def, &record)) {
                out.push(record);
            }
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    check_single_primary(def, &out, label)?;
    Ok(Some(Value::Array(out)))
}

/// Normalises one value (one record of a multi-valued attribute).
pub(crate) fn normalize_single(def: &'static AttrDef, value: &Value, label: &str) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    match def.ty {
        AttrType::Complex => normalize_complex(def, value, label),
        AttrType::Boolean => normalize_bool(value, label),
        AttrType::String | AttrType::Reference | AttrType::DateTime => normalize_string(def, value, label),
    }
}

fn normalize_string(def: &AttrDef, value: &Value, label: &str) -> Result<Option<Value>, ScimError> {
    let Value::String(s) = value else {
        return Err(ScimError::invalid_value(format!("`{label}` must be a string")));
    };
    if s.is_empty() {
        return Ok(None);
    }
    if def.closed_values {
        return match def.canonical_values.iter().find(|c| c.eq_ignore_ascii_case(s)) {
            Some(canonical) => Ok(Some(Value::String((*canonical).to_owned()))),
            None => {
                Err(ScimError::invalid_value(format!("`{label}` must be one of: {}", def.canonical_values.join(", "))))
            }
        };
    }
    Ok(Some(Value::String(s.clone())))
}

/// A JSON boolean, or the strings `"true"`/`"false"` in any case (Microsoft Entra ID sends `"True"`).
fn normalize_bool(value: &Value, label: &str) -> Result<Option<Value>, ScimError> {
    match value {
        Value::Bool(b) => Ok(Some(Value::Bool(*b))),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(Value::Bool(true))),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(Value::Bool(false))),
        _ => Err(ScimError::invalid_value(format!("`{label}` must be a boolean"))),
    }
}

fn normalize_complex(def: &'static AttrDef, value: &Value, label: &str) -> Result<Option<Value>, ScimError> {
    let map = match value {
        Value::Object(map) => map,
        // `"manager": "26118915"` (Entra ID) stands for `{"value": "26118915"}`.
        Value::String(s) if def.sub("value").is_some() => {
            let mut map = Map::new();
            map.insert("value".to_owned(), Value::String(s.clone()));
            return normalize_complex(def, &Value::Object(map), label);
        }
        _ => return Err(ScimError::invalid_value(format!("`{label}` must be an object"))),
    };
    let mut out = Map::new();
    for (key, sub_value) in map {
        let Some(sub) = def.sub(key) else { continue };
        if sub.is_read_only() || !sub.stored {
            continue;
        }
        let sub_label = format!("{label}.{}", sub.name);
        if let Some(normalized) = normalize(sub, sub_value, &sub_label)? {
            if out.insert(sub.name.to_owned(), normalized).is_some() {
                return Err(ScimError::invalid_syntax(format!("`{sub_label}` is given twice")));
            }
        }
    }
    let anything_given = map.values().any(|v| !v.is_null());
    for sub in def.sub_attributes.iter().filter(|s| s.required && s.stored && !s.is_read_only()) {
        if !out.contains_key(sub.name) && anything_given {
            return Err(ScimError::invalid_value(format!("`{label}.{}` is required", sub.name)));
        }
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// Whether records of `def` are identified by their `value` alone: a multi-valued attribute whose `value`
/// is immutable (`Group.members`), so `{"value": "a"}` and `{"value": "a", "type": "User"}` are the same member.
pub(crate) fn identified_by_value(def: &AttrDef) -> bool {
    def.sub("value").is_some_and(|v| v.mutability == Mutability::Immutable)
}

/// A key equal for records that are the same record of `def` (normalised records have canonical keys).
fn record_key(def: &AttrDef, record: &Value) -> String {
    if identified_by_value(def) {
        if let Some(Value::String(value)) = record.get("value") {
            return format!("value:{value}");
        }
    }
    record.to_string()
}

/// Whether two normalised records of `def` are the same record.
pub(crate) fn same_record(def: &AttrDef, a: &Value, b: &Value) -> bool {
    if identified_by_value(def) {
        return a.get("value").is_some() && a.get("value") == b.get("value");
    }
    a == b
}

/// Whether `record` has every sub-attribute value `wanted` lists, strings compared per `caseExact`.
pub(crate) fn record_matches(def: &AttrDef, record: &Value, wanted: &Value) -> bool {
    let (Some(record), Some(wanted)) = (record.as_object(), wanted.as_object()) else {
        return false;
    };
    !wanted.is_empty()
        && wanted.iter().all(|(key, want)| {
            let exact = def.sub(key).is_some_and(|s| s.case_exact);
            match (get_ci(record, key), want) {
                (Some(Value::String(have)), Value::String(want)) if !exact => have.eq_ignore_ascii_case(want),
                (Some(have), want) => have == want,
                (None, _) => false,
            }
        })
}

/// RFC 7643 §2.4: the `primary` value `true` appears no more than once.
fn check_single_primary(def: &AttrDef, records: &[Value], label: &str) -> Result<(), ScimError> {
    if def.sub("primary").is_none() {
        return Ok(());
    }
    let primaries = records.iter().filter(|r| r.get("primary") == Some(&Value::Bool(true))).count();
    if primaries > 1 {
        return Err(ScimError::invalid_value(format!("at most one value of `{label}` may be primary")));
    }
    Ok(())
}

/// After `touched` records were written: if one of them is now primary, the others stop being primary
/// (RFC 7643 §2.4).
pub(crate) fn demote_other_primaries(records: &mut [Value], touched: &[usize]) {
    let promoted = touched.iter().any(|&i| records.get(i).and_then(|r| r.get("primary")) == Some(&Value::Bool(true)));
    if !promoted {
        return;
    }
    let mut is_touched = vec![false; records.len()];
    for &i in touched {
        if let Some(flag) = is_touched.get_mut(i) {
            *flag = true;
        }
    }
    for (record, touched) in records.iter_mut().zip(is_touched) {
        if touched {
            continue;
        }
        if let Some(obj) = record.as_object_mut() {
            if obj.get("primary") == Some(&Value::Bool(true)) {
                obj.insert("primary".to_owned(), Value::Bool(false));
            }
        }
    }
}
