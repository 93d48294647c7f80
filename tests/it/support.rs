//! The integration harness: a private containerd (in a network namespace of its own, so
//! host-network containers of parallel tests never collide) and the real soniclet daemon, in
//! a temp dir. Needs root, containerd, runc and the VS image archives (`cargo xtask images`);
//! anything missing fails the test with what to do, never skips it.

pub use crate::common::wait_until;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

pub const SONICLET: &str = env!("CARGO_BIN_EXE_soniclet");

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails (never skips) when the environment cannot run the integration tier.
pub fn require_environment() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "integration tests need root (containerd, runc, network namespaces): run `cargo xtask ci` as root"
    );
    for program in ["containerd", "runc", "ctr", "ip", "nsenter"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().unwrap();
        assert!(found.status.success(), "{program} is missing: run `cargo xtask ci`, which installs it");
    }
    let images = project_root().join("target/images/docker-database.tar");
    assert!(images.exists(), "VS images are missing ({}): run `cargo xtask images`", images.display());
}

/// A manifest for a test service running `script` in the busybox-based teamd image; it is
/// ready once a process named `teammgrd` runs (the script makes one with `ready`).
pub fn test_manifest(service_extra: &str, script: &str) -> String {
    format!(
        r#"[service]
{service_extra}
[container]
image = "docker-teamd:latest"
command = ["/bin/sh", "-c", {script:?}]
volumes = ["/shared:/shared:rw"]
[readiness]
probe = {{ type = "process", name = "teammgrd" }}
timeout = 30
interval-ms = 20
"#
    )
}

/// Shell that records start and ready times in /shared, then becomes `teammgrd`.
pub fn start_then_ready(delay: &str) -> String {
    format!(
        "touch /shared/$CONTAINER_NAME.start; sleep {delay}; touch /shared/$CONTAINER_NAME.ready; exec -a sleep /usr/bin/teammgrd 100000"
    )
}

pub struct TestSwitch {
    pub dir: tempfile::TempDir,
    pub netns: String,
    pub namespace: String,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub services: PathBuf,
    containerd_socket: PathBuf,
    containerd: Child,
    daemon: Option<Child>,
}

impl TestSwitch {
    /// A switch with these manifests (name, text); nothing runs but containerd.
    pub fn new(manifests: &[(&str, &str)]) -> Self {
        require_environment();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{n}", std::process::id());
        let dir = tempfile::Builder::new().prefix("soniclet-it-").tempdir().unwrap();
        let root = dir.path();
        let netns = format!("soniclet-it-{id}");
        let namespace = format!("sonic-it-{id}");
        run(Command::new("ip").args(["netns", "add", &netns]));
        run(Command::new("ip").args(["-n", &netns, "link", "set", "lo", "up"]));

        let containerd_socket = root.join("containerd.sock");
        let containerd_config = root.join("containerd.toml");
        std::fs::write(
            &containerd_config,
            format!(
                "version = 2\nroot = \"{r}/containerd/root\"\nstate = \"{r}/containerd/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{s}\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{r}/containerd/opt\"\n",
                r = root.display(),
                s = containerd_socket.display()
            ),
        )
        .unwrap();
        // nsenter --net (not `ip netns exec`, which remounts /sys and hides the cgroup mounts).
        let log = std::fs::File::create(root.join("containerd.log")).unwrap();
        let containerd = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{netns}"))
            .args(["containerd", "--config"])
            .arg(&containerd_config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        assert!(wait_until(Duration::from_secs(20), || containerd_socket.exists()), "containerd did not start");

        let services = root.join("services");
        std::fs::create_dir_all(&services).unwrap();
        for (name, text) in manifests {
            std::fs::write(services.join(format!("{name}.toml")), text).unwrap();
        }
        let socket = root.join("soniclet.sock");
        let config = root.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[containerd]\nsocket = \"{cs}\"\nnamespace = \"{namespace}\"\n[paths]\nservices = \"{sv}\"\n\
                 state = \"{r}/state\"\nlogs = \"{r}/logs\"\nrun = \"{r}/run\"\nsonic-root = \"{r}/root\"\n[api]\nsocket = \"{s}\"\n",
                cs = containerd_socket.display(),
                sv = services.display(),
                r = root.display(),
                s = socket.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("root/shared")).unwrap();
        Self { dir, netns, namespace, socket, config, services, containerd_socket, containerd, daemon: None }
    }

