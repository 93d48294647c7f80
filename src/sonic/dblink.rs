//! The daemon's link to the switch's databases.
//!
//! Once the database service is ready it reads `database_config.json` (as every SONiC program
//! does) and initialises CONFIG_DB if needed: on a cold start it loads `init_cfg.json` and
//! `config_db.json`, on a warm or fast boot it keeps the restored content; then it sets
//! `CONFIG_DB_INITIALIZED=1`. It follows what the supervisor decides on (FEATURE, APPL_DB
//! `PORT_TABLE:PortInitDone`, STATE_DB's warm and fast restart tables) and carries out the
//! database work the supervisor asks for (STATE_DB reports, a failure group's cold-start
//! flush, config reload). When the database goes away it waits for it and starts over.
//!
//! It decides nothing: every decision is the supervisor's, which gets [`Event`]s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::configdb::{self, ConfigContent, ConfigDbError};
use super::feature::FeatureReport;
use crate::db::port::{Databases, Feed, Opened, Tables};
use crate::db::{DbError, Fields, Op};
use crate::supervisor::{BootType, DatabaseReadiness, DbRequest, Event, Failure, Handle, WarmFlags};

/// Why the link could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Config(#[from] ConfigDbError),
}

impl From<LinkError> for Failure {
    fn from(e: LinkError) -> Self {
        Failure::of(&e)
    }
}

/// Where the link finds `init_cfg.json` and `config_db.json`.
fn etc_sonic(sonic_root: &Path, file: &str) -> PathBuf {
    sonic_root.join("etc/sonic").join(file)
}

/// `init_cfg.json` then `extra` (or `config_db.json`), merged; refuses a malformed file.
fn config_files(sonic_root: &Path, extra: Option<ConfigContent>) -> Result<ConfigContent, ConfigDbError> {
    let init = configdb::load_if_present(&etc_sonic(sonic_root, "init_cfg.json"))?.unwrap_or_default();
    let config = match extra {
        Some(c) => c,
        None => configdb::load_if_present(&etc_sonic(sonic_root, "config_db.json"))?.unwrap_or_default(),
    };
    Ok(configdb::merge(init, config))
}

/// One table entry, swss-common's `Table::set`: an entry without fields is `NULL=NULL`.
async fn set_entry<T: Tables>(db: &T, table: &str, key: &str, fields: &Fields) -> Result<(), DbError> {
    let null = vec![("NULL".to_owned(), "NULL".to_owned())];
    db.hset(&db.key(table, key), if fields.is_empty() { &null } else { fields }).await
}

async fn write_config<T: Tables>(config_db: &T, content: &ConfigContent) -> Result<usize, DbError> {
    let entries: Vec<(String, Fields)> = content
        .iter()
        .flat_map(|(table, keys)| keys.iter().map(move |(key, fields)| (config_db.key(table, key), fields.clone())))
        .collect();
    config_db.hset_many(&entries).await?;
    Ok(entries.len())
}

/// Loads CONFIG_DB when it was not initialised (a fresh database), as SONiC's database
/// postStart does; on a warm or fast boot the restored content is kept.
async fn initialise_config<T: Tables>(sonic_root: &Path, conns: &Opened<T>, boot: BootType) -> Result<(), LinkError> {
    let initialised = conns.config_db.get("CONFIG_DB_INITIALIZED").await?;
    if initialised.as_deref() == Some("1") {
        return Ok(());
    }
    conns.config_db.set("CONFIG_DB_INITIALIZED", "0").await?;
    if boot == BootType::Cold {
        let content = config_files(sonic_root, None)?;
        let n = write_config(&conns.config_db, &content).await?;
        tracing::info!(entries = n, "CONFIG_DB loaded from init_cfg.json and config_db.json");
    } else {
        tracing::info!(boot = boot.as_str(), "CONFIG_DB kept from the restored dump");
    }
    Ok(conns.config_db.set("CONFIG_DB_INITIALIZED", "1").await?)
}

/// The tables the link follows for the supervisor.
struct Follows<F> {
    features: F,
    kube_master: F,
    ports: F,
    warm_enable: F,
    fast_enable: F,
    warm_states: F,
}

#[derive(Default)]
struct Mirror {
    warm_enable: BTreeMap<String, bool>,
    fast: bool,
    states: BTreeMap<String, String>,
}

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.iter().find(|(f, _)| f == name).map(|(_, v)| v.as_str())
}

