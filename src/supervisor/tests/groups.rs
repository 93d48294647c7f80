//! Failure groups, warm and fast restart, and the database's crash.

use super::*;

fn booted() -> Vec<Step> {
    vec![Boot, Ports(true)]
}

#[test]
fn a_cold_crash_of_syncd_takes_its_group_and_dependents_down_clears_and_comes_back_in_order() {
    let mut steps = booted();
    steps.extend([Mark, Exit("syncd", 137), Show("swss"), Show("bgp")]);
    check(
        sonic(),
        steps,
        "
        stop bgp cold
        stop swss cold
        db cold-start swss [APPL_DB,ASIC_DB]
        start swss #2
        start bgp #2
        start syncd #2
        swss: running ready gen 2 restarts 0
        bgp: running ready gen 2 restarts 0
        ",
    );
}

#[test]
fn a_cold_crash_of_swss_takes_syncd_and_bgp_along() {
    let mut steps = booted();
    steps.extend([Mark, Exit("swss", 1), Show("syncd")]);
    check(
        sonic(),
        steps,
        "
        stop bgp cold
        stop syncd cold
        db cold-start swss [APPL_DB,ASIC_DB]
        start swss #2
        start bgp #2
        start syncd #2
        syncd: running ready gen 2 restarts 0
        ",
    );
}

#[test]
fn a_crash_of_a_dependent_restarts_it_alone() {
    let mut steps = booted();
    steps.extend([Mark, Exit("bgp", 1), Show("swss")]);
    check(
        sonic(),
        steps,
        "
        start bgp #2
        swss: running ready gen 1 restarts 0
        ",
    );
}

#[test]
fn with_warm_restart_enabled_only_the_member_restarts_and_nothing_is_cleared() {
    let mut steps = booted();
    steps.extend([Warm("syncd", true), Mark, Exit("syncd", 137), Show("swss"), restart("syncd"), Show("swss")]);
    check(
        sonic(),
        steps,
        "
        start syncd #2
        swss: running ready gen 1 restarts 0
        stop syncd warm
        start syncd #3
        reply 1 ok syncd running ready
        swss: running ready gen 1 restarts 0
        ",
    );
}

#[test]
fn a_crash_with_warm_restart_on_restarts_the_member_alone() {
    let mut steps = booted();
    steps.extend([Warm("system", true), Mark, Exit("syncd", 137), Show("swss"), Show("bgp")]);
    check(
        sonic(),
        steps,
        "
        start syncd #2
        swss: running ready gen 1 restarts 0
        bgp: running ready gen 1 restarts 0
        ",
    );
}

#[test]
fn a_fast_reboot_stops_with_the_fast_steps() {
    let mut steps = booted();
    steps.extend([Fast(true), Mark, stop("syncd")]);
    check(
        sonic(),
        steps,
        "
        stop bgp fast
        stop syncd fast
        stop swss fast
        reply 1 ok syncd stopped
        ",
    );
}

#[test]
fn an_operators_restart_of_swss_cycles_its_group_cold() {
    let mut steps = booted();
    steps.extend([Mark, restart("swss"), Show("syncd")]);
    check(
        sonic(),
        steps,
        "
        stop bgp cold
        stop syncd cold
        stop swss cold
        db cold-start swss [APPL_DB,ASIC_DB]
        start swss #2
        start bgp #2
        start syncd #2
        reply 1 ok swss running ready
        syncd: running ready gen 2 restarts 0
        ",
    );
}

#[test]
fn an_operators_stop_of_a_member_stops_the_group_and_its_dependents_and_start_brings_them_back() {
    let mut steps = booted();
    steps.extend([Mark, stop("syncd"), Show("swss"), Show("bgp"), Mark, start("bgp"), Show("syncd")]);
    let mut world = World::new(sonic());
    run(
        &mut world,
        steps,
        "
        db cold-start swss [APPL_DB,ASIC_DB]
        start swss #2
        start bgp #2
        start syncd #2
        reply 2 ok bgp running ready
        syncd: running ready gen 2 restarts 0
        ",
    );
}

/// The database comes back at once; everything that requires it goes down in reverse order,
/// and comes back once CONFIG_DB is loaded again. Nothing is flushed: what lived in Redis is
/// gone already, and delayed services were released at boot.
#[test]
fn a_database_crash_restarts_everything_that_requires_it_once_config_db_is_back() {
    let mut steps = booted();
    steps.extend([Trace(&["dbready"]), Mark, Exit("database", 137), Show("bgp")]);
    check(
        sonic(),
        steps,
        "
        start database #2
        stop pmon cold
        stop bgp cold
        stop snmp cold
        stop syncd cold
        database Down
        stop swss cold
        database Ready(2)
        start pmon #2
        start swss #2
        start bgp #2
        start snmp #2
        start syncd #2
        bgp: running ready gen 2 restarts 0
        ",
    );
}

/// What the Kubernetes Events tell: the crash, the group's cascade, and SYSTEM_READY going
/// down and back up.
#[test]
fn a_group_cascade_is_noticed_with_its_cause_and_what_it_takes_down() {
    let mut steps = booted();
    steps.extend([Mark, Trace(&["notice"]), Exit("syncd", 137)]);
    check(
        sonic(),
        steps,
        "
        notice group swss down with syncd: bgp swss syncd
        notice syncd failed (killed by signal 9): Restarting { attempt: 1, delay: 0ns }
        stop bgp cold
        notice SYSTEM_READY DOWN 4 of 6 enabled services ready
        stop swss cold
        notice SYSTEM_READY DOWN 3 of 6 enabled services ready
        db cold-start swss [APPL_DB,ASIC_DB]
        start swss #2
        start bgp #2
        start syncd #2
        notice SYSTEM_READY DOWN 4 of 6 enabled services ready
        notice SYSTEM_READY DOWN 5 of 6 enabled services ready
        notice SYSTEM_READY UP all enabled services are ready
        ",
    );
}
