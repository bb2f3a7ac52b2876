//! SCIM filter expressions (RFC 7644 §3.4.2.2): the AST, its parser and a canonical `Display`.
//!
//! Security rules: the input is untrusted (the `filter` query parameter, `/.search` bodies, PATCH paths).
//! The parser never panics and never indexes: it reads bytes through `get`, rejects input longer than
//! [`MAX_FILTER_LEN`] bytes and nesting deeper than [`MAX_DEPTH`] (parentheses, `not`, `[ ]`), so the AST it
//! returns is small enough to walk recursively. Every failure is a [`FilterError`] carrying a byte offset.
//!
//! Grammar (RFC 7644 Figure 1), with the precedence of §3.4.2.2: grouping, then `not`, then `and`, then `or`.
//!
//! ```text
//! FILTER    = attrExp / logExp / valuePath / *1"not" "(" FILTER ")"
//! valuePath = attrPath "[" valFilter "]"
//! valFilter = attrExp / logExp / *1"not" "(" valFilter ")"
//! attrExp   = (attrPath SP "pr") / (attrPath SP compareOp SP compValue)
//! logExp    = FILTER SP ("and" / "or") SP FILTER
//! compValue = false / null / true / number / string   ; JSON literals (RFC 8259)
//! attrPath  = [URI ":"] ATTRNAME *1subAttr
//! ATTRNAME  = ALPHA *(nameChar)
//! ```
//!
//! Keywords are case-insensitive (RFC 5234 quoted strings). Leniencies, each harmless: any run of ASCII
//! whitespace stands for `SP`, `and`/`or` may touch a parenthesis, and an attribute name may start with `$`
//! (RFC 7643 itself names `$ref`).

mod eval;
mod parse;

use std::fmt;
use std::str::FromStr;

use serde_json::Number;

pub use eval::{matches, matches_with, CaseExact};
pub(crate) use parse::Parser;

/// Longest filter (in bytes) the parser accepts.
pub const MAX_FILTER_LEN: usize = 8 * 1024;

/// Deepest nesting of `(`, `not (` and `[` the parser accepts.
pub const MAX_DEPTH: usize = 64;

/// A filter or PATCH path that does not parse. SCIM answers it with `400` and `scimType` `invalidFilter`
/// (for a filter) or `invalidPath` (for a PATCH path), RFC 7644 §3.12.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SCIM filter at byte {position}: {message}")]
pub struct FilterError {
    /// Byte offset in the input where the problem was found.
    pub position: usize,
    /// What was expected or what is wrong, for the client.
    pub message: String,
}

/// `[URI ":"] ATTRNAME ["." subAttr]`, e.g. `userName`, `name.familyName`,
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath {
    /// Schema URI prefix, without the trailing `:`.
    pub uri: Option<String>,
    /// Attribute name.
    pub name: String,
    /// Sub-attribute of a complex attribute.
    pub sub_attr: Option<String>,
}

impl AttrPath {
    /// A bare attribute name with no URI and no sub-attribute.
    pub fn new(name: impl Into<String>) -> Self {
        Self { uri: None, name: name.into(), sub_attr: None }
    }

    /// Parses a whole string as an attribute path.
    pub fn parse(s: &str) -> Result<Self, FilterError> {
        let mut parser = Parser::new(s)?;
        let path = parser.parse_attr_path()?;
        parser.expect_end("attribute path")?;
        Ok(path)
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(uri) = &self.uri {
            write!(f, "{uri}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub_attr {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// Attribute operators of RFC 7644 Table 3 (`pr` is [`Filter::Present`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `eq`: equal.
    Eq,
    /// `ne`: not equal.
    Ne,
    /// `co`: contains.
    Co,
    /// `sw`: starts with.
    Sw,
    /// `ew`: ends with.
    Ew,
    /// `gt`: greater than.
    Gt,
    /// `ge`: greater than or equal.
    Ge,
    /// `lt`: less than.
    Lt,
    /// `le`: less than or equal.
    Le,
}

impl CompareOp {
    const ALL: [CompareOp; 9] =
        [Self::Eq, Self::Ne, Self::Co, Self::Sw, Self::Ew, Self::Gt, Self::Ge, Self::Lt, Self::Le];

    /// The operator keyword in lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "eq",
            Self::Ne => "ne",
            Self::Co => "co",
            Self::Sw => "sw",
            Self::Ew => "ew",
            Self::Gt => "gt",
            Self::Ge => "ge",
            Self::Lt => "lt",
            Self::Le => "le",
        }
    }

    pub(crate) fn from_keyword(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str().eq_ignore_ascii_case(word))
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `compValue`: a JSON literal.
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A JSON number.
    Number(Number),
    /// A JSON string, escapes decoded.
    String(String),
}

impl fmt::Display for CompValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Number(n) => write!(f, "{n}"),
            Self::String(s) => write_json_string(f, s),
        }
    }
}

fn write_json_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if u32::from(c) < 0x20 => write!(f, "\\u{:04x}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// A parsed filter. `And`/`Or` chains are left-associative.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `attrPath op compValue`.
    Compare {
        /// The attribute compared.
        path: AttrPath,
        /// The operator.
        op: CompareOp,
        /// The literal compared against.
        value: CompValue,
    },
    /// `attrPath pr`.
    Present(AttrPath),
    /// `not (filter)`.
    Not(Box<Filter>),
    /// `filter and filter`.
    And(Box<Filter>, Box<Filter>),
    /// `filter or filter`.
    Or(Box<Filter>, Box<Filter>),
    /// `attrPath[valFilter]`: the inner filter applies to each value of a multi-valued complex attribute.
    ValuePath {
        /// The multi-valued attribute.
        path: AttrPath,
        /// The filter over its sub-attributes.
        filter: Box<Filter>,
    },
}

impl Filter {
    /// Parses a complete filter expression.
    pub fn parse(s: &str) -> Result<Self, FilterError> {
        Parser::new(s)?.parse_complete_filter()
    }
}

impl FromStr for Filter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Filter {
    /// Canonical form: lower-case keywords, one space, parentheses only where the AST needs them, so that
    /// `Filter::parse(&f.to_string()) == Ok(f)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Compare { path, op, value } => write!(f, "{path} {op} {value}"),
            Self::Present(path) => write!(f, "{path} pr"),
            Self::Not(inner) => write!(f, "not ({inner})"),
            Self::And(l, r) => {
                write_operand(f, l, matches!(**l, Self::Or(..)))?;
                f.write_str(" and ")?;
                write_operand(f, r, matches!(**r, Self::Or(..) | Self::And(..)))
            }
            Self::Or(l, r) => {
                write!(f, "{l} or ")?;
                write_operand(f, r, matches!(**r, Self::Or(..)))
            }
            Self::ValuePath { path, filter } => write!(f, "{path}[{filter}]"),
        }
    }
}

fn write_operand(f: &mut fmt::Formatter<'_>, operand: &Filter, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({operand})")
    } else {
        write!(f, "{operand}")
    }
}
