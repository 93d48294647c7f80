//! `cargo xtask images`: builds the virtual switch's OCI image archives from `images/*.toml`,
//! with no registry and no Docker: Debian's busybox-static plus host binaries and their
//! shared libraries, packed deterministically (same inputs, same digests).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::util::{output, project_root};

/// One `images/<name>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    #[serde(default = "default_tag")]
    pub tag: String,
    /// VS stand-in daemons, run under their SONiC names by vs-supervisor.sh.
    #[serde(default)]
    pub programs: Vec<String>,
    /// Host executables, copied with their shared libraries. `@soniclet` is the built agent.
    #[serde(default)]
    pub binaries: Vec<String>,
    /// Processes played by soniclet itself: process name -> `soniclet vasic` role. Each is a
    /// link to the agent under its SONiC name, so critical-process checks see that name.
    #[serde(default)]
    pub vasic: BTreeMap<String, String>,
    /// soniclet's roles under their SONiC process names (`fpmsyncd`): each a link to the
    /// agent, started by a line of `daemons`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Debian packages whose programs the image runs (their library dependencies follow as
    /// their ELF files need them; see `debs.rs`).
    #[serde(default)]
    pub debs: Vec<String>,
    /// The paths taken from `debs` (prefixes); everything but documentation when empty.
    #[serde(default)]
    pub keep: Vec<String>,
    /// Real daemons vs-supervisor.sh starts in this order, under their process names.
    #[serde(default)]
    pub daemons: Vec<DaemonSpec>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    /// SONiC's `IMAGE_VERSION` in the container environment.
    #[serde(default = "default_version")]
    pub version: String,
    /// The platform the image says it is for.
    #[serde(default = "default_architecture")]
    pub architecture: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub src: String,
    pub dst: String,
    pub mode: u32,
}

/// One real daemon: its process name (what critical-process checks see) and command line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSpec {
    pub name: String,
    pub command: String,
    /// A setup step: run to its end before the next line starts.
    #[serde(default)]
    pub once: bool,
}

fn default_tag() -> String {
    "latest".to_owned()
}
fn default_architecture() -> String {
    "amd64".to_owned()
}
fn default_version() -> String {
    "vs-1".to_owned()
}

enum Node {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// A filesystem layer assembled in memory.
#[derive(Default)]
struct Layer {
    nodes: BTreeMap<String, Node>,
}

impl Layer {
    fn dirs_for(&mut self, path: &str) {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            prefix.push_str(part);
            prefix.push('/');
            self.nodes.entry(prefix.trim_end_matches('/').to_owned()).or_insert(Node::Dir);
        }
    }

    fn dir(&mut self, path: &str) {
        self.dirs_for(path);
        self.nodes.insert(path.trim_matches('/').to_owned(), Node::Dir);
    }

    fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.dirs_for(path);
        self.nodes.insert(path.trim_matches('/').to_owned(), Node::File { data, mode });
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.dirs_for(path);
        self.nodes.insert(path.trim_matches('/').to_owned(), Node::Symlink(target.to_owned()));
    }

    /// Adds a host executable and every shared library `ldd` names for it.
    fn binary(&mut self, host_path: &Path, image_path: &str) -> Result<()> {
        let data = std::fs::read(host_path).with_context(|| format!("cannot read {}", host_path.display()))?;
        self.file(image_path, data, 0o755);
        let ldd = output(Command::new("ldd").arg(host_path)).unwrap_or_default();
        for line in ldd.lines() {
            let lib = match line.split("=>").nth(1) {
                Some(rest) => rest.split_whitespace().next().unwrap_or_default(),
                None => line.split_whitespace().next().unwrap_or_default(),
            };
            if lib.starts_with('/') {
                let data = std::fs::read(lib).with_context(|| format!("cannot read {lib}"))?;
                self.file(lib, data, 0o755);
            }
        }
        Ok(())
    }

    /// The uncompressed tar, deterministic: sorted entries, zero times and owners.
    fn tar(&self) -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, node) in &self.nodes {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            match node {
                Node::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(if path == "tmp" { 0o1777 } else { 0o755 });
                    header.set_size(0);
                    builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
                }
                Node::File { data, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, &data[..])?;
                }
                Node::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target)?;
                }
            }
        }
        Ok(builder.into_inner()?)
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

