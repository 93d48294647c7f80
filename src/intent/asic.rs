//! What ASIC_DB must hold for an intent to count as programmed, and an in-memory index of
//! ASIC_STATE to check it against. Pure.
//!
//! In sync mode (SONiC's default) syncd writes `ASIC_STATE:*` only after the SAI accepted the
//! object, so an object there means the ASIC has it. Objects are matched the way the swss DVS
//! tests match them: route entries by their JSON key's `dest`, VLANs by
//! `SAI_VLAN_ATTR_VLAN_ID`, router interfaces by the port OID from `COUNTERS_PORT_NAME_MAP`.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::db::Fields;

/// One ASIC_DB fact an intent needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Expect {
    PortAttrs {
        port: String,
        attrs: Vec<(String, String)>,
    },
    Vlan {
        vid: u16,
    },
    VlanMember {
        vid: u16,
        member: String,
        tagging: String,
    },
    RifOnPort {
        port: String,
    },
    RifOnVlan {
        vid: u16,
    },
    Route {
        dest: String,
        blackhole: bool,
    },
    Neighbor {
        ip: String,
        mac: String,
    },
    /// orchagent's STATE_DB `VRF_OBJECT_TABLE|<vrf> state=ok`.
    VrfReady {
        name: String,
    },
}

pub const PORT: &str = "SAI_OBJECT_TYPE_PORT";
pub const VLAN: &str = "SAI_OBJECT_TYPE_VLAN";
pub const VLAN_MEMBER: &str = "SAI_OBJECT_TYPE_VLAN_MEMBER";
pub const BRIDGE_PORT: &str = "SAI_OBJECT_TYPE_BRIDGE_PORT";
pub const RIF: &str = "SAI_OBJECT_TYPE_ROUTER_INTERFACE";
pub const ROUTE: &str = "SAI_OBJECT_TYPE_ROUTE_ENTRY";
pub const NEIGHBOR: &str = "SAI_OBJECT_TYPE_NEIGHBOR_ENTRY";

fn get<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.iter().find(|(f, _)| f == name).map(|(_, v)| v.as_str())
}

/// The ASIC_STATE objects soniclet needs to judge intents.
#[derive(Debug, Default, Clone)]
pub struct AsicIndex {
    /// Object type -> object id -> attributes, for the OID object types used in matching.
    objects: HashMap<String, HashMap<String, Fields>>,
    /// Route `dest` -> (entries, of which drop).
    routes: HashMap<String, (usize, usize)>,
    /// Route entry key -> (dest, drop), to undo on removal.
    route_keys: HashMap<String, (String, bool)>,
    /// Neighbour entry key -> (ip, MAC).
    neighbors: HashMap<String, (String, String)>,
    /// Port and LAG names -> OIDs (COUNTERS_PORT_NAME_MAP, COUNTERS_LAG_NAME_MAP).
    names: HashMap<String, String>,
    vrfs_ready: HashSet<String>,
}

/// What kind of index change happened, so only affected intents are checked again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    Route(String),
    Other,
    Nothing,
}

impl AsicIndex {
    /// Records `ASIC_STATE:<key>`; `fields` `None` is a removal.
    pub fn apply(&mut self, key: &str, fields: Option<Fields>) -> Touched {
        let Some((object_type, id)) = key.split_once(':') else { return Touched::Nothing };
        match object_type {
            ROUTE => {
                if let Some((dest, drop)) = self.route_keys.remove(key) {
                    let entry = self.routes.entry(dest.clone()).or_default();
                    entry.0 = entry.0.saturating_sub(1);
                    entry.1 = entry.1.saturating_sub(usize::from(drop));
                }
                let Some(fields) = fields else { return Touched::Route(route_dest(id).unwrap_or_default()) };
                let Some(dest) = route_dest(id) else { return Touched::Nothing };
                let drop = get(&fields, "SAI_ROUTE_ENTRY_ATTR_PACKET_ACTION") == Some("SAI_PACKET_ACTION_DROP");
                let entry = self.routes.entry(dest.clone()).or_default();
                entry.0 += 1;
                entry.1 += usize::from(drop);
                self.route_keys.insert(key.to_owned(), (dest.clone(), drop));
                Touched::Route(dest)
            }
            NEIGHBOR => {
                match fields {
                    Some(fields) => {
                        let ip = serde_json::from_str::<serde_json::Value>(id)
                            .ok()
                            .and_then(|v| v["ip"].as_str().map(str::to_owned))
                            .unwrap_or_default();
                        let mac =
                            get(&fields, "SAI_NEIGHBOR_ENTRY_ATTR_DST_MAC_ADDRESS").unwrap_or_default().to_owned();
                        self.neighbors.insert(key.to_owned(), (ip, mac));
                    }
                    None => {
                        self.neighbors.remove(key);
                    }
                }
                Touched::Other
            }
            PORT | VLAN | VLAN_MEMBER | BRIDGE_PORT | RIF => {
                let table = self.objects.entry(object_type.to_owned()).or_default();
                match fields {
                    Some(fields) => table.insert(id.to_owned(), fields),
                    None => table.remove(id),
                };
                Touched::Other
            }
            _ => Touched::Nothing,
        }
    }

