//! `cargo xtask bench k8s`: the switch as a Kubernetes node, on a booted virtual switch
//! (`--name bench`), each figure beside its baseline from the same run:
//!
//! - a pod's start through CRI (sandbox, container, running) on the switch's containerd with
//!   the whole NOS running, beside the same with the NOS stopped (an idle containerd);
//! - a NOS service's restart-to-ready (`soniclet restart bgp`, the daemon's own downtime
//!   figure) and an intent's APPL_DB-to-ASIC_DB latency (p99) while pods saturate the CPU
//!   and hold memory, beside the same without them;
//! - the daemon's RSS and idle CPU with its Kubernetes work on (joined to a stand-in API
//!   server: labels, the condition, the pod watcher), beside off;
//! - a kube-owned feature's handover (its pod running to the local container stopped) beside
//!   a plain `soniclet stop` of it, and its fallback (the pod gone to the local container
//!   ready) beside a plain `soniclet start`.
//!
//! The pods are the kubelet's, played by `soniclet-bench pod-start` over CRI; the API server
//! is `soniclet-bench fake-apiserver`, in the switch's network namespace.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::metric::{median, Metric};
use crate::switch::Switch;
use crate::util::{build_bench, output, project_root};
use crate::vs;

const POD_IMAGE: &str = "docker.io/library/docker-teamd:latest";
const TELEMETRY_IMAGE: &str = "docker.io/library/docker-sonic-telemetry:latest";
/// The stand-in API server's port, on the switch's loopback.
const API_PORT: u16 = 16443;
/// How long the daemon's idle CPU is measured for.
const IDLE: Duration = Duration::from_secs(30);

/// Runs `script` inside the switch between two clock readings; milliseconds.
fn timed(switch: &Switch, script: &str) -> Result<f64> {
    let out = switch.sh(&format!("s=$(date +%s%N); {script} >/dev/null; e=$(date +%s%N); echo $((e - s))"))?;
    let nanos: f64 = out.trim().parse().with_context(|| format!("timing {script:?}: {out:?}"))?;
    Ok(nanos / 1e6)
}

struct Kubelet {
    bench: std::path::PathBuf,
    leader: u32,
}

struct Pod {
    sandbox: String,
    ms: f64,
}

impl Kubelet {
    fn start(&self, name: &str, image: &str, script: &str, memory_limit: Option<u64>) -> Result<Pod> {
        let mut command = Command::new(&self.bench);
        command.args(["pod-start", "--leader", &self.leader.to_string(), "--name", name, "--image", image]);
        command.args(["--script", script]);
        if let Some(limit) = memory_limit {
            command.args(["--memory-limit", &limit.to_string()]);
        }
        let answer: Value = serde_json::from_str(&output(&mut command)?).context("soniclet-bench pod-start output")?;
        Ok(Pod {
            sandbox: answer["sandbox"].as_str().context("pod-start: no sandbox")?.to_owned(),
            ms: answer["ms"].as_f64().context("pod-start: no ms")?,
        })
    }

    fn remove(&self, pod: &Pod) -> Result<()> {
        output(Command::new(&self.bench).args([
            "pod-remove",
            "--leader",
            &self.leader.to_string(),
            "--sandbox",
            &pod.sandbox,
        ]))?;
        Ok(())
    }
}

