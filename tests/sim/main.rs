//! The sim tier: the real daemon (`daemon::run_with`) over the in-memory twins of its ports
//! (container runtime, health, systemd units), driven through the real API and the real CLI
//! binary on a temp socket. No root, no containerd, no Redis: it runs on any machine.

#[path = "../common/mod.rs"]
mod common;
mod support;

use std::time::Duration;

use serde_json::Value;
use support::Sim;

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn the_cli_sees_a_boot_in_dependency_order_and_systemd_units_follow() {
    let sim = Sim::start(&[("a", ""), ("b", "requires = [\"a\"]"), ("c", "after = [\"b\"]")]);
    sim.cli_ok(&["wait", "--timeout", "10"]);
    let status: Value = serde_json::from_str(&sim.cli_ok(&["status", "--json"])).unwrap();
    let names: Vec<&str> = status["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"], "start order");
    for service in status["services"].as_array().unwrap() {
        assert_eq!(service["state"], "running", "{service}");
        assert_eq!(service["ready"], true, "{service}");
    }
    let table = sim.cli_ok(&["status"]);
    assert!(table.contains("3/3 enabled services ready"), "{table}");
    // Every service came up on its own: its unit was started.
    assert!(
        support::wait_until(Duration::from_secs(5), || sim.units.started().len() == 3),
        "{:?}",
        sim.units.started()
    );
}

#[test]
fn a_crash_restarts_the_service_and_an_operators_stop_and_start_act_on_what_requires_it() {
    let sim = Sim::start(&[("a", ""), ("b", "requires = [\"a\"]")]);
    sim.cli_ok(&["wait"]);
    let pid = sim.runtime.pid("b").unwrap();
    assert!(sim.runtime.crash("b", 137));
    assert!(support::wait_until(Duration::from_secs(10), || {
        let b = sim.service("b");
        b["ready"] == true && b["restarts"] == 1
    }));
    assert_ne!(sim.runtime.pid("b"), Some(pid));

    let out = sim.cli_ok(&["stop", "a"]);
    assert!(out.contains("a: stopped"), "{out}");
    assert_eq!(sim.service("b")["state"], "stopped", "what requires a stops too");
    assert!(sim.runtime.container_ids().is_empty());
    let out = sim.cli_ok(&["start", "b"]);
    assert!(out.contains("b: ready"), "{out}");
    assert_eq!(sim.service("a")["ready"], true, "what b requires starts first");
    let out = sim.cli_ok(&["restart", "a", "--timeout", "10"]);
    assert!(out.contains("a: ready"), "{out}");
}

#[test]
fn bad_requests_get_their_exit_codes_and_the_daemon_stays_up() {
    let sim = Sim::start(&[("a", "")]);
    sim.cli_ok(&["wait"]);
    let out = sim.cli(&["start", "nosuch"]);
    assert_eq!(code(&out), 4, "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown service \"nosuch\"; known services: a"));
    let out = sim.cli(&["upgrade", "a", "--image", "a:9"]);
    assert_eq!(code(&out), 4, "{out:?}");
    let out = sim.cli(&["upgrade", "a", "--image", "a:1"]);
    assert_eq!(code(&out), 5, "already runs: {out:?}");
    let out = sim.cli(&["rollback", "a"]);
    assert_eq!(code(&out), 4, "no previous image: {out:?}");
    let out = sim.cli(&["config", "reload", "--force"]);
    assert_eq!(code(&out), 4, "no config_db.json here: {out:?}");
    // A URL goes to the daemon to fetch; this one has no OS images to install beside.
    let out = sim.cli(&["os", "install", "http://ops:s3cret@127.0.0.1:9/onie-installer-x86_64"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 4, "{out:?}");
    assert!(said.contains("this switch has no OS images") && !said.contains("s3cret"), "{said}");
    let out = sim.cli(&["feature", "ls"]);
    assert_eq!(code(&out), 0);
    assert_eq!(sim.service("a")["ready"], true);
}

