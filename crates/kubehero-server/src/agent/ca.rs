//! The agent CA: signs agents' client certificates and this replica's agent-listener certificate, and tells
//! the listener which CAs to trust.
//!
//! Built in by default: a P-256 CA made on first start and kept in the store with its key sealed
//! (ChaCha20-Poly1305 under a key derived from `AUDIT_HMAC_KEY`), so every replica signs with the same CA. Or
//! files (`KUBEHERO_AGENT_CA_CERT`/`KUBEHERO_AGENT_CA_KEY`, e.g. from cert-manager), re-read when they change.
//! Rollover: every CA in the store (or every certificate in the CA file) is trusted; the newest signs. Agents
//! move to the new CA at their next renewal, and the renewal answer gives them the new bundle.

use kubehero_agent::pki::{self, CertFacts};
use kubehero_store::{AgentCa, Store, StoreError};
use parking_lot::RwLock;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::CertificateDer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// Why the CA could not be loaded, made or used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CaError(pub String);

fn ca_err<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl Fn(E) -> CaError {
    move |e| CaError(format!("{what}: {e}"))
}

/// The label the built-in CA's sealing key is derived under.
pub const SEAL_LABEL: &[u8] = b"kubehero-agent-ca-v1";
/// The id of the first built-in CA (fixed, so replicas starting together make only one).
const FIRST_CA_ID: &str = "builtin-1";

/// Where the CA comes from.
pub enum CaSource {
    /// In the store, sealed under keys derived from the audit HMAC keys.
    Store { keys: Arc<kubehero_audit::HmacKeys> },
    /// PEM files; the certificate file may hold several CAs (the first signs, all are trusted).
    Files { cert: PathBuf, key: PathBuf },
}

/// The signing CA and the trusted ones.
struct Loaded {
    issuer: rcgen::Issuer<'static, KeyPair>,
    /// Newest (the signer) first.
    trusted: Vec<CertificateDer<'static>>,
    bundle_pem: String,
    hash: String,
    /// File modification times when loaded from files.
    stamp: Option<(SystemTime, SystemTime)>,
    /// The store's CA rows (id and state) when built in: a refresh opens the sealed key only when they changed.
    rows: String,
}

/// An issued client certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub serial: String,
    pub not_after: i64,
}

pub struct Ca {
    source: CaSource,
    loaded: RwLock<Arc<Loaded>>,
}

impl Ca {
    /// Loads (or, built in, creates on first start) the CA.
    pub async fn load(source: CaSource, store: &dyn Store, now: i64) -> Result<Ca, CaError> {
        let loaded = match &source {
            CaSource::Store { keys } => load_store(keys, store, now).await?,
            CaSource::Files { cert, key } => load_files(cert, key)?,
        };
        Ok(Ca { source, loaded: RwLock::new(Arc::new(loaded)) })
    }

    /// Re-reads the CA files if they changed (built in: re-reads the store, for a rollover made by another
    /// replica). True when something changed.
    pub async fn refresh(&self, store: &dyn Store, now: i64) -> Result<bool, CaError> {
        let next = match &self.source {
            CaSource::Files { cert, key } => {
                let stamp = Some(stamps(cert, key)?);
                if stamp == self.loaded.read().stamp {
                    return Ok(false);
                }
                load_files(cert, key)?
            }
            CaSource::Store { keys } => {
                let cas = store.agent_cas().await.map_err(ca_err("reading the agent CA"))?;
                if rows_stamp(&cas) == self.loaded.read().rows {
                    return Ok(false);
                }
                load_store(keys, store, now).await?
            }
        };
        *self.loaded.write() = Arc::new(next);
        Ok(true)
    }

    /// A new built-in CA to stage (trusted and handed to agents at their next renewal, not yet signing): the
    /// first step of a rollover. `None` when the CA comes from files (rotate those instead).
    pub fn stage(&self, now: i64) -> Result<Option<AgentCa>, CaError> {
        let CaSource::Store { keys } = &self.source else {
            return Ok(None);
        };
        let (cert_pem, key) = new_ca(now)?;
        let facts = pki::pem_certs(&cert_pem).and_then(|c| pki::cert_facts(&c[0])).map_err(|e| CaError(e.0))?;
        let short = facts.spki_hash.strip_prefix("sha256:").and_then(|h| h.get(..8)).unwrap_or("0");
        let id = format!("builtin-{now}-{short}");
        Ok(Some(AgentCa {
            id,
            cert_pem,
            sealed_key: seal(keys, &key.serialize_pem())?,
            created_at: now,
            activated_at: None,
            retired_at: None,
        }))
    }

