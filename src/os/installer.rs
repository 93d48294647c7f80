//! The installer file `cargo xtask onie` builds, read the way `soniclet os install` needs it:
//! the sh header's `payload_offset=` and `payload_sha256=`, then the tar payload from that
//! byte on. The digest is checked over the whole payload before anything is written, and so
//! is the detached ed25519 signature of a signed image.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::signature::{self, SignatureError};

/// The header is a few hundred bytes; these are plenty to find its two variables.
const HEADER_SCAN: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum InstallerError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a soniclet installer: {reason}")]
    NotInstaller { path: PathBuf, reason: String },
    #[error("{path} is damaged or truncated: its payload's SHA-256 is {actual}, not {expected}; nothing was changed")]
    Digest { path: PathBuf, expected: String, actual: String },
    #[error("{path}: {source}")]
    Signature { path: PathBuf, source: SignatureError },
    #[error("{path}'s payload lacks {entry}")]
    Missing { path: PathBuf, entry: String },
}

/// An installer whose header was read.
#[derive(Debug, Clone)]
pub struct Installer {
    pub path: PathBuf,
    /// Where the payload starts, in bytes.
    pub offset: u64,
    pub sha256: String,
    pub payload_bytes: u64,
}

fn header_var<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix('=')).map(str::trim)
}

impl Installer {
    pub fn open(path: &Path) -> Result<Self, InstallerError> {
        let read = |source| InstallerError::Read { path: path.to_owned(), source };
        let not = |reason: &str| InstallerError::NotInstaller { path: path.to_owned(), reason: reason.to_owned() };
        let mut file = std::fs::File::open(path).map_err(read)?;
        let len = file.metadata().map_err(read)?.len();
        let mut head = Vec::with_capacity(HEADER_SCAN);
        file.by_ref().take(HEADER_SCAN as u64).read_to_end(&mut head).map_err(read)?;
        let text = String::from_utf8_lossy(&head);
        if !text.starts_with("#!/bin/sh") {
            return Err(not("it does not start with #!/bin/sh"));
        }
        // `tail -c +N` counts from 1.
        let offset: u64 = header_var(&text, "payload_offset")
            .and_then(|v| v.parse().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| not("its header has no payload_offset="))?;
        let offset = offset - 1;
        let sha256 = header_var(&text, "payload_sha256")
            .filter(|v| v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| not("its header has no payload_sha256="))?
            .to_ascii_lowercase();
        if offset > len {
            return Err(not(&format!("it is {len} bytes, shorter than its header says ({offset})")));
        }
        Ok(Self { path: path.to_owned(), offset, sha256, payload_bytes: len - offset })
    }

    fn payload(&self) -> Result<std::io::Take<std::fs::File>, InstallerError> {
        let read = |source| InstallerError::Read { path: self.path.clone(), source };
        let mut file = std::fs::File::open(&self.path).map_err(read)?;
        file.seek(SeekFrom::Start(self.offset)).map_err(read)?;
        Ok(file.take(self.payload_bytes))
    }

    /// Checks the payload's SHA-256, then (with a key) its signature, `<path>.sig`.
    /// `progress` gets the bytes read so far.
    pub fn verify(&self, key: Option<&signature::PublicKey>, progress: &dyn Fn(u64)) -> Result<(), InstallerError> {
        let mut payload = self.payload()?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let n =
                payload.read(&mut buf).map_err(|source| InstallerError::Read { path: self.path.clone(), source })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            done += n as u64;
            progress(done);
        }
        let actual = hex::encode(hasher.finalize());
        if actual != self.sha256 {
            return Err(InstallerError::Digest { path: self.path.clone(), expected: self.sha256.clone(), actual });
        }
        if let Some(key) = key {
            signature::verify(key, &self.sha256, &signature_path(&self.path))
                .map_err(|source| InstallerError::Signature { path: self.path.clone(), source })?;
        }
        Ok(())
    }

    /// The payload's entries, in order, until `visit` answers false; `visit` gets each
    /// path and its reader.
    pub fn entries(
        &self,
        mut visit: impl FnMut(&str, &mut dyn Read) -> Result<bool, InstallerError>,
    ) -> Result<(), InstallerError> {
        let read = |source| InstallerError::Read { path: self.path.clone(), source };
        let mut archive = tar::Archive::new(self.payload()?);
        for entry in archive.entries().map_err(read)? {
            let mut entry = entry.map_err(read)?;
            let name = entry.path().map_err(read)?.to_string_lossy().into_owned();
            if !visit(&name, &mut entry)? {
                break;
            }
        }
        Ok(())
    }

    /// What the payload says of itself (`installer/version`, `installer/platforms`), which
    /// comes first in it.
    pub fn metadata(&self) -> Result<Metadata, InstallerError> {
        let (mut version, mut platforms) = (None, None);
        self.entries(|name, reader| {
            let Some(file) = name.strip_prefix("installer/") else { return Ok(false) };
            if file == "version" || file == "platforms" {
                let mut text = String::new();
                reader
                    .take(1 << 20)
                    .read_to_string(&mut text)
                    .map_err(|source| InstallerError::Read { path: self.path.clone(), source })?;
                if file == "version" {
                    version = Some(text.trim().to_owned());
                } else {
                    platforms =
                        Some(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect());
                }
            }
            Ok(true)
        })?;
        let missing = |entry: &str| InstallerError::Missing { path: self.path.clone(), entry: entry.to_owned() };
        let version: String = version.ok_or_else(|| missing("installer/version"))?;
        if !super::valid_version(&version) {
            return Err(InstallerError::NotInstaller {
                path: self.path.clone(),
                reason: format!("its version {version:?} is not letters, digits, '.', '_' and '-'"),
            });
        }
        Ok(Metadata { version, platforms: platforms.ok_or_else(|| missing("installer/platforms"))? })
    }
}

/// What an installer's payload says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub version: String,
    /// The `onie_platform` names it supports.
    pub platforms: Vec<String>,
}

/// Where a signed installer's detached signature sits.
pub fn signature_path(installer: &Path) -> PathBuf {
    let mut name = installer.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}