    pub fn set_names(&mut self, names: HashMap<String, String>) {
        self.names = names;
    }

    pub fn set_vrf_ready(&mut self, name: &str, ready: bool) {
        if ready {
            self.vrfs_ready.insert(name.to_owned());
        } else {
            self.vrfs_ready.remove(name);
        }
    }

    pub fn clear(&mut self) {
        *self = Self { names: std::mem::take(&mut self.names), ..Self::default() };
    }

    fn of_type(&self, object_type: &str) -> impl Iterator<Item = (&String, &Fields)> {
        self.objects.get(object_type).into_iter().flatten()
    }

    fn vlan_oid(&self, vid: u16) -> Option<&String> {
        let vid = vid.to_string();
        self.of_type(VLAN).find(|(_, f)| get(f, "SAI_VLAN_ATTR_VLAN_ID") == Some(vid.as_str())).map(|(oid, _)| oid)
    }

    /// Whether a name (port or LAG) still lacks its OID: the name maps may need a reload.
    pub fn needs_name(&self, expect: &Expect) -> bool {
        match expect {
            Expect::PortAttrs { port, .. } | Expect::RifOnPort { port } | Expect::VlanMember { member: port, .. } => {
                !self.names.contains_key(port)
            }
            _ => false,
        }
    }

    pub fn satisfied(&self, expect: &Expect) -> bool {
        match expect {
            Expect::PortAttrs { port, attrs } => {
                let Some(oid) = self.names.get(port) else { return false };
                let Some(fields) = self.objects.get(PORT).and_then(|t| t.get(oid)) else { return false };
                attrs.iter().all(|(a, v)| get(fields, a) == Some(v.as_str()))
            }
            Expect::Vlan { vid } => self.vlan_oid(*vid).is_some(),
            Expect::VlanMember { vid, member, tagging } => {
                let (Some(vlan), Some(member_oid)) = (self.vlan_oid(*vid), self.names.get(member)) else {
                    return false;
                };
                let bridge_ports: HashSet<&String> = self
                    .of_type(BRIDGE_PORT)
                    .filter(|(_, f)| get(f, "SAI_BRIDGE_PORT_ATTR_PORT_ID") == Some(member_oid.as_str()))
                    .map(|(oid, _)| oid)
                    .collect();
                let mode = format!("SAI_VLAN_TAGGING_MODE_{}", tagging.to_uppercase());
                self.of_type(VLAN_MEMBER).any(|(_, f)| {
                    get(f, "SAI_VLAN_MEMBER_ATTR_VLAN_ID") == Some(vlan.as_str())
                        && get(f, "SAI_VLAN_MEMBER_ATTR_BRIDGE_PORT_ID")
                            .is_some_and(|b| bridge_ports.contains(&b.to_owned()))
                        && get(f, "SAI_VLAN_MEMBER_ATTR_VLAN_TAGGING_MODE").is_none_or(|m| m == mode)
                })
            }
            Expect::RifOnPort { port } => {
                let Some(oid) = self.names.get(port) else { return false };
                self.of_type(RIF).any(|(_, f)| get(f, "SAI_ROUTER_INTERFACE_ATTR_PORT_ID") == Some(oid.as_str()))
            }
            Expect::RifOnVlan { vid } => {
                let Some(vlan) = self.vlan_oid(*vid) else { return false };
                self.of_type(RIF).any(|(_, f)| get(f, "SAI_ROUTER_INTERFACE_ATTR_VLAN_ID") == Some(vlan.as_str()))
            }
            Expect::Route { dest, blackhole } => {
                self.routes.get(dest).is_some_and(|(n, drops)| if *blackhole { *drops > 0 } else { *n > 0 })
            }
            Expect::Neighbor { ip, mac } => {
                self.neighbors.values().any(|(i, m)| i == ip && m.eq_ignore_ascii_case(mac))
            }
            Expect::VrfReady { name } => self.vrfs_ready.contains(name),
        }
    }
}

