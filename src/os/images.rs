//! `sonic-installer`'s verbs on `/host`: install an image from the installer file, choose the
//! default and the one-shot next boot, remove images. At most two images: the running one and
//! one more. Every step is write, fsync, rename: a new image is written under a hidden name
//! and appears whole, or not at all; the menu and the environment block are replaced whole.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::grubcfg::{self, BootArgs};
use super::installer::{Installer, InstallerError};
use super::signature::PublicKey;
use super::trial::{TRIAL, TRIAL_DEADLINE};
use super::{booted, edit_env, installed, load_env, OsError, IMAGE_PREFIX};

/// Room kept free beyond the image itself (logs, the overlay's first writes).
const MARGIN_MIB: u64 = 64;

/// The switch as `os` works on it.
#[derive(Debug, Clone)]
pub struct Host {
    /// SONiC's `/host`: the SONiC-OS partition.
    pub root: PathBuf,
    /// The running kernel's command line.
    pub cmdline: String,
}

impl Host {
    fn current(&self) -> Option<String> {
        booted(&self.cmdline)
    }
}

/// How to install.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// The key signed images are checked with.
    pub key: Option<PublicKey>,
    /// Refuse an image without a valid signature.
    pub require_signature: bool,
    /// How long the new image's first boot has to become healthy.
    pub trial_deadline: Duration,
    /// Directories carried into the new image's overlay: `(here, in the image)`, both
    /// absolute (`/etc/sonic`, soniclet's state).
    pub carry: Vec<(PathBuf, PathBuf)>,
    /// Names never carried (what describes this image's own containerd store).
    pub skip: Vec<String>,
    /// Install even when the image does not list this switch's platform.
    pub force_platform: bool,
}

/// What the daemon's `os` commands work with.
#[derive(Debug, Clone)]
pub struct OsSetup {
    pub host: Host,
    /// The defaults of every install; a request may tighten them.
    pub install: InstallOptions,
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Installed {
    pub image: String,
    pub version: String,
    /// Images removed to keep two.
    pub removed: Vec<String>,
    pub signed: bool,
}

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> OsError + '_ {
    move |source| OsError::Write { path: path.to_owned(), source }
}

/// The switch's `onie_platform`, from the `/host/machine.conf` the installer wrote.
fn platform(host: &Path) -> Option<String> {
    super::machine::MachineConf::read(host)?.platform().map(str::to_owned)
}

pub fn free_mib(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some((stat.blocks_available() as u64 * stat.fragment_size() as u64) >> 20)
}

/// Copies a tree (files, directories, symlinks, modes) but the names in `skip`, fsyncing
/// each file.
fn copy_tree(from: &Path, to: &Path, skip: &[String]) -> Result<u64, OsError> {
    if from.file_name().is_some_and(|n| skip.iter().any(|s| n == s.as_str())) {
        return Ok(0);
    }
    let read = |source| OsError::Read { path: from.to_owned(), source };
    let meta = std::fs::symlink_metadata(from).map_err(read)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from).map_err(read)?;
        let _ = std::fs::remove_file(to);
        std::os::unix::fs::symlink(target, to).map_err(write_err(to))?;
        return Ok(0);
    }
    if meta.is_dir() {
        std::fs::create_dir_all(to).map_err(write_err(to))?;
        std::fs::set_permissions(to, meta.permissions()).map_err(write_err(to))?;
        let mut n = 0;
        for entry in std::fs::read_dir(from).map_err(read)? {
            let entry = entry.map_err(read)?;
            n += copy_tree(&entry.path(), &to.join(entry.file_name()), skip)?;
        }
        return Ok(n);
    }
    std::fs::copy(from, to).map_err(write_err(to))?;
    std::fs::File::open(to).and_then(|f| f.sync_all()).map_err(write_err(to))?;
    Ok(1)
}

