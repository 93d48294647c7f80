//! The `Health` twin: over the in-memory runtime, a container is ready once its task runs
//! (unless a test holds its image back), its critical processes live until a test ends one,
//! and stop steps always work.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::manifest::{Service, StopStep};
use crate::runtime::memory::MemoryRuntime;
use crate::supervisor::ports::{Health, HealthError};

#[derive(Debug, Default)]
struct Script {
    /// Image digests whose containers never pass their probe.
    never_ready: BTreeSet<String>,
    /// Per container: the critical process that exited, once one did.
    critical: BTreeMap<String, watch::Sender<Option<String>>>,
}

#[derive(Debug)]
pub struct MemoryHealth {
    runtime: Arc<MemoryRuntime>,
    script: Mutex<Script>,
}

impl MemoryHealth {
    pub fn new(runtime: Arc<MemoryRuntime>) -> Self {
        Self { runtime, script: Mutex::default() }
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Containers of the image with this digest never pass their probe.
    pub fn never_ready(&self, digest: &str) {
        self.script().never_ready.insert(digest.to_owned());
    }

    /// A critical process of the container exits.
    pub fn end_critical(&self, container: &str, process: &str) {
        let mut script = self.script();
        let sender = script.critical.entry(container.to_owned()).or_insert_with(|| watch::channel(None).0);
        sender.send_replace(Some(process.to_owned()));
    }
}

impl Health for MemoryHealth {
    async fn check(&self, _service: &Service, container: &str) -> Result<(), HealthError> {
        let digest = self.runtime.image_digest(container).unwrap_or_default();
        if self.script().never_ready.contains(&digest) {
            return Err(HealthError::NotReady(format!("{container}'s image is held back by the test")));
        }
        match self.runtime.pid(container) {
            Some(_) => Ok(()),
            None => Err(HealthError::NotReady(format!("{container} is not running"))),
        }
    }

    async fn critical_exit(&self, service: &Service, container: &str) -> String {
        if service.critical_processes().next().is_none() {
            return std::future::pending().await;
        }
        let mut exited = {
            let mut script = self.script();
            let sender = script.critical.entry(container.to_owned()).or_insert_with(|| watch::channel(None).0);
            // A new container starts with all its processes.
            sender.send_replace(None);
            sender.subscribe()
        };
        let process = match exited.wait_for(Option::is_some).await {
            Ok(process) => process.clone(),
            Err(_) => None,
        };
        match process {
            Some(process) => process,
            None => std::future::pending().await,
        }
    }

    async fn stop_step(&self, _container: &str, _step: &StopStep) -> Result<(), HealthError> {
        Ok(())
    }
}
