//! `cargo xtask vs`: the virtual switch on an embedded default.
//!
//! - `cargo xtask vs` builds what is missing, starts a private containerd and the soniclet
//!   daemon, imports the VS images, waits for every service and shows `soniclet status`.
//!   Run again, it starts only what is not running; the daemon adopts the rest.
//! - `cargo xtask vs --exec 'CMD'` runs CMD in the switch's network namespace with
//!   `SONICLET_SOCKET` set and `soniclet` on PATH, and returns its exit code.
//! - `cargo xtask vs --down` stops every service, the daemon and containerd.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::images;
use crate::lab::Lab;
use crate::util::{build_soniclet, ensure_packages, is_root, project_root, run, PREREQUISITES};

pub fn lab() -> Lab {
    Lab {
        data: PathBuf::from("/var/lib/soniclet-vs"),
        run_dir: PathBuf::from("/run/soniclet-vs"),
        logs: PathBuf::from("/var/log/soniclet-vs"),
        netns: "soniclet-vs".to_owned(),
        namespace: "sonic".to_owned(),
        services: project_root().join("services"),
        soniclet: project_root().join("target/release/soniclet"),
    }
}

pub fn run_task(args: &[String]) -> Result<u8> {
    let mut exec = None;
    let mut down = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--exec" => exec = Some(iter.next().context("--exec needs a command")?.clone()),
            "--down" => down = true,
            other => bail!("unknown vs option {other:?}: use --exec 'CMD' or --down"),
        }
    }
    if !is_root() {
        bail!("the virtual switch needs root (containerd, network namespaces): run `sudo cargo xtask vs`");
    }
    let lab = lab();
    if down {
        lab.down()?;
        println!("virtual switch stopped (data kept in {})", lab.data.display());
        return Ok(0);
    }
    if let Some(command) = exec {
        if !lab.daemon_running() {
            bail!("the virtual switch is not running: start it with `cargo xtask vs`");
        }
        let bin_dir = lab.soniclet.parent().unwrap_or(&lab.data).to_owned();
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let status = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", lab.netns))
            .args(["sh", "-c", &command])
            .env("SONICLET_SOCKET", lab.api_socket())
            .env("PATH", path)
            .status()
            .context("cannot run the command")?;
        return Ok(status.code().map_or(1, |c| c as u8));
    }
    up(&lab)?;
    Ok(0)
}

fn up(lab: &Lab) -> Result<()> {
    ensure_packages(PREREQUISITES)?;
    let soniclet = build_soniclet()?;
    let built = images::run(Some(&soniclet))?;
    lab.ensure_containerd()?;
    if lab.daemon_running() {
        eprintln!("vs: the daemon is running; it keeps its services");
    } else {
        let pid = lab.start_daemon()?;
        eprintln!("vs: daemon started (pid {pid}), log {}", lab.logs.join("soniclet.log").display());
    }
    let archives: Vec<String> = built.iter().map(|(_, path, _)| path.display().to_string()).collect();
    run(lab.cli().args(["image", "import"]).args(&archives))?;
    eprintln!("vs: waiting for every service to be ready");
    run(lab.cli().args(["wait", "--timeout", "180"]))?;
    run(lab.cli().arg("status"))?;
    println!(
        "\nThe virtual switch is up. Its network namespace is {ns}.\n\
         \x20 run a command:   cargo xtask vs --exec 'soniclet status'\n\
         \x20 get a shell:     cargo xtask vs --exec sh\n\
         \x20 stop it:         cargo xtask vs --down",
        ns = lab.netns
    );
    Ok(())
}
