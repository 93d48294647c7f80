//! `cargo xtask bench <name> [--json FILE]`: benchmarks that print a table and, with
//! `--json`, write the same figures as JSON (name, value, unit, baseline, ratio).
//!
//! Each measures its baseline in the same run, on the same machine, so ratios are
//! comparable even when absolute figures move with the machine's load.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::images;
use crate::lab::{bench_lab, on_booted_lab, Lab};
use crate::metric::{median, print_table, write_json, Metric};
use crate::util::{build_bench, build_soniclet, ensure_packages, is_root, output, run, PREREQUISITES};

pub fn run_task(args: &[String]) -> Result<()> {
    let Some(name) = args.first() else {
        bail!("usage: cargo xtask bench <boot | appl-db | lifecycle | systemd | vasic | upgrade | onie | k8s> [--json FILE] [--idle-secs N] [--repeat N]")
    };
    let mut json = None;
    let mut idle_secs = 60u64;
    let mut repeat = 7usize;
    let mut iter = args[1..].iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--json" => json = Some(PathBuf::from(iter.next().context("--json needs a file")?)),
            "--idle-secs" => idle_secs = iter.next().context("--idle-secs needs a number")?.parse()?,
            "--repeat" => repeat = iter.next().context("--repeat needs a number")?.parse()?,
            other => bail!("unknown bench option {other:?}"),
        }
    }
    if !is_root() {
        bail!("benchmarks run containers: run as root");
    }
    ensure_packages(PREREQUISITES)?;
    let metrics = match name.as_str() {
        "boot" => boot(idle_secs, repeat)?,
        "appl-db" => appl_db(repeat.min(5))?,
        "lifecycle" => lifecycle(repeat.min(5))?,
        "systemd" => crate::bench_vs::systemd(repeat.min(5))?,
        "vasic" => crate::bench_vasic::vasic(repeat.min(5))?,
        "upgrade" => crate::bench_upgrade::upgrade(repeat)?,
        "onie" => crate::bench_onie::onie()?,
        "k8s" => crate::bench_k8s::k8s(repeat.min(5))?,
        other => {
            bail!(
                "unknown benchmark {other:?}; available: boot, appl-db, lifecycle, systemd, vasic, upgrade, onie, k8s"
            )
        }
    };
    print_table(&format!("cargo xtask bench {name}"), &metrics);
    write_json(json.as_deref(), &metrics)
}

/// A throwaway lab under /tmp for one benchmark run.
/// The service `bench boot` restarts: one service alone. Not swss: since SONiC's lifecycle
/// semantics, a swss restart takes its whole failure group along (`bench lifecycle` times
/// that against raw containerd).
const RESTARTED: &str = "bgp";

