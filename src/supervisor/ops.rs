//! The driver's operations: what one effect does in the world, over the ports. They decide
//! nothing; each ends in one event for the core.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::change::repository;
use super::event::{Failure, ImageSource, Prepared, StagedImage, StartError, StartFrom, Started, StopHow};
use super::ports::Health;
use super::types::{CommandError, ErrorKind};
use crate::error::chain;
use crate::images::{self, ImportError};
use crate::manifest::Service;
use crate::runtime::archive::{StagedArchive, StagedImage as ArchiveImage};
use crate::runtime::spec::{self, HostSettings};
use crate::runtime::{self, labels, ContainerRuntime, CreateContainer, ImageInfo, LogSink, RuntimeError};
use crate::state::store::ChangeJournal;

/// Progress lines of an operation, for whoever follows it.
pub(super) type Say<'a> = &'a (dyn Fn(String) + Send + Sync);

/// Creates and starts a service's container.
pub(super) async fn start<R: ContainerRuntime>(
    runtime: &R,
    host: &HostSettings,
    logs: &LogSink,
    service: &Service,
    generation: u64,
    from: StartFrom,
) -> Result<Started, StartError> {
    let id = service.name.to_string();
    if from.leftover {
        runtime.remove(&id).await.map_err(|e| StartError::Failed(chain(&e)))?;
    }
    let (image, spec_json, rootfs) = match from.prepared {
        Some(prepared) => (prepared.image, prepared.spec, Some(prepared.rootfs)),
        None => {
            let (image, spec_json) = resolve(runtime, host, service, &from.reference).await?;
            (image, spec_json, from.rootfs)
        }
    };
    let labels = BTreeMap::from([
        (labels::SERVICE.to_owned(), id.clone()),
        (labels::MANIFEST_DIGEST.to_owned(), spec::container_digest(service, host)),
        (labels::IMAGE_DIGEST.to_owned(), image.digest.clone()),
        (labels::GENERATION.to_owned(), generation.to_string()),
    ]);
    let image_digest = image.digest.clone();
    runtime
        .create(CreateContainer {
            id: id.clone(),
            image,
            spec: spec_json,
            labels,
            rootfs,
            systemd_cgroup: host.cgroups == spec::Cgroups::Systemd,
        })
        .await
        .map_err(|e| StartError::Failed(chain(&e)))?;
    match runtime.start(&id, logs).await {
        Ok(pid) => Ok(Started { pid, image_digest }),
        Err(e) => {
            let _ = runtime.remove(&id).await;
            Err(StartError::Failed(chain(&e)))
        }
    }
}

/// Creates the host directories a spec binds that do not exist yet, as docker does for `-v`.
fn make_bind_sources(spec: &oci_spec::runtime::Spec) -> Result<(), String> {
    for source in spec::bind_sources(spec) {
        if !source.exists() {
            std::fs::create_dir_all(&source).map_err(|e| format!("cannot create {}: {e}", source.display()))?;
        }
    }
    Ok(())
}

/// The stored image `reference` and the spec to run `service` from it, its bind sources made.
async fn resolve<R: ContainerRuntime>(
    runtime: &R,
    host: &HostSettings,
    service: &Service,
    reference: &str,
) -> Result<(ImageInfo, Vec<u8>), StartError> {
    let image = match runtime.image(reference).await {
        Ok(image) => image,
        Err(RuntimeError::NotFound { .. }) => {
            return Err(StartError::Blocked(format!(
                "image {reference} is not in containerd; import it with `soniclet image import FILE`"
            )))
        }
        Err(e) => return Err(StartError::Failed(chain(&e))),
    };
    let spec = spec::render(service, &image.config, host).map_err(|e| StartError::Blocked(chain(&e)))?;
    make_bind_sources(&spec).map_err(|e| StartError::Failed(e.to_string()))?;
    Ok((image, spec::to_json(&spec)))
}

