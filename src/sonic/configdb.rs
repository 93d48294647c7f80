//! `config_db.json` and `init_cfg.json`: CONFIG_DB's content on disk, as `sonic-cfggen
//! --write-to-db` and `config reload` load it.
//!
//! The format is `{"TABLE": {"key": {"field": value}}}`. Values are strings; numbers and
//! booleans are written as text; a list is written to `field@` joined with commas, as
//! ConfigDBConnector does; an entry without fields is written `NULL=NULL`. A file is checked
//! whole before anything is written, and errors name the file, table, key and field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::db::Fields;

/// Table -> key -> fields.
pub type ConfigContent = BTreeMap<String, BTreeMap<String, Fields>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct ConfigDbError {
    pub file: PathBuf,
    pub message: String,
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses and checks a config_db.json document.
pub fn parse(file: &Path, text: &str) -> Result<ConfigContent, ConfigDbError> {
    let err = |message: String| ConfigDbError { file: file.to_owned(), message };
    let doc: Value = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    let Value::Object(tables) = doc else { return Err(err("expected an object of tables".into())) };
    let mut out = ConfigContent::new();
    for (table, entries) in tables {
        if table.is_empty() || table.contains('|') {
            return Err(err(format!("{table:?} is not a table name")));
        }
        let Value::Object(entries) = entries else {
            return Err(err(format!("{table}: expected an object of entries")));
        };
        let mut keys = BTreeMap::new();
        for (key, fields) in entries {
            let Value::Object(fields) = fields else {
                return Err(err(format!("{table}|{key}: expected an object of fields")));
            };
            let mut out_fields = Fields::new();
            for (field, value) in fields {
                match &value {
                    Value::Array(items) => {
                        let items: Option<Vec<String>> = items.iter().map(scalar).collect();
                        let items = items
                            .ok_or_else(|| err(format!("{table}|{key}: field {field}: a list holds only text")))?;
                        out_fields.push((format!("{field}@"), items.join(",")));
                    }
                    other => {
                        let text = scalar(other).ok_or_else(|| {
                            err(format!(
                                "{table}|{key}: field {field}: {other} is not text, a number, a boolean or a list"
                            ))
                        })?;
                        out_fields.push((field, text));
                    }
                }
            }
            if out_fields.is_empty() {
                out_fields.push(("NULL".to_owned(), "NULL".to_owned()));
            }
            keys.insert(key, out_fields);
        }
        out.insert(table, keys);
    }
    Ok(out)
}

/// Reads `path` when it exists.
pub fn load_if_present(path: &Path) -> Result<Option<ConfigContent>, ConfigDbError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigDbError { file: path.to_owned(), message: e.to_string() }),
    }
}

/// `base` then `overlay`, entry by entry (fields of the same entry merge, overlay wins).
pub fn merge(mut base: ConfigContent, overlay: ConfigContent) -> ConfigContent {
    for (table, entries) in overlay {
        let target = base.entry(table).or_default();
        for (key, fields) in entries {
            let slot = target.entry(key).or_default();
            for (f, v) in fields {
                match slot.iter_mut().find(|(g, _)| *g == f) {
                    Some(existing) => existing.1 = v,
                    None => slot.push((f, v)),
                }
            }
            if slot.len() > 1 {
                slot.retain(|(f, _)| f != "NULL");
            }
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sonic_config() {
        let text = r#"{
            "DEVICE_METADATA": {"localhost": {"hostname": "sonic", "synchronous_mode": "enable"}},
            "FEATURE": {"bgp": {"state": "enabled", "auto_restart": "enabled"}},
            "VLAN": {"Vlan10": {"vlanid": 10, "members": ["Ethernet0", "Ethernet4"]}},
            "LOOPBACK_INTERFACE": {"Loopback0": {}}
        }"#;
        let content = parse(Path::new("c.json"), text).unwrap();
        let vlan = &content["VLAN"]["Vlan10"];
        assert!(vlan.contains(&("vlanid".into(), "10".into())));
        assert!(vlan.contains(&("members@".into(), "Ethernet0,Ethernet4".into())));
        assert_eq!(content["LOOPBACK_INTERFACE"]["Loopback0"], vec![("NULL".to_string(), "NULL".to_string())]);
    }

    #[test]
    fn refuses_malformed_files_naming_table_key_and_field() {
        let cases = [
            ("[1, 2]", "expected an object of tables"),
            (r#"{"FEATURE": []}"#, "FEATURE: expected an object"),
            (r#"{"FEATURE": {"bgp": "enabled"}}"#, "FEATURE|bgp: expected an object"),
            (r#"{"FEATURE": {"bgp": {"state": {"x": 1}}}}"#, "FEATURE|bgp: field state"),
            (r#"{"VLAN": {"Vlan10": {"members": [["x"]]}}}"#, "VLAN|Vlan10: field members"),
            ("{", "c.json"),
        ];
        for (text, expect) in cases {
            let e = parse(Path::new("c.json"), text).unwrap_err().to_string();
            assert!(e.contains(expect), "{text}: {e}");
        }
    }

    #[test]
    fn overlay_merges_entries() {
        let a =
            parse(Path::new("a"), r#"{"FEATURE": {"bgp": {"state": "enabled", "auto_restart": "enabled"}}}"#).unwrap();
        let b = parse(Path::new("b"), r#"{"FEATURE": {"bgp": {"state": "disabled"}, "lldp": {}}}"#).unwrap();
        let merged = merge(a, b);
        assert!(merged["FEATURE"]["bgp"].contains(&("state".into(), "disabled".into())));
        assert!(merged["FEATURE"]["bgp"].contains(&("auto_restart".into(), "enabled".into())));
        assert!(merged["FEATURE"].contains_key("lldp"));
    }
}
