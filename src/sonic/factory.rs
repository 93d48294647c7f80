//! SONiC's `config-setup factory`: a switch's first boot finds no `/etc/sonic/config_db.json`
//! and writes the factory default for its platform and HWSKU, as `sonic-cfggen -H -k <hwsku>
//! --preset <preset>` does. The platform comes from `/host/machine.conf` (ONIE's
//! `onie_platform`), the HWSKU and preset from the platform's `default_sku`, the ports from
//! the HWSKU's `port_config.ini`, the MAC from `onie_eth_addr` and the hostname from the
//! DHCP answer ONIE had (`onie_disco_hostname`), else SONiC's `sonic`. Later boots find the
//! file and keep it: it is the operator's from then on.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::db::Fields;
use crate::os::machine::MachineConf;

/// Where SONiC keeps each platform's files (`<platform>/default_sku`, `<platform>/<hwsku>/`).
pub const DEVICE_DIR: &str = "usr/share/sonic/device";
/// SONiC's hostname when nothing names the switch.
pub const DEFAULT_HOSTNAME: &str = "sonic";
/// SONiC's default port MTU (`portconfig.py`).
const PORT_MTU: &str = "9100";

#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    #[error("cannot read {path}: {source}; the platform's files belong in /{DEVICE_DIR}/<platform>/")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Parse { path: PathBuf, line: usize, message: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// `port_config.ini`'s rows: each port's name and its fields, in the file's order.
pub type Ports = Vec<(String, Fields)>;

/// What the platform's files say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub platform: String,
    pub hwsku: String,
    pub preset: Preset,
    pub ports: Ports,
}

/// `sonic-cfggen --preset`: what kind of switch the factory default makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// A leaf router: routed ports, up.
    T1,
    /// A layer-2 switch: every port up and an untagged member of Vlan1000.
    L2,
    /// Only the device's metadata and its ports, down.
    Empty,
}

impl Preset {
    fn parse(word: Option<&str>) -> Option<Self> {
        match word {
            None | Some("t1") => Some(Self::T1),
            Some("l2") => Some(Self::L2),
            Some("empty") => Some(Self::Empty),
            Some(_) => None,
        }
    }
}

fn read(path: &Path) -> Result<String, FactoryError> {
    std::fs::read_to_string(path).map_err(|source| FactoryError::Read { path: path.to_owned(), source })
}

/// `default_sku` (`<hwsku> [<preset>]`) and the HWSKU's `port_config.ini`, under `devices`.
pub fn read_device(devices: &Path, platform: &str) -> Result<Device, FactoryError> {
    let sku_path = devices.join(platform).join("default_sku");
    let text = read(&sku_path)?;
    let (line, words) = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split_whitespace().collect::<Vec<_>>()))
        .find(|(_, w)| w.first().is_some_and(|w| !w.starts_with('#')))
        .ok_or_else(|| FactoryError::Parse { path: sku_path.clone(), line: 1, message: "names no HWSKU".into() })?;
    let preset = Preset::parse(words.get(1).copied()).ok_or_else(|| FactoryError::Parse {
        path: sku_path.clone(),
        line,
        message: format!("preset {:?} is not one soniclet writes (t1, l2, empty)", words[1]),
    })?;
    let hwsku = words[0].to_owned();
    let ports_path = devices.join(platform).join(&hwsku).join("port_config.ini");
    let ports = parse_port_config(&ports_path, &read(&ports_path)?)?;
    Ok(Device { platform: platform.to_owned(), hwsku, preset, ports })
}

/// SONiC's `port_config.ini`: a `# name lanes alias index speed ...` header names the
/// columns (without one: name, lanes, alias, index); each row is a port.
pub fn parse_port_config(path: &Path, text: &str) -> Result<Ports, FactoryError> {
    let err = |line: usize, message: String| FactoryError::Parse { path: path.to_owned(), line, message };
    let mut titles: Vec<String> = ["name", "lanes", "alias", "index"].map(str::to_owned).to_vec();
    let mut ports = Ports::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<String> = comment.split_whitespace().map(str::to_owned).collect();
            if ports.is_empty() && words.first().is_some_and(|w| w == "name") {
                titles = words;
            }
            continue;
        }
        let columns: Vec<&str> = line.split_whitespace().collect();
        if columns.is_empty() {
            continue;
        }
        if columns.len() > titles.len() {
            return Err(err(line_no, format!("{} columns, and the header names {}", columns.len(), titles.len())));
        }
        let name = columns[0];
        if !name.starts_with("Ethernet") {
            return Err(err(line_no, format!("port {name:?} is not named Ethernet<N>")));
        }
        if ports.iter().any(|(n, _)| n == name) {
            return Err(err(line_no, format!("port {name} appears twice")));
        }
        let fields = titles[1..].iter().zip(&columns[1..]).map(|(t, v)| (t.clone(), (*v).to_owned())).collect();
        ports.push((name.to_owned(), fields));
    }
    if ports.is_empty() {
        return Err(err(1, "lists no port".into()));
    }
    Ok(ports)
}

