//! Image changes through each outcome, their refusals, and release upgrades.

use std::time::Duration;

use super::*;
use crate::images::release::{Release, ReleaseEntry};
use crate::state::store::ChangeKind;
use crate::supervisor::event::ChangeRequest;

fn upgrade(service: &str, reference: &str) -> Step {
    Cmd(Command::Change(ChangeRequest {
        service: service.to_owned(),
        kind: ChangeKind::Upgrade,
        source: Some(ImageSource::Stored(reference.to_owned())),
        name: None,
        digest: None,
        warm: false,
        timeout: Some(Duration::from_secs(20)),
        settle: Some(Duration::from_secs(5)),
    }))
}

fn upgrade_warm(service: &str, reference: &str) -> Step {
    let Cmd(Command::Change(request)) = upgrade(service, reference) else { unreachable!() };
    Cmd(Command::Change(ChangeRequest { warm: true, ..request }))
}

fn rollback(service: &str) -> Step {
    Cmd(Command::Change(ChangeRequest {
        service: service.to_owned(),
        kind: ChangeKind::Rollback,
        source: None,
        name: None,
        digest: None,
        warm: false,
        timeout: None,
        settle: Some(Duration::from_secs(5)),
    }))
}

fn booted() -> Vec<Step> {
    vec![
        Image("bgp:2", "sha256:b2", Behaviour::Ready),
        Image("bgp:exits", "sha256:bx", Behaviour::Exits(3)),
        Image("bgp:unready", "sha256:bu", Behaviour::NeverReady),
        Image("bgp:fragile", "sha256:bf", Behaviour::LosesCritical("bgpd", 2_000)),
        Image("swss:2", "sha256:s2", Behaviour::Ready),
        Boot,
        Ports(true),
        Trace(&["prepare", "unit", "upgrade"]),
        Mark,
    ]
}

fn with(mut steps: Vec<Step>, more: impl IntoIterator<Item = Step>) -> Vec<Step> {
    steps.extend(more);
    steps
}

#[test]
fn an_upgrade_that_is_ready_and_settles_succeeds_and_is_pinned_by_digest() {
    let mut world = check(
        sonic(),
        with(booted(), [upgrade("bgp", "bgp:2"), Show("bgp"), Advance(5_000), Show("bgp")]),
        "
        db upgrade bgp preparing
        prepare bgp
        db upgrade bgp switching
        stop bgp cold
        start bgp #2 (prepared)
        bgp: running ready gen 2 restarts 0
        history bgp succeeded
        db upgrade bgp succeeded
        reply 1 ok bgp succeeded
        bgp: running ready gen 2 restarts 0
        ",
    );
    let record = &world.disk().services["bgp"];
    assert_eq!(record.image.as_ref().unwrap().reference, "bgp@sha256:b2");
    assert_eq!(record.previous.as_ref().unwrap().reference, "bgp@sha256:bgp:1");
    assert!(world.disk().change.is_none());
    // A rollback goes back to the previous pin, and toggles.
    run(
        &mut world,
        vec![Mark, rollback("bgp"), Advance(5_000)],
        "
        db upgrade bgp preparing
        prepare bgp
        db upgrade bgp switching
        stop bgp cold
        start bgp #3 (prepared)
        history bgp succeeded
        db upgrade bgp succeeded
        reply 2 ok bgp succeeded
        ",
    );
    assert_eq!(world.running_image("bgp").as_deref(), Some("sha256:bgp:1"));
    assert_eq!(world.disk().services["bgp"].previous.as_ref().unwrap().digest, "sha256:b2");
}

#[test]
fn an_image_that_exits_at_once_is_rolled_back_by_itself() {
    let world = check(
        sonic(),
        with(booted(), [upgrade("bgp", "bgp:exits"), Show("bgp")]),
        "
        db upgrade bgp preparing
        prepare bgp
        db upgrade bgp switching
        stop bgp cold
        start bgp #2 (prepared)
        db upgrade bgp rolling_back
        stop bgp cold
        start bgp #3
        history bgp rolled back: the new container exited with code 3
        db upgrade bgp rolled_back
        reply 1 ok bgp rolled back
        bgp: running ready gen 3 restarts 0 \"rolled back from bgp@sha256:bx: the new container exited with code 3\"
        ",
    );
    assert_eq!(world.running_image("bgp").as_deref(), Some("sha256:bgp:1"));
    assert_eq!(world.disk().services["bgp"].image.as_ref().unwrap().digest, "sha256:bgp:1");
}

