//! The FEATURE contract inside the core: CONFIG_DB entries decide what runs and how it
//! restarts, the CONFIG_DB and delayed-start gates hold services back, and STATE_DB reports
//! say what happened. Changes take effect at once.

use std::collections::BTreeMap;

use super::core::{Core, Delayed, GroupClear};
use super::event::{DbRequest, Effect, Failure, Notice, RequestId, Response};
use super::plan::Phase;
use super::types::{BootType, CommandError, ErrorKind, FeatureSource, FeatureView};
use super::waiters::{Answer, Target, Waiter};
use crate::db::Fields;
use crate::manifest::ServiceName;
use crate::sonic::feature::{Feature, FeatureReport, FeatureState};

/// The gate every service but the database waits for.
const CONFIG_GATE: &str = "CONFIG_DB_INITIALIZED";
const PORTS_GATE: &str = "PortInitDone";
const RECONCILE_GATE: &str = "warm-restart reconciliation";
const COLD_START_GATE: &str = "its failure group's cold start";

/// What an operator changes in a FEATURE entry.
#[derive(Debug, Clone, Default)]
pub(super) struct Change {
    pub state: Option<String>,
    pub auto_restart: Option<String>,
    /// `set_owner`.
    pub owner: Option<String>,
}

/// An operator's FEATURE change on its way through CONFIG_DB.
#[derive(Debug)]
pub(super) struct Request {
    pub id: RequestId,
    pub service: ServiceName,
    pub change: Change,
    pub wait: bool,
    /// CONFIG_DB has the write; the supervisor waits to see it come back.
    pub written: bool,
}

/// What a service waits for before it may start, besides other services.
pub(super) fn gate(core: &Core, name: &ServiceName) -> Option<&'static str> {
    let database = core.manifests.database()?;
    if name == database || !core.config.database_link {
        return None;
    }
    if !core.config_loaded {
        return Some(CONFIG_GATE);
    }
    if is_delayed(core, name) && core.delayed != Delayed::Released {
        return Some(if core.config.boot == BootType::Cold { PORTS_GATE } else { RECONCILE_GATE });
    }
    let group = core.service(name).failure_group()?;
    (core.cleared.get(group) != Some(&GroupClear::Done)).then_some(COLD_START_GATE)
}

/// FEATURE `delayed`, else the manifest's.
pub(super) fn is_delayed(core: &Core, name: &ServiceName) -> bool {
    core.features.get(name).map_or(core.service(name).manifest.service.delayed, |f| f.delayed)
}

/// Whether a crash restarts the service: FEATURE `auto_restart`, else the manifest.
pub(super) fn auto_restart(core: &Core, name: &ServiceName) -> bool {
    core.features.get(name).map_or(core.service(name).manifest.service.auto_restart, |f| f.auto_restart)
}

/// The first service `name` needs (itself included) whose FEATURE is disabled.
pub(super) fn disabled_by_feature(core: &Core, name: &ServiceName) -> Option<ServiceName> {
    core.manifests
        .graph()
        .requirement_closure(name)
        .into_iter()
        .find(|dep| core.features.get(dep).is_some_and(|f| !f.state.runs()))
}

pub(super) fn on_ports_ready(core: &mut Core, ready: bool) {
    if ready && !core.ports_ready {
        tracing::info!("ports initialised (PortInitDone)");
    }
    core.ports_ready = ready;
}

/// Releases delayed services once, SONiC-style: on PortInitDone after a cold boot, once
/// every reconciling process reports `reconciled` after a warm or fast one, or when the
/// fallback passes.
pub(super) fn release_delayed(core: &mut Core) {
    let Delayed::Held { deadline } = core.delayed else { return };
    if !core.config_loaded {
        return;
    }
    let now = core.now.mono;
    let deadline = deadline.unwrap_or(now + core.config.delayed_fallback);
    core.delayed = Delayed::Held { deadline: Some(deadline) };
    let ready = match core.config.boot {
        BootType::Cold => core.ports_ready,
        _ => {
            let reconciling: Vec<&str> = core
                .manifests
                .services()
                .filter(|s| core.want(&s.name) && !is_delayed(core, &s.name))
                .flat_map(|s| s.manifest.processes.iter().filter(|p| p.reconciles).map(|p| p.name.as_str()))
                .collect();
            reconciling.iter().all(|p| core.warm.states.get(*p).is_some_and(|s| s == "reconciled"))
        }
    };
    if ready || now >= deadline {
        tracing::info!(fallback = !ready, "starting delayed services");
        core.delayed = Delayed::Released;
    }
}

