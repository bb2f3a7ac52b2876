//! Forwarding the audit log to SIEMs: syslog (UDP, TCP, TLS), signed HTTPS webhooks and S3 objects.
//!
//! Every sink is the same shape: a [`SinkSpec`] parsed from a URL, a task that reads rows after its durable
//! cursor (named after the sink, never containing credentials), hands them to the sink, and only then moves the
//! cursor. Delivery is therefore **at least once**: a row is never skipped across sink outages or forwarder
//! restarts, and a row delivered right before a crash may be delivered again; every row carries its
//! `event_id` (and `seq` and `mac`) so receivers can drop duplicates.
//!
//! Security rules of this module:
//! - secrets (S3 secret key, webhook secret) live in [`Secret`], whose `Debug` is redacted;
//! - error messages and sink names never contain credentials, signed URLs or query strings;
//! - the webhook client never follows redirects, and plain `http://` is accepted only for loopback hosts.

mod config;
mod s3;
mod status;
mod syslog;
mod tls;
mod webhook;

pub use config::{ForwardOptions, S3Settings, Secret, SinkSpec, SyslogTransport};
pub use s3::{object_digest, S3_GENESIS_DIGEST};
pub use status::{ForwardStatus, SinkSnapshot, SinkStatus};
pub use syslog::format_rfc5424;
pub use webhook::{sign_body, webhook_secret_from_hmac_key};

use kubehero_store::{Store, StoredAuditRow};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Why forwarding failed. Messages name the sink and the failure, never a secret or a signed URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// A sink URL or option is invalid; nothing was started. The message says what to change.
    #[error("invalid forwarding configuration: {0}")]
    Config(String),
    /// The sink could not be reached (DNS, connect, TLS handshake).
    #[error("cannot connect to {sink}: {reason}")]
    Connect { sink: String, reason: String },
    /// Writing to an open connection or sending a request failed.
    #[error("sending to {sink} failed: {reason}")]
    Send { sink: String, reason: String },
    /// The receiver answered but refused the batch (non-2xx); `detail` is its status and error code.
    #[error("{sink} refused the batch: {detail}")]
    Rejected { sink: String, detail: String },
    /// Reading rows or writing the cursor failed.
    #[error("audit store: {0}")]
    Store(String),
    /// `--once` gave up on a sink after repeated failures; the cursor stays where delivery stopped.
    #[error("{sink}: gave up after {attempts} attempts: {last}")]
    GaveUp { sink: String, attempts: u32, last: String },
}

/// A connected sink: every destination has this one shape, and the shared loop ([`sink_loop`]) knows no kind.
#[async_trait::async_trait]
pub(crate) trait Sink: Send {
    /// Where delivery continues: the sink's durable cursor (a sink that keeps more state beside it, like S3's
    /// digest chain, loads that too). Called at start and after every store error.
    async fn resume(&mut self, store: &dyn Store, name: &str) -> Result<i64, ForwardError> {
        store.sink_cursor(name).await.map_err(|e| ForwardError::Store(e.to_string()))
    }

    /// Delivers a prefix of `rows` (at least one row on success) and returns its length. On error nothing of
    /// this call counts as delivered.
    async fn deliver(&mut self, store: &dyn Store, rows: &[StoredAuditRow]) -> Result<usize, ForwardError>;

    /// Called after a failed delivery: drop connections so the next attempt starts clean.
    fn reset(&mut self) {}

    /// Rows to gather before delivering when the log is quiet, and for how long at most (objects, not lines).
    fn linger(&self) -> Option<(usize, Duration)> {
        None
    }
}

fn build(spec: &SinkSpec, opts: &ForwardOptions) -> Result<Box<dyn Sink>, ForwardError> {
    Ok(match spec {
        SinkSpec::Syslog { .. } => Box::new(syslog::SyslogSink::new(spec, opts)?),
        SinkSpec::Webhook { .. } => Box::new(webhook::WebhookSink::new(spec, opts)?),
        SinkSpec::S3 { .. } => Box::new(s3::S3Sink::new(spec, opts)?),
    })
}

