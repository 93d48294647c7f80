//! sairedis's spelling of SAI: object types, virtual object ids (VIDs), entry keys and
//! attribute values, as they appear in ASIC_DB and on the ASIC_STATE op queue. Pure.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// The SAI object types the virtual ASIC knows, with their `sai_object_type_t` numbers: the
/// number sits in bits 55..48 of a VID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    Port,
    Lag,
    VirtualRouter,
    NextHop,
    NextHopGroup,
    RouterInterface,
    Hostif,
    LagMember,
    Switch,
    NeighborEntry,
    RouteEntry,
    Vlan,
    VlanMember,
    NextHopGroupMember,
    Bridge,
    BridgePort,
}

const TYPES: &[(ObjectType, u8, &str)] = &[
    (ObjectType::Port, 1, "SAI_OBJECT_TYPE_PORT"),
    (ObjectType::Lag, 2, "SAI_OBJECT_TYPE_LAG"),
    (ObjectType::VirtualRouter, 3, "SAI_OBJECT_TYPE_VIRTUAL_ROUTER"),
    (ObjectType::NextHop, 4, "SAI_OBJECT_TYPE_NEXT_HOP"),
    (ObjectType::NextHopGroup, 5, "SAI_OBJECT_TYPE_NEXT_HOP_GROUP"),
    (ObjectType::RouterInterface, 6, "SAI_OBJECT_TYPE_ROUTER_INTERFACE"),
    (ObjectType::Hostif, 13, "SAI_OBJECT_TYPE_HOSTIF"),
    (ObjectType::LagMember, 27, "SAI_OBJECT_TYPE_LAG_MEMBER"),
    (ObjectType::Switch, 33, "SAI_OBJECT_TYPE_SWITCH"),
    (ObjectType::NeighborEntry, 36, "SAI_OBJECT_TYPE_NEIGHBOR_ENTRY"),
    (ObjectType::RouteEntry, 37, "SAI_OBJECT_TYPE_ROUTE_ENTRY"),
    (ObjectType::Vlan, 38, "SAI_OBJECT_TYPE_VLAN"),
    (ObjectType::VlanMember, 39, "SAI_OBJECT_TYPE_VLAN_MEMBER"),
    (ObjectType::NextHopGroupMember, 45, "SAI_OBJECT_TYPE_NEXT_HOP_GROUP_MEMBER"),
    (ObjectType::Bridge, 57, "SAI_OBJECT_TYPE_BRIDGE"),
    (ObjectType::BridgePort, 58, "SAI_OBJECT_TYPE_BRIDGE_PORT"),
];

impl ObjectType {
    pub fn number(self) -> u8 {
        TYPES.iter().find(|(t, _, _)| *t == self).map(|(_, n, _)| *n).unwrap_or_default()
    }

    pub fn name(self) -> &'static str {
        TYPES.iter().find(|(t, _, _)| *t == self).map(|(_, _, n)| *n).unwrap_or("SAI_OBJECT_TYPE_NULL")
    }

    pub fn from_name(name: &str) -> Option<Self> {
        TYPES.iter().find(|(_, _, n)| *n == name).map(|(t, _, _)| *t)
    }

    fn from_number(number: u8) -> Option<Self> {
        TYPES.iter().find(|(_, n, _)| *n == number).map(|(t, _, _)| *t)
    }
}

/// A virtual object id, laid out as sairedis's `VirtualObjectIdManager` does: switch index in
/// bits 63..56, object type in 55..48, global context in 47..40, the index in 38..0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vid(pub u64);

const INDEX_MASK: u64 = (1 << 39) - 1;

impl Vid {
    pub fn new(object_type: ObjectType, index: u64) -> Self {
        Self((u64::from(object_type.number()) << 48) | (index & INDEX_MASK))
    }

    pub fn object_type(self) -> Option<ObjectType> {
        ObjectType::from_number(((self.0 >> 48) & 0xff) as u8)
    }

    pub fn index(self) -> u64 {
        self.0 & INDEX_MASK
    }

    /// `oid:0x...`, as sairedis prints it (`%lx`, no padding).
    pub fn parse(text: &str) -> Option<Self> {
        u64::from_str_radix(text.strip_prefix("oid:0x")?, 16).ok().map(Self)
    }
}

