//! `cargo xtask bench vasic`: the virtual ASIC's programming rate and latency, on the full VS
//! set in a lab (a private containerd and daemon in a network namespace).
//!
//! - One `soniclet intent apply` of 10,000 /32 routes, to the moment all of them are in the
//!   switch's kernel FIB and in ASIC_STATE (target: 3 s or less on the 2-core box).
//! - The p50 and p99 of one route, from its APPL_DB write to its ASIC_STATE entry (target:
//!   p99 20 ms or less).
//! - The baseline, in the same run: the same 10,000 routes straight over rtnetlink.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::images;
use crate::lab::bench_lab;
use crate::lab::Lab;
use crate::metric::{median, Metric};
use crate::util::{build_bench, build_soniclet, output, run};

const ROUTES: usize = 10_000;
const NEXT_HOP: &str = "10.0.0.2";

const BASE: &str =
    "ports:\n  Ethernet0: { admin_status: up }\ninterfaces:\n  Ethernet0: { addresses: [10.0.0.1/24] }\n";

fn routes_doc() -> String {
    let mut doc = format!("{BASE}routes:\n");
    for i in 0..ROUTES {
        doc.push_str(&format!(
            "  - {{ prefix: 10.100.{}.{}/32, nexthops: [{{ ip: {NEXT_HOP}, ifname: Ethernet0 }}] }}\n",
            i / 256,
            i % 256
        ));
    }
    doc
}

/// The virtual ASIC's routes in the kernel (10.100/16) and in ASIC_STATE.
fn counts(lab: &Lab) -> Result<(usize, usize)> {
    let kernel = output(Command::new("ip").args(["-n", &lab.netns, "-4", "route", "show", "proto", "250"]))?;
    let in_kernel = kernel.lines().filter(|l| l.starts_with("10.100.")).count();
    let socket = lab.sonic_root().join("var/run/redis/redis.sock");
    let asic = output(Command::new("redis-cli").arg("-s").arg(&socket).args([
        "-n",
        "1",
        "eval",
        "return #redis.call('keys', ARGV[1])",
        "0",
        "ASIC_STATE:SAI_OBJECT_TYPE_ROUTE_ENTRY:{\"dest\":\"10.100.*",
    ]))?;
    Ok((in_kernel, asic.trim().parse().context("redis-cli count")?))
}

pub fn vasic(repeat: usize) -> Result<Vec<Metric>> {
    let soniclet = build_soniclet()?;
    let built = images::run(Some(&soniclet))?;
    let lab = bench_lab(&soniclet);
    let host = format!("{}-h", lab.netns);
    let result = vasic_in(&lab, &host, &built, repeat);
    let _ = lab.down();
    let _ = Command::new("ip").args(["netns", "del", &host]).status();
    let _ = std::fs::remove_dir_all(lab.data.parent().unwrap_or(&lab.data));
    result
}

