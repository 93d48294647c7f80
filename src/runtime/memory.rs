//! An in-memory container runtime: the twin of `containerd` for tests that run the daemon
//! without root (the sim tier). Containers and tasks are records; a task runs until a test
//! crashes it or the daemon stops it. Images come from verified archives, as with the real
//! adapter, or from [`MemoryRuntime::add_image`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::archive::StagedArchive;
use super::{
    ContainerInfo, ContainerRuntime, CreateContainer, ExitStatus, ImageConfig, ImageInfo, LogSink, RuntimeError,
    TaskState,
};

#[derive(Debug)]
struct Container {
    image: String,
    digest: String,
    labels: BTreeMap<String, String>,
    task: TaskState,
    /// Set once the task ends: what `wait` returns.
    exit: watch::Sender<Option<ExitStatus>>,
    rootfs: String,
}

#[derive(Debug, Default)]
struct World {
    images: BTreeMap<String, ImageInfo>,
    containers: BTreeMap<String, Container>,
    rootfs: BTreeSet<String>,
    next_pid: u32,
    /// Starts that fail, by container ID, once each.
    failing_starts: BTreeMap<String, String>,
    /// How many tasks each container ID has started.
    starts: BTreeMap<String, u32>,
}

/// The in-memory runtime. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct MemoryRuntime {
    world: Mutex<World>,
}

impl MemoryRuntime {
    pub fn new() -> Self {
        Self { world: Mutex::new(World { next_pid: 1000, ..World::default() }) }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        // A test that panicked while holding the lock left nothing half-written.
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores an image under `name` with `digest`.
    pub fn add_image(&self, name: &str, digest: &str) {
        let image = ImageInfo {
            name: name.to_owned(),
            digest: digest.to_owned(),
            size: 1,
            architecture: super::host_architecture().to_owned(),
            os: "linux".to_owned(),
            // Something to run, as every real image has.
            config: ImageConfig { cmd: vec!["/usr/bin/serve".to_owned()], ..ImageConfig::default() },
            chain_id: format!("chain-{digest}"),
        };
        self.world().images.insert(name.to_owned(), image);
    }

    /// Ends the task of `id` as a crash would (`code` 128 + N for signal N).
    pub fn crash(&self, id: &str, code: u32) -> bool {
        let mut world = self.world();
        let Some(container) = world.containers.get_mut(id) else { return false };
        if !matches!(container.task, TaskState::Running { .. }) {
            return false;
        }
        container.task = TaskState::Stopped { exit_code: code };
        container.exit.send_replace(Some(ExitStatus { code, at: SystemTime::now() }));
        true
    }

    /// The next start of `id` fails with `message`.
    pub fn fail_next_start(&self, id: &str, message: &str) {
        self.world().failing_starts.insert(id.to_owned(), message.to_owned());
    }

    /// The PID of the task of `id`, while it runs.
    pub fn pid(&self, id: &str) -> Option<u32> {
        match self.world().containers.get(id)?.task {
            TaskState::Running { pid } => Some(pid),
            _ => None,
        }
    }

    /// The digest of the image the container of `id` was made from.
    pub fn image_digest(&self, id: &str) -> Option<String> {
        Some(self.world().containers.get(id)?.digest.clone())
    }

    /// How many tasks `id` has started so far.
    pub fn starts(&self, id: &str) -> u32 {
        self.world().starts.get(id).copied().unwrap_or(0)
    }

    /// The IDs of every container.
    pub fn container_ids(&self) -> Vec<String> {
        self.world().containers.keys().cloned().collect()
    }

    fn not_found(what: String) -> RuntimeError {
        RuntimeError::NotFound { what }
    }
}

impl ContainerRuntime for MemoryRuntime {
    async fn containers(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let world = self.world();
        Ok(world
            .containers
            .iter()
            .map(|(id, c)| ContainerInfo {
                id: id.clone(),
                image: c.image.clone(),
                labels: c.labels.clone(),
                task: c.task,
            })
            .collect())
    }

    async fn image(&self, reference: &str) -> Result<ImageInfo, RuntimeError> {
        let world = self.world();
        world.images.get(reference).cloned().ok_or_else(|| Self::not_found(format!("image {reference}")))
    }

    async fn images(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        Ok(self.world().images.values().cloned().collect())
    }

