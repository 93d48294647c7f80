//! `cargo xtask rootfs`: the switch's root filesystem, the tree the virtual switch boots and
//! the ONIE installer carries.
//!
//! Two layers, each cached:
//! - the **base**: Debian bookworm from debootstrap with systemd, containerd, runc and an
//!   operator's tools, rebuilt only when its package list or mirror changes (about a minute);
//! - the **overlay**: soniclet, its config, units and generator, `services/` and the VS image
//!   archives (imported by the daemon at first boot), rewritten file by file where changed;
//!   and Debian's kernel in `/boot` with its modules (`crate::kernel`), for the switch that
//!   boots from disk (the ONIE installer's image).
//!
//! A rebuild with nothing changed takes seconds. `target/vs/rootfs.id` names the result: the
//! virtual switch reinstalls its machine when the id changes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::images;
use crate::kernel::{self, Kernel};
use crate::util::{ensure_packages, project_root, run};

const SUITE: &str = "bookworm";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The base system's packages beyond debootstrap's minbase.
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "containerd",
    "runc",
    "iproute2",
    "iputils-ping",
    "procps",
    "less",
    "redis-tools",
    "ca-certificates",
    // A switch booted from disk: its kernel's modules, and devices named and ready.
    "kmod",
    "udev",
];

/// Host tools the build and the virtual switch need (depmod indexes the kernel's modules).
pub const TOOLS: &[(&str, &str)] =
    &[("debootstrap", "debootstrap"), ("systemd-nspawn", "systemd-container"), ("depmod", "kmod")];

pub fn vs_dir() -> PathBuf {
    project_root().join("target/vs")
}

/// A built root filesystem.
#[derive(Debug, Clone)]
pub struct Rootfs {
    pub dir: PathBuf,
    /// Digest of the base and every overlay file.
    pub id: String,
}

/// One file the overlay puts into the tree.
enum Entry {
    File { path: String, data: Vec<u8>, mode: u32 },
    Dir { path: String },
    Symlink { path: String, target: String },
}

fn mirror() -> String {
    std::env::var("SONICLET_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.to_owned())
}

fn base_key(mirror: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("{SUITE}\n{mirror}\nminbase\n{}", PACKAGES.join(",")));
    format!("{:x}", hasher.finalize())
}

/// The debootstrapped base, built unless the cached one has the same key.
fn base(dir: &Path) -> Result<String> {
    let mirror = mirror();
    let key = base_key(&mirror);
    let base = dir.join("base");
    let key_file = dir.join("base.key");
    if base.join("usr/bin/systemctl").exists() && std::fs::read_to_string(&key_file).ok().as_deref() == Some(&key) {
        return Ok(key);
    }
    let tmp = dir.join("base.tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(dir)?;
    eprintln!("rootfs: debootstrap {SUITE} from {mirror} (about a minute)");
    let log = dir.join("debootstrap.log");
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={}", PACKAGES.join(",")), SUITE])
        .arg(&tmp)
        .arg(&mirror)
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::options().append(true).open(&log)?)
        .status()
        .context("cannot run debootstrap")?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
        let unreachable = text.contains("Failed getting release file")
            || text.contains("Couldn't download")
            || text.contains("Could not resolve")
            || text.contains("Connection refused");
        if unreachable {
            bail!(
                "debootstrap cannot reach Debian at {mirror}: {}\n(set SONICLET_DEBIAN_MIRROR to a reachable mirror; log: {})",
                tail.join(" | "),
                log.display()
            );
        }
        bail!("debootstrap failed ({status}): {}\n(log: {})", tail.join(" | "), log.display());
    }
    if base.exists() {
        std::fs::remove_dir_all(&base)?;
    }
    std::fs::rename(&tmp, &base)?;
    std::fs::write(&key_file, &key)?;
    Ok(key)
}

