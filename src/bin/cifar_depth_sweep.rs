//! Table 6 and Figures 1 and 6: the CIFAR depth sweep of Sec. 4.2, plain and residual nets of depth
//! 20..110 (1202 in its own file), trained with the paper's recipe; finished runs are skipped and
//! partial ones resumed. Writes runs/table6/<dataset>/<net>/seed<k>/, runs/table6/summary.{csv,md}
//! and plots/fig{1,6}_<dataset>.png.

use clap::Parser;
use resnet_repro::cli::{ExperimentArgs, run_table};
use resnet_repro::experiment::recipe::TABLE6;

/// Trains the networks of an experiment file (default experiments/table6_cifar10.toml; --quick:
/// experiments/quick.toml, 900 iterations of batch 64 on depths 20 and 56, not a reproduction) and
/// writes the summary beside the paper's Table 6 and Figures 1 and 6. Interrupt it at any time:
/// the next start resumes from the last checkpoint.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    run: ExperimentArgs,
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run_table(&Args::parse().run, &TABLE6))
}
