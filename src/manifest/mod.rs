//! Service manifests: what a SONiC service is and how it runs (`services/<name>.toml`).
//!
//! Field names follow SONiC's package-manager manifest (`service.requires`, `service.after`,
//! `service.dependent-of`, `service.stop-time`, `container.volumes`, `processes[]`, ...), so
//! SONiC people recognise them. soniclet adds what it needs: the image reference, capabilities,
//! the network mode, the readiness probe and the failure group.
//!
//! This module owns parsing (strict serde, unknown fields rejected) and validation; the rest of
//! soniclet only ever sees a validated [`ManifestSet`]. It reads files and nothing else.

mod graph;
mod load;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use graph::ServiceGraph;
pub use load::{load_dir, load_sources, parse_manifest, parse_volume, LoadError, ManifestError, Volume};

/// A SONiC service name, which is also its container ID and its systemd unit name
/// (`swss`, `syncd`, `bgp`, `mgmt-framework`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName(String);

impl ServiceName {
    /// Checks the spelling rules: lowercase letters, digits, `-` and `_`, starting with a
    /// letter, at most 48 characters (a containerd ID and a unit name must both accept it).
    pub fn new(name: &str) -> Result<Self, String> {
        let valid_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        if name.is_empty() || name.len() > 48 || !valid_chars || !starts_with_letter {
            return Err(format!(
                "invalid service name {name:?}: use lowercase letters, digits, '-' or '_', starting with a letter"
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ServiceName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl From<ServiceName> for String {
    fn from(value: ServiceName) -> Self {
        value.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// One `services/<name>.toml` file, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceManifest {
    pub service: ServiceSection,
    pub container: ContainerSection,
    #[serde(default)]
    pub processes: Vec<Process>,
    pub readiness: Readiness,
}

/// `[service]`: identity, ordering and stop behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServiceSection {
    /// Must equal the file's stem when given.
    pub name: Option<ServiceName>,
    #[serde(default)]
    pub description: String,
    /// Services that must be ready before this one starts; starting this one starts them,
    /// and stopping or restarting one of them stops or restarts this one (systemd `Requires=`).
    #[serde(default)]
    pub requires: Vec<ServiceName>,
    /// Like `requires`, but never starts them: this service waits until they run.
    #[serde(default)]
    pub requisite: Vec<ServiceName>,
    /// Ordering only: when both start, this one waits for these to be ready.
    #[serde(default)]
    pub after: Vec<ServiceName>,
    /// Ordering only: these wait for this one.
    #[serde(default)]
    pub before: Vec<ServiceName>,
    /// SONiC's `dependent-of`: this service belongs to the dependents of the named services
    /// (bgp is a dependent of swss).
    #[serde(default)]
    pub dependent_of: Vec<ServiceName>,
    /// SONiC's delayed start: held until the ports are initialised.
    #[serde(default)]
    pub delayed: bool,
    /// This service is the switch's database (Redis). soniclet reads CONFIG_DB through it
    /// once it is ready; every other service waits for that.
    #[serde(default)]
    pub database: bool,
    /// Seconds between SIGTERM and SIGKILL on stop.
    #[serde(default = "default_stop_time")]
    pub stop_time: u32,
    /// Whether the service runs when nothing else says otherwise (FEATURE `state`).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Whether a crash restarts the service (FEATURE `auto_restart`).
    #[serde(default = "default_true")]
    pub auto_restart: bool,
    /// The data plane and its database run here, whatever FEATURE `set_owner` says: a
    /// Kubernetes pod never takes them over.
    #[serde(default)]
    pub local_only: bool,
    /// Members of one failure group go down and come back together (swss/syncd/teamd).
    pub failure_group: Option<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub warm_shutdown: ShutdownOrder,
    #[serde(default)]
    pub fast_shutdown: ShutdownOrder,
    /// What a failure group clears before it starts cold (swss.sh's flushes).
    #[serde(default)]
    pub cold_start: ColdStart,
    /// Steps of a warm stop, in order; the container is then killed, not stopped.
    #[serde(default)]
    pub warm_stop: Vec<StopStep>,
    /// Steps of a fast stop, in order; the container is then killed.
    #[serde(default)]
    pub fast_stop: Vec<StopStep>,
}

/// What is cleared before a failure group comes up cold: whole databases and STATE_DB tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ColdStart {
    /// Databases flushed (by name: `APPL_DB`, `ASIC_DB`, ...); unknown ones are skipped.
    #[serde(default)]
    pub flush_databases: Vec<String>,
    /// STATE_DB key patterns deleted (`PORT_TABLE*`, ...).
    #[serde(default)]
    pub delete_state: Vec<String>,
}

/// One step of a warm or fast stop: signal processes, run a command, or wait for processes
/// to exit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StopStep {
    /// Send this signal (`USR1`, `KILL`, ...) to `processes`, in order, waiting for each to exit.
    pub signal: Option<String>,
    #[serde(default)]
    pub processes: Vec<String>,
    /// Run this command in the container.
    #[serde(default)]
    pub exec: Vec<String>,
    /// Wait until these processes are gone.
    #[serde(default)]
    pub wait_exit: Vec<String>,
    /// Seconds the step may take.
    #[serde(default = "default_step_timeout")]
    pub timeout: u32,
}

fn default_step_timeout() -> u32 {
    10
}

/// The signals a stop step may send.
pub const STEP_SIGNALS: &[(&str, i32)] = &[
    ("TERM", libc::SIGTERM),
    ("KILL", libc::SIGKILL),
    ("INT", libc::SIGINT),
    ("HUP", libc::SIGHUP),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
];

/// Crash-loop handling: exponential backoff plus a failure budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestartPolicy {
    /// Delay before the second restart, in milliseconds (the first is immediate); it doubles
    /// on each further failure.
    pub backoff_initial_ms: u64,
    /// Ceiling of the delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// This many failures within `window-secs` mark the service failed.
    pub budget: u32,
    pub window_secs: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self { backoff_initial_ms: 1000, backoff_max_ms: 30_000, budget: 5, window_secs: 300 }
    }
}

/// SONiC's `warm-shutdown` / `fast-shutdown` ordering (`*-reboot_order`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ShutdownOrder {
    #[serde(default)]
    pub after: Vec<ServiceName>,
    #[serde(default)]
    pub before: Vec<ServiceName>,
}

