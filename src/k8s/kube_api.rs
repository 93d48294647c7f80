//! The cluster port over `kube`, with the kubelet's own node credentials: the one importer of
//! `kube` and `k8s-openapi`. Labels and annotations are server-side applied under the field
//! manager `soniclet`; the condition is a strategic-merge patch of the Node's status, as
//! node-problem-detector sets its conditions; Events are events.k8s.io/v1.

use std::path::Path;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Node, NodeCondition, ObjectReference};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::cluster::{
    Cluster, ClusterError, Condition, EventSpec, NodeHealth, NodeMetadata, Regarding, Series, CONDITION_TYPE,
    FIELD_MANAGER, REPORTING_CONTROLLER,
};

/// Deadline of one API call; the task around it backs off and tries again.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct KubeCluster {
    client: kube::Client,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        f.debug_struct("KubeCluster").finish_non_exhaustive()
    }
}

fn timestamp(at: SystemTime) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::try_from(at).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// kube's answer, in the port's terms.
fn call_err(what: &str, error: kube::Error) -> ClusterError {
    match error {
        kube::Error::Api(status) if status.code == 403 => {
            ClusterError::Forbidden { what: what.to_owned(), message: status.message.clone() }
        }
        kube::Error::Api(status) if status.code == 404 => ClusterError::NotFound { what: what.to_owned() },
        kube::Error::Api(status) => {
            ClusterError::Refused { what: what.to_owned(), code: status.code, message: status.message.clone() }
        }
        other => ClusterError::Unreachable { source: Box::new(other) },
    }
}

async fn bounded<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(|e| call_err(what, e)),
        Err(_) => Err(ClusterError::Unreachable { source: format!("no answer to {what} in {CALL_TIMEOUT:?}").into() }),
    }
}

impl KubeCluster {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// A client with the credentials of `kubeconfig` (the kubelet's, on a joined switch).
    pub async fn from_kubeconfig(kubeconfig: &Path) -> Result<Self, ClusterError> {
        let credentials = |message: String| ClusterError::Credentials { path: kubeconfig.to_owned(), message };
        let file = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| credentials(e.to_string()))?;
        let mut config = kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| credentials(e.to_string()))?;
        config.connect_timeout = Some(CALL_TIMEOUT);
        config.read_timeout = Some(CALL_TIMEOUT);
        let client = kube::Client::try_from(config).map_err(|e| credentials(e.to_string()))?;
        Ok(Self { client })
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    fn events(&self, namespace: &str) -> Api<Event> {
        Api::namespaced(self.client.clone(), namespace)
    }
}

fn reference(regarding: &Regarding) -> ObjectReference {
    match regarding {
        // As the kubelet refers to its Node: the node's name stands for its UID.
        Regarding::Node(name) => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(name.clone()),
            uid: Some(name.clone()),
            ..Default::default()
        },
        Regarding::Pod { namespace, name, uid } => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(namespace.clone()),
            name: Some(name.clone()),
            uid: Some(uid.clone()),
            ..Default::default()
        },
    }
}

/// The Event object for `event`.
fn event_object(event: &EventSpec) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(event.name.clone()),
            namespace: Some(event.regarding.event_namespace().into()),
            ..Default::default()
        },
        event_time: Some(MicroTime(timestamp(event.time))),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(event.reporting_instance.clone()),
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        note: Some(event.note.clone()),
        type_: Some(event.event_type.as_str().into()),
        regarding: Some(reference(&event.regarding)),
        ..Default::default()
    }
}

