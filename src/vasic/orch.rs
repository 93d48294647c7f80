//! The virtual orchagent's decisions: APPL_DB entries in, SAI operations out. Pure.
//!
//! Like orchagent, an entry whose dependencies are missing (its VRF, its router interface,
//! its VLAN or port) waits and is tried again after later entries; an entry that can never
//! be right (a bad prefix, a missing field) is refused and dropped, with the key and the
//! reason.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::sai::{self, attr, ObjectType, Vid};
use crate::db::{Fields, Op};

/// One SAI call, as sairedis puts it on the op queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaiOp {
    pub kind: SaiKind,
    pub object_type: ObjectType,
    /// The serialized id: `oid:0x...` or an entry's JSON.
    pub id: String,
    pub attrs: Fields,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaiKind {
    Create,
    /// Exactly one attribute, as sairedis sends it.
    Set,
    Remove,
}

impl SaiOp {
    fn create(object_type: ObjectType, id: impl Into<String>, attrs: Fields) -> Self {
        Self { kind: SaiKind::Create, object_type, id: id.into(), attrs }
    }
    fn set(object_type: ObjectType, id: impl Into<String>, name: &str, value: impl Into<String>) -> Self {
        Self { kind: SaiKind::Set, object_type, id: id.into(), attrs: vec![(name.to_owned(), value.into())] }
    }
    fn remove(object_type: ObjectType, id: impl Into<String>) -> Self {
        Self { kind: SaiKind::Remove, object_type, id: id.into(), attrs: Vec::new() }
    }

    /// `<TYPE>:<id>`, the op queue's key.
    pub fn key(&self) -> String {
        sai::object_key(self.object_type, &self.id)
    }
}

/// What became of one APPL_DB entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: these SAI operations, in order (maybe none).
    Apply(Vec<SaiOp>),
    /// A dependency is missing; try again later.
    Wait(String),
    /// Never valid: refused and dropped.
    Refuse(String),
}

/// Side effects outside ASIC_DB that orchagent performs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// COUNTERS_DB `COUNTERS_PORT_NAME_MAP` name -> port VID.
    PortName { name: String, vid: Vid },
    /// STATE_DB `VRF_OBJECT_TABLE|<vrf>`: `state=ok`, or gone.
    VrfReady { name: String, ready: bool },
}

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.iter().rev().find(|(f, _)| f == name).map(|(_, v)| v.as_str())
}

/// Interfaces orchagent ignores.
fn ignored_interface(name: &str) -> bool {
    matches!(name, "eth0" | "docker0" | "usb0" | "lo") || name.starts_with("Loopback")
}

#[derive(Debug, Clone)]
struct Port {
    vid: Vid,
    admin_up: bool,
    mtu: u32,
}

#[derive(Debug, Clone)]
struct Rif {
    vid: Vid,
    vr: Vid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RouteTarget {
    Drop,
    Object(Vid),
}

#[derive(Debug, Clone)]
struct Route {
    vr: Vid,
    target: RouteTarget,
    /// The next hops it holds a reference on, and the group.
    nexthops: Vec<(IpAddr, String)>,
    group: Option<Vec<(IpAddr, String)>>,
}

#[derive(Debug, Clone)]
struct NextHopGroup {
    vid: Vid,
    members: Vec<Vid>,
    refs: usize,
}

/// orchagent's state: what exists in the ASIC and under which VID.
#[derive(Debug, Default)]
pub struct Orch {
    next_index: u64,
    default_vr: Option<Vid>,
    src_mac: String,
    config_done: bool,
    /// PORT_TABLE entries held back until `PortConfigDone`, as portsorch does.
    early_ports: BTreeMap<String, Fields>,
    ports: BTreeMap<String, Port>,
    vrfs: HashMap<String, Vid>,
    vlans: HashMap<u16, Vid>,
    /// (vlan, port) -> (member VID, tagging).
    members: HashMap<(u16, String), (Vid, String)>,
    bridge_ports: HashMap<String, (Vid, usize)>,
    rifs: HashMap<String, Rif>,
    /// (interface, prefix) -> the IP2ME route key.
    addresses: HashMap<(String, String), String>,
    /// (vrf, prefix) -> route.
    routes: HashMap<(String, String), Route>,
    nexthops: HashMap<(IpAddr, String), (Vid, usize)>,
    groups: HashMap<Vec<(IpAddr, String)>, NextHopGroup>,
    neighbors: HashMap<(String, IpAddr), String>,
    lags: HashMap<String, Vid>,
    lag_members: HashMap<(String, String), Vid>,
    notes: Vec<Note>,
}

impl Orch {
    pub fn new(src_mac: &str) -> Self {
        Self { src_mac: sai::mac_value(src_mac), ..Self::default() }
    }

    fn vid(&mut self, object_type: ObjectType) -> Vid {
        self.next_index += 1;
        Vid::new(object_type, self.next_index)
    }

    /// orchagent's start: the switch, then the default virtual router.
    pub fn start(&mut self) -> Vec<SaiOp> {
        let vr = self.vid(ObjectType::VirtualRouter);
        self.default_vr = Some(vr);
        vec![
            SaiOp::create(
                ObjectType::Switch,
                sai::SWITCH.to_string(),
                vec![
                    (attr::SWITCH_INIT_SWITCH.into(), "true".into()),
                    (attr::SWITCH_SRC_MAC.into(), self.src_mac.clone()),
                ],
            ),
            virtual_router(vr),
        ]
    }

    /// What orchagent writes beside ASIC_DB since the last call.
    pub fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    /// The port names created so far, with their VIDs.
    pub fn ports(&self) -> impl Iterator<Item = (&str, Vid)> {
        self.ports.iter().map(|(name, port)| (name.as_str(), port.vid))
    }

    /// One APPL_DB entry of `table`.
    pub fn apply(&mut self, table: &str, op: &Op) -> Outcome {
        match table {
            "PORT_TABLE" => self.port(op),
            "VRF_TABLE" => self.vrf(op),
            "VLAN_TABLE" => self.vlan(op),
            "VLAN_MEMBER_TABLE" => self.vlan_member(op),
            "INTF_TABLE" => self.interface(op),
            "ROUTE_TABLE" => self.route(op),
            "NEIGH_TABLE" => self.neighbor(op),
            "LAG_TABLE" => self.lag(op),
            "LAG_MEMBER_TABLE" => self.lag_member(op),
            other => Outcome::Refuse(format!("table {other} is not handled")),
        }
    }

