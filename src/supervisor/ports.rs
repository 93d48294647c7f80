//! The ports the driver carries the core's effects through, besides the container runtime
//! ([`crate::runtime::ContainerRuntime`]): container health, systemd's units, and the
//! database link. Each has one adapter and an in-memory twin.

use std::future::Future;

use crate::manifest::{Service, StopStep};
use crate::runtime::RuntimeError;
use tokio::sync::{mpsc, watch};

use super::event::DbRequest;

/// Why a container is not healthy, or a stop step did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// The probe ran and did not pass (yet): what it saw.
    #[error("{0}")]
    NotReady(String),
    /// The probe or step could not be carried out.
    #[error("{0}")]
    Failed(String),
}

impl From<RuntimeError> for HealthError {
    fn from(e: RuntimeError) -> Self {
        Self::Failed(crate::error::chain(&e))
    }
}

/// Health of containers: readiness, critical processes, stop steps. Implemented over the
/// runtime, Redis and /proc by `health::Prober`.
pub trait Health: Send + Sync + 'static {
    /// `Ok(())` when ready; an error saying why not yet.
    fn check(&self, service: &Service, container: &str) -> impl Future<Output = Result<(), HealthError>> + Send;

    /// Resolves with the name of the first critical process of the container that exits (or
    /// that does not run at all); never resolves for a service without critical processes.
    fn critical_exit(&self, service: &Service, container: &str) -> impl Future<Output = String> + Send;

    /// Carries out one warm or fast stop step in the container.
    fn stop_step(&self, container: &str, step: &StopStep) -> impl Future<Output = Result<(), HealthError>> + Send;
}

/// Why systemd did not start a unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// systemd refused the job (a conflicting job is queued, the unit does not exist).
    #[error("systemd refused: {name}: {detail}")]
    Refused { name: String, detail: String },
    /// systemd or the bus did not answer.
    #[error("systemd is not reachable: {0}")]
    Unreachable(String),
}

/// systemd's unit manager, as the supervisor needs it.
pub trait Units: Send + Sync + 'static {
    /// Queues a start of `unit` unless a conflicting job is pending; a no-op for an active
    /// unit. Bounded in time by the adapter.
    fn start_unit(&self, unit: &str) -> impl Future<Output = Result<(), UnitError>> + Send;

    /// Reboots the switch the way `systemctl reboot` does: every unit stopped in order.
    fn reboot(&self) -> impl Future<Output = Result<(), UnitError>> + Send;
}

/// The database link as the driver sees it: where requests go, and whether the database
/// service is ready (for the link to connect).
#[derive(Debug)]
pub struct DbPort {
    pub requests: mpsc::UnboundedSender<DbRequest>,
    pub database_ready: watch::Sender<super::event::DatabaseReadiness>,
}
