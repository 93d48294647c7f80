//! A join as the switch makes it, for `soniclet k8s join` and for the daemon when the agent
//! config names a cluster (`[kubernetes] server`): the Join for this switch (its facts, its
//! labels, the reservations from the manifests' memory floors), its files, and the agent's
//! unit enabled and started. Nothing waits here: the CLI waits for the registration, the
//! daemon reports once the kubelet holds its credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::agent::Join;
use super::join::{AgentFiles, JoinError, Token, UNIT};
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
    #[error("cannot start {UNIT}")]
    Systemd(#[source] Box<dbus::DbusError>),
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
    dbus::enable_and_restart(UNIT).await.map_err(|e| EnrollError::Systemd(Box::new(e)))?;
    Ok(join)
}

/// The join the agent config asks for, unless the switch has joined that server already.
pub fn wanted(config: &Config, root: &Path) -> Option<Request> {
    let k8s = &config.kubernetes;
    let request = Request {
        server: k8s.server.clone()?,
        token_file: k8s.token_file.clone()?,
        node_name: k8s.node_name.clone(),
        labels: k8s.labels.clone(),
    };
    let joined = AgentFiles::new(root).joined().ok().flatten();
    (joined.map(|j| j.server) != Some(request.server.clone())).then_some(request)
}
