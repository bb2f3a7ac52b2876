//! JWT claim checks (RFC 7519 §4.1, RFC 8725 §3.8–§3.11) and the verified result.
//!
//! Security rules: every claim has one accepted JSON type and anything else is refused (no string-to-number
//! coercion); `exp` is required; `nbf`/`iat` in the future and `exp` in the past are tolerated by at most
//! [`CLOCK_SKEW_SECS`]; `iss` and `aud` are compared byte-for-byte; group lists are bounded.

use crate::config::IssuerConfig;
use crate::error::AuthnError;
use serde_json::{Map, Value};

/// Tolerated clock difference with the issuer, in seconds.
pub const CLOCK_SKEW_SECS: i64 = 60;
/// Most groups accepted in one token.
pub const MAX_GROUPS: usize = 1000;
/// Longest `sub`/username accepted, in bytes.
pub const MAX_SUB_LEN: usize = 1024;
/// NumericDate values beyond this magnitude (year ~33658) are refused as nonsense.
const MAX_NUMERIC_DATE: f64 = 1e12;

/// A token whose signature and claims were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The issuer that signed it (the configured string).
    pub issuer: String,
    /// The value of the issuer's username claim.
    pub sub: String,
    /// The `email` claim, if present.
    pub email: Option<String>,
    /// Groups with the issuer's prefix applied.
    pub groups: Vec<String>,
    /// Legacy `kh_roles` claim strings, lower-cased.
    pub legacy_roles: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// The `sub` claim itself.
    pub raw_sub: String,
}

/// The `iss` claim (RFC 7519 §4.1.1): required, a string.
pub(crate) fn issuer(claims: &Map<String, Value>) -> Result<&str, AuthnError> {
    match claims.get("iss") {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(AuthnError::InvalidClaim("iss")),
        None => Err(AuthnError::MissingClaim("iss")),
    }
}

/// RFC 7519 §2 NumericDate: a JSON number (integer or not), returned as whole seconds.
fn numeric_date(v: &Value, name: &'static str) -> Result<i64, AuthnError> {
    let Value::Number(n) = v else { return Err(AuthnError::InvalidClaim(name)) };
    if let Some(i) = n.as_i64() {
        if (i as f64).abs() <= MAX_NUMERIC_DATE {
            return Ok(i);
        }
        return Err(AuthnError::InvalidClaim(name));
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.abs() <= MAX_NUMERIC_DATE => Ok(f.floor() as i64),
        _ => Err(AuthnError::InvalidClaim(name)),
    }
}

/// The cheap checks run before any key lookup: audience (RFC 7519 §4.1.3) and times (§4.1.4–§4.1.6).
/// Returns `exp`.
pub(crate) fn check_audience_and_time(
    claims: &Map<String, Value>,
    cfg: &IssuerConfig,
    now: i64,
) -> Result<i64, AuthnError> {
    match claims.get("aud") {
        None => {
            if !cfg.audiences.is_empty() {
                return Err(AuthnError::InvalidAudience);
            }
        }
        Some(Value::String(a)) => {
            if !cfg.audiences.is_empty() && !cfg.audiences.iter().any(|c| c == a) {
                return Err(AuthnError::InvalidAudience);
            }
        }
        Some(Value::Array(list)) => {
            let mut matched = false;
            for a in list {
                let Value::String(a) = a else { return Err(AuthnError::InvalidAudience) };
                matched |= cfg.audiences.iter().any(|c| c == a);
            }
            if !cfg.audiences.is_empty() && !matched {
                return Err(AuthnError::InvalidAudience);
            }
        }
        Some(_) => return Err(AuthnError::InvalidAudience),
    }
    let exp = numeric_date(claims.get("exp").ok_or(AuthnError::MissingClaim("exp"))?, "exp")?;
    if now > exp + CLOCK_SKEW_SECS {
        return Err(AuthnError::Expired);
    }
    if let Some(v) = claims.get("nbf") {
        if numeric_date(v, "nbf")? > now + CLOCK_SKEW_SECS {
            return Err(AuthnError::NotYetValid);
        }
    }
    if let Some(v) = claims.get("iat") {
        if numeric_date(v, "iat")? > now + CLOCK_SKEW_SECS {
            return Err(AuthnError::NotYetValid);
        }
    }
    Ok(exp)
}

