//! Which neighbours FRR should have, and the vtysh scripts that get it there (pure). The
//! shell feeds CONFIG_DB's changes in and runs each script with `vtysh -f`; a script that
//! fails is reported back and its peer is tried again on the next change. A malformed entry
//! is refused once, naming its key and field, and the peer FRR runs stays as it was. A peer
//! whose `local_addr` no interface owns yet waits for it, as SONiC's bgpcfgd holds it back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::render::{add_neighbor, change_neighbor, remove_neighbor, Device, Neighbor};
use super::BgpcfgdError;
use crate::db::Fields;

/// What the shell does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run this with `vtysh -f`; `key` is the neighbour it is for.
    Script { key: String, script: String },
    /// Said once in the journal; nothing changes in FRR.
    Refused(BgpcfgdError),
    /// A peer waits for an interface to own its `local_addr`.
    Waiting { key: String, local_addr: IpAddr },
}

#[derive(Debug, Default)]
pub struct Peers {
    device: Option<Device>,
    local_addrs: BTreeSet<IpAddr>,
    /// CONFIG_DB's `BGP_NEIGHBOR` entries, by key.
    wanted: BTreeMap<String, Fields>,
    /// What FRR runs, as far as the scripts that succeeded say.
    applied: BTreeMap<String, Neighbor>,
    /// What was said about a key, so it is said once.
    said: BTreeMap<String, Action>,
}

impl Peers {
    pub fn new(device: Option<Device>) -> Self {
        Self { device, ..Self::default() }
    }

    /// The addresses the switch's interfaces own (CONFIG_DB's interface tables).
    pub fn set_local_addrs(&mut self, addrs: BTreeSet<IpAddr>) -> Vec<Action> {
        self.local_addrs = addrs;
        self.reconcile()
    }

    /// A `BGP_NEIGHBOR` entry set (`Some`) or deleted (`None`).
    pub fn neighbor(&mut self, key: &str, fields: Option<Fields>) -> Vec<Action> {
        match fields {
            Some(fields) => self.wanted.insert(key.to_owned(), fields),
            None => {
                self.said.remove(key);
                self.wanted.remove(key)
            }
        };
        self.reconcile()
    }

    /// A script for `key` failed: FRR's peer is not what was assumed; forget it, so the next
    /// reconcile adds it whole.
    pub fn failed(&mut self, key: &str) {
        self.applied.remove(key);
        self.said.remove(key);
    }

    fn say(&mut self, key: &str, action: Action, out: &mut Vec<Action>) {
        if self.said.get(key) != Some(&action) {
            self.said.insert(key.to_owned(), action.clone());
            out.push(action);
        }
    }

    fn reconcile(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(device) = self.device.clone() else { return out };
        let gone: Vec<String> = self.applied.keys().filter(|k| !self.wanted.contains_key(*k)).cloned().collect();
        for key in gone {
            if let Some(old) = self.applied.remove(&key) {
                self.said.remove(&key);
                out.push(Action::Script { script: remove_neighbor(&device, &old), key });
            }
        }
        for (key, fields) in self.wanted.clone() {
            let neighbor = match Neighbor::parse(&key, &fields) {
                Ok(neighbor) => neighbor,
                Err(e) => {
                    self.say(&key, Action::Refused(e), &mut out);
                    continue;
                }
            };
            if let Some(local_addr) = neighbor.local_addr.filter(|a| !self.local_addrs.contains(a)) {
                if !self.applied.contains_key(&key) {
                    self.say(&key, Action::Waiting { key: key.clone(), local_addr }, &mut out);
                    continue;
                }
            }
            let script = match self.applied.get(&key) {
                None => add_neighbor(&device, &neighbor),
                Some(old) if *old == neighbor => continue,
                Some(old) => change_neighbor(&device, old, &neighbor),
            };
            self.said.remove(&key);
            self.applied.insert(key.clone(), neighbor);
            out.push(Action::Script { key, script });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn device() -> Device {
        Device {
            asn: 65100,
            hostname: "vs".into(),
            router_id: Ipv4Addr::new(10, 1, 0, 1),
            peers_down_by_default: false,
        }
    }

    fn kinds(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Script { key, script } => {
                    format!("script {key}: {}", script.lines().nth(1).unwrap_or_default().trim())
                }
                Action::Refused(e) => format!("refused: {e}"),
                Action::Waiting { key, local_addr } => format!("waiting {key} for {local_addr}"),
            })
            .collect()
    }

    #[test]
    fn peers_wait_for_their_address_bad_entries_change_nothing_and_deletes_remove() {
        let mut peers = Peers::new(Some(device()));
        let s2 = fields(&[("asn", "65200"), ("local_addr", "10.0.8.0"), ("name", "s2")]);
        assert_eq!(kinds(&peers.neighbor("10.0.8.1", Some(s2.clone()))), ["waiting 10.0.8.1 for 10.0.8.0"]);
        assert!(peers.neighbor("10.0.9.1", None).is_empty(), "said once");
        let actions = peers.set_local_addrs(["10.0.8.0".parse().unwrap()].into());
        assert_eq!(kinds(&actions), ["script 10.0.8.1: neighbor 10.0.8.1 remote-as 65200"]);
        // A malformed change is refused, once; FRR keeps the running peer.
        let bad = fields(&[("asn", "x"), ("local_addr", "10.0.8.0")]);
        let actions = peers.neighbor("10.0.8.1", Some(bad.clone()));
        assert!(matches!(&actions[..], [Action::Refused(e)] if e.to_string().contains("field `asn`")), "{actions:?}");
        assert!(peers.neighbor("10.0.8.1", Some(bad)).is_empty());
        // Fixed: an in-place change.
        let down = fields(&[("asn", "65200"), ("local_addr", "10.0.8.0"), ("name", "s2"), ("admin_status", "down")]);
        assert_eq!(kinds(&peers.neighbor("10.0.8.1", Some(down))), ["script 10.0.8.1: neighbor 10.0.8.1 shutdown"]);
        // A failed script: the next change adds the peer whole.
        peers.failed("10.0.8.1");
        assert_eq!(
            kinds(&peers.neighbor("10.0.8.1", Some(s2))),
            ["script 10.0.8.1: neighbor 10.0.8.1 remote-as 65200"]
        );
        assert_eq!(kinds(&peers.neighbor("10.0.8.1", None)), ["script 10.0.8.1: no neighbor 10.0.8.1"]);
        // Without bgp_asn, no BGP at all.
        assert!(Peers::new(None).neighbor("10.0.8.1", Some(fields(&[("asn", "1")]))).is_empty());
    }
}
