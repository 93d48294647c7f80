//! swss-common's ProducerStateTable: how soniclet writes APPL_DB intents that orchagent pops.
//!
//! Every entry is written with its full field set (an entry without fields becomes
//! `NULL=NULL`, since a SET without fields reads as a DEL). Deletes are real deletes through
//! the delete set, never a batched "DEL" op. Batches are pipelined; each script call
//! publishes once per 128 newly added keys, at least once.

use std::time::Duration;

use redis::Script;

use super::lua;
use super::redis::{bounded, Db};
use super::{DbError, Fields, Op};

/// Keys per script call of a batch; bounded so one call never blocks Redis for long.
const KEYS_PER_CALL: usize = 1000;
/// Script calls per pipeline round trip.
const CALLS_PER_FLUSH: usize = 16;

/// The scripts, loaded once per connection lifetime and reloaded after a Redis restart.
#[derive(Debug, Clone)]
pub(crate) struct Scripts {
    pub set: Script,
    pub del: Script,
    pub batch_set: Script,
    pub batch_del: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            set: Script::new(lua::PRODUCER_SET),
            del: Script::new(lua::PRODUCER_DEL),
            batch_set: Script::new(lua::PRODUCER_BATCH_SET),
            batch_del: Script::new(lua::PRODUCER_BATCH_DEL),
        }
    }
}

/// Loads `scripts` so EVALSHA works inside pipelines.
pub(crate) async fn load_scripts(db: &Db, scripts: &[&Script]) -> Result<(), DbError> {
    let mut pipe = redis::pipe();
    for script in scripts {
        pipe.cmd("SCRIPT").arg("LOAD").arg(script_source(script));
    }
    let mut conn = db.conn();
    let _: Vec<String> =
        bounded("SCRIPT LOAD", Duration::from_secs(5), async move { pipe.query_async(&mut conn).await }).await?;
    Ok(())
}

fn script_source(script: &Script) -> &'static str {
    // Script keeps its code private; map hashes back to our constants.
    for code in [
        lua::PRODUCER_SET,
        lua::PRODUCER_DEL,
        lua::PRODUCER_BATCH_SET,
        lua::PRODUCER_BATCH_DEL,
        lua::CONSUMER_STATE_POPS,
        lua::PRODUCER_TABLE_ENQUEUE,
        lua::CONSUMER_TABLE_POPS,
    ] {
        if Script::new(code).get_hash() == script.get_hash() {
            return code;
        }
    }
    unreachable!("every script comes from the lua module")
}

pub(crate) fn is_noscript(e: &DbError) -> bool {
    matches!(e, DbError::Command { source, .. } if source.kind() == redis::ErrorKind::NoScriptError)
}

#[derive(Debug, Clone)]
pub struct ProducerStateTable {
    db: Db,
    table: String,
    channel: String,
    key_set: String,
    del_set: String,
    staging_prefix: String,
    scripts: Scripts,
}

