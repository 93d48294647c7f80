//! The virtual ASIC's three processes, each a loop over Redis (and the kernel):
//! `soniclet vasic orch`, `soniclet vasic syncd` and `soniclet vasic portsyncd`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::kernel::{Kernel, LinkState};
use super::orch::{merge_fields, Note, Orch, Outcome, SaiKind, SaiOp};
use super::sai::{self, ObjectType, Vid};
use super::syncd::Sai;
use super::VasicError;
use crate::db::consumer_state::ConsumerStateTable;
use crate::db::op_queue::{ConsumerTable, ProducerTable};
use crate::db::producer_state::ProducerStateTable;
use crate::db::subscriber::SubscriberStateTable;
use crate::db::{Db, Fields, Op};

/// The APPL_DB tables orchagent's part of the virtual ASIC consumes, in its order.
pub const ORCH_TABLES: &[&str] = &[
    "PORT_TABLE",
    "LAG_TABLE",
    "LAG_MEMBER_TABLE",
    "VRF_TABLE",
    "VLAN_TABLE",
    "VLAN_MEMBER_TABLE",
    "INTF_TABLE",
    "NEIGH_TABLE",
    "ROUTE_TABLE",
];

/// orchagent's pop batch (`-b`).
const POP_BATCH: usize = 128;
/// How long orch waits for syncd's answer to one call before giving up on syncd.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// The databases each role opens.
#[derive(Debug)]
pub struct Dbs {
    pub appl: Db,
    pub asic: Db,
    pub counters: Db,
    pub state: Db,
    pub config: Db,
}

fn encode_bulk_attrs(attrs: &Fields) -> String {
    attrs.iter().map(|(f, v)| format!("{f}={v}")).collect::<Vec<_>>().join("|")
}

/// sairedis in sync mode: each call waits for syncd's GETRESPONSE.
struct SaiRedis {
    requests: ProducerTable,
    responses: ConsumerTable,
}

impl SaiRedis {
    async fn new(asic: &Db) -> Result<Self, VasicError> {
        Ok(Self {
            requests: ProducerTable::new(asic, "ASIC_STATE"),
            responses: ConsumerTable::new(asic, "GETRESPONSE", 1, false).await?,
        })
    }

    async fn call(&self, key: String, fields: Fields, op: &str) -> Result<(String, Fields), VasicError> {
        self.requests.send(&[(key.clone(), fields, op.to_owned())]).await?;
        let deadline = tokio::time::Instant::now() + RESPONSE_TIMEOUT;
        loop {
            let popped = tokio::time::timeout_at(deadline, self.responses.next())
                .await
                .map_err(|_| VasicError::NoResponse { key: key.clone(), secs: RESPONSE_TIMEOUT.as_secs() })??;
            if let Some(entry) = popped.into_iter().next() {
                return Ok((entry.key, entry.fields));
            }
        }
    }

    /// Sends `ops` in order; consecutive route entry creates and removes go as one bulk call,
    /// as routeorch's bulker does. Returns the refused operations with their status.
    async fn send(&self, ops: Vec<SaiOp>) -> Result<Vec<(SaiOp, String)>, VasicError> {
        let mut refused = Vec::new();
        let mut index = 0;
        while index < ops.len() {
            let op = &ops[index];
            let bulkable = op.object_type == ObjectType::RouteEntry && op.kind != SaiKind::Set;
            let run = if bulkable {
                ops[index..].iter().take_while(|o| o.object_type == ObjectType::RouteEntry && o.kind == op.kind).count()
            } else {
                1
            };
            if run > 1 {
                let batch = &ops[index..index + run];
                let (name, verb) = match op.kind {
                    SaiKind::Create => ("Sbulkcreate", true),
                    _ => ("Sbulkremove", false),
                };
                let fields: Fields = batch
                    .iter()
                    .map(|o| (o.id.clone(), if verb { encode_bulk_attrs(&o.attrs) } else { String::new() }))
                    .collect();
                let key = format!("{}:{}", ObjectType::RouteEntry.name(), batch.len());
                let (_, statuses) = self.call(key, fields, name).await?;
                for (o, (status, _)) in batch.iter().zip(statuses.iter()) {
                    if status != "SAI_STATUS_SUCCESS" {
                        refused.push((o.clone(), status.clone()));
                    }
                }
            } else {
                let prefix = match op.kind {
                    SaiKind::Create => "Screate",
                    SaiKind::Set => "Sset",
                    SaiKind::Remove => "Dremove",
                };
                let (status, _) = self.call(op.key(), op.attrs.clone(), prefix).await?;
                if status != "SAI_STATUS_SUCCESS" {
                    refused.push((op.clone(), status));
                }
            }
            index += run;
        }
        Ok(refused)
    }
}

