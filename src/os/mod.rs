//! The switch's OS images, in SONiC's layout: `/host/image-<version>/` (with `fs.squashfs`,
//! `boot/`, and the `rw` overlay), `/host/grub/grub.cfg` with an entry `image-<version>` per
//! image, and `/host/grub/grubenv`: `saved_entry` is the default, `next_entry` the one-shot
//! next boot. The running image is the one `/proc/cmdline`'s `loop=` names.

pub mod grubenv;

use std::path::{Path, PathBuf};

use serde::Serialize;

use grubenv::{GrubEnv, GrubEnvError};

#[derive(Debug, thiserror::Error)]
pub enum OsError {
    #[error("{host} holds no OS images (no grub/grubenv): this switch was not installed from an image; a virtual switch under nspawn has none")]
    NotInstalled { host: PathBuf },
    #[error(transparent)]
    GrubEnv(#[from] GrubEnvError),
    #[error("cannot list {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// One installed image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    /// `image-<version>`: the directory and GRUB's entry id.
    pub name: String,
    pub version: String,
    pub current: bool,
    pub default: bool,
    pub next: bool,
}

/// What `os list` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
        .filter(|name| name.starts_with("image-"))
        .map(str::to_owned)
}

/// The images under `host`, as GRUB's environment and the running kernel see them.
pub fn list(host: &Path, cmdline: &str) -> Result<Images, OsError> {
    let env_path = host.join("grub/grubenv");
    if !env_path.exists() {
        return Err(OsError::NotInstalled { host: host.to_owned() });
    }
    let env = GrubEnv::load(&env_path)?;
    let read = |source| OsError::Read { path: host.to_owned(), source };
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(host).map_err(read)? {
        let entry = entry.map_err(read)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("image-") && entry.path().join("fs.squashfs").exists() {
            names.push(name);
        }
    }
    names.sort();
    let current = booted(cmdline);
    let default = env.get("saved_entry").map(str::to_owned);
    let next = env.get("next_entry").map(str::to_owned).or_else(|| default.clone());
    let images = names
        .into_iter()
        .map(|name| Image {
            version: name.trim_start_matches("image-").to_owned(),
            current: current.as_deref() == Some(name.as_str()),
            default: default.as_deref() == Some(name.as_str()),
            next: next.as_deref() == Some(name.as_str()),
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
