//! `cargo xtask vs`: the virtual switch on an embedded default, booted with systemd.
//!
//! - `cargo xtask vs` builds what changed (soniclet, the VS images, the rootfs), boots the
//!   switch under systemd-nspawn, waits until soniclet has every NOS service ready and shows
//!   `soniclet status` from inside. Run again, it keeps a running switch, or reboots it onto
//!   a new build.
//! - `cargo xtask vs --exec 'CMD'` runs CMD inside the running switch (bash, from the same
//!   directory: the checkout is visible at the same path) and returns its exit code.
//! - `cargo xtask vs --down` powers it off.
//! - `--name NAME` drives another switch beside the default one (the e2e tests use `e2e`).
//! - `--fresh` reinstalls the switch's disk from the rootfs before booting.
//! - The default topology: host namespaces `h1` and `h2` (`<name>-h1`, `<name>-h2` for another
//!   switch) cabled by veth to Ethernet0 and Ethernet4, `eth1` on the host side.
//! - `--link PORT=SWITCH:PORT` cables a port of this switch to a port of another one before
//!   it boots, so a small fabric runs on one machine.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::images;
use crate::rootfs::{self, Rootfs};
use crate::switch::Switch;
use crate::util::{build_soniclet, ensure_packages, is_root, PREREQUISITES};

/// Builds soniclet, the VS images and the rootfs, each only where something changed.
pub fn build_rootfs() -> Result<Rootfs> {
    ensure_packages(PREREQUISITES)?;
    let soniclet = build_soniclet()?;
    let built = images::run(Some(&soniclet))?;
    let archives: Vec<_> = built.into_iter().map(|(_, path, _)| path).collect();
    rootfs::build(&soniclet, &archives)
}

pub fn run_task(args: &[String]) -> Result<u8> {
    let mut exec = None;
    let mut down = false;
    let mut fresh = false;
    let mut name = "vs".to_owned();
    let mut links = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--exec" => exec = Some(iter.next().context("--exec needs a command")?.clone()),
            "--down" => down = true,
            "--fresh" => fresh = true,
            "--name" => name = iter.next().context("--name needs a name")?.clone(),
            "--link" => links.push(iter.next().context("--link needs PORT=SWITCH:PORT")?.clone()),
            other => bail!(
                "unknown vs option {other:?}: use --exec 'CMD', --down, --fresh, --name NAME or --link PORT=SWITCH:PORT"
            ),
        }
    }
    if !is_root() {
        bail!("the virtual switch needs root (systemd-nspawn, network namespaces): run `sudo cargo xtask vs`");
    }
    let switch = Switch::new(&name);
    if down {
        switch.down()?;
        println!("virtual switch {name} stopped (its disk is kept in {})", switch.root().display());
        return Ok(0);
    }
    if let Some(command) = exec {
        let status = switch.command(&command)?.status().context("cannot run nsenter")?;
        return Ok(status.code().map_or(1, |c| c as u8));
    }
    if fresh {
        switch.down()?;
        switch.uninstall()?;
    }
    for link in &links {
        let parsed = link.split_once('=').and_then(|(port, rest)| Some((port, rest.split_once(':')?)));
        let Some((port, (other, other_port))) = parsed else {
            bail!("--link {link:?}: write PORT=SWITCH:PORT, e.g. --link Ethernet8=vs:Ethernet8");
        };
        if other == name {
            bail!("--link {link:?}: a switch is not cabled to itself");
        }
        if switch.leader().is_some() {
            bail!("--link: the switch {name} runs; cable it before it boots (--down first)");
        }
        switch.link(port, &Switch::new(other), other_port)?;
    }
    up(&switch)?;
    Ok(0)
}

/// Boots the switch (or keeps it) and waits for every service; returns the seconds it took.
pub fn up_quiet(switch: &Switch, rootfs: &Rootfs) -> Result<f64> {
    if switch.leader().is_some() {
        if switch.is_current(rootfs) {
            eprintln!("vs: the switch {} is running this build", switch.name);
        } else {
            eprintln!("vs: the switch {} runs an older build; powering it off to install this one", switch.name);
            switch.down()?;
        }
    }
    switch.install(rootfs)?;
    let started = Instant::now();
    switch.boot()?;
    eprintln!("vs: booting (systemd-nspawn, log {})", switch.log().display());
    switch.wait_ready(Duration::from_secs(300))?;
    Ok(started.elapsed().as_secs_f64())
}

fn up(switch: &Switch) -> Result<()> {
    let rootfs = build_rootfs()?;
    let secs = up_quiet(switch, &rootfs)?;
    eprintln!("vs: every enabled service is ready ({secs:.1}s)\n");
    let status = switch.command("soniclet status")?.status()?;
    if !status.success() {
        bail!("soniclet status failed inside the switch");
    }
    let name = if switch.name == "vs" { String::new() } else { format!(" --name {}", switch.name) };
    let hosts = switch.hosts();
    println!(
        "\nThe virtual switch is up: systemd boots it under systemd-nspawn, soniclet runs its services.\n\
         \x20 run a command:  cargo xtask vs{name} --exec 'systemctl status swss'\n\
         \x20 get a shell:    cargo xtask vs{name} --exec bash\n\
         \x20 hosts:          {h1} on {p1}, {h2} on {p2} (eth1):  ip netns exec {h1} ping ...\n\
         \x20 first intent:   cargo xtask vs{name} --exec 'soniclet intent apply tests/fixtures/vlan10.yaml'\n\
         \x20 stop it:        cargo xtask vs{name} --down",
        h1 = hosts[0].0,
        p1 = hosts[0].1,
        h2 = hosts[1].0,
        p2 = hosts[1].1,
    );
    Ok(())
}
