//! Figure 7: the standard deviation of every 3x3 layer's response (BN output, before the ReLU or
//! the addition) over the test set, for plain-20/56 and ResNet-20/56/110. Uses the Table 6 runs
//! under runs/table6 and trains the missing ones there first. Writes runs/fig7/responses.csv and
//! plots/fig7_<dataset>.png.

use anyhow::Result;
use clap::Parser;
use resnet_repro::cli::ExperimentArgs;
use resnet_repro::eval::responses::merge_responses;
use resnet_repro::experiment::figure7::{fig7_experiment, measure_responses};
use resnet_repro::experiment::recipe::TABLE6;
use resnet_repro::experiment::{Runs, run_experiment};
use resnet_repro::report::render_fig7;

/// Figure 7 from the trained Table 6 networks (plain-20/56, ResNet-20/56/110, first seed of each):
/// the std of each 3x3 layer's response over the test set, in layer order and sorted. Networks
/// without a finished run are trained first (as Table 6 runs, resumable), and the log says so.
/// --out is the Table 6 runs folder; responses.csv goes to <runs>/fig7 beside it.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    run: ExperimentArgs,
    /// Test images per forward pass.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run())
}

fn run() -> Result<()> {
    let args = Args::parse();
    let fig7 = fig7_experiment(&args.run.experiment(&TABLE6)?)?;
    let opts = args.run.runner(&TABLE6)?;
    run_experiment(&fig7, &opts)?; // trains only what is missing
    let rows = measure_responses(&fig7, &opts, args.batch)?;
    let runs = Runs::new(opts.store.root.parent().unwrap_or(std::path::Path::new(".")));
    let csv = runs.responses_csv();
    std::fs::create_dir_all(csv.parent().unwrap_or(&runs.root))?;
    merge_responses(&csv, &rows)?;
    println!("wrote {}", csv.display());
    for f in render_fig7(&csv, &args.run.plots)? {
        println!("wrote {}", f.display());
    }
    Ok(())
}
