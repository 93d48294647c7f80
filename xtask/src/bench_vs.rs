//! `cargo xtask bench systemd`: what the systemd facades cost, on a booted virtual switch.
//!
//! One switch (`--name bench`), one run. Each operation is timed inside the switch (`date`
//! around the command, so `nsenter` is not counted) through systemd, and beside it the same
//! operation done with the soniclet CLI:
//!
//! - boot: nspawn start to STATE_DB `SYSTEM_READY|SYSTEM_STATE` UP, to every enabled unit
//!   active (systemd's view), and to every service ready (`soniclet status`, the CLI's view);
//! - `systemctl restart bgp` (returns once bgp's unit is READY) beside `soniclet restart bgp`
//!   (returns once bgp is ready). systemctl's own fixed cost (its process, the job, the fork
//!   and kill of a main process) is measured on an empty unit in the same switch, so that the
//!   facade's share can be told apart from what any systemd unit costs;
//! - `systemctl restart soniclet` until every service is ready again, beside stopping and
//!   starting the daemon by hand, without systemd.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::metric::{median, Metric};
use crate::switch::Switch;
use crate::vs;

const FACADE_TARGET: &str = "ratio < 1.10";

/// The least a `systemctl restart` can cost: a unit whose main process is `sleep`.
const EMPTY_UNIT: &str = r#"mkdir -p /run/systemd/system
printf '[Unit]\nDescription=bench: an empty unit\n\n[Service]\nExecStart=/bin/sleep infinity\n' \
    >/run/systemd/system/soniclet-bench-empty.service
systemctl daemon-reload && systemctl start soniclet-bench-empty"#;

/// Runs `script` inside the switch between two clock readings; milliseconds.
fn timed(switch: &Switch, script: &str) -> Result<f64> {
    let out = switch.sh(&format!("s=$(date +%s%N); {script} >/dev/null; e=$(date +%s%N); echo $((e - s))"))?;
    let nanos: f64 = out.trim().parse().with_context(|| format!("timing {script:?}: {out:?}"))?;
    Ok(nanos / 1e6)
}

/// Milestones of one boot, in milliseconds after the nspawn start.
struct Boot {
    system_ready: f64,
    units_active: f64,
    cli_ready: f64,
}

/// One poll inside the switch, one line each: SYSTEM_READY's status, how many of `$UNITS`
/// are active, and `soniclet status`'s summary (`... N/M enabled services ready`).
const POLL: &str = r#"
echo "$(soniclet db STATE_DB hget 'SYSTEM_READY|SYSTEM_STATE' Status 2>/dev/null)"
systemctl show -p ActiveState --value $UNITS 2>/dev/null | grep -cx active
soniclet status 2>/dev/null | head -1
"#;

/// Whether `soniclet status`'s summary says every enabled service is ready.
fn all_ready(summary: &str) -> bool {
    summary
        .split_whitespace()
        .find_map(|word| word.split_once('/'))
        .is_some_and(|(ready, enabled)| ready == enabled && ready.parse::<u32>().is_ok_and(|n| n > 0))
}

