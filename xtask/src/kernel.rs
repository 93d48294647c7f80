//! Debian's kernel for the switch: `linux-image-amd64`'s current package, fetched with the
//! host's apt (the host is bookworm too, so it is the kernel a bookworm switch would run),
//! unpacked once into `target/kernel/<package>/`, with the modules a switch never loads
//! (sound, GPUs, cameras, wireless...) left out.
//!
//! The rootfs carries it in `/boot` and `/usr/lib/modules`; the installer's initramfs takes
//! the modules it needs to reach the root filesystem from the same tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::util::{output, project_root, run, shell_quote};

/// Module trees no switch loads; everything else of Debian's kernel ships.
const LEFT_OUT: &[&str] = &[
    "kernel/sound",
    "kernel/drivers/gpu",
    "kernel/drivers/media",
    "kernel/drivers/infiniband",
    "kernel/drivers/staging",
    "kernel/drivers/comedi",
    "kernel/drivers/iio",
    "kernel/drivers/bluetooth",
    "kernel/drivers/isdn",
    "kernel/drivers/video",
    "kernel/drivers/target",
    "kernel/drivers/net/wireless",
    "kernel/net/wireless",
    "kernel/net/mac80211",
    "kernel/net/bluetooth",
];

/// An unpacked kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `6.1.0-57-amd64`.
    pub version: String,
    /// The `.deb` it came from: what names this kernel in build keys.
    pub package: String,
    /// `boot/vmlinuz-<version>` and `usr/lib/modules/<version>/` under it.
    pub tree: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.tree.join(format!("boot/vmlinuz-{}", self.version))
    }

    pub fn modules(&self) -> PathBuf {
        self.tree.join(format!("usr/lib/modules/{}", self.version))
    }
}

/// The package `linux-image-amd64` points at, as the host's apt knows it.
fn package_name() -> Result<String> {
    let depends = |cmd: &mut Command| output(cmd).unwrap_or_default();
    let mut text = depends(Command::new("apt-cache").args(["depends", "linux-image-amd64"]));
    if !text.contains("Depends: linux-image-") {
        run(Command::new("apt-get").args(["update", "-q"]))
            .context("apt-get update failed: is Debian's mirror reachable?")?;
        text = depends(Command::new("apt-cache").args(["depends", "linux-image-amd64"]));
    }
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .map(str::to_owned)
        .context("apt knows no linux-image-amd64: add a bookworm source to /etc/apt/sources.list")
}

/// Fetches and unpacks the kernel, unless it already is.
pub fn fetch() -> Result<Kernel> {
    let package = package_name()?;
    let version = package.trim_start_matches("linux-image-").to_owned();
    let dir = project_root().join("target/kernel");
    let tree = dir.join(&package);
    let kernel = Kernel { version, package: package.clone(), tree: tree.clone() };
    if tree.join(".complete").exists() {
        return Ok(kernel);
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!("kernel: fetching {package}");
    let download = dir.join("download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    run(Command::new("apt-get")
        .args(["download", "-q", "-o", "APT::Sandbox::User=root", &package])
        .current_dir(&download))
    .with_context(|| format!("cannot download {package}: is Debian's mirror reachable?"))?;
    let deb = std::fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb of {package}"))?;
    let unpacking = dir.join(format!("{package}.tmp"));
    let _ = std::fs::remove_dir_all(&unpacking);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacking))?;
    // bookworm's package still ships /lib/modules; the rootfs has /lib -> usr/lib.
    let lib_modules = unpacking.join("lib/modules");
    if lib_modules.exists() {
        std::fs::create_dir_all(unpacking.join("usr/lib"))?;
        std::fs::rename(&lib_modules, unpacking.join("usr/lib/modules"))?;
        std::fs::remove_dir(unpacking.join("lib")).ok();
    }
    let staged = Kernel { tree: unpacking.clone(), ..kernel.clone() };
    for left_out in LEFT_OUT {
        let path = staged.modules().join(left_out);
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
    }
    if !staged.vmlinuz().exists() {
        bail!("{} has no {}", deb.display(), staged.vmlinuz().display());
    }
    depmod(&unpacking, &kernel.version)?;
    std::fs::write(unpacking.join(".complete"), &package)?;
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::rename(&unpacking, &tree)?;
    std::fs::remove_dir_all(&download).ok();
    Ok(kernel)
}

