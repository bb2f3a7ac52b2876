//! `attributes` and `excludedAttributes` (RFC 7644 §3.4.2.5, §3.9) with the `returned` rules of RFC 7643 §7:
//! `always` attributes (`id`, `schemas`) are always returned, `never` ones never, `request` ones only when
//! named in `attributes`, `default` ones unless excluded or left out of `attributes`.

use serde_json::{Map, Value};

use crate::error::{excerpt, ScimError};
use crate::filter::AttrPath;
use crate::schema::defs::{AttrDef, Returned, SchemaDef};
use crate::schema::ResourceKind;

use super::schema_of;

/// Longest `attributes`/`excludedAttributes` value accepted, in bytes.
pub const MAX_PROJECTION_LEN: usize = 8 * 1024;

/// Most attribute paths one `attributes`/`excludedAttributes` value may list.
pub const MAX_PROJECTION_PATHS: usize = 256;

/// Which attributes a response carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    mode: Mode,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Mode {
    /// No parameter: every attribute returned by default.
    #[default]
    Default,
    /// `attributes`: only these, plus `returned: always`.
    Include(Vec<AttrPath>),
    /// `excludedAttributes`: the default set minus these (`returned: always` cannot be excluded).
    Exclude(Vec<AttrPath>),
}

impl Projection {
    /// From the `attributes` and `excludedAttributes` query parameters (or `/.search` members joined with
    /// commas): comma-separated attribute paths such as `userName`, `name.givenName`, `emails.value`,
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department` or a whole extension URN.
    /// When both are given, `attributes` wins (the RFC makes them mutually exclusive). A path that does not
    /// parse is 400 `invalidValue`; a well-formed name the schema does not have selects nothing.
    pub fn from_query(attributes: Option<&str>, excluded: Option<&str>) -> Result<Self, ScimError> {
        if let Some(list) = attributes.filter(|l| !l.trim().is_empty()) {
            return Ok(Self { mode: Mode::Include(parse_list("attributes", list)?) });
        }
        if let Some(list) = excluded.filter(|l| !l.trim().is_empty()) {
            return Ok(Self { mode: Mode::Exclude(parse_list("excludedAttributes", list)?) });
        }
        Ok(Self::default())
    }

    /// Whether this is the default projection (no parameter given).
    pub fn is_default(&self) -> bool {
        self.mode == Mode::Default
    }

    /// The part of `resource` (a stored resource of `kind`, with `id`, `meta`, …) the response carries.
    /// Complex attributes keep only the selected sub-attributes (`name.givenName`, `emails.value`); a complex
    /// value or extension object left empty is omitted.
    pub fn apply(&self, kind: ResourceKind, resource: &Value) -> Value {
        let Value::Object(fields) = resource else { return resource.clone() };
        let selections: Vec<Selection> = match &self.mode {
            Mode::Default => Vec::new(),
            Mode::Include(paths) | Mode::Exclude(paths) => paths.iter().filter_map(|p| resolve(kind, p)).collect(),
        };
        let mut out = Map::new();
        for (key, value) in fields {
            if key.eq_ignore_ascii_case("schemas") {
                out.insert(key.clone(), value.clone());
            } else if let Some(ext) = kind.extension(key) {
                if let Some(projected) = self.project_extension(ext, value, &selections) {
                    out.insert(key.clone(), projected);
                }
            } else if let Some(def) = kind.core().attr(key) {
                if let Some(projected) = self.project_attr(None, def, value, &selections) {
                    out.insert(key.clone(), projected);
                }
            } else if self.keeps_unlisted() {
                out.insert(key.clone(), value.clone());
            }
        }
        Value::Object(out)
    }

    fn keeps_unlisted(&self) -> bool {
        !matches!(self.mode, Mode::Include(_))
    }

    fn project_extension(&self, ext: &'static SchemaDef, value: &Value, selections: &[Selection]) -> Option<Value> {
        let Value::Object(fields) = value else {
            return self.keeps_unlisted().then(|| value.clone());
        };
        let mut out = Map::new();
        for (key, field) in fields {
            match ext.attr(key) {
                Some(def) => {
                    if let Some(projected) = self.project_attr(Some(ext), def, field, selections) {
                        out.insert(key.clone(), projected);
                    }
                }
                None if self.keeps_unlisted() => {
                    out.insert(key.clone(), field.clone());
                }
                None => {}
            }
        }
        (!out.is_empty()).then_some(Value::Object(out))
    }

    fn project_attr(
        &self,
        ext: Option<&'static SchemaDef>,
        def: &'static AttrDef,
        value: &Value,
        selections: &[Selection],
    ) -> Option<Value> {
        let schema = ext.map(|e| e.id);
        let whole = selections.iter().any(|s| match s {
            Selection::Extension(e) => Some(e.id) == schema,
            Selection::Attr { schema: s, def: d, sub: None } => *s == schema && d.name == def.name,
            Selection::Attr { .. } => false,
        });
        let subs: Vec<&str> = selections
            .iter()
            .filter_map(|s| match s {
                Selection::Attr { schema: s, def: d, sub: Some(sub) } if *s == schema && d.name == def.name => {
                    Some(sub.name)
                }
                _ => None,
            })
            .collect();
        match (def.returned, &self.mode) {
            (Returned::Never, _) => None,
            (Returned::Always, _) => keep_subs(def, value, &|s| s.returned != Returned::Never),
            (_, Mode::Include(_)) if whole => keep_subs(def, value, &|s| s.returned != Returned::Never),
            (_, Mode::Include(_)) if !subs.is_empty() => keep_subs(def, value, &|s| {
                s.returned == Returned::Always || (s.returned != Returned::Never && subs.contains(&s.name))
            }),
            (_, Mode::Include(_)) | (Returned::Request, _) => None,
            (_, Mode::Exclude(_)) if whole => None,
            (_, Mode::Default | Mode::Exclude(_)) => keep_subs(def, value, &|s| {
                s.returned == Returned::Always || (s.returned == Returned::Default && !subs.contains(&s.name))
            }),
        }
    }
}

/// A parsed selection resolved against the schema of a kind.
enum Selection {
    /// A whole extension object.
    Extension(&'static SchemaDef),
    /// An attribute (`schema` is `None` for the core schema), or one sub-attribute of it.
    Attr { schema: Option<&'static str>, def: &'static AttrDef, sub: Option<&'static AttrDef> },
}

fn resolve(kind: ResourceKind, path: &AttrPath) -> Option<Selection> {
    if let (Some(uri), None) = (&path.uri, &path.sub_attr) {
        if let Some(ext) = kind.extension(&format!("{uri}:{}", path.name)) {
            return Some(Selection::Extension(ext));
        }
    }
    let ext = schema_of(kind, path.uri.as_deref())?;
    let def = ext.unwrap_or(kind.core()).attr(&path.name)?;
    let sub = match &path.sub_attr {
        None => None,
        Some(name) => Some(def.sub(name)?),
    };
    Some(Selection::Attr { schema: ext.map(|e| e.id), def, sub })
}

fn parse_list(parameter: &str, list: &str) -> Result<Vec<AttrPath>, ScimError> {
    if list.len() > MAX_PROJECTION_LEN {
        return Err(ScimError::invalid_value(format!(
            "`{parameter}` is {} bytes, longer than the limit of {MAX_PROJECTION_LEN}",
            list.len()
        )));
    }
    let mut paths = Vec::new();
    for item in list.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        if paths.len() == MAX_PROJECTION_PATHS {
            return Err(ScimError::invalid_value(format!(
                "`{parameter}` lists more than {MAX_PROJECTION_PATHS} attributes"
            )));
        }
        let path = AttrPath::parse(item).map_err(|e| {
            ScimError::invalid_value(format!(
                "`{parameter}`: `{}` is not an attribute path: {}",
                excerpt(item),
                e.message
            ))
        })?;
        paths.push(path);
    }
    Ok(paths)
}

/// `value` with only the sub-attributes `keep` accepts (sub-attributes outside the schema are kept); a record
/// or complex value left empty is dropped.
fn keep_subs(def: &AttrDef, value: &Value, keep: &dyn Fn(&AttrDef) -> bool) -> Option<Value> {
    if !def.is_complex() {
        return Some(value.clone());
    }
    let keep_record = |record: &Value| -> Option<Value> {
        let Value::Object(fields) = record else { return Some(record.clone()) };
        let kept: Map<String, Value> =
            fields.iter().filter(|(k, _)| def.sub(k).is_none_or(keep)).map(|(k, v)| (k.clone(), v.clone())).collect();
        (!kept.is_empty()).then_some(Value::Object(kept))
    };
    match value {
        Value::Array(records) => {
            let kept: Vec<Value> = records.iter().filter_map(keep_record).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        other => keep_record(other),
    }
}
