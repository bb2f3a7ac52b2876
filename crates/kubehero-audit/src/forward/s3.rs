//! S3 sink: gzip-compressed JSONL objects (one export line per row), signed with SigV4 by `rusty-s3` (presigned
//! `PUT`, path-style) and sent with reqwest.
//!
//! Keys: `<prefix>/YYYY/MM/DD/<first seq:020>-<last seq:020>.jsonl.gz`, the date (UTC) of the object's first row.
//!
//! Objects form a digest chain. Each carries the user metadata
//! - `x-amz-meta-kubehero-prev-digest`: the previous object's digest (genesis: 64 zeros),
//! - `x-amz-meta-kubehero-digest`: `hex(SHA-256(prev_digest_bytes ‖ object bytes))`,
//!
//! so a missing, reordered or replaced object breaks the chain even where the bucket is writable. The head
//! (`{seq, digest, pending}`) is the setting `audit.forward.<sink name>`, written in one statement, before the
//! sink's cursor:
//! 1. before a `PUT`, `pending = {first, last}` is recorded;
//! 2. after a 2xx, `{seq = last, digest = new, pending = null}` is recorded, then the cursor moves.
//!
//! A crash between 1 and 2 re-uploads exactly the recorded range on restart: same key, same bytes (gzip output
//! is deterministic, the header has no time), same digest, so the retry overwrites the object with itself and the
//! chain has no fork. Rows may therefore reach S3 twice only as the same object; at-least-once holds because
//! the cursor moves only after the object is stored. The forwarder does not create the bucket.

use super::webhook::{describe, http_client};
use super::{ForwardError, ForwardOptions, RowFields, SinkSpec};
use crate::hex;
use flate2::write::GzEncoder;
use kubehero_store::{Store, StoredAuditRow};
use rusty_s3::S3Action as _;
use std::io::Write as _;
use std::time::Duration;

/// The digest before the first object.
pub const S3_GENESIS_DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Largest uncompressed JSONL per object (unless a single row is larger).
const MAX_OBJECT_BYTES: usize = 16 << 20;

