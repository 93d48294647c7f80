//! The intent document: what the operator wants programmed (ports, VRFs, VLANs, interfaces,
//! routes, neighbours), parsed strictly from YAML or TOML and validated as a whole. Every
//! error names the file and the field path (`routes[2].nexthops[0].ifname`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::IntentError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentDoc {
    #[serde(default)]
    pub ports: BTreeMap<String, PortIntent>,
    #[serde(default)]
    pub vrfs: BTreeMap<String, VrfIntent>,
    #[serde(default)]
    pub vlans: BTreeMap<String, VlanIntent>,
    #[serde(default)]
    pub interfaces: BTreeMap<String, InterfaceIntent>,
    #[serde(default)]
    pub routes: Vec<RouteIntent>,
    #[serde(default)]
    pub neighbors: Vec<NeighborIntent>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortIntent {
    pub admin_status: Option<String>,
    pub mtu: Option<u32>,
    /// Mb/s, as SONiC's PORT_TABLE `speed`.
    pub speed: Option<u32>,
    pub fec: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrfIntent {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanIntent {
    /// Optional; must match the name (`Vlan10` is VLAN 10).
    pub vlanid: Option<u16>,
    pub mtu: Option<u32>,
    /// Port or port channel -> `untagged`, `tagged` or `priority_tagged`.
    #[serde(default)]
    pub members: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceIntent {
    pub vrf: Option<String>,
    /// Addresses with their prefix length, e.g. `10.0.0.1/31`.
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteIntent {
    pub prefix: String,
    pub vrf: Option<String>,
    #[serde(default)]
    pub nexthops: Vec<NextHop>,
    #[serde(default)]
    pub blackhole: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextHop {
    pub ip: String,
    pub ifname: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighborIntent {
    pub ifname: String,
    pub ip: String,
    pub mac: String,
}

/// A CIDR prefix, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, len) = text.split_once('/').ok_or_else(|| format!("{text:?} has no /length"))?;
        let addr: IpAddr = addr.parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
        let len: u8 = len.parse().map_err(|_| format!("{len:?} is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("/{len} is longer than /{max}"));
        }
        Ok(Self { addr, len })
    }

    pub fn is_v4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Self {
        let addr = match self.addr {
            IpAddr::V4(v4) => {
                let mask = if self.len == 0 { 0 } else { u32::MAX << (32 - u32::from(self.len)) };
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = if self.len == 0 { 0 } else { u128::MAX << (128 - u32::from(self.len)) };
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        };
        Self { addr, len: self.len }
    }

    pub fn host_len(&self) -> u8 {
        if self.is_v4() {
            32
        } else {
            128
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn numbered(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
}

pub fn is_port(name: &str) -> bool {
    numbered(name, "Ethernet").is_some()
}

pub fn is_lag(name: &str) -> bool {
    numbered(name, "PortChannel").is_some()
}

pub fn vlan_id(name: &str) -> Option<u16> {
    numbered(name, "Vlan").filter(|v| (1..=4094).contains(v)).map(|v| v as u16)
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Checks the whole document; `file` only names the source in errors.
pub fn validate(file: &Path, doc: &IntentDoc) -> Result<(), IntentError> {
    let mut errors = Vec::new();
    let mut fail = |field: String, message: String| errors.push(format!("{}: {field}: {message}", file.display()));

    for (name, port) in &doc.ports {
        let at = |f: &str| format!("ports.{name}.{f}");
        if !is_port(name) {
            fail(format!("ports.{name}"), "a port is named Ethernet<N>".into());
        }
        if let Some(s) = &port.admin_status {
            if s != "up" && s != "down" {
                fail(at("admin_status"), format!("{s:?} is not up or down"));
            }
        }
        if let Some(mtu) = port.mtu {
            if !(68..=9216).contains(&mtu) {
                fail(at("mtu"), format!("{mtu} is not between 68 and 9216"));
            }
        }
        if port.speed == Some(0) {
            fail(at("speed"), "must be positive (Mb/s)".into());
        }
        if let Some(fec) = &port.fec {
            if !matches!(fec.as_str(), "none" | "rs" | "fc" | "auto") {
                fail(at("fec"), format!("{fec:?} is not none, rs, fc or auto"));
            }
        }
        if port.description.as_ref().is_some_and(|d| d.len() > 255) {
            fail(at("description"), "is longer than 255 characters".into());
        }
    }
    for name in doc.vrfs.keys() {
        if !name.starts_with("Vrf") || name.len() > 15 || name.contains(':') || name.contains(' ') {
            fail(format!("vrfs.{name}"), "a VRF is named Vrf<...>, at most 15 characters, without ':'".into());
        }
    }
    for (name, vlan) in &doc.vlans {
        let Some(vid) = vlan_id(name) else {
            fail(format!("vlans.{name}"), "a VLAN is named Vlan<1-4094>".into());
            continue;
        };
        if vlan.vlanid.is_some_and(|v| v != vid) {
            fail(format!("vlans.{name}.vlanid"), format!("{} does not match the name", vlan.vlanid.unwrap_or(0)));
        }
        if let Some(mtu) = vlan.mtu {
            if !(68..=9216).contains(&mtu) {
                fail(format!("vlans.{name}.mtu"), format!("{mtu} is not between 68 and 9216"));
            }
        }
        for (member, mode) in &vlan.members {
            if !is_port(member) && !is_lag(member) {
                fail(
                    format!("vlans.{name}.members.{member}"),
                    "a member is a port (Ethernet<N>) or a PortChannel<N>".into(),
                );
            }
            if !matches!(mode.as_str(), "untagged" | "tagged" | "priority_tagged") {
                fail(
                    format!("vlans.{name}.members.{member}"),
                    format!("{mode:?} is not untagged, tagged or priority_tagged"),
                );
            }
        }
    }
    let mut subnets = BTreeSet::new();
    for (name, intf) in &doc.interfaces {
        let known_kind = is_port(name) || is_lag(name) || name.starts_with("Loopback");
        if vlan_id(name).is_some() {
            if !doc.vlans.contains_key(name) {
                fail(format!("interfaces.{name}"), format!("VLAN {name} is not declared under vlans"));
            }
        } else if !known_kind {
            fail(format!("interfaces.{name}"), "an interface is a port, a PortChannel, a Vlan or a Loopback".into());
        }
        if let Some(vrf) = &intf.vrf {
            if !doc.vrfs.contains_key(vrf) {
                fail(format!("interfaces.{name}.vrf"), format!("VRF {vrf} is not declared under vrfs"));
            }
        }
        for (i, address) in intf.addresses.iter().enumerate() {
            match Cidr::parse(address) {
                Ok(cidr) => {
                    if !subnets.insert((intf.vrf.clone(), cidr.network())) {
                        fail(
                            format!("interfaces.{name}.addresses[{i}]"),
                            format!("subnet {} is already on another interface", cidr.network()),
                        );
                    }
                }
                Err(m) => fail(format!("interfaces.{name}.addresses[{i}]"), m),
            }
        }
    }
    let routable = |ifname: &str| doc.interfaces.contains_key(ifname) || is_port(ifname) || is_lag(ifname);
    let mut routes = BTreeSet::new();
    for (i, route) in doc.routes.iter().enumerate() {
        let at = |f: &str| format!("routes[{i}].{f}");
        let prefix = match Cidr::parse(&route.prefix) {
            Ok(p) if p.network() != p => {
                fail(at("prefix"), format!("{} has host bits set; did you mean {}?", route.prefix, p.network()));
                continue;
            }
            Ok(p) => p,
            Err(m) => {
                fail(at("prefix"), m);
                continue;
            }
        };
        if let Some(vrf) = &route.vrf {
            if !doc.vrfs.contains_key(vrf) {
                fail(at("vrf"), format!("VRF {vrf} is not declared under vrfs"));
            }
        }
        if !routes.insert((route.vrf.clone(), prefix)) {
            fail(
                at("prefix"),
                format!(
                    "{prefix} is already routed{}",
                    route.vrf.as_ref().map(|v| format!(" in {v}")).unwrap_or_default()
                ),
            );
        }
        if subnets.contains(&(route.vrf.clone(), prefix)) {
            fail(at("prefix"), format!("{prefix} is an interface subnet, routed already"));
        }
        match (route.blackhole, route.nexthops.is_empty()) {
            (true, false) => fail(at("blackhole"), "a blackhole route has no next hops".into()),
            (false, true) => fail(at("nexthops"), "give next hops, or blackhole: true".into()),
            _ => {}
        }
        for (j, hop) in route.nexthops.iter().enumerate() {
            match hop.ip.parse::<IpAddr>() {
                Ok(ip) if ip.is_ipv4() != prefix.is_v4() => {
                    fail(format!("routes[{i}].nexthops[{j}].ip"), format!("{ip} is not of the prefix's family"))
                }
                Ok(_) => {}
                Err(_) => fail(format!("routes[{i}].nexthops[{j}].ip"), format!("{:?} is not an IP address", hop.ip)),
            }
            if !routable(&hop.ifname) {
                fail(format!("routes[{i}].nexthops[{j}].ifname"), format!("{} is not an interface", hop.ifname));
            }
        }
    }
    let mut neighbors = BTreeSet::new();
    for (i, neigh) in doc.neighbors.iter().enumerate() {
        if !routable(&neigh.ifname) {
            fail(format!("neighbors[{i}].ifname"), format!("{} is not an interface", neigh.ifname));
        }
        match neigh.ip.parse::<IpAddr>() {
            Ok(ip) => {
                if !neighbors.insert((neigh.ifname.clone(), ip)) {
                    fail(format!("neighbors[{i}]"), format!("{ip} on {} is already declared", neigh.ifname));
                }
            }
            Err(_) => fail(format!("neighbors[{i}].ip"), format!("{:?} is not an IP address", neigh.ip)),
        }
        if !valid_mac(&neigh.mac) {
            fail(format!("neighbors[{i}].mac"), format!("{:?} is not a MAC address (aa:bb:cc:dd:ee:ff)", neigh.mac));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(IntentError::Invalid(errors))
    }
}

/// Parses an intent file's text; the format follows the extension (YAML, or TOML for `.toml`).
pub fn parse(file: &Path, text: &str) -> Result<IntentDoc, IntentError> {
    let toml = file.extension().is_some_and(|e| e == "toml");
    let doc: IntentDoc = if toml {
        toml::from_str(text).map_err(|e| IntentError::Parse { file: file.to_owned(), message: e.to_string() })?
    } else if text.trim().is_empty() {
        IntentDoc::default()
    } else {
        serde_norway::from_str(text)
            .map_err(|e| IntentError::Parse { file: file.to_owned(), message: e.to_string() })?
    };
    validate(file, &doc)?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
ports:
  Ethernet0: { admin_status: up, mtu: 9100, fec: rs }
vrfs:
  Vrf-red: {}
vlans:
  Vlan10:
    members: { Ethernet0: untagged, Ethernet4: untagged }
interfaces:
  Vlan10: { addresses: [10.0.10.1/24] }
  Ethernet8: { vrf: Vrf-red, addresses: ["10.0.20.1/31", "fc00::1/126"] }
routes:
  - prefix: 10.1.0.0/24
    nexthops: [{ ip: 10.0.10.2, ifname: Vlan10 }, { ip: 10.0.10.3, ifname: Vlan10 }]
  - { prefix: 192.0.2.0/24, blackhole: true }
  - { prefix: 10.9.0.0/16, vrf: Vrf-red, nexthops: [{ ip: 10.0.20.0, ifname: Ethernet8 }] }
neighbors:
  - { ifname: Vlan10, ip: 10.0.10.2, mac: "00:11:22:33:44:55" }
"#;

    #[test]
    fn a_good_document_parses_in_yaml_and_toml() {
        let doc = parse(Path::new("i.yaml"), GOOD).unwrap();
        assert_eq!(doc.routes.len(), 3);
        let toml = "[vlans.Vlan10.members]\nEthernet0 = \"untagged\"\n\n[[routes]]\nprefix = \"0.0.0.0/0\"\nblackhole = true\n";
        let doc = parse(Path::new("i.toml"), toml).unwrap();
        assert_eq!(doc.vlans["Vlan10"].members["Ethernet0"], "untagged");
        assert_eq!(parse(Path::new("empty.yaml"), "").unwrap(), IntentDoc::default());
    }

    fn errors(text: &str) -> String {
        match parse(Path::new("i.yaml"), text) {
            Err(e) => e.to_string(),
            Ok(doc) => panic!("accepted {doc:?}"),
        }
    }

    #[test]
    fn errors_name_file_and_field() {
        let cases = [
            ("ports: { Ethernet0: { admin_status: sideways } }", "i.yaml: ports.Ethernet0.admin_status"),
            ("ports: { Ethernet0: { mtu: 20000 } }", "ports.Ethernet0.mtu"),
            ("ports: { Ethernet0: { colour: red } }", "unknown field `colour`"),
            ("vlans: { Vlan5000: {} }", "vlans.Vlan5000"),
            ("vlans: { Vlan10: { members: { Ethernet0: sometimes } } }", "vlans.Vlan10.members.Ethernet0"),
            ("interfaces: { Vlan20: { addresses: [10.0.0.1/24] } }", "VLAN Vlan20 is not declared"),
            ("interfaces: { Ethernet0: { addresses: [10.0.0.300/24] } }", "interfaces.Ethernet0.addresses[0]"),
            ("interfaces: { Ethernet0: { vrf: Vrf-x } }", "interfaces.Ethernet0.vrf"),
            ("routes: [{ prefix: 10.1.0.5/24, blackhole: true }]", "did you mean 10.1.0.0/24"),
            ("routes: [{ prefix: 10.1.0.0/24 }]", "routes[0].nexthops"),
            (
                "routes: [{ prefix: 10.1.0.0/24, nexthops: [{ ip: 'fc00::1', ifname: Ethernet0 }] }]",
                "routes[0].nexthops[0].ip",
            ),
            (
                "routes: [{ prefix: 10.1.0.0/24, nexthops: [{ ip: 10.0.0.1, ifname: eth9 }] }]",
                "routes[0].nexthops[0].ifname",
            ),
            (
                "routes: [{ prefix: 10.1.0.0/24, blackhole: true }, { prefix: 10.1.0.0/24, blackhole: true }]",
                "routes[1].prefix",
            ),
            ("neighbors: [{ ifname: Ethernet0, ip: 10.0.0.1, mac: 'zz:11:22:33:44:55' }]", "neighbors[0].mac"),
            ("vrfs: { red: {} }", "vrfs.red"),
        ];
        for (text, expect) in cases {
            let err = errors(text);
            assert!(err.contains(expect), "{text}\n=> {err}");
        }
    }

    #[test]
    fn cidr_network() {
        assert_eq!(Cidr::parse("10.0.20.1/31").unwrap().network().to_string(), "10.0.20.0/31");
        assert_eq!(Cidr::parse("fc00::1/126").unwrap().network().to_string(), "fc00::/126");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().network().to_string(), "0.0.0.0/0");
    }
}
