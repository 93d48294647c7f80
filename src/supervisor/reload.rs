//! `config reload` as one transaction: stop every service but the database in shutdown
//! order, replace CONFIG_DB (flush, `init_cfg.json`, the file, `CONFIG_DB_INITIALIZED=1`),
//! reset the failure budgets, and start everything in dependency order, reporting progress.
//! The file was validated before this starts, so a broken file never touches the switch.

use std::time::Instant;

use super::core::{Core, Delayed, GroupClear};
use super::event::{DbRequest, Effect, Failure, Progress, RequestId, Response};
use super::plan::Phase;
use super::types::{CommandError, ErrorKind};
use crate::manifest::ServiceName;
use crate::sonic::configdb::ConfigContent;

/// Where a reload stands.
#[derive(Debug)]
pub(super) enum Step {
    /// Services go down; the new configuration waits to be loaded.
    Stopping { config: ConfigContent },
    /// The database link replaces CONFIG_DB.
    Loading,
    /// Services come back in dependency order.
    Starting,
}

#[derive(Debug)]
pub(super) struct Reload {
    step: Step,
    started: Instant,
    /// Who follows the reload's progress.
    listener: Option<RequestId>,
    last: String,
}

impl Reload {
    /// Services stay down while the old configuration goes and the new one comes.
    pub(super) fn holds_services(&self) -> bool {
        matches!(self.step, Step::Stopping { .. } | Step::Loading)
    }

    pub(super) fn forget(&mut self, id: RequestId) {
        if self.listener == Some(id) {
            self.listener = None;
        }
    }
}

/// Says `message` to the reload's listener, unless it said it last.
fn say(core: &mut Core, message: String) {
    let Some(reload) = &mut core.reload else { return };
    if message == reload.last {
        return;
    }
    reload.last = message.clone();
    if let Some(to) = reload.listener {
        core.emit(Effect::Progress { to, item: Progress::Line(message) });
    }
}

pub(super) fn begin(core: &mut Core, id: RequestId, config: ConfigContent, force: bool) {
    let refuse = |core: &mut Core, kind, message: String| {
        core.emit(Effect::Reply { to: id, result: Err(CommandError::new(kind, message)) });
    };
    if core.reload.is_some() {
        return refuse(core, ErrorKind::Conflict, "a config reload is already in progress".into());
    }
    if let Some(service) = super::change::in_flight(core) {
        return refuse(
            core,
            ErrorKind::Conflict,
            format!("an image change of {service} is in progress; wait for it to end"),
        );
    }
    if !core.config.database_link || core.manifests.database().is_none() {
        return refuse(
            core,
            ErrorKind::Unavailable,
            "config reload needs the database service (a manifest with database = true)".into(),
        );
    }
    if !core.settled && !force {
        return refuse(
            core,
            ErrorKind::Conflict,
            "the switch is still booting (SYSTEM_READY is not UP yet); wait, or use --force".into(),
        );
    }
    tracing::info!("config reload: stopping services");
    // A reload starts over: operator starts and stops, failure budgets and delayed starts.
    let names: Vec<ServiceName> = core.units.keys().cloned().collect();
    for name in &names {
        if core.state.services.contains_key(name.as_str()) {
            core.set_desired(name, None);
        }
        super::lifecycle::reset(core, name);
    }
    for clear in core.cleared.values_mut() {
        *clear = GroupClear::Needed;
    }
    core.delayed = Delayed::Held { deadline: None };
    core.ports_ready = false;
    let active = core.units.values().filter(|u| u.phase.is_active()).count();
    core.reload = Some(Reload {
        step: Step::Stopping { config },
        started: core.now.mono,
        listener: Some(id),
        last: String::new(),
    });
    say(core, format!("stopping {} services in shutdown order", active.saturating_sub(1)));
}

/// Moves the reload on after each event.
pub(super) fn advance(core: &mut Core) {
    let Some(reload) = &core.reload else { return };
    let database = core.manifests.database().cloned();
    match &reload.step {
        Step::Stopping { .. } => {
            let up = core.units.iter().filter(|(n, u)| Some(*n) != database.as_ref() && u.phase.is_active()).count();
            if up > 0 {
                return say(core, format!("stopping: {up} services still running"));
            }
            let elapsed = core.now.mono.saturating_duration_since(reload.started);
            say(core, format!("services stopped in {:.1}s; replacing CONFIG_DB", elapsed.as_secs_f64()));
            let Some(reload) = &mut core.reload else { return };
            let Step::Stopping { config } = std::mem::replace(&mut reload.step, Step::Loading) else { return };
            core.config_loaded = false;
            core.db(DbRequest::Reload { config });
        }
        Step::Loading => {}
        Step::Starting => {
            let wanted: Vec<ServiceName> = core.units.keys().filter(|n| core.want(n)).cloned().collect();
            let ready = wanted.iter().filter(|n| core.is_ready(n)).count();
            let failed: Vec<ServiceName> =
                wanted.iter().filter(|n| matches!(core.units[*n].phase, Phase::Failed { .. })).cloned().collect();
            if ready + failed.len() == wanted.len() {
                let seconds = core.now.mono.saturating_duration_since(reload.started).as_secs_f64();
                tracing::info!(seconds, failed = ?failed, "config reload done");
                let listener = reload.listener;
                core.reload = None;
                if let Some(to) = listener {
                    core.emit(Effect::Reply { to, result: Ok(Response::Reloaded { seconds, failed }) });
                }
            } else {
                say(core, format!("starting: {ready} of {} services ready", wanted.len()));
            }
        }
    }
}

pub(super) fn on_config_reloaded(core: &mut Core, result: Result<(), Failure>) {
    let Some(reload) = &mut core.reload else { return };
    match result {
        Ok(()) => {
            reload.step = Step::Starting;
            say(core, "CONFIG_DB replaced; starting services in dependency order".to_owned());
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload could not replace CONFIG_DB");
            let listener = reload.listener;
            core.reload = None;
            if let Some(to) = listener {
                let e = CommandError::new(ErrorKind::Failed, format!("replacing CONFIG_DB failed: {e}"));
                core.emit(Effect::Reply { to, result: Err(e) });
            }
        }
    }
}