impl Cluster for KubeCluster {
    async fn apply_node_metadata(&self, node: &str, metadata: &NodeMetadata) -> Result<(), ClusterError> {
        let apply = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": node, "labels": metadata.labels, "annotations": metadata.annotations },
        });
        // Forced: the kubelet registered these labels from the agent's config; soniclet keeps them.
        let params = PatchParams::apply(FIELD_MANAGER).force();
        bounded("apply the Node's labels", self.nodes().patch(node, &params, &Patch::Apply(&apply))).await?;
        Ok(())
    }

    async fn set_condition(&self, node: &str, condition: &Condition) -> Result<(), ClusterError> {
        let condition = NodeCondition {
            type_: CONDITION_TYPE.into(),
            status: condition.status.as_str().into(),
            reason: Some(condition.reason.clone()),
            message: Some(condition.message.clone()),
            last_heartbeat_time: Some(Time(timestamp(condition.heartbeat))),
            last_transition_time: Some(Time(timestamp(condition.transition))),
        };
        // Conditions merge by type: the kubelet's own stay as they are.
        let patch = json!({ "status": { "conditions": [condition] } });
        let params = PatchParams::default();
        bounded("set the Node's condition", self.nodes().patch_status(node, &params, &Patch::Strategic(&patch)))
            .await?;
        Ok(())
    }

    async fn create_event(&self, event: &EventSpec) -> Result<(), ClusterError> {
        let object = event_object(event);
        let events = self.events(event.regarding.event_namespace());
        bounded("create an Event", events.create(&PostParams::default(), &object)).await?;
        Ok(())
    }

    async fn update_series(&self, namespace: &str, name: &str, series: &Series) -> Result<(), ClusterError> {
        let series = EventSeries {
            count: i32::try_from(series.count).unwrap_or(i32::MAX),
            last_observed_time: MicroTime(timestamp(series.last_observed)),
        };
        let patch = json!({ "series": series });
        let params = PatchParams::default();
        bounded("update an Event's series", self.events(namespace).patch(name, &params, &Patch::Merge(&patch))).await?;
        Ok(())
    }

    async fn node_health(&self, node: &str) -> Result<NodeHealth, ClusterError> {
        let node = bounded("read the Node", self.nodes().get(node)).await?;
        let conditions = node.status.and_then(|s| s.conditions).unwrap_or_default();
        let find = |kind: &str| conditions.iter().find(|c| c.type_ == kind);
        let ready = find("Ready");
        Ok(NodeHealth {
            ready: ready.map(|c| c.status.clone()),
            heartbeat: ready.and_then(|c| c.last_heartbeat_time.as_ref()).map(|t| SystemTime::from(t.0)),
            network_os_ready: find(CONDITION_TYPE).map(|c| c.status.clone()),
        })
    }

    async fn delete_node(&self, node: &str) -> Result<(), ClusterError> {
        bounded("delete the Node", self.nodes().delete(node, &DeleteParams::default())).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::pin::pin;

    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::Value;
    use tower_test::mock;

    use super::*;
    use crate::k8s::cluster::{ConditionStatus, EventType};

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    fn cluster() -> (KubeCluster, Handle) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (KubeCluster::new(kube::Client::new(service, "default")), handle)
    }

    /// The one request the server gets: method, path and query, content type, body.
    async fn serve(handle: Handle, status: u16, answer: Value) -> (String, String, Value) {
        let mut handle = pin!(handle);
        let (request, send) = handle.next_request().await.expect("a request");
        let method = request.method().to_string();
        let uri = request.uri().to_string();
        let content_type =
            request.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let bytes = http_body_util::BodyExt::collect(request.into_body()).await.unwrap().to_bytes();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        let response = Response::builder().status(status).body(Body::from(serde_json::to_vec(&answer).unwrap()));
        send.send_response(response.unwrap());
        (format!("{method} {uri}"), content_type, body)
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn node_answer() -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "leaf1"}})
    }

    #[tokio::test]
    async fn labels_and_annotations_are_server_side_applied_as_soniclet() {
        let (cluster, handle) = cluster();
        let server = tokio::spawn(serve(handle, 200, node_answer()));
        let metadata = NodeMetadata {
            labels: BTreeMap::from([("sonic.net/hwsku".into(), "Force10-S6000".into())]),
            annotations: BTreeMap::from([("sonic.net/soniclet-version".into(), "0.1.0".into())]),
        };
        cluster.apply_node_metadata("leaf1", &metadata).await.unwrap();
        let (request, content_type, body) = server.await.unwrap();
        assert_eq!(request, "PATCH /api/v1/nodes/leaf1?&force=true&fieldManager=soniclet");
        assert_eq!(content_type, "application/apply-patch+yaml");
        assert_eq!(
            body,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {
                "name": "leaf1",
                "labels": {"sonic.net/hwsku": "Force10-S6000"},
                "annotations": {"sonic.net/soniclet-version": "0.1.0"},
            }})
        );
    }

    #[tokio::test]
    async fn the_condition_is_a_strategic_merge_of_the_nodes_status() {
        let (cluster, handle) = cluster();
        let server = tokio::spawn(serve(handle, 200, node_answer()));
        let condition = Condition {
            status: ConditionStatus::False,
            reason: "ServicesNotReady".into(),
            message: "4 of 6 enabled services ready".into(),
            heartbeat: at(1_800_000_000),
            transition: at(1_700_000_000),
        };
        cluster.set_condition("leaf1", &condition).await.unwrap();
        let (request, content_type, body) = server.await.unwrap();
        assert_eq!(request, "PATCH /api/v1/nodes/leaf1/status?");
        assert_eq!(content_type, "application/strategic-merge-patch+json");
        assert_eq!(
            body,
            json!({"status": {"conditions": [{
                "type": "NetworkOSReady",
                "status": "False",
                "reason": "ServicesNotReady",
                "message": "4 of 6 enabled services ready",
                "lastHeartbeatTime": "2027-01-15T08:00:00Z",
                "lastTransitionTime": "2023-11-14T22:13:20Z",
            }]}})
        );
    }

    #[tokio::test]
    async fn an_event_is_created_in_events_k8s_io_and_its_series_patched() {
        let (cluster, handle) = cluster();
        let event = EventSpec {
            name: "leaf1.17f0c0ffee".into(),
            regarding: Regarding::Node("leaf1".into()),
            event_type: EventType::Warning,
            reason: "ServiceCrashed".into(),
            action: "Restart".into(),
            note: "syncd killed by signal 9; restarting (attempt 1)".into(),
            time: at(1_800_000_000) + Duration::from_micros(250),
            reporting_instance: "leaf1".into(),
        };
        let answer = serde_json::to_value(event_object(&event)).unwrap();
        let server = tokio::spawn(async move {
            let mut handle = pin!(handle);
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (request, send) = handle.next_request().await.expect("a request");
                let line = format!("{} {}", request.method(), request.uri());
                let bytes = http_body_util::BodyExt::collect(request.into_body()).await.unwrap().to_bytes();
                seen.push((line, serde_json::from_slice::<Value>(&bytes).unwrap()));
                send.send_response(Response::new(Body::from(serde_json::to_vec(&answer).unwrap())));
            }
            seen
        });
        cluster.create_event(&event).await.unwrap();
        let series = Series { count: 3, last_observed: at(1_800_000_060) };
        cluster.update_series("default", "leaf1.17f0c0ffee", &series).await.unwrap();
        let seen = server.await.unwrap();
        assert_eq!(seen[0].0, "POST /apis/events.k8s.io/v1/namespaces/default/events?");
        assert_eq!(
            seen[0].1,
            json!({
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"name": "leaf1.17f0c0ffee", "namespace": "default"},
                "eventTime": "2027-01-15T08:00:00.000250Z",
                "reportingController": "sonic.net/soniclet",
                "reportingInstance": "leaf1",
                "action": "Restart",
                "reason": "ServiceCrashed",
                "note": "syncd killed by signal 9; restarting (attempt 1)",
                "type": "Warning",
                "regarding": {"apiVersion": "v1", "kind": "Node", "name": "leaf1", "uid": "leaf1"},
            })
        );
        assert_eq!(seen[1].0, "PATCH /apis/events.k8s.io/v1/namespaces/default/events/leaf1.17f0c0ffee?");
        assert_eq!(seen[1].1, json!({"series": {"count": 3, "lastObservedTime": "2027-01-15T08:01:00.000000Z"}}));
    }

    /// The API server refuses an Event about a pod outside the pod's namespace.
    #[tokio::test]
    async fn an_event_about_a_features_pod_lives_in_the_pods_namespace() {
        let (cluster, handle) = cluster();
        let event = EventSpec {
            name: "telemetry-x8k2p.17f0c0ffee".into(),
            regarding: Regarding::Pod { namespace: "sonic".into(), name: "telemetry-x8k2p".into(), uid: "6f1c".into() },
            event_type: EventType::Normal,
            reason: "FeatureHandedOver".into(),
            action: "StopLocal".into(),
            note: "telemetry runs as pod sonic/telemetry-x8k2p".into(),
            time: at(1_800_000_000),
            reporting_instance: "leaf1".into(),
        };
        let server = tokio::spawn(serve(handle, 201, serde_json::to_value(event_object(&event)).unwrap()));
        cluster.create_event(&event).await.unwrap();
        let (request, _, body) = server.await.unwrap();
        assert_eq!(request, "POST /apis/events.k8s.io/v1/namespaces/sonic/events?");
        assert_eq!(body["metadata"]["namespace"], "sonic");
        assert_eq!(
            body["regarding"],
            json!({"apiVersion": "v1", "kind": "Pod", "namespace": "sonic", "name": "telemetry-x8k2p", "uid": "6f1c"})
        );
    }

    #[tokio::test]
    async fn answers_map_to_typed_errors() {
        for (code, transient) in [(403, false), (404, false), (422, false), (429, true), (503, true)] {
            let (cluster, handle) = cluster();
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                "message": "nodes \"leaf1\" is forbidden: User \"system:node:leaf1\" cannot delete"});
            let server = tokio::spawn(serve(handle, code, status));
            let err = cluster.delete_node("leaf1").await.unwrap_err();
            server.await.unwrap();
            assert_eq!(err.is_transient(), transient, "{code}: {err}");
            match code {
                403 => assert!(matches!(err, ClusterError::Forbidden { .. }), "{err:?}"),
                404 => assert!(matches!(err, ClusterError::NotFound { .. }), "{err:?}"),
                _ => assert!(matches!(err, ClusterError::Refused { .. }), "{err:?}"),
            }
        }
    }

    #[tokio::test]
    async fn node_health_reads_the_kubelets_ready_condition_and_its_own() {
        let (cluster, handle) = cluster();
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "leaf1"},
        "status": {"conditions": [
            {"type": "Ready", "status": "True", "lastHeartbeatTime": "2027-01-15T08:00:00Z"},
            {"type": "NetworkOSReady", "status": "False"},
        ]}});
        let server = tokio::spawn(serve(handle, 200, node));
        let health = cluster.node_health("leaf1").await.unwrap();
        let (request, ..) = server.await.unwrap();
        assert_eq!(request, "GET /api/v1/nodes/leaf1");
        assert_eq!(health.ready.as_deref(), Some("True"));
        assert_eq!(health.heartbeat, Some(at(1_800_000_000)));
        assert_eq!(health.network_os_ready.as_deref(), Some("False"));
    }
}
