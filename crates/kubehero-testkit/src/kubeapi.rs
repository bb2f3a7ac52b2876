//! A real kube-apiserver v1.20.2 with its own etcd, for the cluster-access tests (agents, the kube proxy,
//! RBAC sync, TokenReview). No Debian package ships kube-apiserver, so `scripts/build-kube-apiserver` builds it
//! once from Debian bookworm's `kubernetes` source package with Debian's Go into
//! `$KUBEHERO_PEERS_DIR/k8s` (~4 min the first time); etcd is Debian's `etcd-server`.
//!
//! Each [`KubeApiServer`] runs in its own temp directory on free loopback ports: static-token authentication
//! (an admin token in `system:masters`), RBAC authorization, a fresh ECDSA service-account key, and the
//! self-signed serving certificate the API server makes for 127.0.0.1. Without a scheduler, controllers or
//! kubelets, pods stay Pending and the aggregated `view`/`edit`/`admin` roles are empty: good for
//! authentication, authorization, impersonation, RBAC objects, watches and TokenReview, not for workloads.
//! Both processes stop when the value is dropped.

use crate::oidc::{free_port, peers_dir};
use anyhow::{anyhow, bail, Context};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The token of the `admin` user (group `system:masters`).
pub const ADMIN_TOKEN: &str = "kubehero-testkit-admin-token";

/// The token of `person@example.com`, in the group `kubehero:role:admin` only (no `system:masters`): a person
/// reaching the API server directly, whose rights come from RBAC (`kubehero_rbac`).
pub const PERSON_TOKEN: &str = "kubehero-testkit-person-token";

/// The rules of the agent's ClusterRole: impersonation (the proxy) and RBAC sync, nothing else. (The Helm
/// chart and the README carry the same list.)
pub fn agent_rules() -> serde_json::Value {
    serde_json::json!([
        {"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["uids", "userextras/kubehero.io/auth-method"], "verbs": ["impersonate"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles", "clusterrolebindings", "rolebindings"],
         "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["escalate"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"],
         "resourceNames": ["kubehero:viewer", "kubehero:member", "kubehero:auditor", "kubehero:admin", "kubehero:owner"]}
    ])
}

/// A running kube-apiserver and its etcd.
pub struct KubeApiServer {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The serving certificate (PEM), to trust as the cluster's CA.
    pub ca_pem: Vec<u8>,
    /// The Kubernetes version the server reports (`v1.20.2`).
    pub version: String,
    etcd: Child,
    apiserver: Child,
    dir: tempfile::TempDir,
}

/// The two binaries, when `scripts/build-kube-apiserver` has built them.
pub fn binaries() -> Option<(PathBuf, PathBuf)> {
    let k8s = peers_dir().join("k8s");
    let (apiserver, etcd) = (k8s.join("bin/kube-apiserver"), k8s.join("root/usr/bin/etcd"));
    (apiserver.is_file() && etcd.is_file()).then_some((apiserver, etcd))
}

impl KubeApiServer {
    /// Starts etcd and kube-apiserver and waits until `/readyz` answers (a few seconds).
    pub async fn start() -> anyhow::Result<KubeApiServer> {
        KubeApiServer::start_with(&[]).await
    }