fn sync_fs(path: &Path) -> Result<(), OsError> {
    let dir = std::fs::File::open(path).map_err(|source| OsError::Read { path: path.to_owned(), source })?;
    nix::unistd::syncfs(&dir).map_err(|e| OsError::Write { path: path.to_owned(), source: e.into() })
}

/// Rewrites the menu: an entry per installed image (the next boot's first), ONIE's kept.
pub fn write_menu(host: &Host) -> Result<(), OsError> {
    let boot = BootArgs::from_cmdline(&host.cmdline).ok_or(OsError::NoRootUuid)?;
    let env = load_env(&host.root)?;
    let mut images = installed(&host.root)?;
    let first = env.get("next_entry").or(env.get("saved_entry")).map(str::to_owned);
    images.sort_by_key(|i| (Some(i) != first.as_ref(), std::cmp::Reverse(i.clone())));
    let entries: Vec<(String, String)> =
        images.into_iter().map(|i| (i.clone(), i.trim_start_matches(IMAGE_PREFIX).to_owned())).collect();
    let path = host.root.join("grub/grub.cfg");
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let cfg = grubcfg::render(&entries, &boot, grubcfg::onie_part(&existing));
    crate::state::fsutil::atomic_write(&path, cfg.as_bytes()).map_err(write_err(&path))
}