#[test]
fn an_image_never_ready_fails_the_gate_at_its_timeout() {
    check(
        sonic(),
        with(booted(), [upgrade("bgp", "bgp:unready"), Mark, Advance(19_999), Show("bgp"), Advance(1)]),
        "
        bgp: running gen 2 restarts 0
        db upgrade bgp rolling_back
        stop bgp cold
        start bgp #3
        history bgp rolled back: not ready within 20s
        db upgrade bgp rolled_back
        reply 1 ok bgp rolled back
        ",
    );
}

#[test]
fn an_image_that_loses_a_critical_process_while_settling_is_rolled_back() {
    check(
        sonic(),
        with(booted(), [upgrade("bgp", "bgp:fragile"), Mark, Advance(2_000)]),
        "
        db upgrade bgp rolling_back
        stop bgp cold
        start bgp #3
        history bgp rolled back: critical process bgpd exited
        db upgrade bgp rolled_back
        reply 1 ok bgp rolled back
        ",
    );
}

#[test]
fn a_prepare_that_fails_aborts_the_change_and_leaves_the_service_alone() {
    let world = check(
        sonic(),
        with(booted(), [FailPrepare, upgrade("bgp", "bgp:2"), Show("bgp")]),
        "
        db upgrade bgp preparing
        prepare bgp
        history bgp aborted: the new image's spec cannot be built
        db upgrade bgp aborted
        reply 1 ok bgp aborted
        bgp: running ready gen 1 restarts 0
        ",
    );
    assert_eq!(world.disk().services["bgp"].image, None, "the pins are as they were");
}