    /// Whether the CA is built in (in the store) rather than files.
    pub fn built_in(&self) -> bool {
        matches!(self.source, CaSource::Store { .. })
    }

    /// `sha256:…` of the signing CA's public key: what `--ca-hash` pins.
    pub fn hash(&self) -> String {
        self.loaded.read().hash.clone()
    }

    /// Every trusted CA, newest first (PEM).
    pub fn bundle_pem(&self) -> String {
        self.loaded.read().bundle_pem.clone()
    }

    /// Every trusted CA, newest first.
    pub fn trusted(&self) -> Vec<CertificateDer<'static>> {
        self.loaded.read().trusted.clone()
    }

    /// Signs a client certificate for `cluster` from a CSR: the CSR's signature must verify and its CN must be
    /// `cluster`; only its public key is taken. CN = the cluster, URI SAN `urn:kubehero:cluster:<name>`,
    /// client-auth only, valid from a minute ago for `ttl` seconds, a random 128-bit serial.
    pub fn issue(&self, csr_pem: &str, cluster: &str, ttl: i64, now: i64) -> Result<Issued, IssueError> {
        self.issue_for(csr_pem, cluster, &kubehero_agent::pki::agent_urn(cluster), ttl, now)
    }

    /// [`Ca::issue`] for the cluster's API server calling the TokenReview webhook: URI SAN
    /// `urn:kubehero:webhook:<name>` (such a certificate cannot hold a tunnel or renew).
    pub fn issue_webhook(&self, csr_pem: &str, cluster: &str, ttl: i64, now: i64) -> Result<Issued, IssueError> {
        self.issue_for(csr_pem, cluster, &kubehero_agent::pki::webhook_urn(cluster), ttl, now)
    }

    fn issue_for(&self, csr_pem: &str, cluster: &str, uri: &str, ttl: i64, now: i64) -> Result<Issued, IssueError> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| IssueError::BadCsr(format!("the CSR cannot be read or its signature is wrong: {e}")))?;
        let cn = csr.params.distinguished_name.get(&DnType::CommonName).map(dn_text);
        if cn.as_deref() != Some(cluster) {
            return Err(IssueError::WrongName(format!(
                "the CSR names {:?}, but this certificate can only be for cluster {cluster:?}",
                cn.unwrap_or_default()
            )));
        }
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| IssueError::Internal("the operating system gave no randomness".into()))?;
        serial[0] &= 0x7f;
        serial[0] |= 0x40;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cluster);
        params.subject_alt_names =
            vec![SanType::URI(uri.to_string().try_into().map_err(|e| IssueError::Internal(format!("{e}")))?)];
        params.not_before = unix(now - 60);
        params.not_after = unix(now + ttl);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        csr.params = params;
        let loaded = self.loaded.read().clone();
        let cert = csr.signed_by(&loaded.issuer).map_err(|e| IssueError::Internal(format!("signing: {e}")))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            serial: serial.iter().map(|b| format!("{b:02x}")).collect(),
            not_after: now + ttl,
        })
    }

    /// A serving certificate (and its key, PKCS#8 DER) for this replica's agent listener, for `names` (DNS
    /// names or IP addresses), valid a year. The chain sent is the certificate and the signing CA, so a
    /// joining agent finds the CA it pins.
    pub fn serving(&self, names: &[String], now: i64) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>), CaError> {
        let key = pki::new_key().map_err(|e| CaError(e.0))?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(ca_err("agent listener names"))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "kubehero agent listener");
        params.not_before = unix(now - 60);
        params.not_after = unix(now + 365 * 86400);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let loaded = self.loaded.read().clone();
        let cert = params.signed_by(&key, &loaded.issuer).map_err(ca_err("signing the listener certificate"))?;
        let mut chain = vec![cert.der().clone()];
        chain.push(loaded.trusted[0].clone());
        Ok((chain, key.serialize_der()))
    }
}

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("{0}")]
    BadCsr(String),
    #[error("{0}")]
    WrongName(String),
    #[error("{0}")]
    Internal(String),
}

