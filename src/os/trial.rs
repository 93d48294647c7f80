//! A new image's trial, as the bootloader and `/host` hold it. `os install` sets GRUB's
//! one-shot `next_entry` and the marker `soniclet_trial` to the new image; GRUB spends the
//! one-shot on the next boot, so every boot after it starts `saved_entry` again unless
//! soniclet commits the image first. What the supervisor decides with it (commit when
//! healthy, fail at the deadline) is in `supervisor::trial`; this reads and writes the files.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::grubenv::GrubEnv;
use super::{OsError, IMAGE_PREFIX};

/// grubenv: the image on trial, until it is committed or its failure is recorded.
pub const TRIAL: &str = "soniclet_trial";
/// grubenv: the trial's deadline in seconds from soniclet's start.
pub const TRIAL_DEADLINE: &str = "soniclet_trial_deadline";
/// What an image's trial came to, `/host/image-<version>/trial.json`.
pub const RECORD: &str = "trial.json";

/// What this boot is, for the trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootStatus {
    /// No trial: the image running is committed (or the switch has no images).
    Settled,
    /// This boot is the image's trial; it must be healthy within `deadline`.
    OnTrial { image: String, deadline: Duration },
    /// An image's trial boot ended without a commit: the switch is back on `booted`.
    FellBack { image: String, booted: Option<String> },
}

/// The trial as the environment block and the running kernel show it (pure).
pub fn boot_status(env: &GrubEnv, booted: Option<&str>, default_deadline: Duration) -> BootStatus {
    let Some(image) = env.get(TRIAL).filter(|i| i.starts_with(IMAGE_PREFIX)) else { return BootStatus::Settled };
    if booted == Some(image) {
        let deadline =
            env.get(TRIAL_DEADLINE).and_then(|s| s.parse().ok()).map_or(default_deadline, Duration::from_secs);
        return BootStatus::OnTrial { image: image.to_owned(), deadline };
    }
    // Installed but not booted yet: the one-shot entry still names it.
    if env.get("next_entry") == Some(image) {
        return BootStatus::Settled;
    }
    BootStatus::FellBack { image: image.to_owned(), booted: booted.map(str::to_owned) }
}

/// What an image's trial came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TrialRecord {
    pub result: TrialResult,
    pub reason: String,
    /// Seconds since the epoch.
    pub at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrialResult {
    Committed,
    Failed,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn read_record(host: &Path, image: &str) -> Option<TrialRecord> {
    let text = std::fs::read_to_string(host.join(image).join(RECORD)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_record(host: &Path, image: &str, result: TrialResult, reason: &str) -> Result<(), OsError> {
    let record = TrialRecord { result, reason: reason.to_owned(), at: now_secs() };
    let path = host.join(image).join(RECORD);
    let bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
    crate::state::fsutil::atomic_write(&path, &bytes).map_err(|source| OsError::Write { path, source })
}

/// The trial succeeded: `image` becomes the default and the marker goes.
pub fn commit(host: &Path, image: &str) -> Result<(), OsError> {
    write_record(host, image, TrialResult::Committed, "healthy: SYSTEM_READY UP, every enabled service ready")?;
    super::edit_env(host, |env| {
        env.set("saved_entry", image);
        env.remove(TRIAL);
        env.remove(TRIAL_DEADLINE);
    })
}

/// The trial boot failed, for `reason`: the record says why, for the image GRUB boots next
/// (the marker stays until that image's soniclet reads it).
pub fn fail(host: &Path, image: &str, reason: &str) -> Result<(), OsError> {
    write_record(host, image, TrialResult::Failed, reason)
}

/// On the image the switch fell back to: records the failure (unless the trial boot
/// recorded its own reason) and clears the marker. Answers the reason.
pub fn settle_fallback(host: &Path, image: &str, booted: Option<&str>) -> Result<String, OsError> {
    let reason = match read_record(host, image) {
        Some(record) if record.result == TrialResult::Failed => record.reason,
        _ => {
            let reason = format!(
                "its trial boot ended before soniclet found it healthy (a kernel panic, a hang, a crash or a reboot); {} booted instead",
                booted.unwrap_or("another image")
            );
            if host.join(image).is_dir() {
                write_record(host, image, TrialResult::Failed, &reason)?;
            }
            reason
        }
    };
    super::edit_env(host, |env| {
        env.remove(TRIAL);
        env.remove(TRIAL_DEADLINE);
        if env.get("next_entry") == Some(image) {
            env.remove("next_entry");
        }
    })?;
    Ok(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> GrubEnv {
        let mut env = GrubEnv::default();
        for (name, value) in vars {
            env.set(name, value);
        }
        env
    }

    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn a_boot_is_on_trial_settled_or_fallen_back_by_the_marker_the_one_shot_and_the_running_image() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, BootStatus);
        let cases: &[Case] = &[
            (&[("saved_entry", "image-1")], Some("image-1"), BootStatus::Settled),
            (
                &[("saved_entry", "image-1"), (TRIAL, "image-2"), (TRIAL_DEADLINE, "90")],
                Some("image-2"),
                BootStatus::OnTrial { image: "image-2".into(), deadline: Duration::from_secs(90) },
            ),
            (
                &[(TRIAL, "image-2")],
                Some("image-2"),
                BootStatus::OnTrial { image: "image-2".into(), deadline: FIVE_MIN },
            ),
            // Installed, not rebooted yet.
            (&[(TRIAL, "image-2"), ("next_entry", "image-2")], Some("image-1"), BootStatus::Settled),
            // GRUB spent the one-shot, and the switch is back on image-1.
            (
                &[("saved_entry", "image-1"), (TRIAL, "image-2")],
                Some("image-1"),
                BootStatus::FellBack { image: "image-2".into(), booted: Some("image-1".into()) },
            ),
            (&[(TRIAL, "not-an-image")], Some("image-1"), BootStatus::Settled),
        ];
        for (vars, booted, want) in cases {
            assert_eq!(&boot_status(&env(vars), *booted, FIVE_MIN), want, "{vars:?} booted {booted:?}");
        }
    }
}
