//! Per-tenant blob storage: content-addressed by SHA-256 within one tenant, encrypted, and
//! written durably (temp file → fsync → rename → fsync directory) before anything refers to it.

pub mod crypto;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crypto::{blob_aad, Key};

fn secret_aad(tenant_id: &str, purpose: &str) -> Vec<u8> {
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
}

/// Names of blob files still being written (or left half-written by a crash).
pub const TMP_PREFIX: &str = ".tmp-";

/// Sets a file's modification time to now, if it exists.
fn touch(path: &Path) -> io::Result<()> {
    File::options()
        .append(true)
        .open(path)?
        .set_modified(std::time::SystemTime::now())
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o700)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// One tenant's blob store: a directory of its own and the tenant's data key.
#[derive(Clone)]
pub struct TenantBlobs {
    tenant_id: String,
    root: PathBuf,
    key: Key,
}

impl TenantBlobs {
    pub fn new(tenant_id: &str, root: PathBuf, key: Key) -> Self {
        TenantBlobs {
            tenant_id: tenant_id.to_string(),
            root,
            key,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
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

    /// Blob ids are lowercase hex SHA-256 of the plaintext; nothing else becomes a path.
    fn path_of(&self, blob_id: &str) -> io::Result<PathBuf> {
        if blob_id.len() != 64
            || !blob_id
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad blob id"));
        }
        Ok(self.root.join(&blob_id[..2]).join(blob_id))
    }

    /// The size of a blob's sealed file in bytes, if it is there.
    pub fn sealed_len(&self, blob_id: &str) -> Option<u64> {
        fs::metadata(self.path_of(blob_id).ok()?)
            .ok()
            .map(|m| m.len())
    }

    pub fn exists(&self, blob_id: &str) -> bool {
        self.path_of(blob_id).map(|p| p.exists()).unwrap_or(false)
    }

    /// Stores `plaintext` under its SHA-256 and returns the id. Blocking: call from
    /// `spawn_blocking`. Returns only once the file and its directory entry are durable.
    pub fn put(&self, plaintext: &[u8]) -> Result<String, BlobError> {
        let id = sha256_hex(plaintext);
        let path = self.path_of(&id)?;
        let dir = path.parent().expect("blob path has a parent");
        // Reused: fresh again, so a sweep in another process leaves it to this filing; and
        // its directory entry made durable again, since the put that created it may have
        // failed at exactly that step (a blob is only acknowledged once that fsync held).
        // A file whose size cannot be this content's, sealed (cut short, or grown), is damage:
        // it is written again, in place, rather than trusted.
        let (segmented, whole) = Key::sealed_lens(plaintext.len() as u64);
        let intact = |len| len == segmented || len == whole;
        if fs::metadata(&path).is_ok_and(|m| intact(m.len())) && touch(&path).is_ok() {
            File::open(dir)?.sync_all()?;
            return Ok(id);
        }
        let new_shard = !dir.exists();
        if new_shard {
            create_private_dir(&self.root)?;
            create_private_dir(dir)?;
        }
        let aad = blob_aad(&self.tenant_id, &id);
        let tmp = dir.join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let result = (|| -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            // Whatever the umask.
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            // Sealed segment by segment straight into the file: no copy of the blob.
            self.key.seal_segmented(plaintext, &aad, &mut f)?;
            f.sync_all()?;
            crate::metrics::global().blob_written(f.metadata()?.len());
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()?;
            // A shard directory created just now must itself be durable in the root.
            if new_shard {
                File::open(&self.root)?.sync_all()?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        Ok(id)
    }

    /// Reads and decrypts a blob, checking it against its content address.
    pub fn get(&self, blob_id: &str) -> Result<Vec<u8>, BlobError> {
        let path = self.path_of(blob_id)?;
        let sealed = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::Missing(blob_id.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
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
