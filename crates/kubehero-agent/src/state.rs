//! The agent's key, certificate and trusted CAs, kept so that a restarted agent reuses them without a join
//! token: in a directory (0700, files 0600, written atomically), or, in a pod, in a Kubernetes Secret that the
//! agent's service account may read and write (nothing else in the namespace).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The agent's credentials.
#[derive(Clone)]
pub struct Credentials {
    /// PKCS#8 PEM of the private key.
    pub key_pem: String,
    pub cert_pem: String,
    /// The CAs the control plane's agent listener is trusted by.
    pub ca_pem: String,
    /// SHA-256 (hex) of the join token these credentials descend from: a different token given to the agent
    /// later (a re-install) makes it join again.
    pub joined_with: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

impl Credentials {
    /// The certificate's facts.
    pub fn facts(&self) -> Result<crate::pki::CertFacts, crate::pki::PkiError> {
        let certs = crate::pki::pem_certs(&self.cert_pem)?;
        crate::pki::cert_facts(&certs[0])
    }
}

/// Where the credentials live.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

const KEY: &str = "agent.key";
const CERT: &str = "agent.crt";
const CA: &str = "ca.crt";
const JOINED: &str = "join.sha256";

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The stored credentials, if all three files are there.
    pub fn load(&self) -> std::io::Result<Option<Credentials>> {
        let read = |name: &str| match std::fs::read_to_string(self.dir.join(name)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        let joined_with = read(JOINED)?.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        match (read(KEY)?, read(CERT)?, read(CA)?) {
            (Some(key_pem), Some(cert_pem), Some(ca_pem)) => {
                Ok(Some(Credentials { key_pem, cert_pem, ca_pem, joined_with }))
            }
            _ => Ok(None),
        }
    }

    /// Writes the credentials: each file to a temporary name, synced, then renamed over the old one.
    pub fn save(&self, c: &Credentials) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        let joined = c.joined_with.clone().unwrap_or_default();
        for (name, text) in [(CA, &c.ca_pem), (KEY, &c.key_pem), (CERT, &c.cert_pem), (JOINED, &joined)] {
            let tmp = self.dir.join(format!(".{name}.tmp"));
            let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(name))?;
        }
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

/// Where the credentials are kept.
#[derive(Clone)]
pub enum State {
    Dir(StateDir),
    /// A Secret `namespace/name` in the agent's own cluster, reached with the agent's API server credentials.
    Secret {
        upstream: std::sync::Arc<crate::upstream::Upstream>,
        namespace: String,
        name: String,
    },
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Dir(d) => write!(f, "{}", d.path().display()),
            State::Secret { namespace, name, .. } => write!(f, "secret {namespace}/{name}"),
        }
    }
}

impl State {
    /// The stored credentials, if complete.
    pub async fn load(&self) -> Result<Option<Credentials>, String> {
        match self {
            State::Dir(d) => d.load().map_err(|e| format!("{self}: {e}")),
            State::Secret { upstream, namespace, name } => {
                let path = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
                let (status, body) = upstream.call_json(http::Method::GET, &path, None).await.map_err(|e| e.0)?;
                match status {
                    404 => Ok(None),
                    200 => {
                        let get = |k: &str| -> Option<String> {
                            use base64::Engine;
                            let b64 = body["data"][k].as_str()?;
                            let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
                            String::from_utf8(raw).ok()
                        };
                        let joined_with = get(JOINED).filter(|j| !j.is_empty());
                        Ok(match (get(KEY), get(CERT), get(CA)) {
                            (Some(key_pem), Some(cert_pem), Some(ca_pem)) => {
                                Some(Credentials { key_pem, cert_pem, ca_pem, joined_with })
                            }
                            _ => None,
                        })
                    }
                    s => {
                        Err(format!("{self}: the API server answered {s}: {}", body["message"].as_str().unwrap_or("")))
                    }
                }
            }
        }
    }

    /// Stores the credentials (creating the Secret when missing, replacing its data otherwise).
    pub async fn save(&self, c: &Credentials) -> Result<(), String> {
        match self {
            State::Dir(d) => d.save(c).map_err(|e| format!("{self}: {e}")),
            State::Secret { upstream, namespace, name } => {
                use base64::Engine;
                let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                let secret = serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": name, "namespace": namespace,
                                 "labels": {"app.kubernetes.io/managed-by": "kubehero"}},
                    "data": {KEY: b64(&c.key_pem), CERT: b64(&c.cert_pem), CA: b64(&c.ca_pem),
                             JOINED: b64(c.joined_with.as_deref().unwrap_or(""))},
                });
                let one = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
                let (status, body) =
                    upstream.call_json(http::Method::PUT, &one, Some(&secret)).await.map_err(|e| e.0)?;
                let (status, body) = if status == 404 {
                    let all = format!("/api/v1/namespaces/{namespace}/secrets");
                    upstream.call_json(http::Method::POST, &all, Some(&secret)).await.map_err(|e| e.0)?
                } else {
                    (status, body)
                };
                if (200..300).contains(&status) {
                    Ok(())
                } else {
                    Err(format!("{self}: the API server answered {status}: {}", body["message"].as_str().unwrap_or("")))
                }
            }
        }
    }
}
