//! Figure 7: the standard deviation of every 3x3 layer's response (BN output, before the ReLU or
//! the addition) over the test set, for plain-20/56 and ResNet-20/56/110. Uses the Table 6 runs
//! under runs/table6 and trains the missing ones there first. Writes runs/fig7/responses.csv and
//! plots/fig7_<dataset>.png.

use anyhow::Result;
use clap::Parser;
use resnet_repro::cli::CommonArgs;
use resnet_repro::experiment::SweepOptions;
use resnet_repro::plot::render_fig7;
use resnet_repro::responses::{Fig7Options, run_fig7};
use resnet_repro::train::TrainOptions;
use std::path::PathBuf;

/// Figure 7 from the trained Table 6 networks (plain-20/56, ResNet-20/56/110, first seed of each):
/// the std of each 3x3 layer's response over the test set, in layer order and sorted. Networks
/// without a finished run are trained first (as Table 6 runs, resumable), and the log says so.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The Table 6 experiment whose runs are used.
    #[arg(long, default_value = "experiments/table6_cifar10.toml")]
    config: PathBuf,
    /// Use experiments/quick.toml's runs (depths 20 and 56): minutes on a CPU. Not a reproduction.
    #[arg(long, conflicts_with = "config")]
    quick: bool,
    /// Where the Table 6 runs are (and missing ones go).
    #[arg(long, default_value = "runs/table6")]
    runs: PathBuf,
    /// Output folder for responses.csv.
    #[arg(long, default_value = "runs/fig7")]
    out: PathBuf,
    #[arg(long, default_value = "plots")]
    plots: PathBuf,
    /// Test images per forward pass.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cfg = args.common.experiment(&args.config, args.quick)?;
    let opts = Fig7Options {
        sweep: SweepOptions {
            out: args.runs.clone(),
            data: args.common.data_options(),
            train: TrainOptions::new(args.common.device()?),
            only: Vec::new(),
        },
        out: args.out.clone(),
        eval_batch: args.batch,
    };
    run_fig7(&cfg, &opts)?;
    println!("wrote {}", args.out.join("responses.csv").display());
    for f in render_fig7(&args.out, &args.plots)? {
        println!("wrote {}", f.display());
    }
    Ok(())
}
