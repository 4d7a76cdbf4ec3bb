//! AES-256-GCM: the key-encryption key (master key) wraps per-tenant secrets; each tenant's
//! data key encrypts its blobs. Every ciphertext carries a random nonce and is bound by AAD
//! to what it belongs to, so a blob moved to another tenant or id fails to decrypt.
//!
//! Two formats, told apart by their first four bytes:
//! - `DKT1 ‖ nonce (12) ‖ ciphertext ‖ tag (16)`: one AES-256-GCM message. Secrets (wrapped
//!   keys, TOTP seeds) and blobs written before segmented sealing.
//! - `DKT2 ‖ nonce prefix (7) ‖ segments`: blobs. The STREAM construction (Hoang, Reyhanitabar,
//!   Rogaway and Vizár, "Online Authenticated-Encryption and its Nonce-Reuse
//!   Misuse-Resistance", <https://eprint.iacr.org/2015/189>) as the `aead` crate's
//!   `StreamBE32` builds it: each segment is [`SEGMENT`] bytes of plaintext (the last one
//!   fewer, possibly none) sealed with AES-256-GCM under the prefix, a 32-bit big-endian
//!   segment counter and a last-segment flag, so reordered, dropped or appended segments fail
//!   to decrypt. Sealing needs one segment of memory, not a copy of the whole blob.

use std::io::{self, Write};