impl fmt::Display for Vid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oid:0x{:x}", self.0)
    }
}

/// The switch: the one object with a fixed id.
pub const SWITCH: Vid = Vid(0x21_0000_0000_0000);

/// A route entry's id. sairedis writes it by hand in this key order, without spaces.
pub fn route_key(dest: &str, vr: Vid) -> String {
    format!(r#"{{"dest":"{dest}","switch_id":"{SWITCH}","vr":"{vr}"}}"#)
}

/// A neighbour entry's id: nlohmann JSON, keys sorted.
pub fn neighbor_key(ip: IpAddr, rif: Vid) -> String {
    #[derive(Serialize)]
    struct Key {
        ip: String,
        rif: String,
        switch_id: String,
    }
    serde_json::to_string(&Key { ip: ip.to_string(), rif: rif.to_string(), switch_id: SWITCH.to_string() })
        .expect("strings serialise")
}

/// A route entry's id, read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RouteKey {
    pub dest: String,
    pub switch_id: String,
    pub vr: String,
}

/// A neighbour entry's id, read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct NeighborKey {
    pub ip: String,
    pub rif: String,
    pub switch_id: String,
}

/// A MAC as SAI attribute values carry it: upper case, colons.
pub fn mac_value(mac: &str) -> String {
    mac.to_ascii_uppercase()
}

/// An object's key on the op queue and in ASIC_STATE: `<TYPE>:<id>`.
pub fn object_key(object_type: ObjectType, id: &str) -> String {
    format!("{}:{id}", object_type.name())
}

/// The ASIC_STATE key's two parts, `SAI_OBJECT_TYPE_X` and the serialized id.
pub fn split_key(key: &str) -> Option<(ObjectType, &str)> {
    let (name, id) = key.split_once(':')?;
    Some((ObjectType::from_name(name)?, id))
}

