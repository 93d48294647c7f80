//! The virtual syncd's software SAI: what each SAI operation means to the Linux kernel. Pure:
//! [`Sai::plan`] turns an operation into [`KernelOp`]s; the runner carries them out and only
//! then [`Sai::commit`]s the operation and writes ASIC_STATE, as syncd in sync mode does.
//!
//! The model asks only for what every Linux kernel has (the CI kernel has no 802.1Q, no VRF
//! driver, no vlan-filtering bridge and no dummy netdevs):
//! - front-panel ports are netdevs named as the hostifs say (`Ethernet0`); a port nothing is
//!   cabled to is a veth whose peer stays down (oper down, like an empty cage);
//! - a VLAN is a Linux bridge named `Vlan<id>`: untagged members are enslaved to it, tagged
//!   members through a `<port>.<id>` 802.1Q device where the kernel has 802.1Q; the bridge is
//!   also the VLAN's router interface, as SONiC's `Vlan<id>` netdev is;
//! - a virtual router is a routing table (the default one: `main`); its router interfaces
//!   send what they receive to it by a policy rule (`iif <dev> lookup <table>`);
//! - routes and neighbours are kernel routes (ECMP as multipath) and permanent neighbours.
//!
//! An interface address reaches the kernel as orchagent expresses it to the SAI: an IP2ME
//! route (to the CPU port) inside a connected route (to a router interface) becomes the
//! address on that interface.

use std::collections::HashMap;
use std::net::IpAddr;

use super::orch::{parse_prefix, SaiKind, SaiOp};
use super::sai::{self, attr, ObjectType, Vid};
use crate::db::Fields;

/// The default virtual router's kernel table.
pub const MAIN_TABLE: u32 = 254;

/// Where a kernel route leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteVia {
    Blackhole,
    /// Directly connected on a device.
    Dev(String),
    /// Through gateways, one or more (ECMP).
    Gateways(Vec<(IpAddr, String)>),
}

/// One change to the kernel, in the terms of the [`super::kernel::Kernel`] port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelOp {
    /// A new switch: whatever a previous syncd programmed goes; forwarding is on.
    Reset,
    /// A front-panel netdev exists (a stand-in if nothing was cabled to it).
    Port {
        name: String,
    },
    Admin {
        dev: String,
        up: bool,
    },
    Mtu {
        dev: String,
        mtu: u32,
    },
    /// The bridge `Vlan<vid>`.
    Vlan {
        vid: u16,
        add: bool,
    },
    /// A port in a VLAN, untagged (enslaved) or tagged (through `<port>.<vid>`).
    Member {
        dev: String,
        vid: u16,
        tagged: bool,
        add: bool,
    },
    /// What `dev` receives is routed in `table`.
    VrfMember {
        dev: String,
        table: u32,
        add: bool,
    },
    Address {
        dev: String,
        ip: IpAddr,
        len: u8,
        add: bool,
    },
    Route {
        table: u32,
        dest: (IpAddr, u8),
        via: RouteVia,
        add: bool,
    },
    Neighbor {
        dev: String,
        ip: IpAddr,
        mac: String,
        add: bool,
    },
}

#[derive(Debug, Clone)]
struct Object {
    object_type: ObjectType,
    attrs: Fields,
}

fn get<'a>(attrs: &'a Fields, name: &str) -> Option<&'a str> {
    attrs.iter().rev().find(|(f, _)| f == name).map(|(_, v)| v.as_str())
}

/// A SAI status name for a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: &'static str,
    pub reason: String,
}

fn invalid(reason: impl Into<String>) -> Refusal {
    Refusal { status: "SAI_STATUS_INVALID_PARAMETER", reason: reason.into() }
}
fn missing(reason: impl Into<String>) -> Refusal {
    Refusal { status: "SAI_STATUS_ITEM_NOT_FOUND", reason: reason.into() }
}

/// The software SAI's objects.
#[derive(Debug, Default)]
pub struct Sai {
    objects: HashMap<String, Object>,
    default_vr: Option<String>,
    /// Indexes over `objects`: port id -> netdev (from hostifs), group id -> member keys.
    netdevs: HashMap<String, String>,
    group_members: HashMap<String, Vec<String>>,
}

