//! Webhook sink: `POST` of JSON batches `{"rows":[<export line>, …]}` (up to `webhook_batch_rows` rows and
//! 1 MiB of body; a single larger row goes alone).
//!
//! Each request carries
//! - `X-KubeHero-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." ‖ body)>`: receivers recompute
//!   it over the raw body, compare in constant time and reject stale `t` to stop replays;
//! - `X-KubeHero-Batch: <first seq>-<last seq>`.
//!
//! The secret is `KUBEHERO_AUDIT_WEBHOOK_SECRET`; without it, a key derived from `AUDIT_HMAC_KEY` (see
//! [`webhook_secret_from_hmac_key`]) so the receiver never holds the key that chains the log (whoever holds it
//! could re-chain a rewritten history).
//!
//! Any 2xx is delivered. Anything else, a timeout or a connection error is retried with exponential backoff by
//! the forwarding loop. Redirects are never followed (a 3xx is a failure).

use super::{ForwardError, ForwardOptions, Secret, SinkSpec};
use crate::hex;
use kubehero_store::StoredAuditRow;
use ring::hmac;

/// Largest request body, unless a single row is larger.
const MAX_BODY: usize = 1 << 20;

/// `hex(HMAC-SHA256(secret, "<t>." ‖ body))`, the `v1` of `X-KubeHero-Signature`.
pub fn sign_body(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    hex::encode(ctx.sign().as_ref())
}

/// The webhook secret used when only `AUDIT_HMAC_KEY` is set: `hex(HMAC-SHA256(AUDIT_HMAC_KEY,
/// "kubehero-audit-webhook-v1"))`. Give this value (not the HMAC key) to the receiver.
pub fn webhook_secret_from_hmac_key(key: &[u8]) -> Secret {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    Secret::new(hex::encode(hmac::sign(&k, b"kubehero-audit-webhook-v1").as_ref()))
}

pub(crate) struct WebhookSink {
    name: String,
    url: url::Url,
    client: reqwest::Client,
    secret: Secret,
    max_rows: usize,
    body: Vec<u8>,
}

impl WebhookSink {
    pub(crate) fn new(spec: &SinkSpec, opts: &ForwardOptions) -> Result<WebhookSink, ForwardError> {
        let SinkSpec::Webhook { url } = spec else {
            return Err(ForwardError::Config("not a webhook sink".into()));
        };
        let name = spec.name();
        let secret = opts.webhook_secret.clone().ok_or_else(|| {
            ForwardError::Config(format!(
                "{name} needs a signing secret: set KUBEHERO_AUDIT_WEBHOOK_SECRET (or AUDIT_HMAC_KEY, from which \
                 one is derived)"
            ))
        })?;
        let client = http_client(opts)?;
        Ok(WebhookSink {
            name,
            url: url.clone(),
            client,
            secret,
            max_rows: opts.webhook_batch_rows.max(1),
            body: Vec::with_capacity(MAX_BODY + 4096),
        })
    }

    /// Posts one batch taken from the front of `rows`.
    pub(crate) async fn deliver(&mut self, rows: &[StoredAuditRow]) -> Result<usize, ForwardError> {
        let Some(first) = rows.first() else { return Ok(0) };
        self.body.clear();
        self.body.extend_from_slice(b"{\"rows\":[");
        let mut n = 0;
        for row in rows.iter().take(self.max_rows) {
            let line = crate::export_line(row);
            if n > 0 && self.body.len() + line.len() + 3 > MAX_BODY {
                break;
            }
            if n > 0 {
                self.body.push(b',');
            }
            self.body.extend_from_slice(line.as_bytes());
            n += 1;
        }
        self.body.extend_from_slice(b"]}");
        let last = &rows[n - 1];
        let t = super::now_unix();
        let sig = sign_body(self.secret.expose().as_bytes(), t, &self.body);
        let resp = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("x-kubehero-signature", format!("t={t},v1={sig}"))
            .header("x-kubehero-batch", format!("{}-{}", first.seq, last.seq))
            .body(self.body.clone())
            .send()
            .await
            .map_err(|e| ForwardError::Send { sink: self.name.clone(), reason: describe(&e) })?;
        let status = resp.status();
        if status.is_success() {
            Ok(n)
        } else {
            Err(ForwardError::Rejected { sink: self.name.clone(), detail: format!("HTTP {status}") })
        }
    }
}

/// The HTTP client of the webhook and S3 sinks: no redirects, bounded time, system roots plus `--ca-file`.
pub(crate) fn http_client(opts: &ForwardOptions) -> Result<reqwest::Client, ForwardError> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(opts.webhook_timeout)
        .user_agent(concat!("kubehero-audit-forwarder/", env!("CARGO_PKG_VERSION")));
    if let Some(p) = &opts.ca_file {
        for c in super::tls::read_ca_file(p)? {
            let cert = reqwest::Certificate::from_der(c.as_ref())
                .map_err(|e| ForwardError::Config(format!("a certificate in {} is unusable: {e}", p.display())))?;
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| ForwardError::Config(format!("HTTP client: {}", describe(&e))))
}

/// A reqwest error and its causes, without the URL (it may carry a token or a presigned signature).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut out = kind.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let m = s.to_string();
        if !m.contains("://") && !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        src = s.source();
    }
    out
}

#[async_trait::async_trait]
impl super::Sink for WebhookSink {
    async fn deliver(&mut self, _: &dyn kubehero_store::Store, rows: &[StoredAuditRow]) -> Result<usize, ForwardError> {
        WebhookSink::deliver(self, rows).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_timestamp_and_body() {
        let a = sign_body(b"s", 1, b"{}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, sign_body(b"s", 2, b"{}"));
        assert_ne!(a, sign_body(b"s", 1, b"{ }"));
        let k = hmac::Key::new(hmac::HMAC_SHA256, b"s");
        assert_eq!(a, hex::encode(hmac::sign(&k, b"1.{}").as_ref()));
        assert_ne!(webhook_secret_from_hmac_key(b"k").expose(), "k");
    }
}
