//! SCIM schema URNs, resource kinds and the discovery documents of RFC 7644 §4: `/ServiceProviderConfig`,
//! `/ResourceTypes` and `/Schemas` (RFC 7643 §5, §6, §7).
//!
//! The `/Schemas` documents are generated from the same attribute table ([`defs`]) that validation, PATCH and
//! projection use, so what is advertised is exactly what is stored: compliance suites such as `scim2-tester`
//! write every advertised mutable attribute and expect to read it back unchanged.

pub(crate) mod defs;

use serde_json::{json, Map, Value};

use defs::{AttrDef, AttrType, SchemaDef};

/// Core User schema (RFC 7643 §4.1).
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Enterprise User extension (RFC 7643 §4.3).
pub const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// Core Group schema (RFC 7643 §4.2).
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// List response message (RFC 7644 §3.4.2).
pub const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// PATCH request message (RFC 7644 §3.5.2).
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// `/.search` request message (RFC 7644 §3.4.3).
pub const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
/// Error response message (RFC 7644 §3.12).
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// Service provider configuration (RFC 7643 §5).
pub const SERVICE_PROVIDER_CONFIG: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
/// Resource type (RFC 7643 §6).
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
/// Schema definition (RFC 7643 §7).
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// Most resources one list or search response returns (`filter.maxResults` in `/ServiceProviderConfig`).
pub const MAX_RESULTS: usize = 1000;

static USER_EXTENSIONS: [&SchemaDef; 1] = [&defs::ENTERPRISE_USER];

/// The resource types KubeHero serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// `/Users`, core User schema plus the Enterprise User extension.
    User,
    /// `/Groups`, core Group schema.
    Group,
}

impl ResourceKind {
    /// Both kinds, in `/ResourceTypes` order.
    pub const ALL: [ResourceKind; 2] = [Self::User, Self::Group];

    /// The core schema URN.
    pub fn schema(self) -> &'static str {
        match self {
            Self::User => USER_SCHEMA,
            Self::Group => GROUP_SCHEMA,
        }
    }

    /// The schema extension URNs the resource type accepts.
    pub fn extension_schemas(self) -> &'static [&'static str] {
        match self {
            Self::User => &[ENTERPRISE_USER_SCHEMA],
            Self::Group => &[],
        }
    }

    /// The endpoint relative to the SCIM base: `/Users` or `/Groups`.
    pub fn endpoint(self) -> &'static str {
        match self {
            Self::User => "/Users",
            Self::Group => "/Groups",
        }
    }

    /// The resource type name (and `meta.resourceType`): `User` or `Group`.
    pub fn name(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Group => "Group",
        }
    }

    pub(crate) fn core(self) -> &'static SchemaDef {
        match self {
            Self::User => &defs::USER,
            Self::Group => &defs::GROUP,
        }
    }

    pub(crate) fn extensions(self) -> &'static [&'static SchemaDef] {
        match self {
            Self::User => &USER_EXTENSIONS,
            Self::Group => &[],
        }
    }

    /// The extension whose URN is `urn`, compared case-insensitively.
    pub(crate) fn extension(self, urn: &str) -> Option<&'static SchemaDef> {
        self.extensions().iter().copied().find(|ext| ext.id.eq_ignore_ascii_case(urn))
    }

    fn description(self) -> &'static str {
        match self {
            Self::User => "User Account",
            Self::Group => "Group",
        }
    }
}

fn trim_base(base: &str) -> &str {
    base.trim_end_matches('/')
}

fn meta(resource_type: &str, location: String) -> Value {
    json!({ "resourceType": resource_type, "location": location })
}

/// `/ServiceProviderConfig` (RFC 7643 §5): PATCH, filtering (up to [`MAX_RESULTS`]) and ETags are supported;
/// bulk, sorting and password change are not; clients authenticate with an OAuth bearer token (RFC 6750).
/// `base` is the SCIM base URL, e.g. `https://kubehero.example.com/scim/v2`.
pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": [SERVICE_PROVIDER_CONFIG],
        "patch": { "supported": true },
        "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
        "filter": { "supported": true, "maxResults": MAX_RESULTS },
        "changePassword": { "supported": false },
        "sort": { "supported": false },
        "etag": { "supported": true },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token in the Authorization header (RFC 6750).",
            "specUri": "https://www.rfc-editor.org/rfc/rfc6750",
            "primary": true
        }],
        "meta": meta("ServiceProviderConfig", format!("{}/ServiceProviderConfig", trim_base(base))),
    })
}

