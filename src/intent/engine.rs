//! The intent engine: one task that owns soniclet's intent set.
//!
//! - **Accept:** parse, validate, persist (write, fsync, rename), then acknowledge. An
//!   accepted intent is never lost, whatever Redis does.
//! - **Reconcile:** write the difference between desired entries and what soniclet owns.
//!   After every (re)connect to the database it diffs against APPL_DB itself, so a restarted
//!   daemon or a restarted Redis gets exactly what is missing. Keys another writer owns are
//!   never written; keys soniclet owned and no longer wants are deleted. A `ROUTE_TABLE` key
//!   fpmsyncd holds (its entries carry `protocol`) is zebra's: soniclet only verifies it.
//! - **Verify:** follow ASIC_STATE (and orchagent's STATE_DB markers) through keyspace
//!   notifications, never polling, and judge each intent programmed, pending or failed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::asic::{AsicIndex, Expect, Touched};
use super::model::{self, IntentDoc};
use super::render::{owns_whole_key, render, EntryKey, Item, Rendered};
use super::{ApplyOutcome, IntentError, IntentReport, IntentStatus};
use crate::db::producer_state::ProducerStateTable;
use crate::db::subscriber::SubscriberStateTable;
use crate::db::switch::Connections;
use crate::db::{DbError, Fields, Op};
use crate::state::fsutil::atomic_write;

const STATE_FILE: &str = "intents.json";
/// How long an intent may stay out of ASIC_DB before it is reported failed.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnedEntry {
    table: String,
    key: String,
    fields: Fields,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Persisted {
    version: u32,
    doc: IntentDoc,
    owned: Vec<OwnedEntry>,
}

#[derive(Debug)]
pub(crate) enum Request {
    Apply { file: PathBuf, text: String, reply: oneshot::Sender<Result<ApplyOutcome, IntentError>> },
    Status { reply: oneshot::Sender<IntentReport> },
}

/// The API's handle on the engine.
#[derive(Debug, Clone)]
pub struct IntentHandle {
    tx: mpsc::UnboundedSender<Request>,
}

impl IntentHandle {
    pub async fn apply(&self, file: PathBuf, text: String) -> Option<Result<ApplyOutcome, IntentError>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Apply { file, text, reply }).ok()?;
        rx.await.ok()
    }

    pub async fn status(&self) -> Option<IntentReport> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Status { reply }).ok()?;
        rx.await.ok()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Pending,
    Programmed {
        latency: Option<Duration>,
    },
    /// Not in ASIC_DB in time (it may still come).
    Failed(String),
    /// Not written at all (another writer's key, routes over ZMQ): stays until a new apply.
    Refused(String),
}

#[derive(Debug, Clone)]
struct Tracked {
    state: State,
    since: SystemTime,
    /// Monotonic time the state began, or the APPL_DB write, whichever is later.
    started: Instant,
}

/// Subscriptions that feed the ASIC index while connected.
struct Watchers {
    asic: SubscriberStateTable,
    temp: SubscriberStateTable,
    vrfs: SubscriberStateTable,
}

pub struct Engine {
    path: PathBuf,
    doc: IntentDoc,
    rendered: Rendered,
    owned: BTreeMap<EntryKey, Fields>,
    tracked: HashMap<String, Tracked>,
    /// Route dest -> indices of items that expect it.
    by_dest: HashMap<String, Vec<usize>>,
    index: AsicIndex,
    temp_keys: HashSet<String>,
    conns: Option<Connections>,
    watchers: Option<Watchers>,
    /// Diff against APPL_DB itself on the next reconcile (after a (re)connect).
    full_sync: bool,
    /// Desired and owned differ.
    dirty: bool,
    sync_mode: bool,
    zmq_routes: bool,
    retry_at: Option<Instant>,
    failures: u32,
    /// APPL_DB entries written since start (reported, so a reader knows what to expect).
    writes: u64,
    /// ASIC_DB changes judged since start.
    asic_updates: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("intents", &self.rendered.items.len()).finish_non_exhaustive()
    }
}

