//! What goes into the core ([`Event`], with operator [`Command`]s inside) and what comes out
//! of it ([`Effect`]). Everything here is data: the core never sees a channel, a socket or a
//! clock, and the driver never decides anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::types::{CommandError, FeatureView, ServiceView, StatusView, StopMode, WarmFlags};
use crate::db::Fields;
use crate::images::release::Release;
use crate::manifest::{ServiceName, StopStep};
use crate::os::images::Installed;
use crate::os::onie::OnieMode;
use crate::os::Images;
use crate::runtime::{ExitStatus, ImageInfo, RuntimeError};
use crate::sonic::configdb::ConfigContent;
use crate::sonic::feature::FeatureReport;
use crate::state::history::{ChangeResult, HistoryEntry};
use crate::state::store::{ChangeJournal, ChangeKind, PersistedState};

/// Names one operator request, so its answer (and its progress) find their way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Operator commands.
#[derive(Debug)]
pub enum Command {
    Status,
    Start {
        service: String,
        wait: bool,
    },
    Stop {
        service: String,
        wait: bool,
    },
    Restart {
        service: String,
        wait: bool,
    },
    /// Answer once these services (every enabled one when empty) are ready, or stopped.
    Wait {
        services: Vec<String>,
        stopped: bool,
    },
    /// The FEATURE view of every service (`show feature status`).
    Features,
    /// `config feature state|autorestart|owner`: checked, written to CONFIG_DB, and answered
    /// once the supervisor has seen its own write come back (and, with `wait`, once the
    /// service reached the new state).
    ChangeFeature {
        service: String,
        state: Option<String>,
        auto_restart: Option<String>,
        /// `set_owner`: `local` or `kube`.
        owner: Option<String>,
        wait: bool,
    },
    /// `config reload`: stop, replace CONFIG_DB, start again; progress as lines.
    Reload {
        config: ConfigContent,
        force: bool,
    },
    /// `upgrade` or `rollback` of one service's image; progress as lines.
    Change(ChangeRequest),
    /// `upgrade --release`: the release's services one at a time, journaled.
    Release {
        release: Release,
        timeout: Option<Duration>,
        settle: Option<Duration>,
    },
    /// `image import`: verify, stage and import archives.
    Import {
        paths: Vec<PathBuf>,
    },
    /// Stop every service in order (with `stop_services`), then end.
    Shutdown {
        stop_services: bool,
    },
    /// `os ...`: the switch's OS images; progress as lines.
    Os(OsRequest),
}

/// Where `os install` takes the installer from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallerSource {
    /// A file the daemon reads.
    File(PathBuf),
    /// An HTTP or HTTPS URL the daemon fetches onto `/host` first.
    Url(String),
}

/// What `soniclet os` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OsRequest {
    List,
    Install {
        source: InstallerSource,
        require_signature: bool,
        trial_deadline: Option<Duration>,
        force_platform: bool,
    },
    SetDefault(String),
    SetNextBoot(String),
    Remove(String),
    Cleanup,
    /// Boot into ONIE in this mode (the switch reboots).
    Onie(OnieMode),
}

impl OsRequest {
    /// Whether it changes what boots or what is installed.
    pub fn changes(&self) -> bool {
        !matches!(self, Self::List)
    }
}

/// Where an upgrade's new image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// An OCI or docker archive: verified and staged before anything is touched.
    Archive(PathBuf),
    /// An image already stored in containerd.
    Stored(String),
}

/// What an operator asked of an image change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRequest {
    pub service: String,
    pub kind: ChangeKind,
    /// The new image (an upgrade's); a rollback goes to the service's previous image.
    pub source: Option<ImageSource>,
    /// The image wanted from an archive of several (a release names it); otherwise the
    /// service's own image name.
    pub name: Option<String>,
    /// The digest the new image must have.
    pub digest: Option<String>,
    pub warm: bool,
    /// How long the new container has to become ready (default: the manifest's readiness
    /// timeout).
    pub timeout: Option<Duration>,
    /// How long it must then stay up (default 10 s).
    pub settle: Option<Duration>,
}

/// The answer to a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Status(StatusView),
    Service(ServiceView),
    Features(Vec<FeatureView>),
    Feature(FeatureView),
    /// A config reload ended; these services failed to come back.
    Reloaded {
        seconds: f64,
        failed: Vec<ServiceName>,
    },
    /// An image change ended.
    Changed(HistoryEntry),
    /// A release ended.
    Released(ReleaseOutcome),
    /// An import ended.
    Imported {
        images: usize,
    },
    /// The OS images, after an `os` command.
    Os(Images),
    /// `os install` ended.
    OsInstalled(Installed),
    Done,
}

