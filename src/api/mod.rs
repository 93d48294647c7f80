//! The daemon's control API: HTTP/JSON over a unix socket (mode 0660), versioned under `/v1`.
//!
//! This module holds the wire types and the endpoint paths, shared by the server and the
//! CLI's client. `http` is the server's plumbing (state, socket, errors, body parsing), the
//! handlers are grouped by resource (`services`, `images`, `features`, `intents`, `system`),
//! `server` routes to them, `convert` maps the supervisor's domain types to these, and
//! `client` is the typed client the CLI uses: one method per endpoint.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/v1/status` | | [`StatusResponse`] |
//! | GET | `/v1/services/{name}` | | [`ServiceStatus`] |
//! | POST | `/v1/services/{name}/start`, `/stop`, `/restart` | [`ActionRequest`] | [`ServiceStatus`] |
//! | POST | `/v1/services/{name}/upgrade` | [`UpgradeRequest`] | [`ChangeEvent`] lines (NDJSON) |
//! | POST | `/v1/services/{name}/rollback` | [`UpgradeRequest`] (gate only) | [`ChangeEvent`] lines |
//! | GET | `/v1/services/{name}/history` | | `[`[`HistoryEntry`]`]` |
//! | POST | `/v1/release` | [`ReleaseRequest`] | [`ChangeEvent`] lines, then a `release` line |
//! | GET | `/v1/services/{name}/logs?lines=N&follow=true` | | log records, one per line |
//! | GET | `/v1/services/{name}/watch` | | [`ServiceStatus`] now and on every change (NDJSON) |
//! | GET | `/v1/images` | | `[`[`ImageSummary`]`]` |
//! | POST | `/v1/images/import` | [`ImportRequest`] | [`ImportEvent`] lines (NDJSON) |
//! | GET | `/v1/features` | | `[`[`FeatureStatus`]`]` |
//! | POST | `/v1/features/{name}` | [`FeatureChange`] | [`FeatureStatus`], after CONFIG_DB is written |
//! | POST | `/v1/intents` | [`IntentApply`] | [`crate::intent::ApplyOutcome`] once persisted |
//! | GET | `/v1/intents` | | [`crate::intent::IntentReport`] |
//! | POST | `/v1/config/reload` | [`ReloadRequest`] | [`ReloadEvent`] lines (NDJSON) |
//! | POST | `/v1/wait` | [`WaitRequest`] | [`StatusResponse`] once the services are ready |
//! | POST | `/v1/shutdown` | [`ShutdownRequest`] | `{}` |
//! | GET | `/v1/os` | | [`crate::os::Images`] |
//! | POST | `/v1/os/install` | [`OsInstallRequest`] | [`OsEvent`] lines (NDJSON) |
//! | POST | `/v1/os/{default,next-boot,remove}` | [`OsImageRequest`] | [`OsEvent`] lines |
//! | POST | `/v1/os/cleanup` | `{}` | [`OsEvent`] lines |
//! | POST | `/v1/os/onie` | [`OsOnieRequest`] | [`OsEvent`] lines; then the switch reboots |
//!
//! Errors are `{"error": {"kind": ..., "message": ...}}` with a matching HTTP status.
//!
//! Requests are parsed strictly (unknown fields refused, naming the field). Answers are read
//! tolerantly: a client started before an upgrade (a unit's facade) keeps working when a newer
//! daemon adds a field.

pub mod client;
mod convert;
mod features;
pub mod http;
mod images;
mod intents;
mod os;
pub mod server;
mod services;
mod system;

use serde::{Deserialize, Serialize};

pub use crate::state::history::HistoryEntry;