/// `hex(SHA-256(prev_digest_bytes ‖ object))`; `prev_digest_hex` must be 64 hex digits.
pub fn object_digest(prev_digest_hex: &str, object: &[u8]) -> String {
    let prev = hex::decode32(prev_digest_hex).unwrap_or([0u8; 32]);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&prev);
    ctx.update(object);
    hex::encode(ctx.finish().as_ref())
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Pending {
    first: i64,
    last: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ChainState {
    seq: i64,
    digest: String,
    pending: Option<Pending>,
}

pub(crate) struct S3Sink {
    name: String,
    setting_key: String,
    bucket: rusty_s3::Bucket,
    prefix: String,
    credentials: rusty_s3::Credentials,
    client: reqwest::Client,
    object_rows: usize,
    linger: Duration,
    state: ChainState,
}

impl S3Sink {
    pub(crate) fn new(spec: &SinkSpec, opts: &ForwardOptions) -> Result<S3Sink, ForwardError> {
        let SinkSpec::S3 { bucket, prefix } = spec else {
            return Err(ForwardError::Config("not an S3 sink".into()));
        };
        let name = spec.name();
        let s3 = &opts.s3;
        let (Some(key), Some(secret)) = (&s3.access_key, &s3.secret_key) else {
            return Err(ForwardError::Config(format!(
                "{name} needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )));
        };
        let endpoint = s3.endpoint.clone().unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", s3.region));
        let endpoint_url = url::Url::parse(&endpoint).map_err(|e| {
            ForwardError::Config(format!(
                "the S3 endpoint {endpoint:?} is not a URL ({e}): set --s3-endpoint / KUBEHERO_AUDIT_S3_ENDPOINT \
                 to e.g. https://minio.example:9000"
            ))
        })?;
        let loopback = super::config::is_loopback(endpoint_url.host());
        if endpoint_url.scheme() != "https" && !(endpoint_url.scheme() == "http" && loopback) {
            return Err(ForwardError::Config(format!(
                "the S3 endpoint {endpoint} must be https:// (http:// only for 127.0.0.1, ::1 and localhost)"
            )));
        }
        let b = rusty_s3::Bucket::new(endpoint_url, rusty_s3::UrlStyle::Path, bucket.clone(), s3.region.clone())
            .map_err(|e| ForwardError::Config(format!("S3 bucket {bucket:?} at {endpoint}: {e:?}")))?;
        Ok(S3Sink {
            setting_key: format!("audit.forward.{name}"),
            name,
            bucket: b,
            prefix: prefix.clone(),
            credentials: rusty_s3::Credentials::new(key.clone(), secret.expose().to_string()),
            client: http_client(opts)?,
            object_rows: opts.s3_object_rows.max(1),
            linger: opts.s3_linger,
            state: ChainState { seq: 0, digest: S3_GENESIS_DIGEST.to_string(), pending: None },
        })
    }

    /// Rows per object, and how long to wait for them when the log is quiet.
    pub(crate) fn linger(&self) -> (usize, Duration) {
        (self.object_rows, self.linger)
    }

    fn store_err(e: impl std::fmt::Display) -> ForwardError {
        ForwardError::Store(e.to_string())
    }

    /// Loads the digest-chain head and returns the cursor to continue from (repairing the cursor if a crash
    /// left it behind the head).
    pub(crate) async fn load_state(&mut self, store: &dyn Store, name: &str) -> Result<i64, ForwardError> {
        let cursor = store.sink_cursor(name).await.map_err(Self::store_err)?;
        let state = match store.get_setting(&self.setting_key).await.map_err(Self::store_err)? {
            Some(v) => serde_json::from_value::<ChainState>(v).map_err(|e| {
                ForwardError::Store(format!("setting {} is not an S3 chain head: {e}", self.setting_key))
            })?,
            None => ChainState { seq: 0, digest: S3_GENESIS_DIGEST.to_string(), pending: None },
        };
        if hex::decode32(&state.digest).is_none() {
            return Err(ForwardError::Store(format!("setting {} holds a malformed digest", self.setting_key)));
        }
        let cursor = if state.seq > cursor {
            store.set_sink_cursor(name, state.seq, super::now_unix()).await.map_err(Self::store_err)?;
            state.seq
        } else {
            if state.seq < cursor {
                tracing::warn!(sink = %name, cursor, chain_seq = state.seq,
                    "the S3 sink's cursor is ahead of its digest chain head; continuing the chain from the cursor");
            }
            cursor
        };
        self.state = state;
        Ok(cursor)
    }

    fn object_key(&self, first: &StoredAuditRow, last_seq: i64) -> String {
        let time_ms = RowFields::of(first).map_or(0, |f| f.time_ms);
        let date = time::OffsetDateTime::from_unix_timestamp(time_ms.div_euclid(1000))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let file = format!(
            "{:04}/{:02}/{:02}/{:020}-{:020}.jsonl.gz",
            date.year(),
            u8::from(date.month()),
            date.day(),
            first.seq,
            last_seq
        );
        if self.prefix.is_empty() {
            file
        } else {
            format!("{}/{file}", self.prefix)
        }
    }

    async fn put_state(&self, store: &dyn Store, state: &ChainState) -> Result<(), ForwardError> {
        let v = serde_json::to_value(state).map_err(Self::store_err)?;
        store.put_setting(&self.setting_key, &v, super::now_unix()).await.map_err(Self::store_err)
    }

    /// Uploads one object taken from the front of `rows`.
    pub(crate) async fn deliver(&mut self, store: &dyn Store, rows: &[StoredAuditRow]) -> Result<usize, ForwardError> {
        let Some(first) = rows.first() else { return Ok(0) };
        // A range recorded before a crash is re-sent exactly; otherwise take up to the limits.
        let n = match self.state.pending {
            Some(p) if p.first == first.seq => rows.iter().take_while(|r| r.seq <= p.last).count(),
            _ => {
                let mut bytes = 0;
                let mut n = 0;
                for r in rows.iter().take(self.object_rows) {
                    let len = r.body.len() + 80;
                    if n > 0 && bytes + len > MAX_OBJECT_BYTES {
                        break;
                    }
                    bytes += len;
                    n += 1;
                }
                n
            }
        };
        let rows = &rows[..n.max(1)];
        let last = rows[rows.len() - 1].seq;
        let pending = Pending { first: first.seq, last };
        if self.state.pending != Some(pending) {
            self.state.pending = Some(pending);
            self.put_state(store, &self.state).await?;
        }

        let mut gz = GzEncoder::new(Vec::with_capacity(rows.len() * 200), flate2::Compression::default());
        for r in rows {
            let line = crate::export_line(r);
            let _ = gz.write_all(line.as_bytes());
            let _ = gz.write_all(b"\n");
        }
        let object = gz.finish().map_err(|e| ForwardError::Send { sink: self.name.clone(), reason: e.to_string() })?;
        let digest = object_digest(&self.state.digest, &object);
        let key = self.object_key(first, last);
        let content_sha = sha256_hex(&object);

        let mut action = self.bucket.put_object(Some(&self.credentials), &key);
        let headers = action.headers_mut();
        headers.insert("content-type", "application/gzip");
        headers.insert("x-amz-content-sha256", content_sha.clone());
        headers.insert("x-amz-meta-kubehero-prev-digest", self.state.digest.clone());
        headers.insert("x-amz-meta-kubehero-digest", digest.clone());
        let url = action.sign(Duration::from_secs(300));
        let resp = self
            .client
            .put(url)
            .header("content-type", "application/gzip")
            .header("x-amz-content-sha256", content_sha)
            .header("x-amz-meta-kubehero-prev-digest", self.state.digest.clone())
            .header("x-amz-meta-kubehero-digest", digest.clone())
            .body(object)
            .send()
            .await
            .map_err(|e| ForwardError::Send { sink: self.name.clone(), reason: describe(&e) })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let code = xml_tag(&text, "Code").unwrap_or("");
            return Err(ForwardError::Rejected {
                sink: self.name.clone(),
                detail: format!("HTTP {status} {code} for {key}").replace("  ", " "),
            });
        }
        let next = ChainState { seq: last, digest, pending: None };
        self.put_state(store, &next).await?;
        self.state = next;
        Ok(rows.len())
    }
}

/// The text of the first `<tag>…</tag>` in an S3 error document.
fn xml_tag<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{tag}>"))?;
    Some(&xml[start..start + len])
}

#[async_trait::async_trait]
impl super::Sink for S3Sink {
    /// The durable cursor and the digest-chain head beside it.
    async fn resume(&mut self, store: &dyn Store, name: &str) -> Result<i64, ForwardError> {
        self.load_state(store, name).await
    }

    async fn deliver(&mut self, store: &dyn Store, rows: &[StoredAuditRow]) -> Result<usize, ForwardError> {
        S3Sink::deliver(self, store, rows).await
    }

    fn linger(&self) -> Option<(usize, Duration)> {
        Some(S3Sink::linger(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_chains_over_previous_digest() {
        let d1 = object_digest(S3_GENESIS_DIGEST, b"one");
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&[0u8; 32]);
        ctx.update(b"one");
        assert_eq!(d1, hex::encode(ctx.finish().as_ref()));
        assert_ne!(object_digest(&d1, b"two"), object_digest(S3_GENESIS_DIGEST, b"two"));
        assert_eq!(xml_tag("<Error><Code>NoSuchBucket</Code></Error>", "Code"), Some("NoSuchBucket"));
    }
}