/// A line of a long command's progress, before its answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Line(String),
    /// Within a release: one of its changes ended.
    ChangeEnded(HistoryEntry),
    /// Within a release: one of its changes was refused before anything was touched.
    ChangeRefused(CommandError),
    /// An import stored this image.
    Imported(ImageInfo),
}

/// How a release ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseOutcome {
    pub release: String,
    pub upgraded: Vec<String>,
    /// Already on the release's digest.
    pub unchanged: Vec<String>,
    /// Not running (stopped or disabled): no gate to pass, so left as they are.
    pub skipped: Vec<String>,
    /// The service whose upgrade failed (rolled back or refused); the ones after it were not
    /// touched.
    pub failed: Option<String>,
    pub untouched: Vec<String>,
}

/// A service's task started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub pid: u32,
    pub image_digest: String,
}

/// Why a start failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// Nothing to retry until something changes (a missing image, a spec that cannot be
    /// built).
    #[error("{0}")]
    Blocked(String),
    /// A runtime failure: it counts against the failure budget.
    #[error("{0}")]
    Failed(String),
}

/// A failure the core only reports: the database link's, the disk's, a probe's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub String);

impl Failure {
    /// The error and its causes.
    pub fn of(e: &dyn std::error::Error) -> Self {
        Self(crate::error::chain(e))
    }
}

/// The new container of an image change, made ahead of the switch-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub image: ImageInfo,
    /// The OCI runtime spec, as JSON.
    pub spec: Vec<u8>,
    pub rootfs: String,
}

/// An upgrade's new image, checked and staged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedImage {
    /// The name it is (or will be) stored under.
    pub name: String,
    pub digest: String,
    /// The verified archive it comes from, kept by the driver until the change imports it;
    /// `None` for an image already stored.
    pub archive: Option<ArchiveHandle>,
}

/// A staged archive the driver holds for the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArchiveHandle(pub u64);

/// A container found running, or left behind, when the daemon starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub container: crate::runtime::ContainerInfo,
    /// The digest the service's image reference names now (the container is stale when it
    /// runs another).
    pub current_image: Option<String>,
}

/// Every input of the core.
#[derive(Debug)]
pub enum Event {
    Command {
        id: RequestId,
        command: Command,
    },
    /// The requester went away (a timeout, a closed connection): forget its waits.
    RequestGone(RequestId),
    /// A wake-up the core asked for ([`Effect::WakeAt`]).
    Wake,
    Started {
        service: ServiceName,
        generation: u64,
        result: Result<Started, StartError>,
    },
    Stopped {
        service: ServiceName,
        generation: u64,
        result: Result<(), RuntimeError>,
    },
    Exited {
        service: ServiceName,
        generation: u64,
        status: ExitStatus,
    },
    Probed {
        service: ServiceName,
        generation: u64,
        result: Result<(), Failure>,
    },
    /// A critical process of the current container exited.
    CriticalExited {
        service: ServiceName,
        generation: u64,
        process: String,
    },
    /// Images were imported: services held for a missing image may start now.
    ImagesChanged,
    /// An image change's new image was checked and staged (or refused).
    Staged {
        service: ServiceName,
        result: Result<StagedImage, CommandError>,
    },
    /// An image change's new container was prepared (or could not be).
    ChangePrepared {
        service: ServiceName,
        result: Result<Prepared, Failure>,
    },
    /// An import ended.
    Imported {
        id: RequestId,
        result: Result<usize, CommandError>,
    },
    /// An [`Effect::Os`] ended.
    OsDone {
        id: RequestId,
        request: OsRequest,
        result: Result<Response, CommandError>,
    },
    /// An [`Effect::CommitImage`] ended.
    ImageCommitted {
        image: String,
        result: Result<(), Failure>,
    },
    /// A [`Effect::Persist`] is on disk (or could not be written).
    Persisted {
        seq: u64,
        result: Result<(), Failure>,
    },
    /// APPL_DB `PORT_TABLE:PortInitDone` appeared (or went away).
    PortsReady(bool),
    /// STATE_DB's warm and fast restart tables changed.
    WarmFlags(WarmFlags),
    /// A failure group's cold-start flush finished.
    ColdStartDone {
        group: String,
        result: Result<(), Failure>,
    },
    /// CONFIG_DB was replaced for a config reload.
    ConfigReloaded(Result<(), Failure>),
    /// The FEATURE table as loaded from CONFIG_DB: a full replacement.
    FeaturesLoaded(BTreeMap<String, Fields>),
    /// One FEATURE entry changed; `None` when it was deleted.
    FeatureChanged {
        name: String,
        fields: Option<Fields>,
    },
    /// An operator's FEATURE write reached CONFIG_DB (or did not).
    FeatureWritten {
        service: ServiceName,
        result: Result<(), Failure>,
    },
    /// Every kubelet-run container that claims a feature, as the pod watcher sees them now.
    Pods(BTreeMap<ServiceName, PodSeen>),
}

