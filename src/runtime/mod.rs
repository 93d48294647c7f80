//! The container runtime port: what soniclet needs from containerd, in soniclet's types.
//!
//! `containerd` is the only module that imports `containerd_client`/`tonic`. `spec` renders
//! OCI runtime specs; `archive` reads and verifies image archives before anything is stored.
//! The supervisor is generic over [`ContainerRuntime`] and never sees gRPC types.

pub mod archive;
pub mod containerd;
pub mod memory;
pub mod spec;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Labels soniclet puts on every container it creates.
pub mod labels {
    pub const SERVICE: &str = "io.soniclet.service";
    /// Digest of the manifest (and host settings) the container was created from.
    pub const MANIFEST_DIGEST: &str = "io.soniclet.manifest-digest";
    /// Digest of the image manifest the container runs.
    pub const IMAGE_DIGEST: &str = "io.soniclet.image-digest";
    /// Counts the containers created for a service; the highest is the current one.
    pub const GENERATION: &str = "io.soniclet.generation";
    /// On image records soniclet made to pin a service's image by digest (`repo@sha256:...`).
    pub const PINNED: &str = "io.soniclet.pinned";
}

/// What an image tells the runtime about how to run it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

/// An image stored in containerd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Reference, e.g. `docker-database:latest`.
    pub name: String,
    /// Digest of the image manifest (`sha256:...`).
    pub digest: String,
    /// Bytes of compressed layers plus config and manifest.
    pub size: u64,
    pub architecture: String,
    pub os: String,
    pub config: ImageConfig,
    /// Chain ID of the top layer: the snapshot a container's rootfs is prepared from.
    pub chain_id: String,
}

/// The image platform this switch runs (OCI names: `amd64`, `arm64`).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        other => other,
    }
}

/// An image built for another platform than this switch's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image {name} is for {os}/{architecture}, but this switch is linux/{host}")]
pub struct PlatformError {
    pub name: String,
    pub os: String,
    pub architecture: String,
    pub host: &'static str,
}

/// Refuses an image (by name, OS and architecture) built for another platform than this
/// switch's.
pub fn check_platform(name: &str, os: &str, architecture: &str) -> Result<(), PlatformError> {
    let host = host_architecture();
    if os != "linux" || architecture != host {
        return Err(PlatformError {
            name: name.to_owned(),
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            host,
        });
    }
    Ok(())
}

/// A task's state as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TaskState {
    /// The container exists but has no task.
    Absent,
    Created {
        pid: u32,
    },
    Running {
        pid: u32,
    },
    Paused {
        pid: u32,
    },
    Stopped {
        exit_code: u32,
    },
}

/// A container of soniclet's namespace, with its labels and task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub task: TaskState,
}

impl ContainerInfo {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    pub fn generation(&self) -> u64 {
        self.label(labels::GENERATION).and_then(|g| g.parse().ok()).unwrap_or(0)
    }
}

/// Everything needed to create a container.
#[derive(Debug, Clone)]
pub struct CreateContainer {
    pub id: String,
    pub image: ImageInfo,
    /// The OCI runtime spec, as JSON.
    pub spec: Vec<u8>,
    pub labels: BTreeMap<String, String>,
    /// A rootfs made ahead by [`ContainerRuntime::prepare_rootfs`] under this key; prepared
    /// now when `None` or when it no longer exists.
    pub rootfs: Option<String>,
    /// runc makes the cgroup through systemd (the spec's cgroups path is then
    /// `slice:prefix:name`).
    pub systemd_cgroup: bool,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code; 128 + N when killed by signal N.
    pub code: u32,
    pub at: SystemTime,
}

/// Where a task's stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSink {
    /// The soniclet binary, run by the containerd shim as the task's logging process.
    pub program: PathBuf,
    /// Directory of the per-service log files.
    pub dir: PathBuf,
    /// Size at which a log file is rotated, and how many rotated files are kept.
    pub max_bytes: u64,
    pub max_files: u32,
    /// Also send each line to journald (`journalctl -u <svc>`).
    pub journal: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot connect to containerd at {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    /// A task's bundle directory left behind by a task create that was cut short: containerd
    /// refuses every new task of that ID until it is gone.
    #[error("the task bundle {} of {id} was left behind by an interrupted task create", bundle.display())]
    LeftoverBundle { id: String, bundle: PathBuf },
    /// The task's process has exited: there is nothing to signal.
    #[error("the task of {id} has already exited")]
    ProcessFinished { id: String },
    #[error("containerd {op} failed for {id}: {message}")]
    Call { op: &'static str, id: String, message: String },
    #[error("containerd {op} timed out after {timeout:?} for {id}")]
    Timeout { op: &'static str, id: String, timeout: Duration },
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error("layer {layer} of {image} unpacked to {actual}, but the image config says {expected}")]
    DiffIdMismatch { image: String, layer: String, expected: String, actual: String },
    #[error("reading {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, RuntimeError::NotFound { .. })
    }
}

