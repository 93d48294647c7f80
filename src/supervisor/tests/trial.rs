//! A new OS image's trial: committed once the switch is healthy, failed (and rebooted) at
//! its deadline; no `os` command that changes what boots during a trial.

use std::time::Duration;

use super::*;
use crate::os::onie::OnieMode;
use crate::supervisor::event::{InstallerSource, OsRequest};

fn on_trial(seconds: u64) -> OsBoot {
    OsBoot::OnTrial { image: "image-2".into(), deadline: Duration::from_secs(seconds) }
}

fn install() -> Step {
    Cmd(Command::Os(OsRequest::Install {
        source: InstallerSource::File("/tmp/onie-installer-x86_64".into()),
        require_signature: false,
        trial_deadline: None,
        force_platform: false,
    }))
}

#[test]
fn a_healthy_trial_is_committed_once_every_enabled_service_is_ready_and_not_before() {
    let mut world = World::with_os(sonic(), on_trial(300));
    run(
        &mut world,
        vec![Trace(&["os"]), Boot, Show("pmon"), install(), Ports(true)],
        "
        db OS_IMAGE_TABLE|image-2 trial=pending reason=healthy within 300 s, or the switch falls back
        start database #1
        db cold-start swss [APPL_DB,ASIC_DB]
        start swss #1
        start bgp #1
        start syncd #1
        pmon: waiting gen 0 restarts 0 \"waiting for PortInitDone\"
        reply 1 Conflict: image-2 is on trial (300 s left): it is committed once the switch is healthy, else the switch falls back; try again after
        start pmon #1
        start snmp #1
        os commit image-2
        db OS_IMAGE_TABLE|image-2 trial=committed reason=healthy: SYSTEM_READY UP, every enabled service ready
        ",
    );
    // Committed: the next install is the operator's to make.
    run(&mut world, vec![install()], "os Install { source: File(\"/tmp/onie-installer-x86_64\"), require_signature: false, trial_deadline: None, force_platform: false }\nreply 2 ok");
}

#[test]
fn a_trial_that_is_not_healthy_by_its_deadline_fails_with_what_was_not_ready_and_the_switch_reboots() {
    let mut world = World::with_os(sonic(), on_trial(120));
    world.step(Image("swss:1", "sha256:swss-never", Behaviour::NeverReady));
    run(
        &mut world,
        vec![Boot, Ports(true), Trace(&["os"]), Mark, Advance(119_000), Mark, Advance(1_000), install()],
        "
        db OS_IMAGE_TABLE|image-2 trial=failed reason=not healthy within its trial's deadline: 2 of 6 enabled services ready; not ready: bgp (waiting for swss), snmp (waiting for swss), swss (running), syncd (waiting for swss)
        os fail trial image-2: not healthy within its trial's deadline: 2 of 6 enabled services ready; not ready: bgp (waiting for swss), snmp (waiting for swss), swss (running), syncd (waiting for swss)
        reply 1 Conflict: the image on trial failed; the switch is rebooting
        ",
    );
}

#[test]
fn a_fallback_found_at_start_is_reported_and_a_failed_commit_is_tried_again() {
    let mut world =
        World::with_os(sonic(), OsBoot::FellBack { image: "image-3".into(), reason: "a kernel panic".into() });
    run(
        &mut world,
        vec![Boot],
        "
        db OS_IMAGE_TABLE|image-3 trial=failed reason=a kernel panic
        start database #1
        db cold-start swss [APPL_DB,ASIC_DB]
        start swss #1
        start bgp #1
        start syncd #1
    ",
    );
    let mut world = World::with_os(sonic(), on_trial(300));
    world.fail_commit = true;
    run(
        &mut world,
        vec![Trace(&["os"]), Boot, Ports(true), Mark, Advance(9_000), Mark, Advance(1_000)],
        "
        os commit image-2
        db OS_IMAGE_TABLE|image-2 trial=committed reason=healthy: SYSTEM_READY UP, every enabled service ready
    ",
    );
}

#[test]
fn booting_into_onie_reboots_once_answered_and_a_listing_changes_nothing() {
    let mut world = World::new(sonic());
    run(
        &mut world,
        vec![
            Boot,
            Trace(&["os"]),
            Mark,
            Cmd(Command::Os(OsRequest::Onie(OnieMode::Rescue))),
            Cmd(Command::Os(OsRequest::List)),
        ],
        "
        os Onie(Rescue)
        reply 1 ok
        os reboot into ONIE (rescue mode), as asked
        os List
        reply 2 ok
        ",
    );
}
