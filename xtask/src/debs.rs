//! Debian packages for the VS images, without Docker and without installing them on the host:
//! `apt-get download` into `target/debs/`, each .deb checked against the SHA256 of apt's
//! (signed) index, and extracted with `dpkg-deb -x`. A recipe names the programs' packages;
//! the shared libraries they need come from their library dependencies, and only the ones an
//! ELF file in the image really needs (its `NEEDED` entries, to a fixed point), so an image
//! carries no package it does not run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::util::{output, project_root};

/// One extracted package: its files, by their path in the image.
pub struct Package {
    pub name: String,
    pub version: String,
    pub files: BTreeMap<String, Entry>,
}

#[derive(Clone)]
pub enum Entry {
    /// A regular file, at this host path under the extraction directory.
    File {
        host: PathBuf,
        mode: u32,
    },
    Symlink(String),
}

/// Paths no VS image needs from any package.
const NEVER: &[&str] = &[
    "/usr/share/doc/",
    "/usr/share/man/",
    "/usr/share/info/",
    "/usr/share/lintian/",
    "/usr/share/locale/",
    "/usr/share/bug/",
    "/etc/init.d/",
    "/lib/systemd/",
    "/usr/lib/systemd/",
];

/// apt-cache's answers, asked once per run: every image and variant walks the same
/// dependency graph, and each apt-cache run takes a fraction of a second.
fn apt_cache(args: &[&str]) -> Result<String> {
    static ANSWERS: std::sync::Mutex<BTreeMap<String, String>> = std::sync::Mutex::new(BTreeMap::new());
    let key = args.join(" ");
    if let Some(answer) = ANSWERS.lock().expect("apt-cache answers").get(&key) {
        return Ok(answer.clone());
    }
    let answer = output(Command::new("apt-cache").args(args))?;
    ANSWERS.lock().expect("apt-cache answers").insert(key, answer.clone());
    Ok(answer)
}

fn cache_dir() -> PathBuf {
    project_root().join("target/debs")
}

/// apt's record of the candidate version of `package`: (version, SHA256 of the .deb).
fn candidate(package: &str) -> Result<(String, String)> {
    let record = apt_cache(&["show", "--no-all-versions", package])
        .with_context(|| format!("apt has no package {package}: run `apt-get update` (cargo xtask deps does)"))?;
    let field = |name: &str| {
        record.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned())).filter(|v| !v.is_empty())
    };
    let version = field("Version:").with_context(|| format!("apt-cache show {package}: no Version"))?;
    let sha256 = field("SHA256:").with_context(|| format!("apt-cache show {package}: no SHA256"))?;
    Ok((version, sha256))
}

/// The .deb of `package`'s candidate version, downloaded once and checked against apt's index.
fn fetch(package: &str) -> Result<(String, PathBuf)> {
    let (version, sha256) = candidate(package)?;
    let dir = cache_dir();
    std::fs::create_dir_all(&dir)?;
    // apt-get download escapes ':' in epochs as %3a.
    let file = dir.join(format!("{package}_{}_amd64.deb", version.replace(':', "%3a")));
    let verified = |path: &Path| {
        std::fs::read(path)
            .is_ok_and(|bytes| Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>() == sha256)
    };
    if !verified(&file) {
        let all = dir.join(format!("{package}_{}_all.deb", version.replace(':', "%3a")));
        if verified(&all) {
            return Ok((version, all));
        }
        let status = Command::new("apt-get")
            .current_dir(&dir)
            .args(["-o", "APT::Sandbox::User=root", "download", "-q", &format!("{package}={version}")])
            .status()
            .with_context(|| format!("cannot run apt-get download {package}"))?;
        if !status.success() {
            bail!("apt-get download {package}={version} failed: is apt's mirror reachable (apt-get update)?");
        }
        let found = [file.clone(), all].into_iter().find(|p| p.exists());
        let Some(found) = found else { bail!("apt-get download {package}: no .deb in {}", dir.display()) };
        if !verified(&found) {
            bail!("{}: its SHA256 is not the one apt's index gives ({sha256}); delete it and retry", found.display());
        }
        return Ok((version, found));
    }
    Ok((version, file))
}

