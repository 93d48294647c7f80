//! `config reload`.

use std::path::PathBuf;

use super::output::{CliResult, Failure};
use crate::api::client::Client;
use crate::api::{ReloadEvent, ReloadRequest};
use crate::exit::Exit;

pub async fn reload(client: &Client, file: Option<PathBuf>, force: bool) -> CliResult {
    let (file, text) = match file {
        Some(file) => {
            let text = std::fs::read_to_string(&file).map_err(|e| Failure {
                exit: Exit::NotFound,
                message: format!("cannot read {}: {e}", file.display()),
            })?;
            (Some(file.display().to_string()), Some(text))
        }
        None => (None, None),
    };
    let mut outcome = None;
    client
        .reload(&ReloadRequest { file, text, force }, |event| match &event {
            ReloadEvent::Progress(p) => eprintln!("config reload: {p}"),
            ReloadEvent::Done { .. } | ReloadEvent::Failed(_) => outcome = Some(event),
        })
        .await?;
    match outcome {
        Some(ReloadEvent::Done { seconds, failed }) if failed.is_empty() => {
            println!("config reload done in {seconds:.1}s");
            Ok(())
        }
        Some(ReloadEvent::Done { seconds, failed }) => Err(Failure {
            exit: Exit::ServiceFailed,
            message: format!(
                "config reload done in {seconds:.1}s, but {} failed; see `soniclet status`",
                failed.join(", ")
            ),
        }),
        Some(ReloadEvent::Failed(message)) => {
            Err(Failure { exit: Exit::Conflict, message: format!("config reload refused: {message}") })
        }
        _ => Err(Failure { exit: Exit::Failure, message: "the daemon ended the reload without an outcome".into() }),
    }
}
