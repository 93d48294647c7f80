//! The D-Bus adapter: systemd's manager over the system bus, with zbus. The only module that
//! imports zbus.
//!
//! Not systemd's private socket, though `systemctl` uses it as root: systemd names itself there
//! as sender with a well-known name, which zbus refuses (it panics reading such a message).

use std::path::Path;

use tokio::sync::Mutex;

use super::mirror::UnitManager;

const SYSTEMD: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// A connection to systemd's manager.
#[derive(Debug, Clone)]
struct Manager {
    connection: zbus::Connection,
}

impl Manager {
    async fn connect() -> Result<Self, String> {
        let connection = zbus::Connection::system().await.map_err(|e| format!("cannot reach the system bus: {e}"))?;
        Ok(Self { connection })
    }

    async fn call<B>(&self, path: &str, interface: &str, method: &str, body: &B) -> zbus::Result<zbus::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.connection.call_method(Some(SYSTEMD), path, Some(interface), method, body).await
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

    async fn manager(&self) -> Result<Manager, String> {
        let mut slot = self.manager.lock().await;
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        let manager = Manager::connect().await?;
        *slot = Some(manager.clone());
        Ok(manager)
    }
}

impl UnitManager for SystemdManager {
    async fn start_unit(&self, unit: &str) -> Result<(), String> {
        let manager = self.manager().await?;
        let call = manager.call(MANAGER_PATH, MANAGER, "StartUnit", &(unit, "fail")).await;
        match call {
            Ok(_) => Ok(()),
            Err(zbus::Error::MethodError(name, detail, _)) => Err(format!("{name}: {}", detail.unwrap_or_default())),
            Err(e) => {
                // systemd or the bus went away (re-exec, dbus restart): reconnect next time.
                *self.manager.lock().await = None;
                Err(e.to_string())
            }
        }
    }
}

fn dbus_error(e: zbus::Error) -> String {
    e.to_string()
}

/// The type of the job systemd runs on `unit` now (`stop`, `restart`, ...), if any: a unit's
/// `ExecStop` tells a restart from a stop with it. One call: `ListUnitsByNames` carries the job.
pub async fn unit_job_type(unit: &str) -> Result<Option<String>, String> {
    /// name, description, load, active, sub, following, path, job id, job type, job path.
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
    let manager = Manager::connect().await?;
    let reply = manager.call(MANAGER_PATH, MANAGER, "ListUnitsByNames", &(vec![unit],)).await.map_err(dbus_error)?;
    let rows: Vec<UnitRow> = reply.body().deserialize().map_err(dbus_error)?;
    Ok(rows.into_iter().find(|row| row.0 == unit && row.7 != 0).map(|row| row.8))
}
