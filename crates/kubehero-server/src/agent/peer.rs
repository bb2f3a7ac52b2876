//! Streams between replicas. An agent holds one tunnel, to whichever replica the load balancer gave it; a
//! request for its cluster that lands on another replica is passed to the one holding the tunnel, found in the
//! cluster's state row (`cluster_status.replica`, that replica's `KUBEHERO_PEER_URL`).
//!
//! The forwarding replica asks the holder's agent listener for a raw stream (`GET /peer/v1/streams/{cluster}`,
//! `Upgrade: kubehero-peer/1`) and uses it exactly like a tunnel stream of its own: the request has already
//! been authenticated, authorized, stripped of the caller's credentials and given its impersonation headers
//! there, and it is audited there. The holder only splices bytes between the upgraded connection and a new
//! stream of its local tunnel; it never forwards again (no loops). Replicas prove themselves to each other with
//! an HMAC over the time and the cluster, under a key derived from the audit HMAC key they share, and the
//! holder's certificate is checked against the agent CA (every replica's agent listener serves one from it, for
//! the names of its peer URL), so neither an agent's certificate nor a copied request opens a stream.

use super::Agents;
use crate::state::AppState;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;

/// The path prefix of a stream request; the cluster's name follows.
pub const STREAM_PATH: &str = "/peer/v1/streams/";
/// The upgrade protocol of a stream between replicas.
pub const PROTOCOL: &str = "kubehero-peer/1";
/// `<unix seconds>.<base64url HMAC-SHA256>`.
pub const AUTH_HEADER: &str = "kubehero-peer-auth";
/// Most [`AUTH_HEADER`] values a replica checks (the current key and a few previous ones).
const MAX_CREDENTIALS: usize = 8;
/// How far the two replicas' clocks (and the request's age) may differ.
const SKEW_SECS: i64 = 60;
/// How long connecting to another replica (TCP, TLS, the upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// This replica's side of the peer links: the shared key and where the others reach it.
pub struct Peers {
    /// The current audit HMAC key's, then the previous ones': replicas in the middle of a key rotation still reach
    /// each other.
    macs: kubehero_identity::macs::Macs,
    /// `KUBEHERO_PEER_URL`, or the agent listener's address when it is bound to one IP; `None` when neither is
    /// known (one replica, or an unreachable address: other replicas cannot forward here).
    own: std::sync::OnceLock<Option<String>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").field("own", &self.own.get()).finish_non_exhaustive()
    }
}

impl Peers {
    pub fn new(secrets: &[[u8; 32]]) -> Peers {
        Peers { macs: kubehero_identity::macs::Macs::new(secrets), own: Default::default() }
    }

    /// Sets where the other replicas reach this one, once the agent listener is bound.
    pub fn set_own(&self, configured: Option<&str>, bound: std::net::SocketAddr) {
        let own = match configured {
            Some(u) => Some(u.trim_end_matches('/').to_string()),
            None if bound.ip().is_unspecified() => None,
            None => Some(format!("https://{bound}")),
        };
        let _ = self.own.set(own);
    }

    /// Where the other replicas reach this one, if they can.
    pub fn own(&self) -> Option<&str> {
        self.own.get().and_then(|o| o.as_deref())
    }

    /// The values of [`AUTH_HEADER`] for a stream to `cluster` at `now`: one per key, the current key's first.
    /// A replica that has not yet been given the new audit HMAC key (a rolling rotation) checks the previous
    /// key's value; one that reads only the first value sees what it always did.
    pub fn credentials(&self, cluster: &str, now: i64) -> Vec<String> {
        use base64::Engine;
        let tags = self.macs.sign_each(signed(now, cluster).as_bytes());
        tags.iter().map(|t| format!("{now}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t))).collect()
    }

    /// Whether any of `values` is a fresh credential for `cluster` under any of this replica's keys
    /// (constant-time comparison; at most [`MAX_CREDENTIALS`] values are looked at).
    pub fn check<'a>(&self, values: impl IntoIterator<Item = &'a str>, cluster: &str, now: i64) -> bool {
        values.into_iter().take(MAX_CREDENTIALS).any(|v| self.check_one(v, cluster, now))
    }

    fn check_one(&self, value: &str, cluster: &str, now: i64) -> bool {
        use base64::Engine;
        let Some((ts, tag)) = value.split_once('.') else { return false };
        let Ok(ts) = ts.parse::<i64>() else { return false };
        if (now - ts).abs() > SKEW_SECS {
            return false;
        }
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag) else { return false };
        self.macs.verify(signed(ts, cluster).as_bytes(), &tag)
    }
}

/// What a replica credential signs.
fn signed(ts: i64, cluster: &str) -> String {
    format!("kubehero-peer-stream\n{ts}\n{cluster}")
}

/// The host of a peer URL (`https://HOST:PORT`), for the agent listener's certificate.
pub fn host_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    Some(uri.host()?.trim_start_matches('[').trim_end_matches(']').to_string())
}

/// Checks a `KUBEHERO_PEER_URL` value: `https://HOST:PORT`, nothing else.
pub fn valid_url(url: &str) -> bool {
    url.parse::<http::Uri>().is_ok_and(|u| {
        u.scheme_str() == Some("https") && u.host().is_some() && u.port_u16().is_some() && u.path() == "/"
    })
}

type Answer = super::listener::Answer;

