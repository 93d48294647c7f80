//! Image changes: `soniclet upgrade` and `soniclet rollback`, one service at a time.
//!
//! A change is a journaled state machine ([`ChangeJournal`] in the state, persisted before
//! each step begins). Before anything is journaled the new image is checked and staged (an
//! archive verified blob by blob; its digest and platform compared): a refusal there changes
//! nothing and leaves no history. Then:
//! - **preparing**: both images are pinned by digest, an archive is imported, the new
//!   container's spec and rootfs are made; the running service is untouched;
//! - **switching**: the pins name the new image; the old container goes as a restart would
//!   (warm, or by the failure group's rules), the prepared one starts, and must be ready
//!   within the timeout and stay up, critical processes included, for the settle window;
//! - **rolling back**, when that gate fails: the pins name the old image again, which must
//!   come back ready.
//!
//! A daemon that starts with a journal finds the containers by their image labels and
//! carries the step on, so a service ends on exactly one image.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::core::Core;
use super::event::{
    ChangeRequest, DbRequest, Effect, Failure, Notice, Prepared, Progress, RequestId, Response, StagedImage,
};
use super::plan::Phase;
use super::types::{CommandError, ErrorKind, StopMode};
use super::unit::{Cycle, NextStart};
use crate::manifest::ServiceName;
use crate::state::history::{ChangeResult, HistoryEntry};
use crate::state::store::{ChangeJournal, ChangeKind, ChangeStep, ImagePin, ImagePins};

/// How long a new image must stay up after it is ready, unless the request says.
pub(super) const DEFAULT_SETTLE: Duration = Duration::from_secs(10);

/// Where the one image change stands (its journal, once it has one, is in the state).
#[derive(Debug, Default)]
pub(super) enum Slot {
    #[default]
    Idle,
    /// The new image is checked and staged; nothing is journaled yet.
    Staging { service: ServiceName, request: ChangeRequest, listener: Option<RequestId>, in_release: bool },
    /// Journaled: what the journal does not need to keep.
    Active(Active),
}

#[derive(Debug, Default)]
pub(super) struct Active {
    /// Who follows the change (none for a change resumed after a restart of the daemon).
    listener: Option<RequestId>,
    /// The change is one of a release's.
    in_release: bool,
    /// When the gate's ready deadline runs out (set when the new task starts).
    ready_deadline: Option<Instant>,
    /// When the new container became ready: the settle window runs from here.
    ready_at: Option<Instant>,
    failed_at: Option<Instant>,
    /// Whether `WARM_RESTART_ENABLE_TABLE|<service>` was set before a warm change set it.
    warm_before: Option<bool>,
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

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

pub(super) fn rfc3339_ms(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn kind_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Upgrade => "upgrade",
        ChangeKind::Rollback => "rollback",
    }
}

fn journal(core: &Core) -> Option<&ChangeJournal> {
    core.state.change.as_ref()
}

fn active(core: &mut Core) -> Option<&mut Active> {
    match &mut core.change {
        Slot::Active(active) => Some(active),
        _ => None,
    }
}

/// Tells the change's listener (and the log).
fn say(core: &mut Core, message: String) {
    tracing::info!("{message}");
    let listener = match &core.change {
        Slot::Active(active) => active.listener,
        Slot::Staging { listener, .. } => *listener,
        Slot::Idle => None,
    };
    if let Some(to) = listener {
        core.emit(Effect::Progress { to, item: Progress::Line(message) });
    }
}

/// The service of the change in flight, once journaled.
pub(super) fn in_flight(core: &Core) -> Option<String> {
    journal(core).map(|j| j.service.clone())
}

/// Whether a failure of `name`'s current container is an image change's failed gate:
/// switching, and the container (or the start under way) is the new image's.
pub(super) fn gated(core: &Core, name: &ServiceName) -> bool {
    let unit = &core.units[name];
    journal(core).is_some_and(|j| {
        j.service == name.as_str()
            && j.step == ChangeStep::Switching
            && (unit.phase == Phase::Starting || unit.image_digest.as_deref() == Some(j.to.digest.as_str()))
    })
}

