//! Image archives: OCI image-layout tars and `docker save` tars, each optionally gzipped
//! (SONiC ships `docker-*.gz`).
//!
//! An archive is read once into a private staging directory, hashing every file on the way;
//! then its structure is checked: every blob present with the digest and size that reference
//! it, configs parse, the platform matches this host. Only a fully verified archive reaches
//! the runtime, so a corrupt or truncated file never leaves half an image behind.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::ImageConfig;

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot open image archive {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image archive {} is corrupt or truncated: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("{} is neither an OCI image layout nor a docker save archive (no index.json or manifest.json)", path.display())]
    UnknownFormat { path: PathBuf },
    #[error("image archive {} has an unsafe entry {entry:?}", path.display())]
    UnsafeEntry { path: PathBuf, entry: String },
    #[error("image archive {} lacks blob {digest} (referenced by {referrer})", path.display())]
    MissingBlob { path: PathBuf, digest: String, referrer: String },
    #[error("image archive {}: {entry} has digest {actual}, expected {expected}", path.display())]
    DigestMismatch { path: PathBuf, entry: String, expected: String, actual: String },
    #[error("image archive {}: {entry} has {actual} bytes, expected {expected}", path.display())]
    SizeMismatch { path: PathBuf, entry: String, expected: u64, actual: u64 },
    #[error("image archive {}: {entry} is not valid: {message}", path.display())]
    BadJson { path: PathBuf, entry: String, message: String },
    #[error("image {image} in {} is for {os}/{architecture}, this host runs linux/{host}", path.display())]
    WrongPlatform { path: PathBuf, image: String, os: String, architecture: String, host: String },
    #[error("image archive {} holds no image for linux/{host}", path.display())]
    NoImages { path: PathBuf, host: String },
    #[error("image archive {}: an image has no name (set io.containerd.image.name or RepoTags)", path.display())]
    NoName { path: PathBuf },
    #[error("cannot write to the staging directory {}", path.display())]
    Staging {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A verified file of the archive, on disk in the staging directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    pub path: PathBuf,
}

/// One verified image of an archive.
#[derive(Debug, Clone)]
pub struct StagedImage {
    pub name: String,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// Digests of the uncompressed layers, from the image config.
    pub diff_ids: Vec<String>,
    pub architecture: String,
    pub os: String,
    pub image_config: ImageConfig,
}

impl StagedImage {
    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids(&self.diff_ids)
    }

    pub fn total_size(&self) -> u64 {
        self.manifest.size + self.config.size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

/// A verified archive. The staging directory goes away with it.
#[derive(Debug)]
pub struct StagedArchive {
    pub source: PathBuf,
    pub images: Vec<StagedImage>,
    dir: PathBuf,
}

impl Drop for StagedArchive {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// containerd's chain IDs: `chain(0) = diff(0)`, `chain(n) = sha256(chain(n-1) + " " + diff(n))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{parent} {diff}")))),
        };
        out.push(next);
    }
    out
}

/// The OCI architecture name of this host.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

struct Entry {
    digest: String,
    size: u64,
    staged: PathBuf,
}

/// Reads `path` into a fresh directory under `staging_root` and verifies it.
pub fn stage(path: &Path, staging_root: &Path) -> Result<StagedArchive, ArchiveError> {
    let open_err = |source| ArchiveError::Open { path: path.to_owned(), source };
    let mut file = File::open(path).map_err(open_err)?;
    let mut magic = [0u8; 2];
    let gzipped = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = File::open(path).map_err(open_err)?;
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };

    let dir = staging_root.join(format!("import-{}-{}", std::process::id(), unique_suffix()));
    std::fs::create_dir_all(&dir).map_err(|source| ArchiveError::Staging { path: dir.clone(), source })?;
    let mut staged = StagedArchive { source: path.to_owned(), images: Vec::new(), dir };
    let entries = extract(path, reader, &staged.dir)?;
    staged.images = verify(path, &staged.dir, &entries)?;
    Ok(staged)
}

fn unique_suffix() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{nanos:x}")
}

fn corrupt(path: &Path, message: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Corrupt { path: path.to_owned(), message: message.to_string() }
}

