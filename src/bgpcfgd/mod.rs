//! bgpcfgd, SONiC's CONFIG_DB-to-FRR manager, as a role of the soniclet binary (to run in
//! the VS bgp image): `render` turns CONFIG_DB's `DEVICE_METADATA|localhost`,
//! `LOOPBACK_INTERFACE`, the interface tables and `BGP_NEIGHBOR` into FRR's startup
//! configuration and into the vtysh scripts that change neighbours live; `peers` keeps which
//! neighbours FRR should have and answers each CONFIG_DB change with scripts (both pure,
//! every bad entry refused with its key and field).

pub mod peers;
pub mod render;
pub mod run;

/// A CONFIG_DB entry bgpcfgd cannot use; the running FRR configuration stays as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BgpcfgdError {
    #[error("CONFIG_DB {key}: field `{field}` = {value:?} {reason}")]
    Field { key: String, field: &'static str, value: String, reason: &'static str },
    #[error("CONFIG_DB {key}: field `{field}` is missing ({hint})")]
    Missing { key: String, field: &'static str, hint: &'static str },
    #[error("CONFIG_DB {key}: the key is not {expected}")]
    Key { key: String, expected: &'static str },
}
