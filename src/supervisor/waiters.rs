//! Requests that answer later: once services are ready, or stopped.

use super::core::Core;
use super::event::{Effect, RequestId, Response};
use super::plan::Phase;
use super::types::{CommandError, ErrorKind};
use crate::manifest::ServiceName;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Ready,
    Stopped,
}

/// What a waiter answers with once its services got there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// One service's view (start, stop, restart).
    Service(ServiceName),
    /// The whole status (`wait`).
    All,
    /// One service's FEATURE view (a FEATURE change with `wait`).
    Feature(ServiceName),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Waiter {
    pub id: RequestId,
    pub services: Vec<ServiceName>,
    pub target: Target,
    pub answer: Answer,
}

#[derive(Debug, Default)]
pub(super) struct Waiters(Vec<Waiter>);

impl Waiters {
    pub fn push(&mut self, waiter: Waiter) {
        self.0.push(waiter);
    }

    pub fn forget(&mut self, id: RequestId) {
        self.0.retain(|w| w.id != id);
    }
}

/// Whether the waiter's services got where it waits for them; an error when they cannot.
fn check(core: &Core, waiter: &Waiter) -> Option<Result<(), CommandError>> {
    let mut done = true;
    for name in &waiter.services {
        let unit = &core.units[name];
        match waiter.target {
            Target::Ready => {
                if let Phase::Failed { reason, .. } = &unit.phase {
                    return Some(Err(CommandError::new(ErrorKind::Failed, format!("{name} failed: {reason}"))));
                }
                if !core.want(name) {
                    return Some(Err(CommandError::new(
                        ErrorKind::Conflict,
                        format!("{name} was stopped while starting"),
                    )));
                }
                done &= core.is_ready(name) && unit.cycle.is_none();
            }
            Target::Stopped => done &= !unit.phase.is_active(),
        }
    }
    done.then_some(Ok(()))
}

/// Answers every waiter whose services got there.
pub(super) fn resolve(core: &mut Core) {
    let waiters = std::mem::take(&mut core.waiters.0);
    for waiter in waiters {
        match check(core, &waiter) {
            None => core.waiters.0.push(waiter),
            Some(result) => {
                let result = result.map(|()| match &waiter.answer {
                    Answer::Service(name) => Response::Service(super::status::service_view(core, name)),
                    Answer::All => Response::Status(super::status::status_view(core)),
                    Answer::Feature(name) => Response::Feature(super::features::view(core, name)),
                });
                core.emit(Effect::Reply { to: waiter.id, result });
            }
        }
    }
}
