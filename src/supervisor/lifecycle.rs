//! Service lifecycle operations: start, stop, exit watching, readiness probing, and what
//! happens on a crash (backoff, the failure budget). Operations run as tracked tasks and
//! report back as events; only the loop changes state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::plan::Phase;
use super::{
    backoff_delay, container_digest, Event, Health, Prepared, StartFailure, Started, StopMode, Supervisor,
    SupervisorConfig,
};
use crate::manifest::{Service, ServiceName};
use crate::runtime::spec;
use crate::runtime::{labels, ContainerRuntime, CreateContainer, ExitStatus, ImageInfo, RuntimeError};

impl<R: ContainerRuntime, P: Health> Supervisor<R, P> {
    /// Starts `name` as `generation`, which `reconcile` has already put on disk.
    pub(super) fn start(&mut self, name: &ServiceName, generation: u64) {
        let unit = self.unit(name);
        unit.generation = generation;
        // After a crash, say so until the service is ready again (the unit's STATUS=).
        unit.message = unit.recovering.clone();
        // A container left by a crash or a failed start is replaced; without one, skip the cleanup.
        let leftover = unit.has_container;
        unit.set_phase(Phase::Starting);
        tracing::info!(service = %name, generation, "starting");

        let prepared = unit.prepared.take();
        let rootfs = unit.resume_rootfs.take();
        let reference = self.image_ref(name);
        let service = self.service(name).clone();
        let runtime = Arc::clone(&self.runtime);
        let config = self.config.clone();
        let tx = self.tx.clone();
        let name = name.clone();
        self.tracker.spawn(async move {
            let how = StartFrom { reference, prepared, rootfs, leftover };
            let result = start_container(&*runtime, &config, &service, generation, how).await;
            let _ = tx.send(Event::Started { service: name, generation, result });
        });
    }

    pub(super) fn stop(&mut self, name: &ServiceName) {
        let service = self.service(name).clone();
        let stop_time = Duration::from_secs(u64::from(service.manifest.service.stop_time));
        // A failure group's cascade stops cold; otherwise warm and fast restarts decide.
        let mode = match self.units[name].stop_mode {
            StopMode::Cold if self.units[name].failure_pending.is_none() => self.stop_mode(name),
            other => other,
        };
        let steps = match mode {
            StopMode::Cold => Vec::new(),
            StopMode::Warm => service.manifest.service.warm_stop.clone(),
            StopMode::Fast => service.manifest.service.fast_stop.clone(),
        };
        let unit = self.unit(name);
        unit.set_phase(Phase::Stopping);
        unit.stop_mode = StopMode::Cold;
        unit.down_since.get_or_insert_with(Instant::now);
        let generation = unit.generation;
        tracing::info!(service = %name, generation, mode = ?mode, "stopping");
        let runtime = Arc::clone(&self.runtime);
        let health = Arc::clone(&self.readiness);
        let tx = self.tx.clone();
        let name = name.clone();
        self.tracker.spawn(async move {
            let result = if mode == StopMode::Cold {
                stop_container(&*runtime, name.as_str(), stop_time).await.map_err(|e| e.to_string())
            } else {
                for step in &steps {
                    tracing::info!(service = %name, mode = ?mode, step = ?step, "stop step");
                    // A step that fails (a process already gone) does not stop the others.
                    if let Err(e) = health.stop_step(name.as_str(), step).await {
                        tracing::warn!(service = %name, error = %e, "warm/fast stop step");
                    }
                }
                kill_container(&*runtime, name.as_str()).await.map_err(|e| e.to_string())
            };
            let _ = tx.send(Event::Stopped { service: name, generation, result });
        });
    }

