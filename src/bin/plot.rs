//! Re-renders every figure and summary from runs/ alone, without training.

use anyhow::Result;
use clap::Parser;
use resnet_repro::experiment::Runs;
use resnet_repro::experiment::recipe::TABLES;
use resnet_repro::experiment::summary::write_summary;
use resnet_repro::report::{render_fig7, render_store};
use std::path::PathBuf;

/// Reads the run store under --runs (configurations, metrics.csv, final.json, eval-*.json) and
/// writes Figures 1 and 6 (runs/table6, one pair per dataset and preset), Figure 4 and Table 3's
/// curves (runs/table2, runs/table3), Figure 7 (runs/fig7), and the summaries of Tables 2/3/4 and
/// 6, again.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The runs folder (with table6/, table2/, table3/, fig7/ inside).
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    #[arg(long, default_value = "plots")]
    plots: PathBuf,
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run())
}

fn run() -> Result<()> {
    let args = Args::parse();
    let runs = Runs::new(&args.runs);
    let mut written = Vec::new();
    for recipe in TABLES {
        let store = runs.table(recipe.table);
        written.extend(render_store(&store, &args.plots)?);
        if store.root.is_dir() {
            write_summary(&store, recipe.title)?;
            println!("wrote {}", store.summary_md().display());
        }
    }
    written.extend(render_fig7(&runs.responses_csv(), &args.plots)?);
    if written.is_empty() {
        println!("no runs with metrics under {}: nothing to plot", args.runs.display());
    }
    for f in written {
        println!("wrote {}", f.display());
    }
    Ok(())
}