impl ProducerStateTable {
    pub fn new(db: &Db, table: &str) -> Self {
        let sep = db.separator();
        Self {
            channel: format!("{table}_CHANNEL@{}", db.id()),
            key_set: format!("{table}_KEY_SET"),
            del_set: format!("{table}_DEL_SET"),
            staging_prefix: format!("_{table}{sep}"),
            table: table.to_owned(),
            db: db.clone(),
            scripts: Scripts::new(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn full(fields: &Fields) -> Fields {
        if fields.is_empty() {
            vec![("NULL".to_owned(), "NULL".to_owned())]
        } else {
            fields.clone()
        }
    }

    /// SET of one key, one round trip.
    pub async fn set(&self, key: &str, fields: &Fields) -> Result<(), DbError> {
        self.apply(&[Op::Set { key: key.to_owned(), fields: fields.clone() }]).await
    }

    /// DEL of one key, one round trip.
    pub async fn del(&self, key: &str) -> Result<(), DbError> {
        self.apply(&[Op::Del { key: key.to_owned() }]).await
    }

    /// Applies `ops` in order, batched and pipelined. Runs of SETs and of DELs become batch
    /// script calls; the order between a SET and a DEL of the same key is kept.
    pub async fn apply(&self, ops: &[Op]) -> Result<(), DbError> {
        match self.apply_once(ops).await {
            Err(e) if is_noscript(&e) => {
                // Redis restarted (scripts are gone): load them and run the batch again; every
                // call is idempotent, so a repeat is harmless.
                let s = &self.scripts;
                load_scripts(&self.db, &[&s.set, &s.del, &s.batch_set, &s.batch_del]).await?;
                self.apply_once(ops).await
            }
            other => other,
        }
    }

    fn single_call(&self, op: &Op) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        match op {
            Op::Set { key, fields } => {
                cmd.arg(self.scripts.set.get_hash()).arg(3).arg(&self.channel).arg(&self.key_set);
                cmd.arg(format!("{}{key}", self.staging_prefix)).arg("G").arg(key);
                for (f, v) in Self::full(fields) {
                    cmd.arg(f).arg(v);
                }
            }
            Op::Del { key } => {
                cmd.arg(self.scripts.del.get_hash()).arg(4).arg(&self.channel).arg(&self.key_set);
                cmd.arg(format!("{}{key}", self.staging_prefix)).arg(&self.del_set).arg("G").arg(key);
            }
        }
        cmd
    }

    fn batch_call(&self, run: &[&Op]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        match run[0] {
            Op::Set { .. } => {
                cmd.arg(self.scripts.batch_set.get_hash()).arg(run.len() + 3);
                cmd.arg(&self.channel).arg(&self.key_set).arg(&self.staging_prefix);
                for op in run {
                    cmd.arg(op.key());
                }
                cmd.arg("G");
                for op in run {
                    if let Op::Set { fields, .. } = op {
                        let fields = Self::full(fields);
                        cmd.arg(fields.len());
                        for (f, v) in fields {
                            cmd.arg(f).arg(v);
                        }
                    }
                }
            }
            Op::Del { .. } => {
                cmd.arg(self.scripts.batch_del.get_hash()).arg(run.len() + 4);
                cmd.arg(&self.channel).arg(&self.key_set).arg(&self.del_set).arg(&self.staging_prefix);
                for op in run {
                    cmd.arg(op.key());
                }
                cmd.arg("G");
            }
        }
        cmd
    }

    async fn apply_once(&self, ops: &[Op]) -> Result<(), DbError> {
        if ops.is_empty() {
            return Ok(());
        }
        // Split into runs of one kind, each at most KEYS_PER_CALL long. A key repeated within
        // a run starts a new run, so the batch scripts never see one key twice.
        let mut calls: Vec<redis::Cmd> = Vec::new();
        let mut run: Vec<&Op> = Vec::new();
        let mut run_keys = std::collections::HashSet::new();
        let flush = |run: &mut Vec<&Op>, keys: &mut std::collections::HashSet<String>, calls: &mut Vec<redis::Cmd>| {
            match run.len() {
                0 => {}
                1 => calls.push(self.single_call(run[0])),
                _ => calls.push(self.batch_call(run)),
            }
            run.clear();
            keys.clear();
        };
        for op in ops {
            let same_kind =
                run.first().is_none_or(|first| std::mem::discriminant(*first) == std::mem::discriminant(op));
            if !same_kind || run.len() == KEYS_PER_CALL || run_keys.contains(op.key()) {
                flush(&mut run, &mut run_keys, &mut calls);
            }
            run_keys.insert(op.key().to_owned());
            run.push(op);
        }
        flush(&mut run, &mut run_keys, &mut calls);

        for chunk in calls.chunks(CALLS_PER_FLUSH) {
            let mut pipe = redis::pipe();
            for call in chunk {
                pipe.add_command(call.clone()).ignore();
            }
            let mut conn = self.db.conn();
            let _: () =
                bounded("EVALSHA", Duration::from_secs(30), async move { pipe.query_async(&mut conn).await }).await?;
        }
        Ok(())
    }

    /// Keys written but not yet popped by the consumer (back-pressure).
    pub async fn pending(&self) -> Result<usize, DbError> {
        let mut conn = self.db.conn();
        let key_set = self.key_set.clone();
        bounded("SCARD", Duration::from_secs(2), async move {
            redis::cmd("SCARD").arg(key_set).query_async(&mut conn).await
        })
        .await
    }
}
