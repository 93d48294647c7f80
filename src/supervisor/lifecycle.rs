//! A service's life: start, stop, exit, readiness, critical processes, and what a crash
//! does (an immediate restart, then backoff doubling, then, with the budget spent, failed).

use std::time::Duration;

use super::change;
use super::core::Core;
use super::event::{Effect, Failure, FailureOutcome, Notice, StartError, StartFrom, Started, StopHow};
use super::groups;
use super::plan::Phase;
use super::types::StopMode;
use super::unit::{Container, Degraded, NextStart};
use crate::manifest::{Service, ServiceName};
use crate::runtime::{ExitStatus, RuntimeError};

/// SONiC reports a missing critical process once a minute.
pub(super) const DEGRADED_REPORT: Duration = Duration::from_secs(60);

/// The delay before restarting after `failures` failures in the window: none after the
/// first, then the initial delay, doubling up to the ceiling.
pub(super) fn backoff_delay(service: &Service, failures: usize) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let policy = &service.manifest.service.restart;
    let exponent = u32::try_from(failures - 2).unwrap_or(u32::MAX).min(20);
    let delay = policy.backoff_initial_ms.saturating_mul(1u64 << exponent).min(policy.backoff_max_ms);
    Duration::from_millis(delay)
}

/// Starts `name` as `generation`, which `reconcile` has already put in the state.
pub(super) fn start(core: &mut Core, name: &ServiceName, generation: u64) {
    let reference = core.image_ref(name);
    let wall = core.now.wall;
    let unit = core.unit(name);
    unit.generation = generation;
    // After a crash, say so until the service is ready again (the unit's STATUS=).
    unit.message = unit.comeback.crash.clone();
    // A container left by a crash or a failed start is replaced; without one, skip the cleanup.
    let leftover = unit.has_container();
    unit.set_phase(Phase::Starting, wall);
    let (prepared, rootfs) = match std::mem::replace(&mut unit.next, NextStart::Fresh) {
        NextStart::Fresh => (None, None),
        NextStart::Prepared(prepared) => (Some(*prepared), None),
        NextStart::Rootfs(key) => (None, Some(key)),
    };
    tracing::info!(service = %name, generation, "starting");
    let from = StartFrom { reference, prepared, rootfs, leftover };
    core.emit(Effect::Start { service: name.clone(), generation, from });
}

/// Takes `name` down: cold, or with its warm or fast stop steps.
pub(super) fn stop(core: &mut Core, name: &ServiceName) {
    let unit = &core.units[name];
    // An explicit mode (a warm restart of one member) wins; a stop after a failure is cold;
    // otherwise warm and fast restarts decide.
    let mode = match (unit.cycle.and_then(|c| c.mode), &unit.failure_pending) {
        (Some(mode), _) => mode,
        (None, Some(_)) => StopMode::Cold,
        (None, None) => core.stop_mode(name),
    };
    let manifest = &core.service(name).manifest.service;
    let how = match mode {
        StopMode::Cold => StopHow::Cold { stop_time: Duration::from_secs(u64::from(manifest.stop_time)) },
        StopMode::Warm => StopHow::Steps { mode, steps: manifest.warm_stop.clone() },
        StopMode::Fast => StopHow::Steps { mode, steps: manifest.fast_stop.clone() },
    };
    let (wall, mono) = (core.now.wall, core.now.mono);
    let unit = core.unit(name);
    unit.set_phase(Phase::Stopping, wall);
    unit.down_since.get_or_insert(mono);
    let generation = unit.generation;
    tracing::info!(service = %name, generation, mode = ?mode, "stopping");
    core.emit(Effect::Stop { service: name.clone(), generation, how });
}

