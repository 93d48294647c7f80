//! `cargo xtask onie [--version V] [--sign KEY] [--variant never-ready]`: the ONIE NOS installer, `target/onie/onie-installer-x86_64`.
//!
//! One file serves ONIE and `soniclet os install`: `onie/sharch.sh` (a POSIX sh header that
//! checks the payload's SHA-256 before anything else) followed by a tar payload:
//!
//! | payload path | what |
//! |---|---|
//! | `installer/install.sh` | `onie/install.sh`, run from the unpacked payload |
//! | `installer/grub/{header,entry}.cfg` | `onie/grub/`: the GRUB menu's templates, which `soniclet os` renders too |
//! | `installer/platforms` | the `onie_platform` names the image supports |
//! | `installer/version` | the image's version: `/host/image-<version>/` |
//! | `image/fs.squashfs` | the switch rootfs (`cargo xtask rootfs`), kernel and modules included |
//! | `boot/vmlinuz`, `boot/initrd.img` | Debian's kernel; a busybox initramfs (`onie/initramfs/`) |
//!
//! Beside it: `onie-installer-x86_64.sha256`, and a link per supported platform under the
//! names ONIE's discovery tries first (`onie-installer-<onie_platform>`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::kernel::{self, Kernel};
use crate::util::{ensure_packages, project_root};
use crate::vs;

/// Host tools the build needs, by the program that proves each is there.
pub const TOOLS: &[(&str, &str)] = &[("mksquashfs", "squashfs-tools"), ("cpio", "cpio"), ("depmod", "kmod")];

/// What the installer file's name starts with; ONIE's generic name for this architecture.
pub const INSTALLER: &str = "onie-installer-x86_64";

/// A built installer.
#[derive(Debug, Clone)]
pub struct Installer {
    pub path: PathBuf,
    pub version: String,
    pub sha256: String,
    pub payload_bytes: u64,
    pub build_secs: f64,
}

pub fn dir() -> PathBuf {
    project_root().join("target/onie")
}

pub fn run_task(args: &[String]) -> Result<u8> {
    let mut version = None;
    let mut key = None;
    let mut variant = Variant::Rootfs;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--version" => version = Some(iter.next().context("--version needs a version")?.clone()),
            "--sign" => key = Some(PathBuf::from(iter.next().context("--sign needs an ed25519 PEM key")?)),
            "--variant" => {
                variant = match iter.next().map(String::as_str) {
                    Some("never-ready") => Variant::NeverReady,
                    other => bail!("--variant {other:?}: the one variant is never-ready"),
                }
            }
            other => bail!("unknown onie option {other:?}: use --version V, --sign KEY, --variant never-ready"),
        }
    }
    let installer = build_with(version.as_deref(), variant, key.as_deref(), &dir())?;
    println!("{} ({} MiB, version {})", installer.path.display(), installer.payload_bytes >> 20, installer.version);
    println!("sha256 {}", installer.sha256);
    Ok(0)
}

/// Which image the installer carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The rootfs as `cargo xtask rootfs` builds it.
    Rootfs,
    /// The rootfs with a swss whose readiness never passes: an image that never becomes
    /// healthy, for the fallback's proof and benchmark.
    NeverReady,
}

/// Builds the installer from the current tree; each part is rebuilt only when its inputs
/// changed.
pub fn build(version: Option<&str>) -> Result<Installer> {
    build_with(version, Variant::Rootfs, None, &dir())
}

