//! A real S3 server: `s3s-fs` 0.14.1 (SigV4-verifying, objects stored as files), built once by `scripts/test`
//! into `$KUBEHERO_PEERS_DIR/s3s/root/bin/s3s-fs`. [`S3Server::stop`] / [`S3Server::restart`] keep the port and
//! the data directory, for outage tests; drop kills it.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A running s3s-fs.
pub struct S3Server {
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    data: tempfile::TempDir,
    log: PathBuf,
    child: Option<Child>,
}

impl S3Server {
    /// Where `scripts/test` installs the binary.
    pub fn binary() -> PathBuf {
        crate::oidc::peers_dir().join("s3s/root/bin/s3s-fs")
    }

    pub fn available() -> bool {
        Self::binary().exists()
    }

    /// Starts it on a free loopback port with fresh credentials and an empty data directory.
    pub async fn start() -> anyhow::Result<S3Server> {
        if !Self::available() {
            bail!(
                "{} is missing: run scripts/test (it builds s3s-fs 0.14.1 with `cargo install s3s-fs@0.14.1 --locked \
                 --features binary`)",
                Self::binary().display()
            );
        }
        let data = tempfile::Builder::new().prefix("kubehero-s3").tempdir()?;
        let log = data.path().with_extension("log");
        let mut s = S3Server {
            port: crate::oidc::free_port()?,
            access_key: "AKIAKUBEHEROTEST".into(),
            secret_key: format!("kubehero-test-secret-{}", std::process::id()),
            region: "us-east-1".into(),
            data,
            log,
            child: None,
        };
        s.spawn().await?;
        Ok(s)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory holding `<bucket>/<key>` files.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(Self::binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.access_key, "--secret-key", &self.secret_key])
            .arg(self.data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting s3s-fs")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    bail!("s3s-fs exited ({st}): {}", std::fs::read_to_string(&self.log).unwrap_or_default());
                }
            }
            if Instant::now() > deadline {
                bail!("s3s-fs did not listen on {} within 15 s", self.port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server; the port and data stay for [`S3Server::restart`].
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts it again on the same port and data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.spawn().await
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
