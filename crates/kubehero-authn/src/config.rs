//! Per-issuer configuration and its validation.
//!
//! Security rule (ARCHITECTURE.md, invariant 6): issuers and the `jwks_uri` they publish must be `https://`, except loopback
//! `http://` (127.0.0.1, localhost, [::1]) for development and tests; no query, fragment or userinfo.

use std::time::Duration;

/// One trusted OIDC issuer and how to read its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    /// The exact issuer string, compared byte-for-byte with discovery `issuer` and the token's `iss`.
    pub issuer: String,
    /// Accepted audiences; empty skips the audience match (the shape of `aud` is still checked).
    pub audiences: Vec<String>,
    /// Claim holding the username; default `sub`.
    pub username_claim: String,
    /// Claim holding the groups; default `groups`.
    pub groups_claim: String,
    /// Prepended to every group; default empty.
    pub group_prefix: String,
    /// How long a fetched JWK Set is used before it is refreshed; default 1 h.
    pub jwks_ttl: Duration,
    /// Minimum interval between refetches triggered by an unknown `kid`; default 30 s.
    pub refetch_cooldown: Duration,
    /// Timeout of each discovery or JWKS request; default 5 s.
    pub http_timeout: Duration,
    /// Cap of the exponential retry backoff after a failed fetch; default 30 s.
    pub retry_max: Duration,
}

impl IssuerConfig {
    /// A configuration with the defaults listed on each field.
    pub fn new(issuer: impl Into<String>) -> Self {
        IssuerConfig {
            issuer: issuer.into(),
            audiences: Vec::new(),
            username_claim: "sub".to_string(),
            groups_claim: "groups".to_string(),
            group_prefix: String::new(),
            jwks_ttl: Duration::from_secs(3600),
            refetch_cooldown: Duration::from_secs(30),
            http_timeout: Duration::from_secs(5),
            retry_max: Duration::from_secs(30),
        }
    }

    /// Checks the issuer URL and the claim names; the message says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        check_url(&self.issuer).map_err(|e| format!("issuer {:?}: {e}", self.issuer))?;
        if self.username_claim.is_empty() {
            return Err(format!("issuer {:?}: username claim must not be empty", self.issuer));
        }
        if self.groups_claim.is_empty() {
            return Err(format!("issuer {:?}: groups claim must not be empty", self.issuer));
        }
        if self.audiences.iter().any(String::is_empty) {
            return Err(format!("issuer {:?}: audiences must not be empty strings", self.issuer));
        }
        if self.jwks_ttl.is_zero() || self.http_timeout.is_zero() || self.retry_max.is_zero() {
            return Err(format!("issuer {:?}: durations must be positive", self.issuer));
        }
        Ok(())
    }
}

/// Whether `url` is an acceptable issuer or `jwks_uri`: `https://host…`, or `http://` on a loopback host;
/// no query, fragment or credentials.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.trim() != url || url.is_empty() {
        return Err("must not be empty or have surrounding whitespace".into());
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    if parsed.query().is_some() || parsed.fragment().is_some() || url.contains(['?', '#']) {
        return Err("must not have a query or fragment".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not contain credentials".into());
    }
    match parsed.scheme() {
        "https" if parsed.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        "http" => match parsed.host_str() {
            Some("127.0.0.1" | "localhost" | "[::1]") => Ok(()),
            _ => Err("must use https:// (http:// is allowed only on 127.0.0.1, localhost or [::1])".into()),
        },
        _ => Err("must use https://".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_rules() {
        for ok in [
            "https://idp.example.com",
            "https://idp.example.com/realms/x/",
            "http://127.0.0.1:8080",
            "http://localhost:5556/dex",
            "http://[::1]:9000",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example.com",
            "http://127.0.0.2:80",
            "https://idp.example.com?x=1",
            "https://idp.example.com#f",
            "https://user:pw@idp.example.com",
            "ftp://idp.example.com",
            " https://idp.example.com",
            "idp.example.com",
            "",
            "http://localhost.evil.com",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_validate() {
        let c = IssuerConfig::new("https://idp.example.com");
        assert!(c.validate().is_ok());
        assert_eq!(c.username_claim, "sub");
        assert_eq!(c.groups_claim, "groups");
    }
}
