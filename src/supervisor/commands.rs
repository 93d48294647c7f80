//! Operator commands, waiters and status.

use super::plan::Phase;
use std::collections::BTreeSet;

use super::{
    rfc3339, Command, CommandError, GroupClear, Health, Reply, Supervisor, Unit, WaitFor, Waiter, WaiterReply,
};
use crate::api::{ErrorKind, ServiceStatus, StatusResponse};
use crate::manifest::ServiceName;
use crate::runtime::ContainerRuntime;
use crate::store::Desired;

impl<R: ContainerRuntime, P: Health> Supervisor<R, P> {
    pub(super) fn handle_command(&mut self, command: Command) {
        match command {
            Command::Status { reply } => {
                let _ = reply.send(Ok(self.status()));
            }
            Command::Start { service, wait, reply } => {
                let Some((name, reply)) = self.resolve_startable(&service, reply) else { return };
                let Some(reply) = self.unless_changing(&name, reply) else { return };
                // A failure-group member comes up with its group and the group's dependents;
                // a dependent (bgp) brings up what it is a dependent of (the swss group).
                let mut roots = self.with_group(&name);
                for target in &self.service(&name).manifest.service.dependent_of {
                    roots.extend(self.peers(target));
                }
                for member in roots {
                    if member != name && self.disabled_by_feature(&member).is_some() {
                        continue;
                    }
                    for dep in self.manifests.graph().requirement_closure(&member) {
                        self.store.state_mut().services.entry(dep.to_string()).or_default().desired =
                            Some(Desired::Running);
                        self.reset(&dep);
                    }
                }
                self.save();
                self.respond(name.clone(), vec![name], WaitFor::Ready, wait, reply);
            }
            Command::Stop { service, wait, reply } => {
                let Some((name, reply)) = self.resolve(&service, reply) else { return };
                let Some(reply) = self.unless_changing(&name, reply) else { return };
                // A cold stop of a failure-group member takes the group and its dependents down;
                // with warm restart enabled, only the member goes.
                let roots =
                    if self.warm_enabled(&name) { BTreeSet::from([name.clone()]) } else { self.with_group(&name) };
                if let (false, Some(group)) = (self.warm_enabled(&name), self.service(&name).failure_group()) {
                    self.cleared.insert(group.to_owned(), GroupClear::Needed);
                }
                let closure: BTreeSet<ServiceName> =
                    roots.iter().flat_map(|r| self.manifests.graph().dependent_closure(r)).collect();
                for dep in &closure {
                    self.store.state_mut().services.entry(dep.to_string()).or_default().desired =
                        Some(Desired::Stopped);
                    let unit = self.unit(dep);
                    // A crashed or held service still has a dead container to clean up.
                    if matches!(unit.phase, Phase::Backoff { .. } | Phase::Failed { .. }) {
                        unit.blocked = false;
                        unit.failures.clear();
                        if unit.has_container {
                            self.stop(dep);
                        } else {
                            unit.set_phase(Phase::Stopped);
                        }
                    }
                }
                self.save();
                self.respond(name, closure.into_iter().collect(), WaitFor::Stopped, wait, reply);
            }
            Command::Restart { service, wait, reply } => {
                let Some((name, reply)) = self.resolve_startable(&service, reply) else { return };
                let Some(reply) = self.unless_changing(&name, reply) else { return };
                for dep in self.manifests.graph().requirement_closure(&name) {
                    self.store.state_mut().services.entry(dep.to_string()).or_default().desired =
                        Some(Desired::Running);
                }
                // As on a crash: a failure-group member restarts its group cold, or restarts
                // alone with warm restart enabled.
                let warm = self.warm_enabled(&name);
                let affected = self.cycle_for_restart(&name, warm);
                self.save();
                self.respond(name, affected, WaitFor::Ready, wait, reply);
            }
            Command::Change { request, progress } => self.begin_change(request, progress),
            Command::Reload { config, force, progress } => self.begin_reload(config, force, progress),
            Command::Features { reply } => {
                let _ = reply.send(Ok(self.features_status()));
            }
            Command::CheckFeatureChange { service, state, auto_restart, reply } => {
                let Some((name, reply)) = self.resolve(&service, reply) else { return };
                let result = self.check_feature_change(&name, state.as_deref(), auto_restart.as_deref());
                let _ = reply.send(result.map(|()| name));
            }
            Command::Wait { services, stopped, reply } => {
                let mut names = Vec::new();
                for service in &services {
                    match self.manifests.lookup(service) {
                        Some(name) => names.push(name.clone()),
                        None => {
                            let message = format!("unknown service {service:?}");
                            let _ = reply.send(Err(CommandError::new(ErrorKind::NotFound, message)));
                            return;
                        }
                    }
                }
                if names.is_empty() {
                    names = self.units.keys().filter(|n| self.want(n)).cloned().collect();
                }
                let target = if stopped { WaitFor::Stopped } else { WaitFor::Ready };
                self.waiters.push(Waiter { services: names, target, reply: WaiterReply::All(reply) });
            }
            Command::Shutdown { stop_services, reply } => {
                if stop_services {
                    tracing::info!("stopping every service, then exiting");
                    self.draining = Some(reply);
                } else {
                    let _ = reply.send(Ok(()));
                    self.shutdown.cancel();
                }
            }
        }
    }

