//! The switch as a whole: `config reload`, `wait` and `shutdown`.

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::convert::unexpected;
use super::http::{error_response, ndjson, ApiState, Body};
use super::services::DEFAULT_WAIT;
use super::{ErrorKind, ReloadEvent, ReloadRequest, ShutdownRequest, StatusResponse, WaitRequest};
use crate::runtime::ContainerRuntime;
use crate::supervisor::{Answer, Command, Progress, Response as Answered};

/// `config reload`: the file is checked whole first; a broken one changes nothing.
pub(super) async fn reload<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    Body(request): Body<ReloadRequest>,
) -> Response {
    let default = state.sonic_root.join("etc/sonic/config_db.json");
    let (file, text) = match (request.file, request.text) {
        (file, Some(text)) => (file.map(PathBuf::from).unwrap_or_else(|| default.clone()), text),
        (_, None) => match std::fs::read_to_string(&default) {
            Ok(text) => (default.clone(), text),
            Err(e) => return error_response(ErrorKind::NotFound, format!("cannot read {}: {e}", default.display())),
        },
    };
    let config = match crate::sonic::configdb::parse(&file, &text) {
        Ok(c) => c,
        Err(e) => return error_response(ErrorKind::BadRequest, format!("{e}; nothing was changed")),
    };
    let answers = state.handle.stream(Command::Reload { config, force: request.force });
    let events = futures_util::stream::unfold(Some(answers), |answers| async move {
        let mut answers = answers?;
        let event = match answers.next().await? {
            Answer::Progress(Progress::Line(line)) => ReloadEvent::Progress(line),
            Answer::Progress(_) => ReloadEvent::Progress(String::new()),
            Answer::Final(Ok(Answered::Reloaded { seconds, failed })) => {
                let failed = failed.iter().map(ToString::to_string).collect();
                return Some((ReloadEvent::Done { seconds, failed }, None));
            }
            Answer::Final(Ok(_)) => return Some((ReloadEvent::Failed(unexpected("a reload's outcome").message), None)),
            Answer::Final(Err(e)) => return Some((ReloadEvent::Failed(e.message), None)),
        };
        Some((event, Some(answers)))
    });
    ndjson(events)
}

pub(super) async fn wait<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    Body(request): Body<WaitRequest>,
) -> Response {
    let limit = request.timeout_secs.map(Duration::from_secs).unwrap_or(DEFAULT_WAIT);
    let command = Command::Wait { services: request.services, stopped: request.stopped };
    match tokio::time::timeout(limit, state.handle.request(command)).await {
        Ok(Ok(Answered::Status(view))) => Json(StatusResponse::from(view)).into_response(),
        Ok(Ok(_)) => unexpected("a status").into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => {
            error_response(ErrorKind::Timeout, format!("not ready within {}s; see `soniclet status`", limit.as_secs()))
        }
    }
}

pub(super) async fn shutdown<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    Body(request): Body<ShutdownRequest>,
) -> Response {
    match state.handle.request(Command::Shutdown { stop_services: request.stop_services }).await {
        Ok(_) => Json(serde_json::json!({})).into_response(),
        Err(e) => e.into_response(),
    }
}
