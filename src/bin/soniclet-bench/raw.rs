//! `soniclet-bench raw`: the raw-containerd baseline of `cargo xtask bench boot`.
//!
//! It does the same work as a boot, straight through the containerd adapter, with no
//! supervisor, API or planning: every enabled service is created, started and probed as soon
//! as what it is ordered after is ready, and, as SONiC does and soniclet does, a delayed service
//! not before APPL_DB has `PORT_TABLE:PortInitDone` (watched as tightly as a poll can). The
//! critical path is the chain with the most create-to-ready time, where a delayed service's
//! chain may start at the moment the ports were initialised. Then it stops, recreates and
//! probes one service (the restart baseline). The daemon must not be running.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use soniclet::config::Config;
use soniclet::db::config::DbConfig;
use soniclet::db::Db;
use soniclet::health::{probe_until_ready, Prober};
use soniclet::manifest::{load_dir, ManifestSet, Service, ServiceName};
use soniclet::runtime::containerd::Containerd;
use soniclet::runtime::spec::container_digest;
use soniclet::runtime::{spec, stop_container, ContainerRuntime, CreateContainer, LogSink};

use crate::{fail, Failure};

/// Create, start and probe one service; returns the elapsed time.
async fn bare_start(
    runtime: &Containerd,
    prober: &Prober<Containerd>,
    host: &spec::HostSettings,
    sink: &LogSink,
    service: &Service,
) -> Result<Duration, Failure> {
    let id = service.name.to_string();
    let started = Instant::now();
    let image = runtime.image(&service.manifest.container.image).await.map_err(fail)?;
    let rendered = spec::render(service, &image.config, host).map_err(fail)?;
    for source in spec::bind_sources(&rendered) {
        std::fs::create_dir_all(&source).map_err(fail)?;
    }
    let labels = [
        (soniclet::runtime::labels::SERVICE.to_owned(), id.clone()),
        (soniclet::runtime::labels::MANIFEST_DIGEST.to_owned(), container_digest(service, host)),
    ]
    .into_iter()
    .collect();
    runtime
        .create(CreateContainer {
            id: id.clone(),
            image,
            spec: spec::to_json(&rendered),
            labels,
            rootfs: None,
            systemd_cgroup: host.cgroups == spec::Cgroups::Systemd,
        })
        .await
        .map_err(fail)?;
    runtime.start(&id, sink).await.map_err(fail)?;
    // The same probe schedule as the supervisor's, so only orchestration differs.
    probe_until_ready(prober, service, &tokio_util::sync::CancellationToken::new()).await.map_err(fail)?;
    Ok(started.elapsed())
}

/// What a raw boot measured, in milliseconds from its start.
struct RawBoot {
    /// Each service's create-to-ready time.
    durations: BTreeMap<ServiceName, f64>,
    /// When every service was ready.
    wall_ms: f64,
    /// When APPL_DB had `PORT_TABLE:PortInitDone` (delayed services held for it).
    ports_ms: Option<f64>,
}

