//! The switch's OS images, in SONiC's layout: `/host/image-<version>/` (with `fs.squashfs`,
//! `boot/`, and the `rw` overlay), `/host/grub/grub.cfg` with an entry `image-<version>` per
//! image, and `/host/grub/grubenv`: `saved_entry` is the default, `next_entry` the one-shot
//! next boot. The running image is the one `/proc/cmdline`'s `loop=` names.

pub mod fetch;
pub mod grubcfg;
pub mod grubenv;
pub mod images;
pub mod installer;
pub mod machine;
pub mod onie;
pub mod signature;
pub mod trial;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use grubenv::{GrubEnv, GrubEnvError};
use installer::InstallerError;
use trial::TrialRecord;

/// Every image's directory and GRUB entry id starts with this.
pub const IMAGE_PREFIX: &str = "image-";

#[derive(Debug, thiserror::Error)]
pub enum OsError {
    #[error("{host} holds no OS images (no grub/grubenv): this switch was not installed from an image; a virtual switch under nspawn has none")]
    NotInstalled { host: PathBuf },
    #[error(transparent)]
    GrubEnv(#[from] GrubEnvError),
    #[error("{path}: GRUB's environment block is full: {reason}")]
    EnvFull { path: PathBuf, reason: String },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Installer(#[from] InstallerError),
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    #[error("no image {image} is installed; `soniclet os list` shows what is")]
    NoSuchImage { image: String },
    #[error("{image} is the running image: {action}")]
    Running { image: String, action: &'static str },
    #[error("{image} is on trial: wait until it is committed or falls back (`soniclet os list`), or `soniclet os remove {image}`")]
    OnTrial { image: String },
    #[error("{image} is the default image: `soniclet os set-default {current}` first")]
    IsDefault { image: String, current: String },
    #[error("{host} has {free} MiB free, and the image needs {needed} MiB: `soniclet os cleanup` or `soniclet os remove` an image first")]
    NoRoom { host: PathBuf, needed: u64, free: u64 },
    #[error(
        "the image does not support this switch's platform {platform} (it supports: {supported}); nothing was changed"
    )]
    Platform { platform: String, supported: String },
    #[error("the kernel command line has no root=UUID=: cannot tell the new image's entry where SONiC-OS is")]
    NoRootUuid,
    #[error("a signature is required, but no key is configured (`[os] signing-key` in /etc/soniclet/config.toml)")]
    NoKey,
    #[error(transparent)]
    Signature(#[from] signature::SignatureError),
    #[error("ONIE: {0}")]
    Onie(String),
}

/// One installed image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// `image-<version>`: the directory and GRUB's entry id.
    pub name: String,
    pub version: String,
    pub current: bool,
    pub default: bool,
    pub next: bool,
    /// The image boots, or booted, on trial and is not committed yet.
    pub on_trial: bool,
    /// What its last trial came to, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<TrialRecord>,
}

/// What `os list` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Images {
    pub current: Option<String>,
    pub default: Option<String>,
    /// The image the next boot starts: the one-shot entry, else the default.
    pub next: Option<String>,
    pub images: Vec<Image>,
}

/// The image the kernel command line booted (`loop=image-<version>/fs.squashfs`).
pub fn booted(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("loop="))
        .and_then(|path| path.split('/').next())
        .filter(|name| name.starts_with(IMAGE_PREFIX))
        .map(str::to_owned)
}

