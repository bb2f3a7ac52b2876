//! Trust for TLS sinks: the system's roots (`rustls-native-certs`) plus an optional PEM CA file.

use super::ForwardError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;

/// The certificates of a PEM file (at least one).
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ForwardError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| ForwardError::Config(format!("cannot read the CA file {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ForwardError::Config(format!("the CA file {} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ForwardError::Config(format!(
            "the CA file {} holds no CERTIFICATE block: give a PEM file with the CA that signed the sink's certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// A rustls client configuration trusting the system's roots and the certificates in `ca_file`.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ForwardError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for c in native.certs {
        let _ = roots.add(c);
    }
    if let Some(p) = ca_file {
        for c in read_ca_file(p)? {
            roots
                .add(c)
                .map_err(|e| ForwardError::Config(format!("a certificate in {} is unusable: {e}", p.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(ForwardError::Config(
            "no trusted CA certificates: install the system's CA bundle (ca-certificates) or pass --ca-file".into(),
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ForwardError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
