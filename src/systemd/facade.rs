//! What a NOS service's unit tells systemd, decided from the daemon's view of the service.
//!
//! `soniclet unit run SVC` (the unit's `ExecStart`) follows the service's status stream and
//! feeds each status to [`Facade::observe`], which says what to notify and when to exit:
//!
//! - `READY=1` once the readiness probe passes, never before;
//! - `STATUS=` with what the daemon is doing (waiting for swss, restarting after a crash,
//!   attempt 2, next in 4s, ...), so `systemctl status` tells the truth;
//! - exit 0 once the service is stopped and no longer meant to run (an operator's stop, a
//!   disabled FEATURE, a config reload): systemd marks the unit inactive;
//! - exit 0 when an operator restarts the service (`systemctl restart`, `soniclet restart`,
//!   or a restart of its failure group): the unit goes inactive with the service, and the
//!   daemon starts it again once the service comes back, so the restart shows in systemd;
//! - exit non-zero once the daemon gave up on it (failure budget spent): the unit fails.
//!
//! The unit stays active across crash recoveries, as the service is still meant to run, with
//! `STATUS=` saying what happens.

use crate::api::{ServiceState, ServiceStatus};

/// How the unit's main process ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The service was stopped and is not meant to run.
    Stopped,
    /// An operator restarts the service; the unit comes back with it.
    Restarting,
    /// The daemon holds the service down until an operator acts.
    Failed(String),
}

/// What to do after a status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// `sd_notify` state to send (`READY=1`, `STATUS=...`).
    pub notify: Option<String>,
    /// A line for the journal: the service changed state.
    pub log: Option<String>,
    pub exit: Option<Outcome>,
}

/// The facade's memory across statuses.
#[derive(Debug, Default)]
pub struct Facade {
    /// This facade has seen the service run outside a requested restart: a requested
    /// restart from now on is one this unit goes through.
    attached: bool,
    ready_sent: bool,
    last_status: Option<String>,
    last_state: Option<String>,
}

/// `STATUS=` for a service status.
pub fn status_text(status: &ServiceStatus) -> String {
    let pid = status.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
    let note = status.message.as_deref();
    match (status.state, status.ready) {
        (ServiceState::Running, true) => format!("running{pid}, ready"),
        (ServiceState::Running, false) => match note {
            Some(note) => format!("running{pid}, waiting for the readiness probe ({note})"),
            None => format!("running{pid}, waiting for the readiness probe"),
        },
        (ServiceState::Restarting, _) => note.unwrap_or("restarting after crash").to_owned(),
        (ServiceState::Kube, ready) => {
            let readiness = if ready { ", ready" } else { "" };
            format!("owned by Kubernetes: {}{readiness}", note.unwrap_or("its pod runs it"))
        }
        (state, _) => match note {
            Some(note) => format!("{state}: {note}"),
            None => state.to_string(),
        },
    }
}

impl Facade {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn observe(&mut self, status: &ServiceStatus) -> Step {
        let mut step = Step::default();
        if status.state == ServiceState::Failed {
            let reason = status.message.clone().unwrap_or_else(|| "failed".to_owned());
            step.exit = Some(Outcome::Failed(reason));
            return step;
        }
        if status.state == ServiceState::Stopped && !status.enabled {
            step.exit = Some(Outcome::Stopped);
            return step;
        }
        let requested = status.restart.as_deref() == Some("requested");
        if requested && self.attached {
            step.exit = Some(Outcome::Restarting);
            return step;
        }
        if matches!(status.state, ServiceState::Running | ServiceState::Kube) && !requested {
            self.attached = true;
        }
        let text = status_text(status);
        let mut notify = Vec::new();
        if status.ready && !self.ready_sent {
            self.ready_sent = true;
            notify.push("READY=1".to_owned());
        }
        if self.last_status.as_deref() != Some(text.as_str()) {
            notify.push(format!("STATUS={text}"));
            self.last_status = Some(text.clone());
        }
        let state = format!("{}{}", status.state, if status.ready { " (ready)" } else { "" });
        if self.last_state.as_deref() != Some(state.as_str()) {
            step.log = Some(format!("{}: {text}", status.name));
            self.last_state = Some(state);
        }
        step.notify = (!notify.is_empty()).then(|| notify.join("\n"));
        step
    }