fn vasic_in(
    lab: &Lab,
    host: &str,
    built: &[(String, std::path::PathBuf, String)],
    repeat: usize,
) -> Result<Vec<Metric>> {
    let quiet = Stdio::null;
    let etc_sonic = lab.sonic_root().join("etc/sonic");
    std::fs::create_dir_all(&etc_sonic)?;
    std::fs::write(
        etc_sonic.join("config_db.json"),
        r#"{"DEVICE_METADATA": {"localhost": {"mac": "52:54:00:12:34:56"}},
            "PORT": {"Ethernet0": {"lanes": "0", "speed": "100000", "admin_status": "up"},
                     "Ethernet4": {"lanes": "4", "speed": "100000", "admin_status": "up"}}}"#,
    )?;
    // A host on Ethernet0 owns the next hop, so the routes lead somewhere real.
    lab.ensure_netns()?;
    run(Command::new("ip").args(["netns", "add", host]))?;
    let (a, b) = (format!("bv{}a", std::process::id()), format!("bv{}b", std::process::id()));
    run(Command::new("ip").args(["link", "add", &a, "type", "veth", "peer", "name", &b]))?;
    run(Command::new("ip").args(["link", "set", &b, "netns", &lab.netns, "name", "Ethernet0"]))?;
    run(Command::new("ip").args(["link", "set", &a, "netns", host, "name", "eth1"]))?;
    run(Command::new("ip").args(["-n", host, "link", "set", "eth1", "up"]))?;
    run(Command::new("ip").args(["-n", host, "addr", "add", &format!("{NEXT_HOP}/24"), "dev", "eth1"]))?;

    lab.ensure_containerd()?;
    lab.start_daemon()?;
    let archives: Vec<String> = built.iter().map(|(_, p, _)| p.display().to_string()).collect();
    run(lab.cli().args(["image", "import"]).args(&archives).stderr(quiet()))?;
    run(lab.cli().args(["wait", "--timeout", "180"]).stdout(quiet()))?;

    let dir = lab.data.parent().context("lab dir")?.to_owned();
    let (base, many) = (dir.join("base.yaml"), dir.join("routes.yaml"));
    std::fs::write(&base, BASE)?;
    std::fs::write(&many, routes_doc())?;
    run(lab.cli().args(["intent", "apply", "--wait"]).arg(&base).stdout(quiet()))?;

    let (mut totals, mut kernels) = (Vec::new(), Vec::new());
    for round in 0..repeat.max(1) {
        let started = Instant::now();
        run(lab.cli().args(["intent", "apply"]).arg(&many).stdout(quiet()))?;
        let mut kernel_done = None;
        loop {
            let (kernel, asic) = counts(lab)?;
            if kernel >= ROUTES && kernel_done.is_none() {
                kernel_done = Some(started.elapsed());
            }
            if kernel >= ROUTES && asic >= ROUTES {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("after 120 s only {kernel} routes are in the kernel and {asic} in ASIC_STATE");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let total = started.elapsed().as_secs_f64();
        let kernel = kernel_done.map_or(total, |d| d.as_secs_f64());
        eprintln!(
            "bench: round {}: {ROUTES} routes in the kernel after {kernel:.2} s, in ASIC_STATE too after {total:.2} s",
            round + 1
        );
        totals.push(total);
        kernels.push(kernel);
        run(lab.cli().args(["intent", "apply"]).arg(&base).stdout(quiet()))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while counts(lab)? != (0, 0) {
            if Instant::now() > deadline {
                bail!("the routes were not removed within 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let bench = build_bench()?;
    let socket = lab.sonic_root().join("var/run/redis/redis.sock");
    let latency: serde_json::Value =
        serde_json::from_str(&output(Command::new(&bench).arg("route-latency").arg("--socket").arg(&socket).args([
            "--samples",
            "300",
            "--ifname",
            "Ethernet0",
            "--nexthop",
            NEXT_HOP,
        ]))?)?;
    let raw: serde_json::Value =
        serde_json::from_str(&output(Command::new("ip").args(["netns", "exec", &lab.netns]).arg(&bench).args([
            "netlink-routes",
            "--count",
            &ROUTES.to_string(),
            "--dev",
            "Ethernet0",
            "--nexthop",
            NEXT_HOP,
        ]))?)?;
    let raw_secs = raw["seconds"].as_f64().context("baseline seconds")?;
    Ok(vec![
        Metric::new(
            "intent apply of 10k /32 routes to kernel FIB + ASIC_STATE vs rtnetlink",
            median(&mut totals),
            "s",
            Some(raw_secs),
            "<= 3 s",
        ),
        Metric::new(
            "intent apply of 10k /32 routes to kernel FIB vs rtnetlink",
            median(&mut kernels),
            "s",
            Some(raw_secs),
            "",
        ),
        Metric::new(
            "one route, APPL_DB write to ASIC_STATE, p50",
            latency["p50_ms"].as_f64().context("p50")?,
            "ms",
            None,
            "",
        ),
        Metric::new(
            "one route, APPL_DB write to ASIC_STATE, p99",
            latency["p99_ms"].as_f64().context("p99")?,
            "ms",
            None,
            "<= 20 ms",
        ),
        Metric::new("10k /32 routes straight over rtnetlink (baseline)", raw_secs, "s", None, ""),
    ])
}
