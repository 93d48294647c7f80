//! Real FRR in the VS bgp image. Two switches run the project's database and bgp manifests and
//! images, each in its own network namespace, cabled on Ethernet8, with eBGP from
//! config_db.json alone. bgpcfgd configures Debian's FRR, the session comes up, and each
//! switch's Loopback0 reaches the other's APPL_DB `ROUTE_TABLE` through zebra's FPM client and
//! soniclet's fpmsyncd. A neighbour removed from CONFIG_DB goes from FRR live, and its routes
//! from APPL_DB; a malformed one changes nothing; a zebra killed with SIGKILL restarts the
//! container and the routes come back.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::wait_until;
use crate::support::TestSwitch;

struct Side {
    asn: u32,
    hostname: &'static str,
    loopback: &'static str,
    address: &'static str,
    peer: &'static str,
    peer_asn: u32,
}

const A: Side = Side {
    asn: 65100,
    hostname: "sw-a",
    loopback: "10.1.0.1",
    address: "10.0.8.0/31",
    peer: "10.0.8.1",
    peer_asn: 65200,
};
const B: Side = Side {
    asn: 65200,
    hostname: "sw-b",
    loopback: "10.2.0.1",
    address: "10.0.8.1/31",
    peer: "10.0.8.0",
    peer_asn: 65100,
};

fn sh(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(status.success(), "{args:?} failed");
}

fn config_db(side: &Side) -> String {
    serde_json::json!({
        "DEVICE_METADATA": {"localhost": {"hostname": side.hostname, "bgp_asn": side.asn.to_string()}},
        "LOOPBACK_INTERFACE": {format!("Loopback0|{}/32", side.loopback): {}},
        "BGP_NEIGHBOR": {side.peer: {
            "asn": side.peer_asn.to_string(), "name": "peer", "keepalive": "1", "holdtime": "3",
        }},
    })
    .to_string()
}

fn switch(side: &Side) -> TestSwitch {
    // The real bgp manifest, without its order against the services these switches lack.
    let bgp = TestSwitch::real_manifest("bgp");
    let (head, tail) = bgp.split_once("[service.warm-shutdown]").unwrap();
    let bgp = head.replace(", \"swss\"]", "]").replace("dependent-of = [\"swss\"]\n", "")
        + &tail[tail.find("[container]").unwrap()..];
    let manifests = [("database", TestSwitch::real_manifest("database")), ("bgp", bgp)];
    let refs: Vec<(&str, &str)> = manifests.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let sw = TestSwitch::new(&refs);
    sw.sonic_file("etc/sonic/config_db.json", &config_db(side));
    // Loopback0: the address zebra sees, so bgpd's `network` has a route to announce.
    sh(&["ip", "-n", &sw.netns, "addr", "add", &format!("{}/32", side.loopback), "dev", "lo"]);
    sw
}

fn cable(a: &TestSwitch, b: &TestSwitch) {
    let (ea, eb) = (format!("rt{}a", std::process::id()), format!("rt{}b", std::process::id()));
    sh(&["ip", "link", "add", &ea, "type", "veth", "peer", "name", &eb]);
    for (sw, end, side) in [(a, &ea, &A), (b, &eb, &B)] {
        sh(&["ip", "link", "set", end, "netns", &sw.netns, "name", "Ethernet8"]);
        sh(&["ip", "-n", &sw.netns, "addr", "add", side.address, "dev", "Ethernet8"]);
        sh(&["ip", "-n", &sw.netns, "link", "set", "Ethernet8", "up"]);
    }
}

