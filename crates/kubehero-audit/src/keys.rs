//! The keys of the audit log.
//!
//! - HMAC keys chain the rows. `AUDIT_HMAC_KEY` is the current one; earlier keys stay listed for verification
//!   so that rows written before a rotation still verify. Each row names its key by a key id derived from it.
//! - An Ed25519 key signs checkpoints. It is a different secret from the HMAC key on purpose: whoever holds
//!   the HMAC key could re-chain a rewritten history, but cannot sign a checkpoint the verifier trusts.

use crate::hex;
use ring::hmac;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use std::collections::HashMap;

/// Minimum length of an HMAC key, in bytes (the configuration checks it too).
pub const MIN_HMAC_KEY_LEN: usize = 32;

/// The id a row records for its HMAC key: the first 16 hex chars of SHA-256 over a label and the key. It
/// identifies the key without revealing anything usable about it.
pub fn key_id(secret: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"kubehero-audit-key-id\0");
    ctx.update(secret);
    hex::encode(ctx.finish().as_ref())[..16].to_string()
}

/// HMAC keys by id, and which one seals new rows.
pub struct HmacKeys {
    current: String,
    keys: HashMap<String, hmac::Key>,
}

impl std::fmt::Debug for HmacKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("HmacKeys").field("current", &self.current).field("ids", &ids).finish()
    }
}

impl HmacKeys {
    /// `current` seals new rows; `previous` only verify. Keys shorter than [`MIN_HMAC_KEY_LEN`] are refused.
    pub fn new(current: &[u8], previous: &[&[u8]]) -> Result<HmacKeys, String> {
        let mut keys = HashMap::new();
        for k in std::iter::once(&current).chain(previous.iter()) {
            if k.len() < MIN_HMAC_KEY_LEN {
                return Err(format!("an audit HMAC key is {} bytes; at least {MIN_HMAC_KEY_LEN} are needed", k.len()));
            }
            keys.insert(key_id(k), hmac::Key::new(hmac::HMAC_SHA256, k));
        }
        Ok(HmacKeys { current: key_id(current), keys })
    }

    /// A 32-byte key for another purpose, derived from the current key: `HMAC-SHA256(key, label)`. Replicas
    /// that share `AUDIT_HMAC_KEY` derive the same one.
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Some(k) = self.keys.get(&self.current) {
            out.copy_from_slice(hmac::sign(k, label).as_ref());
        }
        out
    }

    /// [`HmacKeys::derive`] with the key named `id` (`None` if no such key is loaded): opens what was sealed
    /// under a key that is no longer the current one.
    pub fn derive_with(&self, id: &str, label: &[u8]) -> Option<[u8; 32]> {
        let k = self.keys.get(id)?;
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(k, label).as_ref());
        Some(out)
    }

    /// [`HmacKeys::derive`] under every loaded key, the current one first: what a replica still on the previous
    /// key derived during a rotation is recognised too.
    pub fn derive_all(&self, label: &[u8]) -> Vec<[u8; 32]> {
        let mut ids: Vec<&String> = self.keys.keys().filter(|id| **id != self.current).collect();
        ids.sort();
        std::iter::once(&self.current).chain(ids).filter_map(|id| self.derive_with(id, label)).collect()
    }

    /// The id of the key that seals new rows.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Option<&hmac::Key> {
        self.keys.get(id)
    }

    pub(crate) fn current(&self) -> Option<&hmac::Key> {
        self.keys.get(&self.current)
    }
}

/// The checkpoint signing key (Ed25519, PKCS#8).
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public_hex: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("public_key", &self.public_hex).finish()
    }
}

impl SigningKey {
    /// Loads a PKCS#8 v1/v2 Ed25519 key.
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, String> {
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
        let public_hex = hex::encode(pair.public_key().as_ref());
        Ok(SigningKey { pair, public_hex })
    }

    /// A fresh key, returned with its PKCS#8 encoding so the caller can persist it.
    pub fn generate() -> Result<(SigningKey, Vec<u8>), String> {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| "no randomness".to_string())?;
        let key = SigningKey::from_pkcs8(der.as_ref())?;
        Ok((key, der.as_ref().to_vec()))
    }

    /// The public key, lowercase hex: what verifiers pin.
    pub fn public_hex(&self) -> &str {
        &self.public_hex
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> String {
        hex::encode(self.pair.sign(msg).as_ref())
    }
}

/// Checks an Ed25519 signature given hex public key and signature.
pub(crate) fn verify_signature(public_hex: &str, msg: &[u8], signature_hex: &str) -> bool {
    match (hex::decode(public_hex), hex::decode(signature_hex)) {
        (Some(pk), Some(sig)) => UnparsedPublicKey::new(&ED25519, pk).verify(msg, &sig).is_ok(),
        _ => false,
    }
}
