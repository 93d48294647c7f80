//! lldpd's JSON (its `json` format collapses one-element arrays and names objects by their
//! key: `interface` is an object for one port and a list of one-key objects for several) into
//! the entries SONiC's lldp_syncd writes, and the writes of one poll. Pure.

use std::collections::BTreeMap;

use serde_json::Value;

use super::LldpError;
use crate::db::{Fields, Op};

/// The APPL_DB hash of the local chassis (no table separator: lldp_syncd names it so).
pub const LOCAL_CHASSIS: &str = "LLDP_LOC_CHASSIS";
const TIME_MARK: &str = "lldp_rem_time_mark";

/// lldp_syncd writes front-panel ports and the management port only.
fn is_reported_port(name: &str) -> bool {
    let digits = |rest: &str| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
    name == "eth0"
        || name.strip_prefix("Ethernet-BP").is_some_and(digits)
        || name.strip_prefix("Ethernet").is_some_and(digits)
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// A value lldpd collapses: one element bare, several in a list.
fn many(value: Option<&Value>) -> Vec<&Value> {
    match value {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(other) => vec![other],
        None => Vec::new(),
    }
}

/// `{"name": {...}}` objects, one or several, as (name, body).
fn named(value: Option<&Value>) -> Vec<(&str, &Value)> {
    many(value)
        .into_iter()
        .filter_map(Value::as_object)
        .flat_map(|object| object.iter().map(|(k, v)| (k.as_str(), v)))
        .collect()
}

/// LLDP-MIB's subtypes for lldpd's id types.
fn port_subtype(kind: &str) -> &'static str {
    match kind {
        "ifalias" => "1",
        "mac" => "3",
        "ip" => "4",
        "ifname" => "5",
        "local" => "7",
        _ => "",
    }
}

fn chassis_subtype(kind: &str) -> &'static str {
    match kind {
        "ifalias" => "2",
        "mac" => "4",
        "ip" => "5",
        "ifname" => "6",
        "local" => "7",
        _ => "",
    }
}

/// `"%02X 00"` of the capability bits (other 0 ... station 7, bit `128 >> n`); `""` without
/// capability data.
fn capabilities(chassis: &Value, enabled_only: bool) -> String {
    let list = many(chassis.get("capability"));
    if list.is_empty() {
        return String::new();
    }
    let mut bits = 0u8;
    for capability in list {
        let bit = match capability.get("type").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase().as_str()
        {
            "other" => 0,
            "repeater" => 1,
            "bridge" => 2,
            "wlan" => 3,
            "router" => 4,
            "telephone" => 5,
            "docsis" => 6,
            "station" => 7,
            _ => continue,
        };
        if !enabled_only || capability.get("enabled").and_then(Value::as_bool) == Some(true) {
            bits |= 128 >> bit;
        }
    }
    format!("{bits:02X} 00")
}

/// `N day(s), HH:MM:SS` in seconds.
fn age_seconds(age: &str) -> Option<u64> {
    let (days, clock) = age.split_once(',')?;
    let days: u64 = days.split_whitespace().next()?.parse().ok()?;
    let mut parts = clock.trim().split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some(days * 86_400 + h * 3_600 + m * 60 + s)
}

/// The chassis object: its name (the neighbour's SysName, `""` when it sent none) and body.
fn chassis_of(value: Option<&Value>) -> Option<(String, &Value)> {
    let value = value?;
    if value.get("id").is_some() {
        return Some((String::new(), value));
    }
    named(Some(value)).into_iter().next().map(|(name, body)| (name.to_owned(), body))
}

fn parse(json: &str) -> Result<Value, LldpError> {
    serde_json::from_str(json).map_err(|e| LldpError::Json(e.to_string()))
}

