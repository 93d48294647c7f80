//! CONFIG_DB to FRR, as SONiC's templates (`bgpd.main.conf.j2`, `instance.conf.j2`) and
//! bgpcfgd render it, for Debian's FRR 8.4: the startup `frr.conf` (zebra's FPM client,
//! `router bgp` with its router-id, peer groups and networks) and the vtysh scripts that
//! add, change and remove a `BGP_NEIGHBOR` without restarting bgpd. Pure.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use super::BgpcfgdError;
use crate::db::Fields;

/// SONiC's defaults: a timer line is written only when a peer's differ.
const KEEPALIVE: u16 = 60;
const HOLDTIME: u16 = 180;
/// Debian's bgpd accepts at most 256 (SONiC 2024 rendered 64).
const MAXIMUM_PATHS: u16 = 64;

fn get<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.iter().find(|(f, _)| f == name).map(|(_, v)| v.as_str())
}

fn field_error(key: &str, field: &'static str, value: &str, reason: &'static str) -> BgpcfgdError {
    BgpcfgdError::Field { key: key.to_owned(), field, value: value.to_owned(), reason }
}

fn asn(key: &str, field: &'static str, value: &str) -> Result<u32, BgpcfgdError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|a| *a != 0)
        .ok_or_else(|| field_error(key, field, value, "is not an AS number (1-4294967295)"))
}

/// `a.b.c.d/len` or `x::y/len`: the address and the length.
fn prefix(text: &str) -> Option<(IpAddr, u8)> {
    let (address, length) = text.split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    let length: u8 = length.parse().ok()?;
    let full = if address.is_ipv4() { 32 } else { 128 };
    (length <= full).then_some((address, length))
}

