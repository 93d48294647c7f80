//! The async driver around the core: it owns the ports, the clock and the tasks, feeds the
//! core one event at a time, and carries out what the core answers. It decides nothing.
//!
//! - Operations (start, stop, watches, probes, staging, preparing, imports) run as tracked
//!   tasks and come back as events.
//! - State and history are written off the loop by one disk task, in order; a persist is
//!   acknowledged with [`Event::Persisted`], which releases what the core held behind it.
//! - Requests get an id; their answers go back on the requester's channel. A requester that
//!   goes away before the answer tells the core ([`Event::RequestGone`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::core::Core;
use super::event::{
    ArchiveHandle, Command, Effect, Event, Failure, Notice, Observed, Progress, RequestId, Response, StagedImage,
};
use super::ops;
use super::ports::{DbPort, Health, Units};
use super::types::{CommandError, ErrorKind, Now, ServiceView};
use crate::manifest::{ManifestSet, ServiceName};
use crate::runtime::archive::StagedArchive;
use crate::runtime::spec::HostSettings;
use crate::runtime::{ContainerRuntime, ExitStatus, LogSink, RuntimeError};
use crate::state::history;
use crate::state::store::{PersistedState, StateStore};

/// How long systemd has to accept a unit start.
const UNIT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One item of an answer stream: progress lines, then the answer.
#[derive(Debug, Clone)]
pub enum Answer {
    Progress(Progress),
    Final(Result<Response, CommandError>),
}

enum Input {
    Event(Event),
    Request { id: RequestId, command: Command, answers: mpsc::UnboundedSender<Answer> },
}

/// A handle to send events and requests into the loop, and to follow status changes.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<InputBox>,
    ids: Arc<AtomicU64>,
    statuses: broadcast::Sender<ServiceView>,
    notices: broadcast::Sender<Notice>,
    /// The last SYSTEM_READY, for whoever starts listening late.
    system_ready: Arc<watch::Sender<Option<SystemReady>>>,
}

/// STATE_DB `SYSTEM_READY|SYSTEM_STATE` as the core last reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemReady {
    /// `UP`, `DOWN` or `FAILED`.
    pub status: String,
    pub reason: String,
}

/// [`Input`] behind a box-free debug wrapper, so the handle can derive `Debug`.
struct InputBox(Input);

impl std::fmt::Debug for InputBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Input")
    }
}

fn shutting_down() -> CommandError {
    CommandError::new(ErrorKind::Unavailable, "the daemon is shutting down")
}

/// The answers of one request; dropping it before the answer tells the core.
#[derive(Debug)]
pub struct Answers {
    id: RequestId,
    rx: mpsc::UnboundedReceiver<Answer>,
    tx: mpsc::UnboundedSender<InputBox>,
    done: bool,
}

impl Answers {
    /// The next progress item, or the answer (then `None` after it).
    pub async fn next(&mut self) -> Option<Answer> {
        if self.done {
            return None;
        }
        let answer = self.rx.recv().await;
        match &answer {
            Some(Answer::Final(_)) | None => self.done = true,
            Some(Answer::Progress(_)) => {}
        }
        answer
    }

    /// Skips progress and waits for the answer.
    pub async fn answer(mut self) -> Result<Response, CommandError> {
        while let Some(item) = self.next().await {
            if let Answer::Final(result) = item {
                return result;
            }
        }
        Err(shutting_down())
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.tx.send(InputBox(Input::Event(Event::RequestGone(self.id))));
        }
    }
}

/// The events sent through a [`Handle`] with no loop behind it, for an adapter's own tests.
#[cfg(test)]
pub(crate) struct HandleProbe(mpsc::UnboundedReceiver<InputBox>);

#[cfg(test)]
impl HandleProbe {
    pub(crate) fn new() -> (Handle, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = Handle::new(tx, 0, 1);
        (handle, Self(rx))
    }

    /// The next event sent, skipping requests.
    pub(crate) async fn next_event(&mut self) -> Option<Event> {
        loop {
            match self.0.recv().await?.0 {
                Input::Event(event) => return Some(event),
                Input::Request { .. } => {}
            }
        }
    }
}

