//! `soniclet-bench`: the measuring side of `cargo xtask bench`. It is built beside the
//! product but never shipped in the switch's image: it drives containerd, Redis and the
//! kernel straight, without the daemon, to give each benchmark its baseline.

mod k8s;
mod kubelet;
mod raw;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A benchmark that could not run, and why.
#[derive(Debug)]
pub struct Failure(String);

pub fn fail(message: impl std::fmt::Display) -> Failure {
    Failure(message.to_string())
}

#[derive(Debug, Parser)]
#[command(name = "soniclet-bench", about = "Baselines and workloads of `cargo xtask bench`")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// The raw-containerd baseline of `bench boot` and `bench lifecycle` (no daemon may run).
    Raw {
        #[arg(long, default_value = soniclet::config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        #[arg(long)]
        restart: Option<String>,
        /// Measure the recovery of this service's failure group after it crashes.
        #[arg(long)]
        crash: Option<String>,
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// The APPL_DB workload of `bench appl-db`, on an empty Redis.
    Db {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        entries: usize,
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// The consumer's pop batch (orchagent's -b).
        #[arg(long, default_value_t = 1024)]
        batch: usize,
    },
    /// `bench vasic`: single-route latency, APPL_DB write to ASIC_STATE.
    RouteLatency {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long, default_value_t = 200)]
        samples: usize,
        #[arg(long)]
        ifname: String,
        #[arg(long)]
        nexthop: String,
    },
    /// `bench k8s`: a pod started through CRI on the switch whose PID 1 is `leader`, as the
    /// kubelet does; prints its ids and the milliseconds until its container runs.
    PodStart {
        #[arg(long)]
        leader: u32,
        #[arg(long)]
        name: String,
        #[arg(long)]
        image: String,
        #[arg(long)]
        script: String,
        #[arg(long)]
        memory_limit: Option<i64>,
    },
    /// `bench k8s`: stops and removes a pod.
    PodRemove {
        #[arg(long)]
        leader: u32,
        #[arg(long)]
        sandbox: String,
    },
    /// `bench k8s`: a stand-in Kubernetes API server on 127.0.0.1 (every request answered).
    FakeApiserver {
        #[arg(long, default_value_t = 16443)]
        port: u16,
    },
    /// `bench vasic`'s baseline: routes straight over rtnetlink.
    NetlinkRoutes {
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        #[arg(long)]
        dev: String,
        #[arg(long)]
        nexthop: String,
        #[arg(long, default_value_t = 200)]
        table: u32,
    },
}

async fn run(bench: Bench) -> Result<(), Failure> {
    match bench {
        Bench::Raw { config, restart, crash, repeat } => raw::run(&config, restart, crash, repeat).await,
        Bench::Db { socket, entries, samples, batch } => workloads::appl_db(&socket, entries, samples, batch).await,
        Bench::RouteLatency { socket, samples, ifname, nexthop } => {
            workloads::route_latency(&socket, samples, &ifname, &nexthop).await
        }
        Bench::NetlinkRoutes { count, dev, nexthop, table } => {
            workloads::netlink_routes(count, &dev, &nexthop, table).await
        }
        Bench::PodStart { .. } | Bench::PodRemove { .. } | Bench::FakeApiserver { .. } => {
            Err(fail("run synchronously in main"))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The kubelet player runs its own runtime: these run outside the main one.
    match &cli.command {
        Bench::PodStart { leader, name, image, script, memory_limit } => {
            k8s::pod_start(*leader, name, image, script, *memory_limit);
            return ExitCode::SUCCESS;
        }
        Bench::PodRemove { leader, sandbox } => {
            k8s::pod_remove(*leader, sandbox);
            return ExitCode::SUCCESS;
        }
        Bench::FakeApiserver { port } => {
            k8s::fake_apiserver(*port);
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("soniclet-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("soniclet-bench: {message}");
            ExitCode::FAILURE
        }
    }
}
