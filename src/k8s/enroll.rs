//! A join as the switch makes it, for `soniclet k8s join` and for the daemon when the agent
//! config or CONFIG_DB names a cluster (`k8s::master`): the Join for this switch (its facts, its
//! labels, the reservations from the manifests' memory floors), its files, and the agent's
//! unit enabled and started; and leaving, for `soniclet k8s leave` and for the daemon when
//! CONFIG_DB disables its cluster. Nothing waits here: the CLI waits for the registration,
//! the daemon reports once the kubelet holds its credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::agent::Join;
use super::cluster::{Cluster, ClusterError};
use super::join::{AgentFiles, JoinError, Token, UNIT};
use super::kube_api::KubeCluster;
use super::labels::node_labels;
use super::reserve::{Reservations, ReserveError};
use crate::config::Config;
use crate::systemd::dbus;

/// What a join asks: the cluster, its token, and the operator's choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub server: String,
    pub token_file: PathBuf,
    pub node_name: Option<String>,
    /// `KEY=VALUE`, beside the switch's own labels.
    pub labels: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Files(#[from] JoinError),
    #[error("label {0:?}: give it as KEY=VALUE")]
    Label(String),
    #[error("the switch has no hostname: give a node name")]
    NoNodeName,
    #[error("cannot read the services' manifests")]
    Manifests(#[source] crate::manifest::LoadError),
    #[error("/proc/meminfo: {0}")]
    Memory(String),
    #[error(transparent)]
    Reserve(#[from] ReserveError),
    #[error("this OS image carries no k3s (/usr/local/bin/k3s): the configuration is kept; build the image with K3S_BIN=/path/to/k3s, install it, and join again")]
    NoK3s,
    #[error("cannot {action} {UNIT}")]
    Systemd { action: &'static str, source: Box<dbus::DbusError> },
}

fn memory_capacity() -> Result<u64, EnrollError> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|e| EnrollError::Memory(e.to_string()))?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| EnrollError::Memory("no MemTotal".into()))
}

/// The Join for `request` on this switch; nothing is written yet.
pub fn plan(request: &Request, config: &Config) -> Result<Join, EnrollError> {
    let (facts, hostname) = super::facts::read(&config.paths.sonic_root, &config.os.host);
    let mut labels: BTreeMap<String, String> = node_labels(&facts);
    for label in &request.labels {
        let (key, value) = label.split_once('=').ok_or_else(|| EnrollError::Label(label.clone()))?;
        labels.insert(key.to_owned(), value.to_owned());
    }
    let node_name = match &request.node_name {
        Some(name) => name.clone(),
        None => hostname
            .or_else(|| std::fs::read_to_string(config.paths.sonic_root.join("etc/hostname")).ok())
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .ok_or(EnrollError::NoNodeName)?,
    };
    let manifests = crate::manifest::load_dir(&config.paths.services).map_err(EnrollError::Manifests)?;
    let reservations = Reservations::compute(memory_capacity()?, manifests.services().map(|s| s.memory_floor()))?;
    Ok(Join {
        server: request.server.clone(),
        token_file: AgentFiles::token_file(),
        node_name,
        labels,
        runtime_endpoint: format!("unix://{}", config.containerd.socket.display()),
        pause_image: super::PAUSE_IMAGE.to_owned(),
        kubelet_args: reservations.kubelet_args(),
    })
}

/// Checks the token, writes the agent's files, then enables and starts its unit; the Join
/// it wrote.
pub async fn enroll(request: &Request, config: &Config) -> Result<Join, EnrollError> {
    let token = Token::read(&request.token_file)?;
    let join = plan(request, config)?;
    let files = AgentFiles::new(&config.paths.sonic_root);
    files.install(&join, &token)?;
    if !files.has_k3s() {
        return Err(EnrollError::NoK3s);
    }
    dbus::enable_and_restart(UNIT).await.map_err(|e| EnrollError::Systemd { action: "start", source: Box::new(e) })?;
    Ok(join)
}

/// What leaving did to the Node in the cluster.
#[derive(Debug)]
pub enum NodeRemoval {
    Deleted(String),
    /// The kubelet never registered, or the Node was gone already.
    Absent,
    /// The node credentials could not delete it (RBAC, or the server is away).
    Kept {
        node: String,
        error: ClusterError,
    },
}

impl std::fmt::Display for NodeRemoval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deleted(node) => write!(f, "deleted the Node {node}"),
            Self::Absent => write!(f, "no Node to delete"),
            Self::Kept { node, error } => write!(
                f,
                "the Node {node} stays in the cluster ({}): an administrator can remove it with `kubectl delete node {node}`",
                crate::error::chain(error)
            ),
        }
    }
}

/// Leaves the cluster: the agent stopped and disabled first (a running kubelet would register
/// the Node again), then the Node deleted where the node's credentials allow, then the agent's
/// config, token and state removed. No NOS service is touched.
pub async fn withdraw(root: &Path) -> Result<NodeRemoval, EnrollError> {
    let files = AgentFiles::new(root);
    if files.has_k3s() || dbus::active_state(UNIT).await.is_ok_and(|s| s != "inactive") {
        dbus::stop_and_disable(UNIT).await.map_err(|e| EnrollError::Systemd { action: "stop", source: Box::new(e) })?;
    }
    let joined = files.joined().ok().flatten();
    let removal = match joined.filter(|_| files.kubelet_kubeconfig().exists()) {
        None => NodeRemoval::Absent,
        Some(joined) => {
            let deleted = async {
                let cluster = KubeCluster::from_kubeconfig(&files.kubelet_kubeconfig()).await?;
                cluster.delete_node(&joined.node_name).await
            };
            match deleted.await {
                Ok(()) => NodeRemoval::Deleted(joined.node_name),
                Err(ClusterError::NotFound { .. }) => NodeRemoval::Absent,
                Err(error) => NodeRemoval::Kept { node: joined.node_name, error },
            }
        }
    };
    files.remove()?;
    Ok(removal)
}
