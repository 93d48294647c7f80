//! swss-common's ProducerTable and ConsumerTable: the op queue sairedis uses between
//! orchagent and syncd (`ASIC_STATE_KEY_VALUE_OP_QUEUE`, answers on `GETRESPONSE`).

use std::time::Duration;

use redis::{Script, Value};

use super::channel::{Backlog, ChannelCounter};
use super::producer_state::{is_noscript, load_scripts};
use super::redis::{bounded, text, Db};
use super::{lua, DbError, Fields};

/// One queued operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub key: String,
    /// The operation without its S/D prefix (`create`, `remove`, `getresponse`, ...).
    pub op: String,
    pub fields: Fields,
}

/// The value sairedis enqueues: `["f1","v1",...]`, or `{}` when there are none.
pub fn encode_fields(fields: &Fields) -> String {
    if fields.is_empty() {
        return "{}".to_owned();
    }
    let flat: Vec<&str> = fields.iter().flat_map(|(f, v)| [f.as_str(), v.as_str()]).collect();
    serde_json::to_string(&flat).expect("strings serialise")
}

#[derive(Debug, Clone)]
pub struct ProducerTable {
    db: Db,
    queue: String,
    channel: String,
    script: Script,
}

impl ProducerTable {
    pub fn new(db: &Db, table: &str) -> Self {
        Self {
            db: db.clone(),
            queue: format!("{table}_KEY_VALUE_OP_QUEUE"),
            channel: format!("{table}_CHANNEL@{}", db.id()),
            script: Script::new(lua::PRODUCER_TABLE_ENQUEUE),
        }
    }

    /// Enqueues `(key, fields, op)` entries in order, in one pipeline; `op` carries its
    /// prefix (`Screate`, `Dremove`, `Sgetresponse`).
    pub async fn send(&self, entries: &[(String, Fields, String)]) -> Result<(), DbError> {
        match self.send_once(entries).await {
            Err(e) if is_noscript(&e) => {
                load_scripts(&self.db, &[&self.script]).await?;
                self.send_once(entries).await
            }
            other => other,
        }
    }

    async fn send_once(&self, entries: &[(String, Fields, String)]) -> Result<(), DbError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, fields, op) in entries {
            pipe.cmd("EVALSHA")
                .arg(self.script.get_hash())
                .arg(2)
                .arg(&self.queue)
                .arg(&self.channel)
                .arg(key)
                .arg(encode_fields(fields))
                .arg(op)
                .arg("G")
                .ignore();
        }
        let mut conn = self.db.conn();
        bounded("EVALSHA", Duration::from_secs(10), async move { pipe.query_async(&mut conn).await }).await
    }
}

#[derive(Debug)]
pub struct ConsumerTable {
    db: Db,
    queue: String,
    table_prefix: String,
    batch: usize,
    modify_redis: bool,
    script: Script,
    counter: ChannelCounter,
}

impl ConsumerTable {
    /// `modify_redis`: write `T:key` hashes at pop time (sairedis async mode); syncd in sync
    /// mode pops without, and writes ASIC_STATE only after the SAI accepted the object.
    pub async fn new(db: &Db, table: &str, batch: usize, modify_redis: bool) -> Result<Self, DbError> {
        let queue = format!("{table}_KEY_VALUE_OP_QUEUE");
        let channel = format!("{table}_CHANNEL@{}", db.id());
        let counter =
            ChannelCounter::start(db, &channel, Backlog::ListLen { key: queue.clone(), batch: batch as u64 }).await?;
        Ok(Self {
            db: db.clone(),
            table_prefix: format!("{table}{}", db.separator()),
            queue,
            batch,
            modify_redis,
            script: Script::new(lua::CONSUMER_TABLE_POPS),
            counter,
        })
    }

    /// Waits for a notification, then pops one batch, oldest first.
    pub async fn next(&self) -> Result<Vec<QueueEntry>, DbError> {
        self.counter.take().await;
        self.pops().await
    }

    pub async fn pops(&self) -> Result<Vec<QueueEntry>, DbError> {
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
            let Value::Array(parts) = item else { continue };
            let texts: Result<Vec<String>, DbError> = parts.iter().map(|p| text(&self.queue, p)).collect();
            match texts {
                Ok(texts) if texts.len() >= 2 && texts.len() % 2 == 0 => {
                    let fields = texts[2..].chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
                    out.push(QueueEntry { key: texts[0].clone(), op: texts[1].clone(), fields });
                }
                Ok(_) => tracing::warn!(queue = %self.queue, "skipped a malformed queue entry"),
                Err(e) => tracing::warn!(error = %e, "skipped a malformed queue entry"),
            }
        }
        Ok(out)
    }

    async fn pops_once(&self) -> Result<Value, DbError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(2).arg(&self.queue).arg(&self.table_prefix);
        cmd.arg(self.batch).arg(if self.modify_redis { "1" } else { "0" });
        let mut conn = self.db.conn();
        bounded("EVALSHA", Duration::from_secs(10), async move { cmd.query_async(&mut conn).await }).await
    }
}
