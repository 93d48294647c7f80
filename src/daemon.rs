//! `soniclet daemon`: wires the adapters to the supervisor and the API, and owns shutdown
//! (one cancellation token and one task tracker for every task).
//!
//! Start-up order matters for systemd: manifests and state are validated first (an invalid
//! set starts nothing and exits with `EX_CONFIG`), then containerd is reached, the API socket
//! bound and running containers adopted; only then is `READY=1` sent. [`run`] builds the real
//! adapters (containerd, the prober, systemd over D-Bus, Redis); [`run_with`] takes any (the
//! sim tier runs it over the in-memory twins).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::http::{self, ApiState, BindError};
use crate::api::server;
use crate::config::{Config, ConfigError};
use crate::db::port::Databases;
use crate::db::switch::RedisSwitch;
use crate::exit::Exit;
use crate::health::Prober;
use crate::intent::engine::Engine as IntentEngine;
use crate::intent::{self, IntentError};
use crate::manifest::{self, LoadError, ManifestSet};
use crate::os::images::{Host, InstallOptions, OsSetup};
use crate::runtime::containerd::Containerd;
use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::sonic::dblink;
use crate::state::store::{PersistedState, StateStore, StoreError};
use crate::supervisor::ports::{Health, Units};
use crate::supervisor::{Command, Core, CoreConfig, DbPort, Driver, DriverConfig, Now, OsBoot, Ports};
use crate::systemd::dbus::SystemdManager;
use crate::systemd::{self, notify};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Manifests(#[from] LoadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Intents(#[from] IntentError),
    #[error("cannot create {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DaemonError {
    /// Configuration problems get `EX_CONFIG`, which the unit's `RestartPreventExitStatus=`
    /// names: restarting cannot fix them.
    pub fn exit(&self) -> Exit {
        match self {
            DaemonError::Config(_) | DaemonError::Manifests(_) | DaemonError::Store(_) | DaemonError::Intents(_) => {
                Exit::Config
            }
            DaemonError::Bind(BindError::InUse { .. }) => Exit::Conflict,
            DaemonError::Bind(BindError::UnknownGroup { .. }) => Exit::Config,
            DaemonError::Runtime(_) => Exit::Unavailable,
            DaemonError::Bind(_) | DaemonError::Io { .. } => Exit::Failure,
        }
    }
}

/// The adapters the daemon runs the supervisor over.
#[derive(Debug)]
pub struct Adapters<R, H, U, D, P> {
    pub runtime: Arc<R>,
    pub health: Arc<H>,
    /// systemd, when it is the init.
    pub units: Option<Arc<U>>,
    /// The switch's databases (used when a manifest is the database service).
    pub databases: Arc<D>,
    /// The kubelet's pods that claim features (FEATURE `set_owner=kube`).
    pub pods: Arc<P>,
}

/// What the daemon loaded and checked before it reaches out to anything.
#[derive(Debug)]
pub struct Loaded {
    config: Config,
    manifests: Arc<ManifestSet>,
    store: StateStore,
    state: PersistedState,
    intents: Option<IntentEngine>,
}

