//! What fpmsyncd writes for a route zebra sends: APPL_DB `ROUTE_TABLE` operations, key and
//! fields as SONiC's fpmsyncd writes them (routesync.cpp `onRouteMsg`), decided without I/O.
//! The shell gives it the kernel's names: interfaces by index, VRF devices by table.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::rtmsg::{Change, Route, RTN_BLACKHOLE, RTN_PROHIBIT, RTN_UNICAST, RTN_UNREACHABLE};
use crate::db::{Fields, Op};

/// The kernel's main and default tables, and its local table.
const RT_TABLE_UNSPEC: u32 = 0;
const RT_TABLE_DEFAULT: u32 = 253;
const RT_TABLE_MAIN: u32 = 254;
const RT_TABLE_LOCAL: u32 = 255;

/// Interfaces whose single next hop means "not the ASIC's": fpmsyncd deletes such a route.
const HOST_INTERFACES: &[&str] = &["eth0", "docker0", "eth1-midplane"];

/// iproute2's `rt_protos` as Debian bookworm ships it: what libnl, and so fpmsyncd, names a
/// protocol number; others print as hex (`0xc4` for FRR's static routes).
pub const RT_PROTOS: &str = "0 unspec\n1 redirect\n2 kernel\n3 boot\n4 static\n8 gated\n9 ra\n10 mrt\n11 zebra\n\
12 bird\n13 dnrouted\n14 xorp\n15 ntk\n16 dhcp\n18 keepalived\n42 babel\n99 openr\n186 bgp\n187 isis\n188 ospf\n\
189 rip\n192 eigrp\n";

/// Protocol names by number, from an `rt_protos` file's text.
#[derive(Debug, Clone)]
pub struct Protocols(BTreeMap<u8, String>);

impl Protocols {
    pub fn parse(text: &str) -> Self {
        let names = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default())
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let number = words.next()?;
                let number = match number.strip_prefix("0x") {
                    Some(hex) => u8::from_str_radix(hex, 16).ok()?,
                    None => number.parse().ok()?,
                };
                Some((number, words.next()?.to_owned()))
            })
            .collect();
        Self(names)
    }

    pub fn name(&self, number: u8) -> String {
        self.0.get(&number).cloned().unwrap_or_else(|| format!("0x{number:x}"))
    }
}

impl Default for Protocols {
    fn default() -> Self {
        Self::parse(RT_PROTOS)
    }
}

/// The kernel's names, as the shell keeps them current.
pub trait Names {
    /// An interface's name by ifindex.
    fn interface(&self, ifindex: u32) -> Option<String>;
    /// The VRF device that owns kernel table `table`.
    fn vrf_of_table(&self, table: u32) -> Option<String>;
}

/// Why a route was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Unreachable and prohibit routes, as fpmsyncd drops them.
    Reject,
    /// Multicast, broadcast, local, anycast: "BUM routes aren't supported".
    NotUnicast(u8),
    /// A link-local or multicast prefix: the ASIC's own, which routeorch installs itself.
    LinkLocal,
    NoNextHops,
    /// The table is the kernel's default (253) or local (255) table, or the management VRF.
    NotForwarding(u32),
    /// A table no `Vrf*` device owns: fpmsyncd's "Invalid VRF name".
    UnknownVrf(u32),
    /// Next-hop groups: zebra must run with `no fpm use-next-hop-groups`.
    NextHopGroup(u32),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Reject => write!(f, "an unreachable or prohibit route"),
            Skip::NotUnicast(t) => write!(f, "route type {t} is not unicast (BUM routes are not supported)"),
            Skip::LinkLocal => write!(f, "a link-local or multicast prefix"),
            Skip::NoNextHops => write!(f, "no next hops"),
            Skip::NotForwarding(t) => write!(f, "table {t} is not a forwarding table"),
            Skip::UnknownVrf(t) => write!(f, "no Vrf* device owns table {t} (invalid VRF name)"),
            Skip::NextHopGroup(id) => {
                write!(f, "it names next-hop group {id}: zebra must be configured with `no fpm use-next-hop-groups`")
            }
        }
    }
}

/// A route's outcome: the APPL_DB operation, or why there is none.
pub type Outcome = Result<Op, Skip>;

