//! The pods port over CRI, the kubelet's own interface to the switch's containerd: the one
//! importer of `k8s_cri`. Read-only but for the readiness probe's `ExecSync`: soniclet lists
//! what the kubelet runs and never creates, stops or removes anything in `k8s.io`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::tonic::transport::Channel;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerState, ContainerStatusRequest, ExecSyncRequest, ListContainersRequest, ListPodSandboxRequest,
};
use tokio::sync::Mutex;

use super::pods::{PodContainer, Pods, PodsError};

/// Deadline of one CRI call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// CRI on a containerd socket, connected on first use and again after it goes away.
#[derive(Debug)]
pub struct Cri {
    socket: PathBuf,
    client: Mutex<Option<RuntimeServiceClient<Channel>>>,
}

impl Cri {
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.to_owned(), client: Mutex::new(None) }
    }

    async fn client(&self) -> Result<RuntimeServiceClient<Channel>, PodsError> {
        let mut held = self.client.lock().await;
        if let Some(client) = held.as_ref() {
            return Ok(client.clone());
        }
        let unreachable = |source: Box<dyn std::error::Error + Send + Sync>| PodsError::Unreachable {
            socket: self.socket.display().to_string(),
            source,
        };
        let channel = tokio::time::timeout(CALL_TIMEOUT, containerd_client::connect(&self.socket))
            .await
            .map_err(|_| unreachable("no answer in time".into()))?
            .map_err(|e| unreachable(Box::new(e)))?;
        let client = RuntimeServiceClient::new(channel);
        *held = Some(client.clone());
        Ok(client)
    }

    async fn forget(&self) {
        *self.client.lock().await = None;
    }
}

async fn bounded<T>(
    op: &'static str,
    call: impl std::future::Future<Output = Result<containerd_client::tonic::Response<T>, containerd_client::tonic::Status>>,
) -> Result<T, PodsError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(PodsError::Call { op, message: status.message().to_owned() }),
        Err(_) => Err(PodsError::Call { op, message: format!("no answer in {CALL_TIMEOUT:?}") }),
    }
}

/// The main process of a running container, from CRI's verbose status (containerd's `info`).
fn pid_of(info: &std::collections::HashMap<String, String>) -> Option<u32> {
    let info: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    info["pid"].as_u64().and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0)
}

impl Pods for Cri {
    async fn containers(&self) -> Result<Vec<PodContainer>, PodsError> {
        let mut client = self.client().await?;
        let listed = async {
            let sandboxes =
                bounded("list pod sandboxes", client.list_pod_sandbox(ListPodSandboxRequest::default())).await?;
            let containers =
                bounded("list containers", client.list_containers(ListContainersRequest::default())).await?;
            Ok::<_, PodsError>((sandboxes.items, containers.containers))
        };
        let (sandboxes, containers) = match listed.await {
            Ok(listed) => listed,
            Err(e) => {
                self.forget().await;
                return Err(e);
            }
        };
        let pods: BTreeMap<String, _> = sandboxes.into_iter().map(|s| (s.id.clone(), s)).collect();
        let mut out = Vec::new();
        for container in containers {
            let Some(sandbox) = pods.get(&container.pod_sandbox_id) else { continue };
            let running = container.state == ContainerState::ContainerRunning as i32;
            let pid = if running {
                let request = ContainerStatusRequest { container_id: container.id.clone(), verbose: true };
                bounded("container status", client.container_status(request)).await.ok().and_then(|s| pid_of(&s.info))
            } else {
                None
            };
            let metadata = sandbox.metadata.clone().unwrap_or_default();
            out.push(PodContainer {
                id: container.id.clone(),
                name: container.metadata.map(|m| m.name).unwrap_or_default(),
                pod_namespace: metadata.namespace,
                pod_name: metadata.name,
                pod_uid: metadata.uid,
                pod_labels: sandbox.labels.clone().into_iter().collect(),
                running,
                pid,
            });
        }
        Ok(out)
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<i32, PodsError> {
        let mut client = self.client().await?;
        let request = ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: command.to_vec(),
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX).max(1),
        };
        let answer = tokio::time::timeout(timeout + CALL_TIMEOUT, client.exec_sync(request)).await;
        match answer {
            Ok(Ok(response)) => Ok(response.into_inner().exit_code),
            Ok(Err(status)) => Err(PodsError::Call { op: "exec", message: status.message().to_owned() }),
            Err(_) => Err(PodsError::Call { op: "exec", message: format!("no answer in {timeout:?}") }),
        }
    }
}
