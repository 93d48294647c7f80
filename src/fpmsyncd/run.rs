//! fpmsyncd's thin shell: the FPM listener zebra connects to, the kernel's names kept current
//! through the kernel port, and the writes through the ProducerStateTable protocol. One
//! zebra at a time, as SONiC's fpmsyncd serves one.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::frame::{Frames, TYPE_NETLINK};
use super::routes::{outcome, Names, Protocols};
use super::rtmsg::{messages, Message};
use super::sweep::Sweep;
use super::FpmError;
use crate::db::producer_state::ProducerStateTable;
use crate::db::{Db, DbError, Op};
use crate::vasic::kernel::{Kernel, KernelError, LinkState};

/// Where zebra's `fpm address 127.0.0.1` connects (FPM's port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2620";
const TABLE: &str = "ROUTE_TABLE";
/// iproute2's protocol names, where libnl reads them.
const RT_PROTOS_FILES: &[&str] = &["/etc/iproute2/rt_protos", "/usr/share/iproute2/rt_protos"];

#[derive(Debug, thiserror::Error)]
pub enum FpmsyncdError {
    #[error("cannot listen for zebra's FPM connection on {listen}")]
    Listen { listen: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Interfaces by index and VRF devices by table, from the kernel's links.
#[derive(Debug, Default)]
struct KernelNames {
    interfaces: HashMap<u32, String>,
    vrfs: HashMap<u32, String>,
}

impl KernelNames {
    fn learn(&mut self, link: LinkState) {
        if let Some(table) = link.vrf_table {
            self.vrfs.insert(table, link.name.clone());
        }
        self.interfaces.insert(link.index, link.name);
    }
}

impl Names for KernelNames {
    fn interface(&self, ifindex: u32) -> Option<String> {
        self.interfaces.get(&ifindex).cloned()
    }

    fn vrf_of_table(&self, table: u32) -> Option<String> {
        self.vrfs.get(&table).cloned()
    }
}

/// fpmsyncd's keys in APPL_DB: the entries carrying `protocol`, popped or still queued.
async fn owned_keys(appl: &Db) -> Result<BTreeSet<String>, DbError> {
    let sep = appl.separator();
    let mut hashes = appl.keys(&format!("{TABLE}{sep}*")).await?;
    hashes.extend(appl.keys(&format!("_{TABLE}{sep}*")).await?);
    let entries = appl.hgetall_many(&hashes).await?;
    let mut owned = BTreeSet::new();
    for (hash, fields) in hashes.iter().zip(entries) {
        let ours = fields.is_ok_and(|f| f.iter().any(|(field, _)| field == "protocol"));
        let key = hash.trim_start_matches('_').split_once(sep).map(|(_, key)| key.to_owned());
        if let (true, Some(key)) = (ours, key) {
            owned.insert(key);
        }
    }
    Ok(owned)
}

fn protocols() -> Protocols {
    RT_PROTOS_FILES.iter().find_map(|path| std::fs::read_to_string(path).ok()).map_or_else(Protocols::default, |t| {
        // A file without a name fpmsyncd relies on falls back on Debian's.
        let parsed = Protocols::parse(&t);
        if parsed.name(186) == "bgp" {
            parsed
        } else {
            Protocols::default()
        }
    })
}

struct Fpmsyncd {
    routes: ProducerStateTable,
    names: KernelNames,
    links: tokio::sync::mpsc::UnboundedReceiver<LinkState>,
    protocols: Protocols,
    sweep: Sweep,
    /// Skips said once per key and reason, so a replay does not flood the journal.
    said: HashMap<String, String>,
}

/// How a connection ended.
enum Ended {
    Closed,
    Shutdown,
}

impl Fpmsyncd {
    fn learn_links(&mut self) {
        while let Ok(link) = self.links.try_recv() {
            self.names.learn(link);
        }
    }

    /// The APPL_DB operations for one frame's payload.
    fn ops_of(&mut self, payload: &[u8]) -> Result<Vec<Op>, FpmError> {
        let mut ops = Vec::new();
        for message in messages(payload)? {
            let Message::Route(route) = message else { continue };
            match outcome(&route, &self.names, &self.protocols) {
                Ok(op) => ops.push(op),
                Err(skip) => {
                    let prefix = super::routes::prefix_text(route.dst, route.dst_len);
                    let reason = skip.to_string();
                    if self.said.get(&prefix) != Some(&reason) {
                        tracing::debug!(prefix = %prefix, table = route.table, "not written: {reason}");
                        self.said.insert(prefix, reason);
                    }
                }
            }
        }
        Ok(ops)
    }

    async fn write(&mut self, ops: &[Op]) -> Result<(), DbError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.routes.apply(ops).await?;
        for op in ops {
            self.sweep.wrote(op);
        }
        Ok(())
    }

    /// Serves one zebra until it goes, or fpmsyncd stops. A malformed stream or a database
    /// that fails drops the connection: zebra reconnects within 3 s and replays its RIB.
    async fn serve(&mut self, mut stream: TcpStream, shutdown: &CancellationToken) -> Ended {
        let mut frames = Frames::new();
        let mut buffer = vec![0u8; 64 * 1024];
        self.sweep.connected(Instant::now());
        loop {
            let due = self.sweep.due().map(tokio::time::Instant::from_std);
            let sweep_due = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return Ended::Shutdown,
                Some(link) = self.links.recv() => self.names.learn(link),
                () = sweep_due => {
                    let stale = self.sweep.sweep(Instant::now());
                    if !stale.is_empty() {
                        tracing::info!(routes = stale.len(), "removing routes zebra no longer has");
                    }
                    if let Err(e) = self.write(&stale).await {
                        tracing::warn!(error = %crate::error::chain(&e), "cannot write APPL_DB; dropping zebra's connection");
                        return Ended::Closed;
                    }
                }
                read = stream.read(&mut buffer) => {
                    let n = match read {
                        Ok(0) => return Ended::Closed,
                        Ok(n) => n,
                        Err(e) => {
                            tracing::info!(error = %e, "zebra's FPM connection failed");
                            return Ended::Closed;
                        }
                    };
                    frames.push(&buffer[..n]);
                    self.learn_links();
                    self.sweep.heard(Instant::now());
                    let mut ops = Vec::new();
                    loop {
                        match frames.next_frame() {
                            Ok(Some(frame)) if frame.msg_type == TYPE_NETLINK => match self.ops_of(&frame.payload) {
                                Ok(more) => ops.extend(more),
                                Err(e) => {
                                    tracing::warn!(error = %e, "dropping zebra's connection");
                                    return Ended::Closed;
                                }
                            },
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "dropping zebra's connection");
                                return Ended::Closed;
                            }
                        }
                    }
                    if let Err(e) = self.write(&ops).await {
                        tracing::warn!(error = %crate::error::chain(&e), "cannot write APPL_DB; dropping zebra's connection");
                        return Ended::Closed;
                    }
                }
            }
        }
    }
}

/// Runs fpmsyncd until shutdown: APPL_DB `ROUTE_TABLE` from the routes zebra sends to `listen`.
pub async fn run<K: Kernel>(
    appl: Db,
    kernel: K,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), FpmsyncdError> {
    let listener = TcpListener::bind(listen).await.map_err(|source| FpmsyncdError::Listen { listen, source })?;
    let links = kernel.watch_links()?;
    let mut names = KernelNames::default();
    for link in kernel.links().await? {
        names.learn(link);
    }
    let owned = owned_keys(&appl).await?;
    tracing::info!(listen = %listen, routes = owned.len(), "waiting for zebra's FPM connection");
    let mut fpmsyncd = Fpmsyncd {
        routes: ProducerStateTable::new(&appl, TABLE),
        names,
        links,
        protocols: protocols(),
        sweep: Sweep::new(owned),
        said: HashMap::new(),
    };
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept zebra's connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tracing::info!(peer = %peer, "zebra connected");
        match fpmsyncd.serve(stream, &shutdown).await {
            Ended::Shutdown => return Ok(()),
            Ended::Closed => tracing::info!("zebra's FPM connection closed; waiting for it again"),
        }
    }
}