    async fn create(&self, request: CreateContainer) -> Result<(), RuntimeError> {
        let mut world = self.world();
        if world.containers.contains_key(&request.id) {
            return Err(RuntimeError::AlreadyExists { what: format!("container {}", request.id) });
        }
        let rootfs = request.rootfs.unwrap_or_else(|| request.id.clone());
        world.rootfs.insert(rootfs.clone());
        let container = Container {
            digest: request.image.digest,
            image: request.image.name,
            labels: request.labels,
            task: TaskState::Absent,
            exit: watch::channel(None).0,
            rootfs,
        };
        world.containers.insert(request.id, container);
        Ok(())
    }

    async fn start(&self, id: &str, _logs: &LogSink) -> Result<u32, RuntimeError> {
        let mut world = self.world();
        if let Some(message) = world.failing_starts.remove(id) {
            return Err(RuntimeError::Call { op: "start task", id: id.to_owned(), message });
        }
        world.next_pid += 1;
        let pid = world.next_pid;
        *world.starts.entry(id.to_owned()).or_default() += 1;
        let container = world.containers.get_mut(id).ok_or_else(|| Self::not_found(format!("container {id}")))?;
        container.task = TaskState::Running { pid };
        container.exit.send_replace(None);
        Ok(pid)
    }

    async fn kill(&self, id: &str, signal: i32, _all: bool) -> Result<(), RuntimeError> {
        let mut world = self.world();
        let container = world.containers.get_mut(id).ok_or_else(|| Self::not_found(format!("task {id}")))?;
        if !matches!(container.task, TaskState::Running { .. }) {
            return Err(RuntimeError::ProcessFinished { id: id.to_owned() });
        }
        let code = 128 + u32::try_from(signal).unwrap_or(9);
        container.task = TaskState::Stopped { exit_code: code };
        container.exit.send_replace(Some(ExitStatus { code, at: SystemTime::now() }));
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        let mut exit = {
            let world = self.world();
            let container = world.containers.get(id).ok_or_else(|| Self::not_found(format!("task {id}")))?;
            container.exit.subscribe()
        };
        let status = match exit.wait_for(Option::is_some).await {
            Ok(status) => *status,
            // The container was removed while waited for.
            Err(_) => None,
        };
        status.ok_or_else(|| Self::not_found(format!("task {id}")))
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut world = self.world();
        if let Some(container) = world.containers.remove(id) {
            world.rootfs.remove(&container.rootfs);
        }
        Ok(())
    }

    async fn exec(&self, id: &str, _args: Vec<String>, _timeout: Duration) -> Result<u32, RuntimeError> {
        match self.world().containers.get(id).map(|c| c.task) {
            Some(TaskState::Running { .. }) => Ok(0),
            _ => Err(Self::not_found(format!("task {id}"))),
        }
    }

    async fn pids(&self, id: &str) -> Result<Vec<u32>, RuntimeError> {
        match self.world().containers.get(id).map(|c| c.task) {
            Some(TaskState::Running { pid }) => Ok(vec![pid]),
            _ => Err(Self::not_found(format!("task {id}"))),
        }
    }

    async fn prepare_rootfs(&self, key: &str, _image: &ImageInfo) -> Result<(), RuntimeError> {
        self.world().rootfs.insert(key.to_owned());
        Ok(())
    }

    async fn discard_rootfs(&self, key: &str) -> Result<(), RuntimeError> {
        self.world().rootfs.remove(key);
        Ok(())
    }

    async fn tag_image(&self, source: &str, name: &str) -> Result<ImageInfo, RuntimeError> {
        let mut world = self.world();
        let mut image = world.images.get(source).cloned().ok_or_else(|| Self::not_found(format!("image {source}")))?;
        image.name = name.to_owned();
        world.images.insert(name.to_owned(), image.clone());
        Ok(image)
    }

    async fn remove_image(&self, name: &str) -> Result<(), RuntimeError> {
        self.world().images.remove(name);
        Ok(())
    }

    async fn import(
        &self,
        archive: &StagedArchive,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Vec<ImageInfo>, RuntimeError> {
        let mut imported = Vec::new();
        for staged in &archive.images {
            progress(format!("{}: stored in memory", staged.name));
            let image = ImageInfo {
                name: staged.name.clone(),
                digest: staged.manifest.digest.clone(),
                size: staged.total_size(),
                architecture: staged.architecture.clone(),
                os: staged.os.clone(),
                config: staged.image_config.clone(),
                chain_id: staged.chain_ids().last().cloned().unwrap_or_default(),
            };
            self.world().images.insert(image.name.clone(), image.clone());
            imported.push(image);
        }
        Ok(imported)
    }
}
