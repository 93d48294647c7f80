//! The command line. [`Command`] names the binary's roles: the daemon, the log shim the
//! containerd shim runs, the virtual ASIC's processes and fpmsyncd (`main.rs` runs those), and the
//! commands [`run`] carries out: clients of the daemon's API through its typed client, and
//! the offline tools (`manifests check`, `db`, `generate-units`, `k8s`).
//!
//! Every read command takes `--json`; tables are for people. Exit codes are in `exit`.

pub mod bgpcfgd;
mod config;
mod db;
mod feature;
pub mod fpmsyncd;
mod image;
mod intent;
mod k8s;
pub mod lldp_syncd;
mod manifests;
mod os;
mod output;
mod service;
mod unit;
mod upgrade;
pub mod vasic;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use output::{CliResult, Failure};
pub use service::ActionArgs;
pub use vasic::VasicRole;

use crate::api::client::{Action, Client};
use crate::api::FeatureChange;
use crate::config::{DEFAULT_API_SOCKET, DEFAULT_CONFIG_PATH};
use crate::exit::Exit;

/// soniclet: runs a SONiC switch's services as independent containerd units.
#[derive(Debug, Parser)]
#[command(name = "soniclet", version, about, long_about = None, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, env = "SONICLET_SOCKET", default_value = DEFAULT_API_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES_HELP: &str = "Exit codes: 0 ok, 1 failed, 2 usage, 3 daemon unreachable, 4 not found, \
5 invalid input, 6 timeout, 7 conflict, 8 service failed, 9 rolled back, 78 invalid configuration.";

/// The binary's roles.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor daemon (normally started by soniclet.service).
    Daemon {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Run by the containerd shim as a task's logging process.
    #[command(hide = true)]
    LogShim { spec: String },
    /// The virtual ASIC's processes, as the VS swss and syncd images run them: `orch` plays
    /// orchagent, `syncd` plays syncd over a software SAI on the kernel, `portsyncd` plays
    /// portsyncd. Work without the daemon.
    Vasic {
        #[arg(value_enum)]
        role: VasicRole,
        /// database_config.json to use (default: the switch's, under --sonic-root).
        #[arg(long)]
        db_config: Option<PathBuf>,
        /// Where SONiC's host paths live.
        #[arg(long, env = "SONICLET_SONIC_ROOT", default_value = "/")]
        sonic_root: PathBuf,
    },
    /// SONiC's fpmsyncd, as the VS bgp image runs it: zebra's FPM connection in, APPL_DB
    /// `ROUTE_TABLE` out. Works without the daemon.
    Fpmsyncd {
        /// Where zebra's `fpm address` connects.
        #[arg(long, default_value = crate::fpmsyncd::run::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// database_config.json to use (default: the switch's, under --sonic-root).
        #[arg(long)]
        db_config: Option<PathBuf>,
        /// Where SONiC's host paths live.
        #[arg(long, env = "SONICLET_SONIC_ROOT", default_value = "/")]
        sonic_root: PathBuf,
    },
    /// SONiC's bgpcfgd, as the VS bgp image runs it: FRR's configuration from CONFIG_DB (the
    /// BGP instance, neighbours, advertised networks), written at start and changed live
    /// through vtysh. Works without the daemon.
    Bgpcfgd {
        /// FRR's integrated configuration file, written at start.
        #[arg(long, default_value = "/etc/frr/frr.conf")]
        frr_config: PathBuf,
        /// The vtysh that applies it.
        #[arg(long, default_value = "/usr/bin/vtysh")]
        vtysh: PathBuf,
        /// database_config.json to use (default: the switch's, under --sonic-root).
        #[arg(long)]
        db_config: Option<PathBuf>,
        /// Where SONiC's host paths live.
        #[arg(long, env = "SONICLET_SONIC_ROOT", default_value = "/")]
        sonic_root: PathBuf,
    },
    /// SONiC's lldpmgrd, as the VS lldp image runs it: each up front-panel port's LLDP port
    /// ID and description, the hostname, and lldpd's resume, from the databases through
    /// lldpcli. Works without the daemon.
    Lldpmgrd {
        /// lldpd's control socket (lldpd's default when absent).
        #[arg(long)]
        lldpd_socket: Option<PathBuf>,
        /// database_config.json to use (default: the switch's, under --sonic-root).
        #[arg(long)]
        db_config: Option<PathBuf>,
        /// Where SONiC's host paths live.
        #[arg(long, env = "SONICLET_SONIC_ROOT", default_value = "/")]
        sonic_root: PathBuf,
    },
    /// SONiC's lldp_syncd, as the VS lldp image runs it: lldpd's neighbours into APPL_DB
    /// `LLDP_ENTRY_TABLE` and `LLDP_LOC_CHASSIS`. Works without the daemon.
    LldpSyncd {
        /// lldpd's control socket (lldpd's default when absent).
        #[arg(long)]
        lldpd_socket: Option<PathBuf>,
        /// Seconds between two polls of lldpd.
        #[arg(long, default_value_t = 10)]
        interval: u64,
        /// database_config.json to use (default: the switch's, under --sonic-root).
        #[arg(long)]
        db_config: Option<PathBuf>,
        /// Where SONiC's host paths live.
        #[arg(long, env = "SONICLET_SONIC_ROOT", default_value = "/")]
        sonic_root: PathBuf,
    },
    #[command(flatten)]
    Cli(CliCommand),
}