/// Refuses an operator's start, stop or restart of the service under an image change.
pub(super) fn refuse_during_change(core: &Core, name: &ServiceName) -> Result<(), CommandError> {
    match journal(core) {
        Some(journal) if journal.service == name.as_str() => Err(CommandError::new(
            ErrorKind::Conflict,
            format!("an image change of {name} is in progress; wait for it to end (`soniclet history {name}`)"),
        )),
        _ => Ok(()),
    }
}

/// A warm change keeps the member's peers up, as warm restart does.
pub(super) fn is_warm(core: &Core, name: &ServiceName) -> bool {
    journal(core).is_some_and(|j| j.service == name.as_str() && j.warm)
}

/// Ends a change that never got a journal: the refusal goes to its listener (or its release).
fn refuse(core: &mut Core, listener: Option<RequestId>, in_release: bool, e: CommandError) {
    if in_release {
        if let Some(to) = listener {
            core.emit(Effect::Progress { to, item: Progress::ChangeRefused(e.clone()) });
        }
        super::release::change_ended(core, None);
    } else if let Some(to) = listener {
        core.emit(Effect::Reply { to, result: Err(e) });
    }
}

/// The checks a change must pass before it may touch anything, again once its image is
/// staged.
fn check(core: &Core, name: &ServiceName) -> Result<String, CommandError> {
    if let Some(journal) = journal(core) {
        return Err(CommandError::new(
            ErrorKind::Conflict,
            format!("an image change of {} is in progress; wait for it to end", journal.service),
        ));
    }
    if core.reload.is_some() {
        return Err(CommandError::new(ErrorKind::Conflict, "a config reload is in progress; wait for it to end"));
    }
    if core.draining.is_some() {
        return Err(CommandError::new(ErrorKind::Unavailable, "the daemon is shutting down"));
    }
    let unit = &core.units[name];
    match (&unit.phase, &unit.image_digest) {
        (Phase::Ready, Some(current)) => Ok(current.clone()),
        _ => Err(CommandError::new(
            ErrorKind::Conflict,
            format!(
                "{name} is {} and not ready; start it (`soniclet start {name}`) before changing its image",
                super::status::state(core, name).as_str()
            ),
        )),
    }
}

/// `upgrade` or `rollback`: an upgrade's image is staged first; a rollback's is the
/// previous pin, stored already.
pub(super) fn begin(core: &mut Core, listener: Option<RequestId>, request: ChangeRequest, in_release: bool) {
    let Some(name) = core.manifests.lookup(&request.service).cloned() else {
        let e = CommandError::new(ErrorKind::NotFound, core.manifests.unknown(&request.service));
        return refuse(core, listener, in_release, e);
    };
    if !matches!(core.change, Slot::Idle) {
        let e =
            CommandError::new(ErrorKind::Conflict, "another upgrade or rollback is in progress; wait for it to end");
        return refuse(core, listener, in_release, e);
    }
    if let Err(e) = check(core, &name) {
        return refuse(core, listener, in_release, e);
    }
    match (request.kind, request.source.clone()) {
        (ChangeKind::Upgrade, Some(source)) => {
            let wanted = request.name.clone().unwrap_or_else(|| core.service(&name).manifest.container.image.clone());
            let digest = request.digest.clone();
            core.change = Slot::Staging { service: name.clone(), request, listener, in_release };
            core.emit(Effect::Stage { service: name, source, wanted, digest, progress: listener });
        }
        (ChangeKind::Upgrade, None) => {
            let e = CommandError::new(ErrorKind::BadRequest, "an upgrade needs an image (--image FILE|REF)");
            refuse(core, listener, in_release, e);
        }
        (ChangeKind::Rollback, _) => accept(core, &name, &request, None, listener, in_release),
    }
}

pub(super) fn on_staged(core: &mut Core, name: &ServiceName, result: Result<StagedImage, CommandError>) {
    let Slot::Staging { service, .. } = &core.change else { return };
    if service != name {
        return;
    }
    let Slot::Staging { request, listener, in_release, .. } = std::mem::take(&mut core.change) else { return };
    match result {
        Ok(staged) => accept(core, name, &request, Some(staged), listener, in_release),
        Err(e) => refuse(core, listener, in_release, e),
    }
}

