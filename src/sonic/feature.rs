//! The FEATURE contract: CONFIG_DB `FEATURE|<name>` decides whether a service runs and how it
//! restarts; soniclet reports back in STATE_DB `FEATURE|<name>`, as featured and ctrmgr do.
//!
//! This module is pure: parsing of entries (other writers' entries are validated field by
//! field, and the offending field is named), SONiC's allowed state transitions, and the
//! STATE_DB report. Fields soniclet does not interpret are left alone.

use serde::{Deserialize, Serialize};

use crate::db::Fields;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureState {
    Enabled,
    Disabled,
    AlwaysEnabled,
    AlwaysDisabled,
}

impl FeatureState {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "enabled" => Some(Self::Enabled),
            "disabled" => Some(Self::Disabled),
            "always_enabled" => Some(Self::AlwaysEnabled),
            "always_disabled" => Some(Self::AlwaysDisabled),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::AlwaysEnabled => "always_enabled",
            Self::AlwaysDisabled => "always_disabled",
        }
    }

    pub fn runs(self) -> bool {
        matches!(self, Self::Enabled | Self::AlwaysEnabled)
    }

    /// featured's rule: from nothing to anything; enabled <-> disabled; always_enabled <->
    /// always_disabled. Staying put is always allowed.
    pub fn may_become(from: Option<Self>, to: Self) -> bool {
        use FeatureState::*;
        match from {
            None => true,
            Some(from) if from == to => true,
            Some(Enabled | Disabled) => matches!(to, Enabled | Disabled),
            Some(AlwaysEnabled | AlwaysDisabled) => matches!(to, AlwaysEnabled | AlwaysDisabled),
        }
    }
}

/// One FEATURE entry, as soniclet uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    pub state: FeatureState,
    /// `auto_restart`: a missing field means enabled, as SONiC's listener reads it.
    pub auto_restart: bool,
    /// `always_enabled` auto-restart cannot be changed by operators.
    pub auto_restart_locked: bool,
    pub delayed: bool,
    pub has_global_scope: bool,
    pub has_per_asic_scope: bool,
    /// `set_owner`: `local` or `kube`.
    pub set_owner: String,
    /// `no_fallback_to_local`: a kube-owned feature whose pod goes away stays down rather
    /// than coming back as the local container.
    pub no_fallback_to_local: bool,
}

