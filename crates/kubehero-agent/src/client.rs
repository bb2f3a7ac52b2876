//! The agent's calls to the control plane's agent listener: join, renew, and the tunnel upgrade. Every call is
//! its own TLS 1.3 connection; the tunnel keeps its connection.

use crate::proto::{self, CertResponse, ErrorBody};
use crate::state::Credentials;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use std::sync::Arc;
use std::time::Duration;

/// Why a call to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The control plane answered and said no (a wrong or used join token, a removed cluster): retrying the same
    /// call will not help.
    #[error("the control plane refused: {message} ({code}, HTTP {status})")]
    Refused { status: u16, code: String, message: String },
    /// The control plane could not be reached or the connection broke: worth retrying.
    #[error("cannot reach the control plane: {0}")]
    Unreachable(String),
    /// A local problem (state directory, key, configuration).
    #[error("{0}")]
    Local(String),
}

impl From<crate::pki::PkiError> for AgentError {
    fn from(e: crate::pki::PkiError) -> Self {
        AgentError::Local(e.0)
    }
}

/// The control plane's agent listener.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    host: String,
    port: u16,
}

/// How long connecting (TCP and TLS) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a join or renewal may take once connected.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl ControlPlane {
    /// `https://HOST[:PORT]` (port 443 when absent).
    pub fn parse(url: &str) -> Result<ControlPlane, AgentError> {
        let bad = || AgentError::Local(format!("--server {url:?} is not an https://HOST[:PORT] URL"));
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("https") || uri.path().len() > 1 {
            return Err(bad());
        }
        let host = uri.host().ok_or_else(bad)?.trim_start_matches('[').trim_end_matches(']').to_string();
        Ok(ControlPlane { host, port: uri.port_u16().unwrap_or(443) })
    }

    async fn dial(
        &self,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>, AgentError> {
        let name =
            ServerName::try_from(self.host.clone()).map_err(|e| AgentError::Local(format!("server name: {e}")))?;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            tcp.set_nodelay(true)?;
            tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await
        };
        match tokio::time::timeout(DIAL_TIMEOUT, connect).await {
            Ok(Ok(s)) => Ok(TokioIo::new(s)),
            Ok(Err(e)) => Err(AgentError::Unreachable(format!("{}:{}: {e}", self.host, self.port))),
            Err(_) => {
                Err(AgentError::Unreachable(format!("{}:{}: no TLS connection within 10 s", self.host, self.port)))
            }
        }
    }

    /// Sends one request on a new connection; `None` body means an upgrade request whose connection is kept.
    async fn call(
        &self,
        tls: Arc<rustls::ClientConfig>,
        req: Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, AgentError> {
        let io = self.dial(tls).await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| AgentError::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "connection to the control plane ended");
            }
        });
        send.send_request(req).await.map_err(|e| AgentError::Unreachable(e.to_string()))
    }

    async fn post_for_cert(
        &self,
        tls: Arc<rustls::ClientConfig>,
        path: &str,
        body: Vec<u8>,
    ) -> Result<CertResponse, AgentError> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(http::header::HOST, self.host.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AgentError::Local(e.to_string()))?;
        let call = async {
            let res = self.call(tls, req).await?;
            let status = res.status();
            let body = res.into_body().collect().await.map_err(|e| AgentError::Unreachable(e.to_string()))?.to_bytes();
            if status != StatusCode::OK {
                return Err(refusal(status, &body));
            }
            serde_json::from_slice::<CertResponse>(&body)
                .map_err(|e| AgentError::Unreachable(format!("the control plane's answer is not a certificate: {e}")))
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| AgentError::Unreachable(format!("no answer to {path} within 30 s")))?
    }

    /// Joins with a one-time token: a new key, a CSR for `cluster`, the control plane trusted only if its chain
    /// holds the CA whose hash is `ca_hash`. The key never leaves this process except into the state directory.
    pub async fn join(&self, cluster: &str, token: &str, ca_hash: &str) -> Result<Credentials, AgentError> {
        let key = crate::pki::new_key()?;
        let csr_pem = crate::pki::csr_pem(&key, cluster)?;
        let tls = client_config(Trust::Pinned(ca_hash), None)?;
        let body = serde_json::to_vec(&proto::JoinRequest { cluster: cluster.into(), token: token.into(), csr_pem })
            .map_err(|e| AgentError::Local(e.to_string()))?;
        let got = self.post_for_cert(tls, proto::JOIN_PATH, body).await?;
        Ok(Credentials {
            key_pem: key.serialize_pem(),
            cert_pem: got.cert_pem,
            ca_pem: got.ca_pem,
            joined_with: Some(token_hash(token)),
        })
    }

    /// Renews over the current identity with a new key.
    pub async fn renew(&self, cluster: &str, current: &Credentials) -> Result<Credentials, AgentError> {
        let key = crate::pki::new_key()?;
        let csr_pem = crate::pki::csr_pem(&key, cluster)?;
        let tls = client_config(Trust::Bundle(&current.ca_pem), Some(current))?;
        let body =
            serde_json::to_vec(&proto::RenewRequest { csr_pem }).map_err(|e| AgentError::Local(e.to_string()))?;
        let got = self.post_for_cert(tls, proto::RENEW_PATH, body).await?;
        Ok(Credentials {
            key_pem: key.serialize_pem(),
            cert_pem: got.cert_pem,
            ca_pem: got.ca_pem,
            joined_with: current.joined_with.clone(),
        })
    }

    /// Opens the tunnel over `creds` and serves the control plane's streams with `handler`. The returned
    /// connection must be polled; it ends when the tunnel does.
    pub async fn tunnel(
        &self,
        creds: &Credentials,
        version: &str,
        handler: Arc<dyn crate::tunnel::StreamHandler>,
    ) -> Result<crate::tunnel::ServerConnection, AgentError> {
        let tls = client_config(Trust::Bundle(&creds.ca_pem), Some(creds))?;
        let req = Request::builder()
            .method(Method::GET)
            .uri(proto::TUNNEL_PATH)
            .header(http::header::HOST, self.host.as_str())
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, proto::TUNNEL_PROTOCOL)
            .header(proto::AGENT_VERSION_HEADER, version)
            .body(Full::new(Bytes::new()))
            .map_err(|e| AgentError::Local(e.to_string()))?;
        let upgrade = async {
            let mut res = self.call(tls, req).await?;
            if res.status() != StatusCode::SWITCHING_PROTOCOLS {
                let status = res.status();
                let body = res.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                return Err(refusal(status, &body));
            }
            hyper::upgrade::on(&mut res).await.map_err(|e| AgentError::Unreachable(e.to_string()))
        };
        let io = tokio::time::timeout(CALL_TIMEOUT, upgrade)
            .await
            .map_err(|_| AgentError::Unreachable("no answer to the tunnel request within 30 s".into()))??;
        Ok(crate::tunnel::serve(io, handler))
    }
}

