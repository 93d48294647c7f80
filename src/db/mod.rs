//! SONiC's Redis databases, spoken natively (`reference/swss-protocol.md`).
//!
//! - `config`: `database_config.json` / `database_global.json`.
//! - `redis`: connections ([`Db`]) and swss-common's `Table`.
//! - `producer_state`, `consumer_state`: APPL_DB's ProducerStateTable / ConsumerStateTable.
//! - `subscriber`: SubscriberStateTable on keyspace notifications (CONFIG_DB, STATE_DB).
//! - `op_queue`: ProducerTable / ConsumerTable, the ASIC_STATE op queue.
//! - `msgpack`: script replies packed with Redis's `cmsgpack`.
//! - `schema`: standard database names, numbers and separators.
//! - `port`: the daemon's database port (`Databases`, `Tables`, `Feed`); `switch` is its
//!   adapter over Redis, `memory` its twin.
//!
//! **Invariant:** this module is the only importer of the `redis` crate; callers speak
//! [`Op`], [`Fields`] and database names.

pub mod channel;
pub mod config;
pub mod consumer_state;
pub mod lua;
pub mod memory;
mod msgpack;
pub mod op_queue;
pub mod port;
pub mod producer_state;
pub mod redis;
pub mod schema;
pub mod subscriber;
pub mod switch;

pub use self::redis::{Db, Table};

/// A hash's field/value pairs, in order.
pub type Fields = Vec<(String, String)>;

/// One change of a table: what producers write and consumers pop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Set { key: String, fields: Fields },
    Del { key: String },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Set { key, .. } | Op::Del { key } => key,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to redis at {target}")]
    Connect {
        target: String,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("redis {command} failed")]
    Command {
        command: &'static str,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("redis {command} did not answer within {timeout:?}")]
    Timeout { command: &'static str, timeout: std::time::Duration },
    #[error("malformed entry {key}: {message}")]
    Malformed { key: String, message: String },
    #[error(transparent)]
    Config(#[from] config::DbConfigError),
    #[error("unknown database {0}")]
    UnknownDb(String),
}