fn proc_field(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz: f64 = output(Command::new("getconf").arg("CLK_TCK"))?.trim().parse().unwrap_or(100.0);
    Ok(ticks / hz)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn boot(idle_secs: u64, repeat: usize) -> Result<Vec<Metric>> {
    let soniclet = build_soniclet()?;
    let built = images::run(Some(&soniclet))?;
    let lab = bench_lab(&soniclet);
    let result = boot_in(&lab, &built, idle_secs, repeat);
    let _ = lab.down();
    let _ = std::fs::remove_dir_all(lab.data.parent().unwrap_or(&lab.data));
    result
}

fn boot_in(lab: &Lab, built: &[(String, PathBuf, String)], idle_secs: u64, repeat: usize) -> Result<Vec<Metric>> {
    let bench = build_bench()?;
    lab.ensure_containerd()?;
    // Warm-up, not measured: import the images and boot once, so every run finds the same
    // content, snapshots and page cache.
    lab.start_daemon()?;
    let archives: Vec<String> = built.iter().map(|(_, p, _)| p.display().to_string()).collect();
    run(lab.cli().args(["image", "import"]).args(&archives).stderr(std::process::Stdio::null()))?;
    run(lab.cli().args(["wait", "--timeout", "180"]))?;
    run(lab.cli().args(["shutdown", "--stop-services"]))?;

    // Interleaved: each iteration boots with soniclet, then raw, so the machine's noise
    // falls on both alike.
    let (mut boots, mut restarts, mut raw_boots, mut raw_walls, mut raw_restarts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut chain = String::new();
    let quiet = || std::process::Stdio::null();
    for i in 0..repeat {
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::fs::remove_dir_all(lab.data.join("state"));
        let started = Instant::now();
        lab.start_daemon()?;
        run(lab.cli().args(["wait", "--timeout", "180"]).stdout(quiet()))?;
        boots.push(ms(started.elapsed()));
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        run(lab.cli().args(["restart", RESTARTED]).stdout(quiet()))?;
        restarts.push(ms(started.elapsed()));
        run(lab.cli().args(["shutdown", "--stop-services"]).stdout(quiet()))?;

        // The baseline: the same containers, straight through containerd, no supervisor.
        std::thread::sleep(Duration::from_millis(500));
        let raw =
            output(Command::new(&bench).args(["raw", "--config"]).arg(lab.config()).args(["--restart", RESTARTED]))?;
        let raw: serde_json::Value = serde_json::from_str(&raw).context("soniclet-bench raw output")?;
        raw_boots.push(raw["runs"][0]["critical_path_ms"].as_f64().context("critical path")?);
        raw_walls.push(raw["runs"][0]["wall_ms"].as_f64().context("wall time")?);
        raw_restarts.push(raw["restart_ms"][0].as_f64().context("restart")?);
        chain = raw["runs"][0]["chain"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(" -> ");
        eprintln!(
            "bench: run {} of {repeat}: boot {:.1} ms (raw critical path {:.1}), restart {:.1} ms (raw {:.1})",
            i + 1,
            boots[i],
            raw_boots[i],
            restarts[i],
            raw_restarts[i]
        );
    }
    eprintln!("bench: raw critical path of the last run: {chain}");

    let daemon_pid = lab.start_daemon()?;
    run(lab.cli().args(["wait", "--timeout", "180"]).stdout(quiet()))?;
    let rss_kib = proc_field(daemon_pid, "VmRSS:").context("daemon RSS")?;
    eprintln!("bench: measuring the idle daemon's CPU for {idle_secs} s");
    let cpu_before = cpu_seconds(daemon_pid)?;
    std::thread::sleep(Duration::from_secs(idle_secs));
    let cpu_idle = (cpu_seconds(daemon_pid)? - cpu_before) / idle_secs as f64 * 100.0;
    run(lab.cli().args(["shutdown", "--stop-services"]).stdout(quiet()))?;

    Ok(vec![
        Metric::new(
            "boot to ready, full VS set (12 services), median",
            median(&mut boots),
            "ms",
            Some(median(&mut raw_boots)),
            "overhead <= 15% (ratio <= 1.15)",
        ),
        Metric::new("raw containerd boot, wall time (for reference)", median(&mut raw_walls), "ms", None, ""),
        Metric::new(
            "restart to ready (bgp), median",
            median(&mut restarts),
            "ms",
            Some(median(&mut raw_restarts)),
            "ratio <= 1.2",
        ),
        Metric::new("daemon RSS after boot", rss_kib / 1024.0, "MiB", None, "<= 25 MiB"),
        Metric::new(&format!("daemon CPU over {idle_secs} s idle"), cpu_idle, "%", None, "<= 1% of one core"),
    ])
}

/// A private redis-server configured as SONiC's database container configures it.
struct Redis {
    dir: PathBuf,
    child: std::process::Child,
}

impl Redis {
    fn start() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("soniclet-bench-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("redis.sock");
        let conf = dir.join("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "port 0\nunixsocket {}\nunixsocketperm 700\ndatabases 100\nnotify-keyspace-events AKE\nsave \"\"\n\
                 appendonly no\nclient-output-buffer-limit pubsub 0 0 0\ndir {}\nlogfile \"\"\n",
                socket.display(),
                dir.display()
            ),
        )?;
        let child = Command::new("redis-server").arg(&conf).stdout(std::process::Stdio::null()).spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { dir, child })
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn appl_db(repeat: usize) -> Result<Vec<Metric>> {
    let bench = build_bench()?;
    let redis = Redis::start()?;
    let mut runs: Vec<serde_json::Value> = Vec::new();
    for i in 0..repeat.max(1) {
        let out = output(Command::new(&bench).args(["db", "--socket"]).arg(redis.socket()))?;
        let run: serde_json::Value = serde_json::from_str(&out).context("soniclet-bench db output")?;
        eprintln!(
            "bench: run {} of {repeat}: producer {:.0}/s, drain {:.0}/s, end to end {:.0}/s, raw HSET {:.0}/s",
            i + 1,
            run["producer_per_s"].as_f64().unwrap_or(0.0),
            run["consumer_drain_per_s"].as_f64().unwrap_or(0.0),
            run["end_to_end_per_s"].as_f64().unwrap_or(0.0),
            run["raw_hset_per_s"].as_f64().unwrap_or(0.0)
        );
        runs.push(run);
    }
    let med = |key: &str| median(&mut runs.iter().filter_map(|r| r[key].as_f64()).collect::<Vec<_>>());
    let raw = med("raw_hset_per_s");
    let batch = runs[0]["pop_batch"].as_u64().unwrap_or(0);
    Ok(vec![
        Metric::new(
            "producer, 100k ROUTE_TABLE entries x 3 fields",
            med("producer_per_s"),
            "e/s",
            Some(raw),
            ">= 150000 e/s",
        ),
        Metric::new(
            &format!("consumer drain (pop batch {batch})"),
            med("consumer_drain_per_s"),
            "e/s",
            Some(raw),
            ">= 110000 e/s",
        ),
        Metric::new(
            "end to end, producer and consumer together",
            med("end_to_end_per_s"),
            "e/s",
            Some(raw),
            ">= 70000 e/s",
        ),
        Metric::new("single update, write to pop, p50", med("latency_p50_ms"), "ms", None, ""),
        Metric::new("single update, write to pop, p99", med("latency_p99_ms"), "ms", None, ""),
        Metric::new("raw Redis: pipelined HSETs (the ceiling)", raw, "e/s", None, ""),
    ])
}

fn status_json(lab: &Lab) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&output(lab.cli().args(["status", "--json"]))?)?)
}