    /// syncd refused `op`: forget the object, as orchagent does when its create fails.
    pub fn refused(&mut self, op: &SaiOp) {
        if op.kind != SaiKind::Create {
            return;
        }
        if op.object_type == ObjectType::RouteEntry {
            if let Ok(key) = serde_json::from_str::<sai::RouteKey>(&op.id) {
                let vrf = self.vrf_of(Vid::parse(&key.vr));
                if let Some(route) = self.routes.remove(&(vrf, key.dest)) {
                    self.release(&route);
                }
            }
        }
    }

    fn vrf_of(&self, vr: Option<Vid>) -> String {
        vr.and_then(|vr| self.vrfs.iter().find(|(_, v)| **v == vr).map(|(n, _)| n.clone())).unwrap_or_default()
    }

    fn default_vr(&self) -> Vid {
        self.default_vr.unwrap_or(Vid(0))
    }

    fn port(&mut self, op: &Op) -> Outcome {
        let name = op.key();
        match (name, op) {
            ("PortConfigDone", Op::Set { .. }) => {
                self.config_done = true;
                let early = std::mem::take(&mut self.early_ports);
                let mut ops = Vec::new();
                for (name, fields) in early {
                    match self.port_set(&name, &fields) {
                        Outcome::Apply(more) => ops.extend(more),
                        other => return other,
                    }
                }
                Outcome::Apply(ops)
            }
            ("PortInitDone" | "PortConfigDone", _) => Outcome::Apply(Vec::new()),
            (_, Op::Set { fields, .. }) if !self.config_done => {
                // A pop carries the fields of one write; what waits accumulates them.
                let stash = self.early_ports.entry(name.to_owned()).or_default();
                merge_fields(stash, fields);
                Outcome::Apply(Vec::new())
            }
            (_, Op::Set { fields, .. }) => self.port_set(name, fields),
            // portsorch removes a port only on dynamic port breakout; the VS keeps it.
            (_, Op::Del { .. }) => Outcome::Apply(Vec::new()),
        }
    }

    fn port_set(&mut self, name: &str, fields: &Fields) -> Outcome {
        // A field a write leaves out is unchanged, as in portsorch.
        let admin_up = match field(fields, "admin_status") {
            None => None,
            Some("down") => Some(false),
            Some("up") => Some(true),
            Some(other) => return Outcome::Refuse(format!("admin_status {other:?} is neither up nor down")),
        };
        let mtu = match field(fields, "mtu").map(str::parse::<u32>) {
            None => None,
            Some(Ok(mtu)) if (68..=9216).contains(&mtu) => Some(mtu),
            Some(_) => return Outcome::Refuse(format!("mtu {:?} is not a number in 68..9216", field(fields, "mtu"))),
        };
        let mut ops = Vec::new();
        let existing = self.ports.get(name).cloned();
        let port = match existing {
            Some(port) => port,
            None => {
                let Some(lanes) = field(fields, "lanes") else {
                    return Outcome::Refuse("a new port needs its lanes".into());
                };
                let lanes: Vec<&str> = lanes.split(',').map(str::trim).collect();
                if lanes.iter().any(|l| l.parse::<u32>().is_err()) {
                    return Outcome::Refuse(format!("lanes {lanes:?} are not numbers"));
                }
                let speed = field(fields, "speed").unwrap_or("100000");
                if speed.parse::<u32>().is_err() {
                    return Outcome::Refuse(format!("speed {speed:?} is not a number"));
                }
                let vid = self.vid(ObjectType::Port);
                ops.push(SaiOp::create(
                    ObjectType::Port,
                    vid.to_string(),
                    vec![
                        (attr::PORT_HW_LANE_LIST.into(), format!("{}:{}", lanes.len(), lanes.join(","))),
                        (attr::PORT_SPEED.into(), speed.into()),
                    ],
                ));
                let hostif = self.vid(ObjectType::Hostif);
                ops.push(SaiOp::create(
                    ObjectType::Hostif,
                    hostif.to_string(),
                    vec![
                        (attr::HOSTIF_TYPE.into(), "SAI_HOSTIF_TYPE_NETDEV".into()),
                        (attr::HOSTIF_OBJ_ID.into(), vid.to_string()),
                        (attr::HOSTIF_NAME.into(), name.into()),
                    ],
                ));
                self.notes.push(Note::PortName { name: name.to_owned(), vid });
                // A new port is down, at SONiC's default MTU, until told otherwise.
                ops.push(SaiOp::set(ObjectType::Port, vid.to_string(), attr::PORT_ADMIN_STATE, "false"));
                ops.push(SaiOp::set(
                    ObjectType::Port,
                    vid.to_string(),
                    attr::PORT_MTU,
                    sai_mtu(DEFAULT_MTU).to_string(),
                ));
                let port = Port { vid, admin_up: false, mtu: DEFAULT_MTU };
                self.ports.insert(name.to_owned(), port.clone());
                port
            }
        };
        let mtu = mtu.unwrap_or(port.mtu);
        let admin_up = admin_up.unwrap_or(port.admin_up);
        if port.mtu != mtu {
            ops.push(SaiOp::set(ObjectType::Port, port.vid.to_string(), attr::PORT_MTU, sai_mtu(mtu).to_string()));
        }
        if port.admin_up != admin_up {
            ops.push(SaiOp::set(ObjectType::Port, port.vid.to_string(), attr::PORT_ADMIN_STATE, admin_up.to_string()));
        }
        if let Some(fec) = field(fields, "fec") {
            let mode = match fec {
                "none" => "SAI_PORT_FEC_MODE_NONE",
                "rs" => "SAI_PORT_FEC_MODE_RS",
                "fc" => "SAI_PORT_FEC_MODE_FC",
                "auto" => "SAI_PORT_FEC_MODE_NONE",
                other => return Outcome::Refuse(format!("fec {other:?} is not none, rs, fc or auto")),
            };
            ops.push(SaiOp::set(ObjectType::Port, port.vid.to_string(), attr::PORT_FEC_MODE, mode));
        }
        if let Some(port) = self.ports.get_mut(name) {
            port.admin_up = admin_up;
            port.mtu = mtu;
        }
        Outcome::Apply(ops)
    }

