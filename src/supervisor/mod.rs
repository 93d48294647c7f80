//! The supervisor: the single owner of every service's lifecycle.
//!
//! One task runs one loop over one closed [`Event`] enum: API commands, operation results,
//! task exits and probe results. After each event it calls the pure [`plan::plan`] and
//! carries out the actions by spawning tracked operations, whose results come back as events.
//! Nothing else changes a service's state, so there are no locks and no races between, say, a
//! crash and an operator's stop.
//!
//! **Invariant:** this module imports no client crate (containerd, tonic, redis); it speaks to
//! the outside through [`ContainerRuntime`] and [`Readiness`] only.

pub mod plan;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{ErrorKind, ServiceStatus, StatusResponse};
use crate::manifest::{ManifestSet, Service, ServiceName};
use crate::runtime::spec::{self, HostSettings};
use crate::runtime::{labels, ContainerRuntime, CreateContainer, ExitStatus, LogSink, RuntimeError, TaskState};
use crate::store::{Desired, StateStore};
use plan::{Action, Phase, UnitView};

/// Readiness checks, implemented over the runtime and Redis by `probe::Prober`.
pub trait Readiness: Send + Sync + 'static {
    /// `Ok(true)` when ready; `Ok(false)` or `Err(detail)` when not yet.
    fn check(&self, service: &Service, container: &str) -> impl Future<Output = Result<bool, String>> + Send;
}

/// A command's failure, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CommandError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, CommandError>>;

/// Operator commands, each with its reply channel.
#[derive(Debug)]
pub enum Command {
    Status {
        reply: Reply<StatusResponse>,
    },
    Start {
        service: String,
        wait: bool,
        reply: Reply<ServiceStatus>,
    },
    Stop {
        service: String,
        wait: bool,
        reply: Reply<ServiceStatus>,
    },
    Restart {
        service: String,
        wait: bool,
        reply: Reply<ServiceStatus>,
    },
    /// Answer once these services (every enabled one when empty) are ready.
    Wait {
        services: Vec<String>,
        reply: Reply<StatusResponse>,
    },
    /// Stop every service in order, then end the loop.
    Shutdown {
        stop_services: bool,
        reply: Reply<()>,
    },
}

/// Every input of the supervisor loop.
#[derive(Debug)]
pub enum Event {
    Command(Command),
    Started {
        service: ServiceName,
        generation: u64,
        result: Result<Started, StartFailure>,
    },
    Stopped {
        service: ServiceName,
        generation: u64,
        result: Result<(), String>,
    },
    Exited {
        service: ServiceName,
        generation: u64,
        status: ExitStatus,
    },
    Probed {
        service: ServiceName,
        generation: u64,
        result: Result<(), String>,
    },
    /// Images were imported: services held for a missing image may start now.
    ImagesChanged,
}

#[derive(Debug)]
pub struct Started {
    pub pid: u32,
    pub image_digest: String,
}

#[derive(Debug)]
pub enum StartFailure {
    /// Nothing to retry until something changes (a missing image, a spec that cannot be built).
    Blocked(String),
    /// A runtime failure: counts against the failure budget.
    Failed(String),
}

/// Fixed inputs of the supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub host: HostSettings,
    pub logs: LogSink,
}

/// One service's runtime state.
#[derive(Debug)]
struct Unit {
    phase: Phase,
    since: SystemTime,
    /// Generation of the current (or last) container.
    generation: u64,
    pid: Option<u32>,
    /// Take the task down and bring it back (restart, changed manifest or image).
    cycle: bool,
    /// Held because it cannot be created, not because it failed: retried on new images.
    blocked: bool,
    restarts: u32,
    failures: VecDeque<Instant>,
    message: Option<String>,
    last_exit: Option<u32>,
    image_digest: Option<String>,
    has_container: bool,
    /// Set when a stop was issued because of a failure; decides where the stop lands.
    failure_pending: Option<String>,
    /// Cancels the current generation's watcher and probe.
    tasks: CancellationToken,
}

