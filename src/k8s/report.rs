//! What soniclet tells the cluster about its Node, decided without I/O: its labels and
//! annotations, the `NetworkOSReady` condition (from SYSTEM_READY and the services' views, as
//! node-problem-detector reports a condition: sent when it changes and every five minutes as
//! a heartbeat), and Events from the core's notices through the kubelet's recorder rules.
//! `task.rs` carries the calls out; an answer comes back through [`Reporter::answered`], and
//! a failed call waits out a backoff, so an API server that is down costs nothing but a retry.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::cluster::{Condition, ConditionStatus, EventSpec, EventType, NodeMetadata, Regarding, Series};
use super::recorder::{Emit, Occurrence, Recorder};
use crate::manifest::ServiceName;
use crate::state::history::ChangeResult;
use crate::supervisor::{FailureOutcome, Notice, Now, PodSeen, ServiceView, SystemReady};

/// The condition is sent again this often with a new heartbeat, changed or not.
pub const HEARTBEAT: Duration = Duration::from_secs(5 * 60);
/// Changes closer than this are sent as one (a cascade changes SYSTEM_READY many times).
pub const SETTLE: Duration = Duration::from_secs(1);
/// Backoff after a failed call: doubling from the first, up to the last.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// Events waiting for the API server beyond this many are dropped, oldest first.
pub const OUTBOX: usize = 256;
/// A condition message's most services named, and its most characters.
const MESSAGE_SERVICES: usize = 6;
const MESSAGE_CHARS: usize = 1024;

/// One call to the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    ApplyMetadata(NodeMetadata),
    SetCondition(Condition),
    CreateEvent(EventSpec),
    UpdateSeries { namespace: String, name: String, series: Series },
}

impl Call {
    /// What the call does, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Call::ApplyMetadata(_) => "apply the Node's labels",
            Call::SetCondition(_) => "set the Node's condition",
            Call::CreateEvent(_) => "create an Event",
            Call::UpdateSeries { .. } => "update an Event's series",
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Done,
    /// Worth trying again (the server unreachable, overloaded or failing).
    Transient,
    /// Refused for good (forbidden, invalid): an Event is dropped; the Node's state is tried
    /// again after the longest backoff, in case the cluster's rules change.
    Refused,
}

