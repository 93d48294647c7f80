//! The netlink route messages inside an FPM frame, decoded by hand (they are a wire format
//! from zebra, not a conversation with the kernel): `nlmsghdr`, `rtmsg`, and the attributes
//! zebra 8.4 emits (RTA_DST, RTA_TABLE, RTA_GATEWAY, RTA_OIF, RTA_MULTIPATH, RTA_NH_ID).
//! Netlink is host byte order; these run where zebra runs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::FpmError;

pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_DELROUTE: u16 = 25;

const NLMSG_HEADER: usize = 16;
const RTMSG: usize = 12;
const RTA_HEADER: usize = 4;
const RTNH: usize = 8;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_NH_ID: u16 = 30;

/// `rtm_type`s fpmsyncd tells apart.
pub const RTN_UNICAST: u8 = 1;
pub const RTN_BLACKHOLE: u8 = 6;
pub const RTN_UNREACHABLE: u8 = 7;
pub const RTN_PROHIBIT: u8 = 8;

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Whether zebra adds or withdraws the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    New,
    Del,
}

/// One next hop: its gateway (none for an interface route), its interface, and
/// `rtnh_hops` (FRR's weight − 1; 0 for a single path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub gateway: Option<IpAddr>,
    pub ifindex: u32,
    pub hops: u8,
}

/// A route message as zebra sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub change: Change,
    pub dst: IpAddr,
    pub dst_len: u8,
    /// The kernel table id: `rtm_table`, or RTA_TABLE when it is 256 or more.
    pub table: u32,
    pub protocol: u8,
    pub route_type: u8,
    pub next_hops: Vec<NextHop>,
    /// RTA_NH_ID: the route names a next-hop group instead of listing its next hops.
    pub nh_id: Option<u32>,
}