/// SHA-256 (hex) of a join token, as the credentials remember it.
pub fn token_hash(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The error an answer carries; 5xx and 429 are worth retrying, other statuses are refusals.
fn refusal(status: StatusCode, body: &[u8]) -> AgentError {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.error.code, e.error.message),
        Err(_) => ("unknown".into(), String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()),
    };
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return AgentError::Unreachable(format!("{message} ({code}, HTTP {})", status.as_u16()));
    }
    AgentError::Refused { status: status.as_u16(), code, message }
}

/// What the agent trusts the control plane by.
enum Trust<'a> {
    /// A CA public key hash (the first join).
    Pinned(&'a str),
    /// The CAs the control plane gave at the last join or renewal (PEM).
    Bundle(&'a str),
}

fn client_config(trust: Trust<'_>, creds: Option<&Credentials>) -> Result<Arc<rustls::ClientConfig>, AgentError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| AgentError::Local(e.to_string()))?;
    let builder = match trust {
        Trust::Pinned(hash) => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(crate::pki::PinnedCa::new(hash)?))
        }
        Trust::Bundle(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in crate::pki::pem_certs(pem)? {
                roots.add(c).map_err(|e| AgentError::Local(format!("the stored CA: {e}")))?;
            }
            builder.with_root_certificates(roots)
        }
    };
    let config = match creds {
        None => builder.with_no_client_auth(),
        Some(c) => {
            use rustls::pki_types::pem::PemObject;
            let chain = crate::pki::pem_certs(&c.cert_pem)?;
            let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())
                .map_err(|e| AgentError::Local(format!("the stored key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| AgentError::Local(format!("the stored certificate: {e}")))?
        }
    };
    Ok(Arc::new(config))
}
