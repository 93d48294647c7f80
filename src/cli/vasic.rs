//! `soniclet vasic orch|syncd|portsyncd`: opens the databases the role needs and runs it.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::db::config::DbConfig;
use crate::db::{Db, DbError};
use crate::vasic::netlink::Netlink;
use crate::vasic::run::{self, Dbs};
use crate::vasic::VasicError;

/// Which process of the virtual ASIC to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VasicRole {
    Orch,
    Syncd,
    Portsyncd,
}

pub async fn run(
    role: VasicRole,
    db_config: Option<PathBuf>,
    sonic_root: &Path,
    shutdown: CancellationToken,
) -> Result<(), VasicError> {
    let config = DbConfig::load_under(db_config.as_deref(), sonic_root).map_err(DbError::from)?;
    let dbs = Dbs {
        appl: Db::open_named(&config, "APPL_DB", sonic_root).await?,
        asic: Db::open_named(&config, "ASIC_DB", sonic_root).await?,
        counters: Db::open_named(&config, "COUNTERS_DB", sonic_root).await?,
        state: Db::open_named(&config, "STATE_DB", sonic_root).await?,
        config: Db::open_named(&config, "CONFIG_DB", sonic_root).await?,
    };
    match role {
        VasicRole::Orch => run::orch(dbs, shutdown).await,
        VasicRole::Syncd => run::syncd(dbs, Netlink::connect()?, shutdown).await,
        VasicRole::Portsyncd => run::portsyncd(dbs, Netlink::connect()?, shutdown).await,
    }
}
