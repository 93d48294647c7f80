//! `cargo xtask ci`: the README's test command and what `.ci/run` runs. It installs every
//! missing prerequisite (Debian packages), then runs each tier; nothing is skipped: format,
//! lint, unit (with xtask's tidy tests) and sim (no root), integration (real containerd and
//! redis-server), e2e (a virtual switch booted with systemd under systemd-nspawn), and the
//! ONIE tier (the installer in the ONIE install environment under qemu, then the installed
//! disk booted by its own GRUB, legacy BIOS and UEFI). The root tiers are `#[ignore = "needs ..."]`, so plain `cargo test` passes anywhere; here they
//! run with `--ignored`.

use std::time::Instant;

use anyhow::{bail, Result};

use crate::images;
use crate::onie;
use crate::onie_env;
use crate::switch::Switch;
use crate::util::{build_soniclet, cargo, ensure_packages, is_root, run, PREREQUISITES};
use crate::vs;

fn stage<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("\n=== ci: {name}");
    let started = Instant::now();
    let result = f();
    eprintln!(
        "=== ci: {name}: {} in {:.1}s",
        if result.is_ok() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    result
}

pub fn run_task(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("unknown ci option {arg:?}");
    }
    if !is_root() {
        bail!(
            "the integration and e2e tiers need root (containerd, runc, network namespaces): run `sudo cargo xtask ci`"
        );
    }
    let started = Instant::now();
    stage("prerequisites", || {
        ensure_packages(PREREQUISITES)?;
        ensure_packages(onie::TOOLS)?;
        ensure_packages(onie_env::TOOLS)
    })?;
    stage("format", || run(cargo().args(["fmt", "--all", "--", "--check"])))?;
    stage("lint", || {
        run(cargo().args(["clippy", "--workspace", "--all-targets", "--locked", "--release", "--", "-D", "warnings"]))
    })?;
    let soniclet = build_soniclet()?;
    stage("VS images", || images::run(Some(&soniclet)).map(|_| ()))?;
    stage("unit tier", || run(cargo().args(["test", "--release", "--locked", "--workspace", "--lib", "--bins"])))?;
    stage("sim tier", || run(cargo().args(["test", "--release", "--locked", "--test", "sim"])))?;
    stage("integration tier", || {
        run(cargo()
            .args(["test", "--release", "--locked", "--test", "it", "--", "--ignored", "--test-threads=3"])
            .env("RUST_BACKTRACE", "1"))
    })?;
    let rootfs = stage("switch rootfs", vs::build_rootfs)?;
    stage("e2e tier", || {
        let switch = Switch::new("e2e");
        switch.down()?;
        switch.uninstall()?;
        let booted = vs::up_quiet(&switch, &rootfs);
        let result = booted.and_then(|secs| {
            eprintln!("ci: the e2e switch booted in {secs:.1}s");
            run(cargo().args(["test", "--release", "--locked", "--test", "e2e", "--", "--ignored", "--nocapture"]))
        });
        // Power it off whatever happened; a failure keeps its disk for a look.
        let down = switch.down();
        result.and(down)
    })?;
    stage("Kubernetes API tier", || match std::env::var_os("SONICLET_TEST_KUBECONFIG") {
        Some(_) => run(cargo().args(["test", "--release", "--locked", "--test", "k8s_api", "--", "--ignored"])),
        None => {
            // No registry here ships an API server: say so loudly, and go on.
            eprintln!(
                "\n!!! ci: the Kubernetes API tier did NOT run: no SONICLET_TEST_KUBECONFIG.\n\
                 !!! Its requests are pinned against kube's mock service in the unit tier; run it against\n\
                 !!! a real cluster with SONICLET_TEST_KUBECONFIG=<an administrator's kubeconfig> cargo xtask ci.\n"
            );
            Ok(())
        }
    })?;
    stage("ONIE installer", || onie::build(None).map(|_| ()))?;
    stage("ONIE tier", || {
        run(cargo()
            .args([
                "test",
                "-p",
                "xtask",
                "--release",
                "--locked",
                "--",
                "--ignored",
                "--test-threads=2",
                "onie_tests::",
            ])
            .env("RUST_BACKTRACE", "1"))
    })?;
    eprintln!("\nci: every tier passed in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}