/// Checks the change against the state now and journals it; nothing else changes yet.
fn accept(
    core: &mut Core,
    name: &ServiceName,
    request: &ChangeRequest,
    staged: Option<StagedImage>,
    listener: Option<RequestId>,
    in_release: bool,
) {
    let archive = staged.as_ref().and_then(|s| s.archive);
    let refused = |core: &mut Core, e: CommandError| {
        if let Some(handle) = archive {
            core.emit(Effect::DiscardStaged(handle));
        }
        refuse(core, listener, in_release, e);
    };
    let current = match check(core, name) {
        Ok(current) => current,
        Err(e) => return refused(core, e),
    };
    let record = core.state.services.get(name.as_str()).cloned().unwrap_or_default();
    let (to_source, to_digest) = match (request.kind, staged) {
        (ChangeKind::Upgrade, Some(staged)) => (staged.name, staged.digest),
        (ChangeKind::Upgrade, None) => {
            return refused(
                core,
                CommandError::new(ErrorKind::BadRequest, "an upgrade needs an image (--image FILE|REF)"),
            )
        }
        (ChangeKind::Rollback, _) => match &record.previous {
            Some(pin) => (pin.reference.clone(), pin.digest.clone()),
            None => {
                let e = CommandError::new(
                    ErrorKind::NotFound,
                    format!("{name} has no previous image to roll back to (see `soniclet history {name}`)"),
                );
                return refused(core, e);
            }
        },
    };
    if to_digest == current {
        return refused(core, CommandError::new(ErrorKind::BadRequest, format!("{name} already runs {to_digest}")));
    }
    let timeout =
        request.timeout.unwrap_or(Duration::from_secs(u64::from(core.service(name).manifest.readiness.timeout)));
    let settle = request.settle.unwrap_or(DEFAULT_SETTLE);
    let from = ImagePin { reference: pin_reference(&core.image_ref(name), &current), digest: current };
    let to = ImagePin { reference: pin_reference(&to_source, &to_digest), digest: to_digest };
    let started_ms = unix_ms(core.now.wall);
    let journal = ChangeJournal {
        service: name.to_string(),
        kind: request.kind,
        step: ChangeStep::Preparing,
        from,
        to,
        before: record.pins(),
        rootfs: format!("{name}-next-{started_ms}"),
        warm: request.warm,
        timeout_secs: timeout.as_secs().max(1),
        settle_secs: settle.as_secs(),
        started_ms,
    };
    core.state.change = Some(journal.clone());
    core.save();
    core.change = Slot::Active(Active { listener, in_release, ..Active::default() });
    say(
        core,
        format!(
            "{} {}: preparing {} (running {})",
            kind_name(journal.kind),
            journal.service,
            journal.to.reference,
            journal.from.reference
        ),
    );
    report(core, &journal, "preparing", None);
    let current = core.image_ref(name);
    core.emit(Effect::Prepare {
        service: name.clone(),
        journal,
        source: to_source,
        current,
        archive,
        progress: listener,
    });
}

/// The journal could not be written: a change still waiting for it to prepare is refused.
pub(super) fn persist_failed(core: &mut Core, e: &Failure) {
    let Some(journal) = journal(core).cloned() else { return };
    if journal.step != ChangeStep::Preparing {
        return;
    }
    let retracted =
        core.retract(|effect| matches!(effect, Effect::Prepare { service, .. } if service.as_str() == journal.service));
    if retracted == 0 {
        return;
    }
    let Slot::Active(active) = std::mem::take(&mut core.change) else { return };
    core.state.change = None;
    let e = CommandError::new(ErrorKind::Internal, format!("cannot journal the change: {e}"));
    refuse(core, active.listener, active.in_release, e);
}

