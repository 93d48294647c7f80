//! SONiC's lifecycle semantics on the full VS set: boot through CONFIG_DB_INITIALIZED, the
//! swss failure group (cold and warm), delayed start, critical processes, database crash,
//! config reload, and what STATE_DB says.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{test_manifest, wait_until, TestSwitch};

const CONFIG_DB: &str = r#"{
    "DEVICE_METADATA": {"localhost": {"hostname": "vs", "hwsku": "Force10-S6000", "synchronous_mode": "enable"}},
    "FEATURE": {
        "snmp": {"state": "disabled", "auto_restart": "enabled"},
        "bgp": {"state": "enabled", "auto_restart": "enabled", "has_global_scope": "True"}
    },
    "PORT": {"Ethernet0": {"lanes": "25,26,27,28", "mtu": 9100, "admin_status": "up"}}
}"#;

/// The full VS set booted from a CONFIG_DB with snmp disabled, every enabled service ready.
pub(crate) fn booted_vs() -> TestSwitch {
    let mut sw = TestSwitch::vs();
    sw.sonic_file("etc/sonic/config_db.json", CONFIG_DB);
    sw.sonic_file("etc/sonic/init_cfg.json", r#"{"FEATURE": {"database": {"state": "always_enabled"}}}"#);
    sw.start_daemon();
    sw.import_all();
    sw.wait_ready(Duration::from_secs(90));
    assert!(wait_until(Duration::from_secs(10), || system_ready(&sw)["Status"] == "UP"));
    sw
}

fn system_ready(sw: &TestSwitch) -> serde_json::Value {
    sw.hgetall("STATE_DB", "SYSTEM_READY|SYSTEM_STATE")
}

fn pids(sw: &TestSwitch) -> BTreeMap<String, Option<u64>> {
    sw.pids()
}

fn kill9(pid: u64) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL).unwrap();
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn boot_crash_of_syncd_cold_and_warm() {
    let sw = booted_vs();
    // Boot: CONFIG_DB was loaded from init_cfg.json and config_db.json before anything but the
    // database started, and FEATURE already decided (snmp is disabled).
    assert_eq!(sw.db("CONFIG_DB", &["get", "CONFIG_DB_INITIALIZED"]), "1");
    assert_eq!(sw.hgetall("CONFIG_DB", "PORT|Ethernet0")["mtu"], "9100");
    assert_eq!(sw.hgetall("CONFIG_DB", "FEATURE|database")["state"], "always_enabled");
    let loaded = sw.log_position(&["CONFIG_DB loaded"]).expect("CONFIG_DB was loaded");
    for service in ["swss", "syncd", "bgp", "pmon"] {
        let started = sw.log_position(&["starting", &format!("service={service} ")]).unwrap();
        assert!(started > loaded, "{service} started before CONFIG_DB_INITIALIZED");
    }
    assert!(sw.log_position(&["starting", "service=snmp "]).is_none(), "snmp is disabled in FEATURE");
    assert_eq!(sw.service("snmp")["state"], "stopped");
    // Delayed services started after PortInitDone (the VS swss announces it).
    let port_init = sw.log_position(&["PortInitDone"]).unwrap();
    assert!(sw.log_position(&["starting", "service=lldp "]).unwrap() > port_init);
    // STATE_DB reports.
    let swss = sw.hgetall("STATE_DB", "FEATURE|swss");
    assert_eq!(
        (swss["state"].as_str(), swss["container_id"].as_str(), swss["system_state"].as_str()),
        (Some("enabled"), Some("swss"), Some("up"))
    );
    assert_eq!(sw.hgetall("STATE_DB", "FEATURE|snmp")["state"], "disabled");
    assert_eq!(system_ready(&sw)["Status"], "UP");

    // A cold crash of syncd: the group and its dependents restart, in order, and the
    // databases are cleared on the way.
    sw.db("APPL_DB", &["hset", "ROUTE_TABLE:10.9.0.0/24", "nexthop", "10.0.0.1"]);
    sw.db("ASIC_DB", &["hset", "ASIC_STATE:SAI_OBJECT_TYPE_VLAN:oid:0x26000000000099", "SAI_VLAN_ATTR_VLAN_ID", "99"]);
    sw.db("STATE_DB", &["hset", "PORT_TABLE|Ethernet96", "state", "ok"]);
    let before = pids(&sw);
    let log_mark = sw.daemon_log().lines().count();
    kill9(before["syncd"].unwrap());
    let group = ["swss", "syncd", "teamd", "bgp", "radv", "dhcp_relay"];
    assert!(
        wait_until(Duration::from_secs(60), || {
            let now = pids(&sw);
            sw.all_ready() && group.iter().all(|s| now[*s].is_some() && now[*s] != before[*s])
        }),
        "the group did not come back: {}",
        sw.cli_ok(&["status"])
    );
    let after = pids(&sw);
    for untouched in ["database", "pmon", "lldp", "telemetry", "mgmt-framework"] {
        assert_eq!(after[untouched], before[untouched], "{untouched} must not restart");
    }
    let log: Vec<String> = sw.daemon_log().lines().skip(log_mark).map(str::to_owned).collect();
    let at = |needle: &str| {
        log.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in\n{}", log.join("\n")))
    };
    assert!(at("stopped service=bgp") < at("stopped service=swss"), "dependents stop before the group");
    assert!(at("stopped service=teamd") < at("stopped service=swss"));
    assert!(at("stopped service=swss") < at("cold start: databases cleared"));
    assert!(at("cold start: databases cleared") < at("starting service=swss "));
    assert!(at("ready service=swss ") < at("starting service=syncd "));
    assert!(at("ready service=syncd ") < at("starting service=radv "));
    assert!(at("ready service=swss ") < at("starting service=bgp "));
    assert_eq!(sw.db("APPL_DB", &["keys", "ROUTE_TABLE:*"]), "", "APPL_DB was flushed");
    // The virtual ASIC programs itself again at once (switch, router, ports), so look for the
    // objects and entries from before: they are gone.
    assert_eq!(sw.db("ASIC_DB", &["keys", "ASIC_STATE:SAI_OBJECT_TYPE_VLAN:*"]), "", "ASIC_DB was flushed");
    assert_eq!(sw.db("STATE_DB", &["keys", "PORT_TABLE|Ethernet96"]), "", "STATE_DB PORT_TABLE was cleared");
    assert!(wait_until(Duration::from_secs(10), || sw.db("APPL_DB", &["keys", "PORT_TABLE:PortInitDone"])
        == "PORT_TABLE:PortInitDone"));

    // Warm restart enabled for syncd: only syncd restarts; peers and databases untouched.
    sw.db("STATE_DB", &["hset", "WARM_RESTART_ENABLE_TABLE|syncd", "enable", "true"]);
    sw.db("APPL_DB", &["hset", "ROUTE_TABLE:10.9.0.0/24", "nexthop", "10.0.0.1"]);
    assert!(
        wait_until(Duration::from_secs(10), || sw
            .log_lines("warm restart flags")
            .iter()
            .any(|l| l.contains("\"syncd\": true"))),
        "the daemon never saw syncd's warm restart flag"
    );
    let before = pids(&sw);
    kill9(before["syncd"].unwrap());
    assert!(wait_until(Duration::from_secs(30), || {
        let now = pids(&sw);
        now["syncd"].is_some() && now["syncd"] != before["syncd"] && sw.all_ready()
    }));
    // Whether the peers restart is decided with the crash: by now it would show.
    let after = pids(&sw);
    for (name, pid) in &before {
        if name != "syncd" {
            assert_eq!(&after[name], pid, "{name} must keep its task under warm restart");
        }
    }
    assert_eq!(sw.hgetall("APPL_DB", "ROUTE_TABLE:10.9.0.0/24")["nexthop"], "10.0.0.1", "APPL_DB untouched");

    // An operator restart with warm restart on: syncd's warm-stop steps run, peers stay.
    let before = pids(&sw);
    sw.cli_ok(&["restart", "syncd"]);
    let after = pids(&sw);
    assert_ne!(after["syncd"], before["syncd"]);
    assert_eq!(after["swss"], before["swss"]);
    assert!(sw.daemon_log().contains("service=syncd generation") && sw.daemon_log().contains("mode=Warm"));
    let steps = sw.log_lines("stop step");
    assert!(steps.iter().any(|l| l.contains("service=syncd") && l.contains("syncd_request_shutdown")), "{steps:?}");
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn database_crash_recovers_in_order_and_config_reload() {
    let sw = booted_vs();
    let before = pids(&sw);
    kill9(before["database"].unwrap());
    assert!(
        wait_until(Duration::from_secs(90), || {
            let now = pids(&sw);
            sw.all_ready() && now.iter().all(|(name, pid)| name == "snmp" || (pid.is_some() && *pid != before[name]))
        }),
        "the switch did not recover: {}",
        sw.cli_ok(&["status"])
    );
    // CONFIG_DB came back from the files, and with it FEATURE (snmp stays disabled).
    assert_eq!(sw.db("CONFIG_DB", &["get", "CONFIG_DB_INITIALIZED"]), "1");
    assert_eq!(sw.hgetall("CONFIG_DB", "FEATURE|snmp")["state"], "disabled");
    assert_eq!(sw.service("snmp")["state"], "stopped");
    assert!(wait_until(Duration::from_secs(10), || system_ready(&sw)["Status"] == "UP"));
    let recovered = sw.log_position(&["ready service=database generation=2"]).unwrap();
    let swss_again = sw
        .daemon_log()
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("starting service=swss "))
        .map(|(i, _)| i)
        .last()
        .unwrap();
    assert!(swss_again > recovered, "swss came back after the database");

    // A broken file changes nothing.
    let bad = sw.root().join("broken.json");
    std::fs::write(&bad, r#"{"FEATURE": {"lldp": {"state": ["x", {"y": 1}]}}}"#).unwrap();
    let before = pids(&sw);
    let out = sw.cli(&["config", "reload", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FEATURE|lldp: field state"));
    assert_eq!(pids(&sw), before, "nothing restarted");

    // A good file: one transaction, with progress and its duration.
    let good = sw.root().join("good.json");
    std::fs::write(
        &good,
        CONFIG_DB
            .replace(r#""snmp": {"state": "disabled""#, r#""snmp": {"state": "enabled""#)
            .replace(r#""bgp": {"state": "enabled""#, r#""bgp": {"state": "disabled""#),
    )
    .unwrap();
    let out = sw.cli(&["config", "reload", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopping") && stderr.contains("replacing CONFIG_DB") && stderr.contains("starting"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config reload done in"));
    assert_eq!(sw.service("snmp")["ready"], true);
    assert_eq!(sw.service("bgp")["state"], "stopped");
    let after = pids(&sw);
    assert_eq!(after["database"], before["database"], "the database keeps running");
    assert_ne!(after["swss"], before["swss"], "everything else restarted");
    assert_eq!(sw.hgetall("CONFIG_DB", "FEATURE|database")["state"], "always_enabled", "init_cfg.json was loaded");
    // During a reload, another is refused unless forced.
    assert!(wait_until(Duration::from_secs(10), || system_ready(&sw)["Status"] == "UP"));
    let first = std::process::Command::new(crate::support::SONICLET)
        .args(["config", "reload", good.to_str().unwrap()])
        .env("SONICLET_SOCKET", &sw.socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || system_ready(&sw)["reason"] == "config reload in progress"));
    let out = sw.cli(&["config", "reload", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in progress"));
    assert!(first.wait_with_output().unwrap().status.success());
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn delayed_start_waits_for_port_init_done_or_the_fallback() {
    let database = TestSwitch::real_manifest("database");
    let svc = |extra: &str| {
        test_manifest(&format!("requires = [\"database\"]\n{extra}"), &crate::support::start_then_ready("0"))
    };
    let (plain, delayed) = (svc(""), svc("delayed = true"));
    let mut sw = TestSwitch::new(&[("database", &database), ("plain", &plain), ("lldp", &delayed)]);
    sw.append_config("[daemon]\ndelayed-start-timeout = 4\n");
    sw.start_daemon();
    sw.import(&["docker-database", "docker-teamd"]);
    sw.wait_service("plain", Duration::from_secs(60), |s| s["ready"] == true);
    let lldp = sw.service("lldp");
    assert_eq!(lldp["state"], "waiting");
    assert!(lldp["message"].as_str().unwrap().contains("PortInitDone"), "{lldp}");
    // PortInitDone appears: the delayed service starts at once (event-driven).
    sw.db("APPL_DB", &["hset", "PORT_TABLE:PortInitDone", "lanes", "0"]);
    sw.wait_service("lldp", Duration::from_secs(3), |s| s["ready"] == true);

    // Without PortInitDone, the fallback starts it.
    let mut sw2 = TestSwitch::new(&[("database", &database), ("plain", &plain), ("lldp", &delayed)]);
    sw2.append_config("[daemon]\ndelayed-start-timeout = 3\n");
    sw2.start_daemon();
    sw2.import(&["docker-database", "docker-teamd"]);
    sw2.wait_service("plain", Duration::from_secs(60), |s| s["ready"] == true);
    assert_eq!(sw2.service("lldp")["state"], "waiting");
    sw2.wait_service("lldp", Duration::from_secs(10), |s| s["ready"] == true);
    assert!(sw2.daemon_log().contains("fallback=true"));
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn critical_process_exits_restart_or_degrade() {
    let sw = booted_vs();
    let find = |comm: &str, service: &str| -> u32 {
        let pid = sw.service(service)["pid"].as_u64().unwrap() as u32;
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        children
            .split_whitespace()
            .map(|c| c.parse::<u32>().unwrap())
            .find(|c| std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == comm))
            .unwrap_or_else(|| panic!("no {comm} in {service}"))
    };
    // auto_restart enabled: a critical process exit restarts the container.
    let pmon = sw.service("pmon");
    kill9(u64::from(find("xcvrd", "pmon")));
    let restarted = sw.wait_service("pmon", Duration::from_secs(30), |s| s["ready"] == true && s["pid"] != pmon["pid"]);
    assert_eq!(restarted["restarts"], 1);
    assert!(sw.daemon_log().contains("critical process exited; restarting the container service=pmon process=xcvrd"));

    // auto_restart disabled: the service stays up, reported degraded.
    sw.cli_ok(&["feature", "autorestart", "pmon", "disabled"]);
    let pmon = sw.service("pmon");
    kill9(u64::from(find("psud", "pmon")));
    assert!(wait_until(Duration::from_secs(10), || sw
        .daemon_log()
        .contains("auto-restart is disabled service=pmon process=psud")));
    // The decision not to restart was taken with that log line: pmon runs on, degraded.
    let now = sw.service("pmon");
    assert_eq!(now["pid"], pmon["pid"], "no restart");
    assert_eq!(now["state"], "running");
    assert!(now["message"].as_str().unwrap_or_default().contains("psud"), "{now}");
}