/// Runs every sink until `stop` turns true, with default options. See [`run_with`].
pub async fn run(
    store: Arc<dyn Store>,
    sinks: Vec<SinkSpec>,
    status: Arc<ForwardStatus>,
    stop: watch::Receiver<bool>,
) -> Result<(), ForwardError> {
    run_with(store, sinks, ForwardOptions::default(), status, stop).await
}

/// Runs every sink as its own task: each reads rows after its durable cursor, delivers them, then moves the
/// cursor. Returns when `stop` turns true (after the batches in flight), or with `opts.once` when every sink
/// has delivered everything. Every sink is built first, so a bad URL or missing credential fails before any
/// row moves. With `once`, the first sink that gave up is returned as the error (the others still finish).
pub async fn run_with(
    store: Arc<dyn Store>,
    sinks: Vec<SinkSpec>,
    opts: ForwardOptions,
    status: Arc<ForwardStatus>,
    stop: watch::Receiver<bool>,
) -> Result<(), ForwardError> {
    let mut names = std::collections::HashSet::new();
    let mut built = Vec::new();
    for spec in &sinks {
        let name = spec.name();
        if !names.insert(name.clone()) {
            return Err(ForwardError::Config(format!("sink {name} is given twice")));
        }
        built.push((name, build(spec, &opts)?));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (name, sink) in built {
        let st = status.register(&name);
        tasks.spawn(sink_loop(store.clone(), name, sink, opts.clone(), status.clone(), st, stop.clone()));
    }
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(ForwardError::Store(format!("a sink task failed: {e}")));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn now_unix() -> i64 {
    crate::writer::now_ms() / 1000
}

/// Sleeps `d`, returning early (true) when `stop` fires or was already set.
/// The row an object sink delivers without waiting for a fuller object (the canonical body's spelling).
const ALERT_ACTION: &str = "\"action\":\"breakglass.use\"";

async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        r = stop.changed() => r.is_err() || *stop.borrow(),
    }
}

