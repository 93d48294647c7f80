//! The `soniclet` binary, in one of its roles: the daemon, the CLI, the log shim, or a
//! virtual ASIC process. Error chains are rendered here, at the edge, and mapped to exit
//! codes.

use std::process::ExitCode;

use clap::Parser;

use soniclet::cli::{self, Cli, Command};
use soniclet::config::Config;
use soniclet::exit::{chain, Exit};

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

/// SIGTERM and SIGINT, as a stream: the daemon stops gracefully on the first and exits at
/// once on the second.
fn termination() -> impl futures_util::Stream<Item = ()> + Send + Unpin + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let signals = signal(SignalKind::terminate()).ok().zip(signal(SignalKind::interrupt()).ok());
    Box::pin(futures_util::stream::unfold(signals, |signals| async move {
        let (mut term, mut int) = signals?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Some(((), Some((term, int))))
    }))
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
    match runtime.block_on(async { soniclet::daemon::run(config, termination()).await }) {
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

/// A role's process (the virtual ASIC's, fpmsyncd): logs like the daemon, stops on SIGTERM.
fn role<F, E>(run: impl FnOnce(tokio_util::sync::CancellationToken) -> F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::error::Error,
{
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soniclet: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let result = runtime.block_on(async move {
        use futures_util::StreamExt;
        let mut signals = termination();
        let run = run(shutdown.clone());
        tokio::pin!(run);
        tokio::select! {
            result = &mut run => result,
            _ = signals.next() => {
                // Let the role finish what it is doing, as on the daemon's first signal.
                shutdown.cancel();
                run.await
            }
        }
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
    let command = match cli.command {
        Command::LogShim { spec } => {
            return match soniclet::logs::run_shim(&spec) {
                Ok(()) => Exit::Ok.into(),
                Err(e) => {
                    eprintln!("soniclet log-shim: {}", chain(&e));
                    Exit::Failure.into()
                }
            }
        }
        Command::Daemon { config } => return daemon(&config),
        Command::Vasic { role: vasic, db_config, sonic_root } => {
            return role(|shutdown| async move { cli::vasic::run(vasic, db_config, &sonic_root, shutdown).await })
        }
        Command::Bgpcfgd { frr_config, vtysh, db_config, sonic_root } => {
            return role(|shutdown| async move {
                cli::bgpcfgd::run(frr_config, vtysh, db_config, &sonic_root, shutdown).await
            })
        }
        Command::Lldpmgrd { lldpd_socket, db_config, sonic_root } => {
            return role(|shutdown| async move {
                cli::lldp_syncd::lldpmgrd(lldpd_socket, db_config, &sonic_root, shutdown).await
            })
        }
        Command::LldpSyncd { lldpd_socket, interval, db_config, sonic_root } => {
            return role(|shutdown| async move {
                cli::lldp_syncd::run(lldpd_socket, interval, db_config, &sonic_root, shutdown).await
            })
        }
        Command::Fpmsyncd { listen, db_config, sonic_root } => {
            return role(|shutdown| async move { cli::fpmsyncd::run(listen, db_config, &sonic_root, shutdown).await })
        }
        Command::Cli(command) => command,
    };
    restore_sigpipe();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soniclet: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    match runtime.block_on(cli::run(&cli.socket, command)) {
        Ok(()) => Exit::Ok.into(),
        Err(failure) => {
            eprintln!("soniclet: {}", failure.message);
            failure.exit.into()
        }
    }
}
