//! The kubelet's pods that claim SONiC features, seen through CRI on the switch's own
//! containerd (read-only: soniclet never changes a pod). A container claims a feature by its
//! name (the DaemonSet's container named after the feature) or by its pod's
//! `raw_container_name` label, as KubeSonic's DaemonSets do. While the switch is a node (the
//! kubelet holds its credentials), the watcher lists them every second, runs the feature's
//! own readiness probe in each running one, and hands the core the whole picture whenever it
//! changes. It reports at once on start, even when the switch is not a node or CRI cannot be
//! reached, so no kube-owned feature waits on a watcher that cannot see; a switch that never
//! joins pays one look at its files every ten seconds.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::manifest::{ManifestSet, Probe, ServiceName};
use crate::supervisor::{Event, Handle, PodSeen};

/// The pod label KubeSonic's DaemonSets name their feature with.
pub const FEATURE_LABEL: &str = "raw_container_name";
/// How often the watcher looks, on a node; and for a join, on a switch that is not one.
const LOOK: Duration = Duration::from_secs(1);
const LOOK_FOR_JOIN: Duration = Duration::from_secs(10);
/// A probe's deadline inside a pod's container.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One kubelet-run container, as CRI lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContainer {
    pub id: String,
    /// The container's name in its pod.
    pub name: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// The pod's UID, as the kubelet gave it to the sandbox: what its Events regard.
    pub pod_uid: String,
    pub pod_labels: BTreeMap<String, String>,
    pub running: bool,
    /// Its main process, when it runs.
    pub pid: Option<u32>,
}