/// Whether Debian files `package` under the `libs` section (zlib1g is, adduser is not).
fn is_library(package: &str) -> Result<bool> {
    let record = apt_cache(&["show", "--no-all-versions", package])?;
    Ok(record.lines().any(|l| l.trim() == "Section: libs"))
}

/// `package`'s direct dependencies that are libraries (the first of each alternative).
fn library_dependencies(package: &str) -> Result<Vec<String>> {
    let text = apt_cache(&[
        "depends",
        "--no-recommends",
        "--no-suggests",
        "--no-conflicts",
        "--no-breaks",
        "--no-replaces",
        "--no-enhances",
        package,
    ])?;
    let mut out = Vec::new();
    let mut alternative = false;
    for line in text.lines() {
        let line = line.trim_start();
        let (is_alternative, rest) = match line.strip_prefix('|') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let Some(name) = rest.strip_prefix("Depends:").or_else(|| rest.strip_prefix("PreDepends:")) else {
            continue;
        };
        let name = name.trim();
        // Only the first of `a | b` counts; a virtual package (`<...>`) never does.
        let first = !alternative;
        alternative = is_alternative;
        if first && !name.starts_with('<') && is_library(name)? {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

fn extract(name: &str, version: &str, deb: &Path) -> Result<Package> {
    let dir = cache_dir().join("extracted").join(format!("{name}_{version}"));
    if !dir.join(".done").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("dpkg-deb").arg("-x").arg(deb).arg(&dir).status().context("cannot run dpkg-deb")?;
        if !status.success() {
            bail!("dpkg-deb -x {} failed", deb.display());
        }
        std::fs::write(dir.join(".done"), b"")?;
    }
    let mut files = BTreeMap::new();
    walk(&dir, &dir, &mut files)?;
    Ok(Package { name: name.to_owned(), version: version.to_owned(), files })
}

fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, Entry>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)?;
        let image_path = format!("/{}", path.strip_prefix(root)?.display());
        if image_path == "/.done" || NEVER.iter().any(|p| image_path.starts_with(p)) {
            continue;
        }
        if meta.is_dir() {
            walk(root, &path, files)?;
        } else if meta.file_type().is_symlink() {
            files.insert(image_path, Entry::Symlink(std::fs::read_link(&path)?.display().to_string()));
        } else {
            files.insert(image_path, Entry::File { host: path, mode: meta.permissions().mode() & 0o7777 });
        }
    }
    Ok(())
}

/// A shared object a dependency package contributes: a `.so` under a library directory
/// (not a gconv or other plugin directory).
fn is_shared_object(path: &str) -> bool {
    let Some((dir, file)) = path.rsplit_once('/') else { return false };
    file.contains(".so")
        && ["/lib", "/lib64", "/usr/lib", "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"].contains(&dir)
}

type Dynamic = Option<(Vec<String>, Vec<String>)>;

/// The `NEEDED` entries and run paths of an ELF file; `None` for anything else. Read once
/// per run (the variants share their base's files).
fn dynamic_section(host: &Path) -> Result<Dynamic> {
    static READ: std::sync::Mutex<BTreeMap<PathBuf, Dynamic>> = std::sync::Mutex::new(BTreeMap::new());
    if let Some(known) = READ.lock().expect("dynamic sections").get(host) {
        return Ok(known.clone());
    }
    let read = read_dynamic_section(host)?;
    READ.lock().expect("dynamic sections").insert(host.to_owned(), read.clone());
    Ok(read)
}

