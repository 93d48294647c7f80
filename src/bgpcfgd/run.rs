//! The bgpcfgd shell (`soniclet bgpcfgd`, in the VS bgp image): it follows CONFIG_DB's
//! `DEVICE_METADATA`, `LOOPBACK_INTERFACE`, interface tables and `BGP_NEIGHBOR`, and APPL_DB's
//! `INTF_TABLE` (where soniclet's intents and intfmgrd put the switch's interface addresses),
//! writes FRR's startup `frr.conf`, applies it once FRR's daemons answer, and then applies each
//! change live with `vtysh -f`, never restarting bgpd. A script vtysh refuses is said in the
//! journal and its peer tried again 5 s later.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::peers::{Action, Peers};
use super::render::{change_networks, networks, startup_config, Device};
use crate::db::subscriber::SubscriberStateTable;
use crate::db::{Db, DbError, Fields, Op};

const VTYSH_CONF: &str = "service integrated-vtysh-config\nusername root nopassword\n";

/// How long one vtysh run may take.
const VTYSH_TIMEOUT: Duration = Duration::from_secs(30);
/// A failed script's peer, or the startup config, is tried again after this.
const RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BgpcfgdRunError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// How to reach FRR.
#[derive(Debug, Clone)]
pub struct Frr {
    pub vtysh: PathBuf,
    /// The integrated configuration file, written at start (`/etc/frr/frr.conf`).
    pub config_file: PathBuf,
}

/// The daemons the configuration is for. vtysh skips a daemon that is not up and still
/// succeeds, so the startup configuration waits for all of them.
const DAEMONS: &[&str] = &["zebra", "bgpd", "staticd"];

impl Frr {
    /// The daemons vtysh reaches, and the ones of [`DAEMONS`] it does not.
    async fn missing_daemons(&self) -> Result<Vec<&'static str>, String> {
        let running = self.vtysh(&["-c", "show daemons"], None).await?;
        let running: Vec<&str> = running.split_whitespace().collect();
        Ok(DAEMONS.iter().copied().filter(|d| !running.contains(d)).collect())
    }

    /// Runs `script` through `vtysh -f /dev/stdin`; the error is what vtysh said.
    async fn apply(&self, script: &str) -> Result<(), String> {
        self.vtysh(&["-f", "/dev/stdin"], Some(script)).await.map(drop)
    }

    async fn vtysh(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut child = tokio::process::Command::new(&self.vtysh)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.vtysh.display()))?;
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(stdin.unwrap_or_default().as_bytes()).await.map_err(|e| format!("vtysh's stdin: {e}"))?;
        }
        let output = tokio::time::timeout(VTYSH_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| format!("vtysh did not finish within {}s", VTYSH_TIMEOUT.as_secs()))?
            .map_err(|e| format!("vtysh: {e}"))?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let said = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
        Err(format!("vtysh failed ({}): {}", output.status, said.trim()))
    }
}

/// The databases bgpcfgd reads.
#[derive(Debug)]
pub struct BgpDbs {
    pub config: Db,
    pub appl: Db,
}

/// CONFIG_DB's interface tables whose keys carry an address (`<ifname>|<prefix>`).
const CONFIG_INTERFACE_TABLES: &[&str] =
    &["INTERFACE", "VLAN_INTERFACE", "PORTCHANNEL_INTERFACE", "LOOPBACK_INTERFACE"];

/// What bgpcfgd has read, by table.
#[derive(Debug, Default)]
struct Inputs {
    metadata: Fields,
    /// CONFIG_DB interface keys, `<table>|<ifname>|<prefix>`.
    config_interfaces: BTreeSet<String>,
    /// APPL_DB `INTF_TABLE` keys, `<ifname>:<prefix>`.
    appl_interfaces: BTreeSet<String>,
}

impl Inputs {
    fn loopbacks(&self) -> Vec<String> {
        self.config_interfaces.iter().filter_map(|k| k.strip_prefix("LOOPBACK_INTERFACE|")).map(str::to_owned).collect()
    }

    fn device(&self) -> Result<Option<Device>, super::BgpcfgdError> {
        Device::parse(&self.metadata, &self.loopbacks())
    }

    /// Every interface address, as `<ifname>|<prefix>` (both databases).
    fn addressed(&self) -> BTreeSet<String> {
        let config = self.config_interfaces.iter().filter_map(|k| k.split_once('|')).map(|(_, rest)| rest.to_owned());
        let appl =
            self.appl_interfaces.iter().filter_map(|k| k.split_once(':')).map(|(ifname, p)| format!("{ifname}|{p}"));
        config.chain(appl).filter(|k| k.contains('/')).collect()
    }

