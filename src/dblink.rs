//! The daemon's link to the switch's databases.
//!
//! Once the database service is ready, it reads `database_config.json` (as every SONiC
//! program does), subscribes to CONFIG_DB `FEATURE` and hands the entries to the supervisor,
//! and writes the supervisor's STATE_DB `FEATURE|<name>` reports. When the database goes away
//! it waits for it to come back and starts over; reports are rewritten on every connect.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::db::config::{DbConfig, DEFAULT_DB_CONFIG};
use crate::db::subscriber::SubscriberStateTable;
use crate::db::{Db, DbError, Fields, Op};
use crate::feature::FeatureReport;
use crate::supervisor::{Event, Handle};

/// Open connections, while the database is up.
#[derive(Debug, Clone)]
pub struct Connections {
    pub config: DbConfig,
    pub config_db: Db,
    pub state_db: Db,
    pub appl_db: Db,
    pub asic_db: Db,
    pub counters_db: Db,
}

/// Shared with the API, which writes CONFIG_DB for `soniclet feature ...`.
#[derive(Debug)]
pub struct DbLink {
    sonic_root: PathBuf,
    current: watch::Sender<Option<Connections>>,
}

impl DbLink {
    pub fn new(sonic_root: PathBuf) -> Arc<Self> {
        Arc::new(Self { sonic_root, current: watch::channel(None).0 })
    }

    /// The open connections, or an error saying the database is not reachable.
    pub async fn connections(&self) -> Result<Connections, DbError> {
        self.current.borrow().clone().ok_or_else(|| DbError::UnknownDb("the database is not running".to_owned()))
    }

    /// Follows the connections: `Some` while the database is up, `None` while it is not.
    pub fn subscribe(&self) -> watch::Receiver<Option<Connections>> {
        self.current.subscribe()
    }

    fn config_path(&self) -> PathBuf {
        self.sonic_root.join(DEFAULT_DB_CONFIG.trim_start_matches('/'))
    }

    /// Reads database_config.json, which the database container publishes once it runs.
    async fn connect(&self) -> Result<Connections, DbError> {
        let config = DbConfig::load(&self.config_path())?;
        let open = |name: &str| {
            let location = config.locate(name).ok_or_else(|| DbError::UnknownDb(name.to_owned()));
            let root = self.sonic_root.clone();
            async move { Db::open(location?, &root).await }
        };
        let connections = Connections {
            config_db: open("CONFIG_DB").await?,
            state_db: open("STATE_DB").await?,
            appl_db: open("APPL_DB").await?,
            asic_db: open("ASIC_DB").await?,
            counters_db: open("COUNTERS_DB").await?,
            config,
        };
        connections.config_db.ping().await?;
        Ok(connections)
    }
}

/// Runs the link until shutdown.
pub async fn run(
    link: Arc<DbLink>,
    handle: Handle,
    mut reports: mpsc::UnboundedReceiver<FeatureReport>,
    mut database_ready: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let mut latest: BTreeMap<String, FeatureReport> = BTreeMap::new();
    loop {
        // Wait for the database service, keeping the newest reports meanwhile.
        while !*database_ready.borrow_and_update() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = database_ready.changed() => if changed.is_err() { return },
                Some(report) = reports.recv() => { latest.insert(report.name.clone(), report); }
            }
        }
        let connections = match link.connect().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "database not reachable yet");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let mut features = match SubscriberStateTable::new(&connections.config_db, "FEATURE").await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to CONFIG_DB FEATURE; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut loaded = BTreeMap::new();
        while let Some(op) = features.try_next() {
            if let Op::Set { key, fields } = op {
                loaded.insert(key, fields);
            }
        }
        link.current.send_replace(Some(connections.clone()));
        handle.send(Event::FeaturesLoaded(loaded));
        for report in latest.values() {
            write_report(&connections.state_db, report).await;
        }
        tracing::info!("connected to the switch's databases");

        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                op = features.next() => match op {
                    Some(Op::Set { key, fields }) => { handle.send(Event::FeatureChanged { name: key, fields: Some(fields) }); }
                    Some(Op::Del { key }) => { handle.send(Event::FeatureChanged { name: key, fields: None }); }
                    None => break,
                },
                Some(report) = reports.recv() => {
                    write_report(&connections.state_db, &report).await;
                    latest.insert(report.name.clone(), report);
                }
                changed = database_ready.changed() => {
                    if changed.is_err() { return }
                    if !*database_ready.borrow() { break }
                }
            }
        }
        link.current.send_replace(None);
        tracing::info!("lost the switch's databases; waiting for the database service");
    }
}

async fn write_report(state_db: &Db, report: &FeatureReport) {
    let fields: Fields = report.fields();
    if let Err(e) = state_db.table("FEATURE").set(&report.name, &fields).await {
        tracing::warn!(service = %report.name, error = %e, "cannot write STATE_DB FEATURE");
    }
}
