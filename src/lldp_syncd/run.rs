//! lldp_syncd's thin shell: polls lldpd with `lldpctl -f json` and `lldpcli -f json show
//! chassis` every period, and writes APPL_DB with plain HSET and DEL as SONiC's lldp_syncd
//! does (no ProducerStateTable: nothing consumes these tables as a queue). The first poll
//! also removes the ports a previous run wrote that no longer have a neighbour.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::neighbors::{changes, entries, local_chassis, LOCAL_CHASSIS};
use super::LldpError;
use crate::db::{Db, DbError, Fields, Op};

/// lldpd's own answer time; a slower one is skipped, as a failed one is.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LldpSyncError {
    #[error(transparent)]
    Db(#[from] DbError),
}

/// How to reach lldpd.
#[derive(Debug, Clone)]
pub struct Lldpd {
    /// lldpd's control socket; lldpd's default when absent.
    pub socket: Option<PathBuf>,
    pub period: Duration,
}

impl Lldpd {
    async fn ask(&self, program: &str, args: &[&str]) -> Result<String, LldpError> {
        let mut command = tokio::process::Command::new(program);
        if let Some(socket) = &self.socket {
            command.arg("-u").arg(socket);
        }
        command.args(args).kill_on_drop(true);
        let output = tokio::time::timeout(ASK_TIMEOUT, command.output())
            .await
            .map_err(|_| LldpError::Json(format!("{program} did not answer within {}s", ASK_TIMEOUT.as_secs())))?
            .map_err(|e| LldpError::Json(format!("cannot run {program}: {e}")))?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr);
            return Err(LldpError::Json(format!("{program} failed ({}): {}", output.status, said.trim())));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

async fn write(appl: &Db, ops: &[Op]) -> Result<(), DbError> {
    for op in ops {
        match op {
            Op::Set { key, fields } => appl.hset(key, fields).await?,
            Op::Del { key } => appl.del(std::slice::from_ref(key)).await?,
        }
    }
    Ok(())
}

/// Polls lldpd and writes APPL_DB until shutdown.
pub async fn run(appl: Db, lldpd: Lldpd, shutdown: CancellationToken) -> Result<(), LldpSyncError> {
    // What a previous run left: every port counts as written, so the first poll deletes
    // the ones without a neighbour now.
    let mut before: BTreeMap<String, Fields> = BTreeMap::new();
    for key in appl.keys("LLDP_ENTRY_TABLE:*").await? {
        if let Some(port) = key.strip_prefix("LLDP_ENTRY_TABLE:") {
            before.insert(port.to_owned(), Vec::new());
        }
    }
    let mut chassis: Option<Fields> = None;
    let mut said: Option<String> = None;
    tracing::info!(period = lldpd.period.as_secs(), "polling lldpd");
    loop {
        let polled = async {
            let now = entries(&lldpd.ask("lldpctl", &["-f", "json"]).await?)?;
            let local = local_chassis(&lldpd.ask("lldpcli", &["-f", "json", "show", "chassis"]).await?)?;
            Ok::<_, LldpError>((now, local))
        };
        match polled.await {
            Ok((now, local)) => {
                said = None;
                let mut ops = changes(&before, &now);
                if chassis.as_ref() != Some(&local) {
                    ops.push(Op::Del { key: LOCAL_CHASSIS.to_owned() });
                    ops.push(Op::Set { key: LOCAL_CHASSIS.to_owned(), fields: local.clone() });
                }
                match write(&appl, &ops).await {
                    Ok(()) => {
                        before = now;
                        chassis = Some(local);
                    }
                    // The same changes are tried again on the next poll.
                    Err(e) => tracing::warn!(error = %crate::error::chain(&e), "cannot write APPL_DB"),
                }
            }
            Err(e) => {
                let message = e.to_string();
                if said.as_ref() != Some(&message) {
                    tracing::warn!("{message}; this poll writes nothing");
                    said = Some(message);
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(lldpd.period) => {}
        }
    }
}
