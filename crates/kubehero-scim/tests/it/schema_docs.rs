//! The discovery documents (RFC 7643 §5–§7): well-formed, self-consistent, and advertising what is stored.

use kubehero_scim::{
    resource_type, resource_types, schema, schemas, service_provider_config, ResourceKind, ENTERPRISE_USER_SCHEMA,
    GROUP_SCHEMA, RESOURCE_TYPE_SCHEMA, SCHEMA_SCHEMA, SERVICE_PROVIDER_CONFIG, USER_SCHEMA,
};
use serde_json::Value;

const BASE: &str = "https://kh.example.com/scim/v2";

fn attr<'a>(schema: &'a Value, name: &str) -> &'a Value {
    schema["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("{} has no attribute {name}", schema["id"]))
}

fn sub<'a>(attr: &'a Value, name: &str) -> &'a Value {
    attr["subAttributes"].as_array().unwrap().iter().find(|a| a["name"] == name).unwrap()
}

fn check_attribute(attr: &Value, depth: usize) {
    let name = attr["name"].as_str().expect("name");
    let ty = attr["type"].as_str().expect("type");
    assert!(["string", "boolean", "complex", "reference", "dateTime"].contains(&ty), "{name}: type {ty}");
    assert!(attr["multiValued"].is_boolean(), "{name}");
    assert!(attr["required"].is_boolean(), "{name}");
    assert!(attr["description"].as_str().is_some_and(|d| !d.is_empty()), "{name}");
    let mutability = attr["mutability"].as_str().unwrap();
    assert!(["readOnly", "readWrite", "immutable", "writeOnly"].contains(&mutability), "{name}");
    let returned = attr["returned"].as_str().unwrap();
    assert!(["always", "default", "never", "request"].contains(&returned), "{name}");
    if ty == "complex" {
        assert_eq!(depth, 0, "{name}: complex sub-attributes are not allowed (RFC 7643 §2.3.8)");
        let subs = attr["subAttributes"].as_array().expect("subAttributes");
        assert!(!subs.is_empty(), "{name}");
        for sub in subs {
            check_attribute(sub, depth + 1);
        }
    } else {
        assert!(attr.get("subAttributes").is_none(), "{name}");
        assert!(attr["caseExact"].is_boolean(), "{name}");
        let uniqueness = attr["uniqueness"].as_str().unwrap();
        assert!(["none", "server", "global"].contains(&uniqueness), "{name}");
    }
    if ty == "reference" {
        assert!(!attr["referenceTypes"].as_array().unwrap().is_empty(), "{name}");
    } else {
        assert!(attr.get("referenceTypes").is_none(), "{name}");
    }
    if let Some(values) = attr.get("canonicalValues") {
        assert!(values.as_array().unwrap().iter().all(Value::is_string), "{name}");
    }
}

#[test]
fn schemas_are_well_formed() {
    let all = schemas(BASE);
    let ids: Vec<&str> = all.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [USER_SCHEMA, ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA]);
    for doc in &all {
        assert_eq!(doc["schemas"], serde_json::json!([SCHEMA_SCHEMA]));
        assert!(doc["name"].is_string());
        assert_eq!(doc["meta"]["resourceType"], "Schema");
        assert_eq!(doc["meta"]["location"], format!("{BASE}/Schemas/{}", doc["id"].as_str().unwrap()));
        let attrs = doc["attributes"].as_array().unwrap();
        let mut names: Vec<String> = attrs.iter().map(|a| a["name"].as_str().unwrap().to_lowercase()).collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "duplicate attribute names (case-insensitively) in {}", doc["id"]);
        for attr in attrs {
            check_attribute(attr, 0);
        }
        // `id` and `meta` are common attributes, not advertised; `externalId` is.
        assert!(!names.contains(&"id".to_owned()) && !names.contains(&"meta".to_owned()));
        // The single lookup returns the same document, case-insensitively.
        let id = doc["id"].as_str().unwrap();
        assert_eq!(schema(BASE, id).as_ref(), Some(doc));
        assert_eq!(schema(BASE, &id.to_uppercase()).as_ref(), Some(doc));
    }
    assert_eq!(schema(BASE, "urn:ietf:params:scim:schemas:core:2.0:Nope"), None);
}

#[test]
fn user_schema_characteristics() {
    let user = schema(BASE, USER_SCHEMA).unwrap();
    let user_name = attr(&user, "userName");
    assert_eq!(user_name["required"], true);
    assert_eq!(user_name["uniqueness"], "server");
    assert_eq!(user_name["caseExact"], false);
    let external_id = attr(&user, "externalId");
    assert_eq!(external_id["caseExact"], true);
    assert_eq!(external_id["mutability"], "readWrite");
    assert_eq!(attr(&user, "active")["type"], "boolean");
    let emails = attr(&user, "emails");
    assert_eq!(emails["multiValued"], true);
    assert_eq!(sub(emails, "type")["canonicalValues"], serde_json::json!(["work", "home", "other"]));
    assert_eq!(sub(emails, "primary")["type"], "boolean");
    let groups = attr(&user, "groups");
    assert_eq!(groups["mutability"], "readOnly");
    assert!(groups["subAttributes"].as_array().unwrap().iter().all(|s| s["mutability"] == "readOnly"));
    let name = attr(&user, "name");
    for part in ["formatted", "familyName", "givenName", "middleName", "honorificPrefix", "honorificSuffix"] {
        assert_eq!(sub(name, part)["mutability"], "readWrite");
    }
    // Only what is stored is advertised.
    for absent in ["password", "phoneNumbers", "addresses", "photos", "x509Certificates", "profileUrl"] {
        assert!(user["attributes"].as_array().unwrap().iter().all(|a| a["name"] != absent), "{absent}");
    }
}

