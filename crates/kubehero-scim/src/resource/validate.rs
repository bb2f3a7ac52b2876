//! Validation of a resource body for POST (RFC 7644 §3.3) and PUT (§3.5.1), and of every PATCH result.

use serde_json::{Map, Value};

use crate::error::ScimError;
use crate::schema::defs::{AttrDef, SchemaDef};
use crate::schema::ResourceKind;

use super::normalize::normalize;
use super::{get_ci, locate_key, schemas_of, Located};

/// Validates and normalises a POST or PUT body of `kind`, returning what to store.
///
/// - The body is an object whose `schemas` lists the core schema URN (else 400 `invalidSyntax`). Unknown
///   schema URNs are dropped; an extension object whose URN is missing from `schemas` gets it added (Okta and
///   Entra ID do not always list it).
/// - Attribute names match case-insensitively and are stored in the schema's spelling (RFC 7643 §2.1).
///   Attributes outside the schema are dropped; so are read-only ones (`id`, `meta`, `groups`,
///   `members.display`), which the server maintains.
/// - Values are type-checked (400 `invalidValue` naming the attribute); booleans also accept the strings
///   `"True"`/`"False"` in any case; `null`, `""`, `[]` and `{}` mean unassigned and are removed.
/// - Required attributes (`userName`, Group `displayName`) must be present (else 400 `invalidValue`).
/// - Group `members` come out as `[{"value": id}]` or `[{"value": id, "type": "User"}]`, one per id.
pub fn validate(kind: ResourceKind, body: Value) -> Result<Value, ScimError> {
    let Value::Object(body) = body else {
        return Err(ScimError::invalid_syntax("the request body must be a JSON object"));
    };
    let mut schemas = read_schemas(kind, &body)?;
    let mut core = Map::new();
    let mut extensions: Vec<(&'static SchemaDef, Map<String, Value>)> =
        kind.extensions().iter().map(|ext| (*ext, Map::new())).collect();
    for (key, value) in &body {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        match locate_key(kind, key) {
            Located::Unknown => {}
            Located::Attr { ext: None, def } => put(&mut core, def, value)?,
            Located::Attr { ext: Some(ext), def } => {
                if let Some((_, target)) = extensions.iter_mut().find(|(e, _)| e.id == ext.id) {
                    put(target, def, value)?;
                }
            }
            Located::Extension(ext) => match value {
                Value::Null => {}
                Value::Object(fields) => {
                    if let Some((_, target)) = extensions.iter_mut().find(|(e, _)| e.id == ext.id) {
                        for (name, field) in fields {
                            if let Some(def) = ext.attr(name) {
                                put(target, def, field)?;
                            }
                        }
                    }
                }
                _ => return Err(ScimError::invalid_value(format!("`{}` must be an object", ext.id))),
            },
        }
    }
    for (ext, fields) in extensions {
        if !fields.is_empty() {
            if !schemas.contains(&ext.id) {
                schemas.push(ext.id);
            }
            core.insert(ext.id.to_owned(), Value::Object(fields));
        }
    }
    check_required(kind, &core)?;
    check_name(kind, &core)?;
    core.insert("schemas".to_owned(), Value::Array(schemas.into_iter().map(|s| Value::String(s.to_owned())).collect()));
    Ok(Value::Object(core))
}

/// The canonical schema URNs of `body.schemas`: the core URN first, then the known extensions it lists.
fn read_schemas(kind: ResourceKind, body: &Map<String, Value>) -> Result<Vec<&'static str>, ScimError> {
    let core = kind.schema();
    let Some(Value::Array(items)) = get_ci(body, "schemas") else {
        return Err(ScimError::invalid_syntax(format!("`schemas` must be an array that contains {core}")));
    };
    let mut has_core = false;
    let mut schemas = vec![core];
    for item in items {
        let Value::String(urn) = item else {
            return Err(ScimError::invalid_syntax("`schemas` must contain only schema URNs"));
        };
        if urn.eq_ignore_ascii_case(core) {
            has_core = true;
        } else if let Some(ext) = kind.extension(urn) {
            if !schemas.contains(&ext.id) {
                schemas.push(ext.id);
            }
        }
    }
    if !has_core {
        return Err(ScimError::invalid_syntax(format!("`schemas` must contain {core}")));
    }
    Ok(schemas)
}

/// Normalises `value` of `def` into `map`, unless `def` is read-only or derived.
fn put(map: &mut Map<String, Value>, def: &'static AttrDef, value: &Value) -> Result<(), ScimError> {
    if def.is_read_only() || !def.stored {
        return Ok(());
    }
    if let Some(normalized) = normalize(def, value, def.name)? {
        if map.insert(def.name.to_owned(), normalized).is_some() {
            return Err(ScimError::invalid_syntax(format!("`{}` is given twice", def.name)));
        }
    }
    Ok(())
}

/// The longest `userName` or Group `displayName`, in characters.
const MAX_NAME: usize = 256;

/// A User's `userName` and a Group's `displayName` name one resource: they are unique and matched exactly, so
/// a copy with a trailing space would be a second person. Refused: leading or trailing whitespace, more than
/// 256 characters, control and bidirectional formatting characters.
fn check_name(kind: ResourceKind, core: &Map<String, Value>) -> Result<(), ScimError> {
    let attr = match kind {
        ResourceKind::User => "userName",
        ResourceKind::Group => "displayName",
    };
    let Some(Value::String(name)) = core.get(attr) else { return Ok(()) };
    if name.trim() != name {
        return Err(ScimError::invalid_value(format!("`{attr}` has leading or trailing whitespace")));
    }
    if name.chars().count() > MAX_NAME {
        return Err(ScimError::invalid_value(format!("`{attr}` is longer than {MAX_NAME} characters")));
    }
    if let Some(c) = kubehero_core::names::odd_char(name) {
        return Err(ScimError::invalid_value(format!(
            "`{attr}` contains U+{:04X}, which is not allowed",
            u32::from(c)
        )));
    }
    Ok(())
}

fn check_required(kind: ResourceKind, core: &Map<String, Value>) -> Result<(), ScimError> {
    for schema in schemas_of(kind) {
        let fields =
            if schema.id == kind.schema() { Some(core) } else { core.get(schema.id).and_then(Value::as_object) };
        for def in schema.attributes.iter().filter(|a| a.required) {
            if fields.and_then(|f| f.get(def.name)).is_none() {
                return Err(ScimError::invalid_value(format!("`{}` is required", def.name)));
            }
        }
    }
    Ok(())
}