impl Handle {
    fn new(tx: mpsc::UnboundedSender<InputBox>, first_id: u64, backlog: usize) -> Self {
        Self {
            tx,
            ids: Arc::new(AtomicU64::new(first_id)),
            statuses: broadcast::channel(backlog).0,
            notices: broadcast::channel(backlog).0,
            system_ready: Arc::new(watch::channel(None).0),
        }
    }

    /// Sends an event (an adapter's news); false once the loop is gone.
    pub fn send(&self, event: Event) -> bool {
        self.tx.send(InputBox(Input::Event(event))).is_ok()
    }

    /// Sends a command; its progress and answer come on the returned stream.
    pub fn stream(&self, command: Command) -> Answers {
        let id = RequestId(self.ids.fetch_add(1, Ordering::Relaxed));
        let (answers, rx) = mpsc::unbounded_channel();
        let sent = self.tx.send(InputBox(Input::Request { id, command, answers })).is_ok();
        Answers { id, rx, tx: self.tx.clone(), done: !sent }
    }

    /// Sends a command and awaits its answer.
    pub async fn request(&self, command: Command) -> Result<Response, CommandError> {
        self.stream(command).answer().await
    }

    /// Every change of a service's view, as it happens.
    pub fn statuses(&self) -> broadcast::Receiver<ServiceView> {
        self.statuses.subscribe()
    }

    /// Every [`Notice`], as the core emits it.
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// SYSTEM_READY as last reported (`None` before the first report).
    pub fn system_ready(&self) -> watch::Receiver<Option<SystemReady>> {
        self.system_ready.subscribe()
    }
}

/// Fixed inputs of the driver.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub host: HostSettings,
    pub logs: LogSink,
    /// Where state.json and history.json live.
    pub state_dir: PathBuf,
    /// Where archives are staged while they are verified.
    pub staging_dir: PathBuf,
    /// The switch's OS images; `None` where it has none (a virtual switch under nspawn).
    pub os: Option<crate::os::images::OsSetup>,
}

/// The ports the driver works through.
#[derive(Debug)]
pub struct Ports<R, H, U> {
    pub runtime: Arc<R>,
    pub health: Arc<H>,
    /// systemd, when it is the init.
    pub units: Option<Arc<U>>,
    /// The database link, when the set has a database service.
    pub db: Option<DbPort>,
}

/// What the disk task does, in order.
enum DiskJob {
    Persist {
        seq: u64,
        state: Box<PersistedState>,
    },
    History(history::HistoryEntry),
    /// Reads the history, then collects images (off the disk task).
    Collect {
        keep: BTreeSet<String>,
        unpinned: Vec<String>,
    },
}

pub struct Driver<R, H, U> {
    core: Core,
    manifests: Arc<ManifestSet>,
    ports: Ports<R, H, U>,
    config: DriverConfig,
    rx: mpsc::UnboundedReceiver<InputBox>,
    handle: Handle,
    requests: HashMap<RequestId, mpsc::UnboundedSender<Answer>>,
    watches: BTreeMap<ServiceName, CancellationToken>,
    /// Archives staged for a change, until it imports (or drops) them.
    staged: Arc<std::sync::Mutex<BTreeMap<ArchiveHandle, StagedArchive>>>,
    next_archive: u64,
    disk: mpsc::UnboundedSender<DiskJob>,
    wake: Option<Instant>,
    /// One import or staging at a time: they share the staging area and containerd's locks.
    import_lock: Arc<tokio::sync::Mutex<()>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl<R, H, U> std::fmt::Debug for Driver<R, H, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("core", &self.core).finish_non_exhaustive()
    }
}

impl<R: ContainerRuntime, H: Health, U: Units> Driver<R, H, U> {
    /// A driver around `core`; its disk task writes to `store`.
    pub fn new(
        core: Core,
        manifests: Arc<ManifestSet>,
        ports: Ports<R, H, U>,
        config: DriverConfig,
        store: StateStore,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = Handle::new(tx, 1, 256);
        let (disk, jobs) = mpsc::unbounded_channel();
        tracker.spawn(disk_task(store, jobs, handle.clone(), Arc::clone(&ports.runtime), tracker.clone()));
        Self {
            core,
            manifests,
            ports,
            config,
            rx,
            handle,
            requests: HashMap::new(),
            watches: BTreeMap::new(),
            staged: Arc::default(),
            next_archive: 1,
            disk,
            wake: None,
            import_lock: Arc::new(tokio::sync::Mutex::new(())),
            tracker,
            shutdown,
        }
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Shares the lock that keeps imports (and boot-time preloading) one at a time.
    pub fn import_lock(&self) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(&self.import_lock)
    }

