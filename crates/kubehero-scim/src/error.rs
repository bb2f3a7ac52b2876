//! SCIM errors (RFC 7644 §3.12): an HTTP status, an optional `scimType` keyword and a human-readable detail.
//!
//! Security rules: a detail is shown to the client and may be logged, so it never quotes more than a short
//! excerpt ([`excerpt`], at most [`MAX_QUOTE_CHARS`] characters) of client input, and never a secret.

use std::fmt;

use serde_json::{json, Value};

use crate::filter::FilterError;
use crate::schema::ERROR_SCHEMA;

/// Most characters of client input a detail quotes.
pub const MAX_QUOTE_CHARS: usize = 48;

/// An error response of RFC 7644 §3.12. Built through the constructors, one per row of Table 9 plus the
/// plain HTTP statuses SCIM uses without a `scimType`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScimError {
    /// HTTP status code.
    pub status: u16,
    /// The `scimType` keyword of Table 9, when one applies.
    pub scim_type: Option<&'static str>,
    /// What went wrong, for the client.
    pub detail: String,
}

impl fmt::Display for ScimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scim_type {
            Some(scim_type) => write!(f, "SCIM {} {scim_type}: {}", self.status, self.detail),
            None => write!(f, "SCIM {}: {}", self.status, self.detail),
        }
    }
}

impl ScimError {
    fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self { status, scim_type, detail: detail.into() }
    }

    /// 400 `invalidFilter`: the filter syntax was invalid or the attribute and comparison combination is not
    /// supported.
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidFilter"), detail)
    }

    /// 400 `tooMany`: the filter yields more results than the server is willing to process.
    pub fn too_many(detail: impl Into<String>) -> Self {
        Self::new(400, Some("tooMany"), detail)
    }

    /// 409 `uniqueness`: one or more unique attribute values are already in use.
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::new(409, Some("uniqueness"), detail)
    }

    /// 400 `mutability`: the request tried to modify an immutable or read-only attribute.
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::new(400, Some("mutability"), detail)
    }

    /// 400 `invalidSyntax`: the request body is not a valid SCIM message.
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidSyntax"), detail)
    }

    /// 400 `invalidPath`: a PATCH `path` is invalid or malformed.
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidPath"), detail)
    }

    /// 400 `noTarget`: the PATCH path did not yield an attribute or value that could be operated on.
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::new(400, Some("noTarget"), detail)
    }

    /// 400 `invalidValue`: a required value is missing or a value does not fit the attribute.
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidValue"), detail)
    }

    /// 400 `invalidVers`: the specified SCIM protocol version is not supported.
    pub fn invalid_vers(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidVers"), detail)
    }

    /// 403 `sensitive`: the request put sensitive information in the request URI.
    pub fn sensitive(detail: impl Into<String>) -> Self {
        Self::new(403, Some("sensitive"), detail)
    }

    /// 404 with no `scimType`: the resource does not exist.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, None, detail)
    }

    /// 412 with no `scimType`: the `If-Match` version does not match (RFC 7644 §3.14).
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(412, None, detail)
    }

    /// 400 with no `scimType`: a bad request that no Table 9 keyword describes.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, None, detail)
    }

    /// A PATCH path that does not parse: 400 `invalidPath`, with the byte position.
    pub fn from_path_error(err: &FilterError) -> Self {
        Self::invalid_path(format!("invalid path at byte {}: {}", err.position, err.message))
    }

    /// The error response body: `{"schemas": [Error URN], "status": "400", "scimType": …, "detail": …}`.
    /// `status` is a string, as RFC 7644 §3.12 shows it.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let (Some(scim_type), Some(map)) = (self.scim_type, body.as_object_mut()) {
            map.insert("scimType".to_owned(), Value::String(scim_type.to_owned()));
        }
        body
    }
}

impl From<FilterError> for ScimError {
    /// A filter that does not parse: 400 `invalidFilter`, with the byte position.
    fn from(err: FilterError) -> Self {
        Self::invalid_filter(format!("invalid filter at byte {}: {}", err.position, err.message))
    }
}

/// Client input shortened for quoting in a detail: at most [`MAX_QUOTE_CHARS`] characters, control characters
/// replaced, `…` when cut.
pub fn excerpt(input: &str) -> String {
    let mut out: String =
        input.chars().take(MAX_QUOTE_CHARS).map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect();
    if input.chars().nth(MAX_QUOTE_CHARS).is_some() {
        out.push('…');
    }
    out
}
