//! `soniclet bench-raw` (hidden): the raw-containerd baseline of `cargo xtask bench boot`.
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

use super::{CliResult, Failure};
use crate::config::Config;
use crate::db::config::DbConfig;
use crate::db::Db;
use crate::exit::Exit;
use crate::manifest::{load_dir, ManifestSet, Service, ServiceName};
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
        .create(CreateContainer { id: id.clone(), image, spec: spec::to_json(&rendered), labels, rootfs: None })
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

pub async fn run(config_path: &Path, restart: Option<String>, crash: Option<String>, repeat: usize) -> CliResult {
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
    let sink = config.log_sink(std::env::current_exe().map_err(fail)?);
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

/// `soniclet bench-db`: the APPL_DB workload of `cargo xtask bench appl-db`, on the Redis at
/// `socket` (which must be empty). Prints JSON.
pub async fn appl_db(socket: &Path, entries: usize, samples: usize, batch: usize) -> CliResult {
    use crate::db::consumer_state::ConsumerStateTable;
    use crate::db::producer_state::ProducerStateTable;
    use crate::db::{Db, Op};

    let db = Db::open_socket(socket, 0).await.map_err(fail)?;
    let route = |i: usize| Op::Set {
        key: format!("{}.{}.{}.0/24", 10 + i / 65536, (i / 256) % 256, i % 256),
        fields: vec![
            ("nexthop".to_owned(), format!("10.0.{}.1", i % 200)),
            ("ifname".to_owned(), format!("Ethernet{}", (i % 32) * 4)),
            ("protocol".to_owned(), "static".to_owned()),
        ],
    };
    let ops: Vec<Op> = (0..entries).map(route).collect();
    let rate = |n: usize, took: Duration| n as f64 / took.as_secs_f64();
    let producer = ProducerStateTable::new(&db, "ROUTE_TABLE");

    // 1. The producer alone, into an empty table.
    let started = Instant::now();
    producer.apply(&ops).await.map_err(fail)?;
    let produce = rate(entries, started.elapsed());

    // 2. A consumer draining that backlog, one pop of <= `batch` per notification.
    let consumer = ConsumerStateTable::new(&db, "ROUTE_TABLE", batch).await.map_err(fail)?;
    let started = Instant::now();
    let mut got = 0;
    while got < entries {
        got += consumer.next().await.map_err(fail)?.len();
    }
    let drain = rate(entries, started.elapsed());
    db.flushdb().await.map_err(fail)?;
    drop(consumer);

    // 3. Both at once: from the first write to the last pop.
    let consumer = ConsumerStateTable::new(&db, "ROUTE_TABLE", batch).await.map_err(fail)?;
    let started = Instant::now();
    let writer = {
        let producer = producer.clone();
        let ops = ops.clone();
        tokio::spawn(async move {
            for chunk in ops.chunks(1000) {
                producer.apply(chunk).await?;
            }
            Ok::<_, crate::db::DbError>(())
        })
    };
    let mut got = 0;
    while got < entries {
        got += consumer.next().await.map_err(fail)?.len();
    }
    let end_to_end = rate(entries, started.elapsed());
    writer.await.map_err(fail)?.map_err(fail)?;
    db.flushdb().await.map_err(fail)?;
    drop(consumer);

    // 4. Latency of one update on an idle system: write to pop.
    let consumer = ConsumerStateTable::new(&db, "ROUTE_TABLE", batch).await.map_err(fail)?;
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let op = route(i);
        let started = Instant::now();
        producer.apply(std::slice::from_ref(&op)).await.map_err(fail)?;
        loop {
            if !consumer.next().await.map_err(fail)?.is_empty() {
                break;
            }
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    db.flushdb().await.map_err(fail)?;

    // 5. The ceiling: plain pipelined HSETs of the same entries.
    let plain: Vec<(String, crate::db::Fields)> = ops
        .iter()
        .map(|op| match op {
            Op::Set { key, fields } => (format!("ROUTE_TABLE:{key}"), fields.clone()),
            Op::Del { key } => (key.clone(), Vec::new()),
        })
        .collect();
    let started = Instant::now();
    db.hset_many(&plain).await.map_err(fail)?;
    let raw = rate(entries, started.elapsed());
    db.flushdb().await.map_err(fail)?;

    println!(
        "{}",
        json!({
            "entries": entries,
            "pop_batch": batch,
            "producer_per_s": produce,
            "consumer_drain_per_s": drain,
            "end_to_end_per_s": end_to_end,
            "latency_p50_ms": pct(0.50),
            "latency_p99_ms": pct(0.99),
            "raw_hset_per_s": raw,
        })
    );
    Ok(())
}

/// `soniclet bench-route-latency`: one route at a time, from its APPL_DB write (the
/// ProducerStateTable protocol) to its entry in ASIC_STATE; `samples` routes via `nexthop` on
/// `ifname`, removed afterwards. Prints JSON with the p50 and p99 in milliseconds.
pub async fn route_latency(socket: &Path, samples: usize, ifname: &str, nexthop: &str) -> CliResult {
    use crate::db::producer_state::ProducerStateTable;
    use crate::db::Db;
    use crate::vasic::sai;

    let appl = Db::open_socket(socket, 0).await.map_err(fail)?;
    let asic = Db::open_socket(socket, 1).await.map_err(fail)?;
    let producer = ProducerStateTable::new(&appl, "ROUTE_TABLE");
    let fields = vec![("nexthop".to_owned(), nexthop.to_owned()), ("ifname".to_owned(), ifname.to_owned())];
    let mut latencies = Vec::with_capacity(samples);
    let mut written = Vec::with_capacity(samples);
    for i in 0..samples {
        let prefix = format!("10.201.{}.{}/32", i / 256, i % 256);
        let started = Instant::now();
        producer.set(&prefix, &fields).await.map_err(fail)?;
        let deadline = started + Duration::from_secs(10);
        // The route entry's key names the default router's VID, which only orch knows: match
        // the dest among the route entries.
        let pattern = format!("ASIC_STATE:{}:{{\"dest\":\"{prefix}\"*", sai::ObjectType::RouteEntry.name());
        loop {
            if !asic.keys(&pattern).await.map_err(fail)?.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(Failure { exit: Exit::Timeout, message: format!("{prefix} never reached ASIC_STATE") });
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        written.push(prefix);
    }
    for prefix in &written {
        producer.del(prefix).await.map_err(fail)?;
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!("{}", json!({ "samples": samples, "p50_ms": at(0.5), "p99_ms": at(0.99) }));
    Ok(())
}

/// `soniclet bench-netlink-routes`: the baseline of `cargo xtask bench vasic`: `count` /32
/// routes via `nexthop` on `dev` straight over rtnetlink (the virtual ASIC's own adapter, no
/// Redis), into table `table`, then removed. Prints JSON with the seconds the adds took.
pub async fn netlink_routes(count: usize, dev: &str, nexthop: &str, table: u32) -> CliResult {
    use crate::vasic::kernel::Kernel;
    use crate::vasic::netlink::Netlink;
    use crate::vasic::syncd::{KernelOp, RouteVia};

    let kernel = Netlink::connect().map_err(fail)?;
    let gateway: std::net::IpAddr =
        nexthop.parse().map_err(|_| Failure { exit: Exit::Usage, message: format!("{nexthop:?} is not an IP") })?;
    let route = |i: usize, add: bool| KernelOp::Route {
        table,
        dest: (std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 100, (i / 256) as u8, (i % 256) as u8)), 32),
        via: RouteVia::Gateways(vec![(gateway, dev.to_owned())]),
        add,
    };
    let started = Instant::now();
    for i in 0..count {
        kernel.apply(&route(i, true)).await.map_err(fail)?;
    }
    let took = started.elapsed().as_secs_f64();
    for i in 0..count {
        kernel.apply(&route(i, false)).await.map_err(fail)?;
    }
    println!("{}", json!({ "routes": count, "seconds": took }));
    Ok(())
}
