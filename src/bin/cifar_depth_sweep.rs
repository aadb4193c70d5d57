//! Table 6 and Figures 1 and 6: the CIFAR depth sweep of Sec. 4.2, plain and residual nets of depth
//! 20..110 (1202 in its own file), trained with the paper's recipe; finished runs are skipped and
//! partial ones resumed. Writes runs/table6/<dataset>/<net>/seed<k>/, runs/table6/summary.{csv,md}
//! and plots/fig{1,6}_<dataset>.png.

use anyhow::Result;
use clap::Parser;
use resnet_repro::cli::CommonArgs;
use resnet_repro::experiment::{SweepOptions, run_sweep, summarize, write_summary};
use resnet_repro::plot::render_table6_figures;
use resnet_repro::train::TrainOptions;
use std::path::PathBuf;

/// Trains the networks of an experiment file (default experiments/table6_cifar10.toml) and writes
/// the summary beside the paper's Table 6 and Figures 1 and 6. Interrupt it at any time: the next
/// start resumes from the last checkpoint.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Experiment file.
    #[arg(long, default_value = "experiments/table6_cifar10.toml")]
    config: PathBuf,
    /// Use experiments/quick.toml: a few hundred iterations of depths 20 and 56, plain and
    /// residual, to try the whole pipeline on a CPU in minutes. Not a reproduction.
    #[arg(long, conflicts_with = "config")]
    quick: bool,
    /// Only these networks, e.g. `--only resnet20,plain56`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Output folder for runs and the summary.
    #[arg(long, default_value = "runs/table6")]
    out: PathBuf,
    /// Output folder for the figures.
    #[arg(long, default_value = "plots")]
    plots: PathBuf,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cfg = args.common.experiment(&args.config, args.quick)?;
    let device = args.common.device()?;
    let opts = SweepOptions {
        out: args.out.clone(),
        data: args.common.data_options(),
        train: TrainOptions::new(device),
        only: args.only.clone(),
    };
    run_sweep(&cfg, &opts)?;
    let md = write_summary(&args.out, &summarize(&args.out)?)?;
    println!("{md}");
    for f in render_table6_figures(&args.out, &args.plots)? {
        println!("wrote {}", f.display());
    }
    println!(
        "wrote {} and {}",
        args.out.join("summary.csv").display(),
        args.out.join("summary.md").display()
    );
    Ok(())
}
