//! `soniclet db`: sonic-db-cli's job, and swssconfig's, straight on Redis (no daemon needed).
//!
//! ```text
//! soniclet db APPL_DB hgetall 'PORT_TABLE:Ethernet0'
//! soniclet db CONFIG_DB keys 'FEATURE|*'
//! soniclet db STATE_DB hset 'FEATURE|bgp' state enabled
//! soniclet db apply routes.json
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;

use super::output::{CliResult, Failure};
use crate::db::config::DbConfig;
use crate::db::producer_state::ProducerStateTable;
use crate::db::{Db, DbError, Fields, Op};
use crate::exit::Exit;

fn unavailable(e: DbError) -> Failure {
    Failure {
        exit: Exit::Unavailable,
        message: format!("{e}; is the database service running? (soniclet status database)"),
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure { exit: Exit::Usage, message: message.into() }
}

fn load_config(db_config: Option<&Path>, sonic_root: &Path) -> Result<DbConfig, Failure> {
    DbConfig::load_under(db_config, sonic_root).map_err(|e| Failure { exit: Exit::Invalid, message: e.to_string() })
}

async fn open(config: &DbConfig, name: &str, sonic_root: &Path) -> Result<Db, Failure> {
    let location = config.locate(name).ok_or_else(|| Failure {
        exit: Exit::NotFound,
        message: format!("unknown database {name:?}; known: {}", config.names().collect::<Vec<_>>().join(", ")),
    })?;
    Db::open(location, sonic_root).await.map_err(unavailable)
}

fn fields_json(fields: &Fields) -> String {
    let map: serde_json::Map<String, Value> = fields.iter().map(|(f, v)| (f.clone(), Value::from(v.clone()))).collect();
    Value::Object(map).to_string()
}

pub async fn run(db_config: Option<PathBuf>, sonic_root: &Path, args: &[String]) -> CliResult {
    let config = load_config(db_config.as_deref(), sonic_root)?;
    let (first, rest) =
        args.split_first().ok_or_else(|| usage("usage: soniclet db DB COMMAND ... | soniclet db apply FILE.json"))?;
    if first == "apply" {
        let [file] = rest else { return Err(usage("usage: soniclet db apply FILE.json")) };
        return apply(&config, sonic_root, Path::new(file)).await;
    }
    let db = open(&config, first, sonic_root).await?;
    let (command, args) =
        rest.split_first().ok_or_else(|| usage("missing command: hgetall, hget, keys, get, set, hset, del"))?;
    match (command.to_ascii_lowercase().as_str(), args) {
        ("hgetall", [key]) => println!("{}", fields_json(&db.hgetall(key).await.map_err(unavailable)?)),
        ("hget", [key, field]) => match db.hget(key, field).await.map_err(unavailable)? {
            Some(v) => println!("{v}"),
            None => return Err(Failure { exit: Exit::NotFound, message: format!("{key} has no field {field}") }),
        },
        ("keys", []) | ("keys", [_]) => {
            let pattern = args.first().map(String::as_str).unwrap_or("*");
            let mut keys = db.keys(pattern).await.map_err(unavailable)?;
            keys.sort();
            for key in keys {
                println!("{key}");
            }
        }
        ("get", [key]) => match db.get(key).await.map_err(unavailable)? {
            Some(v) => println!("{v}"),
            None => return Err(Failure { exit: Exit::NotFound, message: format!("no key {key}") }),
        },
        ("set", [key, value]) => db.set(key, value).await.map_err(unavailable)?,
        ("hset", [key, pairs @ ..]) if !pairs.is_empty() && pairs.len() % 2 == 0 => {
            let fields: Fields = pairs.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
            db.hset(key, &fields).await.map_err(unavailable)?;
        }
        ("del", keys) if !keys.is_empty() => db.del(keys).await.map_err(unavailable)?,
        (other, _) => {
            return Err(usage(format!(
                "bad command {other:?} or arguments; use hgetall KEY, hget KEY FIELD, keys [PATTERN], get KEY, set KEY VALUE, hset KEY FIELD VALUE..., del KEY..."
            )))
        }
    }
    Ok(())
}

/// One validated swssconfig entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwssEntry {
    pub table: String,
    pub op: Op,
}

