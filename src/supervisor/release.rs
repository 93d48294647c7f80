//! Release upgrades: the services of a release manifest upgraded one at a time, dependents
//! first and the database last, stopping at the first failure.
//!
//! A release is journaled ([`ReleaseJournal`] in the state) before its first change and
//! after each one, so a daemon that restarts in the middle finishes the change in flight,
//! then goes on with the next service.

use std::collections::BTreeMap;
use std::time::Duration;

use super::core::Core;
use super::event::{ChangeRequest, Effect, ImageSource, Progress, ReleaseOutcome, RequestId, Response};
use super::plan::Phase;
use super::types::{CommandError, ErrorKind};
use crate::images::release::Release;
use crate::state::history::ChangeResult;
use crate::state::store::{ChangeKind, ReleaseJournal};

pub(super) fn begin(
    core: &mut Core,
    id: RequestId,
    release: Release,
    timeout: Option<Duration>,
    settle: Option<Duration>,
) {
    let busy = core.state.release.is_some()
        || core.state.change.is_some()
        || !matches!(core.change, super::change::Slot::Idle);
    if busy {
        let e =
            CommandError::new(ErrorKind::Conflict, "another upgrade or rollback is in progress; wait for it to end");
        return core.emit(Effect::Reply { to: id, result: Err(e) });
    }
    // Which services run and ready, on which image, as the release starts: it skips the
    // others and leaves those already on its digest alone.
    let running: BTreeMap<String, String> = core
        .units
        .iter()
        .filter(|(_, u)| u.phase == Phase::Ready)
        .filter_map(|(n, u)| u.image_digest.clone().map(|d| (n.to_string(), d)))
        .collect();
    tracing::info!(release = %release.name, services = release.entries.len(), "release upgrade");
    core.state.release = Some(ReleaseJournal {
        release,
        next: 0,
        in_change: false,
        running,
        timeout_secs: timeout.map(|t| t.as_secs()),
        settle_secs: settle.map(|t| t.as_secs()),
        upgraded: Vec::new(),
        unchanged: Vec::new(),
        skipped: Vec::new(),
    });
    core.save();
    core.release_listener = Some(id);
}

fn say(core: &mut Core, message: String) {
    tracing::info!("{message}");
    if let Some(to) = core.release_listener {
        core.emit(Effect::Progress { to, item: Progress::Line(message) });
    }
}

/// Moves the release on: the next service, once no change is in flight.
pub(super) fn advance(core: &mut Core) {
    loop {
        let Some(journal) = &core.state.release else { return };
        let idle = core.state.change.is_none() && matches!(core.change, super::change::Slot::Idle);
        if !idle {
            return;
        }
        if journal.in_change {
            // The daemon stopped before the change was journaled: it starts over.
            tracing::warn!(release = %journal.release.name, "the release's change never began; beginning it again");
            if let Some(journal) = &mut core.state.release {
                journal.in_change = false;
            }
            core.save();
            continue;
        }
        let Some(entry) = journal.release.entries.get(journal.next).cloned() else {
            return end(core, None);
        };
        let service = entry.service.to_string();
        let current = journal.running.get(&service).cloned();
        let (timeout, settle) = (journal.timeout_secs, journal.settle_secs);
        let Some(current) = current else {
            say(core, format!("{service}: not running and ready; left as it is"));
            step(core, |j| j.skipped.push(service));
            continue;
        };
        if current == entry.digest {
            say(core, format!("{service}: already runs {}", entry.digest));
            step(core, |j| j.unchanged.push(service));
            continue;
        }
        say(core, format!("{service}: upgrading to {} ({})", entry.image, entry.digest));
        if let Some(journal) = &mut core.state.release {
            journal.in_change = true;
        }
        core.save();
        let request = ChangeRequest {
            service,
            kind: ChangeKind::Upgrade,
            source: Some(match &entry.archive {
                Some(archive) => ImageSource::Archive(archive.clone()),
                None => ImageSource::Stored(entry.image.clone()),
            }),
            name: Some(entry.image.clone()),
            digest: Some(entry.digest.clone()),
            warm: entry.warm,
            timeout: timeout.map(Duration::from_secs),
            settle: settle.map(Duration::from_secs),
        };
        let listener = core.release_listener;
        return super::change::begin(core, listener, request, true);
    }
}

/// Records the current entry and moves to the next.
fn step(core: &mut Core, record: impl FnOnce(&mut ReleaseJournal)) {
    if let Some(journal) = &mut core.state.release {
        record(journal);
        journal.next += 1;
        journal.in_change = false;
    }
    core.save();
}

/// The release's change ended: `None` when it was refused before it began.
pub(super) fn change_ended(core: &mut Core, result: Option<ChangeResult>) {
    let Some(journal) = &core.state.release else { return };
    let Some(entry) = journal.release.entries.get(journal.next) else { return };
    let service = entry.service.to_string();
    match result {
        Some(ChangeResult::Succeeded) => step(core, |j| j.upgraded.push(service)),
        _ => end(core, Some(service)),
    }
}

/// Ends the release, answering its outcome.
fn end(core: &mut Core, failed: Option<String>) {
    let Some(journal) = core.state.release.take() else { return };
    core.save();
    let untouched = match &failed {
        Some(_) => journal.release.entries.iter().skip(journal.next + 1).map(|e| e.service.to_string()).collect(),
        None => Vec::new(),
    };
    let outcome = ReleaseOutcome {
        release: journal.release.name.clone(),
        upgraded: journal.upgraded,
        unchanged: journal.unchanged,
        skipped: journal.skipped,
        failed,
        untouched,
    };
    tracing::info!(release = %outcome.release, failed = ?outcome.failed, "release upgrade ended");
    if let Some(to) = core.release_listener.take() {
        core.emit(Effect::Reply { to, result: Ok(Response::Released(outcome)) });
    }
}
