//! Release manifests: the images a switch release runs, service by service, pinned by digest
//! (`soniclet upgrade --release FILE`; `cargo xtask images` writes the VS set's).
//!
//! ```toml
//! release = "vs-2"
//! [[service]]
//! name = "bgp"
//! image = "docker-fpm-frr:latest"
//! digest = "sha256:..."
//! archive = "docker-fpm-frr.tar"   # optional, relative to this file; else `image` is stored
//! warm = false                     # optional
//! ```
//!
//! A release is checked whole before anything is imported: an unknown service, a duplicate,
//! a malformed digest or an archive that is not there refuses it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::{ManifestSet, ServiceName};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseFile {
    release: String,
    #[serde(default, rename = "service")]
    services: Vec<EntryFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    name: String,
    image: String,
    digest: String,
    #[serde(default)]
    archive: Option<PathBuf>,
    #[serde(default)]
    warm: bool,
}

/// One service of a release (also in the release journal of `state.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseEntry {
    pub service: ServiceName,
    pub image: String,
    pub digest: String,
    /// Absolute.
    pub archive: Option<PathBuf>,
    pub warm: bool,
}

/// A checked release, its entries in the order they are applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub name: String,
    pub entries: Vec<ReleaseEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{}: {message}", file.display())]
    Invalid { file: PathBuf, message: String },
}

fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses and checks a release manifest against the switch's services. Entries come out in
/// the safe order: what depends on others first, the database last, so each upgrade
/// disturbs as little as possible and a failure stops before the services everything needs.
pub fn parse(file: &Path, text: &str, manifests: &ManifestSet) -> Result<Release, ReleaseError> {
    let invalid = |message: String| ReleaseError::Invalid { file: file.to_owned(), message };
    let parsed: ReleaseFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    if parsed.services.is_empty() {
        return Err(invalid("no [[service]] entries".to_owned()));
    }
    let base = file.parent().unwrap_or(Path::new("/"));
    let mut seen = BTreeSet::new();
    let mut entries = Vec::new();
    for (i, entry) in parsed.services.into_iter().enumerate() {
        let at = format!("service[{i}]");
        let Some(service) = manifests.lookup(&entry.name).cloned() else {
            return Err(invalid(format!("{at}.name: {}", manifests.unknown(&entry.name))));
        };
        if !seen.insert(service.clone()) {
            return Err(invalid(format!("{at}.name: {service} is listed twice")));
        }
        if !is_digest(&entry.digest) {
            return Err(invalid(format!("{at}.digest: {:?} is not sha256:<64 hex digits>", entry.digest)));
        }
        if entry.image.trim().is_empty() {
            return Err(invalid(format!("{at}.image: empty")));
        }
        let archive = entry.archive.map(|a| base.join(a));
        if let Some(archive) = &archive {
            if !archive.is_file() {
                return Err(invalid(format!("{at}.archive: {} does not exist", archive.display())));
            }
        }
        entries.push(ReleaseEntry { service, image: entry.image, digest: entry.digest, archive, warm: entry.warm });
    }
    let order = manifests.graph().start_order();
    let position = |name: &ServiceName| order.iter().position(|n| n == name).unwrap_or(0);
    entries.sort_by_key(|e| std::cmp::Reverse(position(&e.service)));
    Ok(Release { name: parsed.release, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifests() -> ManifestSet {
        crate::manifest::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("services")).unwrap()
    }

    const D: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn entry(name: &str) -> String {
        format!("[[service]]\nname = \"{name}\"\nimage = \"x:1\"\ndigest = \"{D}\"\n")
    }

    #[test]
    fn orders_dependents_first_and_refuses_bad_entries() {
        let m = manifests();
        let file = Path::new("/tmp/release.toml");
        let text = format!("release = \"r\"\n{}{}{}", entry("database"), entry("bgp"), entry("swss"));
        let release = parse(file, &text, &m).unwrap();
        let order: Vec<&str> = release.entries.iter().map(|e| e.service.as_str()).collect();
        assert_eq!(order.last(), Some(&"database"));
        assert!(order.iter().position(|s| *s == "bgp") < order.iter().position(|s| *s == "swss"));

        let err = |text: String| parse(file, &text, &m).unwrap_err().to_string();
        let e = err(format!("release = \"r\"\n{}", entry("nosuch")));
        assert!(e.contains("service[0].name") && e.contains("nosuch") && e.contains("/tmp/release.toml"), "{e}");
        let e = err(format!("release = \"r\"\n{}{}", entry("bgp"), entry("bgp")));
        assert!(e.contains("service[1].name") && e.contains("twice"), "{e}");
        let e = err(format!("release = \"r\"\n{}", entry("bgp").replace(D, "sha256:12")));
        assert!(e.contains("service[0].digest"), "{e}");
        let e = err(format!("release = \"r\"\n{}archive = \"missing.tar\"\n", entry("bgp")));
        assert!(e.contains("service[0].archive") && e.contains("/tmp/missing.tar"), "{e}");
        let e = err(format!("release = \"r\"\nbogus = 1\n{}", entry("bgp")));
        assert!(e.contains("bogus"), "{e}");
        assert!(err("release = \"r\"\n".to_owned()).contains("no [[service]]"));
    }
}
