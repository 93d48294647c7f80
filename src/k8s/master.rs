//! CONFIG_DB `KUBERNETES_MASTER|SERVER`, as KubeSonic's `config kubernetes server ip|port|
//! insecure|disable` writes it, as a source of the join; and which join the switch wants
//! from its sources (pure). The agent config's `[kubernetes] server` wins over CONFIG_DB: it
//! is the switch's own declaration, and CONFIG_DB is what a fleet tool or an operator writes
//! at run time.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::enroll::Request;
use crate::config::KubernetesConfig;
use crate::db::Fields;

/// The CONFIG_DB table and key.
pub const TABLE: &str = "KUBERNETES_MASTER";
pub const KEY: &str = "SERVER";
/// KubeSonic's default API server port.
pub const DEFAULT_PORT: u16 = 6443;
/// The token of a cluster CONFIG_DB names, unless the agent config's `token-file` says
/// otherwise: KubeSonic keeps its join credentials in `/etc/sonic/credentials` too.
pub const TOKEN_FILE: &str = "etc/sonic/credentials/k3s-token";

/// `KUBERNETES_MASTER|SERVER`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterServer {
    pub ip: String,
    pub port: u16,
    /// KubeSonic's `insecure`: fetch the cluster CA without verifying it. k3s verifies the
    /// server with the CA hash in a full `K10…` token, or trusts the first CA it sees with a
    /// bare token, so this changes nothing here; it is kept to be reported.
    pub insecure: bool,
    /// `disable=true`: the switch leaves this cluster (KubeSonic resets its membership).
    pub disable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterError {
    #[error("CONFIG_DB {TABLE}|{KEY}: field `ip` is missing (set it with `config kubernetes server ip <address>`)")]
    NoIp,
    #[error("CONFIG_DB {TABLE}|{KEY}: field `ip` = {0:?} is not an IP address or a host name")]
    Ip(String),
    #[error("CONFIG_DB {TABLE}|{KEY}: field `port` = {0:?} is not a port (1-65535)")]
    Port(String),
    #[error("CONFIG_DB {TABLE}|{KEY}: field `{field}` = {value:?} is not true or false")]
    Flag { field: &'static str, value: String },
    #[error("CONFIG_DB {TABLE}|{KEY}: unknown field `{0}` (the fields are ip, port, insecure and disable)")]
    UnknownField(String),
}

fn flag(field: &'static str, value: &str) -> Result<bool, MasterError> {
    match value {
        "true" | "on" => Ok(true),
        "false" | "off" => Ok(false),
        _ => Err(MasterError::Flag { field, value: value.to_owned() }),
    }
}

/// A host name as RFC 1123 allows it: labels of letters, digits and inner hyphens.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl MasterServer {
    /// The entry's fields, each checked; any bad one refuses the whole entry.
    pub fn parse(fields: &Fields) -> Result<Self, MasterError> {
        let mut server = Self { ip: String::new(), port: DEFAULT_PORT, insecure: false, disable: false };
        for (field, value) in fields {
            match field.as_str() {
                "ip" => {
                    if value.parse::<IpAddr>().is_err() && !is_host_name(value) {
                        return Err(MasterError::Ip(value.clone()));
                    }
                    server.ip = value.clone();
                }
                "port" => {
                    server.port =
                        value.parse().ok().filter(|p| *p != 0).ok_or_else(|| MasterError::Port(value.clone()))?
                }
                "insecure" => server.insecure = flag("insecure", value)?,
                "disable" => server.disable = flag("disable", value)?,
                other => return Err(MasterError::UnknownField(other.to_owned())),
            }
        }
        if server.ip.is_empty() {
            return Err(MasterError::NoIp);
        }
        Ok(server)
    }

    /// The API server's URL, an IPv6 address in brackets.
    pub fn url(&self) -> String {
        match self.ip.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("https://[{v6}]:{}", self.port),
            _ => format!("https://{}:{}", self.ip, self.port),
        }
    }
}

/// What the switch should do about its membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Nothing to do: joined to the server wanted, or no source names one.
    Keep,
    /// Join (or move to) this server.
    Join { request: Request, from: Source },
    /// CONFIG_DB disables the cluster the switch is joined to: leave it.
    Leave { server: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    AgentConfig,
    ConfigDb,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AgentConfig => "[kubernetes] server in the agent config",
            Self::ConfigDb => "CONFIG_DB KUBERNETES_MASTER|SERVER",
        }
    }
}