/// The layer every VS image shares: busybox and its applets, and the VS supervisor script.
fn base_layer(root: &Path) -> Result<Layer> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("busybox is missing: apt-get install busybox-static")?;
    let mut layer = Layer::default();
    layer.file("/bin/busybox", std::fs::read(busybox)?, 0o755);
    let applets = output(Command::new(busybox).arg("--list"))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty() && *a != "busybox") {
        layer.symlink(&format!("/bin/{applet}"), "/bin/busybox");
    }
    for dir in
        ["/tmp", "/run", "/var/run", "/var/log", "/var/lib", "/etc", "/root", "/proc", "/sys", "/dev", "/usr/bin"]
    {
        layer.dir(dir);
    }
    // FRR's daemons drop to frr (their vty sockets to group frrvty), lldpd to _lldpd.
    let passwd = "root:x:0:0:root:/root:/bin/sh\nfrr:x:300:300:FRR:/var/run/frr:/bin/false\n\
                  _lldpd:x:301:301:lldpd:/run/lldpd:/bin/false\n";
    layer.file("/etc/passwd", passwd.as_bytes().to_vec(), 0o644);
    let group = "root:x:0:\nfrr:x:300:\nfrrvty:x:302:frr\n_lldpd:x:301:\n";
    layer.file("/etc/group", group.as_bytes().to_vec(), 0o644);
    let supervisor = std::fs::read(root.join("images/files/vs-supervisor.sh"))?;
    layer.file("/usr/bin/vs-supervisor.sh", supervisor, 0o755);
    Ok(layer)
}

fn image_layer(root: &Path, recipe: &Recipe, soniclet: Option<&Path>) -> Result<Layer> {
    let mut layer = Layer::default();
    for program in &recipe.programs {
        layer.symlink(&format!("/usr/bin/{program}"), "/bin/busybox");
    }
    let runs_soniclet = !(recipe.vasic.is_empty() && recipe.roles.is_empty());
    if runs_soniclet && !recipe.binaries.iter().any(|b| b == "@soniclet") {
        bail!("{}: vasic processes and roles need \"@soniclet\" in binaries", recipe.name);
    }
    for process in recipe.vasic.keys().chain(&recipe.roles) {
        layer.symlink(&format!("/usr/bin/{process}"), "/usr/bin/soniclet");
    }
    for binary in &recipe.binaries {
        if binary == "@soniclet" {
            let path = soniclet.context("this image needs the soniclet binary; build it first")?;
            layer.binary(path, "/usr/bin/soniclet")?;
        } else {
            layer.binary(Path::new(binary), binary)?;
        }
    }
    if !recipe.debs.is_empty() {
        let present = layer.nodes.keys().map(|p| format!("/{p}")).collect();
        let (entries, packages) = crate::debs::resolve(&recipe.name, &recipe.debs, &recipe.keep, &present)?;
        for (path, entry) in entries {
            match entry {
                crate::debs::Entry::File { host, mode } => {
                    let data = std::fs::read(&host).with_context(|| format!("cannot read {}", host.display()))?;
                    layer.file(&path, data, mode);
                }
                crate::debs::Entry::Symlink(target) => layer.symlink(&path, &target),
            }
        }
        // What went in, for `soniclet exec <svc> -- cat /etc/vs-supervisor/packages`.
        let list: String = packages.iter().map(|(name, version)| format!("{name} {version}\n")).collect();
        layer.file("/etc/vs-supervisor/packages", list.into_bytes(), 0o644);
    }
    if !recipe.daemons.is_empty() {
        let lines: String = recipe
            .daemons
            .iter()
            .map(|d| format!("{} {} {}\n", d.name, if d.once { "once" } else { "run" }, d.command))
            .collect();
        layer.file("/etc/vs-supervisor/daemons", lines.into_bytes(), 0o644);
    }
    for file in &recipe.files {
        let data = std::fs::read(root.join("images").join(&file.src))
            .with_context(|| format!("{}: cannot read images/{}", recipe.name, file.src))?;
        layer.file(&file.dst, data, file.mode);
    }
    Ok(layer)
}

/// A built layer: its compressed blob and digests.
struct Blob {
    compressed: Vec<u8>,
    digest: String,
    diff_id: String,
}

fn finish_layer(layer: &Layer) -> Result<Blob> {
    let tar = layer.tar()?;
    let diff_id = sha256(&tar);
    let compressed = gzip(&tar)?;
    Ok(Blob { digest: sha256(&compressed), diff_id, compressed })
}

