//! The switch as a Kubernetes node (k3s agent): what soniclet tells the cluster about it.
//! `labels` is the Node's labels from DEVICE_METADATA and the image (pure).

pub mod labels;
