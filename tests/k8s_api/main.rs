//! The Kubernetes API tier: soniclet's cluster adapter against a real API server. No server
//! can be installed on the CI machines (no registry ships one), so this tier runs only where
//! `SONICLET_TEST_KUBECONFIG` names a kubeconfig whose user may create and delete Nodes (an
//! administrator's); `cargo xtask ci` says loudly when it did not run it. The request bodies
//! themselves are pinned against kube's mock service in the unit tier (`k8s::kube_api`).
//!
//! It registers a Node of its own (`soniclet-api-test-<pid>`, tainted so nothing lands on
//! it), applies soniclet's labels and annotations, sets and reads `NetworkOSReady`, creates an
//! Event and its series, reads them back, and deletes the Node as `soniclet k8s leave` does.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, PostParams};
use soniclet::k8s::cluster::{
    Cluster, ClusterError, Condition, ConditionStatus, EventSpec, EventType, NodeMetadata, Regarding, Series,
};
use soniclet::k8s::kube_api::KubeCluster;

fn kubeconfig() -> std::path::PathBuf {
    std::env::var_os("SONICLET_TEST_KUBECONFIG")
        .map(Into::into)
        .expect("set SONICLET_TEST_KUBECONFIG to a kubeconfig that may create and delete Nodes")
}

#[tokio::test]
#[ignore = "needs a real Kubernetes API server: SONICLET_TEST_KUBECONFIG"]
async fn the_node_carries_soniclets_labels_condition_and_events_and_leave_deletes_it() {
    let path = kubeconfig();
    let cluster = KubeCluster::from_kubeconfig(&path).await.expect("the kubeconfig works");
    let file = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default()).await.unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let name = format!("soniclet-api-test-{}", std::process::id());
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "spec": {"taints": [{"key": "sonic.net/switch", "value": "true", "effect": "NoSchedule"}]},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.expect("an administrator may register a Node");

    let metadata = NodeMetadata {
        labels: BTreeMap::from([
            ("sonic.net/hwsku".into(), "Force10-S6000".into()),
            ("hwsku".into(), "Force10-S6000".into()),
        ]),
        annotations: BTreeMap::from([("sonic.net/soniclet-version".into(), "test".into())]),
    };
    cluster.apply_node_metadata(&name, &metadata).await.unwrap();
    let now = SystemTime::now();
    let condition = Condition {
        status: ConditionStatus::False,
        reason: "ServicesNotReady".into(),
        message: "SYSTEM_READY DOWN: 11 of 12 enabled services ready".into(),
        heartbeat: now,
        transition: now,
    };
    cluster.set_condition(&name, &condition).await.unwrap();
    let seen = nodes.get(&name).await.unwrap();
    let labels = seen.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("sonic.net/hwsku").map(String::as_str), Some("Force10-S6000"));
    let health = cluster.node_health(&name).await.unwrap();
    assert_eq!(health.network_os_ready.as_deref(), Some("False"));

    // Fewer labels: the one soniclet stopped setting is gone, as server-side apply does.
    let fewer = NodeMetadata { labels: BTreeMap::from([("hwsku".into(), "Force10-S6000".into())]), ..metadata };
    cluster.apply_node_metadata(&name, &fewer).await.unwrap();
    let labels = nodes.get(&name).await.unwrap().metadata.labels.unwrap_or_default();
    assert!(!labels.contains_key("sonic.net/hwsku"), "{labels:?}");

    let event_name = format!("{name}.{:x}", now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos());
    let event = EventSpec {
        name: event_name.clone(),
        regarding: Regarding::Node(name.clone()),
        event_type: EventType::Warning,
        reason: "ServiceCrashed".into(),
        action: "Restart".into(),
        note: "syncd killed by signal 9: restarting it (attempt 1)".into(),
        time: now,
        reporting_instance: name.clone(),
    };
    cluster.create_event(&event).await.unwrap();
    cluster
        .update_series("default", &event_name, &Series { count: 2, last_observed: now + Duration::from_secs(1) })
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(client, "default");
    let stored = events.get(&event_name).await.unwrap();
    assert_eq!(stored.series.map(|s| s.count), Some(2));
    assert_eq!(stored.reporting_controller.as_deref(), Some("sonic.net/soniclet"));

    cluster.delete_node(&name).await.unwrap();
    assert!(
        matches!(cluster.node_health(&name).await, Err(ClusterError::NotFound { .. })) || {
            // Deletion can take a moment with finalizers.
            tokio::time::sleep(Duration::from_secs(2)).await;
            matches!(cluster.node_health(&name).await, Err(ClusterError::NotFound { .. }))
        }
    );
}