#[test]
fn an_upgrade_and_a_rollback_through_the_cli_are_gated_and_recorded() {
    let sim = Sim::start(&[("a", "")]);
    sim.cli_ok(&["wait"]);
    sim.runtime.add_image("a:2", "sha256:a2");
    let out = sim.cli(&["upgrade", "a", "--image", "a:2", "--settle", "0"]);
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(sim.service("a")["image_digest"], "sha256:a2");
    let history: Value = serde_json::from_str(&sim.cli_ok(&["history", "a", "--json"])).unwrap();
    assert_eq!(history[0]["result"], "succeeded");
    let out = sim.cli(&["rollback", "a", "--settle", "0"]);
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(sim.service("a")["image_digest"], "sha256:a:1");

    // An image whose probe never passes fails its gate and is rolled back: exit 9.
    sim.runtime.add_image("a:3", "sha256:a3");
    sim.health.never_ready("sha256:a3");
    let out = sim.cli(&["upgrade", "a", "--image", "a:3", "--timeout", "1", "--settle", "0"]);
    assert_eq!(code(&out), 9, "{out:?}");
    assert_eq!(sim.service("a")["image_digest"], "sha256:a:1");
}

#[test]
fn a_shutdown_through_the_cli_stops_every_service_and_ends_the_daemon() {
    let mut sim = Sim::start(&[("a", ""), ("b", "requires = [\"a\"]")]);
    sim.cli_ok(&["wait"]);
    sim.cli_ok(&["shutdown", "--stop-services"]);
    assert!(sim.join(Duration::from_secs(10)), "the daemon ended");
    assert!(sim.runtime.container_ids().is_empty());
}

#[test]
fn a_restarted_daemon_adopts_what_runs_without_a_restart() {
    let mut sim = Sim::start(&[("a", ""), ("b", "requires = [\"a\"]")]);
    sim.cli_ok(&["wait"]);
    let pids = (sim.runtime.pid("a"), sim.runtime.pid("b"));
    sim.restart_daemon();
    sim.cli_ok(&["wait"]);
    assert_eq!((sim.runtime.pid("a"), sim.runtime.pid("b")), pids);
    assert_eq!(sim.runtime.starts("a"), 1);
}

/// database, swss with its failure group and cold-start flush, bgp its dependent, and a
/// delayed snmp.
const SONIC_SET: &[(&str, &str)] = &[
    ("database", "database = true"),
    (
        "swss",
        "requires = [\"database\"]\nfailure-group = \"swss\"\n[service.cold-start]\nflush-databases = [\"APPL_DB\"]",
    ),
    ("bgp", "requires = [\"database\"]\nafter = [\"swss\"]\ndependent-of = [\"swss\"]"),
    ("snmp", "requires = [\"database\"]\ndelayed = true"),
];

#[test]
fn with_a_database_config_db_gates_boot_and_port_init_done_releases_delayed_services() {
    let sim = Sim::start(SONIC_SET);
    let out = sim.cli(&["wait", "bgp", "--timeout", "10"]);
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(sim.service("snmp")["state"], "waiting");
    assert!(sim.service("snmp")["message"].as_str().unwrap().contains("PortInitDone"));
    sim.databases.hset("APPL_DB", "PORT_TABLE:PortInitDone", &[("lanes", "0")]);
    sim.cli_ok(&["wait", "--timeout", "10"]);
    assert!(support::wait_until(Duration::from_secs(5), || {
        let system = sim.databases.hgetall("STATE_DB", "SYSTEM_READY|SYSTEM_STATE");
        system.iter().any(|(f, v)| f == "Status" && v == "UP")
    }));
    let feature = sim.databases.hgetall("STATE_DB", "FEATURE|snmp");
    assert!(feature.contains(&("state".into(), "enabled".into())), "{feature:?}");
}

