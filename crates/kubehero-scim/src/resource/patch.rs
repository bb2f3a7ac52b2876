//! PATCH (RFC 7644 §3.5.2) on a stored resource, with the request shapes Okta and Microsoft Entra ID send.
//!
//! - `op` is case-insensitive (`Add`, `Replace`, `Remove` from Entra ID).
//! - `add`/`replace` without `path` take an object whose keys are attribute names, sub-attribute paths
//!   (`name.givenName`), URN-qualified names (`urn:…:enterprise:2.0:User:department`) or a whole extension
//!   URN with an object value. Read-only keys in it (`id`, `meta`, `schemas`, `groups`) are dropped silently.
//! - An explicit `path` to a read-only attribute is 400 `mutability`; so is removing a required attribute or
//!   changing an immutable one (`members.value`).
//! - A path naming an attribute outside the schema is ignored, as POST ignores such attributes (Entra ID maps
//!   `phoneNumbers`, `addresses`, … by default).
//! - `remove` needs a `path` (else 400 `noTarget`); `{"op":"Remove","path":"members","value":[{"value":…}]}`
//!   (Entra ID) removes just the listed records.
//! - A value filter that matches nothing: `remove`/`replace` answer 400 `noTarget` (§3.5.2.2, §3.5.2.3);
//!   `add` creates the record the filter describes when it is an `eq`/`and` filter
//!   (`emails[type eq "work"].value`), as Entra ID expects.
//! - `add` to a multi-valued attribute appends records not already present; `replace` without a filter
//!   replaces the whole array; a complex single-valued attribute is merged sub-attribute by sub-attribute.
//! - A record set to `primary: true` makes the others non-primary (RFC 7643 §2.4).
//!
//! The result goes through [`validate`]; the read-only attributes the server maintains (`id`, `meta`, User
//! `groups`) are carried over unchanged.

mod records;

use serde_json::{Map, Value};

use crate::error::{excerpt, ScimError};
use crate::filter::Filter;
use crate::path::PatchPath;
use crate::schema::defs::{AttrDef, Mutability, SchemaDef};
use crate::schema::{ResourceKind, PATCH_OP};

use records::{drop_records, matching, set_sub, write_filtered};

use super::normalize::{demote_other_primaries, normalize, normalize_single, record_matches, same_record};
use super::validate::validate;
use super::{attr_of, get_ci, put_array, put_object, remove_ci, schema_of, take_array, take_object};

/// Applies a PATCH request `body` to `resource` (a stored resource of `kind`, as [`validate`] returned it plus
/// `id`/`meta`, and for a User `groups`). On error `resource` is unchanged: the operations apply to a copy.
///
/// For a Group, `resource.members` must hold the current members for member operations to apply; see
/// [`super::member_only_ops`] for the fast path that avoids loading them.
pub fn apply_patch(kind: ResourceKind, resource: &mut Value, body: &Value) -> Result<(), ScimError> {
    let operations = read_body(body)?;
    let Value::Object(original) = &*resource else {
        return Err(ScimError::bad_request("the stored resource is not a JSON object"));
    };
    let mut work = original.clone();
    for (index, operation) in operations.iter().enumerate() {
        apply_operation(kind, &mut work, operation).map_err(|mut err| {
            err.detail = format!("Operations[{index}]: {}", err.detail);
            err
        })?;
    }
    let kept: Vec<(&'static str, Value)> = kind
        .core()
        .attributes
        .iter()
        .filter(|a| a.is_read_only())
        .filter_map(|a| get_ci(original, a.name).map(|v| (a.name, v.clone())))
        .collect();
    if !work.keys().any(|k| k.eq_ignore_ascii_case("schemas")) {
        work.insert("schemas".to_owned(), Value::Array(vec![Value::String(kind.schema().to_owned())]));
    }
    let mut patched = validate(kind, Value::Object(work))?;
    if let Value::Object(map) = &mut patched {
        for (name, value) in kept {
            map.insert(name.to_owned(), value);
        }
    }
    *resource = patched;
    Ok(())
}

/// The operations of a PatchOp message, checked for shape.
fn read_body(body: &Value) -> Result<Vec<Operation<'_>>, ScimError> {
    let Value::Object(body) = body else {
        return Err(ScimError::invalid_syntax("a PATCH body must be a JSON object"));
    };
    let lists_patch_op = match get_ci(body, "schemas") {
        Some(Value::Array(items)) => items.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP))),
        _ => false,
    };
    if !lists_patch_op {
        return Err(ScimError::invalid_syntax(format!("`schemas` must contain {PATCH_OP}")));
    }
    let operations = match get_ci(body, "Operations") {
        Some(Value::Array(ops)) if !ops.is_empty() => ops,
        _ => return Err(ScimError::invalid_syntax("`Operations` must be a non-empty array")),
    };
    operations
        .iter()
        .enumerate()
        .map(|(i, op)| {
            Operation::read(op).map_err(|mut err| {
                err.detail = format!("Operations[{i}]: {}", err.detail);
                err
            })
        })
        .collect()
}

