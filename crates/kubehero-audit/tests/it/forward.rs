//! Forwarding against real receivers: rsyslog (UDP, TCP, TLS via rsyslog-gnutls), an HTTP receiver in the test
//! that checks every signature, and s3s-fs. Outage tests take each receiver away while rows are written and
//! check that every row arrives at least once, cursors reach the head, and a restarted forwarder re-sends
//! nothing that was acknowledged.

use kubehero_audit::forward::{
    object_digest, run_with, sign_body, ForwardOptions, ForwardStatus, S3Settings, Secret, SinkSpec, S3_GENESIS_DIGEST,
};
use kubehero_audit::{export_line, ChainSealer, HmacKeys};
use kubehero_core::{AuditActor, AuditEvent, AuditOutcome, AuditResult, AuditTarget};
use kubehero_store::{Store, StoredAuditRow};
use kubehero_testkit::rsyslog::Rsyslog;
use kubehero_testkit::s3::S3Server;
use rusty_s3::S3Action as _;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::Read as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

const HMAC_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const WEBHOOK_SECRET: &str = "webhook-test-secret";
const DAY_MS: i64 = 86_400_000;
/// 2025-11-24T16:00:00Z.
const T0: i64 = 1_764_000_000_000;

fn event(i: i64, time_ms: i64) -> AuditEvent {
    AuditEvent {
        event_id: kubehero_audit::IdSource::new().unwrap().next_id(),
        time_ms,
        actor: AuditActor {
            sub: format!("user-{}\"]\\", i % 7),
            issuer: None,
            email: Some("alice@example.com".into()),
            groups: vec!["sre".into()],
            kind: "person".into(),
            auth_method: "jwt".into(),
        },
        action: if i % 2 == 0 { "policy.arm".into() } else { "cluster.register".into() },
        target: AuditTarget { kind: Some("policy".into()), id: Some(format!("p{i}")), cluster: None, namespace: None },
        result: if i % 5 == 4 {
            AuditResult {
                outcome: AuditOutcome::Denied,
                code: Some("permission_denied".into()),
                status: 403,
                repeated: None,
                duration_ms: None,
            }
        } else {
            AuditResult::ok(200)
        },
        request_id: format!("req-{i}"),
        source: Some("127.0.0.1:4000".into()),
        user_agent: Some("test".into()),
    }
}

fn sealer() -> ChainSealer {
    ChainSealer::new(Arc::new(HmacKeys::new(HMAC_KEY, &[]).unwrap()))
}

async fn open_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    kubehero_store::open(&format!("sqlite:{}", dir.path().join("audit.db").display())).await.unwrap()
}

/// Appends `n` rows; row `i` is dated `T0 + i * step_ms`.
async fn append(store: &dyn Store, n: usize, step_ms: i64) {
    let (head, _) = store.audit_head().await.unwrap();
    let events: Vec<AuditEvent> = (0..n as i64).map(|k| event(head + k, T0 + (head + k) * step_ms)).collect();
    for chunk in events.chunks(500) {
        store.append_audit(chunk, &sealer().shared()).await.unwrap();
    }
}

async fn all_rows(store: &dyn Store) -> Vec<StoredAuditRow> {
    store.audit_rows(0, 1_000_000).await.unwrap()
}

fn event_id(line: &str) -> String {
    let v: Value = serde_json::from_str(line).unwrap();
    v["event_id"].as_str().unwrap().to_string()
}

fn opts() -> ForwardOptions {
    ForwardOptions {
        poll: Duration::from_millis(50),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        webhook_secret: Some(Secret::new(WEBHOOK_SECRET)),
        webhook_timeout: Duration::from_secs(5),
        ..ForwardOptions::default()
    }
}

/// A forwarder running in the background.
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), kubehero_audit::forward::ForwardError>>,
    status: Arc<ForwardStatus>,
}

fn start(store: &Arc<dyn Store>, sinks: &[&str], opts: ForwardOptions) -> Running {
    let specs = sinks.iter().map(|s| SinkSpec::parse(s).unwrap()).collect();
    let (stop, rx) = watch::channel(false);
    let status = ForwardStatus::new();
    let task = tokio::spawn(run_with(store.clone(), specs, opts, status.clone(), rx));
    Running { stop, task, status }
}