    fn vrf(&mut self, op: &Op) -> Outcome {
        let name = op.key().to_owned();
        match op {
            Op::Set { .. } => {
                if self.vrfs.contains_key(&name) {
                    return Outcome::Apply(Vec::new());
                }
                let vid = self.vid(ObjectType::VirtualRouter);
                self.vrfs.insert(name.clone(), vid);
                self.notes.push(Note::VrfReady { name, ready: true });
                Outcome::Apply(vec![virtual_router(vid)])
            }
            Op::Del { .. } => {
                let Some(vid) = self.vrfs.get(&name).copied() else { return Outcome::Apply(Vec::new()) };
                if self.rifs.values().any(|r| r.vr == vid) || self.routes.values().any(|r| r.vr == vid) {
                    return Outcome::Wait(format!("{name} still has interfaces or routes"));
                }
                self.vrfs.remove(&name);
                self.notes.push(Note::VrfReady { name, ready: false });
                Outcome::Apply(vec![SaiOp::remove(ObjectType::VirtualRouter, vid.to_string())])
            }
        }
    }

    fn vlan(&mut self, op: &Op) -> Outcome {
        let Some(id) =
            op.key().strip_prefix("Vlan").and_then(|v| v.parse::<u16>().ok()).filter(|v| (1..=4094).contains(v))
        else {
            return Outcome::Refuse("a VLAN is named Vlan<1..4094>".into());
        };
        match op {
            Op::Set { .. } if self.vlans.contains_key(&id) => Outcome::Apply(Vec::new()),
            Op::Set { .. } => {
                let vid = self.vid(ObjectType::Vlan);
                self.vlans.insert(id, vid);
                Outcome::Apply(vec![SaiOp::create(
                    ObjectType::Vlan,
                    vid.to_string(),
                    vec![(attr::VLAN_ID.into(), id.to_string())],
                )])
            }
            Op::Del { .. } => {
                let Some(vid) = self.vlans.get(&id).copied() else { return Outcome::Apply(Vec::new()) };
                if self.members.keys().any(|(v, _)| *v == id) || self.rifs.contains_key(op.key()) {
                    return Outcome::Wait(format!("Vlan{id} still has members or an interface"));
                }
                self.vlans.remove(&id);
                Outcome::Apply(vec![SaiOp::remove(ObjectType::Vlan, vid.to_string())])
            }
        }
    }

    fn vlan_member(&mut self, op: &Op) -> Outcome {
        let Some((vlan, port)) = op.key().split_once(':') else {
            return Outcome::Refuse("a VLAN member's key is Vlan<id>:<port>".into());
        };
        let Some(id) = vlan.strip_prefix("Vlan").and_then(|v| v.parse::<u16>().ok()) else {
            return Outcome::Refuse(format!("{vlan} is not Vlan<id>"));
        };
        let key = (id, port.to_owned());
        match op {
            Op::Set { fields, .. } => {
                let tagging = match field(fields, "tagging_mode").unwrap_or("untagged") {
                    "untagged" => "SAI_VLAN_TAGGING_MODE_UNTAGGED",
                    "tagged" => "SAI_VLAN_TAGGING_MODE_TAGGED",
                    "priority_tagged" => "SAI_VLAN_TAGGING_MODE_PRIORITY_TAGGED",
                    other => {
                        return Outcome::Refuse(format!(
                            "tagging_mode {other:?} is not untagged, tagged or priority_tagged"
                        ))
                    }
                };
                let Some(vlan_vid) = self.vlans.get(&id).copied() else {
                    return Outcome::Wait(format!("{vlan} does not exist yet"));
                };
                let Some(port_vid) = self.ports.get(port).map(|p| p.vid) else {
                    return Outcome::Wait(format!("port {port} does not exist yet"));
                };
                let mut ops = Vec::new();
                if let Some((member, old)) = self.members.get(&key).cloned() {
                    if old == tagging {
                        return Outcome::Apply(Vec::new());
                    }
                    ops.push(SaiOp::remove(ObjectType::VlanMember, member.to_string()));
                    self.members.remove(&key);
                    if let Some(bridge_port) = self.bridge_port_release(port) {
                        ops.push(SaiOp::remove(ObjectType::BridgePort, bridge_port.to_string()));
                    }
                }
                let bridge_port = match self.bridge_ports.get_mut(port) {
                    Some((vid, refs)) => {
                        *refs += 1;
                        *vid
                    }
                    None => {
                        let vid = self.vid(ObjectType::BridgePort);
                        ops.push(SaiOp::create(
                            ObjectType::BridgePort,
                            vid.to_string(),
                            vec![
                                (attr::BRIDGE_PORT_TYPE.into(), "SAI_BRIDGE_PORT_TYPE_PORT".into()),
                                (attr::BRIDGE_PORT_PORT_ID.into(), port_vid.to_string()),
                                (attr::BRIDGE_PORT_ADMIN_STATE.into(), "true".into()),
                            ],
                        ));
                        self.bridge_ports.insert(port.to_owned(), (vid, 1));
                        vid
                    }
                };
                let member = self.vid(ObjectType::VlanMember);
                ops.push(SaiOp::create(
                    ObjectType::VlanMember,
                    member.to_string(),
                    vec![
                        (attr::VLAN_MEMBER_VLAN_ID.into(), vlan_vid.to_string()),
                        (attr::VLAN_MEMBER_BRIDGE_PORT_ID.into(), bridge_port.to_string()),
                        (attr::VLAN_MEMBER_TAGGING_MODE.into(), tagging.into()),
                    ],
                ));
                if tagging == "SAI_VLAN_TAGGING_MODE_UNTAGGED" {
                    ops.push(SaiOp::set(ObjectType::Port, port_vid.to_string(), attr::PORT_VLAN_ID, id.to_string()));
                }
                self.members.insert(key, (member, tagging.to_owned()));
                Outcome::Apply(ops)
            }
            Op::Del { .. } => {
                let Some((member, tagging)) = self.members.remove(&key) else { return Outcome::Apply(Vec::new()) };
                let mut ops = vec![SaiOp::remove(ObjectType::VlanMember, member.to_string())];
                if tagging == "SAI_VLAN_TAGGING_MODE_UNTAGGED" {
                    if let Some(port) = self.ports.get(port) {
                        ops.push(SaiOp::set(ObjectType::Port, port.vid.to_string(), attr::PORT_VLAN_ID, "1"));
                    }
                }
                if let Some(bridge_port) = self.bridge_port_release(port) {
                    ops.push(SaiOp::remove(ObjectType::BridgePort, bridge_port.to_string()));
                }
                Outcome::Apply(ops)
            }
        }
    }

