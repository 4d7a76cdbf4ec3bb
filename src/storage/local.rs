//! Sealed blobs in a local directory: `<root>/<aa>/<sha-256>`, written through a temp file
//! that is fsynced, renamed into place, and whose directory is fsynced, so a blob is either
//! whole and durable or not there.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{is_blob_id, BlobError, Leftover};

/// Names of blob files still being written (or left half-written by a crash).
pub const TMP_PREFIX: &str = ".tmp-";

/// One tenant's blob directory.
#[derive(Clone, Debug)]
pub struct LocalBlobs {
    root: PathBuf,
}

/// Sets a file's modification time to now, if it exists.
fn touch(path: &Path) -> io::Result<()> {
    File::options()
        .append(true)
        .open(path)?
        .set_modified(SystemTime::now())
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o700)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn older_than(path: &Path, cutoff: SystemTime) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t < cutoff)
}

impl LocalBlobs {
    pub fn new(root: PathBuf) -> Self {
        LocalBlobs { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `id` has been checked by [`super::Store`]: it is 64 hex digits.
    fn path_of(&self, id: &str) -> PathBuf {
        self.root.join(&id[..2]).join(id)
    }

    pub(super) fn sealed_len(&self, id: &str) -> Option<u64> {
        fs::metadata(self.path_of(id)).ok().map(|m| m.len())
    }

    pub(super) fn read_sealed(&self, id: &str) -> Result<Vec<u8>, BlobError> {
        match fs::read(self.path_of(id)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::Missing(id.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Reused: fresh again, so a sweep in another process leaves it to this filing; and its
    /// directory entry made durable again, since the write that created it may have failed
    /// at exactly that step (a blob is only acknowledged once that fsync held).
    pub(super) fn reuse(&self, id: &str, intact: impl Fn(u64) -> bool) -> Result<bool, BlobError> {
        let path = self.path_of(id);
        if fs::metadata(&path).is_ok_and(|m| intact(m.len())) && touch(&path).is_ok() {
            File::open(path.parent().expect("blob path has a parent"))?.sync_all()?;
            return Ok(true);
        }
        Ok(false)
    }

    pub(super) fn write_sealed(
        &self,
        id: &str,
        write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), BlobError> {
        let path = self.path_of(id);
        let dir = path.parent().expect("blob path has a parent");
        let new_shard = !dir.exists();
        if new_shard {
            create_private_dir(&self.root)?;
            create_private_dir(dir)?;
        }
        let tmp = dir.join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let result = (|| -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            // Whatever the umask.
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            write(&mut f)?;
            f.sync_all()?;
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
        Ok(result?)
    }

    pub(super) fn delete(&self, id: &str) -> Result<bool, BlobError> {
        match fs::remove_file(self.path_of(id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn inventory(&self) -> Result<(u64, u64), BlobError> {
        let (mut count, mut bytes) = (0, 0);
        for path in self.files()? {
            if let Ok(m) = fs::symlink_metadata(&path) {
                count += 1;
                bytes += m.len();
            }
        }
        Ok((count, bytes))
    }

    pub(super) fn remove_all(&self) -> Result<u64, BlobError> {
        let count = self.files()?.len() as u64;
        match fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(count),
        }
    }

    /// Every file in the shard directories.
    fn files(&self) -> Result<Vec<PathBuf>, BlobError> {
        let mut out = Vec::new();
        let shards = match fs::read_dir(&self.root) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for shard in shards {
            let shard = shard?;
            if shard.file_type()?.is_dir() {
                for entry in fs::read_dir(shard.path())? {
                    out.push(entry?.path());
                }
            }
        }
        Ok(out)
    }

    pub(super) fn list_old(&self, cutoff: SystemTime) -> Result<Vec<Leftover>, BlobError> {
        let mut out = Vec::new();
        let shards = match fs::read_dir(&self.root) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for shard in shards {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if !entry.file_type()?.is_file() || !older_than(&path, cutoff) {
                    continue;
                }
                if name.starts_with(TMP_PREFIX) {
                    out.push(Leftover::Temp(path));
                } else if is_blob_id(&name) {
                    out.push(Leftover::Blob(name));
                }
            }
        }
        Ok(out)
    }

    pub(super) fn remove_if_older(
        &self,
        what: &Leftover,
        cutoff: SystemTime,
    ) -> Result<bool, BlobError> {
        let path = match what {
            Leftover::Temp(p) => p.clone(),
            Leftover::Blob(id) => self.path_of(id),
        };
        if !older_than(&path, cutoff) {
            return Ok(false);
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