/// What soniclet needs from a container runtime. Every method is bounded in time by the
/// adapter, except [`ContainerRuntime::wait`], which lasts as long as the task.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Every container in soniclet's namespace, with its task state.
    fn containers(&self) -> impl Future<Output = Result<Vec<ContainerInfo>, RuntimeError>> + Send;

    /// The stored image `reference`.
    fn image(&self, reference: &str) -> impl Future<Output = Result<ImageInfo, RuntimeError>> + Send;

    /// Every stored image.
    fn images(&self) -> impl Future<Output = Result<Vec<ImageInfo>, RuntimeError>> + Send;

    /// Creates the container and its rootfs snapshot; starts nothing.
    fn create(&self, request: CreateContainer) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Creates and starts the container's task; returns its PID.
    fn start(&self, id: &str, logs: &LogSink) -> impl Future<Output = Result<u32, RuntimeError>> + Send;

    /// Signals the task's init process, or every process in it with `all`.
    fn kill(&self, id: &str, signal: i32, all: bool) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Waits until the task exits.
    fn wait(&self, id: &str) -> impl Future<Output = Result<ExitStatus, RuntimeError>> + Send;

    /// Deletes the task (killing it if needed), the container and its snapshot.
    /// Deleting what does not exist is not an error.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Runs `args` inside the container and returns its exit code.
    fn exec(
        &self,
        id: &str,
        args: Vec<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<u32, RuntimeError>> + Send;

    /// PIDs (in soniclet's PID namespace) of every process in the task.
    fn pids(&self, id: &str) -> impl Future<Output = Result<Vec<u32>, RuntimeError>> + Send;

    /// Prepares a container rootfs from `image` under `key` ahead of [`ContainerRuntime::create`],
    /// so that a switch-over only creates and starts. It survives garbage collection until
    /// a container takes it or [`ContainerRuntime::discard_rootfs`] removes it.
    fn prepare_rootfs(&self, key: &str, image: &ImageInfo) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes a rootfs prepared ahead; removing what does not exist is not an error.
    fn discard_rootfs(&self, key: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Names the image `source` names also `name` (labelled [`labels::PINNED`]), so it stays
    /// stored whatever happens to `source`.
    fn tag_image(&self, source: &str, name: &str) -> impl Future<Output = Result<ImageInfo, RuntimeError>> + Send;

    /// Deletes the image record `name`; containerd collects what nothing else references.
    fn remove_image(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Stores a verified archive's images (content, snapshots, image records).
    fn import(
        &self,
        archive: &archive::StagedArchive,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> impl Future<Output = Result<Vec<ImageInfo>, RuntimeError>> + Send;
}

/// How long a task may take to go once it was sent SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// SIGKILL to every process, then removal (a warm or fast stop, after its steps).
pub async fn kill_container<R: ContainerRuntime>(runtime: &R, id: &str) -> Result<(), RuntimeError> {
    match runtime.kill(id, libc::SIGKILL, true).await {
        Ok(()) => {
            let _ = tokio::time::timeout(KILL_WAIT, runtime.wait(id)).await;
        }
        Err(RuntimeError::NotFound { .. } | RuntimeError::ProcessFinished { .. }) => {}
        Err(e) => return Err(e),
    }
    runtime.remove(id).await
}

/// SIGTERM, then SIGKILL after `stop_time`, then removal of the task, container and rootfs.
pub async fn stop_container<R: ContainerRuntime>(
    runtime: &R,
    id: &str,
    stop_time: Duration,
) -> Result<(), RuntimeError> {
    match runtime.kill(id, libc::SIGTERM, false).await {
        Ok(()) => {
            if tokio::time::timeout(stop_time, runtime.wait(id)).await.is_err() {
                tracing::warn!(container = id, stop_time = ?stop_time, "still running after stop-time; sending SIGKILL");
                match runtime.kill(id, libc::SIGKILL, true).await {
                    Ok(()) | Err(RuntimeError::NotFound { .. } | RuntimeError::ProcessFinished { .. }) => {}
                    Err(e) => return Err(e),
                }
                let _ = tokio::time::timeout(KILL_WAIT, runtime.wait(id)).await;
            }
        }
        // No task, or it already exited: nothing to signal.
        Err(RuntimeError::NotFound { .. } | RuntimeError::ProcessFinished { .. }) => {}
        Err(e) => return Err(e),
    }
    runtime.remove(id).await
}
