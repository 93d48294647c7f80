//! The `Units` twin: records the unit starts the supervisor asks for, for tests without
//! systemd.

use std::sync::{Mutex, PoisonError};

use crate::supervisor::ports::{UnitError, Units};

#[derive(Debug, Default)]
pub struct MemoryUnits {
    started: Mutex<Vec<String>>,
}

impl MemoryUnits {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every unit started so far, in order.
    pub fn started(&self) -> Vec<String> {
        self.started.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Units for MemoryUnits {
    async fn start_unit(&self, unit: &str) -> Result<(), UnitError> {
        self.started.lock().unwrap_or_else(PoisonError::into_inner).push(unit.to_owned());
        Ok(())
    }

    async fn reboot(&self) -> Result<(), UnitError> {
        self.start_unit("reboot.target").await
    }
}