pub(super) fn on_prepared(core: &mut Core, name: &ServiceName, result: Result<Prepared, Failure>) {
    let Some(journal) = journal(core).cloned() else { return };
    if journal.service != name.as_str() || journal.step != ChangeStep::Preparing {
        return;
    }
    let prepared = match result {
        Ok(prepared) => prepared,
        Err(reason) => {
            tracing::error!(service = %name, reason = %reason, "image change refused before the switch-over");
            return finish(core, ChangeResult::Aborted, Some(reason.0), None);
        }
    };
    // The archive, if any, was imported: services held for a missing image may start.
    core.dispatch_images_changed();
    core.record(name).set_pins(ImagePins { image: Some(journal.to.clone()), previous: Some(journal.from.clone()) });
    let Some(stored) = core.state.change.as_mut() else { return };
    stored.step = ChangeStep::Switching;
    let journal = stored.clone();
    core.save();
    report(core, &journal, "switching", None);
    if journal.warm {
        let before = core.warm.warm.get(name.as_str()).copied();
        if let Some(active) = active(core) {
            active.warm_before = before;
        }
        core.db(DbRequest::Warm { service: name.to_string(), enable: Some(true) });
    }
    let mode = if journal.warm { "warm" } else { "cold" };
    let cycled = super::groups::cycle_for_restart(core, name, journal.warm);
    core.unit(name).next = NextStart::Prepared(Box::new(prepared));
    let others: Vec<&str> = cycled.iter().filter(|n| *n != name).map(|n| n.as_str()).collect();
    let with = if others.is_empty() { String::new() } else { format!(", with {}", others.join(", ")) };
    say(core, format!("{name}: prepared; stopping the old container ({mode}{with})"));
}

/// The gated container started.
pub(super) fn on_gated_start(core: &mut Core, name: &ServiceName, pid: u32) {
    let timeout = journal(core).map_or(0, |j| j.timeout_secs);
    let now = core.now.mono;
    if let Some(active) = active(core) {
        active.ready_deadline = Some(now + Duration::from_secs(timeout));
    }
    say(core, format!("{name}: new container started (pid {pid}); waiting up to {timeout}s for ready"));
}

/// The new container failed the gate: go back to the old image.
pub(super) fn gate_failed(core: &mut Core, name: &ServiceName, reason: String) {
    let Some(journal) = journal(core).cloned() else { return };
    tracing::error!(service = %name, reason = %reason, to = %journal.to.reference, "image change failed its gate; rolling back");
    // Back to the old image, pinned by digest: whatever was imported under its tag since
    // (the failed image, say) never runs by accident.
    core.record(name)
        .set_pins(ImagePins { image: Some(journal.from.clone()), previous: journal.before.previous.clone() });
    if let Some(stored) = core.state.change.as_mut() {
        stored.step = ChangeStep::RollingBack { reason: reason.clone() };
    }
    core.save();
    report(core, &journal, "rolling_back", Some(&reason));
    let now = core.now.mono;
    if let Some(active) = active(core) {
        active.failed_at = Some(now);
    }
    say(core, format!("{name}: {reason}; rolling back to {}", journal.from.reference));
    // A cold change goes back the way a crash would: the failure group with it.
    if !journal.warm {
        if let Some(group) = core.service(name).failure_group().map(str::to_owned) {
            super::groups::group_down(core, &group, name);
        }
    }
    let wall = core.now.wall;
    let unit = core.unit(name);
    unit.next = NextStart::Fresh;
    unit.message = Some(format!("rolling back: {reason}"));
    if unit.phase.is_active() && unit.phase != Phase::Stopping {
        unit.cycle = Some(Cycle { mode: None });
    } else if unit.phase != Phase::Stopping {
        unit.set_phase(Phase::Stopped, wall);
    }
}

