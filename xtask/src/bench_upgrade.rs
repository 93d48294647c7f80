//! `cargo xtask bench upgrade`: the downtime of a per-service upgrade (old container
//! stopped to new one ready) beside a plain `soniclet restart` of the same service in the
//! same run, and the time from a failed health gate to the old image ready again.
//!
//! Both downtimes are the daemon's own figure for the same two moments (its stop of the old
//! container, the readiness of the next), so the CLI's and the import's costs are left out
//! of both alike.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::images;
use crate::lab::on_booted_lab;
use crate::lab::Lab;
use crate::metric::{median, Metric};
use crate::util::{output, run};

const SERVICE: &str = "bgp";

pub fn upgrade(repeat: usize) -> Result<Vec<Metric>> {
    on_booted_lab(|lab| upgrade_in(lab, repeat))
}

fn service_status(lab: &Lab) -> Result<Value> {
    let status: Value = serde_json::from_str(&output(lab.cli().args(["status", "--json"]))?)?;
    status["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == SERVICE))
        .cloned()
        .context("no bgp in the status")
}

fn history(lab: &Lab) -> Result<Vec<Value>> {
    let history: Value = serde_json::from_str(&output(lab.cli().args(["history", SERVICE, "--json"]))?)?;
    history.as_array().cloned().context("the history is not a list")
}

fn last_change(lab: &Lab) -> Result<Value> {
    history(lab)?.pop().context("no history entry")
}

fn upgrade_in(lab: &Lab, repeat: usize) -> Result<Vec<Metric>> {
    let quiet = || std::process::Stdio::null();
    let variants = images::images_dir().join("variants");
    let v2 = variants.join("docker-fpm-frr-v2.tar").display().to_string();
    let broken = variants.join("docker-fpm-frr-exits.tar").display().to_string();

    // Warm-up, not measured: the first upgrade imports v2 and pins both images by digest.
    run(lab.cli().args(["upgrade", SERVICE, "--image", &v2, "--settle", "0"]).stdout(quiet()).stderr(quiet()))?;
    let (mut restarts, mut upgrades, mut recoveries) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..repeat.max(1) {
        std::thread::sleep(Duration::from_millis(300));
        run(lab.cli().args(["restart", SERVICE]).stdout(quiet()))?;
        let restart = service_status(lab)?["downtime_ms"].as_f64().context("restart downtime")?;
        restarts.push(restart);

        // Back and forth between the two pinned images: the one not running is the target.
        std::thread::sleep(Duration::from_millis(300));
        let status = service_status(lab)?;
        let current = status["image_digest"].as_str().unwrap_or_default().to_owned();
        let last = history(lab)?
            .into_iter()
            .rfind(|e| e["result"] == "succeeded")
            .context("no successful upgrade in the history")?;
        let other = [&last["from"], &last["to"]]
            .into_iter()
            .find(|pin| pin["digest"] != current.as_str())
            .and_then(|pin| pin["reference"].as_str())
            .context("no other pinned image")?
            .to_owned();
        run(lab.cli().args(["upgrade", SERVICE, "--image", &other, "--settle", "0"]).stdout(quiet()).stderr(quiet()))?;
        let done = last_change(lab)?;
        if done["result"] != "succeeded" {
            bail!("upgrade {i} did not succeed: {done}");
        }
        upgrades.push(done["downtime_ms"].as_f64().context("upgrade downtime")?);

        // A failed gate: an image that exits at once, rolled back by the daemon.
        std::thread::sleep(Duration::from_millis(300));
        let _ = output(lab.cli().args(["upgrade", SERVICE, "--image", &broken, "--settle", "1"]));
        let failed = last_change(lab)?;
        if failed["result"] != "rolled_back" {
            bail!("the broken image was not rolled back: {failed}");
        }
        recoveries.push(failed["recovery_ms"].as_f64().context("recovery")?);
        eprintln!(
            "bench: run {} of {repeat}: restart down {restart:.1} ms, upgrade down {:.1} ms, failed gate to old ready {:.1} ms",
            i + 1,
            upgrades[i],
            recoveries[i]
        );
    }
    run(lab.cli().args(["shutdown", "--stop-services"]).stdout(quiet()))?;
    let restart = median(&mut restarts);
    Ok(vec![
        Metric::new(
            "bgp upgrade downtime (old stopped to new ready)",
            median(&mut upgrades),
            "ms",
            Some(restart),
            "<= 1.0x; baseline: `soniclet restart bgp`, same run",
        ),
        Metric::new(
            "failed health gate to the old image ready again",
            median(&mut recoveries),
            "ms",
            Some(restart),
            "baseline: restart downtime",
        ),
    ])
}
