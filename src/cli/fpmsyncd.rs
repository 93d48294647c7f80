//! `soniclet fpmsyncd`: opens APPL_DB and the kernel, and runs fpmsyncd.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::db::config::DbConfig;
use crate::db::{Db, DbError};
use crate::fpmsyncd::run::{run as run_fpmsyncd, FpmsyncdError};
use crate::vasic::netlink::Netlink;

pub async fn run(
    listen: SocketAddr,
    db_config: Option<PathBuf>,
    sonic_root: &Path,
    shutdown: CancellationToken,
) -> Result<(), FpmsyncdError> {
    let config = DbConfig::load_under(db_config.as_deref(), sonic_root).map_err(DbError::from)?;
    let appl = Db::open_named(&config, "APPL_DB", sonic_root).await?;
    run_fpmsyncd(appl, Netlink::connect()?, listen, shutdown).await
}
