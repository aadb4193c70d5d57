//! Re-renders every figure and summary from runs/ alone, without training.

use anyhow::Result;
use clap::Parser;
use resnet_repro::experiment::{summarize, write_summary};
use resnet_repro::plot::render_table6_figures;
use std::path::PathBuf;

/// Reads the metrics.csv and final.json files under --runs and writes Figures 1 and 6 (one pair per
/// dataset and preset) and the Table 6 summary again.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The runs folder of the CIFAR sweep.
    #[arg(long, default_value = "runs/table6")]
    runs: PathBuf,
    #[arg(long, default_value = "plots")]
    plots: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let written = render_table6_figures(&args.runs, &args.plots)?;
    if written.is_empty() {
        println!("no runs with metrics under {}: nothing to plot", args.runs.display());
    }
    for f in written {
        println!("wrote {}", f.display());
    }
    if args.runs.is_dir() {
        write_summary(&args.runs, &summarize(&args.runs)?)?;
        println!("wrote {}", args.runs.join("summary.md").display());
    }
    Ok(())
}
