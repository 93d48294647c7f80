//! The k3s agent's configuration, `/etc/rancher/k3s/config.yaml`, as soniclet writes it for a
//! join (pure): the server and its token file, the node's name, labels and taint, the switch's
//! own containerd as the kubelet's runtime, the pause image shipped in the OS image, and the
//! kubelet's cgroup driver and reservations. The token itself is never in it: k3s reads the
//! file (`token-file`), so this file is no secret.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

/// The taint that keeps workloads off the switch unless they tolerate it.
pub const SWITCH_TAINT: &str = "sonic.net/switch=true:NoSchedule";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentConfigError {
    #[error("server {0:?}: the API server's URL must be https://HOST[:PORT]")]
    Server(String),
    #[error("node name {0:?}: a Kubernetes node name is lower-case letters, digits, '-' and '.', at most 253")]
    NodeName(String),
    #[error("label {0:?}: a label key is [prefix/]name, the name at most 63 of [A-Za-z0-9_.-]")]
    LabelKey(String),
}

/// What a join asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    pub server: String,
    pub token_file: PathBuf,
    pub node_name: String,
    pub labels: BTreeMap<String, String>,
    /// The switch's containerd socket (CRI).
    pub runtime_endpoint: String,
    pub pause_image: String,
    /// `--kubelet-arg`s beyond the cgroup driver (the reservations).
    pub kubelet_args: Vec<String>,
}

/// The file's fields, in k3s's names.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Rendered<'a> {
    server: &'a str,
    token_file: String,
    node_name: &'a str,
    node_label: Vec<String>,
    node_taint: Vec<&'static str>,
    container_runtime_endpoint: &'a str,
    pause_image: &'a str,
    kubelet_arg: Vec<String>,
}

fn valid_server(server: &str) -> bool {
    let Some(rest) = server.strip_prefix("https://") else { return false };
    let authority = rest.trim_end_matches('/');
    !authority.is_empty() && !authority.contains(['/', '@', ' ', '?', '#'])
}

fn valid_node_name(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn valid_label_key(key: &str) -> bool {
    let name = key.rsplit_once('/').map_or(key, |(_, name)| name);
    (1..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && key.matches('/').count() <= 1
}

/// The config.yaml text for `join`; refuses what k3s would, naming it.
pub fn render(join: &Join) -> Result<String, AgentConfigError> {
    if !valid_server(&join.server) {
        return Err(AgentConfigError::Server(join.server.clone()));
    }
    if !valid_node_name(&join.node_name) {
        return Err(AgentConfigError::NodeName(join.node_name.clone()));
    }
    if let Some(key) = join.labels.keys().find(|k| !valid_label_key(k)) {
        return Err(AgentConfigError::LabelKey(key.clone()));
    }
    let mut kubelet_arg = vec!["cgroup-driver=systemd".to_owned()];
    kubelet_arg.extend(join.kubelet_args.iter().cloned());
    let rendered = Rendered {
        server: join.server.trim_end_matches('/'),
        token_file: join.token_file.display().to_string(),
        node_name: &join.node_name,
        node_label: join.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        node_taint: vec![SWITCH_TAINT],
        container_runtime_endpoint: &join.runtime_endpoint,
        pause_image: &join.pause_image,
        kubelet_arg,
    };
    let body = serde_norway::to_string(&rendered).unwrap_or_default();
    Ok(format!("# Written by `soniclet k8s join`; `soniclet k8s leave` removes it.\n{body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join() -> Join {
        Join {
            server: "https://k3s.example.net:6443/".into(),
            token_file: "/etc/soniclet/k8s-token".into(),
            node_name: "leaf1".into(),
            labels: BTreeMap::from([("sonic.net/hwsku".into(), "Force10-S6000".into())]),
            runtime_endpoint: "unix:///run/containerd/containerd.sock".into(),
            pause_image: "registry.k8s.io/pause:3.9".into(),
            kubelet_args: vec!["kube-reserved=memory=512Mi".into()],
        }
    }

    #[test]
    fn a_join_renders_k3s_own_keys_with_the_token_by_file_only() {
        let text = render(&join()).unwrap();
        let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(doc["server"], "https://k3s.example.net:6443");
        assert_eq!(doc["token-file"], "/etc/soniclet/k8s-token");
        assert_eq!(doc["node-name"], "leaf1");
        assert_eq!(doc["node-label"], serde_json::json!(["sonic.net/hwsku=Force10-S6000"]));
        assert_eq!(doc["node-taint"], serde_json::json!([SWITCH_TAINT]));
        assert_eq!(doc["container-runtime-endpoint"], "unix:///run/containerd/containerd.sock");
        assert_eq!(doc["pause-image"], "registry.k8s.io/pause:3.9");
        assert_eq!(doc["kubelet-arg"], serde_json::json!(["cgroup-driver=systemd", "kube-reserved=memory=512Mi"]));
        assert!(doc.get("token").is_none());
    }

    #[test]
    fn what_k3s_would_refuse_is_refused_naming_it() {
        type Change = fn(&mut Join);
        let cases: [(Change, &str); 5] = [
            (|j| j.server = "http://k3s:6443".into(), "must be https://"),
            (|j| j.server = "https://user:pw@k3s:6443".into(), "must be https://"),
            (|j| j.node_name = "Leaf_1".into(), "node name \"Leaf_1\""),
            (|j| j.node_name = String::new(), "node name \"\""),
            (|j| drop(j.labels.insert("a/b/c".into(), "x".into())), "label \"a/b/c\""),
        ];
        for (change, want) in cases {
            let mut j = join();
            change(&mut j);
            let e = render(&j).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
