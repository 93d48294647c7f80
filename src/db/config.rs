//! `database_config.json` and `database_global.json`: where SONiC's databases live.
//!
//! Every SONiC program finds the databases through these files; so does soniclet. Parsing is
//! strict (unknown fields are refused) and validation names the file and the key of every
//! problem. The global file's `INCLUDES` are resolved relative to the global file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The path every SONiC program reads (`SonicDBConfig::DEFAULT_SONIC_DB_CONFIG_FILE`).
pub const DEFAULT_DB_CONFIG: &str = "/var/run/redis/sonic-db/database_config.json";
pub const DEFAULT_DB_GLOBAL: &str = "/var/run/redis/sonic-db/database_global.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub hostname: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_socket_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_for_warm_boot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub id: u8,
    pub separator: String,
    pub instance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// One `database_config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbConfig {
    #[serde(rename = "INSTANCES")]
    pub instances: BTreeMap<String, Instance>,
    #[serde(rename = "DATABASES")]
    pub databases: BTreeMap<String, Database>,
    #[serde(rename = "VERSION", default)]
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Include {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    container_name: Option<String>,
    include: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct GlobalConfig {
    #[serde(rename = "INCLUDES")]
    includes: Vec<Include>,
    #[serde(rename = "VERSION", default)]
    _version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DbConfigError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {key}: {message}", path.display())]
    Invalid { path: PathBuf, key: String, message: String },
}

/// Where a database is: resolved from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbLocation {
    pub name: String,
    pub id: u8,
    pub separator: char,
    pub instance: String,
    pub unix_socket: Option<PathBuf>,
    pub hostname: String,
    pub port: u16,
}

