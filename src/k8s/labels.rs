//! The Node's labels: soniclet's own under `sonic.net/`, and KubeSonic's names, so DaemonSets
//! written for KubeSonic's node selectors still match (`sonic_version`, `hwsku`,
//! `deployment_type`, `worker.sonic/{platform,hwsku,device-type}`). Values come from
//! DEVICE_METADATA and the running image. A value Kubernetes cannot hold as a label is
//! written in a form it can, so a label is never refused for its value.

use std::collections::BTreeMap;

/// What the switch is, for its labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    pub hwsku: Option<String>,
    pub platform: Option<String>,
    /// DEVICE_METADATA `type` (`LeafRouter`, `ToRRouter`, ...).
    pub device_type: Option<String>,
    /// The ASIC vendor (`broadcom`, `mellanox`, `vs`...).
    pub asic: Option<String>,
    /// The running OS image's version.
    pub version: Option<String>,
}

/// Kubernetes' label value rules: at most 63 characters of `[A-Za-z0-9_.-]`, starting and
/// ending with a letter or digit. Other characters become `_`; the ends are trimmed.
pub fn label_value(raw: &str) -> Option<String> {
    let mapped: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    let cut: String = mapped.chars().take(63).collect();
    let value = cut.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    (!value.is_empty()).then(|| value.to_owned())
}

/// Every label the Node carries for these facts, by key.
pub fn node_labels(facts: &NodeFacts) -> BTreeMap<String, String> {
    let fields: [(&Option<String>, &[&str]); 5] = [
        (&facts.hwsku, &["sonic.net/hwsku", "hwsku", "worker.sonic/hwsku"]),
        (&facts.platform, &["sonic.net/platform", "worker.sonic/platform"]),
        (&facts.device_type, &["sonic.net/type", "deployment_type", "worker.sonic/device-type"]),
        (&facts.asic, &["sonic.net/asic"]),
        (&facts.version, &["sonic.net/version", "sonic_version"]),
    ];
    let mut labels = BTreeMap::new();
    for (value, keys) in fields {
        if let Some(value) = value.as_deref().and_then(label_value) {
            for key in keys {
                labels.insert((*key).to_owned(), value.clone());
            }
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_kubernetes_cannot_hold_are_written_in_a_form_it_can() {
        let long = "a".repeat(70);
        let cases = [
            ("Force10-S6000", Some("Force10-S6000")),
            ("x86_64-kvm_x86_64-r0", Some("x86_64-kvm_x86_64-r0")),
            ("1.0.0+dirty build", Some("1.0.0_dirty_build")),
            ("-leading and trailing-", Some("leading_and_trailing")),
            ("///", None),
            ("", None),
            (long.as_str(), Some(&long[..63])),
        ];
        for (raw, want) in cases {
            assert_eq!(label_value(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn the_node_carries_soniclets_labels_and_kubesonics_names_for_what_is_known() {
        let facts = NodeFacts {
            hwsku: Some("Force10-S6000".into()),
            platform: Some("x86_64-kvm_x86_64-r0".into()),
            device_type: Some("LeafRouter".into()),
            asic: None,
            version: Some("2026.12.1".into()),
        };
        let labels = node_labels(&facts);
        let want = [
            ("deployment_type", "LeafRouter"),
            ("hwsku", "Force10-S6000"),
            ("sonic.net/hwsku", "Force10-S6000"),
            ("sonic.net/platform", "x86_64-kvm_x86_64-r0"),
            ("sonic.net/type", "LeafRouter"),
            ("sonic.net/version", "2026.12.1"),
            ("sonic_version", "2026.12.1"),
            ("worker.sonic/device-type", "LeafRouter"),
            ("worker.sonic/hwsku", "Force10-S6000"),
            ("worker.sonic/platform", "x86_64-kvm_x86_64-r0"),
        ];
        let want: BTreeMap<String, String> = want.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        assert_eq!(labels, want);
        assert!(node_labels(&NodeFacts::default()).is_empty());
    }
}
