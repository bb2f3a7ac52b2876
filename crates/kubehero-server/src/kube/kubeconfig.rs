//! The kubeconfig entries of one cluster, as `kubehero kubeconfig` writes them and the share page hands them
//! out: context, cluster and user all named `kubehero-<cluster>`, the user an exec plugin that runs
//! `kubehero token`.

use serde_json::{json, Value};

/// What one cluster's entries need.
pub struct Entry<'a> {
    /// The control plane's URL (what `kubehero token --server` is given).
    pub control_plane: &'a str,
    pub cluster: &'a str,
    /// Where kubectl sends requests: the proxy (`<cp>/k8s/clusters/<name>`) or the API server (direct).
    pub server: &'a str,
    /// Base64 PEM of the CA that signed `server`'s certificate, when it is not publicly trusted.
    pub ca_data: Option<&'a str>,
    /// `client.authentication.k8s.io/v1` (or `v1beta1` for kubectl before 1.24).
    pub exec_api: &'a str,
    /// The `kubehero` executable the plugin runs.
    pub command: &'a str,
    /// Direct tokens (`kubehero token --direct`).
    pub direct: bool,
}

impl Entry<'_> {
    /// The context name.
    pub fn name(&self) -> String {
        format!("kubehero-{}", self.cluster)
    }

    /// The `clusters`, `users` and `contexts` entries, in that order.
    pub fn entries(&self) -> [Value; 3] {
        let name = self.name();
        let mut cluster = json!({ "server": self.server });
        if let Some(ca) = self.ca_data {
            cluster["certificate-authority-data"] = json!(ca);
        }
        let mut args = vec!["token", "--server", self.control_plane, "--cluster", self.cluster];
        if self.direct {
            args.push("--direct");
        }
        let mut exec = json!({
            "apiVersion": self.exec_api,
            "command": self.command,
            "args": args,
            "provideClusterInfo": true,
            "installHint": "kubehero is KubeHero's CLI: install it, then run `kubehero login`",
        });
        // kubectl before 1.24 (the v1beta1 exec API) refuses a field it does not know.
        if !self.exec_api.ends_with("v1beta1") {
            exec["interactiveMode"] = json!("IfAvailable");
        }
        [
            json!({ "name": name, "cluster": cluster }),
            json!({ "name": name, "user": { "exec": exec } }),
            json!({ "name": name, "context": { "cluster": name, "user": name } }),
        ]
    }

    /// A whole kubeconfig holding only this cluster, its context current.
    pub fn document(&self) -> Value {
        let [cluster, user, context] = self.entries();
        json!({
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [cluster],
            "users": [user],
            "contexts": [context],
            "current-context": self.name(),
        })
    }
}

/// The kubeconfig the dashboard hands out for `cluster`: through the proxy of the control plane at `base`,
/// trusting `ca_pem` (the control plane's certificate, when it is not publicly trusted), `kubehero token` for
/// credentials.
pub fn document_for(base: &str, cluster: &str, ca_pem: Option<&str>) -> Value {
    use base64::Engine as _;
    let ca = ca_pem.map(|pem| base64::engine::general_purpose::STANDARD.encode(pem));
    let server = format!("{base}/k8s/clusters/{cluster}");
    Entry {
        control_plane: base,
        cluster,
        server: &server,
        ca_data: ca.as_deref(),
        exec_api: "client.authentication.k8s.io/v1",
        command: "kubehero",
        direct: false,
    }
    .document()
}
