//! Per-tenant blob storage: content-addressed by SHA-256 within one tenant, sealed with the
//! tenant's data key, and durable before anything refers to it. Where the sealed blobs are
//! kept is a [`Store`]: a local directory ([`local`]: temp file → fsync → rename → fsync
//! directory) or an S3-compatible bucket ([`object`]: acknowledged by the store).

pub mod crypto;
pub mod local;
pub mod object;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use local::TMP_PREFIX;

use sha2::{Digest, Sha256};

use crypto::{blob_aad, Key};

/// AAD for a small secret sealed with a tenant's data key ([`TenantBlobs::seal_secret`]).
pub fn secret_aad(tenant_id: &str, purpose: &str) -> Vec<u8> {
    format!("docket:secret:{tenant_id}:{purpose}").into_bytes()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} is missing")]
    Missing(String),
    #[error("blob {0} failed integrity check: {1}")]
    Corrupt(String, crypto::DecryptError),
    #[error("blob {0} does not match its content address")]
    HashMismatch(String),
    #[error("blob i/o: {0}")]
    Io(#[from] io::Error),
    /// The object store failed or could not be reached (retried already).
    #[error("object store: {0}")]
    Unavailable(String),
}

impl BlobError {
    /// Whether the store (not the blob) is at fault: worth a 503 and a retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, BlobError::Unavailable(_))
    }
}

/// Blob ids are lowercase hex SHA-256 of the plaintext; nothing else becomes a name.
pub fn is_blob_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_id(id: &str) -> Result<(), BlobError> {
    match is_blob_id(id) {
        true => Ok(()),
        false => Err(io::Error::new(io::ErrorKind::InvalidInput, "bad blob id").into()),
    }
}

/// Something a sweep may remove: a half-written local temp file, or a blob.
#[derive(Debug, Clone)]
pub enum Leftover {
    Temp(PathBuf),
    Blob(String),
}

/// Where every tenant's blobs go (`storage.backend`).
#[derive(Clone, Debug)]
pub enum Storage {
    /// `<data dir>/tenants/<id>/blobs`.
    Local,
    Object(object::ObjectStorage),
}

impl Storage {
    /// Opens the configured storage (on the runtime: the object store blocks on it).
    pub fn from_config(c: &crate::config::StorageConfig) -> anyhow::Result<Storage> {
        Ok(match c.backend {
            crate::config::StorageBackend::Local => Storage::Local,
            crate::config::StorageBackend::S3 => {
                Storage::Object(object::ObjectStorage::from_config(&c.s3)?)
            }
        })
    }
}

/// Where one tenant's sealed blobs are kept. Its operations block: call them from
/// `spawn_blocking` (the object store's run on the runtime it was opened on).
#[derive(Clone, Debug)]
pub enum Store {
    Local(local::LocalBlobs),
    Object(object::ObjectBlobs),
}

impl Store {
    /// The sealed size of a blob in bytes, or `None` when it is not there.
    pub fn sealed_len(&self, id: &str) -> Result<Option<u64>, BlobError> {
        check_id(id)?;
        match self {
            Store::Local(l) => Ok(l.sealed_len(id)),
            Store::Object(o) => o.sealed_len(id),
        }
    }

    /// The sealed bytes of a blob, as stored (never decrypted).
    pub fn read_sealed(&self, id: &str) -> Result<Vec<u8>, BlobError> {
        check_id(id)?;
        match self {
            Store::Local(l) => l.read_sealed(id),
            Store::Object(o) => o.read_sealed(id),
        }
    }

    /// Writes a blob of `sealed_len` bytes that `write` produces, durably: it returns only
    /// once the store holds the whole blob (a local file fsynced and renamed into place, its
    /// directory fsynced; an object acknowledged). Nothing partial is ever visible.
    pub fn write_sealed(
        &self,
        id: &str,
        sealed_len: u64,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), BlobError> {
        check_id(id)?;
        match self {
            Store::Local(l) => l.write_sealed(id, write),
            Store::Object(o) => o.write_sealed(id, sealed_len, write),
        }
    }

    /// Whether a stored blob whose size passes `intact` can be reused as it is. A local
    /// blob is refreshed (so a sweep elsewhere leaves it) and its entry made durable again;
    /// an object cannot be refreshed in place, so it is never reused but written again.
    fn reuse(&self, id: &str, intact: impl Fn(u64) -> bool) -> Result<bool, BlobError> {
        match self {
            Store::Local(l) => l.reuse(id, intact),
            Store::Object(_) => Ok(false),
        }
    }

    /// Removes a blob; `false` when it was not there.
    pub fn delete(&self, id: &str) -> Result<bool, BlobError> {
        check_id(id)?;
        match self {
            Store::Local(l) => l.delete(id),
            Store::Object(o) => o.delete(id),
        }
    }

