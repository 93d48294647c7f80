//! `soniclet lldp-syncd`: opens APPL_DB and polls lldpd.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::config::DbConfig;
use crate::db::{Db, DbError};
use crate::lldp_syncd::run::{run as run_lldp_syncd, LldpSyncError, Lldpd};

pub async fn run(
    lldpd_socket: Option<PathBuf>,
    interval: u64,
    db_config: Option<PathBuf>,
    sonic_root: &Path,
    shutdown: CancellationToken,
) -> Result<(), LldpSyncError> {
    let config = DbConfig::load_under(db_config.as_deref(), sonic_root).map_err(DbError::from)?;
    let location = config.locate("APPL_DB").ok_or_else(|| DbError::UnknownDb("APPL_DB".to_owned()))?;
    let appl = Db::open(location, sonic_root).await?;
    let lldpd = Lldpd { socket: lldpd_socket, period: Duration::from_secs(interval.max(1)) };
    run_lldp_syncd(appl, lldpd, shutdown).await
}
