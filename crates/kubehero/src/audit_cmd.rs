//! `kubehero audit export|verify|forward`: read the audit log straight from the database (same settings as
//! `serve`), or verify an export file.

use anyhow::Context;
use clap::Subcommand;
use kubehero_audit::{VerifyError, VerifyReport};
use kubehero_server::config::ServerConfig;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Write the audit log as JSON lines (each record with its "mac"), then its signed checkpoints.
    Export {
        /// Output file (default: standard output).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Only rows after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Forward the audit log to SIEMs (syslog, webhook, S3), at least once, resuming from durable cursors.
    Forward(crate::forward_cmd::ForwardArgs),
    /// Check the HMAC chain and the signed checkpoints, from the database or from an export.
    ///
    /// Prints `N rows verified, intact through seq S`, or the first bad sequence number and what happened
    /// there (modified, deleted, reordered, inserted, truncated), and exits 1.
    Verify {
        /// Verify this export instead of the database.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Trust only checkpoints signed by this Ed25519 public key (hex); repeatable. Default: the key in
        /// KUBEHERO_AUDIT_SIGNING_KEY when that file exists here, otherwise the key each checkpoint names.
        #[arg(long = "public-key", value_name = "HEX")]
        public_keys: Vec<String>,
    },
}

pub async fn run(cmd: AuditCommand, cfg: ServerConfig) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Export { out, after } => {
            let store = open(&cfg).await?;
            let n = match out {
                Some(path) => {
                    let f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                    let mut w = std::io::BufWriter::new(f);
                    let n = kubehero_audit::export(&*store, after, &mut w).await.map_err(anyhow::Error::msg)?;
                    w.flush()?;
                    n
                }
                None => {
                    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
                    let n = kubehero_audit::export(&*store, after, &mut w).await.map_err(anyhow::Error::msg)?;
                    w.flush()?;
                    n
                }
            };
            eprintln!("exported {n} rows");
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { file, mut public_keys } => {
            let (keys, _) = kubehero_server::audit::load_hmac_keys(&cfg, false)?;
            if public_keys.is_empty() && cfg.audit_signing_key.exists() {
                let key = kubehero_server::audit::load_signing_key(&cfg.audit_signing_key)?;
                public_keys.push(key.public_hex().to_string());
            }
            let result = match file {
                Some(path) => {
                    let f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                    kubehero_audit::verify_lines(std::io::BufReader::new(f).lines(), &keys, &public_keys)
                }
                None => {
                    let store = open(&cfg).await?;
                    kubehero_audit::verify_store(&*store, &keys, &public_keys).await
                }
            };
            report(result)
        }
        AuditCommand::Forward(args) => {
            let store = open(&cfg).await?;
            crate::forward_cmd::run(args, store).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Opens the database as it is: the audit commands never create or migrate one.
async fn open(cfg: &ServerConfig) -> anyhow::Result<std::sync::Arc<dyn kubehero_store::Store>> {
    kubehero_store::open_as(&cfg.database_url, kubehero_store::Open::Existing)
        .await
        .context("opening the database (same settings as `kubehero serve`)")
}

fn report(result: Result<VerifyReport, VerifyError>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(r) => {
            println!("{r}");
            Ok(ExitCode::SUCCESS)
        }
        Err(VerifyError::Broken(f)) => {
            println!("{f}");
            Ok(ExitCode::from(1))
        }
        Err(VerifyError::Read(e)) => Err(anyhow::anyhow!("cannot read the audit log: {e}")),
    }
}