/// The network of `address/length`, as FRR's `network` statement wants it.
fn network(address: IpAddr, length: u8) -> String {
    match address {
        IpAddr::V4(v4) => {
            let mask = if length == 0 { 0 } else { u32::MAX << (32 - u32::from(length)) };
            format!("{}/{length}", Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = if length == 0 { 0 } else { u128::MAX << (128 - u32::from(length)) };
            format!("{}/{length}", std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// The switch's BGP instance: `DEVICE_METADATA|localhost` and Loopback0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub asn: u32,
    pub hostname: String,
    pub router_id: Ipv4Addr,
    /// `default_bgp_status=down`: peers without `admin_status` start shut down.
    pub peers_down_by_default: bool,
}

impl Device {
    /// `None` when the switch runs no BGP (no `bgp_asn`, or SONiC's `none`/`null`).
    /// `loopbacks` are `LOOPBACK_INTERFACE`'s keys (`Loopback0|10.1.0.1/32`).
    pub fn parse(metadata: &Fields, loopbacks: &[String]) -> Result<Option<Self>, BgpcfgdError> {
        const KEY: &str = "DEVICE_METADATA|localhost";
        let Some(asn_text) = get(metadata, "bgp_asn").filter(|a| !matches!(*a, "" | "none" | "null")) else {
            return Ok(None);
        };
        let asn = asn(KEY, "bgp_asn", asn_text)?;
        let hostname = get(metadata, "hostname").unwrap_or("sonic").to_owned();
        let router_id = match get(metadata, "bgp_router_id") {
            Some(id) => id.parse().map_err(|_| field_error(KEY, "bgp_router_id", id, "is not an IPv4 address"))?,
            None => loopbacks
                .iter()
                .filter_map(|k| k.strip_prefix("Loopback0|"))
                .filter_map(prefix)
                .find_map(|(address, _)| match address {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
                .ok_or(BgpcfgdError::Missing {
                    key: KEY.to_owned(),
                    field: "bgp_router_id",
                    hint: "or give LOOPBACK_INTERFACE Loopback0 an IPv4 address",
                })?,
        };
        let peers_down_by_default = get(metadata, "default_bgp_status") == Some("down");
        Ok(Some(Self { asn, hostname, router_id, peers_down_by_default }))
    }
}

/// One `BGP_NEIGHBOR` entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    pub vrf: Option<String>,
    pub ip: IpAddr,
    pub asn: u32,
    pub name: Option<String>,
    /// The peer waits until an interface owns this address (SONiC's `local_addr`).
    pub local_addr: Option<IpAddr>,
    pub keepalive: u16,
    pub holdtime: u16,
    /// `admin_status`: `Some(true)` up, `Some(false)` down, `None` the switch's default.
    pub admin_up: Option<bool>,
    pub next_hop_self: bool,
    pub route_reflector_client: bool,
}

fn timer(key: &str, field: &'static str, value: Option<&str>, default: u16) -> Result<u16, BgpcfgdError> {
    match value {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| field_error(key, field, v, "is not a number of seconds (0-65535)")),
    }
}

fn flag(key: &str, field: &'static str, value: Option<&str>) -> Result<bool, BgpcfgdError> {
    match value {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(v) => Err(field_error(key, field, v, "is not 0 or 1")),
    }
}

impl Neighbor {
    /// `key` is the entry's key without the table: `<ip>` or `<vrf>|<ip>`.
    pub fn parse(key: &str, fields: &Fields) -> Result<Self, BgpcfgdError> {
        let full = format!("BGP_NEIGHBOR|{key}");
        let (vrf, ip_text) = match key.rsplit_once('|') {
            Some((vrf, ip)) if vrf != "default" => (Some(vrf.to_owned()), ip),
            Some((_, ip)) => (None, ip),
            None => (None, key),
        };
        let ip: IpAddr =
            ip_text.parse().map_err(|_| BgpcfgdError::Key { key: full.clone(), expected: "<ip> or <vrf>|<ip>" })?;
        let asn_text = get(fields, "asn").ok_or(BgpcfgdError::Missing {
            key: full.clone(),
            field: "asn",
            hint: "the peer's AS number",
        })?;
        let local_addr = match get(fields, "local_addr") {
            None => None,
            Some(a) => Some(a.parse().map_err(|_| field_error(&full, "local_addr", a, "is not an IP address"))?),
        };
        let admin_up = match get(fields, "admin_status") {
            None => None,
            Some("up") => Some(true),
            Some("down") => Some(false),
            Some(v) => return Err(field_error(&full, "admin_status", v, "is not up or down")),
        };
        let name = get(fields, "name").map(str::to_owned);
        if let Some(name) = &name {
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(field_error(&full, "name", name, "is not one word"));
            }
        }
        Ok(Self {
            vrf,
            ip,
            asn: asn(&full, "asn", asn_text)?,
            name,
            local_addr,
            keepalive: timer(&full, "keepalive", get(fields, "keepalive"), KEEPALIVE)?,
            holdtime: timer(&full, "holdtime", get(fields, "holdtime"), HOLDTIME)?,
            admin_up,
            next_hop_self: flag(&full, "nhopself", get(fields, "nhopself"))?,
            route_reflector_client: flag(&full, "rrclient", get(fields, "rrclient"))?,
        })
    }

    fn shut_down(&self, device: &Device) -> bool {
        self.admin_up.map_or(device.peers_down_by_default, |up| !up)
    }

    fn peer_group(&self) -> (&'static str, &'static str) {
        if self.ip.is_ipv4() {
            ("ipv4", "PEER_V4")
        } else {
            ("ipv6", "PEER_V6")
        }
    }
}

/// The networks the switch advertises, as SONiC's templates pick them: Loopback0's IPv4 as a
/// /32, and every VLAN interface's subnet. `keys` are `LOOPBACK_INTERFACE` and
/// `VLAN_INTERFACE` keys (`Vlan10|10.0.10.1/24`); other keys are ignored.
pub fn networks(loopbacks: &[String], vlan_interfaces: &[String]) -> Vec<String> {
    let mut out: Vec<String> = loopbacks
        .iter()
        .filter_map(|k| k.strip_prefix("Loopback0|"))
        .filter_map(prefix)
        .filter(|(a, _)| a.is_ipv4())
        .map(|(a, _)| network(a, 32))
        .collect();
    out.extend(
        vlan_interfaces
            .iter()
            .filter_map(|k| k.split_once('|'))
            .filter_map(|(_, p)| prefix(p))
            .map(|(a, l)| network(a, l)),
    );
    out.sort();
    out.dedup();
    out
}

/// frr.conf for zebra, bgpd and staticd at the container's start (integrated config).
pub fn startup_config(device: Option<&Device>, networks: &[String]) -> String {
    let mut c = String::new();
    let hostname = device.map_or("sonic", |d| d.hostname.as_str());
    // The container's stdout is the service's journal (SONiC logs to the host's syslog).
    let _ = writeln!(c, "frr defaults traditional\nhostname {hostname}\nlog stdout informational");
    c.push_str("service integrated-vtysh-config\n!\n");
    // zebra's FPM client: fpmsyncd on its port, routes with their next hops inline.
    c.push_str("fpm address 127.0.0.1\nno fpm use-next-hop-groups\n!\n");
    c.push_str("ip nht resolve-via-default\nipv6 nht resolve-via-default\n!\n");
    let Some(device) = device else { return c };
    let _ = writeln!(c, "router bgp {}", device.asn);
    let _ = writeln!(c, " bgp router-id {}", device.router_id);
    c.push_str(" bgp log-neighbor-changes\n no bgp default ipv4-unicast\n no bgp ebgp-requires-policy\n");
    c.push_str(" bgp bestpath as-path multipath-relax\n");
    c.push_str(" neighbor PEER_V4 peer-group\n neighbor PEER_V6 peer-group\n");
    for (family, group, v4) in [("ipv4", "PEER_V4", true), ("ipv6", "PEER_V6", false)] {
        let _ = writeln!(c, " address-family {family} unicast");
        for net in networks.iter().filter(|n| n.contains('.') == v4) {
            let _ = writeln!(c, "  network {net}");
        }
        let _ = writeln!(c, "  neighbor {group} soft-reconfiguration inbound");
        let _ = writeln!(c, "  maximum-paths {MAXIMUM_PATHS}");
        c.push_str(" exit-address-family\n");
    }
    c.push_str("exit\n!\n");
    c
}

/// The script that advertises `added` and withdraws `removed` (networks as [`networks`]
/// gives them), live.
pub fn change_networks(device: &Device, added: &[String], removed: &[String]) -> String {
    let mut s = router_line(device, None);
    for (family, v4) in [("ipv4", true), ("ipv6", false)] {
        let lines: Vec<String> = removed
            .iter()
            .filter(|n| n.contains('.') == v4)
            .map(|n| format!("  no network {n}"))
            .chain(added.iter().filter(|n| n.contains('.') == v4).map(|n| format!("  network {n}")))
            .collect();
        if !lines.is_empty() {
            let _ = writeln!(s, " address-family {family} unicast\n{}\n exit-address-family", lines.join("\n"));
        }
    }
    s.push_str("exit\n");
    s
}

fn router_line(device: &Device, vrf: Option<&str>) -> String {
    match vrf {
        Some(vrf) => format!("router bgp {} vrf {vrf}\n", device.asn),
        None => format!("router bgp {}\n", device.asn),
    }
}

/// The vtysh script (`vtysh -f`) that adds `n`, as `instance.conf.j2` renders a peer.
pub fn add_neighbor(device: &Device, n: &Neighbor) -> String {
    let ip = n.ip;
    let mut s = router_line(device, n.vrf.as_deref());
    let _ = writeln!(s, " neighbor {ip} remote-as {}", n.asn);
    if let Some(name) = &n.name {
        let _ = writeln!(s, " neighbor {ip} description {name}");
    }
    if (n.keepalive, n.holdtime) != (KEEPALIVE, HOLDTIME) {
        let _ = writeln!(s, " neighbor {ip} timers {} {}", n.keepalive, n.holdtime);
    }
    let _ = writeln!(s, " neighbor {ip} timers connect 10");
    if n.shut_down(device) {
        let _ = writeln!(s, " neighbor {ip} shutdown");
    }
    let (family, group) = n.peer_group();
    let _ = writeln!(s, " address-family {family} unicast");
    let _ = writeln!(s, "  neighbor {ip} peer-group {group}");
    if n.route_reflector_client {
        let _ = writeln!(s, "  neighbor {ip} route-reflector-client");
    }
    if n.next_hop_self {
        let _ = writeln!(s, "  neighbor {ip} next-hop-self");
    }
    let _ = writeln!(s, "  neighbor {ip} activate");
    s.push_str(" exit-address-family\nexit\n");
    s
}

/// The script that removes `n`.
pub fn remove_neighbor(device: &Device, n: &Neighbor) -> String {
    format!("{} no neighbor {}\nexit\n", router_line(device, n.vrf.as_deref()), n.ip)
}

/// The script that turns `old` into `new` in place where FRR allows it (description,
/// timers, shutdown, the address-family flags); a new AS number or VRF removes the peer
/// and adds it again. SONiC's bgpcfgd applies only `admin_status` and ignores the rest.
pub fn change_neighbor(device: &Device, old: &Neighbor, new: &Neighbor) -> String {
    if old.asn != new.asn || old.vrf != new.vrf || old.ip != new.ip {
        return remove_neighbor(device, old) + &add_neighbor(device, new);
    }
    let ip = new.ip;
    let mut s = router_line(device, new.vrf.as_deref());
    if old.name != new.name {
        match &new.name {
            Some(name) => writeln!(s, " neighbor {ip} description {name}"),
            None => writeln!(s, " no neighbor {ip} description"),
        }
        .expect("writing to a String");
    }
    if (old.keepalive, old.holdtime) != (new.keepalive, new.holdtime) {
        let _ = writeln!(s, " neighbor {ip} timers {} {}", new.keepalive, new.holdtime);
    }
    if old.shut_down(device) != new.shut_down(device) {
        let no = if new.shut_down(device) { "" } else { "no " };
        let _ = writeln!(s, " {no}neighbor {ip} shutdown");
    }
    let (family, _) = new.peer_group();
    let mut af = String::new();
    for (was, is, what) in [
        (old.route_reflector_client, new.route_reflector_client, "route-reflector-client"),
        (old.next_hop_self, new.next_hop_self, "next-hop-self"),
    ] {
        if was != is {
            let no = if is { "" } else { "no " };
            let _ = writeln!(af, "  {no}neighbor {ip} {what}");
        }
    }
    if !af.is_empty() {
        let _ = write!(s, " address-family {family} unicast\n{af} exit-address-family\n");
    }
    s.push_str("exit\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn device() -> Device {
        let metadata = fields(&[("bgp_asn", "65100"), ("hostname", "vs"), ("type", "LeafRouter")]);
        Device::parse(&metadata, &["Loopback0|10.1.0.1/32".into(), "Loopback0|fc00:1::1/128".into()]).unwrap().unwrap()
    }

    #[test]
    fn the_startup_config_carries_fpm_the_instance_and_the_networks() {
        let device = device();
        assert_eq!(device.router_id, Ipv4Addr::new(10, 1, 0, 1));
        let nets = networks(
            &["Loopback0|10.1.0.1/32".into(), "Loopback0".into()],
            &["Vlan10|10.0.10.1/24".into(), "Vlan10".into(), "Vlan20|fc00:10::1/64".into()],
        );
        assert_eq!(nets, ["10.0.10.0/24", "10.1.0.1/32", "fc00:10::/64"]);
        let config = startup_config(Some(&device), &nets);
        for line in [
            "hostname vs",
            "fpm address 127.0.0.1",
            "no fpm use-next-hop-groups",
            "router bgp 65100",
            " bgp router-id 10.1.0.1",
            " no bgp ebgp-requires-policy",
            "  network 10.0.10.0/24",
            "  network 10.1.0.1/32",
            "  network fc00:10::/64",
            "  maximum-paths 64",
        ] {
            assert!(config.lines().any(|l| l == line), "{line:?} missing from:\n{config}");
        }
        let v4 = config.split(" address-family ipv6").next().unwrap();
        assert!(!v4.contains("fc00:10::/64"), "an IPv6 network in the IPv4 family:\n{config}");
        // Without bgp_asn: zebra's part only.
        let bare = startup_config(None, &[]);
        assert!(bare.contains("fpm address 127.0.0.1") && !bare.contains("router bgp"), "{bare}");
        assert_eq!(Device::parse(&fields(&[("bgp_asn", "none")]), &[]).unwrap(), None);
    }

    #[test]
    fn a_neighbor_is_added_changed_in_place_and_removed_by_vtysh_scripts() {
        let device = device();
        let peer = Neighbor::parse(
            "10.0.8.1",
            &fields(&[
                ("asn", "65200"),
                ("name", "s2"),
                ("local_addr", "10.0.8.0"),
                ("holdtime", "9"),
                ("keepalive", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(
            add_neighbor(&device, &peer),
            "router bgp 65100\n neighbor 10.0.8.1 remote-as 65200\n neighbor 10.0.8.1 description s2\n \
             neighbor 10.0.8.1 timers 3 9\n neighbor 10.0.8.1 timers connect 10\n address-family ipv4 unicast\n  \
             neighbor 10.0.8.1 peer-group PEER_V4\n  neighbor 10.0.8.1 activate\n exit-address-family\nexit\n"
        );
        let down = Neighbor::parse(
            "10.0.8.1",
            &fields(&[
                ("asn", "65200"),
                ("name", "s2"),
                ("local_addr", "10.0.8.0"),
                ("holdtime", "9"),
                ("keepalive", "3"),
                ("admin_status", "down"),
            ]),
        )
        .unwrap();
        assert_eq!(change_neighbor(&device, &peer, &down), "router bgp 65100\n neighbor 10.0.8.1 shutdown\nexit\n");
        let moved = Neighbor { asn: 65300, ..peer.clone() };
        let script = change_neighbor(&device, &peer, &moved);
        assert!(
            script.starts_with(
                "router bgp 65100\n no neighbor 10.0.8.1\nexit\nrouter bgp 65100\n neighbor 10.0.8.1 remote-as 65300"
            ),
            "{script}"
        );
        let in_vrf = Neighbor::parse("Vrf-red|fc00::2", &fields(&[("asn", "65200")])).unwrap();
        let script = add_neighbor(&device, &in_vrf);
        assert!(
            script.starts_with("router bgp 65100 vrf Vrf-red\n") && script.contains("peer-group PEER_V6"),
            "{script}"
        );
        assert!(!script.contains("timers 60 180"), "default timers are not written: {script}");
        assert_eq!(remove_neighbor(&device, &in_vrf), "router bgp 65100 vrf Vrf-red\n no neighbor fc00::2\nexit\n");
        assert_eq!(
            change_networks(&device, &["10.0.20.0/24".to_owned()], &["10.0.10.0/24".to_owned(), "fc00:10::/64".to_owned()]),
            "router bgp 65100\n address-family ipv4 unicast\n  no network 10.0.10.0/24\n  network 10.0.20.0/24\n \
             exit-address-family\n address-family ipv6 unicast\n  no network fc00:10::/64\n exit-address-family\nexit\n"
        );
    }

    #[test]
    fn bad_entries_name_their_key_and_field() {
        for (key, entry, needle) in [
            ("10.0.8.1", fields(&[("name", "s2")]), "field `asn` is missing"),
            ("10.0.8.1", fields(&[("asn", "sixty")]), "field `asn`"),
            ("10.0.8.1", fields(&[("asn", "65200"), ("holdtime", "-1")]), "field `holdtime`"),
            ("10.0.8.1", fields(&[("asn", "65200"), ("admin_status", "off")]), "field `admin_status`"),
            ("10.0.8.1", fields(&[("asn", "65200"), ("name", "two words")]), "field `name`"),
            ("10.0.8.1", fields(&[("asn", "65200"), ("local_addr", "x")]), "field `local_addr`"),
            ("peer1", fields(&[("asn", "65200")]), "the key is not"),
        ] {
            let error = Neighbor::parse(key, &entry).unwrap_err().to_string();
            assert!(error.contains("BGP_NEIGHBOR|") && error.contains(needle), "{error}");
        }
        let error = Device::parse(&fields(&[("bgp_asn", "65100")]), &[]).unwrap_err().to_string();
        assert!(error.contains("DEVICE_METADATA|localhost") && error.contains("bgp_router_id"), "{error}");
        let error = Device::parse(&fields(&[("bgp_asn", "0")]), &["Loopback0|10.1.0.1/32".into()]).unwrap_err();
        assert!(error.to_string().contains("`bgp_asn`"), "{error}");
    }
}