impl Unit {
    fn new() -> Self {
        Self {
            phase: Phase::Stopped,
            since: SystemTime::now(),
            generation: 0,
            pid: None,
            cycle: false,
            blocked: false,
            restarts: 0,
            failures: VecDeque::new(),
            message: None,
            last_exit: None,
            image_digest: None,
            has_container: false,
            failure_pending: None,
            tasks: CancellationToken::new(),
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        if self.phase != phase {
            self.phase = phase;
            self.since = SystemTime::now();
        }
    }
}

enum WaitFor {
    Ready,
    Stopped,
}

/// Where a waiter's answer goes: one service's status, or the whole status.
enum WaiterReply {
    Service(ServiceName, Reply<ServiceStatus>),
    All(Reply<StatusResponse>),
}

impl WaiterReply {
    fn is_closed(&self) -> bool {
        match self {
            WaiterReply::Service(_, r) => r.is_closed(),
            WaiterReply::All(r) => r.is_closed(),
        }
    }
}

struct Waiter {
    services: Vec<ServiceName>,
    target: WaitFor,
    reply: WaiterReply,
}

/// A handle to send events into the loop.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Event>,
}

impl Handle {
    pub fn send(&self, event: Event) -> bool {
        self.tx.send(event).is_ok()
    }

    /// Sends a command built around a fresh reply channel and awaits the reply.
    pub async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, CommandError> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Event::Command(make(tx))) {
            return Err(CommandError::new(ErrorKind::Unavailable, "the daemon is shutting down"));
        }
        rx.await.unwrap_or_else(|_| Err(CommandError::new(ErrorKind::Unavailable, "the daemon is shutting down")))
    }
}

pub struct Supervisor<R: ContainerRuntime, P: Readiness> {
    config: SupervisorConfig,
    manifests: Arc<ManifestSet>,
    runtime: Arc<R>,
    readiness: Arc<P>,
    store: StateStore,
    units: BTreeMap<ServiceName, Unit>,
    waiting: BTreeMap<ServiceName, Vec<ServiceName>>,
    waiters: Vec<Waiter>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    draining: Option<Reply<()>>,
    started_at: SystemTime,
}

impl<R: ContainerRuntime, P: Readiness> std::fmt::Debug for Supervisor<R, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").field("units", &self.units).finish_non_exhaustive()
    }
}

