//! `soniclet os ...`: the switch's OS images, as `sonic-installer` shows them. `os list`
//! reads `/host` itself, so it answers without the daemon.

use std::path::Path;

use super::output::{print_table, CliResult, Failure};
use crate::exit::Exit;
use crate::os::{self, OsError};

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
        return Ok(());
    }
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    println!("Current: {}", or_none(&images.current));
    println!("Default: {}", or_none(&images.default));
    println!("Next: {}", or_none(&images.next));
    println!();
    let yes = |b: bool| if b { "yes" } else { "" }.to_owned();
    let rows: Vec<Vec<String>> =
        images.images.iter().map(|i| vec![i.name.clone(), yes(i.current), yes(i.default), yes(i.next)]).collect();
    print_table(&["IMAGE", "CURRENT", "DEFAULT", "NEXT"], &rows);
    Ok(())
}
