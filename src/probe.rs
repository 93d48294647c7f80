//! Readiness probes, run by the daemon: an exec in the container, a Redis PING, a Redis key
//! holding a value, or a named process running in the container.

use std::sync::Arc;
use std::time::Duration;

use crate::db::redis::Db;
use crate::db::schema::resolve_db;
use crate::manifest::{Probe, Service};
use crate::runtime::spec::HostSettings;
use crate::runtime::ContainerRuntime;
use crate::supervisor::Readiness;

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

    async fn process_running(&self, container: &str, name: &str) -> Result<bool, String> {
        let pids = self.runtime.pids(container).await.map_err(|e| e.to_string())?;
        Ok(pids
            .into_iter()
            .any(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == name)))
    }
}

impl<R: ContainerRuntime> Readiness for Prober<R> {
    async fn check(&self, service: &Service, container: &str) -> Result<bool, String> {
        match &service.manifest.readiness.probe {
            Probe::Exec { command } => {
                let code =
                    self.runtime.exec(container, command.clone(), EXEC_TIMEOUT).await.map_err(|e| e.to_string())?;
                if code == 0 {
                    Ok(true)
                } else {
                    Err(format!("{} exited with code {code}", command.join(" ")))
                }
            }
            Probe::RedisPing { socket } => {
                let conn = Db::open_socket(&self.host.host_path(socket), 0).await.map_err(|e| e.to_string())?;
                conn.ping().await.map_err(|e| e.to_string())?;
                Ok(true)
            }
            Probe::RedisKey { socket, db, key, field, value } => {
                let id = resolve_db(db).ok_or_else(|| format!("unknown database {db}"))?;
                let conn = Db::open_socket(&self.host.host_path(socket), id).await.map_err(|e| e.to_string())?;
                let found = match field {
                    Some(field) => conn.hget(key, field).await,
                    None => conn.get(key).await,
                }
                .map_err(|e| e.to_string())?;
                match found {
                    Some(v) if &v == value => Ok(true),
                    Some(v) => Err(format!("{db} {key} is {v:?}, waiting for {value:?}")),
                    None => Err(format!("{db} {key} is not set yet")),
                }
            }
            Probe::Process { name } => {
                if self.process_running(container, name).await? {
                    Ok(true)
                } else {
                    Err(format!("process {name} is not running yet"))
                }
            }
        }
    }
}
