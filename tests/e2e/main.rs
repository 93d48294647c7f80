//! e2e tier: an operator's systemd habits on a booted virtual switch.
//!
//! The switch is the shipped rootfs booted by systemd-nspawn with systemd as PID 1, containerd
//! and soniclet inside (`cargo xtask vs --name e2e --fresh`, which `cargo xtask ci` runs before
//! this tier and powers off after it). Every check goes through `systemctl`, `journalctl` and
//! the container task PIDs inside the switch, entered with `nsenter`.
//!
//! The steps share one switch and build on each other, so they run in order in one test. The
//! last one sends packets through the switch's virtual ASIC from the hosts cabled to it.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../../src/bin/soniclet-bench/kubelet.rs"]
mod kubelet;
use kubelet::{ContainerState, Kubelet};

const SWITCH_DIR: &str = "/var/lib/soniclet-vs/e2e";
/// The Kubernetes namespace of the tier's pods.
const POD_NAMESPACE: &str = "sonic-e2e";
const PATH_INSIDE: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The swss failure group and its dependents (services/*.toml).
const SWSS_SET: &[&str] = &["swss", "syncd", "teamd", "bgp", "radv", "dhcp_relay"];
/// Services a swss restart must not touch.
const OUTSIDE_SWSS: &[&str] = &["database", "lldp", "pmon", "snmp", "telemetry", "mgmt-framework"];

struct Switch {
    leader: u32,
}

impl Switch {
    fn attach() -> Self {
        let leader = std::fs::read_to_string(format!("{SWITCH_DIR}/leader.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        let Some(leader) = leader else {
            panic!(
                "the e2e switch is not running: boot it with `cargo xtask vs --name e2e --fresh` \
                 (`cargo xtask ci` does), then run this tier again"
            );
        };
        Self { leader }
    }

    fn run(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["--target", &self.leader.to_string(), "--all", "--", "/usr/bin/env", "-i"])
            .arg(format!("PATH={PATH_INSIDE}"))
            .args(["HOME=/root", "LANG=C.UTF-8", "SYSTEMD_PAGER=cat", "/bin/bash", "-c", script])
            .output()
            .expect("nsenter runs")
    }

    /// Runs `script` in the switch; its stdout. Panics with the output when it fails.
    fn sh(&self, script: &str) -> String {
        let out = self.run(script);
        assert!(
            out.status.success(),
            "`{script}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn props(&self, unit: &str, names: &[&str]) -> BTreeMap<String, String> {
        let out = self.sh(&format!("systemctl show {unit}.service -p {}", names.join(",")));
        out.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }

    fn prop(&self, unit: &str, name: &str) -> String {
        self.props(unit, &[name]).remove(name).unwrap_or_default()
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.sh("soniclet status --json")).expect("status is JSON")
    }

    fn service(&self, name: &str) -> Value {
        serde_json::from_str(&self.sh(&format!("soniclet status {name} --json"))).expect("status is JSON")
    }

    /// Container task PIDs by service (running ones only).
    fn pids(&self) -> BTreeMap<String, u64> {
        let status = self.status();
        status["services"]
            .as_array()
            .expect("services")
            .iter()
            .filter_map(|s| Some((s["name"].as_str()?.to_owned(), s["pid"].as_u64()?)))
            .collect()
    }

    fn invocations(&self, units: &[&str]) -> BTreeMap<String, String> {
        units.iter().map(|u| (u.to_string(), self.prop(u, "InvocationID"))).collect()
    }

    fn containers(&self) -> Vec<String> {
        self.sh("ctr --namespace sonic containers list --quiet").lines().map(str::to_owned).collect()
    }

    fn wait_until(&self, what: &str, timeout: Duration, mut done: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if done(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = self.sh("soniclet status; systemctl list-units --all --no-pager '*.service' | head -40");
        panic!("timed out after {timeout:?} waiting until {what}\n{status}");
    }

    fn all_active(&self, units: &[&str]) -> bool {
        units.iter().all(|u| self.prop(u, "ActiveState") == "active")
    }

    fn all_ready(&self) -> bool {
        let status = self.status();
        status["services"]
            .as_array()
            .expect("services")
            .iter()
            .all(|s| !s["enabled"].as_bool().unwrap() || s["ready"].as_bool().unwrap())
    }
}

fn step(name: &str) {
    eprintln!("e2e: {name}");
}

fn enabled_services(switch: &Switch) -> Vec<String> {
    let status = switch.status();
    status["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter(|s| s["enabled"].as_bool() == Some(true))
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

/// CLOCK_MONOTONIC (µs) of the daemon's log entries for `service` in this boot whose message
/// starts with `what` (`ready`, `starting`), oldest first.
fn logged_at(switch: &Switch, service: &str, what: &str) -> Vec<u64> {
    let out = switch.sh(&format!("journalctl -b -o json --no-pager SYSLOG_IDENTIFIER=soniclet SERVICE={service}"));
    let times: Vec<u64> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["MESSAGE"].as_str().is_some_and(|m| m.starts_with(&format!("{what} "))))
        .filter_map(|e| e["MONOTONIC_USEC"].as_str()?.parse().ok())
        .collect();
    assert!(!times.is_empty(), "no {what:?} entry for {service} in the daemon's journal");
    times
}

#[test]
#[ignore = "needs a switch booted by `cargo xtask vs --name e2e`: `cargo xtask ci` runs it"]
fn systemctl_tells_the_truth_on_a_booted_switch() {
    let switch = Switch::attach();
    switch.wait_until("every enabled service is ready", Duration::from_secs(120), Switch::all_ready);
    let enabled = enabled_services(&switch);
    let units: Vec<&str> = enabled.iter().map(String::as_str).collect();
    assert!(units.len() >= 12, "the VS set runs: {units:?}");

    step("1. every enabled unit is active, and became active only after its probe passed");
    switch.wait_until("every enabled unit is active", Duration::from_secs(60), |s| s.all_active(&units));
    for unit in &units {
        let props = switch.props(unit, &["SubState", "ActiveEnterTimestampMonotonic", "StatusText"]);
        assert_eq!(props["SubState"], "running", "{unit}");
        assert!(props["StatusText"].ends_with(", ready"), "{unit}: {}", props["StatusText"]);
        let active_at: u64 = props["ActiveEnterTimestampMonotonic"].parse().unwrap();
        let ready_at = logged_at(&switch, unit, "ready")[0];
        assert!(
            active_at >= ready_at,
            "{unit}.service became active at {active_at} µs, before its probe passed at {ready_at} µs"
        );
    }
    let verify =
        switch.run("systemd-analyze verify /usr/lib/systemd/system/soniclet.service /run/systemd/generator/*.service");
    assert!(
        verify.status.success() && verify.stderr.is_empty() && verify.stdout.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    step("1k. the kubelet runs a host-network pod on the switch's containerd, beside the NOS");
    let images = switch.sh("ctr --namespace k8s.io images list --quiet");
    assert!(
        images.lines().any(|l| l == "soniclet.local/pause:1"),
        "the pause image is imported into k8s.io at boot: {images}"
    );
    // As a registry would give it to the kubelet: CRI names images in full.
    switch.sh("ctr --namespace k8s.io images import /usr/share/soniclet/images/docker-teamd.tar >/dev/null && \
         ctr --namespace k8s.io images tag --force docker-teamd:latest docker.io/library/docker-teamd:latest");
    let mut kubelet = Kubelet::connect(switch.leader, POD_NAMESPACE);
    kubelet.remove_leftovers();
    let (runtime, api) = kubelet.version();
    assert_eq!((runtime.as_str(), api.as_str()), ("containerd", "v1"));
    let probe = kubelet.run_pod("probe", "docker.io/library/docker-teamd:latest", "exec sleep 100000", None);
    let probe_pid = kubelet.wait_for(&probe, ContainerState::ContainerRunning, Duration::from_secs(30)).pid;
    let pid = probe_pid.expect("CRI reports the pod's pid");
    let cgroup = switch.sh(&format!("cat /proc/{pid}/cgroup"));
    assert!(cgroup.contains("/kubepods.slice/"), "the pod runs under kubepods.slice: {cgroup}");
    let swss_cgroup = switch.sh(&format!("cat /proc/{}/cgroup", switch.pids()["swss"]));
    assert!(!swss_cgroup.contains("kubepods"), "the NOS runs outside kubepods: {swss_cgroup}");
    assert!(swss_cgroup.contains("/sonic.slice/sonic-swss.scope"), "the NOS runs in sonic.slice: {swss_cgroup}");
    assert_eq!(switch.prop("soniclet", "Slice"), "sonic.slice", "the daemon runs in the NOS slice");
    let scope = switch.sh("systemctl show sonic-swss.scope -p MemoryMin --value");
    assert_eq!(scope.trim(), (64u64 << 20).to_string(), "swss's scope has its memory floor (the default)");
    let slice_floor: u64 = switch.sh("systemctl show sonic.slice -p MemoryMin --value").trim().parse().unwrap();
    assert!(slice_floor >= 12 * (64 << 20), "the slice's floor covers every service's: {slice_floor}");
    // On cgroup v1 systemd applies CPUWeight= as cpu.shares; the kubelet gives kubepods at
    // most its allocatable CPU's (about 1,400 shares on two cores).
    let shares = |slice: &str| -> u64 {
        switch.sh(&format!("cat /sys/fs/cgroup/cpu/{slice}/cpu.shares")).trim().parse().unwrap()
    };
    let (nos, pods) = (shares("sonic.slice"), shares("kubepods.slice"));
    assert!(nos >= 10 * 1024 && nos > 4 * pods, "the NOS outweighs the pods: {nos} shares against {pods}");
    let agent = switch.props("k3s-agent", &["UnitFileState", "KillMode", "Delegate", "ActiveState"]);
    assert_eq!(
        (agent["UnitFileState"].as_str(), agent["KillMode"].as_str(), agent["Delegate"].as_str()),
        ("disabled", "process", "yes"),
        "k3s-agent.service ships disabled, with k3s's installer's settings: {agent:?}"
    );
    assert_eq!(agent["ActiveState"], "inactive", "no agent runs on a switch that has not joined");
    let status = switch.status();
    let seen: Vec<&str> = status["services"].as_array().unwrap().iter().filter_map(|s| s["name"].as_str()).collect();
    assert!(!seen.iter().any(|s| s.contains("probe")), "soniclet does not adopt the pod: {seen:?}");

    step("2. systemctl restart swss restarts the group and its dependents, and nothing else");
    let pids = switch.pids();
    let invocations = switch.invocations(&units);
    switch.sh("systemctl restart swss");
    switch.wait_until("the swss group and its dependents are back", Duration::from_secs(90), |s| {
        s.all_active(SWSS_SET) && s.all_ready()
    });
    let pids_after = switch.pids();
    let invocations_after = switch.invocations(&units);
    for unit in SWSS_SET {
        assert_ne!(pids[*unit], pids_after[*unit], "{unit}'s container task restarted");
        assert_ne!(invocations[*unit], invocations_after[*unit], "{unit}.service shows the restart");
    }
    for unit in OUTSIDE_SWSS {
        assert_eq!(pids[*unit], pids_after[*unit], "{unit}'s task is untouched");
        assert_eq!(invocations[*unit], invocations_after[*unit], "{unit}.service is untouched");
    }

    step("3. systemctl stop bgp: unit inactive, container gone; systemctl start bgp: both back");
    switch.sh("systemctl stop bgp");
    assert_eq!(switch.prop("bgp", "ActiveState"), "inactive");
    assert_eq!(switch.prop("bgp", "Result"), "success", "a stop on request is not a failure");
    assert!(!switch.containers().contains(&"bgp".to_owned()), "bgp's container is deleted");
    assert_eq!(switch.service("bgp")["state"], "stopped");
    switch.sh("systemctl start bgp");
    assert_eq!(switch.prop("bgp", "ActiveState"), "active");
    assert!(switch.containers().contains(&"bgp".to_owned()));
    assert_eq!(switch.service("bgp")["ready"], true, "systemctl start returns once bgp is ready");

    step("3b. systemctl start bgp while swss is stopped starts swss first");
    switch.sh("systemctl stop swss");
    for unit in SWSS_SET {
        assert_eq!(switch.prop(unit, "ActiveState"), "inactive", "{unit} stopped with swss");
    }
    switch.sh("systemctl start bgp");
    switch.wait_until("swss, syncd and teamd units are active", Duration::from_secs(60), |s| {
        s.all_active(&["swss", "syncd", "teamd", "bgp"])
    });
    assert_eq!(switch.service("swss")["ready"], true);
    let swss_ready = *logged_at(&switch, "swss", "ready").last().unwrap();
    let bgp_start = *logged_at(&switch, "bgp", "starting").last().unwrap();
    assert!(swss_ready < bgp_start, "swss was ready ({swss_ready} µs) before bgp started ({bgp_start} µs)");
    // radv and dhcp_relay went down with swss; bring them back for the next steps.
    switch.sh("systemctl start radv dhcp_relay");
    switch.wait_until("every unit is active again", Duration::from_secs(60), |s| s.all_active(&units) && s.all_ready());

    step("4. systemctl restart soniclet leaves every container task PID unchanged");
    let pids = switch.pids();
    let invocations = switch.invocations(&units);
    let daemon = switch.status()["daemon"]["pid"].as_u64();
    switch.sh("systemctl restart soniclet && soniclet wait --timeout 60 >/dev/null");
    assert_ne!(switch.status()["daemon"]["pid"].as_u64(), daemon, "the daemon restarted");
    assert_eq!(switch.pids(), pids);
    assert_eq!(switch.invocations(&units), invocations, "no unit restarted");

    step("5. kill -9 of lldp's main process shows in STATUS=, then the unit is plain active again");
    let old = switch.service("lldp")["pid"].as_u64().unwrap();
    let trace = switch.sh(&format!(
        "kill -9 {old}; for i in $(seq 1500); do \
           line=$(systemctl show lldp.service -p ActiveState -p StatusText | sort | paste -sd'|'); \
           echo \"$line\"; case \"$line\" in *'pid {old},'*) ;; *'StatusText=running, pid '*', ready') break;; esac; \
           sleep 0.01; done"
    ));
    let lines: Vec<&str> = trace.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with("ActiveState=active|")), "the unit stayed active: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("restart")), "STATUS= explained the restart: {lines:?}");
    let last = lines.last().unwrap();
    assert!(last.ends_with(", ready") && !last.contains(&format!("pid {old},")), "plain active again: {lines:?}");
    let restarted = switch.service("lldp");
    assert_ne!(restarted["pid"].as_u64(), Some(old));
    assert_eq!(restarted["restarts"], 1);

    step("6. journalctl -u swss shows the container's output");
    let journal = switch.sh("journalctl -u swss -b -o json --no-pager");
    let entries: Vec<Value> = journal.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let output = entries.iter().find(|e| {
        e["SYSLOG_IDENTIFIER"] == "swss" && e["MESSAGE"].as_str().is_some_and(|m| m.contains("started orchagent"))
    });
    let output = output.unwrap_or_else(|| panic!("no container output for swss in journalctl -u swss"));
    assert_eq!(output["OBJECT_SYSTEMD_UNIT"], "swss.service");
    assert_eq!(output["_SYSTEMD_UNIT"], "containerd.service", "written by the log shim, under containerd");

    step("7. a crash loop ends with the unit failed");
    let deadline = Instant::now() + Duration::from_secs(90);
    while switch.prop("pmon", "ActiveState") != "failed" {
        assert!(Instant::now() < deadline, "pmon.service never failed");
        if let Some(pid) = switch.service("pmon")["pid"].as_u64() {
            let _ = switch.run(&format!("kill -9 {pid}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let props = switch.props("pmon", &["Result", "ExecMainStatus", "StatusText"]);
    assert_eq!(props["Result"], "exit-code");
    assert_eq!(props["ExecMainStatus"], "8", "soniclet's exit code for a failed service");
    assert!(props["StatusText"].starts_with("failed: "), "{props:?}");
    assert_eq!(switch.service("pmon")["state"], "failed");
    // An operator's start clears the failure.
    switch.sh("systemctl start pmon");
    assert_eq!(switch.prop("pmon", "ActiveState"), "active");
    assert_eq!(switch.service("pmon")["ready"], true);

    step("8. the README's first intent: e2e-h1 pings e2e-h2 across VLAN 10 of the booted switch");
    for (host, address) in [("e2e-h1", "192.168.10.1/24"), ("e2e-h2", "192.168.10.2/24")] {
        let out = Command::new("ip").args(["-n", host, "addr", "replace", address, "dev", "eth1"]).output().unwrap();
        assert!(out.status.success(), "{host}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vlan10.yaml");
    switch.sh(&format!("soniclet intent apply {fixture}"));
    let ping = || {
        Command::new("ip")
            .args(["netns", "exec", "e2e-h1", "ping", "-c", "1", "-W", "1", "192.168.10.2"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ping() {
        assert!(Instant::now() < deadline, "e2e-h1 cannot reach e2e-h2: {}", switch.sh("soniclet intent status"));
    }
    assert!(switch.sh("soniclet intent status").contains("5 programmed, 0 pending, 0 failed"));

    step("9. soniclet upgrade bgp: the unit follows the switch-over, a broken image leaves it active on the old one");
    let variants = concat!(env!("CARGO_MANIFEST_DIR"), "/target/images/variants");
    let v1 = switch.service("bgp")["image_digest"].as_str().unwrap().to_owned();
    let outside: Vec<&str> = OUTSIDE_SWSS.iter().chain(["swss", "syncd"].iter()).copied().collect();
    let invocations = switch.invocations(&outside);
    let pids = switch.pids();
    switch.sh(&format!("soniclet upgrade bgp --image {variants}/docker-fpm-frr-v2.tar --settle 1"));
    switch.wait_until("bgp.service is active on the new image", Duration::from_secs(30), |s| {
        s.all_active(&["bgp"]) && s.service("bgp")["ready"] == true
    });
    let v2 = switch.service("bgp")["image_digest"].as_str().unwrap().to_owned();
    assert_ne!(v1, v2);
    assert_ne!(switch.pids()["bgp"], pids["bgp"]);
    for unit in &outside {
        assert_eq!(switch.pids()[*unit], pids[*unit], "{unit}'s task is untouched by bgp's upgrade");
    }
    assert_eq!(switch.invocations(&outside), invocations, "no other unit restarted");
    let out = switch.run(&format!("soniclet upgrade bgp --image {variants}/docker-fpm-frr-exits.tar --settle 1"));
    assert_eq!(out.status.code(), Some(9), "{}", String::from_utf8_lossy(&out.stderr));
    switch.wait_until("bgp.service is active on v2 again", Duration::from_secs(30), |s| {
        s.all_active(&["bgp"]) && s.service("bgp")["ready"] == true
    });
    assert_eq!(switch.service("bgp")["image_digest"], v2.as_str());
    assert_eq!(switch.prop("bgp", "Result"), "success", "a rolled-back upgrade does not fail the unit");
    assert!(switch.sh("journalctl -u soniclet --no-pager").contains("image change ended"));
    switch.sh("soniclet rollback bgp --settle 1");
    assert_eq!(switch.service("bgp")["image_digest"], v1.as_str());
    let history = switch.sh("soniclet history bgp");
    assert_eq!(history.lines().count(), 4, "{history}");

    step("10. the pod lived through every step; kill -9 of soniclet and a containerd restart touch neither side");
    let pod_alive = |kubelet: &mut Kubelet, when: &str| {
        let status = kubelet.status(&probe);
        assert_eq!(status.state, ContainerState::ContainerRunning, "{when}: the pod runs: {status:?}");
        assert_eq!(status.pid, probe_pid, "{when}: the pod's task is the same");
    };
    pod_alive(&mut kubelet, "after restarts, upgrades and image collection");
    let k8s_images = switch.sh("ctr --namespace k8s.io images list --quiet");
    assert!(
        k8s_images.contains("soniclet.local/pause:1") && k8s_images.contains("docker-teamd:latest"),
        "{k8s_images}"
    );
    let pids = switch.pids();
    let invocations = switch.invocations(&units);
    switch.sh("systemctl kill --signal=KILL --kill-whom=main soniclet");
    switch.wait_until("soniclet is back", Duration::from_secs(60), |s| {
        s.run("soniclet wait --timeout 5").status.success()
    });
    pod_alive(&mut kubelet, "after kill -9 of soniclet");
    assert_eq!(switch.pids(), pids, "no NOS task changed after kill -9 of soniclet");
    switch.sh("systemctl restart containerd");
    switch.wait_until("soniclet sees containerd again", Duration::from_secs(60), |s| {
        s.run("soniclet wait --timeout 5").status.success() && s.all_ready()
    });
    let mut kubelet = Kubelet::connect(switch.leader, POD_NAMESPACE);
    pod_alive(&mut kubelet, "after a containerd restart");
    assert_eq!(switch.pids(), pids, "no NOS task changed after a containerd restart");
    assert_eq!(switch.invocations(&units), invocations, "no NOS unit restarted");

    step("11. a pod that eats memory is OOM-killed inside kubepods; the NOS is untouched");
    let hog = kubelet.run_pod(
        "hog",
        "docker.io/library/docker-teamd:latest",
        "a=0123456789abcdef; while :; do a=$a$a; done",
        Some(64 << 20),
    );
    let hogged = kubelet.wait_for(&hog, ContainerState::ContainerExited, Duration::from_secs(60));
    assert_eq!(hogged.exit_code, 137, "the hog was killed ({}): {hogged:?}", hogged.reason);
    eprintln!("e2e: the hog ended {:?} ({})", hogged.state, hogged.reason);
    pod_alive(&mut kubelet, "after the hog");
    assert_eq!(switch.pids(), pids, "no NOS task changed while a pod ran out of memory");
    assert!(switch.all_ready(), "every service stays ready");

    step("12. deleting the pods leaves the NOS as it was");
    kubelet.remove(&hog);
    kubelet.remove(&probe);
    assert_eq!(switch.pids(), pids);
    assert!(switch.sh("ctr --namespace k8s.io containers list --quiet").trim().is_empty());

    step("13. soniclet k8s join enables the agent and waits for it to register; the NOS is untouched");
    // No registry ships k3s here: a stand-in in its place records how the unit ran it, then
    // registers as the kubelet does (its kubeconfig appears) and stays up.
    switch.sh("cat > /usr/local/bin/k3s <<'EOF'\n#!/bin/sh\necho \"$@\" > /run/k3s-args\n\
         cp /etc/rancher/k3s/config.yaml /run/k3s-config-seen\n\
         mkdir -p /var/lib/rancher/k3s/agent && echo 'kind: Config' > /var/lib/rancher/k3s/agent/kubelet.kubeconfig\n\
         exec sleep 100000\nEOF\nchmod 755 /usr/local/bin/k3s");
    const SECRET: &str = "K10e2e::server:never-in-a-log";
    switch.sh(&format!("umask 077; echo {SECRET} > /root/k3s-token"));
    let join = switch.run(
        "soniclet k8s join --server https://k3s.example.net:6443 --token-file /root/k3s-token --label rack=r1 --timeout 30",
    );
    let said = format!("{}{}", String::from_utf8_lossy(&join.stdout), String::from_utf8_lossy(&join.stderr));
    assert!(join.status.success(), "soniclet k8s join: {said}");
    assert!(said.contains("joined https://k3s.example.net:6443 as node"), "{said}");
    assert_eq!(switch.sh("systemctl is-enabled k3s-agent").trim(), "enabled");
    assert_eq!(switch.sh("cat /run/k3s-args").trim(), "agent", "the unit runs `k3s agent`");
    let seen = switch.sh("cat /run/k3s-config-seen");
    assert!(seen.contains("container-runtime-endpoint: unix:///run/containerd/containerd.sock"), "{seen}");
    assert!(seen.contains("rack=r1") && seen.contains("sonic.net/hwsku=Force10-S6000"), "{seen}");
    let status: Value = serde_json::from_str(&switch.sh("soniclet k8s status --json")).unwrap();
    assert_eq!((status["joined"].as_bool(), status["registered"].as_bool()), (Some(true), Some(true)), "{status}");
    assert_eq!(status["agent"], "active", "{status}");
    assert_eq!(
        switch.sh("journalctl -b --no-pager | grep -c never-in-a-log || true").trim(),
        "0",
        "no token in the journal"
    );
    assert_eq!(switch.pids(), pids, "joining touched no NOS task");

    step("14. on the node, FEATURE set_owner=kube: telemetry is handed to its ready pod, and comes back when the pod goes");
    // KubeSonic's DaemonSet, played by the kubelet: a pod whose container is named after the
    // feature, from the feature's own image, in which the feature's readiness probe passes.
    switch.sh("ctr --namespace k8s.io images import /usr/share/soniclet/images/docker-sonic-telemetry.tar >/dev/null && \
         ctr --namespace k8s.io images tag --force docker-sonic-telemetry:latest docker.io/library/docker-sonic-telemetry:latest");
    let local = switch.pids()["telemetry"];
    let said = switch.sh("soniclet feature owner telemetry kube");
    assert!(said.contains("owner kube (now local)"), "{said}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(switch.pids()["telemetry"], local, "no pod yet: the local container keeps serving");
    let pod = kubelet.run_pod(
        "telemetry",
        "docker.io/library/docker-sonic-telemetry:latest",
        "exec -a sleep /usr/bin/telemetry 100000",
        None,
    );
    let handed = Instant::now();
    switch
        .wait_until("telemetry is Kubernetes'", Duration::from_secs(30), |s| s.service("telemetry")["state"] == "kube");
    eprintln!("e2e: handed over {:.1}s after the pod started", handed.elapsed().as_secs_f64());
    let view = switch.service("telemetry");
    assert_eq!(view["ready"], true, "{view}");
    assert!(
        view["message"].as_str().unwrap_or_default().starts_with("runs as Kubernetes pod sonic-e2e/telemetry"),
        "{view}"
    );
    assert!(
        !switch.sh("ctr --namespace sonic tasks list --quiet").lines().any(|l| l == "telemetry"),
        "the local task is gone"
    );
    assert_eq!(switch.prop("telemetry", "ActiveState"), "active", "the unit stays active: the feature runs, as a pod");
    let status_text = switch.prop("telemetry", "StatusText");
    assert!(status_text.starts_with("owned by Kubernetes"), "{status_text}");
    let feature = switch.sh("soniclet db STATE_DB hgetall 'FEATURE|telemetry'");
    assert!(feature.contains("current_owner") && feature.contains("kube") && feature.contains("running"), "{feature}");
    let others: BTreeMap<String, u64> = switch.pids().into_iter().filter(|(n, _)| n != "telemetry").collect();
    let before_others: BTreeMap<String, u64> = pids.clone().into_iter().filter(|(n, _)| n != "telemetry").collect();
    assert_eq!(others, before_others, "no other NOS task changed");
    assert!(switch.all_ready(), "a ready pod counts as the feature ready");

    kubelet.remove(&pod);
    let gone = Instant::now();
    switch.wait_until("telemetry runs locally again", Duration::from_secs(30), |s| {
        let view = s.service("telemetry");
        view["state"] == "running" && view["ready"] == true
    });
    eprintln!("e2e: local again {:.1}s after the pod went", gone.elapsed().as_secs_f64());
    assert_eq!(switch.prop("telemetry", "ActiveState"), "active");
    switch.sh("soniclet feature owner telemetry local");
    assert!(switch.all_ready());

    step("15. soniclet k8s leave undoes the join; the NOS is untouched");
    let pids = switch.pids();
    let invocations = switch.invocations(&units);
    let leave = switch.run("soniclet k8s leave");
    assert!(leave.status.success(), "{}", String::from_utf8_lossy(&leave.stderr));
    assert_eq!(switch.prop("k3s-agent", "ActiveState"), "inactive");
    assert_eq!(switch.run("systemctl is-enabled k3s-agent").status.code(), Some(1), "disabled again");
    assert!(
        switch.run("test -e /etc/rancher/k3s/config.yaml || test -e /var/lib/rancher/k3s").status.code() == Some(1)
    );
    assert_eq!(switch.pids(), pids, "leaving touched no NOS task");
    assert_eq!(switch.invocations(&units), invocations, "no NOS unit restarted");

    step("16. CONFIG_DB KUBERNETES_MASTER|SERVER joins, as KubeSonic's `config kubernetes server` does, and disable leaves");
    switch.sh(&format!(
        "mkdir -p /etc/sonic/credentials && umask 077 && echo {SECRET} > /etc/sonic/credentials/k3s-token"
    ));
    switch.sh("soniclet db CONFIG_DB hset 'KUBERNETES_MASTER|SERVER' ip 10.9.8.7 port 6443");
    switch.wait_until("the daemon joins the server CONFIG_DB names", Duration::from_secs(30), |s| {
        s.sh("soniclet db STATE_DB hgetall 'KUBERNETES_MASTER|SERVER'").contains(r#""connected":"true""#)
    });
    assert!(switch.sh("cat /run/k3s-config-seen").contains("server: https://10.9.8.7:6443"));
    assert_eq!(switch.prop("k3s-agent", "ActiveState"), "active");
    switch.sh("soniclet db CONFIG_DB hset 'KUBERNETES_MASTER|SERVER' disable true");
    switch.wait_until("disable leaves the cluster", Duration::from_secs(30), |s| {
        s.run("test -e /etc/rancher/k3s/config.yaml").status.code() == Some(1)
    });
    assert_eq!(switch.prop("k3s-agent", "ActiveState"), "inactive");
    assert_eq!(switch.pids(), pids, "joining and leaving from CONFIG_DB touched no NOS task");
    assert_eq!(switch.invocations(&units), invocations, "no NOS unit restarted");
    assert_eq!(
        switch.sh("journalctl -b --no-pager | grep -c never-in-a-log || true").trim(),
        "0",
        "no token in the journal"
    );
    switch.sh("soniclet db CONFIG_DB del 'KUBERNETES_MASTER|SERVER'");
    switch.sh(
        "rm -f /usr/local/bin/k3s /root/k3s-token /etc/sonic/credentials/k3s-token /run/k3s-args /run/k3s-config-seen",
    );
}
