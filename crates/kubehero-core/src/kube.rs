//! What a Kubernetes API request is, read from its path, method and query the way the API server's own
//! request-info resolver reads it (verb, API group and version, resource, subresource, namespace, name), and the
//! identity KubeHero presents to a cluster. No I/O.

/// A Kubernetes request, as the audit log and the namespace check see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestInfo {
    /// Kubernetes verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or
    /// for a path that names no resource, the lowercase HTTP method.
    pub verb: &'static str,
    /// Empty for the core group.
    pub api_group: String,
    pub api_version: String,
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl RequestInfo {
    /// Whether the request changes nothing (`get`, `list`, `watch`, and non-resource reads).
    pub fn is_read(&self) -> bool {
        matches!(self.verb, "get" | "list" | "watch" | "head")
    }

    /// Reads a request. `path` is the API path (`/api/v1/namespaces/x/pods`), `query` its query string.
    pub fn parse(method: &str, path: &str, query: Option<&str>) -> RequestInfo {
        let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let watch = query
            .is_some_and(|q| q.split('&').any(|kv| matches!(kv, "watch=true" | "watch=1" | "watch=True" | "watch")));
        let non_resource = |m: &str| RequestInfo { verb: method_verb(m), ..RequestInfo::default() };
        let (group, version, rest) = match parts.as_slice() {
            ["api", version, rest @ ..] => (String::new(), version.to_string(), rest),
            ["apis", group, version, rest @ ..] => (group.to_string(), version.to_string(), rest),
            _ => return non_resource(method),
        };
        if rest.is_empty() {
            return RequestInfo { api_group: group, api_version: version, ..non_resource(method) };
        }
        // Legacy `/watch/` prefix.
        let (rest, watch) = match rest {
            ["watch", tail @ ..] => (tail, true),
            _ => (rest, watch),
        };
        let (namespace, rest): (Option<String>, &[&str]) = match rest {
            ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail),
            // `GET /api/v1/namespaces/x` is the namespace object x, authorized in namespace x.
            ["namespaces", ns] => (Some(ns.to_string()), rest),
            _ => (None, rest),
        };
        let (resource, name, subresource) = match rest {
            ["namespaces", ns] => (Some("namespaces".to_string()), Some(ns.to_string()), None),
            [r] => (Some(r.to_string()), None, None),
            [r, n] => (Some(r.to_string()), Some(n.to_string()), None),
            [r, n, sub, ..] => (Some(r.to_string()), Some(n.to_string()), Some(sub.to_string())),
            [] => (None, None, None),
        };
        let verb = match (method.to_ascii_uppercase().as_str(), name.is_some()) {
            (_, _) if watch => "watch",
            ("GET" | "HEAD", true) => "get",
            ("GET" | "HEAD", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            (m, _) => method_verb(m),
        };
        RequestInfo { verb, api_group: group, api_version: version, resource, subresource, namespace, name }
    }
}

fn method_verb(m: &str) -> &'static str {
    match m.to_ascii_uppercase().as_str() {
        "GET" => "get",
        "HEAD" => "head",
        "POST" => "post",
        "PUT" => "put",
        "PATCH" => "patch",
        "DELETE" => "delete",
        "OPTIONS" => "options",
        _ => "other",
    }
}

/// The user name a cluster sees: `kubehero:<email, else sub>`.
pub fn cluster_user(email: Option<&str>, sub: &str) -> String {
    format!("kubehero:{}", email.filter(|e| !e.is_empty()).unwrap_or(sub))
}

/// The group a KubeHero role is presented as.
pub fn role_group(role: crate::Role) -> String {
    format!("kubehero:role:{}", role.as_str())
}

/// The group a KubeHero role held in one namespace only is presented as in direct tokens and TokenReview
/// answers (RBAC sync binds it in that namespace); the proxy, which sees each request's namespace, presents it
/// as [`role_group`] for requests in that namespace.
pub fn namespace_role_group(role: crate::Role, namespace: &str) -> String {
    format!("kubehero:role:{}:ns:{namespace}", role.as_str())
}

/// The group an IdP group is presented as.
pub fn idp_group(group: &str) -> String {
    format!("kubehero:group:{group}")
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = (&'static str, String, Option<String>, Option<String>, Option<String>, Option<String>);

    fn p(m: &str, path: &str, q: Option<&str>) -> Parsed {
        let i = RequestInfo::parse(m, path, q);
        (i.verb, i.api_group, i.resource, i.subresource, i.namespace, i.name)
    }

    #[test]
    fn reads_paths_like_the_api_server() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            p("GET", "/api/v1/namespaces/default/pods", None),
            ("list", "".into(), s("pods"), None, s("default"), None)
        );
        assert_eq!(
            p("GET", "/api/v1/namespaces/default/pods/web", None),
            ("get", "".into(), s("pods"), None, s("default"), s("web"))
        );
        assert_eq!(p("GET", "/api/v1/namespaces/default/pods/web/log", None).3, s("log"));
        assert_eq!(p("GET", "/api/v1/pods", Some("watch=1")).0, "watch");
        assert_eq!(
            p("GET", "/api/v1/watch/namespaces/a/configmaps", None),
            ("watch", "".into(), s("configmaps"), None, s("a"), None)
        );
        assert_eq!(
            p("GET", "/api/v1/namespaces/kube-system", None),
            ("get", "".into(), s("namespaces"), None, s("kube-system"), s("kube-system"))
        );
        assert_eq!(p("GET", "/api/v1/namespaces", None), ("list", "".into(), s("namespaces"), None, None, None));
        assert_eq!(
            p("POST", "/apis/apps/v1/namespaces/x/deployments", None),
            ("create", "apps".into(), s("deployments"), None, s("x"), None)
        );
        assert_eq!(p("PATCH", "/apis/apps/v1/namespaces/x/deployments/d", None).0, "patch");
        assert_eq!(p("DELETE", "/api/v1/namespaces/x/configmaps", None).0, "deletecollection");
        assert_eq!(p("POST", "/api/v1/namespaces/x/pods/p/exec", Some("command=ls")).3, s("exec"));
        assert_eq!(p("GET", "/version", None), ("get", "".into(), None, None, None, None));
        assert_eq!(p("GET", "/apis", None).0, "get");
        assert!(RequestInfo::parse("GET", "/api/v1/nodes", None).is_read());
        assert!(!RequestInfo::parse("PUT", "/api/v1/nodes/n", None).is_read());
    }

    #[test]
    fn names_what_the_cluster_sees() {
        assert_eq!(cluster_user(Some("alice@example.com"), "a1"), "kubehero:alice@example.com");
        assert_eq!(cluster_user(None, "a1"), "kubehero:a1");
        assert_eq!(role_group(crate::Role::Admin), "kubehero:role:admin");
        assert_eq!(idp_group("oidc:ops"), "kubehero:group:oidc:ops");
    }
}
