//! The sim harness: a temp dir with manifests and a config, the daemon in a thread of its
//! own over the twins, and the real CLI binary.

pub use crate::common::wait_until;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use soniclet::config::Config;
use soniclet::daemon::{self, Adapters, Lifetime, Loaded};
use soniclet::db::memory::MemoryDatabases;
use soniclet::health::memory::MemoryHealth;
use soniclet::k8s::memory::MemoryPods;
use soniclet::runtime::memory::MemoryRuntime;
use soniclet::systemd::memory::MemoryUnits;

pub const SONICLET: &str = env!("CARGO_BIN_EXE_soniclet");

pub struct Sim {
    /// Kept for the daemon's files; removed with the sim.
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub runtime: Arc<MemoryRuntime>,
    pub health: Arc<MemoryHealth>,
    pub units: Arc<MemoryUnits>,
    pub databases: Arc<MemoryDatabases>,
    pub pods: Arc<MemoryPods>,
    config: PathBuf,
    stop: Option<tokio::sync::mpsc::UnboundedSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sim {
    /// A daemon over the twins for these manifests (name, `[service]` lines).
    /// The daemon over the twins, with one service per `(name, [service] lines)`: image
    /// `<name>:1`, ready once a process named like the service runs.
    pub fn start(manifests: &[(&str, &str)]) -> Self {
        Self::start_as(manifests, false, "")
    }

    /// The same, on a switch that has joined a cluster (the kubelet holds its credentials),
    /// so the daemon watches the kubelet's pods (the `pods` twin).
    pub fn start_node(manifests: &[(&str, &str)]) -> Self {
        Self::start_as(manifests, true, "")
    }

    /// The same, with more agent config (whole tables, after the sim's own).
    pub fn start_with(manifests: &[(&str, &str)], config: &str) -> Self {
        Self::start_as(manifests, false, config)
    }

    /// The SONiC root the daemon sees (`/` on a switch).
    pub fn sonic_root(&self) -> PathBuf {
        self._dir.path().join("root")
    }

    fn start_as(manifests: &[(&str, &str)], node: bool, extra_config: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("soniclet-sim-").tempdir().unwrap();
        let root = dir.path();
        if node {
            let agent = root.join("root/var/lib/rancher/k3s/agent");
            std::fs::create_dir_all(&agent).unwrap();
            std::fs::write(agent.join("kubelet.kubeconfig"), "kind: Config\n").unwrap();
        }
        let services = root.join("services");
        std::fs::create_dir_all(&services).unwrap();
        let runtime = Arc::new(MemoryRuntime::new());
        for (name, service) in manifests {
            let text = format!(
                "[service]\n{service}\n[container]\nimage = \"{name}:1\"\n[readiness]\nprobe = {{ type = \"process\", name = \"{name}\" }}\ntimeout = 5\ninterval-ms = 10\n"
            );
            std::fs::write(services.join(format!("{name}.toml")), text).unwrap();
            runtime.add_image(&format!("{name}:1"), &format!("sha256:{name}:1"));
        }
        let socket = root.join("soniclet.sock");
        let config = root.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[paths]\nservices = \"{r}/services\"\nstate = \"{r}/state\"\nlogs = \"{r}/logs\"\nrun = \"{r}/run\"\n\
                 images = \"{r}/images\"\nsonic-root = \"{r}/root\"\n[api]\nsocket = \"{s}\"\n{extra_config}",
                r = root.display(),
                s = socket.display()
            ),
        )
        .unwrap();
        let health = Arc::new(MemoryHealth::new(Arc::clone(&runtime)));
        let units = Arc::new(MemoryUnits::new());
        let databases = Arc::new(MemoryDatabases::new());
        let pods = Arc::new(MemoryPods::new());
        let mut sim =
            Self { _dir: dir, socket, runtime, health, units, databases, pods, config, stop: None, thread: None };
        sim.spawn_daemon();
        sim
    }

    fn spawn_daemon(&mut self) {
        let config = Config::load(&self.config).unwrap();
        let (stop, signals) = tokio::sync::mpsc::unbounded_channel::<()>();
        let adapters = Adapters {
            runtime: Arc::clone(&self.runtime),
            health: Arc::clone(&self.health),
            units: Some(Arc::clone(&self.units)),
            databases: Arc::clone(&self.databases),
            pods: Arc::clone(&self.pods),
        };
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let loaded = Loaded::load(config).expect("the sim's config and manifests load");
                let life = Lifetime::new(tokio_stream::wrappers::UnboundedReceiverStream::new(signals));
                daemon::run_with(loaded, adapters, life).await.expect("the daemon runs");
            });
        });
        self.stop = Some(stop);
        self.thread = Some(thread);
        let socket = self.socket.clone();
        assert!(
            wait_until(Duration::from_secs(10), || std::os::unix::net::UnixStream::connect(&socket).is_ok()),
            "the daemon did not come up"
        );
    }

    /// SIGTERM, as the daemon gets it: it ends and leaves the services running.
    pub fn restart_daemon(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        assert!(self.join(Duration::from_secs(10)), "the daemon did not end");
        self.spawn_daemon();
    }

    /// Waits for the daemon's thread to end.
    pub fn join(&mut self, timeout: Duration) -> bool {
        let Some(thread) = self.thread.take() else { return true };
        let ended = wait_until(timeout, || thread.is_finished());
        if ended {
            thread.join().unwrap();
        }
        ended
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(SONICLET).args(args).env("SONICLET_SOCKET", &self.socket).output().unwrap()
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "soniclet {args:?} failed ({:?}):\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A path in the sim's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self._dir.path().join(name)
    }

    pub fn service(&self, name: &str) -> Value {
        serde_json::from_str(&self.cli_ok(&["status", name, "--json"])).unwrap()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join(Duration::from_secs(10));
    }
}