    /// Drops one reference on a port's bridge port; returns it when the last one went.
    fn bridge_port_release(&mut self, port: &str) -> Option<Vid> {
        let (vid, refs) = self.bridge_ports.get_mut(port)?;
        *refs -= 1;
        if *refs == 0 {
            let vid = *vid;
            self.bridge_ports.remove(port);
            return Some(vid);
        }
        None
    }

    fn interface(&mut self, op: &Op) -> Outcome {
        let key = op.key();
        // `INTF_TABLE:<if>:<prefix>`; an IPv6 prefix has colons of its own.
        match key.split_once(':') {
            Some((ifname, prefix)) => self.interface_address(ifname, prefix, op),
            None => self.router_interface(key, op),
        }
    }

    fn router_interface(&mut self, ifname: &str, op: &Op) -> Outcome {
        if ignored_interface(ifname) {
            return Outcome::Apply(Vec::new());
        }
        match op {
            Op::Set { fields, .. } => {
                let vrf = field(fields, "vrf_name").unwrap_or("").to_owned();
                let vr = if vrf.is_empty() {
                    self.default_vr()
                } else {
                    match self.vrfs.get(&vrf) {
                        Some(vr) => *vr,
                        None => return Outcome::Wait(format!("VRF {vrf} does not exist yet")),
                    }
                };
                if let Some(rif) = self.rifs.get(ifname) {
                    if rif.vr == vr {
                        return Outcome::Apply(Vec::new());
                    }
                    return Outcome::Wait(format!("{ifname} moves to another VRF once its addresses are gone"));
                }
                let mut attrs = vec![(attr::RIF_VR.to_owned(), vr.to_string())];
                if let Some(id) = ifname.strip_prefix("Vlan").and_then(|v| v.parse::<u16>().ok()) {
                    let Some(vlan) = self.vlans.get(&id) else {
                        return Outcome::Wait(format!("{ifname} does not exist yet"));
                    };
                    attrs.push((attr::RIF_TYPE.into(), "SAI_ROUTER_INTERFACE_TYPE_VLAN".into()));
                    attrs.push((attr::RIF_VLAN_ID.into(), vlan.to_string()));
                } else if let Some(port) = self.ports.get(ifname) {
                    attrs.push((attr::RIF_TYPE.into(), "SAI_ROUTER_INTERFACE_TYPE_PORT".into()));
                    attrs.push((attr::RIF_PORT_ID.into(), port.vid.to_string()));
                } else if let Some(lag) = self.lags.get(ifname) {
                    attrs.push((attr::RIF_TYPE.into(), "SAI_ROUTER_INTERFACE_TYPE_PORT".into()));
                    attrs.push((attr::RIF_PORT_ID.into(), lag.to_string()));
                } else {
                    return Outcome::Wait(format!("{ifname} does not exist yet"));
                }
                attrs.push((attr::RIF_SRC_MAC.into(), self.src_mac.clone()));
                let mtu = field(fields, "mtu").and_then(|m| m.parse::<u32>().ok()).unwrap_or(9100);
                attrs.push((attr::RIF_MTU.into(), mtu.to_string()));
                let vid = self.vid(ObjectType::RouterInterface);
                self.rifs.insert(ifname.to_owned(), Rif { vid, vr });
                Outcome::Apply(vec![SaiOp::create(ObjectType::RouterInterface, vid.to_string(), attrs)])
            }
            Op::Del { .. } => {
                let Some(rif) = self.rifs.get(ifname).cloned() else { return Outcome::Apply(Vec::new()) };
                let in_use = self.addresses.keys().any(|(i, _)| i == ifname)
                    || self.nexthops.keys().any(|(_, i)| i == ifname)
                    || self.neighbors.keys().any(|(i, _)| i == ifname)
                    || self.routes.values().any(|r| r.target == RouteTarget::Object(rif.vid));
                if in_use {
                    return Outcome::Wait(format!("{ifname} still has addresses, neighbours or routes"));
                }
                self.rifs.remove(ifname);
                Outcome::Apply(vec![SaiOp::remove(ObjectType::RouterInterface, rif.vid.to_string())])
            }
        }
    }