    fn networks(&self) -> BTreeSet<String> {
        let vlans: Vec<String> = self.addressed().into_iter().filter(|k| k.starts_with("Vlan")).collect();
        networks(&self.loopbacks(), &vlans).into_iter().collect()
    }

    fn local_addrs(&self) -> BTreeSet<IpAddr> {
        self.addressed()
            .iter()
            .filter_map(|k| k.split_once('|'))
            .filter_map(|(_, prefix)| prefix.split_once('/')?.0.parse().ok())
            .collect()
    }

    /// One change from a subscriber; `table` is what it follows.
    fn note(&mut self, table: &str, op: &Op) {
        let (key, present) = match op {
            Op::Set { key, .. } => (key.as_str(), true),
            Op::Del { key } => (key.as_str(), false),
        };
        let set = match table {
            "DEVICE_METADATA" => {
                if key == "localhost" {
                    self.metadata = match op {
                        Op::Set { fields, .. } => fields.clone(),
                        Op::Del { .. } => Fields::new(),
                    };
                }
                return;
            }
            "INTF_TABLE" => (&mut self.appl_interfaces, key.to_owned()),
            _ => (&mut self.config_interfaces, format!("{table}|{key}")),
        };
        let (keys, key) = set;
        if present {
            keys.insert(key);
        } else {
            keys.remove(&key);
        }
    }
}

