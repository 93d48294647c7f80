//! `status`, `start`, `stop`, `restart`, `logs`, `shutdown`.

use clap::Args;

use super::output::{print_table, CliResult, Failure};
use crate::api::client::{Action, Client};
use crate::api::{ActionRequest, ServiceStatus, ShutdownRequest, StatusResponse, WaitRequest};
use crate::exit::Exit;
use crate::logs::parse_record;

/// What `start`, `stop` and `restart` take.
#[derive(Debug, Args)]
pub struct ActionArgs {
    pub service: String,
    /// Return at once instead of waiting for the service.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait before giving up (the operation goes on).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".to_owned())
}

fn rows(services: &[ServiceStatus]) -> Vec<Vec<String>> {
    services
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.state.to_string(),
                yes_no(s.ready),
                dash(s.pid),
                s.restarts.to_string(),
                s.since.clone(),
                s.image.clone(),
                s.message.clone().unwrap_or_default(),
            ]
        })
        .collect()
}

const HEADER: &[&str] = &["SERVICE", "STATE", "READY", "PID", "RESTARTS", "SINCE", "IMAGE", "NOTE"];

pub async fn status(client: &Client, service: Option<&str>, json: bool) -> CliResult {
    match service {
        Some(name) => {
            let status: ServiceStatus = client.service(name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
            } else {
                print_table(HEADER, &rows(std::slice::from_ref(&status)));
                if let Some(digest) = &status.image_digest {
                    println!("\nimage digest: {digest}\ngeneration:   {}", status.generation);
                }
                if let Some(downtime) = status.downtime_ms {
                    println!("last down:    {downtime} ms (stop or crash to ready)");
                }
                if let Some(upgrade) = &status.upgrade {
                    println!("last upgrade: {upgrade}");
                }
            }
        }
        None => {
            let status: StatusResponse = client.status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
            } else {
                let d = &status.daemon;
                let ready = status.services.iter().filter(|s| s.ready).count();
                let enabled = status.services.iter().filter(|s| s.enabled).count();
                println!(
                    "soniclet {} (pid {}) since {}: {ready}/{enabled} enabled services ready\n",
                    d.version, d.pid, d.since
                );
                print_table(HEADER, &rows(&status.services));
            }
        }
    }
    Ok(())
}

pub async fn action(client: &Client, action: Action, args: &ActionArgs) -> CliResult {
    let request = ActionRequest { wait: !args.no_wait, timeout_secs: Some(args.timeout) };
    let status = client.act(&args.service, action, &request).await?;
    let outcome = match (action, args.no_wait) {
        (_, true) => format!("{} requested", action.as_str()),
        (Action::Stop, false) => "stopped".to_owned(),
        _ => "ready".to_owned(),
    };
    println!("{}: {outcome} (state {}, pid {})", status.name, status.state, dash(status.pid));
    Ok(())
}

pub async fn wait(client: &Client, services: Vec<String>, timeout: u64, json: bool) -> CliResult {
    let request = WaitRequest { services, stopped: false, timeout_secs: Some(timeout) };
    let status = client.wait(&request).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
    } else {
        let ready = status.services.iter().filter(|s| s.ready).count();
        println!("{ready} services ready");
    }
    Ok(())
}

pub async fn logs(client: &Client, service: &str, follow: bool, lines: usize, timestamps: bool) -> CliResult {
    client
        .logs(service, lines, follow, |record| {
            if timestamps {
                println!("{record}");
            } else {
                println!("{}", parse_record(record).2);
            }
        })
        .await
        .map_err(Failure::from)
}

pub async fn shutdown(client: &Client, stop_services: bool) -> CliResult {
    client.shutdown(&ShutdownRequest { stop_services }).await?;
    println!(
        "{}",
        if stop_services { "every service stopped; daemon exiting" } else { "daemon exiting; services keep running" }
    );
    let _ = Exit::Ok;
    Ok(())
}
