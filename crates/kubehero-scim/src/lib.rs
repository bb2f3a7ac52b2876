//! SCIM 2.0 protocol core for KubeHero (RFC 7643, RFC 7644): filter expressions, PATCH paths, errors, the
//! discovery documents, and resource validation, PATCH and projection over JSON values.
//!
//! This crate does no I/O: the HTTP server stores users and groups as JSON objects and calls these pure
//! functions. Its parsers take untrusted text straight from the `filter` query parameter and from request
//! bodies, so they never panic, bound their input ([`filter::MAX_FILTER_LEN`]) and their nesting
//! ([`filter::MAX_DEPTH`]), and report every failure as a [`FilterError`] with a byte position or a
//! [`ScimError`] ready to send (RFC 7644 §3.12).

pub mod error;
pub mod filter;
pub mod path;
pub mod resource;
pub mod schema;

pub use error::ScimError;
pub use filter::{matches, matches_with, AttrPath, CaseExact, CompValue, CompareOp, Filter, FilterError};
pub use path::PatchPath;
pub use resource::{apply_patch, case_exact, member_only_ops, validate, MemberOp, Projection};
pub use schema::{
    resource_type, resource_types, schema, schemas, service_provider_config, ResourceKind, ENTERPRISE_USER_SCHEMA,
    ERROR_SCHEMA, GROUP_SCHEMA, LIST_RESPONSE, PATCH_OP, RESOURCE_TYPE_SCHEMA, SCHEMA_SCHEMA, SEARCH_REQUEST,
    SERVICE_PROVIDER_CONFIG, USER_SCHEMA,
};