/// Parses swssconfig's format: a JSON array of `{"TABLE:key": {field: value}, "OP": "SET"|"DEL"}`.
/// The whole file is checked before anything is written; errors name the entry and field.
pub fn parse_swssconfig(file: &Path, text: &str) -> Result<Vec<SwssEntry>, String> {
    let at = |i: usize, message: String| format!("{}: entry [{i}]: {message}", file.display());
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("{}: {e}", file.display()))?;
    let Value::Array(items) = doc else { return Err(format!("{}: expected a JSON array of entries", file.display())) };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(map) = item else { return Err(at(i, "is not an object".into())) };
        let op = match map.get("OP") {
            None => "SET",
            Some(Value::String(op)) if op == "SET" || op == "DEL" => op.as_str(),
            Some(other) => return Err(at(i, format!("\"OP\" is {other}, expected \"SET\" or \"DEL\""))),
        };
        let mut keys = map.keys().filter(|k| *k != "OP");
        let (Some(full_key), None) = (keys.next(), keys.next()) else {
            return Err(at(i, "must hold exactly one \"TABLE:key\" besides \"OP\"".into()));
        };
        let Some((table, key)) = full_key.split_once(':') else {
            return Err(at(i, format!("{full_key:?} is not TABLE:key")));
        };
        if table.is_empty() || key.is_empty() {
            return Err(at(i, format!("{full_key:?} is not TABLE:key")));
        }
        let Value::Object(values) = &map[full_key] else {
            return Err(at(i, format!("{full_key}: the value is not an object")));
        };
        let mut fields = Fields::with_capacity(values.len());
        for (field, value) in values {
            let Value::String(value) = value else {
                return Err(at(i, format!("{full_key}: field {field:?} is not a string")));
            };
            fields.push((field.clone(), value.clone()));
        }
        let op = match op {
            "DEL" => Op::Del { key: key.to_owned() },
            _ => Op::Set { key: key.to_owned(), fields },
        };
        out.push(SwssEntry { table: table.to_owned(), op });
    }
    Ok(out)
}

async fn apply(config: &DbConfig, sonic_root: &Path, file: &Path) -> CliResult {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure { exit: Exit::NotFound, message: format!("cannot read {}: {e}", file.display()) })?;
    let entries = parse_swssconfig(file, &text).map_err(|message| Failure { exit: Exit::Invalid, message })?;
    let db = open(config, "APPL_DB", sonic_root).await?;
    // Per table, in file order; tables in order of first appearance.
    let mut order: Vec<String> = Vec::new();
    let mut by_table: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    for entry in entries {
        if !by_table.contains_key(&entry.table) {
            order.push(entry.table.clone());
        }
        by_table.entry(entry.table).or_default().push(entry.op);
    }
    let started = Instant::now();
    let mut total = 0usize;
    for table in order {
        let ops = &by_table[&table];
        ProducerStateTable::new(&db, &table).apply(ops).await.map_err(unavailable)?;
        total += ops.len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "wrote {total} entries to APPL_DB in {:.1} ms ({:.0} entries/s)",
        secs * 1000.0,
        total as f64 / secs.max(1e-9)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_swssconfig_entries() {
        let text = r#"[
            {"ROUTE_TABLE:10.1.0.0/24": {"nexthop": "10.0.0.1", "ifname": "Ethernet0"}, "OP": "SET"},
            {"ROUTE_TABLE:Vrf-red:10.2.0.0/24": {}, "OP": "DEL"},
            {"NEIGH_TABLE:Ethernet0:10.0.0.1": {"neigh": "00:11:22:33:44:55", "family": "IPv4"}}
        ]"#;
        let entries = parse_swssconfig(Path::new("r.json"), text).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].table, "ROUTE_TABLE");
        assert_eq!(entries[1].op, Op::Del { key: "Vrf-red:10.2.0.0/24".into() });
        assert_eq!(entries[2].op.key(), "Ethernet0:10.0.0.1");
    }

    #[test]
    fn refuses_malformed_files_naming_the_entry() {
        let bad = [
            (r#"{"a": 1}"#, "expected a JSON array"),
            (r#"[{"ROUTE_TABLE:x": {"a": "b"}, "OP": "PUT"}]"#, "entry [0]: \"OP\" is \"PUT\""),
            (r#"[{"ROUTE_TABLE:x": {}, "X:y": {}}]"#, "exactly one"),
            (r#"[{"NOTABLEKEY": {}}]"#, "is not TABLE:key"),
            (r#"[{}, {"ROUTE_TABLE:x": {"mtu": 9100}}]"#, "entry [0]"),
            (r#"[{"ROUTE_TABLE:x": {"mtu": 9100}}]"#, "field \"mtu\" is not a string"),
            ("[{", "r.json"),
        ];
        for (text, expect) in bad {
            let err = parse_swssconfig(Path::new("r.json"), text).unwrap_err();
            assert!(err.contains(expect), "{text}: {err}");
        }
    }
}
