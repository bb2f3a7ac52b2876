//! Sink configuration: URLs parsed into [`SinkSpec`]s, the options of a forwarder run, and the secrets they
//! hold (redacted in `Debug`).

use super::{webhook_secret_from_hmac_key, ForwardError};
use std::path::PathBuf;
use std::time::Duration;

pub use kubehero_core::Secret;

/// Syslog transports (RFC 5426 UDP, RFC 6587 TCP, RFC 5425 TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    Udp,
    Tcp,
    Tls,
}

/// One forwarding destination, parsed from a URL by [`SinkSpec::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// `udp://host:port` (default 514), `tcp://host:port` (514), `tls://host:port` (6514).
    Syslog { transport: SyslogTransport, host: String, port: u16 },
    /// `https://…` or, for loopback hosts only, `http://…`. The URL is kept whole (it may carry a token).
    Webhook { url: url::Url },
    /// `s3://bucket/prefix`.
    S3 { bucket: String, prefix: String },
}

impl SinkSpec {
    /// Parses a sink URL. The scheme picks the sink: `udp`, `tcp`, `tls` (syslog), `https`/`http` (webhook),
    /// `s3`.
    pub fn parse(s: &str) -> Result<SinkSpec, ForwardError> {
        let url = url::Url::parse(s.trim())
            .map_err(|e| ForwardError::Config(format!("{:?} is not a URL ({e}); e.g. tcp://siem:514", redact(s))))?;
        let host = || {
            url.host_str()
                .filter(|h| !h.is_empty())
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
                .ok_or_else(|| ForwardError::Config(format!("{} has no host", redact(s))))
        };
        match url.scheme() {
            "udp" | "tcp" | "tls" => {
                let (transport, default_port) = match url.scheme() {
                    "udp" => (SyslogTransport::Udp, 514),
                    "tcp" => (SyslogTransport::Tcp, 514),
                    _ => (SyslogTransport::Tls, 6514),
                };
                if url.path().len() > 1 || url.query().is_some() || !url.username().is_empty() {
                    return Err(ForwardError::Config(format!(
                        "syslog URL {} takes only host and port, e.g. {}://siem.example:{default_port}",
                        redact(s),
                        url.scheme()
                    )));
                }
                Ok(SinkSpec::Syslog { transport, host: host()?, port: url.port().unwrap_or(default_port) })
            }
            "https" => {
                host()?;
                Ok(SinkSpec::Webhook { url })
            }
            "http" => {
                if !is_loopback(url.host()) {
                    return Err(ForwardError::Config(format!(
                        "webhook {} uses plain http: use https://, http:// is accepted only for 127.0.0.1, ::1 and localhost",
                        redact(s)
                    )));
                }
                Ok(SinkSpec::Webhook { url })
            }
            "s3" => {
                let bucket = host()?;
                let prefix = url.path().trim_matches('/').to_string();
                if url.query().is_some() || !url.username().is_empty() {
                    return Err(ForwardError::Config(format!(
                        "S3 URL {} takes only bucket and prefix (s3://bucket/prefix); credentials come from \
                         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                        redact(s)
                    )));
                }
                Ok(SinkSpec::S3 { bucket, prefix })
            }
            other => Err(ForwardError::Config(format!(
                "unknown sink scheme {other:?} in {}: use udp://, tcp://, tls:// (syslog), https:// (webhook) or s3://",
                redact(s)
            ))),
        }
    }

    /// The sink's name: the key of its durable cursor, its metrics label. Never contains credentials or a
    /// query string: `syslog+tcp://127.0.0.1:5514`, `webhook+https://siem.example/ingest`, `s3://bucket/prefix`.
    pub fn name(&self) -> String {
        match self {
            SinkSpec::Syslog { transport, host, port } => {
                let t = match transport {
                    SyslogTransport::Udp => "udp",
                    SyslogTransport::Tcp => "tcp",
                    SyslogTransport::Tls => "tls",
                };
                if host.contains(':') {
                    format!("syslog+{t}://[{host}]:{port}")
                } else {
                    format!("syslog+{t}://{host}:{port}")
                }
            }
            SinkSpec::Webhook { url } => {
                let mut u = url.clone();
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.set_query(None);
                u.set_fragment(None);
                format!("webhook+{u}")
            }
            SinkSpec::S3 { bucket, prefix } => {
                if prefix.is_empty() {
                    format!("s3://{bucket}")
                } else {
                    format!("s3://{bucket}/{prefix}")
                }
            }
        }
    }
}

pub(crate) fn is_loopback(host: Option<url::Host<&str>>) -> bool {
    match host {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A URL for messages: no userinfo, no query.
fn redact(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if u.query().is_some() {
                u.set_query(Some("…"));
            }
            u.to_string()
        }
        Err(_) => s.chars().take(80).collect(),
    }
}

/// S3 settings shared by every `s3://` sink.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// `--s3-endpoint` / `KUBEHERO_AUDIT_S3_ENDPOINT`; default `https://s3.<region>.amazonaws.com`.
    pub endpoint: Option<String>,
    /// `AWS_REGION`, default `us-east-1`.
    pub region: String,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_key: Option<Secret>,
}