/// Boots every enabled service the way a perfect orchestrator would, straight on containerd:
/// each one is created and started the moment everything it is ordered after is ready and,
/// with `hold_delayed` (the SONiC root), a delayed one once the ports are initialised.
async fn raw_boot(
    runtime: &Arc<Containerd>,
    prober: &Arc<Prober<Containerd>>,
    host: &spec::HostSettings,
    sink: &LogSink,
    manifests: &ManifestSet,
    only: Option<&BTreeSet<ServiceName>>,
    hold_delayed: Option<&Path>,
) -> Result<RawBoot, Failure> {
    let enabled: Vec<&Service> = manifests
        .services()
        .filter(|s| s.manifest.service.enabled && only.is_none_or(|o| o.contains(&s.name)))
        .collect();
    let mut ready_tx = BTreeMap::new();
    let mut ready_rx = BTreeMap::new();
    for service in &enabled {
        let (tx, rx) = watch::channel(false);
        ready_tx.insert(service.name.clone(), tx);
        ready_rx.insert(service.name.clone(), rx);
    }
    let started = Instant::now();
    let (ports_tx, ports_rx) = watch::channel(None::<f64>);
    // Only a boot with delayed services waits for the ports at all.
    let hold_delayed = hold_delayed.filter(|_| enabled.iter().any(|s| s.manifest.service.delayed));
    let ports = match (hold_delayed, manifests.database().and_then(|d| ready_rx.get(d))) {
        (Some(root), Some(database_ready)) => {
            Some(tokio::spawn(watch_ports(root.to_owned(), database_ready.clone(), started, ports_tx)))
        }
        _ => None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for service in enabled {
        let deps: Vec<watch::Receiver<bool>> =
            manifests.graph().ordered_after(&service.name).filter_map(|d| ready_rx.get(d).cloned()).collect();
        let held = (ports.is_some() && service.manifest.service.delayed).then(|| ports_rx.clone());
        let tx = ready_tx.remove(&service.name).expect("one sender per service");
        let (runtime, prober, host, sink, service) =
            (Arc::clone(runtime), Arc::clone(prober), host.clone(), sink.clone(), service.clone());
        tasks.spawn(async move {
            for mut dep in deps {
                if dep.wait_for(|ready| *ready).await.is_err() {
                    return Err(fail(format!("a dependency of {} failed", service.name)));
                }
            }
            if let Some(mut ports) = held {
                if ports.wait_for(Option::is_some).await.is_err() {
                    return Err(fail(format!("{} waited for PortInitDone, which never came", service.name)));
                }
            }
            let took = bare_start(&runtime, &prober, &host, &sink, &service).await?;
            let _ = tx.send(true);
            Ok((service.name.clone(), took.as_secs_f64() * 1000.0))
        });
    }
    let mut durations = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (name, ms) = joined.map_err(fail)??;
        durations.insert(name, ms);
    }
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let ports_ms = match ports {
        Some(watcher) => Some(watcher.await.map_err(fail)??),
        None => None,
    };
    Ok(RawBoot { durations, wall_ms, ports_ms })
}