fn resource_type_doc(base: &str, kind: ResourceKind) -> Value {
    let mut doc = json!({
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": kind.name(),
        "name": kind.name(),
        "endpoint": kind.endpoint(),
        "description": kind.description(),
        "schema": kind.schema(),
        "meta": meta("ResourceType", format!("{}/ResourceTypes/{}", trim_base(base), kind.name())),
    });
    let extensions: Vec<Value> =
        kind.extension_schemas().iter().map(|urn| json!({ "schema": urn, "required": false })).collect();
    if let (false, Some(map)) = (extensions.is_empty(), doc.as_object_mut()) {
        map.insert("schemaExtensions".to_owned(), Value::Array(extensions));
    }
    doc
}

/// `/ResourceTypes` (RFC 7643 §6): `User` (with the Enterprise User extension, not required) and `Group`.
pub fn resource_types(base: &str) -> Vec<Value> {
    ResourceKind::ALL.into_iter().map(|kind| resource_type_doc(base, kind)).collect()
}

/// `/ResourceTypes/{id}`; `id` is `User` or `Group`, compared case-insensitively.
pub fn resource_type(base: &str, id: &str) -> Option<Value> {
    ResourceKind::ALL.into_iter().find(|kind| kind.name().eq_ignore_ascii_case(id)).map(|k| resource_type_doc(base, k))
}

fn all_schemas() -> [&'static SchemaDef; 3] {
    [&defs::USER, &defs::ENTERPRISE_USER, &defs::GROUP]
}

fn attribute_doc(def: &AttrDef) -> Value {
    let mut map = Map::new();
    map.insert("name".to_owned(), json!(def.name));
    map.insert("type".to_owned(), json!(def.ty.as_str()));
    map.insert("multiValued".to_owned(), json!(def.multi_valued));
    map.insert("description".to_owned(), json!(def.description));
    map.insert("required".to_owned(), json!(def.required));
    if !def.is_complex() {
        map.insert("caseExact".to_owned(), json!(def.case_exact));
    }
    if !def.canonical_values.is_empty() {
        map.insert("canonicalValues".to_owned(), json!(def.canonical_values));
    }
    if def.ty == AttrType::Reference {
        map.insert("referenceTypes".to_owned(), json!(def.reference_types));
    }
    map.insert("mutability".to_owned(), json!(def.mutability.as_str()));
    map.insert("returned".to_owned(), json!(def.returned.as_str()));
    if !def.is_complex() {
        map.insert("uniqueness".to_owned(), json!(def.uniqueness.as_str()));
    }
    if def.is_complex() {
        let subs: Vec<Value> = def.sub_attributes.iter().filter(|s| s.advertised).map(attribute_doc).collect();
        map.insert("subAttributes".to_owned(), Value::Array(subs));
    }
    Value::Object(map)
}

fn schema_doc(base: &str, def: &SchemaDef) -> Value {
    let attributes: Vec<Value> = def.attributes.iter().filter(|a| a.advertised).map(attribute_doc).collect();
    json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": def.id,
        "name": def.name,
        "description": def.description,
        "attributes": attributes,
        "meta": meta("Schema", format!("{}/Schemas/{}", trim_base(base), def.id)),
    })
}

/// `/Schemas` (RFC 7643 §7): core User, Enterprise User and core Group, each listing only the attributes
/// KubeHero stores.
pub fn schemas(base: &str) -> Vec<Value> {
    all_schemas().into_iter().map(|def| schema_doc(base, def)).collect()
}

/// `/Schemas/{id}`; `id` is a schema URN, compared case-insensitively.
pub fn schema(base: &str, id: &str) -> Option<Value> {
    all_schemas().into_iter().find(|def| def.id.eq_ignore_ascii_case(id)).map(|def| schema_doc(base, def))
}
