//! The flags every experiment binary shares (flattened into each one's clap parser), grouped in
//! its help, and [`run_table`], what a table's binary does with them: its experiment
//! ([`crate::experiment::recipe`]) run, then its summary and figures ([`crate::report`]).

use crate::data::loader::LoaderSettings;
use crate::data::{DataOptions, DatasetName};
use crate::dist::{GradSync, Launch, RankEnv, Replicas};
use crate::env::device_name;
use crate::experiment::recipe::Recipe;
use crate::experiment::{Experiment, RunPick, RunnerOptions, Store};
use crate::train::{Precision, TrainOptions};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use tch::Device;

#[derive(Debug, Clone, Args)]
pub struct ExperimentArgs {
    /// Experiment file (default: the table's, under experiments/).
    #[arg(help_heading = "What to run", long)]
    pub config: Option<PathBuf>,
    /// The quick preset: a shortened schedule to try the whole pipeline on a CPU in minutes (the
    /// CIFAR sweep, experiments/quick.toml: 900 iterations of batch 64, depths 20 and 56; ImageNet:
    /// 30 iterations of 16 on 10 classes at half the paper's sizes). Not a reproduction.
    #[arg(help_heading = "What to run", long, conflicts_with = "config")]
    pub quick: bool,
    /// Only these runs, trained in this order: networks (every seed the experiment gives them),
    /// e.g. `--only resnet20,plain56` or `--only resnet34-A,plain34`, or one seed of a network,
    /// `resnet20/seed1` (also a seed the experiment does not list).
    #[arg(help_heading = "What to run", long, value_delimiter = ',')]
    pub only: Vec<RunPick>,
    /// Overrides the seeds of every network, e.g. `--seeds 0,1,2`.
    #[arg(help_heading = "What to run", long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Overrides a CIFAR-style experiment's dataset: cifar10, cifar100 (the nets' fc sized from its
    /// classes) or fashion-mnist (28x28x1, for machines where CIFAR-10 cannot be fetched); every
    /// output names the dataset it used.
    #[arg(help_heading = "What to run", long)]
    pub dataset: Option<DatasetName>,
    /// The training forward pass's arithmetic for every run, overriding `[train] precision`:
    /// fp32 (the paper's) or bf16 autocast (weights, SGD and BN statistics stay fp32).
    #[arg(help_heading = "What to run", long, value_enum)]
    pub precision: Option<Precision>,
    /// Output folder for the runs and the summary (default: runs/<table>).
    #[arg(help_heading = "Where", long)]
    pub out: Option<PathBuf>,
    /// Output folder for the figures.
    #[arg(help_heading = "Where", long, default_value = "plots")]
    pub plots: PathBuf,
    /// Folder with the datasets (CIFAR downloads go there too); for ImageNet the root with train/
    /// and val/, or a folder holding imagenet/.
    #[arg(help_heading = "Where", long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Never download; fail with a hint if the data is not found.
    #[arg(help_heading = "Where", long)]
    pub no_download: bool,
    /// Where to train: auto (the first GPU if any, else the CPU), cpu, cuda or cuda:N.
    #[arg(help_heading = "Device", long, default_value = "auto", value_parser = crate::env::parse_device)]
    pub device: tch::Device,
    /// CPU threads for libtorch (0: OMP_NUM_THREADS if set, else one per core, or the process's
    /// share of the cores as a --worker or a torchrun rank).
    #[arg(help_heading = "Device", long, default_value_t = 0)]
    pub threads: i32,
    /// On a GPU, issue every step op by op instead of capturing the CIFAR step once as a CUDA
    /// graph and replaying it (the same kernels, launched at once; only the learning rate is read
    /// as a float32 from the GPU instead of a double).
    #[arg(help_heading = "Device", long)]
    pub no_cuda_graph: bool,
    /// Image folders: keep the first N classes (sorted), for a first try on a subset.
    #[arg(help_heading = "Image folders (ImageNet)", long)]
    pub classes: Option<usize>,
    /// Image folders: keep the first N training images of each class.
    #[arg(help_heading = "Image folders (ImageNet)", long)]
    pub images_per_class: Option<usize>,
    /// Image folders: decoding threads (0: one per core, or the process's share of them as a
    /// --worker or a torchrun rank).
    #[arg(help_heading = "Image folders (ImageNet)", long, default_value_t = 0)]
    pub loader_threads: usize,
    /// Image folders: batches decoded ahead of the training step.
    #[arg(help_heading = "Image folders (ImageNet)", long, default_value_t = 4)]
    pub prefetch: usize,
    /// Image folders: skip undecodable images (counted in the log and metrics.csv; each one's place
    /// taken by the next image of the epoch) instead of stopping with an error that names the file.
    #[arg(help_heading = "Image folders (ImageNet)", long)]
    pub skip_corrupt: bool,
    /// This process is worker K of N sharing the sweep (`make ... JOBS=N` starts them): each run is
    /// trained by one worker (a lock in its folder), worker K trains on GPU K mod #GPUs, and
    /// on a CPU the workers split the cores; the last to finish writes the summary.
    #[arg(help_heading = "Several processes", long, value_name = "K/N")]
    pub worker: Option<Worker>,
    /// Data-parallel runs (started by torchrun): seconds a collective may wait for the other
    /// ranks before the job fails with the rank and the operation named.
    #[arg(help_heading = "Several processes", long, default_value_t = 600)]
    pub dist_timeout: u64,
    /// Data-parallel runs: average the gradients `during` the backward pass, each bucket as soon
    /// as it is ready (c10d's Reducer, DDP's engine), or `after` it, all buckets at once.
    #[arg(help_heading = "Several processes", long, value_enum, default_value_t = GradSync::DuringBackward)]
    pub grad_sync: GradSync,
}

