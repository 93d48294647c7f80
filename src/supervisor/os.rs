//! The switch's OS images, as the core sees them: a new image's trial and the `os` commands.
//!
//! A trial boot is committed (the image becomes GRUB's default) once the switch is healthy,
//! SYSTEM_READY UP with every enabled service ready, and fails at its deadline: the core
//! records why and reboots, and GRUB, whose one-shot entry is spent, boots the previous
//! image. The files are `os::trial`'s; this decides when.

use std::time::Instant;

use super::core::Core;
use super::event::{DbRequest, Effect, Event, Notice, OsRequest, RequestId, Response};
use super::types::{CommandError, ErrorKind};

/// What this boot is for the OS images, as the daemon found it at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OsBoot {
    /// No OS images (a virtual switch under nspawn), or no trial.
    #[default]
    Settled,
    /// This boot is `image`'s trial, which must be healthy by `deadline` from start.
    OnTrial { image: String, deadline: std::time::Duration },
    /// `image` failed its trial, for `reason`, and the switch fell back to this image.
    FellBack { image: String, reason: String },
}

/// The trial in this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Trial {
    None,
    /// Not healthy yet; a commit that failed is tried again at `retry`.
    Pending {
        image: String,
        deadline: Instant,
        retry: Option<Instant>,
    },
    Committing {
        image: String,
        deadline: Instant,
    },
    Committed,
    /// Its deadline passed; the switch is rebooting.
    Failed,
}

/// The OS side of the core: the trial, and the one `os` command allowed at a time.
#[derive(Debug)]
pub(super) struct Slot {
    trial: Trial,
    job: Option<RequestId>,
}

fn report(image: &str, trial: &str, reason: &str) -> DbRequest {
    let fields = vec![("trial".to_owned(), trial.to_owned()), ("reason".to_owned(), reason.to_owned())];
    DbRequest::OsImage { image: image.to_owned(), fields }
}

impl Slot {
    pub(super) fn new(boot: &OsBoot, start: Instant) -> Self {
        let trial = match boot {
            OsBoot::OnTrial { image, deadline } => {
                Trial::Pending { image: image.clone(), deadline: start + *deadline, retry: None }
            }
            _ => Trial::None,
        };
        Self { trial, job: None }
    }
}

/// Reports at start: a trial under way, or the one that failed before this boot.
pub(super) fn start(core: &mut Core) {
    match core.config.os.clone() {
        OsBoot::OnTrial { image, deadline } => {
            tracing::info!(image = %image, deadline_s = deadline.as_secs(), "this boot is the image's trial: it is committed once the switch is healthy");
            core.db(report(
                &image,
                "pending",
                &format!("healthy within {} s, or the switch falls back", deadline.as_secs()),
            ));
        }
        OsBoot::FellBack { image, reason } => {
            tracing::error!(image = %image, reason = %reason, "the image failed its trial; the switch fell back to the previous image");
            core.db(report(&image, "failed", &reason));
            core.emit(Effect::Notice(Notice::Trial { image, committed: false, reason: Some(reason) }));
        }
        OsBoot::Settled => {}
    }
}

/// Healthy: SYSTEM_READY UP, with CONFIG_DB read when there is a database.
fn healthy(core: &Core) -> bool {
    (core.config_loaded || !core.config.database_link) && super::features::system_status(core).0 == "UP"
}

/// After every event: commit a healthy trial, fail one past its deadline.
pub(super) fn advance(core: &mut Core) {
    let Trial::Pending { image, deadline, retry } = core.os.trial.clone() else { return };
    let may_commit = retry.is_none_or(|at| core.now.mono >= at);
    if healthy(core) && may_commit {
        tracing::info!(image = %image, "the image on trial is healthy: committing it as the default");
        core.os.trial = Trial::Committing { image: image.clone(), deadline };
        core.emit(Effect::CommitImage(image));
    } else if core.now.mono >= deadline {
        let (_, why) = super::features::system_status(core);
        let reason = format!("not healthy within its trial's deadline: {why}{}", not_ready(core));
        tracing::error!(image = %image, reason = %reason, "the image failed its trial: rebooting into the previous image");
        core.os.trial = Trial::Failed;
        core.db(report(&image, "failed", &reason));
        core.emit(Effect::FailTrial { image, reason });
    }
}

