//! The switch's facts for its Node, read from where SONiC keeps them: DEVICE_METADATA in
//! `config_db.json`, ONIE's `machine.conf`, and the running OS image. One reader for
//! `soniclet k8s join` and the daemon's Kubernetes task, which keeps the labels current.

use std::path::Path;

use super::labels::NodeFacts;

/// The facts, and DEVICE_METADATA's hostname (the node's default name).
pub fn read(sonic_root: &Path, os_host: &Path) -> (NodeFacts, Option<String>) {
    let content = crate::sonic::configdb::load_if_present(&sonic_root.join("etc/sonic/config_db.json")).ok().flatten();
    let metadata =
        |field| content.as_ref().and_then(|c| crate::sonic::factory::device_metadata(c, field)).map(str::to_owned);
    let machine = crate::os::machine::MachineConf::read(os_host).unwrap_or_default();
    let platform = machine.platform().map(str::to_owned).or_else(|| metadata("platform"));
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let version = crate::os::list(os_host, &cmdline).ok().and_then(|images| images.current);
    // The vendor part of SONiC's platform string (`x86_64-<vendor>_<machine>-r0`).
    let asic = platform.as_deref().and_then(|p| p.split('-').nth(1)).map(|vendor| match vendor {
        "kvm_x86_64" => "vs".to_owned(),
        other => other.to_owned(),
    });
    let facts = NodeFacts { hwsku: metadata("hwsku"), platform, device_type: metadata("type"), asic, version };
    (facts, metadata("hostname"))
}