impl Sai {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an object with this `<TYPE>:<id>` key exists.
    pub fn exists(&self, key: &str) -> bool {
        self.objects.contains_key(key)
    }

    fn attrs_of(&self, object_type: ObjectType, id: &str) -> Option<&Fields> {
        self.objects.get(&sai::object_key(object_type, id)).map(|o| &o.attrs)
    }

    /// The port VIDs and their netdev names (from the hostifs).
    pub fn port_netdevs(&self) -> Vec<(Vid, String)> {
        self.netdevs.iter().filter_map(|(port, name)| Some((Vid::parse(port)?, name.clone()))).collect()
    }

    fn port_netdev(&self, port: &str) -> Option<String> {
        self.netdevs.get(port).cloned()
    }

    fn vlan_number(&self, vlan: &str) -> Option<u16> {
        self.attrs_of(ObjectType::Vlan, vlan)?.iter().find(|(f, _)| f == attr::VLAN_ID)?.1.parse().ok()
    }

    /// A virtual router's kernel table.
    fn table(&self, vr: &str) -> Option<u32> {
        if self.default_vr.as_deref() == Some(vr) {
            return Some(MAIN_TABLE);
        }
        self.attrs_of(ObjectType::VirtualRouter, vr)?;
        Some(1000 + Vid::parse(vr)?.index() as u32)
    }

    /// A router interface's netdev and its virtual router.
    fn rif(&self, rif: &str) -> Option<(String, String)> {
        let attrs = self.attrs_of(ObjectType::RouterInterface, rif)?;
        let vr = get(attrs, attr::RIF_VR)?.to_owned();
        let dev = match get(attrs, attr::RIF_TYPE)? {
            "SAI_ROUTER_INTERFACE_TYPE_VLAN" => format!("Vlan{}", self.vlan_number(get(attrs, attr::RIF_VLAN_ID)?)?),
            _ => self.port_netdev(get(attrs, attr::RIF_PORT_ID)?)?,
        };
        Some((dev, vr))
    }

    /// A bridge port's netdev.
    fn bridge_port_dev(&self, bridge_port: &str) -> Option<String> {
        let attrs = self.attrs_of(ObjectType::BridgePort, bridge_port)?;
        self.port_netdev(get(attrs, attr::BRIDGE_PORT_PORT_ID)?)
    }

    fn route_via(&self, attrs: &Fields) -> Result<RouteVia, Refusal> {
        if get(attrs, attr::ROUTE_PACKET_ACTION) == Some("SAI_PACKET_ACTION_DROP") {
            return Ok(RouteVia::Blackhole);
        }
        let target = get(attrs, attr::ROUTE_NEXT_HOP_ID).ok_or_else(|| invalid("a route needs a next hop or DROP"))?;
        let vid = Vid::parse(target).ok_or_else(|| invalid(format!("{target} is not an object id")))?;
        match vid.object_type() {
            Some(ObjectType::RouterInterface) => {
                Ok(RouteVia::Dev(self.rif(target).ok_or_else(|| missing(format!("router interface {target}")))?.0))
            }
            Some(ObjectType::NextHop) => Ok(RouteVia::Gateways(vec![self.next_hop(target)?])),
            Some(ObjectType::NextHopGroup) => {
                let mut hops: Vec<(IpAddr, String)> = Vec::new();
                for member in self.group_members.get(target).into_iter().flatten() {
                    let Some(member) = self.objects.get(member) else { continue };
                    let nh = get(&member.attrs, attr::NHG_MEMBER_NEXT_HOP).unwrap_or_default();
                    hops.push(self.next_hop(nh)?);
                }
                if hops.is_empty() {
                    return Err(invalid(format!("next hop group {target} has no members")));
                }
                hops.sort();
                Ok(RouteVia::Gateways(hops))
            }
            _ if vid == sai::CPU_PORT => Ok(RouteVia::Dev(String::new())),
            _ => Err(invalid(format!("{target} cannot be a route's next hop"))),
        }
    }

