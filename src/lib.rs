//! soniclet: one agent on every SONiC switch that runs each service as an independent
//! containerd unit and replaces SONiC's housekeeping scripts.
//!
//! # Layout
//!
//! One binary, five roles: the daemon (`daemon`, `supervisor`), the CLI (`cli`, a client of
//! the daemon's `api`), the log shim the containerd shim runs (`logs`), and the virtual ASIC
//! and fpmsyncd the VS images run (`vasic`, `fpmsyncd`). ARCHITECTURE.md has the codemap; in short:
//!
//! - `supervisor`: the core (every lifecycle decision, sans-I/O, table-tested) and the async
//!   driver that carries out its effects; its domain types and ports.
//! - `manifest`: `services/*.toml` (strict parse, validation, the dependency graph).
//! - `runtime`: the container runtime port; `runtime::containerd` is its adapter,
//!   `runtime::memory` its twin, `runtime::spec` renders OCI specs, `runtime::archive`
//!   verifies image archives.
//! - `health`: readiness probes, critical processes and stop steps (the `Health` adapter).
//! - `db`: SONiC's Redis databases and swss-common's protocols; `db::redis` is the adapter.
//! - `sonic`: `config_db.json`, the FEATURE rules and the daemon's database link.
//! - `state`: the state directory (desired state, journals, history), written atomically.
//! - `images`: importing image archives, release manifests.
//! - `intent`: ASIC programming intents through APPL_DB, verified in ASIC_DB.
//! - `os`: the switch's OS images in SONiC's `/host` layout, and GRUB's environment block.
//! - `k8s`: the switch as a Kubernetes node (its labels, the k3s agent's config, the reservations).
//! - `api`: the HTTP/JSON API on a unix socket (wire types, server, typed client).
//! - `cli`: the command line.
//! - `systemd`: sd_notify and the watchdog, the unit generator, the facades, D-Bus, journald.
//! - `daemon`: wiring of the real adapters, signals, shutdown.
//! - `logs`: the log shim, rotation, tail and follow.
//! - `vasic`: the virtual ASIC (orchagent, syncd and portsyncd's roles over the kernel).
//! - `fpmsyncd`: SONiC's fpmsyncd (zebra's FPM routes into APPL_DB `ROUTE_TABLE`).
//! - `bgpcfgd`: SONiC's bgpcfgd (CONFIG_DB into FRR's configuration and vtysh scripts).
//! - `lldp_syncd`: SONiC's lldp_syncd (lldpd's neighbours into APPL_DB `LLDP_ENTRY_TABLE`).
//! - `config`, `exit`, `error`: the agent's config file, the CLI's exit codes, and the one
//!   rendering of error chains.
//!
//! # Invariants
//!
//! - **Invariant:** `supervisor` imports no client crate (containerd-client, tonic, redis,
//!   zbus, rtnetlink, axum, hyper) and nothing from `api` or the database link; each client
//!   crate appears in its one adapter (`xtask` tidy tests check it).
//! - **Invariant:** only the supervisor's core changes a service's state; everything else
//!   sends it an `Event`.
//! - **Invariant:** the core and `plan` are pure: no async, no I/O, no clock reads.
//! - **Invariant:** every state write is write, fsync, rename (`state::fsutil::atomic_write`).
//! - **Invariant:** soniclet uses one containerd namespace (`sonic` by default) and never
//!   touches `k8s.io`.

pub mod api;
pub mod bgpcfgd;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod db;
pub mod error;
pub mod exit;
pub mod fpmsyncd;
pub mod health;
pub mod images;
pub mod intent;
pub mod k8s;
pub mod lldp_syncd;
pub mod logs;
pub mod manifest;
pub mod os;
pub mod runtime;
pub mod sonic;
pub mod state;
pub mod supervisor;
pub mod systemd;
pub mod vasic;