impl DbConfig {
    pub fn parse(path: &Path, text: &str) -> Result<Self, DbConfigError> {
        let config: DbConfig = serde_json::from_str(text)
            .map_err(|e| DbConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        config.validate(path)?;
        Ok(config)
    }

    /// `explicit`, or the switch's `database_config.json` under `sonic_root`.
    pub fn load_under(explicit: Option<&Path>, sonic_root: &Path) -> Result<Self, DbConfigError> {
        let path =
            explicit.map(Path::to_owned).unwrap_or_else(|| sonic_root.join(DEFAULT_DB_CONFIG.trim_start_matches('/')));
        Self::load(&path)
    }

    pub fn load(path: &Path) -> Result<Self, DbConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| DbConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    fn validate(&self, path: &Path) -> Result<(), DbConfigError> {
        let invalid = |key: String, message: String| DbConfigError::Invalid { path: path.to_owned(), key, message };
        if self.databases.is_empty() {
            return Err(invalid("DATABASES".into(), "no database is defined".into()));
        }
        for (name, instance) in &self.instances {
            if let Some(socket) = &instance.unix_socket_path {
                if !socket.starts_with('/') {
                    return Err(invalid(
                        format!("INSTANCES.{name}.unix_socket_path"),
                        format!("{socket} is not absolute"),
                    ));
                }
            }
        }
        for (name, db) in &self.databases {
            if db.id >= 100 {
                return Err(invalid(
                    format!("DATABASES.{name}.id"),
                    format!("{} is not below 100 (databases 100)", db.id),
                ));
            }
            if db.separator != ":" && db.separator != "|" {
                return Err(invalid(
                    format!("DATABASES.{name}.separator"),
                    format!("{:?} is neither \":\" nor \"|\"", db.separator),
                ));
            }
            if !self.instances.contains_key(&db.instance) {
                return Err(invalid(
                    format!("DATABASES.{name}.instance"),
                    format!("unknown instance {:?}", db.instance),
                ));
            }
        }
        Ok(())
    }

    /// SONiC's standard single-instance layout, as the VS database container writes it.
    pub fn standard() -> Self {
        let mut databases = BTreeMap::new();
        for (name, id, separator) in super::schema::STANDARD_DATABASES {
            databases.insert(
                (*name).to_owned(),
                Database { id: *id, separator: separator.to_string(), instance: "redis".to_owned(), format: None },
            );
        }
        let instances = BTreeMap::from([(
            "redis".to_owned(),
            Instance {
                hostname: "127.0.0.1".to_owned(),
                port: 6379,
                unix_socket_path: Some("/var/run/redis/redis.sock".to_owned()),
                persistence_for_warm_boot: Some("yes".to_owned()),
                database_type: None,
            },
        )]);
        Self { instances, databases, version: "1.0".to_owned() }
    }

    /// Finds a database by name (`APPL_DB`) or number (`0`).
    pub fn locate(&self, name_or_id: &str) -> Option<DbLocation> {
        let (name, db) = match self.databases.get_key_value(name_or_id) {
            Some(found) => found,
            None => {
                let id: u8 = name_or_id.parse().ok()?;
                self.databases.iter().find(|(_, d)| d.id == id)?
            }
        };
        let instance = self.instances.get(&db.instance)?;
        Some(DbLocation {
            name: name.clone(),
            id: db.id,
            separator: db.separator.chars().next().unwrap_or(':'),
            instance: db.instance.clone(),
            unix_socket: instance.unix_socket_path.as_ref().map(PathBuf::from),
            hostname: instance.hostname.clone(),
            port: instance.port,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.databases.keys().map(String::as_str)
    }
}

/// Loads a `database_global.json`: the per-namespace configs it includes, keyed by namespace
/// (`""` for the host's).
pub fn load_global(path: &Path) -> Result<BTreeMap<String, DbConfig>, DbConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| DbConfigError::Read { path: path.to_owned(), source })?;
    let global: GlobalConfig = serde_json::from_str(&text)
        .map_err(|e| DbConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
    let base = path.parent().unwrap_or(Path::new("/"));
    let mut out = BTreeMap::new();
    for (i, include) in global.includes.iter().enumerate() {
        let included = base.join(&include.include);
        let key = include.namespace.clone().or_else(|| include.container_name.clone()).unwrap_or_default();
        if out.contains_key(&key) {
            return Err(DbConfigError::Invalid {
                path: path.to_owned(),
                key: format!("INCLUDES[{i}]"),
                message: format!("namespace {key:?} is included twice"),
            });
        }
        out.insert(key, DbConfig::load(&included)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
        "INSTANCES": {"redis": {"hostname": "127.0.0.1", "port": 6379, "unix_socket_path": "/var/run/redis/redis.sock", "persistence_for_warm_boot": "yes"}},
        "DATABASES": {
            "APPL_DB": {"id": 0, "separator": ":", "instance": "redis"},
            "CONFIG_DB": {"id": 4, "separator": "|", "instance": "redis"}
        },
        "VERSION": "1.0"
    }"#;

    #[test]
    fn parses_and_locates_by_name_or_number() {
        let config = DbConfig::parse(Path::new("db.json"), SAMPLE).unwrap();
        let config_db = config.locate("CONFIG_DB").unwrap();
        assert_eq!((config_db.id, config_db.separator), (4, '|'));
        assert_eq!(config.locate("0").unwrap().name, "APPL_DB");
        assert_eq!(config_db.unix_socket.as_deref(), Some(Path::new("/var/run/redis/redis.sock")));
        assert!(config.locate("STATE_DB").is_none());
    }

    #[test]
    fn bad_files_name_the_key() {
        let bad = SAMPLE.replace("\"separator\": \"|\"", "\"separator\": \"/\"");
        let err = DbConfig::parse(Path::new("db.json"), &bad).unwrap_err().to_string();
        assert!(err.contains("db.json: DATABASES.CONFIG_DB.separator"), "{err}");
        let bad = SAMPLE.replace("\"instance\": \"redis\"}\n", "\"instance\": \"nope\"}\n");
        let err = DbConfig::parse(Path::new("db.json"), &bad).unwrap_err().to_string();
        assert!(err.contains("DATABASES.CONFIG_DB.instance"), "{err}");
        let bad = SAMPLE.replace("\"port\": 6379", "\"port\": 6379, \"colour\": 1");
        let err = DbConfig::parse(Path::new("db.json"), &bad).unwrap_err().to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn global_includes_resolve_relative_to_the_global_file() {
        let dir = tempfile::tempdir().unwrap();
        let sonic_db = dir.path().join("redis/sonic-db");
        let asic0 = dir.path().join("redis0/sonic-db");
        std::fs::create_dir_all(&sonic_db).unwrap();
        std::fs::create_dir_all(&asic0).unwrap();
        std::fs::write(sonic_db.join("database_config.json"), SAMPLE).unwrap();
        std::fs::write(asic0.join("database_config.json"), SAMPLE).unwrap();
        let global = sonic_db.join("database_global.json");
        std::fs::write(
            &global,
            r#"{"INCLUDES": [{"include": "database_config.json"}, {"namespace": "asic0", "include": "../../redis0/sonic-db/database_config.json"}], "VERSION": "1.0"}"#,
        )
        .unwrap();
        let configs = load_global(&global).unwrap();
        assert_eq!(configs.keys().collect::<Vec<_>>(), ["", "asic0"]);
    }

    #[test]
    fn standard_matches_sonic() {
        let std = DbConfig::standard();
        assert_eq!(std.locate("STATE_DB").unwrap().separator, '|');
        assert_eq!(std.locate("ASIC_DB").unwrap().id, 1);
    }
}
