//! The `soniclet` binary: the daemon, the CLI and the log shim in one program.
//! `anyhow`-style error chains are rendered here, at the edge, and mapped to exit codes.

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;

use soniclet::cli::{self, Cli, Command};
use soniclet::config::Config;
use soniclet::exit::Exit;

fn chain(err: &dyn Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SONICLET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd (stderr is the journal), log natively: every event's fields (SERVICE=,
    // GENERATION=, ...) become journal fields that `journalctl SERVICE=swss` can match.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Some(journald) = soniclet::systemd::journal::JournalLayer::new("soniclet") {
            tracing_subscriber::registry().with(filter).with(journald).init();
            return;
        }
    }
    use std::io::IsTerminal;
    // Colours only for a person at a terminal: not in log files or the journal.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits at once.
async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(1);
    });
}

fn daemon(config_path: &std::path::Path) -> ExitCode {
    init_tracing();
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{}", chain(&e));
            return Exit::Config.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soniclet: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    match runtime.block_on(soniclet::daemon::run(config, termination())) {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            tracing::error!("{}", chain(&e));
            e.exit().into()
        }
    }
}

/// A CLI command piped into `head` should end quietly the way `ls | head` does, not panic on a
/// closed stdout: Rust ignores SIGPIPE by default, so give it back its default action. The
/// daemon and the log shim keep ignoring it; they handle EPIPE on their own sockets and pipes.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: called before any thread or signal handler exists (the runtime is not built yet),
    // and SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A virtual ASIC process: logs like the daemon, stops on SIGTERM.
fn vasic(role: cli::VasicRole, db_config: Option<std::path::PathBuf>, sonic_root: &std::path::Path) -> ExitCode {
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soniclet: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let token = shutdown.clone();
    let result = runtime.block_on(async move {
        tokio::spawn(async move {
            termination().await;
            token.cancel();
        });
        cli::vasic::run(role, db_config, sonic_root, shutdown).await
    });
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            tracing::error!("{}", chain(&e));
            Exit::Failure.into()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::LogShim { spec } => {
            return match soniclet::logs::run_shim(spec) {
                Ok(()) => Exit::Ok.into(),
                Err(e) => {
                    eprintln!("soniclet log-shim: {}", chain(&e));
                    Exit::Failure.into()
                }
            }
        }
        Command::Daemon { config } => return daemon(config),
        Command::Vasic { role, db_config, sonic_root } => return vasic(*role, db_config.clone(), sonic_root),
        _ => {}
    }
    restore_sigpipe();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soniclet: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => Exit::Ok.into(),
        Err(failure) => {
            eprintln!("soniclet: {}", failure.message);
            failure.exit.into()
        }
    }
}