#[test]
fn enterprise_and_group_schema_characteristics() {
    let enterprise = schema(BASE, ENTERPRISE_USER_SCHEMA).unwrap();
    for name in ["employeeNumber", "costCenter", "organization", "division", "department"] {
        assert_eq!(attr(&enterprise, name)["type"], "string");
    }
    let manager = attr(&enterprise, "manager");
    assert_eq!(sub(manager, "value")["mutability"], "readWrite");
    assert_eq!(sub(manager, "displayName")["mutability"], "readOnly");
    assert_eq!(sub(manager, "$ref")["referenceTypes"], serde_json::json!(["User"]));

    let group = schema(BASE, GROUP_SCHEMA).unwrap();
    assert_eq!(attr(&group, "displayName")["required"], true);
    let members = attr(&group, "members");
    assert_eq!(members["multiValued"], true);
    assert_eq!(sub(members, "value")["mutability"], "immutable");
    assert_eq!(sub(members, "value")["caseExact"], true);
    assert_eq!(sub(members, "display")["mutability"], "readOnly");
    assert_eq!(sub(members, "type")["canonicalValues"], serde_json::json!(["User"]));
    assert_eq!(sub(members, "$ref")["referenceTypes"], serde_json::json!(["User"]));
    assert_eq!(attr(&group, "externalId")["caseExact"], true);
}

#[test]
fn resource_types_point_at_served_schemas() {
    let types = resource_types(&format!("{BASE}/"));
    assert_eq!(types.len(), 2);
    for (doc, kind) in types.iter().zip(ResourceKind::ALL) {
        assert_eq!(doc["schemas"], serde_json::json!([RESOURCE_TYPE_SCHEMA]));
        assert_eq!(doc["id"], kind.name());
        assert_eq!(doc["name"], kind.name());
        assert_eq!(doc["endpoint"], kind.endpoint());
        assert_eq!(doc["schema"], kind.schema());
        assert!(schema(BASE, doc["schema"].as_str().unwrap()).is_some());
        for ext in doc["schemaExtensions"].as_array().into_iter().flatten() {
            assert_eq!(ext["required"], false);
            assert!(schema(BASE, ext["schema"].as_str().unwrap()).is_some());
        }
        assert_eq!(doc["meta"]["resourceType"], "ResourceType");
        assert_eq!(doc["meta"]["location"], format!("{BASE}/ResourceTypes/{}", kind.name()));
        assert_eq!(resource_type(BASE, kind.name()).as_ref(), Some(doc));
    }
    assert_eq!(types[0]["schemaExtensions"][0]["schema"], ENTERPRISE_USER_SCHEMA);
    assert_eq!(resource_type(BASE, "group").unwrap()["id"], "Group");
    assert_eq!(resource_type(BASE, "Device"), None);
    assert_eq!(ResourceKind::User.endpoint(), "/Users");
    assert_eq!(ResourceKind::Group.name(), "Group");
}

#[test]
fn service_provider_config_advertises_the_supported_features() {
    let config = service_provider_config(BASE);
    assert_eq!(config["schemas"], serde_json::json!([SERVICE_PROVIDER_CONFIG]));
    assert_eq!(config["patch"]["supported"], true);
    assert_eq!(config["bulk"]["supported"], false);
    assert_eq!(config["filter"]["supported"], true);
    assert_eq!(config["filter"]["maxResults"], 1000);
    assert_eq!(config["changePassword"]["supported"], false);
    assert_eq!(config["sort"]["supported"], false);
    assert_eq!(config["etag"]["supported"], true);
    assert_eq!(config["authenticationSchemes"][0]["type"], "oauthbearertoken");
    assert_eq!(config["meta"]["resourceType"], "ServiceProviderConfig");
    assert_eq!(config["meta"]["location"], format!("{BASE}/ServiceProviderConfig"));
}

#[test]
fn case_exact_follows_the_schema() {
    use kubehero_scim::{case_exact, matches_with, Filter};
    let user = serde_json::json!({
        "id": "AbC", "externalId": "Ext-1", "userName": "BJensen",
        ENTERPRISE_USER_SCHEMA: { "manager": { "value": "Boss-1" }, "department": "Tour" }
    });
    let rules = case_exact(ResourceKind::User);
    let check = |filter: &str| matches_with(&Filter::parse(filter).unwrap(), &user, &rules);
    assert!(check("userName eq \"bjensen\""), "userName is caseExact false");
    assert!(!check("id eq \"abc\""));
    assert!(!check("externalId eq \"ext-1\""));
    assert!(check("externalId eq \"Ext-1\""));
    assert!(!check("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"boss-1\""));
    assert!(check("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq \"TOUR\""));

    let group = serde_json::json!({ "displayName": "Ops", "members": [{ "value": "U-1" }] });
    let rules = case_exact(ResourceKind::Group);
    assert!(!matches_with(&Filter::parse("members[value eq \"u-1\"]").unwrap(), &group, &rules));
    assert!(matches_with(&Filter::parse("members.value eq \"U-1\"").unwrap(), &group, &rules));
    assert!(matches_with(&Filter::parse("displayName eq \"OPS\"").unwrap(), &group, &rules));
}
