//! Per-service image changes on the full VS set: upgrades gated on health, automatic and
//! manual rollback, warm upgrades, release manifests, history, image collection, bad input,
//! and a `kill -9` of the daemon at every step of the journal.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::lifecycle_sonic::booted_vs;
use crate::support::{project_root, wait_until, TestSwitch};

fn archive(name: &str) -> String {
    project_root().join(format!("target/images/{name}.tar")).display().to_string()
}

fn variant(name: &str) -> String {
    archive(&format!("variants/{name}"))
}

/// The manifest digest `cargo xtask images` recorded for an archive.
fn digest(name: &str) -> String {
    let text = std::fs::read_to_string(project_root().join("target/images/digests.json")).unwrap();
    let digests: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
    digests[name].clone()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn history(sw: &TestSwitch, service: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(&sw.cli_ok(&["history", service, "--json"])).unwrap().as_array().unwrap().clone()
}

fn running_digest(sw: &TestSwitch, service: &str) -> String {
    sw.service(service)["image_digest"].as_str().unwrap_or_default().to_owned()
}

/// Image names in soniclet's namespace with their digests.
fn stored_images(sw: &TestSwitch) -> Vec<(String, String)> {
    let list: Value = serde_json::from_str(&sw.cli_ok(&["image", "ls", "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap().to_owned(), i["digest"].as_str().unwrap().to_owned()))
        .collect()
}

fn assert_ready_on(sw: &TestSwitch, service: &str, digest: &str) {
    let status =
        sw.wait_service(service, Duration::from_secs(60), |s| s["ready"] == true && s["image_digest"] == digest);
    assert_eq!(status["image_digest"], digest, "{status}");
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn an_upgrade_changes_only_its_service_and_a_rollback_undoes_it_and_old_images_are_collected() {
    let sw = booted_vs();
    let v1 = digest("docker-fpm-frr");
    let (v2, v3) = (digest("variants/docker-fpm-frr-v2"), digest("variants/docker-fpm-frr-v3"));
    assert_eq!(running_digest(&sw, "bgp"), v1);
    let before = sw.pids();

    let out = sw.cli(&["upgrade", "bgp", "--image", &variant("docker-fpm-frr-v2"), "--settle", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // Progress for each long step, then the outcome with its downtime.
    let said = text(&out);
    for step in ["verifying", "preparing", "stopping the old container", "new container started", "settling"] {
        assert!(said.contains(step), "no {step:?} in the progress:\n{said}");
    }
    assert!(said.contains("down ") && said.contains(" ms"), "{said}");
    assert_ready_on(&sw, "bgp", &v2);
    let after = sw.pids();
    for (service, pid) in &before {
        if service == "bgp" {
            assert_ne!(after[service], *pid, "bgp was not restarted");
        } else {
            assert_eq!(after[service], *pid, "{service} changed PID: only the upgraded service may");
        }
    }
    let bgp = sw.service("bgp");
    assert!(bgp["image"].as_str().unwrap().starts_with("docker-fpm-frr@sha256:"), "{bgp}");
    assert!(bgp["upgrade"].as_str().unwrap().contains("changed to"), "{bgp}");
    assert_eq!(sw.hgetall("STATE_DB", "SERVICE_UPGRADE_TABLE|bgp")["state"], "succeeded");
    // The image stays pinned by digest whatever is imported under its tag later.
    sw.cli_ok(&["image", "import", &archive("docker-fpm-frr")]);

    sw.cli_ok(&["upgrade", "bgp", "--image", &variant("docker-fpm-frr-v3"), "--settle", "0"]);
    assert_ready_on(&sw, "bgp", &v3);
    // Current (v3) and previous (v2) are kept; v1, older, is gone from the namespace.
    assert!(
        wait_until(Duration::from_secs(10), || !stored_images(&sw).iter().any(|(_, d)| *d == v1)),
        "v1 was not collected: {:?}",
        stored_images(&sw)
    );
    let stored = stored_images(&sw);
    assert!(stored.iter().any(|(_, d)| *d == v2) && stored.iter().any(|(_, d)| *d == v3), "{stored:?}");
    // Other services' images are untouched.
    assert!(stored.iter().any(|(n, _)| n == "docker-orchagent:latest"), "{stored:?}");

    // A manual rollback returns to the image before (v2); another one toggles back (v3).
    let out = sw.cli(&["rollback", "bgp", "--settle", "0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_ready_on(&sw, "bgp", &v2);
    assert_eq!(sw.pids()["swss"], before["swss"]);

    let entries = history(&sw, "bgp");
    let summary: Vec<(String, String, String, String)> = entries
        .iter()
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (s(&e["action"]), s(&e["from"]["digest"]), s(&e["to"]["digest"]), s(&e["result"]))
        })
        .collect();
    let row = |a: &str, f: &str, t: &str| (a.to_owned(), f.to_owned(), t.to_owned(), "succeeded".to_owned());
    assert_eq!(summary, vec![row("upgrade", &v1, &v2), row("upgrade", &v2, &v3), row("rollback", &v3, &v2)]);
    for entry in &entries {
        assert!(entry["downtime_ms"].as_u64().unwrap() > 0, "{entry}");
        assert!(entry["started"].as_str().unwrap() <= entry["finished"].as_str().unwrap(), "{entry}");
    }
    let table = sw.cli_ok(&["history", "bgp"]);
    assert!(table.starts_with("WHEN") && table.lines().count() == 4, "{table}");
    assert!(history(&sw, "swss").is_empty());
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn broken_images_are_rolled_back_automatically_and_the_old_image_serves() {
    let sw = booted_vs();
    let v1 = digest("docker-fpm-frr");
    let swss_pid = sw.service("swss")["pid"].clone();
    let cases = [
        ("docker-fpm-frr-exits", vec!["--settle", "3"], "exited with code 3"),
        ("docker-fpm-frr-unready", vec!["--timeout", "3", "--settle", "1"], "not ready within 3s"),
        ("docker-fpm-frr-dies", vec!["--settle", "6"], "critical process bgpd exited"),
    ];
    for (image, gate, why) in cases {
        let mut args = vec!["upgrade", "bgp", "--image"];
        let path = variant(image);
        args.push(&path);
        args.extend(gate);
        let out = sw.cli(&args);
        assert_eq!(code(&out), 9, "{image}: expected the rolled-back exit code:\n{}", text(&out));
        assert!(text(&out).contains(why), "{image}: the reason is not {why:?}:\n{}", text(&out));
        assert_ready_on(&sw, "bgp", &v1);
        let last = history(&sw, "bgp").pop().unwrap();
        assert_eq!(last["result"], "rolled_back", "{last}");
        assert_eq!(last["to"]["digest"], digest(&format!("variants/{image}")));
        assert!(last["reason"].as_str().unwrap().contains(why), "{last}");
        assert!(last["recovery_ms"].as_u64().is_some(), "{last}");
        let state = sw.hgetall("STATE_DB", "SERVICE_UPGRADE_TABLE|bgp");
        assert_eq!(state["state"], "rolled_back", "{state}");
        assert!(state["reason"].as_str().unwrap().contains(why), "{state}");
        let bgp = sw.service("bgp");
        assert!(bgp["upgrade"].as_str().unwrap().contains("rolled back"), "{bgp}");
        // bgp is no failure-group member: the swss group never noticed.
        assert_eq!(sw.service("swss")["pid"], swss_pid);
    }
    // The rollbacks pinned the old image by digest, with no previous pin.
    assert_eq!(sw.service("bgp")["image"], format!("docker-fpm-frr@{v1}"));
    let out = sw.cli(&["rollback", "bgp"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(text(&out).contains("no previous image"), "{}", text(&out));

    // A broken image under the running image's own tag: the import takes the tag, the gate
    // fails, and bgp runs v1 again, by digest, also after a plain restart.
    let out = sw.cli(&["upgrade", "bgp", "--image", &variant("docker-fpm-frr-latest-exits"), "--settle", "1"]);
    let log = sw.daemon_log();
    let bgp_lines: Vec<&str> = log.lines().filter(|l| l.contains("bgp") && !l.contains("DEBUG")).collect();
    assert_eq!(code(&out), 9, "{}\n{}", text(&out), bgp_lines[bgp_lines.len().saturating_sub(30)..].join("\n"));
    assert_ready_on(&sw, "bgp", &v1);
    sw.cli_ok(&["restart", "bgp"]);
    assert_ready_on(&sw, "bgp", &v1);
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn a_warm_upgrade_of_swss_leaves_its_peers_running() {
    let sw = booted_vs();
    let before = sw.pids();
    let out = sw.cli(&["upgrade", "swss", "--warm", "--image", &variant("docker-orchagent-v2"), "--settle", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("(warm)"), "{}", text(&out));
    assert_ready_on(&sw, "swss", &digest("variants/docker-orchagent-v2"));
    let after = sw.pids();
    assert_ne!(after["swss"], before["swss"]);
    for peer in ["syncd", "bgp", "teamd", "database"] {
        assert_eq!(after[peer], before[peer], "{peer} changed PID in a warm upgrade of swss");
    }
    // Stopped warm, with the warm restart flag set for the switch-over and removed after.
    assert!(sw.log_position(&["stopping", "service=swss", "mode=Warm"]).is_some(), "{}", sw.daemon_log());
    assert!(
        wait_until(Duration::from_secs(5), || sw
            .hgetall("STATE_DB", "WARM_RESTART_ENABLE_TABLE|swss")
            .as_object()
            .is_none_or(|f| f.is_empty())),
        "the warm restart flag was left behind"
    );
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn bad_input_is_refused_and_the_running_service_is_untouched() {
    let sw = booted_vs();
    let (pid, v1) = (sw.service("bgp")["pid"].clone(), digest("docker-fpm-frr"));
    let corrupt = sw.root().join("corrupt.tar");
    let mut bytes = std::fs::read(variant("docker-fpm-frr-v2")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    let release = sw.root().join("release.toml");
    let entry = |name: &str| {
        format!(
            "[[service]]\nname = \"{name}\"\nimage = \"docker-fpm-frr:v2\"\ndigest = \"{}\"\n",
            digest("variants/docker-fpm-frr-v2")
        )
    };
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec!["upgrade".into(), "bgp".into(), "--image".into(), "/nonexistent/bgp.tar".into()], 4, "no such archive"),
        (vec!["upgrade".into(), "bgp".into(), "--image".into(), corrupt.display().to_string()], 5, "corrupt.tar"),
        (
            vec![
                "upgrade".into(),
                "bgp".into(),
                "--image".into(),
                variant("docker-fpm-frr-v2"),
                "--digest".into(),
                format!("sha256:{}", "0".repeat(64)),
            ],
            5,
            "digest mismatch",
        ),
        (vec!["upgrade".into(), "bgp".into(), "--image".into(), variant("docker-fpm-frr-arm64")], 5, "linux/arm64"),
        (vec!["upgrade".into(), "nosuch".into(), "--image".into(), variant("docker-fpm-frr-v2")], 4, "unknown service"),
        (vec!["upgrade".into(), "bgp".into(), "--image".into(), "nosuch:v9".into()], 4, "not in containerd"),
        (vec!["upgrade".into(), "bgp".into(), "--image".into(), "docker-fpm-frr:latest".into()], 5, "already runs"),
    ];
    for (args, expected, says) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sw.cli(&args);
        assert_eq!(code(&out), *expected, "{args:?}:\n{}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: expected {says:?} in:\n{}", text(&out));
    }
    for (body, says) in [
        (format!("release = \"r\"\n{}", entry("nosuch")), "service[0].name: unknown service"),
        (format!("release = \"r\"\n{}{}", entry("bgp"), entry("bgp")), "listed twice"),
    ] {
        std::fs::write(&release, body).unwrap();
        let out = sw.cli(&["upgrade", "--release", &release.display().to_string()]);
        assert_eq!(code(&out), 5, "{}", text(&out));
        assert!(text(&out).contains(says) && text(&out).contains("release.toml"), "{}", text(&out));
    }
    // One change at a time: a second upgrade while one waits on its gate is refused.
    let mut slow = sw.cli_spawn(&[
        "upgrade",
        "bgp",
        "--image",
        &variant("docker-fpm-frr-unready"),
        "--timeout",
        "8",
        "--settle",
        "0",
    ]);
    assert!(wait_until(Duration::from_secs(30), || sw.service("bgp")["image_digest"] != v1.as_str()));
    let out = sw.cli(&["upgrade", "lldp", "--image", &variant("docker-lldp-v2")]);
    assert_eq!(code(&out), 7, "{}", text(&out));
    assert!(text(&out).contains("in progress"), "{}", text(&out));
    let out = sw.cli(&["restart", "bgp"]);
    assert_eq!(code(&out), 7, "a restart of the service under change must be refused:\n{}", text(&out));
    let out = sw.cli(&["config", "reload", "--force"]);
    assert_ne!(code(&out), 0, "a config reload during an upgrade must be refused:\n{}", text(&out));
    assert!(slow.wait().unwrap().code() == Some(9));
    assert_ready_on(&sw, "bgp", &v1);
    // Everything refused before the switch-over left bgp's container alone.
    let refused = history(&sw, "bgp");
    assert_eq!(refused.len(), 1, "only the gated upgrade is history: {refused:?}");
    assert_ne!(sw.service("bgp")["pid"], pid, "the gated upgrade restarted bgp");
    assert_eq!(sw.hgetall("STATE_DB", "SERVICE_UPGRADE_TABLE|bgp")["state"], "rolled_back");
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn a_release_upgrade_stops_at_the_broken_service_and_leaves_the_rest_untouched() {
    let sw = booted_vs();
    let before: BTreeMap<String, String> =
        ["bgp", "swss", "lldp"].iter().map(|s| (s.to_string(), running_digest(&sw, s))).collect();
    let dir = project_root().join("target/images/variants");
    let release = sw.root().join("release.toml");
    let line = |service: &str, image: &str, file: &str| {
        format!(
            "[[service]]\nname = \"{service}\"\nimage = \"{image}\"\ndigest = \"{}\"\narchive = \"{}\"\n",
            digest(&format!("variants/{file}")),
            dir.join(format!("{file}.tar")).display()
        )
    };
    let text_release = format!(
        "release = \"vs-broken\"\n{}{}{}",
        line("swss", "docker-orchagent:v2", "docker-orchagent-v2"),
        line("bgp", "docker-fpm-frr:broken-exits", "docker-fpm-frr-exits"),
        line("lldp", "docker-lldp:v2", "docker-lldp-v2"),
    );
    std::fs::write(&release, text_release).unwrap();
    let out = sw.cli(&["upgrade", "--release", &release.display().to_string(), "--settle", "1"]);
    assert_eq!(code(&out), 9, "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("stopped at bgp"), "{said}");
    // Dependents go first: lldp (after swss and bgp in start order) was upgraded, bgp failed
    // and was rolled back, swss (which bgp depends on) was not touched.
    assert_ready_on(&sw, "lldp", &digest("variants/docker-lldp-v2"));
    assert_ready_on(&sw, "bgp", &before["bgp"]);
    assert_eq!(running_digest(&sw, "swss"), before["swss"]);
    assert!(said.contains("not touched swss"), "{said}");
    assert!(history(&sw, "swss").is_empty());

    // The VS release `cargo xtask images` writes is the set that runs: nothing to change.
    let vs = project_root().join("target/images/release.toml");
    let out = sw.cli(&["upgrade", "--release", &vs.display().to_string()]);
    let said = text(&out);
    // lldp runs v2, so the VS release takes it back to the VS image; the rest are current.
    assert_eq!(code(&out), 0, "{said}");
    assert!(said.contains("upgraded lldp") && said.contains("already current"), "{said}");
    assert_ready_on(&sw, "lldp", &before["lldp"]);
}

/// Polls `cond` every millisecond until it holds or `timeout` passes.
fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// The journal step in a state file (`None` without a change in flight).
fn journal_step(state: &Value) -> Option<String> {
    match &state["change"]["step"] {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.keys().next().cloned(),
        _ => None,
    }
}

/// The state file as the daemon last wrote it (it is replaced atomically: never half-read).
fn state_now(sw: &TestSwitch) -> Value {
    std::fs::read_to_string(sw.root().join("state/state.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// A `kill -9` of the daemon at each step of an upgrade, seen from outside (no failpoint in
/// the product): the test waits until the step shows (the journal in `state.json`, and for
/// the gate's steps the new container in the status), kills the daemon at once, and judges
/// the next daemon by what was on disk at the moment of death. bgp must end on exactly one
/// image, running and ready, with the outcome the journal step calls for.
#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn kill_9_at_every_step_of_an_upgrade_ends_on_one_image() {
    let mut sw = booted_vs();
    let (v2, v3) = (digest("variants/docker-fpm-frr-v2"), digest("variants/docker-fpm-frr-v3"));
    let exits = digest("variants/docker-fpm-frr-exits");
    // (where to kill, image, the image's digest)
    let steps = [
        ("preparing", "docker-fpm-frr-v2", v2.clone()),
        ("switching", "docker-fpm-frr-v2", v2.clone()),
        ("settling", "docker-fpm-frr-v3", v3.clone()),
        ("rolling_back", "docker-fpm-frr-exits", exits.clone()),
    ];
    for (step, image, target) in steps {
        let mut caught = None;
        for attempt in 1..=5 {
            let (pid_before, running) = (sw.service("bgp")["pid"].clone(), running_digest(&sw, "bgp"));
            if running == target {
                // An earlier attempt went through: go back to where the step can be seen.
                sw.cli_ok(&["rollback", "bgp", "--settle", "0"]);
            }
            let running = running_digest(&sw, "bgp");
            let mut cli = sw.cli_spawn(&["upgrade", "bgp", "--image", &variant(image), "--settle", "2"]);
            // Polled tightly: preparing lasts a few tens of milliseconds.
            let seen = poll_until(Duration::from_secs(60), || {
                let state = state_now(&sw);
                match (step, journal_step(&state).as_deref()) {
                    ("settling", Some("switching")) => {
                        let status = sw.service("bgp");
                        status["ready"] == true && status["image_digest"] == target.as_str()
                    }
                    (wanted, Some(now)) => now == wanted,
                    _ => false,
                }
            });
            sw.kill_daemon();
            let _ = cli.kill();
            let _ = cli.wait();
            let at_death = sw.state_file();
            sw.start_daemon();
            assert!(
                wait_until(Duration::from_secs(60), || sw.state_file().get("change").is_none_or(Value::is_null)),
                "{step}: the next daemon did not finish the change:\n{}",
                sw.daemon_log()
            );
            let on_disk = journal_step(&at_death);
            let last = history(&sw, "bgp").pop();
            // What the journal on disk calls for: a change still preparing is aborted and
            // leaves the old image; one switching goes through (its image is good); one
            // rolling back ends on the old image. Without a journal, the change had ended.
            let (ends_on, result) = match on_disk.as_deref() {
                Some("preparing") => (running.clone(), "aborted"),
                Some("switching") => (target.clone(), "succeeded"),
                Some("rolling_back") => (running.clone(), "rolled_back"),
                _ => {
                    let last = last.clone().expect("a history entry for the ended change");
                    let result = last["result"].as_str().unwrap().to_owned();
                    let ends = if result == "succeeded" { target.clone() } else { running.clone() };
                    (ends, if result == "succeeded" { "succeeded" } else { "rolled_back" })
                }
            };
            assert_ready_on(&sw, "bgp", &ends_on);
            let last = last.unwrap_or_else(|| panic!("{step}: no history entry"));
            assert_eq!(last["result"], result, "{step} (journal on disk: {on_disk:?}): {last}");
            if on_disk.as_deref() == Some("preparing") {
                assert_eq!(sw.service("bgp")["pid"], pid_before, "preparing: the running bgp was touched");
            }
            if step == "rolling_back" {
                assert_eq!(last["to"]["digest"], exits);
            }
            // No prepared rootfs is left behind: at most the one the running container uses.
            let snapshots = sw.ctr(&["snapshots", "ls"]);
            let prepared = snapshots.lines().filter(|l| l.contains("bgp-next-")).count();
            assert!(prepared <= 1, "{step}: prepared rootfs left behind:\n{snapshots}");
            let killed_at = if step == "settling" { Some("switching") } else { Some(step) };
            if seen && on_disk.as_deref() == killed_at {
                caught = Some(attempt);
                break;
            }
            eprintln!("{step}: attempt {attempt} killed the daemon at {on_disk:?}; again");
        }
        assert!(caught.is_some(), "{step}: never killed the daemon at that step in 5 attempts");
    }
}

/// A `kill -9` while a failed gate replaces the new container with the old image's, at
/// moments spread over the stop and the start: the next daemon always ends with bgp on its
/// old image, ready. (A task delete cut short leaves its shim behind; the runtime adapter
/// reaps it, so the next start of the same container is not refused.)
#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn kill_9_while_a_rollback_replaces_the_container_converges() {
    let mut sw = booted_vs();
    let before = running_digest(&sw, "bgp");
    for delay in [0u64, 5, 10, 20, 30, 40, 50, 60, 80, 100, 120, 150] {
        let mut cli = sw.cli_spawn(&["upgrade", "bgp", "--image", &variant("docker-fpm-frr-exits"), "--settle", "2"]);
        assert!(
            poll_until(Duration::from_secs(60), || journal_step(&state_now(&sw)).as_deref() == Some("rolling_back")),
            "delay {delay}: the gate never failed:\n{}",
            sw.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(delay));
        sw.kill_daemon();
        let _ = cli.kill();
        let _ = cli.wait();
        sw.start_daemon();
        let converged = wait_until(Duration::from_secs(30), || {
            let bgp = sw.service("bgp");
            bgp["ready"] == true
                && bgp["image_digest"] == before.as_str()
                && sw.state_file().get("change").is_none_or(Value::is_null)
        });
        assert!(converged, "delay {delay}: {}\n{}", sw.service("bgp"), sw.daemon_log());
        assert_eq!(history(&sw, "bgp").pop().unwrap()["result"], "rolled_back", "delay {delay}");
    }
}
