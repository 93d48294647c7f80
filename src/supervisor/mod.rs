//! The supervisor: the single owner of every service's lifecycle.
//!
//! One task runs one loop over one closed [`Event`] enum: API commands, operation results,
//! task exits and probe results. After each event it calls the pure [`plan::plan`] and
//! carries out the actions by spawning tracked operations, whose results come back as events.
//! Nothing else changes a service's state, so there are no locks and no races between, say, a
//! crash and an operator's stop.
//!
//! **Invariant:** this module imports no client crate (containerd, tonic, redis); it speaks to
//! the outside through [`ContainerRuntime`] and [`Health`] only.

mod commands;
mod features;
mod groups;
mod lifecycle;
pub mod plan;
mod reload;
mod upgrade;

pub use lifecycle::{probe_until_ready, stop_container};
pub use reload::ReloadEvent;
pub use upgrade::{pin_reference, repository, ChangeEvent, ChangeRequest, Prepared};

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{ErrorKind, FeatureStatus, ServiceStatus, StatusResponse};
use crate::configdb::ConfigContent;
use crate::db::Fields;
use crate::dblink::{BootType, DbMessage};
use crate::feature::{Feature, FeatureReport, FeatureState};
use crate::manifest::{ManifestSet, Service, ServiceName, StopStep};
use crate::runtime::spec::HostSettings;
use crate::runtime::{labels, ContainerRuntime, ExitStatus, LogSink, RuntimeError, TaskState};
use crate::store::{Desired, StateStore};
use plan::{Action, Phase, UnitView};

/// Health of containers: readiness, critical processes, stop steps. Implemented over the
/// runtime, Redis and /proc by `probe::Prober`.
pub trait Health: Send + Sync + 'static {
    /// `Ok(true)` when ready; `Ok(false)` or `Err(detail)` when not yet.
    fn check(&self, service: &Service, container: &str) -> impl Future<Output = Result<bool, String>> + Send;

    /// Resolves with the name of the first critical process of the container that exits (or
    /// that does not run at all); never resolves for a service without critical processes.
    fn critical_exit(&self, service: &Service, container: &str) -> impl Future<Output = String> + Send;

    /// Carries out one warm or fast stop step in the container.
    fn stop_step(&self, container: &str, step: &StopStep) -> impl Future<Output = Result<(), String>> + Send;
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
        /// Wait until stopped instead of ready.
        stopped: bool,
        reply: Reply<StatusResponse>,
    },
    /// The FEATURE view of every service (`show feature status`).
    Features {
        reply: Reply<Vec<FeatureStatus>>,
    },
    /// Checks an operator's FEATURE change before it is written to CONFIG_DB; answers with
    /// the service's name.
    CheckFeatureChange {
        service: String,
        state: Option<String>,
        auto_restart: Option<String>,
        reply: Reply<ServiceName>,
    },
    /// `config reload`: stop, replace CONFIG_DB, start again; progress on `progress`.
    Reload {
        config: ConfigContent,
        force: bool,
        progress: mpsc::UnboundedSender<ReloadEvent>,
    },
    /// `upgrade` or `rollback` of one service's image; progress and the outcome on `progress`.
    Change {
        request: ChangeRequest,
        progress: mpsc::UnboundedSender<ChangeEvent>,
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
    /// An image change's new container was prepared (or could not be).
    ChangePrepared {
        service: ServiceName,
        result: Result<Prepared, String>,
    },
    /// A critical process of the current container exited.
    CriticalExited {
        service: ServiceName,
        generation: u64,
        process: String,
    },
    /// APPL_DB `PORT_TABLE:PortInitDone` appeared (or went away).
    PortsReady(bool),
    /// STATE_DB's warm and fast restart tables changed.
    WarmFlags(WarmFlags),
    /// A failure group's cold-start flush finished.
    ColdStartDone {
        group: String,
        result: Result<(), String>,
    },
    /// CONFIG_DB was replaced for a config reload.
    ConfigReloaded(Result<(), String>),
    /// The FEATURE table as loaded from CONFIG_DB: a full replacement.
    FeaturesLoaded(BTreeMap<String, Fields>),
    /// One FEATURE entry changed; `None` when it was deleted.
    FeatureChanged {
        name: String,
        fields: Option<Fields>,
    },
}

/// The daemon's link to the switch's databases, as the supervisor sees it.
#[derive(Debug)]
pub struct DbSide {
    /// Reports and database work, carried out by the database link.
    pub messages: mpsc::UnboundedSender<DbMessage>,
    /// Whether the database service is ready, for the link to connect.
    pub database_ready: watch::Sender<bool>,
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
    /// How this boot started: a warm or fast boot keeps the databases and waits for
    /// reconciliation before delayed services start.
    pub boot: BootType,
    /// When delayed services start anyway if the ports never report ready (SONiC: 180 s).
    pub delayed_fallback: Duration,
}