impl PodContainer {
    /// The feature this container claims, if any: its name, else its pod's label.
    pub fn claims(&self) -> &str {
        self.pod_labels.get(FEATURE_LABEL).map_or(self.name.as_str(), String::as_str)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PodsError {
    #[error("CRI at {socket} cannot be reached")]
    Unreachable {
        socket: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("CRI {op} failed: {message}")]
    Call { op: &'static str, message: String },
}

/// What soniclet asks of the kubelet's runtime: read-only.
pub trait Pods: Send + Sync + 'static {
    /// Every container the kubelet runs, with its pod.
    fn containers(&self) -> impl Future<Output = Result<Vec<PodContainer>, PodsError>> + Send;
    /// Runs `command` in the container; its exit code.
    fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<i32, PodsError>> + Send;
}

/// The claims on the switch's features: one container per feature, a running one first.
pub fn claims(containers: Vec<PodContainer>, manifests: &ManifestSet) -> BTreeMap<ServiceName, PodContainer> {
    let mut claims: BTreeMap<ServiceName, PodContainer> = BTreeMap::new();
    for container in containers {
        let Some(service) = manifests.get(container.claims()).map(|s| s.name.clone()) else { continue };
        let better = claims.get(&service).is_none_or(|held| container.running && !held.running);
        if better {
            claims.insert(service, container);
        }
    }
    claims
}

/// Whether a process named `name` (its `comm`) runs in the PID namespace of `pid`.
fn process_in_namespace_of(pid: u32, name: &str) -> bool {
    let namespace = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let Some(target) = namespace(&pid.to_string()) else { return false };
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.filter_map(Result::ok).any(|entry| {
        let p = entry.file_name().to_string_lossy().into_owned();
        p.bytes().all(|b| b.is_ascii_digit())
            && namespace(&p).as_ref() == Some(&target)
            && std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|comm| comm.trim_end() == name)
    })
}

/// The feature's own readiness probe, in the pod's container.
async fn ready<P: Pods>(pods: &P, container: &PodContainer, probe: &Probe) -> bool {
    if !container.running {
        return false;
    }
    match probe {
        Probe::Exec { command } => pods.exec(&container.id, command, PROBE_TIMEOUT).await.is_ok_and(|code| code == 0),
        Probe::Process { name } => container.pid.is_some_and(|pid| process_in_namespace_of(pid, name)),
        // Redis probes belong to the database, which is never handed over: running is ready.
        Probe::RedisPing { .. } | Probe::RedisKey { .. } => true,
    }
}

/// What the watcher sees now.
pub async fn look<P: Pods>(pods: &P, manifests: &ManifestSet) -> Result<BTreeMap<ServiceName, PodSeen>, PodsError> {
    let mut seen = BTreeMap::new();
    for (service, container) in claims(pods.containers().await?, manifests) {
        let probe = manifests.get(service.as_str()).map(|s| &s.manifest.readiness.probe);
        let ready = match probe {
            Some(probe) => ready(pods, &container, probe).await,
            None => false,
        };
        let pod = format!("{}/{}", container.pod_namespace, container.pod_name);
        seen.insert(service, PodSeen { pod, uid: container.pod_uid, container_id: container.id, ready });
    }
    Ok(seen)
}

/// Lists the pods every second while `is_node` says the switch is a Kubernetes node, and
/// tells the core whenever the picture changes.
pub async fn watch<P: Pods>(
    pods: Arc<P>,
    manifests: Arc<ManifestSet>,
    is_node: impl Fn() -> bool + Send,
    handle: Handle,
    shutdown: CancellationToken,
) {
    let mut last: Option<BTreeMap<ServiceName, PodSeen>> = None;
    let mut said_unreachable = false;
    loop {
        let node = is_node();
        let seen = if !node {
            BTreeMap::new()
        } else {
            match look(pods.as_ref(), &manifests).await {
                Ok(seen) => {
                    said_unreachable = false;
                    seen
                }
                Err(e) => {
                    if !said_unreachable {
                        tracing::info!(error = %crate::error::chain(&e), "no kubelet pods can be seen; kube-owned features run locally");
                        said_unreachable = true;
                    }
                    BTreeMap::new()
                }
            }
        };
        if last.as_ref() != Some(&seen) {
            if !handle.send(Event::Pods(seen.clone())) {
                return;
            }
            last = Some(seen);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(if node { LOOK } else { LOOK_FOR_JOIN }) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::memory::MemoryPods;
    use crate::manifest::load_sources;

    fn manifests() -> ManifestSet {
        let svc = |probe: &str| format!("[service]\n[container]\nimage = \"x:1\"\n[readiness]\nprobe = {probe}\n");
        load_sources(vec![
            ("telemetry.toml".into(), svc("{ type = \"exec\", command = [\"/bin/true\"] }")),
            ("lldp.toml".into(), svc("{ type = \"process\", name = \"no-such-proc\" }")),
        ])
        .unwrap()
    }

    fn container(id: &str, name: &str, running: bool) -> PodContainer {
        PodContainer {
            id: id.into(),
            name: name.into(),
            pod_namespace: "sonic".into(),
            pod_name: format!("{name}-{id}"),
            pod_uid: format!("uid-{id}"),
            pod_labels: BTreeMap::new(),
            running,
            pid: None,
        }
    }

    #[tokio::test]
    async fn a_feature_is_claimed_by_name_or_label_and_judged_by_its_own_probe() {
        let pods = MemoryPods::new();
        let mut labelled = container("c2", "main", true);
        labelled.pod_labels.insert(FEATURE_LABEL.into(), "lldp".into());
        pods.set(vec![
            container("c1", "telemetry", true),
            labelled,
            container("c3", "sidecar", true),
            container("c0", "telemetry", false),
        ]);
        let seen = look(&pods, &manifests()).await.unwrap();
        let telemetry = &seen[&ServiceName::new("telemetry").unwrap()];
        assert_eq!(
            (telemetry.container_id.as_str(), telemetry.ready),
            ("c1", true),
            "the running one, its exec probe passes"
        );
        let lldp = &seen[&ServiceName::new("lldp").unwrap()];
        assert_eq!((lldp.pod.as_str(), lldp.ready), ("sonic/main-c2", false), "its process is not in the pod");
        assert_eq!(seen.len(), 2, "the sidecar claims nothing: {seen:?}");
        pods.set_exit_code(1);
        let seen = look(&pods, &manifests()).await.unwrap();
        assert!(!seen[&ServiceName::new("telemetry").unwrap()].ready, "a failing exec probe is not ready");
    }

    #[test]
    fn a_process_is_found_in_its_own_pid_namespace() {
        let me = std::process::id();
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(process_in_namespace_of(me, comm.trim_end()));
        assert!(!process_in_namespace_of(me, "no-such-proc"));
    }
}