/// Writes one OCI image-layout archive; returns its manifest digest.
fn write_archive(out: &Path, recipe: &Recipe, layers: &[&Blob]) -> Result<String> {
    let reference = format!("{}:{}", recipe.name, recipe.tag);
    let entrypoint = if recipe.entrypoint.is_empty() {
        vec!["/bin/sh".to_owned(), "/usr/bin/vs-supervisor.sh".to_owned()]
    } else {
        recipe.entrypoint.clone()
    };
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        format!("IMAGE_VERSION={}", recipe.version),
    ];
    if !recipe.programs.is_empty() {
        env.push(format!("PROGRAMS={}", recipe.programs.join(" ")));
    }
    if !recipe.vasic.is_empty() {
        let pairs: Vec<String> = recipe.vasic.iter().map(|(process, role)| format!("{process}:{role}")).collect();
        env.push(format!("VASIC={}", pairs.join(" ")));
    }
    env.extend(recipe.env.iter().cloned());
    let config = serde_json::to_vec(&json!({
        "architecture": recipe.architecture,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": entrypoint,
            "Env": env,
            "Labels": {"org.opencontainers.image.title": recipe.name, "org.opencontainers.image.version": recipe.version},
        },
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": layers.iter().map(|l| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": l.digest,
            "size": l.compressed.len(),
        })).collect::<Vec<_>>(),
    }))?;
    let manifest_digest = sha256(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"io.containerd.image.name": reference, "org.opencontainers.image.ref.name": recipe.tag},
        }],
    }))?;

    let mut files: Vec<(String, &[u8])> = vec![
        ("oci-layout".to_owned(), br#"{"imageLayoutVersion":"1.0.0"}"#),
        (format!("blobs/sha256/{}", &sha256(&config)[7..]), &config),
        (format!("blobs/sha256/{}", &manifest_digest[7..]), &manifest),
    ];
    for layer in layers {
        files.push((format!("blobs/sha256/{}", &layer.digest[7..]), &layer.compressed));
    }
    files.push(("index.json".to_owned(), &index));
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, name, data)?;
    }
    let bytes = builder.into_inner()?;
    // Rewrite only on change, so the archive's mtime tells when its content last changed.
    if std::fs::read(out).ok().as_deref() != Some(&bytes[..]) {
        let tmp = out.with_extension("tar.tmp");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, out)?;
    }
    Ok(manifest_digest)
}

pub fn load_recipes(root: &Path) -> Result<Vec<Recipe>> {
    let mut recipes = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join("images"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "release.toml" && n != "variants.toml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        let recipe: Recipe = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        recipes.push(recipe);
    }
    if recipes.is_empty() {
        bail!("no image recipes in images/");
    }
    Ok(recipes)
}

/// Builds `recipes` into `out_dir`; returns (reference, archive, manifest digest) per image.
pub fn build(recipes: &[Recipe], out_dir: &Path, soniclet: Option<&Path>) -> Result<Vec<(String, PathBuf, String)>> {
    let root = project_root();
    std::fs::create_dir_all(out_dir)?;
    let base = finish_layer(&base_layer(&root)?)?;
    let mut built = Vec::new();
    for recipe in recipes {
        let layer = finish_layer(&image_layer(&root, recipe, soniclet)?)?;
        let out = out_dir.join(format!("{}.tar", recipe.name));
        let digest = write_archive(&out, recipe, &[&base, &layer])?;
        built.push((format!("{}:{}", recipe.name, recipe.tag), out, digest));
    }
    Ok(built)
}

pub fn images_dir() -> PathBuf {
    project_root().join("target/images")
}

/// The pod sandbox ("pause") image the kubelet's pods run in. Its name is the rootfs
/// containerd's `sandbox_image` and the k3s agent's `pause-image` (soniclet's
/// `k8s::PAUSE_IMAGE`; the tidy test keeps the two equal). There is no registry: the OS
/// image ships it, and a unit imports it into `k8s.io` at boot.
pub const PAUSE_IMAGE: &str = "soniclet.local/pause:1";

/// Builds the pause image into `target/images/k8s/pause.tar`: Debian's catatonit (static, in
/// its pause mode) alone, no shell. Not one of the VS images: soniclet never imports it.
pub fn build_pause() -> Result<PathBuf> {
    let (name, tag) = PAUSE_IMAGE.rsplit_once(':').context("PAUSE_IMAGE has a tag")?;
    let catatonit = Path::new("/usr/bin/catatonit");
    if !catatonit.exists() {
        bail!("{} is missing: apt-get install catatonit (cargo xtask deps)", catatonit.display());
    }
    let recipe = Recipe {
        name: name.to_owned(),
        tag: tag.to_owned(),
        programs: Vec::new(),
        binaries: vec![catatonit.display().to_string()],
        vasic: BTreeMap::new(),
        roles: Vec::new(),
        debs: Vec::new(),
        keep: Vec::new(),
        daemons: Vec::new(),
        files: Vec::new(),
        entrypoint: vec![catatonit.display().to_string(), "-P".to_owned()],
        env: Vec::new(),
        version: tag.to_owned(),
        architecture: default_architecture(),
    };
    let layer = finish_layer(&image_layer(&project_root(), &recipe, None)?)?;
    let dir = images_dir().join("k8s");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("pause.tar");
    write_archive(&out, &recipe, &[&layer])?;
    Ok(out)
}

