//! `cargo xtask bench onie`: the installer's size and build time, an install in the ONIE
//! environment beside a plain `dd` of the same file to the same disk, and the first boot of
//! the installed disk to every service ready beside the same kernel booting an empty init.
//! Every figure is measured in this run, under qemu's TCG here (no KVM), so the boots are
//! several times slower than on hardware; the ratios are what compare.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::metric::Metric;
use crate::onie;
use crate::onie_env::{self, Firmware, Machine};
use crate::util::{output, project_root};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

pub fn onie() -> Result<Vec<Metric>> {
    let mut metrics = Vec::new();
    // Build: from a cached rootfs, the squashfs and payload made again.
    let _ = std::fs::remove_file(onie::dir().join("fs.squashfs.id"));
    let installer = onie::build(None)?;
    let size = std::fs::metadata(&installer.path)?.len();
    let tree = project_root().join("target/vs/rootfs");
    let tree_bytes: u64 = output(std::process::Command::new("du").args(["-sb"]).arg(&tree))?
        .split_whitespace()
        .next()
        .context("du printed nothing")?
        .parse()?;
    metrics.push(Metric::new("installer size (vs the rootfs it carries)", mib(size), "MiB", Some(mib(tree_bytes)), ""));
    let started = Instant::now();
    let tar = std::process::Command::new("sh")
        .args(["-c", &format!("tar -cf - -C '{}' . | wc -c", tree.display())])
        .output()?;
    if !tar.status.success() {
        bail!("tar of the rootfs failed");
    }
    let tar_secs = started.elapsed().as_secs_f64();
    metrics.push(Metric::new(
        "installer build (vs a plain tar of the rootfs)",
        installer.build_secs,
        "s",
        Some(tar_secs),
        "",
    ));

    let env = onie_env::build()?;
    let scratch = project_root().join("target/onie-env/bench");
    std::fs::create_dir_all(&scratch)?;
    let disk = scratch.join("bench.disk");
    let usb = scratch.join("bench.usb");
    onie_env::usb_disk(&usb, &installer.path, onie::INSTALLER)?;
    onie_env::target_disk(&disk, Firmware::Bios, 6144, true)?;
    let dd = onie_env::install(&env, "bench-dd", Firmware::Bios, &disk, &usb, "onie_env.baseline=dd")?;
    onie_env::target_disk(&disk, Firmware::Bios, 6144, true)?;
    let install = onie_env::install(&env, "bench-install", Firmware::Bios, &disk, &usb, "")?;
    if install.exit != Some(0) || dd.exit != Some(0) {
        let said: Vec<&str> = install.console.lines().filter(|l| l.contains("soniclet-installer")).collect();
        bail!("the install (exit {:?}) or the dd (exit {:?}) failed:\n{}", install.exit, dd.exit, said.join("\n"));
    }
    metrics.push(Metric::new("ONIE install (vs dd of the same file)", install.secs, "s", Some(dd.secs), ""));

    let mut empty = Machine::start("bench-empty", Firmware::Bios, &[], Some((&env, "onie_env.baseline=empty")))?;
    empty.wait_end(Duration::from_secs(120))?;
    let empty_secs = empty.elapsed();
    onie_env::add_probe(&disk, &installer.version)?;
    let mut boot = Machine::start("bench-boot", Firmware::Bios, &[(&disk, false)], None)?;
    let ready = boot.wait_for("PROBE: ready", Duration::from_secs(900))?;
    metrics.push(Metric::new("first boot to every service ready (vs an empty init)", ready, "s", Some(empty_secs), ""));
    drop(boot);

    // The broken image's boot, its trial's deadline (90 s) and the reboot, beside one boot
    // of the good image to ready: what an automatic fallback costs over a plain boot.
    let ab = onie_env::ab(&env, &installer.path, &installer.version, "bench-ab", &scratch.join("ab"))?;
    metrics.push(Metric::new(
        "trial fallback: bad image boots to good image ready (vs one boot to ready; 90 s deadline)",
        ab.back - ab.bad_booted,
        "s",
        Some(ready),
        "",
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(metrics)
}