/// Polls APPL_DB (once the database is ready) until `PORT_TABLE:PortInitDone` exists, then
/// publishes when, in milliseconds since `started`.
async fn watch_ports(
    root: std::path::PathBuf,
    mut database_ready: watch::Receiver<bool>,
    started: Instant,
    seen: watch::Sender<Option<f64>>,
) -> Result<f64, Failure> {
    database_ready.wait_for(|ready| *ready).await.map_err(|_| fail("the database never became ready"))?;
    let config = DbConfig::load_under(None, &root).map_err(fail)?;
    let appl = config.locate("APPL_DB").ok_or_else(|| fail("database_config.json has no APPL_DB"))?;
    let appl = Db::open(appl, &root).await.map_err(fail)?;
    let deadline = started + Duration::from_secs(60);
    while !appl.exists("PORT_TABLE:PortInitDone").await.map_err(fail)? {
        if Instant::now() > deadline {
            return Err(fail("no PortInitDone in APPL_DB within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let at = started.elapsed().as_secs_f64() * 1000.0;
    let _ = seen.send(Some(at));
    Ok(at)
}

/// The raw side of a failure group's recovery: `crashed` is killed, then the group and its
/// dependents are stopped (dependents first, each wave in parallel) and started again in
/// dependency waves, straight through containerd.
async fn raw_group_recovery(
    runtime: &Arc<Containerd>,
    prober: &Arc<Prober<Containerd>>,
    host: &spec::HostSettings,
    sink: &LogSink,
    manifests: &ManifestSet,
    crashed: &str,
) -> Result<f64, Failure> {
    let group = manifests
        .get(crashed)
        .and_then(|s| s.failure_group())
        .ok_or_else(|| fail(format!("{crashed} is in no failure group")))?;
    let members = manifests.group_members(group);
    let dependents = manifests.group_dependents(group);
    runtime.kill(crashed, libc::SIGKILL, true).await.map_err(fail)?;
    let started = Instant::now();
    for wave in [&dependents, &members] {
        let stops = wave.iter().map(|name| {
            let stop_time = Duration::from_secs(u64::from(
                manifests.get(name.as_str()).map_or(10, |s| s.manifest.service.stop_time),
            ));
            stop_container(&**runtime, name.as_str(), stop_time)
        });
        for result in futures_util::future::join_all(stops).await {
            result.map_err(fail)?;
        }
    }
    let set: BTreeSet<ServiceName> = members.into_iter().chain(dependents).collect();
    // Delayed start is a boot's: a failure group's recovery holds nothing for the ports.
    raw_boot(runtime, prober, host, sink, manifests, Some(&set), None).await?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

pub async fn run(
    config_path: &Path,
    restart: Option<String>,
    crash: Option<String>,
    repeat: usize,
) -> Result<(), Failure> {
    let config = Config::load(config_path).map_err(fail)?;
    let manifests = load_dir(&config.paths.services).map_err(fail)?;
    let runtime =
        Arc::new(Containerd::connect(&config.containerd.socket, &config.containerd.namespace).await.map_err(fail)?);
    let host = config.host_settings();
    let prober = Arc::new(Prober::new(Arc::clone(&runtime), host.clone()));
    // The log shim is the product binary's, beside this one.
    let program = std::env::current_exe().map_err(fail)?.with_file_name("soniclet");
    let sink = config.log_sink(program);
    let enabled = manifests.services().filter(|s| s.manifest.service.enabled).map(|s| s.name.clone()).collect();

    let mut runs = Vec::new();
    let mut restarts = Vec::new();
    let mut recoveries = Vec::new();
    for _ in 0..repeat.max(1) {
        let boot = raw_boot(&runtime, &prober, &host, &sink, &manifests, None, Some(&config.paths.sonic_root)).await?;
        runs.push(boot_report(&manifests, &enabled, &boot));
        if let Some(target) = &restart {
            let service = manifests.get(target).ok_or_else(|| fail(format!("unknown service {target}")))?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let started = Instant::now();
            let stop_time = Duration::from_secs(u64::from(service.manifest.service.stop_time));
            stop_container(&*runtime, target, stop_time).await.map_err(fail)?;
            bare_start(&runtime, &prober, &host, &sink, service).await?;
            restarts.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        if let Some(crashed) = &crash {
            tokio::time::sleep(Duration::from_millis(300)).await;
            recoveries.push(raw_group_recovery(&runtime, &prober, &host, &sink, &manifests, crashed).await?);
        }
        let containers = runtime.containers().await.map_err(fail)?;
        let removals = containers.iter().map(|c| runtime.remove(&c.id));
        for result in futures_util::future::join_all(removals).await {
            result.map_err(fail)?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("{}", json!({"runs": runs, "restart_ms": restarts, "group_recovery_ms": recoveries}));
    Ok(())
}

/// A boot's figures as JSON: its critical path (and the chain that makes it, `PortInitDone`
/// first when the ports held its first service), wall time and each service's time.
fn boot_report(manifests: &ManifestSet, enabled: &BTreeSet<ServiceName>, boot: &RawBoot) -> serde_json::Value {
    let ports_ms = boot.ports_ms.unwrap_or(0.0);
    let path = manifests.graph().critical_path(
        enabled,
        |n| boot.durations.get(n).copied().unwrap_or(0.0),
        |n| if manifests.get(n.as_str()).is_some_and(|s| s.manifest.service.delayed) { ports_ms } else { 0.0 },
    );
    let mut chain: Vec<String> = Vec::new();
    if path.gate > 0.0 {
        chain.push(format!("PortInitDone at {:.0} ms", path.gate));
    }
    chain.extend(path.chain.iter().map(|n| n.to_string()));
    let services: serde_json::Map<String, serde_json::Value> =
        boot.durations.iter().map(|(n, ms)| (n.to_string(), json!(ms))).collect();
    json!({
        "critical_path_ms": path.total,
        "chain": chain,
        "wall_ms": boot.wall_ms,
        "ports_ms": boot.ports_ms,
        "services": services,
    })
}
