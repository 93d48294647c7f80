//! Failure groups and warm restart: SONiC's swss/syncd/teamd semantics, from manifest data.
//!
//! A cold stop or crash of a member takes the whole group and its dependents (`dependent-of`)
//! down, in reverse order. Before a member starts again while the whole group is down, the
//! group's `cold-start` databases and STATE_DB tables are cleared (swss.sh's flushes, which
//! also remove `PortInitDone`); then the group comes back, then its dependents, each gated on
//! readiness. With warm restart enabled for the system or the member (STATE_DB
//! `WARM_RESTART_ENABLE_TABLE`), only that member goes down, with its warm-stop steps, and
//! its peers and the databases are untouched.

use std::collections::BTreeSet;

use super::plan::Phase;
use super::{GroupClear, Health, StopMode, Supervisor};
use crate::dblink::{BootType, DbMessage};
use crate::manifest::ServiceName;
use crate::runtime::ContainerRuntime;

impl<R: ContainerRuntime, P: Health> Supervisor<R, P> {
    /// The members of `group` and their dependents.
    pub(super) fn group_and_dependents(&self, group: &str) -> BTreeSet<ServiceName> {
        self.manifests.group_members(group).into_iter().chain(self.manifests.group_dependents(group)).collect()
    }

    /// Warm restart is enabled for the system or for `name`.
    pub(super) fn warm_enabled(&self, name: &ServiceName) -> bool {
        let flag = |key: &str| self.warm.warm.get(key).copied().unwrap_or(false);
        flag("system") || flag(name.as_str()) || self.change_is_warm(name)
    }

    /// How `name` goes down now: fast when a fast reboot is under way, warm when warm restart
    /// is enabled for it, cold otherwise.
    pub(super) fn stop_mode(&self, name: &ServiceName) -> StopMode {
        if self.warm.fast {
            StopMode::Fast
        } else if self.warm_enabled(name) {
            StopMode::Warm
        } else {
            StopMode::Cold
        }
    }

    /// After adoption: a group with a running member, or any group on a warm or fast boot,
    /// needs no clearing; one that is fully down does.
    pub(super) fn init_groups(&mut self) {
        for group in self.manifests.groups() {
            let running = self.manifests.group_members(&group).iter().any(|m| self.units[m].phase.is_active());
            let clear =
                if running || self.config.boot != BootType::Cold { GroupClear::Done } else { GroupClear::Needed };
            self.cleared.insert(group, clear);
        }
    }

    /// A member went down cold: the group and its dependents go down too, and the group's
    /// databases are cleared before it comes back.
    pub(super) fn group_down(&mut self, group: &str, cause: &ServiceName) {
        let affected = self.group_and_dependents(group);
        tracing::warn!(group, cause = %cause, services = ?affected, "failure group going down");
        let why = format!("restarting with failure group {group}: {cause} went down");
        for name in &affected {
            let unit = self.unit(name);
            if unit.phase.is_active() && name != cause {
                unit.cycle = true;
                unit.stop_mode = StopMode::Cold;
                unit.message = Some(why.clone());
                unit.recovering = Some(why.clone());
            }
        }
        self.cleared.insert(group.to_owned(), GroupClear::Needed);
    }

    /// Starts the cold-start flush of a group that is fully down and about to come back.
    pub(super) fn clear_groups(&mut self) {
        let needed: Vec<String> =
            self.cleared.iter().filter(|(_, c)| **c == GroupClear::Needed).map(|(g, _)| g.clone()).collect();
        for group in needed {
            let members = self.manifests.group_members(&group);
            let down = members.iter().all(|m| !self.units[m].phase.is_active());
            let coming_back = members
                .iter()
                .any(|m| self.want(m) && matches!(self.units[m].phase, Phase::Stopped | Phase::Backoff { .. }));
            if !down || !coming_back || !self.config_loaded {
                continue;
            }
            let Some(db) = &self.db else {
                self.cleared.insert(group, GroupClear::Done);
                continue;
            };
            let mut flush = BTreeSet::new();
            let mut delete_state = BTreeSet::new();
            for member in &members {
                let spec = &self.service(member).manifest.service.cold_start;
                flush.extend(spec.flush_databases.iter().cloned());
                delete_state.extend(spec.delete_state.iter().cloned());
            }
            tracing::info!(group = %group, databases = ?flush, "clearing before the group starts cold");
            let _ = db.messages.send(DbMessage::ColdStart {
                group: group.clone(),
                flush: flush.into_iter().collect(),
                delete_state: delete_state.into_iter().collect(),
            });
            self.cleared.insert(group, GroupClear::Clearing);
        }
    }

    pub(super) fn on_cold_start_done(&mut self, group: &str, result: Result<(), String>) {
        if let Err(e) = result {
            // The members start anyway: holding them would not make the database answer.
            tracing::error!(group, error = %e, "the cold-start flush failed");
        }
        self.cleared.insert(group.to_owned(), GroupClear::Done);
    }

    /// The services an operator's stop or start of `name` acts on: `name`, and for a
    /// failure-group member, the whole group and its dependents.
    pub(super) fn with_group(&self, name: &ServiceName) -> BTreeSet<ServiceName> {
        match self.service(name).failure_group() {
            Some(group) => {
                let mut set = self.group_and_dependents(group);
                set.insert(name.clone());
                set
            }
            None => BTreeSet::from([name.clone()]),
        }
    }

    /// `name` and its failure-group peers (just `name` outside a group).
    pub(super) fn peers(&self, name: &ServiceName) -> BTreeSet<ServiceName> {
        match self.service(name).failure_group() {
            Some(group) => self.manifests.group_members(group).into_iter().chain([name.clone()]).collect(),
            None => BTreeSet::from([name.clone()]),
        }
    }
}
