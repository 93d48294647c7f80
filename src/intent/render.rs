//! From intents to APPL_DB entries (the schemas of `reference/swss-protocol.md` §7) and to the
//! ASIC_DB objects that prove each intent programmed. Pure.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::asic::Expect;
use super::model::{is_port, vlan_id, Cidr, IntentDoc};
use crate::db::Fields;

/// The APPL_DB tables soniclet writes, in the order their dependencies need.
pub const TABLES: &[&str] =
    &["PORT_TABLE", "VRF_TABLE", "VLAN_TABLE", "VLAN_MEMBER_TABLE", "INTF_TABLE", "ROUTE_TABLE", "NEIGH_TABLE"];

/// An APPL_DB key: its table and the key within it. Orders by dependency: tables in
/// [`TABLES`] order, and a router interface before its addresses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryKey {
    rank: u8,
    sub: u8,
    pub table: String,
    pub key: String,
}

impl EntryKey {
    pub fn new(table: &str, key: &str) -> Self {
        let rank = TABLES.iter().position(|t| *t == table).unwrap_or(TABLES.len()) as u8;
        let sub = u8::from(table == "INTF_TABLE" && key.contains(':'));
        Self { rank, sub, table: table.to_owned(), key: key.to_owned() }
    }
}

impl std::fmt::Display for EntryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.table, self.key)
    }
}

/// One intent, as status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    pub kind: &'static str,
    pub entries: Vec<EntryKey>,
    pub expect: Vec<Expect>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    pub entries: BTreeMap<EntryKey, Fields>,
    pub items: Vec<Item>,
}

fn fields(pairs: &[(&str, String)]) -> Fields {
    pairs.iter().map(|(f, v)| ((*f).to_owned(), v.clone())).collect()
}

fn family(addr: &IpAddr) -> String {
    if addr.is_ipv4() { "IPv4" } else { "IPv6" }.to_owned()
}

fn vrf_key(vrf: &Option<String>, prefix: &str) -> String {
    match vrf {
        Some(vrf) => format!("{vrf}:{prefix}"),
        None => prefix.to_owned(),
    }
}

/// The MTU orchagent programs: the IP MTU plus Ethernet header, FCS and a VLAN tag.
pub fn sai_port_mtu(mtu: u32) -> u32 {
    mtu + 22
}

