//! The switch as a Kubernetes node (k3s agent): what soniclet tells the cluster about it.
//! `labels` is the Node's labels from DEVICE_METADATA and the image, `agent` the k3s agent's
//! config.yaml for a join, `reserve` what the kubelet leaves to the NOS (all pure); `join`
//! the agent's files on the switch (the token 0600, the config naming it); `facts` reads
//! the switch's facts for the labels; `master` is CONFIG_DB's `KUBERNETES_MASTER|SERVER` and
//! which join the switch's sources ask for (pure), `enroll` joins and leaves. In the daemon, `task` reports to the API server through
//! the `cluster` port (`kube_api` its adapter, `memory` its twin): `report` decides what the
//! Node says (labels, the `NetworkOSReady` condition, Events), `recorder` holds the kubelet's
//! event recorder rules. `pods` watches the kubelet's pods that claim features (FEATURE
//! `set_owner=kube`) through the `Pods` port, `cri` its adapter over CRI.

pub mod agent;
pub mod cluster;
pub mod cri;
pub mod enroll;
pub mod facts;
pub mod join;
pub mod kube_api;
pub mod labels;
pub mod master;
pub mod memory;
pub mod pods;
pub mod recorder;
pub mod report;
pub mod reserve;
pub mod task;

/// The pod sandbox image the OS image ships and imports into `k8s.io` at boot (no registry
/// reaches a switch): the rootfs containerd's `sandbox_image` and the agent's `pause-image`.
pub const PAUSE_IMAGE: &str = "soniclet.local/pause:1";
