//! What the sim and integration tiers share (each includes it with `#[path]`).

use std::time::{Duration, Instant};

/// Polls `cond` every 10 ms until it holds or `timeout` passes; answers whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