fn same_fields(a: &Fields, b: &Fields) -> bool {
    let norm = |f: &Fields| -> BTreeMap<String, String> {
        f.iter().filter(|(k, _)| k != "NULL").map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    norm(a) == norm(b)
}

impl Engine {
    /// Loads the persisted intents of `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, IntentError> {
        let path = state_dir.join(STATE_FILE);
        let persisted: Persisted = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| IntentError::Corrupt { path: path.clone(), message: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted { version: 1, ..Default::default() },
            Err(source) => return Err(IntentError::Persist { path, source }),
        };
        let owned = persisted.owned.into_iter().map(|o| (EntryKey::new(&o.table, &o.key), o.fields)).collect();
        let mut engine = Self {
            path,
            doc: IntentDoc::default(),
            rendered: Rendered::default(),
            owned,
            tracked: HashMap::new(),
            by_dest: HashMap::new(),
            index: AsicIndex::default(),
            temp_keys: HashSet::new(),
            conns: None,
            watchers: None,
            full_sync: true,
            dirty: true,
            sync_mode: true,
            zmq_routes: false,
            retry_at: None,
            failures: 0,
            writes: 0,
            asic_updates: 0,
        };
        engine.set_doc(persisted.doc);
        Ok(engine)
    }

    fn set_doc(&mut self, doc: IntentDoc) {
        let rendered = render(&doc);
        let now = Instant::now();
        let mut tracked = HashMap::new();
        let mut by_dest: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, item) in rendered.items.iter().enumerate() {
            let previous = self.tracked.remove(&item.id);
            tracked.insert(
                item.id.clone(),
                previous.unwrap_or(Tracked { state: State::Pending, since: SystemTime::now(), started: now }),
            );
            for expect in &item.expect {
                if let Expect::Route { dest, .. } = expect {
                    by_dest.entry(dest.clone()).or_default().push(i);
                }
            }
        }
        self.doc = doc;
        self.rendered = rendered;
        self.tracked = tracked;
        self.by_dest = by_dest;
        self.dirty = true;
    }

    fn persist(&self) -> Result<(), IntentError> {
        let persisted = Persisted {
            version: 1,
            doc: self.doc.clone(),
            owned: self
                .owned
                .iter()
                .map(|(k, f)| OwnedEntry { table: k.table.clone(), key: k.key.clone(), fields: f.clone() })
                .collect(),
        };
        let bytes = serde_json::to_vec(&persisted).expect("intents serialise");
        atomic_write(&self.path, &bytes).map_err(|source| IntentError::Persist { path: self.path.clone(), source })
    }

    fn accept(&mut self, file: &Path, text: &str) -> Result<ApplyOutcome, IntentError> {
        let doc = model::parse(file, text)?;
        let previous = std::mem::replace(&mut self.doc, doc.clone());
        if let Err(e) = self.persist() {
            self.doc = previous;
            return Err(e);
        }
        self.set_doc(doc);
        Ok(ApplyOutcome {
            intents: self.rendered.items.len(),
            entries: self.rendered.entries.len(),
            database_reachable: self.conns.is_some(),
        })
    }

    fn set_state(&mut self, id: &str, state: State) {
        if let Some(t) = self.tracked.get_mut(id) {
            if t.state != state {
                t.state = state;
                t.since = SystemTime::now();
                if matches!(t.state, State::Pending) {
                    t.started = Instant::now();
                }
            }
        }
    }

    /// Judges `items` against the index.
    fn judge(&mut self, items: impl IntoIterator<Item = usize>) {
        if !self.temp_keys.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut updates = Vec::new();
        for i in items {
            let Some(item) = self.rendered.items.get(i) else { continue };
            let Some(tracked) = self.tracked.get(&item.id) else { continue };
            let done = item.expect.iter().all(|e| self.index.satisfied(e));
            let state = match (&tracked.state, done) {
                (State::Refused(_), _) => continue,
                (State::Programmed { .. }, true) => continue,
                (_, true) => State::Programmed { latency: Some(now.duration_since(tracked.started)) },
                (State::Failed(_), false) if now.duration_since(tracked.started) >= VERIFY_TIMEOUT => continue,
                (_, false) if now.duration_since(tracked.started) >= VERIFY_TIMEOUT => State::Failed(format!(
                    "not in ASIC_DB {}s after the APPL_DB write; orchagent may be waiting for a dependency or refused it (see the swss log)",
                    VERIFY_TIMEOUT.as_secs()
                )),
                (State::Pending, false) => continue,
                (_, false) => State::Pending,
            };
            updates.push((item.id.clone(), state));
        }
        for (id, state) in updates {
            self.set_state(&id, state);
        }
    }

    fn judge_all(&mut self) {
        let n = self.rendered.items.len();
        self.judge(0..n);
    }

    fn on_asic(&mut self, op: Op) {
        self.asic_updates += 1;
        let touched = match op {
            Op::Set { key, fields } => self.index.apply(&key, Some(fields)),
            Op::Del { key } => self.index.apply(&key, None),
        };
        match touched {
            Touched::Route(dest) => {
                let items = self.by_dest.get(&dest).cloned().unwrap_or_default();
                self.judge(items);
            }
            Touched::Other => {
                let others: Vec<usize> =
                    (0..self.rendered.items.len()).filter(|i| self.rendered.items[*i].kind != "route").collect();
                self.judge(others);
            }
            Touched::Nothing => {}
        }
    }

    async fn load_names(&mut self) {
        let Some(conns) = &self.conns else { return };
        let mut names = HashMap::new();
        for map in ["COUNTERS_PORT_NAME_MAP", "COUNTERS_LAG_NAME_MAP"] {
            if let Ok(fields) = conns.counters_db.hgetall(map).await {
                names.extend(fields);
            }
        }
        self.index.set_names(names);
    }

    async fn connect(&mut self, conns: Connections) -> Result<(), DbError> {
        self.index.clear();
        self.temp_keys.clear();
        let asic = SubscriberStateTable::new(&conns.asic_db, "ASIC_STATE").await?;
        let temp = SubscriberStateTable::new(&conns.asic_db, "TEMP_ASIC_STATE").await?;
        let vrfs = SubscriberStateTable::new(&conns.state_db, "VRF_OBJECT_TABLE").await?;
        self.conns = Some(conns);
        self.watchers = Some(Watchers { asic, temp, vrfs });
        self.full_sync = true;
        self.retry_at = None;
        self.load_names().await;
        self.drain_watchers();
        Ok(())
    }

    /// Applies every queued watcher event (the initial loads land here too).
    fn drain_watchers(&mut self) {
        let mut asic_ops = Vec::new();
        if let Some(w) = &mut self.watchers {
            while let Some(op) = w.asic.try_next() {
                asic_ops.push(op);
            }
            while let Some(op) = w.temp.try_next() {
                match op {
                    Op::Set { key, .. } => self.temp_keys.insert(key),
                    Op::Del { key } => self.temp_keys.remove(&key),
                };
            }
            while let Some(op) = w.vrfs.try_next() {
                match op {
                    Op::Set { key, fields } => {
                        let ok = fields.iter().any(|(f, v)| f == "state" && v == "ok");
                        self.index.set_vrf_ready(&key, ok);
                    }
                    Op::Del { key } => self.index.set_vrf_ready(&key, false),
                }
            }
        }
        let many = asic_ops.len() > 64;
        for op in asic_ops {
            if many {
                // A burst: index everything, judge once.
                let _ = match op {
                    Op::Set { key, fields } => self.index.apply(&key, Some(fields)),
                    Op::Del { key } => self.index.apply(&key, None),
                };
            } else {
                self.on_asic(op);
            }
        }
        if many {
            self.judge_all();
        }
    }

    async fn read_flags(&mut self, conns: &Connections) {
        let metadata = conns.config_db.hgetall("DEVICE_METADATA|localhost").await.unwrap_or_default();
        self.sync_mode = !metadata.iter().any(|(f, v)| f == "synchronous_mode" && v == "disable");
        let zmq = conns.config_db.hgetall("SYSTEM_DEFAULTS|swss_zmq").await.unwrap_or_default();
        self.zmq_routes = zmq.iter().any(|(f, v)| f == "status" && v == "enabled");
    }

    /// Writes what differs between desired entries and APPL_DB (or what soniclet owns).
    async fn reconcile(&mut self) -> Result<(), DbError> {
        let Some(conns) = self.conns.clone() else { return Ok(()) };
        self.read_flags(&conns).await;
        let appl = &conns.appl_db;
        let desired = self.rendered.entries.clone();
        let mut refused: BTreeMap<EntryKey, String> = BTreeMap::new();
        if self.zmq_routes {
            for key in desired.keys().filter(|k| k.table == "ROUTE_TABLE") {
                refused.insert(
                    key.clone(),
                    "orchagent reads ROUTE_TABLE over ZMQ (CONFIG_DB SYSTEM_DEFAULTS|swss_zmq status=enabled); Redis writes would be ignored".into(),
                );
            }
        }

        // What APPL_DB holds, for a full sync, or for keys soniclet does not own yet.
        let probe: Vec<EntryKey> = desired
            .keys()
            .filter(|k| !refused.contains_key(*k) && (self.full_sync || !self.owned.contains_key(*k)))
            .chain(self.owned.keys().filter(|k| self.full_sync && !desired.contains_key(*k)))
            .cloned()
            .collect();
        // An entry is in APPL_DB when published (`T:K`, written at pop time) or still staged
        // for the consumer (`_T:K`); the staged fields are the newer ones.
        let names: Vec<String> = probe
            .iter()
            .flat_map(|k| [appl.key(&k.table, &k.key), format!("_{}", appl.key(&k.table, &k.key))])
            .collect();
        let mut fetched = appl.hgetall_many(&names).await?.into_iter();
        let mut actual: HashMap<EntryKey, Fields> = HashMap::with_capacity(probe.len());
        for key in probe {
            let published = fetched.next().and_then(Result::ok).unwrap_or_default();
            let staged = fetched.next().and_then(Result::ok).unwrap_or_default();
            let mut merged = published;
            for (f, v) in staged {
                match merged.iter_mut().find(|(g, _)| *g == f) {
                    Some(slot) => slot.1 = v,
                    None => merged.push((f, v)),
                }
            }
            actual.insert(key, merged);
        }

        let mut dels: Vec<EntryKey> = Vec::new();
        let mut sets: Vec<(EntryKey, Fields, bool)> = Vec::new();
        let mut yielded: HashSet<EntryKey> = HashSet::new();
        for (key, fields) in &desired {
            if refused.contains_key(key) {
                continue;
            }
            // Between connects, what soniclet wrote is what APPL_DB holds for its keys.
            if !self.full_sync {
                if let Some(owned) = self.owned.get(key) {
                    if same_fields(owned, fields) {
                        continue;
                    }
                    let stale = owns_whole_key(key) && owned.iter().any(|(f, _)| !fields.iter().any(|(g, _)| g == f));
                    sets.push((key.clone(), fields.clone(), stale));
                    continue;
                }
            }
            let held = actual.get(key).cloned().unwrap_or_default();
            if held.is_empty() {
                sets.push((key.clone(), fields.clone(), false));
            } else if key.table == "ROUTE_TABLE" && held.iter().any(|(f, _)| f == "protocol") {
                // fpmsyncd's: every route it writes carries `protocol`, soniclet's never do.
                // zebra announces this route too (an interface's connected subnet), so it is
                // zebra's to keep and withdraw; soniclet only verifies it in ASIC_DB.
                yielded.insert(key.clone());
            } else if same_fields(&held, fields) {
                // Already there (staged or published).
            } else if !self.owned.contains_key(key) && owns_whole_key(key) {
                refused
                    .insert(key.clone(), format!("APPL_DB {key} belongs to another writer; soniclet leaves it alone"));
            } else {
                // Fields soniclet no longer wants only go away with the whole hash.
                let stale =
                    owns_whole_key(key) && held.iter().any(|(f, _)| f != "NULL" && !fields.iter().any(|(g, _)| g == f));
                sets.push((key.clone(), fields.clone(), stale));
            }
        }
        for key in self.owned.keys() {
            if !desired.contains_key(key) && owns_whole_key(key) {
                dels.push(key.clone());
            }
        }

        // Deletes first, dependents before what they depend on; then sets in dependency order.
        dels.sort();
        dels.reverse();
        let mut by_table: Vec<(String, Vec<Op>)> = Vec::new();
        let mut push = |table: &str, op: Op| match by_table.last_mut() {
            Some((t, ops)) if t == table => ops.push(op),
            _ => by_table.push((table.to_owned(), vec![op])),
        };
        for key in &dels {
            push(&key.table, Op::Del { key: key.key.clone() });
        }
        for (key, fields, stale) in &sets {
            if *stale {
                push(&key.table, Op::Del { key: key.key.clone() });
            }
            push(&key.table, Op::Set { key: key.key.clone(), fields: fields.clone() });
        }
        for (table, ops) in &by_table {
            ProducerStateTable::new(appl, table).apply(ops).await?;
            self.writes += ops.len() as u64;
        }

        // soniclet now owns what it wrote (and what already matched).
        let mut owned: BTreeMap<EntryKey, Fields> = BTreeMap::new();
        for (key, fields) in &desired {
            if !refused.contains_key(key) && !yielded.contains(key) {
                owned.insert(key.clone(), fields.clone());
            }
        }
        // Whole keys another writer owns stay theirs; ports are shared.
        self.owned = owned;
        if let Err(e) = self.persist() {
            tracing::error!(error = %e, "cannot persist owned APPL_DB keys");
        }

        let written: HashSet<&EntryKey> = sets.iter().map(|(k, _, _)| k).collect();
        let now = Instant::now();
        let items: Vec<Item> = self.rendered.items.clone();
        for item in &items {
            if let Some(reason) = item.entries.iter().find_map(|k| refused.get(k)) {
                self.set_state(&item.id, State::Refused(reason.clone()));
                if let Some(t) = self.tracked.get_mut(&item.id) {
                    t.started = now;
                }
            } else if item.entries.iter().any(|k| written.contains(k))
                || self.tracked.get(&item.id).is_some_and(|t| matches!(t.state, State::Refused(_)))
            {
                self.set_state(&item.id, State::Pending);
                if let Some(t) = self.tracked.get_mut(&item.id) {
                    t.started = now;
                }
            }
        }
        if !dels.is_empty() || !sets.is_empty() {
            tracing::info!(sets = sets.len(), deletes = dels.len(), refused = refused.len(), "APPL_DB reconciled");
        }
        self.full_sync = false;
        self.dirty = false;
        self.judge_all();
        Ok(())
    }

    fn report(&self) -> IntentReport {
        let mut intents: Vec<IntentStatus> = self
            .rendered
            .items
            .iter()
            .map(|item| {
                let t = &self.tracked[&item.id];
                let (state, latency, message) = match &t.state {
                    State::Programmed { latency } => ("programmed", latency.map(|l| l.as_secs_f64() * 1000.0), None),
                    State::Failed(reason) | State::Refused(reason) => ("failed", None, Some(reason.clone())),
                    State::Pending if !self.sync_mode => (
                        "unverified",
                        None,
                        Some("synchronous_mode is disabled: ASIC_DB does not prove programming".to_owned()),
                    ),
                    State::Pending if self.conns.is_none() => (
                        "pending",
                        None,
                        Some("the database is not reachable; soniclet writes it once it is".to_owned()),
                    ),
                    State::Pending if !self.temp_keys.is_empty() => {
                        ("pending", None, Some("a warm-restart view (TEMP_ASIC_STATE) is in progress".to_owned()))
                    }
                    State::Pending => ("pending", None, None),
                };
                IntentStatus {
                    id: item.id.clone(),
                    kind: item.kind.to_owned(),
                    state: state.to_owned(),
                    since: humantime::format_rfc3339_millis(t.since).to_string(),
                    latency_ms: latency,
                    message,
                }
            })
            .collect();
        intents.sort_by(|a, b| a.id.cmp(&b.id));
        let count = |s: &str| intents.iter().filter(|i| i.state == s).count();
        IntentReport {
            database_reachable: self.conns.is_some(),
            synchronous_mode: self.sync_mode,
            temp_view: !self.temp_keys.is_empty(),
            programmed: count("programmed"),
            pending: count("pending") + count("unverified"),
            failed: count("failed"),
            in_sync: self.conns.is_some() && !self.dirty,
            appl_db_writes: self.writes,
            asic_updates: self.asic_updates,
            intents,
        }
    }

    fn needs_names(&self) -> bool {
        self.rendered.items.iter().any(|item| item.expect.iter().any(|e| self.index.needs_name(e)))
    }

    /// Runs the engine until shutdown. `flushes` changes when a failure group's cold start
    /// flushed APPL_DB: then everything is written again.
    pub async fn run(
        mut self,
        requests: Requests,
        mut conns: watch::Receiver<Option<Connections>>,
        mut flushes: watch::Receiver<u64>,
        shutdown: CancellationToken,
    ) {
        let mut requests = requests.0;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The link may already be connected.
        let initial = conns.borrow_and_update().clone();
        if initial.is_some() {
            self.on_connections(initial).await;
        }
        loop {
            if self.conns.is_some()
                && (self.dirty || self.full_sync)
                && self.retry_at.is_none_or(|t| Instant::now() >= t)
            {
                match self.reconcile().await {
                    Ok(()) => self.failures = 0,
                    Err(e) => {
                        self.failures += 1;
                        let delay = Duration::from_millis(100 * (1 << self.failures.min(6)));
                        tracing::warn!(error = %e, retry_in = ?delay, "cannot write APPL_DB; retrying");
                        self.retry_at = Some(Instant::now() + delay);
                    }
                }
            }
            let wake = tokio::select! {
                () = shutdown.cancelled() => return,
                request = requests.recv() => Wake::Request(request),
                changed = conns.changed() => Wake::Connections(changed.is_ok()),
                changed = flushes.changed() => Wake::Flushed(changed.is_ok()),
                op = next_watch(&mut self.watchers) => Wake::Watch(op),
                _ = tick.tick() => Wake::Tick,
            };
            match wake {
                Wake::Request(None) => return,
                Wake::Request(Some(Request::Apply { file, text, reply })) => {
                    let _ = reply.send(self.accept(&file, &text));
                }
                Wake::Request(Some(Request::Status { reply })) => {
                    let _ = reply.send(self.report());
                }
                Wake::Connections(false) | Wake::Flushed(false) => return,
                Wake::Flushed(true) => {
                    flushes.borrow_and_update();
                    tracing::info!("APPL_DB was flushed by a cold start; writing every intent again");
                    self.full_sync = true;
                }
                Wake::Connections(true) => {
                    let current = conns.borrow_and_update().clone();
                    self.on_connections(current).await;
                }
                Wake::Watch(op) => {
                    self.on_watch(op);
                    self.drain_watchers();
                }
                Wake::Tick => {
                    if self.conns.is_some() && self.needs_names() {
                        self.load_names().await;
                    }
                    self.judge_all();
                }
            }
        }
    }

    async fn on_connections(&mut self, current: Option<Connections>) {
        match current {
            Some(c) => {
                if let Err(e) = self.connect(c).await {
                    tracing::warn!(error = %e, "cannot watch ASIC_DB yet");
                    self.conns = None;
                    self.watchers = None;
                }
            }
            None => {
                self.conns = None;
                self.watchers = None;
            }
        }
    }

    fn on_watch(&mut self, op: WatchOp) {
        match op {
            WatchOp::Asic(op) => self.on_asic(op),
            WatchOp::Temp(Op::Set { key, .. }) => {
                self.temp_keys.insert(key);
            }
            WatchOp::Temp(Op::Del { key }) => {
                self.temp_keys.remove(&key);
            }
            WatchOp::Vrf(Op::Set { key, fields }) => {
                let ok = fields.iter().any(|(f, v)| f == "state" && v == "ok");
                self.index.set_vrf_ready(&key, ok);
                self.judge_all();
            }
            WatchOp::Vrf(Op::Del { key }) => {
                self.index.set_vrf_ready(&key, false);
                self.judge_all();
            }
            WatchOp::Closed => self.watchers = None,
        }
    }
}

/// The engine's request queue.
#[derive(Debug)]
pub struct Requests(mpsc::UnboundedReceiver<Request>);

/// A handle for the API and the queue for [`Engine::run`].
pub fn channel() -> (IntentHandle, Requests) {
    let (tx, rx) = mpsc::unbounded_channel();
    (IntentHandle { tx }, Requests(rx))
}

enum Wake {
    Request(Option<Request>),
    Connections(bool),
    Flushed(bool),
    Watch(WatchOp),
    Tick,
}

enum WatchOp {
    Asic(Op),
    Temp(Op),
    Vrf(Op),
    Closed,
}

async fn next_watch(watchers: &mut Option<Watchers>) -> WatchOp {
    let Some(w) = watchers else { return std::future::pending().await };
    tokio::select! {
        Some(op) = w.asic.next() => WatchOp::Asic(op),
        Some(op) = w.temp.next() => WatchOp::Temp(op),
        Some(op) = w.vrfs.next() => WatchOp::Vrf(op),
        else => WatchOp::Closed,
    }
}
