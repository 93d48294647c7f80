//! The virtual ASIC: SONiC's switch-state path end to end without a switch ASIC, as
//! SONiC-VS does for SONiC (design §6). Real packets cross the virtual switch.
//!
//! ```text
//!  APPL_DB ──ConsumerStateTable──► vasic orch ──ASIC_STATE op queue (sync)──► vasic syncd ──rtnetlink──► kernel
//!     ▲                            (orch.rs: APPL_DB → SAI ops)             (syncd.rs: SAI ops → KernelOp)
//!     └── vasic portsyncd: CONFIG_DB PORT → PORT_TABLE, PortConfigDone, PortInitDone, oper status
//! ```
//!
//! - `sai`: sairedis's spelling (VIDs, entry keys, attribute names).
//! - `orch`, `syncd`: the decisions, pure and tested as tables.
//! - `kernel`: the port; `netlink`: its adapter (the only importer of rtnetlink).
//! - `run`: the three processes' loops over Redis and the kernel.
//!
//! **Invariant:** syncd writes `ASIC_STATE:*`, VIDTORID and RIDTOVID only after the kernel
//! accepted the change, then answers; a refusal is a SAI status, never a crash. Its state
//! lives only in memory: a restarted syncd has lost the "hardware", as a real ASIC has.

pub mod kernel;
pub mod netlink;
pub mod orch;
pub mod run;
pub mod sai;
pub mod syncd;

#[derive(Debug, thiserror::Error)]
pub enum VasicError {
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    #[error("syncd did not answer {key} within {secs}s")]
    NoResponse { key: String, secs: u64 },
}
