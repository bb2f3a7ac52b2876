//! Direct access: a cluster's API server trusts KubeHero itself (its OIDC issuer, or its TokenReview webhook)
//! and kubectl talks to the API server without the proxy. The identity is the proxy's: user
//! `kubehero:<email, else sub>`, groups `kubehero:role:<role>` for roles held on the whole cluster,
//! `kubehero:role:<role>:ns:<namespace>` for roles held in one namespace (RBAC sync binds those in that
//! namespace), `kubehero:group:<idp group>`; the API server adds `system:authenticated`.

use crate::state::AppState;
use kubehero_core::kube::{cluster_user, idp_group, namespace_role_group, role_group};
use kubehero_core::{Principal, Scope};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The cluster label that sets its audience (default: the cluster's name).
pub const AUDIENCE_LABEL: &str = "kubehero.io/audience";
/// The cluster label that makes its direct tokens RS256 (default ES256).
pub const SIGNING_ALG_LABEL: &str = "kubehero.io/signing-alg";
/// The username prefix API servers are told to add (`--oidc-username-prefix`).
pub const USERNAME_PREFIX: &str = "kubehero:";

/// The audience of a cluster's direct tokens.
pub fn audience(cluster: &kubehero_store::Cluster) -> String {
    cluster.labels.get(AUDIENCE_LABEL).cloned().unwrap_or_else(|| cluster.name.clone())
}

/// The JWS algorithm of a cluster's direct tokens: `RS256` when its label says so, else `ES256`.
pub fn signing_alg(cluster: &kubehero_store::Cluster) -> &'static str {
    match cluster.labels.get(SIGNING_ALG_LABEL).map(String::as_str) {
        Some("RS256") => "RS256",
        _ => "ES256",
    }
}

/// The groups that say which roles `p` holds on `cluster`: `kubehero:role:<role>` for roles on the whole
/// cluster, `kubehero:role:<role>:ns:<namespace>` for roles held in one namespace (RBAC sync binds those there)
/// and, for a request in `namespace`, `kubehero:role:<role>` for the roles held in that namespace too. Then
/// the IdP groups. Empty when `p` holds no role anywhere on the cluster (KubeHero refuses such a person).
pub fn groups(s: &AppState, p: &Principal, cluster: &str, namespace: Option<&str>) -> Vec<String> {
    let mut roles = BTreeSet::new();
    for g in s.identity.bindings.explicit_grants(p) {
        match &g.scope {
            Scope::Global => {
                roles.insert(role_group(g.role));
            }
            Scope::Cluster { cluster: glob } if kubehero_core::glob::matches(glob, cluster) => {
                roles.insert(role_group(g.role));
            }
            Scope::Namespace { cluster: glob, namespace: ns } if kubehero_core::glob::matches(glob, cluster) => {
                roles.insert(namespace_role_group(g.role, ns));
                if namespace == Some(ns.as_str()) {
                    roles.insert(role_group(g.role));
                }
            }
            _ => {}
        }
    }
    if roles.is_empty() {
        return Vec::new();
    }
    roles.into_iter().chain(p.groups.iter().map(|g| idp_group(g))).collect()
}

/// The claims of a direct token.
/// `sid` is the SHA-256 of the CLI login it was minted from: the TokenReview webhook checks that login is still
/// live.
pub fn claims(
    issuer: &str,
    audience: &str,
    p: &Principal,
    groups: &[String],
    sid: &str,
    (now, expires_at): (i64, i64),
) -> Value {
    let user = cluster_user(p.email.as_deref(), &p.sub);
    let mut jti = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jti);
    let mut c = json!({
        "iss": issuer,
        "aud": audience,
        "sub": p.sub,
        "username": user.strip_prefix(USERNAME_PREFIX).unwrap_or(&user),
        "groups": groups,
        "auth_method": p.auth_method.as_str(),
        "sid": sid,
        "iat": now,
        "nbf": now - 30,
        "exp": expires_at,
        "jti": kubehero_audit::hex::encode(&jti),
    });
    if let Some(e) = p.email.as_deref().filter(|e| !e.is_empty()) {
        c["email"] = json!(e);
        c["email_verified"] = json!(true);
    }
    c
}

/// What to give a cluster's API server so it trusts KubeHero's tokens: the flags (any version) and the
/// equivalent structured `AuthenticationConfiguration` (Kubernetes 1.30 and later).
pub fn apiserver_settings(issuer: &str, audience: &str, alg: &str, ca_pem: Option<&str>) -> Value {
    let ca_file = "/etc/kubernetes/kubehero-ca.crt";
    let mut flags = vec![
        format!("--oidc-issuer-url={issuer}"),
        format!("--oidc-client-id={audience}"),
        "--oidc-username-claim=username".to_string(),
        format!("--oidc-username-prefix={USERNAME_PREFIX}"),
        "--oidc-groups-claim=groups".to_string(),
        format!("--oidc-signing-algs={alg}"),
    ];
    if ca_pem.is_some() {
        flags.push(format!("--oidc-ca-file={ca_file}"));
    }
    let ca_yaml = ca_pem.map_or(String::new(), |pem| {
        let indented: String = pem.trim().lines().map(|l| format!("      {l}\n")).collect();
        format!("    certificateAuthority: |\n{indented}")
    });
    let config = format!(
        "apiVersion: apiserver.config.k8s.io/v1beta1\nkind: AuthenticationConfiguration\njwt:\n- issuer:\n    \
         url: {issuer}\n    audiences:\n    - {audience}\n{ca_yaml}  claimMappings:\n    username:\n      \
         claim: username\n      prefix: \"{USERNAME_PREFIX}\"\n    groups:\n      claim: groups\n      \
         prefix: \"\"\n    uid:\n      claim: sub\n    extra:\n    - key: kubehero.io/auth-method\n      \
         valueExpression: claims.auth_method\n"
    );
    json!({
        "issuer": issuer,
        "audience": audience,
        "flags": flags,
        "ca_file": ca_pem.map(|_| ca_file),
        "ca_pem": ca_pem,
        "authentication_configuration": config,
        "note": "Kubernetes 1.30 and later: pass the authentication_configuration document with \
                 --authentication-config instead of the --oidc-* flags. Direct tokens live 10 minutes: a revoked \
                 login or a removed binding still works directly until its token expires (the proxy and the \
                 TokenReview webhook check at once).",
    })
}
