//! `soniclet bench-raw` (hidden): the raw-containerd baseline of `cargo xtask bench boot`.
//!
//! It does the same work as a boot, straight through the containerd adapter, with no
//! supervisor, API or planning: every enabled service is created, started and probed as soon
//! as what it is ordered after is ready. The critical path is the sum, along the longest
//! dependency chain, of those services' create-to-ready times. Then it stops, recreates and
//! probes one service (the restart baseline). The daemon must not be running.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{CliResult, Failure};
use crate::config::Config;
use crate::exit::Exit;
use crate::manifest::{load_dir, Service, ServiceName};
use crate::probe::Prober;
use crate::runtime::containerd::Containerd;
use crate::runtime::{spec, ContainerRuntime, CreateContainer, LogSink};
use crate::supervisor::{container_digest, probe_until_ready, stop_container};

fn fail(message: impl std::fmt::Display) -> Failure {
    Failure { exit: Exit::Failure, message: message.to_string() }
}

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
        (crate::runtime::labels::SERVICE.to_owned(), id.clone()),
        (crate::runtime::labels::MANIFEST_DIGEST.to_owned(), container_digest(service, host)),
    ]
    .into_iter()
    .collect();
    runtime
        .create(CreateContainer { id: id.clone(), image, spec: spec::to_json(&rendered), labels })
        .await
        .map_err(fail)?;
    runtime.start(&id, sink).await.map_err(fail)?;
    // The same probe schedule as the supervisor's, so only orchestration differs.
    probe_until_ready(prober, service, &tokio_util::sync::CancellationToken::new()).await.map_err(fail)?;
    Ok(started.elapsed())
}

/// Boots every enabled service the way a perfect orchestrator would, straight on containerd:
/// each one is created and started the moment everything it is ordered after is ready.
/// Returns each service's create-to-ready time and the boot's wall time.
async fn raw_boot(
    runtime: &Arc<Containerd>,
    prober: &Arc<Prober<Containerd>>,
    host: &spec::HostSettings,
    sink: &LogSink,
    manifests: &crate::manifest::ManifestSet,
) -> Result<(std::collections::BTreeMap<ServiceName, f64>, f64), Failure> {
    use std::collections::BTreeMap;
    use tokio::sync::watch;
    let enabled: Vec<&Service> = manifests.services().filter(|s| s.manifest.service.enabled).collect();
    let mut ready_tx = BTreeMap::new();
    let mut ready_rx = BTreeMap::new();
    for service in &enabled {
        let (tx, rx) = watch::channel(false);
        ready_tx.insert(service.name.clone(), tx);
        ready_rx.insert(service.name.clone(), rx);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for service in enabled {
        let deps: Vec<watch::Receiver<bool>> =
            manifests.graph().ordered_after(&service.name).filter_map(|d| ready_rx.get(d).cloned()).collect();
        let tx = ready_tx.remove(&service.name).expect("one sender per service");
        let (runtime, prober, host, sink, service) =
            (Arc::clone(runtime), Arc::clone(prober), host.clone(), sink.clone(), service.clone());
        tasks.spawn(async move {
            for mut dep in deps {
                if dep.wait_for(|ready| *ready).await.is_err() {
                    return Err(fail(format!("a dependency of {} failed", service.name)));
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
    Ok((durations, started.elapsed().as_secs_f64() * 1000.0))
}

pub async fn run(config_path: &Path, restart: Option<String>, repeat: usize) -> CliResult {
    let config = Config::load(config_path).map_err(|e| Failure { exit: Exit::Config, message: e.to_string() })?;
    let manifests =
        load_dir(&config.paths.services).map_err(|e| Failure { exit: Exit::Config, message: e.to_string() })?;
    let runtime = Arc::new(
        Containerd::connect(&config.containerd.socket, &config.containerd.namespace)
            .await
            .map_err(|e| Failure { exit: Exit::Unavailable, message: e.to_string() })?,
    );
    let host = config.host_settings();
    let prober = Arc::new(Prober::new(Arc::clone(&runtime), host.clone()));
    let sink = LogSink {
        program: std::env::current_exe().map_err(fail)?,
        dir: config.paths.logs.clone(),
        max_bytes: config.daemon.log_max_bytes,
        max_files: config.daemon.log_max_files,
    };
    let enabled = manifests.services().filter(|s| s.manifest.service.enabled).map(|s| s.name.clone()).collect();
    let chain: Vec<ServiceName> = manifests.graph().longest_chain(&enabled);

    let mut runs = Vec::new();
    let mut restarts = Vec::new();
    for _ in 0..repeat.max(1) {
        let (durations, wall_ms) = raw_boot(&runtime, &prober, &host, &sink, &manifests).await?;
        let critical_path_ms: f64 = chain.iter().filter_map(|n| durations.get(n)).sum();
        let per_service: serde_json::Map<String, serde_json::Value> =
            durations.iter().map(|(n, ms)| (n.to_string(), json!(ms))).collect();
        runs.push(json!({"critical_path_ms": critical_path_ms, "wall_ms": wall_ms, "services": per_service}));
        if let Some(target) = &restart {
            let service = manifests.get(target).ok_or_else(|| fail(format!("unknown service {target}")))?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let started = Instant::now();
            let stop_time = Duration::from_secs(u64::from(service.manifest.service.stop_time));
            stop_container(&*runtime, target, stop_time).await.map_err(fail)?;
            bare_start(&runtime, &prober, &host, &sink, service).await?;
            restarts.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let containers = runtime.containers().await.map_err(fail)?;
        let removals = containers.iter().map(|c| runtime.remove(&c.id));
        for result in futures_util::future::join_all(removals).await {
            result.map_err(fail)?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let chain_names: Vec<&str> = chain.iter().map(|n| n.as_str()).collect();
    println!("{}", json!({"chain": chain_names, "runs": runs, "restart_ms": restarts}));
    Ok(())
}