/// STATE_DB's warm and fast restart tables, as the database link mirrors them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmFlags {
    /// `WARM_RESTART_ENABLE_TABLE|<system|service> enable`.
    pub warm: BTreeMap<String, bool>,
    /// `FAST_RESTART_ENABLE_TABLE|system enable`.
    pub fast: bool,
    /// `WARM_RESTART_TABLE|<app> state`.
    pub states: BTreeMap<String, String>,
}

/// How a service is taken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// SIGTERM, then SIGKILL after stop-time.
    Cold,
    /// The manifest's warm-stop steps, then kill.
    Warm,
    /// The manifest's fast-stop steps, then kill.
    Fast,
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
    /// A critical process exited and auto-restart is off: (process, since, last reported).
    degraded: Option<(String, Instant, Instant)>,
    /// How the next stop goes (warm restart of one member).
    stop_mode: StopMode,
    /// Set by a crash until the service is ready again: why it is coming back.
    recovering: Option<String>,
    /// An operator's restart is under way, until the service is ready again.
    restart_requested: bool,
    /// The next start uses this container, made ahead by an image change.
    prepared: Option<Prepared>,
    /// The next start uses this rootfs key (an image change resumed after a restart).
    resume_rootfs: Option<String>,
    /// Since when the service has been down (its stop or crash), until it is ready again.
    down_since: Option<Instant>,
    /// How long it was down the last time, stop (or crash) to ready.
    last_downtime: Option<Duration>,
    /// The last image change's outcome, for `soniclet status`.
    upgrade_note: Option<String>,
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
            degraded: None,
            stop_mode: StopMode::Cold,
            recovering: None,
            restart_requested: false,
            prepared: None,
            resume_rootfs: None,
            down_since: None,
            last_downtime: None,
            upgrade_note: None,
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
    statuses: tokio::sync::broadcast::Sender<ServiceStatus>,
}

impl Handle {
    pub fn send(&self, event: Event) -> bool {
        self.tx.send(event).is_ok()
    }