/// Takes a container down: cold, or through its stop steps and then SIGKILL.
pub(super) async fn stop<R: ContainerRuntime, H: Health>(
    runtime: &R,
    health: &H,
    id: &str,
    how: StopHow,
) -> Result<(), RuntimeError> {
    match how {
        StopHow::Cold { stop_time } => runtime::stop_container(runtime, id, stop_time).await,
        StopHow::Steps { mode, steps } => {
            for step in &steps {
                tracing::info!(service = %id, mode = ?mode, step = ?step, "stop step");
                // A step that fails (a process already gone) does not stop the others.
                if let Err(e) = health.stop_step(id, step).await {
                    tracing::warn!(service = %id, error = %e, "warm/fast stop step");
                }
            }
            runtime::kill_container(runtime, id).await
        }
    }
}

/// Why an archive could not be staged or imported, as the API reports it.
fn import_error(e: ImportError) -> CommandError {
    match e {
        ImportError::Archive(_) => {
            CommandError::new(ErrorKind::BadRequest, format!("{}; nothing was changed", chain(&e)))
        }
        ImportError::Runtime { .. } => CommandError::new(ErrorKind::Failed, chain(&e)),
        ImportError::Interrupted { .. } => CommandError::new(ErrorKind::Internal, chain(&e)),
    }
}

/// Whether an image is the one asked for and can run here.
fn check(
    digest_wanted: Option<&str>,
    name: &str,
    digest: &str,
    os: &str,
    architecture: &str,
) -> Result<(), CommandError> {
    if let Some(expected) = digest_wanted {
        if digest != expected {
            return Err(CommandError::new(
                ErrorKind::BadRequest,
                format!("digest mismatch: {name} is {digest}, but {expected} was required; nothing was changed"),
            ));
        }
    }
    runtime::check_platform(name, os, architecture)
        .map_err(|e| CommandError::new(ErrorKind::BadRequest, format!("{e}; nothing was changed")))
}

/// The archive's only image, or the one named like `wanted`.
fn pick<'a>(images: &'a [ArchiveImage], wanted: &str) -> Result<&'a ArchiveImage, String> {
    if let [only] = images {
        return Ok(only);
    }
    let matching = images
        .iter()
        .filter(|i| i.name == wanted)
        .chain(images.iter().filter(|i| i.name != wanted && repository(&i.name) == repository(wanted)))
        .next();
    matching.ok_or_else(|| {
        let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        format!("holds {} images ({}) and none is the service's; pass the one to use", images.len(), names.join(", "))
    })
}

/// Checks an upgrade's new image and stages an archive's blobs; nothing reaches the runtime.
pub(super) async fn stage<R: ContainerRuntime>(
    runtime: &R,
    staging_dir: &Path,
    source: &ImageSource,
    wanted: &str,
    digest: Option<&str>,
    say: Say<'_>,
) -> Result<(StagedImage, Option<StagedArchive>), CommandError> {
    match source {
        ImageSource::Stored(reference) => {
            let image = runtime.image(reference).await.map_err(|e| match e {
                RuntimeError::NotFound { .. } => CommandError::new(
                    ErrorKind::NotFound,
                    format!(
                        "image {reference} is not in containerd; import it (`soniclet image import FILE`) or pass the archive"
                    ),
                ),
                e => CommandError::new(ErrorKind::Unavailable, chain(&e)),
            })?;
            check(digest, &image.name, &image.digest, &image.os, &image.architecture)?;
            Ok((StagedImage { name: image.name, digest: image.digest, archive: None }, None))
        }
        ImageSource::Archive(path) => {
            let staged = images::stage_archive(staging_dir, path, say).await.map_err(import_error)?;
            let image = pick(&staged.images, wanted)
                .map_err(|m| CommandError::new(ErrorKind::BadRequest, format!("{}: {m}", path.display())))?;
            check(digest, &image.name, &image.manifest.digest, &image.os, &image.architecture)?;
            let found = StagedImage { name: image.name.clone(), digest: image.manifest.digest.clone(), archive: None };
            Ok((found, Some(staged)))
        }
    }
}

