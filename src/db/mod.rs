//! SONiC's Redis databases.
//!
//! `schema` names the databases; `redis` is the only module that imports the `redis` crate.
//! Callers speak our types (database ids, keys, field maps), never redis-rs types.

pub mod redis;
pub mod schema;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to redis at {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("redis command {command} failed")]
    Command {
        command: &'static str,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
}
