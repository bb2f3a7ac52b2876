//! What `/Schemas` advertises as writable round-trips exactly, the way `scim2-tester` checks it: values are
//! generated from the schema documents themselves, written by POST and by PATCH add/replace, read back, and
//! removed.
//!
//! The one exception is `members.$ref`: advertised (so the tester fills members with real users), accepted,
//! and not stored, because the server renders it as `{base}/Users/{value}`.

use kubehero_scim::{apply_patch, schema, validate, ResourceKind, ENTERPRISE_USER_SCHEMA, PATCH_OP};
use serde_json::{json, Map, Value};

const BASE: &str = "https://kh.example.com/scim/v2";

fn writable(attr: &Value) -> bool {
    attr["mutability"] != "readOnly"
}

/// A value for `attr` built from its schema document; `seed` varies it between writes.
fn generate(attr: &Value, seed: &str) -> Option<Value> {
    let name = attr["name"].as_str().unwrap();
    if !writable(attr) || name == "$ref" {
        return None;
    }
    let single = match attr["type"].as_str().unwrap() {
        "boolean" => json!(seed.len().is_multiple_of(2)),
        "complex" => {
            let subs: Map<String, Value> = attr["subAttributes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["name"] != "primary")
                .filter_map(|s| generate(s, seed).map(|v| (s["name"].as_str().unwrap().to_owned(), v)))
                .collect();
            Value::Object(subs)
        }
        _ => match attr["canonicalValues"].as_array() {
            Some(values) => values[seed.len() % values.len()].clone(),
            None => json!(format!("{name}-{seed}")),
        },
    };
    Some(if attr["multiValued"] == true { json!([single]) } else { single })
}

struct Attr {
    /// `None` for the core schema, else the extension URN.
    ext: Option<&'static str>,
    doc: Value,
}

impl Attr {
    fn name(&self) -> &str {
        self.doc["name"].as_str().unwrap()
    }
    fn path(&self) -> String {
        match self.ext {
            Some(urn) => format!("{urn}:{}", self.name()),
            None => self.name().to_owned(),
        }
    }
    fn read<'a>(&self, resource: &'a Value) -> Option<&'a Value> {
        match self.ext {
            Some(urn) => resource.get(urn)?.get(self.name()),
            None => resource.get(self.name()),
        }
    }
}

fn advertised(kind: ResourceKind) -> Vec<Attr> {
    let mut attrs = Vec::new();
    let schemas = std::iter::once((None, kind.schema()))
        .chain(kind.extension_schemas().iter().map(|urn| (Some(*urn), *urn)))
        .collect::<Vec<_>>();
    for (ext, urn) in schemas {
        let doc = schema(BASE, urn).unwrap();
        for attr in doc["attributes"].as_array().unwrap() {
            if writable(attr) {
                attrs.push(Attr { ext, doc: attr.clone() });
            }
        }
    }
    attrs
}

fn minimal(kind: ResourceKind) -> Value {
    match kind {
        ResourceKind::User => json!({ "schemas": [kind.schema()], "id": "1", "userName": "minimal" }),
        ResourceKind::Group => json!({ "schemas": [kind.schema()], "id": "1", "displayName": "minimal" }),
    }
}

fn patch(kind: ResourceKind, resource: &mut Value, op: &str, path: &str, value: Option<&Value>) {
    let mut operation = json!({ "op": op, "path": path });
    if let Some(value) = value {
        operation["value"] = value.clone();
    }
    let body = json!({ "schemas": [PATCH_OP], "Operations": [operation] });
    apply_patch(kind, resource, &body).unwrap_or_else(|e| panic!("{op} {path}: {e}"));
}

#[test]
fn every_writable_attribute_round_trips_through_patch() {
    for kind in ResourceKind::ALL {
        for attr in advertised(kind) {
            if attr.doc["required"] == true {
                continue;
            }
            let path = attr.path();
            let mut resource = minimal(kind);
            let first = generate(&attr.doc, "one").unwrap();
            patch(kind, &mut resource, "add", &path, Some(&first));
            assert_eq!(attr.read(&resource), Some(&first), "add {path}");

            let second = generate(&attr.doc, "second").unwrap();
            patch(kind, &mut resource, "replace", &path, Some(&second));
            assert_eq!(attr.read(&resource), Some(&second), "replace {path}");

            patch(kind, &mut resource, "remove", &path, None);
            assert_eq!(attr.read(&resource), None, "remove {path}");
            // Everything but `schemas`, which keeps an extension URN once listed.
            resource["schemas"] = minimal(kind)["schemas"].clone();
            assert_eq!(resource, minimal(kind), "remove {path} leaves the minimal resource");
        }
    }
}

#[test]
fn whole_extension_round_trips_through_patch() {
    let kind = ResourceKind::User;
    let extension: Map<String, Value> = advertised(kind)
        .into_iter()
        .filter(|a| a.ext.is_some())
        .map(|a| (a.name().to_owned(), generate(&a.doc, "ext").unwrap()))
        .collect();
    let extension = Value::Object(extension);
    let mut resource = minimal(kind);
    patch(kind, &mut resource, "add", ENTERPRISE_USER_SCHEMA, Some(&extension));
    assert_eq!(resource[ENTERPRISE_USER_SCHEMA], extension);
    patch(kind, &mut resource, "replace", ENTERPRISE_USER_SCHEMA, Some(&extension));
    assert_eq!(resource[ENTERPRISE_USER_SCHEMA], extension);
    patch(kind, &mut resource, "remove", ENTERPRISE_USER_SCHEMA, None);
    assert!(resource.get(ENTERPRISE_USER_SCHEMA).is_none());
}

#[test]
fn a_full_resource_round_trips_through_validate() {
    for kind in ResourceKind::ALL {
        let mut body = json!({ "schemas": [kind.schema()] });
        for attr in advertised(kind) {
            let value = generate(&attr.doc, "full").unwrap();
            match attr.ext {
                None => body[attr.name()] = value,
                Some(urn) => {
                    if body.get(urn).is_none() {
                        body[urn] = json!({});
                        body["schemas"].as_array_mut().unwrap().push(json!(urn));
                    }
                    body[urn][attr.name()] = value;
                }
            }
        }
        let stored = validate(kind, body.clone()).unwrap();
        assert_eq!(stored, body, "{kind:?}");
        // With the derived `members.$ref` the client may send, the stored resource is the same.
        if kind == ResourceKind::Group {
            let mut with_ref = body.clone();
            with_ref["members"][0]["$ref"] = json!(format!("{BASE}/Users/{}", body["members"][0]["value"]));
            assert_eq!(validate(kind, with_ref).unwrap(), body);
        }
    }
}