/// The rootfs with one manifest changed, through an overlay (the rootfs stays as it is).
fn never_ready_squashfs(rootfs: &Path, id: &str, out: &Path) -> Result<PathBuf> {
    let manifest = "usr/share/soniclet/services/swss.toml";
    let text =
        std::fs::read_to_string(rootfs.join(manifest)).with_context(|| format!("the rootfs has no {manifest}"))?;
    // A process name the kernel could show (15 characters at most), that never runs.
    let broken = text.replace("name = \"orchagent\" }", "name = \"orchagent-never\" }");
    if broken == text {
        bail!("{manifest}: its readiness probe is not orchagent's; update the never-ready variant");
    }
    // The cache is the rootfs's and this change's.
    let id = format!("{id}-{:x}", Sha256::digest(broken.as_bytes()));
    let image = out.join("fs-never-ready.squashfs");
    if std::fs::read_to_string(out.join("fs-never-ready.squashfs.id")).ok() == Some(id.clone()) && image.exists() {
        return Ok(image);
    }
    let (upper, work, merged) =
        (out.join("never-ready/upper"), out.join("never-ready/work"), out.join("never-ready/merged"));
    let _ = Command::new("umount").arg(&merged).status();
    let _ = std::fs::remove_dir_all(out.join("never-ready"));
    std::fs::create_dir_all(upper.join("usr/share/soniclet/services"))?;
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&merged)?;
    std::fs::write(upper.join(manifest), broken)?;
    let options = format!("lowerdir={},upperdir={},workdir={}", rootfs.display(), upper.display(), work.display());
    crate::util::run(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options]).arg(&merged))?;
    let result = squashfs(&merged, &id, out, "fs-never-ready.squashfs");
    let _ = Command::new("umount").arg(&merged).status();
    result
}

/// Signs the payload digest with `key` (an ed25519 PEM key), as `soniclet os install`
/// checks it: the sentence of `soniclet::os::signature::message`, by openssl.
fn sign(key: &Path, sha256: &str, signature: &Path) -> Result<()> {
    let message = signature.with_extension("message");
    std::fs::write(&message, format!("soniclet OS image, payload sha256 {sha256}\n"))?;
    crate::util::run(
        Command::new("openssl")
            .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
            .arg(key)
            .arg("-in")
            .arg(&message)
            .arg("-out")
            .arg(signature),
    )
    .with_context(|| format!("cannot sign with {}", key.display()))?;
    std::fs::remove_file(&message)?;
    Ok(())
}

/// Builds an installer into `into` (the squashfs and initramfs are cached in [`dir`]).
pub fn build_with(version: Option<&str>, variant: Variant, key: Option<&Path>, into: &Path) -> Result<Installer> {
    let started = Instant::now();
    ensure_packages(TOOLS)?;
    let rootfs = vs::build_rootfs()?;
    let kernel = kernel::fetch()?;
    let cache = dir();
    std::fs::create_dir_all(&cache)?;
    std::fs::create_dir_all(into)?;
    let squashfs = match variant {
        Variant::Rootfs => squashfs(&rootfs.dir, &rootfs.id, &cache, "fs.squashfs")?,
        Variant::NeverReady => never_ready_squashfs(&rootfs.dir, &rootfs.id, &cache)?,
    };
    let initrd = initramfs(&kernel, &cache)?;
    let out = into.to_owned();
    let version = match version {
        Some(v) => v.to_owned(),
        None => format!("{}-{}", env!("CARGO_PKG_VERSION"), &rootfs.id[..8]),
    };
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        bail!("--version {version:?}: use letters, digits, '.', '_' and '-' (it names /host/image-<version>)");
    }
    let payload = out.join("payload.tar");
    write_payload(&payload, &version, &squashfs, &kernel.vmlinuz(), &initrd)?;
    let installer = out.join(INSTALLER);
    let sha256 = assemble(&payload, &installer)?;
    std::fs::write(out.join(format!("{INSTALLER}.sha256")), format!("{sha256}  {INSTALLER}\n"))?;
    std::fs::write(out.join(format!("{INSTALLER}.version")), format!("{version}\n"))?;
    let signature = out.join(format!("{INSTALLER}.sig"));
    let _ = std::fs::remove_file(&signature);
    if let Some(key) = key {
        sign(key, &sha256, &signature)?;
    }
    for platform in platforms()? {
        let link = out.join(format!("onie-installer-{platform}"));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(INSTALLER, &link)?;
    }
    let payload_bytes = std::fs::metadata(&payload)?.len();
    std::fs::remove_file(&payload)?;
    Ok(Installer { path: installer, version, sha256, payload_bytes, build_secs: started.elapsed().as_secs_f64() })
}