#[test]
fn changes_are_refused_before_anything_is_touched() {
    let world = check(
        sonic(),
        with(
            booted(),
            [
                upgrade("nosuch", "bgp:2"),
                upgrade("bgp", "bgp:9"),
                upgrade("bgp", "bgp:1"),
                rollback("bgp"),
                stop("snmp"),
                upgrade("snmp", "bgp:2"),
            ],
        ),
        "
        reply 1 NotFound: unknown service \"nosuch\"; known services: bgp, database, pmon, snmp, swss, syncd
        reply 2 NotFound: Stored(\"bgp:9\") is not there
        reply 3 BadRequest: bgp already runs sha256:bgp:1
        reply 4 NotFound: bgp has no previous image to roll back to (see `soniclet history bgp`)
        stop snmp cold
        reply 5 ok snmp stopped
        reply 6 Conflict: snmp is stopped and not ready; start it (`soniclet start snmp`) before changing its image
        ",
    );
    assert!(world.history.is_empty(), "refusals are no history");
}

#[test]
fn one_change_at_a_time_and_the_service_under_change_is_not_an_operators() {
    check(
        sonic(),
        with(
            booted(),
            [
                upgrade("bgp", "bgp:unready"),
                Mark,
                upgrade("swss", "swss:2"),
                restart("bgp"),
                stop("bgp"),
                Cmd(Command::Reload { config: Default::default(), force: true }),
            ],
        ),
        "
        reply 2 Conflict: another upgrade or rollback is in progress; wait for it to end
        reply 3 Conflict: an image change of bgp is in progress; wait for it to end (`soniclet history bgp`)
        reply 4 Conflict: an image change of bgp is in progress; wait for it to end (`soniclet history bgp`)
        reply 5 Conflict: an image change of bgp is in progress; wait for it to end
        ",
    );
}

#[test]
fn a_warm_upgrade_sets_the_warm_flag_stops_warm_and_leaves_its_peers_running() {
    let world = check(
        sonic(),
        with(booted(), [upgrade_warm("swss", "swss:2"), Advance(5_000), Show("syncd")]),
        "
        db upgrade swss preparing
        prepare swss
        db upgrade swss switching
        db warm swss Some(true)
        stop swss warm
        start swss #2 (prepared)
        history swss succeeded
        db upgrade swss succeeded
        db warm swss None
        reply 1 ok swss succeeded
        syncd: running ready gen 1 restarts 0
        ",
    );
    assert!(!world.warm.warm.contains_key("swss"), "the flag is as it was");
}

#[test]
fn a_cold_upgrade_of_swss_takes_its_group_along_as_a_restart_would() {
    check(
        sonic(),
        with(booted(), [upgrade("swss", "swss:2"), Advance(5_000)]),
        "
        db upgrade swss preparing
        prepare swss
        db upgrade swss switching
        stop bgp cold
        stop syncd cold
        stop swss cold
        db cold-start swss [APPL_DB,ASIC_DB]
        start swss #2 (prepared)
        start bgp #2
        start syncd #2
        history swss succeeded
        db upgrade swss succeeded
        reply 1 ok swss succeeded
        ",
    );
}

fn release(entries: &[(&str, &str, &str)]) -> Step {
    let entries = entries
        .iter()
        .map(|(service, image, digest)| ReleaseEntry {
            service: name(service),
            image: (*image).to_owned(),
            digest: (*digest).to_owned(),
            archive: None,
            warm: false,
        })
        .collect();
    Cmd(Command::Release {
        release: Release { name: "r1".into(), entries },
        timeout: None,
        settle: Some(Duration::from_secs(1)),
    })
}

#[test]
fn a_release_upgrades_one_service_at_a_time_and_skips_what_is_current_or_not_running() {
    let world = check(
        sonic(),
        with(
            booted(),
            [
                Trace(&["progress"]),
                stop("snmp"),
                release(&[
                    ("snmp", "bgp:2", "sha256:b2"),
                    ("bgp", "bgp:2", "sha256:b2"),
                    ("pmon", "pmon:1", "sha256:pmon:1"),
                ]),
                Advance(1_000),
            ],
        ),
        "
        stop snmp cold
        reply 1 ok snmp stopped
        progress 2: snmp: not running and ready; left as it is
        progress 2: bgp: upgrading to bgp:2 (sha256:b2)
        progress 2: upgrade bgp: preparing bgp@sha256:b2 (running bgp@sha256:bgp:1)
        db upgrade bgp preparing
        prepare bgp
        db upgrade bgp switching
        progress 2: bgp: prepared; stopping the old container (cold)
        stop bgp cold
        start bgp #2 (prepared)
        progress 2: bgp: new container started (pid 107); waiting up to 30s for ready
        progress 2: bgp: ready; settling for 1s
        history bgp succeeded
        db upgrade bgp succeeded
        progress 2: bgp succeeded
        progress 2: pmon: already runs sha256:pmon:1
        reply 2 ok release upgraded [bgp] unchanged [pmon] skipped [snmp] failed None untouched []
        ",
    );
    assert!(world.disk().release.is_none());
}

#[test]
fn a_release_stops_at_the_first_failure_and_leaves_the_rest_untouched() {
    check(
        sonic(),
        with(booted(), [release(&[("bgp", "bgp:exits", "sha256:bx"), ("swss", "swss:2", "sha256:s2")])]),
        "
        db upgrade bgp preparing
        prepare bgp
        db upgrade bgp switching
        stop bgp cold
        start bgp #2 (prepared)
        db upgrade bgp rolling_back
        stop bgp cold
        start bgp #3
        history bgp rolled back: the new container exited with code 3
        db upgrade bgp rolled_back
        reply 1 ok release upgraded [] unchanged [] skipped [] failed Some(\"bgp\") untouched [swss]
        ",
    );
}

fn upgrade_from(service: &str, archive: &str) -> Step {
    Cmd(Command::Change(ChangeRequest {
        service: service.to_owned(),
        kind: ChangeKind::Upgrade,
        source: Some(ImageSource::Archive(archive.into())),
        name: None,
        digest: None,
        warm: false,
        timeout: None,
        settle: Some(Duration::from_secs(1)),
    }))
}

#[test]
fn an_archive_is_staged_first_imported_while_preparing_and_discarded_when_refused() {
    check(
        sonic(),
        with(
            booted(),
            [
                Trace(&["stage"]),
                Archive("/srv/bgp-v3.tar", "bgp:3", "sha256:b3"),
                Archive("/srv/bgp-same.tar", "bgp:1", "sha256:bgp:1"),
                upgrade_from("bgp", "/srv/bgp-same.tar"),
                upgrade_from("bgp", "/srv/bgp-v3.tar"),
                Advance(1_000),
            ],
        ),
        "
        stage bgp
        discard staged
        reply 1 BadRequest: bgp already runs sha256:bgp:1
        stage bgp
        db upgrade bgp preparing
        prepare bgp
        db upgrade bgp switching
        stop bgp cold
        start bgp #2 (prepared)
        history bgp succeeded
        db upgrade bgp succeeded
        reply 2 ok bgp succeeded
        ",
    );
}