pub(super) fn on_started(core: &mut Core, name: &ServiceName, generation: u64, result: Result<Started, StartError>) {
    let gated = change::gated(core, name);
    let wall = core.now.wall;
    let unit = core.unit(name);
    if unit.generation != generation || unit.phase != Phase::Starting {
        return;
    }
    match result {
        Ok(started) => {
            tracing::info!(service = %name, pid = started.pid, generation, "task started");
            unit.container = Container::Running { pid: started.pid };
            unit.image_digest = Some(started.image_digest);
            unit.set_phase(Phase::Probing, wall);
            core.emit(Effect::Watch { service: name.clone(), generation });
            if gated {
                change::on_gated_start(core, name, started.pid);
            }
        }
        Err(e) if gated => {
            unit.container = Container::None;
            unit.set_phase(Phase::Stopped, wall);
            change::gate_failed(core, name, format!("the new container did not start: {e}"));
        }
        Err(StartError::Blocked(reason)) => {
            tracing::error!(service = %name, reason = %reason, "cannot start");
            unit.message = Some(reason.clone());
            unit.set_phase(Phase::Failed { reason, blocked: true }, wall);
        }
        Err(StartError::Failed(reason)) => {
            tracing::error!(service = %name, reason = %reason, "start failed");
            on_failure(core, name, format!("start failed: {reason}"));
        }
    }
}

pub(super) fn on_stopped(core: &mut Core, name: &ServiceName, generation: u64, result: Result<(), RuntimeError>) {
    let wanted = core.want(name);
    let wall = core.now.wall;
    let unit = core.unit(name);
    if unit.generation != generation || unit.phase != Phase::Stopping {
        return;
    }
    unit.cycle = None;
    unit.degraded = None;
    match &result {
        Err(e) => {
            tracing::warn!(service = %name, error = %e, "stop did not complete cleanly");
            unit.message = Some(format!("stop: {e}"));
            unit.task_gone();
        }
        Ok(()) => {
            unit.container = Container::None;
            tracing::info!(service = %name, "stopped");
        }
    }
    let failure = unit.failure_pending.take();
    core.emit(Effect::Unwatch { service: name.clone() });
    match failure {
        Some(reason) => on_failure(core, name, reason),
        None => {
            let unit = core.unit(name);
            if !wanted {
                unit.comeback.clear();
            }
            unit.set_phase(Phase::Stopped, wall);
        }
    }
}

pub(super) fn on_exited(core: &mut Core, name: &ServiceName, generation: u64, status: ExitStatus) {
    let mono = core.now.mono;
    let unit = core.unit(name);
    if unit.generation != generation || !matches!(unit.phase, Phase::Probing | Phase::Ready) {
        return;
    }
    unit.task_gone();
    unit.last_exit = Some(status.code);
    unit.down_since.get_or_insert(mono);
    let reason = if status.code > 128 {
        format!("killed by signal {}", status.code - 128)
    } else {
        format!("exited with code {}", status.code)
    };
    tracing::warn!(service = %name, generation, code = status.code, "task ended unexpectedly");
    core.emit(Effect::Unwatch { service: name.clone() });
    if change::gated(core, name) {
        return change::gate_failed(core, name, format!("the new container {reason}"));
    }
    on_failure(core, name, reason);
}

pub(super) fn on_probed(core: &mut Core, name: &ServiceName, generation: u64, result: Result<(), Failure>) {
    let timeout = core.service(name).manifest.readiness.timeout;
    let (wall, mono) = (core.now.wall, core.now.mono);
    let unit = core.unit(name);
    if unit.generation != generation || unit.phase != Phase::Probing {
        return;
    }
    match result {
        Ok(()) => {
            tracing::info!(service = %name, generation, "ready");
            unit.last_downtime = unit.down_since.take().map(|t| mono.saturating_duration_since(t));
            unit.message = None;
            unit.comeback.clear();
            unit.set_phase(Phase::Ready, wall);
            if core.service(name).critical_processes().next().is_some() {
                core.emit(Effect::WatchCritical { service: name.clone(), generation });
            }
        }
        Err(detail) if change::gated(core, name) => {
            change::gate_failed(core, name, format!("not ready within {timeout}s: {detail}"));
        }
        Err(detail) => {
            tracing::warn!(service = %name, detail = %detail, "not ready in time");
            core.unit(name).failure_pending = Some(format!("not ready within {timeout}s: {detail}"));
            stop(core, name);
        }
    }
}

