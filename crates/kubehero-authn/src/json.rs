//! Strict JSON for JOSE headers, JWT claim sets, JWKS and discovery documents.
//!
//! Security rules (RFC 7515 §4 / RFC 7519 §4 / RFC 8725 §3.2 and §3.11): a JSON object with duplicate member
//! names is rejected at any depth rather than resolved "last one wins" (parsers that disagree on which
//! duplicate counts are a classic confusion attack); nesting deeper than [`MAX_DEPTH`] is rejected; the top
//! level must be an object; trailing data after the value and invalid UTF-8 are rejected.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::Cell;
use std::fmt;

/// The deepest nesting of arrays and objects accepted, counting the top-level object as 1.
pub const MAX_DEPTH: usize = 32;

/// Why a document was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not valid JSON (syntax, invalid UTF-8, lone surrogate, trailing data).
    #[error("invalid JSON")]
    Syntax,
    /// An object repeats a member name.
    #[error("duplicate JSON member name")]
    DuplicateMember,
    /// Arrays/objects nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested too deeply")]
    TooDeep,
    /// The top-level value is not an object.
    #[error("JSON value is not an object")]
    NotObject,
}

impl JsonError {
    /// A static description, for [`crate::AuthnError::Malformed`].
    pub fn as_str(self) -> &'static str {
        match self {
            JsonError::Syntax => "invalid JSON",
            JsonError::DuplicateMember => "duplicate JSON member name",
            JsonError::TooDeep => "JSON nested too deeply",
            JsonError::NotObject => "JSON value is not an object",
        }
    }
}

/// Parses `bytes` as one JSON object under the strict rules above.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, JsonError> {
    // Cheap pre-check so that `[[[[...` or `"..."` never builds anything.
    match bytes.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        Some(b'{') => {}
        Some(_) => return Err(JsonError::NotObject),
        None => return Err(JsonError::Syntax),
    }
    let failure = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = match (Strict { depth: 0, failure: &failure }).deserialize(&mut de) {
        Ok(v) => v,
        Err(_) => return Err(failure.get().unwrap_or(JsonError::Syntax)),
    };
    de.end().map_err(|_| JsonError::Syntax)?;
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(JsonError::NotObject),
    }
}

/// A seed that builds a [`Value`] while enforcing the strict rules; records the first failure in `failure`
/// because serde's error type can only carry text.
struct Strict<'c> {
    depth: usize,
    failure: &'c Cell<Option<JsonError>>,
}

impl Strict<'_> {
    fn fail<E: de::Error>(&self, e: JsonError) -> E {
        if self.failure.get().is_none() {
            self.failure.set(Some(e));
        }
        E::custom(e.as_str())
    }

    fn nested(&self) -> Self {
        Strict { depth: self.depth + 1, failure: self.failure }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| self.fail(JsonError::Syntax))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(self.fail(JsonError::TooDeep));
        }
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.nested())? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(self.fail(JsonError::TooDeep));
        }
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(self.fail(JsonError::DuplicateMember));
            }
            let value = map.next_value_seed(self.nested())?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_objects() {
        let m = parse_object(br#" {"a":1,"b":[true,null,"x",1.5],"c":{"d":-2}} "#).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m["c"]["d"], -2);
    }

    #[test]
    fn rejects_duplicates_at_any_depth() {
        assert_eq!(parse_object(br#"{"a":1,"a":2}"#), Err(JsonError::DuplicateMember));
        assert_eq!(parse_object(br#"{"x":{"a":1,"a":1}}"#), Err(JsonError::DuplicateMember));
        assert_eq!(parse_object(br#"{"x":[{"b":{"a":1,"a":1}}]}"#), Err(JsonError::DuplicateMember));
        // The same name spelled with an escape is still the same name.
        assert_eq!(parse_object(br#"{"alg":1,"\u0061lg":2}"#), Err(JsonError::DuplicateMember));
    }

    #[test]
    fn rejects_non_objects_and_trailing_data() {
        for doc in [&b"[]"[..], b"\"x\"", b"1", b"null", b"true"] {
            assert_eq!(parse_object(doc), Err(JsonError::NotObject), "{doc:?}");
        }
        assert_eq!(parse_object(b""), Err(JsonError::Syntax));
        assert_eq!(parse_object(b"{} {}"), Err(JsonError::Syntax));
        assert_eq!(parse_object(b"{}x"), Err(JsonError::Syntax));
        assert_eq!(parse_object(b"{\"a\":1,}"), Err(JsonError::Syntax));
        assert_eq!(parse_object(b"{\"a\":\xff}"), Err(JsonError::Syntax));
        assert_eq!(parse_object(b"{\"a\xff\":1}"), Err(JsonError::Syntax));
        assert_eq!(parse_object(br#"{"a":"\ud800"}"#), Err(JsonError::Syntax));
    }

    #[test]
    fn depth_limit() {
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        assert!(parse_object(ok.as_bytes()).is_ok());
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(parse_object(deep.as_bytes()), Err(JsonError::TooDeep));
        let very_deep = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse_object(very_deep.as_bytes()), Err(JsonError::TooDeep));
    }
}
