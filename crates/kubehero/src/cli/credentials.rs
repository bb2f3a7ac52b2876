//! The CLI's stored credentials: `<config dir>/credentials.json`, one entry per server URL.
//!
//! Security rules:
//! - the directory is created 0700 and the file is always written 0600;
//! - the file is replaced atomically (a temp file in the same directory, fsynced, then renamed), so a reader
//!   never sees half a file and a crash never leaves a truncated one;
//! - every read-modify-write holds an exclusive lock on `credentials.lock` ([`CredentialsLock`]), so
//!   concurrent commands never lose each other's updates; an interactive sign-in additionally holds
//!   `login.lock` for its whole duration, so concurrent logins run at most one of them;
//! - tokens are [`Token`]s, whose `Debug` hides them; no message built here contains one.

use anyhow::{bail, Context};
use kubehero_server::config::Env;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const CREDENTIALS_FILE: &str = "credentials.json";
const CREDENTIALS_LOCK: &str = "credentials.lock";
const LOGIN_LOCK: &str = "login.lock";

/// A bearer credential: a CLI token (`khc_…`), an API key (`khk_…` or a static key) or an IdP JWT.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    pub fn new(s: impl Into<String>) -> Token {
        Token(s.into())
    }

    /// The token itself, for an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The id the server lists it under: the first 16 hex characters of its SHA-256.
    pub fn id(&self) -> String {
        kubehero_authn::api_key_id(&self.0)
    }

    /// A CLI token issued by a sign-in (device or browser) or a rotation (the only kind `rotate` and the
    /// server-side part of `logout` apply to).
    pub fn is_cli_token(&self) -> bool {
        self.0.starts_with("khc_")
    }

    /// What kind of credential this is, for messages.
    pub fn kind(&self) -> &'static str {
        if self.is_cli_token() {
            "CLI token"
        } else if kubehero_authn::looks_like_jwt(&self.0) {
            "IdP token"
        } else {
            "API key"
        }
    }

    /// The `exp` claim of a JWT (read, not verified: only to know when to stop using it).
    pub fn jwt_expiry(&self) -> Option<i64> {
        use base64::Engine;
        if !kubehero_authn::looks_like_jwt(&self.0) {
            return None;
        }
        let payload = self.0.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        claims["exp"].as_i64()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// One server's credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCredential {
    /// The server URL (also the key in [`Credentials::servers`]).
    pub server: String,
    pub token: Token,
    /// Unix seconds.
    pub obtained_at: i64,
    /// Unix seconds; `None` when unknown (an API key read from stdin).
    pub expires_at: Option<i64>,
}

impl StoredCredential {
    /// Still usable at `now` (with a minute to spare, so a command does not start with a token that dies
    /// on the way).
    pub fn is_fresh(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| e > now + 60)
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// By server URL (normalised: no trailing slash).
    #[serde(default)]
    pub servers: BTreeMap<String, StoredCredential>,
}

/// The CLI's configuration directory: `$KUBEHERO_CONFIG_DIR`, else `$XDG_CONFIG_HOME/kubehero` (when
/// absolute, as the XDG spec requires), else `~/.config/kubehero`.
pub fn config_dir(env: &dyn Env) -> anyhow::Result<PathBuf> {
    if let Some(d) = env.var("KUBEHERO_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(x) = env.var("XDG_CONFIG_HOME").filter(|x| Path::new(x).is_absolute()) {
        return Ok(PathBuf::from(x).join("kubehero"));
    }
    if let Some(home) = env.var("HOME") {
        return Ok(PathBuf::from(home).join(".config").join("kubehero"));
    }
    bail!("cannot find a configuration directory: set KUBEHERO_CONFIG_DIR (or HOME)")
}

/// Proof that the caller holds `credentials.lock`; released on drop (closing the file releases the lock).
pub struct CredentialsLock(#[allow(dead_code)] File);

/// Held for the whole of an interactive sign-in; released on drop.
pub struct LoginLock(#[allow(dead_code)] File);

/// The credentials file and its locks, in one directory.
pub struct CredentialStore {
    dir: PathBuf,
}

impl CredentialStore {
    /// The store in `dir` (created, 0700, on the first write).
    pub fn new(dir: PathBuf) -> CredentialStore {
        CredentialStore { dir }
    }

    fn ensure_dir(&self) -> anyhow::Result<()> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&self.dir).with_context(|| format!("creating the configuration directory {}", self.dir.display()))
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(CREDENTIALS_FILE)
    }

    /// The current contents (empty when there is no file yet). Needs no lock: writes are atomic renames.
    pub fn load(&self) -> anyhow::Result<Credentials> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credentials::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        // serde_json's message names a line and column, never the text, so no token leaks into it.
        serde_json::from_str(&text).with_context(|| {
            format!("{} is not a valid credentials file: remove it and run `kubehero login` again", path.display())
        })
    }

    /// Replaces the file atomically with `creds` (0600).
    pub fn save(&self, _held: &CredentialsLock, creds: &Credentials) -> anyhow::Result<()> {
        let path = self.path();
        let tmp = self.dir.join(format!(".{CREDENTIALS_FILE}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = private_file(&tmp, true)?;
            // A stale temp file of an earlier process with this pid keeps its mode on open: set it.
            #[cfg(unix)]
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            f.write_all(&serde_json::to_vec_pretty(creds)?)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // The rename itself is durable once the directory is synced (best effort: not every platform
            // can open a directory).
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::Error::new(e).context(format!("writing {}", path.display()))
        })
    }

    /// Takes `credentials.lock` (waits while another command updates the file).
    pub async fn lock_credentials(&self) -> anyhow::Result<CredentialsLock> {
        self.ensure_dir()?;
        let path = self.dir.join(CREDENTIALS_LOCK);
        Ok(CredentialsLock(lock(path, None).await?))
    }

    /// Takes `<name>.lock` in the configuration directory (waits while another process holds it).
    pub async fn lock_named(&self, name: &str) -> anyhow::Result<File> {
        self.ensure_dir()?;
        lock(self.dir.join(format!("{name}.lock")), None).await
    }

    /// A small private file of the configuration directory, if it exists.
    pub fn read_private(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name)).ok()
    }

    /// Writes a small private file (0600) atomically.
    pub fn write_private(&self, name: &str, text: &str) -> anyhow::Result<()> {
        self.ensure_dir()?;
        let (path, tmp) = (self.dir.join(name), self.dir.join(format!(".{name}.{}.tmp", std::process::id())));
        let write = || -> std::io::Result<()> {
            let mut f = private_file(&tmp, true)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().with_context(|| format!("writing {}", path.display()))
    }

    /// Takes `login.lock`, saying so on stderr when another login holds it.
    pub async fn lock_login(&self) -> anyhow::Result<LoginLock> {
        self.ensure_dir()?;
        let path = self.dir.join(LOGIN_LOCK);
        let waiting = "another `kubehero login` is signing in; waiting for it to finish…";
        Ok(LoginLock(lock(path, Some(waiting)).await?))
    }
}

