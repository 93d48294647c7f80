//! The systemd side of soniclet (design §4: the daemon owns lifecycle; units are facades that
//! tell the truth).
//!
//! - `notify`: `sd_notify` for `soniclet.service` (READY, WATCHDOG) and the facades.
//! - `units`: the generator that renders one facade unit per NOS service.
//! - `facade`: what a facade tells systemd, from the service's status stream.
//! - `dbus`: the one adapter that speaks D-Bus (zbus) to systemd's manager: it starts a
//!   facade unit whenever the supervisor brings a service up on its own (the supervisor's
//!   `Units` port), and tells a facade's `ExecStop` whether systemd is restarting it.
//! - `memory`: the `Units` twin, which records the starts it is asked for.
//! - `journal`: journald's native protocol, for container output.
//!
//! Without systemd (a developer box, tests) every part is a no-op.

pub mod dbus;
pub mod facade;
pub mod journal;
pub mod memory;
pub mod notify;
pub mod units;
