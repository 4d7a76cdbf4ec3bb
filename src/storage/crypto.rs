//! AES-256-GCM: the key-encryption key (master key) wraps per-tenant secrets; each tenant's
//! data key encrypts its blobs. Every ciphertext carries a random 96-bit nonce and is bound by
//! AAD to what it belongs to, so a blob moved to another tenant or id fails to decrypt.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;
/// File/format marker so a future scheme can coexist.
const MAGIC: &[u8; 4] = b"DKT1";

#[derive(Debug, thiserror::Error)]
#[error("decryption failed: data was altered, truncated or belongs elsewhere")]
pub struct DecryptError;

/// A 256-bit AES-GCM key.
#[derive(Clone)]
pub struct Key(Aes256Gcm);

impl Key {
    pub fn from_bytes(bytes: &[u8; 32]) -> Key {
        Key(Aes256Gcm::new(bytes.into()))
    }

    /// A fresh random key, returned with its raw bytes (to be wrapped and stored).
    pub fn generate() -> (Key, Zeroizing<[u8; 32]>) {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(raw.as_mut());
        (Key::from_bytes(&raw), raw)
    }

    /// `MAGIC ‖ nonce ‖ ciphertext+tag`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        use aes_gcm::aead::AeadInPlace;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // One buffer, encrypted in place: blobs can be tens of megabytes.
        let head = MAGIC.len() + NONCE_LEN;
        let mut out = Vec::with_capacity(head + plaintext.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .encrypt_in_place_detached(&Nonce::from(nonce), aad, &mut out[head..])
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        out.extend_from_slice(&tag);
        out
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if sealed.len() < MAGIC.len() + NONCE_LEN + 16 || &sealed[..4] != MAGIC {
            return Err(DecryptError);
        }
        let (nonce, ct) = sealed[4..].split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| DecryptError)?;
        self.0
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad })
            .map_err(|_| DecryptError)
    }

    /// Unwraps a 32-byte secret sealed with [`Key::seal`].
    pub fn open_key(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<[u8; 32]>, DecryptError> {
        let raw = Zeroizing::new(self.open(sealed, aad)?);
        let arr: [u8; 32] = raw.as_slice().try_into().map_err(|_| DecryptError)?;
        Ok(Zeroizing::new(arr))
    }
}

/// AAD for a tenant's wrapped data key.
pub fn dek_aad(tenant_id: &str) -> Vec<u8> {
    format!("docket/dek/v1\0{tenant_id}").into_bytes()
}
/// AAD for a tenant's wrapped database password.
pub fn db_password_aad(tenant_id: &str) -> Vec<u8> {
    format!("docket/dbpw/v1\0{tenant_id}").into_bytes()
}
/// AAD for a tenant's sealed delegation key (service-account JSON).
pub fn delegation_aad(tenant_id: &str) -> Vec<u8> {
    format!("docket/delegation/v1\0{tenant_id}").into_bytes()
}
/// AAD for one blob: binds tenant and blob id.
pub fn blob_aad(tenant_id: &str, blob_id: &str) -> Vec<u8> {
    format!("docket/blob/v1\0{tenant_id}\0{blob_id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let (k, _) = Key::generate();
        let sealed = k.seal(b"hello", b"a");
        assert_eq!(k.open(&sealed, b"a").unwrap(), b"hello");
        assert!(k.open(&sealed, b"b").is_err(), "other AAD must fail");
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(k.open(&bad, b"a").is_err(), "tampered tag must fail");
        let (other, _) = Key::generate();
        assert!(other.open(&sealed, b"a").is_err(), "other key must fail");
        assert_ne!(k.seal(b"hello", b"a"), sealed, "nonces are random");
    }
}
