//! `/v1/features`: SONiC's FEATURE table as soniclet follows it, and operators' changes.

use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::convert::unexpected;
use super::http::{error_response, ApiState, Body};
use super::services::DEFAULT_WAIT;
use super::{ErrorKind, FeatureChange, FeatureStatus};
use crate::runtime::ContainerRuntime;
use crate::supervisor::{Command, Response as Answered};

pub(super) async fn list<R: ContainerRuntime>(State(state): State<ApiState<R>>) -> Response {
    match state.handle.request(Command::Features).await {
        Ok(Answered::Features(views)) => {
            Json(views.into_iter().map(FeatureStatus::from).collect::<Vec<_>>()).into_response()
        }
        Ok(_) => unexpected("the features").into_response(),
        Err(e) => e.into_response(),
    }
}

/// `config feature state|autorestart`: the supervisor checks it, has the database link
/// write CONFIG_DB `FEATURE|<name>`, and answers once its own subscription brought the entry
/// back (as any other writer's would), and with `wait` once the service got there.
pub(super) async fn change<R: ContainerRuntime>(
    State(state): State<ApiState<R>>,
    UrlPath(name): UrlPath<String>,
    Body(change): Body<FeatureChange>,
) -> Response {
    let limit = change.timeout_secs.map(Duration::from_secs).unwrap_or(DEFAULT_WAIT);
    let target = change.state.clone();
    let command = Command::ChangeFeature {
        service: name.clone(),
        state: change.state,
        auto_restart: change.auto_restart,
        owner: change.owner,
        wait: change.wait,
    };
    match tokio::time::timeout(limit, state.handle.request(command)).await {
        Ok(Ok(Answered::Feature(view))) => Json(FeatureStatus::from(view)).into_response(),
        Ok(Ok(_)) => unexpected("a feature").into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => error_response(
            ErrorKind::Timeout,
            match target {
                Some(s) => format!("{name} did not reach {s} within {}s", limit.as_secs()),
                None => format!("FEATURE {name} was not applied within {}s", limit.as_secs()),
            },
        ),
    }
}
