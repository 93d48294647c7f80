//! The supervisor's domain types: what it reports, what it refuses, and the facts of the
//! switch it works from. `api/` maps these to the wire; nothing here is a wire format.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use crate::manifest::ServiceName;

/// A moment, as the core sees it: the monotonic clock for deadlines and the wall clock for
/// what operators read. The driver reads both clocks; tests make them up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Now {
    /// The clocks of this process, right now (the driver's only clock read).
    pub fn read() -> Self {
        Self { mono: Instant::now(), wall: SystemTime::now() }
    }

    /// The same moment `d` later on both clocks.
    pub fn after(self, d: Duration) -> Self {
        Self { mono: self.mono + d, wall: self.wall + d }
    }

    /// The wall time of a monotonic instant seen earlier or later than this moment.
    pub fn wall_of(self, at: Instant) -> SystemTime {
        if at >= self.mono {
            self.wall + (at - self.mono)
        } else {
            self.wall - (self.mono - at)
        }
    }
}

/// Where a service stands, as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceState {
    /// Not running and not meant to run.
    Stopped,
    /// Meant to run; waiting for what it is ordered after, or for a gate.
    Waiting,
    Starting,
    /// Its task runs (ready or not yet).
    Running,
    Stopping,
    /// Crashed; it restarts once its backoff is over.
    Restarting,
    /// Held down until an operator acts.
    Failed,
    /// FEATURE `set_owner=kube`: a Kubernetes pod runs it (ready or not, as the view says).
    Kube,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Waiting => "waiting",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
            Self::Kube => "kube",
        }
    }

    /// A task exists, or is being made, and is meant to stay (a pod's, for `Kube`).
    pub fn is_up(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Kube)
    }
}

/// Why a service is coming back, until it is ready again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartCause {
    /// An operator's or API restart.
    Requested,
    /// A failure, its own or its failure group's.
    Crash,
}

/// One service as the supervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    pub name: ServiceName,
    pub state: ServiceState,
    /// The readiness probe passed for the current container.
    pub ready: bool,
    /// Whether the service is meant to run.
    pub enabled: bool,
    pub pid: Option<u32>,
    /// Automatic restarts since the daemon started.
    pub restarts: u32,
    pub image: String,
    pub image_digest: Option<String>,
    /// A container exists for the service (its ID is the service's name).
    pub has_container: bool,
    pub generation: u64,
    /// When the service last changed state.
    pub since: SystemTime,
    pub last_exit_code: Option<u32>,
    /// Why the service is where it is (waiting for what, failed how).
    pub message: Option<String>,
    pub restart: Option<RestartCause>,
    /// The last image change and how it ended.
    pub upgrade: Option<String>,
    /// How long the service was down the last time, from its stop (or crash) to ready.
    pub downtime: Option<Duration>,
    /// FEATURE `set_owner=kube` on a service that may be handed over: the Node's
    /// `<service>_enabled` label says whether Kubernetes should run it here.
    pub kube_owned: bool,
}

/// Every service, in start order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    /// When this supervisor started.
    pub since: SystemTime,
    pub services: Vec<ServiceView>,
}

/// Where a service's FEATURE state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureSource {
    ConfigDb,
    Manifest,
}

/// One row of `show feature status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureView {
    pub name: ServiceName,
    /// enabled, disabled, always_enabled or always_disabled.
    pub state: String,
    pub source: FeatureSource,
    pub auto_restart: String,
    pub set_owner: String,
    pub current_owner: String,
    pub delayed: bool,
    pub service_state: ServiceState,
}

/// What went wrong with a command, in a form every client can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    BadRequest,
    Conflict,
    Timeout,
    /// The service failed (its failure budget is spent, or it could not be created).
    Failed,
    Unavailable,
    Internal,
}

/// A refused or failed command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CommandError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

/// How this boot started (`SONIC_BOOT_TYPE` on the kernel command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootType {
    Cold,
    Warm,
    Fast,
}

impl BootType {
    /// Reads `SONIC_BOOT_TYPE=` from a kernel command line, as docker_image_ctl.j2 does.
    pub fn from_cmdline(cmdline: &str) -> Self {
        let value = cmdline.split_whitespace().find_map(|w| w.strip_prefix("SONIC_BOOT_TYPE=")).unwrap_or("cold");
        match value {
            "warm" => Self::Warm,
            "fast" | "fastfast" | "fast-reboot" | "express" => Self::Fast,
            _ => Self::Cold,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cold => "cold",
            Self::Warm => "warm",
            Self::Fast => "fast",
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_type_from_the_kernel_command_line() {
        assert_eq!(BootType::from_cmdline("BOOT_IMAGE=/vmlinuz ro quiet"), BootType::Cold);
        assert_eq!(BootType::from_cmdline("ro SONIC_BOOT_TYPE=warm quiet"), BootType::Warm);
        assert_eq!(BootType::from_cmdline("SONIC_BOOT_TYPE=fastfast"), BootType::Fast);
    }

    #[test]
    fn wall_time_follows_the_monotonic_clock() {
        let now = Now { mono: Instant::now(), wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1000) };
        assert_eq!(now.wall_of(now.mono + Duration::from_secs(5)), SystemTime::UNIX_EPOCH + Duration::from_secs(1005));
        let later = now.after(Duration::from_secs(10));
        assert_eq!(later.wall_of(now.mono), now.wall);
    }
}
