//! The daemon's Kubernetes task. Once the switch has joined (the kubelet holds its node
//! credentials), it keeps its Node's labels, annotations and `NetworkOSReady` condition
//! current and turns the core's notices into Events. It only listens to the supervisor (two
//! broadcasts and a watch) and calls the API server from its own task, one call at a time with
//! backoff, so an API server that is slow or down never slows or blocks the supervisor.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::cluster::{Cluster, ClusterError, NodeMetadata};
use super::join::AgentFiles;
use super::kube_api::KubeCluster;
use super::labels::node_labels;
use super::master::{membership, MasterServer, Membership};
use super::report::{Answer, Call, Reporter};
use crate::db::Fields;
use crate::supervisor::{Command, DbRequest, Handle, Notice, Now, Response, ServiceView, SystemReady};

/// How often the task looks for a join, and re-reads the switch's facts for its labels.
const LOOK: Duration = Duration::from_secs(10);
const FACTS: Duration = Duration::from_secs(5 * 60);
/// How soon a join that failed is tried again (KubeSonic's ctrmgrd retries every 30 s).
const RETRY: Duration = Duration::from_secs(30);

/// Where the switch's files are, and the join the agent config asks for.
#[derive(Debug, Clone)]
pub struct Settings {
    pub sonic_root: PathBuf,
    pub os_host: PathBuf,
    pub config: crate::config::Config,
}

/// What the supervisor tells the task.
#[derive(Debug)]
pub struct Feeds {
    pub notices: broadcast::Receiver<Notice>,
    pub statuses: broadcast::Receiver<ServiceView>,
    pub system: watch::Receiver<Option<SystemReady>>,
}

impl Feeds {
    pub fn from(handle: &Handle) -> Self {
        Self { notices: handle.notices(), statuses: handle.statuses(), system: handle.system_ready() }
    }
}

/// The Node's labels (those of the join) and soniclet's annotations, from the switch's files.
pub fn metadata(settings: &Settings) -> NodeMetadata {
    let (facts, _) = super::facts::read(&settings.sonic_root, &settings.os_host);
    let mut annotations = std::collections::BTreeMap::from([(
        "sonic.net/soniclet-version".to_owned(),
        env!("CARGO_PKG_VERSION").to_owned(),
    )]);
    if let Some(version) = &facts.version {
        annotations.insert("sonic.net/os-image".to_owned(), version.clone());
    }
    NodeMetadata { labels: node_labels(&facts), annotations }
}

/// Waits for the switch to join, reports while it is joined, and waits again after it
/// leaves; until shutdown.
pub async fn supervise(settings: Settings, handle: Handle, shutdown: CancellationToken) {
    let files = AgentFiles::new(&settings.sonic_root);
    let mut said_waiting = false;
    while !shutdown.is_cancelled() {
        let joined = files.joined().ok().flatten();
        let kubeconfig = files.kubelet_kubeconfig();
        let Some(joined) = joined.filter(|_| kubeconfig.exists()) else {
            if !said_waiting {
                tracing::debug!("not a Kubernetes node (no join, or the kubelet has not registered yet)");
                said_waiting = true;
            }
            sleep_or_shutdown(LOOK, &shutdown).await;
            continue;
        };
        said_waiting = false;
        let cluster = match KubeCluster::from_kubeconfig(&kubeconfig).await {
            Ok(cluster) => cluster,
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e), "cannot use the kubelet's node credentials; trying again");
                sleep_or_shutdown(LOOK, &shutdown).await;
                continue;
            }
        };
        tracing::info!(node = %joined.node_name, server = %joined.server, "reporting to the cluster as the node's network OS");
        let reporter = Reporter::new(&joined.node_name, metadata(&settings));
        let left = CancellationToken::new();
        let watch_join = {
            let (files, left, shutdown) = (files.clone(), left.clone(), shutdown.clone());
            async move {
                while !shutdown.is_cancelled() && files.kubelet_kubeconfig().exists() {
                    sleep_or_shutdown(LOOK, &shutdown).await;
                }
                left.cancel();
            }
        };
        let views = initial_views(&handle).await;
        let feeds = Feeds::from(&handle);
        let refresh = || metadata(&settings);
        tokio::join!(report(&cluster, reporter, feeds, views, &refresh, &left), watch_join);
        if !shutdown.is_cancelled() {
            tracing::info!("the switch left the cluster");
        }
    }
}

/// CONFIG_DB's `KUBERNETES_MASTER|SERVER` as the database link follows it, and where the
/// task's STATE_DB report goes (no database service: neither).
#[derive(Debug)]
pub struct MasterFeed {
    pub entry: watch::Receiver<Option<Fields>>,
    pub state: Option<mpsc::UnboundedSender<DbRequest>>,
}

