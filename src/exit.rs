//! The CLI's exit codes. Scripts and systemd units rely on them, so they never change meaning.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the operation failed |
//! | 2 | bad command line (clap) |
//! | 3 | the daemon (or containerd) cannot be reached |
//! | 4 | no such service, image or file |
//! | 5 | invalid input: a manifest, archive, request or file was refused; nothing changed |
//! | 6 | timed out waiting; the operation goes on in the background |
//! | 7 | conflict with another operation in progress |
//! | 8 | the service failed: its failure budget is spent or it cannot be created |
//! | 9 | an upgrade failed its health gate and was rolled back: the old image serves |
//! | 78 | the daemon's configuration or manifests are invalid (`EX_CONFIG`; the unit's `RestartPreventExitStatus=`) |

use std::process::ExitCode;

use crate::api::ErrorKind;

pub use crate::error::chain;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    Unavailable = 3,
    NotFound = 4,
    Invalid = 5,
    Timeout = 6,
    Conflict = 7,
    ServiceFailed = 8,
    RolledBack = 9,
    Config = 78,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

impl From<ErrorKind> for Exit {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::NotFound => Exit::NotFound,
            ErrorKind::BadRequest => Exit::Invalid,
            ErrorKind::Conflict => Exit::Conflict,
            ErrorKind::Timeout => Exit::Timeout,
            ErrorKind::Failed => Exit::ServiceFailed,
            ErrorKind::Unavailable => Exit::Unavailable,
            ErrorKind::Internal => Exit::Failure,
        }
    }
}