fn read_dynamic_section(host: &Path) -> Result<Dynamic> {
    let mut magic = [0u8; 4];
    use std::io::Read;
    if std::fs::File::open(host)?.read_exact(&mut magic).is_err() || &magic != b"\x7fELF" {
        return Ok(None);
    }
    let text = output(Command::new("readelf").args(["-d", "-W"]).arg(host))?;
    let bracketed = |line: &str| line.split_once('[').and_then(|(_, r)| r.split_once(']')).map(|(v, _)| v.to_owned());
    let needed = text.lines().filter(|l| l.contains("(NEEDED)")).filter_map(bracketed).collect();
    let runpath = text
        .lines()
        .filter(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)"))
        .filter_map(bracketed)
        .flat_map(|v| v.split(':').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    Ok(Some((needed, runpath)))
}

/// The search directories of the dynamic loader in a Debian image.
const LIBRARY_DIRS: &[&str] = &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/lib", "/usr/lib"];

/// The image's files from Debian, by path, and the packages they came from (name, version).
pub type Resolved = (BTreeMap<String, Entry>, Vec<(String, String)>);

/// What a recipe takes from Debian: the files of `packages` (those under a `keep` prefix when
/// any are given) and the shared libraries they need, from their library dependencies.
/// `present` are paths the image has already (host binaries' libraries): not needed again.
pub fn resolve(image: &str, packages: &[String], keep: &[String], present: &BTreeSet<String>) -> Result<Resolved> {
    let mut chosen: BTreeMap<String, Entry> = BTreeMap::new();
    let mut used = Vec::new();
    let mut candidates: Vec<String> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut programs: Vec<Package> = Vec::new();
    for name in packages {
        let (version, deb) = fetch(name).with_context(|| format!("image {image}"))?;
        let package = extract(name, &version, &deb)?;
        for (path, entry) in &package.files {
            if keep.is_empty() || keep.iter().any(|k| path.starts_with(k.as_str())) {
                chosen.insert(path.clone(), entry.clone());
            }
        }
        used.push((package.name.clone(), package.version.clone()));
        seen.insert(name.clone());
        candidates.extend(library_dependencies(name)?);
        // Its own shared objects `keep` left out come in as its programs need them.
        programs.push(package);
    }
    // The library packages reachable from the programs', and the programs' packages.
    let mut libraries: Vec<Package> = programs;
    let mut queue = candidates;
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let (version, deb) = fetch(&name).with_context(|| format!("image {image}"))?;
        let package = extract(&name, &version, &deb)?;
        queue.extend(library_dependencies(&name)?);
        libraries.push(package);
    }
    let mut included: BTreeSet<String> = BTreeSet::new();
    let mut checked: BTreeSet<String> = BTreeSet::new();
    loop {
        let mut missing: BTreeMap<String, String> = BTreeMap::new();
        for (path, entry) in &chosen {
            let Entry::File { host, .. } = entry else { continue };
            if !checked.insert(path.clone()) {
                continue;
            }
            let Some((needed, runpath)) = dynamic_section(host)? else { continue };
            for lib in needed {
                let dirs = runpath.iter().map(String::as_str).chain(LIBRARY_DIRS.iter().copied());
                let found = dirs.map(|d| format!("{d}/{lib}")).any(|p| chosen.contains_key(&p) || present.contains(&p));
                if !found {
                    missing.entry(lib).or_insert_with(|| path.clone());
                }
            }
        }
        if missing.is_empty() {
            break;
        }
        let mut progress = false;
        for (lib, wanted_by) in &missing {
            let provider = libraries.iter().find(|p| {
                !included.contains(&p.name)
                    && p.files.keys().any(|f| is_shared_object(f) && f.ends_with(&format!("/{lib}")))
            });
            let Some(provider) = provider else {
                if libraries
                    .iter()
                    .any(|p| included.contains(&p.name) && p.files.keys().any(|f| f.ends_with(&format!("/{lib}"))))
                {
                    continue;
                }
                bail!(
                    "image {image}: {wanted_by} needs {lib}, which none of its packages' library dependencies ships; \
                     add the package that does to the recipe's `debs`"
                );
            };
            included.insert(provider.name.clone());
            if !packages.contains(&provider.name) {
                used.push((provider.name.clone(), provider.version.clone()));
            }
            for (path, entry) in &provider.files {
                if is_shared_object(path) {
                    chosen.insert(path.clone(), entry.clone());
                }
            }
            progress = true;
        }
        if !progress {
            break;
        }
    }
    used.sort();
    Ok((chosen, used))
}