/// Keeps the switch's membership what its sources say (`k8s::master`): joins as `soniclet
/// k8s join --no-wait` does, moves to a new server, leaves the cluster CONFIG_DB disables.
/// A join that fails is tried again every 30 s, and said again only when its error changes;
/// a bad CONFIG_DB entry is said once and changes nothing. STATE_DB `KUBERNETES_MASTER|SERVER`
/// says whether the switch is a registered node of the server CONFIG_DB names.
pub async fn follow_membership(settings: Settings, mut master: MasterFeed, shutdown: CancellationToken) {
    let files = AgentFiles::new(&settings.sonic_root);
    let mut said: Option<String> = None;
    let mut reported: Option<(MasterServer, bool)> = None;
    // Without a database service nothing ever sends an entry.
    let mut entries_open = true;
    while !shutdown.is_cancelled() {
        let entry = master.entry.borrow_and_update().clone();
        let mut failed = false;
        let mut say = |message: String, failure: bool| {
            failed |= failure;
            if said.as_ref() != Some(&message) {
                if failure {
                    tracing::error!("{message}");
                } else {
                    tracing::info!("{message}");
                }
                said = Some(message);
            }
        };
        let parsed = entry.as_ref().map(MasterServer::parse).transpose();
        let joined = files.joined().ok().flatten().map(|j| j.server);
        match &parsed {
            Err(e) => say(format!("{e}; the switch's cluster membership stays as it is"), false),
            Ok(server) => {
                match membership(&settings.config.kubernetes, server.as_ref(), joined.as_deref(), &settings.sonic_root)
                {
                    Membership::Keep => {}
                    Membership::Join { request, from } => match super::enroll::enroll(&request, &settings.config).await
                    {
                        Ok(join) => say(
                            format!("joining {} as node {} ({})", join.server, join.node_name, from.as_str()),
                            false,
                        ),
                        Err(e) => say(
                            format!("cannot join {} ({}): {}", request.server, from.as_str(), crate::error::chain(&e)),
                            true,
                        ),
                    },
                    Membership::Leave { server } => match super::enroll::withdraw(&settings.sonic_root).await {
                        Ok(removal) => say(
                            format!("left {server}: CONFIG_DB KUBERNETES_MASTER|SERVER disables it ({removal})"),
                            false,
                        ),
                        Err(e) => say(format!("cannot leave {server}: {}", crate::error::chain(&e)), true),
                    },
                }
            }
        }
        if let (Ok(Some(server)), Some(state)) = (parsed, &master.state) {
            let joined = files.joined().ok().flatten().map(|j| j.server);
            let connected = joined.as_deref() == Some(server.url().as_str()) && files.kubelet_kubeconfig().exists();
            let now = (server, connected);
            if reported.as_ref() != Some(&now) {
                let fields = super::master::state_fields(&now.0, now.1, std::time::SystemTime::now());
                let _ = state.send(DbRequest::KubeMaster { fields });
                reported = Some(now);
            }
        }
        let wait = if failed { RETRY } else { LOOK };
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = master.entry.changed(), if entries_open => entries_open = changed.is_ok(),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn sleep_or_shutdown(how_long: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(how_long) => {}
        () = shutdown.cancelled() => {}
    }
}

async fn initial_views(handle: &Handle) -> Vec<ServiceView> {
    match handle.request(Command::Status).await {
        Ok(Response::Status(status)) => status.services,
        _ => Vec::new(),
    }
}

fn answer_of(call: &Call, result: &Result<(), ClusterError>) -> Answer {
    match result {
        Ok(()) => Answer::Done,
        Err(e) if e.is_transient() => {
            tracing::debug!(error = %crate::error::chain(e), "the API server did not take a call; backing off");
            Answer::Transient
        }
        Err(e) => {
            tracing::warn!(error = %crate::error::chain(e), call = call.kind(), "the API server refused a call");
            Answer::Refused
        }
    }
}

/// Reports until `stop`: inputs from the supervisor, calls to the cluster.
pub async fn report<C: Cluster>(
    cluster: &C,
    mut reporter: Reporter,
    mut feeds: Feeds,
    views: Vec<ServiceView>,
    refresh: &(dyn Fn() -> NodeMetadata + Sync),
    stop: &CancellationToken,
) {
    let now = Now::read();
    for view in views {
        reporter.on_view(view, now);
    }
    let system = feeds.system.borrow_and_update().clone();
    reporter.on_system(system, now);
    let mut facts_at = tokio::time::Instant::now() + FACTS;
    loop {
        // Everything due, one call at a time.
        loop {
            let now = Now::read();
            let Some(call) = reporter.next_call(now) else { break };
            let result = tokio::select! {
                result = execute(cluster, reporter.node(), &call) => result,
                () = stop.cancelled() => return,
            };
            reporter.answered(&call, answer_of(&call, &result), Now::read());
        }
        let wake = tokio::time::Instant::from_std(reporter.next_wake(Now::read())).min(facts_at);
        // In the order the supervisor said things: its notices before SYSTEM_READY's change.
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            notice = feeds.notices.recv() => match notice {
                Ok(notice) => reporter.on_notice(&notice, Now::read()),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "the Kubernetes task fell behind; some notices have no Event");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            view = feeds.statuses.recv() => match view {
                Ok(view) => reporter.on_view(view, Now::read()),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            changed = feeds.system.changed() => {
                if changed.is_err() {
                    return;
                }
                let system = feeds.system.borrow_and_update().clone();
                reporter.on_system(system, Now::read());
            }
            () = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= facts_at {
                    reporter.set_metadata(refresh());
                    facts_at = tokio::time::Instant::now() + FACTS;
                }
            }
        }
    }
}