/// What [`run`] carries out: the daemon's clients and the offline tools.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Show the daemon and every service (or one).
    Status {
        service: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Start a service, and what it requires, and wait until it is ready.
    Start(ActionArgs),
    /// Stop a service, and what requires it, in reverse dependency order.
    Stop(ActionArgs),
    /// Restart a service and what requires it.
    Restart(ActionArgs),
    /// Wait until services (every enabled one by default) are ready.
    Wait {
        services: Vec<String>,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        #[arg(long)]
        json: bool,
    },
    /// Upgrade one service's image, gated on its health, rolling back by itself on failure;
    /// or, with --release, every service of a release manifest, one at a time.
    #[command(arg_required_else_help = true)]
    Upgrade {
        #[arg(required_unless_present = "release", conflicts_with = "release")]
        service: Option<String>,
        /// An OCI or docker archive, or an image already stored in containerd.
        #[arg(long, value_name = "FILE|REF", required_unless_present = "release")]
        image: Option<String>,
        /// Refuse the image unless it has this digest (sha256:...).
        #[arg(long)]
        digest: Option<String>,
        /// Warm upgrade: warm restart flag, warm stop, failure-group peers untouched.
        #[arg(long)]
        warm: bool,
        /// A release manifest (service -> image and digest), applied one service at a time.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["image", "digest", "warm"])]
        release: Option<PathBuf>,
        #[command(flatten)]
        gate: GateArgs,
    },
    /// Return a service to the image it ran before its last upgrade or rollback.
    Rollback {
        service: String,
        #[command(flatten)]
        gate: GateArgs,
    },
    /// List a service's upgrades and rollbacks: from, to, when, result, downtime, reason.
    History {
        service: String,
        #[arg(long)]
        json: bool,
    },
    /// Show a service's container output.
    Logs {
        service: String,
        /// Keep printing new output.
        #[arg(short, long)]
        follow: bool,
        /// How many of the last lines to print first.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// Prefix each line with its time and stream.
        #[arg(short, long)]
        timestamps: bool,
    },
    /// Switch configuration (as SONiC's `config`).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// SONiC's FEATURE table: what runs and how it restarts (as `show/config feature`).
    Feature {
        #[command(subcommand)]
        command: FeatureCommand,
    },
    /// ASIC programming intents (ports, VLANs, interfaces, VRFs, routes, neighbours).
    Intent {
        #[command(subcommand)]
        command: IntentCommand,
    },
    /// Manage images in soniclet's containerd namespace.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// The switch's OS images (as sonic-installer): which runs, which boots next.
    Os {
        #[command(subcommand)]
        command: OsCommand,
    },
    /// The switch as a Kubernetes node: join a k3s cluster as an agent, see it, leave it
    /// (on the switch, as root; no NOS service is touched).
    K8s {
        #[command(subcommand)]
        command: K8sCommand,
    },
    /// Validate service manifests without a daemon.
    Manifests {
        #[command(subcommand)]
        command: ManifestsCommand,
    },
    /// Read and write SONiC's databases (as sonic-db-cli), or apply a swssconfig file
    /// (`soniclet db apply FILE.json`). Works without the daemon.
    Db {
        /// database_config.json to use (default: the switch's, under --sonic-root).
        #[arg(long)]
        db_config: Option<PathBuf>,
        /// Where SONiC's host paths live.
        #[arg(long, env = "SONICLET_SONIC_ROOT", default_value = "/")]
        sonic_root: PathBuf,
        /// DB COMMAND ARGS..., or apply FILE.json
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Stop the daemon; with --stop-services, stop every service first, in order.
    Shutdown {
        #[arg(long)]
        stop_services: bool,
    },
    /// What a service's systemd unit runs (its ExecStart and ExecStop).
    Unit {
        #[command(subcommand)]
        command: UnitCommand,
    },
    /// Write a facade unit per service into DIR (run by systemd as soniclet-generator).
    GenerateUnits {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// systemd's normal generator directory.
        dir: PathBuf,
        /// systemd also passes its early and late directories; they are not used.
        #[arg(hide = true)]
        other_dirs: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UnitCommand {
    /// Ask the daemon to start SVC (unless it runs it already), report READY=1 once its probe
    /// passes and STATUS= as it changes; exit when it is stopped (0) or failed (8).
    Run { service: String },
    /// Ask the daemon to stop SVC (when systemd stops a running unit).
    Stop {
        service: String,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

/// The health gate of an image change.
#[derive(Debug, Clone, Copy, Args)]
pub struct GateArgs {
    /// Seconds the new container has to become ready (default: the manifest's readiness timeout).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Seconds it must then stay up, critical processes included (default 10).
    #[arg(long, value_name = "SECS")]
    pub settle: Option<u64>,
}

impl From<GateArgs> for upgrade::Gate {
    fn from(args: GateArgs) -> Self {
        upgrade::Gate { timeout: args.timeout, settle: args.settle }
    }
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import OCI or docker-save archives (optionally gzipped); every digest is checked.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List stored images.
    Ls {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Stop the services, replace CONFIG_DB with init_cfg.json and FILE (default: the
    /// switch's /etc/sonic/config_db.json), and start them again, as one transaction.
    Reload {
        file: Option<PathBuf>,
        /// Reload even while the switch boots or another reload runs.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum FeatureCommand {
    /// Show every feature: state, auto-restart, owner, and the service's state.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Enable or disable a feature (writes CONFIG_DB FEATURE|SVC state).
    State {
        service: String,
        #[arg(value_parser = ["enabled", "disabled"])]
        state: String,
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Enable or disable restarting a feature after a crash (FEATURE|SVC auto_restart).
    Autorestart {
        service: String,
        #[arg(value_parser = ["enabled", "disabled"])]
        value: String,
    },
    /// Who may run a feature (FEATURE|SVC set_owner): soniclet's local container, or a
    /// Kubernetes pod on this node (kube), falling back to the local container.
    Owner {
        service: String,
        #[arg(value_parser = ["local", "kube"])]
        owner: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum IntentCommand {
    /// Replace soniclet's intent set with FILE (YAML, or TOML for .toml).
    Apply {
        file: PathBuf,
        /// Wait until every intent is programmed in ASIC_DB.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Show each intent: programmed, pending or failed, since when, and its latency.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OsCommand {
    /// List the installed images: the running one, the default, the next boot's. Reads
    /// /host itself: works without the daemon.
    List {
        #[arg(long)]
        json: bool,
        /// The SONiC-OS partition's mount point.
        #[arg(long, env = "SONICLET_HOST", default_value = "/host")]
        host: PathBuf,
    },
    /// Install the image an installer file carries (the file ONIE takes, too), from a path
    /// or an http(s):// URL the daemon fetches. It boots next, once, on trial: committed as
    /// the default when healthy, else the switch falls back to this image by itself.
    Install {
        #[arg(value_name = "FILE|URL")]
        file: PathBuf,
        #[arg(long)]
        json: bool,
        /// Refuse an image without a valid signature (`FILE.sig`).
        #[arg(long)]
        require_signature: bool,
        /// Seconds the trial boot has to become healthy (default: `[os] trial-deadline`).
        #[arg(long)]
        trial_deadline: Option<u64>,
        /// Install even if the image does not list this switch's platform.
        #[arg(long)]
        force: bool,
    },
    /// Boot this image from now on.
    SetDefault { version: String },
    /// Boot this image on the next boot only.
    SetNextBoot { version: String },
    /// Remove an image that is neither running nor the default.
    Remove { version: String },
    /// Remove every image but the running one and the default.
    Cleanup,
    /// Reboot into ONIE in this mode (install, rescue, uninstall, update).
    Onie {
        mode: crate::os::onie::OnieMode,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum K8sCommand {
    /// Join a k3s cluster: write the agent's config (labels, taint, the switch's containerd,
    /// the kubelet's reservations), enable k3s-agent.service, wait until it registers.
    Join {
        /// The API server, https://HOST[:PORT].
        #[arg(long)]
        server: String,
        /// A file (mode 0600) holding the cluster's join token; the token is never an argument.
        #[arg(long)]
        token_file: PathBuf,
        /// The Node's name (default: the switch's hostname).
        #[arg(long)]
        node_name: Option<String>,
        /// An extra Node label, KEY=VALUE (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Return once the agent is configured and started.
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait for the agent to register.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Joined or not, the server, the node's name, the agent's state.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Stop and disable the agent, remove its config, token and state.
    Leave {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ManifestsCommand {
    /// Check every manifest in DIR (default: the configured services directory).
    Check {
        dir: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// Runs a client command or an offline tool.
pub async fn run(socket: &std::path::Path, command: CliCommand) -> CliResult {
    use CliCommand as Command;
    let client = Client::new(socket);
    match command {
        Command::Status { service, json } => service::status(&client, service.as_deref(), json).await,
        Command::Start(args) => service::action(&client, Action::Start, &args).await,
        Command::Stop(args) => service::action(&client, Action::Stop, &args).await,
        Command::Restart(args) => service::action(&client, Action::Restart, &args).await,
        Command::Wait { services, timeout, json } => service::wait(&client, services, timeout, json).await,
        Command::Upgrade { release: Some(file), gate, .. } => upgrade::release(&client, &file, gate.into()).await,
        Command::Upgrade { service: Some(service), image: Some(image), digest, warm, gate, release: None } => {
            upgrade::upgrade(&client, &service, &image, digest, warm, gate.into()).await
        }
        Command::Upgrade { .. } => {
            Err(Failure { exit: Exit::Usage, message: "give SERVICE --image FILE|REF, or --release FILE".into() })
        }
        Command::Rollback { service, gate } => upgrade::rollback(&client, &service, gate.into()).await,
        Command::History { service, json } => upgrade::history(&client, &service, json).await,
        Command::Logs { service, follow, lines, timestamps } => {
            service::logs(&client, &service, follow, lines, timestamps).await
        }
        Command::Config { command: ConfigCommand::Reload { file, force } } => {
            config::reload(&client, file, force).await
        }
        Command::Feature { command: FeatureCommand::Ls { json } } => feature::list(&client, json).await,
        Command::Feature { command: FeatureCommand::State { service, state, no_wait, timeout } } => {
            let change = FeatureChange { state: Some(state), wait: !no_wait, ..FeatureChange::default() };
            feature::change(&client, &service, change, timeout).await
        }
        Command::Feature { command: FeatureCommand::Autorestart { service, value } } => {
            let change = FeatureChange { auto_restart: Some(value), ..FeatureChange::default() };
            feature::change(&client, &service, change, 30).await
        }
        Command::Feature { command: FeatureCommand::Owner { service, owner } } => {
            let change = FeatureChange { owner: Some(owner), ..FeatureChange::default() };
            feature::change(&client, &service, change, 30).await
        }
        Command::Intent { command: IntentCommand::Apply { file, wait, timeout } } => {
            intent::apply(&client, &file, wait, timeout).await
        }
        Command::Intent { command: IntentCommand::Status { json } } => intent::status(&client, json).await,
        Command::Image { command: ImageCommand::Import { files } } => image::import(&client, &files).await,
        Command::Image { command: ImageCommand::Ls { json } } => image::list(&client, json).await,
        Command::Os { command: OsCommand::List { json, host } } => os::list(&host, json),
        Command::Os { command: OsCommand::Install { file, json, require_signature, trial_deadline, force } } => {
            os::install(&client, &file, json, require_signature, trial_deadline, force).await
        }
        Command::Os { command: OsCommand::SetDefault { version } } => {
            os::change(&client, crate::api::paths::OS_DEFAULT, &version).await
        }
        Command::Os { command: OsCommand::SetNextBoot { version } } => {
            os::change(&client, crate::api::paths::OS_NEXT_BOOT, &version).await
        }
        Command::Os { command: OsCommand::Remove { version } } => {
            os::change(&client, crate::api::paths::OS_REMOVE, &version).await
        }
        Command::Os { command: OsCommand::Cleanup } => os::cleanup(&client).await,
        Command::Os { command: OsCommand::Onie { mode, yes } } => os::onie(&client, mode, yes).await,
        Command::K8s {
            command: K8sCommand::Join { server, token_file, node_name, labels, no_wait, timeout, config },
        } => {
            let args = k8s::JoinArgs { server, token_file, node_name, labels, no_wait, timeout };
            k8s::join(&config, args).await
        }
        Command::K8s { command: K8sCommand::Status { json, config } } => k8s::status(&config, json).await,
        Command::K8s { command: K8sCommand::Leave { config } } => k8s::leave(&config).await,
        Command::Manifests { command: ManifestsCommand::Check { dir, config, json } } => {
            manifests::check(dir, &config, json)
        }
        Command::Db { db_config, sonic_root, args } => db::run(db_config, &sonic_root, &args).await,
        Command::Shutdown { stop_services } => service::shutdown(&client, stop_services).await,
        Command::Unit { command: UnitCommand::Run { service } } => unit::run(&client, &service).await,
        Command::Unit { command: UnitCommand::Stop { service, timeout } } => {
            unit::stop(&client, &service, timeout).await
        }
        Command::GenerateUnits { config, dir, other_dirs: _ } => unit::generate(&config, &dir),
    }
}
