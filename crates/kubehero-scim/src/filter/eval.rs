//! Evaluating a [`Filter`] against a JSON resource, with the SCIM matching rules of RFC 7644 §3.4.2.2 and
//! RFC 7643 §2:
//!
//! - attribute names match case-insensitively;
//! - strings compare case-insensitively unless the attribute is `caseExact` ([`CaseExact`]);
//! - a multi-valued attribute matches when any of its values matches; a complex value with no sub-attribute
//!   named is compared through its `value` sub-attribute;
//! - unassigned, `null` and `[]` are the same state (RFC 7643 §2.5): `x eq null` holds for all three, and
//!   `pr` holds only for a value that is not null and not empty;
//! - `ne` is the negation of `eq` over the whole attribute, so an absent attribute is `ne` any literal;
//! - `gt`/`ge`/`lt`/`le` order strings (ISO 8601 date-times included) and numbers; booleans and `null` are
//!   never ordered, and a comparison between different JSON types never matches.
//!
//! An extension attribute (`urn:…:enterprise:2.0:User:employeeNumber`) is looked up under the object keyed by
//! its schema URI; a core-schema URI (`urn:ietf:params:scim:schemas:core:…`) refers to top-level attributes.
//!
//! The recursion follows the AST, whose depth the parser bounds.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

use super::{AttrPath, CompValue, CompareOp, Filter};

const CORE_SCHEMA_PREFIX: &str = "urn:ietf:params:scim:schemas:core:";

/// The attribute paths whose strings compare case-sensitively (`caseExact: true` in the schema).
///
/// Paths are `name` or `parent.sub` without a schema URI, matched case-insensitively; attributes inside a
/// value filter are named through their parent (`emails[value eq …]` checks `emails.value`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseExact {
    paths: Vec<String>,
}

impl CaseExact {
    /// The given paths, e.g. `["id", "externalId", "members.value"]`.
    pub fn new<I, S>(paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self { paths: paths.into_iter().map(|p| p.as_ref().to_ascii_lowercase()).collect() }
    }

    /// The common attributes RFC 7643 §3.1 marks `caseExact`: `id` and `externalId`.
    pub fn rfc7643_common() -> Self {
        Self::new(["id", "externalId"])
    }

    fn contains(&self, path: &str) -> bool {
        self.paths.iter().any(|p| p.eq_ignore_ascii_case(path))
    }
}

/// Whether `resource` matches `filter`, with [`CaseExact::rfc7643_common`].
pub fn matches(filter: &Filter, resource: &Value) -> bool {
    matches_with(filter, resource, &CaseExact::rfc7643_common())
}

/// Whether `resource` matches `filter`, comparing the attributes in `case_exact` case-sensitively.
pub fn matches_with(filter: &Filter, resource: &Value, case_exact: &CaseExact) -> bool {
    eval(filter, resource, None, case_exact)
}

fn eval(filter: &Filter, node: &Value, parent: Option<&str>, case_exact: &CaseExact) -> bool {
    match filter {
        Filter::And(l, r) => eval(l, node, parent, case_exact) && eval(r, node, parent, case_exact),
        Filter::Or(l, r) => eval(l, node, parent, case_exact) || eval(r, node, parent, case_exact),
        Filter::Not(inner) => !eval(inner, node, parent, case_exact),
        Filter::Present(path) => resolve(node, path).into_iter().any(is_present),
        Filter::Compare { path, op, value } => {
            let exact = case_exact.contains(&schema_free_path(parent, path));
            compare_attr(&resolve(node, path), *op, value, exact)
        }
        Filter::ValuePath { path, filter } => {
            let parent = schema_free_path(parent, path);
            resolve(node, path)
                .into_iter()
                .any(|value| value.is_object() && eval(filter, value, Some(&parent), case_exact))
        }
    }
}

fn schema_free_path(parent: Option<&str>, path: &AttrPath) -> String {
    let mut out = parent.map(|p| format!("{p}.")).unwrap_or_default();
    out.push_str(&path.name);
    if let Some(sub) = &path.sub_attr {
        out.push('.');
        out.push_str(sub);
    }
    out
}

fn get_ci<'v>(node: &'v Value, key: &str) -> Option<&'v Value> {
    let map: &Map<String, Value> = node.as_object()?;
    map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

/// Pushes a value, or each element of an array.
fn push_flat<'v>(value: Option<&'v Value>, out: &mut Vec<&'v Value>) {
    match value {
        Some(Value::Array(items)) => out.extend(items),
        Some(value) => out.push(value),
        None => {}
    }
}

/// Every value the path names in `node`, multi-valued attributes flattened.
fn resolve<'v>(node: &'v Value, path: &AttrPath) -> Vec<&'v Value> {
    let base = match &path.uri {
        None => Some(node),
        Some(uri) => match get_ci(node, uri) {
            Some(extension) => Some(extension),
            None if uri.len() >= CORE_SCHEMA_PREFIX.len()
                && uri.get(..CORE_SCHEMA_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(CORE_SCHEMA_PREFIX)) =>
            {
                Some(node)
            }
            None => None,
        },
    };
    let mut values = Vec::new();
    push_flat(base.and_then(|b| get_ci(b, &path.name)), &mut values);
    match &path.sub_attr {
        None => values,
        Some(sub) => {
            let mut subs = Vec::new();
            for value in values {
                push_flat(get_ci(value, sub), &mut subs);
            }
            subs
        }
    }
}

fn is_present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => items.iter().any(is_present),
        Value::Object(map) => map.values().any(is_present),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

fn compare_attr(values: &[&Value], op: CompareOp, literal: &CompValue, exact: bool) -> bool {
    match (op, literal) {
        (CompareOp::Eq, CompValue::Null) => !values.iter().any(|v| is_present(v)),
        (CompareOp::Ne, CompValue::Null) => values.iter().any(|v| is_present(v)),
        (_, CompValue::Null) => false,
        (CompareOp::Ne, _) => !values.iter().any(|v| compare_one(v, CompareOp::Eq, literal, exact)),
        _ => values.iter().any(|v| compare_one(v, op, literal, exact)),
    }
}

fn compare_one(value: &Value, op: CompareOp, literal: &CompValue, exact: bool) -> bool {
    let value = match value {
        Value::Object(_) => match get_ci(value, "value") {
            Some(inner) => inner,
            None => return false,
        },
        other => other,
    };
    match (value, literal) {
        (Value::String(a), CompValue::String(b)) => compare_strings(a, b, op, exact),
        (Value::Number(a), CompValue::Number(b)) => compare_numbers(a, b).is_some_and(|ord| ordered(op, ord)),
        (Value::Bool(a), CompValue::Bool(b)) => op == CompareOp::Eq && a == b,
        _ => false,
    }
}

fn compare_strings(a: &str, b: &str, op: CompareOp, exact: bool) -> bool {
    let (a, b): (Cow<'_, str>, Cow<'_, str>) =
        if exact { (a.into(), b.into()) } else { (a.to_lowercase().into(), b.to_lowercase().into()) };
    match op {
        CompareOp::Co => a.contains(b.as_ref()),
        CompareOp::Sw => a.starts_with(b.as_ref()),
        CompareOp::Ew => a.ends_with(b.as_ref()),
        _ => ordered(op, a.cmp(&b)),
    }
}

fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// Whether `ord` (value compared with literal) satisfies an ordering or equality operator.
fn ordered(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}