/// Accepts a FEATURE entry if it parses and its state change is one SONiC allows; an entry
/// that changes the state takes effect at once and replaces any operator start or stop.
fn accept(core: &mut Core, name: &ServiceName, fields: &Fields) {
    let feature = match Feature::parse(name.as_str(), fields) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "ignored a malformed FEATURE entry; the previous one stays");
            return;
        }
    };
    if !feature.state.runs() && core.manifests.database() == Some(name) {
        tracing::error!(service = %name, "ignored CONFIG_DB FEATURE|{name} field state: the database is always enabled");
        return;
    }
    let previous = core.features.get(name).map(|f| f.state);
    if !FeatureState::may_become(previous, feature.state) {
        tracing::error!(
            service = %name,
            from = previous.map(FeatureState::as_str).unwrap_or("none"),
            to = feature.state.as_str(),
            "ignored a FEATURE state change SONiC does not allow (CONFIG_DB FEATURE|{name} field state)"
        );
        return;
    }
    if previous != Some(feature.state) {
        tracing::info!(service = %name, state = feature.state.as_str(), "FEATURE state");
        core.emit(Effect::Notice(Notice::Feature { service: name.clone(), state: feature.state.as_str().to_owned() }));
        if core.state.services.contains_key(name.as_str()) {
            core.set_desired(name, None);
        }
        if feature.state.runs() {
            super::lifecycle::reset(core, name);
        }
    }
    let refused_owner = feature.kube_owned() && core.service(name).manifest.service.local_only;
    let was_refused = core.features.get(name).is_some_and(|f| f.kube_owned());
    if refused_owner && !was_refused {
        tracing::error!(
            service = %name,
            "refused CONFIG_DB FEATURE|{name} field set_owner kube: {name} is the data plane or its database, which stays local"
        );
    }
    core.features.insert(name.clone(), feature);
}

pub(super) fn on_loaded(core: &mut Core, entries: BTreeMap<String, Fields>) {
    let mut seen = Vec::new();
    for (key, fields) in &entries {
        match core.manifests.lookup(key).cloned() {
            Some(name) => {
                accept(core, &name, fields);
                seen.push(name);
            }
            None => tracing::debug!(feature = %key, "FEATURE entry for a service without a manifest"),
        }
    }
    core.features.retain(|name, _| seen.contains(name));
    core.config_loaded = true;
    tracing::info!(entries = entries.len(), "FEATURE table loaded");
}

pub(super) fn on_changed(core: &mut Core, key: &str, fields: Option<Fields>) {
    let Some(name) = core.manifests.lookup(key).cloned() else { return };
    match fields {
        Some(fields) => accept(core, &name, &fields),
        None => {
            tracing::info!(service = %name, "FEATURE entry deleted; the manifest's default applies");
            core.features.remove(&name);
        }
    }
}

/// Validates an operator's change as `config feature` does: known values, no change to
/// `always_*` settings, and a transition SONiC allows.
pub(super) fn check_change(core: &Core, name: &ServiceName, change: &Change) -> Result<(), CommandError> {
    let current = core.features.get(name);
    if let Some(owner) = change.owner.as_deref() {
        if owner != "local" && owner != "kube" {
            return Err(CommandError::new(ErrorKind::BadRequest, format!("owner {owner:?}: use local or kube")));
        }
        if owner == "kube" && core.service(name).manifest.service.local_only {
            return Err(CommandError::new(
                ErrorKind::Conflict,
                format!("{name} is the data plane or its database: it stays local"),
            ));
        }
    }
    if let Some(state) = change.state.as_deref() {
        let target = FeatureState::parse(state)
            .filter(|s| matches!(s, FeatureState::Enabled | FeatureState::Disabled))
            .ok_or_else(|| {
                CommandError::new(ErrorKind::BadRequest, format!("state {state:?}: use enabled or disabled"))
            })?;
        if target == FeatureState::Disabled && core.manifests.database() == Some(name) {
            return Err(CommandError::new(
                ErrorKind::Conflict,
                format!("{name} is the switch's database; it is always enabled"),
            ));
        }
        if let Some(f) = current {
            if matches!(f.state, FeatureState::AlwaysEnabled | FeatureState::AlwaysDisabled) {
                return Err(CommandError::new(
                    ErrorKind::Conflict,
                    format!("FEATURE {name} is {} and cannot be changed", f.state.as_str()),
                ));
            }
        }
        if !FeatureState::may_become(current.map(|f| f.state), target) {
            return Err(CommandError::new(ErrorKind::Conflict, format!("FEATURE {name} cannot become {state}")));
        }
    }
    if let Some(value) = change.auto_restart.as_deref() {
        if value != "enabled" && value != "disabled" {
            return Err(CommandError::new(
                ErrorKind::BadRequest,
                format!("auto_restart {value:?}: use enabled or disabled"),
            ));
        }
        if current.is_some_and(|f| f.auto_restart_locked) {
            return Err(CommandError::new(
                ErrorKind::Conflict,
                format!("FEATURE {name} auto_restart is always_enabled"),
            ));
        }
    }
    Ok(())
}

