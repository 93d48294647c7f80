//! The FEATURE table: what runs and how it restarts, SONiC's transition rules, and
//! operators' changes through CONFIG_DB.

use super::*;

fn change(service: &str, state: Option<&str>, auto_restart: Option<&str>, wait: bool) -> Step {
    Cmd(Command::ChangeFeature {
        service: service.to_owned(),
        state: state.map(str::to_owned),
        auto_restart: auto_restart.map(str::to_owned),
        owner: None,
        wait,
    })
}

#[test]
fn a_feature_disabled_in_config_db_stops_the_service_and_enabled_starts_it_again() {
    check(
        sonic(),
        vec![
            Boot,
            Ports(true),
            Mark,
            Feature("snmp", &[("state", "disabled")]),
            Show("snmp"),
            Feature("snmp", &[("state", "enabled")]),
            Show("snmp"),
        ],
        "
        stop snmp cold
        snmp: stopped gen 1 restarts 0
        start snmp #2
        snmp: running ready gen 2 restarts 0
        ",
    );
}

#[test]
fn a_disabled_feature_holds_what_requires_it_and_operators_starts_are_refused() {
    let manifests = set(&[
        ("database", &svc("database", "database = true")),
        ("a", &svc("a", "requires = [\"database\"]")),
        ("b", &svc("b", "requires = [\"a\"]")),
        ("c", &svc("c", "requires = [\"database\"]\nafter = [\"a\"]")),
    ]);
    check(
        manifests,
        vec![Feature("a", &[("state", "disabled")]), Boot, Mark, Show("b"), Show("c"), start("b"), start("a")],
        "
        b: stopped gen 0 restarts 0
        c: running ready gen 1 restarts 0
        reply 1 Conflict: FEATURE a is disabled in CONFIG_DB; enable it with `soniclet feature state a enabled`
        reply 2 Conflict: FEATURE a is disabled in CONFIG_DB; enable it with `soniclet feature state a enabled`
        ",
    );
}

#[test]
fn sonic_transition_rules_and_malformed_entries_leave_the_previous_entry() {
    check(
        sonic(),
        vec![
            Feature("snmp", &[("state", "enabled")]),
            Boot,
            Ports(true),
            Mark,
            // enabled -> always_disabled is not a transition SONiC allows.
            Feature("snmp", &[("state", "always_disabled")]),
            Feature("snmp", &[("state", "sideways")]),
            Feature("snmp", &[("state", "{% if x %}enabled{% endif %}")]),
            Show("snmp"),
            // The database is always enabled.
            Feature("database", &[("state", "disabled")]),
            Show("database"),
        ],
        "
        snmp: running ready gen 1 restarts 0
        database: running ready gen 1 restarts 0
        ",
    );
}

#[test]
fn an_operators_change_is_written_to_config_db_and_answered_once_it_comes_back() {
    check(
        sonic(),
        vec![
            Boot,
            Ports(true),
            Mark,
            change("snmp", Some("disabled"), None, true),
            Show("snmp"),
            change("pmon", None, Some("disabled"), false),
        ],
        "
        db write FEATURE|snmp state=disabled
        stop snmp cold
        reply 1 ok FEATURE snmp disabled auto_restart enabled
        snmp: stopped gen 1 restarts 0
        db write FEATURE|pmon auto_restart=disabled
        reply 2 ok FEATURE pmon enabled auto_restart disabled
        ",
    );
}

#[test]
fn operators_changes_are_checked_before_anything_is_written() {
    check(
        sonic(),
        vec![
            Feature("swss", &[("state", "always_enabled"), ("auto_restart", "always_enabled")]),
            Boot,
            Ports(true),
            Mark,
            change("swss", Some("disabled"), None, false),
            change("swss", None, Some("disabled"), false),
            change("database", Some("disabled"), None, false),
            change("snmp", Some("sideways"), None, false),
            change("snmp", None, None, false),
            change("nosuch", Some("enabled"), None, false),
        ],
        "
        reply 1 Conflict: FEATURE swss is always_enabled and cannot be changed
        reply 2 Conflict: FEATURE swss auto_restart is always_enabled
        reply 3 Conflict: database is the switch's database; it is always enabled
        reply 4 BadRequest: state \"sideways\": use enabled or disabled
        reply 5 BadRequest: nothing to change: give state, auto_restart or owner
        reply 6 NotFound: unknown service \"nosuch\"; known services: bgp, database, pmon, snmp, swss, syncd
        ",
    );
}

#[test]
fn a_feature_change_replaces_an_operators_stop() {
    check(
        sonic(),
        vec![
            Boot,
            Ports(true),
            stop("snmp"),
            Mark,
            Feature("snmp", &[("state", "disabled")]),
            Feature("snmp", &[("state", "enabled")]),
            Show("snmp"),
        ],
        "
        start snmp #2
        snmp: running ready gen 2 restarts 0
        ",
    );
}

#[test]
fn a_deleted_entry_gives_the_service_back_to_its_manifest() {
    let mut world = World::new(sonic());
    run(
        &mut world,
        vec![Feature("snmp", &[("state", "disabled")]), Boot, Ports(true), Show("snmp")],
        "
        start database #1
        db cold-start swss [APPL_DB,ASIC_DB]
        start swss #1
        start bgp #1
        start syncd #1
        start pmon #1
        snmp: stopped gen 0 restarts 0
        ",
    );
    world.feature_table.remove("snmp");
    world.feed(Event::FeatureChanged { name: "snmp".into(), fields: None });
    assert_eq!(world.take_trace(), vec!["start snmp #1"]);
}
