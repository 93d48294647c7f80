//! ASIC programming through APPL_DB, verified in ASIC_DB (`design.md` §5).
//!
//! - `model`: the intent document (YAML or TOML), strict parsing and validation.
//! - `render`: intents to APPL_DB entries, and to the ASIC_DB facts that prove them.
//! - `asic`: an index of ASIC_STATE, to judge those facts.
//! - `engine`: the daemon task: persists intents before acknowledging them, writes the
//!   difference through the ProducerStateTable protocol, owns only the keys it wrote, and
//!   watches ASIC_DB through keyspace notifications.

pub mod asic;
pub mod engine;
pub mod model;
pub mod render;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    #[error("{}: {message}", file.display())]
    Parse { file: PathBuf, message: String },
    #[error("{} invalid intent(s):\n  {}", .0.len(), .0.join("\n  "))]
    Invalid(Vec<String>),
    #[error("cannot persist intents in {}", path.display())]
    Persist {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the intent file {} is corrupt ({message}); move it aside", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("intents need the switch's database; no service is marked database = true")]
    NoDatabase,
}

/// What `soniclet intent apply` is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    pub intents: usize,
    pub entries: usize,
    /// Whether APPL_DB was reachable; when not, soniclet programs the intents once it is.
    pub database_reachable: bool,
}

/// One intent's state, for `soniclet intent status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentStatus {
    pub id: String,
    pub kind: String,
    /// pending, programmed, failed or unverified.
    pub state: String,
    /// RFC 3339 time of the last state change.
    pub since: String,
    /// From the APPL_DB write to the ASIC_DB object, for programmed intents.
    pub latency_ms: Option<f64>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentReport {
    pub database_reachable: bool,
    /// CONFIG_DB `DEVICE_METADATA|localhost synchronous_mode` is not `disable`.
    pub synchronous_mode: bool,
    /// `TEMP_ASIC_STATE:*` keys exist (a warm restart view): nothing is judged meanwhile.
    pub temp_view: bool,
    pub programmed: usize,
    pub pending: usize,
    pub failed: usize,
    /// APPL_DB has every entry of the accepted intents: nothing is left to write.
    #[serde(default)]
    pub in_sync: bool,
    /// APPL_DB entries written (set or deleted) since the daemon started.
    #[serde(default)]
    pub appl_db_writes: u64,
    /// ASIC_DB changes judged since the daemon started.
    #[serde(default)]
    pub asic_updates: u64,
    pub intents: Vec<IntentStatus>,
}
