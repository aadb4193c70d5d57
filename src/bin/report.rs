//! REPORT.md: every result under runs/ beside the paper's numbers, with protocols, deviations, the
//! figures under plots/ and each run's device, torch and commit. Reads runs/ and plots/ only.

use anyhow::Result;
use clap::Parser;
use resnet_repro::report::{ReportPaths, write_report};
use std::path::PathBuf;

/// Writes REPORT.md from runs/ and plots/ alone (no training): Tables 1, 2, 3, 4 and 6 beside the
/// paper with the differences, Figures 1, 4, 6 and 7, and what each run ran on. Tables not yet run
/// are listed with the command that produces them. Run `make plots` first to refresh the figures.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    #[arg(long, default_value = "plots")]
    plots: PathBuf,
    /// The report; image links are relative to its folder.
    #[arg(long, default_value = "REPORT.md")]
    out: PathBuf,
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run())
}

fn run() -> Result<()> {
    let args = Args::parse();
    write_report(&ReportPaths { runs: args.runs, plots: args.plots, out: args.out.clone() })?;
    println!("wrote {}", args.out.display());
    Ok(())
}