    /// The daemon does not answer (it restarts, or is stopped): the service keeps running.
    pub fn daemon_unreachable(&mut self) -> Option<String> {
        let text = "soniclet daemon unreachable; the service keeps running, reconnecting".to_owned();
        if self.last_status.as_deref() == Some(text.as_str()) {
            return None;
        }
        self.last_status = Some(text.clone());
        self.last_state = None;
        Some(format!("STATUS={text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, ready: bool, enabled: bool, message: Option<&str>) -> ServiceStatus {
        let state: ServiceState = serde_json::from_value(serde_json::Value::String(state.into())).unwrap();
        ServiceStatus {
            name: "bgp".into(),
            state,
            ready,
            enabled,
            pid: (state == ServiceState::Running).then_some(42),
            restarts: 0,
            image: "docker-fpm-frr:latest".into(),
            image_digest: None,
            container_id: None,
            generation: 1,
            since: String::new(),
            last_exit_code: None,
            message: message.map(str::to_owned),
            restart: None,
            upgrade: None,
            downtime_ms: None,
        }
    }

    #[test]
    fn a_requested_restart_ends_the_unit_that_saw_the_service_run() {
        let requested = |state: &'static str, ready: bool| ServiceStatus {
            restart: Some("requested".into()),
            ..status(state, ready, true, None)
        };
        let mut running = Facade::new();
        running.observe(&status("running", true, true, None));
        assert_eq!(running.observe(&requested("stopping", false)).exit, Some(Outcome::Restarting));
        // The unit's next facade, started during the restart, follows it to the end.
        let mut next = Facade::new();
        assert_eq!(next.observe(&requested("stopping", false)).exit, None);
        assert_eq!(next.observe(&requested("running", false)).exit, None);
        let step = next.observe(&status("running", true, true, None));
        assert_eq!(step.exit, None);
        assert!(step.notify.unwrap().starts_with("READY=1"));
        // A crash recovery keeps the unit.
        let crash = ServiceStatus { restart: Some("crash".into()), ..status("starting", false, true, None) };
        assert_eq!(next.observe(&crash).exit, None);
    }

    #[test]
    fn ready_only_after_the_probe_and_only_once() {
        let mut facade = Facade::new();
        let step = facade.observe(&status("waiting", false, true, Some("waiting for swss")));
        assert_eq!(step.notify.as_deref(), Some("STATUS=waiting: waiting for swss"));
        let step = facade.observe(&status("running", false, true, None));
        assert_eq!(step.notify.as_deref(), Some("STATUS=running, pid 42, waiting for the readiness probe"));
        let step = facade.observe(&status("running", true, true, None));
        assert_eq!(step.notify.as_deref(), Some("READY=1\nSTATUS=running, pid 42, ready"));
        assert_eq!(facade.observe(&status("running", true, true, None)), Step::default());
    }

    #[test]
    fn a_crash_restart_keeps_the_unit_and_explains() {
        let mut facade = Facade::new();
        facade.observe(&status("running", true, true, None));
        let note = "restarting after crash, attempt 2, next in 4s (exited with code 137)";
        let step = facade.observe(&status("restarting", false, true, Some(note)));
        assert_eq!(step.exit, None);
        assert_eq!(step.notify.unwrap(), format!("STATUS={note}"));
        let step = facade.observe(&status("running", true, true, None));
        assert_eq!(step.notify.as_deref(), Some("STATUS=running, pid 42, ready"), "no second READY=1");
    }

    #[test]
    fn exits_on_stop_and_on_failure() {
        let mut facade = Facade::new();
        facade.observe(&status("running", true, true, None));
        assert_eq!(facade.observe(&status("stopping", true, false, None)).exit, None);
        assert_eq!(facade.observe(&status("stopped", false, false, None)).exit, Some(Outcome::Stopped));
        // Stopped but still meant to run: waiting for something, not done.
        assert_eq!(Facade::new().observe(&status("stopped", false, true, None)).exit, None);
        let failed = status("failed", false, true, Some("5 failures within 60s"));
        assert_eq!(Facade::new().observe(&failed).exit, Some(Outcome::Failed("5 failures within 60s".into())));
    }

    #[test]
    fn an_unreachable_daemon_is_reported_once() {
        let mut facade = Facade::new();
        assert!(facade.daemon_unreachable().is_some());
        assert!(facade.daemon_unreachable().is_none());
        let step = facade.observe(&status("running", true, true, None));
        assert!(step.notify.unwrap().contains("READY=1"));
    }
}