fn boot_once(switch: &Switch, units: &[String]) -> Result<Boot> {
    let started = Instant::now();
    switch.boot()?;
    let script =
        format!("UNITS='{}'; {POLL}", units.iter().map(|u| format!("{u}.service")).collect::<Vec<_>>().join(" "));
    let (mut system_ready, mut units_active, mut cli_ready) = (None, None, None);
    let deadline = started + Duration::from_secs(180);
    while system_ready.is_none() || units_active.is_none() || cli_ready.is_none() {
        if Instant::now() > deadline {
            bail!("the switch did not come up within 180 s; see {}", switch.log().display());
        }
        let Ok(mut cmd) = switch.command(&script) else { continue };
        let out = cmd.output()?;
        let at = started.elapsed().as_secs_f64() * 1000.0;
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        if let [sys, active, summary] = lines.as_slice() {
            if sys.trim() == "UP" && system_ready.is_none() {
                system_ready = Some(at);
            }
            if active.trim().parse::<usize>().ok() == Some(units.len()) && units_active.is_none() {
                units_active = Some(at);
            }
            if all_ready(summary) && cli_ready.is_none() {
                cli_ready = Some(at);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Boot {
        system_ready: system_ready.unwrap_or_default(),
        units_active: units_active.unwrap_or_default(),
        cli_ready: cli_ready.unwrap_or_default(),
    })
}

fn enabled_units(switch: &Switch) -> Result<Vec<String>> {
    let status: serde_json::Value = serde_json::from_str(&switch.sh("soniclet status --json")?)?;
    Ok(status["services"]
        .as_array()
        .context("status has services")?
        .iter()
        .filter(|s| s["enabled"].as_bool() == Some(true))
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect())
}

/// Starts the daemon by hand inside the switch (not as a unit) and waits until every service
/// is ready again.
const DAEMON_BY_HAND: &str =
    "setsid -f soniclet daemon --config /etc/soniclet/config.toml >>/tmp/bench-daemon.log 2>&1 \
     && until soniclet wait --timeout 30 >/dev/null 2>&1; do sleep 0.005; done";
const STOP_DAEMON_BY_HAND: &str =
    "p=$(pgrep -xf 'soniclet daemon --config /etc/soniclet/config.toml'); kill $p; while kill -0 $p 2>/dev/null; do sleep 0.005; done";

pub fn systemd(repeat: usize) -> Result<Vec<Metric>> {
    let rootfs = vs::build_rootfs()?;
    let switch = Switch::new("bench");
    switch.down()?;
    switch.uninstall()?;
    // The first boot imports the images; the measured boots are the ordinary ones.
    eprintln!("bench: first boot of the bench switch (imports the images)");
    vs::up_quiet(&switch, &rootfs)?;
    let units = enabled_units(&switch)?;
    switch.down()?;

    let (mut system_ready, mut units_active, mut cli_ready) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..repeat {
        let boot = boot_once(&switch, &units)?;
        eprintln!(
            "bench: boot {}: SYSTEM_READY {:.0} ms, units active {:.0} ms, soniclet ready {:.0} ms",
            round + 1,
            boot.system_ready,
            boot.units_active,
            boot.cli_ready
        );
        system_ready.push(boot.system_ready);
        units_active.push(boot.units_active);
        cli_ready.push(boot.cli_ready);
        if round + 1 < repeat {
            switch.down()?;
        }
    }

    switch.sh(EMPTY_UNIT)?;
    let (mut systemctl_bgp, mut cli_bgp, mut systemctl_empty) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeat.max(5) {
        systemctl_bgp.push(timed(&switch, "systemctl restart bgp")?);
        cli_bgp.push(timed(&switch, "soniclet restart bgp")?);
        systemctl_empty.push(timed(&switch, "systemctl restart soniclet-bench-empty")?);
    }

    let (mut systemctl_daemon, mut hand_daemon) = (Vec::new(), Vec::new());
    for _ in 0..repeat.max(5) {
        systemctl_daemon.push(timed(&switch, "systemctl restart soniclet && soniclet wait --timeout 60")?);
        // Masked for the while, so that no unit's Wants= starts it beside the one by hand.
        switch
            .sh(&format!("systemctl stop soniclet && systemctl mask --runtime --quiet soniclet && {DAEMON_BY_HAND}"))?;
        hand_daemon.push(timed(&switch, &format!("{STOP_DAEMON_BY_HAND} && {DAEMON_BY_HAND}"))?);
        switch.sh(&format!(
            "{STOP_DAEMON_BY_HAND} && systemctl unmask --runtime --quiet soniclet && systemctl start soniclet \
             && soniclet wait --timeout 60 >/dev/null"
        ))?;
    }
    switch.down()?;

    let cli_boot = median(&mut cli_ready);
    let cli_bgp = median(&mut cli_bgp);
    let systemctl_bgp = median(&mut systemctl_bgp);
    let systemctl_empty = median(&mut systemctl_empty);
    let hand = median(&mut hand_daemon);
    let systemctl_daemon = median(&mut systemctl_daemon);
    Ok(vec![
        Metric::new("vs boot to SYSTEM_READY (nspawn start)", median(&mut system_ready), "ms", None, ""),
        Metric::new(
            "vs boot to every unit active (systemd) vs ready (soniclet)",
            median(&mut units_active),
            "ms",
            Some(cli_boot),
            FACADE_TARGET,
        ),
        Metric::new("systemctl restart bgp vs soniclet restart bgp", systemctl_bgp, "ms", Some(cli_bgp), ""),
        Metric::new("systemctl restart of an empty unit (systemd's fixed cost)", systemctl_empty, "ms", None, ""),
        Metric::new(
            "systemctl restart bgp less systemd's fixed cost vs soniclet restart bgp",
            systemctl_bgp - systemctl_empty,
            "ms",
            Some(cli_bgp),
            FACADE_TARGET,
        ),
        Metric::new("systemctl restart soniclet vs daemon restart by hand", systemctl_daemon, "ms", Some(hand), ""),
        Metric::new(
            "systemctl restart soniclet less systemd's fixed cost vs daemon restart by hand",
            systemctl_daemon - systemctl_empty,
            "ms",
            Some(hand),
            FACADE_TARGET,
        ),
    ])
}
