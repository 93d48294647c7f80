//! lldp_syncd, SONiC's LLDP-to-APPL_DB daemon, to be a role of the soniclet binary in the VS
//! lldp image: `neighbors` reads lldpd's `lldpctl -f json` and `lldpcli -f json show chassis`
//! into APPL_DB `LLDP_ENTRY_TABLE:<port>` and `LLDP_LOC_CHASSIS` with SONiC's field names, and
//! decides each poll's writes by lldp_syncd's diff rules (pure); `run` polls lldpd and writes
//! (`soniclet lldp-syncd`); `lldpmgrd` decides the lldpcli commands that configure lldpd from
//! the databases, as SONiC's lldpmgrd (pure).

pub mod lldpmgrd;
pub mod neighbors;
pub mod run;

/// lldpd's answer could not be read; that poll writes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LldpError {
    #[error("lldpctl's JSON: {0}")]
    Json(String),
    #[error("lldpctl's JSON: {0} is not where lldpd puts it")]
    Shape(&'static str),
}
