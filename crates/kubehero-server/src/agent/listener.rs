//! The agent listener (`KUBEHERO_AGENT_LISTEN`): TLS 1.3 only. A client certificate is checked at the
//! handshake against the agent CAs, its CN must name a registered cluster and its serial must not be revoked;
//! only the join call, and another replica's request for a stream (its own HMAC credential, `peer.rs`), are
//! served without one. Handshakes and request heads are time-limited, bodies are small,
//! and a bad peer only ever costs its own connection.

use super::{agent_event, result, Agents, Refusal, Registry};
use crate::state::AppState;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use kubehero_agent::pki::{cert_facts, CertFacts};
use kubehero_agent::proto::{self, CertResponse, JoinRequest, RenewRequest};
use kubehero_core::{AuditOutcome, ClusterName};
use kubehero_identity::Durability;
use kubehero_store::{AgentCert, Change, StoreError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a TLS handshake, or a request head, may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes in progress at once: a flood of connections that never finish their handshake holds at
/// most this many sockets (each for at most 10 s); connections beyond it are closed at once. Agents reconnecting
/// after a restart finish their handshakes in milliseconds, so they are not crowded out.
const MAX_HANDSHAKES: usize = 2048;
/// The largest join or renewal body.
const MAX_BODY: usize = 64 * 1024;

/// Checks a client certificate against the agent CAs (rustls/webpki: chain, validity, client-auth usage), then
/// against the registry.
#[derive(Debug)]
struct AgentVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

impl ClientCertVerifier for AgentVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let facts = cert_facts(end_entity).map_err(|e| rustls::Error::General(e.0))?;
        match self.registry.refusal(facts.cn.as_deref(), &facts.serial) {
            None => Ok(ClientCertVerified::assertion()),
            Some(Refusal::Revoked) => Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)),
            Some(_) => Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// TLS 1.3 settings for the agent listener: a serving certificate from the CA for `names`, client certificates
/// from any trusted agent CA, checked against `registry`.
/// Also gives back the chain check alone, for re-checking open tunnels when the set of CAs changes.
pub fn tls_config(
    ca: &super::ca::Ca,
    registry: &Arc<Registry>,
    names: &[String],
    now: i64,
) -> Result<(Arc<rustls::ServerConfig>, Arc<dyn ClientCertVerifier>), super::ca::CaError> {
    let err = |e: &dyn std::fmt::Display| super::ca::CaError(format!("agent listener TLS: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in ca.trusted() {
        roots.add(c).map_err(|e| err(&e))?;
    }
    let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| err(&e))?;
    let verifier = Arc::new(AgentVerifier { inner: inner.clone(), registry: registry.clone() });
    let (chain, key) = ca.serving(names, now)?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, PrivateKeyDer::Pkcs8(key.into()))
        .map_err(|e| err(&e))?;
    Ok((Arc::new(config), inner))
}

/// Accepts agents until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    agents: Arc<Agents>,
    mut stop: watch::Receiver<bool>,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, addr)) => {
                    let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                        state.metrics.agents.handshake_failures.inc();
                        tracing::debug!(peer = %addr, "too many agent handshakes in progress; closed");
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(connection(state.clone(), agents.clone(), tcp, addr, permit));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "agent listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = crate::stopped(&mut stop) => return,
        }
    }
}