impl Mirror {
    fn flags(&self) -> WarmFlags {
        WarmFlags { warm: self.warm_enable.clone(), fast: self.fast, states: self.states.clone() }
    }

    /// Applies a change of one of the warm-restart tables; whether it changed anything.
    fn apply(&mut self, table: &str, op: Op) -> bool {
        match (table, op) {
            ("warm", Op::Set { key, fields }) => {
                let enabled = field(&fields, "enable") == Some("true");
                self.warm_enable.insert(key, enabled) != Some(enabled)
            }
            ("warm", Op::Del { key }) => self.warm_enable.remove(&key).is_some(),
            ("fast", Op::Set { key, fields }) if key == "system" => {
                let before = self.fast;
                self.fast = field(&fields, "enable") == Some("true");
                before != self.fast
            }
            ("fast", Op::Del { key }) if key == "system" => std::mem::replace(&mut self.fast, false),
            ("states", Op::Set { key, fields }) => {
                let state = field(&fields, "state").unwrap_or_default().to_owned();
                self.states.insert(key, state.clone()) != Some(state)
            }
            ("states", Op::Del { key }) => self.states.remove(&key).is_some(),
            _ => false,
        }
    }
}

async fn subscribe<T: Tables>(conns: &Opened<T>) -> Result<Follows<T::Feed>, DbError> {
    // Concurrently: every service but the database waits for these at boot.
    let (features, kube_master, ports, warm_enable, fast_enable, warm_states) = tokio::try_join!(
        conns.config_db.follow("FEATURE"),
        conns.config_db.follow(crate::k8s::master::TABLE),
        conns.appl_db.follow("PORT_TABLE"),
        conns.state_db.follow("WARM_RESTART_ENABLE_TABLE"),
        conns.state_db.follow("FAST_RESTART_ENABLE_TABLE"),
        conns.state_db.follow("WARM_RESTART_TABLE"),
    )?;
    Ok(Follows { features, kube_master, ports, warm_enable, fast_enable, warm_states })
}

/// The FEATURE table as it is now.
async fn read_features<T: Tables>(config_db: &T) -> Result<BTreeMap<String, Fields>, DbError> {
    let keys = config_db.table_keys("FEATURE").await?;
    let full: Vec<String> = keys.iter().map(|k| config_db.key("FEATURE", k)).collect();
    let mut out = BTreeMap::new();
    for (key, fields) in keys.into_iter().zip(config_db.hgetall_many(&full).await?) {
        if let Ok(fields) = fields {
            if !fields.is_empty() {
                out.insert(key, fields);
            }
        }
    }
    Ok(out)
}

/// A failure group's cold start: flush its databases and STATE_DB tables, all at once (the
/// group's start waits for this, and each step is a round trip).
async fn cold_start<D: Databases>(
    dbs: &D,
    conns: &Opened<D::Tables>,
    flush: &[String],
    delete_state: &[String],
) -> Result<(), DbError> {
    let deletes = delete_state.iter().map(|pattern| conns.state_db.delete_matching(pattern));
    let (flushed, deletes) =
        futures_util::future::join(dbs.flush(flush), futures_util::future::join_all(deletes)).await;
    flushed?;
    deletes.into_iter().collect::<Result<Vec<_>, _>>()?;
    tracing::info!(databases = ?flush, state_tables = delete_state.len(), "cold start: databases cleared");
    Ok(())
}

/// An operator's FEATURE change, completed with a state when the entry has none.
async fn write_feature<T: Tables>(
    conns: &Opened<T>,
    service: &str,
    fields: &Fields,
    state_if_missing: &str,
) -> Result<(), DbError> {
    let key = conns.config_db.key("FEATURE", service);
    let mut fields = fields.clone();
    let has_state = fields.iter().any(|(f, _)| f == "state");
    if !has_state && conns.config_db.hget(&key, "state").await?.is_none() {
        fields.push(("state".to_owned(), state_if_missing.to_owned()));
    }
    conns.config_db.hset(&key, &fields).await
}

/// The link's fixed inputs.
/// What the link works on: the databases, `/etc/sonic`, and where it tells the Kubernetes
/// task of CONFIG_DB's `KUBERNETES_MASTER|SERVER` (the fields, `None` without an entry).
#[derive(Debug)]
pub struct Link<D> {
    pub dbs: Arc<D>,
    pub sonic_root: PathBuf,
    pub kube_master: watch::Sender<Option<Fields>>,
}