fn subject(v: Option<Value>, name: &'static str) -> Result<String, AuthnError> {
    match v {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_SUB_LEN && plain(&s) => Ok(s),
        Some(_) => Err(AuthnError::InvalidClaim(name)),
        None => Err(AuthnError::MissingClaim(name)),
    }
}

/// No control or bidirectional formatting characters (`kubehero_core::names::odd_char`): an identity that
/// reaches stored rows, audit rows and group matches is plain text.
fn plain(s: &str) -> bool {
    kubehero_core::names::odd_char(s).is_none()
}

fn string_list(v: Value, name: &'static str, single_ok: bool) -> Result<Vec<String>, AuthnError> {
    match v {
        Value::String(s) if single_ok && plain(&s) => Ok(vec![s]),
        Value::Array(list) if list.len() <= MAX_GROUPS => list
            .into_iter()
            .map(|g| match g {
                Value::String(s) if plain(&s) => Ok(s),
                _ => Err(AuthnError::InvalidClaim(name)),
            })
            .collect(),
        _ => Err(AuthnError::InvalidClaim(name)),
    }
}

/// Extracts the identity claims (run after the signature verified). Consumes the claim map to avoid copies.
pub(crate) fn extract(
    mut claims: Map<String, Value>,
    cfg: &IssuerConfig,
    exp: i64,
) -> Result<VerifiedToken, AuthnError> {
    let raw_sub = subject(claims.remove("sub"), "sub")?;
    let email = match claims.remove("email") {
        None => None,
        Some(Value::String(s)) if plain(&s) => Some(s),
        Some(_) => return Err(AuthnError::InvalidClaim("email")),
    };
    let sub = match cfg.username_claim.as_str() {
        "sub" => raw_sub.clone(),
        "email" => subject(email.clone().map(Value::String), "email")?,
        other => subject(claims.remove(other), "username")?,
    };
    let mut groups = match claims.remove(cfg.groups_claim.as_str()) {
        None => Vec::new(),
        Some(v) => string_list(v, "groups", true)?,
    };
    if !cfg.group_prefix.is_empty() {
        for g in &mut groups {
            g.insert_str(0, &cfg.group_prefix);
        }
    }
    let mut legacy_roles = match claims.remove("kh_roles") {
        None => Vec::new(),
        Some(v) => string_list(v, "kh_roles", false)?,
    };
    for r in &mut legacy_roles {
        r.make_ascii_lowercase();
    }
    Ok(VerifiedToken { issuer: cfg.issuer.clone(), sub, email, groups, legacy_roles, exp, raw_sub })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn cfg() -> IssuerConfig {
        let mut c = IssuerConfig::new("https://idp.example.com");
        c.audiences = vec!["kubehero".into()];
        c
    }

    #[test]
    fn time_edges() {
        let c = cfg();
        let m = obj(json!({"aud":"kubehero","exp":1000}));
        assert_eq!(check_audience_and_time(&m, &c, 1060), Ok(1000));
        assert_eq!(check_audience_and_time(&m, &c, 1061), Err(AuthnError::Expired));
        let m = obj(json!({"aud":"kubehero","exp":1000.9}));
        assert_eq!(check_audience_and_time(&m, &c, 1000), Ok(1000));
        let m = obj(json!({"aud":"kubehero","exp":"1000"}));
        assert_eq!(check_audience_and_time(&m, &c, 0), Err(AuthnError::InvalidClaim("exp")));
        let m = obj(json!({"aud":"kubehero","exp":1e300}));
        assert_eq!(check_audience_and_time(&m, &c, 0), Err(AuthnError::InvalidClaim("exp")));
        let m = obj(json!({"aud":"kubehero","exp":u64::MAX}));
        assert_eq!(check_audience_and_time(&m, &c, 0), Err(AuthnError::InvalidClaim("exp")));
        let m = obj(json!({"aud":"kubehero"}));
        assert_eq!(check_audience_and_time(&m, &c, 0), Err(AuthnError::MissingClaim("exp")));
        let m = obj(json!({"aud":"kubehero","exp":5000,"nbf":1061}));
        assert_eq!(check_audience_and_time(&m, &c, 1000), Err(AuthnError::NotYetValid));
        let m = obj(json!({"aud":"kubehero","exp":5000,"nbf":1060,"iat":1060}));
        assert!(check_audience_and_time(&m, &c, 1000).is_ok());
        let m = obj(json!({"aud":"kubehero","exp":5000,"iat":1061}));
        assert_eq!(check_audience_and_time(&m, &c, 1000), Err(AuthnError::NotYetValid));
        let m = obj(json!({"aud":"kubehero","exp":5000,"iat":true}));
        assert_eq!(check_audience_and_time(&m, &c, 1000), Err(AuthnError::InvalidClaim("iat")));
    }

    #[test]
    fn audience_shapes() {
        let c = cfg();
        let ok = |v: Value| check_audience_and_time(&obj(json!({"aud":v,"exp":10})), &c, 0);
        assert!(ok(json!("kubehero")).is_ok());
        assert!(ok(json!(["other", "kubehero"])).is_ok());
        for bad in [
            json!("KubeHero"),
            json!("kubehero "),
            json!("kube"),
            json!([]),
            json!(["x"]),
            json!(1),
            json!(["kubehero", 1]),
        ] {
            assert_eq!(ok(bad.clone()), Err(AuthnError::InvalidAudience), "{bad}");
        }
        let open = IssuerConfig::new("https://idp.example.com");
        assert!(check_audience_and_time(&obj(json!({"exp":10})), &open, 0).is_ok());
        assert!(check_audience_and_time(&obj(json!({"aud":[1],"exp":10})), &open, 0).is_err());
    }

    #[test]
    fn identity_claims() {
        let mut c = cfg();
        c.group_prefix = "oidc:".into();
        let v =
            extract(obj(json!({"sub":"u1","email":"a@b","groups":["x","y"],"kh_roles":["Admin"]})), &c, 10).unwrap();
        assert_eq!(v.groups, ["oidc:x", "oidc:y"]);
        assert_eq!(v.legacy_roles, ["admin"]);
        assert_eq!(v.sub, "u1");
        let v = extract(obj(json!({"sub":"u1","groups":"solo"})), &c, 10).unwrap();
        assert_eq!(v.groups, ["oidc:solo"]);
        c.username_claim = "email".into();
        assert_eq!(extract(obj(json!({"sub":"u1","email":"a@b"})), &c, 10).unwrap().sub, "a@b");
        assert_eq!(extract(obj(json!({"sub":"u1"})), &c, 10), Err(AuthnError::MissingClaim("email")));
        c.username_claim = "preferred_username".into();
        assert_eq!(extract(obj(json!({"sub":"u1","preferred_username":"al"})), &c, 10).unwrap().sub, "al");
        assert_eq!(
            extract(obj(json!({"sub":"u1","preferred_username":""})), &c, 10),
            Err(AuthnError::InvalidClaim("username"))
        );
        for (bad, err) in [
            (json!({}), AuthnError::MissingClaim("sub")),
            (json!({"sub":""}), AuthnError::InvalidClaim("sub")),
            (json!({"sub":"a\u{0}b"}), AuthnError::InvalidClaim("sub")),
            (json!({"sub":"u1","email":"a\u{202e}@b"}), AuthnError::InvalidClaim("email")),
            (json!({"sub":"u1","groups":["ok","ad\nmins"]}), AuthnError::InvalidClaim("groups")),
            (json!({"sub":1}), AuthnError::InvalidClaim("sub")),
            (json!({"sub":"a","email":1}), AuthnError::InvalidClaim("email")),
            (json!({"sub":"a","groups":[1]}), AuthnError::InvalidClaim("groups")),
            (json!({"sub":"a","groups":{"a":1}}), AuthnError::InvalidClaim("groups")),
            (json!({"sub":"a","groups":null}), AuthnError::InvalidClaim("groups")),
            (json!({"sub":"a","kh_roles":"admin"}), AuthnError::InvalidClaim("kh_roles")),
            (json!({"sub":"a".repeat(1025)}), AuthnError::InvalidClaim("sub")),
        ] {
            assert_eq!(extract(obj(bad.clone()), &cfg(), 10), Err(err), "{bad}");
        }
        let many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
        assert_eq!(extract(obj(json!({"sub":"a","groups":many})), &cfg(), 10), Err(AuthnError::InvalidClaim("groups")));
    }
}
