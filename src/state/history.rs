//! The record of every image change (upgrade and rollback), for `soniclet history`.
//!
//! One file in the state directory, rewritten atomically when a change ends, keeping the
//! newest [`KEEP`] entries. The entries are also the API's answer, so they are read
//! tolerantly there; the file around them is strict.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil::{read_versioned, write_versioned, FileError, Versioned};
use super::store::{ChangeKind, ImagePin};

const HISTORY_FILE: &str = "history.json";
const HISTORY_VERSION: u32 = 1;
/// Entries kept, over all services.
const KEEP: usize = 500;

/// How an image change ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeResult {
    /// The new image passed the gate and serves.
    Succeeded,
    /// The new image failed the gate; the old one serves again.
    RolledBack,
    /// Stopped before the running service was touched.
    Aborted,
}

impl ChangeResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeResult::Succeeded => "succeeded",
            ChangeResult::RolledBack => "rolled back",
            ChangeResult::Aborted => "aborted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub service: String,
    pub action: ChangeKind,
    pub from: ImagePin,
    pub to: ImagePin,
    /// RFC 3339, with milliseconds.
    pub started: String,
    pub finished: String,
    pub result: ChangeResult,
    /// From the old container's stop to a container ready again (the new one, or after a
    /// rollback the old image's).
    #[serde(default)]
    pub downtime_ms: Option<u64>,
    /// After a failed gate: from the failure to the old image ready again.
    #[serde(default)]
    pub recovery_ms: Option<u64>,
    /// Why it was rolled back or aborted.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryFile {
    version: u32,
    entries: Vec<HistoryEntry>,
}

impl Versioned for HistoryFile {
    const VERSION: u32 = HISTORY_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is corrupt ({message}); move it aside to start a new history", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(HISTORY_FILE)
}

impl HistoryError {
    fn of(e: FileError) -> Self {
        match e {
            FileError::Read { path, source } => Self::Read { path, source },
            FileError::Corrupt { path, message } => Self::Corrupt { path, message },
            FileError::Write { path, source } => Self::Write { path, source },
        }
    }
}

/// Every entry, oldest first.
pub fn load(state_dir: &Path) -> Result<Vec<HistoryEntry>, HistoryError> {
    let file: Option<HistoryFile> = read_versioned(&path(state_dir)).map_err(HistoryError::of)?;
    Ok(file.map(|f| f.entries).unwrap_or_default())
}

/// Appends `entry`, dropping the oldest beyond [`KEEP`]. A corrupt file is moved aside
/// (`history.json.corrupt`) rather than losing the new entry.
/// Adds an entry to the newest end, keeping the last [`KEEP`]. A daemon killed after
/// recording an outcome but before clearing the journal resumes the change and records it
/// again: the later word on the same change replaces the first.
pub fn record(entries: &mut Vec<HistoryEntry>, entry: HistoryEntry) {
    let same_change = |e: &HistoryEntry| {
        e.service == entry.service && e.started == entry.started && e.action == entry.action && e.to == entry.to
    };
    if entries.last().is_some_and(same_change) {
        entries.pop();
    }
    entries.push(entry);
    let excess = entries.len().saturating_sub(KEEP);
    entries.drain(..excess);
}

pub fn append(state_dir: &Path, entry: HistoryEntry) -> Result<(), HistoryError> {
    let mut entries = match load(state_dir) {
        Ok(entries) => entries,
        Err(HistoryError::Corrupt { path, message }) => {
            tracing::error!(file = %path.display(), message, "history file corrupt; moved aside");
            let _ = std::fs::rename(&path, path.with_extension("json.corrupt"));
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    record(&mut entries, entry);
    let file = HistoryFile { version: HISTORY_VERSION, entries };
    write_versioned(&path(state_dir), &file).map_err(HistoryError::of)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(service: &str) -> HistoryEntry {
        let pin = |d: &str| ImagePin { reference: format!("img@{d}"), digest: d.to_owned() };
        HistoryEntry {
            service: service.to_owned(),
            action: ChangeKind::Upgrade,
            from: pin("sha256:a"),
            to: pin("sha256:b"),
            started: "2026-01-01T00:00:00.000Z".to_owned(),
            finished: "2026-01-01T00:00:01.000Z".to_owned(),
            result: ChangeResult::RolledBack,
            downtime_ms: Some(120),
            recovery_ms: Some(90),
            reason: Some("exited with code 3".to_owned()),
        }
    }

    #[test]
    fn append_keeps_the_newest_and_survives_corruption() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        for i in 0..KEEP + 3 {
            append(dir.path(), entry(&format!("s{i}"))).unwrap();
        }
        let entries = load(dir.path()).unwrap();
        assert_eq!(entries.len(), KEEP);
        assert_eq!(entries[0].service, "s3");
        std::fs::write(dir.path().join(HISTORY_FILE), "{\"version\": 1, \"entries\": [], \"x\": 1}").unwrap();
        assert!(load(dir.path()).unwrap_err().to_string().contains("history.json"));
        append(dir.path(), entry("bgp")).unwrap();
        assert_eq!(load(dir.path()).unwrap().len(), 1);
        assert!(dir.path().join("history.json.corrupt").exists());
    }

    #[test]
    fn a_change_recorded_twice_is_one_entry_with_the_later_word() {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), entry("bgp")).unwrap();
        let again = HistoryEntry { finished: "2026-01-01T00:00:09.000Z".to_owned(), ..entry("bgp") };
        append(dir.path(), again).unwrap();
        let entries = load(dir.path()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].finished, "2026-01-01T00:00:09.000Z");
        let next = HistoryEntry { started: "2026-01-01T00:01:00.000Z".to_owned(), ..entry("bgp") };
        append(dir.path(), next).unwrap();
        assert_eq!(load(dir.path()).unwrap().len(), 2);
    }
}