/// The holder's side: checks the caller's credential, opens a stream of the local tunnel, answers 101 and
/// splices the two until either side closes.
pub async fn serve(state: &AppState, agents: &Arc<Agents>, cluster: &str, mut req: hyper::Request<Incoming>) -> Answer {
    use super::listener::error;
    let wants = req.headers().get(http::header::UPGRADE).and_then(|v| v.to_str().ok());
    if !wants.is_some_and(|w| w.eq_ignore_ascii_case(PROTOCOL)) {
        return error(StatusCode::BAD_REQUEST, "invalid_argument", "a peer stream needs Upgrade: kubehero-peer/1");
    }
    let auth = req.headers().get_all(AUTH_HEADER).iter().filter_map(|v| v.to_str().ok());
    if !agents.peers.check(auth, cluster, state.clock.now()) {
        state.metrics.agents.peer_refused.inc();
        tracing::warn!(cluster, "a peer stream without a valid replica credential was refused");
        return error(StatusCode::UNAUTHORIZED, "unauthenticated", "this call needs another replica's credential");
    }
    // The tunnel's stream first, so a failure is an answer the other replica can report, not a closed stream.
    let to = match agents.hub.open(cluster).await {
        Ok(to) => to,
        Err(super::hub::OpenError::NotConnected(_)) => {
            let msg = "the cluster's agent is not connected to this replica";
            return error(StatusCode::NOT_FOUND, "not_connected", msg);
        }
        Err(e) => return error(StatusCode::BAD_GATEWAY, "unavailable", &e.to_string()),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let (cluster, metrics) = (cluster.to_string(), state.metrics.clone());
    tokio::spawn(async move {
        let Ok(from) = upgrade.await else {
            return tracing::debug!(cluster, "a peer stream ended before it began");
        };
        metrics.agents.peer_streams.get_or_create(&crate::metrics::PeerLabels { direction: "in" }).inc();
        let (mut from, mut to) = (TokioIo::new(from), TokioIo::new(to));
        if let Err(e) = tokio::io::copy_bidirectional(&mut from, &mut to).await {
            tracing::debug!(cluster, error = %e, "a peer stream ended with an error");
        }
    });
    let mut res = hyper::Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    res.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
    res.headers_mut().insert(http::header::UPGRADE, http::HeaderValue::from_static(PROTOCOL));
    res
}

/// The forwarding side: a byte stream to `cluster`'s API server through the replica at `url`.
pub async fn open(agents: &Agents, url: &str, cluster: &str, now: i64) -> Result<hyper::upgrade::Upgraded, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let (Some(host), Some(port)) = (host_of(url), uri.port_u16()) else {
        return Err(format!("{url:?} is not https://HOST:PORT"));
    };
    let connect = async {
        let mut roots = rustls::RootCertStore::empty();
        for c in agents.ca.trusted() {
            roots.add(c).map_err(|e| e.to_string())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let tls =
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn.with_upgrades());
        let mut req = http::Request::get(format!("{STREAM_PATH}{cluster}"))
            .header(http::header::HOST, format!("{host}:{port}"))
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, PROTOCOL);
        for value in agents.peers.credentials(cluster, now) {
            req = req.header(AUTH_HEADER, value);
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let res = send.send_request(req).await.map_err(|e| e.to_string())?;
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(format!("it answered {}", res.status()));
        }
        hyper::upgrade::on(res).await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect).await.map_err(|_| "no answer within 5 s".to_string())?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn credentials_are_bound_to_cluster_and_time() {
        let p = Peers::new(&[[7; 32]]);
        let c = p.credentials("prod", 1_000);
        let c: Vec<&str> = c.iter().map(String::as_str).collect();
        assert!(p.check(c.clone(), "prod", 1_000));
        assert!(p.check(c.clone(), "prod", 1_060));
        assert!(!p.check(c.clone(), "prod", 1_061), "too old");
        assert!(!p.check(c.clone(), "dev", 1_000), "another cluster");
        assert!(!Peers::new(&[[8; 32]]).check(c.clone(), "prod", 1_000), "another key");
        for bad in ["", "1000", "x.y", "1000.", "1000.!!"] {
            assert!(!p.check([bad], "prod", 1_000), "{bad:?}");
        }
        assert!(!p.check([], "prod", 1_000));
    }

    #[test]
    fn replicas_reach_each_other_in_the_middle_of_a_key_rotation() {
        // A has the new audit HMAC key with the old one as previous; B has not been given the new key yet.
        let (a, b) = (Peers::new(&[[8; 32], [7; 32]]), Peers::new(&[[7; 32]]));
        let from_a = a.credentials("prod", 1_000);
        assert_eq!(from_a.len(), 2);
        assert!(b.check(from_a.iter().map(String::as_str), "prod", 1_000), "B checks A's old-key value");
        assert!(!b.check([from_a[0].as_str()], "prod", 1_000), "the new key's value alone means nothing to B");
        let from_b = b.credentials("prod", 1_000);
        assert!(a.check(from_b.iter().map(String::as_str), "prod", 1_000), "A still accepts the old key");
        // Only the first few values are looked at.
        let many: Vec<String> =
            std::iter::repeat_n("1000.AAAA".to_string(), MAX_CREDENTIALS).chain(from_a.iter().cloned()).collect();
        assert!(!b.check(many.iter().map(String::as_str), "prod", 1_000));
    }

    #[test]
    fn peer_urls() {
        assert!(valid_url("https://10.0.0.5:8443"));
        assert!(valid_url("https://kubehero-0.kubehero:8443/"));
        for bad in ["http://10.0.0.5:8443", "https://10.0.0.5", "https://10.0.0.5:8443/x", "10.0.0.5:8443"] {
            assert!(!valid_url(bad), "{bad}");
        }
        assert_eq!(host_of("https://[::1]:8443").as_deref(), Some("::1"));
    }
}
