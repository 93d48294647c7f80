//! The health adapter: readiness probes (an exec in the container, a Redis PING, a Redis key
//! holding a value, or a named process running in the container), critical processes
//! watched by pidfd, and warm or fast stop steps.

use std::sync::Arc;
use std::time::Duration;

use super::procwatch::PidFd;
use crate::db::redis::Db;
use crate::db::schema::resolve_db;
use crate::manifest::{Probe, Service, StopStep, STEP_SIGNALS};
use crate::runtime::spec::HostSettings;
use crate::runtime::ContainerRuntime;
use crate::supervisor::ports::{Health, HealthError};

/// The cap on one exec probe.
const EXEC_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Prober<R> {
    runtime: Arc<R>,
    host: HostSettings,
}

impl<R: ContainerRuntime> Prober<R> {
    pub fn new(runtime: Arc<R>, host: HostSettings) -> Self {
        Self { runtime, host }
    }

    /// The container's processes with their names (`comm`).
    async fn processes(&self, container: &str) -> Result<Vec<(u32, String)>, HealthError> {
        let pids = self.runtime.pids(container).await?;
        Ok(pids
            .into_iter()
            .filter_map(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                Some((pid, comm.trim_end().to_owned()))
            })
            .collect())
    }

    async fn process_running(&self, container: &str, name: &str) -> Result<bool, HealthError> {
        Ok(self.processes(container).await?.iter().any(|(_, comm)| comm == name))
    }

    /// PIDs of the container's processes named `name`.
    async fn pids_named(&self, container: &str, name: &str) -> Vec<u32> {
        self.processes(container)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, c)| c == name)
            .map(|(p, _)| p)
            .collect()
    }
}

/// How long critical processes may take to appear after readiness.
const CRITICAL_GRACE: Duration = Duration::from_secs(10);

/// Waits until every process in `pidfds` has exited, or `timeout` passes.
async fn all_exited(pidfds: &[PidFd], timeout: Duration) -> bool {
    tokio::time::timeout(timeout, futures_util::future::join_all(pidfds.iter().map(PidFd::exited))).await.is_ok()
}

impl<R: ContainerRuntime> Health for Prober<R> {
    async fn critical_exit(&self, service: &Service, container: &str) -> String {
        let names: Vec<String> = service.critical_processes().map(str::to_owned).collect();
        if names.is_empty() {
            return std::future::pending().await;
        }
        // Find every critical process (one name may run several times); some start a little
        // after the service is ready.
        let deadline = tokio::time::Instant::now() + CRITICAL_GRACE;
        let mut watched: Vec<(String, PidFd)> = Vec::new();
        loop {
            let found = self.processes(container).await.unwrap_or_default();
            for (pid, comm) in &found {
                if names.contains(comm) && !watched.iter().any(|(_, fd)| fd.pid() == *pid) {
                    if let Ok(fd) = PidFd::open(*pid) {
                        watched.push((comm.clone(), fd));
                    }
                }
            }
            let missing = names.iter().find(|n| !watched.iter().any(|(w, _)| w == *n));
            match missing {
                None => break,
                Some(name) if tokio::time::Instant::now() >= deadline => return name.clone(),
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let exits = watched.iter().map(|(_, fd)| Box::pin(fd.exited()));
        let ((), index, _) = futures_util::future::select_all(exits).await;
        watched[index].0.clone()
    }

    async fn stop_step(&self, container: &str, step: &StopStep) -> Result<(), HealthError> {
        let failed = |message: String| HealthError::Failed(message);
        let timeout = Duration::from_secs(u64::from(step.timeout));
        if let Some(signal) = &step.signal {
            let number = STEP_SIGNALS
                .iter()
                .find(|(n, _)| n == signal)
                .map(|(_, s)| *s)
                .ok_or_else(|| failed(format!("unknown signal {signal}")))?;
            let signal = nix::sys::signal::Signal::try_from(number).map_err(|e| failed(e.to_string()))?;
            // In order: each process gets the signal, and the next waits until it is gone.
            for name in &step.processes {
                let pids = self.pids_named(container, name).await;
                let pidfds: Vec<PidFd> = pids.iter().filter_map(|p| PidFd::open(*p).ok()).collect();
                for pid in &pids {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), signal);
                }
                if !all_exited(&pidfds, timeout).await {
                    return Err(failed(format!(
                        "{name} still runs {}s after SIG{}",
                        step.timeout,
                        signal.as_str().trim_start_matches("SIG")
                    )));
                }
            }
            return Ok(());
        }
        if !step.exec.is_empty() {
            let code = self.runtime.exec(container, step.exec.clone(), timeout).await?;
            return if code == 0 {
                Ok(())
            } else {
                Err(failed(format!("{} exited with code {code}", step.exec.join(" "))))
            };
        }
        let mut pidfds = Vec::new();
        for name in &step.wait_exit {
            pidfds.extend(self.pids_named(container, name).await.into_iter().filter_map(|p| PidFd::open(p).ok()));
        }
        if all_exited(&pidfds, timeout).await {
            Ok(())
        } else {
            Err(failed(format!("{} still running after {}s", step.wait_exit.join(", "), step.timeout)))
        }
    }

    async fn check(&self, service: &Service, container: &str) -> Result<(), HealthError> {
        let not_ready = |message: String| HealthError::NotReady(message);
        let failed = |e: &dyn std::error::Error| HealthError::Failed(e.to_string());
        match &service.manifest.readiness.probe {
            Probe::Exec { command } => {
                let code = self.runtime.exec(container, command.clone(), EXEC_TIMEOUT).await?;
                if code == 0 {
                    Ok(())
                } else {
                    Err(not_ready(format!("{} exited with code {code}", command.join(" "))))
                }
            }
            Probe::RedisPing { socket } => {
                let conn = Db::open_socket(&self.host.host_path(socket), 0).await.map_err(|e| failed(&e))?;
                conn.ping().await.map_err(|e| failed(&e))
            }
            Probe::RedisKey { socket, db, key, field, value } => {
                let id = resolve_db(db).ok_or_else(|| HealthError::Failed(format!("unknown database {db}")))?;
                let conn = Db::open_socket(&self.host.host_path(socket), id).await.map_err(|e| failed(&e))?;
                let found = match field {
                    Some(field) => conn.hget(key, field).await,
                    None => conn.get(key).await,
                }
                .map_err(|e| failed(&e))?;
                match found {
                    Some(v) if &v == value => Ok(()),
                    Some(v) => Err(not_ready(format!("{db} {key} is {v:?}, waiting for {value:?}"))),
                    None => Err(not_ready(format!("{db} {key} is not set yet"))),
                }
            }
            Probe::Process { name } => {
                if self.process_running(container, name).await? {
                    Ok(())
                } else {
                    Err(not_ready(format!("process {name} is not running yet")))
                }
            }
        }
    }
}
