//! swss-common's ConsumerStateTable: how orchagent reads APPL_DB, and how soniclet's virtual
//! orchagent does. Each notification allows one `pops` of at most `batch` keys, exactly as
//! swss-common's `Select` and orchagent's `Consumer::execute`.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use redis::{Script, Value};

use super::channel::{Backlog, ChannelCounter};
use super::producer_state::{is_noscript, load_scripts};
use super::redis::{bounded, fields_from_owned, text_owned, Db};
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
    /// The next pop, already sent while the previous batch is parsed (its notification taken).
    prefetched: Mutex<Option<tokio::task::JoinHandle<Result<Value, DbError>>>>,
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
            prefetched: Mutex::new(None),
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Waits for a notification, then pops one batch (possibly empty, as in swss-common).
    pub async fn next(&self) -> Result<Vec<Op>, DbError> {
        let prefetched = self.prefetched.lock().expect("prefetch lock").take();
        let pop = match prefetched {
            // Its notification was taken when it was sent.
            Some(handle) => handle,
            None => {
                self.counter.take().await;
                self.send_pop()
            }
        };
        // With more notifications waiting, send the next pop now, behind this one: Redis runs
        // it while this batch travels and is parsed. Still one pop per notification.
        if self.counter.try_take() {
            *self.prefetched.lock().expect("prefetch lock") = Some(self.send_pop());
        }
        let reply = pop.await.map_err(|e| DbError::Malformed { key: self.table.clone(), message: e.to_string() })?;
        let reply = match reply {
            Err(e) if is_noscript(&e) => {
                load_scripts(&self.db, &[&self.script]).await?;
                self.pops_once().await?
            }
            other => other?,
        };
        Ok(self.parse(reply))
    }

    /// Sends one pop on the shared connection and returns its reply's task. The first poll,
    /// done here, queues the request on the connection, so Redis runs the pops in the order
    /// they are sent, whichever task the runtime polls first.
    fn send_pop(&self) -> tokio::task::JoinHandle<Result<Value, DbError>> {
        let request = self.pops_request();
        let mut conn = self.db.conn();
        let mut pop = Box::pin(async move {
            bounded("EVALSHA", Duration::from_secs(10), async move { request.query_async(&mut conn).await }).await
        });
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match pop.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(reply) => tokio::spawn(async move { reply }),
            std::task::Poll::Pending => tokio::spawn(pop),
        }
    }

    /// Pops without waiting when a notification is pending.
    pub async fn try_next(&self) -> Result<Option<Vec<Op>>, DbError> {
        let prefetched = self.prefetched.lock().expect("prefetch lock").is_some();
        if prefetched || self.counter.try_take() {
            if !prefetched {
                // Give the notification back: next() takes it.
                self.counter.give_back();
            }
            self.next().await.map(Some)
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
        Ok(self.parse(reply))
    }

    fn parse(&self, reply: Value) -> Vec<Op> {
        let reply = match reply {
            Value::BulkString(packed) => match super::msgpack::unpack(&packed) {
                Ok(unpacked) => unpacked,
                Err(message) => {
                    tracing::error!(table = %self.table, %message, "a popped batch could not be read");
                    return Vec::new();
                }
            },
            other => other,
        };
        let Value::Array(items) = reply else { return Vec::new() };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Value::Array(pair) = item else { continue };
            let mut pair = pair.into_iter();
            let key = match pair.next().map(|k| text_owned(&self.table, k)) {
                Some(Ok(key)) => key,
                _ => {
                    tracing::warn!(table = %self.table, "skipped an entry whose key is not valid text");
                    continue;
                }
            };
            match pair.next().map(|fv| fields_from_owned(&key, fv)) {
                Some(Ok(fields)) if fields.is_empty() => out.push(Op::Del { key }),
                Some(Ok(fields)) => out.push(Op::Set { key, fields }),
                Some(Err(e)) => tracing::warn!(table = %self.table, error = %e, "skipped a malformed entry"),
                None => tracing::warn!(table = %self.table, key = %key, "skipped an entry without fields"),
            }
        }
        out
    }

    fn pops_request(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(3).arg(&self.key_set).arg(&self.table_prefix).arg(&self.del_set);
        cmd.arg(self.batch).arg("_");
        cmd
    }

    async fn pops_once(&self) -> Result<Value, DbError> {
        let cmd = self.pops_request();
        let mut conn = self.db.conn();
        bounded("EVALSHA", Duration::from_secs(10), async move { cmd.query_async(&mut conn).await }).await
    }
}
