//! The supervisor's domain types on the wire.

use super::{
    ApiError, DaemonInfo, ErrorKind, FeatureStatus, ReleaseOutcome, ServiceState, ServiceStatus, StatusResponse,
};
use crate::supervisor::{self as sup, CommandError, FeatureSource, FeatureView, RestartCause, ServiceView, StatusView};

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl From<sup::ServiceState> for ServiceState {
    fn from(state: sup::ServiceState) -> Self {
        match state {
            sup::ServiceState::Stopped => Self::Stopped,
            sup::ServiceState::Waiting => Self::Waiting,
            sup::ServiceState::Starting => Self::Starting,
            sup::ServiceState::Running => Self::Running,
            sup::ServiceState::Stopping => Self::Stopping,
            sup::ServiceState::Restarting => Self::Restarting,
            sup::ServiceState::Failed => Self::Failed,
            sup::ServiceState::Kube => Self::Kube,
        }
    }
}

impl From<ServiceView> for ServiceStatus {
    fn from(view: ServiceView) -> Self {
        Self {
            container_id: view.has_container.then(|| view.name.to_string()),
            name: view.name.to_string(),
            state: view.state.into(),
            ready: view.ready,
            enabled: view.enabled,
            pid: view.pid,
            restarts: view.restarts,
            image: view.image,
            image_digest: view.image_digest,
            generation: view.generation,
            since: rfc3339(view.since),
            last_exit_code: view.last_exit_code,
            message: view.message,
            restart: view.restart.map(|cause| match cause {
                RestartCause::Requested => "requested".to_owned(),
                RestartCause::Crash => "crash".to_owned(),
            }),
            upgrade: view.upgrade,
            downtime_ms: view.downtime.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

impl From<StatusView> for StatusResponse {
    fn from(view: StatusView) -> Self {
        Self {
            daemon: DaemonInfo {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                since: rfc3339(view.since),
            },
            services: view.services.into_iter().map(ServiceStatus::from).collect(),
        }
    }
}

impl From<FeatureView> for FeatureStatus {
    fn from(view: FeatureView) -> Self {
        Self {
            name: view.name.to_string(),
            state: view.state,
            source: match view.source {
                FeatureSource::ConfigDb => "CONFIG_DB",
                FeatureSource::Manifest => "manifest",
            }
            .to_owned(),
            auto_restart: view.auto_restart,
            set_owner: view.set_owner,
            current_owner: view.current_owner,
            delayed: view.delayed,
            service_state: view.service_state.into(),
        }
    }
}

impl From<sup::ErrorKind> for ErrorKind {
    fn from(kind: sup::ErrorKind) -> Self {
        match kind {
            sup::ErrorKind::NotFound => Self::NotFound,
            sup::ErrorKind::BadRequest => Self::BadRequest,
            sup::ErrorKind::Conflict => Self::Conflict,
            sup::ErrorKind::Timeout => Self::Timeout,
            sup::ErrorKind::Failed => Self::Failed,
            sup::ErrorKind::Unavailable => Self::Unavailable,
            sup::ErrorKind::Internal => Self::Internal,
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        Self { kind: e.kind.into(), message: e.message }
    }
}

impl From<sup::ReleaseOutcome> for ReleaseOutcome {
    fn from(outcome: sup::ReleaseOutcome) -> Self {
        Self {
            release: outcome.release,
            upgraded: outcome.upgraded,
            unchanged: outcome.unchanged,
            skipped: outcome.skipped,
            failed: outcome.failed,
            untouched: outcome.untouched,
        }
    }
}

/// An answer of the wrong kind: a daemon bug, said plainly.
pub(super) fn unexpected(what: &str) -> ApiError {
    ApiError { kind: ErrorKind::Internal, message: format!("the supervisor answered something else than {what}") }
}
