//! The core's table tests: a deterministic world carries out every effect at once (a
//! container starts, a probe passes, a persist lands on the disk), with a clock that moves
//! only when a test says so. Each test is a script of steps and the effects it must see,
//! through one [`check`].
//!
//! The trace has one line per effect that matters to the story (starts, stops, database
//! requests, replies, unit starts, history), or the kinds a test names; `Step::Show` adds a
//! service's state. Persists, watches and status broadcasts stay out of it unless asked for.

mod adopt;
mod boot;
mod change;
mod commands;
mod crash;
mod durability;
mod features;
mod groups;
mod ownership;
mod reload;
mod trial;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::event::{
    Command, DbRequest, Effect, Event, Failure, ImageSource, Notice, Observed, PodSeen, Prepared, Progress, RequestId,
    Response, StagedImage, StartError, StopHow,
};
use super::types::{BootType, CommandError, ErrorKind, Now, StopMode, WarmFlags};
use super::{Core, CoreConfig, OsBoot};
use crate::db::Fields;
use crate::manifest::{load_sources, ManifestSet, ServiceName};
use crate::runtime::spec::{container_digest, HostSettings};
use crate::runtime::{labels, ContainerInfo, ExitStatus, ImageConfig, ImageInfo, TaskState};
use crate::state::history::HistoryEntry;
use crate::state::store::PersistedState;

/// What a container of an image does once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Behaviour {
    /// Its probe passes at once.
    Ready,
    /// Its probe never passes (the driver's probe gives up at the readiness timeout).
    NeverReady,
    /// Its task exits with this code as soon as it is watched.
    Exits(u32),
    /// Ready, then this critical process exits after the delay.
    LosesCritical(&'static str, u64),
}

#[derive(Debug, Clone)]
struct Image {
    digest: String,
    behaviour: Behaviour,
}

#[derive(Debug, Clone)]
struct Container {
    generation: u64,
    image: String,
    /// The image's digest when the container was made (its label).
    digest: String,
    running: bool,
    pid: u32,
    manifest_digest: String,
}