fn dn_text(v: &rcgen::DnValue) -> String {
    match v {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

fn unix(t: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn stamps(cert: &std::path::Path, key: &std::path::Path) -> Result<(SystemTime, SystemTime), CaError> {
    let m = |p: &std::path::Path| {
        std::fs::metadata(p).and_then(|m| m.modified()).map_err(ca_err(format!("agent CA {}", p.display())))
    };
    Ok((m(cert)?, m(key)?))
}

/// Builds the signer and trust from PEM: `certs_pem` newest first, `key_pem` the first one's key.
fn loaded_from(certs_pem: &str, key_pem: &str, stamp: Option<(SystemTime, SystemTime)>) -> Result<Loaded, CaError> {
    let trusted = pki::pem_certs(certs_pem).map_err(|e| CaError(format!("agent CA certificate: {e}")))?;
    let key = KeyPair::from_pem(key_pem).map_err(ca_err("agent CA key"))?;
    let facts: CertFacts = pki::cert_facts(&trusted[0]).map_err(|e| CaError(e.0))?;
    let issuer = rcgen::Issuer::from_ca_cert_der(&trusted[0], key).map_err(ca_err("agent CA certificate"))?;
    let bundle_pem = trusted.iter().map(|c| pki::to_pem(c)).collect();
    Ok(Loaded { issuer, trusted, bundle_pem, hash: facts.spki_hash, stamp, rows: String::new() })
}

fn load_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Loaded, CaError> {
    let stamp = stamps(cert, key)?;
    let c = std::fs::read_to_string(cert).map_err(ca_err(format!("KUBEHERO_AGENT_CA_CERT {}", cert.display())))?;
    let k = std::fs::read_to_string(key).map_err(ca_err(format!("KUBEHERO_AGENT_CA_KEY {}", key.display())))?;
    loaded_from(&c, &k, Some(stamp))
}

/// A new self-signed CA, valid ten years.
fn new_ca(now: i64) -> Result<(String, KeyPair), CaError> {
    let key = pki::new_key().map_err(|e| CaError(e.0))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "KubeHero agent CA");
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = unix(now - 3600);
    params.not_after = unix(now + 10 * 365 * 86400);
    let cert = params.self_signed(&key).map_err(ca_err("making the agent CA"))?;
    Ok((cert.pem(), key))
}

fn seal(keys: &kubehero_audit::HmacKeys, key_pem: &str) -> Result<String, CaError> {
    crate::sealed::seal(keys, SEAL_LABEL, key_pem).map_err(|e| CaError(format!("the agent CA key: {e}")))
}

fn open(keys: &kubehero_audit::HmacKeys, sealed: &str, id: &str) -> Result<String, CaError> {
    crate::sealed::open(keys, SEAL_LABEL, sealed, &format!("the agent CA {id:?} key")).map_err(|e| CaError(e.0))
}

async fn load_store(keys: &kubehero_audit::HmacKeys, store: &dyn Store, now: i64) -> Result<Loaded, CaError> {
    let mut cas = store.agent_cas().await.map_err(ca_err("reading the agent CA"))?;
    if cas.is_empty() {
        let (cert_pem, key) = new_ca(now)?;
        let ca = AgentCa {
            id: FIRST_CA_ID.into(),
            cert_pem,
            sealed_key: seal(keys, &key.serialize_pem())?,
            created_at: now,
            activated_at: Some(now),
            retired_at: None,
        };
        match store.insert_agent_ca(&ca).await {
            Ok(()) => tracing::info!("created the built-in agent CA"),
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(CaError(format!("storing the agent CA: {e}"))),
        }
        cas = store.agent_cas().await.map_err(ca_err("reading the agent CA"))?;
    }
    let rows = rows_stamp(&cas);
    // Every CA that is not retired is trusted; the most recently activated one signs.
    cas.retain(|c| c.retired_at.is_none());
    cas.sort_by_key(|c| std::cmp::Reverse((c.activated_at, c.created_at)));
    let signer = cas
        .first()
        .filter(|c| c.activated_at.is_some())
        .ok_or_else(|| CaError("no active agent CA in the store".into()))?;
    let key_pem = open(keys, &signer.sealed_key, &signer.id)?;
    let certs: String = cas.iter().map(|c| c.cert_pem.as_str()).collect::<Vec<_>>().join("\n");
    Ok(Loaded { rows, ..loaded_from(&certs, &key_pem, None)? })
}

/// What identifies the store's CAs and their states.
fn rows_stamp(cas: &[AgentCa]) -> String {
    cas.iter().map(|c| format!("{}:{:?}:{:?};", c.id, c.activated_at, c.retired_at)).collect()
}
