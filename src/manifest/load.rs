//! Reading `services/*.toml`: strict parsing, then validation of each file and of the set.
//!
//! Every problem is reported, not just the first, and each names its file and field, so an
//! operator fixes a broken set in one pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::{graph::ServiceGraph, ManifestSet, Probe, Service, ServiceManifest, ServiceName};
use crate::db::schema::standard_db_id;

/// One validation problem: which file, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: PathBuf,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read service manifests in {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no service manifests (*.toml) in {}", path.display())]
    Empty { path: PathBuf },
    #[error("{} invalid service manifest(s):\n{}", .0.len(), render(.0))]
    Invalid(Vec<ManifestError>),
}

fn render(errors: &[ManifestError]) -> String {
    errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
}

/// Parses one manifest's text. The file name is only used in messages.
pub fn parse_manifest(file: &Path, text: &str) -> Result<ServiceManifest, ManifestError> {
    toml::from_str(text).map_err(|err| {
        // toml's message already names the offending key or line; keep it on one line.
        let message = err.message().to_owned();
        let field = match err.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}")
            }
            None => "(file)".to_owned(),
        };
        ManifestError { file: file.to_owned(), field, message }
    })
}

/// Loads and validates every `*.toml` in `dir`.
pub fn load_dir(dir: &Path) -> Result<ManifestSet, LoadError> {
    let io_err = |source| LoadError::Io { path: dir.to_owned(), source };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LoadError::Empty { path: dir.to_owned() });
    }
    let mut sources = Vec::with_capacity(files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Io { path: file.clone(), source })?;
        sources.push((file, text));
    }
    load_sources(sources)
}