    /// An interface address: orchagent's IP2ME route (the address itself, to the CPU).
    fn interface_address(&mut self, ifname: &str, prefix: &str, op: &Op) -> Outcome {
        let Some((ip, len)) = parse_prefix(prefix) else {
            return Outcome::Refuse(format!("{prefix:?} is not an address/length"));
        };
        let _ = len;
        let host = format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 });
        let slot = (ifname.to_owned(), prefix.to_owned());
        match op {
            Op::Set { .. } => {
                if self.addresses.contains_key(&slot) {
                    return Outcome::Apply(Vec::new());
                }
                let vr = if ifname.starts_with("Loopback") {
                    self.default_vr()
                } else {
                    match self.rifs.get(ifname) {
                        Some(rif) => rif.vr,
                        None => return Outcome::Wait(format!("{ifname} has no router interface yet")),
                    }
                };
                let key = sai::route_key(&host, vr);
                self.addresses.insert(slot, key.clone());
                Outcome::Apply(vec![SaiOp::create(
                    ObjectType::RouteEntry,
                    key,
                    vec![
                        (attr::ROUTE_PACKET_ACTION.into(), "SAI_PACKET_ACTION_FORWARD".into()),
                        (attr::ROUTE_NEXT_HOP_ID.into(), sai::CPU_PORT.to_string()),
                    ],
                )])
            }
            Op::Del { .. } => match self.addresses.remove(&slot) {
                Some(key) => Outcome::Apply(vec![SaiOp::remove(ObjectType::RouteEntry, key)]),
                None => Outcome::Apply(Vec::new()),
            },
        }
    }

    fn route(&mut self, op: &Op) -> Outcome {
        let key = op.key();
        // `ROUTE_TABLE:<vrf>:<prefix>` when the first part names a VRF (IPv6 has colons too).
        let (vrf, prefix) = match key.split_once(':') {
            Some((vrf, prefix)) if vrf.starts_with("Vrf") => (vrf.to_owned(), prefix),
            _ => (String::new(), key),
        };
        let Some((ip, len)) = parse_prefix(prefix) else {
            return Outcome::Refuse(format!("{prefix:?} is not a prefix"));
        };
        let dest = canonical_prefix(ip, len);
        let vr = if vrf.is_empty() {
            self.default_vr()
        } else {
            match self.vrfs.get(&vrf) {
                Some(vr) => *vr,
                None if matches!(op, Op::Del { .. }) => return Outcome::Apply(Vec::new()),
                None => return Outcome::Wait(format!("VRF {vrf} does not exist yet")),
            }
        };
        let slot = (vrf, dest.clone());
        let route_key = sai::route_key(&dest, vr);
        let fields = match op {
            Op::Del { .. } => {
                let Some(route) = self.routes.remove(&slot) else { return Outcome::Apply(Vec::new()) };
                let mut ops = vec![SaiOp::remove(ObjectType::RouteEntry, route_key)];
                ops.extend(self.release(&route));
                return Outcome::Apply(ops);
            }
            Op::Set { fields, .. } => fields,
        };
        let mut ops = Vec::new();
        let blackhole = field(fields, "blackhole") == Some("true");
        let (target, nexthops, group) = if blackhole {
            (RouteTarget::Drop, Vec::new(), None)
        } else {
            let ifnames: Vec<&str> =
                field(fields, "ifname").unwrap_or("").split(',').filter(|s| !s.is_empty()).collect();
            if ifnames.is_empty() {
                return Outcome::Refuse("a route needs ifname (or blackhole=true)".into());
            }
            let ips: Vec<&str> = field(fields, "nexthop").unwrap_or("").split(',').collect();
            if ifnames.len() > 1 && ips.len() != ifnames.len() {
                return Outcome::Refuse(format!("{} next hops but {} ifnames", ips.len(), ifnames.len()));
            }
            if ifnames.iter().any(|i| ignored_interface(i)) {
                // orchagent keeps such a route out of the ASIC.
                return match self.routes.remove(&slot) {
                    Some(route) => {
                        let mut ops = vec![SaiOp::remove(ObjectType::RouteEntry, route_key)];
                        ops.extend(self.release(&route));
                        Outcome::Apply(ops)
                    }
                    None => Outcome::Apply(Vec::new()),
                };
            }
            let mut hops = Vec::new();
            for (i, ifname) in ifnames.iter().enumerate() {
                let text = ips.get(i).copied().unwrap_or("").trim();
                let ip: IpAddr = if text.is_empty() {
                    if ip.is_ipv4() {
                        "0.0.0.0".parse().expect("literal")
                    } else {
                        "::".parse().expect("literal")
                    }
                } else {
                    match text.parse() {
                        Ok(ip) => ip,
                        Err(_) => return Outcome::Refuse(format!("next hop {text:?} is not an IP address")),
                    }
                };
                let Some(rif) = self.rifs.get(*ifname) else {
                    return Outcome::Wait(format!("{ifname} has no router interface yet"));
                };
                if rif.vr != vr && ip.is_unspecified() {
                    return Outcome::Refuse(format!("{ifname} is in another VRF"));
                }
                hops.push((ip, (*ifname).to_owned()));
            }
            hops.sort();
            hops.dedup();
            if hops.len() == 1 && hops[0].0.is_unspecified() {
                let rif = self.rifs[&hops[0].1].vid;
                (RouteTarget::Object(rif), Vec::new(), None)
            } else {
                let mut vids = Vec::new();
                for hop in &hops {
                    let (vid, created) = self.next_hop(hop);
                    ops.extend(created);
                    vids.push(vid);
                }
                if hops.len() == 1 {
                    (RouteTarget::Object(vids[0]), hops, None)
                } else {
                    let (group, created) = self.group(&hops, &vids);
                    ops.extend(created);
                    (RouteTarget::Object(group), hops.clone(), Some(hops))
                }
            }
        };
        let route = Route { vr, target: target.clone(), nexthops, group };
        match self.routes.insert(slot, route) {
            None => {
                let attrs = match &target {
                    RouteTarget::Drop => vec![(attr::ROUTE_PACKET_ACTION.into(), "SAI_PACKET_ACTION_DROP".into())],
                    RouteTarget::Object(vid) => vec![(attr::ROUTE_NEXT_HOP_ID.into(), vid.to_string())],
                };
                ops.push(SaiOp::create(ObjectType::RouteEntry, route_key, attrs));
            }
            Some(old) => {
                if old.target != target {
                    match &target {
                        RouteTarget::Drop => ops.push(SaiOp::set(
                            ObjectType::RouteEntry,
                            route_key,
                            attr::ROUTE_PACKET_ACTION,
                            "SAI_PACKET_ACTION_DROP",
                        )),
                        RouteTarget::Object(vid) => {
                            ops.push(SaiOp::set(
                                ObjectType::RouteEntry,
                                route_key.clone(),
                                attr::ROUTE_NEXT_HOP_ID,
                                vid.to_string(),
                            ));
                            if old.target == RouteTarget::Drop {
                                ops.push(SaiOp::set(
                                    ObjectType::RouteEntry,
                                    route_key,
                                    attr::ROUTE_PACKET_ACTION,
                                    "SAI_PACKET_ACTION_FORWARD",
                                ));
                            }
                        }
                    }
                }
                ops.extend(self.release(&old));
            }
        }
        Outcome::Apply(ops)
    }

    /// The next hop object for `hop`, with a new reference; creates it first if needed.
    fn next_hop(&mut self, hop: &(IpAddr, String)) -> (Vid, Vec<SaiOp>) {
        if let Some((vid, refs)) = self.nexthops.get_mut(hop) {
            *refs += 1;
            return (*vid, Vec::new());
        }
        let vid = self.vid(ObjectType::NextHop);
        let rif = self.rifs[&hop.1].vid;
        self.nexthops.insert(hop.clone(), (vid, 1));
        (
            vid,
            vec![SaiOp::create(
                ObjectType::NextHop,
                vid.to_string(),
                vec![
                    (attr::NEXT_HOP_TYPE.into(), "SAI_NEXT_HOP_TYPE_IP".into()),
                    (attr::NEXT_HOP_IP.into(), hop.0.to_string()),
                    (attr::NEXT_HOP_RIF.into(), rif.to_string()),
                ],
            )],
        )
    }

    fn group(&mut self, hops: &[(IpAddr, String)], vids: &[Vid]) -> (Vid, Vec<SaiOp>) {
        if let Some(group) = self.groups.get_mut(hops) {
            group.refs += 1;
            return (group.vid, Vec::new());
        }
        let vid = self.vid(ObjectType::NextHopGroup);
        let mut ops = vec![SaiOp::create(
            ObjectType::NextHopGroup,
            vid.to_string(),
            vec![(attr::NHG_TYPE.into(), "SAI_NEXT_HOP_GROUP_TYPE_DYNAMIC_UNORDERED_ECMP".into())],
        )];
        let mut members = Vec::new();
        for nh in vids {
            let member = self.vid(ObjectType::NextHopGroupMember);
            ops.push(SaiOp::create(
                ObjectType::NextHopGroupMember,
                member.to_string(),
                vec![
                    (attr::NHG_MEMBER_GROUP.into(), vid.to_string()),
                    (attr::NHG_MEMBER_NEXT_HOP.into(), nh.to_string()),
                ],
            ));
            members.push(member);
        }
        self.groups.insert(hops.to_vec(), NextHopGroup { vid, members, refs: 1 });
        (vid, ops)
    }

    /// Drops a route's references on its next hops and group; removes what nothing uses.
    fn release(&mut self, route: &Route) -> Vec<SaiOp> {
        let mut ops = Vec::new();
        if let Some(hops) = &route.group {
            if let Some(group) = self.groups.get_mut(hops) {
                group.refs -= 1;
                if group.refs == 0 {
                    let group = self.groups.remove(hops).expect("present");
                    for member in group.members {
                        ops.push(SaiOp::remove(ObjectType::NextHopGroupMember, member.to_string()));
                    }
                    ops.push(SaiOp::remove(ObjectType::NextHopGroup, group.vid.to_string()));
                }
            }
        }
        for hop in &route.nexthops {
            if let Some((vid, refs)) = self.nexthops.get_mut(hop) {
                *refs -= 1;
                if *refs == 0 {
                    ops.push(SaiOp::remove(ObjectType::NextHop, vid.to_string()));
                    self.nexthops.remove(hop);
                }
            }
        }
        ops
    }

    fn neighbor(&mut self, op: &Op) -> Outcome {
        let Some((ifname, ip)) = op.key().split_once(':') else {
            return Outcome::Refuse("a neighbour's key is <ifname>:<ip>".into());
        };
        if ignored_interface(ifname) {
            return Outcome::Apply(Vec::new());
        }
        let Ok(ip) = ip.parse::<IpAddr>() else { return Outcome::Refuse(format!("{ip:?} is not an IP address")) };
        let slot = (ifname.to_owned(), ip);
        match op {
            Op::Set { fields, .. } => {
                let Some(mac) = field(fields, "neigh").filter(|m| is_mac(m)) else {
                    return Outcome::Refuse("neigh (the MAC, aa:bb:cc:dd:ee:ff) is missing or malformed".into());
                };
                let Some(rif) = self.rifs.get(ifname) else {
                    return Outcome::Wait(format!("{ifname} has no router interface yet"));
                };
                let key = sai::neighbor_key(ip, rif.vid);
                let mac = sai::mac_value(mac);
                let ops = match self.neighbors.insert(slot, mac.clone()) {
                    None => {
                        vec![SaiOp::create(ObjectType::NeighborEntry, key, vec![(attr::NEIGHBOR_DST_MAC.into(), mac)])]
                    }
                    Some(old) if old != mac => {
                        vec![SaiOp::set(ObjectType::NeighborEntry, key, attr::NEIGHBOR_DST_MAC, mac)]
                    }
                    Some(_) => Vec::new(),
                };
                Outcome::Apply(ops)
            }
            Op::Del { .. } => {
                if self.neighbors.remove(&slot).is_none() {
                    return Outcome::Apply(Vec::new());
                }
                let rif = self.rifs.get(ifname).map(|r| r.vid).unwrap_or(Vid(0));
                Outcome::Apply(vec![SaiOp::remove(ObjectType::NeighborEntry, sai::neighbor_key(ip, rif))])
            }
        }
    }

    fn lag(&mut self, op: &Op) -> Outcome {
        let name = op.key().to_owned();
        match op {
            Op::Set { .. } if self.lags.contains_key(&name) => Outcome::Apply(Vec::new()),
            Op::Set { .. } => {
                let vid = self.vid(ObjectType::Lag);
                self.lags.insert(name, vid);
                Outcome::Apply(vec![SaiOp::create(ObjectType::Lag, vid.to_string(), Vec::new())])
            }
            Op::Del { .. } => {
                let Some(vid) = self.lags.get(&name).copied() else { return Outcome::Apply(Vec::new()) };
                if self.lag_members.keys().any(|(l, _)| *l == name) || self.rifs.contains_key(&name) {
                    return Outcome::Wait(format!("{name} still has members or an interface"));
                }
                self.lags.remove(&name);
                Outcome::Apply(vec![SaiOp::remove(ObjectType::Lag, vid.to_string())])
            }
        }
    }

    fn lag_member(&mut self, op: &Op) -> Outcome {
        let Some((lag, port)) = op.key().split_once(':') else {
            return Outcome::Refuse("a LAG member's key is <lag>:<port>".into());
        };
        let slot = (lag.to_owned(), port.to_owned());
        match op {
            Op::Set { .. } if self.lag_members.contains_key(&slot) => Outcome::Apply(Vec::new()),
            Op::Set { .. } => {
                let Some(lag_vid) = self.lags.get(lag).copied() else {
                    return Outcome::Wait(format!("{lag} does not exist yet"));
                };
                let Some(port_vid) = self.ports.get(port).map(|p| p.vid) else {
                    return Outcome::Wait(format!("port {port} does not exist yet"));
                };
                let vid = self.vid(ObjectType::LagMember);
                self.lag_members.insert(slot, vid);
                Outcome::Apply(vec![SaiOp::create(
                    ObjectType::LagMember,
                    vid.to_string(),
                    vec![
                        (attr::LAG_MEMBER_LAG_ID.into(), lag_vid.to_string()),
                        (attr::LAG_MEMBER_PORT_ID.into(), port_vid.to_string()),
                    ],
                )])
            }
            Op::Del { .. } => match self.lag_members.remove(&slot) {
                Some(vid) => Outcome::Apply(vec![SaiOp::remove(ObjectType::LagMember, vid.to_string())]),
                None => Outcome::Apply(Vec::new()),
            },
        }
    }
}