/// The hostname ONIE's DHCP answer gave, as a host name SONiC takes (its first label,
/// letters, digits and `-`); else SONiC's default.
pub fn hostname(facts: &MachineConf) -> String {
    let valid = |name: &str| {
        (1..=63).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    };
    facts
        .get("onie_disco_hostname")
        .map(|h| h.split('.').next().unwrap_or_default())
        .filter(|h| valid(h))
        .map_or_else(|| DEFAULT_HOSTNAME.to_owned(), str::to_owned)
}

/// The factory default config_db.json for `device`, with the switch's `facts` (pure).
pub fn factory_config(device: &Device, facts: &MachineConf) -> Value {
    let mut metadata = Map::new();
    metadata.insert("hostname".into(), hostname(facts).into());
    metadata.insert("hwsku".into(), device.hwsku.clone().into());
    metadata.insert("platform".into(), device.platform.clone().into());
    if let Some(mac) = facts.get("onie_eth_addr") {
        metadata.insert("mac".into(), mac.to_ascii_lowercase().into());
    }
    let kind = match device.preset {
        Preset::L2 => "ToRRouter",
        Preset::T1 | Preset::Empty => "LeafRouter",
    };
    metadata.insert("type".into(), kind.into());
    let admin = if device.preset == Preset::Empty { "down" } else { "up" };
    let mut ports = Map::new();
    for (name, fields) in &device.ports {
        let mut port: Map<String, Value> = fields.iter().map(|(f, v)| (f.clone(), Value::from(v.as_str()))).collect();
        port.entry("mtu").or_insert_with(|| PORT_MTU.into());
        port.insert("admin_status".into(), admin.into());
        ports.insert(name.clone(), Value::Object(port));
    }
    let mut config = json!({ "DEVICE_METADATA": { "localhost": metadata }, "PORT": ports });
    if device.preset == Preset::L2 {
        let names: Vec<&str> = device.ports.iter().map(|(n, _)| n.as_str()).collect();
        config["VLAN"] = json!({ "Vlan1000": { "vlanid": "1000", "members": names } });
        config["VLAN_MEMBER"] =
            names.iter().map(|n| (format!("Vlan1000|{n}"), json!({ "tagging_mode": "untagged" }))).collect();
    }
    config
}

/// A field of `DEVICE_METADATA|localhost`, when it has a value.
pub fn device_metadata<'a>(content: &'a crate::sonic::configdb::ConfigContent, field: &str) -> Option<&'a str> {
    let fields = content.get("DEVICE_METADATA")?.get("localhost")?;
    fields.iter().find(|(f, _)| f == field).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

/// What the first boot wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactoryDefault {
    pub path: PathBuf,
    pub platform: String,
    pub hwsku: String,
    pub hostname: String,
    pub ports: usize,
}