fn pid_of(status: &serde_json::Value, name: &str) -> Option<u64> {
    status["services"].as_array()?.iter().find(|s| s["name"] == name)?["pid"].as_u64()
}

/// Group recovery after a syncd crash, and config reload.
fn lifecycle(repeat: usize) -> Result<Vec<Metric>> {
    on_booted_lab(|lab| lifecycle_in(lab, repeat))
}

fn lifecycle_in(lab: &Lab, repeat: usize) -> Result<Vec<Metric>> {
    let quiet = || std::process::Stdio::null();
    let order: Vec<String> = {
        let check: serde_json::Value =
            serde_json::from_str(&output(lab.cli().args(["manifests", "check", "--json"]).arg(&lab.services))?)?;
        check["start_order"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
    };
    let group = ["swss", "syncd", "teamd", "bgp", "radv", "dhcp_relay"];
    let (mut recoveries, mut reloads, mut sequentials) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..repeat.max(1) {
        std::thread::sleep(Duration::from_millis(500));
        let before = status_json(lab)?;
        let syncd = pid_of(&before, "syncd").context("syncd runs")?;
        run(Command::new("kill").args(["-9", &syncd.to_string()]))?;
        let started = Instant::now();
        // Once the daemon has seen the crash, it answers `wait` when every member and
        // dependent is back and ready; poll only for that first moment.
        loop {
            let now = status_json(lab)?;
            let state = now["services"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == "syncd"))
                .map(|e| e["state"].clone());
            if state.is_some_and(|s| s != "running") || pid_of(&now, "syncd") != Some(syncd) {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the daemon did not notice the syncd crash within 30 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        run(lab.cli().arg("wait").args(group).stdout(quiet()))?;
        recoveries.push(ms(started.elapsed()));

        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        run(lab.cli().args(["config", "reload", "--force"]).stdout(quiet()).stderr(quiet()))?;
        reloads.push(ms(started.elapsed()));

        // The baseline: the same daemon, one service at a time, stop all then start all.
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        for name in order.iter().rev().filter(|n| *n != "database") {
            run(lab.cli().args(["stop", name]).stdout(quiet()))?;
        }
        for name in order.iter().filter(|n| *n != "database") {
            run(lab.cli().args(["start", name]).stdout(quiet()))?;
        }
        sequentials.push(ms(started.elapsed()));
        eprintln!(
            "bench: run {} of {repeat}: group recovery {:.1} ms, config reload {:.1} ms, sequential {:.1} ms",
            i + 1,
            recoveries[i],
            reloads[i],
            sequentials[i]
        );
    }
    run(lab.cli().args(["shutdown", "--stop-services"]).stdout(quiet()))?;
    std::thread::sleep(Duration::from_millis(500));
    let raw = output(
        Command::new(build_bench()?)
            .args(["raw", "--config"])
            .arg(lab.config())
            .args(["--crash", "syncd", "--repeat"])
            .arg(repeat.to_string()),
    )?;
    let raw: serde_json::Value = serde_json::from_str(&raw).context("soniclet-bench raw output")?;
    let mut raw_recoveries: Vec<f64> =
        raw["group_recovery_ms"].as_array().into_iter().flatten().filter_map(|v| v.as_f64()).collect();
    eprintln!("bench: raw group recovery {raw_recoveries:?} ms");
    Ok(vec![
        Metric::new(
            "swss group recovery after a syncd crash",
            median(&mut recoveries),
            "ms",
            Some(median(&mut raw_recoveries)),
            "baseline: raw containerd, same restarts",
        ),
        Metric::new(
            "config reload, full VS set",
            median(&mut reloads),
            "ms",
            Some(median(&mut sequentials)),
            "baseline: sequential stop-all/start-all",
        ),
    ])
}