/// A virtual router with IPv4 and IPv6 on: the default one and every VRF's.
fn virtual_router(vid: Vid) -> SaiOp {
    SaiOp::create(
        ObjectType::VirtualRouter,
        vid.to_string(),
        vec![(attr::VR_V4.into(), "true".into()), (attr::VR_V6.into(), "true".into())],
    )
}

/// SONiC's default port MTU.
pub const DEFAULT_MTU: u32 = 9100;

/// The SAI port MTU for an interface MTU: portsorch adds the Ethernet header, a VLAN tag and
/// the FCS (14 + 4 + 4).
pub fn sai_mtu(mtu: u32) -> u32 {
    mtu + 22
}

/// Merges `newer` into `fields`: a later value of a field replaces the earlier one.
pub fn merge_fields(fields: &mut Fields, newer: &Fields) {
    for (f, v) in newer {
        match fields.iter_mut().find(|(g, _)| g == f) {
            Some(slot) => slot.1 = v.clone(),
            None => fields.push((f.clone(), v.clone())),
        }
    }
}

fn is_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
}

/// `address/length`, with the length in range for the family.
pub fn parse_prefix(text: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = text.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// The network of `ip/len`, as orchagent keys routes (host bits cleared).
pub fn canonical_prefix(ip: IpAddr, len: u8) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            format!("{}/{len}", std::net::Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            format!("{}/{len}", std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, fields: &[(&str, &str)]) -> Op {
        Op::Set { key: key.into(), fields: fields.iter().map(|(f, v)| ((*f).into(), (*v).into())).collect() }
    }
    fn del(key: &str) -> Op {
        Op::Del { key: key.into() }
    }
    fn ops(outcome: Outcome) -> Vec<SaiOp> {
        match outcome {
            Outcome::Apply(ops) => ops,
            other => panic!("expected ops, got {other:?}"),
        }
    }

    fn switch_with_ports() -> Orch {
        let mut orch = Orch::new("52:54:00:aa:bb:cc");
        orch.start();
        for (i, name) in ["Ethernet0", "Ethernet4", "Ethernet8"].iter().enumerate() {
            let lanes = format!("{}", i * 4);
            assert!(ops(orch.apply("PORT_TABLE", &set(name, &[("lanes", &lanes), ("admin_status", "up")]))).is_empty());
        }
        let created = ops(orch.apply("PORT_TABLE", &set("PortConfigDone", &[("count", "3")])));
        assert_eq!(
            created.iter().filter(|o| o.object_type == ObjectType::Port && o.kind == SaiKind::Create).count(),
            3
        );
        assert_eq!(created.iter().filter(|o| o.object_type == ObjectType::Hostif).count(), 3);
        orch
    }

    #[test]
    fn ports_wait_for_port_config_done_and_get_named() {
        let mut orch = switch_with_ports();
        let notes = orch.take_notes();
        assert_eq!(notes.len(), 3);
        let port = orch.ports().find(|(n, _)| *n == "Ethernet4").unwrap().1;
        assert_eq!(port.object_type(), Some(ObjectType::Port));
        // One attribute per set, as sairedis sends them.
        let changed = ops(orch.apply("PORT_TABLE", &set("Ethernet4", &[("admin_status", "down"), ("mtu", "1500")])));
        assert_eq!(changed.len(), 2);
        assert!(changed.iter().all(|o| o.kind == SaiKind::Set && o.attrs.len() == 1));
        assert!(matches!(orch.apply("PORT_TABLE", &set("Ethernet4", &[("mtu", "big")])), Outcome::Refuse(_)));
    }

    #[test]
    fn vlan_members_wait_for_their_vlan_and_get_a_bridge_port() {
        let mut orch = switch_with_ports();
        assert!(matches!(orch.apply("VLAN_MEMBER_TABLE", &set("Vlan10:Ethernet0", &[])), Outcome::Wait(_)));
        let vlan = ops(orch.apply("VLAN_TABLE", &set("Vlan10", &[("admin_status", "up")])));
        assert_eq!(vlan[0].attrs, vec![(attr::VLAN_ID.to_owned(), "10".to_owned())]);
        let member = ops(orch.apply("VLAN_MEMBER_TABLE", &set("Vlan10:Ethernet0", &[("tagging_mode", "untagged")])));
        let kinds: Vec<_> = member.iter().map(|o| (o.kind, o.object_type)).collect();
        assert_eq!(
            kinds,
            vec![
                (SaiKind::Create, ObjectType::BridgePort),
                (SaiKind::Create, ObjectType::VlanMember),
                (SaiKind::Set, ObjectType::Port)
            ]
        );
        assert!(matches!(orch.apply("VLAN_TABLE", &del("Vlan10")), Outcome::Wait(_)), "members first");
        let gone = ops(orch.apply("VLAN_MEMBER_TABLE", &del("Vlan10:Ethernet0")));
        assert_eq!(gone.last().unwrap().object_type, ObjectType::BridgePort);
        assert!(matches!(
            orch.apply("VLAN_MEMBER_TABLE", &set("Vlan10:Ethernet0", &[("tagging_mode", "odd")])),
            Outcome::Refuse(_)
        ));
    }

    #[test]
    fn routes_wait_for_vrf_and_rif_and_share_next_hops() {
        let mut orch = switch_with_ports();
        assert!(matches!(
            orch.apply("ROUTE_TABLE", &set("10.1.0.0/24", &[("nexthop", "10.0.0.2"), ("ifname", "Ethernet0")])),
            Outcome::Wait(_)
        ));
        ops(orch.apply("INTF_TABLE", &set("Ethernet0", &[("NULL", "NULL")])));
        ops(orch.apply("INTF_TABLE", &set("Ethernet4", &[("NULL", "NULL")])));
        let ip2me = ops(orch.apply("INTF_TABLE", &set("Ethernet0:10.0.0.1/31", &[("scope", "global")])));
        assert!(ip2me[0].id.contains(r#""dest":"10.0.0.1/32""#));
        let first =
            ops(orch.apply("ROUTE_TABLE", &set("10.1.0.0/24", &[("nexthop", "10.0.0.2"), ("ifname", "Ethernet0")])));
        assert_eq!(
            first.iter().map(|o| o.object_type).collect::<Vec<_>>(),
            vec![ObjectType::NextHop, ObjectType::RouteEntry]
        );
        let second =
            ops(orch.apply("ROUTE_TABLE", &set("10.2.0.5/24", &[("nexthop", "10.0.0.2"), ("ifname", "Ethernet0")])));
        assert_eq!(second.len(), 1, "the next hop is shared");
        assert!(second[0].id.contains(r#""dest":"10.2.0.0/24""#), "host bits cleared");
        let ecmp = ops(orch.apply(
            "ROUTE_TABLE",
            &set("10.3.0.0/24", &[("nexthop", "10.0.0.2,10.0.1.2"), ("ifname", "Ethernet0,Ethernet4")]),
        ));
        assert_eq!(ecmp.iter().filter(|o| o.object_type == ObjectType::NextHopGroupMember).count(), 2);
        let connected =
            ops(orch.apply("ROUTE_TABLE", &set("10.0.0.0/31", &[("nexthop", "0.0.0.0"), ("ifname", "Ethernet0")])));
        assert_eq!(connected.len(), 1);
        assert!(connected[0].attrs[0].1.starts_with("oid:0x6"), "straight to the RIF");
        let removed = ops(orch.apply("ROUTE_TABLE", &del("10.3.0.0/24")));
        assert_eq!(
            removed.iter().filter(|o| o.kind == SaiKind::Remove).count(),
            1 + 2 + 1 + 1,
            "route, members, group, 10.0.1.2"
        );
        assert!(matches!(
            orch.apply("ROUTE_TABLE", &set("10.9.0.0/33", &[("ifname", "Ethernet0")])),
            Outcome::Refuse(_)
        ));
        assert!(matches!(
            orch.apply("ROUTE_TABLE", &set("10.9.0.0/16", &[("nexthop", "10.0.0.2")])),
            Outcome::Refuse(_)
        ));
        assert!(matches!(
            orch.apply("ROUTE_TABLE", &set("Vrf-x:10.9.0.0/16", &[("blackhole", "true")])),
            Outcome::Wait(_)
        ));
        let blackhole = ops(orch.apply("ROUTE_TABLE", &set("192.0.2.0/24", &[("blackhole", "true")])));
        assert_eq!(blackhole[0].attrs[0].1, "SAI_PACKET_ACTION_DROP");
    }

    #[test]
    fn vrfs_are_virtual_routers_with_a_state_marker() {
        let mut orch = switch_with_ports();
        orch.take_notes();
        ops(orch.apply("VRF_TABLE", &set("Vrf-red", &[("NULL", "NULL")])));
        assert_eq!(orch.take_notes(), vec![Note::VrfReady { name: "Vrf-red".into(), ready: true }]);
        ops(orch.apply("INTF_TABLE", &set("Ethernet8", &[("vrf_name", "Vrf-red")])));
        let route = ops(orch
            .apply("ROUTE_TABLE", &set("Vrf-red:10.9.0.0/16", &[("nexthop", "10.0.20.0"), ("ifname", "Ethernet8")])));
        let vr = orch.vrfs["Vrf-red"];
        assert!(route.last().unwrap().id.contains(&vr.to_string()));
        assert!(matches!(orch.apply("VRF_TABLE", &del("Vrf-red")), Outcome::Wait(_)));
    }

    #[test]
    fn neighbours_need_a_mac() {
        let mut orch = switch_with_ports();
        ops(orch.apply("INTF_TABLE", &set("Ethernet0", &[("NULL", "NULL")])));
        assert!(matches!(
            orch.apply("NEIGH_TABLE", &set("Ethernet0:10.0.0.2", &[("family", "IPv4")])),
            Outcome::Refuse(_)
        ));
        let created = ops(orch.apply("NEIGH_TABLE", &set("Ethernet0:10.0.0.2", &[("neigh", "00:11:22:aa:bb:cc")])));
        assert_eq!(created[0].attrs[0].1, "00:11:22:AA:BB:CC");
        assert!(matches!(
            orch.apply("NEIGH_TABLE", &set("Ethernet0:10.0.0.999", &[("neigh", "00:11:22:aa:bb:cc")])),
            Outcome::Refuse(_)
        ));
    }

    #[test]
    fn prefixes_are_checked_and_canonical() {
        assert_eq!(parse_prefix("10.0.0.1/24").map(|(ip, l)| canonical_prefix(ip, l)), Some("10.0.0.0/24".into()));
        assert_eq!(parse_prefix("fc00::1/64").map(|(ip, l)| canonical_prefix(ip, l)), Some("fc00::/64".into()));
        assert_eq!(parse_prefix("10.0.0.1/40"), None);
        assert_eq!(parse_prefix("10.0.0.1"), None);
    }
}