/// Pins both images of a change, imports its archive, checks the new image, builds its spec
/// and prepares its rootfs. The running image is pinned first, so an import under its tag
/// never takes the image a rollback needs.
#[allow(clippy::too_many_arguments)]
pub(super) async fn prepare<R: ContainerRuntime>(
    runtime: &R,
    host: &HostSettings,
    service: &Service,
    journal: &ChangeJournal,
    current: &str,
    source: &str,
    archive: Option<StagedArchive>,
    say: Say<'_>,
) -> Result<Prepared, Failure> {
    let err = |e: RuntimeError| Failure::of(&e);
    // The running image by digest, so a rollback finds it whatever was imported since.
    let running = runtime.image(current).await.ok().filter(|i| i.digest == journal.from.digest);
    let running = match running {
        Some(image) => image.name,
        None => runtime
            .images()
            .await
            .map_err(err)?
            .into_iter()
            .find(|i| i.digest == journal.from.digest)
            .map(|i| i.name)
            .ok_or_else(|| {
                Failure(format!(
                    "the running image {} is no longer stored in containerd, so a rollback could not restore it; import it again first",
                    journal.from.digest
                ))
            })?,
    };
    runtime.tag_image(&running, &journal.from.reference).await.map_err(err)?;
    if let Some(staged) = &archive {
        images::import_staged(runtime, staged, say).await.map_err(|e| Failure::of(&e))?;
    }
    let target = runtime.image(source).await.map_err(err)?;
    if target.digest != journal.to.digest {
        return Err(Failure(format!(
            "image {source} is {} now, not {}; it changed meanwhile",
            target.digest, journal.to.digest
        )));
    }
    runtime::check_platform(&target.name, &target.os, &target.architecture).map_err(|e| Failure::of(&e))?;
    let image = runtime.tag_image(source, &journal.to.reference).await.map_err(err)?;
    let rendered = spec::render(service, &image.config, host).map_err(|e| Failure::of(&e))?;
    make_bind_sources(&rendered).map_err(|e| Failure(e.to_string()))?;
    runtime.prepare_rootfs(&journal.rootfs, &image).await.map_err(err)?;
    Ok(Prepared { image, spec: spec::to_json(&rendered), rootfs: journal.rootfs.clone() })
}

/// Imports archives one after the other; each image stored is said through `imported`.
pub(super) async fn import<R: ContainerRuntime>(
    runtime: &R,
    staging_dir: &Path,
    paths: &[std::path::PathBuf],
    say: Say<'_>,
    imported: &(dyn Fn(ImageInfo) + Send + Sync),
) -> Result<usize, CommandError> {
    let mut count = 0;
    for path in paths {
        let images = images::import_archive(runtime, staging_dir, path, say).await.map_err(|e| {
            let kind = match e {
                ImportError::Archive(_) => ErrorKind::BadRequest,
                ImportError::Runtime { .. } => ErrorKind::Failed,
                ImportError::Interrupted { .. } => ErrorKind::Internal,
            };
            CommandError::new(kind, chain(&e))
        })?;
        count += images.len();
        for image in images {
            imported(image);
        }
    }
    Ok(count)
}

