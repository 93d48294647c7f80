//! The FEATURE contract on a switch with a real database container: CONFIG_DB decides, live;
//! STATE_DB reports; SONiC's transition rules hold; bad entries are refused, not fatal.

use std::time::Duration;

use crate::support::{start_then_ready, test_manifest, wait_until, TestSwitch};

fn switch() -> TestSwitch {
    let database = TestSwitch::real_manifest("database");
    let svc = |requires: &str, extra: &str| {
        test_manifest(&format!("requires = [{requires}]\n{extra}"), &start_then_ready("0"))
    };
    let (swss, bgp, snmp, extra) = (
        svc("\"database\"", ""),
        svc("\"database\", \"swss\"", ""),
        svc("\"database\"", "auto-restart = true"),
        svc("\"database\"", "enabled = false"),
    );
    let mut sw =
        TestSwitch::new(&[("database", &database), ("swss", &swss), ("bgp", &bgp), ("snmp", &snmp), ("extra", &extra)]);
    sw.start_daemon();
    sw.import(&["docker-database", "docker-teamd"]);
    sw.wait_ready(Duration::from_secs(60));
    sw
}

fn state_db(sw: &TestSwitch, name: &str) -> serde_json::Value {
    sw.hgetall("STATE_DB", &format!("FEATURE|{name}"))
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn feature_state_drives_services_live_and_state_db_tells() {
    let sw = switch();
    // No FEATURE entries: the manifests' defaults apply.
    assert_eq!(sw.service("extra")["state"], "stopped");
    let snmp = state_db(&sw, "snmp");
    assert_eq!(snmp["state"], "enabled");
    assert_eq!(snmp["container_id"], "snmp");
    assert_eq!(snmp["current_owner"], "local");
    assert_eq!(snmp["system_state"], "up");

    // Another writer disables snmp in CONFIG_DB: it stops at once, and STATE_DB says so.
    sw.db("CONFIG_DB", &["hset", "FEATURE|snmp", "state", "disabled", "auto_restart", "enabled"]);
    sw.wait_service("snmp", Duration::from_secs(20), |s| s["state"] == "stopped");
    assert!(wait_until(Duration::from_secs(5), || state_db(&sw, "snmp")["system_state"] == "down"));
    assert_eq!(state_db(&sw, "snmp")["state"], "disabled");
    assert_eq!(state_db(&sw, "snmp")["container_id"], "");
    // An operator start of a disabled feature is refused and says what to do.
    let out = sw.cli(&["start", "snmp"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stderr).contains("soniclet feature state snmp enabled"));

    // Enabled again: it starts.
    sw.db("CONFIG_DB", &["hset", "FEATURE|snmp", "state", "enabled"]);
    sw.wait_service("snmp", Duration::from_secs(20), |s| s["ready"] == true);
    assert!(wait_until(Duration::from_secs(5), || state_db(&sw, "snmp")["system_state"] == "up"));

    // A FEATURE entry enables a service whose manifest says no.
    sw.db("CONFIG_DB", &["hset", "FEATURE|extra", "state", "enabled"]);
    sw.wait_service("extra", Duration::from_secs(20), |s| s["ready"] == true);
    // Deleted: the manifest's default applies again.
    sw.db("CONFIG_DB", &["del", "FEATURE|extra"]);
    sw.wait_service("extra", Duration::from_secs(20), |s| s["state"] == "stopped");

    // Disabling swss holds bgp, which requires it.
    sw.db("CONFIG_DB", &["hset", "FEATURE|swss", "state", "disabled"]);
    sw.wait_service("bgp", Duration::from_secs(20), |s| s["state"] == "stopped");
    sw.wait_service("swss", Duration::from_secs(20), |s| s["state"] == "stopped");
    sw.db("CONFIG_DB", &["hset", "FEATURE|swss", "state", "enabled"]);
    sw.wait_service("bgp", Duration::from_secs(30), |s| s["ready"] == true);
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn transitions_follow_sonic_and_bad_entries_are_refused() {
    let sw = switch();
    sw.db("CONFIG_DB", &["hset", "FEATURE|snmp", "state", "enabled"]);
    // Seen before the next write: the link could read both writes as one new entry.
    assert!(wait_until(Duration::from_secs(5), || sw
        .daemon_log()
        .contains(r#"FEATURE state service=snmp state="enabled""#)));
    // enabled -> always_disabled is not a transition SONiC allows: ignored, snmp keeps running.
    sw.db("CONFIG_DB", &["hset", "FEATURE|snmp", "state", "always_disabled"]);
    assert!(wait_until(Duration::from_secs(5), || sw.daemon_log().contains("does not allow")));
    assert_eq!(sw.service("snmp")["ready"], true);
    // A malformed entry is refused, naming the key and field; the previous entry stays.
    sw.db("CONFIG_DB", &["hset", "FEATURE|snmp", "state", "sideways"]);
    assert!(wait_until(Duration::from_secs(5), || sw.daemon_log().contains("CONFIG_DB FEATURE|snmp: field state")));
    // The refusal and any decision it led to are one event: snmp is still meant to run, and runs.
    let snmp = sw.service("snmp");
    assert_eq!((snmp["state"].as_str(), snmp["enabled"].as_bool()), (Some("running"), Some(true)), "{snmp}");
    // An always_enabled entry from nothing is fine; operators cannot change it.
    sw.db("CONFIG_DB", &["hset", "FEATURE|swss", "state", "always_enabled"]);
    assert!(wait_until(Duration::from_secs(5), || {
        let features: serde_json::Value = serde_json::from_str(&sw.cli_ok(&["feature", "ls", "--json"])).unwrap();
        features.as_array().unwrap().iter().any(|f| f["name"] == "swss" && f["state"] == "always_enabled")
    }));
    let out = sw.cli(&["feature", "state", "swss", "disabled"]);
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    let out = sw.cli(&["feature", "state", "database", "disabled"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stderr).contains("always enabled"));
    let out = sw.cli(&["feature", "state", "nosuch", "disabled"]);
    assert_eq!(out.status.code(), Some(4));
    // Nothing above stopped anything.
    assert!(sw.all_ready());
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn operator_feature_commands_and_auto_restart() {
    let sw = switch();
    // `soniclet feature state` writes CONFIG_DB and waits until the service follows.
    let out = sw.cli_ok(&["feature", "state", "snmp", "disabled"]);
    assert!(out.contains("service stopped"), "{out}");
    assert_eq!(sw.hgetall("CONFIG_DB", "FEATURE|snmp")["state"], "disabled");
    let out = sw.cli_ok(&["feature", "state", "snmp", "enabled"]);
    assert!(out.contains("service running"), "{out}");
    assert_eq!(sw.service("snmp")["ready"], true);

    // auto_restart disabled: a crash leaves the service down and STATE_DB says failed.
    sw.cli_ok(&["feature", "autorestart", "snmp", "disabled"]);
    assert_eq!(sw.hgetall("CONFIG_DB", "FEATURE|snmp")["auto_restart"], "disabled");
    let pid = sw.service("snmp")["pid"].as_u64().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL).unwrap();
    let failed = sw.wait_service("snmp", Duration::from_secs(20), |s| s["state"] == "failed");
    assert!(failed["message"].as_str().unwrap().contains("auto-restart is disabled"), "{failed}");
    assert!(wait_until(Duration::from_secs(5), || state_db(&sw, "snmp")["state"] == "failed"));
    // auto_restart enabled again, and an operator start: back up.
    sw.cli_ok(&["feature", "autorestart", "snmp", "enabled"]);
    sw.cli_ok(&["start", "snmp"]);
    let pid_again = sw.service("snmp")["pid"].as_u64().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid_again as i32), nix::sys::signal::SIGKILL).unwrap();
    sw.wait_service("snmp", Duration::from_secs(20), |s| s["ready"] == true && s["pid"].as_u64() != Some(pid_again));

    let features: serde_json::Value = serde_json::from_str(&sw.cli_ok(&["feature", "ls", "--json"])).unwrap();
    let snmp = features.as_array().unwrap().iter().find(|f| f["name"] == "snmp").unwrap();
    assert_eq!(snmp["source"], "CONFIG_DB");
    assert_eq!(snmp["auto_restart"], "enabled");
    assert_eq!(snmp["current_owner"], "local");
}