    /// [`KubeApiServer::start`] with more kube-apiserver flags (e.g. `--oidc-issuer-url=…`,
    /// `--authentication-token-webhook-config-file=…`).
    pub async fn start_with(extra: &[String]) -> anyhow::Result<KubeApiServer> {
        let (apiserver_bin, etcd_bin) =
            binaries().ok_or_else(|| anyhow!("kube-apiserver is not built: run scripts/build-kube-apiserver"))?;
        let dir = tempfile::tempdir()?;
        let path = |p: &str| dir.path().join(p);
        let (client, peer, metrics, secure) = (free_port()?, free_port()?, free_port()?, free_port()?);
        let etcd = Command::new(&etcd_bin)
            .args(["--name", "default", "--data-dir"])
            .arg(path("etcd"))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer}")])
            .args(["--listen-metrics-urls", &format!("http://127.0.0.1:{metrics}")])
            .stdout(std::fs::File::create(path("etcd.log"))?)
            .stderr(std::fs::File::create(path("etcd.err"))?)
            .kill_on_drop(true)
            .spawn()
            .context("starting etcd")?;
        // A service-account signing key (ECDSA P-256): the API server refuses to start without one.
        let sa = path("sa.key");
        let status = std::process::Command::new("openssl")
            .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"])
            .arg(&sa)
            .status()
            .context("running openssl")?;
        if !status.success() {
            bail!("openssl could not make the service-account key");
        }
        std::fs::write(
            path("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,1,system:masters\n{PERSON_TOKEN},person@example.com,2,kubehero:role:admin\n"),
        )?;
        std::fs::create_dir_all(path("certs"))?;
        let apiserver = Command::new(&apiserver_bin)
            .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--insecure-port=0"])
            .arg(format!("--secure-port={secure}"))
            .arg(format!("--cert-dir={}", path("certs").display()))
            .arg(format!("--token-auth-file={}", path("tokens.csv").display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", sa.display()))
            .arg(format!("--service-account-signing-key-file={}", sa.display()))
            .args(["--service-cluster-ip-range=10.0.0.0/24", "--disable-admission-plugins=ServiceAccount"])
            .arg("--endpoint-reconciler-type=none")
            .args(extra)
            .stdout(std::fs::File::create(path("apiserver.log"))?)
            .stderr(std::fs::File::create(path("apiserver.err"))?)
            .kill_on_drop(true)
            .spawn()
            .context("starting kube-apiserver")?;
        let url = format!("https://127.0.0.1:{secure}");
        let deadline = Instant::now() + Duration::from_secs(90);
        let cert = path("certs/apiserver.crt");
        let ca_pem = loop {
            if let Ok(pem) = std::fs::read(&cert) {
                if !pem.is_empty() {
                    break pem;
                }
            }
            if Instant::now() > deadline {
                bail!("kube-apiserver made no serving certificate: {}", tail(&path("apiserver.err")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem)?)
            .timeout(Duration::from_secs(5))
            .build()?;
        loop {
            let ready = http.get(format!("{url}/readyz")).bearer_auth(ADMIN_TOKEN).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("kube-apiserver never became ready: {}", tail(&path("apiserver.err")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let version: serde_json::Value =
            http.get(format!("{url}/version")).bearer_auth(ADMIN_TOKEN).send().await?.json().await?;
        let version = version["gitVersion"].as_str().unwrap_or_default().to_string();
        Ok(KubeApiServer { url, ca_pem, version, etcd, apiserver, dir })
    }

    /// A kubeconfig (YAML) for the admin user.
    pub fn admin_kubeconfig(&self) -> String {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster: {{server: \"{}\", \
             certificate-authority-data: \"{ca}\"}}\nusers:\n- name: admin\n  user: {{token: {ADMIN_TOKEN}}}\n\
             contexts:\n- {{name: admin, context: {{cluster: real, user: admin}}}}\ncurrent-context: admin\n",
            self.url
        )
    }

    /// A kubeconfig (YAML) for service account `ns/name`, made here with a one-hour token from the TokenRequest
    /// API (no controller manager runs, so no token Secret would appear). The namespace and account are created
    /// when missing.
    pub async fn service_account_kubeconfig(&self, ns: &str, name: &str) -> anyhow::Result<String> {
        use base64::Engine;
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem)?)
            .timeout(Duration::from_secs(10))
            .build()?;
        let post = |path: String, body: serde_json::Value| {
            http.post(format!("{}{path}", self.url)).bearer_auth(ADMIN_TOKEN).json(&body).send()
        };
        let ns_body = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let r = post("/api/v1/namespaces".into(), ns_body).await?;
        if !(r.status().is_success() || r.status() == 409) {
            bail!("creating namespace {ns}: {} {}", r.status(), r.text().await?);
        }
        let sa = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}});
        let r = post(format!("/api/v1/namespaces/{ns}/serviceaccounts"), sa).await?;
        if !(r.status().is_success() || r.status() == 409) {
            bail!("creating service account {ns}/{name}: {} {}", r.status(), r.text().await?);
        }
        let req = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}
        });
        let r = post(format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}/token"), req).await?;
        if !r.status().is_success() {
            bail!("requesting a token for {ns}/{name}: {} {}", r.status(), r.text().await?);
        }
        let got: serde_json::Value = r.json().await?;
        let token = got["status"]["token"].as_str().context("no token in the TokenRequest answer")?;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        Ok(format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster: {{server: \"{}\", \
             certificate-authority-data: \"{ca}\"}}\nusers:\n- name: {name}\n  user: {{token: \"{token}\"}}\n\
             contexts:\n- {{name: sa, context: {{cluster: real, user: {name}}}}}\ncurrent-context: sa\n",
            self.url
        ))
    }

    /// RBAC for KubeHero's agent in this cluster, as its admin: the service account
    /// `kubehero-system/kubehero-agent` may impersonate users, groups, uids and the `kubehero.io/auth-method`
    /// extra, and (RBAC sync) manage ClusterRoles, ClusterRoleBindings and RoleBindings, make ClusterRoles
    /// (`escalate`) and bind only the five `kubehero:<role>` ClusterRoles. The roles themselves
    /// (`kubehero:viewer` … `kubehero:owner`) and their bindings are made by the agent's RBAC sync.
    pub async fn kubehero_rbac(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem)?)
            .timeout(Duration::from_secs(10))
            .build()?;
        let rbac = "/apis/rbac.authorization.k8s.io/v1";
        let role = |name: &str, rules: serde_json::Value| serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules});
        let bind = |name: &str, role: &str, subject: serde_json::Value| {
            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}, "subjects": [subject]})
        };
        let objects = [
            ("clusterroles", role("kubehero-agent", agent_rules())),
            (
                "clusterrolebindings",
                bind(
                    "kubehero-agent",
                    "kubehero-agent",
                    serde_json::json!({"kind": "ServiceAccount", "name": "kubehero-agent", "namespace": "kubehero-system"}),
                ),
            ),
        ];
        for (kind, body) in objects {
            let r = http.post(format!("{}{rbac}/{kind}", self.url)).bearer_auth(ADMIN_TOKEN).json(&body).send().await?;
            if !(r.status().is_success() || r.status() == 409) {
                bail!("creating {kind}: {} {}", r.status(), r.text().await?);
            }
        }
        Ok(())
    }

    /// Creates a namespace, as the admin (an existing one is fine).
    pub async fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem)?)
            .timeout(Duration::from_secs(10))
            .build()?;
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let r = http.post(format!("{}/api/v1/namespaces", self.url)).bearer_auth(ADMIN_TOKEN).json(&ns).send().await?;
        if !(r.status().is_success() || r.status() == 409) {
            bail!("creating namespace {name}: {} {}", r.status(), r.text().await?);
        }
        Ok(())
    }

    /// The process ids of kube-apiserver and etcd (for a bench that pins them to a core).
    pub fn pids(&self) -> [u32; 2] {
        [self.apiserver.id().unwrap_or(0), self.etcd.id().unwrap_or(0)]
    }

    /// The directory holding the logs (`apiserver.err`, `etcd.err`) and data.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// The last lines of a log, for an error message.
fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}