/// The endpoints' paths, for the router (patterns) and the client (filled in).
pub mod paths {
    pub const STATUS: &str = "/v1/status";
    pub const SERVICE: &str = "/v1/services/{name}";
    pub const SERVICE_ACTION: &str = "/v1/services/{name}/{action}";
    pub const SERVICE_UPGRADE: &str = "/v1/services/{name}/upgrade";
    pub const SERVICE_ROLLBACK: &str = "/v1/services/{name}/rollback";
    pub const SERVICE_LOGS: &str = "/v1/services/{name}/logs";
    pub const SERVICE_WATCH: &str = "/v1/services/{name}/watch";
    pub const SERVICE_HISTORY: &str = "/v1/services/{name}/history";
    pub const RELEASE: &str = "/v1/release";
    pub const IMAGES: &str = "/v1/images";
    pub const IMAGES_IMPORT: &str = "/v1/images/import";
    pub const FEATURES: &str = "/v1/features";
    pub const FEATURE: &str = "/v1/features/{name}";
    pub const INTENTS: &str = "/v1/intents";
    pub const CONFIG_RELOAD: &str = "/v1/config/reload";
    pub const WAIT: &str = "/v1/wait";
    pub const SHUTDOWN: &str = "/v1/shutdown";
    pub const OS: &str = "/v1/os";
    pub const OS_INSTALL: &str = "/v1/os/install";
    pub const OS_DEFAULT: &str = "/v1/os/default";
    pub const OS_NEXT_BOOT: &str = "/v1/os/next-boot";
    pub const OS_REMOVE: &str = "/v1/os/remove";
    pub const OS_CLEANUP: &str = "/v1/os/cleanup";
    pub const OS_ONIE: &str = "/v1/os/onie";

    /// A path pattern with its `{name}` (and `{action}`) filled in.
    pub fn fill(pattern: &str, name: &str, action: &str) -> String {
        pattern.replace("{name}", name).replace("{action}", action)
    }
}

/// Where a service stands (the wire form of the supervisor's state). A state a newer daemon
/// adds reads as `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Stopped,
    Waiting,
    Starting,
    Running,
    Stopping,
    Restarting,
    Failed,
    /// A Kubernetes pod runs it (FEATURE `set_owner=kube`).
    Kube,
    #[serde(other)]
    Unknown,
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
            Self::Unknown => "unknown",
        }
    }

    /// A task exists, or is being made, and is meant to stay (a pod's, for `Kube`).
    pub fn is_up(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Kube)
    }
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    /// RFC 3339.
    pub since: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
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
    pub container_id: Option<String>,
    pub generation: u64,
    /// RFC 3339 time of the last state change.
    pub since: String,
    pub last_exit_code: Option<u32>,
    /// Why the service is where it is (waiting for what, failed how).
    pub message: Option<String>,
    /// A restart under way, until the service is ready again: `requested` (an operator's or
    /// API restart) or `crash` (after a failure, its own or its failure group's).
    #[serde(default)]
    pub restart: Option<String>,
    /// The last image change (upgrade or rollback) and how it ended.
    #[serde(default)]
    pub upgrade: Option<String>,
    /// How long the service was down the last time, from its stop (or crash) to ready.
    #[serde(default)]
    pub downtime_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub daemon: DaemonInfo,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionRequest {
    /// Answer only once the service is ready (start, restart) or stopped (stop).
    pub wait: bool,
    /// How long to wait; the daemon answers with a timeout error after it.
    pub timeout_secs: Option<u64>,
}

/// One row of `soniclet feature ls` (what `show feature status` shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureStatus {
    pub name: String,
    /// enabled, disabled, always_enabled or always_disabled.
    pub state: String,
    /// Where the state comes from: CONFIG_DB or the manifest's default.
    pub source: String,
    pub auto_restart: String,
    pub set_owner: String,
    pub current_owner: String,
    pub delayed: bool,
    /// The service's state in soniclet (running, stopped, failed, ...).
    pub service_state: ServiceState,
}

/// An intent document, replacing soniclet's intent set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentApply {
    /// The file it came from: names errors, and picks the format (`.toml`, else YAML).
    pub file: String,
    pub text: String,
}

/// `config reload`: the file's text (or none: the switch's `/etc/sonic/config_db.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadRequest {
    /// Names the file in errors.
    pub file: Option<String>,
    pub text: Option<String>,
    /// Reload even while the switch boots or another reload runs.
    pub force: bool,
}