/// `[container]`: how the container is created, beyond what every SONiC container gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ContainerSection {
    /// Image reference as stored in containerd, e.g. `docker-orchagent:latest`.
    pub image: String,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub network: NetworkMode,
    /// Capabilities added to the default set, spelled without the `CAP_` prefix.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Docker-style `host:container[:ro|rw]` binds; host paths are relative to the SONiC root.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// SONiC manifest mounts: `{ source, target, type }`.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// Paths mounted as tmpfs.
    #[serde(default)]
    pub tmpfs: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Replaces the image's entrypoint and command when given.
    #[serde(default)]
    pub command: Vec<String>,
    /// The memory the service keeps whatever pods do (`memory.min`), as a Kubernetes
    /// quantity in bytes, Ki, Mi or Gi; [`DEFAULT_MEMORY_MIN`] when absent. The kubelet's
    /// reservations are computed from the sum of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_min: Option<String>,
}

/// A service's memory floor when its manifest names none.
pub const DEFAULT_MEMORY_MIN: u64 = 64 << 20;

/// A memory quantity as Kubernetes writes one: bytes, or a whole number of Ki, Mi or Gi.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        _ => return Err(format!("{text:?} is not a memory size (a number of bytes, or of Ki, Mi or Gi)")),
    };
    let number: u64 =
        digits.parse().map_err(|_| format!("{text:?} is not a memory size (it starts with no number)"))?;
    number.checked_mul(1 << shift).filter(|bytes| *bytes > 0).ok_or_else(|| format!("{text:?} is zero or too large"))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// The switch's network namespace, as SONiC's `--net=host`.
    #[default]
    Host,
    /// A network namespace of the container's own, with only loopback.
    Private,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MountSpec {
    pub source: String,
    pub target: String,
    #[serde(rename = "type", default = "default_mount_type")]
    pub kind: String,
    #[serde(default)]
    pub read_only: bool,
}

/// `[[processes]]`: the programs inside the container (supervisord's critical_processes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Process {
    pub name: String,
    #[serde(default)]
    pub critical: bool,
    /// SONiC's `reconciles`: the process reports warm-restart reconciliation.
    #[serde(default)]
    pub reconciles: bool,
}

/// `[readiness]`: when the service counts as ready for its dependents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Readiness {
    pub probe: Probe,
    /// Seconds the service has, from task start, to become ready.
    #[serde(default = "default_ready_timeout")]
    pub timeout: u32,
    /// Milliseconds between probe attempts.
    #[serde(default = "default_probe_interval")]
    pub interval_ms: u32,
}