    /// The reply, unless `name` is under an image change (then answered with the refusal).
    fn unless_changing<T>(&self, name: &ServiceName, reply: Reply<T>) -> Option<Reply<T>> {
        match self.refuse_during_change(name) {
            Ok(()) => Some(reply),
            Err(e) => {
                let _ = reply.send(Err(e));
                None
            }
        }
    }

    /// The first service `name` needs (itself included) whose FEATURE is disabled.
    pub(super) fn disabled_by_feature(&self, name: &ServiceName) -> Option<ServiceName> {
        self.manifests
            .graph()
            .requirement_closure(name)
            .into_iter()
            .find(|dep| self.features.get(dep).is_some_and(|f| !f.state.runs()))
    }

    /// An operator action resets the failure budget and releases a held service.
    pub(super) fn reset(&mut self, name: &ServiceName) {
        let unit = self.unit(name);
        unit.failures.clear();
        unit.blocked = false;
        unit.recovering = None;
        unit.restart_requested = false;
        if matches!(unit.phase, Phase::Failed { .. } | Phase::Backoff { .. }) {
            unit.message = None;
            unit.set_phase(Phase::Stopped);
        }
    }

    /// Like [`Self::resolve`], refusing a service that a disabled FEATURE holds (itself or a
    /// service it requires), and saying how to enable it.
    fn resolve_startable<T>(&self, service: &str, reply: Reply<T>) -> Option<(ServiceName, Reply<T>)> {
        let (name, reply) = self.resolve(service, reply)?;
        match self.disabled_by_feature(&name) {
            None => Some((name, reply)),
            Some(disabled) => {
                let message = format!(
                    "FEATURE {disabled} is disabled in CONFIG_DB; enable it with `soniclet feature state {disabled} enabled`"
                );
                let _ = reply.send(Err(CommandError::new(ErrorKind::Conflict, message)));
                None
            }
        }
    }

    /// The service an operator named, or an error reply listing the known ones.
    pub(super) fn resolve<T>(&self, service: &str, reply: Reply<T>) -> Option<(ServiceName, Reply<T>)> {
        match self.manifests.lookup(service) {
            Some(name) => Some((name.clone(), reply)),
            None => {
                let _ = reply.send(Err(CommandError::new(ErrorKind::NotFound, self.manifests.unknown(service))));
                None
            }
        }
    }

    pub(super) fn respond(
        &mut self,
        subject: ServiceName,
        services: Vec<ServiceName>,
        target: WaitFor,
        wait: bool,
        reply: Reply<ServiceStatus>,
    ) {
        if wait {
            self.waiters.push(Waiter { services, target, reply: WaiterReply::Service(subject, reply) });
        } else {
            let _ = reply.send(Ok(self.service_status(&subject)));
        }
    }