/// Writes `modules.dep` and friends for the modules under `root/usr/lib/modules/<version>`.
pub fn depmod(root: &Path, version: &str) -> Result<()> {
    // depmod looks under <base>/lib/modules; a link lets it find the usr-merged tree.
    let lib = root.join("lib");
    let made_link = !lib.exists();
    if made_link {
        std::os::unix::fs::symlink("usr/lib", &lib)?;
    }
    let result = run(Command::new("depmod").arg("-b").arg(root).arg(version));
    if made_link {
        std::fs::remove_file(&lib)?;
    }
    result
}

/// `modules.dep`: each module's path and the paths it needs, relative to the modules dir.
fn module_deps(modules: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let text = std::fs::read_to_string(modules.join("modules.dep"))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (module, deps) = line.split_once(':')?;
            Some((module.to_owned(), deps.split_whitespace().map(str::to_owned).collect()))
        })
        .collect())
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split('.').next().unwrap_or(file).replace('-', "_")
}

/// A file an initramfs holds: its path inside, its bytes and its mode.
pub type InitramfsFile = (&'static str, Vec<u8>, u32);

/// Packs a gzip'd newc initramfs at `image`: static busybox as `/bin/busybox`, `files`, host
/// `trees` copied as they are (with `cp -a`), and the modules `modules` names (one a line;
/// built-in or absent ones are left to modprobe to skip) with what they need. It is rebuilt
/// only when one of these changed.
pub fn initramfs(
    kernel: &Kernel,
    image: &Path,
    files: &[InitramfsFile],
    trees: &[(&str, PathBuf)],
    modules: &str,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let busybox = std::fs::read("/bin/busybox").context("cannot read /bin/busybox (busybox-static)")?;
    let mut hasher = Sha256::new();
    hasher.update(&busybox);
    hasher.update(kernel.package.as_bytes());
    hasher.update(modules.as_bytes());
    for (path, data, mode) in files {
        hasher.update(format!("\n{path} {mode:o} {}\n", data.len()));
        hasher.update(data);
    }
    for (path, from) in trees {
        hasher.update(format!("\nT {path} {}\n", from.display()));
    }
    let key = format!("{:x}", hasher.finalize());
    let key_file = image.with_extension("id");
    if image.exists() && std::fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str()) {
        return Ok(());
    }
    let staging = image.with_extension("staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    for dir in ["bin", "dev", "etc", "proc", "sys", "tmp", "run", "mnt"] {
        std::fs::create_dir_all(staging.join(dir))?;
    }
    let write = |path: &str, data: &[u8], mode: u32| -> Result<()> {
        let dest = staging.join(path);
        std::fs::create_dir_all(dest.parent().context("a file in a directory")?)?;
        std::fs::write(&dest, data)?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    // Host libraries under /lib land in usr/lib, beside the modules, as on the host.
    std::fs::create_dir_all(staging.join("usr/lib"))?;
    std::os::unix::fs::symlink("usr/lib", staging.join("lib"))?;
    write("bin/busybox", &busybox, 0o755)?;
    for (path, data, mode) in files {
        write(path, data, *mode)?;
    }
    for (path, from) in trees {
        let dest = staging.join(path);
        std::fs::create_dir_all(dest.parent().context("a tree in a directory")?)?;
        run(Command::new("cp").args(["-aL"]).arg(from).arg(&dest))?;
    }
    let deps = module_deps(&kernel.modules())?;
    let by_name: BTreeMap<String, &String> = deps.keys().map(|p| (module_name(p), p)).collect();
    let mut closure = BTreeSet::new();
    for name in modules.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some(path) = by_name.get(&name.replace('-', "_")) else { continue };
        closure.insert((*path).clone());
        closure.extend(deps[*path].iter().cloned());
    }
    let inside = staging.join(format!("usr/lib/modules/{}", kernel.version));
    for module in &closure {
        let dest = inside.join(module);
        std::fs::create_dir_all(dest.parent().context("a module in a directory")?)?;
        std::fs::copy(kernel.modules().join(module), &dest)?;
    }
    for file in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
        let from = kernel.modules().join(file);
        if from.exists() {
            std::fs::copy(&from, inside.join(file))?;
        }
    }
    depmod(&staging, &kernel.version)?;
    let tmp = image.with_extension("tmp");
    let pack = format!(
        "cd {} && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -6 > {}",
        shell_quote(&staging.display().to_string()),
        shell_quote(&tmp.display().to_string())
    );
    run(Command::new("sh").args(["-c", &pack]))?;
    std::fs::rename(&tmp, image)?;
    std::fs::write(&key_file, &key)?;
    std::fs::remove_dir_all(&staging)?;
    Ok(())
}
