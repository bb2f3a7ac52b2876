//! Integration tests of kubehero-scim: the RFC 7644 filter corpus (valid and invalid), the evaluator on a
//! User resource, PATCH paths, and a seeded never-panics loop over random and mutated input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod eval;
mod filter_invalid;
mod filter_valid;
mod no_panic;
mod path;
mod support;