/// A kubelet-run container named after the feature, in pod `sonic/<name>-x`.
fn pod(id: &str, name: &str, running: bool) -> soniclet::k8s::pods::PodContainer {
    soniclet::k8s::pods::PodContainer {
        id: id.into(),
        name: name.into(),
        pod_namespace: "sonic".into(),
        pod_name: format!("{name}-x"),
        pod_uid: format!("uid-{name}"),
        pod_labels: Default::default(),
        running,
        pid: None,
    }
}

#[test]
fn a_kube_owned_feature_is_handed_to_its_ready_pod_and_comes_back_when_the_pod_goes() {
    let sim = Sim::start_node(&[
        ("database", "database = true\nlocal-only = true"),
        ("swss", "requires = [\"database\"]\nlocal-only = true"),
        ("telemetry", "requires = [\"database\"]"),
    ]);
    sim.cli_ok(&["wait", "--timeout", "10"]);
    let local_pid = sim.service("telemetry")["pid"].clone();
    sim.databases.hset("CONFIG_DB", "FEATURE|telemetry", &[("state", "enabled"), ("set_owner", "kube")]);
    sim.databases.hset("CONFIG_DB", "FEATURE|swss", &[("state", "enabled"), ("set_owner", "kube")]);
    // The telemetry image's probe is a process named after it: the sim's pods run no
    // processes, so a pod with a process probe never becomes ready...
    sim.pods.set(vec![pod("c1", "telemetry", true), pod("c2", "swss", true)]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sim.service("telemetry")["pid"], local_pid, "an unready pod takes nothing over");
    assert_eq!(sim.service("swss")["state"], "running", "the data plane is never handed over");
    let feature = sim.databases.hgetall("STATE_DB", "FEATURE|telemetry");
    assert!(feature.contains(&("current_owner".into(), "local".into())), "{feature:?}");

    // ...until its process runs: a process named `telemetry` in the pod's PID namespace.
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("telemetry");
    std::fs::copy("/bin/sleep", &program).unwrap();
    let mut process = std::process::Command::new(&program).arg("60").spawn().unwrap();
    let mut ready = pod("c3", "telemetry", true);
    ready.pid = Some(process.id());
    sim.pods.set(vec![ready]);
    let handed = support::wait_until(Duration::from_secs(10), || sim.service("telemetry")["state"] == "kube");
    assert!(handed, "{}", sim.service("telemetry"));
    let view = sim.service("telemetry");
    assert_eq!(view["ready"], true);
    assert_eq!(view["message"], "runs as Kubernetes pod sonic/telemetry-x");
    assert!(sim.runtime.pid("telemetry").is_none(), "the local container is stopped");
    let feature = sim.databases.hgetall("STATE_DB", "FEATURE|telemetry");
    for field in [("current_owner", "kube"), ("container_id", "c3"), ("remote_state", "running")] {
        assert!(feature.contains(&(field.0.into(), field.1.into())), "{field:?}: {feature:?}");
    }
    let table = sim.cli_ok(&["status"]);
    assert!(table.contains("3/3 enabled services ready"), "a ready pod counts: {table}");

    // The pod goes: the local container is back, and serves.
    process.kill().unwrap();
    let _ = process.wait();
    sim.pods.set(Vec::new());
    let back = support::wait_until(Duration::from_secs(10), || {
        sim.service("telemetry")["ready"] == true && sim.service("telemetry")["state"] == "running"
    });
    assert!(back, "{}", sim.service("telemetry"));
    let feature = sim.databases.hgetall("STATE_DB", "FEATURE|telemetry");
    assert!(feature.contains(&("current_owner".into(), "local".into())), "{feature:?}");
}

