//! Does it train like PyTorch? plain-20, ResNet-20, plain-56 and ResNet-56 on Fashion-MNIST with
//! one recipe, here and in plain PyTorch (bench/pytorch_crosscheck.py), several seeds a side, with
//! both He-normal modes; writes runs/crosscheck/curves.csv and summary.md (means ± std, the
//! difference and its 95% Welch interval at each checkpoint) and plots/crosscheck_<net>.png.

use anyhow::Result;
use clap::Parser;
use resnet_repro::cli::ExperimentArgs;
use resnet_repro::experiment::crosscheck::{CrosscheckOptions, compare, markdown, run_crosscheck};
use resnet_repro::experiment::recipe::CROSSCHECK;
use resnet_repro::experiment::{CrosscheckDirs, Draw, Swap};
use resnet_repro::models::HeInit;
use resnet_repro::report::figures::render_crosscheck;

/// Trains the cross-check's runs that are missing on both sides (ours resumable, PyTorch's per
/// run), then compares them. --quick: 2 seeds and 200 iterations, to try the machinery.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    run: ExperimentArgs,
    /// He-normal modes to cross-check.
    #[arg(long, value_delimiter = ',', default_value = "fan-in,fan-out")]
    init: Vec<HeInit>,
    /// Python with torch 2.11 (default: RESNET_REPRO_PYTHON, set by scripts/with-torch, else python3).
    #[arg(long)]
    python: Option<String>,
    /// Train the PyTorch side with our random draws instead of its own: `init` (our initial weights),
    /// `data` (our epochs' order, crops and flips) or `init,data`. Our draws are written to
    /// <out>/draws-<init>/, PyTorch's runs to <out>/pytorch-<init>-with-our-<draws>/, the comparison
    /// to curves-with-our-<draws>.csv, summary-with-our-<draws>.md and crosscheck_<net>-with-our-<draws>.png;
    /// our side's runs are the plain cross-check's, shared. A gap that closes says where it came from.
    #[arg(long, value_delimiter = ',')]
    swap: Vec<Draw>,
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run())
}

fn run() -> Result<()> {
    let args = Args::parse();
    let exp = args.run.experiment(&CROSSCHECK)?;
    let runner = args.run.runner(&CROSSCHECK)?;
    let swap = Swap::of(&args.swap);
    let dirs = CrosscheckDirs { root: runner.store.root.clone(), swap };
    let inits = args.init.clone();
    let python = args.python.unwrap_or_else(resnet_repro::bench::default_python);
    let script = resnet_repro::bench::repo_file("bench/pytorch_crosscheck.py");
    let o = CrosscheckOptions { runner, dirs: dirs.clone(), inits, python, script };
    let curves = run_crosscheck(&exp, &o)?;
    let md = markdown(&compare(&curves), &exp, swap);
    resnet_repro::fsutil::write_atomic(&dirs.summary_md(), md.as_bytes())?;
    println!("{md}");
    for f in render_crosscheck(&curves, &args.run.plots, &swap.suffix())? {
        println!("wrote {}", f.display());
    }
    println!("wrote {} and {}", dirs.curves_csv().display(), dirs.summary_md().display());
    Ok(())
}
