//! One service's state inside the core.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use super::event::Prepared;
use super::plan::Phase;
use super::types::StopMode;

/// The service's container, as far as the core knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Container {
    None,
    /// Its task runs.
    Running {
        pid: u32,
    },
    /// It exited, or a stop did not finish cleanly: the next start removes it first.
    Left,
}

/// A critical process is gone and auto-restart is off: reported once a minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Degraded {
    pub process: String,
    pub since: Instant,
    pub reported: Instant,
}

/// Take the task down, then bring it back if it is still wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cycle {
    /// How it goes down; `None` decides at the stop (warm and fast flags).
    pub mode: Option<StopMode>,
}

/// What the next start uses, besides the service's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NextStart {
    Fresh,
    /// The container an image change made ahead.
    Prepared(Box<Prepared>),
    /// The rootfs an interrupted image change prepared (resumed after a daemon restart).
    Rootfs(String),
}

/// Why a service is coming back, until it is ready again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Comeback {
    /// An operator's restart is under way.
    pub requested: bool,
    /// A failure brought it down (its own or its group's): said in `STATUS=` at its start.
    pub crash: Option<String>,
}

impl Comeback {
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[derive(Debug)]
pub(super) struct Unit {
    pub phase: Phase,
    /// When the phase last changed.
    pub since: SystemTime,
    /// Generation of the current (or last) container.
    pub generation: u64,
    pub container: Container,
    pub image_digest: Option<String>,
    pub cycle: Option<Cycle>,
    /// Set when a stop was issued because of a failure: where the stop lands.
    pub failure_pending: Option<String>,
    pub restarts: u32,
    /// Failures within the restart window, oldest first.
    pub failures: VecDeque<Instant>,
    pub message: Option<String>,
    pub last_exit: Option<u32>,
    pub degraded: Option<Degraded>,
    pub comeback: Comeback,
    pub next: NextStart,
    /// Since when the service has been down (its stop or crash), until it is ready again.
    pub down_since: Option<Instant>,
    /// How long it was down the last time, stop (or crash) to ready.
    pub last_downtime: Option<Duration>,
    /// The last image change's outcome, for `soniclet status`.
    pub upgrade_note: Option<String>,
    /// Who runs the service: soniclet's container, or a Kubernetes pod.
    pub owner: super::ownership::Owner,
}

impl Unit {
    pub fn new(since: SystemTime) -> Self {
        Self {
            phase: Phase::Stopped,
            since,
            generation: 0,
            container: Container::None,
            image_digest: None,
            cycle: None,
            failure_pending: None,
            restarts: 0,
            failures: VecDeque::new(),
            message: None,
            last_exit: None,
            degraded: None,
            comeback: Comeback::default(),
            next: NextStart::Fresh,
            down_since: None,
            last_downtime: None,
            upgrade_note: None,
            owner: super::ownership::Owner::Local,
        }
    }

    pub fn set_phase(&mut self, phase: Phase, now: SystemTime) {
        if self.phase != phase {
            self.phase = phase;
            self.since = now;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match self.container {
            Container::Running { pid } => Some(pid),
            _ => None,
        }
    }

    pub fn has_container(&self) -> bool {
        self.container != Container::None
    }

    /// Marks the task gone while its container stays (a crash, an exit).
    pub fn task_gone(&mut self) {
        if self.container != Container::None {
            self.container = Container::Left;
        }
    }
}
