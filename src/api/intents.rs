//! `/v1/intents`: ASIC programming intents, through the intent engine.

use std::path::PathBuf;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::http::{error_response, ApiState, Body};
use super::{ErrorKind, IntentApply};
use crate::intent::IntentError;
use crate::runtime::ContainerRuntime;

fn no_database() -> Response {
    error_response(ErrorKind::Unavailable, "intents need the switch's database: no service is marked database = true")
}

pub(super) async fn apply<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    Body(request): Body<IntentApply>,
) -> Response {
    let Some(intents) = &state.intents else { return no_database() };
    match intents.apply(PathBuf::from(request.file), request.text).await {
        Some(Ok(outcome)) => Json(outcome).into_response(),
        Some(Err(e @ (IntentError::Parse { .. } | IntentError::Invalid(_)))) => {
            error_response(ErrorKind::BadRequest, e.to_string())
        }
        Some(Err(e)) => error_response(ErrorKind::Internal, e.to_string()),
        None => error_response(ErrorKind::Unavailable, "the daemon is shutting down"),
    }
}

pub(super) async fn status<R: ContainerRuntime>(State(state): State<ApiState<R>>) -> Response {
    let Some(intents) = &state.intents else { return no_database() };
    match intents.status().await {
        Some(report) => Json(report).into_response(),
        None => error_response(ErrorKind::Unavailable, "the daemon is shutting down"),
    }
}
