//! The agent's side of each stream: an HTTP/1.1 server whose every request goes to the cluster's API server
//! with the agent's own credentials (a kubeconfig's, or the pod's service account) and its own TLS trust for
//! that server. The caller's `Authorization` is never passed on; hop-by-hop headers are dropped both ways.

use bytes::Bytes;
use http::header::{HeaderName, AUTHORIZATION, CONNECTION, HOST};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A response body from the API server or made here.
pub type Body = BoxBody<Bytes, BoxError>;

/// Why the API server's settings could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamError(pub String);

fn up<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl Fn(E) -> UpstreamError {
    move |e| UpstreamError(format!("{what}: {e}"))
}

/// Where the bearer token comes from.
enum Token {
    None,
    Static(String),
    /// A projected service account token rotates: re-read at most once a minute.
    File {
        path: PathBuf,
        cached: parking_lot::Mutex<Option<(String, Instant)>>,
    },
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Token::None => "none",
            Token::Static(_) => "static(redacted)",
            Token::File { .. } => "file",
        })
    }
}

/// The cluster's API server as the agent reaches it.
pub struct Upstream {
    /// `https://host:port`, no trailing slash.
    base: String,
    client: reqwest::Client,
    /// HTTP/1.1 only: upgrades (exec, attach, port-forward) cannot travel over HTTP/2.
    upgrades: reqwest::Client,
    token: Token,
    rbac: crate::rbac::Sync,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("base", &self.base).field("token", &self.token).finish()
    }
}

#[derive(Deserialize)]
struct KubeConfig {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: ClusterEntry,
}

#[derive(Deserialize)]
struct ClusterEntry {
    server: String,
    #[serde(rename = "certificate-authority", default)]
    ca_file: Option<PathBuf>,
    #[serde(rename = "certificate-authority-data", default)]
    ca_data: Option<String>,
    #[serde(rename = "insecure-skip-tls-verify", default)]
    insecure: bool,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: UserEntry,
}

#[derive(Deserialize, Default)]
struct UserEntry {
    #[serde(default)]
    token: Option<String>,
    #[serde(rename = "tokenFile", default)]
    token_file: Option<PathBuf>,
    #[serde(rename = "client-certificate", default)]
    cert_file: Option<PathBuf>,
    #[serde(rename = "client-certificate-data", default)]
    cert_data: Option<String>,
    #[serde(rename = "client-key", default)]
    key_file: Option<PathBuf>,
    #[serde(rename = "client-key-data", default)]
    key_data: Option<String>,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: ContextEntry,
}

#[derive(Deserialize)]
struct ContextEntry {
    cluster: String,
    #[serde(default)]
    user: Option<String>,
}

/// Inline data (base64) or a file relative to the kubeconfig's directory.
fn data_or_file(
    data: &Option<String>,
    file: &Option<PathBuf>,
    dir: &Path,
    what: &str,
) -> Result<Option<Vec<u8>>, UpstreamError> {
    use base64::Engine;
    if let Some(d) = data {
        return base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map(Some)
            .map_err(up(format!("kubeconfig {what}-data is not base64")));
    }
    match file {
        Some(f) => std::fs::read(dir.join(f)).map(Some).map_err(up(format!("kubeconfig {what} {}", f.display()))),
        None => Ok(None),
    }
}

