//! The core: one struct that holds every service's state and makes every lifecycle decision.
//!
//! [`Core::handle`] takes one [`Event`] and the time, and answers the [`Effect`]s to carry
//! out. After every event the same passes run, in this order: `reconcile` (the pure
//! [`plan::plan`] and its actions), waiters, the config reload, the image change, the
//! release, the STATE_DB reports, the degraded reports, `reconcile` again (for what those
//! passes changed), then the status changes. The last plan's `wake_at` is the only wake-up.
//!
//! Effects leave in order. A state change marks the state dirty; at the end of the event one
//! [`Effect::Persist`] carries the whole state, and every effect after it waits for its
//! [`Event::Persisted`]: a generation is on disk before its container exists, and a journal
//! step before the step begins.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::event::{DatabaseReadiness, Effect, Event, Observed, RequestId};
use super::plan::{self, Action, Phase, UnitView};
use super::types::{BootType, Now, ServiceView, StopMode, WarmFlags};
use super::unit::{Container, Cycle, Unit};
use super::{change, features, groups, os, ownership, release, reload, status, waiters};
use crate::manifest::{ManifestSet, Service, ServiceName};
use crate::runtime::spec::{container_digest, HostSettings};
use crate::runtime::{labels, TaskState};
use crate::sonic::feature::{Feature, FeatureReport};
use crate::state::store::{Desired, PersistedState, ServiceRecord};

/// Fixed inputs of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// What containers are built with besides their manifest (part of their label digest).
    pub host: HostSettings,
    /// How this boot started: a warm or fast boot keeps the databases and waits for
    /// reconciliation before delayed services start.
    pub boot: BootType,
    /// When delayed services start anyway if the ports never report ready (SONiC: 180 s).
    pub delayed_fallback: Duration,
    /// The database link runs: CONFIG_DB and FEATURE gate every service but the database.
    pub database_link: bool,
    /// systemd is the init: a service that comes up on its own gets its unit started.
    pub mirror_units: bool,
    /// This boot's OS image trial, or the trial that failed before it.
    pub os: super::os::OsBoot,
}

/// A failure group's cold-start state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GroupClear {
    /// Its databases must be cleared before a member starts.
    Needed,
    Clearing,
    Done,
}

/// Delayed services (SONiC's delayed start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delayed {
    /// Held until the ports are ready, reconciliation ends, or the deadline (set once
    /// CONFIG_DB is loaded) passes.
    Held {
        deadline: Option<Instant>,
    },
    Released,
}

/// Effects on their way out, with the persist barrier.
#[derive(Debug, Default)]
struct Outbox {
    /// This event's effects.
    batch: Vec<Effect>,
    /// Effects waiting for a persist to be acknowledged, in order; a `Persist` among them is
    /// the next barrier.
    held: VecDeque<Effect>,
    /// The persist every held effect waits for.
    awaiting: Option<u64>,
    seq: u64,
    /// The state changed during this event.
    dirty: bool,
    /// Effects an acknowledgement released during this event: they are older than the
    /// event's own.
    released: Vec<Effect>,
    /// The last wake-up handed out.
    wake: Option<Instant>,
}

#[derive(Debug)]
pub struct Core {
    pub(super) config: CoreConfig,
    pub(super) manifests: Arc<ManifestSet>,
    pub(super) state: PersistedState,
    pub(super) units: BTreeMap<ServiceName, Unit>,
    pub(super) now: Now,
    pub(super) started: Now,
    /// Services that want to run but wait, and for what (from the last plan).
    pub(super) waiting: BTreeMap<ServiceName, Vec<String>>,
    pub(super) waiters: waiters::Waiters,
    /// The views last handed out (status changes and the unit mirror compare against them).
    last_views: BTreeMap<ServiceName, ServiceView>,
    /// A shutdown that stops every service first, and who asked for it.
    pub(super) draining: Option<RequestId>,
    /// Accepted FEATURE entries (CONFIG_DB), by service.
    pub(super) features: BTreeMap<ServiceName, Feature>,
    /// CONFIG_DB has been read since the database last became ready.
    pub(super) config_loaded: bool,
    pub(super) reported: BTreeMap<ServiceName, FeatureReport>,
    pub(super) system_reported: Option<(String, String)>,
    /// What the database link was last told; `None` before the first report.
    database_ready_sent: Option<DatabaseReadiness>,
    /// How many times the database service has become ready.
    database_episodes: u64,
    /// The ports are initialised (APPL_DB `PORT_TABLE:PortInitDone`).
    pub(super) ports_ready: bool,
    pub(super) delayed: Delayed,
    pub(super) warm: WarmFlags,
    /// Per failure group: whether its cold-start flush ran since it was last fully down.
    pub(super) cleared: BTreeMap<String, GroupClear>,
    pub(super) reload: Option<reload::Reload>,
    /// Every enabled service was ready at least once since start (or the last reload).
    pub(super) settled: bool,
    /// The image change in flight, beside its journal in the state.
    pub(super) change: change::Slot,
    /// Who follows the release in flight (its journal is in the state).
    pub(super) release_listener: Option<RequestId>,
    /// Operators' FEATURE changes waiting for their CONFIG_DB write to come back.
    pub(super) feature_requests: Vec<features::Request>,
    /// The OS image on trial, and the `os` command in flight.
    pub(super) os: super::os::Slot,
    /// The kubelet's pods that claim features.
    pub(super) pods: ownership::Pods,
    out: Outbox,
    wake_at: Option<Instant>,
}

