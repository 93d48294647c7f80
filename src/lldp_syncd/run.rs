//! lldp_syncd's thin shell: polls lldpd with `lldpctl -f json` and `lldpcli -f json show
//! chassis` every period, and writes APPL_DB with plain HSET and DEL as SONiC's lldp_syncd
//! does (no ProducerStateTable: nothing consumes these tables as a queue). The first poll
//! also removes the ports a previous run wrote that no longer have a neighbour. `manage` is
//! lldpmgrd's shell: it follows the databases and runs `lldpmgrd`'s lldpcli commands.

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

/// How long lldpmgrd waits for PortInitDone before it resumes lldpd anyway.
const PORT_INIT_TIMEOUT: Duration = Duration::from_secs(300);
/// A failed lldpcli command is tried again after this, at most [`RETRIES`] times.
const RETRY_AFTER: Duration = Duration::from_secs(6);
const RETRIES: u32 = 5;

/// The databases lldpmgrd follows.
#[derive(Debug)]
pub struct ManagerDbs {
    pub appl: Db,
    pub state: Db,
    pub config: Db,
}

/// lldpmgrd: configures lldpd from APPL_DB `PORT_TABLE`, STATE_DB `PORT_TABLE` and CONFIG_DB
/// `DEVICE_METADATA` with lldpcli, until shutdown.
pub async fn manage(dbs: ManagerDbs, lldpd: Lldpd, shutdown: CancellationToken) -> Result<(), LldpSyncError> {
    use super::lldpmgrd::{Command, Lldpmgrd};
    use crate::db::subscriber::SubscriberStateTable;

    let mut app_ports = SubscriberStateTable::new(&dbs.appl, "PORT_TABLE").await?;
    let mut state_ports = SubscriberStateTable::new(&dbs.state, "PORT_TABLE").await?;
    let mut metadata = SubscriberStateTable::new(&dbs.config, "DEVICE_METADATA").await?;
    let mut mgr = Lldpmgrd::new();
    let started = tokio::time::Instant::now();
    // Failed commands, with their attempts, due again at a time.
    let mut retries: Vec<(tokio::time::Instant, Command, u32)> = Vec::new();
    let mut due: Vec<(Command, u32)> = Vec::new();
    loop {
        for (command, attempt) in due.drain(..) {
            let args: Vec<&str> = command.iter().map(String::as_str).collect();
            match lldpd.ask("lldpcli", &args).await {
                Ok(_) => tracing::info!(command = %command.join(" "), "lldpd configured"),
                Err(e) if attempt < RETRIES => {
                    tracing::warn!(error = %e, attempt, "lldpcli failed; trying again in 6 s");
                    retries.push((tokio::time::Instant::now() + RETRY_AFTER, command, attempt + 1));
                }
                Err(e) => tracing::error!(error = %e, command = %command.join(" "), "lldpcli failed; giving up"),
            }
        }
        if let Some(resume) = mgr.resume_due(started.elapsed() >= PORT_INIT_TIMEOUT) {
            due.push((resume, 1));
            continue;
        }
        let next_retry = retries.iter().map(|(at, ..)| *at).min();
        let resume_at = started + PORT_INIT_TIMEOUT;
        let wake = next_retry.map_or(resume_at, |at| at.min(resume_at));
        let commands = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            op = app_ports.next() => match op {
                Some(Op::Set { key, fields }) => mgr.app_port(&key, Some(&fields)),
                Some(Op::Del { key }) => mgr.app_port(&key, None),
                None => return Ok(()),
            },
            op = state_ports.next() => match op {
                Some(Op::Set { key, fields }) => {
                    let up = fields.iter().any(|(f, v)| f == "netdev_oper_status" && v == "up");
                    mgr.netdev(&key, up)
                }
                Some(Op::Del { key }) => mgr.netdev(&key, false),
                None => return Ok(()),
            },
            op = metadata.next() => match op {
                Some(Op::Set { key, fields }) if key == "localhost" => mgr.metadata(&fields),
                Some(_) => Vec::new(),
                None => return Ok(()),
            },
            () = tokio::time::sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                let (ready, waiting): (Vec<_>, Vec<_>) = retries.drain(..).partition(|(at, ..)| *at <= now);
                retries = waiting;
                due.extend(ready.into_iter().map(|(_, command, attempt)| (command, attempt)));
                Vec::new()
            }
        };
        due.extend(commands.into_iter().map(|c| (c, 1)));
    }
}