    fn next_hop(&self, nh: &str) -> Result<(IpAddr, String), Refusal> {
        let attrs = self.attrs_of(ObjectType::NextHop, nh).ok_or_else(|| missing(format!("next hop {nh}")))?;
        let ip = get(attrs, attr::NEXT_HOP_IP)
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| invalid("next hop without IP"))?;
        let rif = get(attrs, attr::NEXT_HOP_RIF).unwrap_or_default();
        let (dev, _) = self.rif(rif).ok_or_else(|| missing(format!("router interface {rif}")))?;
        Ok((ip, dev))
    }

    /// The IP2ME route entries and connected routes of one virtual router, to pair addresses
    /// with interfaces: (ip, connected (dev, len)).
    fn address_for(&self, vr: &str, ip: IpAddr) -> Option<(String, u8)> {
        self.objects
            .iter()
            .filter(|(_, o)| o.object_type == ObjectType::RouteEntry)
            .filter_map(|(key, o)| {
                let (_, id) = sai::split_key(key)?;
                let entry: sai::RouteKey = serde_json::from_str(id).ok()?;
                if entry.vr != vr {
                    return None;
                }
                let (net, len) = parse_prefix(&entry.dest)?;
                let target = get(&o.attrs, attr::ROUTE_NEXT_HOP_ID)?;
                let (dev, _) = self.rif(target)?;
                contains(net, len, ip).then_some((dev, len))
            })
            .max_by_key(|(_, len)| *len)
    }

    /// IP2ME entries of `vr` inside `net/len`.
    fn local_addresses_in(&self, vr: &str, net: IpAddr, len: u8) -> Vec<IpAddr> {
        self.objects
            .iter()
            .filter(|(_, o)| {
                o.object_type == ObjectType::RouteEntry
                    && get(&o.attrs, attr::ROUTE_NEXT_HOP_ID) == Some(sai::CPU_PORT.to_string().as_str())
            })
            .filter_map(|(key, _)| {
                let (_, id) = sai::split_key(key)?;
                let entry: sai::RouteKey = serde_json::from_str(id).ok()?;
                let (ip, _) = parse_prefix(&entry.dest)?;
                (entry.vr == vr && contains(net, len, ip)).then_some(ip)
            })
            .collect()
    }

    /// What `op` means to the kernel, or why the SAI refuses it. Changes nothing.
    pub fn plan(&self, op: &SaiOp) -> Result<Vec<KernelOp>, Refusal> {
        let key = op.key();
        match op.kind {
            SaiKind::Create if self.objects.contains_key(&key) => {
                return Err(Refusal { status: "SAI_STATUS_ITEM_ALREADY_EXISTS", reason: key })
            }
            SaiKind::Set | SaiKind::Remove if !self.objects.contains_key(&key) => {
                return Err(missing(format!("{key} does not exist")))
            }
            _ => {}
        }
        let current = self.objects.get(&key).map(|o| o.attrs.clone()).unwrap_or_default();
        let attrs = match op.kind {
            SaiKind::Create => op.attrs.clone(),
            SaiKind::Set => {
                let mut merged = current.clone();
                for (f, v) in &op.attrs {
                    merged.retain(|(g, _)| g != f);
                    merged.push((f.clone(), v.clone()));
                }
                merged
            }
            SaiKind::Remove => current.clone(),
        };
        let add = op.kind != SaiKind::Remove;
        match op.object_type {
            ObjectType::Switch => Ok(if op.kind == SaiKind::Create { vec![KernelOp::Reset] } else { Vec::new() }),
            // A table needs no creating; its routes and rules go with them.
            ObjectType::VirtualRouter => Ok(Vec::new()),
            ObjectType::Port => {
                let Some(dev) = self.port_netdev(&op.id) else { return Ok(Vec::new()) };
                let mut ops = Vec::new();
                if op.kind == SaiKind::Set {
                    for (f, v) in &op.attrs {
                        match f.as_str() {
                            attr::PORT_ADMIN_STATE => ops.push(KernelOp::Admin { dev: dev.clone(), up: v == "true" }),
                            attr::PORT_MTU => {
                                let sai_mtu: u32 = v.parse().map_err(|_| invalid(format!("MTU {v:?}")))?;
                                // The netdev's MTU is the SAI's less the L2 overhead.
                                let mtu = sai_mtu
                                    .checked_sub(22)
                                    .filter(|m| *m >= 68)
                                    .ok_or_else(|| invalid(format!("MTU {v}")))?;
                                ops.push(KernelOp::Mtu { dev: dev.clone(), mtu });
                            }
                            _ => {}
                        }
                    }
                }
                Ok(ops)
            }
            ObjectType::Hostif => {
                let name = get(&attrs, attr::HOSTIF_NAME).ok_or_else(|| invalid("a hostif needs a name"))?;
                let port = get(&attrs, attr::HOSTIF_OBJ_ID).unwrap_or_default();
                let port_attrs =
                    self.attrs_of(ObjectType::Port, port).ok_or_else(|| missing(format!("port {port}")))?;
                if !add {
                    return Ok(Vec::new());
                }
                let mut ops = vec![KernelOp::Port { name: name.to_owned() }];
                if let Some(mtu) = get(port_attrs, attr::PORT_MTU).and_then(|m| m.parse::<u32>().ok()) {
                    ops.push(KernelOp::Mtu { dev: name.to_owned(), mtu: mtu.saturating_sub(22).max(68) });
                }
                ops.push(KernelOp::Admin {
                    dev: name.to_owned(),
                    up: get(port_attrs, attr::PORT_ADMIN_STATE) == Some("true"),
                });
                Ok(ops)
            }
            ObjectType::BridgePort => {
                if add {
                    let port = get(&attrs, attr::BRIDGE_PORT_PORT_ID).unwrap_or_default();
                    self.port_netdev(port).ok_or_else(|| missing(format!("port {port} has no netdev")))?;
                }
                Ok(Vec::new())
            }
            ObjectType::Vlan => {
                if op.kind == SaiKind::Set {
                    return Ok(Vec::new());
                }
                let vid = get(&attrs, attr::VLAN_ID)
                    .and_then(|v| v.parse::<u16>().ok())
                    .filter(|v| (1..=4094).contains(v))
                    .ok_or_else(|| invalid("SAI_VLAN_ATTR_VLAN_ID is missing or out of range"))?;
                Ok(vec![KernelOp::Vlan { vid, add }])
            }
            ObjectType::VlanMember => {
                let vlan = get(&attrs, attr::VLAN_MEMBER_VLAN_ID).unwrap_or_default();
                let vid = self.vlan_number(vlan).ok_or_else(|| missing(format!("VLAN {vlan}")))?;
                let bridge_port = get(&attrs, attr::VLAN_MEMBER_BRIDGE_PORT_ID).unwrap_or_default();
                let dev =
                    self.bridge_port_dev(bridge_port).ok_or_else(|| missing(format!("bridge port {bridge_port}")))?;
                let tagged =
                    |a: &Fields| get(a, attr::VLAN_MEMBER_TAGGING_MODE) == Some("SAI_VLAN_TAGGING_MODE_TAGGED");
                let mut ops = Vec::new();
                if op.kind == SaiKind::Set {
                    ops.push(KernelOp::Member { dev: dev.clone(), vid, tagged: tagged(&current), add: false });
                }
                ops.push(KernelOp::Member { dev, vid, tagged: tagged(&attrs), add });
                Ok(ops)
            }
            ObjectType::RouterInterface => {
                let vr = get(&attrs, attr::RIF_VR).unwrap_or_default().to_owned();
                let table = self.table(&vr).ok_or_else(|| missing(format!("virtual router {vr}")))?;
                let dev = match get(&attrs, attr::RIF_TYPE) {
                    Some("SAI_ROUTER_INTERFACE_TYPE_VLAN") => {
                        let vlan = get(&attrs, attr::RIF_VLAN_ID).unwrap_or_default();
                        format!("Vlan{}", self.vlan_number(vlan).ok_or_else(|| missing(format!("VLAN {vlan}")))?)
                    }
                    Some("SAI_ROUTER_INTERFACE_TYPE_PORT") => {
                        let port = get(&attrs, attr::RIF_PORT_ID).unwrap_or_default();
                        match Vid::parse(port).and_then(Vid::object_type) {
                            // A LAG has no netdev in the virtual ASIC: its RIF is bookkeeping.
                            Some(ObjectType::Lag) => return Ok(Vec::new()),
                            _ => self.port_netdev(port).ok_or_else(|| missing(format!("port {port} has no netdev")))?,
                        }
                    }
                    Some("SAI_ROUTER_INTERFACE_TYPE_LOOPBACK") => return Ok(Vec::new()),
                    other => return Err(invalid(format!("router interface type {other:?}"))),
                };
                if op.kind == SaiKind::Set || table == MAIN_TABLE {
                    return Ok(Vec::new());
                }
                Ok(vec![KernelOp::VrfMember { dev, table, add }])
            }
            ObjectType::NextHop => {
                if add {
                    let rif = get(&attrs, attr::NEXT_HOP_RIF).unwrap_or_default();
                    self.rif(rif).ok_or_else(|| missing(format!("router interface {rif}")))?;
                    get(&attrs, attr::NEXT_HOP_IP)
                        .and_then(|ip| ip.parse::<IpAddr>().ok())
                        .ok_or_else(|| invalid("SAI_NEXT_HOP_ATTR_IP is missing or malformed"))?;
                }
                Ok(Vec::new())
            }
            ObjectType::NextHopGroup
            | ObjectType::NextHopGroupMember
            | ObjectType::Lag
            | ObjectType::LagMember
            | ObjectType::Bridge => Ok(Vec::new()),
            ObjectType::RouteEntry => {
                let entry: sai::RouteKey =
                    serde_json::from_str(&op.id).map_err(|e| invalid(format!("route entry key: {e}")))?;
                let (dest_ip, len) =
                    parse_prefix(&entry.dest).ok_or_else(|| invalid(format!("dest {:?}", entry.dest)))?;
                let table = self.table(&entry.vr).ok_or_else(|| missing(format!("virtual router {}", entry.vr)))?;
                let old = if op.kind == SaiKind::Create { None } else { Some(self.route_via(&current)?) };
                let new = self.route_via(&attrs)?;
                let mut ops = Vec::new();
                // An IP2ME entry: the address, on the interface whose connected route holds it.
                let ip2me = |via: &RouteVia| matches!(via, RouteVia::Dev(d) if d.is_empty());
                if let Some(old) = &old {
                    if ip2me(old) {
                        if let Some((dev, plen)) = self.address_for(&entry.vr, dest_ip) {
                            ops.push(KernelOp::Address { dev, ip: dest_ip, len: plen, add: false });
                        }
                    } else {
                        ops.push(KernelOp::Route { table, dest: (dest_ip, len), via: old.clone(), add: false });
                    }
                }
                if add {
                    if ip2me(&new) {
                        if let Some((dev, plen)) = self.address_for(&entry.vr, dest_ip) {
                            ops.push(KernelOp::Address { dev, ip: dest_ip, len: plen, add: true });
                        }
                    } else {
                        if let RouteVia::Dev(dev) = &new {
                            for ip in self.local_addresses_in(&entry.vr, dest_ip, len) {
                                ops.push(KernelOp::Address { dev: dev.clone(), ip, len, add: true });
                            }
                        }
                        ops.push(KernelOp::Route { table, dest: (dest_ip, len), via: new, add: true });
                    }
                }
                Ok(ops)
            }
            ObjectType::NeighborEntry => {
                let entry: sai::NeighborKey =
                    serde_json::from_str(&op.id).map_err(|e| invalid(format!("neighbour entry key: {e}")))?;
                let ip: IpAddr = entry.ip.parse().map_err(|_| invalid(format!("neighbour ip {:?}", entry.ip)))?;
                let (dev, _) =
                    self.rif(&entry.rif).ok_or_else(|| missing(format!("router interface {}", entry.rif)))?;
                let mac = get(&attrs, attr::NEIGHBOR_DST_MAC).ok_or_else(|| invalid("a neighbour needs its MAC"))?;
                Ok(vec![KernelOp::Neighbor { dev, ip, mac: mac.to_owned(), add }])
            }
        }
    }

    /// Records `op` as done (after the kernel accepted it); returns the object's attributes
    /// now, or `None` once removed.
    pub fn commit(&mut self, op: &SaiOp) -> Option<Fields> {
        let key = op.key();
        self.index(op, &key);
        match op.kind {
            SaiKind::Create => {
                if op.object_type == ObjectType::VirtualRouter && self.default_vr.is_none() {
                    self.default_vr = Some(op.id.clone());
                }
                self.objects.insert(key, Object { object_type: op.object_type, attrs: op.attrs.clone() });
                Some(op.attrs.clone())
            }
            SaiKind::Set => {
                let object = self.objects.get_mut(&key)?;
                for (f, v) in &op.attrs {
                    object.attrs.retain(|(g, _)| g != f);
                    object.attrs.push((f.clone(), v.clone()));
                }
                Some(object.attrs.clone())
            }
            SaiKind::Remove => {
                self.objects.remove(&key);
                None
            }
        }
    }
}

