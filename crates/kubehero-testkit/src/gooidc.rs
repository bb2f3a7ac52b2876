//! The go-oidc verifier (what kube-apiserver's OIDC authenticator uses) as a benchmark peer: a small Go
//! program (`gooidc/main.go`) built in GOPATH mode against Debian's `golang-github-coreos-go-oidc-dev` and
//! `golang-gopkg-square-go-jose.v2-dev`, once, into `$KUBEHERO_PEERS_DIR/gooidc`. Only benches use it; when
//! Go or those packages are missing, [`build`] says so and the bench skips the comparison.

use crate::oidc::{free_port, peers_dir, write_if_changed};
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const MAIN_GO: &str = include_str!("../gooidc/main.go");
/// Where Debian installs Go sources for GOPATH mode.
const DEBIAN_GOCODE: &str = "/usr/share/gocode";

/// Builds the peer if needed: its path, or (`Ok(Err(reason))`) why it cannot be built on this machine.
pub fn build() -> anyhow::Result<Result<PathBuf, String>> {
    let go = match std::process::Command::new("go").arg("version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => return Ok(Err("Go is not installed (Debian: apt-get install golang-go)".into())),
    };
    if !std::path::Path::new(DEBIAN_GOCODE).join("src/github.com/coreos/go-oidc/verify.go").exists() {
        return Ok(Err("go-oidc sources are missing (Debian: apt-get install golang-github-coreos-go-oidc-dev \
                       golang-gopkg-square-go-jose.v2-dev)"
            .into()));
    }
    let root = peers_dir().join("gooidc");
    let src = root.join("src/gooidc");
    std::fs::create_dir_all(&src)?;
    let main = src.join("main.go");
    let bin = root.join("gooidc");
    let fresh = std::fs::read_to_string(&main).ok().as_deref() == Some(MAIN_GO) && bin.exists();
    if fresh {
        return Ok(Ok(bin));
    }
    write_if_changed(&main, MAIN_GO)?;
    let out = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{}:{DEBIAN_GOCODE}", root.display()))
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .output()
        .context("running go build")?;
    if !out.status.success() {
        bail!("building the go-oidc peer with {go} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(Ok(bin))
}

/// A running peer.
pub struct GoOidc {
    pub port: u16,
    child: Child,
}

impl GoOidc {
    /// The peer's process id (for its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Starts the peer for `issuer` (discovery happens at start), accepting `audience`, caching successful
    /// verifications for `cache_secs` (kube-apiserver: 10; 0 turns the cache off).
    pub async fn start(bin: &PathBuf, issuer: &str, audience: &str, cache_secs: u64) -> anyhow::Result<GoOidc> {
        let port = free_port()?;
        let child = Command::new(bin)
            .env_clear()
            .env("ISSUER", issuer)
            .env("AUDIENCE", audience)
            .env("LISTEN", format!("127.0.0.1:{port}"))
            .env("CACHE_SECS", cache_secs.to_string())
            .env("GOMAXPROCS", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the go-oidc peer")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() > deadline {
                bail!("the go-oidc peer did not listen within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(GoOidc { port, child })
    }
}
