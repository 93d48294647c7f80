//! The image pipeline: importing archives, for `soniclet image import` and for the archives a
//! switch image carries (`paths.images`, imported when the daemon first sees them), and
//! release manifests (`release`).
//!
//! Every archive is verified and staged before anything reaches the runtime
//! ([`crate::runtime::archive`]), so a corrupt file changes nothing. Preloading remembers what
//! it imported (file name, size and modification time) in the state directory, written
//! atomically, so a boot imports only new or changed archives.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::runtime::{archive, ContainerRuntime, ImageInfo, RuntimeError};
use crate::state::fsutil::atomic_write;

pub mod release;

/// Which archives are in this image's containerd store: never carried to another OS image,
/// whose store starts empty.
pub const PRELOADED_FILE: &str = "preloaded-images.json";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The archive was refused; nothing was imported from it.
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error("cannot store the images of {} in containerd", path.display())]
    Runtime {
        path: PathBuf,
        #[source]
        source: RuntimeError,
    },
    #[error("verifying {} was interrupted", path.display())]
    Interrupted { path: PathBuf },
}

/// Verifies, stages and imports one archive.
pub async fn import_archive<R: ContainerRuntime>(
    runtime: &R,
    staging_dir: &Path,
    path: &Path,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<Vec<ImageInfo>, ImportError> {
    let staged = stage_archive(staging_dir, path, progress).await?;
    import_staged(runtime, &staged, progress).await
}

/// Verifies one archive and stages its blobs; nothing reaches the runtime.
pub async fn stage_archive(
    staging_dir: &Path,
    path: &Path,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<archive::StagedArchive, ImportError> {
    progress(format!("{}: verifying", path.display()));
    let (source, staging) = (path.to_owned(), staging_dir.to_owned());
    Ok(tokio::task::spawn_blocking(move || archive::stage(&source, &staging))
        .await
        .map_err(|_| ImportError::Interrupted { path: path.to_owned() })??)
}

/// Imports a verified archive's images.
pub async fn import_staged<R: ContainerRuntime>(
    runtime: &R,
    staged: &archive::StagedArchive,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<Vec<ImageInfo>, ImportError> {
    runtime
        .import(staged, progress)
        .await
        .map_err(|source| ImportError::Runtime { path: staged.source.clone(), source })
}

/// What preloading imported: archive file name to `<size>:<mtime>`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Preloaded {
    archives: BTreeMap<String, String>,
}

fn fingerprint(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos();
    Some(format!("{}:{mtime}", meta.len()))
}

/// Imports the archives of `dir` that are new or changed since they were last imported;
/// returns how many images were imported. Failures are logged and retried next time.
pub async fn preload<R: ContainerRuntime>(
    runtime: &R,
    dir: &Path,
    state_dir: &Path,
    lock: &tokio::sync::Mutex<()>,
) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut archives: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n.to_string_lossy().contains(".tar")))
        .collect();
    archives.sort();
    let record_path = state_dir.join(PRELOADED_FILE);
    let mut record: Preloaded = match std::fs::read(&record_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %record_path.display(), error = %e, "unreadable; importing every preload archive again");
            Preloaded::default()
        }),
        Err(_) => Preloaded::default(),
    };
    let _guard = lock.lock().await;
    let staging = state_dir.join("staging");
    let mut imported = 0;
    for path in archives {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(print) = fingerprint(&path) else { continue };
        if record.archives.get(&name) == Some(&print) {
            continue;
        }
        let progress = |line: String| tracing::debug!("{line}");
        match import_archive(runtime, &staging, &path, &progress).await {
            Ok(images) => {
                for image in &images {
                    tracing::info!(image = %image.name, digest = %image.digest, archive = %path.display(), "preloaded image");
                }
                imported += images.len();
                record.archives.insert(name, print);
                let bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
                if let Err(e) = atomic_write(&record_path, &bytes) {
                    tracing::warn!(file = %record_path.display(), error = %e, "cannot record the preload");
                }
            }
            Err(e) => tracing::error!(archive = %path.display(), error = %e, "cannot preload image archive"),
        }
    }
    imported
}
