//! `/v1/status` and `/v1/services/...`: status, start, stop, restart, watch, logs, and image
//! changes (upgrade, rollback, history, release).

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;

use super::convert::unexpected;
use super::http::{error_response, ndjson, ApiState, Body};
use super::{
    ActionRequest, ApiError, ChangeEvent, ErrorKind, ReleaseRequest, ServiceStatus, StatusResponse, UpgradeRequest,
};
use crate::logs;
use crate::runtime::ContainerRuntime;
use crate::state::history;
use crate::state::store::ChangeKind;
use crate::supervisor::{Answer, Answers, ChangeRequest, Command, ImageSource, Progress, Response as Answered};

/// How long a request that waits may last when the client gives no timeout.
pub(super) const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// The whole status, from the supervisor.
pub(super) async fn current_status<R>(state: &ApiState<R>) -> Result<StatusResponse, ApiError> {
    match state.handle.request(Command::Status).await? {
        Answered::Status(view) => Ok(view.into()),
        _ => Err(unexpected("a status")),
    }
}

pub(super) async fn status<R: ContainerRuntime>(State(state): State<ApiState<R>>) -> Response {
    match current_status(&state).await {
        Ok(status) => Json(status).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn service<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match current_status(&state).await {
        Ok(status) => match status.services.into_iter().find(|s| s.name == name) {
            Some(service) => Json(service).into_response(),
            None => error_response(ErrorKind::NotFound, format!("unknown service {name:?}")),
        },
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/services/{name}/{start|stop|restart}`.
pub(super) async fn action<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    UrlPath((name, action)): UrlPath<(String, String)>,
    Body(request): Body<ActionRequest>,
) -> Response {
    let (service, wait) = (name.clone(), request.wait);
    let command = match action.as_str() {
        "start" => Command::Start { service, wait },
        "stop" => Command::Stop { service, wait },
        "restart" => Command::Restart { service, wait },
        _ => {
            return error_response(
                ErrorKind::NotFound,
                format!("unknown action {action:?}: use start, stop, restart, upgrade or rollback"),
            )
        }
    };
    let limit = request.timeout_secs.map(Duration::from_secs).unwrap_or(DEFAULT_WAIT);
    match tokio::time::timeout(limit, state.handle.request(command)).await {
        Ok(Ok(Answered::Service(view))) => Json(ServiceStatus::from(view)).into_response(),
        Ok(Ok(_)) => unexpected("a service").into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => error_response(
            ErrorKind::Timeout,
            format!(
                "{name} did not finish {action} within {}s; it goes on in the background: see `soniclet status {name}` and `soniclet logs {name}`",
                limit.as_secs()
            ),
        ),
    }
}

/// The service's status now, then every change, one JSON object per line (the systemd
/// facades follow this).
pub(super) async fn watch<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    // Subscribe before the snapshot, so no change falls between them.
    let changes = state.handle.statuses();
    let current = match current_status(&state).await {
        Ok(status) => status.services.into_iter().find(|s| s.name == name),
        Err(e) => return e.into_response(),
    };
    let Some(current) = current else {
        return error_response(ErrorKind::NotFound, format!("unknown service {name:?}"));
    };
    let first = futures_util::stream::iter([current]);
    let rest = tokio_stream::wrappers::BroadcastStream::new(changes).filter_map(move |change| {
        let name = name.clone();
        async move {
            match change {
                Ok(view) if view.name.as_str() == name => Some(ServiceStatus::from(view)),
                Ok(_) => None,
                // Lagged: the next change carries the whole status anyway.
                Err(_) => None,
            }
        }
    });
    ndjson(first.chain(rest).take_until(state.shutdown.clone().cancelled_owned()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    #[serde(default = "default_lines")]
    lines: usize,
    #[serde(default)]
    follow: bool,
}

fn default_lines() -> usize {
    100
}

pub(super) async fn logs<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    UrlPath(name): UrlPath<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return error_response(ErrorKind::BadRequest, format!("bad log query: {e}")),
    };
    if state.manifests.lookup(&name).is_none() {
        return error_response(ErrorKind::NotFound, format!("unknown service {name:?}"));
    }
    let dir = state.logs_dir.clone();
    let id = name.clone();
    let lines = query.lines;
    let tail = match tokio::task::spawn_blocking(move || logs::tail(&dir, &id, lines)).await {
        Ok(Ok(lines)) => lines,
        Ok(Err(e)) => return error_response(ErrorKind::Internal, format!("cannot read the log of {name}: {e}")),
        Err(e) => return error_response(ErrorKind::Internal, e.to_string()),
    };
    let head = futures_util::stream::iter(tail.into_iter().map(|l| Ok::<_, std::io::Error>(Bytes::from(l + "\n"))));
    let text = |body: axum::body::Body| {
        Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body)
            .unwrap_or_else(|_| error_response(ErrorKind::Internal, "response"))
    };
    if !query.follow {
        return text(axum::body::Body::from_stream(head));
    }
    let follower = logs::Follower::from_end(&state.logs_dir, &name);
    let follow = futures_util::stream::unfold(follower, |mut follower| async move {
        loop {
            let lines = follower.poll();
            if !lines.is_empty() {
                let chunk: String = lines.into_iter().map(|l| l + "\n").collect();
                return Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), follower));
            }
            tokio::time::sleep(logs::Follower::INTERVAL).await;
        }
    });
    text(axum::body::Body::from_stream(head.chain(follow.take_until(state.shutdown.clone().cancelled_owned()))))
}

/// An image change's answers, as [`ChangeEvent`] lines. An answer stream that ends without
/// its answer means the daemon stopped: the change resumes at its next start.
fn change_events(answers: Answers) -> impl futures_util::Stream<Item = ChangeEvent> + Send {
    futures_util::stream::unfold(Some(answers), |answers| async move {
        let mut answers = answers?;
        let event = match answers.next().await {
            Some(Answer::Progress(Progress::Line(line))) => ChangeEvent::Progress(line),
            Some(Answer::Progress(Progress::ChangeEnded(entry))) => ChangeEvent::Done(entry),
            Some(Answer::Progress(Progress::ChangeRefused(e))) => ChangeEvent::Refused(e.into()),
            Some(Answer::Progress(Progress::Imported(image))) => {
                ChangeEvent::Progress(format!("imported {}", image.name))
            }
            Some(Answer::Final(Ok(Answered::Changed(entry)))) => return Some((ChangeEvent::Done(entry), None)),
            Some(Answer::Final(Ok(Answered::Released(outcome)))) => {
                return Some((ChangeEvent::Release(outcome.into()), None))
            }
            Some(Answer::Final(Ok(_))) => return Some((ChangeEvent::Refused(unexpected("a change's outcome")), None)),
            Some(Answer::Final(Err(e))) => return Some((ChangeEvent::Refused(e.into()), None)),
            None => {
                let e = ApiError {
                    kind: ErrorKind::Unavailable,
                    message: "the daemon stopped during the change; it resumes at its next start".to_owned(),
                };
                return Some((ChangeEvent::Refused(e), None));
            }
        };
        Some((event, Some(answers)))
    })
}

/// `POST /v1/services/{name}/upgrade`.
pub(super) async fn upgrade<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<UpgradeRequest>,
) -> Response {
    change(state, name, false, request)
}

/// `POST /v1/services/{name}/rollback` (the request's gate settings only).
pub(super) async fn rollback<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    UrlPath(name): UrlPath<String>,
    Body(request): Body<UpgradeRequest>,
) -> Response {
    change(state, name, true, request)
}

/// `upgrade` and `rollback`: the request's shape is checked here; the supervisor checks
/// and stages the image, then runs the change.
fn change<R: ContainerRuntime>(state: ApiState<R>, name: String, rollback: bool, request: UpgradeRequest) -> Response {
    let source = match (rollback, request.archive, request.reference) {
        (true, None, None) => None,
        (true, _, _) => return error_response(ErrorKind::BadRequest, "a rollback takes no image"),
        (false, Some(archive), None) => {
            let path = PathBuf::from(&archive);
            if !path.is_absolute() {
                return error_response(ErrorKind::BadRequest, format!("archive: {archive} is not an absolute path"));
            }
            if !path.is_file() {
                return error_response(ErrorKind::NotFound, format!("{archive}: no such file (the daemon reads it)"));
            }
            Some(ImageSource::Archive(path))
        }
        (false, None, Some(reference)) => Some(ImageSource::Stored(reference)),
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
    let request = ChangeRequest {
        service: name,
        kind: if rollback { ChangeKind::Rollback } else { ChangeKind::Upgrade },
        source,
        name: None,
        digest: request.digest,
        warm: request.warm,
        timeout: request.timeout_secs.map(Duration::from_secs),
        settle: request.settle_secs.map(Duration::from_secs),
    };
    ndjson(change_events(state.handle.stream(Command::Change(request))))
}

/// `GET /v1/services/{name}/history`.
pub(super) async fn service_history<R: ContainerRuntime>(
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

/// `POST /v1/release`: the release is checked whole here; the supervisor runs it, one
/// service at a time, journaled.
pub(super) async fn release<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    Body(request): Body<ReleaseRequest>,
) -> Response {
    let file = PathBuf::from(&request.file);
    if !file.is_absolute() {
        return error_response(ErrorKind::BadRequest, format!("file: {} is not an absolute path", request.file));
    }
    let release = match crate::images::release::parse(&file, &request.text, &state.manifests) {
        Ok(release) => release,
        Err(e) => return error_response(ErrorKind::BadRequest, format!("{e}; nothing was changed")),
    };
    let command = Command::Release {
        release,
        timeout: request.timeout_secs.map(Duration::from_secs),
        settle: request.settle_secs.map(Duration::from_secs),
    };
    ndjson(change_events(state.handle.stream(command)))
}
