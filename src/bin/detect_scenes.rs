//! Tables 7-8 at small scale: Faster R-CNN C4 on scenes of Fashion-MNIST items, its backbone a
//! released classification network, pre-trained or from scratch, several seeds each; the
//! summary beside the paper's claims (experiments/detect_scenes.toml).

use anyhow::Result;
use clap::Parser;
use resnet_repro::cli::Worker;
use resnet_repro::data::DataOptions;
use resnet_repro::detect::DetectionSet;
use resnet_repro::experiment::detect_scenes::{
    SceneData, SceneExperiment, SceneRun, records, resolve, run_one, write_summary,
};
use resnet_repro::experiment::{Runs, Store, Table};
use std::path::PathBuf;

/// Faster R-CNN C4 (the paper's Appendix A) on 96x96 scenes of 1-6 Fashion-MNIST items, boxes
/// exact: each backbone (a released Table 6 run: conv1 and stages 1-2 shared, stage 3 per region)
/// pre-trained and from scratch, each seed; then mAP@.5 and AP@[.5,.95] (pycocotools' arithmetic)
/// as mean ± std per (network, init) in <out>/summary.md, beside the paper's Tables 7-8. Runs are
/// resumable (checkpoints in each run's folder); a finished run is not trained again.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Experiment file.
    #[arg(long, default_value = "experiments/detect_scenes.toml")]
    config: PathBuf,
    /// Only these runs, in this order: `resnet20-pretrained` (every seed) or `plain20-scratch/seed1`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Output folder for the runs and the summary (default: runs/detect_scenes).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Folder with Fashion-MNIST (else the Debian package's folder, else downloaded).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Never download; fail with a hint if the data is not found.
    #[arg(long)]
    no_download: bool,
    /// Where to train: auto (the first GPU if any, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = resnet_repro::env::parse_device)]
    device: tch::Device,
    /// CPU threads for libtorch (0: libtorch's default, one per core; a --worker's share of them).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// This process is worker K of N sharing the runs (scripts/workers starts them): each run is
    /// trained by one of them (a lock in its folder).
    #[arg(long, value_name = "K/N")]
    worker: Option<Worker>,
}

fn main() -> std::process::ExitCode {
    resnet_repro::interrupt::exit_status(run())
}

/// The runs `only` names, in its order (every run when it is empty); a name that is no run of
/// `config` is an error.
fn only(runs: Vec<SceneRun>, only: &[String], config: &std::path::Path) -> Result<Vec<SceneRun>> {
    if only.is_empty() {
        return Ok(runs);
    }
    let picked = |r: &SceneRun, o: &str| o == r.name() || o == format!("{}/seed{}", r.name(), r.seed);
    for o in only {
        anyhow::ensure!(runs.iter().any(|r| picked(r, o)), "--only {o}: no such run in {}", config.display());
    }
    Ok(only.iter().flat_map(|o| runs.iter().filter(|r| picked(r, o)).cloned().collect::<Vec<_>>()).collect())
}

fn run() -> Result<()> {
    let args = Args::parse();
    resnet_repro::interrupt::install()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match (args.threads, args.worker) {
        (0, Some(w)) => tch::set_num_threads(w.threads(cores) as i32),
        (0, None) => {}
        (n, _) => tch::set_num_threads(n),
    }
    let experiment = SceneExperiment::load(&args.config)?;
    let store = args.out.map_or_else(|| Runs::new("runs").table(Table::DetectScenes), Store::new);
    let runs = only(resolve(&experiment)?, &args.only, &args.config)?;
    let mut data = DataOptions::new(&args.data_dir);
    data.allow_download = !args.no_download;
    let scenes = SceneData::load(&experiment.scenes, &data)?;
    eprintln!("{} runs; {} training and {} test scenes", runs.len(), scenes.train.len(), scenes.test.len());
    for run in &runs {
        if let Some(signal) = resnet_repro::interrupt::requested() {
            let at = format!("before {} seed{}", run.name(), run.seed);
            return Err(resnet_repro::interrupt::Interrupted { at, signal }.into());
        }
        match run_one(&store, run, &scenes, args.device)? {
            Some(r) => eprintln!(
                "{} seed{}: mAP@.5 {:.3}, AP@[.5,.95] {:.3}",
                run.name(),
                run.seed,
                r.scores.ap50.unwrap_or(f64::NAN),
                r.scores.ap.unwrap_or(f64::NAN)
            ),
            None => {
                eprintln!("{} seed{}: another process is training it; skipped", run.name(), run.seed)
            }
        }
    }
    for f in write_summary(&store, &records(&store)?)? {
        println!("wrote {}", f.display());
    }
    Ok(())
}
