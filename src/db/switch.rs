//! The database port's adapter: the switch's databases over Redis, found through
//! `database_config.json` as every SONiC program finds them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tokio::sync::watch;

use super::config::{DbConfig, DEFAULT_DB_CONFIG};
use super::port::{Databases, IntentFeeds, Opened, Tables};
use super::subscriber::SubscriberStateTable;
use super::{Db, DbError, Fields};

/// Open connections, while the database is up (the intent engine writes through them).
#[derive(Debug, Clone)]
pub struct Connections {
    pub config: DbConfig,
    pub config_db: Db,
    pub state_db: Db,
    pub appl_db: Db,
    pub asic_db: Db,
    pub counters_db: Db,
}

/// The switch's databases on Redis.
#[derive(Debug)]
pub struct RedisSwitch {
    sonic_root: PathBuf,
    /// The last connections opened; published while the link follows them.
    opened: std::sync::Mutex<Option<Connections>>,
    current: watch::Sender<Option<Connections>>,
    /// Counts APPL_DB flushes: who keeps APPL_DB entries writes them again on a change.
    appl_epoch: watch::Sender<u64>,
}

impl RedisSwitch {
    pub fn new(sonic_root: &Path) -> Self {
        Self {
            sonic_root: sonic_root.to_owned(),
            opened: std::sync::Mutex::new(None),
            current: watch::channel(None).0,
            appl_epoch: watch::channel(0).0,
        }
    }

    fn opened(&self) -> std::sync::MutexGuard<'_, Option<Connections>> {
        self.opened.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads database_config.json, which the database container publishes once it runs,
    /// and opens every database the daemon uses.
    pub async fn connect(&self) -> Result<Connections, DbError> {
        let config = DbConfig::load(&self.sonic_root.join(DEFAULT_DB_CONFIG.trim_start_matches('/')))?;
        let open = |name: &str| {
            let location = config.locate(name).ok_or_else(|| DbError::UnknownDb(name.to_owned()));
            let root = self.sonic_root.clone();
            async move { Db::open(location?, &root).await }
        };
        let (config_db, state_db, appl_db, asic_db, counters_db) = tokio::try_join!(
            open("CONFIG_DB"),
            open("STATE_DB"),
            open("APPL_DB"),
            open("ASIC_DB"),
            open("COUNTERS_DB"),
        )?;
        let connections = Connections { config_db, state_db, appl_db, asic_db, counters_db, config };
        connections.config_db.ping().await?;
        Ok(connections)
    }
}

impl Databases for RedisSwitch {
    type Tables = Db;

    async fn open(&self) -> Result<Opened<Db>, DbError> {
        let connections = self.connect().await?;
        let opened = Opened {
            config_db: connections.config_db.clone(),
            state_db: connections.state_db.clone(),
            appl_db: connections.appl_db.clone(),
        };
        *self.opened() = Some(connections);
        Ok(opened)
    }

    async fn flush(&self, names: &[String]) -> Result<(), DbError> {
        let Some(connections) = self.opened().clone() else {
            return Err(DbError::UnknownDb("the databases are not open".to_owned()));
        };
        let mut flushed = BTreeSet::new();
        let mut locations = Vec::new();
        for name in names {
            let Some(location) = connections.config.locate(name) else { continue };
            // Databases sharing a number (PFC_WD_DB, FLEX_COUNTER_DB) are flushed once.
            if flushed.insert((location.instance.clone(), location.id)) {
                locations.push(location);
            }
        }
        // All at once: the group's start waits for this, and each is a round trip.
        let root = &self.sonic_root;
        let flushes =
            locations.into_iter().map(|location| async move { Db::open(location, root).await?.flushdb().await });
        futures_util::future::join_all(flushes).await.into_iter().collect::<Result<Vec<_>, _>>()?;
        if names.iter().any(|n| n == "APPL_DB") {
            self.appl_epoch.send_modify(|e| *e += 1);
        }
        Ok(())
    }

    fn connected(&self, up: bool) {
        let current = if up { self.opened().clone() } else { None };
        self.current.send_replace(current);
    }

    fn intent_feeds(&self) -> Option<IntentFeeds> {
        Some(IntentFeeds { connections: self.current.subscribe(), flushes: self.appl_epoch.subscribe() })
    }
}

impl Tables for Db {
    type Feed = SubscriberStateTable;

    fn separator(&self) -> char {
        Db::separator(self)
    }

    async fn get(&self, key: &str) -> Result<Option<String>, DbError> {
        Db::get(self, key).await
    }

    async fn set(&self, key: &str, value: &str) -> Result<(), DbError> {
        Db::set(self, key, value).await
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<String>, DbError> {
        Db::hget(self, key, field).await
    }

    async fn hset(&self, key: &str, fields: &Fields) -> Result<(), DbError> {
        Db::hset(self, key, fields).await
    }

    async fn hset_many(&self, entries: &[(String, Fields)]) -> Result<(), DbError> {
        Db::hset_many(self, entries).await
    }

    async fn hgetall_many(&self, keys: &[String]) -> Result<Vec<Result<Fields, DbError>>, DbError> {
        Db::hgetall_many(self, keys).await
    }

    async fn del(&self, keys: &[String]) -> Result<(), DbError> {
        Db::del(self, keys).await
    }

    async fn table_keys(&self, table: &str) -> Result<Vec<String>, DbError> {
        self.table(table).keys().await
    }

    async fn flushdb(&self) -> Result<(), DbError> {
        Db::flushdb(self).await
    }

    async fn delete_matching(&self, pattern: &str) -> Result<usize, DbError> {
        Db::delete_matching(self, pattern).await
    }

    async fn follow(&self, table: &str) -> Result<SubscriberStateTable, DbError> {
        SubscriberStateTable::new(self, table).await
    }
}
