//! FEATURE `set_owner=kube`: Kubernetes may run a feature as a pod on this switch (KubeSonic's
//! DaemonSets), and soniclet hands over to it and falls back from it.
//!
//! The pod watcher reports every kubelet-run container that claims a feature (by its
//! container name or its pod's `raw_container_name` label) and whether the feature's own
//! readiness probe passes in it. Once a kube-owned feature's pod is ready, the local
//! container stops and the feature is Kubernetes' (`current_owner=kube`); when the pod goes
//! away, or stays unready beyond [`GRACE`], the local container comes back, unless
//! `no_fallback_to_local`. Data-plane services (`local-only` in their manifests) are never
//! handed over. A pod claiming a feature that is not kube-owned is ignored, and said once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::core::Core;
use super::event::{Effect, Notice, PodSeen};
use crate::manifest::ServiceName;

/// How long a kube-owned feature's pod may stay unready before the local container comes back
/// (KubeSonic waits as long for its remote container).
pub const GRACE: Duration = Duration::from_secs(60);

/// Who runs a service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Owner {
    /// soniclet's container, when the service is wanted.
    #[default]
    Local,
    /// A Kubernetes pod: `pod` while the watcher sees it (`None` once it went away and the
    /// feature may not fall back), unready since when.
    Kube { pod: Option<PodSeen>, unready_since: Option<Instant> },
}

/// What the core knows of the pods.
#[derive(Debug, Default)]
pub(super) struct Pods {
    /// The watcher has reported at least once: until then no kube-owned feature starts its
    /// local container (the pod may already be serving it, after a daemon restart).
    pub known: bool,
    pub seen: BTreeMap<ServiceName, PodSeen>,
    /// Claims already said to be ignored, by container.
    ignored: BTreeSet<String>,
}

/// FEATURE `set_owner=kube` on a service that may be handed over, and wanted running.
pub(super) fn kube_wanted(core: &Core, name: &ServiceName) -> bool {
    claimable(core, name) && core.want(name)
}

/// FEATURE `set_owner=kube` on a service that may be handed over, wanted or not.
pub(super) fn claimable(core: &Core, name: &ServiceName) -> bool {
    !core.service(name).manifest.service.local_only && core.features.get(name).is_some_and(|f| f.kube_owned())
}

pub(super) fn may_fall_back(core: &Core, name: &ServiceName) -> bool {
    !core.features.get(name).is_some_and(|f| f.no_fallback_to_local)
}

/// Whether soniclet's own container should run: wanted, and not Kubernetes' now (nor held
/// for a pod: before the watcher's first report, or with `no_fallback_to_local`).
pub(super) fn runs_locally(core: &Core, name: &ServiceName) -> bool {
    if !core.want(name) {
        return false;
    }
    if !kube_wanted(core, name) {
        return true;
    }
    core.units[name].owner == Owner::Local && core.pods.known && may_fall_back(core, name)
}

/// The pod serving a kube-owned feature, and whether it is ready.
pub(super) fn kube_pod<'a>(core: &'a Core, name: &ServiceName) -> Option<&'a PodSeen> {
    match &core.units[name].owner {
        Owner::Kube { pod, .. } => pod.as_ref(),
        Owner::Local => None,
    }
}

pub(super) fn on_pods(core: &mut Core, seen: BTreeMap<ServiceName, PodSeen>) {
    for (name, pod) in &seen {
        let claimable = core.manifests.get(name.as_str()).is_some() && claimable(core, name);
        if !claimable && core.pods.ignored.insert(pod.container_id.clone()) {
            tracing::warn!(
                service = %name,
                pod = %pod.pod,
                "a pod claims {name}, which is not kube-owned (FEATURE set_owner is local, or it is local-only): ignored"
            );
        }
    }
    core.pods.known = true;
    core.pods.seen = seen;
}

/// After every event: hand over to a ready pod, fall back from one gone or unready too long,
/// and come back local when the feature is no longer Kubernetes'.
pub(super) fn advance(core: &mut Core) {
    let names: Vec<ServiceName> = core.units.keys().cloned().collect();
    let now = core.now.mono;
    for name in names {
        let wanted = kube_wanted(core, &name);
        let fall_back = may_fall_back(core, &name);
        let seen = core.pods.seen.get(&name).cloned();
        let owner = core.units[&name].owner.clone();
        let next = match (owner, wanted) {
            (Owner::Local, true) => match seen {
                Some(pod) if pod.ready => {
                    tracing::info!(service = %name, pod = %pod.pod, "handing over to the Kubernetes pod");
                    core.emit(Effect::Notice(Notice::Handover { service: name.clone(), pod: pod.clone() }));
                    Owner::Kube { pod: Some(pod), unready_since: None }
                }
                _ => continue,
            },
            (Owner::Local, false) => continue,
            (Owner::Kube { pod, .. }, false) if claimable(core, &name) => {
                // Stopped: the Node's `<feature>_enabled` label turns false, and the cluster
                // removes the pod.
                let pod = pod.map(|p| p.pod).unwrap_or_default();
                tracing::info!(service = %name, pod = %pod, "stopped: no longer run here, by the pod or locally");
                Owner::Local
            }
            (Owner::Kube { pod, .. }, false) => {
                tracing::info!(service = %name, "FEATURE set_owner is local: the local container runs it");
                let reason = "FEATURE set_owner is local".to_owned();
                core.emit(Effect::Notice(Notice::Fallback { service: name.clone(), pod, reason }));
                Owner::Local
            }
            (Owner::Kube { pod: was, unready_since }, true) => match seen {
                Some(pod) if pod.ready => Owner::Kube { pod: Some(pod), unready_since: None },
                Some(pod) => {
                    let since = unready_since.unwrap_or(now);
                    if fall_back && now.saturating_duration_since(since) >= GRACE {
                        let reason = format!("its pod was not ready for {}s", GRACE.as_secs());
                        fall_back_from(core, &name, Some(pod), reason);
                        Owner::Local
                    } else {
                        Owner::Kube { pod: Some(pod), unready_since: Some(since) }
                    }
                }
                None if fall_back => {
                    let reason = format!("its pod {} is gone", was.as_ref().map_or("", |p| p.pod.as_str()));
                    fall_back_from(core, &name, was, reason);
                    Owner::Local
                }
                None => Owner::Kube { pod: None, unready_since },
            },
        };
        core.unit(&name).owner = next;
    }
}

fn fall_back_from(core: &mut Core, name: &ServiceName, pod: Option<PodSeen>, reason: String) {
    tracing::warn!(service = %name, reason = %reason, "falling back to the local container");
    core.emit(Effect::Notice(Notice::Fallback { service: name.clone(), pod, reason }));
}

/// When an unready pod's grace ends.
pub(super) fn wake(core: &Core) -> Vec<Instant> {
    core.units
        .values()
        .filter_map(|u| match &u.owner {
            Owner::Kube { unready_since: Some(since), .. } => Some(*since + GRACE),
            _ => None,
        })
        .collect()
}
