//! Table 2 and Figure 4: plain-18/34 vs ResNet-18/34 (option A) on ImageNet.

use clap::Parser;
use resnet_repro::cli::{ExperimentArgs, run_table};
use resnet_repro::experiment::recipe::TABLE2;

/// Trains plain-18, plain-34, ResNet-18 and ResNet-34 (option A) on ImageNet with the paper's recipe
/// (experiments/table2_imagenet.toml), evaluates them with 10 crops, and writes
/// runs/table2/summary.{csv,md} beside Table 2 and plots/fig4_imagenet.png. Interrupt it at any time:
/// the next start resumes.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    run: ExperimentArgs,
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run_table(&Args::parse().run, &TABLE2))
}
