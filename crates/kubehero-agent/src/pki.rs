//! Keys, CSRs, certificate facts and the pinned trust of a first join. Signing and verification are rcgen,
//! x509-parser, ring and rustls; only the choices are KubeHero's.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// Why a key, CSR or certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PkiError(pub String);

fn pki<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> PkiError {
    move |e| PkiError(format!("{what}: {e}"))
}

/// A new ECDSA P-256 key (it never leaves the process that made it, except into the agent's own state).
pub fn new_key() -> Result<rcgen::KeyPair, PkiError> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(pki("generating a key"))
}

/// A CSR (PEM) for `key` whose subject CN is `cluster`.
pub fn csr_pem(key: &rcgen::KeyPair, cluster: &str) -> Result<String, PkiError> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, cluster);
    params.serialize_request(key).and_then(|r| r.pem()).map_err(pki("making the CSR"))
}

/// What KubeHero reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// The subject's common name.
    pub cn: Option<String>,
    /// Lowercase hex of the serial number.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// `sha256:<hex>` of the SubjectPublicKeyInfo (what `--ca-hash` names for a CA).
    pub spki_hash: String,
    /// A certificate for a cluster's API server calling the TokenReview webhook (URI SAN
    /// `urn:kubehero:webhook:<cluster>`), not for its agent: it may not hold a tunnel or renew.
    pub webhook: bool,
}

/// The URI SAN of an agent's certificate.
pub fn agent_urn(cluster: &str) -> String {
    format!("urn:kubehero:cluster:{cluster}")
}

/// The URI SAN of the certificate a cluster's API server presents to the TokenReview webhook.
pub fn webhook_urn(cluster: &str) -> String {
    format!("urn:kubehero:webhook:{cluster}")
}

/// Reads the facts of one DER certificate.
pub fn cert_facts(der: &[u8]) -> Result<CertFacts, PkiError> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).map_err(pki("reading a certificate"))?;
    let cn = cert.subject().iter_common_name().next().and_then(|c| c.as_str().ok()).map(str::to_string);
    let serial = cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
    let webhook = cn.as_deref().is_some_and(|cn| {
        let urn = webhook_urn(cn);
        cert.subject_alternative_name().ok().flatten().is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, x509_parser::extensions::GeneralName::URI(u) if *u == urn))
        })
    });
    Ok(CertFacts {
        webhook,
        cn,
        serial,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        spki_hash: spki_hash(cert.public_key().raw),
    })
}

/// `sha256:<hex>` of a DER SubjectPublicKeyInfo, as `kubeadm join --discovery-token-ca-cert-hash` prints it.
pub fn spki_hash(spki_der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, spki_der);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Every certificate in a PEM bundle, in order.
pub fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(pki("reading PEM certificates"))?;
    if certs.is_empty() {
        return Err(PkiError("no certificate in the PEM text".into()));
    }
    Ok(certs)
}

/// A certificate (DER) as PEM.
pub fn to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Trusts a server only if the chain it presents holds a CA whose public key hash is `pin` and the
/// server's certificate verifies against that CA (with the usual name and time checks): the first join,
/// before the agent has the CA itself, as `kubeadm join` trusts by `--discovery-token-ca-cert-hash`.
#[derive(Debug)]
pub struct PinnedCa {
    pin: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinnedCa {
    pub fn new(pin: &str) -> Result<PinnedCa, PkiError> {
        let pin = pin.trim().to_ascii_lowercase();
        let ok = pin.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return Err(PkiError(format!("--ca-hash {pin:?} is not sha256:<64 hex digits>")));
        }
        Ok(PinnedCa { pin, provider: Arc::new(rustls::crypto::ring::default_provider()) })
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned =
            intermediates.iter().find(|c| cert_facts(c).is_ok_and(|f| f.spki_hash == self.pin)).ok_or_else(|| {
                rustls::Error::General(format!(
                    "the control plane's certificate chain holds no CA whose hash is {} (check --ca-hash)",
                    self.pin
                ))
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pinned.clone().into_owned()).map_err(|e| rustls::Error::General(e.to_string()))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