impl Core {
    /// A core for `manifests`, from the state last persisted. Nothing runs until [`Core::adopt`].
    pub fn new(config: CoreConfig, manifests: Arc<ManifestSet>, state: PersistedState, now: Now) -> Self {
        let units = manifests.names().map(|n| (n.clone(), Unit::new(now.wall))).collect();
        let os = os::Slot::new(&config.os, now.mono);
        Self {
            os,
            config,
            manifests,
            state,
            units,
            now,
            started: now,
            waiting: BTreeMap::new(),
            waiters: waiters::Waiters::default(),
            last_views: BTreeMap::new(),
            draining: None,
            features: BTreeMap::new(),
            config_loaded: false,
            reported: BTreeMap::new(),
            system_reported: None,
            database_ready_sent: None,
            database_episodes: 0,
            ports_ready: false,
            delayed: Delayed::Held { deadline: None },
            warm: WarmFlags::default(),
            cleared: BTreeMap::new(),
            reload: None,
            settled: false,
            change: change::Slot::Idle,
            release_listener: None,
            feature_requests: Vec::new(),
            pods: ownership::Pods::default(),
            out: Outbox::default(),
            wake_at: None,
        }
    }

    /// The state as it is (or is going) on disk.
    pub fn state(&self) -> &PersistedState {
        &self.state
    }

    /// The image reference `name` runs: its pin, or its manifest's image.
    pub fn image_reference(&self, name: &str) -> Option<String> {
        let service = self.manifests.get(name)?;
        Some(match self.state.services.get(name).and_then(|r| r.image.as_ref()) {
            Some(pin) => pin.reference.clone(),
            None => service.manifest.container.image.clone(),
        })
    }

    /// When the core wants [`Event::Wake`], from the last plan.
    pub fn wake_at(&self) -> Option<Instant> {
        self.wake_at
    }

    /// Whether a shutdown is stopping every service first (the loop must not end before).
    pub fn is_draining(&self) -> bool {
        self.draining.is_some()
    }

    /// Takes over the containers that already run: same container, same task, no restart.
    /// Containers of unknown services are removed; a container whose task is gone is
    /// removed before its service starts again. Then an image change the last daemon left
    /// is carried on. Nothing starts before the first [`Core::handle`].
    pub fn adopt(&mut self, observed: Vec<Observed>, now: Now) -> Vec<Effect> {
        self.now = now;
        for Observed { container, current_image } in observed {
            let Some(name) = container.label(labels::SERVICE).and_then(|s| self.manifests.lookup(s)).cloned() else {
                tracing::warn!(container = %container.id, "removing a container no manifest describes");
                self.emit(Effect::Remove { container: container.id.clone() });
                continue;
            };
            let generation = container.generation();
            let record = self.record(&name);
            if generation > record.generation {
                record.generation = generation;
                self.out.dirty = true;
            }
            match container.task {
                TaskState::Running { pid } => {
                    let expected = container_digest(self.service(&name), &self.config.host);
                    let image_digest = container.label(labels::IMAGE_DIGEST).map(str::to_owned);
                    let mut stale = container.label(labels::MANIFEST_DIGEST) != Some(expected.as_str());
                    if let Some(current) = &current_image {
                        stale |= image_digest.as_deref() != Some(current.as_str());
                    }
                    tracing::info!(service = %name, pid, generation, stale, "adopted running container");
                    let wall = self.now.wall;
                    let unit = self.unit(&name);
                    unit.generation = generation;
                    unit.container = Container::Running { pid };
                    unit.image_digest = image_digest;
                    unit.cycle = stale.then_some(Cycle { mode: None });
                    unit.set_phase(Phase::Probing, wall);
                    self.emit(Effect::Watch { service: name.clone(), generation });
                }
                _ => {
                    tracing::info!(service = %name, "a container whose task is not running is removed before it starts");
                    self.unit(&name).container = Container::Left;
                }
            }
        }
        groups::init(self);
        change::resume(self);
        os::start(self);
        self.finish()
    }