pub fn render(doc: &IntentDoc) -> Rendered {
    let mut out = Rendered::default();
    let add =
        |out: &mut Rendered, id: String, kind: &'static str, entries: Vec<(EntryKey, Fields)>, expect: Vec<Expect>| {
            let keys = entries.iter().map(|(k, _)| k.clone()).collect();
            for (key, fields) in entries {
                out.entries.insert(key, fields);
            }
            out.items.push(Item { id, kind, entries: keys, expect });
        };

    for (name, port) in &doc.ports {
        let mut f = Vec::new();
        let mut attrs = Vec::new();
        if let Some(s) = &port.admin_status {
            f.push(("admin_status", s.clone()));
            attrs.push(("SAI_PORT_ATTR_ADMIN_STATE".to_owned(), (s == "up").to_string()));
        }
        if let Some(mtu) = port.mtu {
            f.push(("mtu", mtu.to_string()));
            attrs.push(("SAI_PORT_ATTR_MTU".to_owned(), sai_port_mtu(mtu).to_string()));
        }
        if let Some(speed) = port.speed {
            f.push(("speed", speed.to_string()));
            attrs.push(("SAI_PORT_ATTR_SPEED".to_owned(), speed.to_string()));
        }
        if let Some(fec) = &port.fec {
            f.push(("fec", fec.clone()));
            if fec != "auto" {
                attrs.push(("SAI_PORT_ATTR_FEC_MODE".to_owned(), format!("SAI_PORT_FEC_MODE_{}", fec.to_uppercase())));
            }
        }
        if let Some(d) = &port.description {
            f.push(("description", d.clone()));
        }
        if f.is_empty() {
            continue;
        }
        let entries = vec![(EntryKey::new("PORT_TABLE", name), fields(&f))];
        add(&mut out, format!("port:{name}"), "port", entries, vec![Expect::PortAttrs { port: name.clone(), attrs }]);
    }
    for name in doc.vrfs.keys() {
        let entries = vec![(EntryKey::new("VRF_TABLE", name), Fields::new())];
        add(&mut out, format!("vrf:{name}"), "vrf", entries, vec![Expect::VrfReady { name: name.clone() }]);
    }
    for (name, vlan) in &doc.vlans {
        let vid = vlan_id(name).unwrap_or(0);
        let f = fields(&[("admin_status", "up".to_owned()), ("mtu", vlan.mtu.unwrap_or(9100).to_string())]);
        add(
            &mut out,
            format!("vlan:{name}"),
            "vlan",
            vec![(EntryKey::new("VLAN_TABLE", name), f)],
            vec![Expect::Vlan { vid }],
        );
        for (member, mode) in &vlan.members {
            let key = EntryKey::new("VLAN_MEMBER_TABLE", &format!("{name}:{member}"));
            let expect = Expect::VlanMember { vid, member: member.clone(), tagging: mode.clone() };
            add(
                &mut out,
                format!("vlan-member:{name}:{member}"),
                "vlan-member",
                vec![(key, fields(&[("tagging_mode", mode.clone())]))],
                vec![expect],
            );
        }
    }
    for (name, intf) in &doc.interfaces {
        let loopback = name.starts_with("Loopback");
        let rif_fields = match &intf.vrf {
            Some(vrf) => fields(&[("vrf_name", vrf.clone())]),
            None => Fields::new(),
        };
        let rif_expect = match vlan_id(name) {
            _ if loopback => vec![],
            Some(vid) => vec![Expect::RifOnVlan { vid }],
            None => vec![Expect::RifOnPort { port: name.clone() }],
        };
        add(
            &mut out,
            format!("interface:{name}"),
            "interface",
            vec![(EntryKey::new("INTF_TABLE", name), rif_fields)],
            rif_expect,
        );
        for address in &intf.addresses {
            let Ok(cidr) = Cidr::parse(address) else { continue };
            let mut entries = vec![(
                EntryKey::new("INTF_TABLE", &format!("{name}:{address}")),
                fields(&[("scope", "global".to_owned()), ("family", family(&cidr.addr))]),
            )];
            // orchagent makes the IP2ME route; the subnet route comes through ROUTE_TABLE.
            let mut expect =
                vec![Expect::Route { dest: format!("{}/{}", cidr.addr, cidr.host_len()), blackhole: false }];
            if cidr.len < cidr.host_len() && !loopback {
                let subnet = cidr.network().to_string();
                let nexthop = if cidr.is_v4() { "0.0.0.0" } else { "::" };
                entries.push((
                    EntryKey::new("ROUTE_TABLE", &vrf_key(&intf.vrf, &subnet)),
                    fields(&[("nexthop", nexthop.to_owned()), ("ifname", name.clone())]),
                ));
                expect.push(Expect::Route { dest: subnet, blackhole: false });
            }
            add(&mut out, format!("address:{name}:{address}"), "address", entries, expect);
        }
    }
    for route in &doc.routes {
        let key = vrf_key(&route.vrf, &route.prefix);
        let f = if route.blackhole {
            fields(&[("blackhole", "true".to_owned())])
        } else {
            let ips: Vec<&str> = route.nexthops.iter().map(|h| h.ip.as_str()).collect();
            let ifnames: Vec<&str> = route.nexthops.iter().map(|h| h.ifname.as_str()).collect();
            fields(&[("nexthop", ips.join(",")), ("ifname", ifnames.join(","))])
        };
        let expect = vec![Expect::Route { dest: route.prefix.clone(), blackhole: route.blackhole }];
        add(&mut out, format!("route:{key}"), "route", vec![(EntryKey::new("ROUTE_TABLE", &key), f)], expect);
    }
    for neigh in &doc.neighbors {
        let Ok(ip) = neigh.ip.parse::<IpAddr>() else { continue };
        let key = format!("{}:{ip}", neigh.ifname);
        let f = fields(&[("neigh", neigh.mac.to_lowercase()), ("family", family(&ip))]);
        let expect = vec![Expect::Neighbor { ip: ip.to_string(), mac: neigh.mac.to_uppercase() }];
        add(&mut out, format!("neighbor:{key}"), "neighbor", vec![(EntryKey::new("NEIGH_TABLE", &key), f)], expect);
    }
    // Ports are shared with portsyncd/portmgrd: soniclet owns fields of them, never the keys.
    debug_assert!(out.entries.keys().filter(|k| k.table == "PORT_TABLE").all(|k| is_port(&k.key)));
    out
}

