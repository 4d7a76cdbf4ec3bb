//! Backups in the object store (`storage.backend = "s3"`): `docket backup push DIR` copies
//! each tenant's backup directory to `<prefix>/backups/<tenant id>/…` in the bucket, and
//! `docket backup pull DIR` brings it back for `verify` or `restore`.
//!
//! Only what the other side lacks (or holds at another size) is copied: blobs are
//! content-addressed and a finished backup's files never change, so a push after each
//! `backup create` uploads only the new backup and its new blobs. Within each backup the
//! other files go first and `manifest.json` last, in both directions, so a backup without
//! its manifest is unfinished in the bucket exactly as on disk (and `.partial-*`
//! directories are never pushed). Downloads go to a temporary name and are renamed into
//! place once whole. Everything in a backup is sealed already; the bucket sees no plaintext.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::MANIFEST;
use crate::storage::object::{ObjectStorage, PART_SIZE, SINGLE_PUT_MAX};

/// What a push or a pull copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
    /// Files already on the other side.
    pub unchanged: u64,
    /// Where the bucket's side is (`s3://bucket/prefix/backups`).
    pub remote: String,
}

/// Files under `root` (relative paths with `/`) and their sizes, skipping `.partial-*`
/// directories and temporary files.
fn local_files(root: &Path) -> BTreeMap<String, u64> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, u64>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".partial-") || name.starts_with(".pull-") {
                continue;
            }
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path(), &rel, out),
                Ok(t) if t.is_file() => {
                    out.insert(rel, e.metadata().map(|m| m.len()).unwrap_or(0));
                }
                _ => {}
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

async fn remote_files(
    store: &Arc<dyn ObjectStore>,
    prefix: &ObjectPath,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let listed: Vec<object_store::ObjectMeta> = store
        .list(Some(prefix))
        .try_collect()
        .await
        .context("listing the bucket's backups")?;
    let strip = format!("{prefix}/");
    Ok(listed
        .into_iter()
        .filter_map(|m| {
            let rel = m.location.as_ref().strip_prefix(&strip)?.to_string();
            Some((rel, m.size))
        })
        .collect())
}

/// Copy order: every file but the manifests first, then the manifests.
fn in_order(files: &BTreeMap<String, u64>) -> Vec<(&String, &u64)> {
    let is_manifest = |rel: &str| rel.rsplit('/').next() == Some(MANIFEST);
    let mut out: Vec<_> = files.iter().filter(|(r, _)| !is_manifest(r)).collect();
    out.extend(files.iter().filter(|(r, _)| is_manifest(r)));
    out
}

/// The tenant directories of a backup directory (or only `only`).
fn tenant_dirs(dir: &Path, only: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && only.is_none_or(|o| o == n))
        .collect();
    out.sort();
    out
}

/// Uploads the backups under `dir` (each tenant's, or only tenant `only`'s).
pub async fn push(
    storage: &ObjectStorage,
    dir: &Path,
    only: Option<&str>,
) -> anyhow::Result<Copied> {
    let (store, area, shown) = storage.backup_area();
    let mut done = Copied {
        remote: shown,
        ..Default::default()
    };
    for tenant in tenant_dirs(dir, only) {
        let prefix = area.clone().join(tenant.as_str());
        let there = remote_files(&store, &prefix).await?;
        let here = local_files(&dir.join(&tenant));
        for (rel, size) in in_order(&here) {
            if there.get(rel) == Some(size) {
                done.unchanged += 1;
                continue;
            }
            let path = dir.join(&tenant).join(rel);
            upload(
                &store,
                &ObjectPath::from(format!("{prefix}/{rel}")),
                &path,
                *size,
            )
            .await
            .with_context(|| format!("uploading {}", path.display()))?;
            done.files += 1;
            done.bytes += size;
        }
    }
    Ok(done)
}

async fn upload(
    store: &Arc<dyn ObjectStore>,
    to: &ObjectPath,
    from: &Path,
    size: u64,
) -> anyhow::Result<()> {
    if size <= SINGLE_PUT_MAX {
        let bytes = tokio::fs::read(from).await?;
        store.put(to, bytes.into()).await?;
        return Ok(());
    }
    let mut file = tokio::fs::File::open(from).await?;
    let mut upload = WriteMultipart::new_with_chunk_size(store.put_multipart(to).await?, PART_SIZE);
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = upload.abort().await;
                return Err(e.into());
            }
        };
        if n == 0 {
            break;
        }
        upload.wait_for_capacity(2).await?;
        upload.write(&buf[..n]);
    }
    upload.finish().await?;
    Ok(())
}

/// Downloads the bucket's backups into `dir` (each tenant's, or only tenant `only`'s).
pub async fn pull(
    storage: &ObjectStorage,
    dir: &Path,
    only: Option<&str>,
) -> anyhow::Result<Copied> {
    let (store, area, shown) = storage.backup_area();
    let mut done = Copied {
        remote: shown,
        ..Default::default()
    };
    let all = remote_files(&store, &area).await?;
    let mut by_tenant: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (rel, size) in all {
        if let Some((tenant, rest)) = rel.split_once('/') {
            if only.is_none_or(|o| o == tenant) && safe_relative(rest) && safe_relative(tenant) {
                by_tenant
                    .entry(tenant.to_string())
                    .or_default()
                    .insert(rest.to_string(), size);
            }
        }
    }
    for (tenant, files) in by_tenant {
        let root = dir.join(&tenant);
        let here = local_files(&root);
        for (rel, size) in in_order(&files) {
            if here.get(rel) == Some(size) {
                done.unchanged += 1;
                continue;
            }
            let target = root.join(rel);
            download(
                &store,
                &ObjectPath::from(format!("{area}/{tenant}/{rel}")),
                &target,
            )
            .await
            .with_context(|| format!("downloading {}", target.display()))?;
            done.files += 1;
            done.bytes += size;
        }
    }
    Ok(done)
}

/// A relative path made of plain names only (no `..`, no empty or hidden parts).
fn safe_relative(rel: &str) -> bool {
    !rel.is_empty()
        && rel
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && !p.starts_with('.'))
}

async fn download(
    store: &Arc<dyn ObjectStore>,
    from: &ObjectPath,
    to: &Path,
) -> anyhow::Result<()> {
    let dir = to.parent().context("no parent directory")?;
    crate::tenancy::create_private_dir(dir)?;
    let tmp: PathBuf = dir.join(format!(".pull-{}", uuid::Uuid::new_v4().simple()));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        let mut stream = store.get(from).await?.into_stream();
        while let Some(chunk) = stream.try_next().await? {
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        tokio::fs::rename(&tmp, to).await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// The bucket's backups of tenant `id`: (objects, bytes).
pub async fn inventory(storage: &ObjectStorage, id: &str) -> anyhow::Result<(u64, u64)> {
    let (store, area, _) = storage.backup_area();
    let files = remote_files(&store, &area.clone().join(id)).await?;
    Ok((files.len() as u64, files.values().sum()))
}

/// Deletes the bucket's backups of tenant `id` (the purge); how many objects went.
pub async fn remove_tenant(storage: &ObjectStorage, id: &str) -> anyhow::Result<u64> {
    let (store, area, _) = storage.backup_area();
    let prefix = area.clone().join(id);
    let files = remote_files(&store, &prefix).await?;
    for rel in files.keys() {
        match store
            .delete(&ObjectPath::from(format!("{prefix}/{rel}")))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(files.len() as u64)
}
