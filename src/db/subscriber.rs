//! swss-common's SubscriberStateTable: CONFIG_DB and STATE_DB readers, on keyspace
//! notifications (`notify-keyspace-events AKE`, as SONiC configures Redis).
//!
//! It loads the whole table first and reports every key as a SET, then reports each change:
//! `del` as a DEL, anything else as a SET with the full hash. After a lost connection it
//! subscribes and loads again, and reports as DEL what vanished meanwhile.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::redis::{glob_escape, Db};
use super::{DbError, Op};

#[derive(Debug)]
pub struct SubscriberStateTable {
    rx: mpsc::UnboundedReceiver<Op>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SubscriberStateTable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Feed {
    db: Db,
    table: String,
    prefix: String,
    pattern: String,
    tx: mpsc::UnboundedSender<Op>,
    known: BTreeSet<String>,
}

impl Feed {
    /// Reports the current content: SET per key, DEL for keys known before but gone now.
    async fn load(&mut self) -> Result<(), DbError> {
        let mut present = BTreeSet::new();
        let keys = self.db.table(&self.table).keys().await?;
        let full: Vec<String> = keys.iter().map(|k| format!("{}{k}", self.prefix)).collect();
        for (key, result) in keys.into_iter().zip(self.db.hgetall_many(&full).await?) {
            match result {
                Ok(fields) if !fields.is_empty() => {
                    present.insert(key.clone());
                    let _ = self.tx.send(Op::Set { key, fields });
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "skipped a malformed entry"),
            }
        }
        for gone in self.known.difference(&present) {
            let _ = self.tx.send(Op::Del { key: gone.clone() });
        }
        self.known = present;
        Ok(())
    }

    /// Handles a burst of keyspace events: deletions at once, and one pipelined read of the
    /// changed hashes, keeping the events' order.
    async fn events(&mut self, events: Vec<(String, String)>) {
        let mut reads: Vec<String> = Vec::new();
        let mut order: Vec<(String, bool)> = Vec::new();
        for (channel, event) in events {
            let Some(key) = channel.split_once(':').and_then(|(_, k)| k.strip_prefix(&self.prefix)) else { continue };
            let deleted = matches!(event.as_str(), "del" | "expired" | "evicted");
            if !deleted {
                reads.push(format!("{}{key}", self.prefix));
            }
            order.push((key.to_owned(), deleted));
        }
        let mut fetched = match self.db.hgetall_many(&reads).await {
            Ok(results) => results.into_iter(),
            Err(e) => {
                tracing::warn!(error = %e, table = %self.table, "cannot read changed entries");
                return;
            }
        };
        for (key, deleted) in order {
            if deleted {
                self.known.remove(&key);
                let _ = self.tx.send(Op::Del { key });
                continue;
            }
            match fetched.next() {
                Some(Ok(fields)) if !fields.is_empty() => {
                    self.known.insert(key.clone());
                    let _ = self.tx.send(Op::Set { key, fields });
                }
                // Already gone again: the del event follows.
                Some(Ok(_)) | None => {}
                Some(Err(e)) => tracing::warn!(error = %e, "skipped a malformed entry"),
            }
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, DbError> {
        let mut pubsub = self.db.pubsub().await?;
        pubsub.psubscribe(&self.pattern).await.map_err(|source| DbError::Command { command: "PSUBSCRIBE", source })?;
        Ok(pubsub)
    }
}

impl SubscriberStateTable {
    /// Subscribes to `table`'s keyspace events, then loads it.
    pub async fn new(db: &Db, table: &str) -> Result<Self, DbError> {
        let prefix = format!("{table}{}", db.separator());
        let mut feed = Feed {
            db: db.clone(),
            table: table.to_owned(),
            pattern: format!("__keyspace@{}__:{}*", db.id(), glob_escape(&prefix)),
            prefix,
            tx: mpsc::unbounded_channel().0,
            known: BTreeSet::new(),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        feed.tx = tx;
        let pubsub = feed.subscribe().await?;
        feed.load().await?;
        let task = tokio::spawn(async move {
            let mut pubsub = Some(pubsub);
            loop {
                if let Some(active) = pubsub.take() {
                    let mut messages = active.into_on_message();
                    while let Some(msg) = messages.next().await {
                        let mut burst =
                            vec![(msg.get_channel_name().to_owned(), msg.get_payload().unwrap_or_default())];
                        // Take whatever else already arrived, to read it in one pipeline.
                        while burst.len() < 4096 {
                            match futures_util::FutureExt::now_or_never(messages.next()) {
                                Some(Some(msg)) => burst
                                    .push((msg.get_channel_name().to_owned(), msg.get_payload().unwrap_or_default())),
                                _ => break,
                            }
                        }
                        feed.events(burst).await;
                    }
                }
                if feed.tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Ok(fresh) = feed.subscribe().await else { continue };
                if feed.load().await.is_err() {
                    continue;
                }
                tracing::info!(table = %feed.table, "resubscribed after a lost connection");
                pubsub = Some(fresh);
            }
        });
        Ok(Self { rx, task })
    }

    /// The next change; `None` once the subscriber is gone.
    pub async fn next(&mut self) -> Option<Op> {
        self.rx.recv().await
    }

    /// A change if one is queued.
    pub fn try_next(&mut self) -> Option<Op> {
        self.rx.try_recv().ok()
    }
}

impl super::port::Feed for SubscriberStateTable {
    async fn next(&mut self) -> Option<Op> {
        SubscriberStateTable::next(self).await
    }

    fn try_next(&mut self) -> Option<Op> {
        SubscriberStateTable::try_next(self)
    }
}