async fn handle_message<D: Databases>(link: &Link<D>, conns: &Opened<D::Tables>, handle: &Handle, message: &DbRequest) {
    match message {
        DbRequest::WriteFeature { service, fields, state_if_missing } => {
            let result = write_feature(conns, service.as_str(), fields, state_if_missing).await;
            if let Err(e) = &result {
                tracing::warn!(service = %service, error = %e, "cannot write CONFIG_DB FEATURE");
            }
            handle
                .send(Event::FeatureWritten { service: service.clone(), result: result.map_err(|e| Failure::of(&e)) });
        }
        DbRequest::Feature(report) => {
            if let Err(e) = set_entry(&conns.state_db, "FEATURE", &report.name, &report.fields()).await {
                tracing::warn!(service = %report.name, error = %e, "cannot write STATE_DB FEATURE");
            }
        }
        DbRequest::System { status, reason } => {
            let fields = vec![("Status".to_owned(), status.clone()), ("reason".to_owned(), reason.clone())];
            if let Err(e) = set_entry(&conns.state_db, "SYSTEM_READY", "SYSTEM_STATE", &fields).await {
                tracing::warn!(error = %e, "cannot write STATE_DB SYSTEM_READY");
            }
        }
        DbRequest::ColdStart { group, flush, delete_state } => {
            let result = cold_start(&*link.dbs, conns, flush, delete_state).await.map_err(|e| Failure::of(&e));
            handle.send(Event::ColdStartDone { group: group.clone(), result });
        }
        DbRequest::Warm { service, enable } => {
            let (db, table) = (&conns.state_db, "WARM_RESTART_ENABLE_TABLE");
            let result = match enable {
                Some(enable) => set_entry(db, table, service, &vec![("enable".to_owned(), enable.to_string())]).await,
                None => db.del(&[db.key(table, service)]).await,
            };
            if let Err(e) = result {
                tracing::warn!(service = %service, error = %e, "cannot write STATE_DB WARM_RESTART_ENABLE_TABLE");
            }
        }
        DbRequest::Upgrade { .. } | DbRequest::OsImage { .. } | DbRequest::KubeMaster { .. } => {
            if let Some((table, key, fields)) = state_entry(message) {
                if let Err(e) = set_entry(&conns.state_db, table, key, fields).await {
                    tracing::warn!(key = %key, error = %e, "cannot write STATE_DB {table}");
                }
            }
        }
        DbRequest::Reload { config } => {
            let result = reload(link, conns, config.clone()).await;
            if result.is_ok() {
                if let Ok(features) = read_features(&conns.config_db).await {
                    handle.send(Event::FeaturesLoaded(features));
                }
            }
            handle.send(Event::ConfigReloaded(result.map_err(Failure::from)));
        }
    }
}

async fn reload<D: Databases>(
    link: &Link<D>,
    conns: &Opened<D::Tables>,
    config: ConfigContent,
) -> Result<(), LinkError> {
    let content = config_files(&link.sonic_root, Some(config))?;
    conns.config_db.flushdb().await?;
    conns.config_db.set("CONFIG_DB_INITIALIZED", "0").await?;
    let n = write_config(&conns.config_db, &content).await?;
    conns.config_db.set("CONFIG_DB_INITIALIZED", "1").await?;
    tracing::info!(entries = n, "CONFIG_DB reloaded");
    Ok(())
}

/// The STATE_DB entries that are reports of the supervisor's: table, key, fields.
fn state_entry(message: &DbRequest) -> Option<(&'static str, &str, &Fields)> {
    match message {
        DbRequest::Upgrade { service, fields } => Some(("SERVICE_UPGRADE_TABLE", service, fields)),
        DbRequest::KubeMaster { fields } => Some((crate::k8s::master::TABLE, crate::k8s::master::KEY, fields)),
        DbRequest::OsImage { image, fields } => Some(("OS_IMAGE_TABLE", image, fields)),
        _ => None,
    }
}

