//! `/v1/os`: the switch's OS images. Reading lists them; every change goes through the
//! supervisor (one at a time, none during a trial) and streams its progress.

use std::path::Path;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::convert::unexpected;
use super::http::{error_response, ndjson, ApiState, Body};
use super::{ErrorKind, OsEvent, OsImageRequest, OsInstallRequest, OsOnieRequest};
use crate::runtime::ContainerRuntime;
use crate::supervisor::{Answer, Command, InstallerSource, OsRequest, Progress, Response as Answered};

pub(super) async fn list<R: ContainerRuntime>(State(state): State<ApiState<R>>) -> Response {
    match state.handle.request(Command::Os(OsRequest::List)).await {
        Ok(Answered::Os(images)) => Json(images).into_response(),
        Ok(_) => error_response(ErrorKind::Internal, unexpected("an os listing").message),
        Err(e) => error_response(e.kind.into(), e.message),
    }
}

/// Streams one `os` command's progress and its end.
fn stream<R: ContainerRuntime>(state: &ApiState<R>, request: OsRequest) -> Response {
    let answers = state.handle.stream(Command::Os(request));
    let events = futures_util::stream::unfold(Some(answers), |answers| async move {
        let mut answers = answers?;
        let event = match answers.next().await? {
            Answer::Progress(Progress::Line(line)) => OsEvent::Progress(line),
            Answer::Progress(_) => OsEvent::Progress(String::new()),
            Answer::Final(Ok(Answered::Os(images))) => return Some((OsEvent::Images(images), None)),
            Answer::Final(Ok(Answered::OsInstalled(installed))) => return Some((OsEvent::Installed(installed), None)),
            Answer::Final(Ok(_)) => return Some((OsEvent::Error(unexpected("an os command's outcome")), None)),
            Answer::Final(Err(e)) => return Some((OsEvent::Error(e.into()), None)),
        };
        Some((event, Some(answers)))
    });
    ndjson(events)
}

pub(super) async fn install<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    Body(request): Body<OsInstallRequest>,
) -> Response {
    let source = match (request.path.as_str(), request.url.as_deref()) {
        ("", Some(url)) if crate::os::fetch::is_url(url) => InstallerSource::Url(url.to_owned()),
        ("", Some(url)) => {
            let shown = crate::os::fetch::redact(url);
            return error_response(ErrorKind::BadRequest, format!("url {shown:?}: http:// or https:// only"));
        }
        ("", None) => return error_response(ErrorKind::BadRequest, "path or url is missing: the installer to install"),
        (_, Some(_)) => return error_response(ErrorKind::BadRequest, "path and url: give one of the two"),
        (path, None) => {
            let path = Path::new(path);
            if !path.is_absolute() {
                return error_response(ErrorKind::BadRequest, format!("path {:?} is not absolute", request.path));
            }
            if !path.is_file() {
                return error_response(
                    ErrorKind::NotFound,
                    format!("{}: no such file (the daemon reads it)", request.path),
                );
            }
            InstallerSource::File(path.to_owned())
        }
    };
    let request = OsRequest::Install {
        source,
        require_signature: request.require_signature,
        trial_deadline: request.trial_deadline.map(std::time::Duration::from_secs),
        force_platform: request.force_platform,
    };
    stream(&state, request)
}

/// A change of one installed image, named by version or `image-<version>`.
fn by_image<R: ContainerRuntime>(
    state: &ApiState<R>,
    request: OsImageRequest,
    make: fn(String) -> OsRequest,
) -> Response {
    let v = request.version;
    if !crate::os::valid_version(&v) {
        return error_response(
            ErrorKind::BadRequest,
            format!("version {v:?}: an image's version or name (image-<version>)"),
        );
    }
    stream(state, make(v))
}

pub(super) async fn set_default<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    Body(request): Body<OsImageRequest>,
) -> Response {
    by_image(&state, request, OsRequest::SetDefault)
}

pub(super) async fn set_next_boot<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    Body(request): Body<OsImageRequest>,
) -> Response {
    by_image(&state, request, OsRequest::SetNextBoot)
}

pub(super) async fn remove<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    Body(request): Body<OsImageRequest>,
) -> Response {
    by_image(&state, request, OsRequest::Remove)
}

pub(super) async fn cleanup<R: ContainerRuntime>(State(state): State<ApiState<R>>) -> Response {
    stream(&state, OsRequest::Cleanup)
}

pub(super) async fn onie<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    Body(request): Body<OsOnieRequest>,
) -> Response {
    match request.mode {
        Some(mode) => stream(&state, OsRequest::Onie(mode)),
        None => error_response(ErrorKind::BadRequest, "mode is missing: install, rescue, uninstall or update"),
    }
}
