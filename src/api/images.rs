//! `/v1/images`: the images of soniclet's containerd namespace, and imports.

use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::convert::unexpected;
use super::http::{error_response, ndjson, ApiState, Body};
use super::{ErrorKind, ImageSummary, ImportEvent, ImportRequest};
use crate::manifest::ManifestSet;
use crate::runtime::{ContainerRuntime, ImageInfo};
use crate::supervisor::{Answer, Command, Progress, Response as Answered};

fn summary(manifests: &ManifestSet, image: ImageInfo) -> ImageSummary {
    ImageSummary {
        used_by: manifests
            .services()
            .filter(|s| s.manifest.container.image == image.name)
            .map(|s| s.name.to_string())
            .collect(),
        name: image.name,
        digest: image.digest,
        size: image.size,
        architecture: image.architecture,
        os: image.os,
    }
}

pub(super) async fn list<R: ContainerRuntime>(State(state): State<ApiState<R>>) -> Response {
    match state.runtime.images().await {
        Ok(images) => {
            let summaries: Vec<ImageSummary> = images.into_iter().map(|i| summary(&state.manifests, i)).collect();
            Json(summaries).into_response()
        }
        Err(e) => error_response(ErrorKind::Unavailable, e.to_string()),
    }
}

/// Verifies and imports archives (through the supervisor, which holds the import lock),
/// streaming what it stores.
pub(super) async fn import<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    Body(request): Body<ImportRequest>,
) -> Response {
    if request.paths.is_empty() {
        return error_response(ErrorKind::BadRequest, "no archive given: paths is empty");
    }
    for path in &request.paths {
        let p = Path::new(path);
        if !p.is_absolute() {
            return error_response(ErrorKind::BadRequest, format!("{path} is not an absolute path"));
        }
        if !p.is_file() {
            return error_response(ErrorKind::NotFound, format!("{path}: no such file (the daemon reads it)"));
        }
    }
    let paths = request.paths.into_iter().map(PathBuf::from).collect();
    let answers = state.handle.stream(Command::Import { paths });
    let manifests = state.manifests.clone();
    let events = futures_util::stream::unfold(Some((answers, manifests)), |next| async move {
        let (mut answers, manifests) = next?;
        let event = match answers.next().await? {
            Answer::Progress(Progress::Imported(image)) => ImportEvent::Imported(summary(&manifests, image)),
            Answer::Progress(Progress::Line(line)) => ImportEvent::Progress(line),
            Answer::Progress(_) => ImportEvent::Progress(String::new()),
            Answer::Final(Ok(Answered::Imported { images })) => {
                return Some((ImportEvent::Done { imported: images }, None))
            }
            Answer::Final(Ok(_)) => return Some((ImportEvent::Error(unexpected("an import's outcome")), None)),
            Answer::Final(Err(e)) => return Some((ImportEvent::Error(e.into()), None)),
        };
        Some((event, Some((answers, manifests))))
    });
    ndjson(events)
}