/// The condition for SYSTEM_READY and the services' views: its status, reason and message.
pub fn condition(
    system: Option<&SystemReady>,
    views: &BTreeMap<ServiceName, ServiceView>,
) -> (ConditionStatus, &'static str, String) {
    let Some(system) = system else {
        return (ConditionStatus::Unknown, "NoSystemReady", "soniclet has not judged SYSTEM_READY yet".into());
    };
    let (status, reason) = match system.status.as_str() {
        "UP" => (ConditionStatus::True, "SystemReady"),
        "FAILED" => (ConditionStatus::False, "ServiceFailed"),
        _ => (ConditionStatus::False, "ServicesNotReady"),
    };
    let not_ready: Vec<String> = views
        .values()
        .filter(|v| v.enabled && !v.ready)
        .map(|v| match &v.message {
            Some(why) => format!("{} {} ({why})", v.name, v.state.as_str()),
            None => format!("{} {}", v.name, v.state.as_str()),
        })
        .collect();
    let mut message = format!("SYSTEM_READY {}: {}", system.status, system.reason);
    if !not_ready.is_empty() && status != ConditionStatus::True {
        message.push_str("; not ready: ");
        message.push_str(&not_ready.iter().take(MESSAGE_SERVICES).cloned().collect::<Vec<_>>().join(", "));
        if not_ready.len() > MESSAGE_SERVICES {
            message.push_str(&format!(" and {} more", not_ready.len() - MESSAGE_SERVICES));
        }
    }
    if message.len() > MESSAGE_CHARS {
        let mut cut = MESSAGE_CHARS - 3;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    (status, reason, message)
}

/// The feature's pod, as `kubectl describe pod` finds its Events; the Node when CRI gave no
/// UID.
fn regarding_pod(pod: &PodSeen, node: &str) -> Regarding {
    match pod.pod.split_once('/') {
        Some((namespace, name)) if !pod.uid.is_empty() => {
            Regarding::Pod { namespace: namespace.to_owned(), name: name.to_owned(), uid: pod.uid.clone() }
        }
        _ => Regarding::Node(node.to_owned()),
    }
}

/// The Event a notice is worth, about the Node or a feature's pod; `None` for what is no news
/// to a cluster.
pub fn occurrence(notice: &Notice, node: &str) -> Option<Occurrence> {
    let on_node = |event_type, reason: &str, action: &str, note: String| Occurrence {
        regarding: Regarding::Node(node.to_owned()),
        event_type,
        reason: reason.to_owned(),
        action: action.to_owned(),
        note,
    };
    Some(match notice {
        Notice::Failed { service, reason, outcome } => match outcome {
            FailureOutcome::Restarting { attempt, .. } => on_node(
                EventType::Warning,
                "ServiceCrashed",
                "Restart",
                format!("{service} {reason}: restarting it (attempt {attempt})"),
            ),
            FailureOutcome::GaveUp => on_node(
                EventType::Warning,
                "ServiceFailed",
                "GiveUp",
                format!("{service} {reason}: its failure budget is spent; it stays down until an operator starts it"),
            ),
            FailureOutcome::NoAutoRestart => on_node(
                EventType::Warning,
                "ServiceFailed",
                "None",
                format!("{service} {reason}: FEATURE auto_restart is disabled, so it stays down"),
            ),
        },
        Notice::GroupDown { group, cause, services } => on_node(
            EventType::Warning,
            "FailureGroupRestart",
            "Restart",
            format!(
                "{cause} went down cold: failure group {group} restarts ({})",
                services.iter().map(ServiceName::as_str).collect::<Vec<_>>().join(", ")
            ),
        ),
        Notice::ChangeEnded { service, to, result, reason } => {
            let why = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            match result {
                ChangeResult::Succeeded => {
                    on_node(EventType::Normal, "ServiceUpgraded", "Upgrade", format!("{service} runs {to}"))
                }
                ChangeResult::RolledBack => on_node(
                    EventType::Warning,
                    "UpgradeRolledBack",
                    "Rollback",
                    format!("{service}'s change to {to} was rolled back{why}"),
                ),
                ChangeResult::Aborted => on_node(
                    EventType::Warning,
                    "UpgradeAborted",
                    "None",
                    format!("{service}'s change to {to} was aborted before the switch-over{why}"),
                ),
            }
        }
        Notice::Feature { service, state } => on_node(
            EventType::Normal,
            "FeatureChanged",
            "Configure",
            format!("CONFIG_DB FEATURE|{service} state is {state}"),
        ),
        Notice::Trial { image, committed: true, .. } => on_node(
            EventType::Normal,
            "OSImageCommitted",
            "Commit",
            format!("OS image {image} passed its trial and is the default"),
        ),
        Notice::Trial { image, committed: false, reason } => on_node(
            EventType::Warning,
            "OSImageFellBack",
            "Rollback",
            format!("OS image {image} failed its trial; the switch fell back: {}", reason.as_deref().unwrap_or("")),
        ),
        Notice::Handover { service, pod } => Occurrence {
            regarding: regarding_pod(pod, node),
            event_type: EventType::Normal,
            reason: "FeatureHandedOver".into(),
            action: "StopLocal".into(),
            note: format!("{service} runs as pod {}: the local container stops (FEATURE set_owner=kube)", pod.pod),
        },
        Notice::Fallback { service, pod, reason } => Occurrence {
            regarding: pod.as_ref().map_or_else(|| Regarding::Node(node.to_owned()), |pod| regarding_pod(pod, node)),
            event_type: EventType::Warning,
            reason: "FeatureFellBack".into(),
            action: "StartLocal".into(),
            note: match pod {
                Some(pod) => format!("{service} runs as the local container again, not pod {}: {reason}", pod.pod),
                None => format!("{service} runs as the local container again: {reason}"),
            },
        },
        // The condition tells SYSTEM_READY; its changes of status become Events there.
        Notice::SystemReady { .. } => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    status: ConditionStatus,
    reason: String,
    message: String,
    at: Instant,
}

/// The Kubernetes task's state: what the Node should say, what was said, what is owed.
#[derive(Debug)]
pub struct Reporter {
    node: String,
    metadata: NodeMetadata,
    metadata_applied: Option<NodeMetadata>,
    views: BTreeMap<ServiceName, ServiceView>,
    system: Option<SystemReady>,
    /// When the condition's status last changed (its lastTransitionTime), and to what.
    transition: Option<(ConditionStatus, std::time::SystemTime)>,
    changed_at: Option<Instant>,
    sent: Option<Sent>,
    recorder: Recorder,
    outbox: VecDeque<Emit>,
    /// Events dropped because the outbox was full or the server refused them.
    pub lost: u64,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Reporter {
    pub fn new(node: &str, metadata: NodeMetadata) -> Self {
        Self {
            node: node.to_owned(),
            metadata,
            metadata_applied: None,
            views: BTreeMap::new(),
            system: None,
            transition: None,
            changed_at: None,
            sent: None,
            recorder: Recorder::new(node),
            outbox: VecDeque::new(),
            lost: 0,
            failures: 0,
            retry_at: None,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Events the spam filter dropped, and those lost to a full outbox or a refusal.
    pub fn dropped(&self) -> u64 {
        self.recorder.dropped + self.lost
    }

    pub fn set_metadata(&mut self, metadata: NodeMetadata) {
        self.metadata = metadata;
    }

    pub fn on_view(&mut self, view: ServiceView, now: Now) {
        self.views.insert(view.name.clone(), view);
        self.changed(now);
    }

    /// Something the condition depends on changed: it settles from now, and its status
    /// changes now if it does.
    fn changed(&mut self, now: Now) {
        self.changed_at.get_or_insert(now.mono);
        let (status, _, _) = condition(self.system.as_ref(), &self.views);
        if self.transition.is_none_or(|(was, _)| was != status) {
            self.transition = Some((status, now.wall));
        }
    }

    pub fn on_system(&mut self, system: Option<SystemReady>, now: Now) {
        if system == self.system {
            return;
        }
        let was_up = self.system.as_ref().map(|s| s.status == "UP");
        let up = system.as_ref().map(|s| s.status == "UP");
        self.system = system;
        self.changed(now);
        // The kubelet's NodeReady/NodeNotReady, for the network OS.
        if let (Some(was), Some(up)) = (was_up, up) {
            if was != up {
                let reason = self.system.as_ref().map(|s| s.reason.clone()).unwrap_or_default();
                let (event_type, name) =
                    if up { (EventType::Normal, "NetworkOSReady") } else { (EventType::Warning, "NetworkOSNotReady") };
                let occurrence = Occurrence {
                    regarding: Regarding::Node(self.node.clone()),
                    event_type,
                    reason: name.to_owned(),
                    action: "None".to_owned(),
                    note: format!("SYSTEM_READY {}: {reason}", if up { "UP" } else { "DOWN" }),
                };
                self.push(occurrence, now);
            }
        }
    }

    pub fn on_notice(&mut self, notice: &Notice, now: Now) {
        if let Some(occurrence) = occurrence(notice, &self.node) {
            self.push(occurrence, now);
        }
    }

    fn push(&mut self, occurrence: Occurrence, now: Now) {
        if let Some(emit) = self.recorder.record(occurrence, now) {
            self.queue(emit);
        }
    }

    fn queue(&mut self, emit: Emit) {
        if self.outbox.len() >= OUTBOX {
            self.outbox.pop_front();
            self.lost += 1;
        }
        self.outbox.push_back(emit);
    }

    /// The switch's labels and annotations, and KubeSonic's `<feature>_enabled` for every
    /// kube-owned feature: `true` while Kubernetes should run it here (its DaemonSet's node
    /// selector), `false` once it is stopped (the cluster then removes its pod).
    fn desired_metadata(&self) -> NodeMetadata {
        let mut metadata = self.metadata.clone();
        for view in self.views.values().filter(|v| v.kube_owned) {
            metadata.labels.insert(format!("{}_enabled", view.name), view.enabled.to_string());
        }
        metadata
    }

    /// The condition as it should be sent now, if it should.
    fn condition_due(&mut self, now: Now) -> Option<Condition> {
        let (status, reason, message) = condition(self.system.as_ref(), &self.views);
        let transition = match self.transition {
            Some((was, at)) if was == status => at,
            _ => self.transition.insert((status, now.wall)).1,
        };
        let settled = self.changed_at.is_none_or(|at| now.mono.saturating_duration_since(at) >= SETTLE);
        let due = match &self.sent {
            None => true,
            Some(sent) => {
                let changed = (sent.status, sent.reason.as_str(), sent.message.as_str()) != (status, reason, &message);
                (changed && settled) || now.mono.saturating_duration_since(sent.at) >= HEARTBEAT
            }
        };
        due.then(|| Condition { status, reason: reason.to_owned(), message, heartbeat: now.wall, transition })
    }

    /// The next call to make, if any is due (one at a time: the answer comes first).
    pub fn next_call(&mut self, now: Now) -> Option<Call> {
        for emit in self.recorder.tick(now) {
            self.queue(emit);
        }
        if self.retry_at.is_some_and(|at| now.mono < at) {
            return None;
        }
        let metadata = self.desired_metadata();
        if self.metadata_applied.as_ref() != Some(&metadata) {
            return Some(Call::ApplyMetadata(metadata));
        }
        if let Some(condition) = self.condition_due(now) {
            return Some(Call::SetCondition(condition));
        }
        self.outbox.front().map(|emit| match emit {
            Emit::Create(event) => Call::CreateEvent(event.clone()),
            Emit::Series { namespace, name, series } => {
                Call::UpdateSeries { namespace: namespace.clone(), name: name.clone(), series: *series }
            }
        })
    }

    /// How `call` ended.
    pub fn answered(&mut self, call: &Call, answer: Answer, now: Now) {
        match answer {
            Answer::Done => {
                self.failures = 0;
                self.retry_at = None;
                match call {
                    Call::ApplyMetadata(metadata) => self.metadata_applied = Some(metadata.clone()),
                    Call::SetCondition(condition) => {
                        self.changed_at = None;
                        self.sent = Some(Sent {
                            status: condition.status,
                            reason: condition.reason.clone(),
                            message: condition.message.clone(),
                            at: now.mono,
                        });
                    }
                    Call::CreateEvent(_) | Call::UpdateSeries { .. } => {
                        self.outbox.pop_front();
                    }
                }
            }
            Answer::Transient => {
                self.failures = self.failures.saturating_add(1);
                let backoff = BACKOFF_FIRST.saturating_mul(1 << self.failures.min(16).saturating_sub(1));
                self.retry_at = Some(now.mono + backoff.min(BACKOFF_MAX));
            }
            Answer::Refused => match call {
                Call::CreateEvent(_) | Call::UpdateSeries { .. } => {
                    self.outbox.pop_front();
                    self.lost += 1;
                }
                Call::ApplyMetadata(_) | Call::SetCondition(_) => self.retry_at = Some(now.mono + BACKOFF_MAX),
            },
        }
    }

    /// When [`Reporter::next_call`] may next have something (an input may bring it sooner).
    pub fn next_wake(&self, now: Now) -> Instant {
        let heartbeat = self.sent.as_ref().map_or(now.mono, |s| s.at + HEARTBEAT);
        let mut wake = self.changed_at.map_or(heartbeat, |at| heartbeat.min(at + SETTLE));
        if !self.outbox.is_empty() || self.metadata_applied.as_ref() != Some(&self.desired_metadata()) {
            wake = now.mono;
        }
        if let Some(at) = self.recorder.next_tick() {
            wake = wake.min(at);
        }
        // Nothing goes out during a backoff.
        self.retry_at.map_or(wake, |at| wake.max(at))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::SystemTime;

    use super::*;
    use crate::supervisor::ServiceState;

    fn clock() -> Now {
        Now { mono: Instant::now(), wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) }
    }

    fn later(now: Now, millis: u64) -> Now {
        Now { mono: now.mono + Duration::from_millis(millis), wall: now.wall + Duration::from_millis(millis) }
    }

    fn view(name: &str, ready: bool, message: Option<&str>) -> ServiceView {
        ServiceView {
            name: ServiceName::new(name).unwrap(),
            state: if ready { ServiceState::Running } else { ServiceState::Starting },
            ready,
            enabled: true,
            pid: None,
            restarts: 0,
            image: String::new(),
            image_digest: None,
            has_container: ready,
            generation: 1,
            since: SystemTime::UNIX_EPOCH,
            last_exit_code: None,
            message: message.map(str::to_owned),
            restart: None,
            upgrade: None,
            downtime: None,
            kube_owned: false,
        }
    }

    fn system(status: &str, reason: &str) -> Option<SystemReady> {
        Some(SystemReady { status: status.into(), reason: reason.into() })
    }

    /// Every call due from `now`, each answered `Done`.
    fn drain(reporter: &mut Reporter, now: Now) -> Vec<Call> {
        let mut calls = Vec::new();
        while let Some(call) = reporter.next_call(now) {
            reporter.answered(&call, Answer::Done, now);
            calls.push(call);
        }
        calls
    }

    #[test]
    fn the_condition_names_the_services_not_ready_and_why() {
        let views: BTreeMap<ServiceName, ServiceView> =
            [view("database", true, None), view("swss", false, Some("waiting for database")), view("bgp", false, None)]
                .into_iter()
                .map(|v| (v.name.clone(), v))
                .collect();
        let (status, reason, message) = condition(system("DOWN", "1 of 3 enabled services ready").as_ref(), &views);
        assert_eq!((status, reason), (ConditionStatus::False, "ServicesNotReady"));
        assert_eq!(
            message,
            "SYSTEM_READY DOWN: 1 of 3 enabled services ready; not ready: bgp starting, swss starting (waiting for database)"
        );
        let (status, reason, _) = condition(system("FAILED", "swss failed").as_ref(), &views);
        assert_eq!((status, reason), (ConditionStatus::False, "ServiceFailed"));
        let (status, reason, _) = condition(None, &views);
        assert_eq!((status, reason), (ConditionStatus::Unknown, "NoSystemReady"));
        let all_ready: BTreeMap<_, _> =
            [view("database", true, None)].into_iter().map(|v| (v.name.clone(), v)).collect();
        let (status, reason, message) = condition(system("UP", "all enabled services are ready").as_ref(), &all_ready);
        assert_eq!(
            (status, reason, message.as_str()),
            (ConditionStatus::True, "SystemReady", "SYSTEM_READY UP: all enabled services are ready")
        );
    }

    #[test]
    fn labels_first_then_the_condition_settled_then_events_in_order() {
        let now = clock();
        let metadata = NodeMetadata { labels: [("sonic.net/hwsku".into(), "x".into())].into(), ..Default::default() };
        let mut reporter = Reporter::new("leaf1", metadata.clone());
        reporter.on_system(system("DOWN", "0 of 1 enabled services ready"), now);
        let calls = drain(&mut reporter, now);
        assert!(
            matches!(&calls[..], [Call::ApplyMetadata(m), Call::SetCondition(c)] if *m == metadata && c.status == ConditionStatus::False),
            "the labels, then the first condition at once: {calls:?}"
        );
        // A cascade: many changes within a second are one condition update, once settled.
        reporter.on_system(system("DOWN", "1 of 2 enabled services ready"), later(now, 100));
        reporter.on_system(system("UP", "all enabled services are ready"), later(now, 200));
        // The Event at once; the condition once settled.
        let calls = drain(&mut reporter, later(now, 500));
        let [Call::CreateEvent(event)] = &calls[..] else { panic!("{calls:?}") };
        let calls = drain(&mut reporter, later(now, 1_200));
        let [Call::SetCondition(condition)] = &calls[..] else { panic!("{calls:?}") };
        assert_eq!((condition.status, condition.reason.as_str()), (ConditionStatus::True, "SystemReady"));
        assert_eq!(condition.transition, later(now, 200).wall, "it turned True when SYSTEM_READY went UP");
        assert_eq!((event.reason.as_str(), event.event_type), ("NetworkOSReady", EventType::Normal));
        // Nothing more until the heartbeat, which keeps the transition time.
        assert!(drain(&mut reporter, later(now, 60_000)).is_empty());
        let calls = drain(&mut reporter, later(now, 1_200 + HEARTBEAT.as_millis() as u64));
        let [Call::SetCondition(beat)] = &calls[..] else { panic!("{calls:?}") };
        assert_eq!(beat.transition, condition.transition);
        assert!(beat.heartbeat > condition.heartbeat);
    }

    #[test]
    fn a_kube_owned_feature_is_labelled_for_its_daemonset_while_it_should_run_here() {
        let now = clock();
        let mut reporter = Reporter::new("leaf1", NodeMetadata::default());
        let telemetry = ServiceView { kube_owned: true, ..view("telemetry", true, None) };
        reporter.on_view(telemetry.clone(), now);
        reporter.on_view(view("lldp", true, None), now);
        let labels = |calls: &[Call]| match calls.first() {
            Some(Call::ApplyMetadata(m)) => m.labels.clone(),
            other => panic!("{other:?}"),
        };
        let calls = drain(&mut reporter, now);
        assert_eq!(labels(&calls), BTreeMap::from([("telemetry_enabled".to_owned(), "true".to_owned())]));
        // Stopped here: the label turns false, and the DaemonSet's pod goes.
        reporter.on_view(ServiceView { enabled: false, ..telemetry }, later(now, 10));
        let calls = drain(&mut reporter, later(now, 10));
        assert_eq!(labels(&calls)["telemetry_enabled"], "false");
    }

    #[test]
    fn a_crash_loop_is_one_event_and_a_series_and_a_cascade_says_what_it_took() {
        let now = clock();
        let mut reporter = Reporter::new("leaf1", NodeMetadata::default());
        reporter.on_system(system("UP", "ok"), now);
        drain(&mut reporter, now);
        let name = ServiceName::new("syncd").unwrap();
        let crash = Notice::Failed {
            service: name.clone(),
            reason: "killed by signal 9".into(),
            outcome: FailureOutcome::Restarting { attempt: 1, delay: Duration::ZERO },
        };
        let group = Notice::GroupDown {
            group: "swss".into(),
            cause: name.clone(),
            services: BTreeSet::from([name.clone(), ServiceName::new("swss").unwrap()]),
        };
        reporter.on_notice(&group, now);
        reporter.on_notice(&crash, now);
        reporter.on_notice(&crash, later(now, 10_000));
        let calls = drain(&mut reporter, later(now, 10_000));
        let notes: Vec<String> = calls
            .iter()
            .map(|c| match c {
                Call::CreateEvent(e) => format!("{} {}: {}", e.event_type.as_str(), e.reason, e.note),
                Call::UpdateSeries { series, .. } => format!("series {}", series.count),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            notes,
            [
                "Warning FailureGroupRestart: syncd went down cold: failure group swss restarts (swss, syncd)",
                "Warning ServiceCrashed: syncd killed by signal 9: restarting it (attempt 1)",
                "series 2",
            ]
        );
    }

    #[test]
    fn an_unreachable_server_backs_off_doubling_and_loses_nothing() {
        let now = clock();
        let mut reporter = Reporter::new("leaf1", NodeMetadata::default());
        let first = reporter.next_call(now).unwrap();
        reporter.answered(&first, Answer::Transient, now);
        assert!(reporter.next_call(later(now, 999)).is_none());
        let again = reporter.next_call(later(now, 1_000)).unwrap();
        assert_eq!(again, first);
        reporter.answered(&again, Answer::Transient, later(now, 1_000));
        assert!(reporter.next_call(later(now, 2_999)).is_none(), "the second wait is two seconds");
        for i in 0..20 {
            reporter.on_notice(
                &Notice::Feature { service: ServiceName::new("bgp").unwrap(), state: format!("s{i}") },
                later(now, 2_000),
            );
        }
        let calls = drain(&mut reporter, later(now, 3_000));
        let events = calls.iter().filter(|c| matches!(c, Call::CreateEvent(_))).count();
        assert_eq!(events, 20, "every event waited for the server: {calls:?}");
        assert_eq!(reporter.dropped(), 0);
    }

    #[test]
    fn notices_become_events_a_cluster_operator_reads() {
        let cases = [
            (
                Notice::ChangeEnded {
                    service: "bgp".into(),
                    to: "docker-fpm-frr:v2".into(),
                    result: ChangeResult::RolledBack,
                    reason: Some("not ready within 30s".into()),
                },
                "Warning UpgradeRolledBack Rollback: bgp's change to docker-fpm-frr:v2 was rolled back: not ready within 30s",
            ),
            (
                Notice::Trial { image: "SONiC-OS-2".into(), committed: false, reason: Some("swss failed".into()) },
                "Warning OSImageFellBack Rollback: OS image SONiC-OS-2 failed its trial; the switch fell back: swss failed",
            ),
            (
                Notice::Failed {
                    service: ServiceName::new("lldp").unwrap(),
                    reason: "exited with code 1".into(),
                    outcome: FailureOutcome::GaveUp,
                },
                "Warning ServiceFailed GiveUp: lldp exited with code 1: its failure budget is spent; it stays down until an operator starts it",
            ),
        ];
        for (notice, expected) in cases {
            let o = occurrence(&notice, "leaf1").unwrap();
            assert_eq!(format!("{} {} {}: {}", o.event_type.as_str(), o.reason, o.action, o.note), expected);
            assert_eq!(o.regarding, Regarding::Node("leaf1".into()));
        }
        assert!(occurrence(&Notice::SystemReady { status: "UP".into(), reason: String::new() }, "leaf1").is_none());
    }

    #[test]
    fn handover_and_fallback_are_about_the_features_pod_as_kubectl_describe_pod_shows() {
        let telemetry = ServiceName::new("telemetry").unwrap();
        let pod =
            PodSeen { pod: "sonic/telemetry-x8k2p".into(), uid: "6f1c".into(), container_id: "c1".into(), ready: true };
        let on_pod = Regarding::Pod { namespace: "sonic".into(), name: "telemetry-x8k2p".into(), uid: "6f1c".into() };
        let handover = occurrence(&Notice::Handover { service: telemetry.clone(), pod: pod.clone() }, "leaf1").unwrap();
        assert_eq!(handover.regarding, on_pod);
        assert_eq!(handover.reason, "FeatureHandedOver");
        let reason = "its pod sonic/telemetry-x8k2p is gone".to_owned();
        let fallback = occurrence(
            &Notice::Fallback { service: telemetry.clone(), pod: Some(pod), reason: reason.clone() },
            "leaf1",
        )
        .unwrap();
        assert_eq!((fallback.regarding, fallback.event_type), (on_pod, EventType::Warning));
        // Never seen as a pod: the Node's.
        let fallback = occurrence(&Notice::Fallback { service: telemetry, pod: None, reason }, "leaf1").unwrap();
        assert_eq!(fallback.regarding, Regarding::Node("leaf1".into()));
    }
}
