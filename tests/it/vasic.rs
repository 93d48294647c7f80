//! The virtual ASIC end to end: intents → APPL_DB → `vasic orch` → ASIC_STATE op queue →
//! `vasic syncd` → the switch's kernel, with real packets between host namespaces attached
//! to the switch's ports by veth.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{wait_until, TestSwitch};

const PORTS: &[&str] = &["Ethernet0", "Ethernet4", "Ethernet8"];

static CABLES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn config_db() -> String {
    let ports: Vec<String> = PORTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                r#""{p}": {{"lanes": "{}", "speed": "100000", "mtu": "9100", "admin_status": "up", "index": "{i}"}}"#,
                i * 4
            )
        })
        .collect();
    format!(
        r#"{{"DEVICE_METADATA": {{"localhost": {{"mac": "52:54:00:12:34:56", "hwsku": "Force10-S6000"}}}}, "PORT": {{{}}}}}"#,
        ports.join(", ")
    )
}

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = sh(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Host network namespaces, each with `eth1` cabled by veth to one switch port.
struct Hosts {
    names: Vec<String>,
}

impl Hosts {
    fn attach(sw: &TestSwitch, ports: &[&str]) -> Self {
        // Built first, so that a failure halfway still removes what was made.
        let mut hosts = Self { names: Vec::new() };
        for (i, port) in ports.iter().enumerate() {
            let name = format!("{}-h{}", sw.netns, i + 1);
            // Unique among tests running at once: the cables' temporary names share one namespace.
            let n = CABLES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (a, b) = (format!("vh{}-{n}", std::process::id()), format!("vp{}-{n}", std::process::id()));
            ok(&["ip", "netns", "add", &name]);
            hosts.names.push(name.clone());
            ok(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
            ok(&["ip", "link", "set", &b, "netns", &sw.netns, "name", port]);
            ok(&["ip", "link", "set", &a, "netns", &name, "name", "eth1"]);
            ok(&["ip", "-n", &name, "link", "set", "eth1", "up"]);
            ok(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        }
        hosts
    }

    fn host(&self, n: usize) -> &str {
        &self.names[n - 1]
    }

    fn ip(&self, n: usize, args: &[&str]) {
        let mut all = vec!["ip", "-n", self.host(n)];
        all.extend_from_slice(args);
        ok(&all);
    }

    fn ping(&self, n: usize, target: &str) -> bool {
        sh(&["ip", "netns", "exec", self.host(n), "ping", "-c", "1", "-W", "1", target]).status.success()
    }

    /// Pings until it passes, for up to `secs` (ARP and programming take a moment).
    fn reaches(&self, n: usize, target: &str, secs: u64) -> bool {
        wait_until(Duration::from_secs(secs), || self.ping(n, target))
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = sh(&["ip", "netns", "del", name]);
        }
    }
}

fn switch() -> (TestSwitch, Hosts) {
    let mut sw = TestSwitch::vs();
    sw.sonic_file("etc/sonic/config_db.json", &config_db());
    // The cables are in before syncd looks for the ports' netdevs.
    let hosts = Hosts::attach(&sw, PORTS);
    sw.start_daemon();
    sw.import_all();
    sw.wait_ready(Duration::from_secs(90));
    assert!(
        wait_until(Duration::from_secs(20), || sw
            .db("APPL_DB", &["hgetall", "PORT_TABLE:PortInitDone"])
            .contains("lanes")),
        "portsyncd never wrote PortInitDone"
    );
    (sw, hosts)
}

fn apply(sw: &TestSwitch, name: &str, doc: &str) {
    let path = sw.root().join(name);
    std::fs::write(&path, doc).unwrap();
    sw.cli_ok(&["intent", "apply", path.to_str().unwrap()]);
}

fn report(sw: &TestSwitch) -> Value {
    serde_json::from_str(&sw.cli_ok(&["intent", "status", "--json"])).unwrap()
}

fn all_programmed(sw: &TestSwitch) -> bool {
    let report = report(sw);
    report["pending"] == 0 && report["failed"] == 0 && report["programmed"].as_u64() > Some(0)
}

/// The virtual ASIC's own logs, ports and links, for a failing assertion.
fn vasic_logs(sw: &TestSwitch) -> String {
    let mut out = String::new();
    for key in asic_keys(sw, "SAI_OBJECT_TYPE_PORT") {
        out.push_str(&format!("{key}: {}\n", sw.hgetall("ASIC_DB", &key)));
    }
    out.push_str(&in_switch(sw, &["-br", "link"]));
    out.push_str(&in_switch(sw, &["-br", "addr"]));
    out.push_str(&in_switch(sw, &["rule"]));
    out.push_str(&in_switch(sw, &["route", "show", "table", "all"]));
    for service in ["swss", "syncd"] {
        let logs = sw.cli(&["logs", service, "-n", "60"]);
        out.push_str(&format!("--- {service}\n{}", String::from_utf8_lossy(&logs.stdout)));
    }
    out
}

fn in_switch(sw: &TestSwitch, args: &[&str]) -> String {
    let mut all = vec!["ip", "-n", sw.netns.as_str()];
    all.extend_from_slice(args);
    ok(&all)
}

fn asic_keys(sw: &TestSwitch, object_type: &str) -> Vec<String> {
    sw.db("ASIC_DB", &["keys", &format!("ASIC_STATE:{object_type}:*")]).lines().map(str::to_owned).collect()
}

const L3: &str = r#"
ports:
  Ethernet0: { admin_status: up }
  Ethernet4: { admin_status: up }
  Ethernet8: { admin_status: up }
vlans:
  Vlan10:
    members: { Ethernet0: untagged, Ethernet4: untagged }
interfaces:
  Vlan10: { addresses: [10.0.10.1/24] }
  Ethernet8: { addresses: [10.0.20.1/24] }
routes:
  - prefix: 10.2.0.0/24
    nexthops: [{ ip: 10.0.20.2, ifname: Ethernet8 }]
  - prefix: 10.3.0.0/24
    nexthops: [{ ip: 10.0.10.3, ifname: Vlan10 }, { ip: 10.0.20.2, ifname: Ethernet8 }]
"#;

const VRF: &str = r#"
ports:
  Ethernet0: { admin_status: up }
  Ethernet8: { admin_status: up }
vrfs:
  Vrf-red: {}
interfaces:
  Ethernet0: { vrf: Vrf-red, addresses: [10.0.30.1/24] }
  Ethernet8: { vrf: Vrf-red, addresses: [10.0.20.1/24] }
routes:
  - { prefix: 10.2.0.0/24, vrf: Vrf-red, nexthops: [{ ip: 10.0.20.2, ifname: Ethernet8 }] }
"#;

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn packets_cross_the_virtual_switch() {
    let (sw, hosts) = switch();
    // The ports exist as netdevs, named as SONiC names them, and orchagent named their OIDs.
    assert!(in_switch(&sw, &["link", "show", "Ethernet4"]).contains("Ethernet4"));
    let named = || sw.db("COUNTERS_DB", &["hgetall", "COUNTERS_PORT_NAME_MAP"]).contains("Ethernet8");
    assert!(wait_until(Duration::from_secs(20), named), "orchagent named no ports:\n{}", vasic_logs(&sw));
    assert!(sw.db("COUNTERS_DB", &["hget", "COUNTERS_PORT_NAME_MAP", "Ethernet8"]).starts_with("oid:0x1"));
    assert!(wait_until(Duration::from_secs(10), || sw.hgetall("STATE_DB", "PORT_TABLE|Ethernet0")["state"] == "ok"));

    // 1. VLAN 10 with Ethernet0 and Ethernet4 untagged: h1 and h2 share a segment.
    hosts.ip(1, &["addr", "add", "10.0.10.2/24", "dev", "eth1"]);
    hosts.ip(2, &["addr", "add", "10.0.10.3/24", "dev", "eth1"]);
    assert!(!hosts.ping(1, "10.0.10.3"), "no VLAN yet, no path");
    let fixture = std::fs::read_to_string(crate::support::project_root().join("tests/fixtures/vlan10.yaml")).unwrap();
    apply(&sw, "vlan10.yaml", &fixture);
    assert!(hosts.reaches(1, "10.0.10.3", 20), "h1 cannot reach h2 in VLAN 10\n{}", vasic_logs(&sw));
    assert!(wait_until(Duration::from_secs(10), || all_programmed(&sw)), "{}\n{}", report(&sw), vasic_logs(&sw));
    assert_eq!(asic_keys(&sw, "SAI_OBJECT_TYPE_VLAN_MEMBER").len(), 2);

    // 2. Ethernet4 leaves the VLAN: the ping fails.
    apply(&sw, "one-member.yaml", &fixture.replace(", Ethernet4: untagged", ""));
    assert!(wait_until(Duration::from_secs(10), || asic_keys(&sw, "SAI_OBJECT_TYPE_VLAN_MEMBER").len() == 1));
    assert!(wait_until(Duration::from_secs(10), || !hosts.ping(1, "10.0.10.3")), "h2 is still reachable");

    // 3. An SVI and a routed port: h1 reaches a network behind h3, one L3 hop away.
    hosts.ip(3, &["addr", "add", "10.0.20.2/24", "dev", "eth1"]);
    hosts.ip(3, &["addr", "add", "10.2.0.1/32", "dev", "lo"]);
    hosts.ip(3, &["route", "add", "default", "via", "10.0.20.1"]);
    hosts.ip(1, &["route", "add", "default", "via", "10.0.10.1"]);
    hosts.ip(2, &["route", "add", "default", "via", "10.0.10.1"]);
    apply(&sw, "l3.yaml", L3);
    assert!(hosts.reaches(1, "10.0.10.1", 20), "h1 cannot reach its gateway");
    assert!(hosts.reaches(1, "10.2.0.1", 20), "h1 cannot reach 10.2.0.1 behind h3");
    assert!(wait_until(Duration::from_secs(10), || all_programmed(&sw)), "{}", report(&sw));
    let routes = asic_keys(&sw, "SAI_OBJECT_TYPE_ROUTE_ENTRY");
    let route = routes.iter().find(|k| k.contains(r#""dest":"10.2.0.0/24""#)).expect("route entry in ASIC_STATE");
    assert!(route.contains(r#","switch_id":"oid:0x21000000000000","vr":"oid:0x3"#), "{route}");
    let attrs = sw.hgetall("ASIC_DB", route);
    let next_hop = attrs["SAI_ROUTE_ENTRY_ATTR_NEXT_HOP_ID"].as_str().unwrap().to_owned();
    assert!(next_hop.starts_with("oid:0x4"), "a NEXT_HOP object: {next_hop}");
    let nh = sw.hgetall("ASIC_DB", &format!("ASIC_STATE:SAI_OBJECT_TYPE_NEXT_HOP:{next_hop}"));
    assert_eq!(nh["SAI_NEXT_HOP_ATTR_IP"], "10.0.20.2");
    assert_eq!(nh["SAI_NEXT_HOP_ATTR_TYPE"], "SAI_NEXT_HOP_TYPE_IP");
    assert!(sw.db("ASIC_DB", &["hget", "VIDTORID", &next_hop]).starts_with("oid:0x"), "syncd mapped the VID");
    let svi = asic_keys(&sw, "SAI_OBJECT_TYPE_ROUTER_INTERFACE")
        .into_iter()
        .map(|k| sw.hgetall("ASIC_DB", &k))
        .find(|a| a["SAI_ROUTER_INTERFACE_ATTR_TYPE"] == "SAI_ROUTER_INTERFACE_TYPE_VLAN")
        .expect("the SVI's router interface");
    assert_eq!(svi["SAI_ROUTER_INTERFACE_ATTR_SRC_MAC_ADDRESS"], "52:54:00:12:34:56".to_uppercase());

    // 4. ECMP: one route, two next hops, a multipath route in the kernel.
    let kernel = in_switch(&sw, &["route", "show", "10.3.0.0/24"]);
    assert_eq!(kernel.matches("nexthop via").count(), 2, "{kernel}");
    assert!(asic_keys(&sw, "SAI_OBJECT_TYPE_NEXT_HOP_GROUP_MEMBER").len() == 2);

    // 5. The same through a VRF: h1 on a routed port in Vrf-red, h3 behind Ethernet8.
    apply(&sw, "empty.yaml", "");
    assert!(wait_until(Duration::from_secs(20), || asic_keys(&sw, "SAI_OBJECT_TYPE_ROUTER_INTERFACE").is_empty()));
    hosts.ip(1, &["addr", "flush", "dev", "eth1"]);
    hosts.ip(1, &["addr", "add", "10.0.30.2/24", "dev", "eth1"]);
    hosts.ip(1, &["route", "add", "default", "via", "10.0.30.1"]);
    apply(&sw, "vrf.yaml", VRF);
    assert!(
        hosts.reaches(1, "10.2.0.1", 20),
        "h1 cannot reach 10.2.0.1 through Vrf-red\n{}\nh1: {} {}\nh3: {} {}\nswitch: {} {}",
        vasic_logs(&sw),
        ok(&["ip", "-n", hosts.host(1), "-br", "addr"]),
        ok(&["ip", "-n", hosts.host(1), "route"]),
        ok(&["ip", "-n", hosts.host(3), "-br", "addr"]),
        ok(&["ip", "-n", hosts.host(3), "route"]),
        in_switch(&sw, &["neigh"]),
        ok(&[
            "ip",
            "netns",
            "exec",
            &sw.netns,
            "sysctl",
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.Ethernet0.rp_filter",
            "net.ipv4.conf.Ethernet8.rp_filter",
            "net.ipv4.ip_forward"
        ]),
    );
    assert!(wait_until(Duration::from_secs(10), || all_programmed(&sw)), "{}", report(&sw));
    assert_eq!(sw.hgetall("STATE_DB", "VRF_OBJECT_TABLE|Vrf-red")["state"], "ok");
    let vrf_routes = in_switch(&sw, &["route", "show", "table", "all", "10.2.0.0/24"]);
    assert!(vrf_routes.contains("table 1"), "the route is in the VRF's table: {vrf_routes}");
    assert!(in_switch(&sw, &["route", "show", "10.2.0.0/24"]).is_empty(), "not in the default table");

    // 6. syncd dies: the ASIC forgets, the swss group restarts, everything is programmed
    // again from the intents, and the ping works again.
    let syncd_before = sw.service("syncd")["pid"].as_u64().unwrap();
    let swss_before = sw.service("swss")["pid"].as_u64().unwrap();
    let syncd_process = ok(&["pgrep", "-x", "-P", &syncd_before.to_string(), "syncd"]);
    ok(&["kill", "-9", syncd_process.trim()]);
    assert!(
        wait_until(Duration::from_secs(60), || {
            let swss = sw.service("swss");
            swss["pid"].as_u64() != Some(swss_before) && swss["ready"] == true && sw.all_ready()
        }),
        "the swss group did not come back"
    );
    assert!(hosts.reaches(1, "10.2.0.1", 40), "no path after syncd's restart");
    assert!(wait_until(Duration::from_secs(20), || all_programmed(&sw)), "{}", report(&sw));
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn malformed_appl_db_entries_are_refused_and_nothing_crashes() {
    let (sw, _hosts) = switch();
    let orchagent = ok(&["pgrep", "-x", "-P", &sw.service("swss")["pid"].to_string(), "orchagent"]);
    let bad = r#"[
        {"ROUTE_TABLE:10.9.0.0/99": {"nexthop": "10.0.0.1", "ifname": "Ethernet0"}, "OP": "SET"},
        {"ROUTE_TABLE:10.9.1.0/24": {"nexthop": "10.0.0.1"}, "OP": "SET"},
        {"ROUTE_TABLE:10.9.2.0/24": {"nexthop": "not-an-ip", "ifname": "Ethernet0"}, "OP": "SET"},
        {"VLAN_TABLE:Vlan5000": {"admin_status": "up"}, "OP": "SET"},
        {"VLAN_TABLE:Vlan20": {"admin_status": "up"}, "OP": "SET"},
        {"VLAN_MEMBER_TABLE:Vlan20:Ethernet99": {"tagging_mode": "untagged"}, "OP": "SET"},
        {"NEIGH_TABLE:Ethernet0:10.0.0.5": {"family": "IPv4"}, "OP": "SET"},
        {"ROUTE_TABLE:192.0.2.0/24": {"blackhole": "true"}, "OP": "SET"}
    ]"#;
    let file = sw.root().join("bad.json");
    std::fs::write(&file, bad).unwrap();
    sw.cli_ok(&["db", "apply", file.to_str().unwrap()]);
    // The good entries go through; the bad ones never reach the ASIC.
    assert!(
        wait_until(Duration::from_secs(10), || asic_keys(&sw, "SAI_OBJECT_TYPE_ROUTE_ENTRY")
            .iter()
            .any(|k| k.contains("192.0.2.0/24"))),
        "{}",
        vasic_logs(&sw)
    );
    assert!(wait_until(Duration::from_secs(10), || !asic_keys(&sw, "SAI_OBJECT_TYPE_VLAN").is_empty()));
    let routes = asic_keys(&sw, "SAI_OBJECT_TYPE_ROUTE_ENTRY").join("\n");
    assert!(!routes.contains("10.9."), "{routes}");
    assert!(asic_keys(&sw, "SAI_OBJECT_TYPE_VLAN_MEMBER").is_empty(), "a member of an unknown port waits");
    // orchagent logged each refusal with its key and is the same process.
    let logs = String::from_utf8_lossy(&sw.cli(&["logs", "swss", "-n", "200"]).stdout).into_owned();
    for key in ["10.9.0.0/99", "10.9.1.0/24", "10.9.2.0/24", "Vlan5000", "Ethernet0:10.0.0.5"] {
        assert!(logs.lines().any(|l| l.contains("refused") && l.contains(key)), "no refusal logged for {key}:\n{logs}");
    }
    let still = ok(&["pgrep", "-x", "-P", &sw.service("swss")["pid"].to_string(), "orchagent"]);
    assert_eq!(orchagent, still, "orchagent restarted");
    // The member that waits for a port that never comes holds nothing else up.
    let good = sw.root().join("good.json");
    std::fs::write(&good, r#"[{"VLAN_MEMBER_TABLE:Vlan20:Ethernet4": {"tagging_mode": "untagged"}, "OP": "SET"}]"#)
        .unwrap();
    sw.cli_ok(&["db", "apply", good.to_str().unwrap()]);
    assert!(wait_until(Duration::from_secs(10), || asic_keys(&sw, "SAI_OBJECT_TYPE_VLAN_MEMBER").len() == 1));
}