/// Validates a set of `(file, text)` pairs; the core of [`load_dir`], usable without disk.
pub fn load_sources(sources: Vec<(PathBuf, String)>) -> Result<ManifestSet, LoadError> {
    let mut errors = Vec::new();
    let mut parsed: BTreeMap<ServiceName, (PathBuf, ServiceManifest)> = BTreeMap::new();
    for (file, text) in sources {
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        let name = match ServiceName::new(&stem) {
            Ok(name) => name,
            Err(message) => {
                errors.push(ManifestError { file, field: "(file name)".into(), message });
                continue;
            }
        };
        let manifest = match parse_manifest(&file, &text) {
            Ok(m) => m,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let mut check = Checker { file: &file, errors: &mut errors };
        check.manifest(&name, &manifest);
        if let Some((first, _)) = parsed.get(&name) {
            errors.push(ManifestError {
                file: file.clone(),
                field: "service.name".into(),
                message: format!("duplicate service \"{name}\", also defined in {}", first.display()),
            });
            continue;
        }
        parsed.insert(name, (file, manifest));
    }

    // References between manifests.
    for (name, (file, manifest)) in &parsed {
        let s = &manifest.service;
        let lists: [(&str, &Vec<ServiceName>); 9] = [
            ("service.requires", &s.requires),
            ("service.requisite", &s.requisite),
            ("service.after", &s.after),
            ("service.before", &s.before),
            ("service.dependent-of", &s.dependent_of),
            ("service.warm-shutdown.after", &s.warm_shutdown.after),
            ("service.warm-shutdown.before", &s.warm_shutdown.before),
            ("service.fast-shutdown.after", &s.fast_shutdown.after),
            ("service.fast-shutdown.before", &s.fast_shutdown.before),
        ];
        for (field, list) in lists {
            let mut seen = BTreeSet::new();
            for other in list {
                let problem = if other == name {
                    Some(format!("{name} cannot refer to itself"))
                } else if !parsed.contains_key(other) {
                    Some(format!("unknown service \"{other}\" (no {other}.toml)"))
                } else if !seen.insert(other) {
                    Some(format!("duplicate service \"{other}\""))
                } else {
                    None
                };
                if let Some(message) = problem {
                    errors.push(ManifestError { file: file.clone(), field: field.into(), message });
                }
            }
        }
    }

    let databases: Vec<&ServiceName> = parsed.iter().filter(|(_, (_, m))| m.service.database).map(|(n, _)| n).collect();
    if databases.len() > 1 {
        for name in &databases {
            errors.push(ManifestError {
                file: parsed[*name].0.clone(),
                field: "service.database".into(),
                message: format!(
                    "only one service can be the database; these are: {}",
                    databases.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }

    let manifests: BTreeMap<ServiceName, ServiceManifest> =
        parsed.iter().map(|(n, (_, m))| (n.clone(), m.clone())).collect();
    let graph = match ServiceGraph::build(&manifests) {
        Ok(graph) => Some(graph),
        Err(cycle) => {
            for name in &cycle {
                let names: Vec<&str> = cycle.iter().map(|n| n.as_str()).collect();
                errors.push(ManifestError {
                    file: parsed[name].0.clone(),
                    field: "service.requires/after/before".into(),
                    message: format!("dependency cycle among {}", names.join(", ")),
                });
            }
            None
        }
    };

    match graph {
        Some(graph) if errors.is_empty() => {
            let services = parsed
                .into_iter()
                .map(|(name, (file, manifest))| (name.clone(), Service::new(name, file, manifest)))
                .collect();
            Ok(ManifestSet { services, graph })
        }
        _ => Err(LoadError::Invalid(errors)),
    }
}

/// Per-file checks that serde cannot express.
struct Checker<'a> {
    file: &'a Path,
    errors: &'a mut Vec<ManifestError>,
}

/// Linux capabilities soniclet accepts, without the `CAP_` prefix.
const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

/// The kernel keeps 15 bytes of a process name (`comm`).
const COMM_LEN: usize = 15;

impl Checker<'_> {
    fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ManifestError { file: self.file.to_owned(), field: field.into(), message: message.into() });
    }

    fn manifest(&mut self, name: &ServiceName, m: &ServiceManifest) {
        if let Some(declared) = &m.service.name {
            if declared != name {
                self.fail("service.name", format!("{declared:?} does not match the file name {name:?}"));
            }
        }
        let s = &m.service;
        if !(1..=600).contains(&s.stop_time) {
            self.fail("service.stop-time", format!("{} is not between 1 and 600 seconds", s.stop_time));
        }
        if let Some(group) = &s.failure_group {
            if ServiceName::new(group).is_err() {
                self.fail("service.failure-group", format!("invalid group name {group:?}"));
            }
        }
        let r = &s.restart;
        if r.budget == 0 {
            self.fail("service.restart.budget", "must be at least 1");
        }
        if r.backoff_initial_ms < 10 || r.backoff_max_ms < r.backoff_initial_ms {
            self.fail(
                "service.restart",
                "backoff-initial-ms must be at least 10 and backoff-max-ms at least backoff-initial-ms",
            );
        }
        if r.window_secs == 0 {
            self.fail("service.restart.window-secs", "must be at least 1");
        }

        for (field, steps) in [("service.warm-stop", &s.warm_stop), ("service.fast-stop", &s.fast_stop)] {
            for (i, step) in steps.iter().enumerate() {
                let kinds = usize::from(step.signal.is_some())
                    + usize::from(!step.exec.is_empty())
                    + usize::from(!step.wait_exit.is_empty());
                if kinds != 1 {
                    self.fail(
                        format!("{field}[{i}]"),
                        "give exactly one of signal (with processes), exec or wait-exit",
                    );
                }
                if let Some(signal) = &step.signal {
                    if !super::STEP_SIGNALS.iter().any(|(n, _)| n == signal) {
                        self.fail(
                            format!("{field}[{i}].signal"),
                            format!("{signal:?} is not TERM, KILL, INT, HUP, USR1 or USR2"),
                        );
                    }
                    if step.processes.is_empty() {
                        self.fail(format!("{field}[{i}].processes"), "a signal needs the processes to send it to");
                    }
                }
                if !(1..=600).contains(&step.timeout) {
                    self.fail(
                        format!("{field}[{i}].timeout"),
                        format!("{} is not between 1 and 600 seconds", step.timeout),
                    );
                }
            }
        }
        for (i, db) in s.cold_start.flush_databases.iter().enumerate() {
            if standard_db_id(db).is_none() {
                self.fail(format!("service.cold-start.flush-databases[{i}]"), format!("unknown database {db:?}"));
            }
        }
        if !s.cold_start.flush_databases.is_empty() && s.failure_group.is_none() {
            self.fail("service.cold-start", "only a failure-group member can clear databases before it starts");
        }

        let c = &m.container;
        if !valid_image_ref(&c.image) {
            self.fail("container.image", format!("{:?} is not an image reference", c.image));
        }
        if let Some(Err(message)) = c.memory_min.as_deref().map(super::parse_memory) {
            self.fail("container.memory-min", message);
        }
        for cap in &c.capabilities {
            let bare = cap.strip_prefix("CAP_").unwrap_or(cap);
            if !CAPABILITIES.contains(&bare) {
                self.fail("container.capabilities", format!("unknown capability {cap:?}"));
            }
        }
        for (i, volume) in c.volumes.iter().enumerate() {
            if let Err(message) = parse_volume(volume) {
                self.fail(format!("container.volumes[{i}]"), message);
            }
        }
        for (i, mount) in c.mounts.iter().enumerate() {
            let field = format!("container.mounts[{i}]");
            if !matches!(mount.kind.as_str(), "bind" | "tmpfs") {
                self.fail(&field, format!("type {:?} is not bind or tmpfs", mount.kind));
            }
            if mount.kind == "bind" {
                if let Err(message) = check_path(&mount.source) {
                    self.fail(format!("{field}.source"), message);
                }
            }
            if let Err(message) = check_path(&mount.target) {
                self.fail(format!("{field}.target"), message);
            }
        }
        for (i, path) in c.tmpfs.iter().enumerate() {
            if let Err(message) = check_path(path) {
                self.fail(format!("container.tmpfs[{i}]"), message);
            }
        }
        for key in c.environment.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                self.fail("container.environment", format!("invalid variable name {key:?}"));
            }
        }
        if c.command.first().is_some_and(|a| a.is_empty()) {
            self.fail("container.command", "the program must not be empty");
        }

        let mut seen = BTreeSet::new();
        for (i, process) in m.processes.iter().enumerate() {
            if process.name.is_empty() || process.name.contains('/') {
                self.fail(format!("processes[{i}].name"), "must be a program name");
            } else if !seen.insert(&process.name) {
                self.fail(format!("processes[{i}].name"), format!("duplicate process {:?}", process.name));
            }
        }

        let rd = &m.readiness;
        if !(1..=3600).contains(&rd.timeout) {
            self.fail("readiness.timeout", format!("{} is not between 1 and 3600 seconds", rd.timeout));
        }
        if !(10..=60_000).contains(&rd.interval_ms) {
            self.fail("readiness.interval-ms", format!("{} is not between 10 and 60000", rd.interval_ms));
        }
        match &rd.probe {
            Probe::Exec { command } => {
                if command.first().is_none_or(|a| a.is_empty()) {
                    self.fail("readiness.probe.command", "must name a program");
                }
            }
            Probe::RedisPing { socket } => {
                if let Err(message) = check_path(socket) {
                    self.fail("readiness.probe.socket", message);
                }
            }
            Probe::RedisKey { socket, db, key, .. } => {
                if let Err(message) = check_path(socket) {
                    self.fail("readiness.probe.socket", message);
                }
                if db.parse::<u8>().map(|id| id >= 100).unwrap_or(standard_db_id(db).is_none()) {
                    self.fail("readiness.probe.db", format!("unknown database {db:?}"));
                }
                if key.is_empty() {
                    self.fail("readiness.probe.key", "must not be empty");
                }
            }
            Probe::Process { name } => {
                if name.is_empty() || name.len() > COMM_LEN || name.contains('/') {
                    self.fail(
                        "readiness.probe.name",
                        format!("{name:?} must be a process name of 1 to {COMM_LEN} characters (the kernel's comm)"),
                    );
                }
            }
        }
    }
}