impl Sai {
    fn index(&mut self, op: &SaiOp, key: &str) {
        let attrs = match op.kind {
            SaiKind::Remove => self.objects.get(key).map(|o| o.attrs.clone()).unwrap_or_default(),
            _ => op.attrs.clone(),
        };
        let add = op.kind == SaiKind::Create;
        match op.object_type {
            ObjectType::Hostif => {
                if let (Some(port), Some(name)) = (get(&attrs, attr::HOSTIF_OBJ_ID), get(&attrs, attr::HOSTIF_NAME)) {
                    if add {
                        self.netdevs.insert(port.to_owned(), name.to_owned());
                    } else if op.kind == SaiKind::Remove {
                        self.netdevs.remove(port);
                    }
                }
            }
            ObjectType::NextHopGroupMember => {
                if let Some(group) = get(&attrs, attr::NHG_MEMBER_GROUP) {
                    let members = self.group_members.entry(group.to_owned()).or_default();
                    if add {
                        members.push(key.to_owned());
                    } else if op.kind == SaiKind::Remove {
                        members.retain(|m| m != key);
                    }
                }
            }
            _ => {}
        }
    }
}

fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::orch::{Orch, Outcome};
    use super::*;
    use crate::db::Op;

    fn set(key: &str, fields: &[(&str, &str)]) -> Op {
        Op::Set { key: key.into(), fields: fields.iter().map(|(f, v)| ((*f).into(), (*v).into())).collect() }
    }

    /// Runs orch's operations through the software SAI, collecting the kernel's work.
    fn drive(orch: &mut Orch, sai: &mut Sai, table: &str, op: Op) -> Vec<KernelOp> {
        let Outcome::Apply(ops) = orch.apply(table, &op) else { panic!("{op:?} did not apply") };
        run(sai, ops)
    }

    fn run(sai: &mut Sai, ops: Vec<SaiOp>) -> Vec<KernelOp> {
        let mut kernel = Vec::new();
        for op in ops {
            kernel.extend(sai.plan(&op).unwrap_or_else(|r| panic!("{op:?} refused: {r:?}")));
            sai.commit(&op);
        }
        kernel
    }

    fn switch() -> (Orch, Sai) {
        let mut orch = Orch::new("52:54:00:00:00:01");
        let mut sai = Sai::new();
        assert_eq!(run(&mut sai, orch.start()), vec![KernelOp::Reset]);
        for (i, name) in ["Ethernet0", "Ethernet4", "Ethernet8"].iter().enumerate() {
            let lanes = (i * 4).to_string();
            drive(&mut orch, &mut sai, "PORT_TABLE", set(name, &[("lanes", &lanes), ("admin_status", "up")]));
        }
        let kernel = drive(&mut orch, &mut sai, "PORT_TABLE", set("PortConfigDone", &[("count", "3")]));
        assert!(kernel.contains(&KernelOp::Port { name: "Ethernet4".into() }));
        assert!(kernel.contains(&KernelOp::Admin { dev: "Ethernet4".into(), up: true }));
        (orch, sai)
    }

    #[test]
    fn a_vlan_is_a_bridge_and_an_svi_gets_its_address() {
        let (mut orch, mut sai) = switch();
        let vlan = drive(&mut orch, &mut sai, "VLAN_TABLE", set("Vlan10", &[("admin_status", "up")]));
        assert_eq!(vlan, vec![KernelOp::Vlan { vid: 10, add: true }]);
        let member =
            drive(&mut orch, &mut sai, "VLAN_MEMBER_TABLE", set("Vlan10:Ethernet0", &[("tagging_mode", "untagged")]));
        assert_eq!(member, vec![KernelOp::Member { dev: "Ethernet0".into(), vid: 10, tagged: false, add: true }]);
        let retag =
            drive(&mut orch, &mut sai, "VLAN_MEMBER_TABLE", set("Vlan10:Ethernet0", &[("tagging_mode", "tagged")]));
        assert_eq!(retag.last(), Some(&KernelOp::Member { dev: "Ethernet0".into(), vid: 10, tagged: true, add: true }));
        let svi = drive(&mut orch, &mut sai, "INTF_TABLE", set("Vlan10", &[("NULL", "NULL")]));
        assert!(svi.is_empty(), "the VLAN's bridge is its router interface in the default table");
        // The IP2ME route alone has no interface yet; the connected route brings it.
        assert!(drive(&mut orch, &mut sai, "INTF_TABLE", set("Vlan10:10.0.10.1/24", &[("scope", "global")])).is_empty());
        let connected = drive(
            &mut orch,
            &mut sai,
            "ROUTE_TABLE",
            set("10.0.10.0/24", &[("nexthop", "0.0.0.0"), ("ifname", "Vlan10")]),
        );
        let ip: IpAddr = "10.0.10.1".parse().unwrap();
        assert_eq!(connected[0], KernelOp::Address { dev: "Vlan10".into(), ip, len: 24, add: true });
        assert!(
            matches!(&connected[1], KernelOp::Route { table: MAIN_TABLE, via: RouteVia::Dev(d), add: true, .. } if d == "Vlan10")
        );
    }

    #[test]
    fn ecmp_routes_and_vrfs_reach_their_tables() {
        let (mut orch, mut sai) = switch();
        drive(&mut orch, &mut sai, "INTF_TABLE", set("Ethernet0", &[("NULL", "NULL")]));
        drive(&mut orch, &mut sai, "INTF_TABLE", set("Ethernet4", &[("NULL", "NULL")]));
        let ecmp = drive(
            &mut orch,
            &mut sai,
            "ROUTE_TABLE",
            set("10.5.0.0/16", &[("nexthop", "10.0.0.1,10.0.1.1"), ("ifname", "Ethernet0,Ethernet4")]),
        );
        let KernelOp::Route { via: RouteVia::Gateways(hops), .. } = &ecmp[0] else { panic!("{ecmp:?}") };
        assert_eq!(hops.len(), 2);
        assert!(drive(&mut orch, &mut sai, "VRF_TABLE", set("Vrf-red", &[("NULL", "NULL")])).is_empty());
        let rif = drive(&mut orch, &mut sai, "INTF_TABLE", set("Ethernet8", &[("vrf_name", "Vrf-red")]));
        let [KernelOp::VrfMember { dev, table, add: true }] = rif.as_slice() else { panic!("{rif:?}") };
        assert_eq!(dev, "Ethernet8");
        assert_ne!(*table, MAIN_TABLE);
        let route = drive(
            &mut orch,
            &mut sai,
            "ROUTE_TABLE",
            set("Vrf-red:10.9.0.0/16", &[("nexthop", "10.0.20.0"), ("ifname", "Ethernet8")]),
        );
        assert!(matches!(&route[0], KernelOp::Route { table: t, .. } if t == table));
        let blackhole = drive(&mut orch, &mut sai, "ROUTE_TABLE", set("192.0.2.0/24", &[("blackhole", "true")]));
        assert!(matches!(&blackhole[0], KernelOp::Route { via: RouteVia::Blackhole, .. }));
    }

    #[test]
    fn the_sai_refuses_what_does_not_exist() {
        let (_, sai) = switch();
        let bogus = SaiOp {
            kind: SaiKind::Create,
            object_type: ObjectType::NextHop,
            id: Vid::new(ObjectType::NextHop, 999).to_string(),
            attrs: vec![
                (attr::NEXT_HOP_IP.into(), "10.0.0.1".into()),
                (attr::NEXT_HOP_RIF.into(), Vid::new(ObjectType::RouterInterface, 999).to_string()),
            ],
        };
        assert_eq!(sai.plan(&bogus).unwrap_err().status, "SAI_STATUS_ITEM_NOT_FOUND");
        let route = SaiOp {
            kind: SaiKind::Create,
            object_type: ObjectType::RouteEntry,
            id: "{not json".into(),
            attrs: Vec::new(),
        };
        assert_eq!(sai.plan(&route).unwrap_err().status, "SAI_STATUS_INVALID_PARAMETER");
    }
}