/// How long the daemon waits for its tasks to finish once it stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to containerd, retrying while it starts (at boot it may come up after us).
async fn connect_containerd(config: &Config) -> Result<Containerd, RuntimeError> {
    let mut attempt = 0u32;
    loop {
        match Containerd::connect(&config.containerd.socket, &config.containerd.namespace).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                attempt += 1;
                if attempt == 1 || attempt % 10 == 0 {
                    tracing::warn!(error = %e, attempt, "containerd is not reachable yet; retrying");
                    notify::notify(&format!("STATUS=waiting for containerd at {}", config.containerd.socket.display()));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Operators' starts and stops last until the next boot, as `systemctl start|stop` do: the
/// first daemon of a boot (no marker in the runtime directory yet) forgets them.
fn forget_desires_on_new_boot(
    config: &Config,
    store: &StateStore,
    state: &mut PersistedState,
) -> Result<(), DaemonError> {
    let marker = config.paths.run.join("booted");
    if marker.exists() {
        return Ok(());
    }
    let io = |source| DaemonError::Io { path: marker.clone(), source };
    std::fs::create_dir_all(&config.paths.run).map_err(io)?;
    state.forget_desires();
    store.write(state)?;
    crate::state::fsutil::atomic_write(&marker, b"").map_err(io)?;
    tracing::info!("new boot: operators' starts and stops from the last boot are forgotten");
    Ok(())
}

impl Loaded {
    /// Loads and checks manifests and state; nothing is contacted yet.
    pub fn load(config: Config) -> Result<Self, DaemonError> {
        let manifests = Arc::new(manifest::load_dir(&config.paths.services)?);
        for dir in [&config.paths.state, &config.paths.logs] {
            std::fs::create_dir_all(dir).map_err(|source| DaemonError::Io { path: dir.clone(), source })?;
        }
        let (store, mut state) = StateStore::open(&config.paths.state)?;
        forget_desires_on_new_boot(&config, &store, &mut state)?;
        // Intents need the database; load them now so a corrupt file stops the start.
        let intents = match manifests.database() {
            Some(_) => Some(IntentEngine::open(&config.paths.state)?),
            None => None,
        };
        tracing::info!(services = manifests.len(), dir = %config.paths.services.display(), "manifests loaded");
        Ok(Self { config, manifests, store, state, intents })
    }
}

/// The daemon's one task tracker and shutdown token, and the first termination signal.
#[derive(Debug, Clone)]
pub struct Lifetime {
    pub tracker: TaskTracker,
    /// Cancelled when the daemon stops: every task ends.
    pub shutdown: CancellationToken,
    /// Cancelled by the first termination signal.
    pub first_signal: CancellationToken,
}

impl Lifetime {
    /// A lifetime that follows `signals` (in a tracked task): the first cancels
    /// `first_signal`, a second one exits at once.
    pub fn new(signals: impl Stream<Item = ()> + Send + Unpin + 'static) -> Self {
        let life = Self {
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            first_signal: CancellationToken::new(),
        };
        let (first, shutdown) = (life.first_signal.clone(), life.shutdown.clone());
        life.tracker.spawn(async move {
            let mut signals = signals;
            tokio::select! {
                () = shutdown.cancelled() => return,
                signal = signals.next() => if signal.is_none() { return },
            }
            first.cancel();
            tokio::select! {
                () = shutdown.cancelled() => {}
                signal = signals.next() => if signal.is_some() {
                    tracing::warn!("second signal: exiting now");
                    std::process::exit(1);
                },
            }
        });
        life
    }
}

/// Runs the daemon over the real adapters until the signals stop it (SIGTERM in
/// production).
pub async fn run(config: Config, signals: impl Stream<Item = ()> + Send + Unpin + 'static) -> Result<(), DaemonError> {
    let loaded = Loaded::load(config)?;
    let life = Lifetime::new(signals);
    let runtime = tokio::select! {
        r = connect_containerd(&loaded.config) => Arc::new(r?),
        () = life.first_signal.cancelled() => {
            life.shutdown.cancel();
            return Ok(());
        }
    };
    let health = Arc::new(Prober::new(Arc::clone(&runtime), loaded.config.host_settings()));
    let units = systemd::dbus::systemd_booted().then(|| Arc::new(SystemdManager::new()));
    let databases = Arc::new(RedisSwitch::new(&loaded.config.paths.sonic_root));
    let pods = Arc::new(crate::k8s::cri::Cri::new(&loaded.config.containerd.socket));
    run_with(loaded, Adapters { runtime, health, units, databases, pods }, life).await
}

/// SONiC's `config-setup`, `sonic-environment` and `hostname-config` before the database link
/// loads CONFIG_DB: a first boot gets the platform's factory config_db.json; every boot takes
/// the platform from `/host/machine.conf`, and the HWSKU and hostname from config_db.json's
/// DEVICE_METADATA. A failure leaves CONFIG_DB to what files there are, and says so.
fn sonic_config_setup(config: &mut Config) {
    use crate::sonic::factory;
    let root = config.paths.sonic_root.clone();
    let machine = crate::os::machine::MachineConf::read(&config.os.host).unwrap_or_default();
    match factory::ensure(&root, &machine, &config.platform.platform) {
        Ok(Some(wrote)) => tracing::info!(
            file = %wrote.path.display(),
            platform = wrote.platform,
            hwsku = wrote.hwsku,
            hostname = wrote.hostname,
            ports = wrote.ports,
            "first boot: wrote the factory config (SONiC's config-setup factory)"
        ),
        Ok(None) => {}
        Err(e) => tracing::error!(
            error = %crate::error::chain(&e),
            "first boot: no factory config could be written; CONFIG_DB starts from the files there are"
        ),
    }
    if let Some(platform) = machine.platform() {
        config.platform.platform = platform.to_owned();
    }
    let content = crate::sonic::configdb::load_if_present(&root.join("etc/sonic/config_db.json")).ok().flatten();
    let metadata = |field| content.as_ref().and_then(|c| factory::device_metadata(c, field));
    if let Some(hwsku) = metadata("hwsku") {
        config.platform.hwsku = hwsku.to_owned();
    }
    // Only the switch's own root names the machine: a development run under another root
    // must not rename its host.
    if let Some(name) = metadata("hostname").filter(|_| root == Path::new("/")) {
        if let Err(e) = apply_hostname(&root, name) {
            tracing::warn!(error = %e, "the hostname in config_db.json was not applied");
        }
    }
}

/// DEVICE_METADATA|localhost's hostname into `/etc/hostname` and the kernel.
fn apply_hostname(root: &Path, name: &str) -> std::io::Result<()> {
    let etc_hostname = root.join("etc/hostname");
    if std::fs::read_to_string(&etc_hostname).ok().as_deref().map(str::trim) != Some(name) {
        crate::state::fsutil::atomic_write(&etc_hostname, format!("{name}\n").as_bytes())?;
    }
    if nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).as_deref() != Some(name) {
        nix::unistd::sethostname(name)?;
        tracing::info!(hostname = name, "hostname set from DEVICE_METADATA (SONiC's hostname-config)");
    }
    Ok(())
}

/// The switch's OS images, when it has them: what the `os` commands work with, and what
/// this boot is for a trial (a fallback found here is recorded on `/host` at once).
fn os_images(config: &Config) -> (OsBoot, Option<OsSetup>) {
    use crate::os::trial::{self, BootStatus};
    let root = config.os.host.clone();
    let Ok(env) = crate::os::load_env(&root) else { return (OsBoot::Settled, None) };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let booted = crate::os::booted(&cmdline);
    let deadline = Duration::from_secs(config.os.trial_deadline);
    let key = config.os.signing_key.as_deref().and_then(|path| match crate::os::signature::PublicKey::load(path) {
        Ok(key) => Some(key),
        Err(e) => {
            tracing::error!(error = %crate::error::chain(&e), "the OS signing key cannot be used: signed images cannot be checked");
            None
        }
    });
    let carry = [config.paths.sonic_root.join("etc/sonic"), config.paths.state.clone()]
        .into_iter()
        .map(|here| {
            let there = Path::new("/").join(here.strip_prefix(&config.paths.sonic_root).unwrap_or(&here));
            (here, there)
        })
        .collect();
    let install = InstallOptions {
        key,
        require_signature: config.os.require_signature,
        trial_deadline: deadline,
        carry,
        // The new image's containerd store starts empty: it preloads its own archives.
        skip: vec![crate::images::PRELOADED_FILE.to_owned(), "staging".to_owned()],
        force_platform: false,
    };
    let boot = match trial::boot_status(&env, booted.as_deref(), deadline) {
        BootStatus::Settled => OsBoot::Settled,
        BootStatus::OnTrial { image, deadline } => OsBoot::OnTrial { image, deadline },
        BootStatus::FellBack { image, booted } => match trial::settle_fallback(&root, &image, booted.as_deref()) {
            Ok(reason) => OsBoot::FellBack { image, reason },
            Err(e) => {
                let reason = format!("it failed its trial (and recording that failed: {})", crate::error::chain(&e));
                OsBoot::FellBack { image, reason }
            }
        },
    };
    (boot, Some(OsSetup { host: Host { root, cmdline }, install }))
}

/// Runs the daemon over `adapters` until `first_signal` (or a shutdown request) stops it.
pub async fn run_with<R: ContainerRuntime, H: Health, U: Units, D: Databases, P: crate::k8s::pods::Pods>(
    loaded: Loaded,
    adapters: Adapters<R, H, U, D, P>,
    life: Lifetime,
) -> Result<(), DaemonError> {
    let Loaded { mut config, manifests, store, state, intents: intent_engine } = loaded;
    let Lifetime { tracker, shutdown, first_signal } = life;
    let listener = match http::bind(&config.api.socket, config.api.group.as_deref()) {
        Ok(listener) => listener,
        Err(e) => {
            shutdown.cancel();
            return Err(e.into());
        }
    };

    if manifests.database().is_some() {
        sonic_config_setup(&mut config);
    }
    let host = config.host_settings();
    let boot = config.boot_type();
    tracing::info!(boot = boot.as_str(), "boot type");
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/soniclet"));
    // With a database service, CONFIG_DB's FEATURE table decides what runs.
    let db = manifests.database().map(|_| {
        let (requests, requests_rx) = tokio::sync::mpsc::unbounded_channel();
        let (database_ready, ready_rx) = tokio::sync::watch::channel(crate::supervisor::DatabaseReadiness::Down);
        (DbPort { requests, database_ready }, requests_rx, ready_rx)
    });
    let (os_boot, os_setup) = os_images(&config);
    let core_config = CoreConfig {
        host: host.clone(),
        boot,
        delayed_fallback: Duration::from_secs(config.daemon.delayed_start_timeout),
        database_link: db.is_some(),
        mirror_units: adapters.units.is_some(),
        os: os_boot.clone(),
    };
    let core = Core::new(core_config, Arc::clone(&manifests), state, Now::read());
    let (db_port, db_task) = match db {
        Some((port, requests_rx, ready_rx)) => (Some(port), Some((requests_rx, ready_rx))),
        None => (None, None),
    };
    // CONFIG_DB's KUBERNETES_MASTER|SERVER, from the link to the Kubernetes task, and the
    // task's STATE_DB report back through the link.
    let (kube_master, kube_master_rx) = tokio::sync::watch::channel(None);
    let kube_state = db_port.as_ref().map(|port| port.requests.clone());
    let ports =
        Ports { runtime: Arc::clone(&adapters.runtime), health: adapters.health, units: adapters.units, db: db_port };
    let driver_config = DriverConfig {
        host,
        logs: config.log_sink(program),
        state_dir: config.paths.state.clone(),
        staging_dir: config.paths.state.join("staging"),
        os: os_setup,
    };
    let mut driver =
        Driver::new(core, Arc::clone(&manifests), ports, driver_config, store, tracker.clone(), shutdown.clone());
    if let Err(e) = driver.adopt().await {
        shutdown.cancel();
        return Err(e.into());
    }
    let handle = driver.handle();
    if let Some((requests_rx, ready_rx)) = db_task {
        let link = dblink::Link {
            dbs: Arc::clone(&adapters.databases),
            sonic_root: config.paths.sonic_root.clone(),
            kube_master,
        };
        tracker.spawn(dblink::run(link, handle.clone(), requests_rx, ready_rx, boot, shutdown.clone()));
    }
    let agent = crate::k8s::join::AgentFiles::new(&config.paths.sonic_root);
    let is_node = move || agent.kubelet_kubeconfig().exists();
    tracker.spawn(crate::k8s::pods::watch(
        adapters.pods,
        Arc::clone(&manifests),
        is_node,
        handle.clone(),
        shutdown.clone(),
    ));
    let settings = crate::k8s::task::Settings {
        sonic_root: config.paths.sonic_root.clone(),
        os_host: config.os.host.clone(),
        config: config.clone(),
    };
    let master = crate::k8s::task::MasterFeed { entry: kube_master_rx, state: kube_state };
    tracker.spawn(crate::k8s::task::follow_membership(settings.clone(), master, shutdown.clone()));
    if config.kubernetes.report {
        tracker.spawn(crate::k8s::task::supervise(settings, handle.clone(), shutdown.clone()));
    }
    // Intents speak swss-common's protocols: only databases that carry them get an engine.
    let intents = intent_engine.zip(adapters.databases.intent_feeds()).map(|(engine, feeds)| {
        let (intents, requests) = intent::engine::channel();
        tracker.spawn(engine.run(requests, feeds.connections, feeds.flushes, shutdown.clone()));
        intents
    });

    // The archives a switch image carries are imported before anything starts, so no service
    // is held for a missing image on first boot; later boots find nothing new, at once.
    let import_lock = driver.import_lock();
    let preloaded =
        crate::images::preload(adapters.runtime.as_ref(), &config.paths.images, &config.paths.state, &import_lock);
    if preloaded.await > 0 {
        notify::notify("STATUS=images preloaded");
    }
    let api_state = ApiState {
        handle: handle.clone(),
        runtime: adapters.runtime,
        manifests,
        logs_dir: config.paths.logs.clone(),
        intents,
        sonic_root: config.paths.sonic_root.clone(),
        shutdown: shutdown.clone(),
        state_dir: config.paths.state.clone(),
    };
    let api_token = shutdown.clone();
    tracker.spawn(async move {
        if let Err(e) = server::serve(listener, api_state, async move { api_token.cancelled().await }).await {
            tracing::error!(error = %e, "API server failed");
        }
    });

    // The first signal ends the daemon (services keep running unless configured otherwise).
    let stop_services = config.daemon.stop_services_on_exit;
    let (signal_handle, signal_shutdown) = (handle.clone(), shutdown.clone());
    tracker.spawn(async move {
        tokio::select! {
            () = first_signal.cancelled() => {}
            () = signal_shutdown.cancelled() => return,
        }
        tracing::info!(stop_services, "shutting down");
        notify::notify("STOPPING=1");
        if stop_services {
            let _ = signal_handle.request(Command::Shutdown { stop_services: true }).await;
        }
        signal_shutdown.cancel();
    });

    if let Some(interval) = notify::watchdog_interval() {
        // Pet the watchdog only while the supervisor loop answers: a wedged loop gets the
        // daemon restarted (services keep running and are adopted).
        let (token, loop_handle) = (shutdown.clone(), handle.clone());
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(interval / 4);
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match tokio::time::timeout(interval / 4, loop_handle.request(Command::Status)).await {
                    Ok(Ok(_)) => notify::notify("WATCHDOG=1"),
                    _ => tracing::warn!("the supervisor loop did not answer; not petting the watchdog"),
                }
            }
        });
    }

    notify::notify("READY=1\nSTATUS=supervising");
    tracing::info!(socket = %config.api.socket.display(), pid = std::process::id(), "daemon ready");
    driver.run().await;

    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::warn!("some tasks did not finish within 10s of shutdown");
    }
    let _ = std::fs::remove_file(&config.api.socket);
    tracing::info!("daemon stopped");
    Ok(())
}