impl Feature {
    /// FEATURE `set_owner=kube`: Kubernetes may run the feature as a pod on this switch.
    pub fn kube_owned(&self) -> bool {
        self.set_owner == "kube"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CONFIG_DB FEATURE|{name}: field {field}: {message}")]
pub struct FeatureError {
    pub name: String,
    pub field: String,
    pub message: String,
}

fn boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

impl Feature {
    /// Parses an entry; the error names the entry and the field.
    pub fn parse(name: &str, fields: &Fields) -> Result<Self, FeatureError> {
        let err =
            |field: &str, message: String| FeatureError { name: name.to_owned(), field: field.to_owned(), message };
        let get = |field: &str| fields.iter().find(|(f, _)| f == field).map(|(_, v)| v.as_str());
        let state = match get("state") {
            None => return Err(err("state", "missing".into())),
            Some(v) if v.contains("{%") || v.contains("{{") => {
                return Err(err(
                    "state",
                    format!("templates are not supported: {v:?}; render it to enabled or disabled"),
                ))
            }
            Some(v) => FeatureState::parse(v).ok_or_else(|| {
                err("state", format!("{v:?} is not enabled, disabled, always_enabled or always_disabled"))
            })?,
        };
        let (auto_restart, auto_restart_locked) = match get("auto_restart") {
            None => (true, false),
            Some("enabled") => (true, false),
            Some("disabled") => (false, false),
            Some("always_enabled") => (true, true),
            Some(v) => return Err(err("auto_restart", format!("{v:?} is not enabled, disabled or always_enabled"))),
        };
        let flag = |field: &str, default: bool| -> Result<bool, FeatureError> {
            match get(field) {
                None => Ok(default),
                Some(v) => boolean(v).ok_or_else(|| err(field, format!("{v:?} is not True or False"))),
            }
        };
        let set_owner = match get("set_owner") {
            None => "local".to_owned(),
            Some(v @ ("local" | "kube")) => v.to_owned(),
            Some(v) => return Err(err("set_owner", format!("{v:?} is not local or kube"))),
        };
        Ok(Self {
            state,
            auto_restart,
            auto_restart_locked,
            delayed: flag("delayed", false)?,
            has_global_scope: flag("has_global_scope", true)?,
            has_per_asic_scope: flag("has_per_asic_scope", false)?,
            set_owner,
            no_fallback_to_local: flag("no_fallback_to_local", false)?,
        })
    }
}

/// What soniclet writes to STATE_DB `FEATURE|<name>` (featured's state plus ctrmgr's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureReport {
    pub name: String,
    /// enabled, disabled or failed.
    pub state: String,
    pub container_id: String,
    /// local while soniclet's container runs, kube while a pod runs the feature, none
    /// otherwise.
    pub current_owner: String,
    /// up or down.
    pub system_state: String,
    /// ctrmgr's: running while a pod runs the feature, none otherwise.
    pub remote_state: String,
}

impl FeatureReport {
    pub fn fields(&self) -> Fields {
        vec![
            ("state".to_owned(), self.state.clone()),
            ("container_id".to_owned(), self.container_id.clone()),
            ("current_owner".to_owned(), self.current_owner.clone()),
            ("system_state".to_owned(), self.system_state.clone()),
            ("remote_state".to_owned(), self.remote_state.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn parses_sonic_entries() {
        let f = Feature::parse(
            "bgp",
            &fields(&[
                ("state", "enabled"),
                ("auto_restart", "disabled"),
                ("delayed", "False"),
                ("has_global_scope", "True"),
                ("high_mem_alert", "disabled"),
            ]),
        )
        .unwrap();
        assert_eq!(f.state, FeatureState::Enabled);
        assert!(!f.auto_restart);
        assert_eq!(f.set_owner, "local");
        assert!(!f.kube_owned() && !f.no_fallback_to_local);
        let f = Feature::parse(
            "telemetry",
            &fields(&[("state", "enabled"), ("set_owner", "kube"), ("no_fallback_to_local", "True")]),
        )
        .unwrap();
        assert!(f.kube_owned() && f.no_fallback_to_local);
        let f = Feature::parse("database", &fields(&[("state", "always_enabled")])).unwrap();
        assert!(f.auto_restart, "a missing auto_restart means enabled");
    }

    #[test]
    fn malformed_entries_name_the_field() {
        let e = Feature::parse("bgp", &fields(&[("state", "on")])).unwrap_err();
        assert_eq!(e.field, "state");
        assert!(e.to_string().starts_with("CONFIG_DB FEATURE|bgp: field state"));
        let e = Feature::parse("bgp", &fields(&[("state", "enabled"), ("delayed", "maybe")])).unwrap_err();
        assert_eq!(e.field, "delayed");
        let e = Feature::parse("bgp", &fields(&[("state", "enabled"), ("set_owner", "k8s")])).unwrap_err();
        assert_eq!((e.field.as_str(), e.message.as_str()), ("set_owner", "\"k8s\" is not local or kube"));
        let e = Feature::parse("bgp", &fields(&[("auto_restart", "enabled")])).unwrap_err();
        assert_eq!(e.field, "state");
        let e = Feature::parse("bgp", &fields(&[("state", "{% if x %}enabled{% endif %}")])).unwrap_err();
        assert!(e.message.contains("templates"));
    }

    #[test]
    fn transitions_follow_featured() {
        use FeatureState::*;
        let table = [
            (None, AlwaysDisabled, true),
            (Some(Enabled), Disabled, true),
            (Some(Disabled), Enabled, true),
            (Some(Enabled), AlwaysDisabled, false),
            (Some(AlwaysEnabled), Disabled, false),
            (Some(AlwaysEnabled), AlwaysDisabled, true),
            (Some(AlwaysDisabled), AlwaysDisabled, true),
        ];
        for (from, to, allowed) in table {
            assert_eq!(FeatureState::may_become(from, to), allowed, "{from:?} -> {to:?}");
        }
    }
}