/// One step of a script.
#[derive(Debug)]
pub(super) enum Step {
    /// The daemon starts on an empty switch: adoption, then the first plan; with a database
    /// service the database link connects once it is ready and loads FEATURE.
    Boot,
    /// APPL_DB `PORT_TABLE:PortInitDone` appears (or goes).
    Ports(bool),
    /// Time passes, with every wake-up and scheduled event in it.
    Advance(u64),
    /// The service's task exits with this code.
    Exit(&'static str, u32),
    /// A critical process of the service exits.
    Critical(&'static str, &'static str),
    /// An operator command.
    Cmd(Command),
    /// CONFIG_DB `FEATURE|<name>`, as another writer sets it.
    Feature(&'static str, &'static [(&'static str, &'static str)]),
    /// The pod watcher's report: every kubelet-run container claiming a feature, as
    /// (service, pod, ready).
    Pods(&'static [(&'static str, &'static str, bool)]),
    /// STATE_DB `WARM_RESTART_ENABLE_TABLE|<key> enable`.
    Warm(&'static str, bool),
    /// STATE_DB `FAST_RESTART_ENABLE_TABLE|system enable`.
    Fast(bool),
    /// STATE_DB `WARM_RESTART_TABLE|<process> state=reconciled`.
    Reconciled(&'static str),
    /// Stores an image under `reference`.
    Image(&'static str, &'static str, Behaviour),
    /// An archive at this path holding an image (name, digest).
    Archive(&'static str, &'static str, &'static str),
    /// The next prepare of an image change fails.
    FailPrepare,
    /// The next start of the service fails in the runtime.
    FailStart(&'static str),
    /// `kill -9` of the daemon and a new one: a new core from what is on disk and the
    /// containers that run.
    Restart,
    /// Everything before this is not checked.
    Mark,
    /// A trace line with the service's state.
    Show(&'static str),
    /// Trace lines for every later effect of these kinds, besides the default ones.
    Trace(&'static [&'static str]),
}

use Step::*;

/// The manifests of `files` (name, body of the `[service]` table and after).
pub(super) fn set(files: &[(&str, &str)]) -> Arc<ManifestSet> {
    let sources =
        files.iter().map(|(name, body)| (PathBuf::from(format!("{name}.toml")), (*body).to_owned())).collect();
    Arc::new(load_sources(sources).unwrap_or_else(|e| panic!("test manifests: {e}")))
}

/// A manifest with `service` lines, image `<name>:1` and a process probe.
pub(super) fn svc(name: &str, service: &str) -> String {
    format!(
        "[service]\n{service}\n[container]\nimage = \"{name}:1\"\n[readiness]\nprobe = {{ type = \"process\", name = \"{name}\" }}\ntimeout = 30\n"
    )
}

/// A SONiC-shaped set: the database, the swss failure group (swss, syncd with warm and fast
/// stop steps), bgp as its dependent, and two delayed services (pmon with critical
/// processes, snmp).
pub(super) fn sonic() -> Arc<ManifestSet> {
    let database = svc("database", "database = true");
    let swss = format!(
        "{}\n[[processes]]\nname = \"orchagent\"\ncritical = true\nreconciles = true\n",
        svc(
            "swss",
            "requires = [\"database\"]\nafter = [\"database\"]\nfailure-group = \"swss\"\n[service.cold-start]\nflush-databases = [\"APPL_DB\", \"ASIC_DB\"]\ndelete-state = [\"PORT_TABLE*\"]"
        )
    );
    let syncd = svc(
        "syncd",
        "requires = [\"database\"]\nafter = [\"database\", \"swss\"]\nfailure-group = \"swss\"\n[[service.warm-stop]]\nexec = [\"/usr/bin/syncd_request_shutdown\", \"--warm\"]\n[[service.fast-stop]]\nexec = [\"/usr/bin/syncd_request_shutdown\", \"--fast\"]",
    );
    let bgp = format!(
        "{}\n[[processes]]\nname = \"bgpd\"\ncritical = true\n",
        svc("bgp", "requires = [\"database\"]\nafter = [\"database\", \"swss\"]\ndependent-of = [\"swss\"]")
    );
    let pmon = format!(
        "{}\n[[processes]]\nname = \"xcvrd\"\ncritical = true\n",
        svc("pmon", "requires = [\"database\"]\nafter = [\"database\"]\ndelayed = true")
    );
    let snmp = svc("snmp", "requires = [\"database\"]\nafter = [\"database\", \"swss\"]\ndelayed = true");
    set(&[("database", &database), ("swss", &swss), ("syncd", &syncd), ("bgp", &bgp), ("pmon", &pmon), ("snmp", &snmp)])
}

fn host() -> HostSettings {
    HostSettings {
        sonic_root: PathBuf::from("/sim"),
        platform: "x86_64-kvm_x86_64-r0".into(),
        hwsku: "Force10-S6000".into(),
        asic: String::new(),
        num_asic: 1,
        namespace: "sonic".into(),
        cgroups: crate::runtime::spec::Cgroups::Cgroupfs,
        privileged_capabilities: Vec::new(),
    }
}

/// Kinds of effects in the trace unless a test asks for more.
const DEFAULT_KINDS: &[&str] = &["start", "stop", "db", "reply", "history", "remove", "exit"];

pub(super) struct World {
    manifests: Arc<ManifestSet>,
    core: Core,
    boot: BootType,
    mirror_units: bool,
    now: Now,
    /// What is on disk: the last persist the world carried out.
    disk: PersistedState,
    containers: BTreeMap<String, Container>,
    images: BTreeMap<String, Image>,
    archives: BTreeMap<PathBuf, (String, String)>,
    /// CONFIG_DB's FEATURE table, as the database link would read it.
    feature_table: BTreeMap<String, Fields>,
    warm: WarmFlags,
    ports: bool,
    database_connected: bool,
    pending: VecDeque<Event>,
    scheduled: Vec<(Instant, Event)>,
    wake: Option<Instant>,
    next_pid: u32,
    next_request: u64,
    fail_prepare: bool,
    failing_starts: BTreeSet<String>,
    pub history: Vec<HistoryEntry>,
    pub replies: BTreeMap<RequestId, Result<Response, CommandError>>,
    pub progress: Vec<String>,
    trace: Vec<String>,
    kinds: BTreeSet<&'static str>,
    /// A persist the world writes but does not acknowledge, for crash tests: stop there.
    pub hold_persist: bool,
    pub held_persist: Option<u64>,
    /// Every state the world wrote, in order (crash tests restart from each one).
    pub persisted: Vec<PersistedState>,
    /// The daemon dies right after writing this persist (counted from 1), before its
    /// acknowledgement; every later effect and event of that daemon is lost.
    pub crash_at: Option<usize>,
    pub crashed: bool,
    /// What each daemon start finds of the OS images.
    pub os: OsBoot,
    /// The next commit of an image on trial fails.
    pub fail_commit: bool,
}

impl World {
    pub fn new(manifests: Arc<ManifestSet>) -> Self {
        Self::with(manifests, BootType::Cold, false)
    }

    pub fn with(manifests: Arc<ManifestSet>, boot: BootType, mirror_units: bool) -> Self {
        let now = Now { mono: Instant::now(), wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) };
        let core = Self::make_core(&manifests, boot, mirror_units, PersistedState::default(), now);
        let mut images = BTreeMap::new();
        for service in manifests.services() {
            let reference = service.manifest.container.image.clone();
            images.insert(
                reference.clone(),
                Image { digest: format!("sha256:{reference}"), behaviour: Behaviour::Ready },
            );
        }
        Self {
            manifests,
            core,
            boot,
            mirror_units,
            now,
            disk: PersistedState::default(),
            containers: BTreeMap::new(),
            images,
            archives: BTreeMap::new(),
            feature_table: BTreeMap::new(),
            warm: WarmFlags::default(),
            ports: false,
            database_connected: false,
            pending: VecDeque::new(),
            scheduled: Vec::new(),
            wake: None,
            next_pid: 100,
            next_request: 1,
            fail_prepare: false,
            failing_starts: BTreeSet::new(),
            history: Vec::new(),
            replies: BTreeMap::new(),
            progress: Vec::new(),
            trace: Vec::new(),
            kinds: DEFAULT_KINDS.iter().copied().collect(),
            hold_persist: false,
            held_persist: None,
            persisted: Vec::new(),
            crash_at: None,
            crashed: false,
            os: OsBoot::Settled,
            fail_commit: false,
        }
    }

    /// A world whose daemon starts on an OS image boot of this kind.
    pub fn with_os(manifests: Arc<ManifestSet>, os: OsBoot) -> Self {
        let mut world = Self::new(manifests);
        world.os = os;
        world.core = Self::make_core_os(
            &world.manifests,
            world.boot,
            false,
            PersistedState::default(),
            world.now,
            world.os.clone(),
        );
        world
    }

    fn make_core(
        manifests: &Arc<ManifestSet>,
        boot: BootType,
        mirror_units: bool,
        state: PersistedState,
        now: Now,
    ) -> Core {
        Self::make_core_os(manifests, boot, mirror_units, state, now, OsBoot::Settled)
    }

    fn make_core_os(
        manifests: &Arc<ManifestSet>,
        boot: BootType,
        mirror_units: bool,
        state: PersistedState,
        now: Now,
        os: OsBoot,
    ) -> Core {
        let config = CoreConfig {
            host: host(),
            boot,
            delayed_fallback: Duration::from_secs(180),
            database_link: manifests.database().is_some(),
            mirror_units,
            os,
        };
        Core::new(config, Arc::clone(manifests), state, now)
    }

    /// The containers as the runtime would list them at a daemon start.
    fn observed(&self) -> Vec<Observed> {
        self.containers
            .iter()
            .map(|(id, c)| {
                let labels = BTreeMap::from([
                    (labels::SERVICE.to_owned(), id.clone()),
                    (labels::GENERATION.to_owned(), c.generation.to_string()),
                    (labels::IMAGE_DIGEST.to_owned(), c.digest.clone()),
                    (labels::MANIFEST_DIGEST.to_owned(), c.manifest_digest.clone()),
                ]);
                let task =
                    if c.running { TaskState::Running { pid: c.pid } } else { TaskState::Stopped { exit_code: 1 } };
                let container = ContainerInfo { id: id.clone(), image: c.image.clone(), labels, task };
                let current_image =
                    self.core.image_reference(id).and_then(|r| self.images.get(&r)).map(|i| i.digest.clone());
                Observed { container, current_image }
            })
            .collect()
    }

    /// Feeds one event and everything that follows from it, until nothing is left to do now.
    fn feed(&mut self, event: Event) {
        self.pending.push_back(event);
        self.settle();
    }

    fn settle(&mut self) {
        let mut budget = 100_000;
        while let Some(event) = self.pending.pop_front() {
            if self.crashed {
                self.pending.clear();
                return;
            }
            budget -= 1;
            assert!(budget > 0, "the core never settles");
            let effects = self.core.handle(event, self.now);
            self.carry_out_all(effects);
        }
    }

    fn carry_out_all(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            if self.crashed {
                return;
            }
            self.carry_out(effect);
        }
    }

    fn line(&mut self, kind: &'static str, text: String) {
        if self.kinds.contains(kind) {
            self.trace.push(text);
        }
    }

    fn schedule(&mut self, after: Duration, event: Event) {
        self.scheduled.push((self.now.mono + after, event));
    }

    fn carry_out(&mut self, effect: Effect) {
        match effect {
            Effect::Start { service, generation, from } => {
                let how = if from.prepared.is_some() {
                    " (prepared)"
                } else if from.rootfs.is_some() {
                    " (prepared rootfs)"
                } else {
                    ""
                };
                self.line("start", format!("start {service} #{generation}{how}"));
                if from.leftover {
                    self.containers.remove(service.as_str());
                }
                let reference = match &from.prepared {
                    Some(prepared) => prepared.image.name.clone(),
                    None => from.reference.clone(),
                };
                let result = match self.images.get(&reference) {
                    _ if self.failing_starts.remove(service.as_str()) => {
                        Err(StartError::Failed("containerd create task failed for ".to_owned() + service.as_str()))
                    }
                    None => Err(StartError::Blocked(format!("image {reference} is not in containerd"))),
                    Some(image) => {
                        self.next_pid += 1;
                        let manifest = self.manifests.get(service.as_str()).expect("a service of the set");
                        self.containers.insert(
                            service.to_string(),
                            Container {
                                generation,
                                image: reference.clone(),
                                digest: image.digest.clone(),
                                running: true,
                                pid: self.next_pid,
                                manifest_digest: container_digest(manifest, &host()),
                            },
                        );
                        Ok(super::event::Started { pid: self.next_pid, image_digest: image.digest.clone() })
                    }
                };
                self.pending.push_back(Event::Started { service, generation, result });
            }
            Effect::Stop { service, generation, how } => {
                let mode = match how {
                    StopHow::Cold { .. } => "cold",
                    StopHow::Steps { mode: StopMode::Warm, .. } => "warm",
                    StopHow::Steps { .. } => "fast",
                };
                self.line("stop", format!("stop {service} {mode}"));
                self.containers.remove(service.as_str());
                self.unschedule(&service);
                self.pending.push_back(Event::Stopped { service, generation, result: Ok(()) });
            }
            Effect::Watch { service, generation } => {
                self.line("watch", format!("watch {service} #{generation}"));
                let Some(container) = self.containers.get(service.as_str()) else { return };
                let behaviour = self.images.get(&container.image).map_or(Behaviour::Ready, |i| i.behaviour);
                match behaviour {
                    Behaviour::Ready | Behaviour::LosesCritical(..) => {
                        self.pending.push_back(Event::Probed { service, generation, result: Ok(()) })
                    }
                    Behaviour::NeverReady => {
                        let timeout = self.manifests.get(service.as_str()).map_or(60, |s| s.manifest.readiness.timeout);
                        let result = Err(Failure("probe did not pass".into()));
                        self.schedule(
                            Duration::from_secs(u64::from(timeout)),
                            Event::Probed { service, generation, result },
                        );
                    }
                    Behaviour::Exits(code) => {
                        if let Some(c) = self.containers.get_mut(service.as_str()) {
                            c.running = false;
                        }
                        let status = ExitStatus { code, at: self.now.wall };
                        self.pending.push_back(Event::Exited { service, generation, status });
                    }
                }
            }
            Effect::WatchCritical { service, generation } => {
                self.line("watch", format!("watch-critical {service} #{generation}"));
                let image = self.containers.get(service.as_str()).map(|c| c.image.clone()).unwrap_or_default();
                if let Some(Behaviour::LosesCritical(process, after)) = self.images.get(&image).map(|i| i.behaviour) {
                    let event = Event::CriticalExited { service, generation, process: process.to_owned() };
                    self.schedule(Duration::from_millis(after), event);
                }
            }
            Effect::Unwatch { service } => {
                self.line("watch", format!("unwatch {service}"));
                self.unschedule(&service);
            }
            Effect::Remove { container } => {
                self.line("remove", format!("remove {container}"));
                self.containers.remove(&container);
            }
            Effect::Stage { service, source, wanted: _, digest, progress: _ } => {
                self.line("stage", format!("stage {service}"));
                let found = match &source {
                    ImageSource::Stored(reference) => {
                        self.images.get(reference).map(|i| (reference.clone(), i.digest.clone(), None))
                    }
                    ImageSource::Archive(path) => self
                        .archives
                        .get(path)
                        .map(|(name, digest)| (name.clone(), digest.clone(), Some(super::ArchiveHandle(1)))),
                };
                let result = match found {
                    None => Err(CommandError::new(ErrorKind::NotFound, format!("{source:?} is not there"))),
                    Some((_, found, _)) if digest.as_ref().is_some_and(|d| *d != found) => {
                        Err(CommandError::new(ErrorKind::BadRequest, "digest mismatch; nothing was changed"))
                    }
                    Some((name, digest, archive)) => Ok(StagedImage { name, digest, archive }),
                };
                self.pending.push_back(Event::Staged { service, result });
            }
            Effect::DiscardStaged(_) => self.line("stage", "discard staged".into()),
            Effect::Prepare { service, journal, source, current: _, archive, progress: _ } => {
                self.line("prepare", format!("prepare {service}"));
                if archive.is_some() {
                    let (name, digest) = self
                        .archives
                        .values()
                        .find(|(n, _)| *n == source)
                        .cloned()
                        .expect("the staged archive's image");
                    self.images.insert(name, Image { digest, behaviour: self.behaviour_of_digest(&journal.to.digest) });
                }
                let result = if std::mem::take(&mut self.fail_prepare) {
                    Err(Failure("the new image's spec cannot be built".into()))
                } else {
                    let behaviour = self.behaviour_of_digest(&journal.to.digest);
                    let old = self.behaviour_of_digest(&journal.from.digest);
                    self.images
                        .insert(journal.to.reference.clone(), Image { digest: journal.to.digest.clone(), behaviour });
                    self.images.insert(
                        journal.from.reference.clone(),
                        Image { digest: journal.from.digest.clone(), behaviour: old },
                    );
                    let image = ImageInfo {
                        name: journal.to.reference.clone(),
                        digest: journal.to.digest.clone(),
                        size: 1,
                        architecture: "amd64".into(),
                        os: "linux".into(),
                        config: ImageConfig::default(),
                        chain_id: String::new(),
                    };
                    Ok(Prepared { image, spec: Vec::new(), rootfs: journal.rootfs.clone() })
                };
                self.pending.push_back(Event::ChangePrepared { service, result });
            }
            Effect::DiscardRootfs { key } => self.line("rootfs", format!("discard {key}")),
            Effect::CollectImages { .. } => self.line("collect", "collect images".into()),
            Effect::Import { id, paths } => {
                self.line("import", format!("import {}", paths.len()));
                self.pending.push_back(Event::Imported { id, result: Ok(paths.len()) });
                self.pending.push_back(Event::ImagesChanged);
            }
            Effect::Persist { seq, state } => {
                self.line("persist", format!("persist {}", describe_state(&state)));
                self.disk = state.clone();
                self.persisted.push(state);
                if self.crash_at == Some(self.persisted.len()) {
                    self.crashed = true;
                    self.pending.clear();
                    return;
                }
                if self.hold_persist {
                    self.held_persist = Some(seq);
                } else {
                    self.pending.push_back(Event::Persisted { seq, result: Ok(()) });
                }
            }
            Effect::AppendHistory(entry) => {
                let reason = entry.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
                self.line("history", format!("history {} {}{reason}", entry.service, entry.result.as_str()));
                crate::state::history::record(&mut self.history, entry);
            }
            Effect::Db(request) => self.database(request),
            Effect::DatabaseReady(readiness) => {
                let ready = readiness.is_ready();
                self.line("dbready", format!("database {readiness:?}"));
                if ready && !self.database_connected {
                    self.database_connected = true;
                    self.connect_database();
                } else if !ready {
                    self.database_connected = false;
                }
            }
            Effect::StartUnit(service) => self.line("unit", format!("start unit {service}")),
            Effect::Status(view) => {
                self.line("status", format!("status {} {}", view.name, view.state.as_str()));
            }
            Effect::Notice(notice) => self.line("notice", describe_notice(&notice)),
            Effect::Progress { to, item } => {
                let text = match item {
                    Progress::Line(line) => line,
                    Progress::ChangeEnded(entry) => format!("{} {}", entry.service, entry.result.as_str()),
                    Progress::ChangeRefused(e) => format!("refused: {e}"),
                    Progress::Imported(image) => format!("imported {}", image.name),
                };
                self.line("progress", format!("progress {}: {text}", to.0));
                self.progress.push(text);
            }
            Effect::Reply { to, result } => {
                let text = match &result {
                    Ok(response) => format!("ok{}", describe_response(response)),
                    Err(e) => format!("{:?}: {}", e.kind, e.message),
                };
                self.line("reply", format!("reply {} {text}", to.0));
                self.replies.insert(to, result);
            }
            Effect::WakeAt(at) => self.wake = Some(at),
            Effect::Exit => self.line("exit", "exit".into()),
            Effect::Os { id, request } => {
                self.line("os", format!("os {request:?}"));
                self.pending.push_back(Event::OsDone { id, request, result: Ok(Response::Done) });
            }
            Effect::CommitImage(image) => {
                self.line("os", format!("os commit {image}"));
                let result = if std::mem::take(&mut self.fail_commit) { Err(Failure("EIO".into())) } else { Ok(()) };
                self.pending.push_back(Event::ImageCommitted { image, result });
            }
            Effect::FailTrial { image, reason } => self.line("os", format!("os fail trial {image}: {reason}")),
            Effect::Reboot { reason } => self.line("os", format!("os reboot {reason}")),
        }
    }

    fn behaviour_of_digest(&self, digest: &str) -> Behaviour {
        self.images.values().find(|i| i.digest == digest).map_or(Behaviour::Ready, |i| i.behaviour)
    }

    fn unschedule(&mut self, service: &ServiceName) {
        self.scheduled.retain(|(_, event)| match event {
            Event::Probed { service: s, .. }
            | Event::Exited { service: s, .. }
            | Event::CriticalExited { service: s, .. } => s != service,
            _ => true,
        });
    }

    /// What the database link does once it connects: warm flags, ports, then FEATURE.
    fn connect_database(&mut self) {
        self.pending.push_back(Event::WarmFlags(self.warm.clone()));
        self.pending.push_back(Event::PortsReady(self.ports));
        self.pending.push_back(Event::FeaturesLoaded(self.feature_table.clone()));
    }

    fn database(&mut self, request: DbRequest) {
        match request {
            DbRequest::ColdStart { group, flush, .. } => {
                self.line("db", format!("db cold-start {group} [{}]", flush.join(",")));
                if flush.iter().any(|d| d == "APPL_DB") {
                    self.ports = false;
                    self.pending.push_back(Event::PortsReady(false));
                }
                self.pending.push_back(Event::ColdStartDone { group, result: Ok(()) });
            }
            DbRequest::Reload { config } => {
                self.line("db", "db reload".into());
                self.feature_table = config.get("FEATURE").cloned().unwrap_or_default();
                self.pending.push_back(Event::FeaturesLoaded(self.feature_table.clone()));
                self.pending.push_back(Event::ConfigReloaded(Ok(())));
            }
            DbRequest::OsImage { image, fields } => {
                self.line("db", format!("db OS_IMAGE_TABLE|{image} {}", render_fields(&fields)));
            }
            DbRequest::KubeMaster { .. } => unreachable!("the Kubernetes task's report, never the core's"),
            DbRequest::WriteFeature { service, fields, state_if_missing } => {
                self.line("db", format!("db write FEATURE|{service} {}", render_fields(&fields)));
                let entry = self.feature_table.entry(service.to_string()).or_default();
                for (field, value) in fields {
                    entry.retain(|(f, _)| *f != field);
                    entry.push((field, value));
                }
                if !entry.iter().any(|(f, _)| f == "state") {
                    entry.push(("state".into(), state_if_missing));
                }
                let fields = entry.clone();
                self.pending.push_back(Event::FeatureWritten { service: service.clone(), result: Ok(()) });
                self.pending.push_back(Event::FeatureChanged { name: service.to_string(), fields: Some(fields) });
            }
            DbRequest::Warm { service, enable } => {
                self.line("db", format!("db warm {service} {enable:?}"));
                match enable {
                    Some(enable) => self.warm.warm.insert(service, enable),
                    None => self.warm.warm.remove(&service),
                };
                self.pending.push_back(Event::WarmFlags(self.warm.clone()));
            }
            DbRequest::Upgrade { service, fields } => {
                let state = fields.iter().find(|(f, _)| f == "state").map(|(_, v)| v.clone()).unwrap_or_default();
                self.line("upgrade", format!("db upgrade {service} {state}"));
            }
            DbRequest::Feature(report) => {
                self.line(
                    "report",
                    format!(
                        "db feature {} {} {} owner {} {} remote {}",
                        report.name,
                        report.state,
                        report.system_state,
                        report.current_owner,
                        report.container_id,
                        report.remote_state
                    ),
                );
            }
            DbRequest::System { status, reason } => self.line("system", format!("db system {status}: {reason}")),
        }
    }

    /// Runs one step.
    pub fn step(&mut self, step: Step) {
        match step {
            _ if self.crashed => {}
            Boot => {
                let effects = self.core.adopt(self.observed(), self.now);
                self.carry_out_all(effects);
                self.settle();
                self.feed(Event::Wake);
            }
            Ports(ready) => {
                self.ports = ready;
                self.feed(Event::PortsReady(ready));
            }
            Advance(ms) => self.advance(Duration::from_millis(ms)),
            Exit(service, code) => {
                if let Some(c) = self.containers.get_mut(service) {
                    c.running = false;
                    let generation = c.generation;
                    let status = ExitStatus { code, at: self.now.wall };
                    self.feed(Event::Exited { service: name(service), generation, status });
                }
            }
            Critical(service, process) => {
                let generation = self.containers.get(service).map_or(0, |c| c.generation);
                self.feed(Event::CriticalExited { service: name(service), generation, process: process.to_owned() });
            }
            Cmd(command) => {
                let id = RequestId(self.next_request);
                self.next_request += 1;
                self.feed(Event::Command { id, command });
            }
            Feature(service, fields) => {
                let fields: Fields = fields.iter().map(|(f, v)| ((*f).to_owned(), (*v).to_owned())).collect();
                self.feature_table.insert(service.to_owned(), fields.clone());
                if self.database_connected {
                    self.feed(Event::FeatureChanged { name: service.to_owned(), fields: Some(fields) });
                }
            }
            Pods(pods) => {
                let seen = pods
                    .iter()
                    .map(|(service, pod, ready)| {
                        let seen = PodSeen {
                            pod: (*pod).to_owned(),
                            uid: format!("uid-{pod}"),
                            container_id: format!("cri-{pod}"),
                            ready: *ready,
                        };
                        (name(service), seen)
                    })
                    .collect();
                self.feed(Event::Pods(seen));
            }
            Warm(key, enable) => {
                self.warm.warm.insert(key.to_owned(), enable);
                self.feed(Event::WarmFlags(self.warm.clone()));
            }
            Fast(enable) => {
                self.warm.fast = enable;
                self.feed(Event::WarmFlags(self.warm.clone()));
            }
            Reconciled(process) => {
                self.warm.states.insert(process.to_owned(), "reconciled".to_owned());
                self.feed(Event::WarmFlags(self.warm.clone()));
            }
            Image(reference, digest, behaviour) => {
                self.images.insert(reference.to_owned(), Image { digest: digest.to_owned(), behaviour });
            }
            Archive(path, image, digest) => {
                self.archives.insert(PathBuf::from(path), (image.to_owned(), digest.to_owned()));
            }
            FailPrepare => self.fail_prepare = true,
            FailStart(service) => {
                self.failing_starts.insert(service.to_owned());
            }
            Restart => self.restart(),
            Mark => self.trace.clear(),
            Show(service) => {
                let line = self.show(service);
                self.trace.push(line);
            }
            Trace(kinds) => self.kinds.extend(kinds.iter().copied()),
        }
    }

    /// A `kill -9` of the daemon, then a new one over the same disk and containers.
    pub fn restart(&mut self) {
        self.crashed = false;
        self.crash_at = None;
        self.pending.clear();
        self.scheduled.clear();
        self.wake = None;
        self.database_connected = false;
        self.hold_persist = false;
        self.held_persist = None;
        self.core = Self::make_core_os(
            &self.manifests,
            self.boot,
            self.mirror_units,
            self.disk.clone(),
            self.now,
            self.os.clone(),
        );
        self.line("restart", "restart".into());
        let effects = self.core.adopt(self.observed(), self.now);
        self.carry_out_all(effects);
        self.settle();
        self.feed(Event::Wake);
    }

    /// Moves the clock, handing the core every wake-up and scheduled event on the way.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now.mono + by;
        while !self.crashed {
            let next_scheduled = self.scheduled.iter().map(|(at, _)| *at).min();
            let next = [next_scheduled, self.wake].into_iter().flatten().filter(|at| *at <= target).min();
            let Some(at) = next else { break };
            self.now = self.now.after(at.saturating_duration_since(self.now.mono));
            if next_scheduled == Some(at) {
                let index = self.scheduled.iter().position(|(t, _)| *t == at).expect("scheduled");
                let (_, event) = self.scheduled.remove(index);
                self.feed(event);
            } else {
                self.wake = None;
                self.feed(Event::Wake);
            }
        }
        self.now = self.now.after(target.saturating_duration_since(self.now.mono));
    }

    /// `name: state ready gen N restarts N [message]`.
    pub fn show(&self, service: &str) -> String {
        let view = super::status::service_view(&self.core, &name(service));
        let message = view.message.map(|m| format!(" \"{m}\"")).unwrap_or_default();
        format!(
            "{service}: {}{} gen {} restarts {}{message}",
            view.state.as_str(),
            if view.ready { " ready" } else { "" },
            view.generation,
            view.restarts
        )
    }

    pub fn take_trace(&mut self) -> Vec<String> {
        std::mem::take(&mut self.trace)
    }

    /// The pid of the service's running container, if any.
    pub fn pid(&self, service: &str) -> Option<u32> {
        self.containers.get(service).filter(|c| c.running).map(|c| c.pid)
    }

    pub fn running_image(&self, service: &str) -> Option<String> {
        self.containers.get(service).filter(|c| c.running).map(|c| c.digest.clone())
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    pub fn disk(&self) -> &PersistedState {
        &self.disk
    }

    /// Acknowledges a persist the world held back.
    pub fn release_persist(&mut self) {
        if let Some(seq) = self.held_persist.take() {
            self.feed(Event::Persisted { seq, result: Ok(()) });
        }
    }
}

pub(super) fn name(service: &str) -> ServiceName {
    ServiceName::new(service).expect("a service name")
}

fn render_fields(fields: &Fields) -> String {
    fields.iter().map(|(f, v)| format!("{f}={v}")).collect::<Vec<_>>().join(" ")
}

fn describe_state(state: &PersistedState) -> String {
    let change = state.change.as_ref().map(|c| format!(" change {} {:?}", c.service, c.step)).unwrap_or_default();
    let release = state.release.as_ref().map(|r| format!(" release next {}", r.next)).unwrap_or_default();
    format!("{} services{change}{release}", state.services.len())
}

fn describe_notice(notice: &Notice) -> String {
    match notice {
        Notice::Failed { service, reason, outcome } => format!("notice {service} failed ({reason}): {outcome:?}"),
        Notice::GroupDown { group, cause, services } => {
            let services: Vec<&str> = services.iter().map(ServiceName::as_str).collect();
            format!("notice group {group} down with {cause}: {}", services.join(" "))
        }
        Notice::ChangeEnded { service, to, result, reason } => {
            format!(
                "notice {service} to {to} {}{}",
                result.as_str(),
                reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
            )
        }
        Notice::Feature { service, state } => format!("notice FEATURE {service} {state}"),
        Notice::SystemReady { status, reason } => format!("notice SYSTEM_READY {status} {reason}"),
        Notice::Trial { image, committed, reason } => format!("notice trial {image} committed {committed} {reason:?}"),
        Notice::Handover { service, pod } => format!("notice {service} handed over to {}", pod.pod),
        Notice::Fallback { service, pod, reason } => {
            format!("notice {service} falls back from {}: {reason}", pod.as_ref().map_or("", |p| p.pod.as_str()))
        }
    }
}

fn describe_response(response: &Response) -> String {
    match response {
        Response::Service(view) => {
            format!(" {} {}{}", view.name, view.state.as_str(), if view.ready { " ready" } else { "" })
        }
        Response::Status(_) => " status".into(),
        Response::Features(_) => " features".into(),
        Response::Feature(view) => format!(" FEATURE {} {} auto_restart {}", view.name, view.state, view.auto_restart),
        Response::Reloaded { failed, .. } => {
            format!(" reloaded, failed [{}]", failed.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(","))
        }
        Response::Changed(entry) => format!(" {} {}", entry.service, entry.result.as_str()),
        Response::Released(outcome) => format!(
            " release upgraded [{}] unchanged [{}] skipped [{}] failed {:?} untouched [{}]",
            outcome.upgraded.join(","),
            outcome.unchanged.join(","),
            outcome.skipped.join(","),
            outcome.failed,
            outcome.untouched.join(",")
        ),
        Response::Imported { images } => format!(" imported {images}"),
        Response::Os(images) => format!(" os images {}", images.images.len()),
        Response::OsInstalled(installed) => format!(" os installed {}", installed.image),
        Response::Done => String::new(),
    }
}

/// Runs `steps` on a world of `manifests` and compares the trace after the last `Mark` with
/// `expect` (one effect per line; leading spaces ignored).
pub(super) fn check(manifests: Arc<ManifestSet>, steps: Vec<Step>, expect: &str) -> World {
    let mut world = World::new(manifests);
    run(&mut world, steps, expect);
    world
}

/// [`check`] on a world made already.
pub(super) fn run(world: &mut World, steps: Vec<Step>, expect: &str) {
    for step in steps {
        world.step(step);
    }
    let got = world.take_trace();
    let want: Vec<&str> = expect.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert_eq!(got, want, "\ngot:\n{}\n", got.join("\n"));
}

/// Shorthands for commands.
pub(super) fn start(service: &str) -> Step {
    Cmd(Command::Start { service: service.to_owned(), wait: true })
}

pub(super) fn stop(service: &str) -> Step {
    Cmd(Command::Stop { service: service.to_owned(), wait: true })
}

pub(super) fn restart(service: &str) -> Step {
    Cmd(Command::Restart { service: service.to_owned(), wait: true })
}
