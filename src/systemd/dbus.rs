//! The D-Bus adapter: systemd's manager over the system bus, with zbus. The only module that
//! imports zbus.
//!
//! Not systemd's private socket, though `systemctl` uses it as root: systemd names itself there
//! as sender with a well-known name, which zbus refuses (it panics reading such a message).

use std::path::Path;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::supervisor::ports::{UnitError, Units};

/// Every D-Bus call's deadline: systemd answers in milliseconds, or is busy re-executing.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

const SYSTEMD: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// A connection to systemd's manager.
#[derive(Debug, Clone)]
struct Manager {
    connection: zbus::Connection,
}

/// Why a D-Bus call did not get its answer.
#[derive(Debug, thiserror::Error)]
pub enum DbusError {
    #[error("cannot reach the system bus")]
    Connect(#[source] zbus::Error),
    #[error("D-Bus call {method} failed")]
    Call {
        method: &'static str,
        #[source]
        source: zbus::Error,
    },
    #[error("D-Bus call {method} had no answer within {timeout:?}")]
    Timeout { method: &'static str, timeout: Duration },
}

impl Manager {
    async fn connect() -> Result<Self, DbusError> {
        let connect = tokio::time::timeout(CALL_TIMEOUT, zbus::Connection::system());
        let connection = connect
            .await
            .map_err(|_| DbusError::Timeout { method: "Hello", timeout: CALL_TIMEOUT })?
            .map_err(DbusError::Connect)?;
        Ok(Self { connection })
    }

    async fn call<B>(
        &self,
        path: &str,
        interface: &str,
        method: &'static str,
        body: &B,
    ) -> Result<zbus::Message, DbusError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let call = self.connection.call_method(Some(SYSTEMD), path, Some(interface), method, body);
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(source)) => Err(DbusError::Call { method, source }),
            Err(_) => Err(DbusError::Timeout { method, timeout: CALL_TIMEOUT }),
        }
    }
}

/// Whether systemd is this system's init (`sd_booted`).
pub fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// systemd's manager, connected on first use and again after the bus goes away.
#[derive(Debug, Default)]
pub struct SystemdManager {
    manager: Mutex<Option<Manager>>,
}

impl SystemdManager {
    pub fn new() -> Self {
        Self::default()
    }

    async fn manager(&self) -> Result<Manager, DbusError> {
        let mut slot = self.manager.lock().await;
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        let manager = Manager::connect().await?;
        *slot = Some(manager.clone());
        Ok(manager)
    }
}

impl Units for SystemdManager {
    async fn start_unit(&self, unit: &str) -> Result<(), UnitError> {
        self.start(unit, "fail").await
    }

    async fn reboot(&self) -> Result<(), UnitError> {
        // systemctl reboot's own job: nothing queued later can call it off.
        self.start("reboot.target", "replace-irreversibly").await
    }
}

impl SystemdManager {
    async fn start(&self, unit: &str, mode: &str) -> Result<(), UnitError> {
        let manager = self.manager().await.map_err(|e| UnitError::Unreachable(e.to_string()))?;
        let call = manager.call(MANAGER_PATH, MANAGER, "StartUnit", &(unit, mode)).await;
        match call {
            Ok(_) => Ok(()),
            Err(DbusError::Call { source: zbus::Error::MethodError(name, detail, _), .. }) => {
                Err(UnitError::Refused { name: name.to_string(), detail: detail.unwrap_or_default() })
            }
            Err(e) => {
                // systemd or the bus went away (re-exec, dbus restart): reconnect next time.
                *self.manager.lock().await = None;
                Err(UnitError::Unreachable(e.to_string()))
            }
        }
    }
}

/// One row of `ListUnitsByNames`: name, description, load, active, sub, following, path,
/// job id, job type, job path.
type UnitRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    zbus::zvariant::OwnedObjectPath,
    u32,
    String,
    zbus::zvariant::OwnedObjectPath,
);

/// The units' rows, one call.
async fn unit_rows(manager: &Manager, unit: &str) -> Result<Vec<UnitRow>, DbusError> {
    let reply = manager.call(MANAGER_PATH, MANAGER, "ListUnitsByNames", &(vec![unit],)).await?;
    reply.body().deserialize().map_err(|source| DbusError::Call { method: "ListUnitsByNames", source })
}

/// The type of the job systemd runs on `unit` now (`stop`, `restart`, ...), if any: a unit's
/// `ExecStop` tells a restart from a stop with it. One call: `ListUnitsByNames` carries the job.
pub async fn unit_job_type(unit: &str) -> Result<Option<String>, DbusError> {
    let rows = unit_rows(&Manager::connect().await?, unit).await?;
    Ok(rows.into_iter().find(|row| row.0 == unit && row.7 != 0).map(|row| row.8))
}

/// `systemctl enable` then `systemctl restart` of `unit` (a unit file the image ships): on at
/// every boot from now, and running now on its current configuration.
pub async fn enable_and_restart(unit: &str) -> Result<(), DbusError> {
    let manager = Manager::connect().await?;
    manager.call(MANAGER_PATH, MANAGER, "EnableUnitFiles", &(vec![unit], false, true)).await?;
    manager.call(MANAGER_PATH, MANAGER, "Reload", &()).await?;
    manager.call(MANAGER_PATH, MANAGER, "RestartUnit", &(unit, "replace")).await?;
    Ok(())
}

/// `systemctl disable --now` of `unit`.
pub async fn stop_and_disable(unit: &str) -> Result<(), DbusError> {
    let manager = Manager::connect().await?;
    manager.call(MANAGER_PATH, MANAGER, "StopUnit", &(unit, "replace")).await?;
    manager.call(MANAGER_PATH, MANAGER, "DisableUnitFiles", &(vec![unit], false)).await?;
    manager.call(MANAGER_PATH, MANAGER, "Reload", &()).await?;
    Ok(())
}

/// `unit`'s ActiveState (`active`, `activating`, `inactive`, `failed`...); `inactive` for a
/// unit systemd does not have loaded.
pub async fn active_state(unit: &str) -> Result<String, DbusError> {
    let rows = unit_rows(&Manager::connect().await?, unit).await?;
    Ok(rows.into_iter().find(|row| row.0 == unit).map_or_else(|| "inactive".to_owned(), |row| row.3))
}
