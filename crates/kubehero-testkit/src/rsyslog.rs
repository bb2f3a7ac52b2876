//! A real `rsyslogd` (Debian's rsyslog, plus rsyslog-gnutls for TLS) as the test syslog receiver: UDP and TCP
//! on one free loopback port, optionally TLS (RFC 5425, gtls driver, anonymous client auth) on another, every
//! message written to files in a private directory. [`Rsyslog::stop`] / [`Rsyslog::restart`] keep the ports and
//! files so outage tests can take the receiver away and bring it back; drop kills it.
//!
//! `scripts/test` installs the packages; [`Rsyslog::available`] says whether they are there.

use anyhow::{anyhow, bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// One message as rsyslog parsed it (the fields of the `jsonfmt` template below).
pub type Message = serde_json::Value;

/// A running rsyslogd.
pub struct Rsyslog {
    /// UDP and TCP (plain, octet counting or newline framing) listen here.
    pub port: u16,
    /// TLS listens here when started with [`Rsyslog::start_tls`].
    pub tls_port: Option<u16>,
    /// The CA that signed the TLS listener's certificate (PEM), for the client's trust.
    pub ca_file: Option<PathBuf>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn rsyslogd() -> Option<PathBuf> {
    ["/usr/sbin/rsyslogd", "/sbin/rsyslogd", "/usr/bin/rsyslogd"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// A port free for both TCP and UDP on 127.0.0.1.
fn free_tcp_udp_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let t = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = t.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both TCP and UDP")
}

fn config(dir: &Path, port: u16, tls: Option<(u16, &Path, &Path, &Path)>) -> String {
    let d = dir.display();
    let mut c = String::new();
    c.push_str(&format!("global(workDirectory=\"{d}/work\" maxMessageSize=\"64k\"\n"));
    if let Some((_, ca, cert, key)) = tls {
        c.push_str(&format!(
            "  defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"\n",
            ca.display(),
            cert.display(),
            key.display()
        ));
    }
    c.push_str(")\nmodule(load=\"imudp\")\nmodule(load=\"imtcp\" maxSessions=\"1000\")\n");
    c.push_str(&format!(
        "input(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"remote\" rcvbufSize=\"8m\")\n"
    ));
    c.push_str(&format!("input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"remote\")\n"));
    if let Some((tls_port, ..)) = tls {
        c.push_str(&format!(
            "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tls_port}\" ruleset=\"remote\" name=\"tls\"\n  \
             streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\")\n"
        ));
    }
    c.push_str(
        r#"
template(name="jsonfmt" type="list" option.jsonf="on") {
  property(outname="input"    name="inputname"              format="jsonf")
  property(outname="pri"      name="pri"                    format="jsonf")
  property(outname="facility" name="syslogfacility-text"    format="jsonf")
  property(outname="severity" name="syslogseverity-text"    format="jsonf")
  property(outname="version"  name="protocol-version"       format="jsonf")
  property(outname="time"     name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="host"     name="hostname"               format="jsonf")
  property(outname="app"      name="app-name"               format="jsonf")
  property(outname="procid"   name="procid"                 format="jsonf")
  property(outname="msgid"    name="msgid"                  format="jsonf")
  property(outname="sd"       name="structured-data"        format="jsonf")
  property(outname="msg"      name="msg"                    format="jsonf")
}
"#,
    );
    c.push_str(&format!(
        "ruleset(name=\"remote\") {{\n  action(type=\"omfile\" file=\"{d}/out/messages.jsonl\" template=\"jsonfmt\")\n  \
         action(type=\"omfile\" file=\"{d}/out/rfc5424.log\" template=\"RSYSLOG_SyslogProtocol23Format\")\n}}\n"
    ));
    c
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (install the openssl package)")?;
    if !out.status.success() {
        bail!("openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1 (ECDSA P-256), written into `dir` as
/// `ca.pem`, `server.pem`, `server.key`.
pub fn write_test_pki(dir: &Path) -> anyhow::Result<()> {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=KubeHero test CA"]);
    openssl(dir, &a)?;
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
    openssl(dir, &a)?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    )?;
    Ok(())
}

impl Rsyslog {
    /// Whether rsyslogd is installed.
    pub fn available() -> bool {
        rsyslogd().is_some()
    }

    /// Whether the gtls driver (Debian `rsyslog-gnutls`) is installed.
    pub fn tls_available() -> bool {
        ["/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/aarch64-linux-gnu/rsyslog", "/usr/lib/rsyslog"]
            .iter()
            .any(|d| Path::new(d).join("lmnsd_gtls.so").exists())
    }

    /// UDP + TCP on a free port.
    pub async fn start() -> anyhow::Result<Rsyslog> {
        Self::start_inner(false).await
    }

    /// UDP + TCP, and TLS with a fresh test CA (see [`Rsyslog::ca_file`]).
    pub async fn start_tls() -> anyhow::Result<Rsyslog> {
        Self::start_inner(true).await
    }

    async fn start_inner(tls: bool) -> anyhow::Result<Rsyslog> {
        let bin = rsyslogd()
            .ok_or_else(|| anyhow!("rsyslogd is not installed: run scripts/test or apt-get install rsyslog"))?;
        let dir = tempfile::Builder::new().prefix("kubehero-rsyslog").tempdir()?;
        std::fs::create_dir_all(dir.path().join("work"))?;
        std::fs::create_dir_all(dir.path().join("out"))?;
        let port = free_tcp_udp_port()?;
        let (tls_port, ca_file) = if tls {
            if !Self::tls_available() {
                bail!("rsyslog's TLS driver is missing: apt-get install rsyslog-gnutls");
            }
            write_test_pki(dir.path())?;
            (Some(crate::oidc::free_port()?), Some(dir.path().join("ca.pem")))
        } else {
            (None, None)
        };
        let p = dir.path();
        let (ca, cert, key) = (p.join("ca.pem"), p.join("server.pem"), p.join("server.key"));
        let conf = config(p, port, tls_port.map(|t| (t, ca.as_path(), cert.as_path(), key.as_path())));
        std::fs::write(p.join("rsyslog.conf"), conf)?;
        let check = std::process::Command::new(&bin).arg("-N1").arg("-f").arg(p.join("rsyslog.conf")).output()?;
        if !check.status.success() {
            bail!("rsyslogd rejected the test config: {}", String::from_utf8_lossy(&check.stderr));
        }
        let mut r = Rsyslog { port, tls_port, ca_file, dir, child: None };
        r.spawn().await?;
        Ok(r)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = rsyslogd().ok_or_else(|| anyhow!("rsyslogd is not installed"))?;
        let p = self.dir.path();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(p.join("rsyslogd.stdout"))?;
        let child = Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(p.join("rsyslog.conf"))
            .arg("-i")
            .arg(p.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting rsyslogd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        for port in ports {
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    break;
                }
                if let Some(c) = self.child.as_mut() {
                    if let Some(st) = c.try_wait()? {
                        bail!("rsyslogd exited ({st}): {}", self.stdout_log());
                    }
                }
                if Instant::now() > deadline {
                    bail!("rsyslogd did not listen on {port} within 15 s: {}", self.stdout_log());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    fn stdout_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.stdout")).unwrap_or_default()
    }

    /// Stops rsyslogd gracefully (SIGTERM: it writes out what it received), keeping ports and files.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
                if tokio::time::timeout(Duration::from_secs(10), c.wait()).await.is_ok() {
                    return;
                }
            }
            let _ = c.kill().await;
        }
    }

    /// Starts it again on the same ports, appending to the same files.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.spawn().await
    }

    /// The directory holding `out/messages.jsonl` (parsed fields) and `out/rfc5424.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every message received so far, as rsyslog parsed it: `input`, `pri`, `facility`, `severity`, `version`,
    /// `time`, `host`, `app`, `procid`, `msgid`, `sd`, `msg`.
    pub fn messages(&self) -> anyhow::Result<Vec<Message>> {
        let text = match std::fs::read_to_string(self.dir.path().join("out/messages.jsonl")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        // A line being written may be incomplete: keep only whole lines.
        let whole = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        whole
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("rsyslog wrote a line that is not JSON: {l}")))
            .collect()
    }

    /// Waits until `pred` holds for the messages received, or `timeout` passes; returns the messages either way.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Message]) -> bool) -> anyhow::Result<Vec<Message>> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.messages()?;
            if pred(&m) || Instant::now() > deadline {
                return Ok(m);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}