use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;
/// Format marker of one whole AES-GCM message.
const MAGIC: &[u8; 4] = b"DKT1";
/// Format marker of a segmented (STREAM) blob.
const MAGIC_STREAM: &[u8; 4] = b"DKT2";
/// STREAM's nonce prefix: the 12-byte GCM nonce less STREAM's 5 bytes of counter and flag.
const PREFIX_LEN: usize = 7;
const TAG_LEN: usize = 16;
/// Plaintext bytes per STREAM segment (64 KiB).
pub const SEGMENT: usize = 64 * 1024;

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

    /// Seals `plaintext` segment by segment into `out` in the `DKT2` format (module docs).
    /// Errors: only `out`'s.
    pub fn seal_segmented(
        &self,
        plaintext: &[u8],
        aad: &[u8],
        out: &mut impl Write,
    ) -> io::Result<()> {
        let mut prefix = [0u8; PREFIX_LEN];
        rand::rngs::OsRng.fill_bytes(&mut prefix);
        out.write_all(MAGIC_STREAM)?;
        out.write_all(&prefix)?;
        let mut enc = EncryptorBE32::from_aead(self.0.clone(), (&prefix).into());
        let mut buf = Vec::with_capacity(SEGMENT.min(plaintext.len()) + TAG_LEN);
        let mut segments = plaintext.chunks(SEGMENT).peekable();
        // An empty plaintext is one empty last segment.
        let overflow = |_| io::Error::other("a blob of more than 2^32 segments");
        loop {
            buf.clear();
            buf.extend_from_slice(segments.next().unwrap_or(&[]));
            if segments.peek().is_none() {
                enc.encrypt_last_in_place(aad, &mut buf).map_err(overflow)?;
                return out.write_all(&buf);
            }
            enc.encrypt_next_in_place(aad, &mut buf).map_err(overflow)?;
            out.write_all(&buf)?;
        }
    }

    /// The size of `plaintext_len` bytes sealed in either format: (`DKT2`, `DKT1`).
    pub fn sealed_lens(plaintext_len: u64) -> (u64, u64) {
        let segments = plaintext_len.div_ceil(SEGMENT as u64).max(1);
        let segmented =
            (MAGIC_STREAM.len() + PREFIX_LEN) as u64 + plaintext_len + segments * TAG_LEN as u64;
        let whole = (MAGIC.len() + NONCE_LEN + TAG_LEN) as u64 + plaintext_len;
        (segmented, whole)
    }

    /// Opens either format (module docs). Errors: wrong key or AAD, or altered, truncated
    /// or extended data.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, DecryptError> {
        match sealed.get(..4) {
            Some(m) if m == MAGIC_STREAM => self.open_segmented(&sealed[4..], aad),
            _ => self.open_whole(sealed, aad),
        }
    }

    fn open_segmented(&self, body: &[u8], aad: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if body.len() < PREFIX_LEN + TAG_LEN {
            return Err(DecryptError);
        }
        let (prefix, mut rest) = body.split_at(PREFIX_LEN);
        let prefix: [u8; PREFIX_LEN] = prefix.try_into().map_err(|_| DecryptError)?;
        let mut dec = DecryptorBE32::from_aead(self.0.clone(), (&prefix).into());
        let mut out = Vec::with_capacity(rest.len());
        let mut buf = Vec::with_capacity(SEGMENT.min(rest.len()) + TAG_LEN);
        // Every segment but the last is exactly SEGMENT + TAG_LEN bytes.
        while rest.len() > SEGMENT + TAG_LEN {
            let (segment, tail) = rest.split_at(SEGMENT + TAG_LEN);
            buf.clear();
            buf.extend_from_slice(segment);
            dec.decrypt_next_in_place(aad, &mut buf)
                .map_err(|_| DecryptError)?;
            out.extend_from_slice(&buf);
            rest = tail;
        }
        buf.clear();
        buf.extend_from_slice(rest);
        dec.decrypt_last_in_place(aad, &mut buf)
            .map_err(|_| DecryptError)?;
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn open_whole(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, DecryptError> {
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
/// AAD for one sealed part of a backup (`data-key`, `tenant`, `database`): binds the
/// tenant, the backup and the part, so no part can be swapped for another's.
pub fn backup_aad(tenant_id: &str, backup_id: &str, part: &str) -> Vec<u8> {
    format!("docket/backup/v1\0{tenant_id}\0{backup_id}\0{part}").into_bytes()
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

    fn segmented(k: &Key, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        k.seal_segmented(plain, aad, &mut out).unwrap();
        out
    }

    #[test]
    fn segmented_round_trip_at_every_boundary() {
        let (k, _) = Key::generate();
        for len in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            3 * SEGMENT,
            3 * SEGMENT + 5,
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let sealed = segmented(&k, &plain, b"a");
            assert_eq!(&sealed[..4], b"DKT2");
            let segments = len.div_ceil(SEGMENT).max(1);
            assert_eq!(
                sealed.len(),
                4 + PREFIX_LEN + len + segments * TAG_LEN,
                "len {len}"
            );
            let (segmented_len, whole_len) = Key::sealed_lens(len as u64);
            assert_eq!(segmented_len, sealed.len() as u64);
            assert_eq!(whole_len, k.seal(&plain, b"a").len() as u64);
            assert_eq!(k.open(&sealed, b"a").unwrap(), plain, "len {len}");
            assert!(k.open(&sealed, b"b").is_err(), "other AAD, len {len}");
        }
    }

    #[test]
    fn segmented_blobs_refuse_truncation_reordering_and_extension() {
        let (k, _) = Key::generate();
        let plain: Vec<u8> = (0..3 * SEGMENT + 100).map(|i| i as u8).collect();
        let sealed = segmented(&k, &plain, b"a");
        let seg = SEGMENT + TAG_LEN;
        let head = 4 + PREFIX_LEN;
        // Dropping the last segment: the new last one was not sealed as last.
        assert!(k.open(&sealed[..head + 3 * seg], b"a").is_err());
        // Dropping the first segment.
        let mut cut = sealed[..head].to_vec();
        cut.extend_from_slice(&sealed[head + seg..]);
        assert!(k.open(&cut, b"a").is_err());
        // Swapping the first two.
        let mut swapped = sealed[..head].to_vec();
        swapped.extend_from_slice(&sealed[head + seg..head + 2 * seg]);
        swapped.extend_from_slice(&sealed[head..head + seg]);
        swapped.extend_from_slice(&sealed[head + 2 * seg..]);
        assert!(k.open(&swapped, b"a").is_err());
        // Appending bytes, and flipping one in the middle.
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(k.open(&longer, b"a").is_err());
        let mut flipped = sealed.clone();
        flipped[head + seg + 10] ^= 1;
        assert!(k.open(&flipped, b"a").is_err());
        assert!(k.open(&sealed[..head + 3], b"a").is_err());
        // The whole-message format still opens.
        assert_eq!(k.open(&k.seal(b"old", b"a"), b"a").unwrap(), b"old");
    }
}
