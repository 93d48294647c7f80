//! fpmsyncd, a role of the soniclet binary as in SONiC's bgp container: zebra's FPM client
//! (`dplane_fpm_nl`) connects to it and streams the RIB's routes as netlink messages, and it
//! writes them to APPL_DB `ROUTE_TABLE` through the ProducerStateTable protocol, keys and
//! fields as SONiC's fpmsyncd writes them, for orchagent.
//!
//! `frame` cuts zebra's byte stream into FPM frames, `rtmsg` decodes the netlink route
//! messages in them, `routes` decides each route's APPL_DB operation, `sweep` keeps
//! fpmsyncd's own keys and removes the stale ones after zebra's replay (all four pure);
//! `run` is the shell (the listener, the kernel's names, the writes).

pub mod frame;
pub mod routes;
pub mod rtmsg;
pub mod run;
pub mod sweep;

/// What zebra sent that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FpmError {
    #[error("malformed FPM message: {0}")]
    Malformed(String),
    #[error("unsupported FPM message: {0}")]
    Unsupported(String),
}
