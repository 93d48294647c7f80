//! Helpers shared by the tasks: paths, running commands, installing Debian packages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the project root").to_owned()
}

/// Runs a command with inherited output; fails with its command line when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Runs a command and returns its stdout.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.stderr(Stdio::inherit()).output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A word quoted for `sh -c`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Whether a program is on the PATH; an absolute path is a file the package ships.
pub fn have(program: &str) -> bool {
    if program.starts_with('/') {
        return Path::new(program).exists();
    }
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_root() -> bool {
    nix_getuid() == 0
}

fn nix_getuid() -> u32 {
    // `id -u` keeps xtask free of a libc dependency.
    output(Command::new("id").arg("-u")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(u32::MAX)
}

/// Debian packages soniclet's build, VS and tests need, by the program that proves each is there.
pub const PREREQUISITES: &[(&str, &str)] = &[
    ("protoc", "protobuf-compiler"),
    ("containerd", "containerd"),
    ("runc", "runc"),
    ("redis-server", "redis-server"),
    ("busybox", "busybox-static"),
    ("ip", "iproute2"),
    // Ships soniclet without its line tables (xtask images, rootfs).
    ("objcopy", "binutils"),
    // The virtual ASIC tests send real packets across the switch.
    ("ping", "iputils-ping"),
    // OS image signatures: the tests make and check openssl's own ed25519 keys.
    ("openssl", "openssl"),
    // The pod sandbox image's process (xtask images, rootfs).
    ("catatonit", "catatonit"),
    // lldp_syncd's tier reads a real lldpd's neighbours between two namespaces.
    ("lldpd", "lldpd"),
];

/// Installs whatever of `wanted` is missing with apt-get; fails clearly when it cannot.
pub fn ensure_packages(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted.iter().filter(|(bin, _)| !have(bin)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("missing Debian packages {}: run as root, or `apt-get install {}`", missing.join(" "), missing.join(" "));
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))
        .context("apt-get update failed: is Debian's mirror reachable?")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("cannot install {}", missing.join(" ")))?;
    Ok(())
}

/// The cargo that runs xtask, so nested builds use the same toolchain.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.current_dir(project_root());
    cmd
}

/// Builds the release binary; returns the copy that ships (in the VS images and the rootfs):
/// without the line tables (a fifth of the size), with the symbols, so backtraces still name
/// functions.
pub fn build_soniclet() -> Result<PathBuf> {
    run(cargo().args(["build", "--release", "--locked", "--bin", "soniclet"]))?;
    let built = project_root().join("target/release/soniclet");
    let shipped = project_root().join("target/release/soniclet-shipped");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&shipped).is_none() || modified(&shipped) < modified(&built) {
        let tmp = shipped.with_extension("tmp");
        run(Command::new("objcopy").arg("--strip-debug").arg(&built).arg(&tmp))?;
        std::fs::rename(&tmp, &shipped)?;
    }
    Ok(shipped)
}

/// Builds `soniclet-bench`, the benchmarks' baselines and workloads (never shipped), beside
/// the product binary whose log shim its raw baseline uses; returns its path.
pub fn build_bench() -> Result<PathBuf> {
    run(cargo().args(["build", "--release", "--locked", "--bin", "soniclet", "--bin", "soniclet-bench"]))?;
    Ok(project_root().join("target/release/soniclet-bench"))
}