/// `config feature state|autorestart`: checked here, then written to CONFIG_DB by the
/// database link; the core acts on it when the entry comes back through its subscription,
/// as on any other writer's, and answers then.
pub(super) fn begin_change(core: &mut Core, id: RequestId, service: &str, change: Change, wait: bool) {
    let refuse = |core: &mut Core, e: CommandError| core.emit(Effect::Reply { to: id, result: Err(e) });
    let Some(name) = core.manifests.lookup(service).cloned() else {
        let e = CommandError::new(ErrorKind::NotFound, core.manifests.unknown(service));
        return refuse(core, e);
    };
    if change.state.is_none() && change.auto_restart.is_none() && change.owner.is_none() {
        let e = CommandError::new(ErrorKind::BadRequest, "nothing to change: give state, auto_restart or owner");
        return refuse(core, e);
    }
    if let Err(e) = check_change(core, &name, &change) {
        return refuse(core, e);
    }
    if !core.config.database_link || !core.config_loaded {
        let e =
            CommandError::new(ErrorKind::Unavailable, "the database is not running; see `soniclet status database`");
        return refuse(core, e);
    }
    let written = [("state", &change.state), ("auto_restart", &change.auto_restart), ("set_owner", &change.owner)];
    let fields = written.iter().filter_map(|(field, value)| Some(((*field).to_owned(), (*value).clone()?))).collect();
    let state_if_missing = view(core, &name).state;
    core.db(DbRequest::WriteFeature { service: name.clone(), fields, state_if_missing });
    core.feature_requests.push(Request { id, service: name, change, wait, written: false });
}

/// The database link wrote (or could not write) an operator's change.
pub(super) fn on_written(core: &mut Core, service: &ServiceName, result: Result<(), Failure>) {
    let Some(index) = core.feature_requests.iter().position(|r| &r.service == service && !r.written) else { return };
    match result {
        Ok(()) => core.feature_requests[index].written = true,
        Err(e) => {
            let request = core.feature_requests.remove(index);
            let message = format!("cannot write CONFIG_DB FEATURE|{service}: {e}");
            core.emit(Effect::Reply {
                to: request.id,
                result: Err(CommandError::new(ErrorKind::Unavailable, message)),
            });
        }
    }
}

/// Answers the FEATURE changes that came back: at once, or once the service reached its new
/// state (`wait`).
pub(super) fn resolve_requests(core: &mut Core) {
    let requests = std::mem::take(&mut core.feature_requests);
    for request in requests {
        let current = view(core, &request.service);
        let change = &request.change;
        let applied = request.written
            && change.state.as_ref().is_none_or(|s| &current.state == s)
            && change.auto_restart.as_ref().is_none_or(|a| &current.auto_restart == a)
            && change.owner.as_ref().is_none_or(|o| &current.set_owner == o);
        if !applied {
            core.feature_requests.push(request);
            continue;
        }
        match (&request.change.state, request.wait) {
            (Some(state), true) => {
                let target = if state == "disabled" { Target::Stopped } else { Target::Ready };
                core.waiters.push(Waiter {
                    id: request.id,
                    services: vec![request.service.clone()],
                    target,
                    answer: Answer::Feature(request.service),
                });
            }
            _ => core.emit(Effect::Reply { to: request.id, result: Ok(Response::Feature(current)) }),
        }
    }
}

