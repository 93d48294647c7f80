//! The daemon's desired state on disk: which services an operator started or stopped, and
//! each service's container generation. Written atomically on every change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::atomic_write;

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    pub version: u32,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeJournal>,
}

impl Default for PersistedState {
    fn default() -> Self {
        Self { version: STATE_VERSION, services: BTreeMap::new(), change: None }
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

/// The state directory and the state loaded from it.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    state: PersistedState,
}

impl StateStore {
    /// Loads the state of `dir`; a missing file is the empty state, a corrupt one an error.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let mut store = Self { dir: dir.to_owned(), state: PersistedState::default() };
        store.state = store.load()?;
        Ok(store)
    }

    pub fn state(&self) -> &PersistedState {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut PersistedState {
        &mut self.state
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    fn load(&self) -> Result<PersistedState, StoreError> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PersistedState::default()),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let state: PersistedState = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt { path: path.clone(), message: e.to_string() })?;
        if state.version != STATE_VERSION {
            return Err(StoreError::Corrupt { path, message: format!("unsupported version {}", state.version) });
        }
        Ok(state)
    }

    /// Forgets every operator's start and stop: the manifests and FEATURE decide again.
    /// Generations are kept, so container generations are never reused.
    pub fn forget_desires(&mut self) {
        for record in self.state.services.values_mut() {
            record.desired = None;
        }
    }

    /// Writes the current state atomically.
    pub fn save(&self) -> Result<(), StoreError> {
        let path = self.path();
        let bytes = serde_json::to_vec_pretty(&self.state).expect("state serialises");
        atomic_write(&path, &bytes).map_err(|source| StoreError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.state(), &PersistedState::default());
        let record = ServiceRecord { desired: Some(Desired::Stopped), generation: 3, ..Default::default() };
        store.state_mut().services.insert("bgp".into(), record.clone());
        store.save().unwrap();
        assert_eq!(StateStore::open(dir.path()).unwrap().state().services["bgp"], record);
        std::fs::write(dir.path().join("state.json"), "{\"version\": 1, \"services\": {\"bgp\": {\"bogus\": 1}}}")
            .unwrap();
        let err = StateStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("state.json") && err.contains("corrupt"), "{err}");
    }
}
