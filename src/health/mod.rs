//! Container health, run by the daemon: readiness probes, critical-process watches and warm
//! stop steps (`probe::Prober`, the adapter of the supervisor's `Health` port; `memory` is
//! its twin), the pidfds they wait on (`procwatch`), and the probing schedule every caller
//! shares.

pub mod memory;
pub mod probe;
pub mod procwatch;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::manifest::Service;
use crate::supervisor::ports::{Health, HealthError};

pub use probe::Prober;

/// Probes until ready, the readiness timeout passes, or the token is cancelled. Starts fast
/// and slows to the manifest's interval, so a quick service is seen ready quickly. The error
/// is what the last probe saw.
pub async fn probe_until_ready<P: Health>(
    health: &P,
    service: &Service,
    token: &CancellationToken,
) -> Result<(), HealthError> {
    let readiness = &service.manifest.readiness;
    let deadline = Instant::now() + Duration::from_secs(u64::from(readiness.timeout));
    let max_interval = Duration::from_millis(u64::from(readiness.interval_ms));
    let mut interval = Duration::from_millis(10).min(max_interval);
    loop {
        let last = match health.check(service, service.name.as_str()).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::select! {
            () = token.cancelled() => return Err(HealthError::Failed("cancelled".to_owned())),
            () = tokio::time::sleep(interval) => {}
        }
        interval = (interval * 3 / 2).min(max_interval);
    }
}
