//! soniclet: one agent on every SONiC switch that runs each service as an independent
//! containerd unit and replaces SONiC's housekeeping scripts.
//!
//! # Layout
//!
//! - `manifest`: `services/*.toml` (strict parse, validation, the dependency graph).
//! - `supervisor`: the single owner of every service's lifecycle: one event loop over a
//!   closed `Event` enum, and the pure `plan::plan(desired, observed)`.
//! - `runtime`: the container runtime port; `runtime::containerd` is its adapter,
//!   `runtime::spec` renders OCI specs, `runtime::archive` verifies image archives.
//! - `db`: SONiC's Redis databases; `db::redis` is the adapter.
//! - `probe`: readiness probes over the runtime and Redis.
//! - `api`: the HTTP/JSON API on a unix socket (wire types, server, client).
//! - `cli`: the command line, a client of the API.
//! - `daemon`: wiring, signals, shutdown, sd_notify.
//! - `store`, `fsutil`: desired state on disk, written atomically.
//! - `logs`: the log shim the containerd shim runs, rotation, tail and follow.
//! - `systemd`: sd_notify and the watchdog, the unit generator, the facades, D-Bus, journald.
//! - `images`: importing image archives (the API's import, and preloading at boot).
//! - `config`, `exit`: the agent's config file and the CLI's exit codes.
//!
//! # Invariants
//!
//! - **Invariant:** `supervisor` imports no client crate; it sees `ContainerRuntime` and
//!   `Readiness` only. `containerd_client`/`tonic` appear only in `runtime::containerd`,
//!   `redis` only in `db::redis`.
//! - **Invariant:** only the supervisor loop changes a service's state; everything else sends
//!   it an `Event`.
//! - **Invariant:** `plan` is pure: no async, no I/O, deterministic.
//! - **Invariant:** every state write is write, fsync, rename (`fsutil::atomic_write`).
//! - **Invariant:** soniclet uses one containerd namespace (`sonic` by default) and never
//!   touches `k8s.io`.

pub mod api;
pub mod cli;
pub mod config;
pub mod configdb;
pub mod daemon;
pub mod db;
pub mod dblink;
pub mod exit;
pub mod feature;
pub mod fsutil;
pub mod history;
pub mod images;
pub mod intent;
pub mod logs;
pub mod manifest;
pub mod probe;
pub mod procwatch;
pub mod release;
pub mod runtime;
pub mod store;
pub mod supervisor;
pub mod systemd;
pub mod vasic;
