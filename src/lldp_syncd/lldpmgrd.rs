//! lldpmgrd's decisions (pure): which `lldpcli` commands configure lldpd from the switch's
//! databases, as SONiC's lldpmgrd issues them. A front-panel port whose APPL_DB `PORT_TABLE`
//! entry is up gets `configure ports <port> lldp portidsubtype local <alias> [description
//! <d>]`, run once STATE_DB says its netdev is up; the system hostname comes from
//! `DEVICE_METADATA|localhost`; lldpd is told to resume once the ports are configured and
//! initialised (PortConfigDone, PortInitDone).

use std::collections::{BTreeMap, BTreeSet};

use crate::db::Fields;

/// One lldpcli invocation's arguments.
pub type Command = Vec<String>;

fn get<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.iter().find(|(f, _)| f == name).map(|(_, v)| v.as_str())
}

fn words(words: &[&str]) -> Command {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// lldpmgrd leaves inband, recirculation and backplane ports alone.
fn is_front_panel(name: &str, fields: &Fields) -> bool {
    name.starts_with("Ethernet")
        && !name.starts_with("Ethernet-BP")
        && !name.starts_with("Ethernet-IB")
        && !name.starts_with("Ethernet-Rec")
        && !matches!(get(fields, "role"), Some("Inb" | "Rec" | "Dpc"))
}

#[derive(Debug, Default)]
pub struct Lldpmgrd {
    /// Ports whose command waits for their netdev, by name.
    pending: BTreeMap<String, Command>,
    netdevs_up: BTreeSet<String>,
    config_done: bool,
    init_done: bool,
    resumed: bool,
    hostname: Option<String>,
}

impl Lldpmgrd {
    pub fn new() -> Self {
        Self::default()
    }

    /// An APPL_DB `PORT_TABLE` entry set (`Some`) or deleted.
    pub fn app_port(&mut self, name: &str, fields: Option<&Fields>) -> Vec<Command> {
        match name {
            "PortConfigDone" => self.config_done = fields.is_some(),
            "PortInitDone" => self.init_done = fields.is_some(),
            _ => match fields {
                Some(fields)
                    if is_front_panel(name, fields) && get(fields, "oper_status").is_some_and(|s| s.contains("up")) =>
                {
                    let alias = get(fields, "alias").filter(|a| !a.is_empty()).unwrap_or(name);
                    let mut command = words(&["configure", "ports", name, "lldp", "portidsubtype", "local", alias]);
                    if let Some(description) = get(fields, "description").filter(|d| !d.is_empty()) {
                        command.push("description".to_owned());
                        command.push(description.to_owned());
                    }
                    self.pending.insert(name.to_owned(), command);
                }
                _ => {
                    self.pending.remove(name);
                }
            },
        }
        self.due()
    }

    /// STATE_DB `PORT_TABLE|<port> netdev_oper_status`.
    pub fn netdev(&mut self, name: &str, up: bool) -> Vec<Command> {
        if up {
            self.netdevs_up.insert(name.to_owned());
        } else {
            self.netdevs_up.remove(name);
        }
        self.due()
    }

    /// `DEVICE_METADATA|localhost`: `chassis_hostname`, else `hostname`.
    pub fn metadata(&mut self, fields: &Fields) -> Vec<Command> {
        let hostname = get(fields, "chassis_hostname").or_else(|| get(fields, "hostname")).filter(|h| !h.is_empty());
        if hostname.map(str::to_owned) == self.hostname {
            return Vec::new();
        }
        self.hostname = hostname.map(str::to_owned);
        hostname.map(|h| vec![words(&["configure", "system", "hostname", h])]).unwrap_or_default()
    }

    /// A command failed: it is due again (the shell waits 6 s and tries at most 5 times).
    pub fn failed(&mut self, command: &Command) {
        if let Some(port) = command.get(2).filter(|_| command.get(1).map(String::as_str) == Some("ports")) {
            self.pending.entry(port.clone()).or_insert_with(|| command.clone());
        }
    }

    /// lldpd's resume, once, when the ports are configured and initialised (or the shell's
    /// 300 s wait is over).
    pub fn resume_due(&mut self, waited_too_long: bool) -> Option<Command> {
        if self.resumed || !(waited_too_long || (self.config_done && self.init_done)) {
            return None;
        }
        self.resumed = true;
        Some(words(&["resume"]))
    }

    fn due(&mut self) -> Vec<Command> {
        let ready: Vec<String> = self.pending.keys().filter(|p| self.netdevs_up.contains(*p)).cloned().collect();
        ready.into_iter().filter_map(|port| self.pending.remove(&port)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn show(commands: &[Command]) -> Vec<String> {
        commands.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn ports_are_configured_once_up_and_lldpd_resumes_after_port_init() {
        let mut mgr = Lldpmgrd::new();
        let up = fields(&[("alias", "etp3"), ("description", "to s2"), ("oper_status", "up")]);
        assert!(mgr.app_port("Ethernet8", Some(&up)).is_empty(), "waits for the netdev");
        assert_eq!(
            show(&mgr.netdev("Ethernet8", true)),
            ["configure ports Ethernet8 lldp portidsubtype local etp3 description to s2"]
        );
        assert!(mgr.netdev("Ethernet8", true).is_empty(), "once");
        // No alias: the port's own name. Down: nothing.
        mgr.netdev("Ethernet12", true);
        assert_eq!(
            show(&mgr.app_port("Ethernet12", Some(&fields(&[("oper_status", "up")])))),
            ["configure ports Ethernet12 lldp portidsubtype local Ethernet12"]
        );
        assert!(mgr.app_port("Ethernet16", Some(&fields(&[("oper_status", "down")]))).is_empty());
        mgr.netdev("Ethernet-BP0", true);
        assert!(mgr.app_port("Ethernet-BP0", Some(&up)).is_empty(), "backplane ports are left alone");
        // A failure makes the command due again.
        let command = words(&["configure", "ports", "Ethernet8", "lldp", "portidsubtype", "local", "etp3"]);
        mgr.failed(&command);
        assert_eq!(show(&mgr.netdev("Ethernet8", true)), [command.join(" ")]);
        // Resume: after PortConfigDone and PortInitDone, once.
        assert_eq!(mgr.resume_due(false), None);
        mgr.app_port("PortConfigDone", Some(&fields(&[("count", "2")])));
        assert_eq!(mgr.resume_due(false), None);
        mgr.app_port("PortInitDone", Some(&fields(&[("lanes", "0")])));
        assert_eq!(mgr.resume_due(false), Some(words(&["resume"])));
        assert_eq!(mgr.resume_due(true), None);
        // The hostname: chassis_hostname first, said when it changes.
        let metadata = fields(&[("hostname", "vs"), ("chassis_hostname", "vs-chassis")]);
        assert_eq!(show(&mgr.metadata(&metadata)), ["configure system hostname vs-chassis"]);
        assert!(mgr.metadata(&metadata).is_empty());
    }
}
