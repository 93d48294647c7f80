//! `intent apply` and `intent status`.

use std::path::Path;
use std::time::{Duration, Instant};

use super::output::{print_table, CliResult, Failure};
use crate::api::client::Client;
use crate::api::IntentApply;
use crate::exit::Exit;
use crate::intent::{ApplyOutcome, IntentReport};

pub async fn apply(client: &Client, file: &Path, wait: bool, timeout: u64) -> CliResult {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure { exit: Exit::NotFound, message: format!("cannot read {}: {e}", file.display()) })?;
    let request = IntentApply { file: file.display().to_string(), text };
    let started = Instant::now();
    let outcome: ApplyOutcome = client.apply_intents(&request).await?;
    println!("accepted {} intents ({} APPL_DB entries)", outcome.intents, outcome.entries);
    if !outcome.database_reachable {
        eprintln!("the database is not reachable now; soniclet keeps the intents and programs them once it is");
    }
    if !wait {
        return Ok(());
    }
    let deadline = started + Duration::from_secs(timeout);
    loop {
        let report: IntentReport = client.intents().await?;
        if report.failed > 0 {
            let first = report.intents.iter().find(|i| i.state == "failed");
            return Err(Failure {
                exit: Exit::ServiceFailed,
                message: format!(
                    "{} intent(s) failed, first {}: {}; see `soniclet intent status`",
                    report.failed,
                    first.map(|i| i.id.as_str()).unwrap_or("?"),
                    first.and_then(|i| i.message.clone()).unwrap_or_default()
                ),
            });
        }
        if report.pending == 0 {
            println!(
                "all {} intents programmed in {:.1} ms",
                report.programmed,
                started.elapsed().as_secs_f64() * 1000.0
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure {
                exit: Exit::Timeout,
                message: format!(
                    "{} intent(s) still pending after {timeout}s; see `soniclet intent status`",
                    report.pending
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn status(client: &Client, json: bool) -> CliResult {
    let report: IntentReport = client.intents().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        return Ok(());
    }
    println!(
        "{} programmed, {} pending, {} failed; database {}, synchronous mode {}{}\n",
        report.programmed,
        report.pending,
        report.failed,
        if report.database_reachable { "reachable" } else { "NOT reachable" },
        if report.synchronous_mode { "on" } else { "off" },
        if report.temp_view { ", warm-restart view in progress" } else { "" }
    );
    let rows: Vec<Vec<String>> = report
        .intents
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                i.state.clone(),
                i.since.clone(),
                i.latency_ms.map(|l| format!("{l:.1} ms")).unwrap_or_else(|| "-".into()),
                i.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["INTENT", "STATE", "SINCE", "LATENCY", "NOTE"], &rows);
    Ok(())
}
