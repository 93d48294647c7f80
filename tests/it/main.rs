//! Integration tier: real containerd, runc, redis-server and network namespaces, driven
//! through the real daemon and CLI. One binary, one module per area (matklad's layout).

mod adoption;
mod backstop;
#[path = "../common/mod.rs"]
mod common;
mod db;
mod feature;
mod fpmsyncd;
mod inputs;
mod intent;
mod lifecycle;
mod lifecycle_sonic;
mod lldp;
mod routing;
mod support;
mod upgrade;
mod vasic;