impl Running {
    /// The first sink's (delivered seq, lag, last error) once it reports `seq` delivered: its status is set just
    /// after its durable cursor moves, so a test that saw the cursor at the head may read the status a moment
    /// early.
    async fn settled_at(&self, seq: i64) -> (i64, i64, Option<String>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let snap = self.status.snapshot();
            let s = &snap[0];
            if s.delivered_seq == seq || Instant::now() > deadline {
                return (s.delivered_seq, s.lag_rows, s.last_error.clone());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(20), self.task).await.unwrap().unwrap().unwrap();
    }
}

async fn run_once(store: &Arc<dyn Store>, sinks: &[&str], opts: ForwardOptions) {
    let specs = sinks.iter().map(|s| SinkSpec::parse(s).unwrap()).collect();
    let (_stop, rx) = watch::channel(false);
    let o = ForwardOptions { once: true, ..opts };
    tokio::time::timeout(Duration::from_secs(60), run_with(store.clone(), specs, o, ForwardStatus::new(), rx))
        .await
        .unwrap()
        .unwrap();
}

/// Waits until the sink's cursor is at the head.
async fn wait_cursor_at_head(store: &dyn Store, sink: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (head, _) = store.audit_head().await.unwrap();
        if store.sink_cursor(sink).await.unwrap() == head {
            return;
        }
        assert!(Instant::now() < deadline, "cursors {:?} did not reach head {head}", store.sink_cursors().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn name(s: &str) -> String {
    SinkSpec::parse(s).unwrap().name()
}

// ---------------------------------------------------------------------------------------------- syslog

/// Checks that rsyslog parsed `m` as our RFC 5424 message for `row`.
fn check_syslog_message(m: &Value, row: &StoredAuditRow) {
    let rec: Value = serde_json::from_str(&row.body).unwrap();
    assert_eq!(m["version"], "1", "{m}");
    assert_eq!(m["app"], "kubehero", "{m}");
    assert_eq!(m["msgid"], "AUDIT", "{m}");
    assert_eq!(m["procid"], std::process::id().to_string(), "{m}");
    assert_eq!(m["facility"], "authpriv", "{m}");
    let denied = rec["result"]["outcome"] != "ok";
    assert_eq!(m["severity"], if denied { "warning" } else { "notice" }, "{m}");
    assert_eq!(m["pri"], if denied { "84" } else { "85" }, "{m}");
    let sd = m["sd"].as_str().unwrap();
    assert!(
        sd.starts_with(&format!(
            "[kubehero@32473 seq=\"{}\" event_id=\"{}\"",
            row.seq,
            rec["event_id"].as_str().unwrap()
        )),
        "{sd}"
    );
    assert!(sd.contains(&format!(" key_id=\"{}\" mac=\"{}\"", row.key_id, row.mac)), "{sd}");
    let sub = rec["actor"]["sub"].as_str().unwrap().replace('\\', "\\\\").replace('"', "\\\"").replace(']', "\\]");
    assert!(sd.contains(&format!(" actor=\"{sub}\" ")), "{sd} / {sub}");
    assert_eq!(m["msg"].as_str().unwrap().trim_start(), export_line(row), "{m}");
}

/// The messages of one rsyslog input, by seq (duplicates counted).
fn by_seq(msgs: &[Value], input: &str) -> BTreeMap<i64, Vec<Value>> {
    let mut out: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for m in msgs.iter().filter(|m| m["input"] == input) {
        let v: Value = serde_json::from_str(m["msg"].as_str().unwrap().trim_start()).unwrap();
        out.entry(v["seq"].as_i64().unwrap()).or_default().push(m.clone());
    }
    out
}

#[tokio::test]
async fn syslog_udp_and_tcp_deliver_every_row_as_rfc5424() {
    let rs = Rsyslog::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    append(&*store, 300, 1000).await;
    let udp = format!("udp://127.0.0.1:{}", rs.port);
    let tcp = format!("tcp://127.0.0.1:{}", rs.port);
    run_once(&store, &[&udp, &tcp], ForwardOptions { batch_rows: 128, ..opts() }).await;

    let msgs = rs
        .wait_for(Duration::from_secs(20), |m| {
            m.iter().filter(|m| m["input"] == "imudp").count() >= 300
                && m.iter().filter(|m| m["input"] == "imtcp").count() >= 300
        })
        .await
        .unwrap();
    let rows = all_rows(&*store).await;
    for input in ["imudp", "imtcp"] {
        let got = by_seq(&msgs, input);
        assert_eq!(got.len(), rows.len(), "{input}: rows missing");
        for row in &rows {
            let ms = &got[&row.seq];
            assert_eq!(ms.len(), 1, "{input}: seq {} delivered {} times", row.seq, ms.len());
            check_syslog_message(&ms[0], row);
        }
    }
    for n in [name(&udp), name(&tcp)] {
        assert_eq!(store.sink_cursor(&n).await.unwrap(), 300);
    }
    // The exact bytes on the wire, as rsyslog logged them in RFC 5424 form, keep the SD-PARAM escapes.
    let log = std::fs::read_to_string(rs.dir().join("out/rfc5424.log")).unwrap();
    assert!(log.contains(r#"actor="user-1\"\]\\""#), "escaped actor not found in rfc5424.log");
}

#[tokio::test]
async fn syslog_tls_to_rsyslog_gnutls() {
    // Real rsyslog with the gtls driver (Debian rsyslog-gnutls) and a CA + server certificate made with openssl.
    let rs = Rsyslog::start_tls().await.unwrap();
    let tls_port = rs.tls_port.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    append(&*store, 150, 1000).await;

    // Without the test CA the handshake fails and `once` gives up with a certificate error, nothing advances.
    let url = format!("tls://127.0.0.1:{tls_port}");
    let specs = vec![SinkSpec::parse(&url).unwrap()];
    let (_s, rx) = watch::channel(false);
    let o = ForwardOptions { once: true, once_attempts: 2, ..opts() };
    let err = run_with(store.clone(), specs, o, ForwardStatus::new(), rx).await.unwrap_err().to_string();
    assert!(err.contains("TLS handshake") && err.to_lowercase().contains("certificate"), "{err}");
    assert_eq!(store.sink_cursor(&name(&url)).await.unwrap(), 0);

    let o = ForwardOptions { ca_file: rs.ca_file.clone(), batch_rows: 64, ..opts() };
    run_once(&store, &[&url], o.clone()).await;
    let localhost = format!("tls://localhost:{tls_port}");
    run_once(&store, &[&localhost], o).await;
    let msgs = rs.wait_for(Duration::from_secs(20), |m| m.len() >= 300).await.unwrap();
    let got = by_seq(&msgs, "tls");
    let rows = all_rows(&*store).await;
    assert_eq!(got.len(), rows.len());
    for row in &rows {
        assert_eq!(got[&row.seq].len(), 2, "seq {}: once per sink", row.seq);
        check_syslog_message(&got[&row.seq][0], row);
    }
}

#[tokio::test]
async fn syslog_tcp_outage_loses_nothing_and_restart_resends_nothing() {
    let mut rs = Rsyslog::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let tcp = format!("tcp://127.0.0.1:{}", rs.port);
    let sink = name(&tcp);
    append(&*store, 100, 1000).await;
    let fw = start(&store, &[&tcp], opts());
    wait_cursor_at_head(&*store, &sink, Duration::from_secs(20)).await;
    rs.wait_for(Duration::from_secs(20), |m| m.len() >= 100).await.unwrap();

    // Receiver down: rows written meanwhile wait, the sink reports the error and its lag.
    rs.stop().await;
    append(&*store, 100, 1000).await;
    fw.status.notify();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let snap = fw.status.snapshot();
        if snap[0].last_error.is_some() {
            assert!(snap[0].lag_rows > 0, "{snap:?}");
            assert_eq!(snap[0].name, sink);
            break;
        }
        assert!(Instant::now() < deadline, "the outage was not reported: {snap:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.sink_cursor(&sink).await.unwrap(), 100);
    append(&*store, 50, 1000).await;

    rs.restart().await.unwrap();
    wait_cursor_at_head(&*store, &sink, Duration::from_secs(30)).await;
    let msgs = rs.wait_for(Duration::from_secs(20), |m| by_seq(m, "imtcp").len() >= 250).await.unwrap();
    let got = by_seq(&msgs, "imtcp");
    let rows = all_rows(&*store).await;
    let ids: HashSet<String> =
        got.values().flatten().map(|m| event_id(m["msg"].as_str().unwrap().trim_start())).collect();
    for row in &rows {
        assert!(got.contains_key(&row.seq), "seq {} lost in the outage", row.seq);
        assert!(ids.contains(&event_id(&export_line(row))));
    }
    assert_eq!(fw.settled_at(250).await, (250, 0, None));
    fw.shutdown().await;

    // A new forwarder continues from the durable cursor: nothing is sent again.
    let before = rs.messages().unwrap().len();
    run_once(&store, &[&tcp], opts()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rs.messages().unwrap().len(), before, "a restarted forwarder re-sent acknowledged rows");
    append(&*store, 10, 1000).await;
    run_once(&store, &[&tcp], opts()).await;
    let msgs = rs.wait_for(Duration::from_secs(20), |m| m.len() >= before + 10).await.unwrap();
    assert_eq!(msgs.len(), before + 10);
}

// ---------------------------------------------------------------------------------------------- webhook

/// A minimal HTTP/1.1 receiver: checks every request's signature and batch header, answers 500 to the first
/// `fail_first` requests, then 200, and keeps the rows of every accepted batch.
#[derive(Default)]
struct Hook {
    fail_first: AtomicUsize,
    requests: AtomicUsize,
    accepted: Mutex<Vec<Value>>,
    problems: Mutex<Vec<String>>,
}

async fn serve_hook(hook: Arc<Hook>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else { return };
            let hook = hook.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut head = Vec::new();
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push(line.trim_end().to_string());
                    }
                    let header = |n: &str| {
                        head.iter().find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case(n).then(|| v.trim().to_string())
                        })
                    };
                    let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let mut body = vec![0u8; len];
                    r.read_exact(&mut body).await.unwrap();
                    let n = hook.requests.fetch_add(1, Ordering::SeqCst);
                    let ok = n >= hook.fail_first.load(Ordering::SeqCst);
                    if ok {
                        check_hook_request(
                            &hook,
                            &head[0],
                            header("x-kubehero-signature"),
                            header("x-kubehero-batch"),
                            &body,
                        );
                    }
                    let status = if ok { "200 OK" } else { "500 Internal Server Error" };
                    let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                    if w.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn check_hook_request(hook: &Hook, request_line: &str, sig: Option<String>, batch: Option<String>, body: &[u8]) {
    let mut problems = Vec::new();
    if !request_line.starts_with("POST /ingest?token=t0ps3cret HTTP/1.1") {
        problems.push(format!("request line {request_line}"));
    }
    let sig = sig.unwrap_or_default();
    let (t, v1) = sig.split_once(",v1=").unwrap_or(("", ""));
    let t: i64 = t.strip_prefix("t=").and_then(|t| t.parse().ok()).unwrap_or(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    if (now - t).abs() > 300 {
        problems.push(format!("stale signature time {t}"));
    }
    if sign_body(WEBHOOK_SECRET.as_bytes(), t, body) != v1 {
        problems.push("bad signature".into());
    }
    let v: Value = serde_json::from_slice(body).unwrap();
    let rows = v["rows"].as_array().unwrap().clone();
    let want = format!("{}-{}", rows[0]["seq"], rows[rows.len() - 1]["seq"]);
    if batch.as_deref() != Some(want.as_str()) {
        problems.push(format!("batch header {batch:?}, rows {want}"));
    }
    hook.problems.lock().unwrap().extend(problems);
    hook.accepted.lock().unwrap().extend(rows);
}

#[tokio::test]
async fn webhook_batches_are_signed_and_survive_500s() {
    let hook = Arc::new(Hook::default());
    hook.fail_first.store(4, Ordering::SeqCst);
    let port = serve_hook(hook.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let url = format!("http://127.0.0.1:{port}/ingest?token=t0ps3cret");
    let sink = name(&url);
    assert!(!sink.contains("t0ps3cret"));

    append(&*store, 250, 1000).await;
    let fw = start(&store, &[&url], ForwardOptions { webhook_batch_rows: 100, ..opts() });
    append(&*store, 150, 1000).await;
    fw.status.notify();
    wait_cursor_at_head(&*store, &sink, Duration::from_secs(30)).await;
    assert_eq!(fw.settled_at(400).await, (400, 0, None));
    fw.shutdown().await;
    assert!(hook.requests.load(Ordering::SeqCst) >= 4 + 4, "4 refused + at least 4 batches of <= 100 rows");
    assert!(hook.problems.lock().unwrap().is_empty(), "{:?}", hook.problems.lock().unwrap());

    let rows = all_rows(&*store).await;
    let accepted = hook.accepted.lock().unwrap().clone();
    let got: HashSet<String> = accepted.iter().map(|r| r["event_id"].as_str().unwrap().to_string()).collect();
    for row in &rows {
        assert!(got.contains(&event_id(&export_line(row))), "seq {} missing", row.seq);
    }
    // Every delivered object is the export line, byte for byte (after a JSON round trip).
    let first: Value = serde_json::from_str(&export_line(&rows[0])).unwrap();
    assert!(accepted.contains(&first));

    // Restarted forwarder: no request at all, then only the new rows.
    let n = hook.requests.load(Ordering::SeqCst);
    run_once(&store, &[&url], opts()).await;
    assert_eq!(hook.requests.load(Ordering::SeqCst), n);
    append(&*store, 3, 1000).await;
    run_once(&store, &[&url], opts()).await;
    assert_eq!(hook.requests.load(Ordering::SeqCst), n + 1);
    assert_eq!(hook.accepted.lock().unwrap().len(), accepted.len() + 3);
}

#[tokio::test]
async fn webhook_redirects_are_not_followed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\n\r\n",
                )
                .await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    append(&*store, 5, 1000).await;
    let url = format!("http://127.0.0.1:{port}/ingest");
    let specs = vec![SinkSpec::parse(&url).unwrap()];
    let (_s, rx) = watch::channel(false);
    let o = ForwardOptions { once: true, once_attempts: 2, ..opts() };
    let err = run_with(store.clone(), specs, o, ForwardStatus::new(), rx).await.unwrap_err().to_string();
    assert!(err.contains("307"), "{err}");
    assert_eq!(store.sink_cursor(&name(&url)).await.unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------- S3

struct S3Client {
    bucket: rusty_s3::Bucket,
    creds: rusty_s3::Credentials,
    http: reqwest::Client,
}

impl S3Client {
    fn new(s3: &S3Server, bucket: &str) -> S3Client {
        S3Client {
            bucket: rusty_s3::Bucket::new(
                s3.endpoint().parse().unwrap(),
                rusty_s3::UrlStyle::Path,
                bucket.to_string(),
                "us-east-1",
            )
            .unwrap(),
            creds: rusty_s3::Credentials::new(s3.access_key.clone(), s3.secret_key.clone()),
            http: reqwest::Client::new(),
        }
    }

    async fn create_bucket(&self) {
        let url = self.bucket.create_bucket(&self.creds).sign(Duration::from_secs(60));
        let r = self.http.put(url).send().await.unwrap();
        assert!(r.status().is_success(), "create bucket: {} {}", r.status(), r.text().await.unwrap());
    }

    async fn list(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut a = self.bucket.list_objects_v2(Some(&self.creds));
            if let Some(t) = &token {
                a.with_continuation_token(t.clone());
            }
            let url = a.sign(Duration::from_secs(60));
            let text = self.http.get(url).send().await.unwrap().text().await.unwrap();
            let resp = rusty_s3::actions::ListObjectsV2::parse_response(&text).unwrap();
            keys.extend(resp.contents.into_iter().map(|c| c.key));
            match resp.next_continuation_token {
                Some(t) => token = Some(t),
                None => return keys,
            }
        }
    }

    /// The object's bytes and its `x-amz-meta-kubehero-*` metadata.
    async fn get(&self, key: &str) -> (Vec<u8>, String, String) {
        let url = self.bucket.get_object(Some(&self.creds), key).sign(Duration::from_secs(60));
        let r = self.http.get(url).send().await.unwrap();
        assert!(r.status().is_success(), "{key}: {}", r.status());
        let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let (prev, digest) = (h("x-amz-meta-kubehero-prev-digest"), h("x-amz-meta-kubehero-digest"));
        (r.bytes().await.unwrap().to_vec(), prev, digest)
    }
}

/// Reads every object, checks the digest chain in seq order and the key layout, and returns the JSONL lines.
async fn verify_s3_chain(c: &S3Client, prefix: &str) -> (Vec<String>, String, usize) {
    let mut keys = c.list().await;
    for k in &keys {
        let rest = if prefix.is_empty() { k.as_str() } else { k.strip_prefix(&format!("{prefix}/")).unwrap() };
        let parts: Vec<&str> = rest.split('/').collect();
        assert_eq!(parts.len(), 4, "{k}");
        assert!(parts[3].ends_with(".jsonl.gz") && parts[3].len() == 20 + 1 + 20 + 9, "{k}");
    }
    keys.sort_by_key(|k| k.rsplit('/').next().unwrap().to_string());
    let mut prev = S3_GENESIS_DIGEST.to_string();
    let mut lines = Vec::new();
    let mut next_seq = 1;
    for k in &keys {
        let (bytes, p, d) = c.get(k).await;
        assert_eq!(p, prev, "{k}: prev digest does not chain");
        assert_eq!(d, object_digest(&prev, &bytes), "{k}: digest does not match the object");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut text).unwrap();
        let file = k.rsplit('/').next().unwrap();
        let (first, last) = file.trim_end_matches(".jsonl.gz").split_once('-').unwrap();
        let (first, last): (i64, i64) = (first.parse().unwrap(), last.parse().unwrap());
        assert_eq!(first, next_seq, "{k}: gap or overlap in the chain");
        let obj_lines: Vec<&str> = text.lines().collect();
        let seqs: Vec<i64> =
            obj_lines.iter().map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (first..=last).collect::<Vec<_>>(), "{k}");
        // The date directory is the first row's date.
        let rec: Value = serde_json::from_str(obj_lines[0]).unwrap();
        let date = rec["time"].as_str().unwrap()[..10].replace('-', "/");
        let rest = if prefix.is_empty() { k.as_str() } else { &k[prefix.len() + 1..] };
        assert!(rest.starts_with(&format!("{date}/")), "{k} vs {date}");
        lines.extend(obj_lines.into_iter().map(String::from));
        next_seq = last + 1;
        prev = d;
    }
    (lines, prev, keys.len())
}

#[tokio::test]
async fn s3_objects_chain_and_survive_an_outage_and_restarts() {
    let mut s3 = S3Server::start().await.unwrap();
    let c = S3Client::new(&s3, "kubehero-audit");
    c.create_bucket().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let url = "s3://kubehero-audit/cp1/audit";
    let sink = name(url);
    let o = ForwardOptions {
        s3_object_rows: 40,
        s3_linger: Duration::from_millis(200),
        s3: S3Settings {
            endpoint: Some(s3.endpoint()),
            region: "us-east-1".into(),
            access_key: Some(s3.access_key.clone()),
            secret_key: Some(Secret::new(s3.secret_key.clone())),
        },
        ..opts()
    };

    // Rows an hour apart: 100 rows cross four days, so objects land under several date prefixes.
    append(&*store, 100, DAY_MS / 24).await;
    let fw = start(&store, &[url], o.clone());
    wait_cursor_at_head(&*store, &sink, Duration::from_secs(30)).await;

    s3.stop().await;
    append(&*store, 60, DAY_MS / 24).await;
    fw.status.notify();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fw.status.snapshot()[0].last_error.is_none() {
        assert!(Instant::now() < deadline, "the S3 outage was not reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = fw.status.snapshot()[0].last_error.clone().unwrap();
    assert!(!err.contains(&s3.secret_key) && !err.contains("X-Amz-Signature"), "{err}");
    assert_eq!(store.sink_cursor(&sink).await.unwrap(), 100);
    s3.restart().await.unwrap();
    wait_cursor_at_head(&*store, &sink, Duration::from_secs(30)).await;
    fw.shutdown().await;

    let (lines, head_digest, objects) = verify_s3_chain(&c, "cp1/audit").await;
    let rows = all_rows(&*store).await;
    assert_eq!(lines.len(), rows.len());
    for (l, r) in lines.iter().zip(&rows) {
        assert_eq!(l, &export_line(r));
    }
    let days: HashSet<String> =
        c.list().await.iter().map(|k| k.split('/').take(5).collect::<Vec<_>>().join("/")).collect();
    assert!(days.len() >= 3, "expected objects under several dates: {days:?}");
    let state = store.get_setting(&format!("audit.forward.{sink}")).await.unwrap().unwrap();
    assert_eq!(state["digest"], head_digest.as_str());
    assert_eq!(state["seq"], 160);

    // Restart: nothing re-sent; new rows extend the same chain.
    run_once(&store, &[url], o.clone()).await;
    assert_eq!(c.list().await.len(), objects);
    append(&*store, 7, 1000).await;
    run_once(&store, &[url], o.clone()).await;
    let (lines, _, n) = verify_s3_chain(&c, "cp1/audit").await;
    assert_eq!((lines.len(), n), (167, objects + 1));
}

#[tokio::test]
async fn s3_crash_between_upload_and_head_replays_exactly_the_pending_range() {
    let s3 = S3Server::start().await.unwrap();
    let c = S3Client::new(&s3, "audit");
    c.create_bucket().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let url = "s3://audit";
    let sink = name(url);
    let o = ForwardOptions {
        s3_object_rows: 10,
        s3: S3Settings {
            endpoint: Some(s3.endpoint()),
            region: "us-east-1".into(),
            access_key: Some(s3.access_key.clone()),
            secret_key: Some(Secret::new(s3.secret_key.clone())),
        },
        ..opts()
    };
    append(&*store, 20, 1000).await;
    run_once(&store, &[url], o.clone()).await;
    let (_, d2, n) = verify_s3_chain(&c, "").await;
    assert_eq!(n, 2);
    // The state a crash leaves when it hits after "pending = 21..=25" was recorded (and perhaps after the PUT)
    // but before the head moved. Meanwhile more rows arrived.
    let key = format!("audit.forward.{sink}");
    let crashed = serde_json::json!({"seq": 20, "digest": d2, "pending": {"first": 21, "last": 25}});
    store.put_setting(&key, &crashed, 0).await.unwrap();
    append(&*store, 8, 1000).await;
    run_once(&store, &[url], o).await;
    let mut keys = c.list().await;
    keys.sort();
    let files: Vec<&str> = keys.iter().map(|k| k.rsplit('/').next().unwrap()).collect();
    let range = |a: i64, b: i64| format!("{a:020}-{b:020}.jsonl.gz");
    assert_eq!(files, vec![range(1, 10), range(11, 20), range(21, 25), range(26, 28)], "{files:?}");
    let (lines, head, _) = verify_s3_chain(&c, "").await;
    assert_eq!(lines.len(), 28);
    let state = store.get_setting(&key).await.unwrap().unwrap();
    assert_eq!(
        (state["seq"].clone(), state["digest"].clone(), state["pending"].clone()),
        (28.into(), head.into(), Value::Null)
    );
    assert_eq!(store.sink_cursor(&sink).await.unwrap(), 28);
}
