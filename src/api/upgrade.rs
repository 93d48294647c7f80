//! Image changes over the API: `upgrade`, `rollback`, `history` and release upgrades.
//!
//! Everything that can be checked is checked here before the supervisor hears of it: the
//! archive is verified and staged, its digest and platform compared, and only then imported.
//! The supervisor then runs the change itself (journal, gate, rollback); this side relays its
//! progress. One change at a time, from import to outcome (`change_lock`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::mpsc::UnboundedSender;

use super::server::{error_response, ndjson, parse_body, ApiState};
use super::{ApiError, ErrorKind, ReleaseOutcome, ReleaseRequest, UpgradeRequest};
use crate::history::{self, ChangeResult, HistoryEntry};
use crate::images::{self, ImportError};
use crate::runtime::{self, archive::StagedImage, ContainerRuntime};
use crate::store::ChangeKind;
use crate::supervisor::{ChangeEvent, ChangeRequest, Command, Event};

/// How long a new image must stay up after it is ready, unless the request says.
const DEFAULT_SETTLE: Duration = Duration::from_secs(10);

/// Where the new image comes from.
enum Source {
    Archive(PathBuf),
    Reference(String),
    /// The service's previous image.
    Previous,
}

struct Target {
    service: String,
    source: Source,
    /// The image name wanted from a multi-image archive.
    name: Option<String>,
    digest: Option<String>,
    warm: bool,
    timeout: Option<u64>,
    settle: Option<u64>,
}

fn refuse(tx: &UnboundedSender<ChangeEvent>, kind: ErrorKind, message: String) {
    let _ = tx.send(ChangeEvent::Refused(ApiError { kind, message }));
}

