//! `config reload`.

use std::path::PathBuf;

use hyper::Method;

use super::{CliResult, Failure};
use crate::api::client::{Client, ClientError};
use crate::api::ReloadRequest;
use crate::exit::Exit;
use crate::supervisor::ReloadEvent;

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
    let body = serde_json::to_vec(&ReloadRequest { file, text, force }).unwrap_or_default();
    let mut outcome = None;
    client
        .lines(Method::POST, "/v1/config/reload", Some(body), |line| {
            let event: ReloadEvent =
                serde_json::from_str(line).map_err(|e| ClientError::Protocol(format!("{e}: {line}")))?;
            match &event {
                ReloadEvent::Progress(p) => eprintln!("config reload: {p}"),
                ReloadEvent::Done { .. } | ReloadEvent::Failed(_) => outcome = Some(event.clone()),
            }
            Ok(std::ops::ControlFlow::Continue(()))
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
