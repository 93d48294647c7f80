//! The kernel adapter: [`KernelOp`]s over rtnetlink. The only module that imports rtnetlink
//! and netlink-packet-route.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoVrf, LinkAttribute, LinkInfo, State};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::packet_route::route::{RouteProtocol, RouteType};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVlan, RouteMessageBuilder, RouteNextHopBuilder};
use tokio::sync::mpsc;

use super::kernel::{Kernel, KernelError, LinkState};
use super::syncd::{KernelOp, RouteVia};

/// The protocol number of every route the virtual ASIC installs (`ip route ... proto 250`), so
/// a new syncd finds and forgets the last one's.
const PROTOCOL: RouteProtocol = RouteProtocol::Other(250);

/// rtnetlink on the current network namespace.
#[derive(Debug)]
pub struct Netlink {
    handle: Handle,
    /// Interface name -> index, filled on first use.
    indexes: Mutex<HashMap<String, u32>>,
}

fn failed(what: impl std::fmt::Display) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let what = what.to_string();
    move |e| KernelError::Refused { what, detail: e.to_string() }
}

fn exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.code.map(|c| c.get()) == Some(-libc::EEXIST))
}

fn absent(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if matches!(m.code.map(|c| c.get()), Some(c) if c == -libc::ENOENT || c == -libc::ESRCH || c == -libc::ENODEV || c == -libc::EADDRNOTAVAIL))
}

impl Netlink {
    pub fn connect() -> Result<Self, KernelError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| KernelError::Connect(e.to_string()))?;
        tokio::spawn(connection);
        Ok(Self { handle, indexes: Mutex::new(HashMap::new()) })
    }

    async fn index(&self, name: &str) -> Result<u32, KernelError> {
        if let Some(index) = self.indexes.lock().expect("index lock").get(name) {
            return Ok(*index);
        }
        let mut links = self.handle.link().get().match_name(name.to_owned()).execute();
        let link = links
            .try_next()
            .await
            .map_err(|e| KernelError::NoDevice { name: name.to_owned(), detail: e.to_string() })?
            .ok_or_else(|| KernelError::NoDevice { name: name.to_owned(), detail: "not found".into() })?;
        let index = link.header.index;
        self.indexes.lock().expect("index lock").insert(name.to_owned(), index);
        Ok(index)
    }

    fn forget(&self, name: &str) {
        self.indexes.lock().expect("index lock").remove(name);
    }

    async fn add_link(
        &self,
        message: rtnetlink::packet_route::link::LinkMessage,
        what: &str,
    ) -> Result<(), KernelError> {
        match self.handle.link().add(message).execute().await {
            Err(e) if exists(&e) => Ok(()),
            other => other.map_err(failed(what)),
        }
    }

    async fn set(&self, message: rtnetlink::packet_route::link::LinkMessage, what: &str) -> Result<(), KernelError> {
        self.handle.link().set(message).execute().await.map_err(failed(what))
    }

    async fn route(&self, table: u32, dest: (IpAddr, u8), via: &RouteVia, add: bool) -> Result<(), KernelError> {
        let what = format!("route {}/{} table {table}", dest.0, dest.1);
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest.0, dest.1)
            .map_err(|e| KernelError::Refused { what: what.clone(), detail: e.to_string() })?
            .table_id(table)
            .protocol(PROTOCOL);
        match via {
            RouteVia::Blackhole => builder = builder.kind(RouteType::BlackHole),
            RouteVia::Dev(dev) => builder = builder.output_interface(self.index(dev).await?),
            RouteVia::Gateways(hops) if hops.len() == 1 => {
                // onlink: the SAI takes a next hop as given; whether its subnet's route came
                // first is not the kernel's business here.
                builder = builder
                    .gateway(hops[0].0)
                    .map_err(|e| KernelError::Refused { what: what.clone(), detail: e.to_string() })?
                    .output_interface(self.index(&hops[0].1).await?)
                    .onlink();
            }
            RouteVia::Gateways(hops) => {
                let mut nexthops = Vec::new();
                for (ip, dev) in hops {
                    let hop = RouteNextHopBuilder::new(if ip.is_ipv4() {
                        rtnetlink::packet_route::AddressFamily::Inet
                    } else {
                        rtnetlink::packet_route::AddressFamily::Inet6
                    })
                    .interface(self.index(dev).await?)
                    .via(*ip)
                    .map_err(|e| KernelError::Refused { what: what.clone(), detail: e.to_string() })?
                    .onlink()
                    .build();
                    nexthops.push(hop);
                }
                builder = builder.multipath(nexthops);
            }
        }
        let message = builder.build();
        if add {
            self.handle.route().add(message).replace().execute().await.map_err(failed(what))
        } else {
            match self.handle.route().del(message).execute().await {
                Err(e) if absent(&e) => Ok(()),
                other => other.map_err(failed(what)),
            }
        }
    }
}

