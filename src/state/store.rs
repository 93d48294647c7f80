//! The daemon's desired state on disk: which services an operator started or stopped, each
//! service's container generation and image pins, and the journals of the image change and
//! the release in flight. The supervisor's core owns it in memory; this module reads it at
//! start and writes it whole, atomically, whenever the core asks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil::{read_versioned, write_versioned, FileError, Versioned};
use crate::images::release::Release;

const STATE_FILE: &str = "state.json";
const STATE_VERSION: u32 = 1;

/// What an operator asked for a service, overriding its manifest's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    Running,
    Stopped,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecord {
    /// `None`: the manifest's default applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<Desired>,
    /// The generation of the newest container created for the service; never reused.
    #[serde(default)]
    pub generation: u64,
    /// The image the service runs, once an upgrade or rollback chose it; `None`: the
    /// manifest's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImagePin>,
    /// The image it ran before, for `soniclet rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ImagePin>,
}

/// An image by name and digest. The name is soniclet's own record (`repo@sha256:...`), so it
/// stays stored and unchanged whatever is imported later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePin {
    pub reference: String,
    pub digest: String,
}

/// Which images a service runs: what an upgrade changes and a rollback restores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePins {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImagePin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ImagePin>,
}

/// Why an image change was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Upgrade,
    Rollback,
}

/// Where an image change stands; written before the step it names begins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ChangeStep {
    /// The new rootfs and spec are being prepared; the running service is untouched.
    Preparing,
    /// The pins name the new image: the old container goes, the new one starts and must
    /// pass the gate (ready within the timeout, then alive for the settle window).
    Switching,
    /// The gate failed; the pins name the old image again, which must come back ready.
    RollingBack { reason: String },
}

/// The journal of the one image change in flight (`soniclet upgrade` or `rollback`). A
/// daemon that finds it at start completes the change or rolls it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeJournal {
    pub service: String,
    pub kind: ChangeKind,
    pub step: ChangeStep,
    pub from: ImagePin,
    pub to: ImagePin,
    /// The service's pins before the change, restored by a rollback.
    pub before: ImagePins,
    /// The rootfs prepared for the new container.
    pub rootfs: String,
    pub warm: bool,
    pub timeout_secs: u64,
    pub settle_secs: u64,
    /// Unix time in milliseconds.
    pub started_ms: u64,
}

/// The journal of the release upgrade in flight (`soniclet upgrade --release`): which of its
/// services is next, and how the ones before went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseJournal {
    pub release: Release,
    /// The entry being applied, or next.
    pub next: usize,
    /// The entry at `next` began its change (a daemon that finds no change journal with it
    /// begins it again).
    pub in_change: bool,
    /// The services that ran ready when the release began, with the digest they ran.
    pub running: BTreeMap<String, String>,
    pub timeout_secs: Option<u64>,
    pub settle_secs: Option<u64>,
    pub upgraded: Vec<String>,
    pub unchanged: Vec<String>,
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    pub version: u32,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeJournal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseJournal>,
}

impl Default for PersistedState {
    fn default() -> Self {
        Self { version: STATE_VERSION, services: BTreeMap::new(), change: None, release: None }
    }
}

impl Versioned for PersistedState {
    const VERSION: u32 = STATE_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
}

impl PersistedState {
    /// Forgets every operator's start and stop: the manifests and FEATURE decide again.
    /// Generations are kept, so container generations are never reused.
    pub fn forget_desires(&mut self) {
        for record in self.services.values_mut() {
            record.desired = None;
        }
    }
}

impl ServiceRecord {
    pub fn pins(&self) -> ImagePins {
        ImagePins { image: self.image.clone(), previous: self.previous.clone() }
    }

    pub fn set_pins(&mut self, pins: ImagePins) {
        self.image = pins.image;
        self.previous = pins.previous;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read the state file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state file {} is corrupt ({message}); move it aside to start from the manifests' defaults", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write the state file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The state file of a state directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StoreError {
    fn of(e: FileError) -> Self {
        match e {
            FileError::Read { path, source } => Self::Read { path, source },
            FileError::Corrupt { path, message } => Self::Corrupt { path, message },
            FileError::Write { path, source } => Self::Write { path, source },
        }
    }
}

impl StateStore {
    /// The store of `dir`, and the state in it: a missing file is the empty state, a
    /// corrupt one an error.
    pub fn open(dir: &Path) -> Result<(Self, PersistedState), StoreError> {
        let store = Self { dir: dir.to_owned() };
        let state = read_versioned(&store.path()).map_err(StoreError::of)?.unwrap_or_default();
        Ok((store, state))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Writes `state` atomically.
    pub fn write(&self, state: &PersistedState) -> Result<(), StoreError> {
        write_versioned(&self.path(), state).map_err(StoreError::of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut state) = StateStore::open(dir.path()).unwrap();
        assert_eq!(state, PersistedState::default());
        let record = ServiceRecord { desired: Some(Desired::Stopped), generation: 3, ..Default::default() };
        state.services.insert("bgp".into(), record.clone());
        store.write(&state).unwrap();
        assert_eq!(StateStore::open(dir.path()).unwrap().1.services["bgp"], record);
        std::fs::write(dir.path().join("state.json"), "{\"version\": 1, \"services\": {\"bgp\": {\"bogus\": 1}}}")
            .unwrap();
        let err = StateStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("state.json") && err.contains("corrupt"), "{err}");
    }
}