/// Reports kept while the database is away, rewritten on every connect.
#[derive(Default)]
struct Latest {
    features: BTreeMap<String, FeatureReport>,
    system: Option<(String, String)>,
    /// Other reports, by table and key.
    entries: BTreeMap<(&'static str, String), DbRequest>,
}

impl Latest {
    fn keep(&mut self, message: &DbRequest) {
        match message {
            DbRequest::Feature(report) => {
                self.features.insert(report.name.clone(), report.clone());
            }
            DbRequest::System { status, reason } => self.system = Some((status.clone(), reason.clone())),
            other => {
                if let Some((table, key, _)) = state_entry(other) {
                    self.entries.insert((table, key.to_owned()), other.clone());
                }
            }
        }
    }
}

/// The `SERVER` entry a change of `KUBERNETES_MASTER` leaves (`Some(None)`: deleted);
/// `None` for another key.
fn kube_master_entry(op: Op) -> Option<Option<Fields>> {
    match op {
        Op::Set { key, fields } if key == crate::k8s::master::KEY => Some(Some(fields)),
        Op::Del { key } if key == crate::k8s::master::KEY => Some(None),
        _ => None,
    }
}

/// Tells the Kubernetes task of `entry` if it is news.
fn publish_kube_master(master: &watch::Sender<Option<Fields>>, entry: Option<Fields>) {
    master.send_if_modified(|current| {
        let changed = *current != entry;
        *current = entry;
        changed
    });
}

/// Runs the link until shutdown.
pub async fn run<D: Databases>(
    link: Link<D>,
    handle: Handle,
    mut messages: mpsc::UnboundedReceiver<DbRequest>,
    mut database_ready: watch::Receiver<DatabaseReadiness>,
    boot: BootType,
    shutdown: CancellationToken,
) {
    let mut latest = Latest::default();
    // Requests that need the database, kept until it is back.
    let mut waiting: Vec<DbRequest> = Vec::new();
    let mut first_connect = true;
    loop {
        while !database_ready.borrow_and_update().is_ready() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = database_ready.changed() => if changed.is_err() { return },
                Some(message) = messages.recv() => {
                    latest.keep(&message);
                    match message {
                        DbRequest::ColdStart { .. } | DbRequest::Reload { .. } | DbRequest::Warm { .. } => waiting.push(message),
                        // An operator's write cannot wait for a database that may not come back.
                        DbRequest::WriteFeature { service, .. } => {
                            let result = Err(Failure("the database is not running; see `soniclet status database`".to_owned()));
                            handle.send(Event::FeatureWritten { service, result });
                        }
                        _ => {}
                    }
                }
            }
        }
        // The episode these connections belong to: any other value means the database went
        // away since, even if it is ready again by the time this link looks.
        let episode = *database_ready.borrow();
        let conns = match link.dbs.open().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "database not reachable yet");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        // A database that comes back after a crash is empty: whatever the boot was, load.
        let boot_now = if first_connect { boot } else { BootType::Cold };
        if let Err(e) = initialise_config(&link.sonic_root, &conns, boot_now).await {
            tracing::error!(error = %e, "cannot initialise CONFIG_DB; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        first_connect = false;
        let mut follows = match subscribe(&conns).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to the switch's databases; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        link.dbs.connected(true);
        // Everything a fresh subscriber loaded, then the gate opens with FEATURE.
        let mut mirror = Mirror::default();
        for (table, sub) in [
            ("warm", &mut follows.warm_enable),
            ("fast", &mut follows.fast_enable),
            ("states", &mut follows.warm_states),
        ] {
            while let Some(op) = sub.try_next() {
                mirror.apply(table, op);
            }
        }
        handle.send(Event::WarmFlags(mirror.flags()));
        let mut ports_ready = false;
        while let Some(op) = follows.ports.try_next() {
            if op.key() == "PortInitDone" {
                ports_ready = matches!(op, Op::Set { .. });
            }
        }
        handle.send(Event::PortsReady(ports_ready));
        let mut features = BTreeMap::new();
        while let Some(op) = follows.features.try_next() {
            if let Op::Set { key, fields } = op {
                features.insert(key, fields);
            }
        }
        handle.send(Event::FeaturesLoaded(features));
        // From what this connection loaded alone: an entry gone with a database restart is gone.
        let mut master = None;
        while let Some(op) = follows.kube_master.try_next() {
            master = kube_master_entry(op).unwrap_or(master);
        }
        publish_kube_master(&link.kube_master, master);
        for report in latest.features.values() {
            handle_message(&link, &conns, &handle, &DbRequest::Feature(report.clone())).await;
        }
        if let Some((status, reason)) = latest.system.clone() {
            handle_message(&link, &conns, &handle, &DbRequest::System { status, reason }).await;
        }
        for report in latest.entries.values() {
            handle_message(&link, &conns, &handle, report).await;
        }
        for message in std::mem::take(&mut waiting) {
            handle_message(&link, &conns, &handle, &message).await;
        }
        tracing::info!("connected to the switch's databases");

        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                op = follows.features.next() => match op {
                    Some(Op::Set { key, fields }) => { handle.send(Event::FeatureChanged { name: key, fields: Some(fields) }); }
                    Some(Op::Del { key }) => { handle.send(Event::FeatureChanged { name: key, fields: None }); }
                    None => break,
                },
                op = follows.kube_master.next() => match op {
                    Some(op) => if let Some(entry) = kube_master_entry(op) { publish_kube_master(&link.kube_master, entry) },
                    None => break,
                },
                op = follows.ports.next() => match op {
                    Some(op) if op.key() == "PortInitDone" => { handle.send(Event::PortsReady(matches!(op, Op::Set { .. }))); }
                    Some(_) => {}
                    None => break,
                },
                op = follows.warm_enable.next() => match op {
                    Some(op) => if mirror.apply("warm", op) { handle.send(Event::WarmFlags(mirror.flags())); },
                    None => break,
                },
                op = follows.fast_enable.next() => match op {
                    Some(op) => if mirror.apply("fast", op) { handle.send(Event::WarmFlags(mirror.flags())); },
                    None => break,
                },
                op = follows.warm_states.next() => match op {
                    Some(op) => if mirror.apply("states", op) { handle.send(Event::WarmFlags(mirror.flags())); },
                    None => break,
                },
                Some(message) = messages.recv() => {
                    latest.keep(&message);
                    handle_message(&link, &conns, &handle, &message).await;
                }
                changed = database_ready.changed() => {
                    if changed.is_err() { return }
                    if *database_ready.borrow() != episode { break }
                }
            }
        }
        link.dbs.connected(false);
        tracing::info!("lost the switch's databases; waiting for the database service");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::memory::MemoryDatabases;
    use crate::supervisor::driver::HandleProbe;

    async fn features_loaded(probe: &mut HandleProbe) {
        let wait = async {
            while let Some(event) = probe.next_event().await {
                if matches!(event, Event::FeaturesLoaded(_)) {
                    return;
                }
            }
            panic!("the link stopped");
        };
        tokio::time::timeout(Duration::from_secs(5), wait).await.expect("the link never loaded FEATURE");
    }

    /// The supervisor's readiness is a watch: a crash and a restart between two of the link's
    /// looks leave only the last value. The link must still see a new database, load CONFIG_DB
    /// into it and send FEATURE again, or every service waits for CONFIG_DB forever.
    #[tokio::test]
    async fn a_database_restart_between_two_looks_is_reconnected_and_loaded() {
        let sonic = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(sonic.path().join("etc/sonic")).unwrap();
        std::fs::write(sonic.path().join("etc/sonic/config_db.json"), r#"{"FEATURE": {"swss": {"state": "enabled"}}}"#)
            .unwrap();
        let dbs = Arc::new(MemoryDatabases::new());
        let (handle, mut probe) = HandleProbe::new();
        let (_requests, messages) = mpsc::unbounded_channel();
        let (ready, ready_rx) = watch::channel(DatabaseReadiness::Down);
        let shutdown = CancellationToken::new();
        let (kube_master, _) = watch::channel(None);
        let link = Link { dbs: dbs.clone(), sonic_root: sonic.path().to_owned(), kube_master };
        let link = tokio::spawn(run(link, handle, messages, ready_rx, BootType::Cold, shutdown.clone()));
        ready.send_replace(DatabaseReadiness::Ready(1));
        features_loaded(&mut probe).await;
        let initialised = || dbs.tables("CONFIG_DB");
        assert_eq!(initialised().get("CONFIG_DB_INITIALIZED").await.unwrap().as_deref(), Some("1"));

        // The database crashes and comes back empty before the link runs again.
        initialised().flushdb().await.unwrap();
        ready.send_replace(DatabaseReadiness::Down);
        ready.send_replace(DatabaseReadiness::Ready(2));
        features_loaded(&mut probe).await;
        assert_eq!(initialised().get("CONFIG_DB_INITIALIZED").await.unwrap().as_deref(), Some("1"));
        assert!(!dbs.hgetall("CONFIG_DB", "FEATURE|swss").is_empty(), "CONFIG_DB was not loaded again");
        shutdown.cancel();
        link.await.unwrap();
    }
}
