//! The cluster port: what soniclet asks of the Kubernetes API server about its own Node, with
//! the kubelet's node credentials. `kube_api.rs` is its adapter (the one importer of `kube`
//! and `k8s-openapi`), `memory.rs` its twin.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::SystemTime;

/// The Node condition soniclet owns, as node-problem-detector owns its own.
pub const CONDITION_TYPE: &str = "NetworkOSReady";
/// The field manager of soniclet's labels and annotations, and its Events' controller.
pub const FIELD_MANAGER: &str = "soniclet";
pub const REPORTING_CONTROLLER: &str = "sonic.net/soniclet";
/// Where the kubelet puts a Node's Events (a pod's go in the pod's namespace).
pub const EVENT_NAMESPACE: &str = "default";

/// soniclet's labels and annotations on its Node (server-side applied: the ones it stops
/// setting are removed, the kubelet's and others' are left alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeMetadata {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A condition's status, in the API's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// The `NetworkOSReady` Node condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub status: ConditionStatus,
    /// CamelCase, as condition reasons are.
    pub reason: String,
    pub message: String,
    pub heartbeat: SystemTime,
    /// When `status` last changed.
    pub transition: SystemTime,
}

/// What an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Regarding {
    /// The switch's own Node.
    Node(String),
    /// A pod running a kube-owned feature.
    Pod { namespace: String, name: String, uid: String },
}

impl Regarding {
    /// Where its Events live: the API server refuses an Event about a pod outside the
    /// pod's namespace.
    pub fn event_namespace(&self) -> &str {
        match self {
            Regarding::Node(_) => EVENT_NAMESPACE,
            Regarding::Pod { namespace, .. } => namespace,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// A run of identical events, counted instead of repeated (events.k8s.io's series).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    pub count: u32,
    pub last_observed: SystemTime,
}

/// One events.k8s.io/v1 Event, as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    /// `<object>.<hex nanoseconds>`, as the kubelet names its events.
    pub name: String,
    pub regarding: Regarding,
    pub event_type: EventType,
    /// CamelCase: what happened (`ServiceCrashed`).
    pub reason: String,
    /// CamelCase: what soniclet did about it (`Restart`).
    pub action: String,
    /// For people.
    pub note: String,
    pub time: SystemTime,
    /// The node's name: which soniclet reported it.
    pub reporting_instance: String,
}

/// What the API server says of the Node, for `soniclet k8s status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    /// The kubelet's `Ready` condition: `True`, `False` or `Unknown`.
    pub ready: Option<String>,
    /// The kubelet's last heartbeat (its Ready condition's).
    pub heartbeat: Option<SystemTime>,
    /// soniclet's own condition, as the server has it.
    pub network_os_ready: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot use the node credentials {}: {message}", path.display())]
    Credentials { path: PathBuf, message: String },
    #[error("the API server cannot be reached")]
    Unreachable {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the node credentials may not {what} (403: {message})")]
    Forbidden { what: String, message: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("the API server refused to {what} ({code}: {message})")]
    Refused { what: String, code: u16, message: String },
}

impl ClusterError {
    /// Worth trying again later: the server was not reached, or not itself.
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Unreachable { .. } => true,
            ClusterError::Refused { code, .. } => *code == 429 || *code >= 500,
            _ => false,
        }
    }
}

/// What soniclet needs from the API server. Every call is bounded in time by the adapter.
pub trait Cluster: Send + Sync + 'static {
    /// Applies soniclet's labels and annotations to the Node.
    fn apply_node_metadata(
        &self,
        node: &str,
        metadata: &NodeMetadata,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;
    /// Sets the Node's `NetworkOSReady` condition, leaving the others alone.
    fn set_condition(&self, node: &str, condition: &Condition)
        -> impl Future<Output = Result<(), ClusterError>> + Send;
    fn create_event(&self, event: &EventSpec) -> impl Future<Output = Result<(), ClusterError>> + Send;
    /// Updates the series of an Event created earlier in `namespace`.
    fn update_series(
        &self,
        namespace: &str,
        name: &str,
        series: &Series,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;
    fn node_health(&self, node: &str) -> impl Future<Output = Result<NodeHealth, ClusterError>> + Send;
    fn delete_node(&self, node: &str) -> impl Future<Output = Result<(), ClusterError>> + Send;
}