/// A readiness probe. Probes run from the daemon, never through `docker exec`-style polling
/// unless the manifest asks for `exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Probe {
    /// Run a command inside the container; exit status 0 means ready.
    Exec { command: Vec<String> },
    /// Redis answers PING on this unix socket (a host path under the SONiC root).
    RedisPing {
        #[serde(default = "default_redis_socket")]
        socket: String,
    },
    /// A Redis key (or hash field) holds the given value.
    RedisKey {
        #[serde(default = "default_redis_socket")]
        socket: String,
        /// Database name (`CONFIG_DB`) or number.
        db: String,
        key: String,
        field: Option<String>,
        value: String,
    },
    /// A process with this name (its `comm`) runs inside the container.
    Process { name: String },
}

fn default_stop_time() -> u32 {
    10
}
fn default_true() -> bool {
    true
}
fn default_mount_type() -> String {
    "bind".to_owned()
}
fn default_ready_timeout() -> u32 {
    60
}
fn default_probe_interval() -> u32 {
    100
}
pub(crate) fn default_redis_socket() -> String {
    "/var/run/redis/redis.sock".to_owned()
}

/// A validated manifest with its name and provenance.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: ServiceName,
    pub file: PathBuf,
    pub manifest: ServiceManifest,
    /// `sha256:` of the manifest's canonical form; a changed digest means the container must
    /// be recreated.
    pub digest: String,
}

impl Service {
    pub(crate) fn new(name: ServiceName, file: PathBuf, manifest: ServiceManifest) -> Self {
        // serde_json of a struct with BTreeMaps is deterministic, so equal manifests hash equal.
        let canonical = serde_json::to_vec(&manifest).unwrap_or_default();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&canonical)));
        Self { name, file, manifest, digest }
    }

    pub fn critical_processes(&self) -> impl Iterator<Item = &str> {
        self.manifest.processes.iter().filter(|p| p.critical).map(|p| p.name.as_str())
    }

    pub fn failure_group(&self) -> Option<&str> {
        self.manifest.service.failure_group.as_deref()
    }

    /// The memory this service keeps whatever pods do (validated at load).
    pub fn memory_floor(&self) -> u64 {
        self.manifest.container.memory_min.as_deref().and_then(|m| parse_memory(m).ok()).unwrap_or(DEFAULT_MEMORY_MIN)
    }
}

/// Every service of the switch, validated together (references and cycles checked).
#[derive(Debug, Clone)]
pub struct ManifestSet {
    services: BTreeMap<ServiceName, Service>,
    graph: ServiceGraph,
}

impl ManifestSet {
    pub fn get(&self, name: &str) -> Option<&Service> {
        self.services.get(name)
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    pub fn names(&self) -> impl Iterator<Item = &ServiceName> {
        self.services.keys()
    }

    /// Members of failure group `group`.
    pub fn group_members(&self, group: &str) -> Vec<ServiceName> {
        self.services.values().filter(|s| s.failure_group() == Some(group)).map(|s| s.name.clone()).collect()
    }

    /// Services declared `dependent-of` a member of `group`.
    pub fn group_dependents(&self, group: &str) -> Vec<ServiceName> {
        let members = self.group_members(group);
        self.services
            .values()
            .filter(|s| s.manifest.service.dependent_of.iter().any(|d| members.contains(d)))
            .map(|s| s.name.clone())
            .collect()
    }

    /// Every failure group.
    pub fn groups(&self) -> std::collections::BTreeSet<String> {
        self.services.values().filter_map(|s| s.failure_group().map(str::to_owned)).collect()
    }

    /// The service marked `database = true`, if any.
    pub fn database(&self) -> Option<&ServiceName> {
        self.services.values().find(|s| s.manifest.service.database).map(|s| &s.name)
    }

    pub fn graph(&self) -> &ServiceGraph {
        &self.graph
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Resolves a user-typed name to the service, if there is one.
    /// Why `name` is not a service, listing the ones there are.
    pub fn unknown(&self, name: &str) -> String {
        let known: Vec<&str> = self.names().map(|n| n.as_str()).collect();
        format!("unknown service {name:?}; known services: {}", known.join(", "))
    }

    pub fn lookup(&self, name: &str) -> Option<&ServiceName> {
        self.services.get_key_value(name).map(|(k, _)| k)
    }
}
