//! Sealed blobs in an S3-compatible bucket through the `object_store` crate: one object per
//! blob, `<prefix>/tenants/<tenant id>/blobs/<aa>/<sha-256>`. Blobs are sealed before they
//! leave docket, so the store never sees plaintext.
//!
//! Durability: a write returns once the store has acknowledged the whole object (a single
//! `PutObject`, or for blobs over [`SINGLE_PUT_MAX`] a multipart upload of [`PART_SIZE`]
//! parts completed by `CompleteMultipartUpload`); S3 makes an object visible only whole.
//! A failed multipart upload is aborted; one cut off by a crash is left to the bucket's
//! `AbortIncompleteMultipartUpload` lifecycle rule (README, "Object storage").
//!
//! The calls block on the runtime the store was opened on: use them from `spawn_blocking`.

use std::future::Future;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart,
};
use secrecy::ExposeSecret;
use tokio::runtime::Handle;

use super::{is_blob_id, BlobError, Leftover};
use crate::config::S3Config;

/// Blobs up to this many sealed bytes go up in one `PutObject`.
pub const SINGLE_PUT_MAX: u64 = 8 * 1024 * 1024;
/// Part size of multipart uploads (S3's smallest allowed part is 5 MiB).
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// The bucket, shared by every tenant; [`ObjectStorage::tenant`] gives one tenant's part.
#[derive(Clone, Debug)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: ObjectPath,
    handle: Handle,
}

impl ObjectStorage {
    /// Connects lazily (nothing is sent before the first blob). Call on the runtime.
    /// Errors: a bad endpoint URL, an unreadable secret file, incomplete credentials.
    pub fn from_config(c: &S3Config) -> anyhow::Result<ObjectStorage> {
        let bucket = c.bucket.clone().context("`storage.s3.bucket` is not set")?;
        // The store's HTTP client is built on rustls without a provider of its own: docket's
        // (ring) is the process default. Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_secs(c.timeout_secs);
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_region(c.region.as_deref().unwrap_or("us-east-1"))
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(c.allow_http)
                    .with_timeout(timeout)
                    .with_connect_timeout(Duration::from_secs(5)),
            )
            // A store that does not answer is reported within seconds, not minutes.
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(10),
            });
        if let Some(endpoint) = &c.endpoint {
            b = b.with_endpoint(endpoint);
        }
        if let Some(id) = &c.access_key_id {
            b = b.with_access_key_id(id);
        }
        if let Some(secret) = &c.secret_access_key {
            b = b.with_secret_access_key(secret.expose_secret());
        } else if let Some(file) = &c.secret_access_key_file {
            let secret = std::fs::read_to_string(file).with_context(|| {
                format!(
                    "invalid configuration: `storage.s3.secret_access_key_file`: cannot read {}",
                    file.display()
                )
            })?;
            if secret.trim().is_empty() {
                anyhow::bail!(
                    "invalid configuration: `storage.s3.secret_access_key_file` ({}) is empty",
                    file.display()
                );
            }
            b = b.with_secret_access_key(secret.trim());
        }
        let store = b.build().context("invalid `storage.s3` configuration")?;
        let prefix = c.prefix.as_deref().unwrap_or("").trim_matches('/');
        Ok(ObjectStorage {
            store: Arc::new(store),
            bucket,
            prefix: ObjectPath::from(prefix),
            handle: Handle::try_current().context("the object store needs a Tokio runtime")?,
        })
    }

    /// The store and the prefix backups go under (`<prefix>/backups`), for
    /// [`crate::backup::remote`].
    pub fn backup_area(&self) -> (Arc<dyn ObjectStore>, ObjectPath, String) {
        let prefix = self.prefix.clone().join("backups");
        let shown = format!("s3://{}/{}", self.bucket, prefix);
        (self.store.clone(), prefix, shown)
    }

    /// One tenant's blobs.
    pub fn tenant(&self, tenant_id: &str) -> ObjectBlobs {
        let prefix = self
            .prefix
            .clone()
            .join("tenants")
            .join(tenant_id)
            .join("blobs");
        ObjectBlobs {
            store: self.store.clone(),
            bucket: self.bucket.clone(),
            prefix,
            handle: self.handle.clone(),
        }
    }
}

/// One tenant's blobs in the bucket.
#[derive(Clone, Debug)]
pub struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: ObjectPath,
    handle: Handle,
}

fn unavailable(e: object_store::Error) -> BlobError {
    BlobError::Unavailable(e.to_string())
}

