//! `/host/machine.conf`: the switch's facts as ONIE gave them to the installer (`onie_platform`,
//! `onie_eth_addr`, `onie_serial_num`, the DHCP answers `onie_disco_*`...), one `name=value`
//! per line. SONiC's `sonic-environment` and `config-setup factory` read the same file.

use std::collections::BTreeMap;
use std::path::Path;

/// Where the installer writes it, under the SONiC-OS partition's mount point.
pub const MACHINE_CONF: &str = "machine.conf";

/// The facts, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineConf(BTreeMap<String, String>);

impl MachineConf {
    /// `name=value` lines; a value may be quoted the way a shell's `set` prints it.
    pub fn parse(text: &str) -> Self {
        let facts = text
            .lines()
            .filter_map(|line| line.trim().split_once('='))
            .filter(|(name, _)| !name.is_empty() && !name.starts_with('#'))
            .map(|(name, value)| {
                let value = value.trim();
                let unquoted = ['\'', '"']
                    .iter()
                    .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                    .unwrap_or(value);
                (name.trim().to_owned(), unquoted.to_owned())
            })
            .collect();
        Self(facts)
    }

    /// `host`'s machine.conf; none when the switch has none (a virtual switch under nspawn
    /// that plays no installed one, or a development host).
    pub fn read(host: &Path) -> Option<Self> {
        std::fs::read_to_string(host.join(MACHINE_CONF)).ok().map(|text| Self::parse(&text))
    }

    /// A fact with a value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn platform(&self) -> Option<&str> {
        self.get("onie_platform")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_read_plain_or_quoted_and_empty_ones_are_absent() {
        let conf = MachineConf::parse(
            "onie_platform=x86_64-kvm_x86_64-r0\nonie_build_date=\"2024-05-01T00:00+00:00\"\nonie_disco_hostname='leaf1'\nonie_serial_num=\n# a comment=1\n",
        );
        assert_eq!(conf.platform(), Some("x86_64-kvm_x86_64-r0"));
        assert_eq!(conf.get("onie_build_date"), Some("2024-05-01T00:00+00:00"));
        assert_eq!(conf.get("onie_disco_hostname"), Some("leaf1"));
        assert_eq!(conf.get("onie_serial_num"), None);
        assert_eq!(conf.get("# a comment"), None);
    }
}
