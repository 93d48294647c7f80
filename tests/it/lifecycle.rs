//! Start order, readiness gating, crash handling and stop escalation.

use std::time::{Duration, Instant};

use crate::support::{start_then_ready, test_manifest, TestSwitch};

fn millis_between(a: std::time::SystemTime, b: std::time::SystemTime) -> i128 {
    let ms = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i128;
    ms(b) - ms(a)
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn services_start_in_dependency_order_in_parallel_gated_on_readiness() {
    let a = test_manifest("", &start_then_ready("1"));
    let b = test_manifest("requires = [\"a\"]", &start_then_ready("1"));
    let c = test_manifest("requires = [\"a\"]", &start_then_ready("1"));
    let d = test_manifest("requires = [\"b\", \"c\"]", &start_then_ready("0.2"));
    let mut sw = TestSwitch::new(&[("a", &a), ("b", &b), ("c", &c), ("d", &d)]);
    sw.start_daemon();
    sw.import(&["docker-teamd"]);
    sw.wait_ready(Duration::from_secs(60));

    let m = |name: &str| sw.marker(name).unwrap_or_else(|| panic!("marker {name} missing"));
    // Readiness gates: nothing starts before what it requires is ready.
    assert!(millis_between(m("a.ready"), m("b.start")) >= 0, "b started before a was ready");
    assert!(millis_between(m("a.ready"), m("c.start")) >= 0, "c started before a was ready");
    assert!(millis_between(m("b.ready"), m("d.start")) >= 0, "d started before b was ready");
    assert!(millis_between(m("c.ready"), m("d.start")) >= 0, "d started before c was ready");
    // b and c do not depend on each other: they start together.
    let skew = millis_between(m("b.start"), m("c.start")).abs();
    assert!(skew < 700, "b and c started {skew} ms apart; expected in parallel");
    // With b and c in parallel, the chain takes about 1 + 1 + 0.2 s, not 3.2 s.
    let total = millis_between(m("a.start"), m("d.ready"));
    assert!(total < 3100, "the chain took {total} ms; b and c did not overlap");

    // Each service's output is in its log.
    sw.wait_service("d", Duration::from_secs(5), |s| s["ready"] == true);
    let status = sw.service("b");
    assert_eq!(status["state"], "running");
    assert_eq!(status["container_id"], "b");
    assert!(status["image_digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn a_crash_loop_backs_off_then_fails_and_an_operator_restart_recovers_it() {
    let healthy = test_manifest("", &start_then_ready("0"));
    let crashy = test_manifest(
        "[service.restart]\nbackoff-initial-ms = 200\nbackoff-max-ms = 400\nbudget = 3\nwindow-secs = 60",
        "if [ -e /shared/fixed ]; then exec -a sleep /usr/bin/teammgrd 100000; fi; echo crashing; sleep 0.3; exit 3",
    );
    let mut sw = TestSwitch::new(&[("healthy", &healthy), ("crashy", &crashy)]);
    sw.start_daemon();
    sw.import(&["docker-teamd"]);
    sw.wait_service("healthy", Duration::from_secs(30), |s| s["ready"] == true);
    let healthy_pid = sw.service("healthy")["pid"].clone();

    let failed = sw.wait_service("crashy", Duration::from_secs(30), |s| s["state"] == "failed");
    assert_eq!(failed["restarts"], 2, "two restarts, then the third failure spends the budget: {failed}");
    assert_eq!(failed["last_exit_code"], 3);
    assert!(failed["message"].as_str().unwrap().contains("3 failures within 60s"), "{failed}");
    assert!(failed["generation"].as_u64().unwrap() >= 3);
    // It stays failed: the daemon says it will not try again (that time then passes without
    // a start is the core's table test `a_crash_restarts_at_once_then_backs_off_doubling_...`).
    assert!(failed["message"].as_str().unwrap().contains("failures within"), "{failed}");
    assert_eq!(sw.service("crashy")["generation"], failed["generation"]);
    assert!(sw.cli_ok(&["logs", "crashy", "-n", "50"]).contains("crashing"));

    // The failing service never took the healthy one down.
    let healthy_now = sw.service("healthy");
    assert_eq!(healthy_now["pid"], healthy_pid);
    assert_eq!(healthy_now["restarts"], 0);

    // An operator restart resets the budget; fixed, it comes up.
    std::fs::write(sw.shared().join("fixed"), "").unwrap();
    let out = sw.cli_ok(&["restart", "crashy", "--timeout", "30"]);
    assert!(out.contains("crashy: ready"), "{out}");
    assert_eq!(sw.service("crashy")["ready"], true);
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn stop_escalates_to_sigkill_after_stop_time() {
    // A process that ignores SIGTERM.
    let stubborn = test_manifest("stop-time = 1", "trap '' TERM; exec -a sleep /usr/bin/teammgrd 100000");
    let polite = test_manifest("", "trap 'echo bye; exit 0' TERM; (exec -a sleep /usr/bin/teammgrd 100000) & wait");
    let mut sw = TestSwitch::new(&[("stubborn", &stubborn), ("polite", &polite)]);
    sw.start_daemon();
    sw.import(&["docker-teamd"]);
    sw.wait_ready(Duration::from_secs(30));

    let started = Instant::now();
    sw.cli_ok(&["stop", "stubborn", "--timeout", "30"]);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(950), "stop returned after {took:?}, before stop-time");
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    assert!(!sw.containers().contains(&"stubborn".to_owned()), "the container is deleted");
    assert_eq!(sw.service("stubborn")["state"], "stopped");
    assert!(sw.daemon_log().contains("sending SIGKILL"));

    let started = Instant::now();
    sw.cli_ok(&["stop", "polite"]);
    assert!(started.elapsed() < Duration::from_millis(950), "a process that honours SIGTERM stops at once");

    // Stopped services stay stopped across a daemon restart (desired state is persisted).
    sw.stop_daemon();
    sw.start_daemon();
    // The new daemon says at once that stubborn is not meant to run: it will not start it.
    let stubborn = sw.service("stubborn");
    assert_eq!(stubborn["state"], "stopped", "{stubborn}");
    assert_eq!(stubborn["enabled"], false, "{stubborn}");
    sw.cli_ok(&["start", "stubborn"]);
    assert_eq!(sw.service("stubborn")["ready"], true);
}

/// A task create cut short (its deadline passed on a loaded switch) can leave the task's
/// bundle directory behind with no shim serving it: containerd then refuses every new task of
/// that ID with `mkdir <bundle>: file exists`. The daemon clears it as containerd would and
/// starts the service.
#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn a_task_bundle_left_by_an_interrupted_create_does_not_block_the_service() {
    let a = test_manifest("", &start_then_ready("0"));
    let mut sw = TestSwitch::new(&[("a", &a)]);
    let containerd = sw.root().join("containerd");
    let bundle = containerd.join(format!("state/io.containerd.runtime.v2.task/{}/a", sw.namespace));
    let work = containerd.join(format!("root/io.containerd.runtime.v2.task/{}/a", sw.namespace));
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("stale"), "").unwrap();
    std::fs::write(bundle.join("config.json"), "{}").unwrap();
    std::os::unix::fs::symlink(&work, bundle.join("work")).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "leftover", bundle.join("rootfs").to_str().unwrap()])
        .status()
        .unwrap();
    assert!(mounted.success());

    sw.start_daemon();
    sw.import(&["docker-teamd"]);
    sw.wait_ready(Duration::from_secs(30));
    assert_eq!(sw.service("a")["restarts"], 0, "{}", sw.daemon_log());
    assert!(sw.daemon_log().contains("removing a task bundle an interrupted task create left behind"));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("leftover"), "the leftover rootfs mount is gone");
    assert!(!work.join("stale").exists(), "the leftover work directory is gone");
}
