//! The FEATURE contract inside the supervisor: CONFIG_DB entries decide what runs and how it
//! restarts; STATE_DB reports say what happened. Changes take effect at once.

use std::collections::BTreeMap;
use std::time::Instant;

use super::plan::Phase;
use super::{CommandError, Health, Supervisor};
use crate::api::{ErrorKind, FeatureStatus};
use crate::db::Fields;
use crate::dblink::DbMessage;
use crate::feature::{Feature, FeatureReport, FeatureState};
use crate::manifest::ServiceName;
use crate::runtime::ContainerRuntime;

/// The gate every service but the database waits for.
const CONFIG_GATE: &str = "CONFIG_DB_INITIALIZED";
const PORTS_GATE: &str = "PortInitDone";
const RECONCILE_GATE: &str = "warm-restart reconciliation";
const COLD_START_GATE: &str = "its failure group's cold start";

impl<R: ContainerRuntime, P: Health> Supervisor<R, P> {
    /// What a service waits for before it may start, besides other services.
    pub(super) fn gate(&self, name: &ServiceName) -> Option<&'static str> {
        let database = self.manifests.database()?;
        if name == database || self.db.is_none() {
            return None;
        }
        if !self.config_loaded {
            return Some(CONFIG_GATE);
        }
        if self.is_delayed(name) && !self.delayed_released {
            return Some(if self.config.boot == crate::dblink::BootType::Cold { PORTS_GATE } else { RECONCILE_GATE });
        }
        let group = self.service(name).failure_group()?;
        (self.cleared.get(group) != Some(&super::GroupClear::Done)).then_some(COLD_START_GATE)
    }

    /// FEATURE `delayed`, else the manifest's.
    pub(super) fn is_delayed(&self, name: &ServiceName) -> bool {
        self.features.get(name).map_or(self.service(name).manifest.service.delayed, |f| f.delayed)
    }

    pub(super) fn on_ports_ready(&mut self, ready: bool) {
        if ready && !self.ports_ready {
            tracing::info!("ports initialised (PortInitDone)");
        }
        self.ports_ready = ready;
    }

    /// Releases delayed services once, SONiC-style: on PortInitDone after a cold boot, once
    /// every reconciling process reports `reconciled` after a warm or fast one, or when the
    /// fallback passes.
    pub(super) fn release_delayed(&mut self) {
        if self.delayed_released || !self.config_loaded {
            return;
        }
        let now = Instant::now();
        let deadline = *self.delayed_deadline.get_or_insert(now + self.config.delayed_fallback);
        let ready = match self.config.boot {
            crate::dblink::BootType::Cold => self.ports_ready,
            _ => {
                let reconciling: Vec<&str> = self
                    .manifests
                    .services()
                    .filter(|s| self.want(&s.name) && !self.is_delayed(&s.name))
                    .flat_map(|s| s.manifest.processes.iter().filter(|p| p.reconciles).map(|p| p.name.as_str()))
                    .collect();
                reconciling.iter().all(|p| self.warm.states.get(*p).is_some_and(|s| s == "reconciled"))
            }
        };
        if ready || now >= deadline {
            tracing::info!(fallback = !ready, "starting delayed services");
            self.delayed_released = true;
        }
    }

    /// Whether a crash restarts the service: FEATURE `auto_restart`, else the manifest.
    pub(super) fn auto_restart(&self, name: &ServiceName) -> bool {
        self.features.get(name).map_or(self.service(name).manifest.service.auto_restart, |f| f.auto_restart)
    }

    /// Accepts a FEATURE entry if it parses and its state change is one SONiC allows; an entry
    /// that changes the state takes effect at once and replaces any operator start or stop.
    fn accept_feature(&mut self, name: &ServiceName, fields: &Fields) {
        let feature = match Feature::parse(name.as_str(), fields) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "ignored a malformed FEATURE entry; the previous one stays");
                return;
            }
        };
        if !feature.state.runs() && self.manifests.database() == Some(name) {
            tracing::error!(service = %name, "ignored CONFIG_DB FEATURE|{name} field state: the database is always enabled");
            return;
        }
        let previous = self.features.get(name).map(|f| f.state);
        if !FeatureState::may_become(previous, feature.state) {
            tracing::error!(
                service = %name,
                from = previous.map(FeatureState::as_str).unwrap_or("none"),
                to = feature.state.as_str(),
                "ignored a FEATURE state change SONiC does not allow (CONFIG_DB FEATURE|{name} field state)"
            );
            return;
        }
        if previous != Some(feature.state) {
            tracing::info!(service = %name, state = feature.state.as_str(), "FEATURE state");
            if let Some(record) = self.store.state_mut().services.get_mut(name.as_str()) {
                record.desired = None;
            }
            if feature.state.runs() {
                self.reset(name);
            }
            self.save();
        }
        self.features.insert(name.clone(), feature);
    }

    pub(super) fn on_features_loaded(&mut self, entries: BTreeMap<String, Fields>) {
        let mut seen = Vec::new();
        for (key, fields) in &entries {
            match self.manifests.lookup(key).cloned() {
                Some(name) => {
                    self.accept_feature(&name, fields);
                    seen.push(name);
                }
                None => tracing::debug!(feature = %key, "FEATURE entry for a service without a manifest"),
            }
        }
        self.features.retain(|name, _| seen.contains(name));
        self.config_loaded = true;
        tracing::info!(entries = entries.len(), "FEATURE table loaded");
    }

    pub(super) fn on_feature_changed(&mut self, key: &str, fields: Option<Fields>) {
        let Some(name) = self.manifests.lookup(key).cloned() else { return };
        match fields {
            Some(fields) => self.accept_feature(&name, &fields),
            None => {
                tracing::info!(service = %name, "FEATURE entry deleted; the manifest's default applies");
                self.features.remove(&name);
            }
        }
    }

    /// Validates an operator's change as `config feature` does: known values, no change to
    /// `always_*` settings, and a transition SONiC allows.
    pub(super) fn check_feature_change(
        &self,
        name: &ServiceName,
        state: Option<&str>,
        auto_restart: Option<&str>,
    ) -> Result<(), CommandError> {
        let current = self.features.get(name);
        if let Some(state) = state {
            let target = FeatureState::parse(state)
                .filter(|s| matches!(s, FeatureState::Enabled | FeatureState::Disabled))
                .ok_or_else(|| {
                    CommandError::new(ErrorKind::BadRequest, format!("state {state:?}: use enabled or disabled"))
                })?;
            if target == FeatureState::Disabled && self.manifests.database() == Some(name) {
                return Err(CommandError::new(
                    ErrorKind::Conflict,
                    format!("{name} is the switch's database; it is always enabled"),
                ));
            }
            if let Some(f) = current {
                if matches!(f.state, FeatureState::AlwaysEnabled | FeatureState::AlwaysDisabled) {
                    return Err(CommandError::new(
                        ErrorKind::Conflict,
                        format!("FEATURE {name} is {} and cannot be changed", f.state.as_str()),
                    ));
                }
            }
            if !FeatureState::may_become(current.map(|f| f.state), target) {
                return Err(CommandError::new(ErrorKind::Conflict, format!("FEATURE {name} cannot become {state}")));
            }
        }
        if let Some(value) = auto_restart {
            if value != "enabled" && value != "disabled" {
                return Err(CommandError::new(
                    ErrorKind::BadRequest,
                    format!("auto_restart {value:?}: use enabled or disabled"),
                ));
            }
            if current.is_some_and(|f| f.auto_restart_locked) {
                return Err(CommandError::new(
                    ErrorKind::Conflict,
                    format!("FEATURE {name} auto_restart is always_enabled"),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn features_status(&self) -> Vec<FeatureStatus> {
        self.manifests
            .graph()
            .start_order()
            .iter()
            .map(|name| {
                let unit = &self.units[name];
                let feature = self.features.get(name);
                let running = unit.phase.is_active();
                FeatureStatus {
                    name: name.to_string(),
                    state: feature.map_or_else(
                        || if self.service(name).manifest.service.enabled { "enabled" } else { "disabled" }.to_owned(),
                        |f| f.state.as_str().to_owned(),
                    ),
                    source: if feature.is_some() { "CONFIG_DB" } else { "manifest" }.to_owned(),
                    auto_restart: match feature {
                        Some(f) if f.auto_restart_locked => "always_enabled",
                        _ if self.auto_restart(name) => "enabled",
                        _ => "disabled",
                    }
                    .to_owned(),
                    set_owner: feature.map_or("local".to_owned(), |f| f.set_owner.clone()),
                    current_owner: if running { "local" } else { "none" }.to_owned(),
                    delayed: feature.map_or(self.service(name).manifest.service.delayed, |f| f.delayed),
                    service_state: self.state_name(name, unit).to_owned(),
                }
            })
            .collect()
    }

    /// Sends STATE_DB `FEATURE|<name>` for every service whose report changed, and tells the
    /// database link whether the database is ready.
    pub(super) fn report(&mut self) {
        let Some(db) = &self.db else { return };
        if let Some(database) = self.manifests.database() {
            let ready = self.units[database].phase == Phase::Ready;
            db.database_ready.send_if_modified(|current| {
                let changed = *current != ready;
                *current = ready;
                changed
            });
            if !ready && self.config_loaded {
                // CONFIG_DB lives in the database: it must be read again once it is back.
                self.config_loaded = false;
                self.ports_ready = false;
            }
        }
        let mut changed = Vec::new();
        for (name, unit) in &self.units {
            let running = unit.phase.is_active() && unit.pid.is_some();
            let report = FeatureReport {
                name: name.to_string(),
                state: match unit.phase {
                    Phase::Failed { .. } => "failed",
                    _ if self.want(name) => "enabled",
                    _ => "disabled",
                }
                .to_owned(),
                container_id: if running { name.to_string() } else { String::new() },
                current_owner: if running { "local" } else { "none" }.to_owned(),
                system_state: if running { "up" } else { "down" }.to_owned(),
            };
            if self.reported.get(name) != Some(&report) {
                changed.push((name.clone(), report));
            }
        }
        for (name, report) in changed {
            let _ = self.db.as_ref().map(|db| db.messages.send(DbMessage::Feature(report.clone())));
            self.reported.insert(name, report);
        }
        let system = self.system_state();
        if self.system_reported.as_ref() != Some(&system) {
            tracing::info!(status = %system.0, reason = %system.1, "SYSTEM_READY");
            let _ = self
                .db
                .as_ref()
                .map(|db| db.messages.send(DbMessage::System { status: system.0.clone(), reason: system.1.clone() }));
            self.system_reported = Some(system);
        }
    }

    /// STATE_DB `SYSTEM_READY|SYSTEM_STATE`: UP once every enabled service is ready, FAILED
    /// when one failed, DOWN (with the reason) otherwise.
    fn system_state(&mut self) -> (String, String) {
        if self.reload.is_some() {
            return ("DOWN".into(), "config reload in progress".into());
        }
        let wanted: Vec<&ServiceName> = self.units.keys().filter(|n| self.want(n)).collect();
        if let Some((name, reason)) = wanted.iter().find_map(|n| match &self.units[*n].phase {
            Phase::Failed { reason } => Some((*n, reason.clone())),
            _ => None,
        }) {
            return ("FAILED".into(), format!("{name} failed: {reason}"));
        }
        let ready = wanted.iter().filter(|n| self.units[**n].phase == Phase::Ready).count();
        if ready == wanted.len() {
            self.settled = true;
            return ("UP".into(), "all enabled services are ready".into());
        }
        ("DOWN".into(), format!("{ready} of {} enabled services ready", wanted.len()))
    }
}