async fn execute<C: Cluster>(cluster: &C, node: &str, call: &Call) -> Result<(), ClusterError> {
    match call {
        Call::ApplyMetadata(metadata) => cluster.apply_node_metadata(node, metadata).await,
        Call::SetCondition(condition) => cluster.set_condition(node, condition).await,
        Call::CreateEvent(event) => cluster.create_event(event).await,
        Call::UpdateSeries { namespace, name, series } => cluster.update_series(namespace, name, series).await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::k8s::cluster::ConditionStatus;
    use crate::k8s::memory::MemoryCluster;
    use crate::manifest::ServiceName;
    use crate::supervisor::FailureOutcome;

    struct Supervisor {
        notices: broadcast::Sender<Notice>,
        _statuses: broadcast::Sender<ServiceView>,
        system: watch::Sender<Option<SystemReady>>,
    }

    fn feeds() -> (Supervisor, Feeds) {
        let (notices, notices_rx) = broadcast::channel(16);
        let (statuses, statuses_rx) = broadcast::channel(16);
        let (system, system_rx) = watch::channel(None);
        (
            Supervisor { notices, _statuses: statuses, system },
            Feeds { notices: notices_rx, statuses: statuses_rx, system: system_rx },
        )
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting until {what}");
    }

    fn up() -> Option<SystemReady> {
        Some(SystemReady { status: "UP".into(), reason: "all enabled services are ready".into() })
    }

    #[tokio::test]
    async fn the_node_is_labelled_its_condition_kept_and_a_crash_reaches_the_cluster_after_an_outage() {
        let cluster = MemoryCluster::new();
        let (supervisor, feeds) = feeds();
        supervisor.system.send_replace(up());
        let metadata = NodeMetadata { labels: [("sonic.net/hwsku".into(), "x".into())].into(), ..Default::default() };
        let reporter = Reporter::new("leaf1", metadata.clone());
        let stop = CancellationToken::new();
        let refresh = || metadata.clone();
        let task = {
            let (cluster, stop) = (cluster.clone(), stop.clone());
            async move { report(&cluster, reporter, feeds, Vec::new(), &refresh, &stop).await }
        };
        let checks = async {
            until("the condition is set", || cluster.condition("leaf1").is_some()).await;
            assert_eq!(cluster.metadata("leaf1"), Some(metadata.clone()));
            assert_eq!(cluster.condition("leaf1").unwrap().status, ConditionStatus::True);
            // The server goes away: the supervisor's news waits for it, and nothing blocks.
            cluster.set_unreachable(true);
            let crash = Notice::Failed {
                service: ServiceName::new("syncd").unwrap(),
                reason: "killed by signal 9".into(),
                outcome: FailureOutcome::Restarting { attempt: 1, delay: Duration::ZERO },
            };
            let started = std::time::Instant::now();
            supervisor.notices.send(crash).unwrap();
            supervisor.system.send_replace(Some(SystemReady { status: "DOWN".into(), reason: "x".into() }));
            assert!(started.elapsed() < Duration::from_millis(50), "the supervisor's sends never wait");
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(cluster.events().is_empty());
            cluster.set_unreachable(false);
            until("the crash is an Event", || cluster.events().iter().any(|(e, _)| e.reason == "ServiceCrashed")).await;
            until("the condition follows", || cluster.condition("leaf1").unwrap().status == ConditionStatus::False)
                .await;
            let reasons: Vec<String> = cluster.events().iter().map(|(e, _)| e.reason.clone()).collect();
            assert_eq!(reasons, ["ServiceCrashed", "NetworkOSNotReady"]);
            assert!(cluster.condition("leaf1").unwrap().transition > SystemTime::UNIX_EPOCH);
            stop.cancel();
        };
        tokio::join!(task, checks);
    }
}
