//! Re-renders every figure and summary from runs/ alone, without training.

use anyhow::Result;
use clap::Parser;
use resnet_repro::plot::{render_fig7, render_imagenet_figures, render_table6_figures};
use resnet_repro::{experiment, imagenet_experiment};
use std::path::PathBuf;

/// Reads the metrics.csv, final.json and eval-*.json files under --runs and writes Figures 1 and 6
/// (from runs/table6, one pair per dataset and preset) and Figure 4 (from runs/table2), and the
/// summaries of Tables 2/3/4 and 6, again.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The runs folder (with table6/, table2/, table3/ inside).
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    #[arg(long, default_value = "plots")]
    plots: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut written = render_table6_figures(&args.runs.join("table6"), &args.plots)?;
    for table in ["table2", "table3"] {
        written.extend(render_imagenet_figures(&args.runs.join(table), &args.plots)?);
    }
    written.extend(render_fig7(&args.runs.join("fig7"), &args.plots)?);
    if written.is_empty() {
        println!("no runs with metrics under {}: nothing to plot", args.runs.display());
    }
    for f in written {
        println!("wrote {}", f.display());
    }
    let t6 = args.runs.join("table6");
    if t6.is_dir() {
        experiment::write_summary(&t6, &experiment::summarize(&t6)?)?;
        println!("wrote {}", t6.join("summary.md").display());
    }
    for (table, title) in [
        ("table2", "Table 2 and Figure 4: plain vs ResNet on ImageNet"),
        ("table3", "Tables 3 and 4: shortcut options and deeper ResNets on ImageNet"),
    ] {
        let dir = args.runs.join(table);
        if dir.is_dir() {
            imagenet_experiment::write_summary(&dir, title, &imagenet_experiment::summarize(&dir)?)?;
            println!("wrote {}", dir.join("summary.md").display());
        }
    }
    Ok(())
}
