//! The database port's twin: SONiC's databases in memory, with followed tables, for tests
//! that run the daemon without Redis (the sim tier). A test writes entries as another
//! writer would (`hset`) and reads what the daemon reported (`hgetall`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;

use super::port::{Databases, Feed, IntentFeeds, Opened, Tables};
use super::{DbError, Fields, Op};

#[derive(Debug, Default)]
struct Database {
    strings: BTreeMap<String, String>,
    hashes: BTreeMap<String, Fields>,
}

#[derive(Debug)]
struct Follower {
    db: String,
    /// `TABLE<sep>`.
    prefix: String,
    tx: mpsc::UnboundedSender<Op>,
}

#[derive(Debug, Default)]
struct Store {
    databases: BTreeMap<String, Database>,
    followers: Vec<Follower>,
}

impl Store {
    fn db(&mut self, name: &str) -> &mut Database {
        self.databases.entry(name.to_owned()).or_default()
    }

    /// Tells the followers of the hash's table what it is now.
    fn changed(&mut self, db: &str, key: &str) {
        let fields = self.databases.get(db).and_then(|d| d.hashes.get(key)).cloned();
        self.followers.retain(|f| !f.tx.is_closed());
        for follower in self.followers.iter().filter(|f| f.db == db) {
            let Some(entry) = key.strip_prefix(&follower.prefix) else { continue };
            let op = match &fields {
                Some(fields) => Op::Set { key: entry.to_owned(), fields: fields.clone() },
                None => Op::Del { key: entry.to_owned() },
            };
            let _ = follower.tx.send(op);
        }
    }
}

/// Glob matching of `*` (all the patterns the link uses).
fn matches(pattern: &str, key: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == key,
        Some((head, tail)) => {
            key.starts_with(head) && {
                let rest = &key[head.len()..];
                (0..=rest.len()).any(|i| rest.is_char_boundary(i) && matches(tail, &rest[i..]))
            }
        }
    }
}

/// The switch's databases in memory. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct MemoryDatabases {
    store: Arc<Mutex<Store>>,
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

fn separator(name: &str) -> char {
    crate::db::schema::STANDARD_DATABASES.iter().find(|(n, _, _)| *n == name).map_or(':', |(_, _, s)| *s)
}

impl MemoryDatabases {
    pub fn new() -> Self {
        Self::default()
    }

    /// One database of the set, as the link sees it.
    pub fn tables(&self, name: &str) -> MemoryTables {
        MemoryTables { name: name.to_owned(), separator: separator(name), store: Arc::clone(&self.store) }
    }

    /// Sets fields of a hash, as another writer would.
    pub fn hset(&self, db: &str, key: &str, fields: &[(&str, &str)]) {
        let fields: Fields = fields.iter().map(|(f, v)| ((*f).to_owned(), (*v).to_owned())).collect();
        let mut store = lock(&self.store);
        merge(store.db(db).hashes.entry(key.to_owned()).or_default(), &fields);
        store.changed(db, key);
    }

    /// A hash as it is now (empty when there is none).
    pub fn hgetall(&self, db: &str, key: &str) -> Fields {
        lock(&self.store).databases.get(db).and_then(|d| d.hashes.get(key)).cloned().unwrap_or_default()
    }
}

fn merge(hash: &mut Fields, fields: &Fields) {
    for (field, value) in fields {
        match hash.iter_mut().find(|(f, _)| f == field) {
            Some(slot) => slot.1 = value.clone(),
            None => hash.push((field.clone(), value.clone())),
        }
    }
}

/// One database in memory.
#[derive(Debug, Clone)]
pub struct MemoryTables {
    name: String,
    separator: char,
    store: Arc<Mutex<Store>>,
}

impl MemoryTables {
    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }
}

impl Tables for MemoryTables {
    type Feed = MemoryFeed;

    fn separator(&self) -> char {
        self.separator
    }

    async fn get(&self, key: &str) -> Result<Option<String>, DbError> {
        Ok(self.store().db(&self.name).strings.get(key).cloned())
    }

