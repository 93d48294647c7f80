//! What the kubelet must leave to the NOS (pure): kubernetes.io's "Reserve Compute Resources
//! for System Daemons", with the NOS as the system daemons.
//!
//! Allocatable = capacity - kube-reserved - system-reserved - the hard eviction threshold.
//! system-reserved is the NOS services' memory floors (each manifest's, or the default) plus
//! what the host's own daemons (systemd, journald, containerd, soniclet) take; kube-reserved
//! is the k3s agent's own need (k3s's resource profiling: about 275 MB and a few percent of a
//! core). Only `pods` is enforced: the docs warn that enforcing system-reserved can starve
//! the very daemons it reserves for, and the NOS has its own floors.

/// The k3s agent's own memory (k3s resource profiling: 268-275 MB), rounded up.
pub const KUBE_RESERVED_MEMORY: u64 = 320 << 20;
/// The k3s agent's CPU, in millicores.
pub const KUBE_RESERVED_CPU_MILLIS: u64 = 100;
/// The host's daemons beside the NOS containers: systemd, journald, containerd, soniclet.
pub const HOST_DAEMONS_MEMORY: u64 = 256 << 20;
/// The NOS's CPU, in millicores: probes and intents must keep answering under a busy pod.
pub const SYSTEM_RESERVED_CPU_MILLIS: u64 = 500;
/// The hard eviction threshold: the kubelet evicts pods before the node has less free.
pub const EVICTION_MEMORY: u64 = 200 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    #[error(
        "the NOS and the agent need {needed} MiB but the switch has {capacity} MiB: pods would have \
         nothing (lower the services' memory floors, or do not join this switch)"
    )]
    NoRoomForPods { needed: u64, capacity: u64 },
}

/// The reservations, in the kubelet's units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservations {
    pub kube_memory: u64,
    pub kube_cpu_millis: u64,
    pub system_memory: u64,
    pub system_cpu_millis: u64,
    pub eviction_memory: u64,
    /// What is left for pods.
    pub allocatable_memory: u64,
}

fn mebibytes(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

impl Reservations {
    /// For a switch with `capacity` bytes of memory whose NOS services have these floors.
    pub fn compute(capacity: u64, floors: impl IntoIterator<Item = u64>) -> Result<Self, ReserveError> {
        let system_memory = floors.into_iter().sum::<u64>() + HOST_DAEMONS_MEMORY;
        let needed = system_memory + KUBE_RESERVED_MEMORY + EVICTION_MEMORY;
        if needed >= capacity {
            return Err(ReserveError::NoRoomForPods { needed: mebibytes(needed), capacity: capacity >> 20 });
        }
        Ok(Self {
            kube_memory: KUBE_RESERVED_MEMORY,
            kube_cpu_millis: KUBE_RESERVED_CPU_MILLIS,
            system_memory,
            system_cpu_millis: SYSTEM_RESERVED_CPU_MILLIS,
            eviction_memory: EVICTION_MEMORY,
            allocatable_memory: capacity - needed,
        })
    }

    /// The `--kubelet-arg`s that set them, as k3s passes them on.
    pub fn kubelet_args(&self) -> Vec<String> {
        vec![
            format!("kube-reserved=cpu={}m,memory={}Mi", self.kube_cpu_millis, mebibytes(self.kube_memory)),
            format!("system-reserved=cpu={}m,memory={}Mi", self.system_cpu_millis, mebibytes(self.system_memory)),
            format!("eviction-hard=memory.available<{}Mi,nodefs.available<10%", mebibytes(self.eviction_memory)),
            "enforce-node-allocatable=pods".to_owned(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn allocatable_is_capacity_less_both_reservations_and_the_eviction_threshold() {
        let floors = [512 * MIB, 256 * MIB, 64 * MIB];
        let r = Reservations::compute(8192 * MIB, floors).unwrap();
        assert_eq!(r.system_memory, (512 + 256 + 64 + 256) * MIB);
        assert_eq!(r.allocatable_memory, (8192 - 1088 - 320 - 200) * MIB);
        assert_eq!(
            r.kubelet_args(),
            [
                "kube-reserved=cpu=100m,memory=320Mi",
                "system-reserved=cpu=500m,memory=1088Mi",
                "eviction-hard=memory.available<200Mi,nodefs.available<10%",
                "enforce-node-allocatable=pods",
            ]
        );
    }

    #[test]
    fn a_switch_too_small_for_pods_is_refused_with_the_figures() {
        let err = Reservations::compute(1024 * MIB, [400 * MIB]).unwrap_err();
        assert_eq!(err, ReserveError::NoRoomForPods { needed: 400 + 256 + 320 + 200, capacity: 1024 });
        assert!(err.to_string().contains("need 1176 MiB but the switch has 1024 MiB"), "{err}");
    }
}
