//! The adapter over the `redis` crate: unix-socket connections to a SONiC Redis instance.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::AsyncCommands;

use super::DbError;

/// Every Redis call is bounded, so a wedged database never wedges soniclet.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A multiplexed async connection to one Redis instance over its unix socket.
#[derive(Clone)]
pub struct RedisConn {
    socket: PathBuf,
    conn: redis::aio::MultiplexedConnection,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn").field("socket", &self.socket).finish()
    }
}

impl RedisConn {
    /// Connects and selects database `db`.
    pub async fn connect(socket: &Path, db: u8) -> Result<Self, DbError> {
        let info = redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Unix(socket.to_owned()),
            redis: redis::RedisConnectionInfo { db: i64::from(db), ..Default::default() },
        };
        let connect = async {
            let client = redis::Client::open(info)?;
            client.get_multiplexed_async_connection().await
        };
        let conn = tokio::time::timeout(CALL_TIMEOUT, connect)
            .await
            .map_err(|_| DbError::Timeout(CALL_TIMEOUT))?
            .map_err(|source| DbError::Connect { socket: socket.to_owned(), source })?;
        Ok(Self { socket: socket.to_owned(), conn })
    }

    async fn bounded<T>(
        &self,
        command: &'static str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, DbError> {
        tokio::time::timeout(CALL_TIMEOUT, fut)
            .await
            .map_err(|_| DbError::Timeout(CALL_TIMEOUT))?
            .map_err(|source| DbError::Command { command, source })
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        let mut conn = self.conn.clone();
        let pong: String = self.bounded("PING", async move { redis::cmd("PING").query_async(&mut conn).await }).await?;
        debug_assert_eq!(pong, "PONG");
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, DbError> {
        let mut conn = self.conn.clone();
        self.bounded("GET", async move { conn.get(key).await }).await
    }

    pub async fn hget(&self, key: &str, field: &str) -> Result<Option<String>, DbError> {
        let mut conn = self.conn.clone();
        self.bounded("HGET", async move { conn.hget(key, field).await }).await
    }
}