/// Installs the image an installer file carries, and sets it to boot once, on trial.
pub fn install(
    host: &Host,
    installer_path: &Path,
    options: &InstallOptions,
    progress: &dyn Fn(String),
) -> Result<Installed, OsError> {
    let env = load_env(&host.root)?;
    if let Some(image) = env.get(TRIAL) {
        if installed(&host.root)?.iter().any(|i| i == image) {
            return Err(OsError::OnTrial { image: image.to_owned() });
        }
    }
    let current = host.current();
    // The new entry needs the partition's UUID: fail before the long work, not after.
    BootArgs::from_cmdline(&host.cmdline).ok_or(OsError::NoRootUuid)?;
    let installer = Installer::open(installer_path)?;
    let total = installer.payload_bytes;
    let step = (total / 10).max(1);
    let last = std::cell::Cell::new(0u64);
    let key = match (&options.key, options.require_signature) {
        (None, true) => return Err(OsError::NoKey),
        (key, _) => key.as_ref(),
    };
    let signed = super::installer::signature_path(installer_path).exists();
    let check_key = if signed || options.require_signature { key } else { None };
    if check_key.is_none() && signed {
        progress("the image is signed, but no key is configured: only its digest is checked".to_owned());
    } else if key.is_some() && !signed {
        progress("the image is not signed: only its digest is checked".to_owned());
    }
    progress(format!("verifying {} ({} MiB)", installer_path.display(), total >> 20));
    installer.verify(check_key, &|done| {
        if done / step != last.get() / step || done == total {
            last.set(done);
            progress(format!("verifying: {}%", done * 100 / total.max(1)));
        }
    })?;
    let meta = installer.metadata()?;
    let image = format!("{IMAGE_PREFIX}{}", meta.version);
    if let Some(platform) = platform(&host.root) {
        if !meta.platforms.contains(&platform) && !options.force_platform {
            return Err(OsError::Platform { platform, supported: meta.platforms.join(" ") });
        }
    }
    if current.as_deref() == Some(image.as_str()) {
        return Err(OsError::Running {
            image,
            action: "it cannot be installed over; build the new image with another --version",
        });
    }
    // Two images at most: the running one and the new one.
    let default = env.get("saved_entry").map(str::to_owned);
    let others: Vec<String> = installed(&host.root)?.into_iter().filter(|i| Some(i) != current.as_ref()).collect();
    for other in &others {
        if default.as_ref() == Some(other) && *other != image {
            return Err(OsError::IsDefault { image: other.clone(), current: current.clone().unwrap_or_default() });
        }
    }
    // The old images' room is counted as free: they go before the new one is written.
    let reclaimed: u64 = others.iter().map(|i| tree_mib(&host.root.join(i))).sum();
    let needed = (total >> 20) + MARGIN_MIB;
    let free = free_mib(&host.root).unwrap_or(u64::MAX) + reclaimed;
    if free < needed {
        return Err(OsError::NoRoom { host: host.root.clone(), needed, free });
    }
    let mut removed = Vec::new();
    for other in others {
        progress(format!("removing {other}: two images at most"));
        remove_image_dir(host, &other)?;
        removed.push(other);
    }
    let partial = host.root.join(format!(".{image}.partial"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(write_err(&partial))?;
    }
    let written = std::cell::Cell::new(0u64);
    let last = std::cell::Cell::new(0u64);
    let extract = |name: &str, reader: &mut dyn Read| -> Result<bool, InstallerError> {
        let target = match name {
            "image/fs.squashfs" => partial.join("fs.squashfs"),
            "boot/vmlinuz" | "boot/initrd.img" => partial.join(name),
            _ => return Ok(true),
        };
        let io = |source| InstallerError::Read { path: target.clone(), source };
        std::fs::create_dir_all(target.parent().unwrap_or(&partial)).map_err(io)?;
        let mut file = std::fs::File::create(&target).map_err(io)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            std::io::Write::write_all(&mut file, &buf[..n]).map_err(io)?;
            written.set(written.get() + n as u64);
            if written.get() / step != last.get() / step {
                last.set(written.get());
                progress(format!("writing {image}: {} MiB", written.get() >> 20));
            }
        }
        progress("syncing".to_owned());
        file.sync_all().map_err(io)?;
        Ok(true)
    };
    progress(format!("writing {image}"));
    let result = installer.entries(extract);
    let result = result.map_err(OsError::from).and_then(|()| {
        for needed in ["fs.squashfs", "boot/vmlinuz", "boot/initrd.img"] {
            if !partial.join(needed).is_file() {
                return Err(OsError::Installer(InstallerError::Missing {
                    path: installer_path.to_owned(),
                    entry: needed.to_owned(),
                }));
            }
        }
        for dir in ["rw", "work", "containerd"] {
            std::fs::create_dir_all(partial.join(dir)).map_err(write_err(&partial))?;
        }
        for (here, there) in &options.carry {
            if here.exists() {
                let inside = partial.join("rw").join(there.strip_prefix("/").unwrap_or(there));
                let files = copy_tree(here, &inside, &options.skip)?;
                progress(format!("carried {} ({files} files) to {image}", here.display()));
            }
        }
        sync_fs(&host.root)
    });
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    let dir = host.root.join(&image);
    std::fs::rename(&partial, &dir).map_err(write_err(&dir))?;
    sync_fs(&host.root)?;
    let deadline = options.trial_deadline.as_secs().max(1).to_string();
    edit_env(&host.root, |env| {
        env.set("next_entry", &image);
        env.set(TRIAL, &image);
        env.set(TRIAL_DEADLINE, &deadline);
    })?;
    write_menu(host)?;
    progress(format!("{image} installed: it boots next, on trial, and becomes the default once healthy"));
    Ok(Installed { image, version: meta.version, removed, signed: signed && check_key.is_some() })
}

fn tree_mib(path: &Path) -> u64 {
    fn bytes(path: &Path) -> u64 {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                std::fs::read_dir(path).map(|rd| rd.filter_map(Result::ok).map(|e| bytes(&e.path())).sum()).unwrap_or(0)
            }
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    bytes(path) >> 20
}

fn require(host: &Host, image: &str) -> Result<(), OsError> {
    if installed(&host.root)?.iter().any(|i| i == image) {
        Ok(())
    } else {
        Err(OsError::NoSuchImage { image: image.to_owned() })
    }
}

