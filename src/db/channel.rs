//! Notification counting for swss-common's consumers: each `G` published on a table's channel
//! is one pending pop, as in swss-common's `Select` (one `pops()` per message).
//!
//! The subscription has a connection of its own. When it drops (a Redis restart), it is made
//! again and the backlog is counted from the table itself, so nothing published meanwhile is
//! lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;

use super::redis::{bounded, Db};
use super::DbError;

/// How to count work already waiting when (re)subscribing.
#[derive(Debug, Clone)]
pub(crate) enum Backlog {
    /// `ceil(SCARD key / batch)` pops (ConsumerStateTable).
    SetCard { key: String, batch: u64 },
    /// `ceil(LLEN key / 3 / batch)` pops (ConsumerTable: three list items per entry).
    ListLen { key: String, batch: u64 },
}

impl Backlog {
    async fn pops(&self, db: &Db) -> Result<u64, DbError> {
        let mut conn = db.conn();
        let (command, key, per_pop) = match self {
            Backlog::SetCard { key, batch } => ("SCARD", key.clone(), *batch),
            Backlog::ListLen { key, batch } => ("LLEN", key.clone(), batch * 3),
        };
        let n: u64 = bounded(command, Duration::from_secs(2), async move {
            redis::cmd(command).arg(key).query_async(&mut conn).await
        })
        .await?;
        Ok(n.div_ceil(per_pop.max(1)))
    }
}

#[derive(Debug)]
pub(crate) struct ChannelCounter {
    pending: Arc<AtomicU64>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChannelCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChannelCounter {
    /// Subscribes to `channel`, then counts the backlog: subscribing first means no message
    /// can fall between the two.
    pub async fn start(db: &Db, channel: &str, backlog: Backlog) -> Result<Self, DbError> {
        let pending = Arc::new(AtomicU64::new(0));
        let notify = Arc::new(Notify::new());
        let mut pubsub = db.pubsub().await?;
        pubsub.subscribe(channel).await.map_err(|source| DbError::Command { command: "SUBSCRIBE", source })?;
        pending.fetch_add(backlog.pops(db).await?, Ordering::SeqCst);
        let (db, channel) = (db.clone(), channel.to_owned());
        let (task_pending, task_notify) = (Arc::clone(&pending), Arc::clone(&notify));
        let task = tokio::spawn(async move {
            let mut pubsub = Some(pubsub);
            loop {
                if let Some(active) = pubsub.take() {
                    let mut messages = active.into_on_message();
                    while messages.next().await.is_some() {
                        task_pending.fetch_add(1, Ordering::SeqCst);
                        task_notify.notify_one();
                    }
                }
                // The connection is gone: subscribe again and recount what waits.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Ok(mut fresh) = db.pubsub().await else { continue };
                if fresh.subscribe(&channel).await.is_err() {
                    continue;
                }
                if let Ok(n) = backlog.pops(&db).await {
                    task_pending.fetch_add(n.max(1), Ordering::SeqCst);
                    task_notify.notify_one();
                }
                tracing::info!(channel = %channel, "resubscribed after a lost connection");
                pubsub = Some(fresh);
            }
        });
        Ok(Self { pending, notify, task })
    }

    /// Takes one pending notification if there is one.
    pub fn try_take(&self) -> bool {
        self.pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    /// Returns a notification taken by [`Self::try_take`] but not used.
    pub fn give_back(&self) {
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// Waits for a notification and takes it.
    pub async fn take(&self) {
        loop {
            let notified = self.notify.notified();
            if self.try_take() {
                return;
            }
            notified.await;
        }
    }

    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }
}
