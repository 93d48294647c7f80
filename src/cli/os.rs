//! `soniclet os ...`: the switch's OS images, as `sonic-installer` shows and changes them.
//! `os list` reads `/host` itself, so it answers without the daemon; every change goes
//! through the daemon, which runs one at a time and none during a trial.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use super::output::{print_table, CliResult, Failure};
use crate::api::client::Client;
use crate::api::{paths, OsEvent, OsImageRequest, OsInstallRequest, OsOnieRequest};
use crate::exit::Exit;
use crate::os::onie::OnieMode;
use crate::os::{self, Images, OsError};

fn print_images(images: &Images) {
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!("Current: {}", or_none(&images.current));
    println!("Default: {}", or_none(&images.default));
    println!("Next: {}", or_none(&images.next));
    println!();
    let yes = |b: bool| if b { "yes" } else { "" }.to_owned();
    let rows: Vec<Vec<String>> = images
        .images
        .iter()
        .map(|i| {
            let trial = match (&i.trial, i.on_trial) {
                (_, true) => "on trial".to_owned(),
                (Some(record), false) => format!("{:?}: {}", record.result, record.reason).to_lowercase(),
                (None, false) => String::new(),
            };
            vec![i.name.clone(), yes(i.current), yes(i.default), yes(i.next), trial]
        })
        .collect();
    print_table(&["IMAGE", "CURRENT", "DEFAULT", "NEXT", "TRIAL"], &rows);
}

pub fn list(host: &Path, json: bool) -> CliResult {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let images = os::list(host, &cmdline).map_err(|e| Failure {
        exit: match e {
            OsError::NotInstalled { .. } => Exit::NotFound,
            _ => Exit::Failure,
        },
        message: crate::exit::chain(&e),
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&images).unwrap_or_default());
    } else {
        print_images(&images);
    }
    Ok(())
}

/// Relays a change's stream: progress to stderr, the outcome to stdout.
async fn relay<B: serde::Serialize>(client: &Client, path: &str, request: &B, json: bool) -> CliResult {
    let mut failure = None;
    client
        .os_change(path, request, |event| match event {
            OsEvent::Progress(line) => eprintln!("{line}"),
            OsEvent::Installed(installed) if json => {
                println!("{}", serde_json::to_string_pretty(&installed).unwrap_or_default())
            }
            OsEvent::Installed(installed) => println!(
                "installed {}{}; reboot to start its trial",
                installed.image,
                if installed.signed { " (signature verified)" } else { "" }
            ),
            OsEvent::Images(images) if json => {
                println!("{}", serde_json::to_string_pretty(&images).unwrap_or_default())
            }
            OsEvent::Images(images) => print_images(&images),
            OsEvent::Error(e) => failure = Some(e),
        })
        .await?;
    match failure {
        Some(e) => Err(Failure { exit: Exit::from(e.kind), message: e.message }),
        None => Ok(()),
    }
}

pub async fn install(
    client: &Client,
    file: &Path,
    json: bool,
    require_signature: bool,
    trial_deadline: Option<u64>,
    force: bool,
) -> CliResult {
    let text = file.display().to_string();
    let (path, url) = if crate::os::fetch::is_url(&text) {
        (String::new(), Some(text))
    } else {
        (std::env::current_dir().unwrap_or_default().join(file).display().to_string(), None)
    };
    let request = OsInstallRequest { path, url, require_signature, trial_deadline, force_platform: force };
    relay(client, paths::OS_INSTALL, &request, json).await
}

pub async fn change(client: &Client, path: &str, version: &str) -> CliResult {
    relay(client, path, &OsImageRequest { version: version.to_owned() }, false).await
}

pub async fn cleanup(client: &Client) -> CliResult {
    relay(client, paths::OS_CLEANUP, &serde_json::json!({}), false).await
}

pub async fn onie(client: &Client, mode: OnieMode, yes: bool) -> CliResult {
    if !yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Err(Failure {
                exit: Exit::Usage,
                message: format!("this reboots the switch into ONIE ({} mode): add --yes to confirm", mode.as_str()),
            });
        }
        eprint!("Reboot the switch into ONIE, {} mode? [y/N] ", mode.as_str());
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = stdin.lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Failure { exit: Exit::Usage, message: "not confirmed; nothing was changed".into() });
        }
    }
    relay(client, paths::OS_ONIE, &OsOnieRequest { mode: Some(mode) }, false).await
}
