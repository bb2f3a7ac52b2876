//! SCIM 2.0 protocol core for KubeHero (RFC 7643, RFC 7644): filter expressions and PATCH paths.
//!
//! This crate does no I/O. Its parsers take untrusted text straight from the `filter` query parameter and from
//! PATCH request bodies, so they never panic, bound their input ([`filter::MAX_FILTER_LEN`]) and their nesting
//! ([`filter::MAX_DEPTH`]), and report every failure as a [`FilterError`] with a byte position.

pub mod filter;
pub mod path;

pub use filter::{matches, matches_with, AttrPath, CaseExact, CompValue, CompareOp, Filter, FilterError};
pub use path::PatchPath;