async fn sink_loop(
    store: Arc<dyn Store>,
    name: String,
    mut sink: Box<dyn Sink>,
    opts: ForwardOptions,
    status: Arc<ForwardStatus>,
    st: Arc<SinkStatus>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ForwardError> {
    let mut backoff = kubehero_core::backoff::Backoff::new(opts.min_backoff, opts.max_backoff);
    let mut failures = 0u32;
    // The cursor (and whatever state the sink keeps beside it) is read at start and after every store error.
    let mut cursor: Option<i64> = None;
    let mut lingering: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let limit = sink.linger().map_or(opts.batch_rows, |(want, _)| want.max(opts.batch_rows)).max(1);
        let step = async {
            let after = match cursor {
                Some(c) => c,
                None => {
                    let c = sink.resume(&*store, &name).await?;
                    st.delivered.store(c, Ordering::Relaxed);
                    cursor = Some(c);
                    c
                }
            };
            let (head, _) = store.audit_head().await.map_err(|e| ForwardError::Store(e.to_string()))?;
            status.set_head(head);
            let rows = store
                .audit_rows(after, i64::try_from(limit).unwrap_or(i64::MAX))
                .await
                .map_err(|e| ForwardError::Store(e.to_string()))?;
            // Rows committed after the head was read are part of the head too (lag must never read 0 then).
            if let Some(last) = rows.last() {
                status.set_head(last.seq);
            }
            Ok::<_, ForwardError>(rows)
        };
        let rows = match step.await {
            Ok(r) => r,
            Err(e) => {
                cursor = None;
                if fail(&name, &st, &e, &opts, &mut failures, &mut backoff, &mut stop).await? {
                    return Ok(());
                }
                continue;
            }
        };
        if rows.is_empty() {
            lingering = None;
            if opts.once {
                return Ok(());
            }
            tokio::select! {
                _ = status.wake.notified() => {}
                _ = sleep_or_stop(opts.poll, &mut stop) => {}
            }
            continue;
        }
        // Object sinks wait a little for a fuller object when the log is quiet; never with an alert to deliver
        // (a break-glass use reaches every sink at once).
        let alert = rows.iter().any(|r| r.body.contains(ALERT_ACTION));
        if let Some((want, linger)) = sink.linger() {
            if !opts.once && !alert && rows.len() < want && !linger.is_zero() {
                let since = *lingering.get_or_insert_with(Instant::now);
                if since.elapsed() < linger {
                    tokio::select! {
                        _ = status.wake.notified() => {}
                        _ = sleep_or_stop(opts.poll, &mut stop) => {}
                    }
                    if !*stop.borrow() {
                        continue;
                    }
                }
            }
        }
        lingering = None;
        let mut off = 0;
        while off < rows.len() {
            match sink.deliver(&*store, &rows[off..]).await {
                Ok(n) => {
                    let n = n.clamp(1, rows.len() - off);
                    let last = rows[off + n - 1].seq;
                    if let Err(e) = store.set_sink_cursor(&name, last, now_unix()).await {
                        // Delivered but not recorded: the rows go out again (at least once).
                        let e = ForwardError::Store(e.to_string());
                        cursor = None;
                        if fail(&name, &st, &e, &opts, &mut failures, &mut backoff, &mut stop).await? {
                            return Ok(());
                        }
                        break;
                    }
                    off += n;
                    cursor = Some(last);
                    st.delivered.store(last, Ordering::Relaxed);
                    st.rows_total.fetch_add(n as u64, Ordering::Relaxed);
                    if failures > 0 {
                        tracing::info!(sink = %name, seq = last, "audit forwarding recovered");
                        st.set_error(None);
                    }
                    failures = 0;
                    backoff.reset();
                }
                Err(e) => {
                    sink.reset();
                    if fail(&name, &st, &e, &opts, &mut failures, &mut backoff, &mut stop).await? {
                        return Ok(());
                    }
                    break;
                }
            }
        }
    }
}

/// Records a failure and waits out the backoff. `Ok(true)`: stop requested; `Err`: `once` gave up.
async fn fail(
    name: &str,
    st: &SinkStatus,
    e: &ForwardError,
    opts: &ForwardOptions,
    failures: &mut u32,
    backoff: &mut kubehero_core::backoff::Backoff,
    stop: &mut watch::Receiver<bool>,
) -> Result<bool, ForwardError> {
    *failures += 1;
    let msg = e.to_string();
    let wait = backoff.next_wait();
    tracing::warn!(sink = %name, error = %msg, attempt = *failures, retry_in_ms = wait.as_millis() as u64,
        "audit forwarding failed; retrying");
    st.set_error(Some(msg.clone()));
    if opts.once && *failures >= opts.once_attempts {
        return Err(ForwardError::GaveUp { sink: name.to_string(), attempts: *failures, last: msg });
    }
    Ok(sleep_or_stop(wait, stop).await)
}

/// The fields of a canonical record the sinks need, borrowed from its text.
#[derive(serde::Deserialize)]
pub(crate) struct RowFields<'a> {
    #[serde(borrow)]
    pub event_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub time: std::borrow::Cow<'a, str>,
    pub time_ms: i64,
    #[serde(borrow)]
    pub action: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub actor: ActorFields<'a>,
    pub result: ResultFields,
}

#[derive(serde::Deserialize)]
pub(crate) struct ActorFields<'a> {
    #[serde(borrow)]
    pub sub: std::borrow::Cow<'a, str>,
}

#[derive(serde::Deserialize)]
pub(crate) struct ResultFields {
    pub outcome: kubehero_core::AuditOutcome,
}

impl<'a> RowFields<'a> {
    pub(crate) fn of(row: &'a StoredAuditRow) -> Option<RowFields<'a>> {
        serde_json::from_str(&row.body).ok()
    }
}
