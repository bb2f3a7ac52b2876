//! The one accept loop, plain or TLS, and what it does so hostile or broken clients cannot hold the server:
//!
//! - **a connection cap**: at most `max_connections` connections are open. At the cap the oldest connection
//!   that has not yet sent a complete first request (a slowloris, a stalled TLS handshake) is closed to make
//!   room, so a flood of such connections cannot lock new clients out; when every slot is serving real
//!   requests, new clients wait in the kernel's backlog. Either way it is said once in the log and counted in
//!   `kubehero_connection_limit_reached_total`;
//! - **a header timeout**: a request whose head is not complete within `header_timeout` (10 s, like Go's
//!   `ReadHeaderTimeout`) closes its connection. The same clock runs while a keep-alive connection waits for
//!   its next request, so idle connections are bounded too. It never runs while a response is being written,
//!   so a long watch that keeps moving bytes is not cut;
//! - **HTTP-layer errors in the API's shape**: the first request head of every HTTP/1 connection is read and
//!   checked here (bad bytes → 400, an over-long URL → 414, too many or too large headers → 431), and refused
//!   with the JSON error body (SCIM's under `/scim`) and an `X-Request-Id`, as every other error. Later heads
//!   on a kept-alive connection (and HTTP/2 streams) go through the same limits in [`crate::middleware`],
//!   except bytes the HTTP parser itself cannot read, which it refuses with an empty 400 and a closed
//!   connection.

use crate::state::AppState;
use crate::stopped;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::Service;

/// The most headers one request may carry.
pub const MAX_HEADERS: usize = 100;
/// The longest request target (path and query).
pub const MAX_URI: usize = 16 * 1024;
/// The largest request head (request line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// How long graceful shutdown waits for open connections (a watch may never end by itself).
const DRAIN: Duration = Duration::from_secs(10);

/// The listener's limits (`KUBEHERO_HEADER_TIMEOUT_SECS`, `KUBEHERO_MAX_CONNECTIONS`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// The default connection cap: 10,000, or fewer when the process may not open that many files (a quarter
    /// of the limit stays free for the database, sinks and IdP calls).
    pub fn default_max_connections() -> usize {
        (open_files_limit().unwrap_or(usize::MAX) / 4 * 3).clamp(16, 10_000)
    }
}

/// This process's soft limit of open files (`ulimit -n`), from `/proc/self/limits` ("Max open files  <soft>
/// <hard>  files"); `None` where that file does not say.
pub fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// Open connections, and those still before their first complete request (which the cap may close).
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub open: AtomicUsize,
    waiting: parking_lot::Mutex<std::collections::BTreeMap<u64, tokio::sync::oneshot::Sender<()>>>,
    next: std::sync::atomic::AtomicU64,
}

/// A connection's place among those before their first request; leaving drops it.
struct Waiting {
    stats: Arc<ConnectionStats>,
    id: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.stats.waiting.lock().remove(&self.id);
    }
}

impl ConnectionStats {
    /// Enters a new connection among the waiting ones; the receiver fires when the cap closes it.
    fn wait(self: &Arc<Self>) -> (Waiting, tokio::sync::oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting.lock().insert(id, tx);
        (Waiting { stats: self.clone(), id }, rx)
    }

    /// Closes the oldest connection still before its first request; false when there is none.
    fn close_oldest_waiting(&self) -> bool {
        let oldest = self.waiting.lock().pop_first();
        oldest.is_some_and(|(_, tx)| tx.send(()).is_ok())
    }
}

/// Serves `router` on `listener` (TLS when `tls` is set) until `stop` fires, then lets open connections
/// finish for up to 10 s.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    state: AppState,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let make = router.into_make_service_with_connect_info::<SocketAddr>();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut at_cap = false;
    loop {
        // Accept first, then find the new client a slot: at the cap only a client actually waiting makes the
        // oldest connection without a request give way.
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => {
                at_cap = false;
                p
            }
            Err(_) => {
                if !at_cap {
                    at_cap = true;
                    tracing::warn!(
                        max = limits.max_connections,
                        "connection limit reached (KUBEHERO_MAX_CONNECTIONS): the oldest connections that have not \
                         sent a request are closed to make room; if none, new connections wait until one closes"
                    );
                }
                state.metrics.connection_limit_reached();
                state.connections.close_oldest_waiting();
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                    _ = stopped(&mut stop) => break,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok(svc) = make.clone().call(peer).await;
        let hyper_svc = hyper::service::service_fn(move |req| {
            let mut svc = svc.clone();
            async move { svc.call(req).await }
        });
        let tls = tls.clone();
        let state = state.clone();
        let watcher = graceful.watcher();
        let stats = state.connections.clone();
        stats.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _permit = permit;
            let deadline = tokio::time::Instant::now() + limits.header_timeout;
            let (waiting, mut evicted) = stats.wait();
            let first = First { deadline, waiting, evicted: &mut evicted };
            match tls {
                Some(acceptor) => {
                    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(tcp));
                    let stream = tokio::select! {
                        done = handshake => done,
                        _ = &mut *first.evicted => return closed(&stats),
                    };
                    let Ok(Ok(stream)) = stream else { return closed(&stats) };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    connection(stream, h2, first, &state, limits, hyper_svc, watcher).await;
                }
                None => connection(tcp, false, first, &state, limits, hyper_svc, watcher).await,
            }
            closed(&stats);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::info!("connections still open after {DRAIN:?} of shutdown are closed");
    }
}

/// A new connection's first request: when it must be complete, its place among the waiting connections,
/// and the signal that the cap closed it.
struct First<'a> {
    deadline: tokio::time::Instant,
    waiting: Waiting,
    evicted: &'a mut tokio::sync::oneshot::Receiver<()>,
}