fn valid_image_ref(reference: &str) -> bool {
    !reference.is_empty()
        && reference.len() <= 255
        && reference.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
        && !reference.starts_with(['/', ':', '@', '-', '.'])
}

fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(format!("{path:?} must not contain '..'"));
    }
    if path.contains('\0') || path.contains(':') {
        return Err(format!("{path:?} contains a forbidden character"));
    }
    Ok(())
}

/// A parsed docker-style `-v host:container[:ro|rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume<'a> {
    pub source: &'a str,
    pub target: &'a str,
    pub read_only: bool,
}

pub fn parse_volume(spec: &str) -> Result<Volume<'_>, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, "rw"),
        [s, t, m] => (*s, *t, *m),
        _ => return Err(format!("{spec:?} is not host:container[:ro|rw]")),
    };
    check_path(source)?;
    check_path(target)?;
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        other => return Err(format!("mode {other:?} is not ro or rw")),
    };
    Ok(Volume { source, target, read_only })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATABASE: &str = r#"
[service]
stop-time = 5
[container]
image = "docker-database:latest"
[readiness]
probe = { type = "redis-ping" }
"#;

    const SWSS: &str = r#"
[service]
requires = ["database"]
after = ["database"]
[container]
image = "docker-orchagent:latest"
capabilities = ["NET_ADMIN", "SYS_PTRACE"]
volumes = ["/etc/sonic:/etc/sonic:ro"]
[[processes]]
name = "orchagent"
critical = true
[readiness]
probe = { type = "process", name = "orchagent" }
"#;

    fn load(files: &[(&str, &str)]) -> Result<ManifestSet, LoadError> {
        load_sources(files.iter().map(|(n, t)| (PathBuf::from(format!("services/{n}.toml")), t.to_string())).collect())
    }

    fn errors(files: &[(&str, &str)]) -> Vec<String> {
        match load(files) {
            Err(LoadError::Invalid(errors)) => errors.iter().map(|e| e.to_string()).collect(),
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    #[test]
    fn valid_set_orders_database_first() {
        let set = load(&[("database", DATABASE), ("swss", SWSS)]).unwrap();
        let order: Vec<&str> = set.graph().start_order().iter().map(|n| n.as_str()).collect();
        assert_eq!(order, ["database", "swss"]);
        assert_eq!(set.get("swss").unwrap().critical_processes().collect::<Vec<_>>(), ["orchagent"]);
        assert!(set.get("swss").unwrap().digest.starts_with("sha256:"));
    }

    #[test]
    fn unknown_field_names_file_and_line() {
        let text = DATABASE.replace("stop-time = 5", "stop-time = 5\nstoptime = 3");
        let errs = errors(&[("database", &text)]);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("services/database.toml"), "{errs:?}");
        assert!(errs[0].contains("unknown field `stoptime`"), "{errs:?}");
        assert!(errs[0].contains("line 4"), "{errs:?}");
    }

    #[test]
    fn unknown_reference_and_cycle_are_reported() {
        let swss = SWSS.replace("after = [\"database\"]", "after = [\"database\", \"nosuch\"]");
        let errs = errors(&[("database", DATABASE), ("swss", &swss)]);
        assert!(
            errs.iter().any(|e| e.contains("service.after") && e.contains("unknown service \"nosuch\"")),
            "{errs:?}"
        );

        let database = DATABASE.replace("[service]", "[service]\nafter = [\"swss\"]");
        let errs = errors(&[("database", &database), ("swss", SWSS)]);
        assert!(errs.iter().any(|e| e.contains("dependency cycle among database, swss")), "{errs:?}");
    }

    #[test]
    fn bad_mounts_capabilities_and_probes() {
        let swss = SWSS
            .replace("\"NET_ADMIN\"", "\"NET_ADMINX\"")
            .replace("/etc/sonic:/etc/sonic:ro", "etc/sonic:/etc/sonic:rx")
            .replace("name = \"orchagent\" }", "name = \"a-very-long-process-name\" }");
        let errs = errors(&[("database", DATABASE), ("swss", &swss)]);
        assert!(errs.iter().any(|e| e.contains("container.capabilities") && e.contains("NET_ADMINX")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("container.volumes[0]")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("readiness.probe.name")), "{errs:?}");
    }

    #[test]
    fn memory_floors_are_kubernetes_quantities_with_a_default() {
        let swss = SWSS.replace("capabilities = [", "memory-min = \"256Mi\"\ncapabilities = [");
        let set = load(&[("database", DATABASE), ("swss", &swss)]).unwrap();
        assert_eq!(set.get("swss").unwrap().memory_floor(), 256 << 20);
        assert_eq!(set.get("database").unwrap().memory_floor(), crate::manifest::DEFAULT_MEMORY_MIN);
        for bad in ["256MB", "0", "Mi", "-1Gi", "99999999999Gi"] {
            let swss = SWSS.replace("capabilities = [", &format!("memory-min = {bad:?}\ncapabilities = ["));
            let errs = errors(&[("database", DATABASE), ("swss", &swss)]);
            assert!(errs.iter().any(|e| e.contains("container.memory-min") && e.contains(bad)), "{bad}: {errs:?}");
        }
    }

    #[test]
    fn bad_probe_type_and_name_mismatch() {
        let db = DATABASE.replace("redis-ping", "tcp");
        let errs = errors(&[("database", &db)]);
        assert!(errs[0].contains("unknown variant `tcp`"), "{errs:?}");
        let db = DATABASE.replace("[service]", "[service]\nname = \"db\"");
        let errs = errors(&[("database", &db)]);
        assert!(errs[0].contains("service.name"), "{errs:?}");
    }

    #[test]
    fn volume_parsing() {
        assert_eq!(
            parse_volume("/var/run/redis:/var/run/redis:rw").unwrap(),
            Volume { source: "/var/run/redis", target: "/var/run/redis", read_only: false }
        );
        assert!(parse_volume("/a:/b:ro").unwrap().read_only);
        assert!(parse_volume("/a").is_err());
        assert!(parse_volume("/a/../b:/b").is_err());
    }
}