impl ObjectBlobs {
    fn block<F: Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }

    /// `id` has been checked by [`super::Store`]: it is 64 hex digits.
    fn location(&self, id: &str) -> ObjectPath {
        self.prefix.clone().join(&id[..2]).join(id)
    }

    pub fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn head(&self, id: &str) -> Result<Option<object_store::ObjectMeta>, BlobError> {
        match self.block(self.store.head(&self.location(id))) {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    pub(super) fn sealed_len(&self, id: &str) -> Result<Option<u64>, BlobError> {
        Ok(self.head(id)?.map(|m| m.size))
    }

    pub(super) fn read_sealed(&self, id: &str) -> Result<Vec<u8>, BlobError> {
        let read = async {
            let got = self.store.get(&self.location(id)).await?;
            got.bytes().await
        };
        match self.block(read) {
            Ok(bytes) => Ok(bytes.to_vec()),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::Missing(id.into())),
            Err(e) => Err(unavailable(e)),
        }
    }

    pub(super) fn write_sealed(
        &self,
        id: &str,
        sealed_len: u64,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), BlobError> {
        let location = self.location(id);
        if sealed_len <= SINGLE_PUT_MAX {
            let mut sealed = Vec::with_capacity(sealed_len as usize);
            write(&mut sealed)?;
            self.block(self.store.put(&location, sealed.into()))
                .map_err(unavailable)?;
            return Ok(());
        }
        let upload = self
            .block(self.store.put_multipart(&location))
            .map_err(unavailable)?;
        let mut parts = Parts {
            upload: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
            handle: &self.handle,
        };
        match write(&mut parts) {
            Ok(()) => {
                self.block(parts.upload.finish()).map_err(unavailable)?;
                Ok(())
            }
            Err(e) => {
                if let Err(abort) = self.block(parts.upload.abort()) {
                    tracing::warn!(error = %abort, "aborting a multipart upload failed");
                }
                // A part the store refused is the store's fault, not the blob's.
                match e.get_ref().is_some_and(|i| i.is::<object_store::Error>()) {
                    true => Err(BlobError::Unavailable(e.to_string())),
                    false => Err(e.into()),
                }
            }
        }
    }

    pub(super) fn delete(&self, id: &str) -> Result<bool, BlobError> {
        if self.head(id)?.is_none() {
            return Ok(false);
        }
        match self.block(self.store.delete(&self.location(id))) {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn list_all(&self) -> Result<Vec<object_store::ObjectMeta>, BlobError> {
        self.block(self.store.list(Some(&self.prefix)).try_collect())
            .map_err(unavailable)
    }

    pub(super) fn inventory(&self) -> Result<(u64, u64), BlobError> {
        let listed = self.list_all()?;
        Ok((listed.len() as u64, listed.iter().map(|m| m.size).sum()))
    }

    pub(super) fn remove_all(&self) -> Result<u64, BlobError> {
        let mut count = 0;
        for m in self.list_all()? {
            match self.block(self.store.delete(&m.location)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => count += 1,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(count)
    }

    pub(super) fn list_old(&self, cutoff: SystemTime) -> Result<Vec<Leftover>, BlobError> {
        let listed: Vec<object_store::ObjectMeta> = self
            .block(self.store.list(Some(&self.prefix)).try_collect())
            .map_err(unavailable)?;
        Ok(listed
            .into_iter()
            .filter(|m| SystemTime::from(m.last_modified) < cutoff)
            .filter_map(|m| m.location.filename().map(str::to_string))
            .filter(|name| is_blob_id(name))
            .map(Leftover::Blob)
            .collect())
    }

    pub(super) fn remove_if_older(
        &self,
        what: &Leftover,
        cutoff: SystemTime,
    ) -> Result<bool, BlobError> {
        let Leftover::Blob(id) = what else {
            return Ok(false);
        };
        match self.head(id)? {
            // One request more, not two: S3's DELETE succeeds whether or not it is there.
            Some(m) if SystemTime::from(m.last_modified) < cutoff => {
                self.block(self.store.delete(&self.location(id)))
                    .map_err(unavailable)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// The sealed bytes of one blob, cut into parts and uploaded as they fill.
struct Parts<'a> {
    upload: WriteMultipart,
    handle: &'a Handle,
}

impl Write for Parts<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.handle
            .block_on(self.upload.wait_for_capacity(PARTS_IN_FLIGHT))
            .map_err(io::Error::other)?;
        self.upload.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_or_empty_secret_file_stops_the_start() {
        let dir = std::env::temp_dir().join(format!("docket-s3-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = |file: &std::path::Path| S3Config {
            bucket: Some("docket".into()),
            access_key_id: Some("id".into()),
            secret_access_key_file: Some(file.to_path_buf()),
            ..Default::default()
        };
        let e = ObjectStorage::from_config(&config(&dir.join("absent"))).unwrap_err();
        assert!(format!("{e:#}").contains("cannot read"), "{e:#}");
        std::fs::write(dir.join("empty"), "\n").unwrap();
        let e = ObjectStorage::from_config(&config(&dir.join("empty"))).unwrap_err();
        assert!(format!("{e:#}").contains("is empty"), "{e:#}");
        std::fs::write(dir.join("secret"), "s3cr3t\n").unwrap();
        assert!(ObjectStorage::from_config(&config(&dir.join("secret"))).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