/// `--worker K/N`: worker K (0-based) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Worker {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let parsed = s.split_once('/').and_then(|(k, n)| Some((k.parse().ok()?, n.parse().ok()?)));
        match parsed {
            Some((index, count)) if index < count => Ok(Worker { index, count }),
            _ => anyhow::bail!("--worker {s:?}: expected K/N with 0 <= K < N, e.g. 0/2"),
        }
    }
}

impl Worker {
    /// This worker's device: GPU K mod #GPUs where the device is a GPU.
    pub fn device(&self, device: Device, gpus: i64) -> Device {
        match device {
            Device::Cuda(_) if gpus > 0 => Device::Cuda(self.index % gpus as usize),
            d => d,
        }
    }

    /// This worker's share of `cores` (at least one).
    pub fn threads(&self, cores: usize) -> usize {
        (cores / self.count).max(1)
    }
}

impl ExperimentArgs {
    /// The experiment file (the recipe's, its quick preset's, or `--config`) with the flags that
    /// override it applied, validated.
    pub fn experiment(&self, recipe: &Recipe) -> Result<Experiment> {
        let path = match (&self.config, self.quick) {
            (Some(p), _) => p.clone(),
            (None, true) => PathBuf::from(recipe.quick),
            (None, false) => PathBuf::from(recipe.config),
        };
        let mut exp = Experiment::from_file(&path)?;
        if let Some(ds) = self.dataset {
            exp.data = exp.data.with_dataset(ds)?;
        }
        if let Some(seeds) = &self.seeds {
            exp.set_seeds(seeds);
        }
        if let Some(p) = self.precision {
            exp.train.precision = p;
        }
        match &mut exp.data {
            crate::data::DataConfig::ImageNet(o) => {
                o.subset.classes = self.classes.or(o.subset.classes);
                o.subset.images_per_class = self.images_per_class.or(o.subset.images_per_class);
            }
            tensors if self.classes.is_some() || self.images_per_class.is_some() => {
                anyhow::bail!(
                    "--classes and --images-per-class are for image folders; {} is not one",
                    tensors.dataset()
                )
            }
            _ => {}
        }
        exp.validate()?;
        Ok(exp)
    }

    /// The runs folder: `--out`, else `runs/<table>`.
    pub fn store(&self, recipe: &Recipe) -> Store {
        let default = PathBuf::from("runs").join(recipe.table.dir_name());
        Store::new(self.out.clone().unwrap_or(default))
    }

