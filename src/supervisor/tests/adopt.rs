//! Adoption at daemon start: matching containers stay, changed ones are recreated, foreign
//! and dead ones go.

use super::*;

fn booted() -> World {
    let mut world = World::new(sonic());
    for step in [Boot, Ports(true)] {
        world.step(step);
    }
    world.take_trace();
    world
}

/// The same switch, a new daemon with `manifests`.
fn next_daemon(world: &World, manifests: Arc<ManifestSet>) -> World {
    let mut next = World::new(manifests);
    next.disk = world.disk().clone();
    next.containers = world.containers.clone();
    next.images = world.images.clone();
    next.next_pid = world.next_pid;
    next
}

#[test]
fn a_restarted_daemon_adopts_every_matching_container_without_a_restart() {
    let mut world = booted();
    let pids: Vec<_> = ["database", "swss", "syncd", "bgp", "pmon", "snmp"].iter().map(|s| world.pid(s)).collect();
    run(&mut world, vec![Restart, Show("swss")], "swss: running ready gen 1 restarts 0");
    let after: Vec<_> = ["database", "swss", "syncd", "bgp", "pmon", "snmp"].iter().map(|s| world.pid(s)).collect();
    assert_eq!(pids, after);
}

#[test]
fn a_changed_manifest_or_image_recreates_only_that_service() {
    let world = booted();
    // A smaller set, and snmp's stop-time changed: the services that went are foreign now.
    let changed = set(&[
        ("database", &svc("database", "database = true")),
        ("snmp", &svc("snmp", "requires = [\"database\"]\nstop-time = 3")),
    ]);
    let mut next = next_daemon(&world, changed);
    next.images.insert("database:1".into(), world.images["database:1"].clone());
    run(
        &mut next,
        vec![Boot, Show("database")],
        "
        remove bgp
        remove pmon
        remove swss
        remove syncd
        stop snmp cold
        start snmp #2
        database: running ready gen 1 restarts 0
        ",
    );
}

#[test]
fn a_new_image_under_the_same_tag_recreates_the_service() {
    let mut world = booted();
    world.step(Image("bgp:1", "sha256:bgp-rebuilt", Behaviour::Ready));
    run(
        &mut world,
        vec![Restart, Show("bgp")],
        "
        stop bgp cold
        start bgp #2
        bgp: running ready gen 2 restarts 0
    ",
    );
}

#[test]
fn a_dead_container_is_removed_before_its_service_starts_again() {
    let mut world = booted();
    world.containers.get_mut("snmp").unwrap().running = false;
    run(
        &mut world,
        vec![Restart, Show("snmp")],
        "
        start snmp #2
        snmp: running ready gen 2 restarts 0
    ",
    );
}