#[test]
fn feature_changes_go_through_config_db_from_the_cli_or_any_writer() {
    let sim = Sim::start(SONIC_SET);
    sim.databases.hset("APPL_DB", "PORT_TABLE:PortInitDone", &[("lanes", "0")]);
    sim.cli_ok(&["wait", "--timeout", "10"]);
    let out = sim.cli_ok(&["feature", "state", "snmp", "disabled"]);
    assert!(out.contains("snmp: state disabled"), "{out}");
    assert_eq!(sim.service("snmp")["state"], "stopped");
    let written = sim.databases.hgetall("CONFIG_DB", "FEATURE|snmp");
    assert_eq!(written, vec![("state".to_owned(), "disabled".to_owned())]);
    // Another writer enables it again: the daemon follows.
    sim.databases.hset("CONFIG_DB", "FEATURE|snmp", &[("state", "enabled")]);
    assert!(support::wait_until(Duration::from_secs(10), || sim.service("snmp")["ready"] == true));
    // auto_restart alone completes the entry with the state it has.
    sim.cli_ok(&["feature", "autorestart", "bgp", "disabled"]);
    let bgp = sim.databases.hgetall("CONFIG_DB", "FEATURE|bgp");
    assert!(
        bgp.contains(&("state".into(), "enabled".into())) && bgp.contains(&("auto_restart".into(), "disabled".into())),
        "{bgp:?}"
    );
    let out = sim.cli(&["feature", "state", "database", "disabled"]);
    assert_eq!(code(&out), 7, "{out:?}");
}

#[test]
fn a_config_reload_replaces_config_db_and_brings_everything_back() {
    let sim = Sim::start(SONIC_SET);
    sim.databases.hset("APPL_DB", "PORT_TABLE:PortInitDone", &[("lanes", "0")]);
    sim.cli_ok(&["wait", "--timeout", "10"]);
    let file = sim.path("config_db.json");
    std::fs::write(
        &file,
        r#"{"FEATURE": {"bgp": {"state": "disabled"}}, "DEVICE_METADATA": {"localhost": {"hostname": "sim"}}}"#,
    )
    .unwrap();
    // PortInitDone goes with the cold start of swss's group; the test's "ports" come back.
    let databases = std::sync::Arc::clone(&sim.databases);
    let ports = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        databases.hset("APPL_DB", "PORT_TABLE:PortInitDone", &[("lanes", "0")]);
    });
    let out = sim.cli(&["config", "reload", file.to_str().unwrap(), "--force"]);
    ports.join().unwrap();
    assert_eq!(code(&out), 0, "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("config reload done"), "{out:?}");
    assert_eq!(sim.service("bgp")["state"], "stopped", "the new FEATURE table disables bgp");
    assert_eq!(
        sim.databases.hgetall("CONFIG_DB", "DEVICE_METADATA|localhost"),
        vec![("hostname".into(), "sim".into())]
    );
    let bad = sim.path("broken.json");
    std::fs::write(&bad, "{\"FEATURE\": [1]}").unwrap();
    let out = sim.cli(&["config", "reload", bad.to_str().unwrap(), "--force"]);
    assert_eq!(code(&out), 5, "a broken file changes nothing: {out:?}");
}

/// `[kubernetes] server` in the agent config: the daemon joins as `soniclet k8s join
/// --no-wait` would, writing the agent's files (the token 0600, never in a log), and says
/// plainly that this image has no k3s to start.
#[test]
fn the_agent_config_joins_the_cluster_it_names() {
    use std::os::unix::fs::PermissionsExt;
    const SECRET: &str = "K10sim::server:config-join-secret";
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sim = Sim::start_with(
        &[("a", "")],
        &format!(
            "[kubernetes]\nserver = \"https://k3s.example.net:6443\"\ntoken-file = \"{}\"\nnode-name = \"leaf9\"\nlabels = [\"rack=r9\"]\n",
            token.display()
        ),
    );
    let config = sim.sonic_root().join("etc/rancher/k3s/config.yaml");
    assert!(support::wait_until(Duration::from_secs(10), || config.exists()), "the daemon writes the agent's config");
    let agent: Value = serde_norway::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(
        (agent["server"].as_str(), agent["node-name"].as_str()),
        (Some("https://k3s.example.net:6443"), Some("leaf9"))
    );
    let labels: Vec<&str> = agent["node-label"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(labels.contains(&"rack=r9"), "{labels:?}");
    let copy = sim.sonic_root().join("etc/rancher/k3s/soniclet-token");
    assert_eq!(std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&copy).unwrap().trim(), SECRET);
    sim.cli_ok(&["wait", "--timeout", "10"]);
}

