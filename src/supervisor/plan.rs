//! The pure reconcile step: from what should run and what runs, the next idempotent actions.
//!
//! `plan` does no I/O and keeps no state; it is called after every event. Services start in
//! dependency order and in parallel where the graph allows, each only once everything it is
//! ordered after is ready; they stop in reverse order. Actions already in flight are never
//! issued twice, because a service with an operation in flight is `Starting` or `Stopping`.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::manifest::{ServiceGraph, ServiceName};

/// Where a service is in its lifecycle, as the supervisor tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No running task.
    Stopped,
    /// Create/start in flight.
    Starting,
    /// The task runs; its readiness probe has not passed yet.
    Probing,
    /// The task runs and is ready.
    Ready,
    /// Stop in flight.
    Stopping,
    /// Crashed; restarts once the delay is over.
    Backoff { until: Instant },
    /// Held down until an operator acts: the failure budget is spent, auto-restart is off,
    /// or (`blocked`) the service cannot be created (missing image, bad spec), which new
    /// images may change.
    Failed { reason: String, blocked: bool },
}

impl Phase {
    /// A task exists or is being made.
    pub fn is_active(&self) -> bool {
        matches!(self, Phase::Starting | Phase::Probing | Phase::Ready | Phase::Stopping)
    }
}

/// One service as `plan` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitView {
    /// The service is meant to run (operator, FEATURE or manifest default).
    pub want: bool,
    pub phase: Phase,
    /// An operator restart, a changed manifest or image, or a failure: take the task down,
    /// then bring it back if it is still wanted.
    pub cycle: bool,
    /// A switch-wide condition this service waits for before it may start (CONFIG_DB).
    pub gate: Option<&'static str>,
    /// A Kubernetes pod runs the service, ready: what is ordered after it need not wait.
    pub remote_ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start(ServiceName),
    Stop(ServiceName),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// When to run `plan` again even if nothing happens: a backoff ends, or one of the
    /// other deadlines it was given passes. The supervisor's only wake-up.
    pub wake_at: Option<Instant>,
    /// Services that want to run but wait, and for what (services or conditions).
    pub waiting: BTreeMap<ServiceName, Vec<String>>,
}

/// Whether a service should have a task once current cycles complete.
fn target_up(unit: &UnitView) -> bool {
    unit.want && !unit.cycle && !matches!(unit.phase, Phase::Failed { .. })
}