    /// Every change of a service's status, as it happens.
    pub fn statuses(&self) -> tokio::sync::broadcast::Receiver<ServiceStatus> {
        self.statuses.subscribe()
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

pub struct Supervisor<R: ContainerRuntime, P: Health> {
    config: SupervisorConfig,
    manifests: Arc<ManifestSet>,
    runtime: Arc<R>,
    readiness: Arc<P>,
    store: StateStore,
    units: BTreeMap<ServiceName, Unit>,
    waiting: BTreeMap<ServiceName, Vec<String>>,
    waiters: Vec<Waiter>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    /// Status changes, for the API's watchers (systemd facades).
    statuses: tokio::sync::broadcast::Sender<ServiceStatus>,
    last_statuses: BTreeMap<ServiceName, ServiceStatus>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    draining: Option<Reply<()>>,
    started_at: SystemTime,
    /// Accepted FEATURE entries (CONFIG_DB), by service.
    features: BTreeMap<ServiceName, Feature>,
    /// CONFIG_DB has been read since the database last became ready.
    config_loaded: bool,
    db: Option<DbSide>,
    reported: BTreeMap<ServiceName, FeatureReport>,
    /// The ports are initialised (APPL_DB `PORT_TABLE:PortInitDone`).
    ports_ready: bool,
    /// Delayed services may start (ports ready, reconciled, or the fallback passed).
    delayed_released: bool,
    /// When delayed services start anyway.
    delayed_deadline: Option<Instant>,
    warm: WarmFlags,
    /// Per failure group: whether its cold-start flush ran since it was last fully down.
    cleared: BTreeMap<String, GroupClear>,
    reload: Option<reload::Reload>,
    /// Every enabled service was ready at least once since start (or the last reload).
    settled: bool,
    system_reported: Option<(String, String)>,
    /// The image change in flight (its journal is in the store).
    change: Option<upgrade::Change>,
}

/// A failure group's cold-start state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupClear {
    /// Its databases must be cleared before a member starts.
    Needed,
    Clearing,
    Done,
}

impl<R: ContainerRuntime, P: Health> std::fmt::Debug for Supervisor<R, P> {
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

/// The delay before restarting after `failures` failures in the window: none after the
/// first, then the initial delay, doubling up to the ceiling.
fn backoff_delay(service: &Service, failures: usize) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let policy = &service.manifest.service.restart;
    let exponent = u32::try_from(failures - 2).unwrap_or(u32::MAX).min(20);
    let delay = policy.backoff_initial_ms.saturating_mul(1u64 << exponent).min(policy.backoff_max_ms);
    Duration::from_millis(delay)
}

/// SONiC reports a missing critical process once a minute.
const DEGRADED_REPORT: Duration = Duration::from_secs(60);

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl<R: ContainerRuntime, P: Health> Supervisor<R, P> {
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
            statuses: tokio::sync::broadcast::channel(256).0,
            last_statuses: BTreeMap::new(),
            tracker,
            shutdown,
            draining: None,
            started_at: SystemTime::now(),
            features: BTreeMap::new(),
            config_loaded: false,
            db: None,
            reported: BTreeMap::new(),
            ports_ready: false,
            delayed_released: false,
            delayed_deadline: None,
            warm: WarmFlags::default(),
            cleared: BTreeMap::new(),
            reload: None,
            settled: false,
            system_reported: None,
            change: None,
        }
    }

    /// Connects the supervisor to the database link (FEATURE, STATE_DB). Without it, manifests
    /// alone decide what runs.
    pub fn with_db(mut self, db: DbSide) -> Self {
        self.db = Some(db);
        self
    }

    pub fn handle(&self) -> Handle {
        Handle { tx: self.tx.clone(), statuses: self.statuses.clone() }
    }

    fn service(&self, name: &ServiceName) -> &Service {
        self.manifests.get(name.as_str()).expect("units and manifests share their names")
    }

    fn unit(&mut self, name: &ServiceName) -> &mut Unit {
        self.units.get_mut(name).expect("every service has a unit")
    }

    /// Whether a service should run: a disabled FEATURE never runs; otherwise an operator's
    /// start or stop wins, then the FEATURE entry, then the manifest's default.
    fn want(&self, name: &ServiceName) -> bool {
        if self.draining.is_some() {
            return false;
        }
        if self.reload.as_ref().is_some_and(|r| r.holds_services()) && self.manifests.database() != Some(name) {
            return false;
        }
        // A disabled FEATURE holds the service and everything that requires it.
        if self.disabled_by_feature(name).is_some() {
            return false;
        }
        let feature = self.features.get(name).map(|f| f.state);
        match self.store.state().services.get(name.as_str()).and_then(|r| r.desired) {
            Some(Desired::Running) => true,
            Some(Desired::Stopped) => false,
            None => feature.map_or(self.service(name).manifest.service.enabled, FeatureState::runs),
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
                    if let Ok(image) = self.runtime.image(&self.image_ref(&name)).await {
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
        self.init_groups();
        self.resume_change();
        Ok(())
    }

    /// Runs the loop until shutdown (and, when asked, until every service has stopped).
    pub async fn run(mut self) {
        loop {
            self.reconcile();
            self.resolve_waiters();
            self.advance_reload();
            self.advance_change();
            self.report();
            self.report_degraded();
            self.broadcast_statuses();
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

    /// Tells watchers about every service whose status changed.
    fn broadcast_statuses(&mut self) {
        let names: Vec<ServiceName> = self.units.keys().cloned().collect();
        for name in names {
            let status = self.service_status(&name);
            if self.last_statuses.get(&name) != Some(&status) {
                let _ = self.statuses.send(status.clone());
                self.last_statuses.insert(name, status);
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let backoffs = self.units.values().filter_map(|u| match u.phase {
            Phase::Backoff { until } => Some(until),
            _ => None,
        });
        let degraded =
            self.units.values().filter_map(|u| u.degraded.as_ref().map(|(_, _, last)| *last + DEGRADED_REPORT));
        let delayed = self.delayed_deadline.filter(|_| !self.delayed_released);
        backoffs.chain(degraded).chain(delayed).chain(self.change_wake()).min()
    }

    fn reconcile(&mut self) {
        self.release_delayed();
        self.clear_groups();
        let views: BTreeMap<ServiceName, UnitView> = self
            .units
            .iter()
            .map(|(name, unit)| {
                let view = UnitView {
                    want: self.want(name),
                    phase: unit.phase.clone(),
                    cycle: unit.cycle,
                    gate: self.gate(name),
                };
                (name.clone(), view)
            })
            .collect();
        let plan = plan::plan(self.manifests.graph(), &views, Instant::now());
        self.waiting = plan.waiting;
        // Every start's generation is on disk before its container exists, so none is ever
        // reused; one write covers a whole wave of starts.
        let mut generations = BTreeMap::new();
        for action in &plan.actions {
            if let Action::Start(name) = action {
                let record = self.store.state_mut().services.entry(name.to_string()).or_default();
                record.generation += 1;
                generations.insert(name.clone(), record.generation);
            }
        }
        if !generations.is_empty() {
            self.save();
        }
        for action in plan.actions {
            match action {
                Action::Start(name) => {
                    let generation = generations[&name];
                    self.start(&name, generation)
                }
                Action::Stop(name) => self.stop(&name),
            }
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Command(command) => self.handle_command(command),
            Event::Started { service, generation, result } => self.on_started(&service, generation, result),
            Event::Stopped { service, generation, result } => self.on_stopped(&service, generation, result),
            Event::Exited { service, generation, status } => self.on_exited(&service, generation, status),
            Event::Probed { service, generation, result } => self.on_probed(&service, generation, result),
            Event::ChangePrepared { service, result } => self.on_change_prepared(&service, result),
            Event::CriticalExited { service, generation, process } => {
                self.on_critical_exit(&service, generation, process)
            }
            Event::PortsReady(ready) => self.on_ports_ready(ready),
            Event::WarmFlags(flags) => self.warm = flags,
            Event::ColdStartDone { group, result } => self.on_cold_start_done(&group, result),
            Event::ConfigReloaded(result) => self.on_config_reloaded(result),
            Event::FeaturesLoaded(entries) => self.on_features_loaded(entries),
            Event::FeatureChanged { name, fields } => self.on_feature_changed(&name, fields),
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
}