/// `image-<version>` for a version or an image name.
pub fn image_name(version: &str) -> String {
    if version.starts_with(IMAGE_PREFIX) {
        version.to_owned()
    } else {
        format!("{IMAGE_PREFIX}{version}")
    }
}

/// Every boot starts `image` (sonic-installer set-default). Setting the image on trial
/// commits it by hand.
pub fn set_default(host: &Host, image: &str) -> Result<(), OsError> {
    require(host, image)?;
    edit_env(&host.root, |env| {
        env.set("saved_entry", image);
        if env.get(TRIAL) == Some(image) && host.current().as_deref() == Some(image) {
            env.remove(TRIAL);
            env.remove(TRIAL_DEADLINE);
        }
    })?;
    write_menu(host)
}

/// The next boot, only, starts `image` (sonic-installer set-next-boot); a trial of another
/// image is called off.
pub fn set_next_boot(host: &Host, image: &str) -> Result<(), OsError> {
    require(host, image)?;
    edit_env(&host.root, |env| {
        env.set("next_entry", image);
        if env.get(TRIAL).is_some_and(|t| t != image) {
            env.remove(TRIAL);
            env.remove(TRIAL_DEADLINE);
        }
    })?;
    write_menu(host)
}

fn remove_image_dir(host: &Host, image: &str) -> Result<(), OsError> {
    let dir = host.root.join(image);
    // Renamed first: a crash mid-delete leaves a hidden directory, not a half image.
    let doomed = host.root.join(format!(".{image}.removing"));
    let _ = std::fs::remove_dir_all(&doomed);
    std::fs::rename(&dir, &doomed).map_err(write_err(&dir))?;
    edit_env(&host.root, |env| {
        for var in ["next_entry", TRIAL] {
            if env.get(var) == Some(image) {
                env.remove(var);
                if var == TRIAL {
                    env.remove(TRIAL_DEADLINE);
                }
            }
        }
    })?;
    write_menu(host)?;
    std::fs::remove_dir_all(&doomed).map_err(write_err(&doomed))
}

/// Removes an image that is neither running nor the default.
pub fn remove(host: &Host, image: &str) -> Result<(), OsError> {
    require(host, image)?;
    let current = host.current();
    if current.as_deref() == Some(image) {
        return Err(OsError::Running { image: image.to_owned(), action: "the running image is never removed" });
    }
    if load_env(&host.root)?.get("saved_entry") == Some(image) {
        return Err(OsError::IsDefault { image: image.to_owned(), current: current.unwrap_or_default() });
    }
    remove_image_dir(host, image)
}