impl Upstream {
    /// The API server, credentials and trust of a kubeconfig's current context.
    pub fn from_kubeconfig(path: &Path) -> Result<Upstream, UpstreamError> {
        let text = std::fs::read_to_string(path).map_err(up(format!("reading {}", path.display())))?;
        let kc: KubeConfig = serde_yaml_ng::from_str(&text).map_err(up(format!("parsing {}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let ctx_name = kc.current_context.clone().or_else(|| kc.contexts.first().map(|c| c.name.clone()));
        let ctx = kc
            .contexts
            .iter()
            .find(|c| Some(&c.name) == ctx_name.as_ref())
            .ok_or_else(|| UpstreamError(format!("{}: no current context", path.display())))?;
        let cluster = kc
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| UpstreamError(format!("{}: no cluster {:?}", path.display(), ctx.context.cluster)))?;
        if cluster.cluster.insecure {
            return Err(UpstreamError(format!(
                "{}: insecure-skip-tls-verify is set; the agent needs the API server's CA (certificate-authority)",
                path.display()
            )));
        }
        let user = ctx.context.user.as_ref().and_then(|u| kc.users.iter().find(|x| &x.name == u));
        let empty = UserEntry::default();
        let user = user.map_or(&empty, |u| &u.user);
        let ca = data_or_file(&cluster.cluster.ca_data, &cluster.cluster.ca_file, dir, "certificate-authority")?;
        let cert = data_or_file(&user.cert_data, &user.cert_file, dir, "client-certificate")?;
        let key = data_or_file(&user.key_data, &user.key_file, dir, "client-key")?;
        let identity = match (cert, key) {
            (Some(mut c), Some(k)) => {
                c.extend_from_slice(b"\n");
                c.extend_from_slice(&k);
                Some(c)
            }
            _ => None,
        };
        let token = match (&user.token, &user.token_file) {
            (Some(t), _) => Token::Static(t.clone()),
            (None, Some(f)) => Token::File { path: dir.join(f), cached: Default::default() },
            _ => Token::None,
        };
        Upstream::new(&cluster.cluster.server, ca.as_deref(), identity.as_deref(), token)
    }

    /// The API server of the pod's own cluster: `KUBERNETES_SERVICE_HOST`/`_PORT`, the service account's CA and
    /// (rotating) token.
    pub fn in_cluster() -> Result<Upstream, UpstreamError> {
        const SA: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            UpstreamError("not in a pod (KUBERNETES_SERVICE_HOST is not set): pass --kubeconfig".into())
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let ca = std::fs::read(format!("{SA}/ca.crt")).map_err(up(format!("{SA}/ca.crt")))?;
        let token = Token::File { path: PathBuf::from(format!("{SA}/token")), cached: Default::default() };
        Upstream::new(&format!("https://{host}:{port}"), Some(&ca), None, token)
    }

    fn new(server: &str, ca: Option<&[u8]>, identity: Option<&[u8]>, token: Token) -> Result<Upstream, UpstreamError> {
        if !server.starts_with("https://") {
            return Err(UpstreamError(format!("the API server {server:?} is not an https:// URL")));
        }
        let builder = || {
            reqwest::Client::builder()
                .use_rustls_tls()
                .no_proxy()
                .connect_timeout(Duration::from_secs(10))
                .tcp_keepalive(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
        };
        let trusted = |mut b: reqwest::ClientBuilder| -> Result<reqwest::Client, UpstreamError> {
            if let Some(ca) = ca {
                b = b.tls_built_in_root_certs(false);
                for c in reqwest::Certificate::from_pem_bundle(ca).map_err(up("the API server's CA"))? {
                    b = b.add_root_certificate(c);
                }
            }
            if let Some(id) = identity {
                b = b.identity(reqwest::Identity::from_pem(id).map_err(up("the kubeconfig's client certificate"))?);
            }
            b.build().map_err(up("the API server client"))
        };
        let client = trusted(builder())?;
        let upgrades = trusted(builder().http1_only())?;
        let rbac = crate::rbac::Sync::new(true);
        Ok(Upstream { base: server.trim_end_matches('/').to_string(), client, upgrades, token, rbac })
    }

    /// Turns RBAC sync off (`kubehero agent --rbac-sync=false`): the control plane's pushes are refused.
    pub fn without_rbac_sync(mut self) -> Upstream {
        self.rbac = crate::rbac::Sync::new(false);
        self
    }

    /// The RBAC sync state.
    pub fn rbac(&self) -> &crate::rbac::Sync {
        &self.rbac
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.base
    }

    fn bearer(&self) -> Result<Option<String>, UpstreamError> {
        match &self.token {
            Token::None => Ok(None),
            Token::Static(t) => Ok(Some(t.clone())),
            Token::File { path, cached } => {
                let mut c = cached.lock();
                if let Some((t, at)) = c.as_ref() {
                    if at.elapsed() < Duration::from_secs(60) {
                        return Ok(Some(t.clone()));
                    }
                }
                let t = std::fs::read_to_string(path).map_err(up(format!("reading {}", path.display())))?;
                let t = t.trim().to_string();
                *c = Some((t.clone(), Instant::now()));
                Ok(Some(t))
            }
        }
    }

    /// `gitVersion` of the API server's `/version`.
    pub async fn version(&self) -> Result<String, UpstreamError> {
        let mut req = self.client.get(format!("{}/version", self.base));
        if let Some(t) = self.bearer()? {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.map_err(up("GET /version"))?;
        let v: serde_json::Value =
            res.error_for_status().map_err(up("GET /version"))?.json().await.map_err(up("GET /version"))?;
        Ok(v["gitVersion"].as_str().unwrap_or("unknown").to_string())
    }

    /// One JSON request of the agent's own (its state Secret): the status and the body.
    pub async fn call_json(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), UpstreamError> {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).timeout(Duration::from_secs(30));
        if let Some(t) = self.bearer()? {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(up(path.to_string()))?;
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, body))
    }

    /// Sends one request on to the API server and streams its answer back, impersonating whom the control
    /// plane named. A request carrying its own identity headers is refused: the control plane never sends one,
    /// so such a stream did not come from it as it should.
    pub async fn forward(&self, mut req: Request<Incoming>) -> Response<Body> {
        use crate::proto::{IMPERSONATE_EXTRA, IMPERSONATE_GROUP, IMPERSONATE_UID, IMPERSONATE_USER};
        let own = req.headers().keys().find(|n| {
            let n = n.as_str();
            n == "authorization" || n.starts_with("impersonate-") || n.starts_with("x-remote-")
        });
        if let Some(n) = own {
            let msg = format!("the agent refuses a request that carries its own {n} header");
            return status(StatusCode::BAD_REQUEST, "BadRequest", &msg);
        }
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        let from_caller = upgrade.then(|| hyper::upgrade::on(&mut req));
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{}", self.base, path);
        let client = if upgrade { &self.upgrades } else { &self.client };
        let mut out = client.request(req.method().clone(), url);
        if upgrade {
            // The upgrade itself: what the caller asked to switch to travels on.
            for n in [CONNECTION, http::header::UPGRADE] {
                if let Some(v) = req.headers().get(&n) {
                    out = out.header(n, v);
                }
            }
        }
        for (name, value) in req.headers() {
            let n = name.as_str();
            let mapped = match n {
                IMPERSONATE_USER => Some("Impersonate-User".to_string()),
                IMPERSONATE_GROUP => Some("Impersonate-Group".to_string()),
                IMPERSONATE_UID => Some("Impersonate-Uid".to_string()),
                _ => n.strip_prefix(IMPERSONATE_EXTRA).map(|k| format!("Impersonate-Extra-{k}")),
            };
            match mapped {
                Some(m) => out = out.header(m, value),
                None if n.starts_with("kubehero-") => {}
                None if !hop_by_hop(name) && name != AUTHORIZATION && name != HOST => out = out.header(name, value),
                None => {}
            }
        }
        match self.bearer() {
            Ok(Some(t)) => out = out.bearer_auth(t),
            Ok(None) => {}
            Err(e) => return status(StatusCode::BAD_GATEWAY, "ServiceUnavailable", &e.to_string()),
        }
        let res = match out.body(reqwest::Body::wrap(req.into_body())).send().await {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("the agent cannot reach the cluster's API server: {}", ErrorChain(&e));
                return status(StatusCode::BAD_GATEWAY, "ServiceUnavailable", &msg);
            }
        };
        if let (Some(caller), StatusCode::SWITCHING_PROTOCOLS) = (from_caller, res.status()) {
            // Exec, attach, port-forward: the API server switched protocols; join the two byte streams.
            let mut head = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
            for (n, v) in res.headers() {
                head = head.header(n, v);
            }
            tokio::spawn(async move {
                match (caller.await, res.upgrade().await) {
                    (Ok(c), Ok(mut api)) => {
                        let mut c = hyper_util::rt::TokioIo::new(c);
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut api).await;
                    }
                    _ => tracing::debug!("an upgraded stream could not be joined to the API server"),
                }
            });
            return head
                .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
                .unwrap_or_else(|_| status(StatusCode::BAD_GATEWAY, "ServiceUnavailable", "the upgrade failed"));
        }
        let res: http::Response<reqwest::Body> = res.into();
        let (mut parts, body) = res.into_parts();
        let drop: Vec<HeaderName> = parts.headers.keys().filter(|n| hop_by_hop(n)).cloned().collect();
        for n in drop {
            parts.headers.remove(n);
        }
        Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
    }
}

