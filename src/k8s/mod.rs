//! The switch as a Kubernetes node (k3s agent): what soniclet tells the cluster about it.
//! `labels` is the Node's labels from DEVICE_METADATA and the image, `agent` the k3s agent's
//! config.yaml for a join (both pure).

pub mod agent;
pub mod labels;