    /// Adopts the containers that run, and waits until what adoption wrote is on disk:
    /// after this, the daemon may say it is ready.
    pub async fn adopt(&mut self) -> Result<(), RuntimeError> {
        let containers = self.ports.runtime.containers().await?;
        let mut observed = Vec::new();
        for container in containers {
            let reference = container.label(crate::runtime::labels::SERVICE).and_then(|s| self.core.image_reference(s));
            let current_image = match reference {
                Some(reference) => self.ports.runtime.image(&reference).await.ok().map(|i| i.digest),
                None => None,
            };
            observed.push(Observed { container, current_image });
        }
        let effects = self.core.adopt(observed, Now::read());
        self.execute(effects);
        // Until the first persist is acknowledged, nothing the core held has left.
        while self.core.is_holding() {
            let Some(InputBox(input)) = self.rx.recv().await else { break };
            self.feed(input);
        }
        Ok(())
    }

    /// Runs the loop until the core says it is done or shutdown (unless it is draining).
    pub async fn run(mut self) {
        // The first plan: what adoption left to start, stop or carry on.
        let mut done = self.feed(Input::Event(Event::Wake));
        while !done {
            let wake = self.wake;
            let input = tokio::select! {
                input = self.rx.recv() => input,
                () = async { match wake { Some(at) => tokio::time::sleep_until(at.into()).await, None => std::future::pending().await } } => {
                    self.wake = None;
                    Some(InputBox(Input::Event(Event::Wake)))
                }
                () = self.shutdown.cancelled(), if !self.core.is_draining() => break,
            };
            let Some(InputBox(input)) = input else { break };
            done = self.feed(input);
        }
        self.shutdown.cancel();
        for token in self.watches.values() {
            token.cancel();
        }
    }

    /// Hands one input to the core and carries out its effects; true once the core is done.
    fn feed(&mut self, input: Input) -> bool {
        let event = match input {
            Input::Event(event) => event,
            Input::Request { id, command, answers } => {
                self.requests.insert(id, answers);
                Event::Command { id, command }
            }
        };
        let effects = self.core.handle(event, Now::read());
        self.execute(effects)
    }

    fn execute(&mut self, effects: Vec<Effect>) -> bool {
        let mut exit = false;
        for effect in effects {
            exit |= self.carry_out(effect);
        }
        exit
    }

    fn service(&self, name: &ServiceName) -> Option<crate::manifest::Service> {
        self.manifests.get(name.as_str()).cloned()
    }

