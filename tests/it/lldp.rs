//! lldp_syncd's reading of a real lldpd: Debian's lldpd in two network namespaces cabled by
//! veth, the far one named `s2` with a port description, and `lldpctl -f json` on the near
//! one read into `LLDP_ENTRY_TABLE` and `LLDP_LOC_CHASSIS` as SONiC's lldp_syncd writes them;
//! then `soniclet lldp-syncd` writing them to a real redis-server, and removing them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use soniclet::lldp_syncd::neighbors::{entries, local_chassis};

use crate::support::{db_config_for, wait_until, RedisServer, SONICLET};

fn run(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces, `<a>` with Ethernet8 and `<b>` with Ethernet9 on the other end, each
/// running lldpd on its own control socket.
struct Pair {
    namespaces: [String; 2],
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
}

impl Pair {
    fn socket(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("lldpd-{n}.socket"))
    }

    fn lldpcli(&self, n: usize, args: &[&str]) -> String {
        let socket = self.socket(n);
        let mut all = vec!["ip", "netns", "exec", &self.namespaces[n], "lldpcli", "-u", socket.to_str().unwrap()];
        all.extend_from_slice(args);
        ok(&all)
    }

    /// The far lldpd named `s2`, port ID by name, with a description, sending every second;
    /// the near one named `near_hostname`; then the cable.
    fn configure_and_cable(&self, near_hostname: Option<&str>) {
        // The near lldpd listens on its port before the far one sends.
        assert!(
            wait_until(Duration::from_secs(10), || self.lldpcli(0, &["show", "interfaces"]).contains("Ethernet8")),
            "lldpd never attached to Ethernet8"
        );
        // lldpd lists a port before its agent receives on it: no readiness to wait for but time.
        std::thread::sleep(Duration::from_secs(2));
        self.lldpcli(1, &["configure", "lldp", "tx-interval", "1"]);
        self.lldpcli(1, &["configure", "system", "hostname", "s2"]);
        self.lldpcli(1, &["configure", "lldp", "portidsubtype", "ifname"]);
        self.lldpcli(1, &["configure", "ports", "Ethernet9", "lldp", "portdescription", "to vs"]);
        if let Some(hostname) = near_hostname {
            self.lldpcli(0, &["configure", "system", "hostname", hostname]);
        }
        ok(&["ip", "-n", &self.namespaces[1], "link", "set", "Ethernet9", "up"]);
    }

    /// `soniclet ROLE...` in the near namespace, on its lldpd and the databases of `config`.
    fn run_role(&self, role: &[&str], config: &Path) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.namespaces[0], SONICLET])
            .args(role)
            .arg("--lldpd-socket")
            .arg(self.socket(0))
            .arg("--db-config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn logs(&self) -> String {
        (0..2)
            .map(|n| std::fs::read_to_string(self.dir.path().join(format!("lldpd-{n}.log"))).unwrap_or_default())
            .collect()
    }

    fn start() -> Self {
        static PAIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = format!("{}-{}", std::process::id(), PAIRS.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let namespaces = [format!("lldp-a-{id}"), format!("lldp-b-{id}")];
        let dir = tempfile::Builder::new().prefix("soniclet-lldp-").tempdir().unwrap();
        let mut pair = Self { namespaces, dir, daemons: Vec::new() };
        let [a, b] = pair.namespaces.clone();
        ok(&["ip", "netns", "add", &a]);
        ok(&["ip", "netns", "add", &b]);
        let (ta, tb) = (format!("la{id}"), format!("lb{id}"));
        ok(&["ip", "link", "add", &ta, "type", "veth", "peer", "name", &tb]);
        ok(&["ip", "link", "set", &ta, "netns", &a, "name", "Ethernet8"]);
        ok(&["ip", "link", "set", &tb, "netns", &b, "name", "Ethernet9"]);
        // Ethernet9 comes up once the far lldpd is configured (`cable`): lldpd sends a
        // configuration change on its own schedule, so the near side would see it late.
        ok(&["ip", "-n", &a, "link", "set", "Ethernet8", "up"]);
        for ns in [&a, &b] {
            ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        ok(&["ip", "-n", &b, "addr", "add", "10.0.8.1/31", "dev", "Ethernet9"]);
        for (n, ns) in pair.namespaces.clone().iter().enumerate() {
            let socket = pair.socket(n);
            let log = std::fs::File::create(pair.dir.path().join(format!("lldpd-{n}.log"))).unwrap();
            let child = Command::new("ip")
                .args(["netns", "exec", ns, "lldpd", "-d", "-u"])
                .arg(&socket)
                .args(["-I", "Ethernet*"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            pair.daemons.push(child);
            assert!(wait_until(Duration::from_secs(10), || Path::new(&socket).exists()), "lldpd did not start in {ns}");
        }
        pair
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for daemon in &mut self.daemons {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        for ns in &self.namespaces {
            let pids = String::from_utf8_lossy(&run(&["ip", "netns", "pids", ns]).stdout).into_owned();
            for pid in pids.split_whitespace() {
                let _ = run(&["kill", "-9", pid]);
            }
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

#[test]
#[ignore = "needs root and lldpd: `cargo xtask ci` runs it"]
fn a_real_lldpd_neighbour_reads_as_sonics_lldp_entry_table() {
    let pair = Pair::start();
    pair.configure_and_cable(Some("vs"));
    // lldpd sends as soon as its port comes up.
    let read = || entries(&pair.lldpcli(0, &["-f", "json", "show", "neighbors", "details"])).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || {
            read().get("Ethernet8").is_some_and(|f| f.iter().any(|(k, v)| k == "lldp_rem_sys_name" && v == "s2"))
        }),
        "no neighbour s2 on Ethernet8: {:?}\n{}\n{}\n{}",
        read(),
        pair.logs(),
        pair.lldpcli(0, &["show", "interfaces"]),
        pair.lldpcli(1, &["show", "interfaces"])
    );
    let entry = &read()["Ethernet8"];
    let field = |name: &str| entry.iter().find(|(f, _)| f == name).map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!((field("lldp_rem_port_id_subtype"), field("lldp_rem_port_id")), ("5".into(), "Ethernet9".into()));
    assert_eq!(field("lldp_rem_port_desc"), "to vs");
    assert_eq!(field("lldp_rem_chassis_id_subtype"), "4", "chassis id is a MAC");
    assert!(field("lldp_rem_man_addr").split(',').any(|a| a == "10.0.8.1"), "{entry:?}");
    assert!(field("lldp_rem_time_mark").parse::<u64>().is_ok(), "{entry:?}");
    assert!(!field("lldp_rem_sys_cap_supported").is_empty(), "{entry:?}");
    let local = local_chassis(&pair.lldpcli(0, &["-f", "json", "show", "chassis"])).unwrap();
    assert!(local.contains(&("lldp_loc_sys_name".into(), "vs".into())), "{local:?}");
}

#[test]
#[ignore = "needs root, lldpd and redis-server: `cargo xtask ci` runs it"]
fn lldp_syncd_writes_a_real_neighbour_to_appl_db_and_removes_it_when_it_goes() {
    let pair = Pair::start();
    let server = RedisServer::start();
    let config = db_config_for(&server);
    // A port a previous run wrote, with no neighbour now.
    server.cli(0, &["HSET", "LLDP_ENTRY_TABLE:Ethernet4", "lldp_rem_sys_name", "old"]);
    let mut syncd = pair.run_role(&["lldp-syncd", "--interval", "1"], &config);
    pair.configure_and_cable(Some("vs"));
    let hget = |key: &str, field: &str| server.cli(0, &["HGET", key, field]);
    let written = wait_until(Duration::from_secs(20), || {
        hget("LLDP_ENTRY_TABLE:Ethernet8", "lldp_rem_sys_name") == "s2"
            && hget("LLDP_ENTRY_TABLE:Ethernet8", "lldp_rem_port_desc") == "to vs"
    });
    let table = server.cli(0, &["KEYS", "LLDP_*"]);
    assert!(written, "APPL_DB: {table}");
    assert_eq!(hget("LLDP_ENTRY_TABLE:Ethernet8", "lldp_rem_port_id"), "Ethernet9");
    assert_eq!(hget("LLDP_LOC_CHASSIS", "lldp_loc_sys_name"), "vs");
    assert_eq!(server.cli(0, &["EXISTS", "LLDP_ENTRY_TABLE:Ethernet4"]), "0", "the stale port is removed");
    // The far side goes quiet: its TTL (4 s at one frame a second) ends, and so does the entry.
    ok(&["ip", "-n", &pair.namespaces[1], "link", "set", "Ethernet9", "down"]);
    assert!(
        wait_until(Duration::from_secs(20), || server.cli(0, &["EXISTS", "LLDP_ENTRY_TABLE:Ethernet8"]) == "0"),
        "the neighbour's entry stays: {}",
        server.cli(0, &["KEYS", "LLDP_*"])
    );
    let _ = syncd.kill();
    let _ = syncd.wait();
}

#[test]
#[ignore = "needs root, lldpd and redis-server: `cargo xtask ci` runs it"]
fn lldpmgrd_gives_lldpd_the_ports_alias_description_and_the_hostname() {
    let pair = Pair::start();
    let server = RedisServer::start();
    let config = db_config_for(&server);
    // As orchagent and portsyncd leave them: APPL_DB's port (popped), STATE_DB's netdev.
    server.cli(4, &["HSET", "DEVICE_METADATA|localhost", "hostname", "leaf-vs"]);
    server.cli(0, &["HSET", "PORT_TABLE:Ethernet8", "alias", "etp3", "description", "to s2", "oper_status", "up"]);
    server.cli(6, &["HSET", "PORT_TABLE|Ethernet8", "netdev_oper_status", "up"]);
    pair.lldpcli(0, &["configure", "lldp", "tx-interval", "1"]);
    let mut mgrd = pair.run_role(&["lldpmgrd"], &config);
    pair.configure_and_cable(None);
    let far = || entries(&pair.lldpcli(1, &["-f", "json", "show", "neighbors", "details"])).unwrap();
    let field = |name: &str| {
        far()
            .get("Ethernet9")
            .and_then(|f| f.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .unwrap_or_default()
    };
    let configured = wait_until(Duration::from_secs(20), || {
        field("lldp_rem_port_id") == "etp3" && field("lldp_rem_sys_name") == "leaf-vs"
    });
    assert!(configured, "the far side sees: {:?}", far());
    assert_eq!(field("lldp_rem_port_id_subtype"), "7", "a locally assigned port ID");
    assert_eq!(field("lldp_rem_port_desc"), "to s2");
    let _ = mgrd.kill();
    let _ = mgrd.wait();
}