/// What a netlink message in a frame is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Route(Route),
    /// Next-hop groups, EVPN MACs, MPLS: not routes fpmsyncd writes to ROUTE_TABLE.
    Other {
        nlmsg_type: u16,
    },
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn address(family: u8, bytes: &[u8]) -> Result<IpAddr, FpmError> {
    match (family, bytes.len()) {
        (AF_INET, 4) => Ok(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        (AF_INET6, 16) => {
            let octets: [u8; 16] = bytes.try_into().expect("16 bytes");
            Ok(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => Err(FpmError::Malformed(format!("an address of {} bytes in family {family}", bytes.len()))),
    }
}

/// The attributes in `bytes`: type and value, in order.
fn attributes(mut bytes: &[u8]) -> Result<Vec<(u16, &[u8])>, FpmError> {
    let mut out = Vec::new();
    while bytes.len() >= RTA_HEADER {
        let length = usize::from(u16_at(bytes, 0));
        if length < RTA_HEADER || length > bytes.len() {
            return Err(FpmError::Malformed(format!("an attribute of length {length} in {} bytes", bytes.len())));
        }
        // NLA_F_NESTED and NLA_F_NET_BYTEORDER ride in the type's top bits.
        out.push((u16_at(bytes, 2) & 0x3fff, &bytes[RTA_HEADER..length]));
        bytes = &bytes[align(length).min(bytes.len())..];
    }
    Ok(out)
}

fn multipath(family: u8, mut bytes: &[u8]) -> Result<Vec<NextHop>, FpmError> {
    let mut hops = Vec::new();
    while bytes.len() >= RTNH {
        let length = usize::from(u16_at(bytes, 0));
        if length < RTNH || length > bytes.len() {
            return Err(FpmError::Malformed(format!("an rtnexthop of length {length}")));
        }
        let mut hop = NextHop { gateway: None, ifindex: u32_at(bytes, 4), hops: bytes[3] };
        for (kind, value) in attributes(&bytes[RTNH..length])? {
            if kind == RTA_GATEWAY {
                hop.gateway = Some(address(family, value)?);
            }
        }
        hops.push(hop);
        bytes = &bytes[align(length).min(bytes.len())..];
    }
    Ok(hops)
}

fn route(change: Change, body: &[u8]) -> Result<Route, FpmError> {
    if body.len() < RTMSG {
        return Err(FpmError::Malformed(format!("an rtmsg of {} bytes", body.len())));
    }
    let family = body[0];
    if family != AF_INET && family != AF_INET6 {
        return Err(FpmError::Unsupported(format!("route family {family}")));
    }
    let mut route = Route {
        change,
        dst: if family == AF_INET { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) },
        dst_len: body[1],
        table: u32::from(body[4]),
        protocol: body[5],
        route_type: body[7],
        next_hops: Vec::new(),
        nh_id: None,
    };
    let mut single = NextHop { gateway: None, ifindex: 0, hops: 0 };
    let mut has_single = false;
    for (kind, value) in attributes(&body[RTMSG..])? {
        match kind {
            RTA_DST => route.dst = address(family, value)?,
            RTA_TABLE if value.len() == 4 => route.table = u32_at(value, 0),
            RTA_GATEWAY => {
                single.gateway = Some(address(family, value)?);
                has_single = true;
            }
            RTA_OIF if value.len() == 4 => {
                single.ifindex = u32_at(value, 0);
                has_single = true;
            }
            RTA_MULTIPATH => route.next_hops = multipath(family, value)?,
            RTA_NH_ID if value.len() == 4 => route.nh_id = Some(u32_at(value, 0)),
            _ => {}
        }
    }
    if route.next_hops.is_empty() && has_single {
        route.next_hops.push(single);
    }
    Ok(route)
}

/// Every netlink message of a frame's payload, in order.
pub fn messages(mut payload: &[u8]) -> Result<Vec<Message>, FpmError> {
    let mut out = Vec::new();
    while payload.len() >= NLMSG_HEADER {
        let length = u32_at(payload, 0) as usize;
        if length < NLMSG_HEADER || length > payload.len() {
            return Err(FpmError::Malformed(format!(
                "a netlink message of length {length} in {} bytes",
                payload.len()
            )));
        }
        let nlmsg_type = u16_at(payload, 4);
        let body = &payload[NLMSG_HEADER..length];
        out.push(match nlmsg_type {
            RTM_NEWROUTE => Message::Route(route(Change::New, body)?),
            RTM_DELROUTE => Message::Route(route(Change::Del, body)?),
            other => Message::Other { nlmsg_type: other },
        });
        payload = &payload[align(length).min(payload.len())..];
    }
    Ok(out)
}

fn push_attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let length = u16::try_from(RTA_HEADER + value.len()).expect("an attribute fits");
    out.extend_from_slice(&length.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align(out.len()), 0);
}

fn octets(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// A route message as zebra 8.4's `netlink_route_multipath_msg_encode` lays it out (for the
/// tests and the benchmark's FPM client): RTA_DST, RTA_PRIORITY 20, RTA_TABLE when the
/// table is 256 or more, then a single path's RTA_GATEWAY and RTA_OIF or RTA_MULTIPATH.
pub fn encode(route: &Route) -> Vec<u8> {
    let family = if route.dst.is_ipv4() { AF_INET } else { AF_INET6 };
    let table_byte = u8::try_from(route.table).unwrap_or(0);
    let mut body = vec![family, route.dst_len, 0, 0, table_byte, route.protocol, 0, route.route_type];
    body.extend_from_slice(&0u32.to_ne_bytes());
    push_attribute(&mut body, RTA_DST, &octets(route.dst));
    push_attribute(&mut body, 6, &20u32.to_ne_bytes());
    if route.table >= 256 {
        push_attribute(&mut body, RTA_TABLE, &route.table.to_ne_bytes());
    }
    if route.change == Change::New && route.route_type != RTN_BLACKHOLE {
        if let Some(id) = route.nh_id {
            push_attribute(&mut body, RTA_NH_ID, &id.to_ne_bytes());
        } else if let [hop] = route.next_hops.as_slice() {
            if let Some(gateway) = hop.gateway {
                push_attribute(&mut body, RTA_GATEWAY, &octets(gateway));
            }
            push_attribute(&mut body, RTA_OIF, &hop.ifindex.to_ne_bytes());
        } else if !route.next_hops.is_empty() {
            let mut hops = Vec::new();
            for hop in &route.next_hops {
                let start = hops.len();
                hops.extend_from_slice(&[0, 0, 0, hop.hops]);
                hops.extend_from_slice(&hop.ifindex.to_ne_bytes());
                if let Some(gateway) = hop.gateway {
                    push_attribute(&mut hops, RTA_GATEWAY, &octets(gateway));
                }
                let length = u16::try_from(hops.len() - start).expect("an rtnexthop fits");
                hops[start..start + 2].copy_from_slice(&length.to_ne_bytes());
            }
            push_attribute(&mut body, RTA_MULTIPATH, &hops);
        }
    }
    let kind = if route.change == Change::New { RTM_NEWROUTE } else { RTM_DELROUTE };
    let length = u32::try_from(NLMSG_HEADER + body.len()).expect("a message fits");
    let mut message = length.to_ne_bytes().to_vec();
    message.extend_from_slice(&kind.to_ne_bytes());
    message.extend_from_slice(&0x0501u16.to_ne_bytes()); // NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE
    message.extend_from_slice(&[0; 8]);
    message.extend_from_slice(&body);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn routes_round_trip_through_zebras_layout() {
        let routes = [
            Route {
                change: Change::New,
                dst: ip("10.1.0.0"),
                dst_len: 24,
                table: 254,
                protocol: 186,
                route_type: RTN_UNICAST,
                next_hops: vec![NextHop { gateway: Some(ip("10.0.0.1")), ifindex: 7, hops: 0 }],
                nh_id: None,
            },
            Route {
                change: Change::New,
                dst: ip("2001:db8::"),
                dst_len: 64,
                table: 1001,
                protocol: 186,
                route_type: RTN_UNICAST,
                next_hops: vec![
                    NextHop { gateway: Some(ip("fc00::1")), ifindex: 7, hops: 0 },
                    NextHop { gateway: Some(ip("fc00::3")), ifindex: 9, hops: 2 },
                ],
                nh_id: None,
            },
            Route {
                change: Change::New,
                dst: ip("0.0.0.0"),
                dst_len: 0,
                table: 254,
                protocol: 196,
                route_type: RTN_BLACKHOLE,
                next_hops: vec![],
                nh_id: None,
            },
            Route {
                change: Change::Del,
                dst: ip("10.1.0.0"),
                dst_len: 24,
                table: 254,
                protocol: 186,
                route_type: 0,
                next_hops: vec![],
                nh_id: None,
            },
        ];
        // zebra's update: a DEL and a NEW in one frame.
        let payload: Vec<u8> = routes.iter().flat_map(encode).collect();
        let decoded = messages(&payload).unwrap();
        let expected: Vec<Message> = routes.into_iter().map(Message::Route).collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn truncated_messages_are_refused_not_read_past() {
        let route = Route {
            change: Change::New,
            dst: ip("10.1.0.0"),
            dst_len: 24,
            table: 254,
            protocol: 186,
            route_type: RTN_UNICAST,
            next_hops: vec![NextHop { gateway: Some(ip("10.0.0.1")), ifindex: 7, hops: 0 }],
            nh_id: None,
        };
        let bytes = encode(&route);
        for cut in NLMSG_HEADER..bytes.len() {
            let mut short = bytes[..cut].to_vec();
            short[..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            // Whatever the cut, an error or a route; never a panic.
            let _ = messages(&short);
        }
        let mut lying = bytes.clone();
        lying[..4].copy_from_slice(&(bytes.len() as u32 + 4).to_ne_bytes());
        assert!(messages(&lying).is_err());
    }
}
