//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory, `pg_ctl start` on a free loopback
//! port with trust authentication, `pg_ctl stop` on drop. Nothing is shared with a system PostgreSQL.
//!
//! `initdb` refuses to run as root, so when the tests run as root the cluster belongs to the `postgres`
//! user (created by Debian's `postgresql` package, which `scripts/test` installs) and every command runs
//! through `runuser`.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running throwaway cluster. `url` reaches its `postgres` database as the superuser `postgres`.
pub struct TempPostgres {
    pub url: String,
    pub port: u16,
    data: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
    _dir: tempfile::TempDir,
}

impl TempPostgres {
    /// Whether `initdb` and `pg_ctl` can be found (on `PATH` or under `/usr/lib/postgresql/*/bin`).
    pub fn available() -> bool {
        bin_dir().is_some()
    }

    /// Creates and starts a fresh cluster.
    pub async fn start() -> anyhow::Result<TempPostgres> {
        tokio::task::spawn_blocking(|| Self::start_blocking(false)).await?
    }

    /// Creates and starts a fresh cluster that keeps PostgreSQL's default durability (`fsync` and
    /// `full_page_writes` on), for benchmarks whose point is the cost of a durable commit.
    pub async fn start_durable() -> anyhow::Result<TempPostgres> {
        tokio::task::spawn_blocking(|| Self::start_blocking(true)).await?
    }

    fn start_blocking(durable: bool) -> anyhow::Result<TempPostgres> {
        let bin = bin_dir().context("initdb/pg_ctl not found: install Debian's `postgresql` package")?;
        let run_as = is_root().then(|| "postgres".to_string());
        let dir = tempfile::Builder::new().prefix("kubehero-pg").tempdir()?;
        let data = dir.path().join("data");
        if let Some(user) = &run_as {
            run(Command::new("chown").arg(format!("{user}:")).arg(dir.path()))?;
        }
        let port = crate::oidc::free_port()?;
        let pg = TempPostgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            data,
            bin,
            run_as,
            _dir: dir,
        };
        run(pg
            .command("initdb")
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C", "-D"])
            .arg(&pg.data))?;
        // Tests exercise behaviour, not crash safety of the throwaway cluster, so fsync is off for speed unless
        // the caller measures durable commits.
        let conf = if durable {
            "listen_addresses = '127.0.0.1'\nmax_connections = 200\n"
        } else {
            "listen_addresses = '127.0.0.1'\nfsync = off\nfull_page_writes = off\nmax_connections = 200\n"
        };
        let conf_path = pg.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)?;
        text.push_str(conf);
        text.push_str(&format!("port = {port}\nunix_socket_directories = '{}'\n", pg.socket_dir().display()));
        std::fs::write(&conf_path, text)?;
        pg.start_server_checked()?;
        Ok(pg)
    }

    fn socket_dir(&self) -> &Path {
        self.data.parent().unwrap_or(&self.data)
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn start_server_checked(&self) -> anyhow::Result<()> {
        let log = self.socket_dir().join("postgres.log");
        run(self.command("pg_ctl").args(["start", "-w", "-t", "60", "-D"]).arg(&self.data).arg("-l").arg(log))
    }

    /// Stops the server (fast shutdown) keeping the data, to simulate a dead database.
    pub fn stop_server(&self) {
        let _ = run(self.command("pg_ctl").args(["stop", "-w", "-m", "fast", "-D"]).arg(&self.data));
    }

    /// Starts the server again after [`TempPostgres::stop_server`].
    pub fn start_server(&self) {
        if let Err(e) = self.start_server_checked() {
            eprintln!("restarting throwaway PostgreSQL failed: {e:#}");
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["stop", "-m", "immediate", "-D"]).arg(&self.data).output();
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let Output { status, stdout, stderr } = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status}): {}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn bin_dir() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").exists() && d.join("pg_ctl").exists();
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(d) = std::env::split_paths(&path).find(|d| has(d)) {
            return Some(d);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| has(d))
        .collect();
    versions.sort();
    versions.pop()
}