/// `images/variants.toml`: a recipe with a few fields replaced, for the upgrade tests and
/// bench (a "v2", and images broken on purpose).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantsFile {
    variant: Vec<Variant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Variant {
    /// The archive's file name (without `.tar`).
    name: String,
    /// The recipe it varies.
    base: String,
    tag: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    architecture: Option<String>,
    /// Appended to the recipe's environment.
    #[serde(default)]
    env: Vec<String>,
}

fn variant_recipes(root: &Path, recipes: &[Recipe]) -> Result<Vec<(String, Recipe)>> {
    let path = root.join("images/variants.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: VariantsFile = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let mut out = Vec::new();
    for variant in file.variant {
        let mut recipe = recipes
            .iter()
            .find(|r| r.name == variant.base)
            .with_context(|| format!("{}: variant {}: no recipe {}", path.display(), variant.name, variant.base))?
            .clone();
        recipe.tag = variant.tag;
        if let Some(version) = variant.version {
            recipe.version = version;
        }
        if let Some(entrypoint) = variant.entrypoint {
            recipe.entrypoint = entrypoint;
        }
        if let Some(architecture) = variant.architecture {
            recipe.architecture = architecture;
        }
        recipe.env.extend(variant.env);
        out.push((variant.name, recipe));
    }
    Ok(out)
}

/// `images/release.toml`: the VS release, service -> recipe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseTemplate {
    release: String,
    services: BTreeMap<String, String>,
}

/// Writes `target/images/release.toml` (soniclet's release manifest format) from
/// `images/release.toml` and the archives just built, with their digests.
fn write_release(root: &Path, out_dir: &Path, built: &[(String, PathBuf, String)]) -> Result<PathBuf> {
    let path = root.join("images/release.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let template: ReleaseTemplate = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let mut out =
        format!("# Written by `cargo xtask images` from images/release.toml.\nrelease = {:?}\n", template.release);
    for (service, recipe) in &template.services {
        let (reference, archive, digest) = built
            .iter()
            .find(|(_, archive, _)| archive.file_stem().is_some_and(|s| s.to_string_lossy() == *recipe))
            .with_context(|| format!("{}: {service}: no image {recipe} was built", path.display()))?;
        let file = archive.file_name().unwrap_or_default().to_string_lossy();
        out.push_str(&format!(
            "\n[[service]]\nname = {service:?}\nimage = {reference:?}\ndigest = {digest:?}\narchive = {file:?}\n"
        ));
    }
    let target = out_dir.join("release.toml");
    std::fs::write(&target, out)?;
    Ok(target)
}

/// `cargo xtask images`: the VS images, their test variants (under `variants/`, with a
/// `digests.json` of every archive), and the VS release manifest.
pub fn run(soniclet: Option<&Path>) -> Result<Vec<(String, PathBuf, String)>> {
    let root = project_root();
    let recipes = load_recipes(&root)?;
    let built = build(&recipes, &images_dir(), soniclet)?;
    let variants_dir = images_dir().join("variants");
    std::fs::create_dir_all(&variants_dir)?;
    let base = finish_layer(&base_layer(&root)?)?;
    let mut digests: BTreeMap<String, String> = BTreeMap::new();
    for (name, recipe) in variant_recipes(&root, &recipes)? {
        let layer = finish_layer(&image_layer(&root, &recipe, soniclet)?)?;
        let digest = write_archive(&variants_dir.join(format!("{name}.tar")), &recipe, &[&base, &layer])?;
        digests.insert(format!("variants/{name}"), digest);
    }
    for (_, path, digest) in &built {
        digests.insert(path.file_stem().unwrap_or_default().to_string_lossy().into_owned(), digest.clone());
    }
    std::fs::write(images_dir().join("digests.json"), serde_json::to_vec_pretty(&digests)?)?;
    let release = write_release(&root, &images_dir(), &built)?;
    eprintln!(
        "{} test variants in {}; release manifest {}",
        digests.len() - built.len(),
        variants_dir.display(),
        release.display()
    );
    for (reference, path, digest) in &built {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        eprintln!("{reference:<40} {:>8.1} MB  {}  {}", size as f64 / 1e6, &digest[..19], path.display());
    }
    Ok(built)
}