/// An error with its sources, for messages.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut src = self.0.source();
        while let Some(s) = src {
            write!(f, ": {s}")?;
            src = s.source();
        }
        Ok(())
    }
}

/// Headers that belong to one connection, never passed on (the control plane's Kubernetes surface uses the same
/// rule).
pub fn hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || matches!(
            name.as_str(),
            "keep-alive"
                | "proxy-connection"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
        )
}

/// A Kubernetes `Status` answer made by the agent.
pub fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())).map_err(|e| match e {}).boxed());
    *res.status_mut() = code;
    res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    res
}

/// A control request of the control plane (only it can send one: the proxy strips `kubehero-*` headers).
async fn control(up: Arc<Upstream>, req: Request<Incoming>) -> Response<Body> {
    let kind = req.headers().get(crate::rbac::CONTROL_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if kind != crate::rbac::CONTROL_RBAC {
        return status(StatusCode::BAD_REQUEST, "BadRequest", &format!("unknown control request {kind:?}"));
    }
    if !up.rbac().enabled {
        return status(StatusCode::CONFLICT, "Conflict", "RBAC sync is off on this agent (--rbac-sync=false)");
    }
    let body = match http_body_util::Limited::new(req.into_body(), 16 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &format!("the RBAC push: {e}")),
    };
    let desired: crate::rbac::Desired = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &format!("the RBAC push: {e}")),
    };
    let report = crate::rbac::push(up, desired).await;
    let mut res = Response::new(
        Full::new(Bytes::from(serde_json::to_vec(&report).unwrap_or_default())).map_err(|e| match e {}).boxed(),
    );
    res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    res
}

/// Serves each tunnel stream as HTTP/1.1 towards the API server.
pub struct Forwarder(pub Arc<Upstream>);

impl crate::tunnel::StreamHandler for Forwarder {
    fn handle(&self, stream: crate::tunnel::Stream) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let upstream = self.0.clone();
        Box::pin(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let upstream = upstream.clone();
                async move {
                    if req.headers().contains_key(crate::rbac::CONTROL_HEADER) {
                        return Ok::<_, std::convert::Infallible>(control(upstream, req).await);
                    }
                    Ok::<_, std::convert::Infallible>(upstream.forward(req).await)
                }
            });
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(stream, svc).with_upgrades().await
            {
                tracing::debug!(error = %e, "a tunnel stream ended with an error");
            }
        })
    }
}