/// The `dest` of a route entry's JSON key.
pub fn route_dest(id: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(id).ok()?.get("dest")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn routes_and_neighbors_match_sairedis_keys() {
        let mut index = AsicIndex::default();
        let route = r#"SAI_OBJECT_TYPE_ROUTE_ENTRY:{"dest":"10.1.0.0/24","switch_id":"oid:0x21000000000000","vr":"oid:0x3000000000022"}"#;
        let expect = Expect::Route { dest: "10.1.0.0/24".into(), blackhole: false };
        assert!(!index.satisfied(&expect));
        assert_eq!(
            index.apply(route, Some(f(&[("SAI_ROUTE_ENTRY_ATTR_NEXT_HOP_ID", "oid:0x40000000000a1")]))),
            Touched::Route("10.1.0.0/24".into())
        );
        assert!(index.satisfied(&expect));
        assert!(!index.satisfied(&Expect::Route { dest: "10.1.0.0/24".into(), blackhole: true }));
        index.apply(route, None);
        assert!(!index.satisfied(&expect));

        let neigh = r#"SAI_OBJECT_TYPE_NEIGHBOR_ENTRY:{"ip":"10.0.0.1","rif":"oid:0x6000000000a1b","switch_id":"oid:0x21000000000000"}"#;
        index.apply(neigh, Some(f(&[("SAI_NEIGHBOR_ENTRY_ATTR_DST_MAC_ADDRESS", "00:11:22:AA:BB:CC")])));
        assert!(index.satisfied(&Expect::Neighbor { ip: "10.0.0.1".into(), mac: "00:11:22:aa:bb:cc".into() }));
    }

    #[test]
    fn vlans_members_and_router_interfaces() {
        let mut index = AsicIndex::default();
        index.set_names(HashMap::from([("Ethernet0".into(), "oid:0x1000000000002".into())]));
        index.apply("SAI_OBJECT_TYPE_VLAN:oid:0x26000000000010", Some(f(&[("SAI_VLAN_ATTR_VLAN_ID", "10")])));
        index.apply(
            "SAI_OBJECT_TYPE_BRIDGE_PORT:oid:0x3a000000000020",
            Some(f(&[("SAI_BRIDGE_PORT_ATTR_PORT_ID", "oid:0x1000000000002")])),
        );
        let member = Expect::VlanMember { vid: 10, member: "Ethernet0".into(), tagging: "untagged".into() };
        assert!(!index.satisfied(&member));
        index.apply(
            "SAI_OBJECT_TYPE_VLAN_MEMBER:oid:0x27000000000030",
            Some(f(&[
                ("SAI_VLAN_MEMBER_ATTR_VLAN_ID", "oid:0x26000000000010"),
                ("SAI_VLAN_MEMBER_ATTR_BRIDGE_PORT_ID", "oid:0x3a000000000020"),
                ("SAI_VLAN_MEMBER_ATTR_VLAN_TAGGING_MODE", "SAI_VLAN_TAGGING_MODE_UNTAGGED"),
            ])),
        );
        assert!(index.satisfied(&Expect::Vlan { vid: 10 }));
        assert!(index.satisfied(&member));
        assert!(!index.satisfied(&Expect::VlanMember {
            vid: 10,
            member: "Ethernet0".into(),
            tagging: "tagged".into()
        }));
        assert!(!index.satisfied(&Expect::RifOnVlan { vid: 10 }));
        index.apply(
            "SAI_OBJECT_TYPE_ROUTER_INTERFACE:oid:0x60000000000040",
            Some(f(&[
                ("SAI_ROUTER_INTERFACE_ATTR_TYPE", "SAI_ROUTER_INTERFACE_TYPE_VLAN"),
                ("SAI_ROUTER_INTERFACE_ATTR_VLAN_ID", "oid:0x26000000000010"),
            ])),
        );
        assert!(index.satisfied(&Expect::RifOnVlan { vid: 10 }));
        assert!(!index.satisfied(&Expect::RifOnPort { port: "Ethernet0".into() }));
        assert!(index.needs_name(&Expect::RifOnPort { port: "Ethernet4".into() }));
    }
}
