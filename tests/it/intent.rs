//! Intents: apply, diff and delete through APPL_DB; ownership; restart reconcile; ASIC_DB
//! verification against sairedis-format objects; the database going away.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use soniclet::db::consumer_state::ConsumerStateTable;
use soniclet::db::{Db, Fields, Op};

use crate::support::{wait_until, TestSwitch};

const TABLES: &[&str] =
    &["PORT_TABLE", "VRF_TABLE", "VLAN_TABLE", "VLAN_MEMBER_TABLE", "INTF_TABLE", "ROUTE_TABLE", "NEIGH_TABLE"];

/// Plays orchagent's APPL_DB side: pops every table soniclet writes and records what it saw.
struct Orchagent {
    seen: Arc<Mutex<Vec<(String, Op)>>>,
    /// The daemon's APPL_DB writes already taken (its count, as the daemon reports it).
    taken: Mutex<u64>,
    _runtime: tokio::runtime::Runtime,
}

impl Orchagent {
    fn start(sw: &TestSwitch) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let socket = sw.redis_socket();
        let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for table in TABLES {
            let (seen, socket, ready) = (Arc::clone(&seen), socket.clone(), Arc::clone(&ready));
            runtime.spawn(async move {
                let db = Db::open_socket(&socket, 0).await.unwrap();
                let consumer = ConsumerStateTable::new(&db, table, 1024).await.unwrap();
                ready.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                loop {
                    if let Ok(ops) = consumer.next().await {
                        seen.lock().unwrap().extend(ops.into_iter().map(|op| (table.to_string(), op)));
                    }
                }
            });
        }
        assert!(wait_until(Duration::from_secs(10), || ready.load(std::sync::atomic::Ordering::SeqCst) == TABLES.len()));
        Self { seen, taken: Mutex::new(0), _runtime: runtime }
    }

    /// Takes what was popped since the last take, once the daemon says APPL_DB holds every
    /// accepted entry and this consumer popped as many as the daemon wrote since (the counts
    /// the daemon reports; no waiting for things to settle).
    fn take(&self, sw: &TestSwitch) -> Vec<(String, Op)> {
        let mut expected = 0;
        let caught_up = wait_until(Duration::from_secs(10), || {
            let report = intent_report(sw);
            let Some(writes) = report["appl_db_writes"].as_u64().filter(|_| report["in_sync"] == true) else {
                return false;
            };
            let mut taken = self.taken.lock().unwrap();
            // A new daemon counts from zero.
            if writes < *taken {
                *taken = 0;
            }
            expected = writes - *taken;
            self.seen.lock().unwrap().len() as u64 >= expected
        });
        assert!(
            caught_up,
            "the consumer never saw the {expected} entries the daemon wrote: {:?}",
            self.seen.lock().unwrap()
        );
        *self.taken.lock().unwrap() += expected;
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

fn keys(ops: &[(String, Op)]) -> Vec<String> {
    let mut out: Vec<String> = ops
        .iter()
        .map(|(t, op)| match op {
            Op::Set { key, .. } => format!("SET {t}:{key}"),
            Op::Del { key } => format!("DEL {t}:{key}"),
        })
        .collect();
    out.sort();
    out
}

fn fields(ops: &[(String, Op)], table: &str, key: &str) -> BTreeMap<String, String> {
    ops.iter()
        .find_map(|(t, op)| match op {
            Op::Set { key: k, fields } if t == table && k == key => Some(fields.iter().cloned().collect()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no SET of {table}:{key} in {ops:?}"))
}

fn switch() -> TestSwitch {
    let database = TestSwitch::real_manifest("database");
    let mut sw = TestSwitch::new(&[("database", &database)]);
    sw.start_daemon();
    sw.import(&["docker-database"]);
    sw.wait_ready(Duration::from_secs(60));
    // The engine connects once the database is ready.
    assert!(wait_until(Duration::from_secs(20), || intent_report(&sw)["database_reachable"] == true));
    sw
}

fn intent_report(sw: &TestSwitch) -> Value {
    serde_json::from_str(&sw.cli_ok(&["intent", "status", "--json"])).unwrap()
}

fn intent(sw: &TestSwitch, id: &str) -> Value {
    intent_report(sw)["intents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no intent {id}"))
}

fn apply(sw: &TestSwitch, name: &str, text: &str) -> String {
    let path = sw.root().join(name);
    std::fs::write(&path, text).unwrap();
    sw.cli_ok(&["intent", "apply", path.to_str().unwrap()])
}

const DOC_A: &str = r#"
vlans:
  Vlan10:
    members: { Ethernet0: untagged, Ethernet4: untagged }
interfaces:
  Vlan10: { addresses: [10.0.10.1/24] }
routes:
  - prefix: 10.1.0.0/24
    nexthops: [{ ip: 10.0.10.2, ifname: Vlan10 }]
neighbors:
  - { ifname: Vlan10, ip: 10.0.10.2, mac: "00:11:22:33:44:55" }
"#;

const DOC_B: &str = r#"
vlans:
  Vlan10:
    members: { Ethernet0: untagged, Ethernet4: untagged }
interfaces:
  Vlan10: { addresses: [10.0.10.1/24] }
routes:
  - prefix: 10.1.0.0/24
    nexthops: [{ ip: 10.0.10.2, ifname: Vlan10 }, { ip: 10.0.10.3, ifname: Vlan10 }]
  - { prefix: 192.0.2.0/24, blackhole: true }
"#;

fn asic_route(sw: &TestSwitch, dest: &str, drop: bool) -> String {
    let key = format!(
        r#"ASIC_STATE:SAI_OBJECT_TYPE_ROUTE_ENTRY:{{"dest":"{dest}","switch_id":"oid:0x21000000000000","vr":"oid:0x3000000000022"}}"#
    );
    let action = if drop { "SAI_PACKET_ACTION_DROP" } else { "SAI_PACKET_ACTION_FORWARD" };
    sw.db("ASIC_DB", &["hset", &key, "SAI_ROUTE_ENTRY_ATTR_PACKET_ACTION", action]);
    key
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn apply_diff_delete_and_verify_in_asic_db() {
    let sw = switch();
    let orch = Orchagent::start(&sw);
    let out = apply(&sw, "a.yaml", DOC_A);
    assert!(out.contains("accepted 7 intents"), "{out}");
    let seen = orch.take(&sw);
    assert_eq!(
        keys(&seen),
        [
            "SET INTF_TABLE:Vlan10",
            "SET INTF_TABLE:Vlan10:10.0.10.1/24",
            "SET NEIGH_TABLE:Vlan10:10.0.10.2",
            "SET ROUTE_TABLE:10.0.10.0/24",
            "SET ROUTE_TABLE:10.1.0.0/24",
            "SET VLAN_MEMBER_TABLE:Vlan10:Ethernet0",
            "SET VLAN_MEMBER_TABLE:Vlan10:Ethernet4",
            "SET VLAN_TABLE:Vlan10",
        ]
    );
    assert_eq!(fields(&seen, "INTF_TABLE", "Vlan10"), BTreeMap::from([("NULL".into(), "NULL".into())]));
    assert_eq!(fields(&seen, "ROUTE_TABLE", "10.0.10.0/24")["nexthop"], "0.0.0.0");
    assert_eq!(fields(&seen, "NEIGH_TABLE", "Vlan10:10.0.10.2")["family"], "IPv4");

    // Nothing is in ASIC_DB: pending. A sairedis route entry appears: programmed, with latency.
    assert_eq!(intent(&sw, "route:10.1.0.0/24")["state"], "pending");
    asic_route(&sw, "10.1.0.0/24", false);
    assert!(wait_until(Duration::from_secs(5), || intent(&sw, "route:10.1.0.0/24")["state"] == "programmed"));
    assert!(intent(&sw, "route:10.1.0.0/24")["latency_ms"].as_f64().unwrap() > 0.0);
    // A VLAN object with its VLAN ID proves the VLAN.
    sw.db("ASIC_DB", &["hset", "ASIC_STATE:SAI_OBJECT_TYPE_VLAN:oid:0x26000000000010", "SAI_VLAN_ATTR_VLAN_ID", "10"]);
    assert!(wait_until(Duration::from_secs(5), || intent(&sw, "vlan:Vlan10")["state"] == "programmed"));
    // The neighbour needs its IP and (upper-case) MAC.
    sw.db(
        "ASIC_DB",
        &[
            "hset",
            r#"ASIC_STATE:SAI_OBJECT_TYPE_NEIGHBOR_ENTRY:{"ip":"10.0.10.2","rif":"oid:0x6000000000a1b","switch_id":"oid:0x21000000000000"}"#,
            "SAI_NEIGHBOR_ENTRY_ATTR_DST_MAC_ADDRESS",
            "00:11:22:33:44:55",
        ],
    );
    assert!(wait_until(Duration::from_secs(5), || intent(&sw, "neighbor:Vlan10:10.0.10.2")["state"] == "programmed"));
    // Removed from ASIC_DB: pending again.
    sw.db("ASIC_DB", &["del", r#"ASIC_STATE:SAI_OBJECT_TYPE_ROUTE_ENTRY:{"dest":"10.1.0.0/24","switch_id":"oid:0x21000000000000","vr":"oid:0x3000000000022"}"#]);
    assert!(wait_until(Duration::from_secs(5), || intent(&sw, "route:10.1.0.0/24")["state"] == "pending"));

    // Only the difference is written: the changed route, the new one, the removed neighbour.
    apply(&sw, "b.yaml", DOC_B);
    let seen = orch.take(&sw);
    assert_eq!(
        keys(&seen),
        ["DEL NEIGH_TABLE:Vlan10:10.0.10.2", "SET ROUTE_TABLE:10.1.0.0/24", "SET ROUTE_TABLE:192.0.2.0/24"]
    );
    assert_eq!(fields(&seen, "ROUTE_TABLE", "10.1.0.0/24")["nexthop"], "10.0.10.2,10.0.10.3");
    assert_eq!(fields(&seen, "ROUTE_TABLE", "192.0.2.0/24")["blackhole"], "true");
    asic_route(&sw, "192.0.2.0/24", true);
    assert!(wait_until(Duration::from_secs(5), || intent(&sw, "route:192.0.2.0/24")["state"] == "programmed"));

    // Applying the same again writes nothing.
    apply(&sw, "b.yaml", DOC_B);
    assert!(orch.take(&sw).is_empty());

    // An empty intent set deletes everything soniclet owns, dependents first.
    apply(&sw, "empty.yaml", "");
    let seen = orch.take(&sw);
    assert_eq!(seen.len(), 8);
    assert!(seen.iter().all(|(_, op)| matches!(op, Op::Del { .. })));
    assert_eq!(sw.db("APPL_DB", &["keys", "VLAN_TABLE:*"]), "");
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn other_writers_keys_are_left_alone_and_a_restart_sends_only_what_is_missing() {
    let mut sw = switch();
    let orch = Orchagent::start(&sw);
    // fpmsyncd (say) owns this route already.
    sw.db("APPL_DB", &["hset", "ROUTE_TABLE:10.1.0.0/24", "nexthop", "10.9.9.9", "ifname", "Ethernet8"]);
    // zebra's connected route of Vlan10's subnet, through fpmsyncd (it carries `protocol`):
    // the same key as the address intent's subnet route, which soniclet then leaves to zebra.
    let connected = ["nexthop", "0.0.0.0", "ifname", "Vlan10", "protocol", "kernel"];
    sw.db("APPL_DB", &[&["hset", "ROUTE_TABLE:10.0.10.0/24"][..], &connected[..]].concat());
    apply(&sw, "a.yaml", DOC_A);
    let seen = orch.take(&sw);
    assert!(!keys(&seen).contains(&"SET ROUTE_TABLE:10.1.0.0/24".to_owned()));
    assert!(!keys(&seen).contains(&"SET ROUTE_TABLE:10.0.10.0/24".to_owned()), "zebra's subnet route: {seen:?}");
    assert_eq!(sw.hgetall("APPL_DB", "ROUTE_TABLE:10.0.10.0/24")["protocol"], "kernel");
    let address = intent(&sw, "address:Vlan10:10.0.10.1/24");
    assert_ne!(address["state"], "failed", "soniclet verifies zebra's route, it does not refuse it: {address}");
    assert_eq!(sw.hgetall("APPL_DB", "ROUTE_TABLE:10.1.0.0/24")["nexthop"], "10.9.9.9", "untouched");
    let route = intent(&sw, "route:10.1.0.0/24");
    assert_eq!(route["state"], "failed");
    assert!(route["message"].as_str().unwrap().contains("another writer"), "{route}");

    // The daemon dies; meanwhile one of soniclet's entries vanishes from APPL_DB.
    sw.kill_daemon();
    sw.db("APPL_DB", &["del", "NEIGH_TABLE:Vlan10:10.0.10.2"]);
    sw.start_daemon();
    assert!(wait_until(Duration::from_secs(20), || intent_report(&sw)["database_reachable"] == true));
    let seen = orch.take(&sw);
    assert_eq!(keys(&seen), ["SET NEIGH_TABLE:Vlan10:10.0.10.2"], "only the missing entry is sent again");
    // The other writer's route is still theirs.
    assert_eq!(sw.hgetall("APPL_DB", "ROUTE_TABLE:10.1.0.0/24")["nexthop"], "10.9.9.9");
    assert_eq!(sw.hgetall("APPL_DB", "ROUTE_TABLE:10.0.10.0/24")["protocol"], "kernel", "and zebra's is zebra's");
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn intents_survive_the_database_going_away() {
    let sw = switch();
    // A Redis crash: the database restarts empty, and every intent is written again.
    apply(&sw, "a.yaml", DOC_A);
    assert!(wait_until(Duration::from_secs(5), || sw.db("APPL_DB", &["keys", "*VLAN_TABLE*"]).contains("Vlan10")));
    let pid = sw.service("database")["pid"].as_u64().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL).unwrap();
    sw.wait_service("database", Duration::from_secs(30), |s| s["ready"] == true && s["pid"].as_u64() != Some(pid));
    assert!(wait_until(Duration::from_secs(20), || sw.db("APPL_DB", &["keys", "_ROUTE_TABLE:*"]).lines().count() == 2));
    assert_eq!(sw.hgetall("APPL_DB", "_ROUTE_TABLE:10.1.0.0/24")["ifname"], "Vlan10");

    // With the database stopped, an apply is accepted, kept, and programmed once it is back.
    sw.cli_ok(&["stop", "database"]);
    let path = sw.root().join("b.yaml");
    std::fs::write(&path, DOC_B).unwrap();
    let out = sw.cli(&["intent", "apply", path.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not reachable"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(intent_report(&sw)["database_reachable"], false);
    sw.cli_ok(&["start", "database"]);
    assert!(wait_until(Duration::from_secs(30), || {
        sw.db("APPL_DB", &["hgetall", "_ROUTE_TABLE:192.0.2.0/24"]).contains("blackhole")
    }));
}

#[test]
#[ignore = "needs root, containerd, runc and redis-server: `cargo xtask ci` runs it"]
fn bad_files_change_nothing_and_flags_are_honoured() {
    let sw = switch();
    apply(&sw, "a.yaml", DOC_A);
    let before = intent_report(&sw)["intents"].as_array().unwrap().len();
    for (name, text, expect) in [
        ("bad1.yaml", "routes: [{ prefix: 10.1.0.5/24, blackhole: true }]", "bad1.yaml: routes[0].prefix"),
        ("bad2.yaml", "vlans: { Vlan10: { members: { Ethernet0: maybe } } }", "vlans.Vlan10.members.Ethernet0"),
        ("bad3.yaml", "vlans: [oops", "bad3.yaml"),
        ("bad4.toml", "[ports.Ethernet0]\nmtu = \"big\"\n", "bad4.toml"),
    ] {
        let path = sw.root().join(name);
        std::fs::write(&path, text).unwrap();
        let out = sw.cli(&["intent", "apply", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(5), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{name}: {err}");
    }
    assert_eq!(intent_report(&sw)["intents"].as_array().unwrap().len(), before, "the accepted set is unchanged");

    // A warm-restart view in ASIC_DB: nothing is judged; says so.
    sw.db(
        "ASIC_DB",
        &["hset", "TEMP_ASIC_STATE:SAI_OBJECT_TYPE_VLAN:oid:0x26000000000099", "SAI_VLAN_ATTR_VLAN_ID", "10"],
    );
    assert!(wait_until(Duration::from_secs(5), || intent_report(&sw)["temp_view"] == true));
    let judged = intent_report(&sw)["asic_updates"].as_u64().unwrap();
    sw.db("ASIC_DB", &["hset", "ASIC_STATE:SAI_OBJECT_TYPE_VLAN:oid:0x26000000000010", "SAI_VLAN_ATTR_VLAN_ID", "10"]);
    // Once the daemon has judged that change, the VLAN is still pending: nothing counts.
    assert!(wait_until(Duration::from_secs(5), || intent_report(&sw)["asic_updates"].as_u64().unwrap() > judged));
    assert_eq!(intent(&sw, "vlan:Vlan10")["state"], "pending");
    sw.db("ASIC_DB", &["del", "TEMP_ASIC_STATE:SAI_OBJECT_TYPE_VLAN:oid:0x26000000000099"]);
    assert!(wait_until(Duration::from_secs(5), || intent(&sw, "vlan:Vlan10")["state"] == "programmed"));

    // Routes over ZMQ: soniclet cannot program them through Redis, and says why.
    sw.db("CONFIG_DB", &["hset", "SYSTEM_DEFAULTS|swss_zmq", "status", "enabled"]);
    apply(&sw, "b.yaml", DOC_B);
    assert!(wait_until(Duration::from_secs(5), || intent(&sw, "route:192.0.2.0/24")["state"] == "failed"));
    assert!(intent(&sw, "route:192.0.2.0/24")["message"].as_str().unwrap().contains("ZMQ"));
    // Async mode: ASIC_DB proves nothing; intents are unverified.
    sw.db("CONFIG_DB", &["del", "SYSTEM_DEFAULTS|swss_zmq"]);
    sw.db("CONFIG_DB", &["hset", "DEVICE_METADATA|localhost", "synchronous_mode", "disable"]);
    apply(&sw, "a.yaml", DOC_A);
    assert!(wait_until(Duration::from_secs(5), || intent_report(&sw)["synchronous_mode"] == false));
    assert_eq!(intent(&sw, "neighbor:Vlan10:10.0.10.2")["state"], "unverified");
    let _unused: Fields = Vec::new();
}