/// libnl's `nl_addr2str`: the prefix length is left out at full width.
pub fn prefix_text(address: IpAddr, length: u8) -> String {
    let full = if address.is_ipv4() { 32 } else { 128 };
    if length == full {
        address.to_string()
    } else {
        format!("{address}/{length}")
    }
}

fn is_link_local_or_multicast(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_multicast() || (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The `ROUTE_TABLE` key of a route (without the table name): `[Vrf…:]prefix`.
fn key(route: &Route, names: &impl Names) -> Result<String, Skip> {
    let prefix = prefix_text(route.dst, route.dst_len);
    match route.table {
        // Stock FRR sends the kernel's table id, 254, where SONiC's patched FRR sends 0.
        RT_TABLE_UNSPEC | RT_TABLE_MAIN => Ok(prefix),
        RT_TABLE_DEFAULT | RT_TABLE_LOCAL => Err(Skip::NotForwarding(route.table)),
        table => match names.vrf_of_table(table) {
            Some(vrf) if vrf.starts_with("Vrf") => Ok(format!("{vrf}:{prefix}")),
            Some(vrf) if vrf.starts_with("mgmt") => Err(Skip::NotForwarding(table)),
            _ => Err(Skip::UnknownVrf(table)),
        },
    }
}

/// What fpmsyncd writes for `route`.
pub fn outcome(route: &Route, names: &impl Names, protocols: &Protocols) -> Outcome {
    if is_link_local_or_multicast(route.dst) {
        return Err(Skip::LinkLocal);
    }
    let key = key(route, names)?;
    if route.change == Change::Del {
        return Ok(Op::Del { key });
    }
    let protocol = ("protocol".to_owned(), protocols.name(route.protocol));
    match route.route_type {
        RTN_UNICAST => {}
        RTN_BLACKHOLE => return Ok(Op::Set { key, fields: vec![protocol, ("blackhole".into(), "true".into())] }),
        RTN_UNREACHABLE | RTN_PROHIBIT => return Err(Skip::Reject),
        other => return Err(Skip::NotUnicast(other)),
    }
    if let Some(id) = route.nh_id {
        return Err(Skip::NextHopGroup(id));
    }
    if route.next_hops.is_empty() {
        return Err(Skip::NoNextHops);
    }
    let interfaces: Vec<String> =
        route.next_hops.iter().map(|hop| names.interface(hop.ifindex).unwrap_or_else(|| "unknown".into())).collect();
    if let [only] = interfaces.as_slice() {
        if HOST_INTERFACES.contains(&only.as_str()) {
            return Ok(Op::Del { key });
        }
    }
    let unspecified = if route.dst.is_ipv4() { "0.0.0.0" } else { "::" };
    let gateways: Vec<String> = route
        .next_hops
        .iter()
        .map(|hop| hop.gateway.map_or_else(|| unspecified.to_owned(), |g| g.to_string()))
        .collect();
    // fpmsyncd writes libnl's rtnh_hops, FRR's weight − 1, with 0 written as 1.
    let weights: Vec<String> = route.next_hops.iter().map(|hop| hop.hops.max(1).to_string()).collect();
    let fields: Fields = vec![
        protocol,
        ("nexthop".into(), gateways.join(",")),
        ("ifname".into(), interfaces.join(",")),
        ("weight".into(), weights.join(",")),
    ];
    Ok(Op::Set { key, fields })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fpmsyncd::rtmsg::NextHop;

    struct Kernel;

    impl Names for Kernel {
        fn interface(&self, ifindex: u32) -> Option<String> {
            match ifindex {
                2 => Some("eth0".into()),
                7 => Some("Ethernet8".into()),
                9 => Some("Ethernet12".into()),
                _ => None,
            }
        }
        fn vrf_of_table(&self, table: u32) -> Option<String> {
            match table {
                1001 => Some("Vrf-blue".into()),
                6000 => Some("mgmt".into()),
                1002 => Some("blue".into()),
                _ => None,
            }
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn route(dst: &str, len: u8, hops: &[(Option<&str>, u32, u8)]) -> Route {
        Route {
            change: Change::New,
            dst: ip(dst),
            dst_len: len,
            table: RT_TABLE_MAIN,
            protocol: 186,
            route_type: RTN_UNICAST,
            next_hops: hops.iter().map(|(g, i, h)| NextHop { gateway: g.map(ip), ifindex: *i, hops: *h }).collect(),
            nh_id: None,
        }
    }

    fn show(outcome: Outcome) -> String {
        match outcome {
            Ok(Op::Set { key, fields }) => {
                let fields: Vec<String> = fields.iter().map(|(f, v)| format!("{f}={v}")).collect();
                format!("SET {key} {}", fields.join(" "))
            }
            Ok(Op::Del { key }) => format!("DEL {key}"),
            Err(skip) => format!("skip: {skip}"),
        }
    }

    /// Each case: the route zebra sends, and what fpmsyncd makes of it.
    #[test]
    fn routes_become_the_entries_sonics_fpmsyncd_writes() {
        let protocols = Protocols::default();
        let mut vrf = route("10.2.0.0", 16, &[(Some("10.0.0.1"), 7, 0)]);
        vrf.table = 1001;
        let mut static_v6 = route("2001:db8::1", 128, &[(None, 7, 0)]);
        static_v6.protocol = 196;
        let mut blackhole = route("0.0.0.0", 0, &[]);
        blackhole.route_type = RTN_BLACKHOLE;
        let mut reject = route("10.9.0.0", 16, &[]);
        reject.route_type = RTN_UNREACHABLE;
        let mut withdrawn = route("10.1.0.0", 24, &[]);
        withdrawn.change = Change::Del;
        let mut management = route("10.3.0.0", 24, &[(Some("10.0.0.1"), 7, 0)]);
        management.table = 6000;
        let mut not_a_vrf = route("10.3.0.0", 24, &[(Some("10.0.0.1"), 7, 0)]);
        not_a_vrf.table = 1002;
        let mut groups = route("10.4.0.0", 24, &[]);
        groups.nh_id = Some(12);
        let cases = [
            (
                route("10.1.0.0", 24, &[(Some("10.0.0.1"), 7, 0)]),
                "SET 10.1.0.0/24 protocol=bgp nexthop=10.0.0.1 ifname=Ethernet8 weight=1",
            ),
            (
                route("10.1.0.32", 32, &[(Some("10.0.0.1"), 7, 0), (Some("10.0.0.5"), 9, 2), (None, 33, 0)]),
                "SET 10.1.0.32 protocol=bgp nexthop=10.0.0.1,10.0.0.5,0.0.0.0 ifname=Ethernet8,Ethernet12,unknown weight=1,2,1",
            ),
            (vrf, "SET Vrf-blue:10.2.0.0/16 protocol=bgp nexthop=10.0.0.1 ifname=Ethernet8 weight=1"),
            (static_v6, "SET 2001:db8::1 protocol=0xc4 nexthop=:: ifname=Ethernet8 weight=1"),
            (blackhole, "SET 0.0.0.0/0 protocol=bgp blackhole=true"),
            (reject, "skip: an unreachable or prohibit route"),
            (withdrawn, "DEL 10.1.0.0/24"),
            (route("10.5.0.0", 24, &[(Some("10.0.0.1"), 2, 0)]), "DEL 10.5.0.0/24"),
            (
                route("10.6.0.0", 24, &[(Some("10.0.0.1"), 2, 0), (Some("10.0.0.2"), 7, 0)]),
                "SET 10.6.0.0/24 protocol=bgp nexthop=10.0.0.1,10.0.0.2 ifname=eth0,Ethernet8 weight=1,1",
            ),
            (route("fe80::", 64, &[(None, 7, 0)]), "skip: a link-local or multicast prefix"),
            (route("10.7.0.0", 24, &[]), "skip: no next hops"),
            (management, "skip: table 6000 is not a forwarding table"),
            (not_a_vrf, "skip: no Vrf* device owns table 1002 (invalid VRF name)"),
            (groups, "skip: it names next-hop group 12: zebra must be configured with `no fpm use-next-hop-groups`"),
        ];
        for (route, expected) in cases {
            assert_eq!(show(outcome(&route, &Kernel, &protocols)), expected, "{route:?}");
        }
    }

    #[test]
    fn protocol_names_come_from_rt_protos_else_hex() {
        let protocols = Protocols::parse("# comment\n186\tbgp\n0xc4 zstatic # FRR\n");
        assert_eq!(
            (protocols.name(186), protocols.name(196), protocols.name(42)),
            ("bgp".into(), "zstatic".into(), "0x2a".into())
        );
        assert_eq!(Protocols::default().name(2), "kernel");
    }
}
