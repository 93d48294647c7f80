//! `soniclet bgpcfgd`: opens CONFIG_DB and APPL_DB and runs bgpcfgd against FRR's vtysh.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::bgpcfgd::run::{run as run_bgpcfgd, BgpDbs, BgpcfgdRunError, Frr};
use crate::db::config::DbConfig;
use crate::db::{Db, DbError};

pub async fn run(
    config_file: PathBuf,
    vtysh: PathBuf,
    db_config: Option<PathBuf>,
    sonic_root: &Path,
    shutdown: CancellationToken,
) -> Result<(), BgpcfgdRunError> {
    let config = DbConfig::load_under(db_config.as_deref(), sonic_root).map_err(DbError::from)?;
    let dbs = BgpDbs {
        config: Db::open_named(&config, "CONFIG_DB", sonic_root).await?,
        appl: Db::open_named(&config, "APPL_DB", sonic_root).await?,
    };
    run_bgpcfgd(dbs, Frr { vtysh, config_file }, shutdown).await
}