/// An image version names `/host/image-<version>/` and a GRUB entry: letters, digits, `.`,
/// `_` and `-` only.
pub fn valid_version(version: &str) -> bool {
    !version.is_empty() && version.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

pub(crate) fn env_path(host: &Path) -> PathBuf {
    host.join("grub/grubenv")
}

pub fn load_env(host: &Path) -> Result<GrubEnv, OsError> {
    let path = env_path(host);
    if !path.exists() {
        return Err(OsError::NotInstalled { host: host.to_owned() });
    }
    Ok(GrubEnv::load(&path)?)
}

/// Changes GRUB's environment block: write, fsync, rename.
pub(crate) fn edit_env(host: &Path, change: impl FnOnce(&mut GrubEnv)) -> Result<(), OsError> {
    let path = env_path(host);
    let mut env = load_env(host)?;
    change(&mut env);
    let bytes = env.render().map_err(|reason| OsError::EnvFull { path: path.clone(), reason })?;
    crate::state::fsutil::atomic_write(&path, &bytes).map_err(|source| OsError::Write { path, source })
}

/// The installed images' names, sorted: a directory counts once its squashfs is in place
/// (an install writes under a hidden name and renames when whole).
pub(crate) fn installed(host: &Path) -> Result<Vec<String>, OsError> {
    let read = |source| OsError::Read { path: host.to_owned(), source };
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(host).map_err(read)? {
        let entry = entry.map_err(read)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(IMAGE_PREFIX) && entry.path().join("fs.squashfs").exists() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The images under `host`, as GRUB's environment and the running kernel see them.
pub fn list(host: &Path, cmdline: &str) -> Result<Images, OsError> {
    let env = load_env(host)?;
    let names = installed(host)?;
    let current = booted(cmdline);
    let default = env.get("saved_entry").map(str::to_owned);
    let next = env.get("next_entry").map(str::to_owned).or_else(|| default.clone());
    let on_trial = env.get(trial::TRIAL);
    let images = names
        .into_iter()
        .map(|name| Image {
            version: name.trim_start_matches(IMAGE_PREFIX).to_owned(),
            current: current.as_deref() == Some(name.as_str()),
            default: default.as_deref() == Some(name.as_str()),
            next: next.as_deref() == Some(name.as_str()),
            on_trial: on_trial == Some(name.as_str()),
            trial: trial::read_record(host, &name),
            name,
        })
        .collect();
    Ok(Images { current, default, next, images })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(images: &[&str], env: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for image in images {
            std::fs::create_dir_all(dir.path().join(image)).unwrap();
            std::fs::write(dir.path().join(image).join("fs.squashfs"), b"").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("grub")).unwrap();
        let mut block = GrubEnv::default();
        for (name, value) in env {
            block.set(name, value);
        }
        std::fs::write(dir.path().join("grub/grubenv"), block.render().unwrap()).unwrap();
        dir
    }

    #[test]
    fn the_running_default_and_next_images_come_from_the_cmdline_and_grubenv() {
        let dir = host(&["image-1", "image-2"], &[("saved_entry", "image-1"), ("next_entry", "image-2")]);
        let cmdline = "BOOT_IMAGE=/image-1/boot/vmlinuz root=UUID=x loop=image-1/fs.squashfs panic=10";
        let images = list(dir.path(), cmdline).unwrap();
        assert_eq!(images.current.as_deref(), Some("image-1"));
        assert_eq!(images.default.as_deref(), Some("image-1"));
        assert_eq!(images.next.as_deref(), Some("image-2"));
        let flags: Vec<(bool, bool, bool)> = images.images.iter().map(|i| (i.current, i.default, i.next)).collect();
        assert_eq!(flags, vec![(true, true, false), (false, false, true)]);
        assert_eq!(images.images[1].version, "2");
    }

    #[test]
    fn without_a_one_shot_entry_the_next_boot_is_the_default_and_half_made_images_are_not_listed() {
        let dir = host(&["image-1"], &[("saved_entry", "image-1")]);
        std::fs::create_dir_all(dir.path().join("image-2/rw")).unwrap();
        let images = list(dir.path(), "loop=image-1/fs.squashfs").unwrap();
        assert_eq!(images.next.as_deref(), Some("image-1"));
        assert_eq!(images.images.len(), 1);
    }

    #[test]
    fn a_switch_without_images_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let e = list(dir.path(), "").unwrap_err();
        assert!(e.to_string().contains("not installed from an image"), "{e}");
        assert_eq!(booted("root=/dev/sda1 quiet"), None);
    }
}