/// A kubelet-run container claiming a feature, as CRI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSeen {
    /// `namespace/name` of its pod.
    pub pod: String,
    /// Its pod's UID.
    pub uid: String,
    /// The container's CRI ID.
    pub container_id: String,
    /// It runs, and the feature's own readiness probe passes in it.
    pub ready: bool,
}

/// What the database link is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbRequest {
    /// STATE_DB `FEATURE|<name>`.
    Feature(FeatureReport),
    /// STATE_DB `SYSTEM_READY|SYSTEM_STATE`.
    System { status: String, reason: String },
    /// Clear what failure group `group` clears before it starts cold; answered with
    /// [`Event::ColdStartDone`].
    ColdStart { group: String, flush: Vec<String>, delete_state: Vec<String> },
    /// Replace CONFIG_DB with `init_cfg.json` and `config`; answered with
    /// [`Event::ConfigReloaded`] (and the FEATURE table loaded again).
    Reload { config: ConfigContent },
    /// STATE_DB `WARM_RESTART_ENABLE_TABLE|<service> enable`; `None` deletes the entry.
    Warm { service: String, enable: Option<bool> },
    /// STATE_DB `SERVICE_UPGRADE_TABLE|<service>`: the last image change and its outcome.
    Upgrade { service: String, fields: Fields },
    /// CONFIG_DB `FEATURE|<service>`: an operator's change. A FEATURE entry always has a
    /// state: when CONFIG_DB has none, `state_if_missing` completes the entry. Answered with
    /// [`Event::FeatureWritten`].
    WriteFeature { service: ServiceName, fields: Fields, state_if_missing: String },
    /// STATE_DB `OS_IMAGE_TABLE|<image>`: an OS image's trial and its outcome.
    OsImage { image: String, fields: Fields },
    /// STATE_DB `KUBERNETES_MASTER|SERVER`: the cluster CONFIG_DB names and whether the
    /// switch is its node (from the Kubernetes task, not the core).
    KubeMaster { fields: Fields },
}

/// How a container is taken down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopHow {
    /// SIGTERM, then SIGKILL after `stop_time`, then removal.
    Cold { stop_time: Duration },
    /// The manifest's warm or fast stop steps, then SIGKILL and removal.
    Steps { mode: StopMode, steps: Vec<StopStep> },
}

/// Where a start takes its container from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFrom {
    /// The image reference the service runs.
    pub reference: String,
    /// Made ahead by an image change: image, spec and rootfs, ready to create.
    pub prepared: Option<Prepared>,
    /// A rootfs key to use (an image change resumed after a restart of the daemon).
    pub rootfs: Option<String>,
    /// A container left by a crash or a failed start is in the way.
    pub leftover: bool,
}