/// The switch's one containerd, shared with the kubelet (a k3s agent, once the switch joins
/// a cluster): soniclet's services in namespace `sonic` over containerd's own API, pods in
/// `k8s.io` over CRI. CRI's runc runs pods under systemd's cgroup driver (the kubelet is
/// given `cgroup-driver=systemd`), in the sandbox image the OS image ships (no registry);
/// `restrict_oom_score_adj` because a switch under nspawn lacks CAP_SYS_RESOURCE. CNI's
/// directories are where a CNI plugin (flannel, as k3s installs it) puts itself.
fn containerd_config() -> String {
    format!(
        "\
# containerd for soniclet (namespace sonic) and the kubelet (CRI, namespace k8s.io).
version = 2

[plugins.\"io.containerd.grpc.v1.cri\"]
  sandbox_image = \"{pause}\"
  restrict_oom_score_adj = true
  [plugins.\"io.containerd.grpc.v1.cri\".containerd]
    default_runtime_name = \"runc\"
    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]
      runtime_type = \"io.containerd.runc.v2\"
      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]
        SystemdCgroup = true
  [plugins.\"io.containerd.grpc.v1.cri\".cni]
    bin_dir = \"/opt/cni/bin\"
    conf_dir = \"/etc/cni/net.d\"
",
        pause = images::PAUSE_IMAGE
    )
}

/// Host-network pods get the switch's `/etc/hosts`; debootstrap writes none.
const ETC_HOSTS: &str = "\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
";

/// systemd feeds the watchdog the initramfs armed (an installed switch's; under nspawn
/// there is none): a hung PID 1, or a hang before it took over, reboots the switch.
const WATCHDOG_CONFIG: &str = "\
[Manager]
RuntimeWatchdogSec=2min
RebootWatchdogSec=10min
";

const SONICLET_CONFIG: &str = "\
# soniclet's configuration. Every field has a default that is right on a SONiC switch;
# see `soniclet daemon --help` and ARCHITECTURE.md. For example:
#
# [daemon]
# boot-type = \"auto\"          # cold, warm or fast; auto reads SONIC_BOOT_TYPE
# delayed-start-timeout = 180
";

/// `systemd/`'s files: each one, where the image has it, and its mode.
const SYSTEMD_FILES: &[(&str, &str, u32)] = &[
    ("soniclet.service", "usr/lib/systemd/system/soniclet.service", 0o644),
    ("soniclet-generator", "usr/lib/systemd/system-generators/soniclet-generator", 0o755),
    ("soniclet-trial-backstop", "usr/lib/soniclet/trial-backstop", 0o755),
    ("soniclet-trial-backstop.service", "usr/lib/systemd/system/soniclet-trial-backstop.service", 0o644),
    ("soniclet-pause-image.service", "usr/lib/systemd/system/soniclet-pause-image.service", 0o644),
    // Shipped disabled: `soniclet k8s join` enables it.
    ("k3s-agent.service", "usr/lib/systemd/system/k3s-agent.service", 0o644),
];

/// The units the image enables, each with the target that wants it.
const ENABLED_UNITS: &[(&str, &str)] = &[
    ("soniclet.service", "multi-user.target"),
    ("soniclet-trial-backstop.service", "sysinit.target"),
    ("soniclet-pause-image.service", "multi-user.target"),
];

/// Where the k3s agent's unit runs k3s from (soniclet's `k8s::join::BINARY`).
const K3S_BINARY: &str = "usr/local/bin/k3s";

/// Where the image keeps the pause image's archive (`soniclet-pause-image.service` imports it).
const PAUSE_ARCHIVE: &str = "usr/share/soniclet/k8s/pause.tar";

fn overlay(soniclet: &Path, archives: &[PathBuf], pause: &Path) -> Result<Vec<Entry>> {
    let root = project_root();
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let mut entries = vec![Entry::File { path: "usr/bin/soniclet".into(), data: read(soniclet)?, mode: 0o755 }];
    for (file, path, mode) in SYSTEMD_FILES {
        entries.push(Entry::File { path: (*path).into(), data: read(&root.join("systemd").join(file))?, mode: *mode });
    }
    for (unit, target) in ENABLED_UNITS {
        entries.push(Entry::Symlink {
            path: format!("etc/systemd/system/{target}.wants/{unit}"),
            target: format!("/usr/lib/systemd/system/{unit}"),
        });
    }
    entries.extend([
        Entry::File {
            path: "etc/systemd/system.conf.d/soniclet-watchdog.conf".into(),
            data: WATCHDOG_CONFIG.into(),
            mode: 0o644,
        },
        Entry::File { path: "etc/soniclet/config.toml".into(), data: SONICLET_CONFIG.into(), mode: 0o644 },
        Entry::File { path: "etc/containerd/config.toml".into(), data: containerd_config().into(), mode: 0o644 },
        Entry::File { path: "etc/hosts".into(), data: ETC_HOSTS.into(), mode: 0o644 },
        Entry::File { path: PAUSE_ARCHIVE.into(), data: read(pause)?, mode: 0o644 },
        Entry::Dir { path: "etc/cni/net.d".into() },
        Entry::Dir { path: "opt/cni/bin".into() },
        Entry::File { path: "etc/hostname".into(), data: b"sonic\n".to_vec(), mode: 0o644 },
    ]);
    // k3s is in no registry these machines reach: the image carries it only when built with
    // K3S_BIN; without it `soniclet k8s join` says the image has no k3s.
    match std::env::var_os("K3S_BIN") {
        Some(k3s) => entries.push(Entry::File { path: K3S_BINARY.into(), data: read(Path::new(&k3s))?, mode: 0o755 }),
        None => eprintln!("rootfs: K3S_BIN is not set, so the image carries no k3s (soniclet k8s join will say so)"),
    }
    // The VS platform's files, in SONiC's place: soniclet writes the factory config_db.json
    // from them on a switch's first boot (its HWSKU and eight front-panel ports).
    let device = root.join("images/files/device");
    for file in ["x86_64-kvm_x86_64-r0/default_sku", "x86_64-kvm_x86_64-r0/Force10-S6000/port_config.ini"] {
        entries.push(Entry::File {
            path: format!("usr/share/sonic/device/{file}"),
            data: read(&device.join(file))?,
            mode: 0o644,
        });
    }
    // The units' Documentation=.
    for doc in ["README.md", "ARCHITECTURE.md", "DEVELOPERS.md"] {
        entries.push(Entry::File {
            path: format!("usr/share/doc/soniclet/{doc}"),
            data: read(&root.join(doc))?,
            mode: 0o644,
        });
    }
    let mut services: Vec<PathBuf> = std::fs::read_dir(root.join("services"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    services.sort();
    for path in services {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        entries.push(Entry::File {
            path: format!("usr/share/soniclet/services/{name}"),
            data: read(&path)?,
            mode: 0o644,
        });
    }
    for path in archives {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        entries.push(Entry::File { path: format!("usr/share/soniclet/images/{name}"), data: read(path)?, mode: 0o644 });
    }
    Ok(entries)
}

/// Directories the overlay owns: files in them that it does not write are removed. The image
/// ships no `/etc/sonic` files: a switch's first boot writes its factory config.
const OWNED_DIRS: &[&str] = &["usr/share/soniclet/services", "usr/share/soniclet/images", "etc/sonic"];

fn apply(tree: &Path, entries: &[Entry]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut written = BTreeSet::new();
    for entry in entries {
        match entry {
            Entry::File { path, data, mode } => {
                let dest = tree.join(path);
                written.insert(dest.clone());
                if std::fs::read(&dest).ok().as_deref() != Some(data.as_slice()) {
                    std::fs::create_dir_all(dest.parent().context("no parent")?)?;
                    let tmp = dest.with_extension("xtask-tmp");
                    std::fs::write(&tmp, data)?;
                    std::fs::rename(&tmp, &dest)?;
                }
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))?;
            }
            Entry::Dir { path } => std::fs::create_dir_all(tree.join(path))?,
            Entry::Symlink { path, target } => {
                let dest = tree.join(path);
                if std::fs::read_link(&dest).ok().as_deref() != Some(Path::new(target)) {
                    std::fs::create_dir_all(dest.parent().context("no parent")?)?;
                    let _ = std::fs::remove_file(&dest);
                    std::os::unix::fs::symlink(target, &dest)?;
                }
            }
        }
    }
    for dir in OWNED_DIRS {
        let Ok(listing) = std::fs::read_dir(tree.join(dir)) else { continue };
        for entry in listing {
            let path = entry?.path();
            if !written.contains(&path) {
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

fn overlay_digest(base_key: &str, entries: &[Entry]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(base_key.as_bytes());
    for entry in entries {
        match entry {
            Entry::File { path, data, mode } => {
                hasher.update(format!("\nF {path} {mode:o} {}\n", data.len()));
                hasher.update(data);
            }
            Entry::Dir { path } => hasher.update(format!("\nD {path}\n")),
            Entry::Symlink { path, target } => hasher.update(format!("\nL {path} {target}\n")),
        }
    }
    format!("{:x}", hasher.finalize())
}

/// Puts the kernel and its modules into the tree, unless this kernel is there already.
fn install_kernel(tree: &Path, kernel: &Kernel) -> Result<()> {
    let marker = tree.join("usr/lib/modules/.soniclet-kernel");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(kernel.package.as_str()) {
        return Ok(());
    }
    eprintln!("rootfs: installing {}", kernel.package);
    let modules = tree.join("usr/lib/modules");
    if modules.exists() {
        std::fs::remove_dir_all(&modules)?;
    }
    std::fs::create_dir_all(&modules)?;
    std::fs::create_dir_all(tree.join("boot"))?;
    run(Command::new("cp").args(["-a", "--reflink=auto"]).arg(kernel.modules()).arg(&modules))?;
    for old in std::fs::read_dir(tree.join("boot"))? {
        let path = old?.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")) {
            std::fs::remove_file(&path)?;
        }
    }
    run(Command::new("cp").arg(kernel.vmlinuz()).arg(tree.join("boot")))?;
    std::fs::write(&marker, &kernel.package)?;
    Ok(())
}

/// Builds (or refreshes) `target/vs/rootfs` from the built soniclet and image archives.
pub fn build(soniclet: &Path, archives: &[PathBuf]) -> Result<Rootfs> {
    ensure_packages(TOOLS)?;
    let dir = vs_dir();
    let key = base(&dir)?;
    let tree = dir.join("rootfs");
    let tree_key = tree.join(".soniclet-base");
    if std::fs::read_to_string(&tree_key).ok().as_deref() != Some(key.as_str()) {
        eprintln!("rootfs: copying the base");
        if tree.exists() {
            std::fs::remove_dir_all(&tree)?;
        }
        run(Command::new("cp").args(["-a", "--reflink=auto"]).arg(dir.join("base")).arg(&tree))?;
        std::fs::write(&tree_key, &key)?;
    }
    let pause = images::build_pause()?;
    let entries = overlay(soniclet, archives, &pause)?;
    apply(&tree, &entries)?;
    if std::env::var_os("K3S_BIN").is_none() {
        // An earlier build's k3s does not linger in an image built without it.
        let _ = std::fs::remove_file(tree.join(K3S_BINARY));
    }
    let kernel = kernel::fetch()?;
    install_kernel(&tree, &kernel)?;
    let id = overlay_digest(&format!("{key}\n{}", kernel.package), &entries);
    std::fs::write(dir.join("rootfs.id"), &id)?;
    eprintln!("rootfs: {} ({})", tree.display(), &id[..12]);
    Ok(Rootfs { dir: tree, id })
}