/// One service's FEATURE view.
pub(super) fn view(core: &Core, name: &ServiceName) -> FeatureView {
    let unit = &core.units[name];
    let feature = core.features.get(name);
    let running = unit.phase.is_active();
    let manifest = &core.service(name).manifest.service;
    FeatureView {
        name: name.clone(),
        state: feature.map_or_else(
            || if manifest.enabled { "enabled" } else { "disabled" }.to_owned(),
            |f| f.state.as_str().to_owned(),
        ),
        source: if feature.is_some() { FeatureSource::ConfigDb } else { FeatureSource::Manifest },
        auto_restart: match feature {
            Some(f) if f.auto_restart_locked => "always_enabled",
            _ if auto_restart(core, name) => "enabled",
            _ => "disabled",
        }
        .to_owned(),
        set_owner: feature.map_or("local".to_owned(), |f| f.set_owner.clone()),
        current_owner: match super::ownership::kube_pod(core, name) {
            Some(_) => "kube",
            None if running => "local",
            None => "none",
        }
        .to_owned(),
        delayed: feature.map_or(manifest.delayed, |f| f.delayed),
        service_state: super::status::state(core, name),
    }
}

pub(super) fn views(core: &Core) -> Vec<FeatureView> {
    core.manifests.graph().start_order().iter().map(|name| view(core, name)).collect()
}

/// Sends STATE_DB `FEATURE|<name>` for every service whose report changed, and tells the
/// database link whether the database is ready.
pub(super) fn report(core: &mut Core) {
    if !core.config.database_link {
        return;
    }
    if let Some(database) = core.manifests.database().cloned() {
        let ready = core.units[&database].phase == Phase::Ready;
        core.database_ready(ready);
        if !ready && core.config_loaded {
            // CONFIG_DB lives in the database: it must be read again once it is back.
            core.config_loaded = false;
            core.ports_ready = false;
        }
    }
    let mut changed = Vec::new();
    for (name, unit) in &core.units {
        let running = unit.phase.is_active() && unit.pid().is_some();
        let pod = super::ownership::kube_pod(core, name);
        // ctrmgr's words: the pod runs it (current_owner kube, remote_state running), the
        // local container does, or nothing does.
        let (container_id, current_owner, remote_state, up) = match pod {
            Some(pod) => {
                let remote = if pod.ready { "running" } else { "pending" };
                (pod.container_id.clone(), "kube", remote, pod.ready)
            }
            None if running => (name.to_string(), "local", "none", true),
            None => (String::new(), "none", "none", false),
        };
        let report = FeatureReport {
            name: name.to_string(),
            state: match unit.phase {
                Phase::Failed { .. } => "failed",
                _ if core.want(name) => "enabled",
                _ => "disabled",
            }
            .to_owned(),
            container_id,
            current_owner: current_owner.to_owned(),
            system_state: if up { "up" } else { "down" }.to_owned(),
            remote_state: remote_state.to_owned(),
        };
        if core.reported.get(name) != Some(&report) {
            changed.push((name.clone(), report));
        }
    }
    for (name, report) in changed {
        core.db(DbRequest::Feature(report.clone()));
        core.reported.insert(name, report);
    }
    let system = system_state(core);
    if core.system_reported.as_ref() != Some(&system) {
        tracing::info!(status = %system.0, reason = %system.1, "SYSTEM_READY");
        core.db(DbRequest::System { status: system.0.clone(), reason: system.1.clone() });
        core.emit(Effect::Notice(Notice::SystemReady { status: system.0.clone(), reason: system.1.clone() }));
        core.system_reported = Some(system);
    }
}

/// STATE_DB `SYSTEM_READY|SYSTEM_STATE`: UP once every enabled service is ready, FAILED
/// when one failed, DOWN (with the reason) otherwise.
fn system_state(core: &mut Core) -> (String, String) {
    let state = system_status(core);
    if state.0 == "UP" {
        core.settled = true;
    }
    state
}

/// What `SYSTEM_READY|SYSTEM_STATE` says now: status and reason.
pub(super) fn system_status(core: &Core) -> (String, String) {
    if core.reload.is_some() {
        return ("DOWN".into(), "config reload in progress".into());
    }
    let wanted: Vec<&ServiceName> = core.units.keys().filter(|n| core.want(n)).collect();
    if let Some((name, reason)) = wanted.iter().find_map(|n| match &core.units[*n].phase {
        Phase::Failed { reason, .. } => Some((*n, reason.clone())),
        _ => None,
    }) {
        return ("FAILED".into(), format!("{name} failed: {reason}"));
    }
    let ready = wanted.iter().filter(|n| core.is_ready(n)).count();
    if ready == wanted.len() {
        return ("UP".into(), "all enabled services are ready".into());
    }
    ("DOWN".into(), format!("{ready} of {} enabled services ready", wanted.len()))
}