/// Removes every image but the running one and the default, and what crashed installs and
/// removals left (sonic-installer cleanup). Answers what went.
pub fn cleanup(host: &Host) -> Result<Vec<String>, OsError> {
    let env = load_env(&host.root)?;
    let keep = [host.current(), env.get("saved_entry").map(str::to_owned)];
    let mut removed = Vec::new();
    for image in installed(&host.root)? {
        if !keep.contains(&Some(image.clone())) {
            remove_image_dir(host, &image)?;
            removed.push(image);
        }
    }
    let read = |source| OsError::Read { path: host.root.clone(), source };
    for entry in std::fs::read_dir(&host.root).map_err(read)? {
        let entry = entry.map_err(read)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!(".{IMAGE_PREFIX}")) && (name.ends_with(".partial") || name.ends_with(".removing"))
        {
            std::fs::remove_dir_all(entry.path()).map_err(write_err(&entry.path()))?;
            removed.push(name);
        }
    }
    // What an `os install URL` cut short left (no os job runs beside this one).
    let download = host.root.join(super::fetch::DOWNLOAD);
    if download.exists() {
        super::fetch::remove(&download, &super::installer::signature_path(&download));
        removed.push(super::fetch::DOWNLOAD.to_owned());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::super::grubenv::GrubEnv;
    use super::super::trial::{self, BootStatus};
    use super::*;

    const UUID: &str = "5e1f-0001";

    /// An installer as `cargo xtask onie` lays it out, with a tiny payload.
    pub(crate) fn make_installer(dir: &Path, version: &str, platforms: &str) -> PathBuf {
        let mut payload = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            payload.append_data(&mut header, path, data).unwrap();
        };
        add("installer/install.sh", b"exit 0\n");
        add("installer/platforms", platforms.as_bytes());
        add("installer/version", version.as_bytes());
        add("image/fs.squashfs", format!("squashfs of {version}").as_bytes());
        add("boot/vmlinuz", b"kernel");
        add("boot/initrd.img", b"initrd");
        let payload = payload.into_inner().unwrap();
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(&payload));
        let header = |offset: usize| format!("#!/bin/sh\npayload_offset={offset:010}\npayload_sha256={sha}\nexit 0\n");
        let len = header(0).len();
        let mut file = header(len + 1).into_bytes();
        file.extend_from_slice(&payload);
        let path = dir.join(format!("installer-{version}"));
        std::fs::write(&path, file).unwrap();
        path
    }

    fn switch() -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("host");
        std::fs::create_dir_all(root.join("image-1/rw")).unwrap();
        std::fs::write(root.join("image-1/fs.squashfs"), b"1").unwrap();
        std::fs::create_dir_all(root.join("grub")).unwrap();
        let mut env = GrubEnv::default();
        env.set("saved_entry", "image-1");
        std::fs::write(root.join("grub/grubenv"), env.render().unwrap()).unwrap();
        std::fs::write(
            root.join("grub/grub.cfg"),
            format!("old menu\n{}\nmenuentry ONIE {{ onie }}\n", grubcfg::ONIE_MARKER),
        )
        .unwrap();
        std::fs::write(root.join("machine.conf"), "onie_platform=x86_64-kvm_x86_64-r0\nonie_arch=x86_64\n").unwrap();
        let cmdline = format!(
            "BOOT_IMAGE=/image-1/boot/vmlinuz root=UUID={UUID} rw loop=image-1/fs.squashfs console=ttyS0 panic=10"
        );
        (dir, Host { root, cmdline })
    }

    fn options(dir: &Path) -> InstallOptions {
        let etc = dir.join("etc/sonic");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("config_db.json"), "{\"DEVICE_METADATA\": {}}").unwrap();
        InstallOptions {
            trial_deadline: Duration::from_secs(120),
            carry: vec![(etc, PathBuf::from("/etc/sonic"))],
            ..InstallOptions::default()
        }
    }

    /// Every file under `root`, with its bytes: what "nothing changed" compares.
    fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path.clone());
                    out.push((path, Vec::new()));
                } else {
                    out.push((path.clone(), std::fs::read(&path).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn an_install_writes_the_image_whole_carries_etc_sonic_and_boots_it_once_on_trial() {
        let (dir, host) = switch();
        let file = make_installer(dir.path(), "2", "x86_64-kvm_x86_64-r0\n");
        let lines = std::sync::Mutex::new(Vec::new());
        let installed = install(&host, &file, &options(dir.path()), &|l| lines.lock().unwrap().push(l)).unwrap();
        assert_eq!(installed.image, "image-2");
        let image = host.root.join("image-2");
        assert_eq!(std::fs::read(image.join("fs.squashfs")).unwrap(), b"squashfs of 2");
        assert_eq!(std::fs::read(image.join("boot/vmlinuz")).unwrap(), b"kernel");
        assert!(image.join("rw/etc/sonic/config_db.json").is_file());
        for dir in ["work", "containerd"] {
            assert!(image.join(dir).is_dir());
        }
        let env = GrubEnv::load(&host.root.join("grub/grubenv")).unwrap();
        assert_eq!(env.get("saved_entry"), Some("image-1"), "the default stays until the trial passes");
        assert_eq!(env.get("next_entry"), Some("image-2"));
        assert_eq!(env.get(trial::TRIAL), Some("image-2"));
        assert_eq!(env.get(trial::TRIAL_DEADLINE), Some("120"));
        let menu = std::fs::read_to_string(host.root.join("grub/grub.cfg")).unwrap();
        assert!(menu.contains("--id 'image-1'") && menu.contains("--id 'image-2'"), "{menu}");
        assert!(menu.contains(&format!("root=UUID={UUID} rw loop=image-2/fs.squashfs")), "{menu}");
        assert!(menu.ends_with("menuentry ONIE { onie }\n"), "ONIE's entry is kept: {menu}");
        let lines = lines.into_inner().unwrap();
        for step in ["verifying", "writing", "syncing", "carried"] {
            assert!(lines.iter().any(|l| l.starts_with(step)), "no {step} in {lines:?}");
        }
        // Not booted yet: settled; booted: on trial; back on image-1: fell back.
        let status = |booted| trial::boot_status(&env, Some(booted), Duration::from_secs(1));
        assert_eq!(status("image-1"), BootStatus::Settled);
        assert!(matches!(status("image-2"), BootStatus::OnTrial { .. }));
        let listed = super::super::list(&host.root, &host.cmdline).unwrap();
        assert!(listed.images[1].on_trial && listed.images[1].next);
    }

    #[test]
    fn a_damaged_installer_an_unknown_platform_or_a_missing_signature_changes_nothing() {
        let (dir, host) = switch();
        let good = make_installer(dir.path(), "2", "x86_64-kvm_x86_64-r0\n");
        let bytes = std::fs::read(&good).unwrap();
        let flipped = dir.path().join("flipped");
        let mut damaged = bytes.clone();
        let at = damaged.len() - 700;
        damaged[at] ^= 0x40;
        std::fs::write(&flipped, damaged).unwrap();
        let truncated = dir.path().join("truncated");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let other = make_installer(dir.path(), "3", "x86_64-accton_as7712_32x-r0\n");
        let before = snapshot(&host.root);
        let cases: Vec<(&Path, InstallOptions, &str)> = vec![
            (&flipped, options(dir.path()), "is damaged or truncated"),
            (&truncated, options(dir.path()), "is damaged or truncated"),
            (&other, options(dir.path()), "does not support this switch's platform x86_64-kvm_x86_64-r0"),
            (&good, InstallOptions { require_signature: true, ..options(dir.path()) }, "no key is configured"),
            (Path::new("/nonexistent"), options(dir.path()), "cannot read /nonexistent"),
        ];
        for (file, options, want) in cases {
            let e = install(&host, file, &options, &|_| {}).unwrap_err();
            assert!(e.to_string().contains(want), "{}: {e}", file.display());
            assert_eq!(snapshot(&host.root), before, "{} changed /host", file.display());
        }
        let on_nspawn = Host { cmdline: "quiet".into(), ..host.clone() };
        let e = install(&on_nspawn, &good, &options(dir.path()), &|_| {}).unwrap_err();
        assert!(matches!(e, OsError::NoRootUuid), "{e}");
    }

    #[test]
    fn the_running_and_default_images_stay_and_a_third_install_replaces_the_other() {
        let (dir, host) = switch();
        install(&host, &make_installer(dir.path(), "2", "x86_64-kvm_x86_64-r0"), &options(dir.path()), &|_| {})
            .unwrap();
        assert!(matches!(remove(&host, "image-1").unwrap_err(), OsError::Running { .. }));
        assert!(matches!(
            install(&host, &make_installer(dir.path(), "1", "x86_64-kvm_x86_64-r0"), &options(dir.path()), &|_| {})
                .unwrap_err(),
            OsError::OnTrial { .. }
        ));
        // Called off by hand: the trial goes with the image.
        remove(&host, "image-2").unwrap();
        let env = GrubEnv::load(&host.root.join("grub/grubenv")).unwrap();
        assert_eq!((env.get("next_entry"), env.get(trial::TRIAL)), (None, None));
        install(&host, &make_installer(dir.path(), "2", "x86_64-kvm_x86_64-r0"), &options(dir.path()), &|_| {})
            .unwrap();
        trial::commit(&host.root, "image-2").unwrap();
        // Still on image-1 (it was committed from elsewhere): image-2 is the default now.
        assert!(matches!(remove(&host, "image-2").unwrap_err(), OsError::IsDefault { .. }));
        set_default(&host, "image-1").unwrap();
        let third =
            install(&host, &make_installer(dir.path(), "3", "x86_64-kvm_x86_64-r0"), &options(dir.path()), &|_| {})
                .unwrap();
        assert_eq!(third.removed, vec!["image-2".to_owned()]);
        assert_eq!(installed(&host.root).unwrap(), vec!["image-1".to_owned(), "image-3".to_owned()]);
        let menu = std::fs::read_to_string(host.root.join("grub/grub.cfg")).unwrap();
        assert!(!menu.contains("image-2") && menu.contains("image-3"), "{menu}");
        std::fs::create_dir_all(host.root.join(".image-4.partial")).unwrap();
        std::fs::write(host.root.join(super::super::fetch::DOWNLOAD), "cut short").unwrap();
        set_next_boot(&host, "image-1").unwrap();
        let gone = cleanup(&host).unwrap();
        let want = ["image-3", ".image-4.partial", super::super::fetch::DOWNLOAD].map(str::to_owned);
        assert_eq!(gone, want);
        assert!(!host.root.join(super::super::fetch::DOWNLOAD).exists());
        assert!(matches!(set_default(&host, "image-9").unwrap_err(), OsError::NoSuchImage { .. }));
    }

    #[test]
    fn a_fallback_is_recorded_once_with_the_trial_boots_own_reason_when_it_gave_one() {
        let (dir, host) = switch();
        install(&host, &make_installer(dir.path(), "2", "x86_64-kvm_x86_64-r0"), &options(dir.path()), &|_| {})
            .unwrap();
        // GRUB spends the one-shot; the trial boot fails for its own reason and reboots.
        super::super::edit_env(&host.root, |env| env.remove("next_entry")).unwrap();
        trial::fail(&host.root, "image-2", "not healthy within 120 s: swss is not ready").unwrap();
        let env = GrubEnv::load(&host.root.join("grub/grubenv")).unwrap();
        let status = trial::boot_status(&env, Some("image-1"), Duration::from_secs(1));
        assert_eq!(status, BootStatus::FellBack { image: "image-2".into(), booted: Some("image-1".into()) });
        let reason = trial::settle_fallback(&host.root, "image-2", Some("image-1")).unwrap();
        assert_eq!(reason, "not healthy within 120 s: swss is not ready");
        let env = GrubEnv::load(&host.root.join("grub/grubenv")).unwrap();
        assert_eq!(trial::boot_status(&env, Some("image-1"), Duration::from_secs(1)), BootStatus::Settled);
        let listed = super::super::list(&host.root, &host.cmdline).unwrap();
        let record = listed.images[1].trial.clone().unwrap();
        assert_eq!(record.result, trial::TrialResult::Failed);
        assert_eq!(listed.default.as_deref(), Some("image-1"));
        // A trial boot that never reached soniclet (a panic) says so.
        let (dir, host) = switch();
        install(&host, &make_installer(dir.path(), "2", "x86_64-kvm_x86_64-r0"), &options(dir.path()), &|_| {})
            .unwrap();
        super::super::edit_env(&host.root, |env| env.remove("next_entry")).unwrap();
        let reason = trial::settle_fallback(&host.root, "image-2", Some("image-1")).unwrap();
        assert!(reason.contains("ended before soniclet found it healthy"), "{reason}");
    }
}
