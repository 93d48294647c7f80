//! Image changes: `soniclet upgrade` and `soniclet rollback`, one service at a time.
//!
//! A change is a journaled state machine ([`ChangeJournal`] in `state.json`, written before
//! each step): **preparing** (pin both images by digest, check the new one's platform and
//! spec, prepare its rootfs; the running service is untouched), **switching** (the pins
//! name the new image; the old container goes as a restart would, warm or by the failure
//! group's rules, the prepared one starts and must be ready within the timeout and stay up,
//! critical processes included, for the settle window), and, when that gate fails,
//! **rolling back** (the pins name the old image again, which must come back ready). A
//! daemon that starts with a journal finds the containers by their image labels and carries
//! the step on, so a service ends on exactly one image.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::plan::Phase;
use super::{CommandError, Event, Health, StopMode, Supervisor, SupervisorConfig};
use crate::api::ErrorKind;
use crate::dblink::DbMessage;
use crate::history::{self, ChangeResult, HistoryEntry};
use crate::manifest::{Service, ServiceName};
use crate::runtime::{self, spec, ContainerRuntime, ImageInfo, RuntimeError};
use crate::store::{ChangeJournal, ChangeKind, ChangeStep, ImagePin, ImagePins};

/// One line of an image change's progress stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeEvent {
    Progress(String),
    /// The change ended: succeeded, rolled back or aborted.
    Done(HistoryEntry),
    /// Refused before anything was touched.
    Refused(crate::api::ApiError),
    /// A release upgrade ended.
    Release(crate::api::ReleaseOutcome),
}

/// What an operator asked for.
#[derive(Debug, Clone)]
pub struct ChangeRequest {
    pub service: String,
    pub kind: ChangeKind,
    /// The stored image to switch to, and its digest (ignored for a rollback: the previous pin).
    pub image: Option<(String, String)>,
    pub warm: bool,
    pub timeout: Duration,
    pub settle: Duration,
}

/// The new container, made ahead of the switch-over.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub image: ImageInfo,
    pub spec: Vec<u8>,
    pub rootfs: String,
}

/// The change in flight, beside its journal.
#[derive(Debug)]
pub(super) struct Change {
    progress: Option<mpsc::UnboundedSender<ChangeEvent>>,
    /// When the gate's ready deadline runs out (set when the new task starts).
    ready_deadline: Option<Instant>,
    /// When the new container became ready: the settle window runs from here.
    ready_at: Option<Instant>,
    failed_at: Option<Instant>,
    /// Whether `WARM_RESTART_ENABLE_TABLE|<service>` was set before a warm change set it.
    warm_before: Option<bool>,
}

impl Change {
    /// `progress` is `None` for a change resumed after a restart of the daemon.
    fn new(progress: Option<mpsc::UnboundedSender<ChangeEvent>>) -> Self {
        Self { progress, ready_deadline: None, ready_at: None, failed_at: None, warm_before: None }
    }

    fn say(&self, message: String) {
        tracing::info!("{message}");
        if let Some(progress) = &self.progress {
            let _ = progress.send(ChangeEvent::Progress(message));
        }
    }
}

/// The name soniclet pins an image under: its repository at its digest.
pub fn pin_reference(reference: &str, digest: &str) -> String {
    format!("{}@{digest}", repository(reference))
}

/// An image reference without its tag or digest.
pub fn repository(reference: &str) -> &str {
    match reference.split_once('@') {
        Some((repository, _)) => repository,
        // A tag follows the last `:` after the last `/` (a registry port precedes it).
        None => match reference.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => repository,
            _ => reference,
        },
    }
}