/// `POST /v1/services/{name}/upgrade|rollback`.
pub(super) async fn change<R: ContainerRuntime>(
    state: ApiState<R>,
    name: String,
    rollback: bool,
    body: Bytes,
) -> Response {
    let request: UpgradeRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let source = match (rollback, request.archive, request.reference) {
        (true, None, None) => Source::Previous,
        (true, _, _) => return error_response(ErrorKind::BadRequest, "a rollback takes no image"),
        (false, Some(archive), None) => {
            let path = PathBuf::from(&archive);
            if !path.is_absolute() {
                return error_response(ErrorKind::BadRequest, format!("archive: {archive} is not an absolute path"));
            }
            if !path.is_file() {
                return error_response(ErrorKind::NotFound, format!("{archive}: no such file (the daemon reads it)"));
            }
            Source::Archive(path)
        }
        (false, None, Some(reference)) => Source::Reference(reference),
        (false, _, _) => return error_response(ErrorKind::BadRequest, "give exactly one of archive and reference"),
    };
    if let Some(digest) = &request.digest {
        if !digest.starts_with("sha256:") {
            return error_response(ErrorKind::BadRequest, format!("digest: {digest:?} is not sha256:<hex>"));
        }
    }
    if state.manifests.lookup(&name).is_none() {
        return error_response(ErrorKind::NotFound, state.manifests.unknown(&name));
    }
    let Ok(guard) = std::sync::Arc::clone(&state.change_lock).try_lock_owned() else {
        return error_response(ErrorKind::Conflict, "another upgrade or rollback is in progress; wait for it to end");
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<ChangeEvent>();
    let target = Target {
        service: name,
        source,
        name: None,
        digest: request.digest,
        warm: request.warm,
        timeout: request.timeout_secs,
        settle: request.settle_secs,
    };
    tokio::spawn(async move {
        let _guard = guard;
        run_change(&state, target, &tx).await;
    });
    ndjson(rx)
}

/// Imports and checks the image, then has the supervisor run the change; relays its events.
/// Answers the outcome, or `None` when it was refused.
async fn run_change<R: ContainerRuntime>(
    state: &ApiState<R>,
    target: Target,
    tx: &UnboundedSender<ChangeEvent>,
) -> Option<HistoryEntry> {
    let image = match &target.source {
        Source::Previous => None,
        Source::Reference(reference) => match state.runtime.image(reference).await {
            Ok(image) => {
                if let Err(message) = check(&target, &image.name, &image.digest, &image.os, &image.architecture) {
                    refuse(tx, ErrorKind::BadRequest, message);
                    return None;
                }
                Some((image.name, image.digest))
            }
            Err(e) if e.is_not_found() => {
                let message = format!(
                    "image {reference} is not in containerd; import it (`soniclet image import FILE`) or pass the archive"
                );
                refuse(tx, ErrorKind::NotFound, message);
                return None;
            }
            Err(e) => {
                refuse(tx, ErrorKind::Unavailable, e.to_string());
                return None;
            }
        },
        Source::Archive(path) => match import(state, &target, path, tx).await {
            Ok(found) => Some(found),
            Err((kind, message)) => {
                refuse(tx, kind, message);
                return None;
            }
        },
    };
    let timeout = target.timeout.unwrap_or_else(|| {
        state.manifests.get(&target.service).map_or(120, |s| u64::from(s.manifest.readiness.timeout))
    });
    let request = ChangeRequest {
        service: target.service.clone(),
        kind: if matches!(target.source, Source::Previous) { ChangeKind::Rollback } else { ChangeKind::Upgrade },
        image,
        warm: target.warm,
        timeout: Duration::from_secs(timeout),
        settle: target.settle.map_or(DEFAULT_SETTLE, Duration::from_secs),
    };
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    if !state.handle.send(Event::Command(Command::Change { request, progress: events_tx })) {
        refuse(tx, ErrorKind::Unavailable, "the daemon is shutting down".to_owned());
        return None;
    }
    while let Some(event) = events.recv().await {
        let outcome = match &event {
            ChangeEvent::Done(entry) => Some(Some(entry.clone())),
            ChangeEvent::Refused(_) => Some(None),
            _ => None,
        };
        let _ = tx.send(event);
        if let Some(outcome) = outcome {
            return outcome;
        }
    }
    refuse(tx, ErrorKind::Unavailable, "the daemon stopped during the change; it resumes at its next start".to_owned());
    None
}

/// Whether an image is the one asked for and can run here.
fn check(target: &Target, name: &str, digest: &str, os: &str, architecture: &str) -> Result<(), String> {
    if let Some(expected) = &target.digest {
        if digest != expected {
            return Err(format!(
                "digest mismatch: {name} is {digest}, but {expected} was required; nothing was changed"
            ));
        }
    }
    runtime::check_platform(name, os, architecture).map_err(|e| format!("{e}; nothing was changed"))
}

/// Verifies the archive, picks and checks its image, and only then imports it.
async fn import<R: ContainerRuntime>(
    state: &ApiState<R>,
    target: &Target,
    path: &Path,
    tx: &UnboundedSender<ChangeEvent>,
) -> Result<(String, String), (ErrorKind, String)> {
    let progress_tx = tx.clone();
    let progress = move |line: String| {
        let _ = progress_tx.send(ChangeEvent::Progress(line));
    };
    let import_error = |e: ImportError| match e {
        ImportError::Archive(_) => (ErrorKind::BadRequest, format!("{e}; nothing was changed")),
        ImportError::Runtime { .. } => (ErrorKind::Failed, e.to_string()),
        ImportError::Interrupted { .. } => (ErrorKind::Internal, e.to_string()),
    };
    let _import = state.import_lock.lock().await;
    let staged = images::stage_archive(&state.staging_dir, path, &progress).await.map_err(import_error)?;
    pin_running(state, &target.service).await?;
    let wanted = target
        .name
        .clone()
        .or_else(|| state.manifests.get(&target.service).map(|s| s.manifest.container.image.clone()));
    let image = pick(&staged.images, wanted.as_deref())
        .map_err(|m| (ErrorKind::BadRequest, format!("{}: {m}", path.display())))?;
    check(target, &image.name, &image.manifest.digest, &image.os, &image.architecture)
        .map_err(|m| (ErrorKind::BadRequest, m))?;
    let chosen = (image.name.clone(), image.manifest.digest.clone());
    images::import_staged(state.runtime.as_ref(), &staged, &progress).await.map_err(import_error)?;
    state.handle.send(Event::ImagesChanged);
    Ok(chosen)
}

/// Pins the image the service runs by digest before an import can take its tag (an archive
/// of `docker-fpm-frr:latest` over the running `docker-fpm-frr:latest`), so the old image
/// stays stored for the rollback.
async fn pin_running<R: ContainerRuntime>(state: &ApiState<R>, service: &str) -> Result<(), (ErrorKind, String)> {
    let status = state
        .handle
        .request(|reply| Command::Status { reply })
        .await
        .map_err(|e| (e.kind, e.message))?
        .services
        .into_iter()
        .find(|s| s.name == service);
    let Some((reference, digest)) = status.and_then(|s| s.image_digest.map(|d| (s.image, d))) else {
        return Ok(());
    };
    match state.runtime.image(&reference).await {
        Ok(image) if image.digest == digest => {
            let pinned = crate::supervisor::pin_reference(&reference, &digest);
            state
                .runtime
                .tag_image(&reference, &pinned)
                .await
                .map(|_| ())
                .map_err(|e| (ErrorKind::Failed, e.to_string()))
        }
        _ => Ok(()),
    }
}

/// The archive's only image, or the one named like the service's image.
fn pick<'a>(images: &'a [StagedImage], wanted: Option<&str>) -> Result<&'a StagedImage, String> {
    if let [only] = images {
        return Ok(only);
    }
    use crate::supervisor::repository;
    let matching: Vec<&StagedImage> = match wanted {
        Some(wanted) => images
            .iter()
            .filter(|i| i.name == wanted)
            .chain(images.iter().filter(|i| i.name != wanted && repository(&i.name) == repository(wanted)))
            .collect(),
        None => Vec::new(),
    };
    matching.first().copied().ok_or_else(|| {
        let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        format!("holds {} images ({}) and none is the service's; pass the one to use", images.len(), names.join(", "))
    })
}