/// Whether soniclet owns the whole key (and may delete it) or only some of its fields.
pub fn owns_whole_key(key: &EntryKey) -> bool {
    key.table != "PORT_TABLE"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::model::parse;
    use std::path::Path;

    #[test]
    fn renders_sonic_schemas() {
        let doc = parse(
            Path::new("i.yaml"),
            r#"
ports: { Ethernet0: { admin_status: up, mtu: 9100 } }
vrfs: { Vrf-red: {} }
vlans: { Vlan10: { members: { Ethernet0: untagged } } }
interfaces:
  Vlan10: { addresses: [10.0.10.1/24] }
  Ethernet8: { vrf: Vrf-red, addresses: [10.0.20.1/31] }
routes:
  - { prefix: 10.1.0.0/24, nexthops: [{ ip: 10.0.10.2, ifname: Vlan10 }, { ip: 10.0.10.3, ifname: Vlan10 }] }
  - { prefix: 192.0.2.0/24, blackhole: true }
neighbors: [{ ifname: Vlan10, ip: 10.0.10.2, mac: "AA:bb:cc:dd:ee:ff" }]
"#,
        )
        .unwrap();
        let r = render(&doc);
        let get = |t: &str, k: &str| r.entries.get(&EntryKey::new(t, k)).cloned().unwrap_or_else(|| panic!("{t}:{k}"));
        let f = |pairs: &[(&str, &str)]| pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Fields>();
        assert_eq!(get("PORT_TABLE", "Ethernet0"), f(&[("admin_status", "up"), ("mtu", "9100")]));
        assert_eq!(get("VRF_TABLE", "Vrf-red"), Fields::new(), "written NULL=NULL by the producer");
        assert_eq!(get("VLAN_MEMBER_TABLE", "Vlan10:Ethernet0"), f(&[("tagging_mode", "untagged")]));
        assert_eq!(get("INTF_TABLE", "Ethernet8"), f(&[("vrf_name", "Vrf-red")]));
        assert_eq!(get("INTF_TABLE", "Vlan10:10.0.10.1/24"), f(&[("scope", "global"), ("family", "IPv4")]));
        // The subnet route of an interface address goes through ROUTE_TABLE.
        assert_eq!(get("ROUTE_TABLE", "10.0.10.0/24"), f(&[("nexthop", "0.0.0.0"), ("ifname", "Vlan10")]));
        assert_eq!(get("ROUTE_TABLE", "Vrf-red:10.0.20.0/31"), f(&[("nexthop", "0.0.0.0"), ("ifname", "Ethernet8")]));
        assert_eq!(
            get("ROUTE_TABLE", "10.1.0.0/24"),
            f(&[("nexthop", "10.0.10.2,10.0.10.3"), ("ifname", "Vlan10,Vlan10")])
        );
        assert_eq!(get("ROUTE_TABLE", "192.0.2.0/24"), f(&[("blackhole", "true")]));
        assert_eq!(get("NEIGH_TABLE", "Vlan10:10.0.10.2"), f(&[("neigh", "aa:bb:cc:dd:ee:ff"), ("family", "IPv4")]));
        // Dependency order: the router interface before its address, VRFs before routes.
        let order: Vec<String> = r.entries.keys().map(|k| k.to_string()).collect();
        let pos = |s: &str| order.iter().position(|o| o == s).unwrap();
        assert!(pos("INTF_TABLE:Vlan10") < pos("INTF_TABLE:Vlan10:10.0.10.1/24"));
        assert!(pos("VRF_TABLE:Vrf-red") < pos("ROUTE_TABLE:Vrf-red:10.0.20.0/31"));
        let address = r.items.iter().find(|i| i.id == "address:Vlan10:10.0.10.1/24").unwrap();
        assert_eq!(
            address.expect,
            vec![
                Expect::Route { dest: "10.0.10.1/32".into(), blackhole: false },
                Expect::Route { dest: "10.0.10.0/24".into(), blackhole: false }
            ]
        );
    }
}