    /// Whether effects wait for a persist to be acknowledged.
    pub fn is_holding(&self) -> bool {
        self.out.awaiting.is_some()
    }

    /// Takes one event; answers what to do.
    pub fn handle(&mut self, event: Event, now: Now) -> Vec<Effect> {
        self.now = now;
        self.dispatch(event);
        self.after_event();
        self.finish()
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Command { id, command } => super::commands::handle(self, id, command),
            Event::RequestGone(id) => self.forget_request(id),
            Event::Wake => self.out.wake = None,
            Event::Started { service, generation, result } => {
                super::lifecycle::on_started(self, &service, generation, result)
            }
            Event::Stopped { service, generation, result } => {
                super::lifecycle::on_stopped(self, &service, generation, result)
            }
            Event::Exited { service, generation, status } => {
                super::lifecycle::on_exited(self, &service, generation, status)
            }
            Event::Probed { service, generation, result } => {
                super::lifecycle::on_probed(self, &service, generation, result)
            }
            Event::CriticalExited { service, generation, process } => {
                super::lifecycle::on_critical_exit(self, &service, generation, process)
            }
            Event::ImagesChanged => self.images_changed(),
            Event::Staged { service, result } => change::on_staged(self, &service, result),
            Event::ChangePrepared { service, result } => change::on_prepared(self, &service, result),
            Event::Imported { id, result } => {
                self.images_changed();
                let result = result.map(|images| super::event::Response::Imported { images });
                self.emit(Effect::Reply { to: id, result });
            }
            Event::Persisted { seq, result } => self.on_persisted(seq, result),
            Event::PortsReady(ready) => features::on_ports_ready(self, ready),
            Event::WarmFlags(flags) => {
                tracing::debug!(?flags, "warm restart flags");
                self.warm = flags;
            }
            Event::ColdStartDone { group, result } => groups::on_cold_start_done(self, &group, result),
            Event::ConfigReloaded(result) => reload::on_config_reloaded(self, result),
            Event::FeaturesLoaded(entries) => features::on_loaded(self, entries),
            Event::FeatureChanged { name, fields } => features::on_changed(self, &name, fields),
            Event::FeatureWritten { service, result } => features::on_written(self, &service, result),
            Event::Pods(seen) => ownership::on_pods(self, seen),
            event @ (Event::OsDone { .. } | Event::ImageCommitted { .. }) => os::dispatch(self, event),
        }
    }

    fn after_event(&mut self) {
        // Who runs a kube-owned feature decides whether its local container may.
        ownership::advance(self);
        self.reconcile();
        waiters::resolve(self);
        features::resolve_requests(self);
        reload::advance(self);
        change::advance(self);
        release::advance(self);
        ownership::advance(self);
        features::report(self);
        os::advance(self);
        super::lifecycle::report_degraded(self);
        let plan = self.reconcile();
        self.views_changed();
        if let Some(id) = self.draining {
            if self.units.values().all(|u| !u.phase.is_active()) {
                self.draining = None;
                self.emit(Effect::Reply { to: id, result: Ok(super::event::Response::Done) });
                self.emit(Effect::Exit);
            }
        }
        self.wake_at = plan.wake_at;
        if let Some(at) = plan.wake_at.filter(|at| self.out.wake != Some(*at)) {
            self.out.wake = Some(at);
            self.emit(Effect::WakeAt(at));
        }
    }

    /// Plans and starts what the plan says. Every start's generation is on disk before its
    /// container exists, so none is ever reused; one persist covers a whole wave.
    fn reconcile(&mut self) -> plan::Plan {
        features::release_delayed(self);
        groups::clear(self);
        let views: BTreeMap<ServiceName, UnitView> = self
            .units
            .iter()
            .map(|(name, unit)| {
                let view = UnitView {
                    want: ownership::runs_locally(self, name),
                    remote_ready: ownership::kube_pod(self, name).is_some_and(|p| p.ready),
                    phase: unit.phase.clone(),
                    cycle: unit.cycle.is_some(),
                    gate: features::gate(self, name),
                };
                (name.clone(), view)
            })
            .collect();
        let plan = plan::plan(self.manifests.graph(), &views, self.timers(), self.now.mono);
        self.waiting = plan.waiting.clone();
        for action in &plan.actions {
            match action {
                Action::Start(name) => {
                    let record = self.record(name);
                    record.generation += 1;
                    let generation = record.generation;
                    self.out.dirty = true;
                    super::lifecycle::start(self, name, generation);
                }
                Action::Stop(name) => super::lifecycle::stop(self, name),
            }
        }
        plan
    }

    /// Deadlines besides backoffs: degraded reports, the delayed start's fallback, the image
    /// change's gate and settle window, waiters' and FEATURE requests' timeouts.
    fn timers(&self) -> Vec<Instant> {
        let mut timers: Vec<Instant> = self
            .units
            .values()
            .filter_map(|u| u.degraded.as_ref().map(|d| d.reported + super::lifecycle::DEGRADED_REPORT))
            .collect();
        if let Delayed::Held { deadline: Some(deadline) } = self.delayed {
            timers.push(deadline);
        }
        timers.extend(change::wake(self));
        timers.extend(os::wake(self));
        timers.extend(ownership::wake(self));
        timers
    }

    /// Hands out the view of every service that changed, and starts the units of services
    /// that came up on their own (a unit is active if and only if its service runs).
    fn views_changed(&mut self) {
        let names: Vec<ServiceName> = self.units.keys().cloned().collect();
        for name in names {
            let view = status::service_view(self, &name);
            let previous = self.last_views.get(&name);
            if previous == Some(&view) {
                continue;
            }
            if self.config.mirror_units && status::unit_must_start(previous, &view) {
                self.emit(Effect::StartUnit(name.clone()));
            }
            self.emit(Effect::Status(view.clone()));
            self.last_views.insert(name, view);
        }
    }

    /// Tells the database link whether the database service is ready (when that changed).
    pub(super) fn database_ready(&mut self, ready: bool) {
        let was_ready = self.database_ready_sent.is_some_and(DatabaseReadiness::is_ready);
        if self.database_ready_sent.is_some() && ready == was_ready {
            return;
        }
        let readiness = if ready {
            self.database_episodes += 1;
            DatabaseReadiness::Ready(self.database_episodes)
        } else {
            DatabaseReadiness::Down
        };
        self.database_ready_sent = Some(readiness);
        self.emit(Effect::DatabaseReady(readiness));
    }

    /// Asks the database link for `request`, when there is one.
    pub(super) fn db(&mut self, request: super::event::DbRequest) {
        if self.config.database_link {
            self.emit(Effect::Db(request));
        }
    }

    pub(super) fn dispatch_images_changed(&mut self) {
        self.images_changed();
    }

    fn images_changed(&mut self) {
        let wall = self.now.wall;
        for unit in self.units.values_mut() {
            if matches!(unit.phase, Phase::Failed { blocked: true, .. }) {
                unit.message = None;
                unit.set_phase(Phase::Stopped, wall);
            }
        }
    }

    fn forget_request(&mut self, id: RequestId) {
        self.waiters.forget(id);
        self.feature_requests.retain(|r| r.id != id);
        if let Some(reload) = &mut self.reload {
            reload.forget(id);
        }
        change::forget(self, id);
        if self.release_listener == Some(id) {
            self.release_listener = None;
        }
    }

    fn on_persisted(&mut self, seq: u64, result: Result<(), super::event::Failure>) {
        if let Err(e) = &result {
            tracing::error!(error = %e, "cannot persist desired state");
            change::persist_failed(self, e);
        }
        if self.out.awaiting != Some(seq) {
            return;
        }
        self.out.awaiting = None;
        while let Some(effect) = self.out.held.pop_front() {
            let barrier = match &effect {
                Effect::Persist { seq, .. } => Some(*seq),
                _ => None,
            };
            self.out.released.push(effect);
            if barrier.is_some() {
                self.out.awaiting = barrier;
                break;
            }
        }
    }

    /// Queues an effect behind everything before it.
    pub(super) fn emit(&mut self, effect: Effect) {
        self.out.batch.push(effect);
    }

    /// Drops held effects that are no longer wanted (a change refused after its journal
    /// could not be written).
    /// Answers how many it dropped.
    pub(super) fn retract(&mut self, unwanted: impl Fn(&Effect) -> bool) -> usize {
        let before = self.out.batch.len() + self.out.released.len() + self.out.held.len();
        self.out.batch.retain(|e| !unwanted(e));
        self.out.released.retain(|e| !unwanted(e));
        self.out.held.retain(|e| !unwanted(e));
        before - (self.out.batch.len() + self.out.released.len() + self.out.held.len())
    }

    /// The state changed: it is persisted at the end of this event.
    pub(super) fn save(&mut self) {
        self.out.dirty = true;
    }

    /// Ends the event: the effects a persist released, then this event's persist, if any,
    /// then the effects that may leave now; the rest wait for the persist before them.
    fn finish(&mut self) -> Vec<Effect> {
        let mut ready = std::mem::take(&mut self.out.released);
        let fresh = std::mem::take(&mut self.out.batch);
        if std::mem::take(&mut self.out.dirty) {
            // A change's outcome reaches the history before the persist that clears its
            // journal: a kill -9 between the two resumes the change, and never loses it.
            let (outcomes, fresh): (Vec<Effect>, Vec<Effect>) =
                fresh.into_iter().partition(|e| matches!(e, Effect::AppendHistory(_)));
            self.out.seq += 1;
            let persist = Effect::Persist { seq: self.out.seq, state: self.state.clone() };
            if self.out.awaiting.is_some() {
                self.out.held.extend(outcomes);
                self.out.held.push_back(persist);
            } else {
                self.out.awaiting = Some(self.out.seq);
                ready.extend(outcomes);
                ready.push(persist);
            }
            self.out.held.extend(fresh);
        } else if self.out.awaiting.is_some() {
            self.out.held.extend(fresh);
        } else {
            ready.extend(fresh);
        }
        ready
    }
}