async fn connection(
    state: AppState,
    agents: Arc<Agents>,
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    handshake: tokio::sync::OwnedSemaphorePermit,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(agents.tls());
    let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
    drop(handshake);
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            state.metrics.agents.handshake_failures.inc();
            tracing::info!(peer = %addr, error = %e, "agent handshake refused");
            return;
        }
        Err(_) => {
            state.metrics.agents.handshake_failures.inc();
            tracing::info!(peer = %addr, "agent handshake not finished within 10 s; closed");
            return;
        }
    };
    let peer: Option<(CertFacts, CertificateDer<'static>)> = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| Some((cert_facts(c).ok()?, c.clone().into_owned())));
    let svc = hyper::service::service_fn(move |req| {
        let (state, agents, peer) = (state.clone(), agents.clone(), peer.clone());
        async move { Ok::<_, std::convert::Infallible>(route(&state, &agents, peer, addr, req).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(tls), svc)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(peer = %addr, error = %e, "agent connection ended with an error");
    }
}

/// The TokenReview webhook of clusters that trust KubeHero directly (issue of `kubehero cluster add --webhook`).
pub const TOKENREVIEW_PATH: &str = "/api/v1/tokenreview";

pub(crate) type Answer = hyper::Response<Full<Bytes>>;

pub(crate) fn answer(status: StatusCode, body: &impl serde::Serialize) -> Answer {
    let mut res = hyper::Response::new(Full::new(Bytes::from(serde_json::to_vec(body).unwrap_or_default())));
    *res.status_mut() = status;
    res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    res
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    answer(
        status,
        &proto::ErrorBody { error: proto::ErrorDetail { code: code.to_string(), message: message.to_string() } },
    )
}

async fn route(
    state: &AppState,
    agents: &Arc<Agents>,
    peer: Option<(CertFacts, CertificateDer<'static>)>,
    addr: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Answer {
    let source = Some(addr.ip().to_string());
    match (req.method(), req.uri().path()) {
        (&Method::POST, proto::JOIN_PATH) => join(state, agents, source, req).await,
        (&Method::POST, TOKENREVIEW_PATH) => {
            crate::kube::tokenreview::review(state, agents, peer.map(|p| p.0), source, req).await
        }
        (&Method::POST, proto::RENEW_PATH) | (&Method::GET, proto::TUNNEL_PATH) => {
            let Some((peer, der)) = peer.filter(|(p, _)| !p.webhook) else {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "this call needs the agent's client certificate",
                );
            };
            let cluster = peer.cn.clone().unwrap_or_default();
            if let Some(r) = refusal(state, agents, &peer) {
                return error(StatusCode::FORBIDDEN, r.code(), r.as_str());
            }
            if req.method() == Method::POST {
                renew(state, agents, &cluster, source, req).await
            } else {
                tunnel(state, agents, peer, der, source, req)
            }
        }
        (&Method::GET, path) if path.starts_with(super::peer::STREAM_PATH) => {
            let cluster = path[super::peer::STREAM_PATH.len()..].to_string();
            super::peer::serve(state, agents, &cluster, req).await
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such agent call"),
    }
}

/// Why a client certificate that passed the handshake may not be used now: a keep-alive connection may outlive
/// a removal, a revocation or the certificate's expiry.
pub(crate) fn refusal(state: &AppState, agents: &Agents, peer: &CertFacts) -> Option<Refusal> {
    agents
        .registry
        .refusal(peer.cn.as_deref(), &peer.serial)
        .or_else(|| (peer.not_after <= state.clock.now()).then_some(Refusal::Expired))
}

pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(req: hyper::Request<Incoming>) -> Result<T, Answer> {
    let body = Limited::new(req.into_body(), MAX_BODY);
    let bytes = match tokio::time::timeout(HANDSHAKE_TIMEOUT, body.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is larger than 64 KiB"))
        }
        Err(_) => {
            return Err(error(StatusCode::REQUEST_TIMEOUT, "deadline_exceeded", "the body did not arrive within 10 s"))
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid_argument", &format!("the body is not valid: {e}")))
}

/// Records a refused agent call (durable) and answers it.
/// `who` is the row's action, cluster, how the agent proved itself, and source address.
async fn refused(
    state: &AppState,
    who: (&str, &str, Option<&'static str>, Option<String>),
    status: StatusCode,
    code: &str,
    message: &str,
) -> Answer {
    let (action, cluster, method, source) = who;
    let event =
        agent_event(state, action, cluster, method, result(AuditOutcome::Denied, status.as_u16(), Some(code)), source);
    if let Err(e) = state.identity.record(event, Durability::Durable).await {
        tracing::error!(error = %e, "the row of a refused agent call could not be written");
        return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the audit log cannot be written; try again");
    }
    error(status, code, message)
}

async fn join(state: &AppState, agents: &Agents, source: Option<String>, req: hyper::Request<Incoming>) -> Answer {
    let body: JoinRequest = match read_json(req).await {
        Ok(b) => b,
        Err(a) => return a,
    };
    let Ok(name) = ClusterName::parse(&body.cluster) else {
        return error(StatusCode::BAD_REQUEST, "invalid_argument", "cluster: not a cluster name (a DNS label)");
    };
    let cluster = name.as_str().to_string();
    if !body.token.starts_with(proto::JOIN_TOKEN_PREFIX) || body.token.len() > 256 {
        let msg = "the join token is not valid. Fix: run `kubehero cluster add NAME` (or issue a new join token) for a fresh one";
        return refused(
            state,
            ("agent.join", &cluster, None, source),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            msg,
        )
        .await;
    }
    let now = state.clock.now();
    let (issued, cert) =
        match issue(state, agents, &body.csr_pem, ("agent.join", &cluster, None, source.clone()), now).await {
            Ok(x) => x,
            Err(a) => return a,
        };
    let hash = kubehero_authn::sha256_hex(&body.token);
    let event = agent_event(
        state,
        "agent.join",
        &cluster,
        Some("join_token"),
        result(AuditOutcome::Ok, 200, None),
        source.clone(),
    );
    match state.identity.apply(Change::RedeemJoinToken { hash: &hash, cert: &cert, now }, event).await {
        Ok(_) => {
            tracing::info!(cluster = %cluster, serial = %issued.serial, "agent joined");
            certificate(agents, issued)
        }
        Err(StoreError::NotFound(_)) => {
            let msg = "the join token is not valid. Fix: issue a new one with `kubehero cluster add NAME`";
            refused(state, ("agent.join", &cluster, None, source), StatusCode::UNAUTHORIZED, "unauthenticated", msg)
                .await
        }
        Err(StoreError::Conflict(m)) => {
            let msg = format!("{m}. Fix: issue a new one with `kubehero cluster add {cluster}`");
            refused(state, ("agent.join", &cluster, None, source), StatusCode::UNAUTHORIZED, "unauthenticated", &msg)
                .await
        }
        Err(e) => {
            tracing::error!(error = %e, "recording a join failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the join could not be recorded; try again")
        }
    }
}

/// Issues a certificate for the CSR (a bad CSR is a refusal, audited as `who`), with its record.
async fn issue(
    state: &AppState,
    agents: &Agents,
    csr_pem: &str,
    who: (&str, &str, Option<&'static str>, Option<String>),
    now: i64,
) -> Result<(super::ca::Issued, AgentCert), Answer> {
    let cluster = who.1.to_string();
    match agents.ca.issue(csr_pem, &cluster, agents.settings.cert_ttl, now) {
        Ok(issued) => {
            let cert = AgentCert {
                serial: issued.serial.clone(),
                cluster,
                issued_at: now,
                not_after: issued.not_after,
                revoked_at: None,
            };
            Ok((issued, cert))
        }
        Err(super::ca::IssueError::Internal(e)) => {
            tracing::error!(error = %e, "issuing an agent certificate failed");
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the certificate could not be issued"))
        }
        Err(e) => Err(refused(state, who, StatusCode::BAD_REQUEST, "invalid_argument", &e.to_string()).await),
    }
}

/// The answer carrying a new certificate and the CAs to trust.
fn certificate(agents: &Agents, issued: super::ca::Issued) -> Answer {
    let body = CertResponse { cert_pem: issued.cert_pem, ca_pem: agents.ca.bundle_pem(), not_after: issued.not_after };
    answer(StatusCode::OK, &body)
}

async fn renew(
    state: &AppState,
    agents: &Agents,
    cluster: &str,
    source: Option<String>,
    req: hyper::Request<Incoming>,
) -> Answer {
    let body: RenewRequest = match read_json(req).await {
        Ok(b) => b,
        Err(a) => return a,
    };
    let now = state.clock.now();
    let (issued, cert) =
        match issue(state, agents, &body.csr_pem, ("agent.renew", cluster, Some("mtls"), source.clone()), now).await {
            Ok(x) => x,
            Err(a) => return a,
        };
    let event = agent_event(state, "agent.renew", cluster, Some("mtls"), result(AuditOutcome::Ok, 200, None), source);
    match state.identity.apply(Change::IssueAgentCert(&cert), event).await {
        Ok(_) => {
            tracing::info!(cluster, serial = %issued.serial, "agent certificate renewed");
            certificate(agents, issued)
        }
        Err(StoreError::NotFound(_)) => {
            error(StatusCode::FORBIDDEN, "cluster_removed", Refusal::NotRegistered.as_str())
        }
        Err(e) => {
            tracing::error!(error = %e, "recording a renewal failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the renewal could not be recorded; try again")
        }
    }
}

/// Sanitised agent version: printable ASCII, at most 64 characters.
fn version_of(req: &hyper::Request<Incoming>) -> Option<String> {
    let v = req.headers().get(proto::AGENT_VERSION_HEADER)?.to_str().ok()?;
    let v: String = v.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
    (!v.is_empty()).then_some(v)
}

fn tunnel(
    state: &AppState,
    agents: &Arc<Agents>,
    peer: CertFacts,
    der: CertificateDer<'static>,
    source: Option<String>,
    mut req: hyper::Request<Incoming>,
) -> Answer {
    let wants = req.headers().get(http::header::UPGRADE).and_then(|v| v.to_str().ok());
    if !wants.is_some_and(|w| w.eq_ignore_ascii_case(proto::TUNNEL_PROTOCOL)) {
        return error(StatusCode::BAD_REQUEST, "invalid_argument", "the tunnel call needs Upgrade: kubehero-tunnel/1");
    }
    let hub_peer = super::hub::Peer {
        cluster: peer.cn.clone().unwrap_or_default(),
        serial: peer.serial.clone(),
        not_after: peer.not_after,
        cert: der,
        version: version_of(&req),
        source,
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let (state, hub) = (state.clone(), agents.hub.clone());
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => io,
            Err(e) => return tracing::info!(cluster = %hub_peer.cluster, error = %e, "tunnel upgrade failed"),
        };
        match kubehero_agent::tunnel::TunnelClient::handshake(io).await {
            Ok((client, conn)) => hub.register(&state, hub_peer, client, conn).await,
            Err(e) => tracing::info!(cluster = %hub_peer.cluster, error = %e, "tunnel handshake failed"),
        }
    });
    let mut res = hyper::Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    res.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
    res.headers_mut().insert(http::header::UPGRADE, http::HeaderValue::from_static(proto::TUNNEL_PROTOCOL));
    res
}
