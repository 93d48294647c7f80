//! FEATURE `set_owner=kube`: handing a feature over to its Kubernetes pod, and falling back.

use super::*;

const KUBE: &[(&str, &str)] = &[("state", "enabled"), ("set_owner", "kube")];
const KUBE_NO_FALLBACK: &[(&str, &str)] =
    &[("state", "enabled"), ("set_owner", "kube"), ("no_fallback_to_local", "True")];

fn booted() -> Vec<Step> {
    vec![Boot, Ports(true), Pods(&[])]
}

#[test]
fn a_ready_pod_takes_the_feature_over_and_its_end_brings_the_local_container_back() {
    let mut steps = booted();
    steps.extend([
        Feature("snmp", KUBE),
        Mark,
        Trace(&["notice", "report"]),
        // No pod yet: the local container keeps serving.
        Show("snmp"),
        Pods(&[("snmp", "sonic/snmp-x8k2p", false)]),
        Show("snmp"),
        Pods(&[("snmp", "sonic/snmp-x8k2p", true)]),
        Show("snmp"),
        Pods(&[]),
        Show("snmp"),
    ]);
    check(
        sonic(),
        steps,
        "
        snmp: running ready gen 1 restarts 0
        snmp: running ready gen 1 restarts 0
        notice snmp handed over to sonic/snmp-x8k2p
        stop snmp cold
        db feature snmp enabled up owner kube cri-sonic/snmp-x8k2p remote running
        snmp: kube ready gen 1 restarts 0 \"runs as Kubernetes pod sonic/snmp-x8k2p\"
        notice snmp falls back from sonic/snmp-x8k2p: its pod sonic/snmp-x8k2p is gone
        start snmp #2
        db feature snmp enabled down owner none  remote none
        notice SYSTEM_READY DOWN 5 of 6 enabled services ready
        db feature snmp enabled up owner local snmp remote none
        notice SYSTEM_READY UP all enabled services are ready
        snmp: running ready gen 2 restarts 0
        ",
    );
}

#[test]
fn a_pod_unready_beyond_the_grace_gives_the_feature_back_and_a_ready_one_takes_it_again() {
    let mut steps = booted();
    steps.extend([
        Feature("snmp", KUBE),
        Pods(&[("snmp", "sonic/snmp-a", true)]),
        Mark,
        Pods(&[("snmp", "sonic/snmp-a", false)]),
        Advance(59_999),
        Show("snmp"),
        Advance(1),
        Show("snmp"),
        Pods(&[("snmp", "sonic/snmp-b", true)]),
        Show("snmp"),
    ]);
    check(
        sonic(),
        steps,
        "
        snmp: kube gen 1 restarts 0 \"Kubernetes pod sonic/snmp-a is not ready; the local container comes back unless it is within 60s\"
        start snmp #2
        snmp: running ready gen 2 restarts 0
        stop snmp cold
        snmp: kube ready gen 2 restarts 0 \"runs as Kubernetes pod sonic/snmp-b\"
        ",
    );
}

#[test]
fn without_fallback_the_feature_waits_for_kubernetes_and_set_owner_local_brings_it_home() {
    let mut steps = booted();
    steps.extend([
        Feature("snmp", KUBE_NO_FALLBACK),
        Mark,
        Show("snmp"),
        Pods(&[("snmp", "sonic/snmp-a", true)]),
        Pods(&[]),
        Show("snmp"),
        Feature("snmp", &[("state", "enabled"), ("set_owner", "local")]),
        Show("snmp"),
    ]);
    check(
        sonic(),
        steps,
        "
        snmp: waiting gen 1 restarts 0 \"waiting for Kubernetes to run its pod (no_fallback_to_local: no local container)\"
        snmp: kube gen 1 restarts 0 \"waiting for Kubernetes to run its pod (no_fallback_to_local: no local container)\"
        start snmp #2
        snmp: running ready gen 2 restarts 0
        ",
    );
}

#[test]
fn the_data_plane_is_never_handed_over_and_a_pod_claiming_a_local_feature_is_ignored() {
    let manifests = set(&[
        ("database", &svc("database", "database = true\nlocal-only = true")),
        ("swss", &svc("swss", "requires = [\"database\"]\nlocal-only = true")),
        ("lldp", &svc("lldp", "requires = [\"database\"]")),
    ]);
    check(
        manifests,
        vec![
            Boot,
            Pods(&[]),
            Feature("swss", KUBE),
            Mark,
            Pods(&[("swss", "sonic/swss-x", true), ("lldp", "sonic/lldp-x", true)]),
            Show("swss"),
            Show("lldp"),
        ],
        "
        swss: running ready gen 1 restarts 0
        lldp: running ready gen 1 restarts 0
        ",
    );
}

#[test]
fn a_restarted_daemon_waits_for_the_pods_before_starting_a_kube_owned_feature() {
    let mut steps = booted();
    steps.extend([
        Feature("snmp", KUBE),
        Pods(&[("snmp", "sonic/snmp-a", true)]),
        Restart,
        Mark,
        Show("snmp"),
        Pods(&[("snmp", "sonic/snmp-a", true)]),
        Show("snmp"),
    ]);
    check(
        sonic(),
        steps,
        "
        snmp: waiting gen 0 restarts 0 \"waiting for the kubelet's pods to be listed (FEATURE set_owner=kube)\"
        snmp: kube ready gen 0 restarts 0 \"runs as Kubernetes pod sonic/snmp-a\"
        ",
    );
}

fn owner(service: &str, owner: &str) -> Step {
    Cmd(Command::ChangeFeature {
        service: service.to_owned(),
        state: None,
        auto_restart: None,
        owner: Some(owner.to_owned()),
        wait: false,
    })
}

#[test]
fn an_operators_owner_change_goes_through_config_db_and_the_data_plane_refuses_it() {
    let manifests = set(&[
        ("database", &svc("database", "database = true\nlocal-only = true")),
        ("swss", &svc("swss", "requires = [\"database\"]\nlocal-only = true")),
        ("snmp", &svc("snmp", "requires = [\"database\"]")),
    ]);
    check(
        manifests,
        vec![Boot, Pods(&[]), Mark, owner("snmp", "kube"), owner("swss", "kube"), owner("snmp", "k8s")],
        "
        db write FEATURE|snmp set_owner=kube
        reply 1 ok FEATURE snmp enabled auto_restart enabled
        reply 2 Conflict: swss is the data plane or its database: it stays local
        reply 3 BadRequest: owner \"k8s\": use local or kube
        ",
    );
}