/// One accepted connection: check its first head, then hand it to hyper.
async fn connection<I, S>(
    mut io: I,
    h2: bool,
    first: First<'_>,
    state: &AppState,
    limits: Limits,
    svc: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let prefix = if h2 {
        Vec::new()
    } else {
        let head = tokio::select! {
            head = tokio::time::timeout_at(first.deadline, read_head(&mut io)) => head,
            _ = first.evicted => return,
        };
        match head {
            Err(_) | Ok(Err(HeadError::Closed)) => return,
            Ok(Err(HeadError::Refused(status, message, scim))) => {
                let _ = refuse(&mut io, state, status, message, scim).await;
                return;
            }
            Ok(Ok(bytes)) => bytes,
        }
    };
    // A complete request: no longer among the connections the cap may close.
    drop(first.waiting);
    state.metrics.connection(h2 || prefix.starts_with(b"PRI * HTTP/2.0"));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // Looser than ours: anything in between gets the JSON answer from the middleware's check.
        .max_headers(MAX_HEADERS * 2)
        .max_buf_size(MAX_HEAD * 2);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(limits.header_timeout)
        .max_concurrent_streams(250)
        .max_header_list_size(u32::try_from(MAX_HEAD).unwrap_or(u32::MAX));
    let io = TokioIo::new(Rewind { prefix, at: 0, inner: io });
    let conn = builder.serve_connection_with_upgrades(io, svc);
    // Boxed: the task of a connection still reading its first head stays small.
    let _ = Box::pin(watcher.watch(conn.into_owned())).await;
}

fn closed(stats: &ConnectionStats) {
    stats.open.fetch_sub(1, Ordering::Relaxed);
}

enum HeadError {
    /// The peer closed or the read failed: nothing to answer.
    Closed,
    /// A head we refuse: the status and message to answer, and whether it asked for a SCIM path.
    Refused(u16, &'static str, bool),
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the first request head is complete and checks it; returns every byte read (the head and
/// whatever followed it), for hyper to read again.
async fn read_head<I: AsyncRead + Unpin>(io: &mut I) -> Result<Vec<u8>, HeadError> {
    // Small to start: a flood of connections that never finish their head costs little memory each.
    let mut buf = Vec::with_capacity(512);
    loop {
        if buf.len() >= H2_PREFACE.len() && buf.starts_with(H2_PREFACE) {
            return Ok(buf);
        }
        match check_head(&buf) {
            Ok(true) => return Ok(buf),
            Ok(false) => {}
            Err((status, message)) => return Err(HeadError::Refused(status, message, is_scim(&buf))),
        }
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().min(8192));
        }
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Err(HeadError::Closed),
            Ok(_) => {}
        }
    }
}

/// Whether `buf` holds a complete, acceptable request head (`false`: read more).
fn check_head(buf: &[u8]) -> Result<bool, (u16, &'static str)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) if req.path.is_some_and(|p| p.len() > MAX_URI) => {
            Err((414, "the request URL is longer than 16 KiB"))
        }
        Ok(httparse::Status::Complete(_)) => Ok(true),
        Err(httparse::Error::TooManyHeaders) => Err((431, "more than 100 request headers")),
        Err(_) => Err((400, "the request head is not valid HTTP/1.1")),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Ok(false),
        Ok(httparse::Status::Partial) if buf.windows(2).any(|w| w == b"\r\n") => {
            Err((431, "the request headers are larger than 64 KiB"))
        }
        Ok(httparse::Status::Partial) => Err((414, "the request URL is longer than 16 KiB")),
    }
}

/// Whether a (possibly partial) request line asks for a SCIM path, whose errors have SCIM's shape.
fn is_scim(buf: &[u8]) -> bool {
    let target = buf.splitn(3, |b| *b == b' ').nth(1).unwrap_or_default();
    target.starts_with(crate::scim::PREFIX.as_bytes())
}

/// Answers a refused head in the API's error shape and closes.
async fn refuse<I: AsyncWrite + Unpin>(
    io: &mut I,
    state: &AppState,
    status: u16,
    message: &str,
    scim: bool,
) -> std::io::Result<()> {
    let id = state.identity.ids.next_id();
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    state.metrics.http_request("-", "unparsed", status.as_u16());
    let (content_type, body) = if scim {
        let e = kubehero_scim::ScimError { status: status.as_u16(), scim_type: None, detail: message.to_string() };
        ("application/scim+json", serde_json::to_vec(&e.to_json()).unwrap_or_default())
    } else {
        let code = crate::error::Code::from_status(status);
        ("application/json", crate::error::body(code, message, &id))
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nx-request-id: {id}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    );
    io.write_all(head.as_bytes()).await?;
    io.write_all(&body).await?;
    io.shutdown().await
}

/// A stream that first yields bytes already read from it.
struct Rewind<I> {
    prefix: Vec<u8>,
    at: usize,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            buf.put_slice(&self.prefix[self.at..self.at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that fails when no bytes arrive for `idle` (the header timeout): a client that sends its
/// headers and then a byte now and then cannot hold a connection and a handler for ever. The body's reader
/// (the JSON extractor) answers 408.
pub struct StallGuard<B> {
    inner: B,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The error a stalled body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled: no bytes arrived for {0:?}")]
pub struct BodyStalled(pub Duration);

impl<B> StallGuard<B> {
    pub fn new(inner: B, idle: Duration) -> StallGuard<B> {
        StallGuard { inner, idle, timer: None }
    }
}

impl<B> http_body::Body for StallGuard<B>
where
    B: http_body::Body<Data = axum::body::Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                // Progress: the idle clock starts again at the next wait.
                self.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = self.idle;
                let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled(idle))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
