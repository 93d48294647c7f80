//! systemd tells the truth: when the daemon brings a service up on its own (at boot, after a
//! failure-group cascade, on a FEATURE change or a config reload, on an upgrade), its unit is
//! started too, so a unit is active if and only if its service is meant to run and runs.
//!
//! Stops need nothing here: a facade exits by itself once its service is stopped and no longer
//! meant to run. Starting a unit never fights an operator: the start job is queued in `fail`
//! mode, so it is refused while a stop job for the unit is pending.

use std::collections::BTreeMap;
use std::future::Future;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::units::unit_name;
use crate::api::ServiceStatus;
use crate::supervisor::{Command, Handle};

/// systemd's unit manager, as the mirror needs it.
pub trait UnitManager: Send + Sync + 'static {
    /// Queues a start of `unit` unless a conflicting job is pending; a no-op for an active unit.
    fn start_unit(&self, unit: &str) -> impl Future<Output = Result<(), String>> + Send;
}

fn is_up(status: &ServiceStatus) -> bool {
    matches!(status.state.as_str(), "starting" | "running")
}

/// Whether the service's unit must be started: it is meant to run and just came up (or was
/// found up, when the daemon starts and adopts it).
pub fn unit_must_start(previous: Option<&ServiceStatus>, now: &ServiceStatus) -> bool {
    now.enabled && is_up(now) && !previous.is_some_and(|p| p.enabled && is_up(p))
}

/// Follows every status change until shutdown, starting units as services come up.
/// `changes` is subscribed before the first status is asked for, so no change falls between.
pub async fn run<M: UnitManager>(
    manager: M,
    mut changes: broadcast::Receiver<ServiceStatus>,
    handle: Handle,
    shutdown: CancellationToken,
) {
    let mut seen: BTreeMap<String, ServiceStatus> = BTreeMap::new();
    // Start from the whole picture (a mirror started again after a panic has missed changes),
    // then follow the changes.
    let mut whole = true;
    loop {
        if std::mem::take(&mut whole) {
            let Ok(all) = handle.request(|reply| Command::Status { reply }).await else { return };
            mirror(&manager, &mut seen, all.services).await;
            continue;
        }
        let statuses = tokio::select! {
            () = shutdown.cancelled() => return,
            change = changes.recv() => match change {
                Ok(status) => vec![status],
                // Missed changes: compare against the whole status instead.
                Err(RecvError::Lagged(_)) => match handle.request(|reply| Command::Status { reply }).await {
                    Ok(all) => all.services,
                    Err(_) => return,
                },
                Err(RecvError::Closed) => return,
            },
        };
        mirror(&manager, &mut seen, statuses).await;
    }
}

async fn mirror<M: UnitManager>(manager: &M, seen: &mut BTreeMap<String, ServiceStatus>, statuses: Vec<ServiceStatus>) {
    for status in statuses {
        if unit_must_start(seen.get(&status.name), &status) {
            let unit = unit_name(&status.name);
            match manager.start_unit(&unit).await {
                Ok(()) => tracing::debug!(unit = %unit, "unit started to mirror the service"),
                Err(e) => tracing::info!(unit = %unit, error = %e, "cannot start the unit"),
            }
        }
        seen.insert(status.name.clone(), status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, enabled: bool) -> ServiceStatus {
        ServiceStatus {
            name: "bgp".into(),
            state: state.into(),
            ready: false,
            enabled,
            pid: None,
            restarts: 0,
            image: String::new(),
            image_digest: None,
            container_id: None,
            generation: 0,
            since: String::new(),
            last_exit_code: None,
            message: None,
            restart: None,
            upgrade: None,
            downtime_ms: None,
        }
    }

    #[test]
    fn units_start_when_their_service_comes_up() {
        assert!(unit_must_start(None, &status("running", true)), "adopted at daemon start");
        assert!(unit_must_start(Some(&status("waiting", true)), &status("starting", true)));
        assert!(unit_must_start(Some(&status("stopped", false)), &status("starting", true)));
        assert!(!unit_must_start(Some(&status("starting", true)), &status("running", true)), "already mirrored");
        assert!(!unit_must_start(Some(&status("running", true)), &status("stopping", false)));
        assert!(!unit_must_start(None, &status("stopped", false)));
        // Going down while still up: no start (the operator's stop job would be refused anyway).
        assert!(!unit_must_start(None, &status("running", false)));
    }
}