/// `soniclet vasic orch`: orchagent's part. Consumes APPL_DB, drives syncd, retries what waits.
pub async fn orch(dbs: Dbs, shutdown: CancellationToken) -> Result<(), VasicError> {
    let mac = dbs.config.hget("DEVICE_METADATA|localhost", "mac").await?.unwrap_or_else(|| "52:54:00:12:34:56".into());
    let sairedis = SaiRedis::new(&dbs.asic).await?;
    let mut orch = Orch::new(&mac);
    for (op, status) in sairedis.send(orch.start()).await? {
        tracing::error!(key = %op.key(), status = %status, "syncd refused the switch");
    }
    tracing::info!(mac = %mac, "switch created; consuming APPL_DB");

    let (tx, mut rx) = mpsc::channel::<(&'static str, Vec<Op>)>(64);
    for table in ORCH_TABLES {
        let consumer = ConsumerStateTable::new(&dbs.appl, table, POP_BATCH).await?;
        let tx = tx.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let popped = tokio::select! {
                    () = token.cancelled() => return,
                    popped = consumer.next() => popped,
                };
                match popped {
                    Ok(ops) if ops.is_empty() => {}
                    Ok(ops) => {
                        if tx.send((table, ops)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(table, error = %e, "pop failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
    }
    drop(tx);

    // Entries waiting for a dependency, by table and key (a newer entry replaces an older).
    let mut waiting: BTreeMap<(usize, String), (&'static str, Op)> = BTreeMap::new();
    loop {
        let (table, ops) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = rx.recv() => match next {
                Some(next) => next,
                None => return Ok(()),
            },
        };
        let order = ORCH_TABLES.iter().position(|t| *t == table).unwrap_or(0);
        let mut out = Vec::new();
        let mut progressed = false;
        for op in ops {
            // Like orchagent's Consumer: a SET over a waiting SET adds its fields to it.
            let op = match (waiting.remove(&(order, op.key().to_owned())), op) {
                (Some((_, Op::Set { fields: mut older, .. })), Op::Set { key, fields }) => {
                    merge_fields(&mut older, &fields);
                    Op::Set { key, fields: older }
                }
                (_, op) => op,
            };
            match orch.apply(table, &op) {
                Outcome::Apply(sai_ops) => {
                    progressed = true;
                    out.extend(sai_ops);
                }
                Outcome::Wait(why) => {
                    tracing::debug!(table, key = %op.key(), why = %why, "waiting");
                    waiting.insert((order, op.key().to_owned()), (table, op));
                }
                Outcome::Refuse(why) => tracing::warn!(table, key = %op.key(), reason = %why, "refused entry dropped"),
            }
        }
        // What waited may go now, in table order; again while something moves.
        while progressed && !waiting.is_empty() {
            progressed = false;
            for (slot, (table, op)) in std::mem::take(&mut waiting) {
                match orch.apply(table, &op) {
                    Outcome::Apply(sai_ops) => {
                        progressed = true;
                        out.extend(sai_ops);
                    }
                    Outcome::Wait(_) => {
                        waiting.insert(slot, (table, op));
                    }
                    Outcome::Refuse(why) => {
                        tracing::warn!(table, key = %op.key(), reason = %why, "refused entry dropped")
                    }
                }
            }
        }
        for (op, status) in sairedis.send(out).await? {
            tracing::error!(key = %op.key(), status = %status, "syncd refused the operation");
            orch.refused(&op);
        }
        for note in orch.take_notes() {
            match note {
                Note::PortName { name, vid } => {
                    dbs.counters.hset("COUNTERS_PORT_NAME_MAP", &vec![(name, vid.to_string())]).await?;
                }
                Note::VrfReady { name, ready: true } => {
                    dbs.state.hset(&format!("VRF_OBJECT_TABLE|{name}"), &vec![("state".into(), "ok".into())]).await?;
                }
                Note::VrfReady { name, ready: false } => dbs.state.del(&[format!("VRF_OBJECT_TABLE|{name}")]).await?,
            }
        }
    }
}

/// A SAI real object id for a VID: the software SAI's own numbering.
fn rid(vid: Vid) -> String {
    format!("oid:0x{:x}", vid.0 | (1 << 63))
}

fn sai_op(kind: SaiKind, key: &str, attrs: Fields) -> Option<SaiOp> {
    let (object_type, id) = sai::split_key(key)?;
    Some(SaiOp { kind, object_type, id: id.to_owned(), attrs })
}

/// `soniclet vasic syncd`: syncd over the software SAI. Pops the op queue, programs the
/// kernel, writes ASIC_STATE after the kernel accepted, answers each call.
pub async fn syncd<K: Kernel>(dbs: Dbs, kernel: K, shutdown: CancellationToken) -> Result<(), VasicError> {
    let requests = ConsumerTable::new(&dbs.asic, "ASIC_STATE", POP_BATCH, false).await?;
    let responses = ProducerTable::new(&dbs.asic, "GETRESPONSE");
    let kernel = Arc::new(kernel);
    let mut sai = Sai::new();
    // Port netdevs -> port VIDs, for the notifier; it wakes when ports are added.
    let ports: Arc<Mutex<HashMap<String, Vid>>> = Arc::default();
    let ports_changed = Arc::new(Notify::new());
    tokio::spawn(port_notifier(
        dbs.asic.clone(),
        Arc::clone(&kernel),
        Arc::clone(&ports),
        Arc::clone(&ports_changed),
        shutdown.clone(),
    ));
    tracing::info!("software SAI ready; popping ASIC_STATE");
    loop {
        // Only shutdown races the pop: a pop abandoned halfway would lose its notification.
        let entries = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            entries = requests.next() => entries?,
        };
        let mut new_ports = false;
        let mut writes = AsicWrites::default();
        for entry in entries {
            new_ports |= entry.key.starts_with(ObjectType::Hostif.name());
            let (status, statuses) = match entry.op.as_str() {
                "create" | "set" | "remove" => {
                    let kind = match entry.op.as_str() {
                        "create" => SaiKind::Create,
                        "set" => SaiKind::Set,
                        _ => SaiKind::Remove,
                    };
                    let status = match sai_op(kind, &entry.key, entry.fields.clone()) {
                        Some(op) => execute(kernel.as_ref(), &mut sai, &op, &mut writes).await,
                        None => {
                            tracing::warn!(key = %entry.key, "unknown object type");
                            "SAI_STATUS_INVALID_OBJECT_TYPE".to_owned()
                        }
                    };
                    (status, Vec::new())
                }
                "bulkcreate" | "bulkremove" => {
                    let kind = if entry.op == "bulkcreate" { SaiKind::Create } else { SaiKind::Remove };
                    let type_name = entry.key.rsplit_once(':').map(|(t, _)| t).unwrap_or_default();
                    let mut statuses = Vec::with_capacity(entry.fields.len());
                    for (id, packed) in &entry.fields {
                        let attrs: Fields = packed
                            .split('|')
                            .filter(|a| !a.is_empty())
                            .filter_map(|a| a.split_once('=').map(|(f, v)| (f.to_owned(), v.to_owned())))
                            .collect();
                        let status = match sai_op(kind, &format!("{type_name}:{id}"), attrs) {
                            Some(op) => execute(kernel.as_ref(), &mut sai, &op, &mut writes).await,
                            None => "SAI_STATUS_INVALID_OBJECT_TYPE".to_owned(),
                        };
                        statuses.push((status, String::new()));
                    }
                    ("SAI_STATUS_SUCCESS".to_owned(), statuses)
                }
                // INIT_VIEW / APPLY_VIEW and queries: nothing to keep in a software SAI.
                _ => ("SAI_STATUS_SUCCESS".to_owned(), Vec::new()),
            };
            // ASIC_STATE first: an answered object is in ASIC_STATE.
            writes.flush(&dbs.asic).await?;
            responses.send(&[(status, statuses, "Sgetresponse".to_owned())]).await?;
        }
        if new_ports {
            *ports.lock().expect("ports lock") =
                sai.port_netdevs().into_iter().map(|(vid, name)| (name, vid)).collect();
            ports_changed.notify_one();
        }
    }
}

/// syncd's `port_state_change` notifications: each port netdev's oper state, once when the
/// port appears and again on every change.
async fn port_notifier<K: Kernel>(
    asic: Db,
    kernel: Arc<K>,
    ports: Arc<Mutex<HashMap<String, Vid>>>,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut links = match kernel.watch_links() {
        Ok(links) => links,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the ports' netdevs; no port state notifications");
            return;
        }
    };
    let mut announced: HashMap<String, bool> = HashMap::new();
    loop {
        let batch = tokio::select! {
            () = shutdown.cancelled() => return,
            () = changed.notified() => kernel.links().await.unwrap_or_default(),
            Some(link) = links.recv() => vec![link],
        };
        for link in batch {
            let Some(port) = ports.lock().expect("ports lock").get(&link.name).copied() else { continue };
            if announced.insert(link.name.clone(), link.oper_up) == Some(link.oper_up) {
                continue;
            }
            let state = if link.oper_up { "SAI_PORT_OPER_STATUS_UP" } else { "SAI_PORT_OPER_STATUS_DOWN" };
            let data = serde_json::json!([{ "port_id": port.to_string(), "port_state": state }]).to_string();
            let message = serde_json::json!(["port_state_change", data]).to_string();
            if let Err(e) = asic.publish("NOTIFICATIONS", &message).await {
                tracing::warn!(error = %e, "cannot publish a port state change");
            }
        }
    }
}

/// ASIC_STATE writes of one pop, sent in one pipeline before the answers go out.
#[derive(Debug, Default)]
struct AsicWrites {
    sets: Vec<(String, Fields)>,
    dels: Vec<String>,
    unmapped: Vec<Vid>,
}

impl AsicWrites {
    async fn flush(&mut self, asic: &Db) -> Result<(), VasicError> {
        if !self.sets.is_empty() {
            asic.hset_many(&std::mem::take(&mut self.sets)).await?;
        }
        if !self.dels.is_empty() {
            asic.del(&std::mem::take(&mut self.dels)).await?;
        }
        for vid in std::mem::take(&mut self.unmapped) {
            asic.hdel("VIDTORID", &[vid.to_string().as_str()]).await?;
            asic.hdel("RIDTOVID", &[rid(vid).as_str()]).await?;
        }
        Ok(())
    }
}

/// One SAI call: plan, kernel, commit, then its ASIC_STATE writes queued. Returns the status.
async fn execute<K: Kernel>(kernel: &K, sai: &mut Sai, op: &SaiOp, writes: &mut AsicWrites) -> String {
    let work = match sai.plan(op) {
        Ok(work) => work,
        Err(refusal) => {
            tracing::warn!(key = %op.key(), status = refusal.status, reason = %refusal.reason, "refused");
            return refusal.status.to_owned();
        }
    };
    for step in &work {
        if let Err(e) = kernel.apply(step).await {
            tracing::warn!(key = %op.key(), error = %e, "the kernel refused");
            return "SAI_STATUS_FAILURE".to_owned();
        }
    }
    let key = format!("ASIC_STATE:{}", op.key());
    let vid = Vid::parse(&op.id);
    match sai.commit(op) {
        Some(attrs) => {
            let attrs = if attrs.is_empty() { vec![("NULL".into(), "NULL".into())] } else { attrs };
            writes.sets.push((key, if op.kind == SaiKind::Set { op.attrs.clone() } else { attrs }));
            if let (SaiKind::Create, Some(vid)) = (op.kind, vid) {
                writes.sets.push(("VIDTORID".into(), vec![(vid.to_string(), rid(vid))]));
                writes.sets.push(("RIDTOVID".into(), vec![(rid(vid), vid.to_string())]));
            }
        }
        None => {
            writes.dels.push(key);
            writes.unmapped.extend(vid);
        }
    }
    "SAI_STATUS_SUCCESS".to_owned()
}

/// `soniclet vasic portsyncd`: CONFIG_DB `PORT` into APPL_DB `PORT_TABLE`, `PortConfigDone`,
/// `PortInitDone` once every port's netdev exists, and each netdev's state into STATE_DB
/// `PORT_TABLE|<port>` and APPL_DB `oper_status`.
pub async fn portsyncd<K: Kernel>(dbs: Dbs, kernel: K, shutdown: CancellationToken) -> Result<(), VasicError> {
    let ports_out = ProducerStateTable::new(&dbs.appl, "PORT_TABLE");
    let mut config = SubscriberStateTable::new(&dbs.config, "PORT").await?;
    let mut ports: BTreeMap<String, Fields> = BTreeMap::new();
    // The initial load: every configured port.
    while let Some(op) = config.try_next() {
        if let Op::Set { key, fields } = op {
            ports.insert(key, fields);
        }
    }
    for (name, fields) in &ports {
        ports_out.set(name, fields).await?;
    }
    ports_out.set("PortConfigDone", &vec![("count".into(), ports.len().to_string())]).await?;
    tracing::info!(ports = ports.len(), "PortConfigDone");

    let mut links = kernel.watch_links()?;
    let mut present: HashSet<String> = HashSet::new();
    let mut init_done = false;
    let mut last: BTreeMap<String, LinkState> = BTreeMap::new();
    let mut pending: Vec<LinkState> = kernel.links().await?;
    loop {
        for link in std::mem::take(&mut pending) {
            if !ports.contains_key(&link.name) || last.get(&link.name) == Some(&link) {
                continue;
            }
            present.insert(link.name.clone());
            let oper = if link.oper_up { "up" } else { "down" };
            let admin = if link.admin_up { "up" } else { "down" };
            dbs.state
                .hset(
                    &format!("PORT_TABLE|{}", link.name),
                    &vec![
                        ("state".into(), "ok".into()),
                        ("netdev_oper_status".into(), oper.into()),
                        ("admin_status".into(), admin.into()),
                        ("mtu".into(), link.mtu.to_string()),
                    ],
                )
                .await?;
            if last.get(&link.name).map(|l| l.oper_up) != Some(link.oper_up) {
                ports_out.set(&link.name, &vec![("oper_status".into(), oper.into())]).await?;
            }
            last.insert(link.name.clone(), link);
        }
        if !init_done && ports.keys().all(|p| present.contains(p)) {
            ports_out.set("PortInitDone", &vec![("lanes".into(), "0".into())]).await?;
            tracing::info!("PortInitDone: every port's netdev exists");
            init_done = true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            Some(link) = links.recv() => pending.push(link),
            Some(op) = config.next() => match op {
                // portmgrd's part: CONFIG_DB port settings reach APPL_DB.
                Op::Set { key, fields } => {
                    ports_out.set(&key, &fields).await?;
                    ports.insert(key, fields);
                }
                Op::Del { key } => {
                    ports.remove(&key);
                }
            },
        }
    }
}
