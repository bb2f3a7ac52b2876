//! PATCH operation paths (RFC 7644 §3.5.2):
//!
//! ```text
//! PATH = attrPath / valuePath [subAttr]
//! ```
//!
//! e.g. `name.familyName`, `members[value eq "2819c223"]`, `emails[type eq "work"].value`,
//! `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber`.
//!
//! Security rules: same as [`crate::filter`]: untrusted input, no panics, bounded length and nesting. A path
//! admits no surrounding whitespace. A failure is a [`FilterError`]; SCIM answers it with `scimType`
//! `invalidPath`.

use std::fmt;
use std::str::FromStr;

use crate::filter::{AttrPath, Filter, FilterError, Parser};

/// A parsed PATCH `path`.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchPath {
    /// An attribute, sub-attribute or extension attribute: `name.familyName`.
    Attr(AttrPath),
    /// Values of a multi-valued attribute selected by a filter, optionally one sub-attribute of them:
    /// `emails[type eq "work"].value`.
    ValuePath {
        /// The multi-valued attribute.
        attr: AttrPath,
        /// The filter that selects its values.
        filter: Filter,
        /// The sub-attribute after `]`.
        sub_attr: Option<String>,
    },
}

impl PatchPath {
    /// Parses a complete PATCH path.
    pub fn parse(s: &str) -> Result<Self, FilterError> {
        let mut parser = Parser::new(s)?;
        if parser.at_end() {
            return parser.fail(0, "empty path");
        }
        let attr = parser.parse_attr_path()?;
        let path = if parser.peek() == Some(b'[') {
            let filter = parser.parse_bracket()?;
            let sub_attr = if parser.peek() == Some(b'.') {
                parser.skip_byte();
                Some(parser.parse_name()?)
            } else {
                None
            };
            Self::ValuePath { attr, filter, sub_attr }
        } else {
            Self::Attr(attr)
        };
        parser.expect_end("path")?;
        Ok(path)
    }
}

impl FromStr for PatchPath {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attr(attr) => write!(f, "{attr}"),
            Self::ValuePath { attr, filter, sub_attr } => {
                write!(f, "{attr}[{filter}]")?;
                if let Some(sub) = sub_attr {
                    write!(f, ".{sub}")?;
                }
                Ok(())
            }
        }
    }
}
