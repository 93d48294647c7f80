//! Connections to SONiC's Redis instances, and swss-common's `Table`.
//!
//! The `db` module is the only place that imports the `redis` crate. A [`Db`] is one selected
//! database on one instance, reached over its unix socket when the config names one (as every
//! SONiC program prefers), over TCP otherwise. Commands go through a reconnecting connection;
//! pub/sub gets connections of its own, as swss-common's subscribers do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Value};

use super::config::{DbConfig, DbLocation};
use super::{DbError, Fields};

/// Deadline of an ordinary call; bulk pipelines get their own.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest field value soniclet accepts from other writers; longer ones are skipped.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// One database of one instance.
#[derive(Clone)]
pub struct Db {
    location: DbLocation,
    client: redis::Client,
    conn: ConnectionManager,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("name", &self.location.name).field("id", &self.location.id).finish()
    }
}

fn connection_info(location: &DbLocation, root: &Path) -> redis::ConnectionInfo {
    let addr = match &location.unix_socket {
        Some(socket) => redis::ConnectionAddr::Unix(root.join(socket.strip_prefix("/").unwrap_or(socket))),
        None => redis::ConnectionAddr::Tcp(location.hostname.clone(), location.port),
    };
    redis::ConnectionInfo {
        addr,
        redis: redis::RedisConnectionInfo { db: i64::from(location.id), ..Default::default() },
    }
}

pub(crate) async fn bounded<T>(
    command: &'static str,
    timeout: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, DbError> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| DbError::Timeout { command, timeout })?
        .map_err(|source| DbError::Command { command, source })
}

impl Db {
    /// Connects to `location`; socket paths are taken under `root` (the SONiC root).
    pub async fn open(location: DbLocation, root: &Path) -> Result<Self, DbError> {
        Self::connect(location, root, 2).await
    }

    /// Connects to the database `config` names `name` (or numbers so).
    pub async fn open_named(config: &DbConfig, name: &str, root: &Path) -> Result<Self, DbError> {
        let location = config.locate(name).ok_or_else(|| DbError::UnknownDb(name.to_owned()))?;
        Self::open(location, root).await
    }

