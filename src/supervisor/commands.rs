//! Operator commands: start, stop, restart, waits, status and the rest, each answered with
//! an [`Effect::Reply`] (at once, or by a waiter later).

use std::collections::BTreeSet;

use super::core::{Core, GroupClear};
use super::event::{Command, Effect, RequestId, Response};
use super::plan::Phase;
use super::types::{CommandError, ErrorKind};
use super::waiters::{Answer, Target, Waiter};
use super::{change, features, groups, lifecycle, release, reload, status};
use crate::manifest::ServiceName;
use crate::state::store::Desired;

pub(super) fn handle(core: &mut Core, id: RequestId, command: Command) {
    match command {
        Command::Status => {
            let view = status::status_view(core);
            core.emit(Effect::Reply { to: id, result: Ok(Response::Status(view)) });
        }
        Command::Start { service, wait } => start(core, id, &service, wait),
        Command::Stop { service, wait } => stop(core, id, &service, wait),
        Command::Restart { service, wait } => restart(core, id, &service, wait),
        Command::Wait { services, stopped } => {
            let mut names = Vec::new();
            for service in &services {
                match core.manifests.lookup(service) {
                    Some(name) => names.push(name.clone()),
                    None => {
                        let e = CommandError::new(ErrorKind::NotFound, format!("unknown service {service:?}"));
                        return core.emit(Effect::Reply { to: id, result: Err(e) });
                    }
                }
            }
            if names.is_empty() {
                names = core.units.keys().filter(|n| core.want(n)).cloned().collect();
            }
            let target = if stopped { Target::Stopped } else { Target::Ready };
            core.waiters.push(Waiter { id, services: names, target, answer: Answer::All });
        }
        Command::Features => {
            let views = features::views(core);
            core.emit(Effect::Reply { to: id, result: Ok(Response::Features(views)) });
        }
        Command::ChangeFeature { service, state, auto_restart, owner, wait } => {
            let change = features::Change { state, auto_restart, owner };
            features::begin_change(core, id, &service, change, wait)
        }
        Command::Reload { config, force } => reload::begin(core, id, config, force),
        Command::Change(request) => change::begin(core, Some(id), request, false),
        Command::Release { release, timeout, settle } => release::begin(core, id, release, timeout, settle),
        Command::Import { paths } => core.emit(Effect::Import { id, paths }),
        Command::Os(request) => super::os::command(core, id, request),
        Command::Shutdown { stop_services } => {
            if stop_services {
                tracing::info!("stopping every service, then exiting");
                core.draining = Some(id);
            } else {
                core.emit(Effect::Reply { to: id, result: Ok(Response::Done) });
                core.emit(Effect::Exit);
            }
        }
    }
}

/// The service an operator named, or the refusal listing the known ones.
fn resolve(core: &mut Core, id: RequestId, service: &str) -> Option<ServiceName> {
    match core.manifests.lookup(service) {
        Some(name) => Some(name.clone()),
        None => {
            let e = CommandError::new(ErrorKind::NotFound, core.manifests.unknown(service));
            core.emit(Effect::Reply { to: id, result: Err(e) });
            None
        }
    }
}

/// Like [`resolve`], refusing a service that a disabled FEATURE holds (itself or a service
/// it requires), and saying how to enable it; and a service under an image change.
fn resolve_startable(core: &mut Core, id: RequestId, service: &str) -> Option<ServiceName> {
    let name = resolve(core, id, service)?;
    if let Some(disabled) = features::disabled_by_feature(core, &name) {
        let message = format!(
            "FEATURE {disabled} is disabled in CONFIG_DB; enable it with `soniclet feature state {disabled} enabled`"
        );
        core.emit(Effect::Reply { to: id, result: Err(CommandError::new(ErrorKind::Conflict, message)) });
        return None;
    }
    unless_changing(core, id, name)
}

fn unless_changing(core: &mut Core, id: RequestId, name: ServiceName) -> Option<ServiceName> {
    match change::refuse_during_change(core, &name) {
        Ok(()) => Some(name),
        Err(e) => {
            core.emit(Effect::Reply { to: id, result: Err(e) });
            None
        }
    }
}

fn respond(
    core: &mut Core,
    id: RequestId,
    subject: ServiceName,
    services: Vec<ServiceName>,
    target: Target,
    wait: bool,
) {
    if wait {
        core.waiters.push(Waiter { id, services, target, answer: Answer::Service(subject) });
    } else {
        let view = status::service_view(core, &subject);
        core.emit(Effect::Reply { to: id, result: Ok(Response::Service(view)) });
    }
}

fn start(core: &mut Core, id: RequestId, service: &str, wait: bool) {
    let Some(name) = resolve_startable(core, id, service) else { return };
    // A failure-group member comes up with its group and the group's dependents; a
    // dependent (bgp) brings up what it is a dependent of (the swss group).
    let mut roots = groups::with_group(core, &name);
    for target in core.service(&name).manifest.service.dependent_of.clone() {
        roots.extend(groups::peers(core, &target));
    }
    for member in roots {
        if member != name && features::disabled_by_feature(core, &member).is_some() {
            continue;
        }
        for dep in core.manifests.graph().requirement_closure(&member) {
            core.set_desired(&dep, Some(Desired::Running));
            lifecycle::reset(core, &dep);
        }
    }
    respond(core, id, name.clone(), vec![name], Target::Ready, wait);
}

fn stop(core: &mut Core, id: RequestId, service: &str, wait: bool) {
    let Some(name) = resolve(core, id, service) else { return };
    let Some(name) = unless_changing(core, id, name) else { return };
    // A cold stop of a failure-group member takes the group and its dependents down; with
    // warm restart enabled, only the member goes.
    let warm = groups::warm_enabled(core, &name);
    let roots = if warm { BTreeSet::from([name.clone()]) } else { groups::with_group(core, &name) };
    if let (false, Some(group)) = (warm, core.service(&name).failure_group()) {
        core.cleared.insert(group.to_owned(), GroupClear::Needed);
    }
    let closure: BTreeSet<ServiceName> =
        roots.iter().flat_map(|r| core.manifests.graph().dependent_closure(r)).collect();
    let wall = core.now.wall;
    for dep in &closure {
        core.set_desired(dep, Some(Desired::Stopped));
        let unit = core.unit(dep);
        // A crashed or held service still has a dead container to clean up.
        if matches!(unit.phase, Phase::Backoff { .. } | Phase::Failed { .. }) {
            unit.failures.clear();
            if unit.has_container() {
                lifecycle::stop(core, dep);
            } else {
                unit.set_phase(Phase::Stopped, wall);
            }
        }
    }
    respond(core, id, name, closure.into_iter().collect(), Target::Stopped, wait);
}

fn restart(core: &mut Core, id: RequestId, service: &str, wait: bool) {
    let Some(name) = resolve_startable(core, id, service) else { return };
    for dep in core.manifests.graph().requirement_closure(&name) {
        core.set_desired(&dep, Some(Desired::Running));
    }
    // As on a crash: a failure-group member restarts its group cold, or restarts alone with
    // warm restart enabled.
    let warm = groups::warm_enabled(core, &name);
    let affected = groups::cycle_for_restart(core, &name, warm);
    respond(core, id, name, affected, Target::Ready, wait);
}
