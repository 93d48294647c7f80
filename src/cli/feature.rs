//! `feature ls`, `feature state`, `feature autorestart`.

use super::output::{print_table, CliResult};
use crate::api::client::Client;
use crate::api::{FeatureChange, FeatureStatus};

pub async fn list(client: &Client, json: bool) -> CliResult {
    let features: Vec<FeatureStatus> = client.features().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&features).unwrap_or_default());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = features
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                f.state.clone(),
                f.auto_restart.clone(),
                f.set_owner.clone(),
                f.current_owner.clone(),
                if f.delayed { "True" } else { "False" }.to_owned(),
                f.service_state.to_string(),
                f.source.clone(),
            ]
        })
        .collect();
    print_table(&["Feature", "State", "AutoRestart", "SetOwner", "CurrentOwner", "Delayed", "Service", "From"], &rows);
    Ok(())
}

pub async fn change(client: &Client, service: &str, change: FeatureChange, timeout: u64) -> CliResult {
    let request = FeatureChange { timeout_secs: Some(timeout), ..change };
    let feature = client.change_feature(service, &request).await?;
    println!(
        "{}: state {}, auto_restart {}, owner {} (now {}); service {}",
        feature.name,
        feature.state,
        feature.auto_restart,
        feature.set_owner,
        feature.current_owner,
        feature.service_state
    );
    Ok(())
}
