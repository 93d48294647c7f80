//! The D-Bus adapter: systemd's manager over the system bus, with zbus. The only module that
//! imports zbus.

use std::path::Path;

use tokio::sync::Mutex;

use super::mirror::UnitManager;

const SYSTEMD: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// Whether systemd is this system's init (`sd_booted`).
pub fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// systemd's manager, connected on first use and again after the bus goes away.
#[derive(Debug, Default)]
pub struct SystemdManager {
    connection: Mutex<Option<zbus::Connection>>,
}

impl SystemdManager {
    pub fn new() -> Self {
        Self::default()
    }

    async fn connection(&self) -> Result<zbus::Connection, String> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = zbus::Connection::system().await.map_err(|e| format!("cannot reach the system bus: {e}"))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }
}

impl UnitManager for SystemdManager {
    async fn start_unit(&self, unit: &str) -> Result<(), String> {
        let connection = self.connection().await?;
        let call =
            connection.call_method(Some(SYSTEMD), MANAGER_PATH, Some(MANAGER), "StartUnit", &(unit, "fail")).await;
        match call {
            Ok(_) => Ok(()),
            Err(zbus::Error::MethodError(name, detail, _)) => Err(format!("{name}: {}", detail.unwrap_or_default())),
            Err(e) => {
                // The bus went away (dbus restarted): reconnect next time.
                *self.connection.lock().await = None;
                Err(e.to_string())
            }
        }
    }
}
