//! `soniclet k8s join|status|leave`: the switch as a k3s agent node. Run on the switch as
//! root, without the daemon (as k3s's own installer does): the agent's files and unit are the
//! host's, and no NOS service is touched by any of the three.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::output::{print_table, CliResult, Failure};
use crate::config::Config;
use crate::exit::Exit;
use crate::k8s::cluster::{Cluster, ClusterError};
use crate::k8s::enroll::{enroll, withdraw, EnrollError, NodeRemoval, Request};
use crate::k8s::join::{AgentFiles, JoinError, UNIT};
use crate::k8s::kube_api::KubeCluster;
use crate::systemd::dbus;

/// What `join` was asked.
#[derive(Debug, Clone)]
pub struct JoinArgs {
    pub server: String,
    pub token_file: PathBuf,
    pub node_name: Option<String>,
    pub labels: Vec<String>,
    pub no_wait: bool,
    pub timeout: u64,
}

/// `soniclet k8s status --json`. The token is never part of it.
#[derive(Debug, Serialize)]
pub struct K8sStatus {
    pub joined: bool,
    pub server: Option<String>,
    pub node_name: Option<String>,
    /// Whether the OS image carries k3s.
    pub k3s_installed: bool,
    /// k3s-agent.service's ActiveState.
    pub agent: String,
    /// Whether the kubelet holds its node credentials (it has registered with the server).
    pub registered: bool,
    /// What the API server says of the Node, asked with those credentials.
    pub api: Option<ApiView>,
}

/// The API server's view of the Node.
#[derive(Debug, Serialize)]
pub struct ApiView {
    pub reachable: bool,
    /// The kubelet's `Ready` condition.
    pub node_ready: Option<String>,
    /// The kubelet's last heartbeat, RFC 3339.
    pub heartbeat: Option<String>,
    /// soniclet's `NetworkOSReady` condition.
    pub network_os_ready: Option<String>,
    /// Why the server could not answer.
    pub error: Option<String>,
}

async fn api_view(files: &AgentFiles, node: &str) -> ApiView {
    let asked = async {
        let cluster = KubeCluster::from_kubeconfig(&files.kubelet_kubeconfig()).await?;
        cluster.node_health(node).await
    };
    match asked.await {
        Ok(health) => ApiView {
            reachable: true,
            node_ready: health.ready,
            heartbeat: health.heartbeat.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            network_os_ready: health.network_os_ready,
            error: None,
        },
        Err(e) => ApiView {
            reachable: !matches!(e, ClusterError::Unreachable { .. } | ClusterError::Credentials { .. }),
            node_ready: None,
            heartbeat: None,
            network_os_ready: None,
            error: Some(crate::exit::chain(&e)),
        },
    }
}

fn join_failure(e: &JoinError) -> Failure {
    let exit = match e {
        JoinError::Write { .. } | JoinError::Remove { .. } => Exit::Failure,
        _ => Exit::Invalid,
    };
    Failure { exit, message: crate::exit::chain(e) }
}

fn load_config(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| Failure { exit: Exit::Config, message: crate::exit::chain(&e) })
}

fn enroll_failure(e: &EnrollError) -> Failure {
    let exit = match e {
        EnrollError::Files(e) => return join_failure(e),
        EnrollError::NoK3s => Exit::NotFound,
        EnrollError::Systemd { .. } => Exit::Unavailable,
        EnrollError::Manifests(_) => Exit::Config,
        _ => Exit::Invalid,
    };
    Failure { exit, message: crate::exit::chain(e) }
}

pub async fn join(config_path: &Path, args: JoinArgs) -> CliResult {
    let config = load_config(config_path)?;
    let request = Request {
        server: args.server.clone(),
        token_file: args.token_file.clone(),
        node_name: args.node_name.clone(),
        labels: args.labels.clone(),
    };
    let join = match enroll(&request, &config).await {
        Ok(join) => join,
        Err(e @ (EnrollError::NoK3s | EnrollError::Systemd { .. })) => {
            eprintln!("k8s: wrote the agent's config for {}", args.server);
            return Err(enroll_failure(&e));
        }
        Err(e) => return Err(enroll_failure(&e)),
    };
    let files = AgentFiles::new(&config.paths.sonic_root);
    eprintln!("k8s: wrote the agent's config for {} as node {}", join.server, join.node_name);
    eprintln!("k8s: k3s-agent.service enabled and started");
    if args.no_wait {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut said = Instant::now();
    while !files.kubelet_kubeconfig().exists() {
        if Instant::now() >= deadline {
            return Err(Failure {
                exit: Exit::Timeout,
                message: format!(
                    "the agent has not registered with {} after {}s; it keeps trying with the configuration \
                     kept: see `journalctl -u k3s-agent`, or `soniclet k8s leave`",
                    join.server, args.timeout
                ),
            });
        }
        if said.elapsed() >= Duration::from_secs(5) {
            let state = dbus::active_state(UNIT).await.unwrap_or_else(|_| "unknown".into());
            eprintln!("k8s: waiting for the agent to register with {} (k3s-agent.service {state})", join.server);
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("k8s: joined {} as node {}", join.server, join.node_name);
    Ok(())
}

async fn read_status(config: &Config) -> Result<K8sStatus, Failure> {
    let files = AgentFiles::new(&config.paths.sonic_root);
    let joined = files.joined().map_err(|e| join_failure(&e))?;
    let agent = dbus::active_state(UNIT).await.unwrap_or_else(|_| "unknown".into());
    let registered = files.kubelet_kubeconfig().exists();
    let api = match (&joined, registered) {
        (Some(joined), true) => Some(api_view(&files, &joined.node_name).await),
        _ => None,
    };
    Ok(K8sStatus {
        joined: joined.is_some(),
        server: joined.as_ref().map(|j| j.server.clone()),
        node_name: joined.map(|j| j.node_name),
        k3s_installed: files.has_k3s(),
        agent,
        registered,
        api,
    })
}

pub async fn status(config_path: &Path, json: bool) -> CliResult {
    let status = read_status(&load_config(config_path)?).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
        return Ok(());
    }
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let api = status.api.as_ref();
    let reachable = match api {
        None => "-".into(),
        Some(api) if api.reachable => "yes".into(),
        Some(_) => "no".into(),
    };
    print_table(
        &["JOINED", "SERVER", "NODE", "AGENT", "REGISTERED", "API", "READY", "NETWORK-OS", "HEARTBEAT", "K3S"],
        &[vec![
            if status.joined { "yes" } else { "no" }.into(),
            or_dash(&status.server),
            or_dash(&status.node_name),
            status.agent.clone(),
            if status.registered { "yes" } else { "no" }.into(),
            reachable,
            or_dash(&api.and_then(|a| a.node_ready.clone())),
            or_dash(&api.and_then(|a| a.network_os_ready.clone())),
            or_dash(&api.and_then(|a| a.heartbeat.clone())),
            if status.k3s_installed { "installed" } else { "absent" }.into(),
        ]],
    );
    if let Some(error) = api.and_then(|a| a.error.as_ref()) {
        eprintln!("k8s: the API server did not answer for the Node: {error}");
    }
    Ok(())
}

pub async fn leave(config_path: &Path) -> CliResult {
    let config = load_config(config_path)?;
    match withdraw(&config.paths.sonic_root).await.map_err(|e| enroll_failure(&e))? {
        NodeRemoval::Absent => {}
        removal => eprintln!("k8s: {removal}"),
    }
    eprintln!("k8s: left the cluster: the agent is stopped and disabled, its config, token and state removed");
    Ok(())
}