    pub(super) fn resolve_waiters(&mut self) {
        let waiters = std::mem::take(&mut self.waiters);
        for waiter in waiters {
            if waiter.reply.is_closed() {
                continue;
            }
            match (self.check_waiter(&waiter), waiter.reply) {
                (None, reply) => self.waiters.push(Waiter { reply, ..waiter }),
                (Some(Ok(())), WaiterReply::Service(subject, reply)) => {
                    let _ = reply.send(Ok(self.service_status(&subject)));
                }
                (Some(Ok(())), WaiterReply::All(reply)) => {
                    let _ = reply.send(Ok(self.status()));
                }
                (Some(Err(e)), WaiterReply::Service(_, reply)) => {
                    let _ = reply.send(Err(e));
                }
                (Some(Err(e)), WaiterReply::All(reply)) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }

    pub(super) fn check_waiter(&self, waiter: &Waiter) -> Option<Result<(), CommandError>> {
        let mut done = true;
        for name in &waiter.services {
            let unit = &self.units[name];
            match waiter.target {
                WaitFor::Ready => {
                    if let Phase::Failed { reason } = &unit.phase {
                        return Some(Err(CommandError::new(ErrorKind::Failed, format!("{name} failed: {reason}"))));
                    }
                    if !self.want(name) {
                        return Some(Err(CommandError::new(
                            ErrorKind::Conflict,
                            format!("{name} was stopped while starting"),
                        )));
                    }
                    done &= unit.phase == Phase::Ready && !unit.cycle;
                }
                WaitFor::Stopped => done &= !unit.phase.is_active(),
            }
        }
        done.then_some(Ok(()))
    }

    pub(super) fn state_name(&self, name: &ServiceName, unit: &Unit) -> &'static str {
        match &unit.phase {
            Phase::Stopped if self.want(name) => "waiting",
            Phase::Stopped => "stopped",
            Phase::Starting => "starting",
            Phase::Probing | Phase::Ready => "running",
            Phase::Stopping => "stopping",
            Phase::Backoff { .. } => "restarting",
            Phase::Failed { .. } => "failed",
        }
    }

    pub(super) fn service_status(&self, name: &ServiceName) -> ServiceStatus {
        let unit = &self.units[name];
        let mut message = unit.message.clone();
        if let Some(deps) = self.waiting.get(name) {
            let deps: Vec<&str> = deps.iter().map(|d| d.as_str()).collect();
            message = Some(format!("waiting for {}", deps.join(", ")));
        }
        if let Some((process, since, _)) = &unit.degraded {
            let minutes = since.elapsed().as_secs() / 60;
            message = Some(format!(
                "degraded: critical process {process} is not running ({minutes} min); auto-restart is disabled"
            ));
        }
        ServiceStatus {
            name: name.to_string(),
            state: self.state_name(name, unit).to_owned(),
            ready: unit.phase == Phase::Ready,
            enabled: self.want(name),
            pid: unit.pid,
            restarts: unit.restarts,
            image: self.image_ref(name),
            image_digest: unit.image_digest.clone(),
            container_id: unit.has_container.then(|| name.to_string()),
            generation: unit.generation,
            since: rfc3339(unit.since),
            last_exit_code: unit.last_exit,
            message,
            upgrade: unit.upgrade_note.clone(),
            downtime_ms: unit.last_downtime.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            restart: if unit.restart_requested {
                Some("requested".to_owned())
            } else {
                unit.recovering.as_ref().map(|_| "crash".to_owned())
            },
        }
    }

    pub(super) fn status(&self) -> StatusResponse {
        StatusResponse {
            daemon: crate::api::DaemonInfo {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                since: rfc3339(self.started_at),
            },
            services: self.manifests.graph().start_order().iter().map(|n| self.service_status(n)).collect(),
        }
    }
}
