//! Integration tests of kubehero-scim: the RFC 7644 filter corpus (valid and invalid), the evaluator on a
//! User resource, PATCH paths, errors, the discovery documents, resource validation, PATCH (with verbatim Okta
//! and Entra ID bodies), the members fast path, projection, and seeded never-panics loops over random and
//! mutated input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod errors;
mod eval;
mod filter_invalid;
mod filter_valid;
mod members;
mod no_panic;
mod patch_clients;
mod patch_ops;
mod path;
mod projection;
mod round_trip;
mod schema_docs;
mod support;
mod validate;
