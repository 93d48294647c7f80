//! The kubelet, played over CRI against the switch's containerd: what a k3s agent on the
//! switch does to run a pod (RunPodSandbox, CreateContainer, StartContainer, and the
//! reverse), with host networking as KubeSonic's DaemonSets use it. The e2e tier runs pods
//! beside the NOS with it and checks that neither touches the other (it includes this file);
//! `bench k8s` times pods with it.

// Each of the two uses part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use containerd_client::tonic::transport::Channel;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
pub use k8s_cri::v1::ContainerState;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatusRequest, CreateContainerRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerResources, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest, VersionRequest,
};

/// Where the kubelet puts pods under systemd's cgroup driver.
const KUBEPODS_SLICE: &str = "kubepods.slice";

pub struct Kubelet {
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    /// The Kubernetes namespace of its pods.
    namespace: String,
}

/// One pod the kubelet runs: its sandbox and its one container.
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub sandbox: String,
    pub container: String,
}

/// What CRI says of a container.
#[derive(Debug, Clone)]
pub struct Status {
    pub state: ContainerState,
    pub pid: Option<u64>,
    pub exit_code: i32,
    pub reason: String,
}

impl Kubelet {
    /// Connects to the containerd socket of the switch whose leader is `leader`; its pods go
    /// in Kubernetes namespace `namespace`.
    pub fn connect(leader: u32, namespace: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let socket = format!("/proc/{leader}/root/run/containerd/containerd.sock");
        let channel = runtime
            .block_on(containerd_client::connect(&socket))
            .unwrap_or_else(|e| panic!("cannot reach the switch's containerd at {socket}: {e}"));
        let mut kubelet = Self { runtime, client: RuntimeServiceClient::new(channel), namespace: namespace.to_owned() };
        kubelet.wait_until_serving();
        kubelet
    }

    /// Waits until CRI answers: after a containerd restart its socket is up before CRI has
    /// recovered its pods ("server is not initialized yet"), and the kubelet retries too.
    fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let listing = self.runtime.block_on(self.client.list_pod_sandbox(ListPodSandboxRequest { filter: None }));
            match listing {
                Ok(_) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("kubelet: CRI is not serving yet ({})", e.message());
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => panic!("CRI did not serve within 60s: {e}"),
            }
        }
    }

    /// Removes the pods an earlier run of the tier left (a rerun on the same switch).
    pub fn remove_leftovers(&mut self) {
        let listing = self
            .runtime
            .block_on(self.client.list_pod_sandbox(ListPodSandboxRequest { filter: None }))
            .expect("CRI answers ListPodSandbox")
            .into_inner();
        for sandbox in listing.items {
            if sandbox.metadata.as_ref().is_some_and(|m| m.namespace == self.namespace) {
                let name = sandbox.metadata.map(|m| m.name).unwrap_or_default();
                self.remove(&Pod { name, sandbox: sandbox.id, container: String::new() });
            }
        }
    }

    /// The runtime's name and CRI version, as the kubelet's first call asks.
    pub fn version(&mut self) -> (String, String) {
        let request = VersionRequest { version: "v1".to_owned() };
        let answer = self.runtime.block_on(self.client.version(request)).expect("CRI answers Version").into_inner();
        (answer.runtime_name, answer.runtime_api_version)
    }

    /// Runs a host-network pod in `image` with one container running `script`, capped at
    /// `memory_limit` bytes when given; waits until it runs.
    pub fn run_pod(&mut self, name: &str, image: &str, script: &str, memory_limit: Option<i64>) -> Pod {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_owned(),
                uid: format!("uid-{name}"),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            hostname: String::new(),
            labels: HashMap::from([("app".to_owned(), name.to_owned())]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: KUBEPODS_SLICE.to_owned(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let sandbox = self
            .runtime
            .block_on(self.client.run_pod_sandbox(request))
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}"))
            .into_inner()
            .pod_sandbox_id;
        let container_config = ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.to_owned(), attempt: 0 }),
            image: Some(ImageSpec { image: image.to_owned(), ..Default::default() }),
            command: vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()],
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    memory_limit_in_bytes: memory_limit.unwrap_or(0),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(container_config),
            sandbox_config: Some(config),
        };
        let container = self
            .runtime
            .block_on(self.client.create_container(request))
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"))
            .into_inner()
            .container_id;
        let request = StartContainerRequest { container_id: container.clone() };
        self.runtime
            .block_on(self.client.start_container(request))
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
        Pod { name: name.to_owned(), sandbox, container }
    }

    pub fn status(&mut self, pod: &Pod) -> Status {
        let request = ContainerStatusRequest { container_id: pod.container.clone(), verbose: true };
        let answer = self
            .runtime
            .block_on(self.client.container_status(request))
            .unwrap_or_else(|e| panic!("ContainerStatus {}: {e}", pod.name))
            .into_inner();
        let status = answer.status.expect("ContainerStatus has a status");
        let pid = answer
            .info
            .get("info")
            .and_then(|info| serde_json::from_str::<serde_json::Value>(info).ok())
            .and_then(|info| info["pid"].as_u64())
            .filter(|pid| *pid > 0);
        Status {
            state: ContainerState::try_from(status.state).unwrap_or(ContainerState::ContainerUnknown),
            pid,
            exit_code: status.exit_code,
            reason: status.reason,
        }
    }

    /// Waits until `pod`'s container is in `state`; its status then.
    pub fn wait_for(&mut self, pod: &Pod, state: ContainerState, timeout: Duration) -> Status {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(pod);
            if status.state == state {
                return status;
            }
            assert!(Instant::now() < deadline, "pod {} is not {state:?} after {timeout:?}: {status:?}", pod.name);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops and removes `pod`, as the kubelet does when it is deleted.
    pub fn remove(&mut self, pod: &Pod) {
        let id = pod.sandbox.clone();
        self.runtime
            .block_on(self.client.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }))
            .unwrap_or_else(|e| panic!("StopPodSandbox {}: {e}", pod.name));
        self.runtime
            .block_on(self.client.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }))
            .unwrap_or_else(|e| panic!("RemovePodSandbox {}: {e}", pod.name));
    }
}
