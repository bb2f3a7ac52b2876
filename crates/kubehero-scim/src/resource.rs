//! SCIM resources as JSON values: validation of POST/PUT bodies (RFC 7644 §3.3, §3.5.1), PATCH (§3.5.2), the
//! `members`-only PATCH fast path, `attributes`/`excludedAttributes` projection (§3.4.2.5, §3.9) and the
//! case rules the filter evaluator needs (RFC 7643 §2.2 `caseExact`).
//!
//! Everything is derived from the attribute table of [`crate::schema`]; attribute names match
//! case-insensitively (RFC 7643 §2.1) and are stored in the schema's spelling.
//!
//! Security rules: bodies and query parameters are untrusted. Nothing here panics or indexes; every failure is
//! a [`ScimError`] whose detail names attributes by their schema spelling and quotes at most a short
//! [`crate::error::excerpt`] of client input. PATCH is atomic: `apply_patch` changes the resource only when
//! every operation succeeded and the result validates.

mod members;
mod normalize;
mod patch;
mod projection;
mod validate;

use serde_json::{Map, Value};

pub use members::{member_only_ops, MemberOp};
pub use patch::apply_patch;
pub use projection::{Projection, MAX_PROJECTION_LEN, MAX_PROJECTION_PATHS};
pub use validate::validate;

use crate::filter::CaseExact;
use crate::schema::defs::{AttrDef, SchemaDef};
use crate::schema::ResourceKind;

/// The attribute paths of `kind` whose strings compare case-sensitively, for
/// [`crate::filter::matches_with`]: `id`, `externalId`, `members.value`, `manager.value`, the `$ref`s, …
pub fn case_exact(kind: ResourceKind) -> CaseExact {
    let mut paths = Vec::new();
    for schema in schemas_of(kind) {
        for attr in schema.attributes {
            if attr.case_exact {
                paths.push(attr.name.to_owned());
            }
            for sub in attr.sub_attributes.iter().filter(|s| s.case_exact) {
                paths.push(format!("{}.{}", attr.name, sub.name));
            }
        }
    }
    CaseExact::new(paths)
}

/// The core schema followed by the extensions of `kind`.
pub(crate) fn schemas_of(kind: ResourceKind) -> impl Iterator<Item = &'static SchemaDef> {
    std::iter::once(kind.core()).chain(kind.extensions().iter().copied())
}

/// Which schema a URI prefix names: `Some(None)` for the core schema (or no prefix), `Some(Some(ext))` for an
/// extension of `kind`, `None` for a schema `kind` does not have.
pub(crate) fn schema_of(kind: ResourceKind, uri: Option<&str>) -> Option<Option<&'static SchemaDef>> {
    match uri {
        None => Some(None),
        Some(uri) if uri.eq_ignore_ascii_case(kind.schema()) => Some(None),
        Some(uri) => kind.extension(uri).map(Some),
    }
}

/// The attribute `name` of the core schema (`ext == None`) or of an extension.
pub(crate) fn attr_of(kind: ResourceKind, ext: Option<&'static SchemaDef>, name: &str) -> Option<&'static AttrDef> {
    ext.unwrap_or(kind.core()).attr(name)
}

/// What a top-level JSON key of a resource names.
pub(crate) enum Located {
    /// An attribute of the core schema (`ext == None`) or of an extension.
    Attr { ext: Option<&'static SchemaDef>, def: &'static AttrDef },
    /// A whole extension object, keyed by its URN.
    Extension(&'static SchemaDef),
    /// Not in the schema: ignored (RFC 7644 §3.3 lets the service provider drop what it does not store).
    Unknown,
}

/// Locates a top-level key: an attribute name, an extension URN, or a URN-qualified attribute name
/// (`urn:…:enterprise:2.0:User:department`).
pub(crate) fn locate_key(kind: ResourceKind, key: &str) -> Located {
    if let Some(ext) = kind.extension(key) {
        return Located::Extension(ext);
    }
    let (uri, name) = match key.rsplit_once(':') {
        Some((uri, name)) => (Some(uri), name),
        None => (None, key),
    };
    match schema_of(kind, uri) {
        Some(ext) => match attr_of(kind, ext, name) {
            Some(def) => Located::Attr { ext, def },
            None => Located::Unknown,
        },
        None => Located::Unknown,
    }
}

/// The value under `name`: the exact key if present, else the first key equal ignoring ASCII case.
pub(crate) fn get_ci<'m>(map: &'m Map<String, Value>, name: &str) -> Option<&'m Value> {
    map.get(name).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// Removes every key equal to `name` ignoring ASCII case; returns the value of the exact key if there was
/// one, else of the first removed.
pub(crate) fn remove_ci(map: &mut Map<String, Value>, name: &str) -> Option<Value> {
    let keys: Vec<String> = map.keys().filter(|k| k.eq_ignore_ascii_case(name)).cloned().collect();
    let mut found = map.remove(name);
    for key in keys {
        if let Some(value) = map.remove(&key) {
            found.get_or_insert(value);
        }
    }
    found
}

/// Takes the array stored under `name` out of `map` (empty when absent or not an array).
pub(crate) fn take_array(map: &mut Map<String, Value>, name: &str) -> Vec<Value> {
    match remove_ci(map, name) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// Takes the object stored under `name` out of `map` (empty when absent or not an object).
pub(crate) fn take_object(map: &mut Map<String, Value>, name: &str) -> Map<String, Value> {
    match remove_ci(map, name) {
        Some(Value::Object(obj)) => obj,
        _ => Map::new(),
    }
}

/// Stores `items` under `name`, or leaves the attribute unassigned when empty (RFC 7643 §2.5).
pub(crate) fn put_array(map: &mut Map<String, Value>, name: &str, items: Vec<Value>) {
    if !items.is_empty() {
        map.insert(name.to_owned(), Value::Array(items));
    }
}

/// Stores `obj` under `name`, or leaves the attribute unassigned when empty (RFC 7643 §2.5).
pub(crate) fn put_object(map: &mut Map<String, Value>, name: &str, obj: Map<String, Value>) {
    if !obj.is_empty() {
        map.insert(name.to_owned(), Value::Object(obj));
    }
}
