//! The kernel port of the virtual syncd and portsyncd: one narrow trait, implemented over
//! rtnetlink by [`super::netlink::Netlink`].

use std::future::Future;

use tokio::sync::mpsc;

use super::syncd::KernelOp;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot open rtnetlink: {0}")]
    Connect(String),
    #[error("no network device {name}: {detail}")]
    NoDevice { name: String, detail: String },
    #[error("the kernel refused {what}: {detail}")]
    Refused { what: String, detail: String },
}

/// A netdev's state, as portsyncd mirrors it and fpmsyncd names next hops and VRFs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    /// The kernel table a VRF device owns.
    pub vrf_table: Option<u32>,
    pub admin_up: bool,
    pub oper_up: bool,
    pub mtu: u32,
}

pub trait Kernel: Send + Sync + 'static {
    /// Carries out one change; already done counts as done.
    fn apply(&self, op: &KernelOp) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Every netdev now.
    fn links(&self) -> impl Future<Output = Result<Vec<LinkState>, KernelError>> + Send;
    /// Every later change of a netdev.
    fn watch_links(&self) -> Result<mpsc::UnboundedReceiver<LinkState>, KernelError>;
}