/// `lldpctl -f json`: `LLDP_ENTRY_TABLE` entries by local port.
pub fn entries(json: &str) -> Result<BTreeMap<String, Fields>, LldpError> {
    let root = parse(json)?;
    let lldp = root.get("lldp").ok_or(LldpError::Shape("lldp"))?;
    let mut out = BTreeMap::new();
    for (port, neighbor) in named(lldp.get("interface")) {
        if !is_reported_port(port) {
            continue;
        }
        let Some((sys_name, chassis)) = chassis_of(neighbor.get("chassis")) else { continue };
        let remote_port = neighbor.get("port");
        let id =
            |object: Option<&Value>, field: &str| text(object.and_then(|o| o.get("id")).and_then(|i| i.get(field)));
        let age = text(neighbor.get("age"));
        let fields: Fields = vec![
            ("lldp_rem_port_id_subtype".into(), port_subtype(&id(remote_port, "type")).into()),
            ("lldp_rem_port_id".into(), id(remote_port, "value")),
            ("lldp_rem_port_desc".into(), text(remote_port.and_then(|p| p.get("descr")))),
            ("lldp_rem_chassis_id_subtype".into(), chassis_subtype(&id(Some(chassis), "type")).into()),
            ("lldp_rem_chassis_id".into(), id(Some(chassis), "value")),
            ("lldp_rem_sys_name".into(), sys_name),
            ("lldp_rem_sys_desc".into(), text(chassis.get("descr"))),
            (
                "lldp_rem_man_addr".into(),
                many(chassis.get("mgmt-ip")).into_iter().map(|v| text(Some(v))).collect::<Vec<_>>().join(","),
            ),
            (TIME_MARK.into(), age_seconds(&age).map(|s| s.to_string()).unwrap_or_default()),
            ("lldp_rem_index".into(), text(neighbor.get("rid"))),
            ("lldp_rem_sys_cap_supported".into(), capabilities(chassis, false)),
            ("lldp_rem_sys_cap_enabled".into(), capabilities(chassis, true)),
        ];
        out.insert(port.to_owned(), fields);
    }
    Ok(out)
}

/// `lldpcli -f json show chassis`: `LLDP_LOC_CHASSIS`.
pub fn local_chassis(json: &str) -> Result<Fields, LldpError> {
    let root = parse(json)?;
    let local = root.get("local-chassis").ok_or(LldpError::Shape("local-chassis"))?;
    let (name, chassis) = chassis_of(local.get("chassis")).ok_or(LldpError::Shape("local-chassis.chassis"))?;
    let id = |field: &str| text(chassis.get("id").and_then(|i| i.get(field)));
    Ok(vec![
        ("lldp_loc_chassis_id_subtype".into(), chassis_subtype(&id("type")).into()),
        ("lldp_loc_chassis_id".into(), id("value")),
        ("lldp_loc_sys_name".into(), name),
        ("lldp_loc_sys_desc".into(), text(chassis.get("descr"))),
        (
            "lldp_loc_man_addr".into(),
            many(chassis.get("mgmt-ip")).into_iter().map(|v| text(Some(v))).collect::<Vec<_>>().join(","),
        ),
        ("lldp_loc_sys_cap_supported".into(), capabilities(chassis, false)),
        ("lldp_loc_sys_cap_enabled".into(), capabilities(chassis, true)),
    ])
}