/// Removes the images of past changes (`candidates`: every digest the history names, and
/// every image soniclet pinned) that no service keeps.
pub(super) async fn collect_images<R: ContainerRuntime>(
    runtime: &R,
    history: BTreeSet<String>,
    mut keep: BTreeSet<String>,
    unpinned: &[String],
) {
    let images = match runtime.images().await {
        Ok(images) => images,
        Err(e) => return tracing::warn!(error = %e, "image collection: cannot list images"),
    };
    // What the manifests name stays while a service runs it by that name.
    keep.extend(images.iter().filter(|i| unpinned.contains(&i.name)).map(|i| i.digest.clone()));
    let mut candidates = history;
    candidates.extend(images.iter().filter(|i| i.name.contains("@sha256:")).map(|i| i.digest.clone()));
    for image in images.iter().filter(|i| candidates.contains(&i.digest) && !keep.contains(&i.digest)) {
        match runtime.remove_image(&image.name).await {
            Ok(()) => tracing::info!(image = %image.name, digest = %image.digest, "removed an image no service keeps"),
            Err(e) => tracing::warn!(image = %image.name, error = %e, "cannot remove image"),
        }
    }
}

/// What an `os` command does on `/host` (blocking: run it off the loop).
pub(super) fn os(
    setup: &crate::os::images::OsSetup,
    request: &super::event::OsRequest,
    progress: &dyn Fn(String),
) -> Result<super::event::Response, CommandError> {
    use super::event::{InstallerSource, OsRequest, Response};
    use crate::os::{fetch, images, onie, OsError};
    let kind = |e: &OsError| match e {
        OsError::NotInstalled { .. } | OsError::NoSuchImage { .. } => ErrorKind::NotFound,
        OsError::Running { .. } | OsError::OnTrial { .. } | OsError::IsDefault { .. } | OsError::NoRoom { .. } => {
            ErrorKind::Conflict
        }
        OsError::Installer(_) | OsError::Platform { .. } | OsError::Signature(_) | OsError::NoKey => {
            ErrorKind::BadRequest
        }
        OsError::Fetch(fetch::FetchError::Status { status: 404 | 410, .. }) => ErrorKind::NotFound,
        OsError::Fetch(fetch::FetchError::NoRoom { .. }) => ErrorKind::Conflict,
        _ => ErrorKind::Failed,
    };
    let fail = |e: OsError| CommandError::new(kind(&e), crate::error::chain(&e));
    let host = &setup.host;
    let image = images::image_name;
    match request {
        OsRequest::List => {}
        OsRequest::Install { source, require_signature, trial_deadline, force_platform } => {
            let mut options = setup.install.clone();
            options.require_signature |= require_signature;
            options.force_platform |= force_platform;
            if let Some(deadline) = trial_deadline {
                options.trial_deadline = *deadline;
            }
            let installed = match source {
                InstallerSource::File(path) => images::install(host, path, &options, progress),
                InstallerSource::Url(url) => {
                    // Downloaded to /host, installed, and removed whatever came of it.
                    let file = host.root.join(fetch::DOWNLOAD);
                    let result = fetch::download(url, &file, &images::free_mib, progress)
                        .map_err(OsError::from)
                        .and_then(|_| images::install(host, &file, &options, progress));
                    fetch::remove(&file, &crate::os::installer::signature_path(&file));
                    result
                }
            };
            return Ok(Response::OsInstalled(installed.map_err(fail)?));
        }
        OsRequest::SetDefault(v) => images::set_default(host, &image(v)).map_err(fail)?,
        OsRequest::SetNextBoot(v) => images::set_next_boot(host, &image(v)).map_err(fail)?,
        OsRequest::Remove(v) => images::remove(host, &image(v)).map_err(fail)?,
        OsRequest::Cleanup => {
            let removed = images::cleanup(host).map_err(fail)?;
            progress(if removed.is_empty() {
                "nothing to remove".to_owned()
            } else {
                format!("removed {}", removed.join(", "))
            });
        }
        OsRequest::Onie(mode) => {
            crate::os::load_env(&host.root).map_err(fail)?;
            onie::with_onie_boot(|dir| onie::boot_into(&host.root, dir, *mode)).map_err(fail)?;
            progress(format!("the next boot is ONIE, in {} mode; rebooting", mode.as_str()));
        }
    }
    crate::os::list(&host.root, &host.cmdline).map(Response::Os).map_err(fail)
}
