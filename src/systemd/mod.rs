//! The systemd side of soniclet: readiness and watchdog notifications for `soniclet.service`.
//! Without systemd (a developer box, tests) every call is a no-op.

pub mod notify;