    /// Installs the signal handlers (a signal stops training at a checkpoint: see
    /// [`crate::interrupt`]), sets the thread count, resolves the device, and gathers where the
    /// runner reads and writes.
    pub fn runner(&self, recipe: &Recipe) -> Result<RunnerOptions> {
        crate::interrupt::install()?;
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let launch = Launch::from_env()?;
        // A worker's or a rank's share of the cores, for libtorch (unless told) and the loader.
        let share = match (&launch, self.worker) {
            (Launch::Rank(env), _) => Some(env.cores(cores)),
            (Launch::Single, Some(w)) => Some(w.threads(cores)),
            (Launch::Single, None) => None,
        };
        match (self.threads, share) {
            (0, None) => {}
            (0, Some(k)) if std::env::var_os("OMP_NUM_THREADS").is_none() => tch::set_num_threads(k as i32),
            (0, Some(_)) => {}
            (n, _) => tch::set_num_threads(n),
        }
        let mut device = self.device;
        if let Some(w) = self.worker {
            device = w.device(device, tch::Cuda::device_count());
            eprintln!(
                "worker {}/{}: {}, {} threads",
                w.index,
                w.count,
                device_name(device),
                tch::get_num_threads()
            );
        }
        let threads = match self.loader_threads {
            0 => share.unwrap_or(cores),
            n => n,
        };
        let mut train = TrainOptions::new(device);
        train.cuda_graph = !self.no_cuda_graph;
        if let Launch::Rank(env) = launch {
            train.replicas = Some(Arc::new(self.join(&env, &mut train.device)?));
        }
        Ok(RunnerOptions {
            store: self.store(recipe),
            data: DataOptions { allow_download: !self.no_download, ..DataOptions::new(&self.data_dir) },
            loader: LoaderSettings { threads, prefetch: self.prefetch, skip_corrupt: self.skip_corrupt },
            train,
            only: self.only.clone(),
            estimate: None,
        })
    }

    /// This process as rank `env.rank` of a data-parallel job: its GPU (`LOCAL_RANK`), the other
    /// ranks met.
    fn join(&self, env: &RankEnv, device: &mut tch::Device) -> Result<Replicas> {
        anyhow::ensure!(
            self.worker.is_none(),
            "--worker shares a sweep's runs between processes; a torchrun launch (RANK is set) trains \
             each run on all of them: use one or the other"
        );
        *device = env.device(*device)?;
        let mut dp = Replicas::connect(env, *device, std::time::Duration::from_secs(self.dist_timeout))?;
        dp.grad_sync = self.grad_sync;
        if env.rank == 0 {
            eprintln!(
                "data-parallel: {} ranks over {}, rank 0 on {} ({} threads), gradients averaged {} the \
                 backward pass, runs and logs from rank 0",
                env.world,
                dp.group.backend,
                device_name(*device),
                tch::get_num_threads(),
                match dp.grad_sync {
                    GradSync::DuringBackward => "during",
                    GradSync::AfterBackward => "after",
                }
            );
        }
        Ok(dp)
    }
}

/// Runs a table's experiment as the flags say, then writes its summary and figures and prints
/// where they went: what `cifar_depth_sweep`, `imagenet_plain_vs_resnet` and `imagenet_table3` do.
pub fn run_table(args: &ExperimentArgs, recipe: &Recipe) -> Result<()> {
    let exp = args.experiment(recipe)?;
    let mut opts = args.runner(recipe)?;
    // Advice, not a step of the sweep: a failure to estimate is said and the sweep goes on.
    opts.estimate = how_long(args, recipe, &exp, &opts).unwrap_or_else(|e| {
        eprintln!("(no time estimate: {e:#})");
        None
    });
    let outcomes = crate::experiment::run_experiment(&exp, &opts)?;
    if !opts.train.is_rank0() {
        return Ok(()); // rank 0 writes the summary and figures
    }
    if !crate::experiment::runner::all_done(&outcomes, &opts.store)? {
        eprintln!("some runs are still being trained by other workers: the last of them writes the summary");
        return Ok(());
    }
    // Workers finishing together take turns; each writes the same files, atomically.
    let _lock = crate::fsutil::FileLock::take(&opts.store.root.join("summary.lock"), |_| {})?;
    let md = crate::experiment::summary::write_summary(&opts.store, recipe.title)?;
    println!("{md}");
    for f in crate::report::render_store(&opts.store, &args.plots)? {
        println!("wrote {}", f.display());
    }
    println!("wrote {} and {}", opts.store.summary_csv().display(), opts.store.summary_md().display());
    Ok(())
}

