//! Names with rules: a cluster's name is an RFC 1123 DNS label (it becomes a certificate CN, a path segment of
//! `/k8s/clusters/{name}/` and a kubeconfig context), and so is a Kubernetes namespace. And the one rule for
//! every other text a client sends ([`odd_char`]): no control characters and no bidirectional formatting
//! characters, which would let a name hide or reorder what an admin reads in a list or an audit row (and a NUL
//! is refused by PostgreSQL outright).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The first character of `s` that no text KubeHero stores may hold, if any: a control character (C0, DEL,
/// C1 — newlines and tabs included) or a bidirectional formatting character (U+061C, U+200E, U+200F,
/// U+202A–U+202E, U+2066–U+2069).
pub fn odd_char(s: &str) -> Option<char> {
    s.chars().find(|c| {
        c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

/// Whether raw JSON text holds a string with an [`odd_char`], written raw or as a `\u` escape. JSON forbids
/// raw control characters below U+0020 in strings, so raw bytes only matter for DEL, C1 and the bidi
/// characters; escapes are decoded (`\\u0000` is a backslash and text, not an escape).
pub fn json_has_odd_char(json: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(json) else { return false };
    // Raw newlines, returns and tabs can only be whitespace between tokens; any other odd character raw is
    // inside a string.
    if text.chars().any(|c| !matches!(c, '\n' | '\r' | '\t') && odd_char(c.encode_utf8(&mut [0; 4])).is_some()) {
        return true;
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        match bytes[i + 1] {
            b'n' | b'r' | b't' | b'b' | b'f' => return true,
            b'u' => {
                let decoded = bytes
                    .get(i + 2..i + 6)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32);
                if decoded.is_some_and(|c| odd_char(c.encode_utf8(&mut [0; 4])).is_some()) {
                    return true;
                }
            }
            _ => {}
        }
        i += 2;
    }
    false
}

/// RFC 1123 label: lowercase alphanumerics and '-', 1–63 chars, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A registered cluster's name: always a DNS label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterName(String);

/// A string that is not a valid cluster name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster name {0:?} must be a DNS label: lowercase letters, digits and '-', at most 63, not starting or ending with '-'")]
pub struct InvalidClusterName(pub String);

impl ClusterName {
    pub fn parse(s: &str) -> Result<ClusterName, InvalidClusterName> {
        if is_dns_label(s) {
            Ok(ClusterName(s.to_string()))
        } else {
            Err(InvalidClusterName(s.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClusterName {
    type Error = InvalidClusterName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ClusterName::parse(&s)
    }
}

impl From<ClusterName> for String {
    fn from(n: ClusterName) -> String {
        n.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod odd_tests {
    use super::*;

    #[test]
    fn odd_characters_are_found_raw_and_escaped() {
        for bad in ["a\0b", "line\nbreak", "tab\t", "\u{7f}", "\u{85}", "admin\u{202e}nimda", "\u{2066}x", "\u{200f}"] {
            assert!(odd_char(bad).is_some(), "{bad:?}");
        }
        for good in ["prod-eu", "Zoë Ünal", "שלום", "مرحبا", "名前", "a b", ""] {
            assert_eq!(odd_char(good), None, "{good:?}");
        }
        assert!(json_has_odd_char(br#"{"name":"a\u0000b"}"#));
        assert!(json_has_odd_char(br#"{"name":"a\u202Eb"}"#));
        assert!(json_has_odd_char("{\"name\":\"a\u{202e}b\"}".as_bytes()));
        assert!(json_has_odd_char(br#"{"url":"https://x\ny"}"#));
        assert!(!json_has_odd_char(b"{\n\t\"name\": \"ok \\\\u0000 literal\"\r\n}"));
        assert!(!json_has_odd_char(br#"{"name":"caf\u00e9"}"#));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_dns_labels() {
        for ok in ["prod-eu", "a", "x1", &"a".repeat(63)] {
            assert_eq!(ClusterName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "-a", "a-", "Prod", "a_b", "a.b", &"a".repeat(64), "ünï"] {
            assert!(ClusterName::parse(bad).is_err(), "{bad:?}");
        }
        let json: Result<ClusterName, _> = serde_json::from_str("\"Bad Name\"");
        assert!(json.is_err());
        assert_eq!(serde_json::to_string(&ClusterName::parse("prod").unwrap()).unwrap(), "\"prod\"");
    }
}