/// vtysh in the switch's bgp container.
fn vtysh(sw: &TestSwitch, command: &str) -> String {
    let id =
        format!("vtysh-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    sw.ctr(&["task", "exec", "--exec-id", &id, "bgp", "vtysh", "-c", command])
}

fn peer_state(sw: &TestSwitch, peer: &str) -> String {
    let summary: Value = serde_json::from_str(&vtysh(sw, "show bgp summary json")).unwrap_or(Value::Null);
    summary["ipv4Unicast"]["peers"][peer]["state"].as_str().unwrap_or("").to_owned()
}

/// fpmsyncd's `ROUTE_TABLE` entry (a host route's key has no `/32`, as SONiC writes it).
/// No orchagent pops these switches' tables, so the entry stays staged (`_ROUTE_TABLE:`), as
/// the ProducerStateTable protocol leaves it for the consumer.
fn route(sw: &TestSwitch, key: &str) -> Value {
    let mut fields = sw.hgetall("APPL_DB", &format!("ROUTE_TABLE:{key}"));
    if let (Some(all), Value::Object(staged)) =
        (fields.as_object_mut(), sw.hgetall("APPL_DB", &format!("_ROUTE_TABLE:{key}")))
    {
        all.extend(staged);
    }
    fields
}

fn start(sw: &mut TestSwitch) {
    sw.start_daemon();
    sw.import(&["docker-database", "docker-fpm-frr"]);
}

#[test]
#[ignore = "needs root, containerd, runc, redis-server and the VS images: `cargo xtask ci` runs it"]
fn two_switches_peer_from_config_db_and_learn_routes_through_fpmsyncd() {
    let mut a = switch(&A);
    let mut b = switch(&B);
    cable(&a, &b);
    start(&mut a);
    start(&mut b);
    for sw in [&a, &b] {
        sw.wait_service("bgp", Duration::from_secs(90), |s| s["ready"] == true);
    }
    let established = wait_until(Duration::from_secs(60), || peer_state(&a, A.peer) == "Established");
    assert!(
        established,
        "no session: {}\n{}\n{}",
        vtysh(&a, "show bgp summary"),
        vtysh(&a, "show running-config"),
        container_log(&a)
    );

    // Each switch's Loopback0, learned over eBGP, in the other's APPL_DB as fpmsyncd writes it.
    let learned = |sw: &TestSwitch, prefix: &str, via: &str| {
        let r = route(sw, prefix);
        r["nexthop"] == via && r["ifname"] == "Ethernet8" && r["protocol"] == "bgp"
    };
    assert!(
        wait_until(Duration::from_secs(30), || learned(&a, "10.2.0.1", A.peer)),
        "a: {} {} {}\n{}\n{}\n{}\n{}",
        route(&a, "10.2.0.1"),
        a.db("APPL_DB", &["keys", "*ROUTE*"]),
        String::from_utf8_lossy(
            &Command::new("ip").args(["netns", "exec", &a.netns, "ss", "-tn"]).output().unwrap().stdout
        ),
        vtysh(&a, "show ip route"),
        vtysh(&a, "show fpm counters"),
        vtysh(&a, "show running-config"),
        container_log(&a)
    );
    assert!(wait_until(Duration::from_secs(30), || learned(&b, "10.1.0.1", B.peer)), "b: {}", route(&b, "10.1.0.1"));
    // zebra's connected route of the cable's subnet came the same way.
    assert_eq!(route(&a, "10.0.8.0/31")["protocol"], "kernel", "{}", route(&a, "10.0.8.0/31"));

    // A malformed neighbour is refused with its key and field; FRR keeps its configuration.
    a.db("CONFIG_DB", &["hset", "BGP_NEIGHBOR|10.0.8.9", "asn", "not-a-number"]);
    assert!(
        wait_until(Duration::from_secs(10), || a.ctr(&["task", "ls"]).contains("bgp")
            && container_log(&a).contains("BGP_NEIGHBOR|10.0.8.9")),
        "the refusal is not in bgp's log:\n{}",
        container_log(&a)
    );
    assert!(!vtysh(&a, "show running-config").contains("10.0.8.9"));

    // The neighbour goes from CONFIG_DB: bgpcfgd removes it live, bgpd is not restarted, and
    // the route it brought leaves APPL_DB.
    let bgpd_before = pid_of(&a, "bgpd");
    a.db("CONFIG_DB", &["del", &format!("BGP_NEIGHBOR|{}", A.peer)]);
    assert!(
        wait_until(Duration::from_secs(20), || route(&a, "10.2.0.1").as_object().is_some_and(|o| o.is_empty())),
        "the withdrawn route stayed: {}",
        route(&a, "10.2.0.1")
    );
    assert!(!vtysh(&a, "show running-config").contains(&format!("neighbor {}", A.peer)));
    assert_eq!(pid_of(&a, "bgpd"), bgpd_before, "bgpd was restarted");
    // And comes back.
    a.db(
        "CONFIG_DB",
        &[
            "hset",
            &format!("BGP_NEIGHBOR|{}", A.peer),
            "asn",
            &A.peer_asn.to_string(),
            "holdtime",
            "3",
            "keepalive",
            "1",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(60), || learned(&a, "10.2.0.1", A.peer)),
        "not back: {}",
        route(&a, "10.2.0.1")
    );

    // zebra dies: a critical process, so the container restarts, and the routes come back.
    let generation = a.service("bgp")["restarts"].as_u64().unwrap_or(0);
    a.ctr(&["task", "exec", "--exec-id", "kill-zebra", "bgp", "sh", "-c", "kill -9 $(pidof zebra)"]);
    assert!(
        wait_until(Duration::from_secs(60), || a.service("bgp")["restarts"].as_u64().unwrap_or(0) > generation),
        "bgp did not restart: {}",
        a.service("bgp")
    );
    assert!(
        wait_until(Duration::from_secs(90), || peer_state(&a, A.peer) == "Established"
            && learned(&a, "10.2.0.1", A.peer)),
        "after zebra's crash: {} {}",
        peer_state(&a, A.peer),
        route(&a, "10.2.0.1")
    );
}

fn pid_of(sw: &TestSwitch, process: &str) -> String {
    sw.ctr(&["task", "exec", "--exec-id", &format!("pidof-{process}"), "bgp", "pidof", process]).trim().to_owned()
}

fn container_log(sw: &TestSwitch) -> String {
    sw.cli(&["logs", "bgp"]).stdout.iter().map(|b| *b as char).collect()
}
