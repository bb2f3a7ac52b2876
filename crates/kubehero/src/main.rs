//! The `kubehero` binary: `kubehero serve` runs the control plane; the other commands are its CLI.
//! Thin wiring only: configuration lives in `kubehero-server::config`, logic in the library crates.

mod agent_cmd;
mod apikey;
mod audit_cmd;
mod cli;
mod forward_cmd;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kubehero_server::config::{settings_help, ProcessEnv, ServerConfig};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kubehero",
    version,
    about = "KubeHero: one identity and access plane for many Kubernetes clusters",
    long_about = "KubeHero authenticates every person and machine against your identity provider (OIDC JWTs \
with JWKS verification, API keys), maps groups to five roles (viewer, member, auditor, admin, owner), and \
serves the control-plane API; cluster agents hold outbound tunnels to it, and kubectl reaches every cluster \
through it at /k8s/clusters/<name>.\n\nRun `kubehero serve` to start the control plane on its embedded defaults \
(SQLite under ./kubehero-data, http://127.0.0.1:8080, agents at 127.0.0.1:8443, open mode)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane.
    #[command(after_long_help = serve_help())]
    Serve {
        /// Configuration file (same as KUBEHERO_CONFIG).
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
    /// Manage API keys in the control plane's database (run on the server host, same settings as `serve`).
    #[command(subcommand, after_long_help = serve_help())]
    Apikey(apikey::ApiKeyCommand),
    /// Export, verify and forward the audit log (run on the server host, same settings as `serve`).
    #[command(subcommand, after_long_help = serve_help())]
    Audit(audit_cmd::AuditCommand),
    /// Run the cluster agent: join, then hold an outbound mTLS tunnel to the control plane.
    #[command(long_about = agent_cmd::AGENT_ABOUT)]
    Agent(agent_cmd::AgentArgs),
    #[command(flatten)]
    Cli(cli::CliCommand),
}

fn serve_help() -> String {
    settings_help()
}

/// The environment, with `--config` standing in for KUBEHERO_CONFIG.
struct CliEnv {
    config: Option<String>,
}

impl kubehero_server::config::Env for CliEnv {
    fn var(&self, name: &str) -> Option<String> {
        if name == "KUBEHERO_CONFIG" {
            if let Some(c) = &self.config {
                return Some(c.clone());
            }
        }
        ProcessEnv.var(name)
    }
    fn names(&self) -> Vec<String> {
        ProcessEnv.names()
    }
}

/// Sets up logging from `KUBEHERO_LOG` and `KUBEHERO_LOG_FORMAT`; a value that is not valid is the usual
/// one-line start-up error, never a silent fallback.
fn init_logging() -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let spec = std::env::var("KUBEHERO_LOG").unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(&spec).map_err(|e| {
        format!(
            "KUBEHERO_LOG: {spec:?} is not a log filter ({e}). Fix: use a level (error, warn, info, debug, trace) \
             or target=level pairs, e.g. info,kubehero_authn=debug"
        )
    })?;
    let json = match std::env::var("KUBEHERO_LOG_FORMAT").as_deref() {
        Err(_) | Ok("text") => false,
        Ok("json") => true,
        Ok(other) => return Err(format!("KUBEHERO_LOG_FORMAT: {other:?} is not a format. Fix: use text or json")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

fn load_config(config: Option<std::path::PathBuf>) -> anyhow::Result<ServerConfig> {
    let env = CliEnv { config: config.map(|p| p.display().to_string()) };
    let cfg = ServerConfig::load(&env)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    Ok(cfg)
}

async fn serve(config: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    if !cfg.require_auth {
        tracing::warn!(
            "open mode: KUBEHERO_REQUIRE_AUTH is not true, so requests without a credential are served as an \
             anonymous viewer. Set KUBEHERO_REQUIRE_AUTH=true before real users arrive."
        );
    }
    let server = kubehero_server::start(&cfg).await.context("starting the control plane")?;
    tracing::info!(
        addr = %server.addr,
        tls = cfg.tls.is_some(),
        database = %kubehero_store::redact_url(&cfg.database_url),
        issuers = cfg.issuers.len(),
        static_api_keys = cfg.api_keys.len(),
        "KubeHero control plane listening"
    );
    let stop = server.shutdown_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop.send(true);
    });
    server.wait().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve { config } => serve(config).await.map(|()| ExitCode::SUCCESS),
            Command::Apikey(cmd) => apikey::run(cmd, load_config(None)?).await.map(|()| ExitCode::SUCCESS),
            Command::Audit(cmd) => audit_cmd::run(cmd, load_config(None)?).await,
            Command::Agent(a) => agent_cmd::run(a).await.map(|()| ExitCode::SUCCESS),
            Command::Cli(cmd) => cli::run(cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