/// One poll's writes, by lldp_syncd's rules: a vanished port is deleted, a new one written,
/// a changed one deleted and written whole, unless only its time mark moved (one field set)
/// and no port came or went this poll. Keys are `LLDP_ENTRY_TABLE:<port>`.
pub fn changes(before: &BTreeMap<String, Fields>, now: &BTreeMap<String, Fields>) -> Vec<Op> {
    let key = |port: &str| format!("LLDP_ENTRY_TABLE:{port}");
    let came_or_went = before.keys().any(|p| !now.contains_key(p)) || now.keys().any(|p| !before.contains_key(p));
    let mut ops = Vec::new();
    for port in before.keys().filter(|p| !now.contains_key(*p)) {
        ops.push(Op::Del { key: key(port) });
    }
    for (port, fields) in now {
        match before.get(port) {
            None => ops.push(Op::Set { key: key(port), fields: fields.clone() }),
            Some(old) if old == fields => {}
            Some(old) => {
                let moved: Vec<&(String, String)> = fields.iter().filter(|f| !old.contains(f)).collect();
                if !came_or_went && moved.iter().all(|(f, _)| f == TIME_MARK) {
                    ops.push(Op::Set { key: key(port), fields: moved.into_iter().cloned().collect() });
                } else {
                    ops.push(Op::Del { key: key(port) });
                    ops.push(Op::Set { key: key(port), fields: fields.clone() });
                }
            }
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lldpd 1.0.16's `lldpctl -f json` for two ports (a list) and one (an object), as
    /// Debian's lldpd printed them between two network namespaces.
    const TWO: &str = r#"{"lldp": {"interface": [
        {"Ethernet8": {"via": "LLDP", "rid": "1", "age": "0 day, 00:00:08",
            "chassis": {"s2": {"id": {"type": "mac", "value": "c2:97:d4:30:61:25"},
                "descr": "SONiC Software Version: SONiC.vs", "mgmt-ip": ["10.0.8.1", "fe80::1"],
                "capability": [{"type": "Bridge", "enabled": false}, {"type": "Router", "enabled": true}]}},
            "port": {"id": {"type": "ifname", "value": "Ethernet8"}, "descr": "to vs", "ttl": "120"}}},
        {"Ethernet12": {"via": "LLDP", "rid": "2", "age": "1 day, 02:03:04",
            "chassis": {"id": {"type": "local", "value": "x"}, "mgmt-ip": "10.0.12.1"},
            "port": {"id": {"type": "mac", "value": "aa:bb:cc:dd:ee:ff"}}}},
        {"docker0": {"via": "LLDP", "rid": "3", "age": "0 day, 00:00:01",
            "chassis": {"h": {"id": {"type": "mac", "value": "aa:aa:aa:aa:aa:aa"}}}, "port": {"id": {"type": "mac", "value": "a"}}}}
    ]}}"#;

    fn field<'a>(fields: &'a Fields, name: &str) -> &'a str {
        fields.iter().find(|(f, _)| f == name).map_or("<none>", |(_, v)| v.as_str())
    }

    #[test]
    fn lldpd_json_becomes_sonics_lldp_entry_table() {
        let entries = entries(TWO).unwrap();
        assert_eq!(entries.keys().collect::<Vec<_>>(), ["Ethernet12", "Ethernet8"], "docker0 is not reported");
        let e8 = &entries["Ethernet8"];
        for (name, value) in [
            ("lldp_rem_port_id_subtype", "5"),
            ("lldp_rem_port_id", "Ethernet8"),
            ("lldp_rem_port_desc", "to vs"),
            ("lldp_rem_chassis_id_subtype", "4"),
            ("lldp_rem_chassis_id", "c2:97:d4:30:61:25"),
            ("lldp_rem_sys_name", "s2"),
            ("lldp_rem_man_addr", "10.0.8.1,fe80::1"),
            ("lldp_rem_time_mark", "8"),
            ("lldp_rem_index", "1"),
            ("lldp_rem_sys_cap_supported", "28 00"),
            ("lldp_rem_sys_cap_enabled", "08 00"),
        ] {
            assert_eq!(field(e8, name), value, "{name}");
        }
        let e12 = &entries["Ethernet12"];
        assert_eq!(
            (
                field(e12, "lldp_rem_sys_name"),
                field(e12, "lldp_rem_time_mark"),
                field(e12, "lldp_rem_sys_cap_supported")
            ),
            ("", "93784", "")
        );
        assert_eq!(field(e12, "lldp_rem_port_id_subtype"), "3");
        // One port: lldpd prints an object, not a list.
        let one = r#"{"lldp": {"interface": {"Ethernet0": {"rid": "1", "age": "0 day, 00:01:00",
            "chassis": {"s3": {"id": {"type": "mac", "value": "m"}}}, "port": {"id": {"type": "local", "value": "7"}}}}}}"#;
        assert_eq!(field(&super::entries(one).unwrap()["Ethernet0"], "lldp_rem_time_mark"), "60");
        assert!(super::entries(r#"{"lldp": {}}"#).unwrap().is_empty(), "no neighbours");
        assert!(super::entries("{").is_err() && super::entries("{}").is_err());
    }

    #[test]
    fn the_local_chassis_is_read_from_show_chassis() {
        let json = r#"{"local-chassis": {"chassis": {"vs": {"id": {"type": "mac", "value": "1e:e9:c9:8d:8a:f3"},
            "descr": "d", "mgmt-ip": "10.0.0.1", "capability": [{"type": "Router", "enabled": true}]}}}}"#;
        let fields = local_chassis(json).unwrap();
        assert_eq!(field(&fields, "lldp_loc_sys_name"), "vs");
        assert_eq!(field(&fields, "lldp_loc_chassis_id_subtype"), "4");
        assert_eq!(field(&fields, "lldp_loc_sys_cap_enabled"), "08 00");
    }

    #[test]
    fn a_poll_writes_what_changed_as_lldp_syncd_does() {
        let before = entries(TWO).unwrap();
        assert!(changes(&before, &before).is_empty());
        let mut later = before.clone();
        later.get_mut("Ethernet8").unwrap().iter_mut().find(|(f, _)| f == TIME_MARK).unwrap().1 = "18".into();
        assert_eq!(
            changes(&before, &later),
            vec![Op::Set { key: "LLDP_ENTRY_TABLE:Ethernet8".into(), fields: vec![(TIME_MARK.into(), "18".into())] }]
        );
        let mut renamed = later.clone();
        renamed.get_mut("Ethernet8").unwrap().iter_mut().find(|(f, _)| f == "lldp_rem_sys_name").unwrap().1 =
            "s9".into();
        let ops = changes(&later, &renamed);
        assert!(matches!(&ops[..], [Op::Del { .. }, Op::Set { fields, .. }] if fields.len() == 12), "{ops:?}");
        let mut gone = renamed.clone();
        gone.remove("Ethernet12");
        assert_eq!(changes(&renamed, &gone), vec![Op::Del { key: "LLDP_ENTRY_TABLE:Ethernet12".into() }]);
    }
}
