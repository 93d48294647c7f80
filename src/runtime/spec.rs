//! Renders the OCI runtime spec of a service's container, with the `oci-spec` crate.
//!
//! Every container gets what SONiC's `docker_image_ctl.j2` gives it (host network and UTS,
//! `/etc/sonic` read-only, `/var/run/redis`, the platform and HWSKU directories,
//! `/host/warmboot`, a tmpfs on `/var/log/supervisor`, the `NAMESPACE_*`/`DEV`/
//! `CONTAINER_NAME`/`PLATFORM`/`RUNTIME_OWNER` environment); the manifest adds the rest.
//! Rendering is pure: no I/O, so the same inputs always give the same spec.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder, LinuxNamespace, LinuxNamespaceType,
    LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

use super::ImageConfig;
use crate::manifest::{parse_volume, NetworkMode, Service};

/// Host facts every container's settings depend on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostSettings {
    /// Where SONiC's host paths (`/etc/sonic`, `/var/run/redis`, ...) live; `/` on a switch.
    pub sonic_root: PathBuf,
    pub platform: String,
    pub hwsku: String,
    /// SONiC's `$DEV`: empty on a single-ASIC switch.
    pub asic: String,
    pub num_asic: u8,
    /// containerd namespace: the cgroup parent, or the scopes' prefix under systemd.
    pub namespace: String,
    /// Who makes the containers' cgroups.
    pub cgroups: Cgroups,
    /// Capabilities a privileged container gets: all that soniclet itself holds, as docker
    /// gives `--privileged` all the daemon's.
    pub privileged_capabilities: Vec<String>,
}

/// The slice the NOS lives in on a switch: soniclet's daemon and every service's container,
/// with the services' memory floors and a CPU weight above the kubelet's pods
/// (`soniclet generate-units` writes it).
pub const NOS_SLICE: &str = "sonic.slice";

/// Who makes the containers' cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Cgroups {
    /// systemd runs the host (a switch): runc's systemd driver puts each container in a scope
    /// `<namespace>-<service>.scope` under [`NOS_SLICE`], with the service's memory floor as
    /// the scope's `MemoryMin=`, as the kubelet's pods go under `kubepods.slice`.
    Systemd,
    /// No systemd (a developer box, the integration tier): `/<namespace>/<service>`.
    Cgroupfs,
}

/// The OCI annotation runc's systemd driver turns into the scope's `MemoryMin=`.
const MEMORY_MIN_PROPERTY: &str = "org.systemd.property.MemoryMin";

impl HostSettings {
    /// A host path as seen from soniclet (under the SONiC root).
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.sonic_root.join(path.trim_start_matches('/'))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{file}: {field}: {message}")]
    Manifest { file: PathBuf, field: String, message: String },
    #[error("building the OCI spec failed")]
    Build(#[from] oci_spec::OciSpecError),
}

/// Capabilities Docker grants by default; SONiC containers start from this set.
const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The bind mounts SONiC gives every container (`docker_image_ctl.j2`), as `host:container:mode`.
fn sonic_volumes(host: &HostSettings) -> Vec<String> {
    let dev = &host.asic;
    vec![
        "/etc/sonic:/etc/sonic:ro".to_owned(),
        format!("/host/warmboot{dev}:/var/warmboot:rw"),
        format!("/var/run/redis{dev}:/var/run/redis:rw"),
        "/var/run/redis-chassis:/var/run/redis-chassis:ro".to_owned(),
        format!("/usr/share/sonic/device/{}:/usr/share/sonic/platform:ro", host.platform),
        format!(
            "/usr/share/sonic/device/{}/{}{}:/usr/share/sonic/hwsku:ro",
            host.platform,
            host.hwsku,
            if dev.is_empty() { String::new() } else { format!("/{dev}") }
        ),
    ]
}

fn sonic_environment(service: &Service, host: &HostSettings) -> Vec<String> {
    vec![
        "RUNTIME_OWNER=local".to_owned(),
        format!("NAMESPACE_ID={}", host.asic),
        "NAMESPACE_PREFIX=asic".to_owned(),
        format!("NAMESPACE_COUNT={}", host.num_asic),
        format!("DEV={}", host.asic),
        format!("CONTAINER_NAME={}", service.name),
        "SYSLOG_TARGET_IP=127.0.0.1".to_owned(),
        format!("PLATFORM={}", host.platform),
    ]
}

fn bind(source: PathBuf, target: &str, read_only: bool) -> Result<Mount, SpecError> {
    let mode = if read_only { "ro" } else { "rw" };
    Ok(MountBuilder::default()
        .destination(target)
        .typ("bind")
        .source(source)
        .options(vec!["rbind".to_owned(), "rprivate".to_owned(), mode.to_owned()])
        .build()?)
}

fn tmpfs(target: &str) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(target)
        .typ("tmpfs")
        .source("tmpfs")
        .options(vec!["nosuid".to_owned(), "nodev".to_owned(), "mode=755".to_owned()])
        .build()?)
}