/// Writes `<sonic_root>/etc/sonic/config_db.json` when the switch has none: the factory
/// default for the platform the machine facts name (else `default_platform`). Answers
/// what it wrote; nothing when the file is there.
pub fn ensure(
    sonic_root: &Path,
    facts: &MachineConf,
    default_platform: &str,
) -> Result<Option<FactoryDefault>, FactoryError> {
    let path = sonic_root.join("etc/sonic/config_db.json");
    if path.exists() {
        return Ok(None);
    }
    let platform = facts.platform().unwrap_or(default_platform);
    let device = read_device(&sonic_root.join(DEVICE_DIR), platform)?;
    let config = factory_config(&device, facts);
    let mut bytes = serde_json::to_vec_pretty(&config).unwrap_or_default();
    bytes.push(b'\n');
    crate::state::fsutil::atomic_write(&path, &bytes)
        .map_err(|source| FactoryError::Write { path: path.clone(), source })?;
    Ok(Some(FactoryDefault {
        path,
        platform: device.platform,
        hwsku: device.hwsku,
        hostname: hostname(facts),
        ports: device.ports.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: &str = "# name lanes alias index speed\nEthernet0 25,26,27,28 fortyGigE0/0 0 100000\nEthernet4 29,30,31,32 fortyGigE0/4 1 100000\n";

    fn facts_of(host: &Path) -> MachineConf {
        MachineConf::read(host).unwrap_or_default()
    }

    fn device_tree(sku: &str, ports: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let platform = root.path().join(DEVICE_DIR).join("x86_64-kvm_x86_64-r0");
        std::fs::create_dir_all(platform.join("Force10-S6000")).unwrap();
        std::fs::write(platform.join("default_sku"), sku).unwrap();
        std::fs::write(platform.join("Force10-S6000/port_config.ini"), ports).unwrap();
        root
    }

    #[test]
    fn the_first_boot_writes_the_platforms_factory_default_with_onies_facts_and_later_boots_keep_it() {
        let root = device_tree("Force10-S6000 t1\n", PORTS);
        let host = root.path().join("host");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(
            host.join("machine.conf"),
            "onie_platform=x86_64-kvm_x86_64-r0\nonie_eth_addr=52:54:00:AB:CD:EF\nonie_disco_hostname=leaf1.example.net\n",
        )
        .unwrap();
        let wrote = ensure(root.path(), &facts_of(&host), "other-platform").unwrap().expect("written");
        assert_eq!((wrote.hwsku.as_str(), wrote.hostname.as_str(), wrote.ports), ("Force10-S6000", "leaf1", 2));
        let text = std::fs::read_to_string(&wrote.path).unwrap();
        let content = crate::sonic::configdb::parse(&wrote.path, &text).unwrap();
        assert_eq!(device_metadata(&content, "hostname"), Some("leaf1"));
        assert_eq!(device_metadata(&content, "bgp_asn"), None);
        let metadata = &content["DEVICE_METADATA"]["localhost"];
        for field in [
            ("hostname", "leaf1"),
            ("hwsku", "Force10-S6000"),
            ("platform", "x86_64-kvm_x86_64-r0"),
            ("mac", "52:54:00:ab:cd:ef"),
            ("type", "LeafRouter"),
        ] {
            assert!(metadata.contains(&(field.0.into(), field.1.into())), "{field:?} in {metadata:?}");
        }
        let port = &content["PORT"]["Ethernet4"];
        for field in [("lanes", "29,30,31,32"), ("alias", "fortyGigE0/4"), ("speed", "100000"), ("mtu", "9100")] {
            assert!(port.contains(&(field.0.into(), field.1.into())), "{field:?} in {port:?}");
        }
        assert!(port.contains(&("admin_status".into(), "up".into())));
        // The operator's from now on.
        std::fs::write(&wrote.path, "{}").unwrap();
        assert_eq!(ensure(root.path(), &facts_of(&host), "x").unwrap(), None);
        assert_eq!(std::fs::read_to_string(&wrote.path).unwrap(), "{}");
    }

    #[test]
    fn without_machine_conf_the_configured_platform_and_sonics_hostname_serve() {
        let root = device_tree("Force10-S6000 l2\n", PORTS);
        let wrote =
            ensure(root.path(), &facts_of(&root.path().join("no-host")), "x86_64-kvm_x86_64-r0").unwrap().unwrap();
        assert_eq!(wrote.hostname, "sonic");
        let content =
            crate::sonic::configdb::parse(&wrote.path, &std::fs::read_to_string(&wrote.path).unwrap()).unwrap();
        assert!(!content["DEVICE_METADATA"]["localhost"].iter().any(|(f, _)| f == "mac"));
        assert!(content["VLAN"]["Vlan1000"].contains(&("members@".into(), "Ethernet0,Ethernet4".into())));
        assert!(content["VLAN_MEMBER"]["Vlan1000|Ethernet0"].contains(&("tagging_mode".into(), "untagged".into())));
    }

    #[test]
    fn bad_platform_files_are_refused_naming_file_and_line_and_nothing_is_written() {
        let cases = [
            ("Force10-S6000 t9\n", PORTS, "default_sku:1: preset \"t9\""),
            ("# nothing\n", PORTS, "default_sku:1: names no HWSKU"),
            ("Force10-S6000\n", "# name lanes\nEthernet0 1 extra\n", "port_config.ini:2: 3 columns"),
            ("Force10-S6000\n", "eth0 1,2\n", "port_config.ini:1: port \"eth0\""),
            ("Force10-S6000\n", "Ethernet0 1\nEthernet0 2\n", "port_config.ini:2: port Ethernet0 appears twice"),
            ("Force10-S6000\n", "# name lanes\n", "port_config.ini:1: lists no port"),
        ];
        for (sku, ports, want) in cases {
            let root = device_tree(sku, ports);
            let e = ensure(root.path(), &facts_of(root.path()), "x86_64-kvm_x86_64-r0").unwrap_err().to_string();
            assert!(e.contains(want), "{sku:?} {ports:?}: {e}");
            assert!(!root.path().join("etc/sonic/config_db.json").exists());
        }
        let root = device_tree("Force10-S6000\n", PORTS);
        let e = ensure(root.path(), &facts_of(root.path()), "x86_64-unknown-r0").unwrap_err().to_string();
        assert!(e.contains("x86_64-unknown-r0/default_sku"), "{e}");
    }

    #[test]
    fn a_hostname_that_is_no_host_name_gives_sonics_default() {
        for (given, want) in [("leaf-7", "leaf-7"), ("-bad", "sonic"), ("a b", "sonic"), ("", "sonic")] {
            let facts = MachineConf::parse(&format!("onie_disco_hostname={given}\n"));
            assert_eq!(hostname(&facts), want, "{given:?}");
        }
    }
}