/// Before a sweep of the paper's schedule (rank 0, the first worker): how long its unfinished runs
/// take on this machine, from a few timed steps of each network, and the quick preset's time as the
/// alternative. `None` where it is not said (another worker, image folders, the quick preset).
fn how_long(
    args: &ExperimentArgs,
    recipe: &Recipe,
    exp: &Experiment,
    opts: &RunnerOptions,
) -> Result<Option<crate::experiment::estimate::Estimate>> {
    use crate::experiment::estimate::estimate;
    use crate::train::progress::about;
    let first = opts.train.is_rank0() && args.worker.is_none_or(|w| w.index == 0);
    let Some(shape) = exp.data.shape() else { return Ok(None) };
    if !first || exp.preset != crate::experiment::Preset::Full {
        return Ok(None);
    }
    let device = opts.train.device;
    let runs = crate::experiment::runner::select(exp.resolve(shape)?, &opts.only, &exp.name)?;
    if runs.iter().any(|r| !opts.store.run(r).is_finished()) {
        eprintln!("{}: timing a few steps of each network to say how long the sweep will take...", exp.name);
    }
    let Some(est) = estimate(&runs, Some(&opts.store), device)? else { return Ok(None) };
    if est.runs.is_empty() {
        return Ok(Some(est));
    }
    let workers = args.worker.map_or(1, |w| w.count);
    let shared = if workers > 1 { format!(", shared by {workers} workers") } else { String::new() };
    let quick =
        ExperimentArgs { quick: true, config: None, only: Vec::new(), ..args.clone() }.experiment(recipe)?;
    let quick_runs = quick.resolve(quick.data.shape().unwrap_or(shape))?;
    let quick_time = estimate(&quick_runs, None, device)?.map(|e| e.seconds());
    eprintln!(
        "{}: {} runs to train, {}{shared} on this machine ({}, {} threads; the median of {} steps of \
         each net, evaluations left out){}",
        exp.name,
        est.runs.len(),
        about(est.seconds() / workers as f64),
        device_name(device),
        tch::get_num_threads(),
        crate::experiment::estimate::TIMED_STEPS,
        quick_time.map_or(String::new(), |q| format!(
            ". The quick preset (--quick, PRESET=quick) takes {}: a check of the pipeline, not a reproduction",
            about(q)
        )),
    );
    Ok(Some(est))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::recipe::TABLE6;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ExperimentArgs,
    }

    fn parse(flags: &[&str]) -> ExperimentArgs {
        Cli::try_parse_from(std::iter::once("x").chain(flags.iter().copied())).unwrap().args
    }

    #[test]
    fn precision_and_grad_sync_flags_override_the_experiment_file() {
        let plain = parse(&["--quick"]);
        assert_eq!(plain.grad_sync, GradSync::DuringBackward);
        assert_eq!(plain.experiment(&TABLE6).unwrap().train.precision, Precision::Fp32);
        let bf16 = parse(&["--quick", "--precision", "bf16", "--grad-sync", "after"]);
        assert_eq!(bf16.experiment(&TABLE6).unwrap().train.precision, Precision::Bf16);
        assert_eq!(bf16.grad_sync, GradSync::AfterBackward);
        assert!(Cli::try_parse_from(["x", "--precision", "fp16"]).is_err(), "fp16 is not offered");
    }

    #[test]
    fn the_quick_presets_help_gives_the_quick_files_schedules() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let quick = parse(&["--quick"]);
        let cifar = quick.experiment(&TABLE6).unwrap();
        let imagenet = quick.experiment(&crate::experiment::recipe::TABLE2).unwrap();
        let (c, i) = (&cifar.train, &imagenet.train);
        let said = [
            format!("{} iterations of batch {}, depths 20 and 56", c.iterations, c.batch_size),
            format!("{} iterations of {} on 10 classes", i.iterations, i.batch_size),
        ];
        for s in said {
            assert!(help.contains(&s), "--quick's help does not say {s:?}: {help}");
        }
    }
}