    /// Watches the critical processes of a ready service.
    fn watch_critical(&mut self, name: &ServiceName) {
        let service = self.service(name).clone();
        if service.critical_processes().next().is_none() {
            return;
        }
        let unit = &self.units[name];
        let (generation, token) = (unit.generation, unit.tasks.clone());
        let health = Arc::clone(&self.readiness);
        let tx = self.tx.clone();
        let name = name.clone();
        self.tracker.spawn(async move {
            let process = tokio::select! {
                () = token.cancelled() => return,
                p = health.critical_exit(&service, name.as_str()) => p,
            };
            let _ = tx.send(Event::CriticalExited { service: name, generation, process });
        });
    }

    /// A critical process exited: restart the container when auto-restart is on, otherwise
    /// report the service degraded, every minute, as SONiC does.
    pub(super) fn on_critical_exit(&mut self, name: &ServiceName, generation: u64, process: String) {
        let auto_restart = self.auto_restart(name);
        let unit = self.unit(name);
        if unit.generation != generation || !matches!(unit.phase, Phase::Ready | Phase::Probing) {
            return;
        }
        if self.gated(name) {
            return self.gate_failed(name, format!("critical process {process} exited"));
        }
        let unit = self.unit(name);
        if auto_restart {
            tracing::warn!(service = %name, process = %process, "critical process exited; restarting the container");
            let reason = format!("critical process {process} exited");
            unit.message = Some(format!("{reason}; restarting"));
            unit.failure_pending = Some(reason);
            self.stop(name);
        } else {
            tracing::warn!(service = %name, process = %process, "critical process exited; auto-restart is disabled");
            let now = Instant::now();
            unit.degraded = Some((process, now, now));
        }
    }

    /// Logs every degraded service once a minute.
    pub(super) fn report_degraded(&mut self) {
        let now = Instant::now();
        for (name, unit) in &mut self.units {
            let Some((process, since, last)) = &mut unit.degraded else { continue };
            if now.duration_since(*last) >= super::DEGRADED_REPORT {
                let minutes = now.duration_since(*since).as_secs() / 60;
                tracing::warn!(service = %name, "Process '{process}' is not running in namespace 'host' ({minutes} minutes)");
                *last = now;
            }
        }
    }