/// Merges `KEY=value` lists; later entries replace earlier ones with the same key.
fn merge_env(layers: &[Vec<String>]) -> Vec<String> {
    let mut merged: Vec<String> = Vec::new();
    for entry in layers.iter().flatten() {
        let key = entry.split('=').next().unwrap_or_default();
        merged.retain(|e| e.split('=').next() != Some(key));
        merged.push(entry.clone());
    }
    merged
}

/// Renders the spec for `service` running `image`.
pub fn render(service: &Service, image: &ImageConfig, host: &HostSettings) -> Result<Spec, SpecError> {
    let manifest = &service.manifest;
    let container = &manifest.container;
    let manifest_err = |field: &str, message: String| SpecError::Manifest {
        file: service.file.clone(),
        field: field.to_owned(),
        message,
    };

    let args: Vec<String> = if container.command.is_empty() {
        image.entrypoint.iter().chain(&image.cmd).cloned().collect()
    } else {
        container.command.clone()
    };
    if args.is_empty() {
        return Err(manifest_err(
            "container.command",
            format!("the image {} has no entrypoint or command; set container.command", container.image),
        ));
    }
    let manifest_env: Vec<String> = container.environment.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let env = merge_env(&[
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()],
        image.env.clone(),
        sonic_environment(service, host),
        manifest_env,
    ]);

    let caps: Vec<Capability> = if container.privileged {
        host.privileged_capabilities.iter().filter_map(|n| n.parse().ok()).collect()
    } else {
        let mut caps = DEFAULT_CAPS.to_vec();
        for name in &container.capabilities {
            let bare = name.strip_prefix("CAP_").unwrap_or(name);
            let cap: Capability = bare
                .parse()
                .map_err(|_| manifest_err("container.capabilities", format!("unknown capability {name:?}")))?;
            if !caps.contains(&cap) {
                caps.push(cap);
            }
        }
        caps
    };
    let cap_set: oci_spec::runtime::Capabilities = caps.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(cap_set.clone())
        .effective(cap_set.clone())
        .permitted(cap_set)
        .inheritable(oci_spec::runtime::Capabilities::new())
        .ambient(oci_spec::runtime::Capabilities::new())
        .build()?;

    let (uid, gid) = parse_user(&image.user);
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(uid).gid(gid).build()?)
        .args(args)
        .env(env)
        .cwd(if image.working_dir.is_empty() { "/".to_owned() } else { image.working_dir.clone() })
        .capabilities(capabilities)
        // No rlimits: like docker, containers inherit containerd's (LimitNOFILE= of its unit).
        .rlimits(Vec::new())
        .no_new_privileges(!container.privileged)
        .build()?;

    let mut mounts = oci_spec::runtime::get_default_mounts();
    if container.privileged {
        // Privileged containers (syncd) get a writable /sys, as docker --privileged does.
        for mount in &mut mounts {
            if mount.destination() == Path::new("/sys") || mount.destination() == Path::new("/sys/fs/cgroup") {
                let options: Vec<String> =
                    mount.options().clone().unwrap_or_default().into_iter().filter(|o| o != "ro").collect();
                mount.set_options(Some(options));
            }
        }
    }
    for volume in sonic_volumes(host).iter().chain(&container.volumes) {
        let parsed = parse_volume(volume).map_err(|m| manifest_err("container.volumes", m))?;
        mounts.retain(|m| m.destination() != Path::new(parsed.target));
        mounts.push(bind(host.host_path(parsed.source), parsed.target, parsed.read_only)?);
    }
    for mount in &container.mounts {
        mounts.retain(|m| m.destination() != Path::new(&mount.target));
        if mount.kind == "tmpfs" {
            mounts.push(tmpfs(&mount.target)?);
        } else {
            mounts.push(bind(host.host_path(&mount.source), &mount.target, mount.read_only)?);
        }
    }
    for path in std::iter::once(&"/var/log/supervisor".to_owned()).chain(&container.tmpfs) {
        mounts.retain(|m| m.destination() != Path::new(path.as_str()));
        mounts.push(tmpfs(path)?);
    }

    // Host network and host UTS (SONiC's --net=host --uts=host): no namespace of their own.
    let mut namespaces: Vec<LinuxNamespace> = oci_spec::runtime::get_default_namespaces()
        .into_iter()
        .filter(|ns| match ns.typ() {
            LinuxNamespaceType::Network => container.network == NetworkMode::Private,
            LinuxNamespaceType::Uts => false,
            _ => true,
        })
        .collect();
    namespaces.sort_by_key(|ns| format!("{:?}", ns.typ()));

    let devices = if container.privileged {
        vec![LinuxDeviceCgroupBuilder::default().allow(true).access("rwm").build()?]
    } else {
        vec![LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build()?]
    };
    let cgroups_path = match host.cgroups {
        Cgroups::Systemd => format!("{NOS_SLICE}:{}:{}", host.namespace, service.name),
        Cgroups::Cgroupfs => format!("/{}/{}", host.namespace, service.name),
    };
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(cgroups_path))
        .resources(LinuxResourcesBuilder::default().devices(devices).build()?);
    if container.privileged {
        linux = linux.masked_paths(Vec::<String>::new()).readonly_paths(Vec::<String>::new());
    } else {
        linux = linux
            .masked_paths(oci_spec::runtime::get_default_maskedpaths())
            .readonly_paths(oci_spec::runtime::get_default_readonly_paths());
    }

    let mut spec = Spec::default();
    spec.set_hostname(None);
    spec.set_process(Some(process));
    spec.set_root(Some(RootBuilder::default().path("rootfs").readonly(false).build()?));
    spec.set_mounts(Some(mounts));
    spec.set_linux(Some(linux.build()?));
    if host.cgroups == Cgroups::Systemd {
        // A GVariant, as runc hands it to systemd's StartTransientUnit.
        let floor = format!("uint64 {}", service.memory_floor());
        spec.set_annotations(Some([(MEMORY_MIN_PROPERTY.to_owned(), floor)].into()));
    }
    Ok(spec)
}

