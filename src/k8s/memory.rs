//! The cluster port's in-memory twin: it keeps what a real API server would (the Node's
//! labels, annotations and condition, the Events and their series) and can be made
//! unreachable, for the sim tier and the task's tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::cluster::{Cluster, ClusterError, Condition, EventSpec, NodeHealth, NodeMetadata, Series};

#[derive(Debug, Default)]
struct State {
    metadata: BTreeMap<String, NodeMetadata>,
    conditions: BTreeMap<String, Condition>,
    events: Vec<(EventSpec, Option<Series>)>,
    deleted: Vec<String>,
    unreachable: bool,
    calls: u64,
}

/// A twin of one cluster; clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemoryCluster {
    state: Arc<Mutex<State>>,
}

impl MemoryCluster {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("cluster twin lock"))
    }

    /// The server goes away (every call fails as unreachable), or comes back.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.with(|s| s.unreachable = unreachable);
    }

    pub fn metadata(&self, node: &str) -> Option<NodeMetadata> {
        self.with(|s| s.metadata.get(node).cloned())
    }

    pub fn condition(&self, node: &str) -> Option<Condition> {
        self.with(|s| s.conditions.get(node).cloned())
    }

    /// Every Event, with its series as last updated.
    pub fn events(&self) -> Vec<(EventSpec, Option<Series>)> {
        self.with(|s| s.events.clone())
    }

    /// Calls that reached the server.
    pub fn calls(&self) -> u64 {
        self.with(|s| s.calls)
    }

    fn call<T>(&self, f: impl FnOnce(&mut State) -> Result<T, ClusterError>) -> Result<T, ClusterError> {
        self.with(|s| {
            if s.unreachable {
                return Err(ClusterError::Unreachable { source: "connection refused (twin)".into() });
            }
            s.calls += 1;
            f(s)
        })
    }
}

impl Cluster for MemoryCluster {
    async fn apply_node_metadata(&self, node: &str, metadata: &NodeMetadata) -> Result<(), ClusterError> {
        self.call(|s| {
            s.metadata.insert(node.to_owned(), metadata.clone());
            Ok(())
        })
    }

    async fn set_condition(&self, node: &str, condition: &Condition) -> Result<(), ClusterError> {
        self.call(|s| {
            s.conditions.insert(node.to_owned(), condition.clone());
            Ok(())
        })
    }

    async fn create_event(&self, event: &EventSpec) -> Result<(), ClusterError> {
        self.call(|s| {
            if s.events.iter().any(|(e, _)| e.name == event.name) {
                return Err(ClusterError::Refused {
                    what: "create an Event".into(),
                    code: 409,
                    message: format!("events \"{}\" already exists", event.name),
                });
            }
            s.events.push((event.clone(), None));
            Ok(())
        })
    }

    async fn update_series(&self, namespace: &str, name: &str, series: &Series) -> Result<(), ClusterError> {
        self.call(|s| {
            match s.events.iter_mut().find(|(e, _)| e.name == name && e.regarding.event_namespace() == namespace) {
                Some((_, kept)) => {
                    *kept = Some(*series);
                    Ok(())
                }
                None => Err(ClusterError::NotFound { what: format!("event {name}") }),
            }
        })
    }

    async fn node_health(&self, node: &str) -> Result<NodeHealth, ClusterError> {
        self.call(|s| {
            Ok(NodeHealth {
                ready: Some("True".into()),
                heartbeat: None,
                network_os_ready: s.conditions.get(node).map(|c| c.status.as_str().to_owned()),
            })
        })
    }

    async fn delete_node(&self, node: &str) -> Result<(), ClusterError> {
        self.call(|s| {
            s.deleted.push(node.to_owned());
            Ok(())
        })
    }
}

/// The pods port's twin: the containers a kubelet would run, and what an exec in them
/// answers.
#[derive(Debug, Clone, Default)]
pub struct MemoryPods {
    state: Arc<Mutex<(Vec<super::pods::PodContainer>, i32)>>,
}

impl MemoryPods {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self, containers: Vec<super::pods::PodContainer>) {
        self.state.lock().expect("pods twin lock").0 = containers;
    }

    /// What every exec probe exits with from now on.
    pub fn set_exit_code(&self, code: i32) {
        self.state.lock().expect("pods twin lock").1 = code;
    }
}

impl super::pods::Pods for MemoryPods {
    async fn containers(&self) -> Result<Vec<super::pods::PodContainer>, super::pods::PodsError> {
        Ok(self.state.lock().expect("pods twin lock").0.clone())
    }

    async fn exec(
        &self,
        id: &str,
        _command: &[String],
        _timeout: std::time::Duration,
    ) -> Result<i32, super::pods::PodsError> {
        let state = self.state.lock().expect("pods twin lock");
        match state.0.iter().find(|c| c.id == id) {
            Some(_) => Ok(state.1),
            None => Err(super::pods::PodsError::Call { op: "exec", message: format!("container {id} not found") }),
        }
    }
}