/// Moves a change on after each event: the gate's deadline, the settle window, the end.
pub(super) fn advance(core: &mut Core) {
    let Some(journal) = journal(core).cloned() else { return };
    let Some(name) = core.manifests.lookup(&journal.service).cloned() else { return };
    let unit = &core.units[&name];
    let now = core.now.mono;
    // Stopped meanwhile (FEATURE disabled, a shutdown draining): no gate can pass; the old
    // image stays pinned for the next start.
    let gone = !core.want(&name) && !unit.phase.is_active();
    match (&journal.step, gone) {
        (ChangeStep::Switching, true) => {
            return gate_failed(core, &name, "the service was stopped during the change".to_owned());
        }
        (ChangeStep::RollingBack { reason }, true) => {
            let reason = format!("{reason}; the service is stopped");
            return finish(core, ChangeResult::RolledBack, Some(reason), None);
        }
        _ => {}
    }
    match &journal.step {
        ChangeStep::Preparing => {}
        ChangeStep::Switching => {
            let on_new = unit.image_digest.as_deref() == Some(journal.to.digest.as_str()) && unit.cycle.is_none();
            match unit.phase.clone() {
                Phase::Probing if on_new => {
                    let Some(active) = active(core) else { return };
                    let deadline =
                        *active.ready_deadline.get_or_insert_with(|| now + Duration::from_secs(journal.timeout_secs));
                    if now >= deadline {
                        gate_failed(core, &name, format!("not ready within {}s", journal.timeout_secs));
                    }
                }
                Phase::Ready if on_new => {
                    let Some(active) = active(core) else { return };
                    let first = active.ready_at.is_none();
                    let ready_at = *active.ready_at.get_or_insert(now);
                    if first {
                        say(core, format!("{name}: ready; settling for {}s", journal.settle_secs));
                    }
                    if now >= ready_at + Duration::from_secs(journal.settle_secs) {
                        finish(core, ChangeResult::Succeeded, None, None);
                    }
                }
                Phase::Failed { reason, .. } => gate_failed(core, &name, reason),
                Phase::Backoff { .. } => gate_failed(core, &name, "the new container failed".to_owned()),
                _ => {}
            }
        }
        ChangeStep::RollingBack { reason } => {
            let on_old = unit.image_digest.as_deref() == Some(journal.from.digest.as_str()) && unit.cycle.is_none();
            match &unit.phase {
                Phase::Ready if on_old => {
                    let failed_at = match &core.change {
                        Slot::Active(active) => active.failed_at,
                        _ => None,
                    };
                    let recovery = failed_at.map(|t| ms(now.saturating_duration_since(t)));
                    finish(core, ChangeResult::RolledBack, Some(reason.clone()), recovery);
                }
                Phase::Failed { reason: also, .. } => {
                    let reason = format!("{reason}; the old image failed too: {also}");
                    finish(core, ChangeResult::RolledBack, Some(reason), None);
                }
                _ => {}
            }
        }
    }
}

/// When the core must wake for the change: the gate's deadline or the settle's end.
pub(super) fn wake(core: &Core) -> Option<Instant> {
    let journal = journal(core)?;
    let Slot::Active(active) = &core.change else { return None };
    match active.ready_at {
        Some(ready_at) => Some(ready_at + Duration::from_secs(journal.settle_secs)),
        None => active.ready_deadline,
    }
}

/// Ends the change: the journal goes, the history gets its entry, its listener the outcome.
fn finish(core: &mut Core, result: ChangeResult, reason: Option<String>, recovery_ms: Option<u64>) {
    let Some(journal) = core.state.change.take() else { return };
    let active = match std::mem::take(&mut core.change) {
        Slot::Active(active) => active,
        _ => Active::default(),
    };
    if result == ChangeResult::Aborted {
        // Nothing was switched: the pins are as they were.
        core.state.services.entry(journal.service.clone()).or_default().set_pins(journal.before.clone());
    }
    core.save();
    let name = core.manifests.lookup(&journal.service).cloned();
    let downtime_ms = match (result, &name) {
        (ChangeResult::Aborted, _) | (_, None) => None,
        (_, Some(name)) => core.units[name].last_downtime.map(ms),
    };
    let finished = core.now.wall;
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
    if let Some(name) = &name {
        let unit = core.unit(name);
        unit.next = NextStart::Fresh;
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
    }
    tracing::info!(service = %journal.service, result = result.as_str(), downtime_ms, reason = reason.as_deref().unwrap_or(""), "image change ended");
    core.emit(Effect::AppendHistory(entry.clone()));
    core.emit(Effect::Notice(Notice::ChangeEnded {
        service: journal.service.clone(),
        to: journal.to.reference.clone(),
        result,
        reason: reason.clone(),
    }));
    report(core, &journal, result.as_str(), reason.as_deref());
    if journal.warm {
        core.db(DbRequest::Warm { service: journal.service.clone(), enable: active.warm_before });
    }
    if result == ChangeResult::Aborted {
        core.emit(Effect::DiscardRootfs { key: journal.rootfs.clone() });
    }
    collect_images(core);
    if active.in_release {
        if let Some(to) = active.listener {
            core.emit(Effect::Progress { to, item: Progress::ChangeEnded(entry.clone()) });
        }
        super::release::change_ended(core, Some(result));
    } else if let Some(to) = active.listener {
        core.emit(Effect::Reply { to, result: Ok(Response::Changed(entry)) });
    }
}

