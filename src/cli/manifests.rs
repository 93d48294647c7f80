//! `manifests check`: the daemon's own validation, offline.

use std::path::{Path, PathBuf};

use super::output::{CliResult, Failure};
use crate::config::Config;
use crate::exit::Exit;
use crate::manifest::{load_dir, LoadError};

pub fn check(dir: Option<PathBuf>, config: &Path, json: bool) -> CliResult {
    let dir = match dir {
        Some(dir) => dir,
        None => {
            Config::load(config).map_err(|e| Failure { exit: Exit::Config, message: e.to_string() })?.paths.services
        }
    };
    match load_dir(&dir) {
        Ok(set) => {
            if json {
                let names: Vec<&str> = set.names().map(|n| n.as_str()).collect();
                let order: Vec<&str> = set.graph().start_order().iter().map(|n| n.as_str()).collect();
                println!("{}", serde_json::json!({"valid": true, "dir": dir, "services": names, "start_order": order}));
            } else {
                let order: Vec<&str> = set.graph().start_order().iter().map(|n| n.as_str()).collect();
                println!("{}: {} valid service manifests", dir.display(), set.len());
                println!("start order: {}", order.join(" -> "));
            }
            Ok(())
        }
        Err(LoadError::Invalid(errors)) if json => {
            let errors: Vec<_> = errors
                .iter()
                .map(|e| serde_json::json!({"file": e.file, "field": e.field, "message": e.message}))
                .collect();
            println!("{}", serde_json::json!({"valid": false, "dir": dir, "errors": errors}));
            Err(Failure { exit: Exit::Invalid, message: format!("{} invalid manifest(s)", errors.len()) })
        }
        Err(e) => Err(Failure { exit: Exit::Invalid, message: e.to_string() }),
    }
}
