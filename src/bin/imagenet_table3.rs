//! Tables 3 and 4: ResNet-34 with shortcut options A/B/C and ResNet-50/101/152 on ImageNet.

use clap::Parser;
use resnet_repro::cli::{ExperimentArgs, run_table};
use resnet_repro::experiment::recipe::TABLE3;

/// Trains ResNet-34 A/B/C and ResNet-50/101/152 (option B; bottleneck stride placement from the
/// config, the paper's by default) on ImageNet (experiments/table3_imagenet.toml), evaluates them
/// with 10 crops (Table 3) and fully-convolutional multi-scale testing (Table 4), and writes
/// runs/table3/summary.{csv,md}. Interrupt it at any time: the next start resumes.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    run: ExperimentArgs,
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run_table(&Args::parse().run, &TABLE3))
}
