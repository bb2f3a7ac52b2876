//! Open Kubernetes streams (every answer still being sent, watches and upgraded exec sessions above all), so
//! that losing access ends them: once a second each is checked again — its credential (revoked, signed out,
//! deprovisioned, expired), its roles on the cluster (a binding removed), the cluster (removed) — and a stream
//! that fails is cut. A watch also gets a second audit row when it ends.

use crate::state::AppState;
use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::watch;

/// What an open stream needs to be checked again.
struct Open {
    cluster: String,
    namespace: Option<String>,
    method: Method,
    /// Only the headers that carry the credential (`Authorization`, `Cookie`).
    credential: HeaderMap,
    stop: watch::Sender<bool>,
}

/// The open streams of this replica.
#[derive(Default)]
pub struct Streams {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
}

/// A stream's place in [`Streams`]: removed when dropped (the answer was sent, or the client went away).
pub struct Registration {
    id: u64,
    streams: Arc<Streams>,
    /// Resolves when the stream must end.
    pub stopped: watch::Receiver<bool>,
    /// Called once when the stream ends (the end row of a watch).
    on_end: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.streams.open.lock().remove(&self.id);
        if let Some(f) = self.on_end.take() {
            f();
        }
    }
}

impl Streams {
    /// Registers a stream; `on_end` runs when it ends.
    pub fn register(
        self: &Arc<Self>,
        cluster: &str,
        namespace: Option<&str>,
        method: &Method,
        headers: &HeaderMap,
        on_end: Option<Box<dyn FnOnce() + Send>>,
    ) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut credential = HeaderMap::new();
        for n in [axum::http::header::AUTHORIZATION, axum::http::header::COOKIE] {
            for v in headers.get_all(&n) {
                credential.append(n.clone(), v.clone());
            }
        }
        let (stop, stopped) = watch::channel(false);
        let open = Open {
            cluster: cluster.to_string(),
            namespace: namespace.map(str::to_string),
            method: method.clone(),
            credential,
            stop,
        };
        self.open.lock().insert(id, open);
        Registration { id, streams: self.clone(), stopped, on_end }
    }

    /// How many streams are open.
    pub fn len(&self) -> usize {
        self.open.lock().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks every open stream again and cuts those whose caller may no longer reach the cluster.
    pub async fn recheck(&self, s: &AppState) {
        let snapshot: Vec<(u64, String, Option<String>, Method, HeaderMap)> = self
            .open
            .lock()
            .iter()
            .map(|(id, o)| (*id, o.cluster.clone(), o.namespace.clone(), o.method.clone(), o.credential.clone()))
            .collect();
        for (id, cluster, namespace, method, headers) in snapshot {
            let allowed = match super::resolve(s, &method, &headers, &cluster).await {
                Ok(p) => {
                    !super::direct::groups(s, &p, &cluster, namespace.as_deref()).is_empty()
                        && p.expires_at.is_none_or(|e| e > s.clock.now())
                        && s.agents.registry.refusal(Some(&cluster), "").is_none()
                }
                // Unreachable store: keep the stream (the next check decides); a refused credential ends it.
                Err(e) => e.code == crate::error::Code::Unavailable,
            };
            if !allowed {
                if let Some(o) = self.open.lock().remove(&id) {
                    let _ = o.stop.send(true);
                    tracing::info!(cluster = %cluster, "closed a Kubernetes stream: its caller lost access");
                }
            }
        }
    }
}

/// Checks the open streams every second until `stop`.
pub fn spawn_rechecks(s: AppState, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if !s.kube_streams.is_empty() {
                        s.kube_streams.recheck(&s).await;
                    }
                }
                _ = crate::stopped(&mut stop) => return,
            }
        }
    });
}

/// A response body that ends with an error (the connection is cut, never a clean end that looks complete)
/// when its stream loses access, and leaves [`Streams`] when dropped.
pub struct Guarded<B> {
    inner: B,
    stopped: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    _registration: Registration,
}

impl<B> Guarded<B> {
    pub fn new(inner: B, registration: Registration) -> Guarded<B> {
        let mut rx = registration.stopped.clone();
        let stopped = Box::pin(async move {
            let _ = rx.wait_for(|v| *v).await;
        });
        Guarded { inner, stopped, _registration: registration }
    }
}

/// Why a guarded body ended early.
#[derive(Debug, thiserror::Error)]
#[error("the caller lost access to the cluster; the stream was closed")]
pub struct AccessLost;

impl<B> HttpBody for Guarded<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(AccessLost))));
        }
        Pin::new(&mut self.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
