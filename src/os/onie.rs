//! Booting into ONIE in one of its modes, as the ONIE design spec has a NOS do it: ONIE's
//! `onie_mode` set in ONIE-BOOT's own environment block (`grub-editenv`), then a one-shot
//! boot of the menu's `ONIE` entry (`grub-reboot ONIE`).

use std::path::{Path, PathBuf};

use super::grubenv::GrubEnv;
use super::{edit_env, OsError};

/// ONIE's modes a NOS may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OnieMode {
    /// Discover and install a NOS (this one's image is replaced).
    Install,
    /// ONIE's shell, without installing.
    Rescue,
    /// Wipe every partition but ONIE's.
    Uninstall,
    /// Update ONIE itself.
    Update,
}

impl OnieMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Install => "install",
            Self::Rescue => "rescue",
            Self::Uninstall => "uninstall",
            Self::Update => "update",
        }
    }
}

/// ONIE-BOOT's device, by its filesystem label.
pub fn onie_boot_device() -> Option<PathBuf> {
    let by_label = Path::new("/dev/disk/by-label/ONIE-BOOT");
    by_label.exists().then(|| by_label.to_owned())
}

/// Sets ONIE's mode in `onie_boot` (ONIE-BOOT, mounted) and GRUB's next boot to ONIE.
pub fn boot_into(host: &Path, onie_boot: &Path, mode: OnieMode) -> Result<(), OsError> {
    let env_path = onie_boot.join("grub/grubenv");
    let mut env = if env_path.exists() { GrubEnv::load(&env_path)? } else { GrubEnv::default() };
    env.set("onie_mode", mode.as_str());
    let bytes = env.render().map_err(|reason| OsError::EnvFull { path: env_path.clone(), reason })?;
    crate::state::fsutil::atomic_write(&env_path, &bytes)
        .map_err(|source| OsError::Write { path: env_path, source })?;
    edit_env(host, |env| env.set("next_entry", "ONIE"))
}

/// Mounts ONIE-BOOT at a private directory for `work`, and unmounts it after.
pub fn with_onie_boot<T>(work: impl FnOnce(&Path) -> Result<T, OsError>) -> Result<T, OsError> {
    use nix::mount::{mount, umount, MsFlags};
    let device = onie_boot_device().ok_or_else(|| {
        OsError::Onie("no partition is labelled ONIE-BOOT: this switch has no ONIE to boot into".into())
    })?;
    let dir = std::env::temp_dir().join(format!("soniclet-onie-boot.{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| OsError::Write { path: dir.clone(), source })?;
    mount(Some(&device), &dir, Some("ext4"), MsFlags::empty(), None::<&str>)
        .map_err(|e| OsError::Onie(format!("cannot mount {} at {}: {e}", device.display(), dir.display())))?;
    let result = work(&dir);
    let _ = umount(&dir);
    let _ = std::fs::remove_dir(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onies_mode_goes_to_onie_boot_and_the_one_shot_boot_to_onies_entry() {
        let host = tempfile::tempdir().unwrap();
        let onie = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(host.path().join("grub")).unwrap();
        let mut env = GrubEnv::default();
        env.set("saved_entry", "image-1");
        std::fs::write(host.path().join("grub/grubenv"), env.render().unwrap()).unwrap();
        boot_into(host.path(), onie.path(), OnieMode::Uninstall).unwrap();
        let onie_env = GrubEnv::load(&onie.path().join("grub/grubenv")).unwrap();
        assert_eq!(onie_env.get("onie_mode"), Some("uninstall"));
        let env = GrubEnv::load(&host.path().join("grub/grubenv")).unwrap();
        assert_eq!((env.get("next_entry"), env.get("saved_entry")), (Some("ONIE"), Some("image-1")));
    }
}