/// The enabled services that are not ready, and what each is doing or waiting for.
fn not_ready(core: &Core) -> String {
    let names: Vec<String> = core
        .units
        .iter()
        .filter(|(name, _)| core.want(name) && !core.is_ready(name))
        .map(|(name, _)| match core.waiting.get(name) {
            Some(reasons) => format!("{name} (waiting for {})", reasons.join(", ")),
            None => format!("{name} ({})", super::status::state(core, name).as_str()),
        })
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!("; not ready: {}", names.join(", "))
    }
}

/// How long a failed commit waits before it is tried again.
const COMMIT_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// The trial's deadline and a commit's retry, for the wake-up.
pub(super) fn wake(core: &Core) -> Vec<Instant> {
    match &core.os.trial {
        Trial::Pending { deadline, retry, .. } => std::iter::once(*deadline).chain(*retry).collect(),
        _ => Vec::new(),
    }
}

pub(super) fn on_committed(core: &mut Core, image: &str, result: Result<(), super::event::Failure>) {
    match result {
        Ok(()) => {
            tracing::info!(image = %image, "the image passed its trial and is the default");
            core.os.trial = Trial::Committed;
            core.db(report(image, "committed", "healthy: SYSTEM_READY UP, every enabled service ready"));
            core.emit(Effect::Notice(Notice::Trial { image: image.to_owned(), committed: true, reason: None }));
        }
        Err(e) => {
            // Tried again shortly; at the deadline the switch falls back.
            tracing::error!(image = %image, error = %e, "cannot commit the image on trial; trying again in 10 s");
            if let Trial::Committing { image, deadline } = core.os.trial.clone() {
                core.os.trial = Trial::Pending { image, deadline, retry: Some(core.now.mono + COMMIT_RETRY) };
            }
        }
    }
}

/// An `os` command: one at a time, and none that changes what boots during a trial.
pub(super) fn command(core: &mut Core, id: RequestId, request: OsRequest) {
    let refuse = |message: String| CommandError::new(ErrorKind::Conflict, message);
    let refused = if request.changes() {
        match (&core.os.trial, core.os.job) {
            (_, Some(_)) => Some(refuse("another `soniclet os` command is running; try again when it ends".into())),
            (Trial::Pending { image, deadline, .. } | Trial::Committing { image, deadline }, _) => {
                let left = deadline.saturating_duration_since(core.now.mono).as_secs();
                Some(refuse(format!(
                    "{image} is on trial ({left} s left): it is committed once the switch is healthy, else the switch falls back; try again after"
                )))
            }
            (Trial::Failed, _) => Some(refuse("the image on trial failed; the switch is rebooting".into())),
            _ => None,
        }
    } else {
        None
    };
    if let Some(e) = refused {
        return core.emit(Effect::Reply { to: id, result: Err(e) });
    }
    if request.changes() {
        core.os.job = Some(id);
    }
    core.emit(Effect::Os { id, request });
}

pub(super) fn on_done(core: &mut Core, id: RequestId, request: OsRequest, result: Result<Response, CommandError>) {
    if core.os.job == Some(id) {
        core.os.job = None;
    }
    let reboot = matches!(request, OsRequest::Onie(_)) && result.is_ok();
    core.emit(Effect::Reply { to: id, result });
    if let (true, OsRequest::Onie(mode)) = (reboot, request) {
        core.emit(Effect::Reboot { reason: format!("into ONIE ({} mode), as asked", mode.as_str()) });
    }
}

pub(super) fn dispatch(core: &mut Core, event: Event) {
    match event {
        Event::OsDone { id, request, result } => on_done(core, id, request, result),
        Event::ImageCommitted { image, result } => on_committed(core, &image, result),
        _ => {}
    }
}