/// `add`, `remove` or `replace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Add,
    Remove,
    Replace,
}

impl OpKind {
    pub(crate) fn parse(op: &str) -> Option<Self> {
        [("add", Self::Add), ("remove", Self::Remove), ("replace", Self::Replace)]
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(op))
            .map(|(_, kind)| kind)
    }
}

struct Operation<'a> {
    op: OpKind,
    path: Option<&'a str>,
    value: Option<&'a Value>,
}

impl<'a> Operation<'a> {
    fn read(op: &'a Value) -> Result<Self, ScimError> {
        let Value::Object(map) = op else {
            return Err(ScimError::invalid_syntax("an operation must be a JSON object"));
        };
        let kind = match get_ci(map, "op") {
            Some(Value::String(name)) => OpKind::parse(name).ok_or_else(|| {
                ScimError::invalid_syntax(format!("unknown op `{}`: expected add, remove or replace", excerpt(name)))
            })?,
            _ => return Err(ScimError::invalid_syntax("an operation needs an `op` string")),
        };
        let path = match get_ci(map, "path") {
            None | Some(Value::Null) => None,
            Some(Value::String(path)) => Some(path.as_str()),
            Some(_) => return Err(ScimError::invalid_path("`path` must be a string")),
        };
        Ok(Self { op: kind, path, value: get_ci(map, "value") })
    }
}