    /// Spawns the current generation's exit watcher and readiness probe.
    pub(super) fn watch(&mut self, name: &ServiceName) {
        let service = self.service(name).clone();
        let unit = self.units.get_mut(name).expect("unit exists");
        unit.tasks.cancel();
        unit.tasks = self.shutdown.child_token();
        let generation = unit.generation;
        let token = unit.tasks.clone();

        let runtime = Arc::clone(&self.runtime);
        let tx = self.tx.clone();
        let watched = name.clone();
        let wait_token = token.clone();
        self.tracker.spawn(async move {
            loop {
                let outcome = tokio::select! {
                    () = wait_token.cancelled() => return,
                    r = runtime.wait(watched.as_str()) => r,
                };
                match outcome {
                    Ok(status) => {
                        let _ = tx.send(Event::Exited { service: watched, generation, status });
                        return;
                    }
                    Err(RuntimeError::NotFound { .. }) => {
                        let status = ExitStatus { code: 255, at: SystemTime::now() };
                        let _ = tx.send(Event::Exited { service: watched, generation, status });
                        return;
                    }
                    Err(e) => {
                        // containerd restarting: tasks survive in their shims; wait again.
                        tracing::warn!(service = %watched, error = %e, "lost the task wait; retrying");
                        tokio::select! {
                            () = wait_token.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        });

        let readiness = Arc::clone(&self.readiness);
        let tx = self.tx.clone();
        let name = name.clone();
        self.tracker.spawn(async move {
            let result = probe_until_ready(&*readiness, &service, &token).await;
            if !token.is_cancelled() {
                let _ = tx.send(Event::Probed { service: name, generation, result });
            }
        });
    }

    pub(super) fn on_started(&mut self, name: &ServiceName, generation: u64, result: Result<Started, StartFailure>) {
        let gated = self.gated(name);
        let unit = self.unit(name);
        if unit.generation != generation || unit.phase != Phase::Starting {
            return;
        }
        match result {
            Ok(started) => {
                tracing::info!(service = %name, pid = started.pid, generation, "task started");
                unit.pid = Some(started.pid);
                unit.image_digest = Some(started.image_digest);
                unit.has_container = true;
                unit.set_phase(Phase::Probing);
                self.watch(name);
                if gated {
                    self.on_gated_start(name, started.pid);
                }
            }
            Err(StartFailure::Blocked(reason) | StartFailure::Failed(reason)) if gated => {
                unit.has_container = false;
                unit.set_phase(Phase::Stopped);
                self.gate_failed(name, format!("the new container did not start: {reason}"));
            }
            Err(StartFailure::Blocked(reason)) => {
                tracing::error!(service = %name, reason = %reason, "cannot start");
                unit.blocked = true;
                unit.message = Some(reason.clone());
                unit.set_phase(Phase::Failed { reason });
            }
            Err(StartFailure::Failed(reason)) => {
                tracing::error!(service = %name, reason = %reason, "start failed");
                self.on_failure(name, format!("start failed: {reason}"));
            }
        }
    }

    pub(super) fn on_stopped(&mut self, name: &ServiceName, generation: u64, result: Result<(), String>) {
        let wanted = self.want(name);
        let unit = self.unit(name);
        if unit.generation != generation || unit.phase != Phase::Stopping {
            return;
        }
        unit.tasks.cancel();
        unit.pid = None;
        unit.cycle = false;
        unit.degraded = None;
        if let Err(e) = &result {
            tracing::warn!(service = %name, error = %e, "stop did not complete cleanly");
            unit.message = Some(format!("stop: {e}"));
        } else {
            unit.has_container = false;
            tracing::info!(service = %name, "stopped");
        }
        match unit.failure_pending.take() {
            Some(reason) => self.on_failure(name, reason),
            None => {
                if !wanted {
                    unit.recovering = None;
                    unit.restart_requested = false;
                }
                unit.set_phase(Phase::Stopped);
            }
        }
    }

    pub(super) fn on_exited(&mut self, name: &ServiceName, generation: u64, status: ExitStatus) {
        let unit = self.unit(name);
        if unit.generation != generation || !matches!(unit.phase, Phase::Probing | Phase::Ready) {
            return;
        }
        unit.tasks.cancel();
        unit.pid = None;
        unit.last_exit = Some(status.code);
        unit.down_since.get_or_insert_with(Instant::now);
        let reason = if status.code > 128 {
            format!("killed by signal {}", status.code - 128)
        } else {
            format!("exited with code {}", status.code)
        };
        tracing::warn!(service = %name, generation, code = status.code, "task ended unexpectedly");
        if self.gated(name) {
            return self.gate_failed(name, format!("the new container {reason}"));
        }
        self.on_failure(name, reason);
    }

    pub(super) fn on_probed(&mut self, name: &ServiceName, generation: u64, result: Result<(), String>) {
        let timeout = self.service(name).manifest.readiness.timeout;
        let unit = self.unit(name);
        if unit.generation != generation || unit.phase != Phase::Probing {
            return;
        }
        match result {
            Ok(()) => {
                tracing::info!(service = %name, generation, "ready");
                unit.last_downtime = unit.down_since.take().map(|t| t.elapsed());
                unit.message = None;
                unit.recovering = None;
                unit.restart_requested = false;
                unit.set_phase(Phase::Ready);
                self.watch_critical(name);
            }
            Err(detail) if self.gated(name) => {
                self.gate_failed(name, format!("not ready within {timeout}s: {detail}"));
            }
            Err(detail) => {
                tracing::warn!(service = %name, detail = %detail, "not ready in time");
                let unit = self.unit(name);
                unit.failure_pending = Some(format!("not ready within {timeout}s: {detail}"));
                self.stop(name);
            }
        }
    }

    /// A crash, a failed start or a missed readiness deadline: back off, or give up.
    pub(super) fn on_failure(&mut self, name: &ServiceName, reason: String) {
        let service = self.service(name).clone();
        let policy = service.manifest.service.restart.clone();
        let auto_restart = self.auto_restart(name);
        // A failure group member down cold takes its group with it; warm restart keeps the peers.
        if let Some(group) = service.failure_group() {
            if !self.warm_enabled(name) {
                self.group_down(group, name);
            }
        }
        // What lived in a crashed database is gone: everything that requires it starts over.
        if self.manifests.database() == Some(name) {
            for dependent in self.manifests.graph().dependent_closure(name) {
                let unit = self.unit(&dependent);
                if dependent != *name && unit.phase.is_active() {
                    unit.cycle = true;
                }
            }
        }
        let unit = self.unit(name);
        unit.degraded = None;
        let now = Instant::now();
        unit.failures.push_back(now);
        while unit.failures.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(policy.window_secs)) {
            unit.failures.pop_front();
        }
        unit.cycle = false;
        if !auto_restart {
            let reason = format!("{reason}; auto-restart is disabled");
            unit.message = Some(reason.clone());
            unit.set_phase(Phase::Failed { reason });
        } else if unit.failures.len() >= policy.budget as usize {
            let reason = format!("{} failures within {}s, last: {reason}", unit.failures.len(), policy.window_secs);
            tracing::error!(service = %name, reason = %reason, "giving up until an operator acts");
            unit.message = Some(reason.clone());
            unit.set_phase(Phase::Failed { reason });
        } else {
            let delay = backoff_delay(&service, unit.failures.len());
            unit.restarts += 1;
            // The systemd facade shows this as the unit's STATUS=.
            let next = if delay.as_millis() % 1000 == 0 {
                format!("{}s", delay.as_secs())
            } else {
                format!("{}ms", delay.as_millis())
            };
            let attempt = unit.failures.len();
            unit.message = Some(format!("restarting after crash, attempt {attempt}, next in {next} ({reason})"));
            unit.recovering = Some(format!("restarting after crash, attempt {attempt} ({reason})"));
            unit.set_phase(Phase::Backoff { until: now + delay });
        }
    }
}

/// Where a start takes its container from.
struct StartFrom {
    /// The image reference the service runs.
    reference: String,
    /// Made ahead by an image change: image, spec and rootfs, ready to create.
    prepared: Option<Prepared>,
    /// A rootfs key to use (an image change resumed after a restart of the daemon).
    rootfs: Option<String>,
    /// A container left by a crash or a failed start is in the way.
    leftover: bool,
}

/// Creates and starts a service's container.
async fn start_container<R: ContainerRuntime>(
    runtime: &R,
    config: &SupervisorConfig,
    service: &Service,
    generation: u64,
    how: StartFrom,
) -> Result<Started, StartFailure> {
    let id = service.name.to_string();
    if how.leftover {
        runtime.remove(&id).await.map_err(|e| StartFailure::Failed(e.to_string()))?;
    }
    let (image, spec_json, rootfs) = match how.prepared {
        Some(prepared) => (prepared.image, prepared.spec, Some(prepared.rootfs)),
        None => {
            let (image, spec_json) = resolve_container(runtime, config, service, &how.reference).await?;
            (image, spec_json, how.rootfs)
        }
    };
    let labels = BTreeMap::from([
        (labels::SERVICE.to_owned(), id.clone()),
        (labels::MANIFEST_DIGEST.to_owned(), container_digest(service, &config.host)),
        (labels::IMAGE_DIGEST.to_owned(), image.digest.clone()),
        (labels::GENERATION.to_owned(), generation.to_string()),
    ]);
    let image_digest = image.digest.clone();
    runtime
        .create(CreateContainer { id: id.clone(), image, spec: spec_json, labels, rootfs })
        .await
        .map_err(|e| StartFailure::Failed(e.to_string()))?;
    match runtime.start(&id, &config.logs).await {
        Ok(pid) => Ok(Started { pid, image_digest }),
        Err(e) => {
            let _ = runtime.remove(&id).await;
            Err(StartFailure::Failed(e.to_string()))
        }
    }
}

/// The stored image `reference` and the spec to run `service` from it, its bind sources made.
async fn resolve_container<R: ContainerRuntime>(
    runtime: &R,
    config: &SupervisorConfig,
    service: &Service,
    reference: &str,
) -> Result<(ImageInfo, Vec<u8>), StartFailure> {
    let image = match runtime.image(reference).await {
        Ok(image) => image,
        Err(RuntimeError::NotFound { .. }) => {
            return Err(StartFailure::Blocked(format!(
                "image {reference} is not in containerd; import it with `soniclet image import FILE`"
            )))
        }
        Err(e) => return Err(StartFailure::Failed(e.to_string())),
    };
    let spec = spec::render(service, &image.config, &config.host).map_err(|e| StartFailure::Blocked(e.to_string()))?;
    for source in spec::bind_sources(&spec) {
        if !source.exists() {
            if let Err(e) = std::fs::create_dir_all(&source) {
                return Err(StartFailure::Failed(format!("cannot create {}: {e}", source.display())));
            }
        }
    }
    Ok((image, spec::to_json(&spec)))
}

/// SIGKILL to every process, then removal (a warm or fast stop, after its steps).
pub async fn kill_container<R: ContainerRuntime>(runtime: &R, id: &str) -> Result<(), RuntimeError> {
    match runtime.kill(id, libc::SIGKILL, true).await {
        Ok(()) => {
            let _ = tokio::time::timeout(Duration::from_secs(10), runtime.wait(id)).await;
        }
        Err(RuntimeError::NotFound { .. }) => {}
        Err(RuntimeError::Call { message, .. })
            if message.contains("not found") || message.contains("process already finished") => {}
        Err(e) => return Err(e),
    }
    runtime.remove(id).await
}

/// SIGTERM, then SIGKILL after `stop_time`, then removal of the task, container and rootfs.
pub async fn stop_container<R: ContainerRuntime>(
    runtime: &R,
    id: &str,
    stop_time: Duration,
) -> Result<(), RuntimeError> {
    match runtime.kill(id, libc::SIGTERM, false).await {
        Ok(()) => {
            if tokio::time::timeout(stop_time, runtime.wait(id)).await.is_err() {
                tracing::warn!(container = id, stop_time = ?stop_time, "still running after stop-time; sending SIGKILL");
                match runtime.kill(id, libc::SIGKILL, true).await {
                    Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
                let _ = tokio::time::timeout(Duration::from_secs(10), runtime.wait(id)).await;
            }
        }
        // No task, or it already exited: nothing to signal.
        Err(RuntimeError::NotFound { .. }) => {}
        Err(RuntimeError::Call { message, .. })
            if message.contains("not found") || message.contains("process already finished") => {}
        Err(e) => return Err(e),
    }
    runtime.remove(id).await
}

/// Probes until ready, the readiness timeout passes, or the token is cancelled. Starts fast
/// and slows to the manifest's interval, so a quick service is seen ready quickly.
pub async fn probe_until_ready<P: Health>(
    readiness: &P,
    service: &Service,
    token: &CancellationToken,
) -> Result<(), String> {
    let readiness_cfg = &service.manifest.readiness;
    let deadline = Instant::now() + Duration::from_secs(u64::from(readiness_cfg.timeout));
    let max_interval = Duration::from_millis(u64::from(readiness_cfg.interval_ms));
    let mut interval = Duration::from_millis(10).min(max_interval);
    let mut last;
    loop {
        match readiness.check(service, service.name.as_str()).await {
            Ok(true) => return Ok(()),
            Ok(false) => last = "probe did not pass".to_owned(),
            Err(detail) => last = detail,
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::select! {
            () = token.cancelled() => return Err("cancelled".to_owned()),
            () = tokio::time::sleep(interval) => {}
        }
        interval = (interval * 3 / 2).min(max_interval);
    }
}