pub mod attr {
    //! The attribute names the virtual ASIC uses.
    pub const SWITCH_INIT_SWITCH: &str = "SAI_SWITCH_ATTR_INIT_SWITCH";
    pub const SWITCH_SRC_MAC: &str = "SAI_SWITCH_ATTR_SRC_MAC_ADDRESS";
    pub const PORT_HW_LANE_LIST: &str = "SAI_PORT_ATTR_HW_LANE_LIST";
    pub const PORT_SPEED: &str = "SAI_PORT_ATTR_SPEED";
    pub const PORT_ADMIN_STATE: &str = "SAI_PORT_ATTR_ADMIN_STATE";
    pub const PORT_MTU: &str = "SAI_PORT_ATTR_MTU";
    pub const PORT_FEC_MODE: &str = "SAI_PORT_ATTR_FEC_MODE";
    pub const PORT_VLAN_ID: &str = "SAI_PORT_ATTR_PORT_VLAN_ID";
    pub const HOSTIF_TYPE: &str = "SAI_HOSTIF_ATTR_TYPE";
    pub const HOSTIF_OBJ_ID: &str = "SAI_HOSTIF_ATTR_OBJ_ID";
    pub const HOSTIF_NAME: &str = "SAI_HOSTIF_ATTR_NAME";
    pub const HOSTIF_OPER_STATUS: &str = "SAI_HOSTIF_ATTR_OPER_STATUS";
    pub const VR_V4: &str = "SAI_VIRTUAL_ROUTER_ATTR_ADMIN_V4_STATE";
    pub const VR_V6: &str = "SAI_VIRTUAL_ROUTER_ATTR_ADMIN_V6_STATE";
    pub const VLAN_ID: &str = "SAI_VLAN_ATTR_VLAN_ID";
    pub const VLAN_MEMBER_VLAN_ID: &str = "SAI_VLAN_MEMBER_ATTR_VLAN_ID";
    pub const VLAN_MEMBER_BRIDGE_PORT_ID: &str = "SAI_VLAN_MEMBER_ATTR_BRIDGE_PORT_ID";
    pub const VLAN_MEMBER_TAGGING_MODE: &str = "SAI_VLAN_MEMBER_ATTR_VLAN_TAGGING_MODE";
    pub const BRIDGE_PORT_TYPE: &str = "SAI_BRIDGE_PORT_ATTR_TYPE";
    pub const BRIDGE_PORT_PORT_ID: &str = "SAI_BRIDGE_PORT_ATTR_PORT_ID";
    pub const BRIDGE_PORT_ADMIN_STATE: &str = "SAI_BRIDGE_PORT_ATTR_ADMIN_STATE";
    pub const RIF_VR: &str = "SAI_ROUTER_INTERFACE_ATTR_VIRTUAL_ROUTER_ID";
    pub const RIF_TYPE: &str = "SAI_ROUTER_INTERFACE_ATTR_TYPE";
    pub const RIF_PORT_ID: &str = "SAI_ROUTER_INTERFACE_ATTR_PORT_ID";
    pub const RIF_VLAN_ID: &str = "SAI_ROUTER_INTERFACE_ATTR_VLAN_ID";
    pub const RIF_SRC_MAC: &str = "SAI_ROUTER_INTERFACE_ATTR_SRC_MAC_ADDRESS";
    pub const RIF_MTU: &str = "SAI_ROUTER_INTERFACE_ATTR_MTU";
    pub const NEXT_HOP_TYPE: &str = "SAI_NEXT_HOP_ATTR_TYPE";
    pub const NEXT_HOP_IP: &str = "SAI_NEXT_HOP_ATTR_IP";
    pub const NEXT_HOP_RIF: &str = "SAI_NEXT_HOP_ATTR_ROUTER_INTERFACE_ID";
    pub const NHG_TYPE: &str = "SAI_NEXT_HOP_GROUP_ATTR_TYPE";
    pub const NHG_MEMBER_GROUP: &str = "SAI_NEXT_HOP_GROUP_MEMBER_ATTR_NEXT_HOP_GROUP_ID";
    pub const NHG_MEMBER_NEXT_HOP: &str = "SAI_NEXT_HOP_GROUP_MEMBER_ATTR_NEXT_HOP_ID";
    pub const ROUTE_PACKET_ACTION: &str = "SAI_ROUTE_ENTRY_ATTR_PACKET_ACTION";
    pub const ROUTE_NEXT_HOP_ID: &str = "SAI_ROUTE_ENTRY_ATTR_NEXT_HOP_ID";
    pub const NEIGHBOR_DST_MAC: &str = "SAI_NEIGHBOR_ENTRY_ATTR_DST_MAC_ADDRESS";
    pub const LAG_MEMBER_LAG_ID: &str = "SAI_LAG_MEMBER_ATTR_LAG_ID";
    pub const LAG_MEMBER_PORT_ID: &str = "SAI_LAG_MEMBER_ATTR_PORT_ID";
}

/// The CPU port: IP2ME routes point at it.
pub const CPU_PORT: Vid = Vid(0x1_0000_0000_0000);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vids_carry_their_type_as_sairedis_lays_them_out() {
        let rif = Vid::new(ObjectType::RouterInterface, 0xa1b);
        assert_eq!(rif.to_string(), "oid:0x6000000000a1b");
        assert_eq!(Vid::parse("oid:0x3000000000022").and_then(Vid::object_type), Some(ObjectType::VirtualRouter));
        assert_eq!(SWITCH.to_string(), "oid:0x21000000000000");
        assert_eq!(Vid::parse(&rif.to_string()), Some(rif));
        assert_eq!(Vid::parse("0x12"), None);
    }

    #[test]
    fn entry_keys_are_spelled_as_sairedis_spells_them() {
        let vr = Vid(0x3000000000022);
        assert_eq!(
            route_key("10.0.0.0/24", vr),
            r#"{"dest":"10.0.0.0/24","switch_id":"oid:0x21000000000000","vr":"oid:0x3000000000022"}"#
        );
        let rif = Vid(0x6000000000a1b);
        assert_eq!(
            neighbor_key("10.0.0.1".parse().unwrap(), rif),
            r#"{"ip":"10.0.0.1","rif":"oid:0x6000000000a1b","switch_id":"oid:0x21000000000000"}"#
        );
        assert_eq!(mac_value("00:aa:bb:cc:dd:ee"), "00:AA:BB:CC:DD:EE");
        assert_eq!(
            split_key("SAI_OBJECT_TYPE_VLAN:oid:0x26000000000001"),
            Some((ObjectType::Vlan, "oid:0x26000000000001"))
        );
    }
}
