//! The agent's key, certificate and trusted CAs, kept in a directory (0700, files 0600, written atomically) so
//! that a restarted agent reuses them without a join token.

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
        match (read(KEY)?, read(CERT)?, read(CA)?) {
            (Some(key_pem), Some(cert_pem), Some(ca_pem)) => Ok(Some(Credentials { key_pem, cert_pem, ca_pem })),
            _ => Ok(None),
        }
    }

    /// Writes the credentials: each file to a temporary name, synced, then renamed over the old one.
    pub fn save(&self, c: &Credentials) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        for (name, text) in [(CA, &c.ca_pem), (KEY, &c.key_pem), (CERT, &c.cert_pem)] {
            let tmp = self.dir.join(format!(".{name}.tmp"));
            let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(name))?;
        }
        std::fs::File::open(&self.dir)?.sync_all()
    }
}
