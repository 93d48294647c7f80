//! What the core reports of each service.

use super::core::Core;
use super::ownership::{self, Owner};
use super::plan::Phase;
use super::types::{RestartCause, ServiceState, ServiceView, StatusView};
use crate::manifest::ServiceName;

pub(super) fn state(core: &Core, name: &ServiceName) -> ServiceState {
    if matches!(core.units[name].owner, Owner::Kube { .. }) {
        // Kubernetes' once the local container is gone, not while it stops.
        return match core.units[name].phase {
            Phase::Stopping => ServiceState::Stopping,
            _ => ServiceState::Kube,
        };
    }
    match &core.units[name].phase {
        Phase::Stopped if core.want(name) => ServiceState::Waiting,
        Phase::Stopped => ServiceState::Stopped,
        Phase::Starting => ServiceState::Starting,
        Phase::Probing | Phase::Ready => ServiceState::Running,
        Phase::Stopping => ServiceState::Stopping,
        Phase::Backoff { .. } => ServiceState::Restarting,
        Phase::Failed { .. } => ServiceState::Failed,
    }
}

pub(super) fn service_view(core: &Core, name: &ServiceName) -> ServiceView {
    let unit = &core.units[name];
    let mut message = unit.message.clone();
    if let Some(deps) = core.waiting.get(name) {
        message = Some(format!("waiting for {}", deps.join(", ")));
    }
    if let Some(owned) = ownership_note(core, name) {
        message = Some(owned);
    }
    if let Some(degraded) = &unit.degraded {
        let minutes = core.now.mono.saturating_duration_since(degraded.since).as_secs() / 60;
        message = Some(format!(
            "degraded: critical process {} is not running ({minutes} min); auto-restart is disabled",
            degraded.process
        ));
    }
    let ready = match &unit.owner {
        Owner::Kube { pod, .. } => pod.as_ref().is_some_and(|p| p.ready),
        Owner::Local => unit.phase == Phase::Ready,
    };
    ServiceView {
        name: name.clone(),
        state: state(core, name),
        ready,
        enabled: core.want(name),
        pid: unit.pid(),
        restarts: unit.restarts,
        image: core.image_ref(name),
        image_digest: unit.image_digest.clone(),
        has_container: unit.has_container(),
        generation: unit.generation,
        since: unit.since,
        last_exit_code: unit.last_exit,
        message,
        upgrade: unit.upgrade_note.clone(),
        downtime: unit.last_downtime,
        kube_owned: ownership::claimable(core, name),
        restart: if unit.comeback.requested {
            Some(RestartCause::Requested)
        } else {
            unit.comeback.crash.as_ref().map(|_| RestartCause::Crash)
        },
    }
}

/// What Kubernetes does with the service, when that is the story.
fn ownership_note(core: &Core, name: &ServiceName) -> Option<String> {
    let unit = &core.units[name];
    let seen = core.pods.seen.get(name);
    match &unit.owner {
        Owner::Kube { pod: Some(pod), unready_since: None } if matches!(unit.phase, Phase::Stopping) => {
            Some(format!("handing over to Kubernetes pod {}: the local container stops", pod.pod))
        }
        Owner::Kube { pod: Some(pod), unready_since: None } => Some(format!("runs as Kubernetes pod {}", pod.pod)),
        Owner::Kube { pod: Some(pod), unready_since: Some(_) } => Some(if ownership::may_fall_back(core, name) {
            format!(
                "Kubernetes pod {} is not ready; the local container comes back unless it is within {}s",
                pod.pod,
                ownership::GRACE.as_secs()
            )
        } else {
            format!("Kubernetes pod {} is not ready (no_fallback_to_local)", pod.pod)
        }),
        Owner::Kube { pod: None, .. } => {
            Some("waiting for Kubernetes to run its pod (no_fallback_to_local: no local container)".into())
        }
        Owner::Local if ownership::kube_wanted(core, name) && !core.pods.known => {
            Some("waiting for the kubelet's pods to be listed (FEATURE set_owner=kube)".into())
        }
        Owner::Local if ownership::kube_wanted(core, name) && !ownership::may_fall_back(core, name) => {
            Some("waiting for Kubernetes to run its pod (no_fallback_to_local: no local container)".into())
        }
        Owner::Local if !core.want(name) && ownership::claimable(core, name) => seen.map(|pod| {
            format!(
                "stopped here; Kubernetes pod {} runs until the cluster removes it (the Node's label {name}_enabled=false)",
                pod.pod
            )
        }),
        Owner::Local => None,
    }
}

pub(super) fn status_view(core: &Core) -> StatusView {
    StatusView {
        since: core.started.wall,
        services: core.manifests.graph().start_order().iter().map(|n| service_view(core, n)).collect(),
    }
}

/// Whether the service's unit must be started: it is meant to run and just came up (or was
/// found up, when the daemon starts and adopts it). Starting a unit never fights an
/// operator: the start is queued in systemd's `fail` mode, refused while a stop job is
/// pending; stops need nothing, as a facade exits once its service is stopped.
pub(super) fn unit_must_start(previous: Option<&ServiceView>, now: &ServiceView) -> bool {
    now.enabled && now.state.is_up() && !previous.is_some_and(|p| p.enabled && p.state.is_up())
}