/// `config feature state|autorestart`: what to write to CONFIG_DB `FEATURE|<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureChange {
    pub state: Option<String>,
    pub auto_restart: Option<String>,
    /// `set_owner`: `local`, or `kube` (a Kubernetes pod may run it).
    pub owner: Option<String>,
    /// Answer once the service reached the new state (running and ready, or stopped).
    pub wait: bool,
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WaitRequest {
    /// Services to wait for; every enabled one when empty.
    pub services: Vec<String>,
    /// Wait until they are stopped instead of ready.
    pub stopped: bool,
    pub timeout_secs: Option<u64>,
}

/// `soniclet upgrade SVC` (and the gate settings of `soniclet rollback SVC`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpgradeRequest {
    /// An OCI or docker archive, by absolute path (the daemon reads it).
    pub archive: Option<String>,
    /// An image already stored in containerd.
    pub reference: Option<String>,
    /// The digest the image must have (`sha256:...`).
    pub digest: Option<String>,
    /// Warm semantics: the service's warm restart flag, its warm stop, its peers untouched.
    pub warm: bool,
    /// How long the new container has to become ready.
    pub timeout_secs: Option<u64>,
    /// How long it must then stay up, critical processes included.
    pub settle_secs: Option<u64>,
}

/// `soniclet upgrade --release FILE`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReleaseRequest {
    /// The file's absolute path: names errors and anchors relative archive paths.
    pub file: String,
    pub text: String,
    pub timeout_secs: Option<u64>,
    pub settle_secs: Option<u64>,
}

/// How a release upgrade ended (the last line of its stream).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseOutcome {
    pub release: String,
    pub upgraded: Vec<String>,
    /// Already on the release's digest.
    pub unchanged: Vec<String>,
    /// Not running (stopped or disabled): no gate to pass, so left as they are.
    #[serde(default)]
    pub skipped: Vec<String>,
    /// The service whose upgrade failed (rolled back); the ones after it were not touched.
    pub failed: Option<String>,
    pub untouched: Vec<String>,
}

/// One line of a reload's progress stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadEvent {
    Progress(String),
    Done { seconds: f64, failed: Vec<String> },
    Failed(String),
}

/// One line of an image change's progress stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeEvent {
    Progress(String),
    /// The change ended: succeeded, rolled back or aborted.
    Done(HistoryEntry),
    /// Refused before anything was touched.
    Refused(ApiError),
    /// A release upgrade ended.
    Release(ReleaseOutcome),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// Absolute paths of archives readable by the daemon.
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub architecture: String,
    pub os: String,
    /// Services whose manifest names this image.
    pub used_by: Vec<String>,
}

/// One line of an import's progress stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportEvent {
    Progress(String),
    Imported(ImageSummary),
    Error(ApiError),
    Done { imported: usize },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownRequest {
    /// Stop every service, in reverse dependency order, before exiting.
    pub stop_services: bool,
}

/// What went wrong, in a form the CLI maps to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ApiError,
}

/// `os install`: an installer file the daemon reads, or a URL it fetches (one of the two).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OsInstallRequest {
    /// Absolute path of the installer (`onie-installer-x86_64`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// `http://` or `https://`: fetched onto `/host`, with `URL.sig` when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub require_signature: bool,
    /// Seconds the new image's trial boot has to become healthy (default: configured).
    pub trial_deadline: Option<u64>,
    /// Install even if the image does not list this switch's platform.
    pub force_platform: bool,
}

/// `os set-default|set-next-boot|remove`: an installed image, by version or name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsImageRequest {
    pub version: String,
}

/// `os onie MODE`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsOnieRequest {
    /// Required: an empty body must not reboot the switch into some default mode.
    pub mode: Option<crate::os::onie::OnieMode>,
}

/// One line of an `os` command's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OsEvent {
    Progress(String),
    Installed(crate::os::images::Installed),
    /// The images after the command.
    Images(crate::os::Images),
    Error(ApiError),
}