    /// `retries` are reconnection attempts with the client's backoff (100 ms doubling): right for
    /// a long-lived connection, wrong for a probe that already retries on its own schedule.
    async fn connect(location: DbLocation, root: &Path, retries: usize) -> Result<Self, DbError> {
        let info = connection_info(&location, root);
        let target = match &info.addr {
            redis::ConnectionAddr::Unix(p) => p.display().to_string(),
            other => other.to_string(),
        };
        let client = redis::Client::open(info).map_err(|source| DbError::Connect { target: target.clone(), source })?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(60))
            .set_number_of_retries(retries);
        let conn =
            tokio::time::timeout(Duration::from_secs(3), ConnectionManager::new_with_config(client.clone(), config))
                .await
                .map_err(|_| DbError::Timeout { command: "connect", timeout: Duration::from_secs(3) })?
                .map_err(|source| DbError::Connect { target, source })?;
        Ok(Self { location, client, conn })
    }

    /// A database on a Redis unix socket, by number (for probes and tests). One attempt, no
    /// backoff: a probe polling a Redis that is still starting must see it the moment it listens.
    pub async fn open_socket(socket: &Path, id: u8) -> Result<Self, DbError> {
        let location = DbLocation {
            name: id.to_string(),
            id,
            separator: super::schema::STANDARD_DATABASES
                .iter()
                .find(|(_, i, _)| *i == id)
                .map(|(_, _, s)| *s)
                .unwrap_or(':'),
            instance: "redis".to_owned(),
            unix_socket: Some(socket.to_owned()),
            hostname: "127.0.0.1".to_owned(),
            port: 6379,
        };
        Self::connect(location, Path::new("/"), 0).await
    }

    pub fn name(&self) -> &str {
        &self.location.name
    }

    pub fn id(&self) -> u8 {
        self.location.id
    }

    pub fn separator(&self) -> char {
        self.location.separator
    }

    pub fn location(&self) -> &DbLocation {
        &self.location
    }

    /// `TABLE<sep>key`, or just `TABLE` for an empty key.
    pub fn key(&self, table: &str, key: &str) -> String {
        if key.is_empty() {
            table.to_owned()
        } else {
            format!("{table}{}{key}", self.location.separator)
        }
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A fresh pub/sub connection to the same database.
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub, DbError> {
        let target = self.location.name.clone();
        tokio::time::timeout(Duration::from_secs(3), self.client.get_async_pubsub())
            .await
            .map_err(|_| DbError::Timeout { command: "subscribe", timeout: Duration::from_secs(3) })?
            .map_err(|source| DbError::Connect { target, source })
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        let mut conn = self.conn();
        let _: String =
            bounded("PING", CALL_TIMEOUT, async move { redis::cmd("PING").query_async(&mut conn).await }).await?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, DbError> {
        let mut conn = self.conn();
        bounded("GET", CALL_TIMEOUT, async move { conn.get(key).await }).await
    }

    /// `PUBLISH channel message` (syncd's NOTIFICATIONS, for one).
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), DbError> {
        let mut conn = self.conn.clone();
        let (channel, message) = (channel.to_owned(), message.to_owned());
        bounded("PUBLISH", CALL_TIMEOUT, async move { conn.publish::<_, _, ()>(channel, message).await }).await
    }

    pub async fn set(&self, key: &str, value: &str) -> Result<(), DbError> {
        let mut conn = self.conn();
        bounded("SET", CALL_TIMEOUT, async move { conn.set(key, value).await }).await
    }

    pub async fn hget(&self, key: &str, field: &str) -> Result<Option<String>, DbError> {
        let mut conn = self.conn();
        bounded("HGET", CALL_TIMEOUT, async move { conn.hget(key, field).await }).await
    }

    /// Every field of a hash, in Redis order; refuses non-UTF-8 and oversized values.
    pub async fn hgetall(&self, key: &str) -> Result<Fields, DbError> {
        let mut conn = self.conn();
        let value: Value =
            bounded(
                "HGETALL",
                CALL_TIMEOUT,
                async move { redis::cmd("HGETALL").arg(key).query_async(&mut conn).await },
            )
            .await?;
        fields_from_value(key, &value)
    }

    /// One multi-field HSET, as swss-common's `Table::set`.
    pub async fn hset(&self, key: &str, fields: &Fields) -> Result<(), DbError> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(key);
        for (f, v) in fields {
            cmd.arg(f).arg(v);
        }
        let mut conn = self.conn();
        let _: i64 = bounded("HSET", CALL_TIMEOUT, async move { cmd.query_async(&mut conn).await }).await?;
        Ok(())
    }

    /// HGETALL of many keys, pipelined; one result per key, in order.
    pub async fn hgetall_many(&self, keys: &[String]) -> Result<Vec<Result<Fields, DbError>>, DbError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("HGETALL").arg(key);
            }
            let mut conn = self.conn();
            let values: Vec<Value> =
                bounded("HGETALL", Duration::from_secs(30), async move { pipe.query_async(&mut conn).await }).await?;
            out.extend(chunk.iter().zip(values.iter()).map(|(key, value)| fields_from_value(key, value)));
        }
        Ok(out)
    }

    /// One HSET per entry, pipelined 1000 deep: plain Redis, no protocol (the benchmark's
    /// ceiling, and bulk loads of CONFIG_DB).
    pub async fn hset_many(&self, entries: &[(String, Fields)]) -> Result<(), DbError> {
        for chunk in entries.chunks(1000) {
            let mut pipe = redis::pipe();
            for (key, fields) in chunk {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(key);
                for (f, v) in fields {
                    cmd.arg(f).arg(v);
                }
                pipe.add_command(cmd).ignore();
            }
            let mut conn = self.conn();
            let _: () =
                bounded("HSET", Duration::from_secs(30), async move { pipe.query_async(&mut conn).await }).await?;
        }
        Ok(())
    }

    /// EXISTS of many keys, pipelined.
    pub async fn exists_many(&self, keys: &[String]) -> Result<Vec<bool>, DbError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("EXISTS").arg(key);
            }
            let mut conn = self.conn();
            let values: Vec<bool> =
                bounded("EXISTS", Duration::from_secs(30), async move { pipe.query_async(&mut conn).await }).await?;
            out.extend(values);
        }
        Ok(out)
    }

    pub async fn hdel(&self, key: &str, fields: &[&str]) -> Result<(), DbError> {
        let mut conn = self.conn();
        let _: i64 = bounded("HDEL", CALL_TIMEOUT, async move { conn.hdel(key, fields).await }).await?;
        Ok(())
    }

    pub async fn del(&self, keys: &[String]) -> Result<(), DbError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let _: i64 = bounded("DEL", CALL_TIMEOUT, async move { conn.del(keys).await }).await?;
        Ok(())
    }

    pub async fn exists(&self, key: &str) -> Result<bool, DbError> {
        let mut conn = self.conn();
        bounded("EXISTS", CALL_TIMEOUT, async move { conn.exists(key).await }).await
    }

    /// KEYS; for operators and start-up loads, never on a hot path.
    pub async fn keys(&self, pattern: &str) -> Result<Vec<String>, DbError> {
        let mut conn = self.conn();
        let keys: Vec<Vec<u8>> =
            bounded("KEYS", Duration::from_secs(10), async move { conn.keys(pattern).await }).await?;
        Ok(keys.into_iter().filter_map(|k| String::from_utf8(k).ok()).collect())
    }

    pub async fn flushdb(&self) -> Result<(), DbError> {
        let mut conn = self.conn();
        let _: String =
            bounded(
                "FLUSHDB",
                Duration::from_secs(10),
                async move { redis::cmd("FLUSHDB").query_async(&mut conn).await },
            )
            .await?;
        Ok(())
    }

    /// Deletes every key matching `pattern` (SCAN, then DEL in batches).
    pub async fn delete_matching(&self, pattern: &str) -> Result<usize, DbError> {
        let keys = self.keys(pattern).await?;
        for chunk in keys.chunks(1000) {
            self.del(chunk).await?;
        }
        Ok(keys.len())
    }

    pub fn table(&self, name: &str) -> Table {
        Table { db: self.clone(), name: name.to_owned() }
    }
}