/// How the forwarder runs. [`ForwardOptions::from_env`] reads the documented variables.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// Deliver what is in the log and return, instead of following it.
    pub once: bool,
    /// Rows read from the store per round trip (and the syslog batch).
    pub batch_rows: usize,
    /// How often an idle sink looks for new rows (besides [`ForwardStatus::notify`]).
    pub poll: Duration,
    /// First retry delay; it doubles per failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// With `once`: consecutive failures of one batch before that sink gives up.
    pub once_attempts: u32,
    /// Rows per webhook POST (also capped at 1 MiB of body).
    pub webhook_batch_rows: usize,
    /// Webhook request timeout.
    pub webhook_timeout: Duration,
    /// `KUBEHERO_AUDIT_WEBHOOK_SECRET`, else derived from `AUDIT_HMAC_KEY` (see [`webhook_secret_from_hmac_key`]).
    pub webhook_secret: Option<Secret>,
    /// Rows per S3 object (also capped at 16 MiB of JSONL before compression).
    pub s3_object_rows: usize,
    /// How long an S3 sink waits for a full object before uploading what it has (not with `once`/on stop).
    pub s3_linger: Duration,
    pub s3: S3Settings,
    /// Extra trust anchors (PEM) for TLS syslog and HTTPS webhooks/S3, besides the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for ForwardOptions {
    fn default() -> ForwardOptions {
        ForwardOptions {
            once: false,
            batch_rows: 1000,
            poll: Duration::from_millis(200),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            once_attempts: 5,
            webhook_batch_rows: 500,
            webhook_timeout: Duration::from_secs(30),
            webhook_secret: None,
            s3_object_rows: 10_000,
            s3_linger: Duration::from_secs(5),
            s3: S3Settings { region: "us-east-1".into(), ..S3Settings::default() },
            ca_file: None,
        }
    }
}

impl ForwardOptions {
    /// Reads `KUBEHERO_AUDIT_S3_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `KUBEHERO_AUDIT_WEBHOOK_SECRET` and `AUDIT_HMAC_KEY` through `env` (so tests never set variables).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> ForwardOptions {
        let var = |n: &str| env(n).filter(|v| !v.is_empty());
        let webhook_secret = var("KUBEHERO_AUDIT_WEBHOOK_SECRET")
            .map(Secret::new)
            .or_else(|| var("AUDIT_HMAC_KEY").map(|k| webhook_secret_from_hmac_key(k.as_bytes())));
        ForwardOptions {
            webhook_secret,
            s3: S3Settings {
                endpoint: var("KUBEHERO_AUDIT_S3_ENDPOINT"),
                region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
                access_key: var("AWS_ACCESS_KEY_ID"),
                secret_key: var("AWS_SECRET_ACCESS_KEY").map(Secret::new),
            },
            ..ForwardOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::ForwardOptions;

    #[test]
    fn parses_sink_urls_and_names_them_without_credentials() {
        let s = SinkSpec::parse("tcp://127.0.0.1:5514").unwrap();
        assert_eq!(s.name(), "syslog+tcp://127.0.0.1:5514");
        assert_eq!(SinkSpec::parse("udp://siem").unwrap().name(), "syslog+udp://siem:514");
        assert_eq!(SinkSpec::parse("tls://[::1]").unwrap().name(), "syslog+tls://[::1]:6514");
        let w = SinkSpec::parse("https://user:pw@siem.example/ingest?token=abc").unwrap();
        assert_eq!(w.name(), "webhook+https://siem.example/ingest");
        assert!(SinkSpec::parse("http://siem.example/x").is_err());
        assert!(SinkSpec::parse("http://127.0.0.1:9/x").is_ok());
        assert!(SinkSpec::parse("http://localhost:9/x").is_ok());
        assert_eq!(SinkSpec::parse("s3://bucket/a/b/").unwrap().name(), "s3://bucket/a/b");
        assert_eq!(SinkSpec::parse("s3://bucket").unwrap().name(), "s3://bucket");
        assert!(SinkSpec::parse("ftp://x").is_err());
        assert!(SinkSpec::parse("tcp://x:1/path").is_err());
        let e = SinkSpec::parse("gopher://u:secretpw@h/?k=v").unwrap_err().to_string();
        assert!(!e.contains("secretpw") && !e.contains("k=v"), "{e}");
    }

    #[test]
    fn secrets_are_redacted() {
        let o = ForwardOptions::from_env(&|n| match n {
            "AWS_SECRET_ACCESS_KEY" => Some("s3-secret-value".into()),
            "KUBEHERO_AUDIT_WEBHOOK_SECRET" => Some("hook-secret-value".into()),
            _ => None,
        });
        let d = format!("{o:?}");
        assert!(!d.contains("s3-secret-value") && !d.contains("hook-secret-value"), "{d}");
        assert_eq!(o.s3.region, "us-east-1");
    }
}
