//! The systemd facades' commands: `unit run` (ExecStart), `unit stop` (ExecStop) and
//! `generate-units` (the generator). See `systemd::facade` for what a facade reports.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use super::output::{CliResult, Failure};
use crate::api::client::{Action, Client, ClientError};
use crate::api::{ActionRequest, ErrorKind, ServiceState, ServiceStatus};
use crate::config::Config;
use crate::exit::Exit;
use crate::systemd::facade::{Facade, Outcome};
use crate::systemd::notify::notify;
use crate::systemd::units::{self, UnitContext};

/// How often a facade tries the daemon again while it is away (it restarts in about a second).
const RECONNECT: Duration = Duration::from_millis(250);

/// How long `unit stop` waits for a daemon that is away before giving up.
const STOP_REACH_TIMEOUT: Duration = Duration::from_secs(60);

fn daemon_away(e: &ClientError) -> bool {
    matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Internal)
}

/// `soniclet unit run SVC`: the unit's main process, for as long as the service is meant to run.
pub async fn run(client: &Client, service: &str) -> CliResult {
    let mut facade = Facade::new();
    let status: ServiceStatus = loop {
        match client.service(service).await {
            Ok(status) => break status,
            Err(e) if daemon_away(&e) => {
                if let Some(state) = facade.daemon_unreachable() {
                    notify(&state);
                }
                tokio::time::sleep(RECONNECT).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    // Ask for a start only when the daemon does not run the service already (a unit that the
    // daemon started itself must not turn into an operator's request), or holds it failed.
    if !status.enabled || status.state == ServiceState::Failed {
        let request = ActionRequest { wait: false, timeout_secs: None };
        let _: ServiceStatus = client.act(service, Action::Start, &request).await?;
        println!("{service}: start requested");
    }
    loop {
        let mut outcome = None;
        let followed = client
            .watch(service, |status| {
                let step = facade.observe(&status);
                if let Some(state) = &step.notify {
                    notify(state);
                }
                if let Some(line) = &step.log {
                    println!("{line}");
                }
                outcome = step.exit;
                if outcome.is_some() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .await;
        match outcome {
            Some(Outcome::Stopped) => {
                notify("STATUS=stopped");
                println!("{service}: stopped");
                return Ok(());
            }
            Some(Outcome::Restarting) => {
                notify("STATUS=restarting on request");
                println!("{service}: restarting on request; the unit comes back with it");
                return Ok(());
            }
            Some(Outcome::Failed(reason)) => {
                notify(&format!("STATUS=failed: {reason}"));
                return Err(Failure {
                    exit: Exit::ServiceFailed,
                    message: format!(
                        "{service} failed: {reason}; see `soniclet logs {service}`, then `systemctl start {service}`"
                    ),
                });
            }
            None => {}
        }
        match followed {
            // The stream ended or broke: the daemon went away (a restart); the service runs on.
            Ok(()) => {}
            Err(e) if daemon_away(&e) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(state) = facade.daemon_unreachable() {
            notify(&state);
            println!("{service}: soniclet daemon unreachable; reconnecting");
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// `soniclet unit stop SVC`: the unit's `ExecStop`. systemd runs it after the main process
/// exited on its own too; then `$MAINPID` is unset and the service is already stopped.
///
/// Within `systemctl restart`, it asks the daemon for a restart and returns at once: the
/// daemon brings the service down and up while systemd cycles the unit, and the unit's next
/// facade reports READY when the new container is ready. A stop waits until the service is
/// stopped and its container deleted.
pub async fn stop(client: &Client, service: &str, timeout: u64) -> CliResult {
    if std::env::var_os("MAINPID").is_none_or(|pid| pid.is_empty()) {
        return Ok(());
    }
    let job = crate::systemd::dbus::unit_job_type(&units::unit_name(service)).await;
    let restart = job.as_ref().is_ok_and(|job| job.as_deref().is_some_and(|t| t.contains("restart")));
    let (action, wait) = if restart { (Action::Restart, false) } else { (Action::Stop, true) };
    let request = ActionRequest { wait, timeout_secs: Some(timeout) };
    let deadline = Instant::now() + STOP_REACH_TIMEOUT;
    loop {
        match client.act(service, action, &request).await {
            Ok(_) => {
                println!("{service}: {}", if restart { "restart requested" } else { "stopped" });
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(RECONNECT).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `soniclet generate-units DIR`: the systemd generator's work.
pub fn generate(config_path: &Path, dir: &Path) -> CliResult {
    let fail = |exit: Exit, message: String| Failure { exit, message };
    let config = Config::load(config_path).map_err(|e| fail(Exit::Config, e.to_string()))?;
    let manifests = crate::manifest::load_dir(&config.paths.services).map_err(|e| fail(Exit::Config, e.to_string()))?;
    let binary = std::env::current_exe().map_err(|e| fail(Exit::Failure, format!("own path: {e}")))?;
    let context = UnitContext { binary, socket: config.api.socket.clone() };
    let written = units::generate(&manifests, &context, dir).map_err(|e| fail(Exit::Failure, e.to_string()))?;
    eprintln!("soniclet-generator: {} units in {}", written.len(), dir.display());
    Ok(())
}