/// STATE_DB `SERVICE_UPGRADE_TABLE|<service>`.
fn report(core: &mut Core, journal: &ChangeJournal, state: &str, reason: Option<&str>) {
    if !core.config.database_link {
        return;
    }
    let mut fields = vec![
        ("state".to_owned(), state.replace(' ', "_")),
        ("action".to_owned(), kind_name(journal.kind).to_owned()),
        ("from".to_owned(), journal.from.reference.clone()),
        ("to".to_owned(), journal.to.reference.clone()),
        ("timestamp".to_owned(), rfc3339_ms(core.now.wall)),
    ];
    if let Some(reason) = reason {
        fields.push(("reason".to_owned(), reason.to_owned()));
    }
    core.db(DbRequest::Upgrade { service: journal.service.clone(), fields });
}

/// At start, after adoption: a change the last daemon left is carried on.
pub(super) fn resume(core: &mut Core) {
    let Some(journal) = journal(core).cloned() else { return };
    tracing::warn!(service = %journal.service, step = ?journal.step, "resuming an interrupted image change");
    core.change = Slot::Active(Active { in_release: core.state.release.is_some(), ..Active::default() });
    let Some(name) = core.manifests.lookup(&journal.service).cloned() else {
        let reason = format!(
            "the manifest of {} is gone, so its change cannot go on; the images stay as they were",
            journal.service
        );
        tracing::error!(service = %journal.service, "{reason}");
        return finish(core, ChangeResult::Aborted, Some(reason), None);
    };
    match journal.step {
        ChangeStep::Preparing => finish(
            core,
            ChangeResult::Aborted,
            Some("the daemon stopped before the switch-over; the service was not touched".to_owned()),
            None,
        ),
        ChangeStep::Switching => {
            // The prepared rootfs is used if it survived; otherwise it is made again.
            let unit = core.unit(&name);
            if unit.image_digest.as_deref() != Some(journal.to.digest.as_str()) {
                unit.next = NextStart::Rootfs(journal.rootfs.clone());
            }
            if journal.warm {
                if let Some(cycle) = &mut unit.cycle {
                    cycle.mode = Some(StopMode::Warm);
                }
            }
        }
        ChangeStep::RollingBack { .. } => {}
    }
}

/// The requester of a change went away: the change goes on, unheard.
pub(super) fn forget(core: &mut Core, id: RequestId) {
    match &mut core.change {
        Slot::Active(active) if active.listener == Some(id) => active.listener = None,
        Slot::Staging { listener, .. } if *listener == Some(id) => *listener = None,
        _ => {}
    }
}

/// Removes images of past changes that are neither the current nor the previous image of
/// any service (nor running), from soniclet's namespace only.
fn collect_images(core: &mut Core) {
    let mut keep: BTreeSet<String> = BTreeSet::new();
    for record in core.state.services.values() {
        keep.extend(record.image.iter().chain(record.previous.iter()).map(|p| p.digest.clone()));
    }
    keep.extend(core.units.values().filter_map(|u| u.image_digest.clone()));
    if let Some(journal) = journal(core) {
        keep.insert(journal.from.digest.clone());
        keep.insert(journal.to.digest.clone());
    }
    let unpinned: Vec<String> = core
        .units
        .keys()
        .filter(|n| core.state.services.get(n.as_str()).is_none_or(|r| r.image.is_none()))
        .map(|n| core.service(n).manifest.container.image.clone())
        .collect();
    core.emit(Effect::CollectImages { keep, unpinned });
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