fn platforms() -> Result<Vec<String>> {
    let path = project_root().join("onie/platforms");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect())
}

/// The rootfs as a squashfs, remade only when the rootfs id changed.
fn squashfs(tree: &Path, id: &str, out: &Path, name: &str) -> Result<PathBuf> {
    let image = out.join(name);
    let key = out.join(format!("{name}.id"));
    if image.exists() && std::fs::read_to_string(&key).ok().as_deref() == Some(id) {
        return Ok(image);
    }
    eprintln!("onie: squashing the rootfs (about a minute)");
    let tmp = out.join(format!("{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let log = out.join("mksquashfs.log");
    let status = Command::new("mksquashfs")
        .arg(tree)
        .arg(&tmp)
        .args(["-comp", "zstd", "-noappend", "-no-progress", "-wildcards", "-e"])
        // What apt downloads and indexes is of no use on a switch.
        .args(["var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*", ".soniclet-base"])
        .stdout(std::fs::File::create(&log)?)
        .stderr(Stdio::inherit())
        .status()
        .context("cannot run mksquashfs")?;
    if !status.success() {
        bail!("mksquashfs failed ({status}); see {}", log.display());
    }
    std::fs::rename(&tmp, &image)?;
    std::fs::write(&key, id)?;
    Ok(image)
}

/// The busybox initramfs, with the modules `onie/initramfs/modules` names and what they need.
fn initramfs(kernel: &Kernel, out: &Path) -> Result<PathBuf> {
    let root = project_root().join("onie/initramfs");
    let init = std::fs::read(root.join("init"))?;
    let wanted = std::fs::read_to_string(root.join("modules"))?;
    let image = out.join("initrd.img");
    let files = [("init", init.clone(), 0o755), ("etc/initramfs-modules", wanted.clone().into_bytes(), 0o644)];
    kernel::initramfs(kernel, &image, &files, &[], &wanted)?;
    Ok(image)
}

fn write_payload(payload: &Path, version: &str, squashfs: &Path, vmlinuz: &Path, initrd: &Path) -> Result<()> {
    let root = project_root();
    let file = std::fs::File::create(payload).with_context(|| format!("cannot create {}", payload.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.mode(tar::HeaderMode::Deterministic);
    let add_bytes = |tar: &mut tar::Builder<_>, path: &str, data: &[u8], mode: u32| -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, path, data)?;
        Ok(())
    };
    add_bytes(&mut tar, "installer/install.sh", &std::fs::read(root.join("onie/install.sh"))?, 0o755)?;
    for template in ["header.cfg", "entry.cfg"] {
        let text = std::fs::read(root.join("onie/grub").join(template))?;
        add_bytes(&mut tar, &format!("installer/grub/{template}"), &text, 0o644)?;
    }
    add_bytes(&mut tar, "installer/platforms", platforms()?.join("\n").as_bytes(), 0o644)?;
    add_bytes(&mut tar, "installer/version", version.as_bytes(), 0o644)?;
    for (name, path) in [("image/fs.squashfs", squashfs), ("boot/vmlinuz", vmlinuz), ("boot/initrd.img", initrd)] {
        let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        tar.append_file(name, &mut file)?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// Header and payload into one file; answers the payload's SHA-256.
fn assemble(payload: &Path, installer: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(payload)?, &mut hasher)?;
    let sha256 = format!("{:x}", hasher.finalize());
    let template = std::fs::read_to_string(project_root().join("onie/sharch.sh"))?;
    // The offset is written at a fixed width, so the header's length does not depend on it.
    let render = |offset: usize| {
        template.replace("@PAYLOAD_OFFSET@", &format!("{offset:010}")).replace("@PAYLOAD_SHA256@", &sha256)
    };
    let header = render(render(0).len() + 1);
    let tmp = installer.with_extension("tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    out.write_all(header.as_bytes())?;
    std::io::copy(&mut std::fs::File::open(payload)?, &mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, installer)?;
    Ok(sha256)
}