    /// Temp files and blobs last written before `cutoff`.
    pub fn list_old(&self, cutoff: SystemTime) -> Result<Vec<Leftover>, BlobError> {
        match self {
            Store::Local(l) => l.list_old(cutoff),
            Store::Object(o) => o.list_old(cutoff),
        }
    }

    /// Removes `what` if it is still older than `cutoff` (looked at again: a filing
    /// elsewhere may have written it since the listing); whether it was removed.
    pub fn remove_if_older(&self, what: &Leftover, cutoff: SystemTime) -> Result<bool, BlobError> {
        match self {
            Store::Local(l) => l.remove_if_older(what, cutoff),
            Store::Object(o) => o.remove_if_older(what, cutoff),
        }
    }

    /// How many files (blobs and temp files) this tenant's store holds, and their total size
    /// in bytes.
    pub fn inventory(&self) -> Result<(u64, u64), BlobError> {
        match self {
            Store::Local(l) => l.inventory(),
            Store::Object(o) => o.inventory(),
        }
    }

    /// Removes everything in this tenant's store (the purge); how many files went.
    pub fn remove_all(&self) -> Result<u64, BlobError> {
        match self {
            Store::Local(l) => l.remove_all(),
            Store::Object(o) => o.remove_all(),
        }
    }

    /// The directory (local) or `s3://bucket/prefix` (object) of this tenant's blobs.
    pub fn describe(&self) -> String {
        match self {
            Store::Local(l) => l.root().display().to_string(),
            Store::Object(o) => o.describe(),
        }
    }

    /// The local directory, for a local store.
    pub fn local_root(&self) -> Option<&Path> {
        match self {
            Store::Local(l) => Some(l.root()),
            Store::Object(_) => None,
        }
    }
}

/// One tenant's blob store: a directory of its own and the tenant's data key.
#[derive(Clone)]
pub struct TenantBlobs {
    tenant_id: String,
    store: Store,
    key: Key,
}

impl TenantBlobs {
    pub fn new(tenant_id: &str, store: Store, key: Key) -> Self {
        TenantBlobs {
            tenant_id: tenant_id.to_string(),
            store,
            key,
        }
    }

    /// Where the sealed blobs are kept.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The local blob directory. Panics on an object store (tests of local files only).
    pub fn root(&self) -> &Path {
        self.store
            .local_root()
            .expect("a local blob store (this tenant's blobs are in an object store)")
    }

    /// Seals a small secret (e.g. a TOTP seed) with the tenant's data key; the AAD binds the
    /// tenant and `purpose` (e.g. `totp:<user id>`), so a sealed value cannot be moved.
    pub fn seal_secret(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        self.key
            .seal(plaintext, &secret_aad(&self.tenant_id, purpose))
    }

    pub fn open_secret(
        &self,
        purpose: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, crypto::DecryptError> {
        self.key.open(sealed, &secret_aad(&self.tenant_id, purpose))
    }

    /// The size of a blob's sealed form in bytes, if it is there.
    pub fn sealed_len(&self, blob_id: &str) -> Result<Option<u64>, BlobError> {
        self.store.sealed_len(blob_id)
    }

    pub fn exists(&self, blob_id: &str) -> Result<bool, BlobError> {
        Ok(self.sealed_len(blob_id)?.is_some())
    }

    /// Stores `plaintext` under its SHA-256 and returns the id. Blocking: call from
    /// `spawn_blocking`. Returns only once the blob is durable ([`Store::write_sealed`]).
    /// A stored blob whose size cannot be this content's, sealed (cut short, or grown), is
    /// damage: it is written again rather than trusted.
    pub fn put(&self, plaintext: &[u8]) -> Result<String, BlobError> {
        let id = sha256_hex(plaintext);
        let (segmented, whole) = Key::sealed_lens(plaintext.len() as u64);
        if self
            .store
            .reuse(&id, |len| len == segmented || len == whole)?
        {
            return Ok(id);
        }
        let aad = blob_aad(&self.tenant_id, &id);
        // Sealed segment by segment straight into the store: no copy of the blob.
        self.store.write_sealed(&id, segmented, &mut |out| {
            self.key.seal_segmented(plaintext, &aad, &mut &mut *out)
        })?;
        crate::metrics::global().blob_written(segmented);
        Ok(id)
    }

    /// Reads and decrypts a blob, checking it against its content address.
    pub fn get(&self, blob_id: &str) -> Result<Vec<u8>, BlobError> {
        let sealed = self.store.read_sealed(blob_id)?;
        let plain = self
            .key
            .open(&sealed, &blob_aad(&self.tenant_id, blob_id))
            .map_err(|e| BlobError::Corrupt(blob_id.to_string(), e))?;
        if sha256_hex(&plain) != blob_id {
            return Err(BlobError::HashMismatch(blob_id.to_string()));
        }
        Ok(plain)
    }
}
