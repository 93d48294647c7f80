//! fpmsyncd's own `ROUTE_TABLE` keys, and the sweep that removes the stale ones after zebra's
//! replay (pure). zebra replays its whole RIB on every connection: a key fpmsyncd wrote
//! before that the replay does not refresh is a route withdrawn while nobody listened (over
//! an fpmsyncd restart, or a zebra one). SONiC's fpmsyncd leaves those stale outside warm
//! restart; this one deletes them once the replay has been quiet for [`SETTLE`].
//!
//! Ownership: fpmsyncd's entries always carry `protocol`; soniclet's intents never write it,
//! so after a restart fpmsyncd knows its keys from APPL_DB alone.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::db::Op;

/// How long a connection's route stream stays quiet before the replay counts as done.
pub const SETTLE: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
pub struct Sweep {
    owned: BTreeSet<String>,
    /// The keys the current connection's replay has not refreshed yet, until the sweep.
    unrefreshed: Option<BTreeSet<String>>,
    last_message: Option<Instant>,
}

impl Sweep {
    /// fpmsyncd's keys as APPL_DB holds them at start.
    pub fn new(owned: BTreeSet<String>) -> Self {
        Self { owned, unrefreshed: None, last_message: None }
    }

    /// zebra connected: its replay starts.
    pub fn connected(&mut self, now: Instant) {
        self.unrefreshed = Some(self.owned.clone());
        self.last_message = Some(now);
    }

    /// Routes arrived (written or skipped): the replay is still going.
    pub fn heard(&mut self, now: Instant) {
        self.last_message = Some(now);
    }

    /// `op` was written.
    pub fn wrote(&mut self, op: &Op) {
        let key = op.key();
        if let Some(unrefreshed) = &mut self.unrefreshed {
            unrefreshed.remove(key);
        }
        match op {
            Op::Set { .. } => self.owned.insert(key.to_owned()),
            Op::Del { .. } => self.owned.remove(key),
        };
    }

    /// When the sweep is due, if one is owed.
    pub fn due(&self) -> Option<Instant> {
        self.unrefreshed.as_ref().and(self.last_message).map(|at| at + SETTLE)
    }

    /// The deletes of the stale keys, once due; nothing before.
    pub fn sweep(&mut self, now: Instant) -> Vec<Op> {
        if self.due().is_none_or(|due| now < due) {
            return Vec::new();
        }
        let stale = self.unrefreshed.take().unwrap_or_default();
        stale.into_iter().map(|key| Op::Del { key }).collect()
    }

    pub fn owned(&self) -> usize {
        self.owned.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str) -> Op {
        Op::Set { key: key.into(), fields: vec![("protocol".into(), "bgp".into())] }
    }

    #[test]
    fn what_the_replay_does_not_refresh_is_swept_once_it_is_quiet() {
        let start = Instant::now();
        let mut sweep = Sweep::new(["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"].map(String::from).into());
        assert_eq!(sweep.due(), None, "nothing is swept before zebra connects");
        sweep.connected(start);
        sweep.wrote(&set("10.1.0.0/24"));
        sweep.wrote(&set("10.9.0.0/24"));
        sweep.wrote(&Op::Del { key: "10.2.0.0/24".into() });
        sweep.heard(start + Duration::from_secs(2));
        assert!(sweep.sweep(start + Duration::from_secs(4)).is_empty(), "still replaying");
        let stale = sweep.sweep(start + Duration::from_secs(5));
        assert_eq!(stale, vec![Op::Del { key: "10.3.0.0/24".into() }]);
        for op in &stale {
            sweep.wrote(op);
        }
        assert_eq!((sweep.due(), sweep.owned()), (None, 2), "one sweep per connection");
        // zebra reconnects: whatever it no longer has goes too.
        sweep.connected(start + Duration::from_secs(10));
        sweep.wrote(&set("10.1.0.0/24"));
        assert_eq!(sweep.sweep(start + Duration::from_secs(13)), vec![Op::Del { key: "10.9.0.0/24".into() }]);
    }
}
