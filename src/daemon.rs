//! `soniclet daemon`: wires the real adapters to the supervisor and the API, and owns
//! shutdown (one cancellation token and one task tracker for every task).
//!
//! Start-up order matters for systemd: manifests and state are validated first (an invalid
//! set starts nothing and exits with `EX_CONFIG`), then containerd is reached, the API socket
//! bound and running containers adopted; only then is `READY=1` sent.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::server::{self, ApiState, BindError};
use crate::config::{Config, ConfigError};
use crate::dblink::{self, DbLink};
use crate::exit::Exit;
use crate::intent::engine::Engine as IntentEngine;
use crate::intent::{self, IntentError};
use crate::manifest::{self, LoadError};
use crate::probe::Prober;
use crate::runtime::containerd::Containerd;
use crate::runtime::RuntimeError;
use crate::store::{StateStore, StoreError};
use crate::supervisor::{Command, DbSide, Supervisor, SupervisorConfig};
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

/// Connects to containerd, retrying while it starts (at boot it may come up after us).
async fn connect_containerd(config: &Config, shutdown: &CancellationToken) -> Result<Containerd, RuntimeError> {
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
                tokio::select! {
                    () = shutdown.cancelled() => return Err(e),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Operators' starts and stops last until the next boot, as `systemctl start|stop` do: the
/// first daemon of a boot (no marker in the runtime directory yet) forgets them.
fn forget_desires_on_new_boot(config: &Config, store: &mut StateStore) -> Result<(), DaemonError> {
    let marker = config.paths.run.join("booted");
    if marker.exists() {
        return Ok(());
    }
    let io = |source| DaemonError::Io { path: marker.clone(), source };
    std::fs::create_dir_all(&config.paths.run).map_err(io)?;
    store.forget_desires();
    store.save()?;
    crate::fsutil::atomic_write(&marker, b"").map_err(io)?;
    tracing::info!("new boot: operators' starts and stops from the last boot are forgotten");
    Ok(())
}

/// Runs the daemon until `signal` completes (SIGTERM in production).
pub async fn run(config: Config, signal: impl Future<Output = ()> + Send + 'static) -> Result<(), DaemonError> {
    let manifests = Arc::new(manifest::load_dir(&config.paths.services)?);
    for dir in [&config.paths.state, &config.paths.logs] {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::Io { path: dir.clone(), source })?;
    }
    let mut store = StateStore::open(&config.paths.state)?;
    forget_desires_on_new_boot(&config, &mut store)?;
    // Intents need the database; load them now so a corrupt file stops the start.
    let intent_engine = match manifests.database() {
        Some(_) => Some(IntentEngine::open(&config.paths.state)?),
        None => None,
    };
    tracing::info!(services = manifests.len(), dir = %config.paths.services.display(), "manifests loaded");

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let first_signal = CancellationToken::new();
    let first_signal_trigger = first_signal.clone();
    tokio::spawn(async move {
        signal.await;
        first_signal_trigger.cancel();
    });

    let runtime = tokio::select! {
        r = connect_containerd(&config, &shutdown) => Arc::new(r?),
        () = first_signal.cancelled() => return Ok(()),
    };
    let listener = server::bind(&config.api.socket, config.api.group.as_deref())?;

    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/soniclet"));
    let sink = config.log_sink(program);
    let host = config.host_settings();
    let prober = Arc::new(Prober::new(Arc::clone(&runtime), host.clone()));
    let link = DbLink::new(config.paths.sonic_root.clone());
    let boot = config.boot_type();
    tracing::info!(boot = boot.as_str(), "boot type");
    let mut supervisor = Supervisor::new(
        SupervisorConfig {
            host,
            logs: sink,
            boot,
            delayed_fallback: Duration::from_secs(config.daemon.delayed_start_timeout),
        },
        Arc::clone(&manifests),
        Arc::clone(&runtime),
        prober,
        store,
        tracker.clone(),
        shutdown.clone(),
    );
    // With a database service, CONFIG_DB's FEATURE table decides what runs.
    let db_side = manifests.database().is_some().then(|| {
        let (messages_tx, messages_rx) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
        (DbSide { messages: messages_tx, database_ready: ready_tx }, messages_rx, ready_rx)
    });
    let db_task = match db_side {
        Some((side, reports_rx, ready_rx)) => {
            supervisor = supervisor.with_db(side);
            Some((reports_rx, ready_rx))
        }
        None => None,
    };
    supervisor.adopt().await?;
    let handle = supervisor.handle();
    if let Some((reports_rx, ready_rx)) = db_task {
        tracker.spawn(dblink::run(Arc::clone(&link), handle.clone(), reports_rx, ready_rx, boot, shutdown.clone()));
    }
    let intents = intent_engine.map(|engine| {
        let (intents, requests) = intent::engine::channel();
        tracker.spawn(engine.run(requests, link.subscribe(), link.appl_flushes(), shutdown.clone()));
        intents
    });

    // The archives a switch image carries are imported before anything starts, so no service
    // is held for a missing image on first boot; later boots find nothing new, at once.
    let import_lock = Arc::new(tokio::sync::Mutex::new(()));
    let preloaded = crate::images::preload(runtime.as_ref(), &config.paths.images, &config.paths.state, &import_lock);
    if preloaded.await > 0 {
        notify::notify("STATUS=images preloaded");
    }
    let api_state = ApiState {
        handle: handle.clone(),
        runtime: Arc::clone(&runtime),
        manifests,
        logs_dir: config.paths.logs.clone(),
        staging_dir: config.paths.state.join("staging"),
        import_lock,
        db: Arc::clone(&link),
        intents,
        sonic_root: config.paths.sonic_root.clone(),
        shutdown: shutdown.clone(),
        state_dir: config.paths.state.clone(),
        change_lock: Arc::new(tokio::sync::Mutex::new(())),
    };
    let api_token = shutdown.clone();
    tracker.spawn(async move {
        if let Err(e) = server::serve(listener, api_state, async move { api_token.cancelled().await }).await {
            tracing::error!(error = %e, "API server failed");
        }
    });

    // The first SIGTERM ends the daemon (services keep running unless configured otherwise);
    // a second one while draining forces the exit.
    let stop_services = config.daemon.stop_services_on_exit;
    let signal_handle = handle.clone();
    let signal_shutdown = shutdown.clone();
    tracker.spawn(async move {
        tokio::select! {
            () = first_signal.cancelled() => {}
            () = signal_shutdown.cancelled() => return,
        }
        tracing::info!(stop_services, "shutting down");
        notify::notify("STOPPING=1");
        if stop_services {
            let _ = signal_handle.request(|reply| Command::Shutdown { stop_services: true, reply }).await;
        }
        signal_shutdown.cancel();
    });

    if systemd::dbus::systemd_booted() {
        let (handle, shutdown) = (handle.clone(), shutdown.clone());
        let mut changes = handle.statuses();
        tracker.spawn(async move {
            // A panic in the mirror (a D-Bus surprise) must not leave systemd lying for the
            // rest of the daemon's life: log it and mirror again.
            loop {
                let manager = systemd::dbus::SystemdManager::new();
                let mirror = tokio::spawn(systemd::mirror::run(manager, changes, handle.clone(), shutdown.clone()));
                match mirror.await {
                    Err(e) if e.is_panic() && !shutdown.is_cancelled() => {
                        tracing::error!("the systemd mirror panicked; restarting it");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        changes = handle.statuses();
                    }
                    _ => return,
                }
            }
        });
    }

    if let Some(interval) = notify::watchdog_interval() {
        // Pet the watchdog only while the supervisor loop answers: a wedged loop gets the
        // daemon restarted (services keep running and are adopted).
        let token = shutdown.clone();
        let loop_handle = handle.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(interval / 4);
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let alive = loop_handle.request(|reply| Command::Status { reply });
                match tokio::time::timeout(interval / 4, alive).await {
                    Ok(Ok(_)) => notify::notify("WATCHDOG=1"),
                    _ => tracing::warn!("the supervisor loop did not answer; not petting the watchdog"),
                }
            }
        });
    }

    notify::notify("READY=1\nSTATUS=supervising");
    tracing::info!(socket = %config.api.socket.display(), pid = std::process::id(), "daemon ready");
    supervisor.run().await;

    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await.is_err() {
        tracing::warn!("some tasks did not finish within 10s of shutdown");
    }
    let _ = std::fs::remove_file(&config.api.socket);
    tracing::info!("daemon stopped");
    Ok(())
}