/// The next actions for `units`; `timers` are the other deadlines to wake for (those still
/// ahead of `now` count).
pub fn plan(
    graph: &ServiceGraph,
    units: &BTreeMap<ServiceName, UnitView>,
    timers: impl IntoIterator<Item = Instant>,
    now: Instant,
) -> Plan {
    let mut out = Plan { wake_at: timers.into_iter().filter(|t| *t > now).min(), ..Plan::default() };
    for name in graph.start_order() {
        let Some(unit) = units.get(name) else { continue };
        let up = target_up(unit);
        match &unit.phase {
            Phase::Probing | Phase::Ready if !up => {
                // Stop only after everything ordered after this service that is going down
                // has stopped; what stays up does not hold it.
                let blocked = graph
                    .ordered_before(name)
                    .any(|later| units.get(later).is_some_and(|u| u.phase.is_active() && !target_up(u)));
                if !blocked {
                    out.actions.push(Action::Stop(name.clone()));
                }
            }
            Phase::Stopped | Phase::Backoff { .. } if up => {
                if let Phase::Backoff { until } = &unit.phase {
                    if *until > now {
                        out.wake_at = Some(out.wake_at.map_or(*until, |w| w.min(*until)));
                        continue;
                    }
                }
                let mut waiting_for: Vec<String> = unit.gate.iter().map(|g| (*g).to_owned()).collect();
                waiting_for.extend(
                    graph
                        .ordered_after(name)
                        .filter(|dep| {
                            let Some(dep_unit) = units.get(*dep) else { return false };
                            let required = graph.requires(name).any(|r| r == *dep);
                            let relevant = required || target_up(dep_unit) || dep_unit.phase.is_active();
                            relevant
                                && !(dep_unit.phase == Phase::Ready && target_up(dep_unit))
                                && !dep_unit.remote_ready
                        })
                        .map(|dep| dep.to_string()),
                );
                if waiting_for.is_empty() {
                    out.actions.push(Action::Start(name.clone()));
                } else {
                    out.waiting.insert(name.clone(), waiting_for);
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::manifest::load_sources;

    /// database <- swss <- bgp (requires), lldp after swss (ordering only), pmon independent.
    fn graph() -> ServiceGraph {
        let svc = |deps: &str| {
            format!("[service]\n{deps}\n[container]\nimage = \"x:1\"\n[readiness]\nprobe = {{ type = \"process\", name = \"x\" }}\n")
        };
        let files = [
            ("database", svc("")),
            ("swss", svc("requires = [\"database\"]")),
            ("bgp", svc("requires = [\"swss\"]")),
            ("lldp", svc("after = [\"swss\"]")),
            ("pmon", svc("")),
        ];
        load_sources(files.iter().map(|(n, t)| (PathBuf::from(format!("{n}.toml")), t.clone())).collect())
            .unwrap()
            .graph()
            .clone()
    }

    fn n(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    /// Runs `plan` on `(name, want, phase, cycle)` rows and compares the actions with `expect`.
    fn check(rows: &[(&str, bool, Phase, bool)], expect: &[&str]) -> Plan {
        let units = rows
            .iter()
            .map(|(name, want, phase, cycle)| {
                (
                    n(name),
                    UnitView { want: *want, phase: phase.clone(), cycle: *cycle, gate: None, remote_ready: false },
                )
            })
            .collect();
        let plan = plan(&graph(), &units, [], Instant::now());
        let got: Vec<String> = plan
            .actions
            .iter()
            .map(|a| match a {
                Action::Start(s) => format!("start {s}"),
                Action::Stop(s) => format!("stop {s}"),
            })
            .collect();
        assert_eq!(got, expect);
        plan
    }

    use Phase::*;

    #[test]
    fn boot_starts_roots_in_parallel_then_waits() {
        let plan = check(
            &[
                ("database", true, Stopped, false),
                ("swss", true, Stopped, false),
                ("bgp", true, Stopped, false),
                ("lldp", true, Stopped, false),
                ("pmon", true, Stopped, false),
            ],
            &["start database", "start pmon"],
        );
        assert_eq!(plan.waiting[&n("swss")], vec!["database"]);
        assert_eq!(plan.waiting[&n("lldp")], vec!["swss"]);
    }

    #[test]
    fn probing_is_not_ready() {
        check(&[("database", true, Probing, false), ("swss", true, Stopped, false), ("pmon", true, Ready, false)], &[]);
        check(
            &[("database", true, Ready, false), ("swss", true, Stopped, false), ("lldp", true, Stopped, false)],
            &["start swss"],
        );
        check(
            &[
                ("database", true, Ready, false),
                ("swss", true, Ready, false),
                ("bgp", true, Stopped, false),
                ("lldp", true, Stopped, false),
            ],
            &["start bgp", "start lldp"],
        );
    }

    #[test]
    fn ordering_only_dependency_that_is_not_wanted_does_not_block() {
        check(&[("swss", false, Stopped, false), ("lldp", true, Stopped, false)], &["start lldp"]);
        // but a required one does
        let plan = check(
            &[("database", true, Ready, false), ("swss", false, Stopped, false), ("bgp", true, Stopped, false)],
            &[],
        );
        assert_eq!(plan.waiting[&n("bgp")], vec!["swss"]);
    }

    #[test]
    fn stop_goes_in_reverse_order() {
        let rows = [
            ("database", false, Ready, false),
            ("swss", false, Ready, false),
            ("bgp", false, Ready, false),
            ("lldp", false, Ready, false),
        ];
        check(&rows, &["stop bgp", "stop lldp"]);
        check(
            &[
                ("database", false, Ready, false),
                ("swss", false, Ready, false),
                ("bgp", false, Stopping, false),
                ("lldp", false, Stopped, false),
            ],
            &[],
        );
        check(
            &[
                ("database", false, Ready, false),
                ("swss", false, Ready, false),
                ("bgp", false, Stopped, false),
                ("lldp", false, Stopped, false),
            ],
            &["stop swss"],
        );
    }

    #[test]
    fn a_service_that_stays_up_does_not_hold_a_stop() {
        // Recreating database alone (cycle) is not blocked by swss, which stays up.
        check(&[("database", true, Ready, true), ("swss", true, Ready, false)], &["stop database"]);
    }

    #[test]
    fn restart_cycles_dependents_first_and_comes_back_in_order() {
        check(
            &[("database", true, Ready, true), ("swss", true, Ready, true), ("bgp", true, Ready, true)],
            &["stop bgp"],
        );
        // Once cycled (cycle cleared on stop), they come back in dependency order.
        check(
            &[("database", true, Stopped, false), ("swss", true, Stopped, false), ("bgp", true, Stopped, false)],
            &["start database"],
        );
    }

    #[test]
    fn backoff_waits_until_its_deadline() {
        let later = Instant::now() + Duration::from_secs(5);
        let plan = check(&[("pmon", true, Backoff { until: later }, false)], &[]);
        assert_eq!(plan.wake_at, Some(later));
        let earlier = Instant::now() - Duration::from_millis(1);
        check(&[("pmon", true, Backoff { until: earlier }, false)], &["start pmon"]);
    }

    #[test]
    fn failed_service_stays_down_and_holds_its_dependents() {
        let failed = Failed { reason: "5 failures".into(), blocked: false };
        let plan = check(&[("database", true, failed, false), ("swss", true, Stopped, false)], &[]);
        assert_eq!(plan.waiting[&n("swss")], vec!["database"]);
    }

    #[test]
    fn a_gate_holds_a_service_and_says_why() {
        let mut units: BTreeMap<ServiceName, UnitView> = BTreeMap::new();
        units.insert(
            n("database"),
            UnitView { want: true, phase: Ready, cycle: false, gate: None, remote_ready: false },
        );
        units.insert(
            n("swss"),
            UnitView { want: true, phase: Stopped, cycle: false, gate: Some("CONFIG_DB"), remote_ready: false },
        );
        let plan = plan(&graph(), &units, [], Instant::now());
        assert!(plan.actions.is_empty());
        assert_eq!(plan.waiting[&n("swss")], vec!["CONFIG_DB"]);
    }

    #[test]
    fn the_earliest_deadline_ahead_is_the_wake_up() {
        let now = Instant::now();
        let (soon, later) = (now + Duration::from_secs(2), now + Duration::from_secs(9));
        let units = [(
            n("pmon"),
            UnitView { want: true, phase: Backoff { until: later }, cycle: false, gate: None, remote_ready: false },
        )];
        let plan = plan(&graph(), &units.into_iter().collect(), [later, soon, now - Duration::from_secs(1)], now);
        assert_eq!(plan.wake_at, Some(soon), "past timers are ignored; the soonest ahead wins");
    }

    #[test]
    fn in_flight_operations_are_not_repeated() {
        check(&[("database", true, Starting, false), ("pmon", false, Stopping, false)], &[]);
    }
}