    async fn set(&self, key: &str, value: &str) -> Result<(), DbError> {
        self.store().db(&self.name).strings.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<String>, DbError> {
        let mut store = self.store();
        let hash = store.db(&self.name).hashes.get(key);
        Ok(hash.and_then(|h| h.iter().find(|(f, _)| f == field)).map(|(_, v)| v.clone()))
    }

    async fn hset(&self, key: &str, fields: &Fields) -> Result<(), DbError> {
        let mut store = self.store();
        merge(store.db(&self.name).hashes.entry(key.to_owned()).or_default(), fields);
        store.changed(&self.name, key);
        Ok(())
    }

    async fn hset_many(&self, entries: &[(String, Fields)]) -> Result<(), DbError> {
        for (key, fields) in entries {
            self.hset(key, fields).await?;
        }
        Ok(())
    }

    async fn hgetall_many(&self, keys: &[String]) -> Result<Vec<Result<Fields, DbError>>, DbError> {
        let mut store = self.store();
        let db = store.db(&self.name);
        Ok(keys.iter().map(|k| Ok(db.hashes.get(k).cloned().unwrap_or_default())).collect())
    }

    async fn del(&self, keys: &[String]) -> Result<(), DbError> {
        let mut store = self.store();
        for key in keys {
            let db = store.db(&self.name);
            db.strings.remove(key);
            if db.hashes.remove(key).is_some() {
                store.changed(&self.name, key);
            }
        }
        Ok(())
    }

    async fn table_keys(&self, table: &str) -> Result<Vec<String>, DbError> {
        let prefix = format!("{table}{}", self.separator);
        let mut store = self.store();
        Ok(store.db(&self.name).hashes.keys().filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned)).collect())
    }

    async fn flushdb(&self) -> Result<(), DbError> {
        let keys: Vec<String> = self.store().db(&self.name).hashes.keys().cloned().collect();
        self.del(&keys).await?;
        self.store().db(&self.name).strings.clear();
        Ok(())
    }

    async fn delete_matching(&self, pattern: &str) -> Result<usize, DbError> {
        let keys: Vec<String> = {
            let mut store = self.store();
            let db = store.db(&self.name);
            db.hashes.keys().chain(db.strings.keys()).filter(|k| matches(pattern, k)).cloned().collect()
        };
        self.del(&keys).await?;
        Ok(keys.len())
    }

    async fn follow(&self, table: &str) -> Result<MemoryFeed, DbError> {
        let prefix = format!("{table}{}", self.separator);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut store = self.store();
        for (key, fields) in &store.db(&self.name).hashes {
            if let Some(entry) = key.strip_prefix(&prefix) {
                let _ = tx.send(Op::Set { key: entry.to_owned(), fields: fields.clone() });
            }
        }
        store.followers.push(Follower { db: self.name.clone(), prefix, tx });
        Ok(MemoryFeed { rx })
    }
}

/// A followed table in memory.
#[derive(Debug)]
pub struct MemoryFeed {
    rx: mpsc::UnboundedReceiver<Op>,
}

impl Feed for MemoryFeed {
    async fn next(&mut self) -> Option<Op> {
        self.rx.recv().await
    }

    fn try_next(&mut self) -> Option<Op> {
        self.rx.try_recv().ok()
    }
}

impl Databases for MemoryDatabases {
    type Tables = MemoryTables;

    async fn open(&self) -> Result<Opened<MemoryTables>, DbError> {
        Ok(Opened {
            config_db: self.tables("CONFIG_DB"),
            state_db: self.tables("STATE_DB"),
            appl_db: self.tables("APPL_DB"),
        })
    }

    async fn flush(&self, names: &[String]) -> Result<(), DbError> {
        for name in names {
            self.tables(name).flushdb().await?;
        }
        Ok(())
    }

    fn connected(&self, _up: bool) {}

    /// The intent engine speaks swss-common's protocols, which only Redis has.
    fn intent_feeds(&self) -> Option<IntentFeeds> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_followed_table_gets_its_entries_then_every_change() {
        let dbs = MemoryDatabases::new();
        dbs.hset("CONFIG_DB", "FEATURE|bgp", &[("state", "enabled")]);
        let config = dbs.tables("CONFIG_DB");
        let mut feed = config.follow("FEATURE").await.unwrap();
        assert_eq!(
            feed.try_next(),
            Some(Op::Set { key: "bgp".into(), fields: vec![("state".into(), "enabled".into())] })
        );
        config.hset("FEATURE|snmp", &vec![("state".into(), "disabled".into())]).await.unwrap();
        config.hset("PORT|Ethernet0", &vec![("mtu".into(), "9100".into())]).await.unwrap();
        config.del(&["FEATURE|bgp".into()]).await.unwrap();
        assert_eq!(
            feed.next().await,
            Some(Op::Set { key: "snmp".into(), fields: vec![("state".into(), "disabled".into())] })
        );
        assert_eq!(feed.next().await, Some(Op::Del { key: "bgp".into() }));
        assert_eq!(config.table_keys("FEATURE").await.unwrap(), ["snmp"]);
        assert_eq!(config.delete_matching("FEATURE|*").await.unwrap(), 1);
        assert_eq!(feed.next().await, Some(Op::Del { key: "snmp".into() }));
    }

    #[test]
    fn globs_match_as_redis_does_for_star() {
        assert!(matches("PORT_TABLE*", "PORT_TABLE|Ethernet0"));
        assert!(matches("a*c*e", "abcde"));
        assert!(!matches("PORT_TABLE*", "VLAN_TABLE|Vlan10"));
    }
}
