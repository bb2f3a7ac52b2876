//! A real HAProxy (Debian's `haproxy`) in front of several control plane replicas, as a platform team runs it:
//! TCP mode (TLS passes through to the replicas: the agent listener needs the agents' client certificates),
//! round robin, health checks every 500 ms, and a failed connect sent to another replica (`option redispatch`).
//! One frontend per port group (the API, the agent listener); its backends are the replicas' ports, in order.
//!
//! `scripts/test` installs the package; [`HaProxy::available`] says whether it is there.

use anyhow::{anyhow, bail, Context};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

fn haproxy() -> Option<PathBuf> {
    ["/usr/sbin/haproxy", "/sbin/haproxy", "/usr/bin/haproxy"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// A running haproxy.
pub struct HaProxy {
    /// One port per frontend, in the order given to [`HaProxy::start`].
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
    _child: Child,
}

impl HaProxy {
    pub fn available() -> bool {
        haproxy().is_some()
    }

    /// Starts haproxy with one TCP frontend per entry of `backends`, each balancing over those loopback ports.
    pub async fn start(backends: &[Vec<u16>]) -> anyhow::Result<HaProxy> {
        let bin = haproxy().ok_or_else(|| anyhow!("haproxy is not installed (scripts/test installs it)"))?;
        let dir = tempfile::tempdir()?;
        let mut cfg = String::from(
            "global\n  maxconn 4000\n\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1h\n  \
             timeout server 1h\n  timeout tunnel 1h\n  option redispatch 1\n  retries 2\n  balance roundrobin\n  \
             default-server inter 500ms fall 2 rise 2\n",
        );
        let mut ports = Vec::new();
        for (i, group) in backends.iter().enumerate() {
            let port = crate::oidc::free_port()?;
            ports.push(port);
            cfg.push_str(&format!(
                "\nfrontend f{i}\n  bind 127.0.0.1:{port}\n  default_backend b{i}\n\nbackend b{i}\n"
            ));
            for (j, p) in group.iter().enumerate() {
                cfg.push_str(&format!("  server r{j} 127.0.0.1:{p} check\n"));
            }
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg)?;
        let check = Command::new(&bin).arg("-c").arg("-f").arg(&path).output().await?;
        if !check.status.success() {
            bail!("haproxy refused its configuration: {}", String::from_utf8_lossy(&check.stderr));
        }
        // -db: stay in the foreground, so dropping the child stops it.
        let child = Command::new(&bin)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting haproxy")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in &ports {
            while tokio::net::TcpStream::connect(("127.0.0.1", *port)).await.is_err() {
                if Instant::now() > deadline {
                    bail!("haproxy did not listen on {port} within 10 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(HaProxy { ports, _dir: dir, _child: child })
    }
}