/// The priority of the policy rules that send a router interface's traffic to its table.
const RULE_PRIORITY: u32 = 1000;

fn link_name(link: &rtnetlink::packet_route::link::LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

impl Netlink {
    /// A switch is created: the ASIC starts empty. Whatever a previous syncd programmed goes:
    /// the VLAN bridges, tagged-member devices, the ports' addresses and masters, the policy
    /// rules at [`RULE_PRIORITY`] and every route of [`PROTOCOL`].
    async fn reset(&self) -> Result<(), KernelError> {
        let mut doomed = Vec::new();
        let mut ports = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(link) = links.try_next().await.map_err(failed("link dump"))? {
            let Some(name) = link_name(&link) else { continue };
            if name.starts_with("Vlan") || (name.starts_with("Ethernet") && name.contains('.')) {
                doomed.push(link.header.index);
            } else if name.starts_with("Ethernet") {
                ports.push(link.header.index);
            }
        }
        for index in doomed {
            match self.handle.link().del(index).execute().await {
                Err(e) if absent(&e) => {}
                other => other.map_err(failed("stale device"))?,
            }
        }
        for index in ports {
            self.set(LinkUnspec::new_with_index(index).nocontroller().down().build(), "port reset").await?;
            let mut addresses = self.handle.address().get().set_link_index_filter(index).execute();
            let mut stale = Vec::new();
            while let Some(address) = addresses.try_next().await.map_err(failed("address dump"))? {
                stale.push(address);
            }
            for address in stale {
                let _ = self.handle.address().del(address).execute().await;
            }
        }
        for family in [rtnetlink::IpVersion::V4, rtnetlink::IpVersion::V6] {
            let mut rules = self.handle.rule().get(family.clone()).execute();
            let mut stale = Vec::new();
            while let Some(rule) = rules.try_next().await.map_err(failed("rule dump"))? {
                let ours = rule.attributes.iter().any(
                    |a| matches!(a, rtnetlink::packet_route::rule::RuleAttribute::Priority(p) if *p == RULE_PRIORITY),
                );
                if ours {
                    stale.push(rule);
                }
            }
            for rule in stale {
                let _ = self.handle.rule().del(rule).execute().await;
            }
            let mut query = RouteMessageBuilder::<IpAddr>::new().build();
            query.header.address_family = match family {
                rtnetlink::IpVersion::V4 => rtnetlink::packet_route::AddressFamily::Inet,
                rtnetlink::IpVersion::V6 => rtnetlink::packet_route::AddressFamily::Inet6,
            };
            let mut routes = self.handle.route().get(query).execute();
            let mut stale = Vec::new();
            while let Some(route) = routes.try_next().await.map_err(failed("route dump"))? {
                if route.header.protocol == PROTOCOL {
                    stale.push(route);
                }
            }
            for route in stale {
                let _ = self.handle.route().del(route).execute().await;
            }
        }
        self.indexes.lock().expect("index lock").clear();
        sysctl("net/ipv4/ip_forward", "1")?;
        sysctl("net/ipv6/conf/all/forwarding", "1")?;
        // Reverse-path filtering looks the source up without the input interface, so it
        // cannot see a virtual router's table: off, as an ASIC does not do it by default.
        sysctl("net/ipv4/conf/all/rp_filter", "0")?;
        sysctl("net/ipv4/conf/default/rp_filter", "0")?;
        Ok(())
    }

    async fn delete_link(&self, name: &str) -> Result<(), KernelError> {
        if let Ok(index) = self.index(name).await {
            match self.handle.link().del(index).execute().await {
                Err(e) if absent(&e) => {}
                other => other.map_err(failed(name))?,
            }
        }
        self.forget(name);
        Ok(())
    }

    async fn rule(&self, dev: &str, table: u32, add: bool) -> Result<(), KernelError> {
        let what = format!("rule iif {dev} lookup {table}");
        for v6 in [false, true] {
            let request = self
                .handle
                .rule()
                .add()
                .input_interface(dev)
                .table_id(table)
                .priority(RULE_PRIORITY)
                .action(rtnetlink::packet_route::rule::RuleAction::ToTable);
            let result = if add {
                if v6 {
                    request.v6().execute().await
                } else {
                    request.v4().execute().await
                }
            } else {
                let message = if v6 { request.v6().message_mut().clone() } else { request.v4().message_mut().clone() };
                self.handle.rule().del(message).execute().await
            };
            match result {
                Err(e) if exists(&e) || absent(&e) => {}
                other => other.map_err(failed(&what))?,
            }
        }
        Ok(())
    }
}

impl Kernel for Netlink {
    async fn apply(&self, op: &KernelOp) -> Result<(), KernelError> {
        match op {
            KernelOp::Reset => self.reset().await,
            KernelOp::Port { name } => {
                if self.index(name).await.is_ok() {
                    return Ok(());
                }
                // Nothing is cabled to this port: a veth whose peer stays down, like an empty
                // cage (oper down). Its peer is `<port>-nc`.
                self.add_link(LinkVeth::new(name, &format!("{name}-nc")).build(), name).await
            }
            KernelOp::Admin { dev, up } => {
                let index = self.index(dev).await?;
                let builder = LinkUnspec::new_with_index(index);
                let message = if *up { builder.up() } else { builder.down() }.build();
                self.set(message, &format!("{dev} admin")).await
            }
            KernelOp::Mtu { dev, mtu } => {
                let index = self.index(dev).await?;
                self.set(LinkUnspec::new_with_index(index).mtu(*mtu).build(), &format!("{dev} mtu {mtu}")).await
            }
            KernelOp::Vlan { vid, add } => {
                let name = format!("Vlan{vid}");
                if !*add {
                    return self.delete_link(&name).await;
                }
                self.add_link(LinkBridge::new(&name).build(), &name).await?;
                let index = self.index(&name).await?;
                self.set(LinkUnspec::new_with_index(index).up().build(), &name).await
            }
            KernelOp::Member { dev, vid, tagged, add } => {
                let bridge = self.index(&format!("Vlan{vid}")).await?;
                let member = if *tagged {
                    let sub = format!("{dev}.{vid}");
                    if !*add {
                        return self.delete_link(&sub).await;
                    }
                    let parent = self.index(dev).await?;
                    self.add_link(LinkVlan::new(&sub, parent, *vid).build(), &sub).await?;
                    sub
                } else {
                    dev.clone()
                };
                let index = self.index(&member).await?;
                let builder = LinkUnspec::new_with_index(index);
                let message = if *add { builder.controller(bridge).up() } else { builder.nocontroller() }.build();
                self.set(message, &format!("{member} in Vlan{vid}")).await
            }
            KernelOp::VrfMember { dev, table, add } => {
                if *add {
                    sysctl(&format!("net/ipv4/conf/{dev}/rp_filter"), "0")?;
                }
                self.rule(dev, *table, *add).await
            }
            KernelOp::Address { dev, ip, len, add } => {
                let index = self.index(dev).await?;
                let what = format!("address {ip}/{len} on {dev}");
                if *add {
                    // The connected route is the SAI's own route entry: no prefix route here.
                    let mut request = self.handle.address().add(index, *ip, *len).replace();
                    request.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
                    request.execute().await.map_err(failed(what))
                } else {
                    let mut addresses = self.handle.address().get().set_link_index_filter(index).execute();
                    while let Some(message) = addresses.try_next().await.map_err(failed(&what))? {
                        let matches = message.header.prefix_len == *len
                            && message.attributes.iter().any(|a| matches!(a, AddressAttribute::Address(a) if a == ip));
                        if matches {
                            return match self.handle.address().del(message).execute().await {
                                Err(e) if absent(&e) => Ok(()),
                                other => other.map_err(failed(what)),
                            };
                        }
                    }
                    Ok(())
                }
            }
            KernelOp::Route { table, dest, via, add } => self.route(*table, *dest, via, *add).await,
            KernelOp::Neighbor { dev, ip, mac, add } => {
                let index = self.index(dev).await?;
                let what = format!("neighbour {ip} on {dev}");
                let bytes: Vec<u8> = mac.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
                if *add {
                    self.handle
                        .neighbours()
                        .add(index, *ip)
                        .link_layer_address(&bytes)
                        .state(NeighbourState::Permanent)
                        .replace()
                        .execute()
                        .await
                        .map_err(failed(what))
                } else {
                    let mut neighbours = self.handle.neighbours().get().execute();
                    while let Some(message) = neighbours.try_next().await.map_err(failed(&what))? {
                        let on_dev = message.header.ifindex == index;
                        let same_ip = message.attributes.iter().any(|a| {
                            matches!(a, rtnetlink::packet_route::neighbour::NeighbourAttribute::Destination(d)
                                if neighbour_ip(d) == Some(*ip))
                        });
                        if on_dev && same_ip {
                            return match self.handle.neighbours().del(message).execute().await {
                                Err(e) if absent(&e) => Ok(()),
                                other => other.map_err(failed(what)),
                            };
                        }
                    }
                    Ok(())
                }
            }
        }
    }

    async fn links(&self) -> Result<Vec<LinkState>, KernelError> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(link) = links.try_next().await.map_err(failed("link dump"))? {
            if let Some(state) = link_state(&link) {
                out.push(state);
            }
        }
        Ok(out)
    }

    fn watch_links(&self) -> Result<mpsc::UnboundedReceiver<LinkState>, KernelError> {
        use rtnetlink::packet_core::NetlinkPayload;
        use rtnetlink::packet_route::RouteNetlinkMessage;
        let (connection, _, mut messages) = rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
            .map_err(|e| KernelError::Connect(e.to_string()))?;
        tokio::spawn(connection);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some((message, _)) = messages.next().await {
                if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = message.payload {
                    if let Some(state) = link_state(&link) {
                        if tx.send(state).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}

fn sysctl(name: &str, value: &str) -> Result<(), KernelError> {
    let path = format!("/proc/sys/{name}");
    std::fs::write(&path, value).map_err(|e| KernelError::Refused { what: path, detail: e.to_string() })
}

fn neighbour_ip(address: &rtnetlink::packet_route::neighbour::NeighbourAddress) -> Option<IpAddr> {
    use rtnetlink::packet_route::neighbour::NeighbourAddress;
    match address {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn link_state(link: &rtnetlink::packet_route::link::LinkMessage) -> Option<LinkState> {
    let name = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })?;
    let oper_up = link.attributes.iter().any(|a| matches!(a, LinkAttribute::OperState(State::Up | State::Unknown)))
        && link.header.flags.contains(rtnetlink::packet_route::link::LinkFlags::Up);
    let mtu = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    });
    let admin_up = link.header.flags.contains(rtnetlink::packet_route::link::LinkFlags::Up);
    let vrf_table = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::Data(InfoData::Vrf(vrf)) => vrf.iter().find_map(|v| match v {
                InfoVrf::TableId(table) => Some(*table),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    });
    Some(LinkState { index: link.header.index, name, vrf_table, oper_up, admin_up, mtu: mtu.unwrap_or(0) })
}
