//! `upgrade`, `rollback` and `history`.

use std::path::{Path, PathBuf};

use super::output::{print_table, CliResult, Failure};
use crate::api::client::Client;
use crate::api::{ChangeEvent, ReleaseOutcome, ReleaseRequest, UpgradeRequest};
use crate::exit::Exit;
use crate::state::history::{ChangeResult, HistoryEntry};
use crate::state::store::ChangeKind;

/// The gate settings both commands share.
#[derive(Debug, Clone, Copy)]
pub struct Gate {
    pub timeout: Option<u64>,
    pub settle: Option<u64>,
}

fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(path).map_err(|e| Failure { exit: Exit::NotFound, message: format!("{}: {e}", path.display()) })
}

/// `soniclet upgrade SVC --image FILE|REF`: a FILE when such a file exists, else a reference.
pub async fn upgrade(
    client: &Client,
    service: &str,
    image: &str,
    digest: Option<String>,
    warm: bool,
    gate: Gate,
) -> CliResult {
    let path = Path::new(image);
    let (archive, reference) = if path.is_file() {
        (Some(absolute(path)?.display().to_string()), None)
    } else if image.ends_with(".tar") || image.ends_with(".tar.gz") || image.starts_with('/') || image.starts_with('.')
    {
        return Err(Failure {
            exit: Exit::NotFound,
            message: format!("{image}: no such archive; give an archive file or a stored image reference"),
        });
    } else {
        (None, Some(image.to_owned()))
    };
    let request =
        UpgradeRequest { archive, reference, digest, warm, timeout_secs: gate.timeout, settle_secs: gate.settle };
    run(client, service, false, &request).await
}

pub async fn rollback(client: &Client, service: &str, gate: Gate) -> CliResult {
    let request = UpgradeRequest { timeout_secs: gate.timeout, settle_secs: gate.settle, ..Default::default() };
    run(client, service, true, &request).await
}

pub async fn release(client: &Client, file: &Path, gate: Gate) -> CliResult {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure { exit: Exit::NotFound, message: format!("cannot read {}: {e}", file.display()) })?;
    let request = ReleaseRequest {
        file: absolute(file)?.display().to_string(),
        text,
        timeout_secs: gate.timeout,
        settle_secs: gate.settle,
    };
    let (mut refused, mut release) = (None, None);
    client
        .release(&request, |event| match event {
            ChangeEvent::Progress(p) => eprintln!("release: {p}"),
            ChangeEvent::Done(entry) => eprintln!("release: {}", summary(&entry)),
            ChangeEvent::Refused(e) => refused = Some(e),
            ChangeEvent::Release(outcome) => release = Some(outcome),
        })
        .await?;
    match (release, refused) {
        (Some(outcome), _) => release_result(outcome),
        (None, Some(e)) => Err(Failure { exit: Exit::from(e.kind), message: e.message }),
        (None, None) => Err(no_outcome()),
    }
}

fn release_result(outcome: ReleaseOutcome) -> CliResult {
    let list = |names: &[String]| if names.is_empty() { "none".to_owned() } else { names.join(", ") };
    match outcome.failed {
        None => {
            println!(
                "release {}: upgraded {}; already current {}; not running, skipped {}",
                outcome.release,
                list(&outcome.upgraded),
                list(&outcome.unchanged),
                list(&outcome.skipped)
            );
            Ok(())
        }
        Some(failed) => Err(Failure {
            exit: Exit::RolledBack,
            message: format!(
                "release {} stopped at {failed}, which runs its old image again; upgraded {}; not touched {}; see `soniclet history {failed}`",
                outcome.release,
                list(&outcome.upgraded),
                list(&outcome.untouched)
            ),
        }),
    }
}

fn no_outcome() -> Failure {
    Failure {
        exit: Exit::Failure,
        message: "the daemon ended without an outcome; the change resumes when the daemon starts again: see `soniclet history`".into(),
    }
}

/// Streams one change's progress; the outcome decides the exit code.
async fn run(client: &Client, service: &str, rollback: bool, request: &UpgradeRequest) -> CliResult {
    let mut outcome = None;
    let on_event = |event: ChangeEvent| match event {
        ChangeEvent::Progress(p) => eprintln!("{p}"),
        event @ (ChangeEvent::Done(_) | ChangeEvent::Refused(_)) => outcome = Some(event),
        ChangeEvent::Release(_) => {}
    };
    if rollback {
        client.rollback(service, request, on_event).await?;
    } else {
        client.upgrade(service, request, on_event).await?;
    }
    match outcome {
        Some(ChangeEvent::Done(entry)) => match entry.result {
            ChangeResult::Succeeded => {
                println!("{}", summary(&entry));
                Ok(())
            }
            ChangeResult::RolledBack => Err(Failure {
                exit: Exit::RolledBack,
                message: format!("{}; see `soniclet logs {}`", summary(&entry), entry.service),
            }),
            ChangeResult::Aborted => Err(Failure { exit: Exit::Invalid, message: summary(&entry) }),
        },
        Some(ChangeEvent::Refused(e)) => Err(Failure { exit: Exit::from(e.kind), message: e.message }),
        _ => Err(no_outcome()),
    }
}

fn action(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Upgrade => "upgrade",
        ChangeKind::Rollback => "rollback",
    }
}

fn summary(entry: &HistoryEntry) -> String {
    let downtime = entry.downtime_ms.map(|d| format!(", down {d} ms")).unwrap_or_default();
    match entry.result {
        ChangeResult::Succeeded => {
            format!(
                "{} {}: {} -> {}{downtime}",
                action(entry.action),
                entry.service,
                entry.from.reference,
                entry.to.reference
            )
        }
        ChangeResult::RolledBack => format!(
            "{} {} to {} rolled back to {}: {}{}",
            action(entry.action),
            entry.service,
            entry.to.reference,
            entry.from.reference,
            entry.reason.as_deref().unwrap_or("the gate failed"),
            entry.recovery_ms.map(|r| format!(" (old image ready again {r} ms after the failure)")).unwrap_or_default()
        ),
        ChangeResult::Aborted => format!(
            "{} {} to {} aborted before the switch-over: {}",
            action(entry.action),
            entry.service,
            entry.to.reference,
            entry.reason.as_deref().unwrap_or("")
        ),
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    &hex[..hex.len().min(12)]
}

pub async fn history(client: &Client, service: &str, json: bool) -> CliResult {
    let entries: Vec<HistoryEntry> = client.history(service).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries).unwrap_or_default());
        return Ok(());
    }
    if entries.is_empty() {
        println!("{service}: no upgrades or rollbacks yet");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.started.clone(),
                action(e.action).to_owned(),
                short(&e.from.digest).to_owned(),
                short(&e.to.digest).to_owned(),
                e.result.as_str().to_owned(),
                e.downtime_ms.map(|d| format!("{d} ms")).unwrap_or_else(|| "-".into()),
                e.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["WHEN", "ACTION", "FROM", "TO", "RESULT", "DOWNTIME", "REASON"], &rows);
    Ok(())
}