/// Normalises a tar entry name; refuses absolute paths and `..`.
fn entry_name(path: &Path, raw: &Path) -> Result<String, ArchiveError> {
    let mut parts = Vec::new();
    for component in raw.components() {
        match component {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return Err(ArchiveError::UnsafeEntry { path: path.to_owned(), entry: raw.display().to_string() }),
        }
    }
    Ok(parts.join("/"))
}

fn extract(path: &Path, reader: Box<dyn Read>, dir: &Path) -> Result<BTreeMap<String, Entry>, ArchiveError> {
    let mut archive = tar::Archive::new(reader);
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    let mut links: Vec<(String, String)> = Vec::new();
    let iter = archive.entries().map_err(|e| corrupt(path, e))?;
    for (index, entry) in iter.enumerate() {
        let mut entry = entry.map_err(|e| corrupt(path, e))?;
        let raw = entry.path().map_err(|e| corrupt(path, e))?.into_owned();
        let name = entry_name(path, &raw)?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Ok(Some(target)) = entry.link_name() {
                let target = if kind.is_symlink() {
                    // Symlinks are relative to the link's directory.
                    let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                    normalise(&base.join(target))
                } else {
                    entry_name(path, &target)?
                };
                links.push((name, target));
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let staged = dir.join(format!("{index:06}"));
        let mut out = File::create(&staged).map_err(|source| ArchiveError::Staging { path: staged.clone(), source })?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = entry.read(&mut buf).map_err(|e| corrupt(path, format!("{name}: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|source| ArchiveError::Staging { path: staged.clone(), source })?;
            size += n as u64;
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        files.insert(name, Entry { digest, size, staged });
    }
    for (name, target) in links {
        if let Some(found) = files.get(&target) {
            let entry = Entry { digest: found.digest.clone(), size: found.size, staged: found.staged.clone() };
            files.insert(name, entry);
        }
    }
    Ok(files)
}

fn normalise(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(x) => parts.push(x.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, name: &str, entry: &Entry) -> Result<T, ArchiveError> {
    let file =
        File::open(&entry.staged).map_err(|source| ArchiveError::Staging { path: entry.staged.clone(), source })?;
    serde_json::from_reader(BufReader::new(file)).map_err(|e| ArchiveError::BadJson {
        path: path.to_owned(),
        entry: name.to_owned(),
        message: e.to_string(),
    })
}

fn verify(path: &Path, dir: &Path, files: &BTreeMap<String, Entry>) -> Result<Vec<StagedImage>, ArchiveError> {
    if files.contains_key("index.json") {
        verify_oci(path, files)
    } else if files.contains_key("manifest.json") {
        verify_docker(path, dir, files)
    } else {
        Err(ArchiveError::UnknownFormat { path: path.to_owned() })
    }
}

/// Finds `blobs/<alg>/<hex>` for `digest` and checks that its content hashes to it.
fn blob<'a>(
    path: &Path,
    files: &'a BTreeMap<String, Entry>,
    digest: &str,
    size: Option<u64>,
    referrer: &str,
) -> Result<&'a Entry, ArchiveError> {
    let name = format!("blobs/{}", digest.replacen(':', "/", 1));
    let entry = files.get(&name).ok_or_else(|| ArchiveError::MissingBlob {
        path: path.to_owned(),
        digest: digest.to_owned(),
        referrer: referrer.to_owned(),
    })?;
    if entry.digest != digest {
        return Err(ArchiveError::DigestMismatch {
            path: path.to_owned(),
            entry: name,
            expected: digest.to_owned(),
            actual: entry.digest.clone(),
        });
    }
    if let Some(expected) = size {
        if expected != entry.size {
            return Err(ArchiveError::SizeMismatch {
                path: path.to_owned(),
                entry: name,
                expected,
                actual: entry.size,
            });
        }
    }
    Ok(entry)
}

fn as_blob(entry: &Entry, media_type: &str) -> Blob {
    Blob {
        digest: entry.digest.clone(),
        size: entry.size,
        media_type: media_type.to_owned(),
        path: entry.staged.clone(),
    }
}

fn image_config_of(config: &ImageConfiguration) -> ImageConfig {
    let c = config.config().clone().unwrap_or_default();
    ImageConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().unwrap_or_default(),
        user: c.user().clone().unwrap_or_default(),
    }
}

/// Checks the config's platform and layer count; returns its diff IDs, or `None` for an
/// image of another platform (remembered in `wrong_platform`, the error if nothing else fits).
fn check_config(
    path: &Path,
    name: &str,
    config: &ImageConfiguration,
    layer_count: usize,
    wrong_platform: &mut Option<ArchiveError>,
) -> Result<Option<Vec<String>>, ArchiveError> {
    let arch = config.architecture().to_string();
    let os = config.os().to_string();
    let host = host_architecture();
    if arch != host || os != "linux" {
        *wrong_platform = Some(ArchiveError::WrongPlatform {
            path: path.to_owned(),
            image: name.to_owned(),
            os,
            architecture: arch,
            host: host.to_owned(),
        });
        return Ok(None);
    }
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != layer_count {
        return Err(ArchiveError::BadJson {
            path: path.to_owned(),
            entry: format!("config of {name}"),
            message: format!("{} diff_ids for {layer_count} layers", diff_ids.len()),
        });
    }
    Ok(Some(diff_ids))
}

fn verify_oci(path: &Path, files: &BTreeMap<String, Entry>) -> Result<Vec<StagedImage>, ArchiveError> {
    let index: ImageIndex = read_json(path, "index.json", &files["index.json"])?;
    let mut images = Vec::new();
    let mut wrong_platform = None;
    for descriptor in index.manifests() {
        let annotations = descriptor.annotations().clone().unwrap_or_default();
        let name = annotations
            .get("io.containerd.image.name")
            .or_else(|| {
                annotations.get("org.opencontainers.image.ref.name").filter(|n| n.contains(':') || n.contains('/'))
            })
            .cloned()
            .ok_or_else(|| ArchiveError::NoName { path: path.to_owned() })?;
        // An index may point at a nested index (multi-platform); pick this host's manifest.
        let mut candidates = vec![descriptor.clone()];
        let mut chosen = None;
        while let Some(d) = candidates.pop() {
            let digest = d.digest().to_string();
            let entry = blob(path, files, &digest, Some(d.size()), "index.json")?;
            let media = d.media_type().to_string();
            if media == MEDIA_OCI_INDEX || media == MEDIA_DOCKER_LIST {
                let nested: ImageIndex = read_json(path, &digest, entry)?;
                candidates.extend(
                    nested
                        .manifests()
                        .iter()
                        .filter(|m| {
                            m.platform().as_ref().is_none_or(|p| {
                                p.architecture().to_string() == host_architecture() && p.os().to_string() == "linux"
                            })
                        })
                        .cloned(),
                );
                continue;
            }
            chosen = Some((d, entry));
            break;
        }
        let Some((manifest_desc, manifest_entry)) = chosen else { continue };
        let manifest_digest = manifest_desc.digest().to_string();
        let manifest: ImageManifest = read_json(path, &manifest_digest, manifest_entry)?;
        let config_desc = manifest.config();
        let config_entry =
            blob(path, files, config_desc.digest().as_ref(), Some(config_desc.size()), &manifest_digest)?;
        let config: ImageConfiguration = read_json(path, config_desc.digest().as_ref(), config_entry)?;
        let Some(diff_ids) = check_config(path, &name, &config, manifest.layers().len(), &mut wrong_platform)? else {
            continue;
        };
        let mut layers = Vec::new();
        for layer in manifest.layers() {
            let entry = blob(path, files, layer.digest().as_ref(), Some(layer.size()), &manifest_digest)?;
            layers.push(as_blob(entry, layer.media_type().as_ref()));
        }
        images.push(StagedImage {
            name,
            manifest: as_blob(manifest_entry, manifest_desc.media_type().as_ref()),
            config: as_blob(config_entry, config_desc.media_type().as_ref()),
            layers,
            diff_ids,
            architecture: config.architecture().to_string(),
            os: config.os().to_string(),
            image_config: image_config_of(&config),
        });
    }
    finish(path, images, wrong_platform)
}

fn finish(
    path: &Path,
    images: Vec<StagedImage>,
    wrong_platform: Option<ArchiveError>,
) -> Result<Vec<StagedImage>, ArchiveError> {
    if images.is_empty() {
        return Err(wrong_platform.unwrap_or_else(|| ArchiveError::NoImages {
            path: path.to_owned(),
            host: host_architecture().to_owned(),
        }));
    }
    Ok(images)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn verify_docker(path: &Path, dir: &Path, files: &BTreeMap<String, Entry>) -> Result<Vec<StagedImage>, ArchiveError> {
    let entries: Vec<DockerManifestEntry> = read_json(path, "manifest.json", &files["manifest.json"])?;
    let missing = |name: &str| ArchiveError::MissingBlob {
        path: path.to_owned(),
        digest: name.to_owned(),
        referrer: "manifest.json".to_owned(),
    };
    let mut images = Vec::new();
    let mut wrong_platform = None;
    for (i, item) in entries.iter().enumerate() {
        let name = item
            .repo_tags
            .as_ref()
            .and_then(|tags| tags.first())
            .cloned()
            .ok_or_else(|| ArchiveError::NoName { path: path.to_owned() })?;
        let config_entry = files.get(&item.config).ok_or_else(|| missing(&item.config))?;
        // docker names the config after its digest: `<hex>.json` or `blobs/sha256/<hex>`.
        let stem = Path::new(&item.config).file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if stem.len() == 64 && format!("sha256:{stem}") != config_entry.digest {
            return Err(ArchiveError::DigestMismatch {
                path: path.to_owned(),
                entry: item.config.clone(),
                expected: format!("sha256:{stem}"),
                actual: config_entry.digest.clone(),
            });
        }
        let config: ImageConfiguration = read_json(path, &item.config, config_entry)?;
        let Some(diff_ids) = check_config(path, &name, &config, item.layers.len(), &mut wrong_platform)? else {
            continue;
        };
        let mut layers = Vec::new();
        for (layer_name, diff_id) in item.layers.iter().zip(&diff_ids) {
            let entry = files.get(layer_name).ok_or_else(|| missing(layer_name))?;
            let gzipped = is_gzip(&entry.staged);
            // An uncompressed layer's digest is its diff ID; compressed ones are checked
            // when containerd unpacks them.
            if !gzipped && &entry.digest != diff_id {
                return Err(ArchiveError::DigestMismatch {
                    path: path.to_owned(),
                    entry: layer_name.clone(),
                    expected: diff_id.clone(),
                    actual: entry.digest.clone(),
                });
            }
            let media = if gzipped { MEDIA_DOCKER_LAYER_GZIP } else { MEDIA_DOCKER_LAYER };
            layers.push(as_blob(entry, media));
        }
        let config_blob = as_blob(config_entry, MEDIA_DOCKER_CONFIG);
        let manifest_json = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_DOCKER_MANIFEST,
            "config": { "mediaType": MEDIA_DOCKER_CONFIG, "digest": config_blob.digest, "size": config_blob.size },
            "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest_json).expect("a json value serialises");
        let manifest_path = dir.join(format!("manifest-{i}.json"));
        std::fs::write(&manifest_path, &bytes)
            .map_err(|source| ArchiveError::Staging { path: manifest_path.clone(), source })?;
        let manifest = Blob {
            digest: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            size: bytes.len() as u64,
            media_type: MEDIA_DOCKER_MANIFEST.to_owned(),
            path: manifest_path,
        };
        images.push(StagedImage {
            name,
            manifest,
            config: config_blob,
            layers,
            diff_ids,
            architecture: config.architecture().to_string(),
            os: config.os().to_string(),
            image_config: image_config_of(&config),
        });
    }
    finish(path, images, wrong_platform)
}

fn is_gzip(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == [0x1f, 0x8b]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny single-layer image archive in memory, in OCI or docker layout.
    struct Fixture {
        layer: Vec<u8>,
        config: Vec<u8>,
    }

    fn sha(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    impl Fixture {
        fn new(arch: &str) -> Self {
            let mut layer = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(5);
            header.set_mode(0o644);
            header.set_cksum();
            layer.append_data(&mut header, "hello.txt", &b"hello"[..]).unwrap();
            let layer = layer.into_inner().unwrap();
            let config = serde_json::to_vec(&json!({
                "architecture": arch, "os": "linux",
                "config": {"Entrypoint": ["/bin/sh"], "Env": ["A=1"]},
                "rootfs": {"type": "layers", "diff_ids": [sha(&layer)]}
            }))
            .unwrap();
            Self { layer, config }
        }

        fn oci(&self) -> Vec<u8> {
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&self.config), "size": self.config.len()},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(&self.layer), "size": self.layer.len()}]
            }))
            .unwrap();
            let index = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "manifests": [{"mediaType": MEDIA_OCI_MANIFEST, "digest": sha(&manifest), "size": manifest.len(),
                    "annotations": {"io.containerd.image.name": "docker-test:latest"}}]
            }))
            .unwrap();
            let blob_name = |b: &[u8]| format!("blobs/sha256/{}", &sha(b)[7..]);
            tar_of(&[
                ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
                (&blob_name(&self.layer), self.layer.clone()),
                (&blob_name(&self.config), self.config.clone()),
                (&blob_name(&manifest), manifest.clone()),
                ("index.json", index),
            ])
        }

        fn docker(&self) -> Vec<u8> {
            let config_name = format!("{}.json", &sha(&self.config)[7..]);
            let manifest = serde_json::to_vec(&json!([{
                "Config": config_name, "RepoTags": ["docker-test:latest"], "Layers": ["abc/layer.tar"]
            }]))
            .unwrap();
            tar_of(&[
                (&config_name, self.config.clone()),
                ("abc/layer.tar", self.layer.clone()),
                ("manifest.json", manifest),
            ])
        }
    }

    fn tar_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, &data[..]).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn stage_bytes(bytes: &[u8]) -> Result<StagedArchive, ArchiveError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("image.tar");
        std::fs::write(&file, bytes).unwrap();
        // Keep the staging root alive as long as the test's temp dir.
        let root = dir.path().join("staging");
        let result = stage(&file, &root);
        std::mem::forget(dir);
        result
    }

    #[test]
    fn oci_and_docker_archives_verify() {
        let fixture = Fixture::new(host_architecture());
        for bytes in [fixture.oci(), fixture.docker(), gzip(&fixture.oci()), gzip(&fixture.docker())] {
            let staged = stage_bytes(&bytes).unwrap();
            assert_eq!(staged.images.len(), 1);
            let image = &staged.images[0];
            assert_eq!(image.name, "docker-test:latest");
            assert_eq!(image.layers.len(), 1);
            assert_eq!(image.diff_ids, vec![sha(&fixture.layer)]);
            assert_eq!(image.image_config.entrypoint, vec!["/bin/sh"]);
            assert_eq!(image.chain_ids(), image.diff_ids);
        }
    }

    #[test]
    fn truncated_archive_is_refused() {
        let bytes = gzip(&Fixture::new(host_architecture()).oci());
        let err = stage_bytes(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt { .. }), "{err}");
        let bytes = Fixture::new(host_architecture()).docker();
        let err = stage_bytes(&bytes[..bytes.len() - 1200]).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt { .. } | ArchiveError::UnknownFormat { .. }), "{err}");
    }

    #[test]
    fn tampered_blob_is_refused() {
        let fixture = Fixture::new(host_architecture());
        let mut bytes = fixture.oci();
        // Flip a byte inside the layer's "hello" payload.
        let pos = bytes.windows(5).position(|w| w == b"hello").unwrap();
        bytes[pos] = b'j';
        let err = stage_bytes(&bytes).unwrap_err();
        assert!(matches!(err, ArchiveError::DigestMismatch { .. }), "{err}");
    }

    #[test]
    fn other_architecture_is_refused() {
        let err = stage_bytes(&Fixture::new("s390x").oci()).unwrap_err();
        assert!(matches!(err, ArchiveError::WrongPlatform { .. }), "{err}");
        assert!(err.to_string().contains("s390x"));
    }

    #[test]
    fn garbage_is_refused() {
        let err = stage_bytes(b"this is not a tar archive at all, not even close................").unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt { .. } | ArchiveError::UnknownFormat { .. }), "{err}");
    }

    #[test]
    fn chain_ids_follow_containerd() {
        let ids = chain_ids(&["sha256:a".into(), "sha256:b".into()]);
        assert_eq!(ids[0], "sha256:a");
        assert_eq!(ids[1], format!("sha256:{}", hex::encode(Sha256::digest("sha256:a sha256:b"))));
    }
}
