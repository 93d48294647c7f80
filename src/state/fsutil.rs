//! Crash-safe file writes and versioned JSON files.
//!
//! A write goes to a temporary file, is fsynced, renamed over the target, and the directory
//! fsynced: a `kill -9` or power loss at any point leaves either the old or the new file.
//! The daemon's JSON files carry a `version`; reading one is strict (unknown fields refused),
//! a missing file is no file, and a corrupt one or another version is an error naming it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Atomically replaces `path` with `bytes`.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    atomic_write_mode(path, bytes, 0o666)
}

/// Atomically replaces `path` with `bytes`, created with `mode` (less the umask) from the
/// start: a secret is never readable by others, not even as the temporary file.
pub fn atomic_write_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Unique across processes that share the directory but not a PID namespace (two
    // containers' bgpcfgd, both PID 19, writing one mounted frr.conf).
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{file_name}.tmp.{}.{nanos}", std::process::id()));
    {
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// A JSON file of the state directory, versioned.
pub trait Versioned: Serialize + DeserializeOwned {
    const VERSION: u32;
    fn version(&self) -> u32;
}

/// Why a versioned file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is corrupt ({message})", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads `path`: `None` when it does not exist.
pub fn read_versioned<T: Versioned>(path: &Path) -> Result<Option<T>, FileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(FileError::Read { path: path.to_owned(), source }),
    };
    let value: T = serde_json::from_str(&text)
        .map_err(|e| FileError::Corrupt { path: path.to_owned(), message: e.to_string() })?;
    if value.version() != T::VERSION {
        let message = format!("unsupported version {}", value.version());
        return Err(FileError::Corrupt { path: path.to_owned(), message });
    }
    Ok(Some(value))
}

/// Writes `value` to `path` atomically.
pub fn write_versioned<T: Versioned>(path: &Path, value: &T) -> Result<(), FileError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| FileError::Write { path: path.to_owned(), source: std::io::Error::other(e) })?;
    atomic_write(path, &bytes).map_err(|source| FileError::Write { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        version: u32,
        n: u32,
    }

    impl Versioned for Sample {
        const VERSION: u32 = 2;
        fn version(&self) -> u32 {
            self.version
        }
    }

    #[test]
    fn versioned_files_are_missing_valid_or_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        assert!(read_versioned::<Sample>(&path).unwrap().is_none());
        write_versioned(&path, &Sample { version: 2, n: 7 }).unwrap();
        assert_eq!(read_versioned::<Sample>(&path).unwrap(), Some(Sample { version: 2, n: 7 }));
        std::fs::write(&path, r#"{"version": 1, "n": 7}"#).unwrap();
        assert!(read_versioned::<Sample>(&path).unwrap_err().to_string().contains("unsupported version 1"));
        std::fs::write(&path, r#"{"version": 2, "n": 7, "extra": 0}"#).unwrap();
        assert!(matches!(read_versioned::<Sample>(&path), Err(FileError::Corrupt { .. })));
    }
}