    /// The project's manifest for `name` (from `services/`).
    pub fn real_manifest(name: &str) -> String {
        std::fs::read_to_string(project_root().join(format!("services/{name}.toml"))).unwrap()
    }

    /// A switch with the project's real `services/` (the full VS set).
    pub fn vs() -> Self {
        let dir = project_root().join("services");
        let mut manifests = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                manifests.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
        let refs: Vec<(&str, &str)> = manifests.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        Self::new(&refs)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn shared(&self) -> PathBuf {
        self.root().join("root/shared")
    }

    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        let child = self.spawn_daemon();
        self.daemon = Some(child);
        let socket = self.socket.clone();
        assert!(
            wait_until(Duration::from_secs(20), || std::os::unix::net::UnixStream::connect(&socket).is_ok()),
            "daemon did not come up; its log:\n{}",
            self.daemon_log()
        );
    }

    /// Starts the daemon without waiting; for tests that expect it to exit.
    pub fn spawn_daemon(&self) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.root().join("daemon.log")).unwrap();
        Command::new(SONICLET)
            .args(["daemon", "--config"])
            .arg(&self.config)
            .env("SONICLET_LOG", "info,soniclet=debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.root().join("daemon.log")).unwrap_or_default()
    }

    /// `kill -9` of the daemon; containers keep running.
    pub fn kill_daemon(&mut self) {
        let mut child = self.daemon.take().expect("daemon running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM to the daemon and wait for it.
    pub fn stop_daemon(&mut self) -> std::process::ExitStatus {
        let mut child = self.daemon.take().expect("daemon running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM).unwrap();
        child.wait().unwrap()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(SONICLET)
            .args(args)
            .env("SONICLET_SOCKET", &self.socket)
            .env("SONICLET_SONIC_ROOT", self.root().join("root"))
            .output()
            .unwrap()
    }

    /// Runs the CLI in the background (its output discarded).
    pub fn cli_spawn(&self, args: &[&str]) -> Child {
        Command::new(SONICLET)
            .args(args)
            .env("SONICLET_SOCKET", &self.socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// The daemon's `state.json`.
    pub fn state_file(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.root().join("state/state.json")).unwrap()).unwrap()
    }

    /// `soniclet db DB ARGS...` against this switch's databases.
    pub fn db(&self, db: &str, args: &[&str]) -> String {
        let mut all = vec!["db", db];
        all.extend_from_slice(args);
        self.cli_ok(&all).trim_end().to_owned()
    }

    /// Writes a file under the switch's SONiC root (`etc/sonic/config_db.json`, ...).
    pub fn sonic_file(&self, path: &str, text: &str) {
        let full = self.root().join("root").join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    /// Adds lines to the daemon's config file (takes effect at the next daemon start).
    pub fn append_config(&self, text: &str) {
        let mut config = std::fs::read_to_string(&self.config).unwrap();
        config.push_str(text);
        std::fs::write(&self.config, config).unwrap();
    }

    /// Daemon log lines containing `needle`, in order.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.daemon_log().lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
    }

    /// Position of the first log line containing all of `needles`.
    pub fn log_position(&self, needles: &[&str]) -> Option<usize> {
        self.daemon_log().lines().position(|l| needles.iter().all(|n| l.contains(n)))
    }

    /// The switch's Redis socket (the database container's, seen from the host).
    pub fn redis_socket(&self) -> PathBuf {
        self.root().join("root/var/run/redis/redis.sock")
    }

    /// A hash as a JSON object, through `soniclet db`.
    pub fn hgetall(&self, db: &str, key: &str) -> Value {
        serde_json::from_str(&self.db(db, &["hgetall", key])).unwrap()
    }

    /// Runs the CLI and fails the test unless it succeeds.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "soniclet {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn import(&self, images: &[&str]) {
        let paths: Vec<String> = images
            .iter()
            .map(|i| project_root().join(format!("target/images/{i}.tar")).display().to_string())
            .collect();
        let mut args = vec!["image", "import"];
        args.extend(paths.iter().map(String::as_str));
        self.cli_ok(&args);
    }

    /// Imports every VS image.
    pub fn import_all(&self) {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(project_root().join("target/images")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "tar") {
                names.push(path.file_stem().unwrap().to_string_lossy().into_owned());
            }
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.import(&refs);
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.cli_ok(&["status", "--json"])).unwrap()
    }

    pub fn service(&self, name: &str) -> Value {
        self.status()["services"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap()
    }

    pub fn pids(&self) -> BTreeMap<String, Option<u64>> {
        self.status()["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_owned(), s["pid"].as_u64()))
            .collect()
    }

    pub fn all_ready(&self) -> bool {
        self.status()["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["enabled"] == true)
            .all(|s| s["ready"] == true)
    }

    pub fn wait_ready(&self, timeout: Duration) {
        let ok = wait_until(timeout, || self.all_ready());
        assert!(
            ok,
            "services not ready within {timeout:?}:\n{}\ndaemon log:\n{}",
            self.cli_ok(&["status"]),
            self.daemon_log()
        );
    }

    pub fn wait_service(&self, name: &str, timeout: Duration, cond: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(timeout, || {
            last = self.service(name);
            cond(&last)
        });
        assert!(ok, "{name} did not reach the expected state within {timeout:?}; last: {last}\n{}", self.daemon_log());
        last
    }

    /// `ctr` against this switch's containerd and namespace.
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(&self.containerd_socket)
            .args(["-n", &self.namespace])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn containers(&self) -> Vec<String> {
        self.ctr(&["containers", "list", "-q"]).lines().map(str::to_owned).collect()
    }

    /// Modification time of a marker file the test services write in /shared.
    pub fn marker(&self, name: &str) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.shared().join(name)).and_then(|m| m.modified()).ok()
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.stdout(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Drop for TestSwitch {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Kill every task this switch's containerd runs, then containerd itself.
        for id in self.ctr(&["tasks", "list", "-q"]).lines() {
            let _ = self.ctr(&["tasks", "kill", "-a", "-s", "SIGKILL", id]);
        }
        std::thread::sleep(Duration::from_millis(200));
        for id in self.ctr(&["tasks", "list", "-q"]).lines() {
            let _ = self.ctr(&["tasks", "delete", "-f", id]);
        }
        for id in self.containers() {
            let _ = self.ctr(&["containers", "delete", &id]);
        }
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.containerd.id() as i32), nix::sys::signal::SIGTERM);
        let _ = self.containerd.wait();
        let _ = Command::new("umount").arg("-R").arg("-l").arg(self.root().join("containerd")).output();
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
    }
}

/// A database_config.json whose databases are all on `server`.
pub fn db_config_for(server: &RedisServer) -> PathBuf {
    let mut config = soniclet::db::config::DbConfig::standard();
    config.instances.get_mut("redis").unwrap().unix_socket_path = Some(server.socket.display().to_string());
    let path = server.dir.path().join("database_config.json");
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path
}

/// A private redis-server configured as SONiC's database container configures it: unix
/// socket, `databases 100`, `notify-keyspace-events AKE`, `save ""`, no TCP port.
pub struct RedisServer {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("soniclet-redis-").tempdir().unwrap();
        let socket = dir.path().join("redis.sock");
        let mut server = Self { dir, socket, child: None };
        server.restart();
        server
    }

    fn config(&self) -> String {
        format!(
            "port 0\nunixsocket {}\nunixsocketperm 700\ndatabases 100\nnotify-keyspace-events AKE\nsave \"\"\nappendonly no\n\
             dir {}\nclient-output-buffer-limit pubsub 0 0 0\ndaemonize no\nlogfile \"\"\n",
            self.socket.display(),
            self.dir.path().display()
        )
    }

    /// Starts (or starts again, empty, as after a crash) the server on the same socket.
    pub fn restart(&mut self) {
        let conf = self.dir.path().join("redis.conf");
        std::fs::write(&conf, self.config()).unwrap();
        let _ = std::fs::remove_file(&self.socket);
        let child =
            Command::new("redis-server").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        self.child = Some(child);
        let socket = self.socket.clone();
        assert!(
            wait_until(Duration::from_secs(10), || std::os::unix::net::UnixStream::connect(&socket).is_ok()),
            "redis-server did not start"
        );
    }

    /// `kill -9` of the server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// redis-cli against database `db`.
    pub fn cli(&self, db: u8, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(&self.socket)
            .args(["-n", &db.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
