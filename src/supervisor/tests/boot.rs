//! Boot: dependency order, readiness gates, CONFIG_DB and delayed start.

use super::*;

fn plain() -> Arc<ManifestSet> {
    // a <- b, a <- c (requires), d after b and c; e alone.
    set(&[
        ("a", &svc("a", "")),
        ("b", &svc("b", "requires = [\"a\"]")),
        ("c", &svc("c", "requires = [\"a\"]")),
        ("d", &svc("d", "requires = [\"b\", \"c\"]")),
        ("e", &svc("e", "")),
    ])
}

#[test]
fn services_start_in_waves_each_gated_on_what_it_is_ordered_after() {
    check(
        plain(),
        vec![Trace(&["persist"]), Boot, Show("d")],
        "
        persist 2 services
        start a #1
        start e #1
        persist 4 services
        start b #1
        start c #1
        persist 5 services
        start d #1
        d: running ready gen 1 restarts 0
        ",
    );
}

#[test]
fn a_sonic_boot_waits_for_config_db_then_holds_delayed_services_for_port_init_done() {
    check(
        sonic(),
        vec![Trace(&["dbready"]), Boot, Show("bgp"), Show("pmon"), Ports(true), Show("pmon")],
        "
        start database #1
        database Down
        database Ready(1)
        db cold-start swss [APPL_DB,ASIC_DB]
        start swss #1
        start bgp #1
        start syncd #1
        bgp: running ready gen 1 restarts 0
        pmon: waiting gen 0 restarts 0 \"waiting for PortInitDone\"
        start pmon #1
        start snmp #1
        pmon: running ready gen 1 restarts 0
        ",
    );
}

#[test]
fn delayed_services_start_after_the_fallback_when_the_ports_never_report() {
    check(
        sonic(),
        vec![Boot, Mark, Advance(179_000), Show("snmp"), Advance(1_000), Show("snmp")],
        "
        snmp: waiting gen 0 restarts 0 \"waiting for PortInitDone\"
        start pmon #1
        start snmp #1
        snmp: running ready gen 1 restarts 0
        ",
    );
}

#[test]
fn a_warm_boot_keeps_the_databases_and_releases_delayed_services_once_reconciled() {
    let mut world = World::with(sonic(), BootType::Warm, false);
    run(
        &mut world,
        vec![Boot, Show("pmon"), Reconciled("orchagent"), Show("pmon")],
        "
        start database #1
        start swss #1
        start bgp #1
        start syncd #1
        pmon: waiting gen 0 restarts 0 \"waiting for warm-restart reconciliation\"
        start pmon #1
        start snmp #1
        pmon: running ready gen 1 restarts 0
        ",
    );
}

#[test]
fn a_missing_image_holds_the_service_until_images_arrive() {
    let files = [("a", svc("a", "")), ("b", svc("b", "requires = [\"a\"]"))];
    let mut world = World::new(set(&[("a", &files[0].1), ("b", &files[1].1)]));
    world.images.remove("a:1");
    run(
        &mut world,
        vec![
            Boot,
            Show("a"),
            Show("b"),
            Image("a:1", "sha256:a1", Behaviour::Ready),
            Cmd(Command::Import { paths: vec!["/a.tar".into()] }),
            Show("b"),
        ],
        "
        start a #1
        a: failed gen 1 restarts 0 \"image a:1 is not in containerd\"
        b: waiting gen 0 restarts 0 \"waiting for a\"
        reply 1 ok imported 1
        start a #2
        start b #1
        b: running ready gen 1 restarts 0
        ",
    );
}

#[test]
fn every_start_has_its_generation_on_disk_before_its_container_exists() {
    let mut world = World::new(plain());
    world.step(Trace(&["persist"]));
    world.hold_persist = true;
    world.step(Boot);
    // The first wave waits for its persist: nothing started yet.
    assert_eq!(world.take_trace(), vec!["persist 2 services"]);
    assert!(world.containers.is_empty());
    assert_eq!(world.disk().services["a"].generation, 1);
    world.hold_persist = false;
    world.release_persist();
    assert_eq!(world.take_trace()[..2], ["start a #1".to_owned(), "start e #1".to_owned()]);
}