    /// A progress sink for the request `to`, if it still listens.
    fn progress(&self, to: Option<RequestId>) -> impl Fn(String) + Send + Sync + 'static {
        let sender = to.and_then(|id| self.requests.get(&id).cloned());
        move |line: String| {
            if let Some(sender) = &sender {
                let _ = sender.send(Answer::Progress(Progress::Line(line)));
            }
        }
    }

    fn carry_out(&mut self, effect: Effect) -> bool {
        match effect {
            Effect::Start { service, generation, from } => {
                let Some(manifest) = self.service(&service) else { return false };
                let (runtime, handle) = (Arc::clone(&self.ports.runtime), self.handle.clone());
                let (host, logs) = (self.config.host.clone(), self.config.logs.clone());
                self.tracker.spawn(async move {
                    let result = ops::start(&*runtime, &host, &logs, &manifest, generation, from).await;
                    handle.send(Event::Started { service, generation, result });
                });
            }
            Effect::Stop { service, generation, how } => {
                let (runtime, health, handle) =
                    (Arc::clone(&self.ports.runtime), Arc::clone(&self.ports.health), self.handle.clone());
                self.tracker.spawn(async move {
                    let result = ops::stop(&*runtime, &*health, service.as_str(), how).await;
                    handle.send(Event::Stopped { service, generation, result });
                });
            }
            Effect::Watch { service, generation } => self.watch(service, generation),
            Effect::WatchCritical { service, generation } => self.watch_critical(service, generation),
            Effect::Unwatch { service } => {
                if let Some(token) = self.watches.remove(&service) {
                    token.cancel();
                }
            }
            Effect::Remove { container } => {
                let runtime = Arc::clone(&self.ports.runtime);
                self.tracker.spawn(async move {
                    if let Err(e) = runtime.remove(&container).await {
                        tracing::warn!(container = %container, error = %e, "cannot remove orphan container");
                    }
                });
            }
            Effect::Stage { service, source, wanted, digest, progress } => {
                let say = self.progress(progress);
                let (runtime, handle, lock) =
                    (Arc::clone(&self.ports.runtime), self.handle.clone(), Arc::clone(&self.import_lock));
                let (staging, staged) = (self.config.staging_dir.clone(), Arc::clone(&self.staged));
                let archive_handle = ArchiveHandle(self.next_archive);
                self.next_archive += 1;
                self.tracker.spawn(async move {
                    let _guard = lock.lock().await;
                    let result = ops::stage(&*runtime, &staging, &source, &wanted, digest.as_deref(), &say).await;
                    let result = result.map(|(image, archive)| match archive {
                        Some(archive) => {
                            lock_staged(&staged).insert(archive_handle, archive);
                            StagedImage { archive: Some(archive_handle), ..image }
                        }
                        None => image,
                    });
                    handle.send(Event::Staged { service, result });
                });
            }
            Effect::DiscardStaged(handle) => {
                lock_staged(&self.staged).remove(&handle);
            }
            Effect::Prepare { service, journal, source, current, archive, progress } => {
                let Some(manifest) = self.service(&service) else { return false };
                let archive = archive.and_then(|h| lock_staged(&self.staged).remove(&h));
                let say = self.progress(progress);
                let (runtime, handle, lock) =
                    (Arc::clone(&self.ports.runtime), self.handle.clone(), Arc::clone(&self.import_lock));
                let host = self.config.host.clone();
                self.tracker.spawn(async move {
                    let _guard = lock.lock().await;
                    let result =
                        ops::prepare(&*runtime, &host, &manifest, &journal, &current, &source, archive, &say).await;
                    if result.is_err() {
                        let _ = runtime.discard_rootfs(&journal.rootfs).await;
                    }
                    handle.send(Event::ChangePrepared { service, result });
                });
            }
            Effect::DiscardRootfs { key } => {
                let runtime = Arc::clone(&self.ports.runtime);
                self.tracker.spawn(async move {
                    let _ = runtime.discard_rootfs(&key).await;
                });
            }
            Effect::CollectImages { keep, unpinned } => {
                let _ = self.disk.send(DiskJob::Collect { keep, unpinned });
            }
            Effect::Import { id, paths } => {
                let sender = self.requests.get(&id).cloned();
                let say = self.progress(Some(id));
                let imported = move |image: crate::runtime::ImageInfo| {
                    if let Some(sender) = &sender {
                        let _ = sender.send(Answer::Progress(Progress::Imported(image)));
                    }
                };
                let (runtime, handle, lock) =
                    (Arc::clone(&self.ports.runtime), self.handle.clone(), Arc::clone(&self.import_lock));
                let staging = self.config.staging_dir.clone();
                self.tracker.spawn(async move {
                    let _guard = lock.lock().await;
                    let result = ops::import(&*runtime, &staging, &paths, &say, &imported).await;
                    handle.send(Event::Imported { id, result });
                });
            }
            Effect::Os { id, request } => {
                let say = self.progress(Some(id));
                let (setup, handle) = (self.config.os.clone(), self.handle.clone());
                self.tracker.spawn(async move {
                    let work = {
                        let request = request.clone();
                        tokio::task::spawn_blocking(move || match &setup {
                            Some(setup) => ops::os(setup, &request, &say),
                            None => Err(CommandError::new(
                                ErrorKind::NotFound,
                                "this switch has no OS images: it was not installed from an image (a virtual switch under nspawn has none)",
                            )),
                        })
                    };
                    let result = work.await.unwrap_or_else(|e| Err(CommandError::new(ErrorKind::Internal, e.to_string())));
                    handle.send(Event::OsDone { id, request, result });
                });
            }
            Effect::CommitImage(image) => {
                let (setup, handle) = (self.config.os.clone(), self.handle.clone());
                self.tracker.spawn(async move {
                    let Some(root) = setup.map(|s| s.host.root) else { return };
                    let commit = {
                        let image = image.clone();
                        tokio::task::spawn_blocking(move || crate::os::trial::commit(&root, &image))
                    };
                    let result = match commit.await {
                        Ok(result) => result.map_err(|e| Failure::of(&e)),
                        Err(e) => Err(Failure(e.to_string())),
                    };
                    handle.send(Event::ImageCommitted { image, result });
                });
            }
            Effect::FailTrial { image, reason } => {
                let (setup, units) = (self.config.os.clone(), self.ports.units.clone());
                self.tracker.spawn(async move {
                    if let Some(root) = setup.map(|s| s.host.root) {
                        let record = tokio::task::spawn_blocking(move || crate::os::trial::fail(&root, &image, &reason));
                        if let Ok(Err(e)) = record.await {
                            tracing::error!(error = %crate::error::chain(&e), "cannot record the failed trial; rebooting anyway");
                        }
                    }
                    reboot(units.as_deref(), "the image on trial failed").await;
                });
            }
            Effect::Reboot { reason } => {
                let units = self.ports.units.clone();
                self.tracker.spawn(async move { reboot(units.as_deref(), &reason).await });
            }
            Effect::Persist { seq, state } => {
                let _ = self.disk.send(DiskJob::Persist { seq, state: Box::new(state) });
            }
            Effect::AppendHistory(entry) => {
                let _ = self.disk.send(DiskJob::History(entry));
            }
            Effect::Db(request) => {
                if let Some(db) = &self.ports.db {
                    let _ = db.requests.send(request);
                }
            }
            Effect::DatabaseReady(ready) => {
                if let Some(db) = &self.ports.db {
                    db.database_ready.send_replace(ready);
                }
            }
            Effect::StartUnit(service) => {
                let Some(units) = self.ports.units.clone() else { return false };
                self.tracker.spawn(async move {
                    let unit = crate::systemd::units::unit_name(service.as_str());
                    match tokio::time::timeout(UNIT_CALL_TIMEOUT, units.start_unit(&unit)).await {
                        Ok(Ok(())) => tracing::debug!(unit = %unit, "unit started to mirror the service"),
                        Ok(Err(e)) => tracing::info!(unit = %unit, error = %e, "cannot start the unit"),
                        Err(_) => tracing::warn!(unit = %unit, "systemd did not answer a unit start in time"),
                    }
                });
            }
            Effect::Status(view) => {
                let _ = self.handle.statuses.send(view);
            }
            Effect::Notice(notice) => {
                if let Notice::SystemReady { status, reason } = &notice {
                    let now = SystemReady { status: status.clone(), reason: reason.clone() };
                    self.handle.system_ready.send_replace(Some(now));
                }
                let _ = self.handle.notices.send(notice);
            }
            Effect::Progress { to, item } => {
                if let Some(sender) = self.requests.get(&to) {
                    let _ = sender.send(Answer::Progress(item));
                }
            }
            Effect::Reply { to, result } => {
                if let Some(sender) = self.requests.remove(&to) {
                    let _ = sender.send(Answer::Final(result));
                }
            }
            Effect::WakeAt(at) => self.wake = Some(at),
            Effect::Exit => return true,
        }
        false
    }

    /// The task's exit watcher and readiness probe, replacing the service's previous watch.
    fn watch(&mut self, service: ServiceName, generation: u64) {
        let Some(manifest) = self.service(&service) else { return };
        if let Some(old) = self.watches.remove(&service) {
            old.cancel();
        }
        let token = self.shutdown.child_token();
        self.watches.insert(service.clone(), token.clone());
        let (runtime, handle) = (Arc::clone(&self.ports.runtime), self.handle.clone());
        let (watched, wait_token) = (service.clone(), token.clone());
        self.tracker.spawn(async move {
            loop {
                let outcome = tokio::select! {
                    () = wait_token.cancelled() => return,
                    r = runtime.wait(watched.as_str()) => r,
                };
                match outcome {
                    Ok(status) => {
                        handle.send(Event::Exited { service: watched, generation, status });
                        return;
                    }
                    Err(RuntimeError::NotFound { .. }) => {
                        let status = ExitStatus { code: 255, at: SystemTime::now() };
                        handle.send(Event::Exited { service: watched, generation, status });
                        return;
                    }
                    Err(e) => {
                        // containerd restarting: tasks survive in their shims; wait again.
                        tracing::warn!(service = %watched, error = %e, "lost the task wait; retrying");
                        tokio::select! {
                            () = wait_token.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        });
        let (health, handle) = (Arc::clone(&self.ports.health), self.handle.clone());
        self.tracker.spawn(async move {
            let result = crate::health::probe_until_ready(&*health, &manifest, &token).await;
            if !token.is_cancelled() {
                handle.send(Event::Probed { service, generation, result: result.map_err(|e| Failure(e.to_string())) });
            }
        });
    }

    /// Watches the critical processes of the ready task, under the service's watch.
    fn watch_critical(&mut self, service: ServiceName, generation: u64) {
        let Some(manifest) = self.service(&service) else { return };
        let Some(token) = self.watches.get(&service).cloned() else { return };
        let (health, handle) = (Arc::clone(&self.ports.health), self.handle.clone());
        self.tracker.spawn(async move {
            let process = tokio::select! {
                () = token.cancelled() => return,
                p = health.critical_exit(&manifest, service.as_str()) => p,
            };
            handle.send(Event::CriticalExited { service, generation, process });
        });
    }
}

fn lock_staged(
    staged: &std::sync::Mutex<BTreeMap<ArchiveHandle, StagedArchive>>,
) -> std::sync::MutexGuard<'_, BTreeMap<ArchiveHandle, StagedArchive>> {
    // A panic while holding this lock loses no invariant: the map only holds files.
    staged.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes state and history in order, off the loop, and acknowledges each persist. The core
/// hands out one persist at a time (the next waits behind the barrier of this one), so
/// there is never a queue of them to merge.
async fn disk_task<R: ContainerRuntime>(
    store: StateStore,
    mut jobs: mpsc::UnboundedReceiver<DiskJob>,
    handle: Handle,
    runtime: Arc<R>,
    tracker: TaskTracker,
) {
    let store = Arc::new(store);
    while let Some(job) = jobs.recv().await {
        match job {
            DiskJob::Persist { seq, state } => {
                let result = write_state(&store, *state).await;
                handle.send(Event::Persisted { seq, result });
            }
            DiskJob::History(entry) => {
                let dir = store.dir().to_owned();
                match tokio::task::spawn_blocking(move || history::append(&dir, entry)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot record the image change in the history"),
                    Err(e) => tracing::error!(error = %e, "the history writer stopped"),
                }
            }
            DiskJob::Collect { keep, unpinned } => {
                let dir = store.dir().to_owned();
                let entries = tokio::task::spawn_blocking(move || history::load(&dir)).await;
                let digests: BTreeSet<String> = match entries {
                    Ok(Ok(entries)) => entries.into_iter().flat_map(|e| [e.from.digest, e.to.digest]).collect(),
                    _ => BTreeSet::new(),
                };
                let runtime = Arc::clone(&runtime);
                tracker.spawn(async move { ops::collect_images(&*runtime, digests, keep, &unpinned).await });
            }
        }
    }
}

async fn write_state(store: &Arc<StateStore>, state: PersistedState) -> Result<(), Failure> {
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || store.write(&state)).await {
        Ok(result) => result.map_err(|e| Failure::of(&e)),
        Err(e) => Err(Failure(format!("the state writer stopped: {e}"))),
    }
}

/// Reboots through systemd; without it (a test's twin-less world), says it cannot.
async fn reboot<U: Units>(units: Option<&U>, reason: &str) {
    let Some(units) = units else {
        tracing::error!(reason, "a reboot is due, but systemd is not the init here: reboot the switch by hand");
        return;
    };
    tracing::warn!(reason, "rebooting the switch");
    match tokio::time::timeout(UNIT_CALL_TIMEOUT, units.reboot()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "systemd refused the reboot"),
        Err(_) => tracing::error!("systemd did not answer the reboot in time"),
    }
}
