//! soniclet's build automation: `cargo xtask <task>`.
//!
//! | task | what it does |
//! |---|---|
//! | `images` | builds the VS image archives into `target/images/` |
//! | `rootfs` | builds the switch's root filesystem into `target/vs/rootfs/` |
//! | `vs [--exec CMD] [--down] [--fresh] [--name NAME] [--link PORT=SWITCH:PORT]` | boots (or drives, or stops) the virtual switch under systemd-nspawn |
//! | `onie [--version V]` | builds the ONIE NOS installer into `target/onie/` |
//! | `ci` | installs test prerequisites and runs every test tier (`.ci/run` calls it) |
//! | `bench <boot, appl-db, lifecycle, systemd, vasic, upgrade, onie, k8s> [--json FILE]` | runs a benchmark and prints its table |
//! | `deps` | installs the Debian packages soniclet needs |

mod bench;
mod bench_k8s;
mod bench_onie;
mod bench_upgrade;
mod bench_vasic;
mod bench_vs;
mod ci;
mod debs;
mod images;
mod kernel;
mod lab;
mod metric;
mod onie;
mod onie_env;
#[cfg(test)]
mod onie_tests;
mod rootfs;
mod switch;
mod tidy;
mod util;
mod vs;

use anyhow::{bail, Result};

const USAGE: &str = "usage: cargo xtask <images | rootfs | vs [--exec CMD] [--down] [--fresh] [--name NAME] [--link PORT=SWITCH:PORT] | onie [--version V] | ci | \
bench <boot | appl-db | lifecycle | systemd | vasic | upgrade | onie | k8s> [--json FILE] | deps>";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<u8> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(task) = args.first() else { bail!("{USAGE}") };
    let rest = &args[1..];
    match task.as_str() {
        "images" => {
            util::ensure_packages(util::PREREQUISITES)?;
            let soniclet = util::build_soniclet()?;
            images::run(Some(&soniclet))?;
            Ok(0)
        }
        "rootfs" => vs::build_rootfs().map(|_| 0),
        "vs" => vs::run_task(rest),
        "onie" => onie::run_task(rest),
        "ci" => ci::run_task(rest).map(|()| 0),
        "bench" => bench::run_task(rest).map(|()| 0),
        "deps" => util::ensure_packages(util::PREREQUISITES).map(|()| 0),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(0)
        }
        other => bail!("unknown task {other:?}\n{USAGE}"),
    }
}
