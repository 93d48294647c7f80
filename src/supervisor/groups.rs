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

use super::core::{Core, GroupClear};
use super::event::{DbRequest, Effect, Failure, Notice};
use super::plan::Phase;
use super::types::BootType;
use super::unit::Cycle;
use crate::manifest::ServiceName;

/// The members of `group` and their dependents.
pub(super) fn group_and_dependents(core: &Core, group: &str) -> BTreeSet<ServiceName> {
    core.manifests.group_members(group).into_iter().chain(core.manifests.group_dependents(group)).collect()
}

/// Warm restart is enabled for the system or for `name` (or a warm image change of `name` is
/// under way).
pub(super) fn warm_enabled(core: &Core, name: &ServiceName) -> bool {
    let flag = |key: &str| core.warm.warm.get(key).copied().unwrap_or(false);
    flag("system") || flag(name.as_str()) || super::change::is_warm(core, name)
}

/// After adoption: a group with a running member, or any group on a warm or fast boot,
/// needs no clearing; one that is fully down does.
pub(super) fn init(core: &mut Core) {
    for group in core.manifests.groups() {
        let running = core.manifests.group_members(&group).iter().any(|m| core.units[m].phase.is_active());
        let clear = if running || core.config.boot != BootType::Cold { GroupClear::Done } else { GroupClear::Needed };
        core.cleared.insert(group, clear);
    }
}

/// A member went down cold: the group and its dependents go down too, and the group's
/// databases are cleared before it comes back.
pub(super) fn group_down(core: &mut Core, group: &str, cause: &ServiceName) {
    let affected = group_and_dependents(core, group);
    tracing::warn!(group, cause = %cause, services = ?affected, "failure group going down");
    let why = format!("restarting with failure group {group}: {cause} went down");
    for name in &affected {
        let unit = core.unit(name);
        if unit.phase.is_active() && name != cause {
            unit.cycle = Some(Cycle { mode: None });
            unit.message = Some(why.clone());
            unit.comeback.crash = Some(why.clone());
        }
    }
    core.cleared.insert(group.to_owned(), GroupClear::Needed);
    core.emit(Effect::Notice(Notice::GroupDown { group: group.to_owned(), cause: cause.clone(), services: affected }));
}

/// Starts the cold-start flush of a group that is fully down and about to come back.
pub(super) fn clear(core: &mut Core) {
    let needed: Vec<String> =
        core.cleared.iter().filter(|(_, c)| **c == GroupClear::Needed).map(|(g, _)| g.clone()).collect();
    for group in needed {
        let members = core.manifests.group_members(&group);
        let down = members.iter().all(|m| !core.units[m].phase.is_active());
        let coming_back = members
            .iter()
            .any(|m| core.want(m) && matches!(core.units[m].phase, Phase::Stopped | Phase::Backoff { .. }));
        if !down || !coming_back || !core.config_loaded {
            continue;
        }
        if !core.config.database_link {
            core.cleared.insert(group, GroupClear::Done);
            continue;
        }
        let mut flush = BTreeSet::new();
        let mut delete_state = BTreeSet::new();
        for member in &members {
            let spec = &core.service(member).manifest.service.cold_start;
            flush.extend(spec.flush_databases.iter().cloned());
            delete_state.extend(spec.delete_state.iter().cloned());
        }
        tracing::info!(group = %group, databases = ?flush, "clearing before the group starts cold");
        core.db(DbRequest::ColdStart {
            group: group.clone(),
            flush: flush.into_iter().collect(),
            delete_state: delete_state.into_iter().collect(),
        });
        core.cleared.insert(group, GroupClear::Clearing);
    }
}

pub(super) fn on_cold_start_done(core: &mut Core, group: &str, result: Result<(), Failure>) {
    if let Err(e) = result {
        // The members start anyway: holding them would not make the database answer.
        tracing::error!(group, error = %e, "the cold-start flush failed");
    }
    core.cleared.insert(group.to_owned(), GroupClear::Done);
}

/// The services an operator's stop or start of `name` acts on: `name`, and for a
/// failure-group member, the whole group and its dependents.
pub(super) fn with_group(core: &Core, name: &ServiceName) -> BTreeSet<ServiceName> {
    match core.service(name).failure_group() {
        Some(group) => {
            let mut set = group_and_dependents(core, group);
            set.insert(name.clone());
            set
        }
        None => BTreeSet::from([name.clone()]),
    }
}

/// `name` and its failure-group peers (just `name` outside a group).
pub(super) fn peers(core: &Core, name: &ServiceName) -> BTreeSet<ServiceName> {
    match core.service(name).failure_group() {
        Some(group) => core.manifests.group_members(group).into_iter().chain([name.clone()]).collect(),
        None => BTreeSet::from([name.clone()]),
    }
}

/// Cycles `name` as a restart does: alone when `warm` (with its warm stop), otherwise with
/// its failure group and everything that depends on them. Returns who cycles.
pub(super) fn cycle_for_restart(core: &mut Core, name: &ServiceName, warm: bool) -> Vec<ServiceName> {
    let roots = if warm { BTreeSet::from([name.clone()]) } else { with_group(core, name) };
    if let (false, Some(group)) = (warm, core.service(name).failure_group()) {
        core.cleared.insert(group.to_owned(), GroupClear::Needed);
    }
    let closure: BTreeSet<ServiceName> =
        roots.iter().flat_map(|r| core.manifests.graph().dependent_closure(r)).collect();
    let mut affected = Vec::new();
    for dep in closure {
        if dep != *name && !core.want(&dep) {
            continue;
        }
        super::lifecycle::reset(core, &dep);
        // Only a warm or fast stop is chosen ahead; a cold one decides at the stop.
        let mode = if warm { Some(core.stop_mode(&dep)).filter(|m| *m != super::types::StopMode::Cold) } else { None };
        let unit = core.unit(&dep);
        if unit.phase.is_active() {
            unit.cycle = Some(Cycle { mode });
            unit.comeback.requested = true;
        }
        affected.push(dep);
    }
    affected
}