/// Digest of what a container is built from besides its image: the manifest and the host
/// settings. A container whose label differs is recreated.
pub fn container_digest(service: &Service, host: &HostSettings) -> String {
    let host_json = serde_json::to_vec(host).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(service.digest.as_bytes());
    hasher.update(&host_json);
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

fn backoff_delay(service: &Service, failures: usize) -> Duration {
    let policy = &service.manifest.service.restart;
    let exponent = u32::try_from(failures.saturating_sub(1)).unwrap_or(u32::MAX).min(20);
    let delay = policy.backoff_initial_ms.saturating_mul(1u64 << exponent).min(policy.backoff_max_ms);
    Duration::from_millis(delay)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl<R: ContainerRuntime, P: Readiness> Supervisor<R, P> {
    pub fn new(
        config: SupervisorConfig,
        manifests: Arc<ManifestSet>,
        runtime: Arc<R>,
        readiness: Arc<P>,
        store: StateStore,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let units = manifests.names().map(|n| (n.clone(), Unit::new())).collect();
        Self {
            config,
            manifests,
            runtime,
            readiness,
            store,
            units,
            waiting: BTreeMap::new(),
            waiters: Vec::new(),
            tx,
            rx,
            tracker,
            shutdown,
            draining: None,
            started_at: SystemTime::now(),
        }
    }

    pub fn handle(&self) -> Handle {
        Handle { tx: self.tx.clone() }
    }

    fn service(&self, name: &ServiceName) -> &Service {
        self.manifests.get(name.as_str()).expect("units and manifests share their names")
    }

    fn unit(&mut self, name: &ServiceName) -> &mut Unit {
        self.units.get_mut(name).expect("every service has a unit")
    }

    fn want(&self, name: &ServiceName) -> bool {
        if self.draining.is_some() {
            return false;
        }
        match self.store.state().services.get(name.as_str()).and_then(|r| r.desired) {
            Some(Desired::Running) => true,
            Some(Desired::Stopped) => false,
            None => self.service(name).manifest.service.enabled,
        }
    }

    fn save(&self) {
        if let Err(e) = self.store.save() {
            tracing::error!(error = %e, "cannot persist desired state");
        }
    }

    /// Adopts the containers that already run: same container, same task, no restart.
    /// Containers of unknown services, and dead ones, are removed.
    pub async fn adopt(&mut self) -> Result<(), RuntimeError> {
        let containers = self.runtime.containers().await?;
        for container in containers {
            let Some(name) = container.label(labels::SERVICE).and_then(|s| self.manifests.lookup(s)).cloned() else {
                tracing::warn!(container = %container.id, "removing a container no manifest describes");
                let runtime = Arc::clone(&self.runtime);
                let id = container.id.clone();
                self.tracker.spawn(async move {
                    if let Err(e) = runtime.remove(&id).await {
                        tracing::warn!(container = %id, error = %e, "cannot remove orphan container");
                    }
                });
                continue;
            };
            let generation = container.generation();
            let record = self.store.state_mut().services.entry(name.to_string()).or_default();
            record.generation = record.generation.max(generation);
            match container.task {
                TaskState::Running { pid } => {
                    let service = self.service(&name).clone();
                    let expected = container_digest(&service, &self.config.host);
                    let mut stale = container.label(labels::MANIFEST_DIGEST) != Some(expected.as_str());
                    let image_digest = container.label(labels::IMAGE_DIGEST).map(str::to_owned);
                    if let Ok(image) = self.runtime.image(&service.manifest.container.image).await {
                        stale |= image_digest.as_deref() != Some(image.digest.as_str());
                    }
                    tracing::info!(service = %name, pid, generation, stale, "adopted running container");
                    let unit = self.unit(&name);
                    unit.generation = generation;
                    unit.pid = Some(pid);
                    unit.has_container = true;
                    unit.image_digest = image_digest;
                    unit.cycle = stale;
                    unit.set_phase(Phase::Probing);
                    self.watch(&name);
                }
                _ => {
                    tracing::info!(service = %name, "removing a container whose task is not running");
                    self.runtime.remove(&container.id).await?;
                }
            }
        }
        self.save();
        Ok(())
    }

    /// Runs the loop until shutdown (and, when asked, until every service has stopped).
    pub async fn run(mut self) {
        loop {
            self.reconcile();
            self.resolve_waiters();
            if let Some(reply) = self.draining.take() {
                if self.units.values().all(|u| !u.phase.is_active()) {
                    let _ = reply.send(Ok(()));
                    self.shutdown.cancel();
                    break;
                }
                self.draining = Some(reply);
            }
            let wake = self.next_wake();
            let event = tokio::select! {
                event = self.rx.recv() => event,
                () = async { match wake { Some(at) => tokio::time::sleep_until(at.into()).await, None => std::future::pending().await } } => continue,
                () = self.shutdown.cancelled(), if self.draining.is_none() => break,
            };
            let Some(event) = event else { break };
            self.handle_event(event);
        }
        for unit in self.units.values() {
            unit.tasks.cancel();
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        self.units
            .values()
            .filter_map(|u| match u.phase {
                Phase::Backoff { until } => Some(until),
                _ => None,
            })
            .min()
    }

    fn reconcile(&mut self) {
        let views: BTreeMap<ServiceName, UnitView> = self
            .units
            .iter()
            .map(|(name, unit)| {
                (name.clone(), UnitView { want: self.want(name), phase: unit.phase.clone(), cycle: unit.cycle })
            })
            .collect();
        let plan = plan::plan(self.manifests.graph(), &views, Instant::now());
        self.waiting = plan.waiting;
        for action in plan.actions {
            match action {
                Action::Start(name) => self.start(&name),
                Action::Stop(name) => self.stop(&name),
            }
        }
    }

    fn start(&mut self, name: &ServiceName) {
        let record = self.store.state_mut().services.entry(name.to_string()).or_default();
        record.generation += 1;
        let generation = record.generation;
        // The generation is on disk before the container exists, so it is never reused.
        self.save();
        let unit = self.unit(name);
        unit.generation = generation;
        unit.message = None;
        // A container left by a crash or a failed start is replaced; without one, skip the cleanup.
        let leftover = unit.has_container;
        unit.set_phase(Phase::Starting);
        tracing::info!(service = %name, generation, "starting");

        let service = self.service(name).clone();
        let runtime = Arc::clone(&self.runtime);
        let config = self.config.clone();
        let tx = self.tx.clone();
        let name = name.clone();
        self.tracker.spawn(async move {
            let result = start_container(&*runtime, &config, &service, generation, leftover).await;
            let _ = tx.send(Event::Started { service: name, generation, result });
        });
    }

    fn stop(&mut self, name: &ServiceName) {
        let stop_time = Duration::from_secs(u64::from(self.service(name).manifest.service.stop_time));
        let unit = self.unit(name);
        unit.set_phase(Phase::Stopping);
        let generation = unit.generation;
        tracing::info!(service = %name, generation, "stopping");
        let runtime = Arc::clone(&self.runtime);
        let tx = self.tx.clone();
        let name = name.clone();
        self.tracker.spawn(async move {
            let result = stop_container(&*runtime, name.as_str(), stop_time).await.map_err(|e| e.to_string());
            let _ = tx.send(Event::Stopped { service: name, generation, result });
        });
    }

    /// Spawns the current generation's exit watcher and readiness probe.
    fn watch(&mut self, name: &ServiceName) {
        let service = self.service(name).clone();
        let unit = self.units.get_mut(name).expect("unit exists");
        unit.tasks.cancel();
        unit.tasks = self.shutdown.child_token();
        let generation = unit.generation;
        let token = unit.tasks.clone();

        let runtime = Arc::clone(&self.runtime);
        let tx = self.tx.clone();
        let watched = name.clone();
        let wait_token = token.clone();
        self.tracker.spawn(async move {
            loop {
                let outcome = tokio::select! {
                    () = wait_token.cancelled() => return,
                    r = runtime.wait(watched.as_str()) => r,
                };
                match outcome {
                    Ok(status) => {
                        let _ = tx.send(Event::Exited { service: watched, generation, status });
                        return;
                    }
                    Err(RuntimeError::NotFound { .. }) => {
                        let status = ExitStatus { code: 255, at: SystemTime::now() };
                        let _ = tx.send(Event::Exited { service: watched, generation, status });
                        return;
                    }
                    Err(e) => {
                        // containerd restarting: tasks survive in their shims; wait again.
                        tracing::warn!(service = %watched, error = %e, "lost the task wait; retrying");
                        tokio::select! {
                            () = wait_token.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        });

        let readiness = Arc::clone(&self.readiness);
        let tx = self.tx.clone();
        let name = name.clone();
        self.tracker.spawn(async move {
            let result = probe_until_ready(&*readiness, &service, &token).await;
            if !token.is_cancelled() {
                let _ = tx.send(Event::Probed { service: name, generation, result });
            }
        });
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Command(command) => self.handle_command(command),
            Event::Started { service, generation, result } => self.on_started(&service, generation, result),
            Event::Stopped { service, generation, result } => self.on_stopped(&service, generation, result),
            Event::Exited { service, generation, status } => self.on_exited(&service, generation, status),
            Event::Probed { service, generation, result } => self.on_probed(&service, generation, result),
            Event::ImagesChanged => {
                for unit in self.units.values_mut() {
                    if unit.blocked {
                        unit.blocked = false;
                        unit.message = None;
                        unit.set_phase(Phase::Stopped);
                    }
                }
            }
        }
    }

    fn on_started(&mut self, name: &ServiceName, generation: u64, result: Result<Started, StartFailure>) {
        let unit = self.unit(name);
        if unit.generation != generation || unit.phase != Phase::Starting {
            return;
        }
        match result {
            Ok(started) => {
                tracing::info!(service = %name, pid = started.pid, generation, "task started");
                unit.pid = Some(started.pid);
                unit.image_digest = Some(started.image_digest);
                unit.has_container = true;
                unit.set_phase(Phase::Probing);
                self.watch(name);
            }
            Err(StartFailure::Blocked(reason)) => {
                tracing::error!(service = %name, reason = %reason, "cannot start");
                unit.blocked = true;
                unit.message = Some(reason.clone());
                unit.set_phase(Phase::Failed { reason });
            }
            Err(StartFailure::Failed(reason)) => {
                tracing::error!(service = %name, reason = %reason, "start failed");
                self.on_failure(name, format!("start failed: {reason}"));
            }
        }
    }

    fn on_stopped(&mut self, name: &ServiceName, generation: u64, result: Result<(), String>) {
        let unit = self.unit(name);
        if unit.generation != generation || unit.phase != Phase::Stopping {
            return;
        }
        unit.tasks.cancel();
        unit.pid = None;
        unit.cycle = false;
        if let Err(e) = &result {
            tracing::warn!(service = %name, error = %e, "stop did not complete cleanly");
            unit.message = Some(format!("stop: {e}"));
        } else {
            unit.has_container = false;
            tracing::info!(service = %name, "stopped");
        }
        match unit.failure_pending.take() {
            Some(reason) => self.on_failure(name, reason),
            None => unit.set_phase(Phase::Stopped),
        }
    }

    fn on_exited(&mut self, name: &ServiceName, generation: u64, status: ExitStatus) {
        let unit = self.unit(name);
        if unit.generation != generation || !matches!(unit.phase, Phase::Probing | Phase::Ready) {
            return;
        }
        unit.tasks.cancel();
        unit.pid = None;
        unit.last_exit = Some(status.code);
        let reason = if status.code > 128 {
            format!("killed by signal {}", status.code - 128)
        } else {
            format!("exited with code {}", status.code)
        };
        tracing::warn!(service = %name, generation, code = status.code, "task ended unexpectedly");
        self.on_failure(name, reason);
    }

    fn on_probed(&mut self, name: &ServiceName, generation: u64, result: Result<(), String>) {
        let timeout = self.service(name).manifest.readiness.timeout;
        let unit = self.unit(name);
        if unit.generation != generation || unit.phase != Phase::Probing {
            return;
        }
        match result {
            Ok(()) => {
                tracing::info!(service = %name, generation, "ready");
                unit.message = None;
                unit.set_phase(Phase::Ready);
            }
            Err(detail) => {
                tracing::warn!(service = %name, detail = %detail, "not ready in time");
                unit.failure_pending = Some(format!("not ready within {timeout}s: {detail}"));
                self.stop(name);
            }
        }
    }

    /// A crash, a failed start or a missed readiness deadline: back off, or give up.
    fn on_failure(&mut self, name: &ServiceName, reason: String) {
        let service = self.service(name).clone();
        let policy = service.manifest.service.restart.clone();
        let auto_restart = service.manifest.service.auto_restart;
        let unit = self.unit(name);
        let now = Instant::now();
        unit.failures.push_back(now);
        while unit.failures.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(policy.window_secs)) {
            unit.failures.pop_front();
        }
        unit.cycle = false;
        if !auto_restart {
            let reason = format!("{reason}; auto-restart is disabled");
            unit.message = Some(reason.clone());
            unit.set_phase(Phase::Failed { reason });
        } else if unit.failures.len() >= policy.budget as usize {
            let reason = format!("{} failures within {}s, last: {reason}", unit.failures.len(), policy.window_secs);
            tracing::error!(service = %name, reason = %reason, "giving up until an operator acts");
            unit.message = Some(reason.clone());
            unit.set_phase(Phase::Failed { reason });
        } else {
            let delay = backoff_delay(&service, unit.failures.len());
            unit.restarts += 1;
            unit.message = Some(format!("{reason}; restart {} in {}ms", unit.failures.len(), delay.as_millis()));
            unit.set_phase(Phase::Backoff { until: now + delay });
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Status { reply } => {
                let _ = reply.send(Ok(self.status()));
            }
            Command::Start { service, wait, reply } => {
                let Some((name, reply)) = self.resolve(&service, reply) else { return };
                for dep in self.manifests.graph().requirement_closure(&name) {
                    self.store.state_mut().services.entry(dep.to_string()).or_default().desired =
                        Some(Desired::Running);
                    self.reset(&dep);
                }
                self.save();
                self.respond(name.clone(), vec![name], WaitFor::Ready, wait, reply);
            }
            Command::Stop { service, wait, reply } => {
                let Some((name, reply)) = self.resolve(&service, reply) else { return };
                let closure: Vec<ServiceName> = self.manifests.graph().dependent_closure(&name).into_iter().collect();
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
                self.respond(name, closure, WaitFor::Stopped, wait, reply);
            }
            Command::Restart { service, wait, reply } => {
                let Some((name, reply)) = self.resolve(&service, reply) else { return };
                for dep in self.manifests.graph().requirement_closure(&name) {
                    self.store.state_mut().services.entry(dep.to_string()).or_default().desired =
                        Some(Desired::Running);
                }
                let mut affected = Vec::new();
                for dep in self.manifests.graph().dependent_closure(&name) {
                    if dep != name && !self.want(&dep) {
                        continue;
                    }
                    self.reset(&dep);
                    let unit = self.unit(&dep);
                    if unit.phase.is_active() {
                        unit.cycle = true;
                    }
                    affected.push(dep);
                }
                self.save();
                self.respond(name, affected, WaitFor::Ready, wait, reply);
            }
            Command::Wait { services, reply } => {
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
                self.waiters.push(Waiter { services: names, target: WaitFor::Ready, reply: WaiterReply::All(reply) });
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

    /// An operator action resets the failure budget and releases a held service.
    fn reset(&mut self, name: &ServiceName) {
        let unit = self.unit(name);
        unit.failures.clear();
        unit.blocked = false;
        if matches!(unit.phase, Phase::Failed { .. } | Phase::Backoff { .. }) {
            unit.message = None;
            unit.set_phase(Phase::Stopped);
        }
    }

    /// The service an operator named, or an error reply listing the known ones.
    fn resolve<T>(&self, service: &str, reply: Reply<T>) -> Option<(ServiceName, Reply<T>)> {
        match self.manifests.lookup(service) {
            Some(name) => Some((name.clone(), reply)),
            None => {
                let known: Vec<&str> = self.manifests.names().map(|n| n.as_str()).collect();
                let message = format!("unknown service {service:?}; known services: {}", known.join(", "));
                let _ = reply.send(Err(CommandError::new(ErrorKind::NotFound, message)));
                None
            }
        }
    }

    fn respond(
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

    fn resolve_waiters(&mut self) {
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

    fn check_waiter(&self, waiter: &Waiter) -> Option<Result<(), CommandError>> {
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

    fn state_name(&self, name: &ServiceName, unit: &Unit) -> &'static str {
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

    fn service_status(&self, name: &ServiceName) -> ServiceStatus {
        let unit = &self.units[name];
        let service = self.service(name);
        let mut message = unit.message.clone();
        if let Some(deps) = self.waiting.get(name) {
            let deps: Vec<&str> = deps.iter().map(|d| d.as_str()).collect();
            message = Some(format!("waiting for {}", deps.join(", ")));
        }
        ServiceStatus {
            name: name.to_string(),
            state: self.state_name(name, unit).to_owned(),
            ready: unit.phase == Phase::Ready,
            enabled: self.want(name),
            pid: unit.pid,
            restarts: unit.restarts,
            image: service.manifest.container.image.clone(),
            image_digest: unit.image_digest.clone(),
            container_id: unit.has_container.then(|| name.to_string()),
            generation: unit.generation,
            since: rfc3339(unit.since),
            last_exit_code: unit.last_exit,
            message,
        }
    }

    fn status(&self) -> StatusResponse {
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

/// Creates and starts a service's container.
async fn start_container<R: ContainerRuntime>(
    runtime: &R,
    config: &SupervisorConfig,
    service: &Service,
    generation: u64,
    leftover: bool,
) -> Result<Started, StartFailure> {
    let reference = &service.manifest.container.image;
    let image = match runtime.image(reference).await {
        Ok(image) => image,
        Err(RuntimeError::NotFound { .. }) => {
            return Err(StartFailure::Blocked(format!(
                "image {reference} is not in containerd; import it with `soniclet image import FILE`"
            )))
        }
        Err(e) => return Err(StartFailure::Failed(e.to_string())),
    };
    let spec = spec::render(service, &image.config, &config.host).map_err(|e| StartFailure::Blocked(e.to_string()))?;
    for source in spec::bind_sources(&spec) {
        if !source.exists() {
            if let Err(e) = std::fs::create_dir_all(&source) {
                return Err(StartFailure::Failed(format!("cannot create {}: {e}", source.display())));
            }
        }
    }
    let spec_json = spec::to_json(&spec);
    let id = service.name.to_string();
    if leftover {
        runtime.remove(&id).await.map_err(|e| StartFailure::Failed(e.to_string()))?;
    }
    let labels = BTreeMap::from([
        (labels::SERVICE.to_owned(), id.clone()),
        (labels::MANIFEST_DIGEST.to_owned(), container_digest(service, &config.host)),
        (labels::IMAGE_DIGEST.to_owned(), image.digest.clone()),
        (labels::GENERATION.to_owned(), generation.to_string()),
    ]);
    let image_digest = image.digest.clone();
    runtime
        .create(CreateContainer { id: id.clone(), image, spec: spec_json, labels })
        .await
        .map_err(|e| StartFailure::Failed(e.to_string()))?;
    match runtime.start(&id, &config.logs).await {
        Ok(pid) => Ok(Started { pid, image_digest }),
        Err(e) => {
            let _ = runtime.remove(&id).await;
            Err(StartFailure::Failed(e.to_string()))
        }
    }
}

/// SIGTERM, then SIGKILL after `stop_time`, then removal of the task, container and rootfs.
pub async fn stop_container<R: ContainerRuntime>(
    runtime: &R,
    id: &str,
    stop_time: Duration,
) -> Result<(), RuntimeError> {
    match runtime.kill(id, libc::SIGTERM, false).await {
        Ok(()) => {
            if tokio::time::timeout(stop_time, runtime.wait(id)).await.is_err() {
                tracing::warn!(container = id, stop_time = ?stop_time, "still running after stop-time; sending SIGKILL");
                match runtime.kill(id, libc::SIGKILL, true).await {
                    Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
                let _ = tokio::time::timeout(Duration::from_secs(10), runtime.wait(id)).await;
            }
        }
        // No task, or it already exited: nothing to signal.
        Err(RuntimeError::NotFound { .. }) => {}
        Err(RuntimeError::Call { message, .. })
            if message.contains("not found") || message.contains("process already finished") => {}
        Err(e) => return Err(e),
    }
    runtime.remove(id).await
}

/// Probes until ready, the readiness timeout passes, or the token is cancelled. Starts fast
/// and slows to the manifest's interval, so a quick service is seen ready quickly.
pub async fn probe_until_ready<P: Readiness>(
    readiness: &P,
    service: &Service,
    token: &CancellationToken,
) -> Result<(), String> {
    let readiness_cfg = &service.manifest.readiness;
    let deadline = Instant::now() + Duration::from_secs(u64::from(readiness_cfg.timeout));
    let max_interval = Duration::from_millis(u64::from(readiness_cfg.interval_ms));
    let mut interval = Duration::from_millis(10).min(max_interval);
    let mut last;
    loop {
        match readiness.check(service, service.name.as_str()).await {
            Ok(true) => return Ok(()),
            Ok(false) => last = "probe did not pass".to_owned(),
            Err(detail) => last = detail,
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::select! {
            () = token.cancelled() => return Err("cancelled".to_owned()),
            () = tokio::time::sleep(interval) => {}
        }
        interval = (interval * 3 / 2).min(max_interval);
    }
}
