//! Names with rules: a cluster's name is an RFC 1123 DNS label (it becomes a certificate CN, a path segment of
//! `/k8s/clusters/{name}/` and a kubeconfig context), and so is a Kubernetes namespace.

use serde::{Deserialize, Serialize};
use std::fmt;

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