/// Lookups and the one rule of what should run, shared by every pass.
impl Core {
    pub(super) fn service(&self, name: &ServiceName) -> &Service {
        self.manifests.get(name.as_str()).expect("units and manifests share their names")
    }

    pub(super) fn unit(&mut self, name: &ServiceName) -> &mut Unit {
        self.units.get_mut(name).expect("every service has a unit")
    }

    /// The service's persisted record, made when missing.
    pub(super) fn record(&mut self, name: &ServiceName) -> &mut ServiceRecord {
        self.state.services.entry(name.to_string()).or_default()
    }

    pub(super) fn desired(&self, name: &ServiceName) -> Option<Desired> {
        self.state.services.get(name.as_str()).and_then(|r| r.desired)
    }

    /// Sets an operator's start or stop of `name` (persisted).
    pub(super) fn set_desired(&mut self, name: &ServiceName, desired: Option<Desired>) {
        if self.desired(name) != desired {
            self.record(name).desired = desired;
            self.save();
        }
    }

    /// Whether a service should run: nothing runs while draining, and nothing but the
    /// database while a config reload replaces CONFIG_DB; a disabled FEATURE never runs;
    /// otherwise an operator's start or stop wins, then the FEATURE entry, then the
    /// manifest's default.
    /// Ready: its container's probe passed, or the Kubernetes pod that runs it is ready.
    pub(super) fn is_ready(&self, name: &ServiceName) -> bool {
        self.units[name].phase == Phase::Ready || ownership::kube_pod(self, name).is_some_and(|p| p.ready)
    }

    pub(super) fn want(&self, name: &ServiceName) -> bool {
        if self.draining.is_some() {
            return false;
        }
        if self.reload.as_ref().is_some_and(reload::Reload::holds_services) && self.manifests.database() != Some(name) {
            return false;
        }
        if features::disabled_by_feature(self, name).is_some() {
            return false;
        }
        match self.desired(name) {
            Some(Desired::Running) => true,
            Some(Desired::Stopped) => false,
            None => self.features.get(name).map_or(self.service(name).manifest.service.enabled, |f| f.state.runs()),
        }
    }

    /// The image reference `name` runs now.
    pub(super) fn image_ref(&self, name: &ServiceName) -> String {
        self.image_reference(name.as_str()).unwrap_or_default()
    }

    /// How `name` goes down now: fast when a fast reboot is under way, warm when warm restart
    /// is enabled for it, cold otherwise.
    pub(super) fn stop_mode(&self, name: &ServiceName) -> StopMode {
        if self.warm.fast {
            StopMode::Fast
        } else if groups::warm_enabled(self, name) {
            StopMode::Warm
        } else {
            StopMode::Cold
        }
    }
}
