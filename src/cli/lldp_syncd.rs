//! `soniclet lldp-syncd` and `soniclet lldpmgrd`: open the databases and run the role.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::config::DbConfig;
use crate::db::{Db, DbError};
use crate::lldp_syncd::run::{manage, run as run_lldp_syncd, LldpSyncError, Lldpd, ManagerDbs};

pub async fn run(
    lldpd_socket: Option<PathBuf>,
    interval: u64,
    db_config: Option<PathBuf>,
    sonic_root: &Path,
    shutdown: CancellationToken,
) -> Result<(), LldpSyncError> {
    let config = DbConfig::load_under(db_config.as_deref(), sonic_root).map_err(DbError::from)?;
    let appl = Db::open_named(&config, "APPL_DB", sonic_root).await?;
    let lldpd = Lldpd { socket: lldpd_socket, period: Duration::from_secs(interval.max(1)) };
    run_lldp_syncd(appl, lldpd, shutdown).await
}

pub async fn lldpmgrd(
    lldpd_socket: Option<PathBuf>,
    db_config: Option<PathBuf>,
    sonic_root: &Path,
    shutdown: CancellationToken,
) -> Result<(), LldpSyncError> {
    let config = DbConfig::load_under(db_config.as_deref(), sonic_root).map_err(DbError::from)?;
    let dbs = ManagerDbs {
        appl: Db::open_named(&config, "APPL_DB", sonic_root).await?,
        state: Db::open_named(&config, "STATE_DB", sonic_root).await?,
        config: Db::open_named(&config, "CONFIG_DB", sonic_root).await?,
    };
    manage(dbs, Lldpd { socket: lldpd_socket, period: Duration::from_secs(1) }, shutdown).await
}