/// A critical process exited: restart the container when auto-restart is on, otherwise
/// report the service degraded, every minute, as SONiC does.
pub(super) fn on_critical_exit(core: &mut Core, name: &ServiceName, generation: u64, process: String) {
    let auto_restart = super::features::auto_restart(core, name);
    let unit = &core.units[name];
    if unit.generation != generation || !matches!(unit.phase, Phase::Ready | Phase::Probing) {
        return;
    }
    if change::gated(core, name) {
        return change::gate_failed(core, name, format!("critical process {process} exited"));
    }
    let now = core.now.mono;
    let unit = core.unit(name);
    if auto_restart {
        tracing::warn!(service = %name, process = %process, "critical process exited; restarting the container");
        let reason = format!("critical process {process} exited");
        unit.message = Some(format!("{reason}; restarting"));
        unit.failure_pending = Some(reason);
        stop(core, name);
    } else {
        tracing::warn!(service = %name, process = %process, "critical process exited; auto-restart is disabled");
        unit.degraded = Some(Degraded { process, since: now, reported: now });
    }
}

/// Logs every degraded service once a minute.
pub(super) fn report_degraded(core: &mut Core) {
    let now = core.now.mono;
    for (name, unit) in &mut core.units {
        let Some(degraded) = &mut unit.degraded else { continue };
        if now.saturating_duration_since(degraded.reported) >= DEGRADED_REPORT {
            let minutes = now.saturating_duration_since(degraded.since).as_secs() / 60;
            let process = &degraded.process;
            tracing::warn!(service = %name, "Process '{process}' is not running in namespace 'host' ({minutes} minutes)");
            degraded.reported = now;
        }
    }
}

/// A crash, a failed start or a missed readiness deadline: back off, or give up.
pub(super) fn on_failure(core: &mut Core, name: &ServiceName, reason: String) {
    let service = core.service(name).clone();
    let policy = service.manifest.service.restart.clone();
    let auto_restart = super::features::auto_restart(core, name);
    // A failure group member down cold takes its group with it; warm restart keeps the peers.
    if let Some(group) = service.failure_group() {
        if !groups::warm_enabled(core, name) {
            groups::group_down(core, group, name);
        }
    }
    // What lived in a crashed database is gone: everything that requires it starts over.
    if core.manifests.database() == Some(name) {
        for dependent in core.manifests.graph().dependent_closure(name) {
            let unit = core.unit(&dependent);
            if dependent != *name && unit.phase.is_active() {
                unit.cycle.get_or_insert(super::unit::Cycle { mode: None });
            }
        }
    }
    let (now, wall) = (core.now.mono, core.now.wall);
    let unit = core.unit(name);
    unit.degraded = None;
    unit.failures.push_back(now);
    while unit
        .failures
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > Duration::from_secs(policy.window_secs))
    {
        unit.failures.pop_front();
    }
    unit.cycle = None;
    let outcome = if !auto_restart {
        let reason = format!("{reason}; auto-restart is disabled");
        unit.message = Some(reason.clone());
        unit.set_phase(Phase::Failed { reason, blocked: false }, wall);
        FailureOutcome::NoAutoRestart
    } else if unit.failures.len() >= policy.budget as usize {
        let reason = format!("{} failures within {}s, last: {reason}", unit.failures.len(), policy.window_secs);
        tracing::error!(service = %name, reason = %reason, "giving up until an operator acts");
        unit.message = Some(reason.clone());
        unit.set_phase(Phase::Failed { reason, blocked: false }, wall);
        FailureOutcome::GaveUp
    } else {
        let delay = backoff_delay(&service, unit.failures.len());
        unit.restarts += 1;
        // The systemd facade shows this as the unit's STATUS=.
        let next = if delay.as_millis() % 1000 == 0 {
            format!("{}s", delay.as_secs())
        } else {
            format!("{}ms", delay.as_millis())
        };
        let attempt = unit.failures.len();
        unit.message = Some(format!("restarting after crash, attempt {attempt}, next in {next} ({reason})"));
        unit.comeback.crash = Some(format!("restarting after crash, attempt {attempt} ({reason})"));
        unit.set_phase(Phase::Backoff { until: now + delay }, wall);
        FailureOutcome::Restarting { attempt: u32::try_from(attempt).unwrap_or(u32::MAX), delay }
    };
    core.emit(Effect::Notice(Notice::Failed { service: name.clone(), reason, outcome }));
}

/// An operator action resets the failure budget and releases a held service.
pub(super) fn reset(core: &mut Core, name: &ServiceName) {
    let wall = core.now.wall;
    let unit = core.unit(name);
    unit.failures.clear();
    unit.comeback.clear();
    if matches!(unit.phase, Phase::Failed { .. } | Phase::Backoff { .. }) {
        unit.message = None;
        unit.set_phase(Phase::Stopped, wall);
    }
}