/// The membership the sources ask for, given the server the switch has joined (if any).
/// A deleted or disabled entry never leaves a cluster CONFIG_DB did not name: a join made by
/// `soniclet k8s join` stays until `soniclet k8s leave`.
pub fn membership(
    config: &KubernetesConfig,
    master: Option<&MasterServer>,
    joined: Option<&str>,
    sonic_root: &Path,
) -> Membership {
    let request = |server: String, token_file: PathBuf| Request {
        server,
        token_file,
        node_name: config.node_name.clone(),
        labels: config.labels.clone(),
    };
    if let (Some(server), Some(token_file)) = (&config.server, &config.token_file) {
        if joined == Some(server.as_str()) {
            return Membership::Keep;
        }
        return Membership::Join { request: request(server.clone(), token_file.clone()), from: Source::AgentConfig };
    }
    let Some(master) = master else { return Membership::Keep };
    let url = master.url();
    match (master.disable, joined == Some(url.as_str())) {
        (true, true) => Membership::Leave { server: url },
        (true, false) | (false, true) => Membership::Keep,
        (false, false) => {
            let token_file = config.token_file.clone().unwrap_or_else(|| sonic_root.join(TOKEN_FILE));
            Membership::Join { request: request(url, token_file), from: Source::ConfigDb }
        }
    }
}

/// STATE_DB `KUBERNETES_MASTER|SERVER`, as KubeSonic's ctrmgrd reports it: the server named
/// and whether the switch is a registered node of it.
pub fn state_fields(master: &MasterServer, connected: bool, now: std::time::SystemTime) -> Fields {
    vec![
        ("connected".to_owned(), connected.to_string()),
        ("ip".to_owned(), master.ip.clone()),
        ("port".to_owned(), master.port.to_string()),
        ("update_time".to_owned(), humantime::format_rfc3339_seconds(now).to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn kubesonic_entries_parse_and_bad_ones_name_their_field() {
        let server = MasterServer::parse(&fields(&[("ip", "10.3.1.1")])).unwrap();
        assert_eq!((server.port, server.disable, server.url()), (6443, false, "https://10.3.1.1:6443".to_owned()));
        let server = MasterServer::parse(&fields(&[("ip", "fd00::1"), ("port", "443"), ("insecure", "true")])).unwrap();
        assert_eq!(server.url(), "https://[fd00::1]:443");
        assert!(server.insecure);
        assert_eq!(
            MasterServer::parse(&fields(&[("ip", "k3s.lab"), ("disable", "on")])).unwrap().url(),
            "https://k3s.lab:6443"
        );
        for (entry, field) in [
            (fields(&[("port", "6443")]), "`ip`"),
            (fields(&[("ip", "not a host")]), "`ip`"),
            (fields(&[("ip", "10.0.0.1"), ("port", "70000")]), "`port`"),
            (fields(&[("ip", "10.0.0.1"), ("port", "0")]), "`port`"),
            (fields(&[("ip", "10.0.0.1"), ("disable", "yes")]), "`disable`"),
            (fields(&[("ip", "10.0.0.1"), ("vip", "x")]), "`vip`"),
        ] {
            let error = MasterServer::parse(&entry).unwrap_err().to_string();
            assert!(error.contains("KUBERNETES_MASTER|SERVER") && error.contains(field), "{error}");
        }
    }

    fn master(ip: &str, disable: bool) -> MasterServer {
        MasterServer { ip: ip.into(), port: 6443, insecure: false, disable }
    }

    #[test]
    fn the_agent_config_wins_and_config_db_joins_moves_and_leaves_only_its_own_cluster() {
        let root = Path::new("/");
        let none = KubernetesConfig::default();
        let token = Path::new("/etc/sonic/credentials/k3s-token");
        let a = master("10.0.0.1", false);
        match membership(&none, Some(&a), None, root) {
            Membership::Join { request, from: Source::ConfigDb } => {
                assert_eq!((request.server.as_str(), request.token_file.as_path()), ("https://10.0.0.1:6443", token));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(membership(&none, Some(&a), Some("https://10.0.0.1:6443"), root), Membership::Keep);
        // A new ip moves the switch.
        let b = master("10.0.0.2", false);
        assert!(matches!(membership(&none, Some(&b), Some("https://10.0.0.1:6443"), root), Membership::Join { .. }));
        // disable leaves the cluster it names, and only that one.
        let off = master("10.0.0.1", true);
        assert_eq!(
            membership(&none, Some(&off), Some("https://10.0.0.1:6443"), root),
            Membership::Leave { server: "https://10.0.0.1:6443".into() }
        );
        assert_eq!(membership(&none, Some(&off), Some("https://cli-joined:6443"), root), Membership::Keep);
        assert_eq!(membership(&none, Some(&off), None, root), Membership::Keep);
        // No entry never leaves a cluster joined by hand.
        assert_eq!(membership(&none, None, Some("https://cli-joined:6443"), root), Membership::Keep);
        // The agent config's server wins; its token file serves CONFIG_DB's server too.
        let config = KubernetesConfig {
            server: Some("https://k3s:6443".into()),
            token_file: Some("/t".into()),
            ..Default::default()
        };
        assert!(matches!(
            membership(&config, Some(&a), None, root),
            Membership::Join { from: Source::AgentConfig, .. }
        ));
        assert_eq!(membership(&config, Some(&off), Some("https://k3s:6443"), root), Membership::Keep);
        let token_only = KubernetesConfig { token_file: Some("/t".into()), ..Default::default() };
        match membership(&token_only, Some(&a), None, root) {
            Membership::Join { request, .. } => assert_eq!(request.token_file, Path::new("/t")),
            other => panic!("{other:?}"),
        }
    }
}