/// `GET /v1/services/{name}/history`.
pub(super) async fn history<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let Some(service) = state.manifests.lookup(&name) else {
        return error_response(ErrorKind::NotFound, format!("unknown service {name:?}"));
    };
    match history::load(&state.state_dir) {
        Ok(entries) => {
            Json(entries.into_iter().filter(|e| e.service == service.as_str()).collect::<Vec<_>>()).into_response()
        }
        Err(e) => error_response(ErrorKind::Internal, e.to_string()),
    }
}

/// `POST /v1/release`: each service of the release in turn, stopping at the first failure.
pub(super) async fn release<R: ContainerRuntime>(State(state): State<ApiState<R>>, body: Bytes) -> Response {
    let request: ReleaseRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let file = PathBuf::from(&request.file);
    if !file.is_absolute() {
        return error_response(ErrorKind::BadRequest, format!("file: {} is not an absolute path", request.file));
    }
    let release = match crate::release::parse(&file, &request.text, &state.manifests) {
        Ok(release) => release,
        Err(e) => return error_response(ErrorKind::BadRequest, format!("{e}; nothing was changed")),
    };
    let Ok(guard) = std::sync::Arc::clone(&state.change_lock).try_lock_owned() else {
        return error_response(ErrorKind::Conflict, "another upgrade or rollback is in progress; wait for it to end");
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<ChangeEvent>();
    tokio::spawn(async move {
        let _guard = guard;
        let mut outcome = ReleaseOutcome { release: release.name.clone(), ..Default::default() };
        let running = match state.handle.request(|reply| Command::Status { reply }).await {
            Ok(status) => status.services,
            Err(e) => return refuse(&tx, e.kind, e.message),
        };
        let mut entries = release.entries.into_iter();
        for entry in entries.by_ref() {
            let service = entry.service.to_string();
            let status = running.iter().find(|s| s.name == service);
            if !status.is_some_and(|s| s.ready) {
                let _ = tx.send(ChangeEvent::Progress(format!("{service}: not running and ready; left as it is")));
                outcome.skipped.push(service);
                continue;
            }
            let current = status.and_then(|s| s.image_digest.clone());
            if current.as_deref() == Some(entry.digest.as_str()) {
                let _ = tx.send(ChangeEvent::Progress(format!("{service}: already runs {}", entry.digest)));
                outcome.unchanged.push(service);
                continue;
            }
            let _ =
                tx.send(ChangeEvent::Progress(format!("{service}: upgrading to {} ({})", entry.image, entry.digest)));
            let target = Target {
                service: service.clone(),
                source: match &entry.archive {
                    Some(archive) => Source::Archive(archive.clone()),
                    None => Source::Reference(entry.image.clone()),
                },
                name: Some(entry.image.clone()),
                digest: Some(entry.digest.clone()),
                warm: entry.warm,
                timeout: request.timeout_secs,
                settle: request.settle_secs,
            };
            match run_change(&state, target, &tx).await {
                Some(done) if done.result == ChangeResult::Succeeded => outcome.upgraded.push(service),
                _ => {
                    outcome.failed = Some(service);
                    break;
                }
            }
        }
        outcome.untouched = entries.map(|e| e.service.to_string()).collect();
        let _ = tx.send(ChangeEvent::Release(outcome));
    });
    ndjson(rx)
}