/// Where an operation applies.
enum Target {
    /// An attribute outside the schema: the operation is ignored.
    Ignored,
    /// A whole extension object.
    Extension(&'static SchemaDef),
    /// An attribute, or one sub-attribute of it.
    Attr { ext: Option<&'static SchemaDef>, def: &'static AttrDef, sub: Option<&'static AttrDef> },
    /// The records of a multi-valued attribute that match `filter`, or one sub-attribute of them.
    Filtered { ext: Option<&'static SchemaDef>, def: &'static AttrDef, filter: Filter, sub: Option<&'static AttrDef> },
}

/// Whether the target came from an operation's `path` or from a key of a path-less `value` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Path,
    ValueKey,
}

fn resolve(kind: ResourceKind, path: &str) -> Result<Target, ScimError> {
    if let Some(ext) = kind.extension(path) {
        return Ok(Target::Extension(ext));
    }
    let parsed = PatchPath::parse(path).map_err(|e| ScimError::from_path_error(&e))?;
    let (attr, filter, sub_name) = match parsed {
        PatchPath::Attr(mut attr) => {
            let sub = attr.sub_attr.take();
            (attr, None, sub)
        }
        PatchPath::ValuePath { attr, filter, sub_attr } => {
            if attr.sub_attr.is_some() {
                return Err(ScimError::invalid_path("a value filter must follow a multi-valued attribute"));
            }
            (attr, Some(filter), sub_attr)
        }
    };
    let Some(ext) = schema_of(kind, attr.uri.as_deref()) else { return Ok(Target::Ignored) };
    let Some(def) = attr_of(kind, ext, &attr.name) else { return Ok(Target::Ignored) };
    let sub = match sub_name {
        None => None,
        Some(_) if !def.is_complex() => {
            return Err(ScimError::invalid_path(format!("`{}` has no sub-attributes", def.name)));
        }
        Some(name) => match def.sub(&name) {
            Some(sub) => Some(sub),
            None => return Ok(Target::Ignored),
        },
    };
    match filter {
        None => Ok(Target::Attr { ext, def, sub }),
        Some(_) if !(def.is_complex() && def.multi_valued) => Err(ScimError::invalid_path(format!(
            "`{}` is not a multi-valued complex attribute; it takes no value filter",
            def.name
        ))),
        Some(filter) => Ok(Target::Filtered { ext, def, filter, sub }),
    }
}

fn apply_operation(kind: ResourceKind, root: &mut Map<String, Value>, op: &Operation<'_>) -> Result<(), ScimError> {
    match (op.op, op.path) {
        (OpKind::Remove, None) => Err(ScimError::no_target("a remove operation needs a `path`")),
        (OpKind::Remove, Some(path)) => remove(root, &resolve(kind, path)?, op.value),
        (_, Some(path)) => {
            let value =
                op.value.ok_or_else(|| ScimError::invalid_value("an add or replace operation needs a `value`"))?;
            write(op.op, root, &resolve(kind, path)?, value, Origin::Path)
        }
        (_, None) => {
            let Some(Value::Object(fields)) = op.value else {
                return Err(ScimError::invalid_value("an operation without `path` needs an object `value`"));
            };
            for (key, value) in fields {
                if key.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                // A key that is not a valid path names no attribute of ours: dropped like unknown attributes.
                if let Ok(target) = resolve(kind, key) {
                    write(op.op, root, &target, value, Origin::ValueKey)?;
                }
            }
            Ok(())
        }
    }
}

/// Runs `f` on the object holding the attributes of the core schema (`root`) or of an extension.
fn in_schema<R>(
    root: &mut Map<String, Value>,
    ext: Option<&SchemaDef>,
    f: impl FnOnce(&mut Map<String, Value>) -> R,
) -> R {
    match ext {
        None => f(root),
        Some(ext) => {
            let mut fields = take_object(root, ext.id);
            let result = f(&mut fields);
            put_object(root, ext.id, fields);
            result
        }
    }
}

/// Whether `def` may be written; a read-only attribute is an error on an explicit path and skipped in a
/// path-less value.
fn writable(def: &AttrDef, label: &str, origin: Origin) -> Result<bool, ScimError> {
    if def.is_read_only() {
        return match origin {
            Origin::Path => Err(ScimError::mutability(format!("`{label}` is read-only"))),
            Origin::ValueKey => Ok(false),
        };
    }
    Ok(def.stored)
}

fn removable(def: &AttrDef, label: &str) -> Result<(), ScimError> {
    if def.is_read_only() {
        return Err(ScimError::mutability(format!("`{label}` is read-only")));
    }
    if def.required {
        return Err(ScimError::mutability(format!("`{label}` is required; it cannot be removed")));
    }
    if def.mutability == Mutability::Immutable {
        return Err(ScimError::mutability(format!("`{label}` is immutable")));
    }
    Ok(())
}

fn sub_label(def: &AttrDef, sub: &AttrDef) -> String {
    format!("{}.{}", def.name, sub.name)
}

/// `add` or `replace` of `value` at `target`.
fn write(
    op: OpKind,
    root: &mut Map<String, Value>,
    target: &Target,
    value: &Value,
    origin: Origin,
) -> Result<(), ScimError> {
    match target {
        Target::Ignored => Ok(()),
        Target::Extension(ext) => match value {
            Value::Null => {
                if op == OpKind::Replace {
                    remove_ci(root, ext.id);
                }
                Ok(())
            }
            Value::Object(fields) => {
                for (name, field) in fields {
                    if let Some(def) = ext.attr(name) {
                        let target = Target::Attr { ext: Some(ext), def, sub: None };
                        write(op, root, &target, field, Origin::ValueKey)?;
                    }
                }
                Ok(())
            }
            _ => Err(ScimError::invalid_value(format!("`{}` must be an object", ext.id))),
        },
        Target::Attr { ext, def, sub: None } => {
            if !writable(def, def.name, origin)? {
                return Ok(());
            }
            let new = normalize(def, value, def.name)?;
            in_schema(root, *ext, |fields| {
                write_attr(op, fields, def, new);
            });
            Ok(())
        }
        Target::Attr { ext, def, sub: Some(sub) } => {
            let label = sub_label(def, sub);
            if !writable(def, def.name, origin)? || !writable(sub, &label, origin)? {
                return Ok(());
            }
            let new = normalize(sub, value, &label)?;
            in_schema(root, *ext, |fields| write_sub_of_all(fields, def, sub, new, &label))
        }
        Target::Filtered { ext, def, filter, sub } => {
            if !writable(def, def.name, origin)? {
                return Ok(());
            }
            let new = match sub {
                Some(sub) => {
                    let label = sub_label(def, sub);
                    if !writable(sub, &label, origin)? {
                        return Ok(());
                    }
                    normalize(sub, value, &label)?
                }
                None => normalize_single(def, value, def.name)?,
            };
            in_schema(root, *ext, |fields| {
                let mut records = take_array(fields, def.name);
                let result = write_filtered(op, &mut records, def, filter, *sub, new);
                put_array(fields, def.name, records);
                result
            })
        }
    }
}

/// `add`/`replace` of a whole attribute (RFC 7644 §3.5.2.1, §3.5.2.3).
fn write_attr(op: OpKind, fields: &mut Map<String, Value>, def: &'static AttrDef, new: Option<Value>) {
    let Some(new) = new else {
        // An unassigned value (`null`, `""`, `[]`) clears the attribute; adding no records changes nothing.
        if op == OpKind::Replace || !def.multi_valued {
            remove_ci(fields, def.name);
        }
        return;
    };
    if def.multi_valued {
        let added = match new {
            Value::Array(records) => records,
            other => vec![other],
        };
        if op == OpKind::Replace {
            remove_ci(fields, def.name);
            put_array(fields, def.name, added);
            return;
        }
        let mut records = take_array(fields, def.name);
        let mut touched = Vec::new();
        for record in added {
            match records.iter().position(|r| same_record(def, r, &record)) {
                Some(index) => touched.push(index),
                None => {
                    records.push(record);
                    touched.push(records.len() - 1);
                }
            }
        }
        demote_other_primaries(&mut records, &touched);
        put_array(fields, def.name, records);
    } else if def.is_complex() {
        let mut current = take_object(fields, def.name);
        if let Value::Object(new) = new {
            current.extend(new);
        }
        put_object(fields, def.name, current);
    } else {
        remove_ci(fields, def.name);
        fields.insert(def.name.to_owned(), new);
    }
}

/// Sets (or with `None` clears) `sub` in a single-valued complex attribute, or in every record of a
/// multi-valued one.
fn write_sub_of_all(
    fields: &mut Map<String, Value>,
    def: &'static AttrDef,
    sub: &'static AttrDef,
    new: Option<Value>,
    label: &str,
) -> Result<(), ScimError> {
    if def.multi_valued {
        let mut records = take_array(fields, def.name);
        let all: Vec<usize> = (0..records.len()).collect();
        let result = set_sub(&mut records, &all, sub, new.as_ref(), label);
        put_array(fields, def.name, records);
        return result;
    }
    let mut current = take_object(fields, def.name);
    remove_ci(&mut current, sub.name);
    if let Some(new) = new {
        current.insert(sub.name.to_owned(), new);
    }
    put_object(fields, def.name, current);
    Ok(())
}

/// `remove` at `target` (RFC 7644 §3.5.2.2). `value` is only read for Entra ID's
/// `{"op":"Remove","path":"members","value":[{"value":…}]}`.
fn remove(root: &mut Map<String, Value>, target: &Target, value: Option<&Value>) -> Result<(), ScimError> {
    match target {
        Target::Ignored => Ok(()),
        Target::Extension(ext) => {
            remove_ci(root, ext.id);
            Ok(())
        }
        Target::Attr { ext, def, sub: None } => {
            removable(def, def.name)?;
            let listed = match value {
                Some(value) if !value.is_null() && def.multi_valued && def.is_complex() => {
                    Some(normalize(def, value, def.name)?)
                }
                _ => None,
            };
            in_schema(root, *ext, |fields| match listed {
                None => {
                    remove_ci(fields, def.name);
                }
                Some(None) => {}
                Some(Some(Value::Array(wanted))) => {
                    let mut records = take_array(fields, def.name);
                    records.retain(|r| !wanted.iter().any(|w| record_matches(def, r, w)));
                    put_array(fields, def.name, records);
                }
                Some(Some(_)) => {}
            });
            Ok(())
        }
        Target::Attr { ext, def, sub: Some(sub) } => {
            removable(def, def.name)?;
            removable(sub, &sub_label(def, sub))?;
            in_schema(root, *ext, |fields| write_sub_of_all(fields, def, sub, None, &sub_label(def, sub)))
        }
        Target::Filtered { ext, def, filter, sub } => {
            removable(def, def.name)?;
            if let Some(sub) = sub {
                removable(sub, &sub_label(def, sub))?;
            }
            in_schema(root, *ext, |fields| {
                let mut records = take_array(fields, def.name);
                let matched = matching(&records, def, filter);
                let result = if matched.is_empty() {
                    Err(ScimError::no_target(format!("no value of `{}` matches the filter", def.name)))
                } else {
                    match sub {
                        Some(sub) => set_sub(&mut records, &matched, sub, None, &sub_label(def, sub)),
                        None => {
                            drop_records(&mut records, &matched);
                            Ok(())
                        }
                    }
                };
                put_array(fields, def.name, records);
                result
            })
        }
    }
}