/// Everything the core asks of the world. Effects leave the core in order; a
/// [`Effect::Persist`] holds back every effect after it until its [`Event::Persisted`].
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Create and start the service's container as `generation`; answered with
    /// [`Event::Started`].
    Start { service: ServiceName, generation: u64, from: StartFrom },
    /// Take the container down; answered with [`Event::Stopped`].
    Stop { service: ServiceName, generation: u64, how: StopHow },
    /// Watch the task's exit and probe its readiness ([`Event::Exited`], [`Event::Probed`]);
    /// replaces the service's previous watch.
    Watch { service: ServiceName, generation: u64 },
    /// Watch the critical processes of the ready task ([`Event::CriticalExited`]).
    WatchCritical { service: ServiceName, generation: u64 },
    /// Stop watching the service's task.
    Unwatch { service: ServiceName },
    /// Remove a container no manifest describes.
    Remove { container: String },
    /// Check and stage an upgrade's new image; answered with [`Event::Staged`].
    Stage {
        service: ServiceName,
        source: ImageSource,
        /// The image to pick from an archive of several.
        wanted: String,
        digest: Option<String>,
        progress: Option<RequestId>,
    },
    /// Forget a staged archive the core no longer needs.
    DiscardStaged(ArchiveHandle),
    /// Pin both images of a journaled change, import its archive, and prepare its new
    /// container; answered with [`Event::ChangePrepared`].
    Prepare {
        service: ServiceName,
        journal: ChangeJournal,
        /// Where the new image is stored (or will be, once imported).
        source: String,
        /// The reference the service runs now.
        current: String,
        archive: Option<ArchiveHandle>,
        progress: Option<RequestId>,
    },
    /// Remove a rootfs prepared ahead for a change that will not use it.
    DiscardRootfs { key: String },
    /// Remove images of past changes that no service keeps: neither in `keep` (digests)
    /// nor named like a service's own image in `unpinned`.
    CollectImages { keep: BTreeSet<String>, unpinned: Vec<String> },
    /// Import archives; progress goes to the request, the end comes as [`Event::Imported`].
    Import { id: RequestId, paths: Vec<PathBuf> },
    /// An `os` command's work on `/host`; answered with [`Event::OsDone`].
    Os { id: RequestId, request: OsRequest },
    /// The image on trial is healthy: make it GRUB's default; answered with
    /// [`Event::ImageCommitted`].
    CommitImage(String),
    /// The image on trial was not healthy in time: record why on `/host`, then reboot, so
    /// GRUB boots the previous image.
    FailTrial { image: String, reason: String },
    /// Reboot the switch (systemd's `reboot.target`).
    Reboot { reason: String },
    /// Write the whole desired state, atomically; answered with [`Event::Persisted`].
    Persist { seq: u64, state: PersistedState },
    /// Append an image change to the history file.
    AppendHistory(HistoryEntry),
    /// Database work, carried out by the database link.
    Db(DbRequest),
    /// Whether the database service is ready, for the link to connect.
    DatabaseReady(DatabaseReadiness),
    /// Start the service's systemd unit: it came up on its own, and its unit must say so.
    StartUnit(ServiceName),
    /// The service's view changed (for the watchers of `/v1/services/{name}/watch`).
    Status(ServiceView),
    /// Something happened that operators' tools should hear of (Kubernetes Events).
    Notice(Notice),
    /// A line of a request's progress.
    Progress { to: RequestId, item: Progress },
    /// The answer to a request; nothing follows it.
    Reply { to: RequestId, result: Result<Response, CommandError> },
    /// Hand the core [`Event::Wake`] at this instant (replaces any earlier wake-up).
    WakeAt(Instant),
    /// The supervisor is done: end the loop.
    Exit,
}

/// The core's own account of what happened, as it decides it, for the tools that tell
/// operators (Kubernetes Events on the Node, metrics): never needed by the core itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A service's task ended, or it could not start or become ready, unasked.
    Failed { service: ServiceName, reason: String, outcome: FailureOutcome },
    /// A failure group went down with one of its members.
    GroupDown { group: String, cause: ServiceName, services: BTreeSet<ServiceName> },
    /// An image change (upgrade or rollback) ended.
    ChangeEnded { service: String, to: String, result: ChangeResult, reason: Option<String> },
    /// A FEATURE entry's state took effect.
    Feature { service: ServiceName, state: String },
    /// STATE_DB `SYSTEM_READY|SYSTEM_STATE` changed.
    SystemReady { status: String, reason: String },
    /// An OS image's trial ended: committed as the default, or failed (the switch reboots
    /// into the previous image).
    Trial { image: String, committed: bool, reason: Option<String> },
    /// A kube-owned feature's pod is ready: the local container stops.
    Handover { service: ServiceName, pod: PodSeen },
    /// A kube-owned feature comes back to the local container, for `reason`.
    /// `pod` is the one it ran as, when it was seen.
    Fallback { service: ServiceName, pod: Option<PodSeen>, reason: String },
}

/// What the supervisor does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    Restarting {
        attempt: u32,
        delay: Duration,
    },
    /// The failure budget is spent: it stays down until an operator acts.
    GaveUp,
    /// FEATURE auto_restart is off.
    NoAutoRestart,
}

/// The database service's readiness as the database link sees it. Each ready episode has its
/// own number, so a crash and restart between two of the link's looks (a watch keeps only the
/// latest value) still reads as new: the link reconnects and loads CONFIG_DB again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DatabaseReadiness {
    #[default]
    Down,
    /// The n-th time, since the daemon started, that the database service became ready.
    Ready(u64),
}

impl DatabaseReadiness {
    pub fn is_ready(self) -> bool {
        matches!(self, Self::Ready(_))
    }
}
