//! Both ends of the tunnel. After the agent's `GET /agent/v1/tunnel` is upgraded, the connection carries
//! HTTP/2 with the control plane as the client: every stream is a `CONNECT` whose bytes are passed through
//! unchanged (HTTP/1.1 with upgrades, watches, logs). HTTP/2 gives many concurrent streams with flow control
//! over one connection, and its PING frames keep the tunnel alive: both ends ping every
//! [`KEEPALIVE_INTERVAL`] and drop the connection when an answer takes longer than [`KEEPALIVE_TIMEOUT`], so a
//! dead peer is noticed within 25 s, and an idle tunnel never looks idle to a proxy that cuts after 60 s.

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// How often each end pings the other.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// How long a ping may go unanswered before the tunnel counts as dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-stream and per-connection flow-control windows: enough for a fast list or log stream without letting one
/// tunnel hold many megabytes.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// A byte stream through the tunnel (hyper's IO traits; wrap it in `TokioIo` for tokio's).
pub type Stream = Upgraded;

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The tunnel is closed or closing (the caller may retry on a newer tunnel).
    #[error("the tunnel is closed: {0}")]
    Closed(String),
    /// The agent answered the stream with an error status.
    #[error("the agent refused the stream ({0})")]
    Refused(StatusCode),
}

/// The control plane's end: opens streams to the agent.
#[derive(Clone)]
pub struct TunnelClient {
    send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
}

/// The control plane's end of one tunnel connection; it must be polled (spawned) for streams to move.
pub type ClientConnection = hyper::client::conn::http2::Connection<Upgraded, Empty<Bytes>, TokioExecutor>;

impl TunnelClient {
    /// Starts HTTP/2 as the client on a connection the agent opened and upgraded.
    pub async fn handshake(io: Upgraded) -> Result<(TunnelClient, ClientConnection), TunnelError> {
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(io)
            .await
            .map_err(|e| TunnelError::Closed(e.to_string()))?;
        Ok((TunnelClient { send }, conn))
    }

    /// Opens one byte stream to the agent's API server.
    pub async fn open(&self) -> Result<Stream, TunnelError> {
        let mut send = self.send.clone();
        send.ready().await.map_err(|e| TunnelError::Closed(e.to_string()))?;
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri(crate::proto::STREAM_AUTHORITY)
            .body(Empty::new())
            .map_err(|e| TunnelError::Closed(e.to_string()))?;
        let mut res = send.send_request(req).await.map_err(|e| TunnelError::Closed(e.to_string()))?;
        if res.status() != StatusCode::OK {
            return Err(TunnelError::Refused(res.status()));
        }
        let up = hyper::upgrade::on(&mut res).await.map_err(|e| TunnelError::Closed(e.to_string()))?;
        Ok(up)
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }
}

/// What the agent does with each stream the control plane opens.
pub trait StreamHandler: Send + Sync + 'static {
    fn handle(&self, stream: Stream) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Answers each `CONNECT` with 200 and hands its bytes to the handler.
#[derive(Clone)]
pub struct AcceptStreams(pub Arc<dyn StreamHandler>);

impl hyper::service::Service<Request<Incoming>> for AcceptStreams {
    type Response = Response<Empty<Bytes>>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let status = if req.method() == Method::CONNECT {
            let handler = self.0.clone();
            tokio::spawn(async move {
                match hyper::upgrade::on(req).await {
                    Ok(up) => handler.handle(up).await,
                    Err(e) => tracing::debug!(error = %e, "a tunnel stream ended before it started"),
                }
            });
            StatusCode::OK
        } else {
            StatusCode::METHOD_NOT_ALLOWED
        };
        let mut res = Response::new(Empty::new());
        *res.status_mut() = status;
        std::future::ready(Ok(res))
    }
}

/// The agent's end of one tunnel connection: poll it to serve streams; `graceful_shutdown` lets open streams
/// finish (a swap to a renewed certificate).
pub type ServerConnection = hyper::server::conn::http2::Connection<Upgraded, AcceptStreams, TokioExecutor>;

/// Serves HTTP/2 as the server on the agent's upgraded connection.
pub fn serve(io: Upgraded, handler: Arc<dyn StreamHandler>) -> ServerConnection {
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(1000)
        .serve_connection(io, AcceptStreams(handler))
}
