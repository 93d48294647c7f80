//! `image import` and `image ls`.

use super::output::{print_table, CliResult, Failure};
use crate::api::client::Client;
use crate::api::{ImageSummary, ImportEvent, ImportRequest};
use crate::exit::Exit;

pub async fn import(client: &Client, files: &[std::path::PathBuf]) -> CliResult {
    let cwd = std::env::current_dir().unwrap_or_default();
    let paths: Vec<String> = files.iter().map(|f| cwd.join(f).display().to_string()).collect();
    let mut failure = None;
    let mut imported = 0usize;
    client
        .import(&ImportRequest { paths }, |event| match event {
            ImportEvent::Progress(p) => eprintln!("{p}"),
            ImportEvent::Imported(image) => {
                imported += 1;
                println!("imported {} {}", image.name, image.digest);
            }
            ImportEvent::Error(e) => failure = Some(e),
            ImportEvent::Done { .. } => {}
        })
        .await?;
    match failure {
        Some(e) => Err(Failure {
            exit: Exit::from(e.kind),
            message: format!("{}; {imported} image(s) were imported before it", e.message),
        }),
        None => Ok(()),
    }
}

pub async fn list(client: &Client, json: bool) -> CliResult {
    let images: Vec<ImageSummary> = client.images().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&images).unwrap_or_default());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.digest.chars().take(19).collect(),
                format!("{:.1} MB", i.size as f64 / 1e6),
                format!("{}/{}", i.os, i.architecture),
                i.used_by.join(","),
            ]
        })
        .collect();
    print_table(&["IMAGE", "DIGEST", "SIZE", "PLATFORM", "USED BY"], &rows);
    Ok(())
}
