//! The agent's configuration, `/etc/soniclet/config.toml`.
//!
//! Every field has a default that is right on a SONiC switch, so an empty file (or none) works.
//! Unknown fields are rejected: a typo must not silently fall back to a default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::spec::{Cgroups, HostSettings};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/soniclet/config.toml";
pub const DEFAULT_API_SOCKET: &str = "/run/soniclet/soniclet.sock";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    pub containerd: ContainerdConfig,
    pub paths: PathsConfig,
    pub api: ApiConfig,
    pub platform: PlatformConfig,
    pub daemon: DaemonConfig,
    pub os: OsConfig,
    pub kubernetes: KubernetesConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct KubernetesConfig {
    /// Once the switch has joined a cluster, keep its Node's labels and `NetworkOSReady`
    /// condition current and send Events, with the kubelet's node credentials.
    pub report: bool,
    /// Join this cluster when the daemon starts (as `soniclet k8s join`), unless the switch
    /// has joined it already: `https://HOST[:PORT]`.
    pub server: Option<String>,
    /// The cluster's join token, in a file only root may read.
    pub token_file: Option<PathBuf>,
    /// The node's name; the hostname when absent.
    pub node_name: Option<String>,
    /// `KEY=VALUE` labels beside the switch's own.
    pub labels: Vec<String>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self { report: true, server: None, token_file: None, node_name: None, labels: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ContainerdConfig {
    pub socket: PathBuf,
    /// soniclet's containerd namespace. `k8s.io` belongs to the kubelet and is refused.
    pub namespace: String,
    /// Who makes the containers' cgroups: `systemd` (each in a scope under `sonic.slice`, with
    /// its memory floor), `cgroupfs` (`/<namespace>/<service>`), or `auto`: systemd when it
    /// is the host's init, as on every switch.
    pub cgroup_driver: CgroupDriver,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Auto,
    Systemd,
    Cgroupfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct PathsConfig {
    /// Directory of the service manifests (`<name>.toml`).
    pub services: PathBuf,
    /// Desired state and journals; every write is atomic.
    pub state: PathBuf,
    /// Per-service container logs, rotated by size.
    pub logs: PathBuf,
    /// Image archives the switch image carries, imported when the daemon first sees them.
    pub images: PathBuf,
    /// Runtime state that lasts until the next boot (a tmpfs on a switch): operators' start
    /// and stop requests are forgotten on reboot, as `systemctl start|stop` are.
    pub run: PathBuf,
    /// Root of SONiC's host paths (`/etc/sonic`, `/var/run/redis`, ...); `/` on a switch.
    pub sonic_root: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ApiConfig {
    /// The API's unix socket, created with mode 0660.
    pub socket: PathBuf,
    /// Group that owns the socket, so its members may use the CLI; root only when unset.
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct PlatformConfig {
    /// ONIE platform string (`onie_platform`), SONiC's `$PLATFORM`: a switch's
    /// `/host/machine.conf` names it first.
    pub platform: String,
    /// The HWSKU: a switch's config_db.json (`DEVICE_METADATA|localhost hwsku`) names it first.
    pub hwsku: String,
    /// SONiC's `$DEV` for a per-ASIC instance; empty on single-ASIC switches.
    pub asic: String,
    pub num_asic: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DaemonConfig {
    /// Stop every service when the daemon gets SIGTERM. Off by default: restarting or
    /// upgrading soniclet never restarts a service.
    pub stop_services_on_exit: bool,
    /// Log size, in bytes, at which a service's log file is rotated.
    pub log_max_bytes: u64,
    /// Rotated log files kept per service.
    pub log_max_files: u32,
    /// Also send container output to journald, when it runs (`journalctl -u <svc>`).
    pub journal: bool,
    /// `auto` reads `SONIC_BOOT_TYPE` from the kernel command line; `cold`, `warm` and `fast`
    /// force it.
    pub boot_type: String,
    /// Seconds after CONFIG_DB is ready when delayed services start even without
    /// PortInitDone (SONiC's PORT_INIT_TIMEOUT_SEC).
    pub delayed_start_timeout: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct OsConfig {
    /// SONiC's `/host`, the SONiC-OS partition with the OS images (none on a virtual switch).
    pub host: PathBuf,
    /// Seconds a newly installed image's first boot has to become healthy (SYSTEM_READY
    /// UP) before the switch falls back to the previous image.
    pub trial_deadline: u64,
    /// The public key (PEM, ed25519) signed images are checked with.
    pub signing_key: Option<PathBuf>,
    /// Refuse to install an image without a valid signature.
    pub require_signature: bool,
}

impl Default for OsConfig {
    fn default() -> Self {
        Self { host: PathBuf::from("/host"), trial_deadline: 300, signing_key: None, require_signature: false }
    }
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/containerd/containerd.sock"),
            namespace: "sonic".to_owned(),
            cgroup_driver: CgroupDriver::Auto,
        }
    }
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self {
            services: PathBuf::from("/usr/share/soniclet/services"),
            state: PathBuf::from("/var/lib/soniclet"),
            logs: PathBuf::from("/var/log/soniclet"),
            run: PathBuf::from("/run/soniclet"),
            images: PathBuf::from("/usr/share/soniclet/images"),
            sonic_root: PathBuf::from("/"),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { socket: PathBuf::from(DEFAULT_API_SOCKET), group: None }
    }
}

impl Default for PlatformConfig {
    fn default() -> Self {
        // SONiC-VS's platform and HWSKU: the embedded default is the virtual switch.
        Self {
            platform: "x86_64-kvm_x86_64-r0".to_owned(),
            hwsku: "Force10-S6000".to_owned(),
            asic: String::new(),
            num_asic: 1,
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        // SONiC's docker log options: max-size=2M, max-file=5.
        Self {
            stop_services_on_exit: false,
            log_max_bytes: 2 * 1024 * 1024,
            log_max_files: 5,
            journal: true,
            boot_type: "auto".to_owned(),
            delayed_start_timeout: 180,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {field}: {message}", path.display())]
    Invalid { path: PathBuf, field: &'static str, message: String },
}

impl Config {
    /// Loads `path`; a missing file at the default location means all defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_CONFIG_PATH) => {
                String::new()
            }
            Err(source) => return Err(ConfigError::Read { path: path.to_owned(), source }),
        };
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field, message: String| ConfigError::Invalid { path: path.to_owned(), field, message };
        let ns = &self.containerd.namespace;
        if ns == "k8s.io" {
            return Err(invalid(
                "containerd.namespace",
                "k8s.io belongs to the kubelet; soniclet never uses it".into(),
            ));
        }
        if ns.is_empty() || !ns.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(invalid("containerd.namespace", format!("{ns:?} is not a valid namespace")));
        }
        for (field, p) in [
            ("paths.services", &self.paths.services),
            ("paths.state", &self.paths.state),
            ("paths.logs", &self.paths.logs),
            ("paths.run", &self.paths.run),
            ("paths.images", &self.paths.images),
            ("paths.sonic-root", &self.paths.sonic_root),
            ("api.socket", &self.api.socket),
            ("containerd.socket", &self.containerd.socket),
        ] {
            if !p.is_absolute() {
                return Err(invalid(field, format!("{} is not an absolute path", p.display())));
            }
        }
        if !matches!(self.daemon.boot_type.as_str(), "auto" | "cold" | "warm" | "fast") {
            return Err(invalid(
                "daemon.boot-type",
                format!("{:?} is not auto, cold, warm or fast", self.daemon.boot_type),
            ));
        }
        if let Some(server) = &self.kubernetes.server {
            if !server.starts_with("https://") {
                return Err(invalid(
                    "kubernetes.server",
                    format!("{server:?}: the API server's URL must be https://HOST[:PORT]"),
                ));
            }
            if self.kubernetes.token_file.is_none() {
                return Err(invalid("kubernetes.token-file", "a join needs the cluster's token in a file".into()));
            }
        }
        if self.daemon.log_max_bytes < 4096 || self.daemon.log_max_files == 0 {
            return Err(invalid("daemon", "log-max-bytes must be at least 4096 and log-max-files at least 1".into()));
        }
        Ok(())
    }

    /// The boot type: forced by the config, else `SONIC_BOOT_TYPE` on the kernel command line.
    pub fn boot_type(&self) -> crate::supervisor::BootType {
        use crate::supervisor::BootType;
        match self.daemon.boot_type.as_str() {
            "cold" => BootType::Cold,
            "warm" => BootType::Warm,
            "fast" => BootType::Fast,
            _ => BootType::from_cmdline(&std::fs::read_to_string(Path::new("/proc/cmdline")).unwrap_or_default()),
        }
    }

    /// Where containers' output goes; journald only when it runs.
    pub fn log_sink(&self, program: PathBuf) -> crate::runtime::LogSink {
        crate::runtime::LogSink {
            program,
            dir: self.paths.logs.clone(),
            max_bytes: self.daemon.log_max_bytes,
            max_files: self.daemon.log_max_files,
            journal: self.daemon.journal && Path::new(crate::systemd::journal::JOURNAL_SOCKET).exists(),
        }
    }

    pub fn host_settings(&self) -> HostSettings {
        HostSettings {
            sonic_root: self.paths.sonic_root.clone(),
            platform: self.platform.platform.clone(),
            hwsku: self.platform.hwsku.clone(),
            asic: self.platform.asic.clone(),
            num_asic: self.platform.num_asic,
            namespace: self.containerd.namespace.clone(),
            cgroups: match self.containerd.cgroup_driver {
                CgroupDriver::Systemd => Cgroups::Systemd,
                CgroupDriver::Cgroupfs => Cgroups::Cgroupfs,
                CgroupDriver::Auto if crate::systemd::dbus::systemd_booted() => Cgroups::Systemd,
                CgroupDriver::Auto => Cgroups::Cgroupfs,
            },
            privileged_capabilities: crate::runtime::spec::own_capabilities(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let config = Config::parse(Path::new("c.toml"), "").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.containerd.namespace, "sonic");
    }

    #[test]
    fn typo_is_rejected_with_its_name() {
        let err = Config::parse(Path::new("c.toml"), "[paths]\nstate-dir = \"/x\"\n").unwrap_err().to_string();
        assert!(err.contains("c.toml") && err.contains("state-dir"), "{err}");
    }

    #[test]
    fn a_join_in_the_config_needs_an_https_server_and_a_token_file() {
        let err =
            Config::parse(Path::new("c.toml"), "[kubernetes]\nserver = \"http://k3s:6443\"\ntoken-file = \"/t\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("kubernetes.server") && err.contains("https://"), "{err}");
        let err = Config::parse(Path::new("c.toml"), "[kubernetes]\nserver = \"https://k3s:6443\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kubernetes.token-file"), "{err}");
        let ok =
            Config::parse(Path::new("c.toml"), "[kubernetes]\nserver = \"https://k3s:6443\"\ntoken-file = \"/t\"\n");
        assert!(ok.is_ok());
    }

    #[test]
    fn kubelet_namespace_is_refused() {
        let err = Config::parse(Path::new("c.toml"), "[containerd]\nnamespace = \"k8s.io\"\n").unwrap_err();
        assert!(err.to_string().contains("containerd.namespace"));
    }
}
