//! What every benchmark prints: a table of figures, each beside its baseline from the same
//! run, and the same figures as JSON (name, value, unit, baseline, ratio).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub baseline: Option<f64>,
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Metric {
    pub fn new(name: &str, value: f64, unit: &str, baseline: Option<f64>, target: &str) -> Self {
        Self {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            ratio: baseline.map(|b| if b > 0.0 { value / b } else { f64::NAN }),
            baseline,
            target: (!target.is_empty()).then(|| target.to_owned()),
        }
    }
}

pub fn print_table(title: &str, metrics: &[Metric]) {
    println!("\n{title}\n");
    let width = metrics.iter().map(|m| m.name.chars().count()).max().unwrap_or(0).max(48);
    println!("{:<width$} {:>12} {:<5} {:>12} {:>7}  target", "metric", "value", "unit", "baseline", "ratio");
    println!("{}", "-".repeat(width + 52));
    for m in metrics {
        let baseline = m.baseline.map(|b| format!("{b:.2}")).unwrap_or_else(|| "-".into());
        let ratio = m.ratio.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<width$} {:>12.2} {:<5} {:>12} {:>7}  {}",
            m.name,
            m.value,
            m.unit,
            baseline,
            ratio,
            m.target.clone().unwrap_or_default()
        );
    }
}

pub fn write_json(path: Option<&Path>, metrics: &[Metric]) -> Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_vec_pretty(metrics)?).with_context(|| format!("{}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
