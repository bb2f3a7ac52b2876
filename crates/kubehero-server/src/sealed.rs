//! Private keys kept in the store, sealed: ChaCha20-Poly1305 under a key derived from `AUDIT_HMAC_KEY` (one
//! label per purpose), so every replica can open them and the database alone never reveals them. The sealed
//! form is `<audit key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`; a key sealed under an audit key id that is
//! no longer loaded says which id to keep.

use base64::Engine;

/// Why a key could not be sealed or opened (never holding the key itself).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SealError(pub String);

fn aead(key: &[u8]) -> Result<ring::aead::LessSafeKey, SealError> {
    let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key)
        .map_err(|_| SealError("the sealing key has the wrong length".into()))?;
    Ok(ring::aead::LessSafeKey::new(unbound))
}

/// Seals `plain` under the current audit key, derived with `label`.
pub fn seal(keys: &kubehero_audit::HmacKeys, label: &[u8], plain: &str) -> Result<String, SealError> {
    let aead = aead(&keys.derive(label))?;
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&kubehero_identity::credential::random_bytes(12).map_err(|e| SealError(e.to_string()))?);
    let mut data = plain.as_bytes().to_vec();
    aead.seal_in_place_append_tag(ring::aead::Nonce::assume_unique_for_key(nonce), ring::aead::Aad::empty(), &mut data)
        .map_err(|_| SealError("sealing failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Ok(format!("{}:{}", keys.current_id(), base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)))
}

/// Opens what [`seal`] made with the same `label`; `what` names the key in errors.
pub fn open(keys: &kubehero_audit::HmacKeys, label: &[u8], sealed: &str, what: &str) -> Result<String, SealError> {
    let cannot = |why: &str| SealError(format!("{what} cannot be opened: {why}"));
    let (kid, b64) = sealed.split_once(':').ok_or_else(|| cannot("it is not in the sealed form"))?;
    let k = keys.derive_with(kid, label).ok_or_else(|| {
        cannot(&format!(
            "it was sealed under AUDIT_HMAC_KEY id {kid:?}, which is not loaded. Fix: keep that key in AUDIT_HMAC_KEY"
        ))
    })?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64).map_err(|_| cannot("not base64"))?;
    if raw.len() < 12 + 16 {
        return Err(cannot("too short"));
    }
    let (nonce, data) = raw.split_at(12);
    let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| cannot("nonce"))?;
    let mut data = data.to_vec();
    let plain = aead(&k)?
        .open_in_place(nonce, ring::aead::Aad::empty(), &mut data)
        .map_err(|_| cannot("it was changed or sealed under another key"))?;
    String::from_utf8(plain.to_vec()).map_err(|_| cannot("not text"))
}