/// Every capability, by the kernel's bit number; `CAP_` prefix omitted.
const CAPABILITY_BITS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Capability names in a `CapBnd:` mask of `/proc/<pid>/status`.
pub fn capabilities_in_mask(mask: u64) -> Vec<String> {
    CAPABILITY_BITS
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask >> bit & 1 == 1)
        .map(|(_, name)| (*name).to_owned())
        .collect()
}

/// The capabilities in this process's bounding set.
pub fn own_capabilities() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .unwrap_or(u64::MAX);
    capabilities_in_mask(mask)
}

/// Numeric `uid[:gid]` from the image's `User`; names need the image's /etc/passwd, which
/// SONiC images never use, so anything else runs as root.
fn parse_user(user: &str) -> (u32, u32) {
    let mut parts = user.split(':');
    let uid = parts.next().and_then(|u| u.parse().ok()).unwrap_or(0);
    let gid = parts.next().and_then(|g| g.parse().ok()).unwrap_or(uid);
    (uid, gid)
}

/// The spec as JSON with its capability sets sorted, so equal specs give equal bytes.
pub fn to_json(spec: &Spec) -> Vec<u8> {
    let mut value = serde_json::to_value(spec).expect("a spec serialises");
    if let Some(caps) = value.pointer_mut("/process/capabilities").and_then(|c| c.as_object_mut()) {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    serde_json::to_vec(&value).expect("a json value serialises")
}

/// Digest of what a container is built from besides its image: the manifest and the host
/// settings. A running container whose label differs is recreated.
pub fn container_digest(service: &Service, host: &HostSettings) -> String {
    use sha2::{Digest, Sha256};
    let host_json = serde_json::to_vec(host).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(service.digest.as_bytes());
    hasher.update(&host_json);
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Host directories the spec binds; missing ones are created before the container starts,
/// as docker does for `-v`.
pub fn bind_sources(spec: &Spec) -> Vec<PathBuf> {
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| m.typ().as_deref() == Some("bind"))
        .filter_map(|m| m.source().clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::load_sources;

    fn host() -> HostSettings {
        HostSettings {
            sonic_root: PathBuf::from("/srv/vs"),
            platform: "x86_64-kvm_x86_64-r0".into(),
            hwsku: "Force10-S6000".into(),
            asic: String::new(),
            num_asic: 1,
            namespace: "sonic".into(),
            cgroups: Cgroups::Cgroupfs,
            privileged_capabilities: capabilities_in_mask(u64::MAX),
        }
    }

    fn service(extra: &str) -> Service {
        let text = format!(
            "[service]\n[container]\nimage = \"docker-orchagent:latest\"\n{extra}\n[readiness]\nprobe = {{ type = \"process\", name = \"orchagent\" }}\n"
        );
        let set = load_sources(vec![(PathBuf::from("services/swss.toml"), text)]).unwrap();
        set.get("swss").unwrap().clone()
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/usr/bin/start.sh".into()],
            cmd: vec![],
            env: vec!["PATH=/bin".into(), "IMAGE_VERSION=1".into()],
            working_dir: String::new(),
            user: String::new(),
        }
    }

    #[test]
    fn sonic_settings_are_applied() {
        let svc = service("capabilities = [\"NET_ADMIN\"]\nvolumes = [\"/var/log/swss:/var/log/swss:rw\"]\nenvironment = { IMAGE_VERSION = \"2\" }");
        let spec = render(&svc, &image(), &host()).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &["/usr/bin/start.sh"]);
        let env = process.env().as_ref().unwrap();
        assert!(env.contains(&"CONTAINER_NAME=swss".to_owned()));
        assert!(env.contains(&"PLATFORM=x86_64-kvm_x86_64-r0".to_owned()));
        assert!(env.contains(&"RUNTIME_OWNER=local".to_owned()));
        assert!(env.contains(&"IMAGE_VERSION=2".to_owned()), "manifest wins over image: {env:?}");
        assert!(env.contains(&"PATH=/bin".to_owned()));
        let caps = process.capabilities().as_ref().unwrap().effective().as_ref().unwrap();
        assert!(caps.contains(&Capability::NetAdmin));
        assert!(!caps.contains(&Capability::SysAdmin));

        let mounts = spec.mounts().as_ref().unwrap();
        let find = |dst: &str| mounts.iter().find(|m| m.destination() == Path::new(dst)).unwrap();
        let sonic = find("/etc/sonic");
        assert_eq!(sonic.source().as_deref(), Some(Path::new("/srv/vs/etc/sonic")));
        assert!(sonic.options().as_ref().unwrap().contains(&"ro".to_owned()));
        assert_eq!(find("/var/run/redis").source().as_deref(), Some(Path::new("/srv/vs/var/run/redis")));
        assert_eq!(
            find("/usr/share/sonic/hwsku").source().as_deref(),
            Some(Path::new("/srv/vs/usr/share/sonic/device/x86_64-kvm_x86_64-r0/Force10-S6000"))
        );
        assert_eq!(find("/var/log/supervisor").typ().as_deref(), Some("tmpfs"));
        assert_eq!(find("/var/log/swss").source().as_deref(), Some(Path::new("/srv/vs/var/log/swss")));

        let namespaces: Vec<_> =
            spec.linux().as_ref().unwrap().namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect();
        assert!(!namespaces.contains(&LinuxNamespaceType::Network), "host network");
        assert!(!namespaces.contains(&LinuxNamespaceType::Uts), "host UTS");
        assert!(namespaces.contains(&LinuxNamespaceType::Pid));
        assert!(spec.hostname().is_none());
    }

    #[test]
    fn privileged_gets_every_capability_and_writable_sys() {
        let spec = render(&service("privileged = true"), &image(), &host()).unwrap();
        let caps = spec.process().as_ref().unwrap().capabilities().as_ref().unwrap();
        assert!(caps.effective().as_ref().unwrap().contains(&Capability::SysAdmin));
        let sys = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new("/sys")).unwrap();
        assert!(!sys.options().as_ref().unwrap().contains(&"ro".to_owned()));
        assert!(spec.linux().as_ref().unwrap().masked_paths().as_ref().unwrap().is_empty());
    }

    #[test]
    fn privileged_is_bounded_by_the_host() {
        let mut host = host();
        host.privileged_capabilities = capabilities_in_mask(0x1fffeffffff);
        let spec = render(&service("privileged = true"), &image(), &host).unwrap();
        let caps = spec.process().as_ref().unwrap().capabilities().as_ref().unwrap();
        assert!(!caps.effective().as_ref().unwrap().contains(&Capability::SysResource));
        assert!(caps.effective().as_ref().unwrap().contains(&Capability::NetAdmin));
    }

    #[test]
    fn command_override_and_missing_command() {
        let spec = render(&service("command = [\"/bin/sleep\", \"1\"]"), &image(), &host()).unwrap();
        assert_eq!(spec.process().as_ref().unwrap().args().as_ref().unwrap(), &["/bin/sleep", "1"]);
        let empty = ImageConfig { entrypoint: vec![], ..image() };
        let err = render(&service(""), &empty, &host()).unwrap_err().to_string();
        assert!(err.contains("services/swss.toml: container.command"), "{err}");
    }

    #[test]
    fn containers_go_in_the_nos_slice_with_their_memory_floor_under_systemd() {
        let cgroupfs = render(&service(""), &image(), &host()).unwrap();
        let linux = cgroupfs.linux().as_ref().unwrap();
        assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/sonic/swss")));
        assert!(cgroupfs.annotations().iter().flatten().all(|(k, _)| k != MEMORY_MIN_PROPERTY));

        let systemd = HostSettings { cgroups: Cgroups::Systemd, ..host() };
        let spec = render(&service("memory-min = \"256Mi\""), &image(), &systemd).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("sonic.slice:sonic:swss")));
        let annotations = spec.annotations().as_ref().unwrap();
        assert_eq!(annotations.get(MEMORY_MIN_PROPERTY).map(String::as_str), Some("uint64 268435456"));
        let default = render(&service(""), &image(), &systemd).unwrap();
        let floor = format!("uint64 {}", crate::manifest::DEFAULT_MEMORY_MIN);
        assert_eq!(default.annotations().as_ref().unwrap().get(MEMORY_MIN_PROPERTY), Some(&floor));
        assert_ne!(container_digest(&service(""), &host()), container_digest(&service(""), &systemd));
    }

    #[test]
    fn rendering_is_deterministic() {
        let a = to_json(&render(&service(""), &image(), &host()).unwrap());
        let b = to_json(&render(&service(""), &image(), &host()).unwrap());
        assert_eq!(a, b);
    }
}