/// `soniclet status <service> --json`.
fn service(switch: &Switch, name: &str) -> Result<Value> {
    Ok(serde_json::from_str(&switch.sh(&format!("soniclet status {name} --json"))?)?)
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if done()? {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("timed out after {timeout:?} waiting until {what}")
}

/// The p99 of `samples` (the largest but the top 1 %), in place.
fn p99(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let index = ((samples.len() as f64) * 0.99).ceil() as usize;
    samples[index.saturating_sub(1).min(samples.len() - 1)]
}

/// Restart-to-ready of bgp (the daemon's downtime figure) and single-route intent latencies.
fn nos_latencies(switch: &Switch, dir: &Path, repeat: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut restarts = Vec::new();
    for _ in 0..repeat {
        switch.sh("soniclet restart bgp >/dev/null")?;
        restarts.push(service(switch, "bgp")?["downtime_ms"].as_f64().context("bgp's downtime")?);
    }
    let mut latencies = Vec::new();
    for i in 0..repeat * 4 {
        let file = dir.join(format!("route-{i}.yaml"));
        std::fs::write(&file, format!("routes:\n  - {{ prefix: 198.51.100.{}/32, blackhole: true }}\n", i % 250 + 1))?;
        switch.sh(&format!("soniclet intent apply {} --wait >/dev/null", file.display()))?;
        let report: Value = serde_json::from_str(&switch.sh("soniclet intent status --json")?)?;
        let latency = report["intents"]
            .as_array()
            .and_then(|intents| intents.iter().find_map(|i| i["latency_ms"].as_f64()))
            .context("the route's latency")?;
        latencies.push(latency);
    }
    Ok((restarts, latencies))
}

/// The daemon's RSS (KiB) and CPU share (percent of one core) over `IDLE`.
fn daemon_footprint(switch: &Switch) -> Result<(f64, f64)> {
    let script = format!(
        "p=$(systemctl show -p MainPID --value soniclet); \
         t1=$(awk '{{print $14+$15}}' /proc/$p/stat); sleep {}; t2=$(awk '{{print $14+$15}}' /proc/$p/stat); \
         rss=$(awk '/VmRSS/ {{print $2}}' /proc/$p/status); echo $rss $((t2 - t1)) $(getconf CLK_TCK)",
        IDLE.as_secs()
    );
    let out = switch.sh(&script)?;
    let fields: Vec<f64> = out.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let [rss, ticks, hz] = fields[..] else { bail!("daemon footprint: {out:?}") };
    Ok((rss, ticks / hz / IDLE.as_secs_f64() * 100.0))
}

/// The agent's files of a joined switch, its kubeconfig naming the stand-in API server.
const JOINED: &str = "mkdir -p /etc/rancher/k3s /var/lib/rancher/k3s/agent && \
printf 'server: https://bench.invalid:6443\\nnode-name: bench\\ntoken-file: /etc/rancher/k3s/soniclet-token\\n' \
  > /etc/rancher/k3s/config.yaml && \
printf 'apiVersion: v1\\nkind: Config\\nclusters:\\n- name: c\\n  cluster:\\n    server: http://127.0.0.1:16443\\n\
users:\\n- name: u\\n  user:\\n    token: bench\\ncontexts:\\n- name: x\\n  context:\\n    cluster: c\\n    user: u\\n\
current-context: x\\n' > /var/lib/rancher/k3s/agent/kubelet.kubeconfig";

/// The stand-in API server, stopped when dropped (whatever the benchmark's end).
struct ApiServer(Child);

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fake_apiserver(bench: &Path, switch: &Switch) -> Result<ApiServer> {
    Command::new("ip")
        .args(["netns", "exec", &switch.netns()])
        .arg(bench)
        .args(["fake-apiserver", "--port", &API_PORT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(ApiServer)
        .context("cannot start the stand-in API server")
}

pub fn k8s(repeat: usize) -> Result<Vec<Metric>> {
    let repeat = repeat.max(3);
    let bench = build_bench()?;
    let rootfs = vs::build_rootfs()?;
    let switch = Switch::new("bench");
    switch.down()?;
    switch.uninstall()?;
    eprintln!("bench: booting the bench switch");
    vs::up_quiet(&switch, &rootfs)?;
    let kubelet = Kubelet { bench: bench.clone(), leader: switch.leader().context("the bench switch runs")? };
    let dir = project_root().join("target/bench-k8s");
    std::fs::create_dir_all(&dir)?;
    switch.sh("for i in docker-teamd docker-sonic-telemetry; do \
           ctr --namespace k8s.io images import /usr/share/soniclet/images/$i.tar >/dev/null && \
           ctr --namespace k8s.io images tag --force $i:latest docker.io/library/$i:latest >/dev/null; done")?;

    // Pod starts: the NOS running, then stopped.
    let mut busy = Vec::new();
    for i in 0..repeat {
        let pod = kubelet.start(&format!("start-{i}"), POD_IMAGE, "exec sleep 100000", None)?;
        busy.push(pod.ms);
        kubelet.remove(&pod)?;
    }
    let (mut restarts, mut latencies) = nos_latencies(&switch, &dir, repeat)?;

    // Pods that saturate both cores and hold memory.
    let spin = kubelet.start("cpu-hog", POD_IMAGE, "while :; do :; done & while :; do :; done & wait", None)?;
    let hold = kubelet.start(
        "memory-hog",
        POD_IMAGE,
        "a=$(head -c 200000000 /dev/zero | tr '\\000' x); sleep 100000",
        Some(1 << 30),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let (mut restarts_loaded, mut latencies_loaded) = nos_latencies(&switch, &dir, repeat)?;
    kubelet.remove(&spin)?;
    kubelet.remove(&hold)?;

    // The daemon's footprint: the Kubernetes work off, then on (joined, reporting).
    switch.sh(
        "printf '\\n[kubernetes]\\nreport = false\\n' >> /etc/soniclet/config.toml && systemctl restart soniclet \
         && soniclet wait --timeout 60 >/dev/null",
    )?;
    std::thread::sleep(Duration::from_secs(5));
    let (rss_off, cpu_off) = daemon_footprint(&switch)?;
    let api = fake_apiserver(&bench, &switch)?;
    switch.sh(&format!(
        "sed -i '/^\\[kubernetes\\]/,$d' /etc/soniclet/config.toml && {JOINED} && systemctl restart soniclet \
         && soniclet wait --timeout 60 >/dev/null"
    ))?;
    std::thread::sleep(Duration::from_secs(5));
    let (rss_on, cpu_on) = daemon_footprint(&switch)?;

    // Handover and fallback of a kube-owned feature, beside a plain stop and start.
    let (mut stops, mut starts, mut handovers, mut fallbacks) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeat {
        stops.push(timed(&switch, "soniclet stop telemetry")?);
        starts.push(timed(&switch, "soniclet start telemetry")?);
    }
    switch.sh("soniclet feature owner telemetry kube >/dev/null")?;
    for _ in 0..repeat {
        // Named after the feature, as its DaemonSet's container is.
        let pod = kubelet.start("telemetry", TELEMETRY_IMAGE, "exec -a sleep /usr/bin/telemetry 100000", None)?;
        let handed = wait_until("telemetry is Kubernetes'", Duration::from_secs(30), || {
            Ok(service(&switch, "telemetry")?["state"] == "kube"
                && !switch.sh("ctr --namespace sonic tasks list --quiet")?.lines().any(|l| l == "telemetry"))
        })?;
        handovers.push(handed.as_secs_f64() * 1000.0);
        kubelet.remove(&pod)?;
        let back = wait_until("telemetry runs locally", Duration::from_secs(30), || {
            let view = service(&switch, "telemetry")?;
            Ok(view["state"] == "running" && view["ready"] == true)
        })?;
        fallbacks.push(back.as_secs_f64() * 1000.0);
    }
    drop(api);
    switch.down()?;

    let idle = {
        // The idle baseline last: a fresh boot with the NOS stopped.
        vs::up_quiet(&switch, &rootfs)?;
        let kubelet = Kubelet { bench, leader: switch.leader().context("the bench switch runs")? };
        switch.sh("soniclet stop database >/dev/null; \
             until [ -z \"$(ctr --namespace sonic tasks list --quiet)\" ]; do sleep 0.2; done")?;
        let mut idle = Vec::new();
        for i in 0..repeat {
            let pod = kubelet.start(&format!("idle-{i}"), POD_IMAGE, "exec sleep 100000", None)?;
            idle.push(pod.ms);
            kubelet.remove(&pod)?;
        }
        switch.down()?;
        idle
    };
    let mut idle = idle;

    let latency_p99 = p99(&mut latencies);
    Ok(vec![
        Metric::new(
            "pod start through CRI, NOS running vs idle containerd",
            median(&mut busy),
            "ms",
            Some(median(&mut idle)),
            "",
        ),
        Metric::new(
            "bgp restart-to-ready, pods saturating CPU and memory vs none",
            median(&mut restarts_loaded),
            "ms",
            Some(median(&mut restarts)),
            "",
        ),
        Metric::new(
            "intent latency p99, pods saturating CPU and memory vs none",
            p99(&mut latencies_loaded),
            "ms",
            Some(latency_p99),
            "",
        ),
        Metric::new(
            "daemon RSS, Kubernetes work on vs off",
            rss_on / 1024.0,
            "MiB",
            Some(rss_off / 1024.0),
            "+ < 5 MiB",
        ),
        Metric::new("daemon idle CPU, Kubernetes work on vs off", cpu_on, "%", Some(cpu_off), ""),
        Metric::new(
            "handover: pod running to local container stopped vs soniclet stop",
            median(&mut handovers),
            "ms",
            Some(median(&mut stops)),
            "",
        ),
        Metric::new(
            "fallback: pod gone to local container ready vs soniclet start",
            median(&mut fallbacks),
            "ms",
            Some(median(&mut starts)),
            "",
        ),
    ])
}
