//! swss-common's ConsumerStateTable: how orchagent reads APPL_DB, and how soniclet's virtual
//! orchagent does. Each notification allows one `pops` of at most `batch` keys, exactly as
//! swss-common's `Select` and orchagent's `Consumer::execute`.

use std::time::Duration;

use redis::{Script, Value};

use super::channel::{Backlog, ChannelCounter};
use super::producer_state::{is_noscript, load_scripts};
use super::redis::{bounded, fields_from_value, text, Db};
use super::{lua, DbError, Op};

#[derive(Debug)]
pub struct ConsumerStateTable {
    db: Db,
    table: String,
    batch: usize,
    key_set: String,
    del_set: String,
    table_prefix: String,
    script: Script,
    counter: ChannelCounter,
}

impl ConsumerStateTable {
    /// Subscribes to the table's channel; `batch` is orchagent's pop batch (`-b`, 128 by default).
    pub async fn new(db: &Db, table: &str, batch: usize) -> Result<Self, DbError> {
        let key_set = format!("{table}_KEY_SET");
        let channel = format!("{table}_CHANNEL@{}", db.id());
        let counter =
            ChannelCounter::start(db, &channel, Backlog::SetCard { key: key_set.clone(), batch: batch as u64 }).await?;
        Ok(Self {
            db: db.clone(),
            table: table.to_owned(),
            batch,
            del_set: format!("{table}_DEL_SET"),
            table_prefix: format!("{table}{}", db.separator()),
            key_set,
            script: Script::new(lua::CONSUMER_STATE_POPS),
            counter,
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Waits for a notification, then pops one batch (possibly empty, as in swss-common).
    pub async fn next(&self) -> Result<Vec<Op>, DbError> {
        self.counter.take().await;
        self.pops().await
    }

    /// Pops without waiting when a notification is pending.
    pub async fn try_next(&self) -> Result<Option<Vec<Op>>, DbError> {
        if self.counter.try_take() {
            self.pops().await.map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn pending_notifications(&self) -> u64 {
        self.counter.pending()
    }

    /// One `consumer_state_table_pops.lua` call. An entry without fields is a DEL. Entries
    /// other writers made malformed (non-UTF-8, oversized values) are logged and skipped.
    pub async fn pops(&self) -> Result<Vec<Op>, DbError> {
        let reply = match self.pops_once().await {
            Err(e) if is_noscript(&e) => {
                load_scripts(&self.db, &[&self.script]).await?;
                self.pops_once().await?
            }
            other => other?,
        };
        let Value::Array(items) = reply else { return Ok(Vec::new()) };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Value::Array(pair) = item else { continue };
            let key = match pair.first().map(|k| text(&self.table, k)) {
                Some(Ok(key)) => key,
                _ => {
                    tracing::warn!(table = %self.table, "skipped an entry whose key is not valid text");
                    continue;
                }
            };
            let full_key = format!("{}{key}", self.table_prefix);
            match pair.get(1).map(|fv| fields_from_value(&full_key, fv)) {
                Some(Ok(fields)) if fields.is_empty() => out.push(Op::Del { key }),
                Some(Ok(fields)) => out.push(Op::Set { key, fields }),
                Some(Err(e)) => tracing::warn!(error = %e, "skipped a malformed entry"),
                None => tracing::warn!(key = %full_key, "skipped an entry without fields"),
            }
        }
        Ok(out)
    }

    async fn pops_once(&self) -> Result<Value, DbError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(3).arg(&self.key_set).arg(&self.table_prefix).arg(&self.del_set);
        cmd.arg(self.batch).arg("_");
        let mut conn = self.db.conn();
        bounded("EVALSHA", Duration::from_secs(10), async move { cmd.query_async(&mut conn).await }).await
    }
}