/// A hash reply as fields; the key names the offending entry in errors.
pub(crate) fn fields_from_value(key: &str, value: &Value) -> Result<Fields, DbError> {
    let items: &[Value] = match value {
        Value::Array(items) => items,
        Value::Map(pairs) => {
            let mut out = Vec::with_capacity(pairs.len());
            for (f, v) in pairs {
                out.push((text(key, f)?, text(key, v)?));
            }
            return Ok(out);
        }
        Value::Nil => return Ok(Vec::new()),
        other => return Err(DbError::Malformed { key: key.to_owned(), message: format!("not a hash: {other:?}") }),
    };
    if items.len() % 2 != 0 {
        return Err(DbError::Malformed { key: key.to_owned(), message: "odd number of field/value items".into() });
    }
    items.chunks(2).map(|pair| Ok((text(key, &pair[0])?, text(key, &pair[1])?))).collect()
}

/// Like [`fields_from_value`], taking the reply apart instead of copying it.
pub(crate) fn fields_from_owned(key: &str, value: Value) -> Result<Fields, DbError> {
    let items = match value {
        Value::Array(items) => items,
        Value::Nil => return Ok(Vec::new()),
        other => return fields_from_value(key, &other),
    };
    if items.len() % 2 != 0 {
        return Err(DbError::Malformed { key: key.to_owned(), message: "odd number of field/value items".into() });
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut iter = items.into_iter();
    while let (Some(f), Some(v)) = (iter.next(), iter.next()) {
        out.push((text_owned(key, f)?, text_owned(key, v)?));
    }
    Ok(out)
}

/// Like [`text`], taking the string instead of copying it.
pub(crate) fn text_owned(key: &str, value: Value) -> Result<String, DbError> {
    match value {
        Value::BulkString(bytes) => {
            if bytes.len() > MAX_VALUE_LEN {
                return Err(DbError::Malformed {
                    key: key.to_owned(),
                    message: format!("a value of {} bytes exceeds {MAX_VALUE_LEN}", bytes.len()),
                });
            }
            String::from_utf8(bytes)
                .map_err(|_| DbError::Malformed { key: key.to_owned(), message: "a value is not UTF-8".into() })
        }
        other => text(key, &other),
    }
}

/// A bulk string as text, refusing non-UTF-8 and oversized values.
pub(crate) fn text(key: &str, value: &Value) -> Result<String, DbError> {
    let bytes: &[u8] = match value {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.as_bytes(),
        Value::Int(i) => return Ok(i.to_string()),
        other => return Err(DbError::Malformed { key: key.to_owned(), message: format!("unexpected {other:?}") }),
    };
    if bytes.len() > MAX_VALUE_LEN {
        return Err(DbError::Malformed {
            key: key.to_owned(),
            message: format!("a value of {} bytes exceeds {MAX_VALUE_LEN}", bytes.len()),
        });
    }
    String::from_utf8(bytes.to_vec())
        .map_err(|_| DbError::Malformed { key: key.to_owned(), message: "a value is not UTF-8".into() })
}

/// swss-common's `Table`: hashes named `TABLE<sep>key`.
#[derive(Debug, Clone)]
pub struct Table {
    db: Db,
    name: String,
}

impl Table {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn get(&self, key: &str) -> Result<Option<Fields>, DbError> {
        let fields = self.db.hgetall(&self.db.key(&self.name, key)).await?;
        Ok((!fields.is_empty()).then_some(fields))
    }

    pub async fn hgetall(&self, key: &str) -> Result<Fields, DbError> {
        self.db.hgetall(&self.db.key(&self.name, key)).await
    }

    /// One multi-field HSET; an entry without fields is written as `NULL=NULL`.
    pub async fn set(&self, key: &str, fields: &Fields) -> Result<(), DbError> {
        let null = vec![("NULL".to_owned(), "NULL".to_owned())];
        self.db.hset(&self.db.key(&self.name, key), if fields.is_empty() { &null } else { fields }).await
    }

    pub async fn del(&self, key: &str) -> Result<(), DbError> {
        self.db.del(&[self.db.key(&self.name, key)]).await
    }

    /// The keys of the table, without the table prefix.
    pub async fn keys(&self) -> Result<Vec<String>, DbError> {
        let prefix = format!("{}{}", self.name, self.db.separator());
        let mut keys: Vec<String> = self
            .db
            .keys(&format!("{}*", glob_escape(&prefix)))
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        keys.sort();
        Ok(keys)
    }
}

/// Escapes Redis glob characters.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A SONiC root-relative path for a socket named in a config.
pub fn socket_under(root: &Path, socket: &Path) -> PathBuf {
    root.join(socket.strip_prefix("/").unwrap_or(socket))
}