/// Opens `path` for writing, created 0600.
fn private_file(path: &Path, truncate: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// An exclusive lock on `path` (`File::lock`: `flock` on Unix, `LockFileEx` on Windows), taken on a
/// blocking thread since it may wait for minutes. `waiting` is printed once if the lock is held elsewhere.
async fn lock(path: PathBuf, waiting: Option<&'static str>) -> anyhow::Result<File> {
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || -> std::io::Result<File> {
        let f = private_file(&path, false)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                if let Some(w) = waiting {
                    eprintln!("{w}");
                }
                f.lock()?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        Ok(f)
    })
    .await
    .context("the lock task failed")?
    .with_context(|| format!("locking {shown}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn config_dir_precedence() {
        let all = env(&[("KUBEHERO_CONFIG_DIR", "/k"), ("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(config_dir(&all).unwrap(), PathBuf::from("/k"));
        let xdg = env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(config_dir(&xdg).unwrap(), PathBuf::from("/x/kubehero"));
        let relative_xdg = env(&[("XDG_CONFIG_HOME", "x"), ("HOME", "/h")]);
        assert_eq!(config_dir(&relative_xdg).unwrap(), PathBuf::from("/h/.config/kubehero"));
        assert!(config_dir(&env(&[])).is_err());
    }

    #[test]
    fn debug_hides_the_token() {
        let c = StoredCredential {
            server: "https://kh".into(),
            token: Token::new("khc_secret"),
            obtained_at: 1,
            expires_at: None,
        };
        assert!(!format!("{c:?}").contains("khc_secret"));
    }

    #[test]
    fn jwt_expiry_is_read_without_verification() {
        // {"alg":"none"} . {"sub":"a","exp":1700000000} . sig
        let t = Token::new("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIiwiZXhwIjoxNzAwMDAwMDAwfQ.c2ln");
        assert_eq!(t.jwt_expiry(), Some(1_700_000_000));
        assert_eq!(Token::new("khk_abc").jwt_expiry(), None);
        assert_eq!(Token::new("khk_abc").kind(), "API key");
        assert_eq!(Token::new("khc_abc").kind(), "CLI token");
    }

    #[test]
    fn freshness_keeps_a_minute_in_hand() {
        let mut c =
            StoredCredential { server: "s".into(), token: Token::new("t"), obtained_at: 0, expires_at: Some(1000) };
        assert!(c.is_fresh(900));
        assert!(!c.is_fresh(950));
        c.expires_at = None;
        assert!(c.is_fresh(i64::MAX / 2));
    }

    #[tokio::test]
    async fn save_is_atomic_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::new(dir.path().join("nested").join("kubehero"));
        assert_eq!(store.load().unwrap(), Credentials::default());
        let mut creds = Credentials::default();
        for s in ["https://a", "https://b"] {
            let c =
                StoredCredential { server: s.into(), token: Token::new("khc_x"), obtained_at: 1, expires_at: Some(2) };
            creds.servers.insert(s.into(), c);
        }
        let held = store.lock_credentials().await.unwrap();
        store.save(&held, &creds).unwrap();
        drop(held);
        assert_eq!(store.load().unwrap(), creds);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&store.path()), 0o600);
            assert_eq!(mode(&dir.path().join("nested").join("kubehero")), 0o700);
        }
        let left: Vec<_> = std::fs::read_dir(&store.dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")), "{left:?}");
    }

    #[tokio::test]
    async fn a_corrupt_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::new(dir.path().to_path_buf());
        std::fs::write(store.path(), "{\"servers\": {\"x\": khc_leak").unwrap();
        let e = format!("{:#}", store.load().unwrap_err());
        assert!(e.contains("kubehero login"), "{e}");
        assert!(!e.contains("khc_leak"), "{e}");
    }
}
