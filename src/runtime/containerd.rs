//! The containerd adapter: the only module that imports `containerd_client` and `tonic`.
//!
//! Every call carries the `containerd-namespace` header (soniclet's namespace, `sonic` by
//! default; `k8s.io` is never touched) and a deadline. Image import writes blobs into the
//! content store under a lease, with containerd checking each digest on commit, then unpacks
//! the layers into overlayfs snapshots itself (containerd 1.6 has no unpack API), checking
//! every unpacked layer against the config's diff IDs, and only then names the image.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    AddResourceRequest, ApplyRequest, Container, CreateContainerRequest, CreateImageRequest,
    CreateRequest as CreateLeaseRequest, CreateTaskRequest, DeleteContainerRequest, DeleteImageRequest,
    DeleteProcessRequest, DeleteRequest as DeleteLeaseRequest, DeleteTaskRequest, ExecProcessRequest,
    GetContainerRequest, GetImageRequest, GetRequest, Image, InfoRequest, KillRequest, ListContainersRequest,
    ListImagesRequest, ListPidsRequest, ListTasksRequest, ReadContentRequest, StartRequest, UpdateImageRequest,
    UpdateRequest, WaitRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::{self, transport::Channel, Code, Request, Status};
use containerd_client::types::v1::Status as ProcessStatus;
use containerd_client::types::{Descriptor, Mount};
use containerd_client::Client;
use prost_types::Any;
use serde_json::Value;
use tokio_stream::StreamExt;

use super::archive::{StagedArchive, StagedImage, MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX};
use super::{
    ContainerInfo, ContainerRuntime, CreateContainer, ExitStatus, ImageConfig, ImageInfo, LogSink, RuntimeError,
    TaskState,
};

/// runc's options for a container (`containerd.runc.v1.Options`).
const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";
/// Those options with only `systemd_cgroup = 9` set, in protobuf's encoding (field 9 as a
/// varint: key `9 << 3 | 0`, then 1), so runc makes the cgroup through systemd.
const RUNC_OPTIONS_SYSTEMD_CGROUP: [u8; 2] = [9 << 3, 1];

/// Deadline of an ordinary containerd call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A task create starts a shim and runs `runc create` (mounts, cgroups, namespaces), which a
/// loaded switch can take long over; cutting it short is what leaves a bundle behind.
const CREATE_TASK_TIMEOUT: Duration = Duration::from_secs(90);
const SNAPSHOTTER: &str = "overlayfs";
const RUNC: &str = "io.containerd.runc.v2";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const CHUNK: usize = 1024 * 1024;

/// What an image manifest resolves to: its config, platform, top snapshot and size.
#[derive(Debug, Clone)]
struct ImageFacts {
    config: ImageConfig,
    architecture: String,
    os: String,
    chain_id: String,
    size: u64,
}

/// A connection to one containerd, scoped to one namespace.
pub struct Containerd {
    client: Client,
    socket: PathBuf,
    namespace: String,
    /// Image facts by manifest digest; content is immutable, so they never go stale.
    image_cache: Mutex<HashMap<String, ImageFacts>>,
    /// Each container's rootfs snapshot key, as this adapter created it (else asked for).
    snapshot_keys: Mutex<HashMap<String, String>>,
    exec_counter: AtomicU64,
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd").field("socket", &self.socket).field("namespace", &self.namespace).finish()
    }
}

/// containerd's answer, in the runtime port's terms. This is the one place that reads gRPC
/// codes (and, where containerd's shims disagree on the code, its errdefs texts).
fn call_err(op: &'static str, id: &str, status: Status) -> RuntimeError {
    let message = status.message();
    if let Some(bundle) = leftover_bundle(message, id) {
        return RuntimeError::LeftoverBundle { id: id.to_owned(), bundle };
    }
    match status.code() {
        // A task whose process exited: `process already finished`, under NotFound from
        // some shims and FailedPrecondition or Unknown from others.
        _ if message.contains("process already finished") => RuntimeError::ProcessFinished { id: id.to_owned() },
        Code::NotFound => RuntimeError::NotFound { what: format!("{id} ({op})") },
        Code::AlreadyExists => RuntimeError::AlreadyExists { what: format!("{id} ({op})") },
        Code::Unknown if message.contains("not found") => RuntimeError::NotFound { what: format!("{id} ({op})") },
        Code::Unknown if message.contains("already exists") => {
            RuntimeError::AlreadyExists { what: format!("{id} ({op})") }
        }
        _ => RuntimeError::Call { op, id: id.to_owned(), message: message.to_owned() },
    }
}

/// Runs a containerd call with the client-side deadline as a backstop to the gRPC one.
async fn bounded<T>(
    op: &'static str,
    id: &str,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, RuntimeError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(call_err(op, id, status)),
        Err(_) => Err(RuntimeError::Timeout { op, id: id.to_owned(), timeout }),
    }
}