/// Test hook: `SONICLET_FAILPOINT=<step>` freezes the supervisor right after journaling
/// `<step>` (preparing, switching, started, settling, rolling_back), so a test can `kill -9`
/// the daemon exactly there.
fn failpoint(step: &str) {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    if POINT.get_or_init(|| std::env::var("SONICLET_FAILPOINT").ok()).as_deref() == Some(step) {
        tracing::warn!(step, "failpoint reached: freezing until killed");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

fn rfc3339_ms(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<R: ContainerRuntime, P: Health> Supervisor<R, P> {
    /// The image reference `name` runs: its pin, or its manifest's image.
    pub(super) fn image_ref(&self, name: &ServiceName) -> String {
        match self.store.state().services.get(name.as_str()).and_then(|r| r.image.as_ref()) {
            Some(pin) => pin.reference.clone(),
            None => self.service(name).manifest.container.image.clone(),
        }
    }

    fn journal(&self) -> Option<&ChangeJournal> {
        self.store.state().change.as_ref()
    }

    /// Whether a failure of `name`'s current container is an image change's failed gate:
    /// switching, and the container (or the start under way) is the new image's.
    pub(super) fn gated(&self, name: &ServiceName) -> bool {
        let unit = &self.units[name];
        self.journal().is_some_and(|j| {
            j.service == name.as_str()
                && j.step == ChangeStep::Switching
                && (unit.phase == Phase::Starting || unit.image_digest.as_deref() == Some(j.to.digest.as_str()))
        })
    }

    /// Refuses an operator's start, stop or restart of the service under an image change.
    pub(super) fn refuse_during_change(&self, name: &ServiceName) -> Result<(), CommandError> {
        match self.journal() {
            Some(journal) if journal.service == name.as_str() => Err(CommandError::new(
                ErrorKind::Conflict,
                format!("an image change of {name} is in progress; wait for it to end (`soniclet history {name}`)"),
            )),
            _ => Ok(()),
        }
    }

    /// A warm change keeps the member's peers up, as warm restart does.
    pub(super) fn change_is_warm(&self, name: &ServiceName) -> bool {
        self.journal().is_some_and(|j| j.service == name.as_str() && j.warm)
    }

    pub(super) fn begin_change(&mut self, request: ChangeRequest, progress: mpsc::UnboundedSender<ChangeEvent>) {
        match self.accept_change(&request) {
            Ok((journal, source)) => {
                let change = Change::new(Some(progress));
                change.say(format!(
                    "{} {}: preparing {} (running {})",
                    match journal.kind {
                        ChangeKind::Upgrade => "upgrade",
                        ChangeKind::Rollback => "rollback",
                    },
                    journal.service,
                    journal.to.reference,
                    journal.from.reference
                ));
                self.change = Some(change);
                self.report_change(&journal, "preparing", None);
                self.spawn_prepare(journal, source);
                failpoint("preparing");
            }
            Err(e) => {
                let _ = progress.send(ChangeEvent::Refused(crate::api::ApiError { kind: e.kind, message: e.message }));
            }
        }
    }

    /// Checks a request against the current state and journals it; nothing else changes.
    /// Answers the journal and the reference the new image is stored under.
    fn accept_change(&mut self, request: &ChangeRequest) -> Result<(ChangeJournal, String), CommandError> {
        let Some(name) = self.manifests.lookup(&request.service).cloned() else {
            return Err(CommandError::new(ErrorKind::NotFound, self.manifests.unknown(&request.service)));
        };
        if let Some(journal) = self.journal() {
            return Err(CommandError::new(
                ErrorKind::Conflict,
                format!("an image change of {} is in progress; wait for it to end", journal.service),
            ));
        }
        if self.reload.is_some() {
            return Err(CommandError::new(ErrorKind::Conflict, "a config reload is in progress; wait for it to end"));
        }
        if self.draining.is_some() {
            return Err(CommandError::new(ErrorKind::Unavailable, "the daemon is shutting down"));
        }
        let unit = &self.units[&name];
        let (Phase::Ready, Some(current)) = (&unit.phase, unit.image_digest.clone()) else {
            return Err(CommandError::new(
                ErrorKind::Conflict,
                format!(
                    "{name} is {} and not ready; start it (`soniclet start {name}`) before changing its image",
                    self.state_name(&name, unit)
                ),
            ));
        };
        let record = self.store.state().services.get(name.as_str()).cloned().unwrap_or_default();
        let (to_source, to_digest) = match request.kind {
            ChangeKind::Upgrade => request.image.clone().ok_or_else(|| {
                CommandError::new(ErrorKind::BadRequest, "an upgrade needs an image (--image FILE|REF)")
            })?,
            ChangeKind::Rollback => match &record.previous {
                Some(pin) => (pin.reference.clone(), pin.digest.clone()),
                None => {
                    return Err(CommandError::new(
                        ErrorKind::NotFound,
                        format!("{name} has no previous image to roll back to (see `soniclet history {name}`)"),
                    ))
                }
            },
        };
        if to_digest == current {
            return Err(CommandError::new(ErrorKind::BadRequest, format!("{name} already runs {to_digest}")));
        }
        let from = ImagePin { reference: pin_reference(&self.image_ref(&name), &current), digest: current };
        let to = ImagePin { reference: pin_reference(&to_source, &to_digest), digest: to_digest };
        let started_ms = unix_ms(SystemTime::now());
        let journal = ChangeJournal {
            service: name.to_string(),
            kind: request.kind,
            step: ChangeStep::Preparing,
            from,
            to,
            before: record.pins(),
            rootfs: format!("{name}-next-{started_ms}"),
            warm: request.warm,
            timeout_secs: request.timeout.as_secs().max(1),
            settle_secs: request.settle.as_secs(),
            started_ms,
        };
        self.store.state_mut().change = Some(journal.clone());
        if let Err(e) = self.store.save() {
            self.store.state_mut().change = None;
            return Err(CommandError::new(ErrorKind::Internal, e.to_string()));
        }
        Ok((journal, to_source))
    }

    fn spawn_prepare(&mut self, journal: ChangeJournal, source: String) {
        let name = self.manifests.lookup(&journal.service).cloned().expect("accepted changes name a service");
        let service = self.service(&name).clone();
        let current_ref = self.image_ref(&name);
        let runtime = Arc::clone(&self.runtime);
        let config = self.config.clone();
        let tx = self.tx.clone();
        self.tracker.spawn(async move {
            let result = prepare(&*runtime, &config, &service, &journal, &current_ref, &source).await;
            if result.is_err() {
                let _ = runtime.discard_rootfs(&journal.rootfs).await;
            }
            let _ = tx.send(Event::ChangePrepared { service: name, result });
        });
    }

    pub(super) fn on_change_prepared(&mut self, name: &ServiceName, result: Result<Prepared, String>) {
        let Some(journal) = self.journal().cloned() else { return };
        if journal.service != name.as_str() || journal.step != ChangeStep::Preparing {
            return;
        }
        let prepared = match result {
            Ok(prepared) => prepared,
            Err(reason) => {
                tracing::error!(service = %name, reason = %reason, "image change refused before the switch-over");
                self.finish_change(ChangeResult::Aborted, Some(reason), None);
                return;
            }
        };
        let record = self.store.state_mut().services.entry(journal.service.clone()).or_default();
        record.set_pins(ImagePins { image: Some(journal.to.clone()), previous: Some(journal.from.clone()) });
        let journal = self.store.state_mut().change.as_mut().expect("journal checked above");
        journal.step = ChangeStep::Switching;
        let warm = journal.warm;
        let journal = journal.clone();
        self.save();
        self.report_change(&journal, "switching", None);
        if warm {
            let before = self.warm.warm.get(name.as_str()).copied();
            if let Some(change) = &mut self.change {
                change.warm_before = before;
            }
            if let Some(db) = &self.db {
                let _ = db.messages.send(DbMessage::Warm { service: name.to_string(), enable: Some(true) });
            }
        }
        let mode = if warm { "warm" } else { "cold" };
        let cycled = self.cycle_for_restart(name, warm);
        self.unit(name).prepared = Some(prepared);
        if let Some(change) = &self.change {
            let others: Vec<&str> = cycled.iter().filter(|n| *n != name).map(|n| n.as_str()).collect();
            let with = if others.is_empty() { String::new() } else { format!(", with {}", others.join(", ")) };
            change.say(format!("{name}: prepared; stopping the old container ({mode}{with})"));
        }
        failpoint("switching");
    }

    /// Cycles `name` as a restart does: alone when `warm` (with its warm stop), otherwise
    /// with its failure group and everything that depends on them. Returns who cycles.
    pub(super) fn cycle_for_restart(&mut self, name: &ServiceName, warm: bool) -> Vec<ServiceName> {
        let roots = if warm { BTreeSet::from([name.clone()]) } else { self.with_group(name) };
        if let (false, Some(group)) = (warm, self.service(name).failure_group()) {
            self.cleared.insert(group.to_owned(), super::GroupClear::Needed);
        }
        let mut affected = Vec::new();
        for dep in roots.iter().flat_map(|r| self.manifests.graph().dependent_closure(r)).collect::<BTreeSet<_>>() {
            if dep != *name && !self.want(&dep) {
                continue;
            }
            self.reset(&dep);
            let mode = if warm { self.stop_mode(&dep) } else { StopMode::Cold };
            let unit = self.unit(&dep);
            if unit.phase.is_active() {
                unit.cycle = true;
                unit.stop_mode = mode;
                unit.restart_requested = true;
            }
            affected.push(dep);
        }
        affected
    }

    /// The gated container started, or failed to.
    pub(super) fn on_gated_start(&mut self, name: &ServiceName, pid: u32) {
        let timeout = self.journal().map_or(0, |j| j.timeout_secs);
        if let Some(change) = &mut self.change {
            change.ready_deadline = Some(Instant::now() + Duration::from_secs(timeout));
            change.say(format!("{name}: new container started (pid {pid}); waiting up to {timeout}s for ready"));
        }
        failpoint("started");
    }

    /// The new container failed the gate: go back to the old image.
    pub(super) fn gate_failed(&mut self, name: &ServiceName, reason: String) {
        let Some(journal) = self.journal().cloned() else { return };
        tracing::error!(service = %name, reason = %reason, to = %journal.to.reference, "image change failed its gate; rolling back");
        // Back to the old image, pinned by digest: whatever was imported under its tag since
        // (the failed image, say) never runs by accident.
        let record = self.store.state_mut().services.entry(journal.service.clone()).or_default();
        record.set_pins(ImagePins { image: Some(journal.from.clone()), previous: journal.before.previous.clone() });
        if let Some(j) = self.store.state_mut().change.as_mut() {
            j.step = ChangeStep::RollingBack { reason: reason.clone() };
        }
        self.save();
        self.report_change(&journal, "rolling_back", Some(&reason));
        if let Some(change) = &mut self.change {
            change.failed_at = Some(Instant::now());
            change.say(format!("{name}: {reason}; rolling back to {}", journal.from.reference));
        }
        // A cold change goes back the way a crash would: the failure group with it.
        if !journal.warm {
            if let Some(group) = self.service(name).failure_group().map(str::to_owned) {
                self.group_down(&group, name);
            }
        }
        let unit = self.unit(name);
        unit.prepared = None;
        unit.message = Some(format!("rolling back: {reason}"));
        if unit.phase.is_active() && unit.phase != Phase::Stopping {
            unit.cycle = true;
            unit.stop_mode = StopMode::Cold;
        } else if unit.phase != Phase::Stopping {
            unit.set_phase(Phase::Stopped);
        }
        failpoint("rolling_back");
    }

    /// Moves a change on after each event: the gate's deadline, the settle window, the end.
    pub(super) fn advance_change(&mut self) {
        let Some(journal) = self.journal().cloned() else { return };
        let Some(name) = self.manifests.lookup(&journal.service).cloned() else { return };
        if self.change.is_none() {
            // Resumed after a restart of the daemon: no one listens, the gate still applies.
            self.change = Some(Change::new(None));
        }
        let unit = &self.units[&name];
        let now = Instant::now();
        // Stopped meanwhile (FEATURE disabled, a shutdown draining): no gate can pass; the
        // old image stays pinned for the next start.
        let gone = !self.want(&name) && !unit.phase.is_active();
        match (&journal.step, gone) {
            (ChangeStep::Switching, true) => {
                return self.gate_failed(&name, "the service was stopped during the change".to_owned())
            }
            (ChangeStep::RollingBack { reason }, true) => {
                let reason = format!("{reason}; the service is stopped");
                return self.finish_change(ChangeResult::RolledBack, Some(reason), None);
            }
            _ => {}
        }
        match &journal.step {
            ChangeStep::Preparing => {}
            ChangeStep::Switching => {
                let on_new = unit.image_digest.as_deref() == Some(journal.to.digest.as_str()) && !unit.cycle;
                let phase = unit.phase.clone();
                let change = self.change.as_mut().expect("set above");
                match phase {
                    Phase::Probing if on_new => {
                        let deadline = *change
                            .ready_deadline
                            .get_or_insert_with(|| now + Duration::from_secs(journal.timeout_secs));
                        if now >= deadline {
                            let reason = format!("not ready within {}s", journal.timeout_secs);
                            self.gate_failed(&name, reason);
                        }
                    }
                    Phase::Ready if on_new => {
                        if change.ready_at.is_none() {
                            change.ready_at = Some(now);
                            change.say(format!("{name}: ready; settling for {}s", journal.settle_secs));
                            failpoint("settling");
                        }
                        let ready_at = self.change.as_ref().and_then(|c| c.ready_at).unwrap_or(now);
                        if now >= ready_at + Duration::from_secs(journal.settle_secs) {
                            self.finish_change(ChangeResult::Succeeded, None, None);
                        }
                    }
                    Phase::Failed { reason } => self.gate_failed(&name, reason),
                    Phase::Backoff { .. } => self.gate_failed(&name, "the new container failed".to_owned()),
                    _ => {}
                }
            }
            ChangeStep::RollingBack { reason } => {
                let reason = reason.clone();
                let on_old = unit.image_digest.as_deref() == Some(journal.from.digest.as_str()) && !unit.cycle;
                match &unit.phase {
                    Phase::Ready if on_old => {
                        let recovery = self.change.as_ref().and_then(|c| c.failed_at).map(|t| ms(now - t));
                        self.finish_change(ChangeResult::RolledBack, Some(reason), recovery);
                    }
                    Phase::Failed { reason: also } => {
                        let reason = format!("{reason}; the old image failed too: {also}");
                        self.finish_change(ChangeResult::RolledBack, Some(reason), None);
                    }
                    _ => {}
                }
            }
        }
    }

    /// When the supervisor must wake for the change: the gate's deadline or the settle's end.
    pub(super) fn change_wake(&self) -> Option<Instant> {
        let journal = self.journal()?;
        let change = self.change.as_ref()?;
        match change.ready_at {
            Some(ready_at) => Some(ready_at + Duration::from_secs(journal.settle_secs)),
            None => change.ready_deadline,
        }
    }

    fn finish_change(&mut self, result: ChangeResult, reason: Option<String>, recovery_ms: Option<u64>) {
        let Some(journal) = self.store.state_mut().change.take() else { return };
        let change = self.change.take();
        let name = self.manifests.lookup(&journal.service).cloned().expect("journals name a service");
        if result == ChangeResult::Aborted {
            // Nothing was switched: the pins are as they were.
            let record = self.store.state_mut().services.entry(journal.service.clone()).or_default();
            record.set_pins(journal.before.clone());
        }
        self.save();
        let unit = self.unit(&name);
        unit.prepared = None;
        let downtime_ms = match result {
            ChangeResult::Aborted => None,
            _ => unit.last_downtime.map(ms),
        };
        let finished = SystemTime::now();
        let entry = HistoryEntry {
            service: journal.service.clone(),
            action: journal.kind,
            from: journal.from.clone(),
            to: journal.to.clone(),
            started: rfc3339_ms(UNIX_EPOCH + Duration::from_millis(journal.started_ms)),
            finished: rfc3339_ms(finished),
            result,
            downtime_ms,
            recovery_ms,
            reason: reason.clone(),
        };
        unit.upgrade_note = Some(match (&result, &reason) {
            (ChangeResult::Succeeded, _) => format!("changed to {} at {}", journal.to.reference, entry.finished),
            (_, Some(reason)) => {
                format!("{} {} at {}: {reason}", journal.to.reference, result.as_str(), entry.finished)
            }
            (_, None) => format!("{} {} at {}", journal.to.reference, result.as_str(), entry.finished),
        });
        if result == ChangeResult::RolledBack {
            unit.message =
                Some(format!("rolled back from {}: {}", journal.to.reference, reason.clone().unwrap_or_default()));
        }
        tracing::info!(service = %name, result = result.as_str(), downtime_ms, reason = reason.as_deref().unwrap_or(""), "image change ended");
        if let Err(e) = history::append(self.store.dir(), entry.clone()) {
            tracing::error!(error = %e, "cannot record the image change in the history");
        }
        self.report_change(&journal, result.as_str(), reason.as_deref());
        if journal.warm {
            let enable = change.as_ref().and_then(|c| c.warm_before);
            if let Some(db) = &self.db {
                let _ = db.messages.send(DbMessage::Warm { service: name.to_string(), enable });
            }
        }
        if let Some(progress) = change.and_then(|c| c.progress) {
            let _ = progress.send(ChangeEvent::Done(entry));
        }
        if result == ChangeResult::Aborted {
            let runtime = Arc::clone(&self.runtime);
            self.tracker.spawn(async move {
                let _ = runtime.discard_rootfs(&journal.rootfs).await;
            });
        }
        self.collect_images();
    }

    /// STATE_DB `SERVICE_UPGRADE_TABLE|<service>`.
    fn report_change(&self, journal: &ChangeJournal, state: &str, reason: Option<&str>) {
        let Some(db) = &self.db else { return };
        let mut fields = vec![
            ("state".to_owned(), state.replace(' ', "_")),
            ("action".to_owned(), if journal.kind == ChangeKind::Upgrade { "upgrade" } else { "rollback" }.to_owned()),
            ("from".to_owned(), journal.from.reference.clone()),
            ("to".to_owned(), journal.to.reference.clone()),
            ("timestamp".to_owned(), rfc3339_ms(SystemTime::now())),
        ];
        if let Some(reason) = reason {
            fields.push(("reason".to_owned(), reason.to_owned()));
        }
        let _ = db.messages.send(DbMessage::Upgrade { service: journal.service.clone(), fields });
    }

    /// At start, after adoption: a change the last daemon left is carried on.
    pub(super) fn resume_change(&mut self) {
        let Some(journal) = self.journal().cloned() else { return };
        tracing::warn!(service = %journal.service, step = ?journal.step, "resuming an interrupted image change");
        match journal.step {
            ChangeStep::Preparing => self.finish_change(
                ChangeResult::Aborted,
                Some("the daemon stopped before the switch-over; the service was not touched".to_owned()),
                None,
            ),
            ChangeStep::Switching => {
                if let Some(name) = self.manifests.lookup(&journal.service).cloned() {
                    // The prepared rootfs is used if it survived; otherwise it is made again.
                    let unit = self.unit(&name);
                    if unit.image_digest.as_deref() != Some(journal.to.digest.as_str()) {
                        unit.resume_rootfs = Some(journal.rootfs.clone());
                    }
                    if journal.warm {
                        unit.stop_mode = StopMode::Warm;
                    }
                }
            }
            ChangeStep::RollingBack { .. } => {}
        }
    }

    /// Removes images of past changes that are neither the current nor the previous image of
    /// any service (nor running), from soniclet's namespace only.
    pub(super) fn collect_images(&mut self) {
        let mut keep: BTreeSet<String> = BTreeSet::new();
        for record in self.store.state().services.values() {
            keep.extend(record.image.iter().chain(record.previous.iter()).map(|p| p.digest.clone()));
        }
        keep.extend(self.units.values().filter_map(|u| u.image_digest.clone()));
        if let Some(journal) = self.journal() {
            keep.insert(journal.from.digest.clone());
            keep.insert(journal.to.digest.clone());
        }
        let unpinned: Vec<String> = self
            .units
            .keys()
            .filter(|n| self.store.state().services.get(n.as_str()).is_none_or(|r| r.image.is_none()))
            .map(|n| self.service(n).manifest.container.image.clone())
            .collect();
        let runtime = Arc::clone(&self.runtime);
        let state_dir = self.store.dir().to_owned();
        self.tracker.spawn(async move {
            let images = match runtime.images().await {
                Ok(images) => images,
                Err(e) => return tracing::warn!(error = %e, "image collection: cannot list images"),
            };
            // What the manifests name stays while a service runs it by that name.
            keep.extend(images.iter().filter(|i| unpinned.contains(&i.name)).map(|i| i.digest.clone()));
            let mut candidates: BTreeSet<String> = history::load(&state_dir)
                .unwrap_or_default()
                .into_iter()
                .flat_map(|e| [e.from.digest, e.to.digest])
                .collect();
            candidates.extend(images.iter().filter(|i| i.name.contains("@sha256:")).map(|i| i.digest.clone()));
            for image in images.iter().filter(|i| candidates.contains(&i.digest) && !keep.contains(&i.digest)) {
                match runtime.remove_image(&image.name).await {
                    Ok(()) => {
                        tracing::info!(image = %image.name, digest = %image.digest, "removed an image no service keeps")
                    }
                    Err(e) => tracing::warn!(image = %image.name, error = %e, "cannot remove image"),
                }
            }
        });
    }
}

/// Pins both images, checks the new one, builds its spec and prepares its rootfs.
async fn prepare<R: ContainerRuntime>(
    runtime: &R,
    config: &SupervisorConfig,
    service: &Service,
    journal: &ChangeJournal,
    current_ref: &str,
    source: &str,
) -> Result<Prepared, String> {
    let err = |e: RuntimeError| e.to_string();
    // The running image by digest, so a rollback finds it whatever was imported since.
    let current = runtime.image(current_ref).await.ok().filter(|i| i.digest == journal.from.digest);
    let current_name = match current {
        Some(image) => image.name,
        None => runtime
            .images()
            .await
            .map_err(err)?
            .into_iter()
            .find(|i| i.digest == journal.from.digest)
            .map(|i| i.name)
            .ok_or_else(|| {
                format!(
                    "the running image {} is no longer stored in containerd, so a rollback could not restore it; import it again first",
                    journal.from.digest
                )
            })?,
    };
    runtime.tag_image(&current_name, &journal.from.reference).await.map_err(err)?;
    let target = runtime.image(source).await.map_err(err)?;
    if target.digest != journal.to.digest {
        return Err(format!(
            "image {source} is {} now, not {}; it changed meanwhile",
            target.digest, journal.to.digest
        ));
    }
    runtime::check_platform(&target.name, &target.os, &target.architecture)?;
    let image = runtime.tag_image(source, &journal.to.reference).await.map_err(err)?;
    let rendered = spec::render(service, &image.config, &config.host).map_err(|e| e.to_string())?;
    for source in spec::bind_sources(&rendered) {
        std::fs::create_dir_all(&source).map_err(|e| format!("cannot create {}: {e}", source.display()))?;
    }
    runtime.prepare_rootfs(&journal.rootfs, &image).await.map_err(err)?;
    Ok(Prepared { image, spec: spec::to_json(&rendered), rootfs: journal.rootfs.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_name_the_repository_at_the_digest() {
        let d = "sha256:ab";
        assert_eq!(pin_reference("docker-fpm-frr:latest", d), "docker-fpm-frr@sha256:ab");
        assert_eq!(pin_reference("docker-fpm-frr", d), "docker-fpm-frr@sha256:ab");
        assert_eq!(pin_reference("reg:5000/sonic/swss:v2", d), "reg:5000/sonic/swss@sha256:ab");
        assert_eq!(pin_reference("reg:5000/sonic/swss", d), "reg:5000/sonic/swss@sha256:ab");
        assert_eq!(pin_reference("swss@sha256:cd", d), "swss@sha256:ab");
    }
}