/// Follows the databases and keeps FRR configured until `shutdown`.
pub async fn run(dbs: BgpDbs, frr: Frr, shutdown: CancellationToken) -> Result<(), BgpcfgdRunError> {
    let mut followed: Vec<(String, SubscriberStateTable)> = Vec::new();
    for table in ["DEVICE_METADATA", "BGP_NEIGHBOR"].iter().chain(CONFIG_INTERFACE_TABLES) {
        followed.push(((*table).to_owned(), SubscriberStateTable::new(&dbs.config, table).await?));
    }
    followed.push(("INTF_TABLE".to_owned(), SubscriberStateTable::new(&dbs.appl, "INTF_TABLE").await?));

    // What the databases hold now, before FRR is configured.
    let mut inputs = Inputs::default();
    let mut wanted_neighbors: BTreeMap<String, Fields> = BTreeMap::new();
    for (table, subscriber) in &mut followed {
        while let Some(op) = subscriber.try_next() {
            absorb(table, op, &mut inputs, &mut wanted_neighbors);
        }
    }
    let device = match inputs.device() {
        Ok(device) => device,
        Err(e) => {
            tracing::error!("{e}; FRR runs without BGP until it is fixed");
            None
        }
    };
    let mut advertised = inputs.networks();
    let startup = startup_config(device.as_ref(), &advertised.iter().cloned().collect::<Vec<_>>());
    crate::state::fsutil::atomic_write(&frr.config_file, startup.as_bytes())
        .map_err(|source| BgpcfgdRunError::Write { path: frr.config_file.clone(), source })?;
    // vtysh's own file, as SONiC's vtysh.conf.j2 writes it: one integrated configuration, and
    // root (bgpcfgd, `soniclet exec bgp vtysh`) without a PAM login.
    let vtysh_conf = frr.config_file.with_file_name("vtysh.conf");
    crate::state::fsutil::atomic_write(&vtysh_conf, VTYSH_CONF.as_bytes())
        .map_err(|source| BgpcfgdRunError::Write { path: vtysh_conf.clone(), source })?;
    // FRR's daemons start beside bgpcfgd: wait until they take the configuration.
    let mut said = None;
    loop {
        let applied = match frr.missing_daemons().await {
            Ok(missing) if missing.is_empty() => frr.apply(&startup).await,
            Ok(missing) => Err(format!("{} not running", missing.join(", "))),
            Err(e) => Err(e),
        };
        match applied {
            Ok(()) => break,
            Err(e) => {
                if said.as_ref() != Some(&e) {
                    tracing::warn!("FRR does not take its startup configuration yet ({e}); trying again every 1 s");
                    said = Some(e);
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    tracing::info!(
        asn = device.as_ref().map(|d| d.asn),
        networks = advertised.len(),
        path = %frr.config_file.display(),
        "FRR configured"
    );

    let mut peers = Peers::new(device.clone());
    let mut actions = peers.set_local_addrs(inputs.local_addrs());
    for (key, fields) in std::mem::take(&mut wanted_neighbors) {
        actions.extend(peers.neighbor(&key, Some(fields)));
    }
    let mut said_device: Option<String> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        for action in actions.drain(..) {
            match action {
                Action::Script { key, script } => match frr.apply(&script).await {
                    Ok(()) => tracing::info!(neighbor = %key, "BGP neighbour configured"),
                    Err(e) => {
                        tracing::error!(neighbor = %key, "{e}; trying again in 5 s");
                        peers.failed(&key);
                        retry_at = Some(tokio::time::Instant::now() + RETRY_AFTER);
                    }
                },
                Action::Refused(e) => tracing::error!("{e}; FRR keeps the neighbour as it was"),
                Action::Waiting { key, local_addr } => {
                    tracing::info!(neighbor = %key, %local_addr, "the neighbour waits until an interface owns its local_addr")
                }
            }
        }
        let wake = retry_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        let next = {
            let nexts = followed.iter_mut().map(|(table, sub)| {
                let table = table.clone();
                Box::pin(async move { (table, sub.next().await) })
            });
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                ((table, op), _, _) = futures_util::future::select_all(nexts) => Some((table, op)),
                () = tokio::time::sleep_until(wake) => None,
            }
        };
        let Some((table, op)) = next else {
            retry_at = None;
            actions = peers.set_local_addrs(inputs.local_addrs());
            continue;
        };
        let Some(op) = op else { return Ok(()) };
        if table == "BGP_NEIGHBOR" {
            actions = match op {
                Op::Set { key, fields } => peers.neighbor(&key, Some(fields)),
                Op::Del { key } => peers.neighbor(&key, None),
            };
            continue;
        }
        inputs.note(&table, &op);
        match inputs.device() {
            Ok(now) if now == device => said_device = None,
            other => {
                // SONiC's bgpcfgd takes the AS number and router ID at start only.
                let what = match other {
                    Ok(_) => "the BGP instance (bgp_asn, router ID) changed".to_owned(),
                    Err(e) => e.to_string(),
                };
                if said_device.as_ref() != Some(&what) {
                    tracing::warn!("{what}: it takes effect when bgp restarts (systemctl restart bgp)");
                    said_device = Some(what);
                }
            }
        }
        if let Some(device) = &device {
            let now = inputs.networks();
            if now != advertised {
                let added: Vec<String> = now.difference(&advertised).cloned().collect();
                let removed: Vec<String> = advertised.difference(&now).cloned().collect();
                match frr.apply(&change_networks(device, &added, &removed)).await {
                    Ok(()) => {
                        tracing::info!(?added, ?removed, "advertised networks changed");
                        advertised = now;
                    }
                    Err(e) => tracing::error!("{e}; the networks are tried again on the next change"),
                }
            }
        }
        actions = peers.set_local_addrs(inputs.local_addrs());
    }
}

fn absorb(table: &str, op: Op, inputs: &mut Inputs, neighbors: &mut BTreeMap<String, Fields>) {
    if table == "BGP_NEIGHBOR" {
        match op {
            Op::Set { key, fields } => neighbors.insert(key, fields),
            Op::Del { key } => neighbors.remove(&key),
        };
    } else {
        inputs.note(table, &op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str) -> Op {
        Op::Set { key: key.to_owned(), fields: vec![("NULL".to_owned(), "NULL".to_owned())] }
    }

    #[test]
    fn interface_addresses_come_from_both_databases() {
        let mut inputs = Inputs::default();
        inputs.note("LOOPBACK_INTERFACE", &set("Loopback0|10.1.0.1/32"));
        inputs.note("INTERFACE", &set("Ethernet8|10.0.8.0/31"));
        inputs.note("INTERFACE", &set("Ethernet8"));
        inputs.note("INTF_TABLE", &set("Vlan10:10.0.10.1/24"));
        inputs.note("INTF_TABLE", &set("Vlan10:fc00:10::1/64"));
        inputs.note("INTF_TABLE", &set("Ethernet12:10.0.12.0/31"));
        inputs.note("INTF_TABLE", &set("Vlan10"));
        let addrs: Vec<String> = inputs.local_addrs().iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["10.0.8.0", "10.0.10.1", "10.0.12.0", "10.1.0.1", "fc00:10::1"]);
        let networks: Vec<String> = inputs.networks().into_iter().collect();
        assert_eq!(networks, ["10.0.10.0/24", "10.1.0.1/32", "fc00:10::/64"], "VLAN subnets and Loopback0");
        inputs.note("INTF_TABLE", &Op::Del { key: "Vlan10:10.0.10.1/24".to_owned() });
        assert!(!inputs.networks().contains("10.0.10.0/24"));
        inputs.note(
            "DEVICE_METADATA",
            &Op::Set { key: "localhost".to_owned(), fields: vec![("bgp_asn".to_owned(), "65100".to_owned())] },
        );
        assert_eq!(inputs.device().unwrap().map(|d| d.router_id.to_string()), Some("10.1.0.1".to_owned()));
    }
}
