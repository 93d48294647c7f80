//! The switch's databases as the daemon's link needs them: a narrow port over SONiC's Redis
//! databases. `db::switch` is its adapter (over `db::redis`), `db::memory` its twin.
//!
//! The link reads and writes hashes and strings, follows tables (swss-common's
//! SubscriberStateTable: the entries there are, then every change), and empties databases for
//! a failure group's cold start. The swss protocols the intent engine and the virtual ASIC
//! speak (producer and consumer state tables, the ASIC_STATE op queue) stay on Redis itself.

use std::future::Future;

use super::{DbError, Fields, Op};
use crate::db::switch::Connections;

/// One database: hashes named `TABLE<sep>key`, strings, and followed tables.
pub trait Tables: Clone + Send + Sync + 'static {
    type Feed: Feed;

    /// The database's table separator (`|` for CONFIG_DB and STATE_DB, `:` for APPL_DB).
    fn separator(&self) -> char;

    /// The hash name of `key` in `table`.
    fn key(&self, table: &str, key: &str) -> String {
        format!("{table}{}{key}", self.separator())
    }

    fn get(&self, key: &str) -> impl Future<Output = Result<Option<String>, DbError>> + Send;
    fn set(&self, key: &str, value: &str) -> impl Future<Output = Result<(), DbError>> + Send;
    fn hget(&self, key: &str, field: &str) -> impl Future<Output = Result<Option<String>, DbError>> + Send;
    /// Sets these fields of the hash; the others stay.
    fn hset(&self, key: &str, fields: &Fields) -> impl Future<Output = Result<(), DbError>> + Send;
    fn hset_many(&self, entries: &[(String, Fields)]) -> impl Future<Output = Result<(), DbError>> + Send;
    /// Every hash of `keys`, each its own result (a malformed one does not hide the others).
    fn hgetall_many(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Result<Fields, DbError>>, DbError>> + Send;
    fn del(&self, keys: &[String]) -> impl Future<Output = Result<(), DbError>> + Send;
    /// The keys of `table`, without the table prefix, sorted.
    fn table_keys(&self, table: &str) -> impl Future<Output = Result<Vec<String>, DbError>> + Send;
    fn flushdb(&self) -> impl Future<Output = Result<(), DbError>> + Send;
    /// Deletes every key matching the glob `pattern`; answers how many.
    fn delete_matching(&self, pattern: &str) -> impl Future<Output = Result<usize, DbError>> + Send;
    /// Follows `table`: its entries now, then every change.
    fn follow(&self, table: &str) -> impl Future<Output = Result<Self::Feed, DbError>> + Send;
}

/// A followed table's changes.
pub trait Feed: Send + 'static {
    /// The next change; `None` once the database is gone.
    fn next(&mut self) -> impl Future<Output = Option<Op>> + Send;
    /// A change if one is queued.
    fn try_next(&mut self) -> Option<Op>;
}

/// The databases the link opens once the database service is ready.
#[derive(Debug, Clone)]
pub struct Opened<T> {
    pub config_db: T,
    pub state_db: T,
    pub appl_db: T,
}

/// What the intent engine follows besides the link: the Redis connections (while the
/// database is up) and APPL_DB's flushes.
#[derive(Debug)]
pub struct IntentFeeds {
    pub connections: tokio::sync::watch::Receiver<Option<Connections>>,
    pub flushes: tokio::sync::watch::Receiver<u64>,
}

/// The switch's databases.
pub trait Databases: Send + Sync + 'static {
    type Tables: Tables;

    /// Opens CONFIG_DB, STATE_DB and APPL_DB (`database_config.json` says where).
    fn open(&self) -> impl Future<Output = Result<Opened<Self::Tables>, DbError>> + Send;

    /// Empties the databases named (a failure group's cold start), each once; unknown names
    /// are skipped.
    fn flush(&self, names: &[String]) -> impl Future<Output = Result<(), DbError>> + Send;

    /// The link is (or is no longer) connected and following.
    fn connected(&self, up: bool);

    /// What an intent engine follows, when these databases can carry intents.
    fn intent_feeds(&self) -> Option<IntentFeeds>;
}
