//! HTTPS with rustls (ring provider): load the PEM chain and key, accept TLS connections, serve the router
//! over HTTP/1.1 or HTTP/2 (ALPN) with graceful shutdown.

use crate::config::TlsFiles;
use crate::{stopped, StartError};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::Service;

/// Builds the acceptor from the configured files.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, StartError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StartError::Tls(format!("KUBEHERO_TLS_CERT {}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!("KUBEHERO_TLS_CERT {}: no certificate in the file", files.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| StartError::Tls(format!("KUBEHERO_TLS_KEY {}: {e}", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(format!("the certificate and key do not form a usable pair: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Accept loop. Handshakes run in their own tasks (bounded by a timeout) so a slow client cannot stall
/// others.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, router: Router, mut stop: watch::Receiver<bool>) {
    let make = router.into_make_service_with_connect_info::<SocketAddr>();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let acceptor = acceptor.clone();
        let mut make = make.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                return;
            };
            let Ok(svc) = make.call(peer).await;
            let hyper_svc = hyper::service::service_fn(move |req| {
                let mut svc = svc.clone();
                async move { svc.call(req).await }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), hyper_svc)
                .await;
        });
    }
}
