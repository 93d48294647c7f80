//! `config reload` as one transaction, and its refusals.

use super::*;
use crate::sonic::configdb::ConfigContent;

fn reload(force: bool) -> Step {
    Cmd(Command::Reload { config: ConfigContent::new(), force })
}

/// A config whose FEATURE table disables snmp.
fn reload_without_snmp() -> Step {
    let mut config = ConfigContent::new();
    config.entry("FEATURE".into()).or_default().insert("snmp".into(), vec![("state".into(), "disabled".into())]);
    Cmd(Command::Reload { config, force: false })
}

#[test]
fn a_reload_stops_everything_but_the_database_replaces_config_db_and_starts_in_order() {
    check(
        sonic(),
        vec![Boot, Ports(true), Trace(&["progress"]), Mark, reload(false), Ports(true), Show("snmp")],
        "
        progress 1: stopping 5 services in shutdown order
        stop pmon cold
        stop bgp cold
        stop snmp cold
        stop syncd cold
        progress 1: stopping: 5 services still running
        progress 1: stopping: 4 services still running
        progress 1: stopping: 3 services still running
        progress 1: stopping: 2 services still running
        stop swss cold
        progress 1: stopping: 1 services still running
        progress 1: services stopped in 0.0s; replacing CONFIG_DB
        db reload
        progress 1: CONFIG_DB replaced; starting services in dependency order
        db cold-start swss [APPL_DB,ASIC_DB]
        progress 1: starting: 1 of 6 services ready
        start swss #2
        start bgp #2
        start syncd #2
        progress 1: starting: 2 of 6 services ready
        progress 1: starting: 3 of 6 services ready
        progress 1: starting: 4 of 6 services ready
        start pmon #2
        start snmp #2
        progress 1: starting: 5 of 6 services ready
        reply 1 ok reloaded, failed []
        snmp: running ready gen 2 restarts 0
        ",
    );
}

#[test]
fn a_reload_takes_the_new_feature_table_and_forgets_operators_stops() {
    check(
        sonic(),
        vec![Boot, Ports(true), stop("bgp"), Mark, reload_without_snmp(), Ports(true), Show("bgp"), Show("snmp")],
        "
        stop pmon cold
        stop snmp cold
        stop syncd cold
        stop swss cold
        db reload
        db cold-start swss [APPL_DB,ASIC_DB]
        start swss #2
        start bgp #2
        start syncd #2
        start pmon #2
        reply 2 ok reloaded, failed []
        bgp: running ready gen 2 restarts 0
        snmp: stopped gen 1 restarts 0
        ",
    );
}

/// The world carries out every stop and start at once, so a reload waits only for the
/// delayed services' PortInitDone: that is when a second reload finds it in progress.
#[test]
fn a_reload_is_refused_while_booting_and_during_another() {
    check(
        sonic(),
        vec![Boot, Mark, reload(false), Ports(true), reload(true), Show("pmon"), reload(true), Ports(true)],
        "
        reply 1 Conflict: the switch is still booting (SYSTEM_READY is not UP yet); wait, or use --force
        start pmon #1
        start snmp #1
        stop pmon cold
        stop bgp cold
        stop snmp cold
        stop syncd cold
        stop swss cold
        db reload
        db cold-start swss [APPL_DB,ASIC_DB]
        start swss #2
        start bgp #2
        start syncd #2
        pmon: waiting gen 1 restarts 0 \"waiting for PortInitDone\"
        reply 3 Conflict: a config reload is already in progress
        start pmon #2
        start snmp #2
        reply 2 ok reloaded, failed []
        ",
    );
}

#[test]
fn without_a_database_a_reload_is_refused() {
    check(
        set(&[("a", &svc("a", ""))]),
        vec![Boot, Mark, reload(true)],
        "reply 1 Unavailable: config reload needs the database service (a manifest with database = true)",
    );
}

#[test]
fn a_reload_resets_failure_budgets_and_brings_back_a_failed_service() {
    check(
        sonic(),
        vec![
            Boot,
            Ports(true),
            Feature("bgp", &[("state", "enabled"), ("auto_restart", "disabled")]),
            Exit("bgp", 1),
            Mark,
            Show("bgp"),
            reload(false),
            Ports(true),
            Show("bgp"),
        ],
        "
        bgp: failed gen 1 restarts 0 \"exited with code 1; auto-restart is disabled\"
        stop pmon cold
        stop snmp cold
        stop syncd cold
        stop swss cold
        db reload
        db cold-start swss [APPL_DB,ASIC_DB]
        start swss #2
        start bgp #2
        start syncd #2
        start pmon #2
        start snmp #2
        reply 1 ok reloaded, failed []
        bgp: running ready gen 2 restarts 0
        ",
    );
}