/// CONFIG_DB `KUBERNETES_MASTER|SERVER`, as KubeSonic's `config kubernetes server` writes
/// it: the daemon joins the server it names with the token in `/etc/sonic/credentials`,
/// reports STATE_DB's entry, keeps its membership when the entry is bad, moves when the port
/// changes, and leaves when `disable` is set.
#[test]
fn config_db_kubernetes_master_joins_moves_and_leaves() {
    use std::os::unix::fs::PermissionsExt;
    // The sim's switch has no hostname to name its node.
    let sim = Sim::start_with(SONIC_SET, "[kubernetes]\nnode-name = \"leaf3\"\n");
    sim.databases.hset("APPL_DB", "PORT_TABLE:PortInitDone", &[("lanes", "0")]);
    sim.cli_ok(&["wait", "--timeout", "10"]);
    let credentials = sim.sonic_root().join("etc/sonic/credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    let token = credentials.join("k3s-token");
    std::fs::write(&token, "K10sim::server:config-db-secret\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = sim.sonic_root().join("etc/rancher/k3s/config.yaml");
    let server = || -> Option<String> {
        let text = std::fs::read_to_string(&config).ok()?;
        let agent: Value = serde_norway::from_str(&text).unwrap();
        agent["server"].as_str().map(str::to_owned)
    };
    sim.databases.hset("CONFIG_DB", "KUBERNETES_MASTER|SERVER", &[("ip", "10.1.2.3")]);
    assert!(
        support::wait_until(Duration::from_secs(10), || server().as_deref() == Some("https://10.1.2.3:6443")),
        "the daemon joins the server CONFIG_DB names: {:?}",
        server()
    );
    let state = || sim.databases.hgetall("STATE_DB", "KUBERNETES_MASTER|SERVER");
    assert!(support::wait_until(Duration::from_secs(5), || !state().is_empty()));
    let state = state();
    for field in [("connected", "false"), ("ip", "10.1.2.3"), ("port", "6443")] {
        assert!(state.contains(&(field.0.to_owned(), field.1.to_owned())), "{state:?}");
    }
    // A bad port changes nothing.
    sim.databases.hset("CONFIG_DB", "KUBERNETES_MASTER|SERVER", &[("port", "sixty")]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server().as_deref(), Some("https://10.1.2.3:6443"));
    sim.databases.hset("CONFIG_DB", "KUBERNETES_MASTER|SERVER", &[("port", "7443")]);
    assert!(
        support::wait_until(Duration::from_secs(10), || server().as_deref() == Some("https://10.1.2.3:7443")),
        "a new port moves the switch: {:?}",
        server()
    );
    sim.databases.hset("CONFIG_DB", "KUBERNETES_MASTER|SERVER", &[("disable", "true")]);
    assert!(
        support::wait_until(Duration::from_secs(10), || !config.exists()),
        "disable leaves the cluster: the agent's files go"
    );
    assert!(!sim.sonic_root().join("etc/rancher/k3s/soniclet-token").exists());
    assert!(token.exists(), "the operator's token stays where they put it");
}

/// `soniclet k8s` on a switch whose image carries no k3s: the join's files are written (the
/// token 0600, the config naming it), the missing k3s is said plainly, `status` reports the
/// join without the token, `leave` removes every file; bad input changes nothing.
#[test]
fn k8s_join_writes_the_agents_files_status_reads_them_and_leave_removes_them() {
    use std::os::unix::fs::PermissionsExt;
    const SECRET: &str = "K10sim::server:do-not-print-me";
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let services = dir.path().join("services");
    std::fs::create_dir_all(root.join("etc/sonic")).unwrap();
    std::fs::create_dir_all(&services).unwrap();
    std::fs::write(
        services.join("database.toml"),
        "[service]\n[container]\nimage = \"docker-database:latest\"\nmemory-min = \"512Mi\"\n[readiness]\nprobe = { type = \"process\", name = \"redis-server\" }\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/sonic/config_db.json"),
        r#"{"DEVICE_METADATA": {"localhost": {"hostname": "Leaf1", "hwsku": "Force10-S6000", "platform": "x86_64-kvm_x86_64-r0", "type": "LeafRouter"}}}"#,
    )
    .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[paths]\nservices = \"{}\"\nsonic-root = \"{}\"\n[os]\nhost = \"{}\"\n",
            services.display(),
            root.display(),
            dir.path().join("host").display()
        ),
    )
    .unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let k8s = |args: &[&str]| {
        let out = std::process::Command::new(support::SONICLET)
            .arg("k8s")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!text.contains(SECRET), "the token is never shown: {text}");
        (code(&out), text)
    };
    let server = "https://k3s.example.net:6443";
    let token_arg = token.display().to_string();

    // Bad input: refused, naming what is wrong, and nothing written.
    let (exit, text) = k8s(&["join", "--server", "http://k3s:6443", "--token-file", &token_arg]);
    assert_eq!(exit, 5, "{text}");
    assert!(text.contains("must be https://"), "{text}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (exit, text) = k8s(&["join", "--server", server, "--token-file", &token_arg]);
    assert_eq!(exit, 5, "{text}");
    assert!(text.contains("readable by others (mode 644): chmod 600"), "{text}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (exit, text) = k8s(&["join", "--server", server, "--token-file", "/nonexistent/token"]);
    assert_eq!(exit, 5, "{text}");
    assert!(text.contains("/nonexistent/token"), "{text}");
    assert!(!root.join("etc/rancher").exists(), "a refused join writes nothing");

    let (exit, text) = k8s(&["join", "--server", server, "--token-file", &token_arg, "--label", "pod=a1"]);
    assert_eq!(exit, 4, "no k3s in this image: {text}");
    assert!(text.contains("carries no k3s") && text.contains("K3S_BIN"), "{text}");
    let copy = root.join("etc/rancher/k3s/soniclet-token");
    assert_eq!(std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777, 0o600);
    let agent: Value =
        serde_norway::from_str(&std::fs::read_to_string(root.join("etc/rancher/k3s/config.yaml")).unwrap()).unwrap();
    assert_eq!(agent["server"], server);
    assert_eq!(agent["node-name"], "leaf1", "the hostname, as a node name");
    assert_eq!(agent["token-file"], "/etc/rancher/k3s/soniclet-token");
    let labels: Vec<&str> = agent["node-label"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for label in ["sonic.net/hwsku=Force10-S6000", "hwsku=Force10-S6000", "sonic.net/asic=vs", "pod=a1"] {
        assert!(labels.contains(&label), "{label} in {labels:?}");
    }
    let kubelet: Vec<&str> = agent["kubelet-arg"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(kubelet.contains(&"cgroup-driver=systemd"), "{kubelet:?}");
    assert!(kubelet.contains(&"system-reserved=cpu=500m,memory=768Mi"), "the floors plus the host's: {kubelet:?}");
    assert!(kubelet.contains(&"enforce-node-allocatable=pods"), "{kubelet:?}");
    assert_eq!(agent["pause-image"], "soniclet.local/pause:1");

    let (exit, text) = k8s(&["status", "--json"]);
    assert_eq!(exit, 0, "{text}");
    let status: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((status["joined"].as_bool(), status["k3s_installed"].as_bool()), (Some(true), Some(false)));
    assert_eq!(status["node_name"], "leaf1");

    std::fs::create_dir_all(root.join("var/lib/rancher/k3s/agent")).unwrap();
    let (exit, text) = k8s(&["leave"]);
    assert_eq!(exit, 0, "{text}");
    assert!(!copy.exists() && !root.join("etc/rancher/k3s/config.yaml").exists());
    assert!(!root.join("var/lib/rancher/k3s").exists(), "the agent's state is removed");
    let (_, text) = k8s(&["status", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["joined"], false);
}
