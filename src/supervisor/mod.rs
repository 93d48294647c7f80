//! The supervisor: the single owner of every service's lifecycle.
//!
//! Two halves, after quinn-proto and quinn:
//! - the **core** ([`Core`]): `handle(event, now) -> effects`. It holds every service's
//!   state and makes every decision (start order, readiness, crashes and backoff, failure
//!   groups, warm restart, FEATURE, delayed start, config reload, image changes and
//!   releases), with no async, no I/O and no clock of its own. Its tests are tables
//!   (`supervisor/tests/`).
//! - the **driver** ([`Driver`]): an async loop that owns the ports (container runtime,
//!   health, systemd, the database link, the state directory), feeds the core one event at a
//!   time, and carries out the effects as tracked tasks whose results come back as events.
//!
//! Nothing else changes a service's state, so there are no locks and no races between, say, a
//! crash and an operator's stop.
//!
//! **Invariant:** this module imports no client crate and nothing from `api` or `sonic`'s
//! database link: it owns its domain types ([`types`]), its ports ([`ports`]) and the
//! requests it makes of the databases ([`DbRequest`]); adapters implement them.

mod change;
mod commands;
mod core;
pub(crate) mod driver;
mod event;
mod features;
mod groups;
mod lifecycle;
mod ops;
mod os;
mod ownership;
pub mod plan;
pub mod ports;
mod release;
mod reload;
mod status;
pub mod types;
mod unit;
mod waiters;

#[cfg(test)]
mod tests;

pub use self::core::{Core, CoreConfig};
pub use change::{pin_reference, repository};
pub use driver::{Answer, Answers, Driver, DriverConfig, Handle, Ports, SystemReady};
pub use event::{
    ArchiveHandle, ChangeRequest, Command, DatabaseReadiness, DbRequest, Effect, Event, Failure, FailureOutcome,
    ImageSource, InstallerSource, Notice, Observed, OsRequest, PodSeen, Prepared, Progress, ReleaseOutcome, RequestId,
    Response, StagedImage, StartError, StartFrom, Started, StopHow,
};
pub use os::OsBoot;
pub use ports::DbPort;
pub use types::{
    BootType, CommandError, ErrorKind, FeatureSource, FeatureView, Now, RestartCause, ServiceState, ServiceView,
    StatusView, StopMode, WarmFlags,
};
