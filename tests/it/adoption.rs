//! Restarting the daemon never restarts a service; changed manifests recreate only theirs.

use std::time::Duration;

use crate::support::{start_then_ready, test_manifest, TestSwitch};

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn full_vs_boots_and_survives_daemon_kill9_with_zero_restarts() {
    let mut sw = TestSwitch::vs();
    sw.start_daemon();
    sw.import_all();
    sw.wait_ready(Duration::from_secs(90));
    let before = sw.pids();
    assert_eq!(before.len(), 12);
    assert!(before.values().all(Option::is_some), "{before:?}");
    let generations: Vec<u64> =
        sw.status()["services"].as_array().unwrap().iter().map(|s| s["generation"].as_u64().unwrap()).collect();

    sw.kill_daemon();
    sw.start_daemon();
    sw.wait_ready(Duration::from_secs(30));
    assert_eq!(sw.pids(), before, "adoption must keep every task");
    let after: Vec<u64> =
        sw.status()["services"].as_array().unwrap().iter().map(|s| s["generation"].as_u64().unwrap()).collect();
    assert_eq!(after, generations, "no container was recreated");
    assert!(sw.status()["services"].as_array().unwrap().iter().all(|s| s["restarts"] == 0));
    assert!(sw.daemon_log().contains("adopted running container"));

    // SIGTERM leaves services running too.
    let code = sw.stop_daemon();
    assert!(code.success(), "daemon exit: {code}");
    assert_eq!(sw.ctr(&["tasks", "list", "-q"]).lines().count(), 12);
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn a_changed_manifest_recreates_only_that_service() {
    let a = test_manifest("", &start_then_ready("0"));
    let b = test_manifest("requires = [\"a\"]", &start_then_ready("0"));
    let mut sw = TestSwitch::new(&[("a", &a), ("b", &b)]);
    sw.start_daemon();
    sw.import(&["docker-teamd"]);
    sw.wait_ready(Duration::from_secs(30));
    let a_before = sw.service("a");
    let b_before = sw.service("b");

    sw.stop_daemon();
    let changed = b.replace("[container]", "[container]\nenvironment = { CHANGED = \"1\" }");
    std::fs::write(sw.services.join("b.toml"), changed).unwrap();
    sw.start_daemon();
    sw.wait_ready(Duration::from_secs(30));
    let b_after = sw.wait_service("b", Duration::from_secs(30), |s| s["ready"] == true && s["pid"] != b_before["pid"]);
    assert_eq!(b_after["generation"].as_u64().unwrap(), b_before["generation"].as_u64().unwrap() + 1);
    let a_after = sw.service("a");
    assert_eq!(a_after["pid"], a_before["pid"], "a's manifest did not change");
    assert_eq!(a_after["generation"], a_before["generation"]);
    let env = sw.ctr(&["containers", "info", "b"]);
    assert!(env.contains("CHANGED=1"), "the new container has the new manifest");
}