/// The bundle directory named by containerd's `failed to start shim: mkdir <bundle>: file
/// exists`, when it is the v2 runtime's bundle of container `id` and nothing else.
fn leftover_bundle(message: &str, id: &str) -> Option<PathBuf> {
    let (_, rest) = message.split_once("mkdir ")?;
    let (path, _) = rest.split_once(": file exists")?;
    let bundle = PathBuf::from(path);
    let under_runtime = bundle.parent()?.parent()?.file_name()? == "io.containerd.runtime.v2.task";
    (bundle.is_absolute() && under_runtime && bundle.file_name()? == id && !path.contains("/../")).then_some(bundle)
}

/// Removes a task bundle no shim serves any more, as containerd's own bundle delete does:
/// the rootfs unmounted, the bundle's work directory (its `work` link) and the bundle
/// itself removed.
fn remove_leftover_bundle(bundle: &Path) -> Result<(), RuntimeError> {
    let io = |source| RuntimeError::Io { path: bundle.to_owned(), source };
    let rootfs = bundle.join("rootfs");
    // Every layer mounted there (an overlay, and whatever was mounted over it).
    while nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
    if let Ok(work) = std::fs::read_link(bundle.join("work")) {
        let is_runtime_work = work.parent().and_then(Path::parent).and_then(Path::file_name)
            == Some(std::ffi::OsStr::new("io.containerd.runtime.v2.task"));
        if is_runtime_work {
            match std::fs::remove_dir_all(&work) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RuntimeError::Io { path: work, source: e }),
            }
        }
    }
    match std::fs::remove_dir_all(bundle) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
    }
}

/// How long containerd has to clean up after a killed orphan shim.
const ORPHAN_CLEANUP: Duration = Duration::from_secs(2);

/// PIDs of the runc shims serving container `id` of `namespace` (their command line names
/// both).
fn orphan_shims(namespace: &str, id: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let value = |flag: &[u8]| args.windows(2).find(|w| w[0] == flag).map(|w| w[1]);
            args.first().is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                && value(b"-namespace") == Some(namespace.as_bytes())
                && value(b"-id") == Some(id.as_bytes())
        })
        .collect()
}

fn timestamp_to_system(ts: Option<prost_types::Timestamp>) -> SystemTime {
    ts.and_then(|t| {
        let secs = u64::try_from(t.seconds).ok()?;
        let nanos = u32::try_from(t.nanos).ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
    })
    .unwrap_or_else(SystemTime::now)
}

