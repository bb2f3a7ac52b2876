//! `kubehero audit forward`: sends the audit log to SIEMs (syslog, webhook, S3) and keeps following it.
//! Each sink has a durable cursor in the database, so stopping and starting again resumes where delivery
//! stopped; delivery is at least once (duplicates carry the same `event_id`).

use anyhow::Context;
use kubehero_audit::forward::{run_with, ForwardError, ForwardOptions, ForwardStatus, SinkSpec};
use kubehero_store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
#[command(after_long_help = FORWARD_HELP)]
pub struct ForwardArgs {
    /// Syslog receiver: udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT (RFC 5424; TCP/TLS octet-counted).
    /// Repeatable.
    #[arg(long, value_name = "URL")]
    pub syslog: Vec<String>,
    /// Webhook receiving signed JSON batches: https://… (http:// only for loopback). Repeatable.
    #[arg(long, value_name = "URL")]
    pub webhook: Vec<String>,
    /// S3 bucket and prefix for gzip JSONL objects: s3://BUCKET/PREFIX. Repeatable.
    #[arg(long, value_name = "URL")]
    pub s3: Vec<String>,
    /// S3 endpoint for S3-compatible stores (path-style), e.g. https://minio.example:9000.
    #[arg(long, value_name = "URL", env = "KUBEHERO_AUDIT_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Extra CA certificates (PEM) to trust for tls:// syslog, webhooks and S3, besides the system's.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Deliver what is in the log now, then exit (non-zero if a sink keeps failing).
    #[arg(long)]
    pub once: bool,
}

const FORWARD_HELP: &str = "Environment:
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   S3 credentials (required with --s3)
  AWS_REGION                                 S3 region (default us-east-1)
  KUBEHERO_AUDIT_S3_ENDPOINT                 same as --s3-endpoint
  KUBEHERO_AUDIT_WEBHOOK_SECRET              webhook signing secret; when unset:
                                             hex(HMAC-SHA256(AUDIT_HMAC_KEY, \"kubehero-audit-webhook-v1\"))

Webhook headers:
  X-KubeHero-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, \"<t>.\" + body)>
  X-KubeHero-Batch: <first seq>-<last seq>

S3 objects: <prefix>/YYYY/MM/DD/<first seq>-<last seq>.jsonl.gz, chained by the metadata
x-amz-meta-kubehero-prev-digest and x-amz-meta-kubehero-digest.";

/// Runs the forwarder until Ctrl-C / SIGTERM (or, with `--once`, until everything is delivered).
pub async fn run(args: ForwardArgs, store: Arc<dyn Store>) -> anyhow::Result<()> {
    let mut specs = Vec::new();
    for (flag, urls) in [("--syslog", &args.syslog), ("--webhook", &args.webhook), ("--s3", &args.s3)] {
        for u in urls {
            let spec = SinkSpec::parse(u).with_context(|| format!("invalid {flag} URL"))?;
            let fits = matches!(
                (flag, &spec),
                ("--syslog", SinkSpec::Syslog { .. })
                    | ("--webhook", SinkSpec::Webhook { .. })
                    | ("--s3", SinkSpec::S3 { .. })
            );
            if !fits {
                anyhow::bail!(
                    "{flag} got {}: use --syslog for udp:// tcp:// tls://, --webhook for https://, --s3 for s3://",
                    spec.name()
                );
            }
            specs.push(spec);
        }
    }
    if specs.is_empty() {
        anyhow::bail!("no sink given: pass at least one of --syslog URL, --webhook URL, --s3 URL");
    }
    let mut opts = ForwardOptions::from_env(&|n| std::env::var(n).ok());
    opts.once = args.once;
    if args.s3_endpoint.is_some() {
        opts.s3.endpoint = args.s3_endpoint;
    }
    opts.ca_file = args.ca_file;

    let names: Vec<String> = specs.iter().map(SinkSpec::name).collect();
    eprintln!("forwarding the audit log to {}", names.join(", "));
    let status = ForwardStatus::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut forward = tokio::spawn(run_with(store.clone(), specs, opts, status.clone(), stop_rx));
    let mut progress = tokio::time::interval(Duration::from_secs(10));
    progress.tick().await;
    let result = loop {
        tokio::select! {
            r = &mut forward => break r,
            _ = shutdown_signal() => {
                eprintln!("stopping: finishing the batches in flight (the cursors are durable; run again to resume)");
                let _ = stop_tx.send(true);
                break (&mut forward).await;
            }
            _ = progress.tick() => report(&status),
        }
    };
    report(&status);
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ ForwardError::Config(_))) => Err(anyhow::Error::new(e)),
        Ok(Err(e)) => Err(anyhow::Error::new(e)
            .context("audit forwarding stopped; fix the sink and run again, delivery resumes at its cursor")),
        Err(e) => Err(anyhow::anyhow!("the forwarder task failed: {e}")),
    }
}

fn report(status: &ForwardStatus) {
    for s in status.snapshot() {
        match &s.last_error {
            Some(e) => {
                eprintln!("  {}: delivered up to seq {}, {} behind, failing: {e}", s.name, s.delivered_seq, s.lag_rows)
            }
            None => eprintln!("  {}: delivered up to seq {}, {} behind", s.name, s.delivered_seq, s.lag_rows),
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
