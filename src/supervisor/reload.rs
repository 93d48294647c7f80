//! `config reload` as one transaction: stop every service but the database in shutdown
//! order, replace CONFIG_DB (flush, `init_cfg.json`, the file, `CONFIG_DB_INITIALIZED=1`),
//! reset the failure budgets, and start everything in dependency order, reporting progress.
//! The file was validated before this starts, so a broken file never touches the switch.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::plan::Phase;
use super::{GroupClear, Health, Supervisor};
use crate::configdb::ConfigContent;
use crate::dblink::DbMessage;
use crate::runtime::ContainerRuntime;

/// One line of a reload's progress stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ReloadEvent {
    Progress(String),
    Done { seconds: f64, failed: Vec<String> },
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Stopping,
    Loading,
    Starting,
}

#[derive(Debug)]
pub(super) struct Reload {
    step: Step,
    started: Instant,
    config: Option<ConfigContent>,
    progress: mpsc::UnboundedSender<ReloadEvent>,
    last: String,
}

impl Reload {
    /// Services stay down while the old configuration goes and the new one comes.
    pub(super) fn holds_services(&self) -> bool {
        matches!(self.step, Step::Stopping | Step::Loading)
    }

    fn say(&mut self, message: String) {
        if message != self.last {
            let _ = self.progress.send(ReloadEvent::Progress(message.clone()));
            self.last = message;
        }
    }
}

impl<R: ContainerRuntime, P: Health> Supervisor<R, P> {
    pub(super) fn begin_reload(
        &mut self,
        config: ConfigContent,
        force: bool,
        progress: mpsc::UnboundedSender<ReloadEvent>,
    ) {
        let refuse = |message: &str| {
            let _ = progress.send(ReloadEvent::Failed(message.to_owned()));
        };
        if self.reload.is_some() {
            return refuse("a config reload is already in progress");
        }
        if let Some(change) = &self.store.state().change {
            return refuse(&format!("an image change of {} is in progress; wait for it to end", change.service));
        }
        if self.db.is_none() || self.manifests.database().is_none() {
            return refuse("config reload needs the database service (a manifest with database = true)");
        }
        if !self.settled && !force {
            return refuse("the switch is still booting (SYSTEM_READY is not UP yet); wait, or use --force");
        }
        tracing::info!("config reload: stopping services");
        // A reload starts over: operator starts and stops, failure budgets and delayed starts.
        let names: Vec<_> = self.units.keys().cloned().collect();
        for name in &names {
            if let Some(record) = self.store.state_mut().services.get_mut(name.as_str()) {
                record.desired = None;
            }
            self.reset(name);
        }
        self.save();
        for clear in self.cleared.values_mut() {
            *clear = GroupClear::Needed;
        }
        self.delayed_released = false;
        self.delayed_deadline = None;
        self.ports_ready = false;
        let active = self.units.values().filter(|u| u.phase.is_active()).count();
        self.reload = Some(Reload {
            step: Step::Stopping,
            started: Instant::now(),
            config: Some(config),
            progress,
            last: String::new(),
        });
        if let Some(reload) = &mut self.reload {
            reload.say(format!("stopping {} services in shutdown order", active.saturating_sub(1)));
        }
    }

    /// Moves the reload on after each event.
    pub(super) fn advance_reload(&mut self) {
        let Some(step) = self.reload.as_ref().map(|r| r.step) else { return };
        let database = self.manifests.database().cloned();
        match step {
            Step::Stopping => {
                let down =
                    self.units.iter().filter(|(n, _)| Some(*n) != database.as_ref()).all(|(_, u)| !u.phase.is_active());
                if !down {
                    let up =
                        self.units.iter().filter(|(n, u)| Some(*n) != database.as_ref() && u.phase.is_active()).count();
                    if let Some(reload) = &mut self.reload {
                        reload.say(format!("stopping: {up} services still running"));
                    }
                    return;
                }
                let reload = self.reload.as_mut().expect("a reload is in progress");
                let config = reload.config.take().unwrap_or_default();
                let elapsed = reload.started.elapsed();
                reload.say(format!("services stopped in {:.1}s; replacing CONFIG_DB", elapsed.as_secs_f64()));
                reload.step = Step::Loading;
                self.config_loaded = false;
                if let Some(db) = &self.db {
                    let _ = db.messages.send(DbMessage::Reload { config });
                }
            }
            Step::Loading => {}
            Step::Starting => {
                let wanted: Vec<_> = self.units.keys().filter(|n| self.want(n)).cloned().collect();
                let ready = wanted.iter().filter(|n| self.units[*n].phase == Phase::Ready).count();
                let failed: Vec<String> = wanted
                    .iter()
                    .filter(|n| matches!(self.units[*n].phase, Phase::Failed { .. }))
                    .map(|n| n.to_string())
                    .collect();
                let reload = self.reload.as_mut().expect("a reload is in progress");
                if ready + failed.len() == wanted.len() {
                    let seconds = reload.started.elapsed().as_secs_f64();
                    tracing::info!(seconds, failed = ?failed, "config reload done");
                    let _ = reload.progress.send(ReloadEvent::Done { seconds, failed });
                    self.reload = None;
                } else {
                    reload.say(format!("starting: {ready} of {} services ready", wanted.len()));
                }
            }
        }
    }

    pub(super) fn on_config_reloaded(&mut self, result: Result<(), String>) {
        let Some(reload) = self.reload.as_mut() else { return };
        match result {
            Ok(()) => {
                reload.say("CONFIG_DB replaced; starting services in dependency order".to_owned());
                reload.step = Step::Starting;
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload could not replace CONFIG_DB");
                let _ = reload.progress.send(ReloadEvent::Failed(format!("replacing CONFIG_DB failed: {e}")));
                self.reload = None;
            }
        }
    }
}