impl Containerd {
    /// Connects and checks that containerd answers.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Self, RuntimeError> {
        let connect_err = |source: Box<dyn std::error::Error + Send + Sync>| RuntimeError::Connect {
            socket: socket.to_owned(),
            source,
        };
        let channel: Channel = tokio::time::timeout(Duration::from_secs(5), containerd_client::connect(socket))
            .await
            .map_err(|e| connect_err(Box::new(e)))?
            .map_err(|e| connect_err(Box::new(e)))?;
        let client = Client::from(channel);
        let version = tokio::time::timeout(Duration::from_secs(5), client.version().version(()))
            .await
            .map_err(|e| connect_err(Box::new(e)))?
            .map_err(|e| connect_err(Box::new(e)))?;
        tracing::debug!(version = %version.get_ref().version, socket = %socket.display(), "connected to containerd");
        Ok(Self {
            client,
            socket: socket.to_owned(),
            namespace: namespace.to_owned(),
            image_cache: Mutex::new(HashMap::new()),
            snapshot_keys: Mutex::new(HashMap::new()),
            exec_counter: AtomicU64::new(0),
        })
    }

    fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace.parse().expect("namespace names are ASCII"));
        request
    }

    fn leased<T>(&self, message: T, lease: &str) -> Request<T> {
        let mut request = self.req(message);
        request.metadata_mut().insert("containerd-lease", lease.parse().expect("lease ids are ASCII"));
        request
    }

    fn maybe_leased<T>(&self, message: T, lease: Option<&str>) -> Request<T> {
        match lease {
            Some(lease) => self.leased(message, lease),
            None => self.req(message),
        }
    }

    async fn read_blob(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        let mut stream = bounded(
            "read content",
            digest,
            CALL_TIMEOUT,
            self.client.content().read(self.req(ReadContentRequest { digest: digest.to_owned(), offset: 0, size: 0 })),
        )
        .await?;
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|s| call_err("read content", digest, s))?;
            data.extend_from_slice(&chunk.data);
        }
        Ok(data)
    }

    async fn read_json(&self, digest: &str) -> Result<Value, RuntimeError> {
        let bytes = self.read_blob(digest).await?;
        serde_json::from_slice(&bytes).map_err(|e| RuntimeError::Call {
            op: "parse content",
            id: digest.to_owned(),
            message: e.to_string(),
        })
    }

    /// Resolves an image record to the facts a container needs.
    async fn describe(&self, image: Image) -> Result<ImageInfo, RuntimeError> {
        let target =
            image.target.ok_or_else(|| RuntimeError::NotFound { what: format!("target of {}", image.name) })?;
        let cached = self.image_cache.lock().expect("cache lock").get(&target.digest).cloned();
        let ImageFacts { config, architecture, os, chain_id, size } = match cached {
            Some(facts) => facts,
            None => {
                let facts = self.resolve_manifest(&image.name, &target).await?;
                self.image_cache.lock().expect("cache lock").insert(target.digest.clone(), facts.clone());
                facts
            }
        };
        Ok(ImageInfo { name: image.name, digest: target.digest, size, architecture, os, config, chain_id })
    }

    async fn resolve_manifest(&self, name: &str, target: &Descriptor) -> Result<ImageFacts, RuntimeError> {
        let mut manifest = self.read_json(&target.digest).await?;
        let mut manifest_size = u64::try_from(target.size).unwrap_or(0);
        if target.media_type == MEDIA_OCI_INDEX || target.media_type == MEDIA_DOCKER_LIST {
            let host = super::archive::host_architecture();
            let chosen = manifest["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["platform"]["architecture"].as_str().is_none_or(|a| a == host))
                .cloned()
                .ok_or_else(|| RuntimeError::NotFound { what: format!("a linux/{host} manifest in {name}") })?;
            let digest = chosen["digest"].as_str().unwrap_or_default().to_owned();
            manifest_size = chosen["size"].as_u64().unwrap_or(0);
            manifest = self.read_json(&digest).await?;
        }
        let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default().to_owned();
        let layer_size: u64 =
            manifest["layers"].as_array().into_iter().flatten().filter_map(|l| l["size"].as_u64()).sum();
        let config = self.read_json(&config_digest).await?;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
        };
        let diff_ids = strings(&config["rootfs"]["diff_ids"]);
        let chain_id = super::archive::chain_ids(&diff_ids).pop().unwrap_or_default();
        let c = &config["config"];
        let image_config = ImageConfig {
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            env: strings(&c["Env"]),
            working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_owned(),
            user: c["User"].as_str().unwrap_or_default().to_owned(),
        };
        let architecture = config["architecture"].as_str().unwrap_or_default().to_owned();
        let os = config["os"].as_str().unwrap_or_default().to_owned();
        Ok(ImageFacts { config: image_config, architecture, os, chain_id, size: manifest_size + layer_size })
    }

    /// Puts a resource that is already there under the import's lease before it is looked
    /// at: it may belong to nothing (an image just removed), and containerd's garbage
    /// collector would take it between the look and the new image record.
    async fn hold(&self, lease: &str, kind: &str, id: &str) -> Result<(), RuntimeError> {
        let resource = containerd_client::services::v1::Resource { id: id.to_owned(), r#type: kind.to_owned() };
        let hold = AddResourceRequest { id: lease.to_owned(), resource: Some(resource) };
        bounded("lease a resource", id, CALL_TIMEOUT, self.client.leases().add_resource(self.req(hold))).await?;
        Ok(())
    }

    async fn content_exists(&self, digest: &str) -> Result<bool, RuntimeError> {
        match bounded(
            "content info",
            digest,
            CALL_TIMEOUT,
            self.client.content().info(self.req(InfoRequest { digest: digest.to_owned() })),
        )
        .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes one blob into the content store (containerd verifies `expected` on commit),
    /// or only sets its labels when the blob is already there.
    async fn write_blob(
        &self,
        lease: &str,
        digest: &str,
        size: u64,
        path: &Path,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        self.hold(lease, "content", digest).await?;
        if self.content_exists(digest).await? {
            if !labels.is_empty() {
                let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
                let info =
                    containerd_client::services::v1::Info { digest: digest.to_owned(), labels, ..Default::default() };
                bounded(
                    "update content labels",
                    digest,
                    CALL_TIMEOUT,
                    self.client.content().update(self.leased(
                        UpdateRequest { info: Some(info), update_mask: Some(prost_types::FieldMask { paths }) },
                        lease,
                    )),
                )
                .await?;
            }
            return Ok(());
        }
        let total = i64::try_from(size).unwrap_or(i64::MAX);
        let reference = format!("soniclet-{}-{}", lease, digest.trim_start_matches("sha256:"));
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let path_owned = path.to_owned();
        let digest_owned = digest.to_owned();
        // The file is read on a blocking thread and streamed to containerd.
        let reader = tokio::task::spawn_blocking(move || -> Result<(), std::io::Error> {
            use std::io::Read;
            let mut file = std::fs::File::open(&path_owned)?;
            let mut offset = 0i64;
            let mut first = true;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = file.read(&mut buf)?;
                buf.truncate(n);
                let last = n == 0;
                if last && !first {
                    // Data all sent: a final empty commit.
                }
                let action = if last { WriteAction::Commit } else { WriteAction::Write };
                let request = WriteContentRequest {
                    action: action as i32,
                    r#ref: reference.clone(),
                    total,
                    expected: digest_owned.clone(),
                    offset,
                    data: buf,
                    labels: if last { labels.clone() } else { HashMap::new() },
                };
                offset += n as i64;
                first = false;
                if tx.blocking_send(request).is_err() || last {
                    return Ok(());
                }
            }
        });
        let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
        let call = async {
            let mut responses = self.client.content().write(self.leased(outbound, lease)).await?.into_inner();
            while let Some(resp) = responses.next().await {
                resp?;
            }
            Ok::<_, Status>(())
        };
        let result = tokio::time::timeout(Duration::from_secs(600), call).await;
        let read_result = reader.await.map_err(|e| RuntimeError::Call {
            op: "write content",
            id: digest.to_owned(),
            message: e.to_string(),
        })?;
        read_result.map_err(|source| RuntimeError::Io { path: path.to_owned(), source })?;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) if status.code() == Code::AlreadyExists => Ok(()),
            Ok(Err(status)) => Err(call_err("write content", digest, status)),
            Err(_) => Err(RuntimeError::Timeout {
                op: "write content",
                id: digest.to_owned(),
                timeout: Duration::from_secs(600),
            }),
        }
    }

    async fn snapshot_exists(&self, key: &str) -> Result<bool, RuntimeError> {
        let request = StatSnapshotRequest { snapshotter: SNAPSHOTTER.to_owned(), key: key.to_owned() };
        match bounded("stat snapshot", key, CALL_TIMEOUT, self.client.snapshots().stat(self.req(request))).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Applies each layer onto its parent snapshot, verifying the result against the diff IDs.
    async fn unpack(
        &self,
        lease: &str,
        image: &StagedImage,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<String, RuntimeError> {
        let chain = image.chain_ids();
        let mut parent = String::new();
        for (i, (layer, chain_id)) in image.layers.iter().zip(&chain).enumerate() {
            self.hold(lease, &format!("snapshots/{SNAPSHOTTER}"), chain_id).await?;
            if self.snapshot_exists(chain_id).await? {
                parent = chain_id.clone();
                continue;
            }
            progress(format!("{}: unpacking layer {}/{}", image.name, i + 1, image.layers.len()));
            let key = format!("extract-{lease}-{}", chain_id.trim_start_matches("sha256:"));
            let prepare = PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_owned(),
                key: key.clone(),
                parent: parent.clone(),
                labels: HashMap::new(),
            };
            let mounts = bounded(
                "prepare snapshot",
                &key,
                CALL_TIMEOUT,
                self.client.snapshots().prepare(self.leased(prepare, lease)),
            )
            .await?
            .mounts;
            let apply = ApplyRequest {
                diff: Some(Descriptor {
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.clone(),
                    size: i64::try_from(layer.size).unwrap_or(i64::MAX),
                    annotations: HashMap::new(),
                }),
                mounts,
                payloads: HashMap::new(),
                sync_fs: true,
            };
            let applied = bounded(
                "apply layer",
                &layer.digest,
                Duration::from_secs(600),
                self.client.diff().apply(self.leased(apply, lease)),
            )
            .await;
            let applied_digest = match applied {
                Ok(resp) => resp.applied.map(|d| d.digest).unwrap_or_default(),
                Err(e) => {
                    self.remove_snapshot(&key).await;
                    return Err(e);
                }
            };
            if applied_digest != image.diff_ids[i] {
                self.remove_snapshot(&key).await;
                return Err(RuntimeError::DiffIdMismatch {
                    image: image.name.clone(),
                    layer: layer.digest.clone(),
                    expected: image.diff_ids[i].clone(),
                    actual: applied_digest,
                });
            }
            let commit = CommitSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_owned(),
                name: chain_id.clone(),
                key: key.clone(),
                labels: HashMap::new(),
            };
            match bounded(
                "commit snapshot",
                chain_id,
                CALL_TIMEOUT,
                self.client.snapshots().commit(self.leased(commit, lease)),
            )
            .await
            {
                Ok(_) => {}
                // Another import committed the same layer meanwhile: use theirs.
                Err(RuntimeError::AlreadyExists { .. }) => {
                    self.remove_snapshot(&key).await;
                }
                Err(e) => {
                    self.remove_snapshot(&key).await;
                    return Err(e);
                }
            }
            parent = chain_id.clone();
        }
        Ok(parent)
    }

    async fn remove_snapshot(&self, key: &str) {
        let request = RemoveSnapshotRequest { snapshotter: SNAPSHOTTER.to_owned(), key: key.to_owned() };
        if let Err(e) =
            bounded("remove snapshot", key, CALL_TIMEOUT, self.client.snapshots().remove(self.req(request))).await
        {
            if !e.is_not_found() {
                tracing::warn!(snapshot = key, error = %e, "cannot remove snapshot");
            }
        }
    }

    /// The image record `reference` names.
    async fn image_record(&self, reference: &str) -> Result<Image, RuntimeError> {
        let not_found = || RuntimeError::NotFound { what: format!("image {reference}") };
        let request = GetImageRequest { name: reference.to_owned() };
        bounded("get image", reference, CALL_TIMEOUT, self.client.images().get(self.req(request)))
            .await
            .map_err(|e| if e.is_not_found() { not_found() } else { e })?
            .image
            .ok_or_else(not_found)
    }

    /// The snapshot a container's rootfs lives in: its own ID, or the key prepared ahead.
    async fn snapshot_key(&self, id: &str) -> Result<String, RuntimeError> {
        if let Some(key) = self.snapshot_keys.lock().expect("snapshot keys lock").get(id) {
            return Ok(key.clone());
        }
        let request = GetContainerRequest { id: id.to_owned() };
        let container = bounded("get container", id, CALL_TIMEOUT, self.client.containers().get(self.req(request)))
            .await?
            .container
            .ok_or_else(|| RuntimeError::NotFound { what: format!("container {id}") })?;
        Ok(if container.snapshot_key.is_empty() { id.to_owned() } else { container.snapshot_key })
    }

    async fn prepare_snapshot(
        &self,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let prepare = PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_owned(),
            key: key.to_owned(),
            parent: parent.to_owned(),
            labels,
        };
        bounded("prepare rootfs", key, CALL_TIMEOUT, self.client.snapshots().prepare(self.req(prepare))).await?;
        Ok(())
    }

    async fn put_image(&self, record: Image) -> Result<(), RuntimeError> {
        self.put_image_leased(record, None).await
    }

    /// Creates the image record, or points an existing one of that name at the new target.
    async fn put_image_leased(&self, record: Image, lease: Option<&str>) -> Result<(), RuntimeError> {
        let name = record.name.clone();
        let create = CreateImageRequest { image: Some(record.clone()), source_date_epoch: None };
        match bounded(
            "create image",
            &name,
            CALL_TIMEOUT,
            self.client.images().create(self.maybe_leased(create, lease)),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(RuntimeError::AlreadyExists { .. }) => {
                let update = UpdateImageRequest {
                    image: Some(record),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["target".into(), "labels".into()] }),
                    source_date_epoch: None,
                };
                bounded(
                    "update image",
                    &name,
                    CALL_TIMEOUT,
                    self.client.images().update(self.maybe_leased(update, lease)),
                )
                .await?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn import_image(
        &self,
        lease: &str,
        image: &StagedImage,
        source: &Path,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<ImageInfo, RuntimeError> {
        progress(format!("{}: writing {} blobs ({} bytes)", image.name, image.layers.len() + 2, image.total_size()));
        for layer in &image.layers {
            self.write_blob(lease, &layer.digest, layer.size, &layer.path, HashMap::new()).await?;
        }
        let top = image.chain_ids().pop().unwrap_or_default();
        let config_labels = HashMap::from([(format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"), top.clone())]);
        self.write_blob(lease, &image.config.digest, image.config.size, &image.config.path, config_labels).await?;
        let mut manifest_labels =
            HashMap::from([("containerd.io/gc.ref.content.config".to_owned(), image.config.digest.clone())]);
        for (i, layer) in image.layers.iter().enumerate() {
            manifest_labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), layer.digest.clone());
        }
        self.write_blob(lease, &image.manifest.digest, image.manifest.size, &image.manifest.path, manifest_labels)
            .await?;
        self.unpack(lease, image, progress).await?;

        let record = Image {
            name: image.name.clone(),
            labels: HashMap::from([("io.soniclet.imported-from".to_owned(), source.display().to_string())]),
            target: Some(Descriptor {
                media_type: image.manifest.media_type.clone(),
                digest: image.manifest.digest.clone(),
                size: i64::try_from(image.manifest.size).unwrap_or(i64::MAX),
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        self.put_image_leased(record, Some(lease)).await?;
        progress(format!("{}: imported {}", image.name, image.manifest.digest));
        Ok(ImageInfo {
            name: image.name.clone(),
            digest: image.manifest.digest.clone(),
            size: image.total_size(),
            architecture: image.architecture.clone(),
            os: image.os.clone(),
            config: image.image_config.clone(),
            chain_id: top,
        })
    }

    async fn task(&self, id: &str) -> Result<Option<containerd_client::types::v1::Process>, RuntimeError> {
        let request = GetRequest { container_id: id.to_owned(), exec_id: String::new() };
        match bounded("get task", id, CALL_TIMEOUT, self.client.tasks().get(self.req(request))).await {
            Ok(resp) => Ok(resp.process),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What an interrupted task create or delete leaves behind blocks a new task of the same
    /// ID: a shim serving no task (its caller killed, so containerd's request context ended),
    /// or a bundle directory no shim serves (the create cut short after the shim went).
    /// containerd cleans a bundle up once its shim goes, as it does for any shim that dies,
    /// so an orphan shim is killed and the bundle waited for; a bundle still there is then
    /// removed as containerd would.
    async fn clear_leftover_task(&self, id: &str, bundle: Option<&Path>) -> Result<(), RuntimeError> {
        let shims = orphan_shims(&self.namespace, id);
        if shims.is_empty() && bundle.is_none() {
            return Err(RuntimeError::AlreadyExists {
                what: format!("{id} (create task: a task bundle without a task)"),
            });
        }
        for pid in &shims {
            tracing::warn!(container = %id, shim = pid, "killing the shim of a task whose create or delete was interrupted");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
        }
        if !shims.is_empty() {
            // containerd deletes the bundle when it sees the shim's connection close.
            let deadline = tokio::time::Instant::now() + ORPHAN_CLEANUP;
            while orphan_shims(&self.namespace, id).iter().any(|p| shims.contains(p)) {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(bundle) = bundle.filter(|b| b.exists()) {
            tracing::warn!(container = %id, bundle = %bundle.display(), "removing a task bundle an interrupted task create left behind");
            let bundle = bundle.to_owned();
            tokio::task::spawn_blocking(move || remove_leftover_bundle(&bundle)).await.map_err(|e| {
                RuntimeError::Call { op: "remove a task bundle", id: id.to_owned(), message: e.to_string() }
            })??;
        }
        Ok(())
    }

    async fn wait_process(&self, id: &str, exec_id: &str) -> Result<ExitStatus, RuntimeError> {
        let request = WaitRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned() };
        let resp =
            self.client.tasks().wait(self.req(request)).await.map_err(|s| call_err("wait task", id, s))?.into_inner();
        Ok(ExitStatus { code: resp.exit_status, at: timestamp_to_system(resp.exited_at) })
    }
}

fn task_state(process: &containerd_client::types::v1::Process) -> TaskState {
    match ProcessStatus::try_from(process.status).unwrap_or(ProcessStatus::Unknown) {
        ProcessStatus::Created => TaskState::Created { pid: process.pid },
        ProcessStatus::Running => TaskState::Running { pid: process.pid },
        ProcessStatus::Paused | ProcessStatus::Pausing => TaskState::Paused { pid: process.pid },
        ProcessStatus::Stopped | ProcessStatus::Unknown => TaskState::Stopped { exit_code: process.exit_status },
    }
}

/// The shim runs the soniclet binary as the task's logging process:
/// `soniclet log-shim <dir>` with the container ID in its environment.
fn log_uri(logs: &LogSink) -> String {
    let encode = |p: &Path| -> String {
        p.display()
            .to_string()
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => (b as char).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    let arg = crate::logs::shim_arg(logs.max_bytes, logs.max_files, logs.journal, &logs.dir);
    format!("binary://{}?log-shim={}", encode(&logs.program), encode(Path::new(&arg)))
}

impl ContainerRuntime for Containerd {
    async fn containers(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let containers = bounded(
            "list containers",
            &self.namespace,
            CALL_TIMEOUT,
            self.client.containers().list(self.req(ListContainersRequest { filters: vec![] })),
        )
        .await?
        .containers;
        let tasks = bounded(
            "list tasks",
            &self.namespace,
            CALL_TIMEOUT,
            self.client.tasks().list(self.req(ListTasksRequest { filter: String::new() })),
        )
        .await?
        .tasks;
        let by_id: HashMap<&str, &containerd_client::types::v1::Process> =
            tasks.iter().map(|t| (t.id.as_str(), t)).collect();
        Ok(containers
            .into_iter()
            .map(|c| ContainerInfo {
                task: by_id.get(c.id.as_str()).map(|p| task_state(p)).unwrap_or(TaskState::Absent),
                labels: c.labels.into_iter().collect::<BTreeMap<_, _>>(),
                image: c.image,
                id: c.id,
            })
            .collect())
    }

    async fn image(&self, reference: &str) -> Result<ImageInfo, RuntimeError> {
        let image = self.image_record(reference).await?;
        self.describe(image).await
    }

    async fn images(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        let images = bounded(
            "list images",
            &self.namespace,
            CALL_TIMEOUT,
            self.client.images().list(self.req(ListImagesRequest { filters: vec![] })),
        )
        .await?
        .images;
        let mut out = Vec::with_capacity(images.len());
        for image in images {
            let name = image.name.clone();
            match self.describe(image).await {
                Ok(info) => out.push(info),
                Err(e) => tracing::warn!(image = %name, error = %e, "cannot describe image"),
            }
        }
        Ok(out)
    }

    async fn create(&self, request: CreateContainer) -> Result<(), RuntimeError> {
        let id = request.id.clone();
        let key = request.rootfs.clone().unwrap_or_else(|| id.clone());
        let container = Container {
            id: id.clone(),
            labels: request.labels.into_iter().collect(),
            image: request.image.name.clone(),
            runtime: Some(Runtime {
                name: RUNC.to_owned(),
                options: request.systemd_cgroup.then(|| Any {
                    type_url: RUNC_OPTIONS_TYPE.to_owned(),
                    value: RUNC_OPTIONS_SYSTEMD_CGROUP.to_vec(),
                }),
            }),
            spec: Some(Any { type_url: SPEC_TYPE.to_owned(), value: request.spec }),
            snapshotter: SNAPSHOTTER.to_owned(),
            snapshot_key: key.clone(),
            ..Default::default()
        };
        // The container record first: it references the snapshot, which keeps the snapshot
        // from the garbage collector from the moment it exists.
        bounded(
            "create container",
            &id,
            CALL_TIMEOUT,
            self.client.containers().create(self.req(CreateContainerRequest { container: Some(container) })),
        )
        .await?;
        self.snapshot_keys.lock().expect("snapshot keys lock").insert(id.clone(), key.clone());
        if request.rootfs.is_some() && self.snapshot_exists(&key).await? {
            return Ok(());
        }
        let mut prepared = self.prepare_snapshot(&key, &request.image.chain_id, HashMap::new()).await;
        if matches!(&prepared, Err(RuntimeError::AlreadyExists { .. })) {
            // A rootfs left by a container that is gone: this container starts afresh.
            self.remove_snapshot(&key).await;
            prepared = self.prepare_snapshot(&key, &request.image.chain_id, HashMap::new()).await;
        }
        if let Err(e) = prepared {
            let _ = self.remove(&id).await;
            return Err(e);
        }
        Ok(())
    }

    async fn start(&self, id: &str, logs: &LogSink) -> Result<u32, RuntimeError> {
        let key = self.snapshot_key(id).await?;
        let mounts: Vec<Mount> = bounded(
            "rootfs mounts",
            id,
            CALL_TIMEOUT,
            self.client.snapshots().mounts(self.req(MountsRequest { snapshotter: SNAPSHOTTER.to_owned(), key })),
        )
        .await?
        .mounts;
        let uri = log_uri(logs);
        let create = CreateTaskRequest {
            container_id: id.to_owned(),
            rootfs: mounts,
            stdout: uri.clone(),
            stderr: uri,
            ..Default::default()
        };
        match bounded("create task", id, CREATE_TASK_TIMEOUT, self.client.tasks().create(self.req(create.clone())))
            .await
        {
            Ok(_) => {}
            Err(RuntimeError::AlreadyExists { .. }) if self.task(id).await?.is_none() => {
                self.clear_leftover_task(id, None).await?;
                bounded("create task", id, CREATE_TASK_TIMEOUT, self.client.tasks().create(self.req(create))).await?;
            }
            Err(RuntimeError::LeftoverBundle { bundle, .. }) if self.task(id).await?.is_none() => {
                self.clear_leftover_task(id, Some(&bundle)).await?;
                bounded("create task", id, CREATE_TASK_TIMEOUT, self.client.tasks().create(self.req(create))).await?;
            }
            Err(e) => return Err(e),
        }
        let start = StartRequest { container_id: id.to_owned(), exec_id: String::new() };
        let started = bounded("start task", id, CALL_TIMEOUT, self.client.tasks().start(self.req(start))).await?;
        Ok(started.pid)
    }

    async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
        let request = KillRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
            signal: u32::try_from(signal).unwrap_or(9),
            all,
        };
        bounded("kill task", id, CALL_TIMEOUT, self.client.tasks().kill(self.req(request))).await?;
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        self.wait_process(id, "").await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let key = match self.snapshot_key(id).await {
            Ok(key) => key,
            Err(RuntimeError::NotFound { .. }) => id.to_owned(),
            Err(e) => return Err(e),
        };
        if let Some(process) = self.task(id).await? {
            if matches!(
                task_state(&process),
                TaskState::Running { .. } | TaskState::Paused { .. } | TaskState::Created { .. }
            ) {
                match self.kill(id, libc::SIGKILL, true).await {
                    Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
                let _ = tokio::time::timeout(Duration::from_secs(10), self.wait_process(id, "")).await;
            }
            let request = DeleteTaskRequest { container_id: id.to_owned() };
            match bounded("delete task", id, CALL_TIMEOUT, self.client.tasks().delete(self.req(request))).await {
                Ok(_) | Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let request = DeleteContainerRequest { id: id.to_owned() };
        match bounded("delete container", id, CALL_TIMEOUT, self.client.containers().delete(self.req(request))).await {
            Ok(_) | Err(RuntimeError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.remove_snapshot(&key).await;
        self.snapshot_keys.lock().expect("snapshot keys lock").remove(id);
        Ok(())
    }

    async fn prepare_rootfs(&self, key: &str, image: &ImageInfo) -> Result<(), RuntimeError> {
        if self.snapshot_exists(key).await? {
            self.remove_snapshot(key).await;
        }
        // Nothing references it until its container exists: a GC root until then.
        let root = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        self.prepare_snapshot(key, &image.chain_id, HashMap::from([("containerd.io/gc.root".to_owned(), root)])).await
    }

    async fn discard_rootfs(&self, key: &str) -> Result<(), RuntimeError> {
        let request = RemoveSnapshotRequest { snapshotter: SNAPSHOTTER.to_owned(), key: key.to_owned() };
        match bounded("remove snapshot", key, CALL_TIMEOUT, self.client.snapshots().remove(self.req(request))).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn tag_image(&self, source: &str, name: &str) -> Result<ImageInfo, RuntimeError> {
        let found = self.image_record(source).await?;
        let record = Image {
            name: name.to_owned(),
            labels: HashMap::from([(super::labels::PINNED.to_owned(), "true".to_owned())]),
            target: found.target,
            created_at: None,
            updated_at: None,
        };
        self.put_image(record.clone()).await?;
        self.describe(record).await
    }

    async fn remove_image(&self, name: &str) -> Result<(), RuntimeError> {
        let request = DeleteImageRequest { name: name.to_owned(), sync: false, target: None };
        match bounded("delete image", name, CALL_TIMEOUT, self.client.images().delete(self.req(request))).await {
            Ok(_) | Err(RuntimeError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn exec(&self, id: &str, args: Vec<String>, timeout: Duration) -> Result<u32, RuntimeError> {
        let container = bounded(
            "get container",
            id,
            CALL_TIMEOUT,
            self.client.containers().get(self.req(GetContainerRequest { id: id.to_owned() })),
        )
        .await?
        .container
        .ok_or_else(|| RuntimeError::NotFound { what: format!("container {id}") })?;
        let spec: Value = container.spec.and_then(|any| serde_json::from_slice(&any.value).ok()).ok_or_else(|| {
            RuntimeError::Call { op: "exec", id: id.to_owned(), message: "container has no spec".into() }
        })?;
        let mut process = spec["process"].clone();
        process["args"] = Value::from(args);
        process["terminal"] = Value::from(false);
        let exec_id = format!("soniclet-exec-{}", self.exec_counter.fetch_add(1, Ordering::Relaxed));
        let request = ExecProcessRequest {
            container_id: id.to_owned(),
            spec: Some(Any {
                type_url: PROCESS_TYPE.to_owned(),
                value: serde_json::to_vec(&process).unwrap_or_default(),
            }),
            exec_id: exec_id.clone(),
            ..Default::default()
        };
        bounded("exec", id, CALL_TIMEOUT, self.client.tasks().exec(self.req(request))).await?;
        let cleanup = || async {
            let request = DeleteProcessRequest { container_id: id.to_owned(), exec_id: exec_id.clone() };
            let _ =
                bounded("delete exec", id, CALL_TIMEOUT, self.client.tasks().delete_process(self.req(request))).await;
        };
        let start = StartRequest { container_id: id.to_owned(), exec_id: exec_id.clone() };
        if let Err(e) = bounded("start exec", id, CALL_TIMEOUT, self.client.tasks().start(self.req(start))).await {
            cleanup().await;
            return Err(e);
        }
        let result = tokio::time::timeout(timeout, self.wait_process(id, &exec_id)).await;
        if result.is_err() {
            let kill = KillRequest { container_id: id.to_owned(), exec_id: exec_id.clone(), signal: 9, all: false };
            let _ = bounded("kill exec", id, CALL_TIMEOUT, self.client.tasks().kill(self.req(kill))).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), self.wait_process(id, &exec_id)).await;
        }
        cleanup().await;
        match result {
            Ok(status) => Ok(status?.code),
            Err(_) => Err(RuntimeError::Timeout { op: "exec", id: id.to_owned(), timeout }),
        }
    }

    async fn pids(&self, id: &str) -> Result<Vec<u32>, RuntimeError> {
        let request = ListPidsRequest { container_id: id.to_owned() };
        let resp = bounded("list pids", id, CALL_TIMEOUT, self.client.tasks().list_pids(self.req(request))).await?;
        Ok(resp.processes.into_iter().map(|p| p.pid).collect())
    }

    async fn import(
        &self,
        archive: &StagedArchive,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Vec<ImageInfo>, RuntimeError> {
        // Everything written under this lease survives garbage collection until the image
        // record refers to it; the expiry label cleans up after a crash mid-import.
        let lease_id = format!("import-{}-{}", std::process::id(), self.exec_counter.fetch_add(1, Ordering::Relaxed));
        let expire = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600)).to_string();
        let create = CreateLeaseRequest {
            id: lease_id.clone(),
            labels: HashMap::from([("containerd.io/gc.expire".to_owned(), expire)]),
        };
        bounded("create lease", &lease_id, CALL_TIMEOUT, self.client.leases().create(self.req(create))).await?;
        let mut imported = Vec::new();
        let mut result = Ok(());
        for image in &archive.images {
            match self.import_image(&lease_id, image, &archive.source, progress).await {
                Ok(info) => imported.push(info),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let delete = DeleteLeaseRequest { id: lease_id.clone(), sync: false };
        if let Err(e) =
            bounded("delete lease", &lease_id, CALL_TIMEOUT, self.client.leases().delete(self.req(delete))).await
        {
            tracing::warn!(lease = %lease_id, error = %e, "cannot delete import lease; it expires within an hour");
        }
        result.map(|()| imported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leftover_bundle_is_read_from_containerds_error_and_nothing_else() {
        let message =
            "failed to start shim: mkdir /run/containerd/io.containerd.runtime.v2.task/sonic/lldp: file exists";
        assert_eq!(
            leftover_bundle(message, "lldp"),
            Some(PathBuf::from("/run/containerd/io.containerd.runtime.v2.task/sonic/lldp"))
        );
        let refused = [
            // Another container's bundle, or not a runtime bundle at all.
            (message, "snmp"),
            ("failed to start shim: mkdir /var/lib/foo/sonic/lldp: file exists", "lldp"),
            ("failed to start shim: mkdir relative/io.containerd.runtime.v2.task/sonic/lldp: file exists", "lldp"),
            ("mkdir /run/containerd/io.containerd.runtime.v2.task/sonic/../lldp: file exists", "lldp"),
            ("failed to start shim: mkdir /run/containerd/io.containerd.runtime.v2.task/sonic/lldp: permission denied", "lldp"),
        ];
        for (message, id) in refused {
            assert_eq!(leftover_bundle(message, id), None, "{message}");
        }
        let status = Status::unknown(message);
        assert!(matches!(call_err("create task", "lldp", status), RuntimeError::LeftoverBundle { .. }));
    }
}
