//! One runner for every experiment: resolve the runs, keep those `--only` names, say what will
//! happen (and that a quick preset is not a reproduction), then for each run: claim its folder,
//! skip it if finished, train or resume it, record it, and make its final evaluations.

use super::config::{Experiment, Preset, RunConfig};
use super::record::FinalRecord;
use super::store::{LoadedNet, RunDir, Store};
use crate::data::FolderOptions;
use crate::data::folder::{ImageFolder, locate_root};
use crate::data::loader::LoaderSettings;
use crate::data::{DataConfig, DataOptions, Dataset, Prepared, Shape, TensorOptions};
use crate::eval::{EvalOptions, EvalResult, evaluate_folder, reestimate_bn_from_folder};
use crate::train::progress::about;
use crate::train::{FolderFeed, TensorFeed, TrainData, TrainOptions, TrainStatus, train_run};
use anyhow::{Context, Result, ensure};
use std::sync::Arc;

/// Where an experiment reads and writes, and how it runs.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    pub store: Store,
    pub data: DataOptions,
    pub loader: LoaderSettings,
    pub train: TrainOptions,
    /// Only these runs (`resnet20`, `resnet34-B`, `resnet20/seed1`), in this order, if not empty.
    pub only: Vec<RunPick>,
    /// How long the unfinished runs take here, where it was estimated: each run's start says its
    /// time and the sweep's after it.
    pub estimate: Option<super::estimate::Estimate>,
}

/// What the runner did with a run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    /// The run had finished before; it was not trained.
    AlreadyDone(FinalRecord),
    Finished(FinalRecord),
    /// Stopped by `stop_after` at this iteration; resumable.
    Paused(u64),
    /// Another live process (this one) holds it: skipped, never trained or evaluated here.
    Busy(String),
}

/// A run and what became of it.
#[derive(Debug)]
pub struct Outcome {
    pub run: RunConfig,
    pub status: RunStatus,
    /// Its final evaluations (image folders), in the experiment's order.
    pub evals: Vec<EvalResult>,
}

/// Trains and evaluates every run of the experiment that is not done.
pub fn run_experiment(exp: &Experiment, o: &RunnerOptions) -> Result<Vec<Outcome>> {
    let mut source = Source::open(&exp.data, o)?;
    let runs = select(exp.resolve(source.shape(&exp.data)?)?, &o.only, &exp.name)?;
    let todo = runs.iter().filter(|r| !o.store.run(r).is_finished()).count();
    let speaks = o.train.is_rank0();
    if speaks {
        eprintln!(
            "{}: {} runs on {}{} ({} preset{}), {todo} to train, results in {}",
            exp.name,
            runs.len(),
            exp.data.dataset(),
            source.describe(),
            exp.preset,
            if exp.preset == Preset::Quick {
                ": NOT a reproduction, a quick check of the pipeline"
            } else {
                ""
            },
            o.store.root.join(exp.group().to_string()).display()
        );
    }
    if speaks {
        let bf16 = bf16_warning(&runs, o.train.device, crate::env::cpu_bf16());
        bf16.into_iter()
            .chain(data_parallel_notes(&runs, o.train.world(), o.train.device))
            .for_each(|n| eprintln!("{n}"));
    }
    let mut outcomes = Vec::new();
    for run in runs {
        if let Some(signal) = crate::interrupt::requested() {
            let at = format!("before {}", run.label());
            return Err(crate::interrupt::Interrupted { at, signal }.into());
        }
        let dir = o.store.run(&run);
        // Rank 0 (or the only process) claims and locks (held while the run trains and is
        // evaluated: another worker skips it meanwhile); the replicas follow its decisions.
        let claimed = if speaks {
            dir.claim(&run).with_context(|| format!("run {}", dir.path.display())).and_then(|_| dir.lock())
        } else {
            Ok(None)
        };
        let lock = crate::dist::all_ok(o.train.replicas.as_deref(), claimed)?;
        if !rank0_says(o, lock.is_some() || !speaks)? {
            let status = RunStatus::Busy(dir.lock_holder());
            log_status(&run, &status);
            outcomes.push(Outcome { run, status, evals: Vec::new() });
            continue;
        }
        if speaks
            && !dir.is_finished()
            && let Some(e) = &o.estimate
            && let Some(this) = e.of(&run.label())
        {
            let (this, after) = (about(this), about(e.after(&run.label())));
            eprintln!("{}: {this} for this run here, {after} for the runs listed after it", run.label());
        }
        let status =
            train_one(&run, &dir, &mut source, o).with_context(|| format!("run {}", dir.path.display()))?;
        if speaks {
            log_status(&run, &status);
        }
        let evals = match status {
            RunStatus::Paused(_) => Vec::new(),
            _ => source.final_evaluations(&run, &dir, o)?,
        };
        outcomes.push(Outcome { run, status, evals });
    }
    Ok(outcomes)
}

/// Whether every run of `outcomes` has finished and no worker is still busy with one: then the
/// experiment's summary can be written, by whichever worker gets here last.
pub fn all_done(outcomes: &[Outcome], store: &Store) -> Result<bool> {
    for o in outcomes {
        let dir = store.run(&o.run);
        if !dir.is_finished() || dir.is_busy()? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A note where runs would train in bf16 autocast on a CPU without bf16 instructions: there bf16
/// gains nothing over the paper's fp32 (its convolutions run in fp32 kernels where there is no
/// AVX-512, at about fp32's speed).
fn bf16_warning(runs: &[RunConfig], device: tch::Device, support: crate::env::CpuBf16) -> Option<String> {
    let bf16 = runs.iter().filter(|r| r.train.precision == crate::train::Precision::Bf16).count();
    (bf16 > 0 && device == tch::Device::Cpu && support == crate::env::CpuBf16::None).then(|| {
        format!(
            "NOTE: {bf16} of these runs train in bf16 autocast, for which this CPU has no instructions (no \
             AVX512-BF16, no AMX): the bf16 step measured 0.89x fp32's on such a CPU (ResNet-20, one thread, \
             its convolutions in fp32 kernels), so --precision fp32, the paper's, costs nothing more here; a \
             run begun in bf16 resumes in bf16 only."
        )
    })
}

/// What a data-parallel launch changes from the paper's setting, said at its start: a rank's share
/// of the batch below the paper's BN batch (its statistics are over fewer images), and replicas'
/// steps run uncaptured on a GPU. Small nets (CIFAR) usually train faster and closer to the paper
/// as one run per GPU (`JOBS=N`).
fn data_parallel_notes(runs: &[RunConfig], world: usize, device: tch::Device) -> Vec<String> {
    use crate::paper::recipe::{CIFAR_BN_BATCH, IMAGENET_BN_BATCH};
    let mut notes: Vec<String> = Vec::new();
    if world <= 1 {
        return notes;
    }
    for r in runs.iter().filter(|r| r.train.bn_batch.is_none()) {
        let paper = if r.data.tensors().is_some() { CIFAR_BN_BATCH } else { IMAGENET_BN_BATCH };
        let per_rank = r.train.batch_size / world;
        let note = format!(
            "NOTE: batch {} over {world} ranks is {per_rank} images per rank: BN statistics over {per_rank} \
             images where the paper's were over {paper} (for the CIFAR nets, JOBS=N trains a run per GPU as \
             the paper did)",
            r.train.batch_size
        );
        if per_rank < paper && !notes.contains(&note) {
            notes.push(note);
        }
    }
    if device.is_cuda() {
        notes.push(
            "NOTE: data-parallel replicas run their steps uncaptured (no CUDA graph): for small nets one \
             captured GPU per run (JOBS=N) may well be faster in total"
                .into(),
        );
    }
    notes
}

/// One item of `--only`: a network (every seed the experiment gives it) or one seed of it,
/// written as its run folder is named (`resnet20`, `resnet20/seed1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPick {
    pub net: String,
    pub seed: Option<u64>,
}

impl std::str::FromStr for RunPick {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (net, seed) = match s.split_once('/') {
            None => (s, None),
            Some((net, seed)) => {
                let k = seed.strip_prefix("seed").and_then(|k| k.parse().ok());
                let k = k.ok_or_else(|| format!("{s:?}: expected NET or NET/seedK, e.g. resnet20/seed1"))?;
                (net, Some(k))
            }
        };
        if net.is_empty() {
            return Err(format!("{s:?}: no network named"));
        }
        Ok(RunPick { net: net.into(), seed })
    }
}

impl std::fmt::Display for RunPick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seed {
            None => write!(f, "{}", self.net),
            Some(k) => write!(f, "{}/seed{k}", self.net),
        }
    }
}

/// The runs `--only` picks, in its order (the order they train in; each once); all of them, in
/// the experiment's order, if it picks none. A seed the experiment does not list is that
/// network's run with that seed. A name that is no network of the experiment is an error listing
/// those that are.
pub(crate) fn select(runs: Vec<RunConfig>, only: &[RunPick], experiment: &str) -> Result<Vec<RunConfig>> {
    if only.is_empty() {
        return Ok(runs);
    }
    let mut known: Vec<String> = runs.iter().map(|r| r.net.name()).collect();
    known.dedup();
    let mut picked: Vec<RunConfig> = Vec::new();
    for pick in only {
        let of_net: Vec<&RunConfig> = runs.iter().filter(|r| r.net.name() == pick.net).collect();
        ensure!(
            !of_net.is_empty(),
            "--only {pick}: not a network of experiment {experiment} ({})",
            known.join(", ")
        );
        let chosen: Vec<RunConfig> = match pick.seed {
            None => of_net.into_iter().cloned().collect(),
            Some(seed) => vec![RunConfig { seed, ..of_net[0].clone() }],
        };
        for run in chosen {
            if !picked.iter().any(|p| p.net == run.net && p.seed == run.seed) {
                picked.push(run);
            }
        }
    }
    Ok(picked)
}

/// `flag` as rank 0 has it, on every replica (alone: `flag`).
fn rank0_says(o: &RunnerOptions, flag: bool) -> Result<bool> {
    crate::dist::rank0_says(o.train.replicas.as_deref(), flag)
}

/// Trains the run (its folder claimed and locked) unless it has finished.
fn train_one(run: &RunConfig, dir: &RunDir, source: &mut Source, o: &RunnerOptions) -> Result<RunStatus> {
    let done = dir.final_record()?;
    if rank0_says(o, done.is_some())? {
        let done = done.with_context(|| {
            format!(
                "rank 0 finds {} finished but this rank does not: share runs/ between the nodes",
                dir.path.display()
            )
        })?;
        return Ok(RunStatus::AlreadyDone(done));
    }
    source.prepare(dir, o)?;
    let mut feed = source.feed(run, o)?;
    Ok(match train_run(run.job(), feed.as_mut(), &dir.files(), &o.train)? {
        TrainStatus::Paused(it) => RunStatus::Paused(it),
        TrainStatus::Finished(summary) => {
            let record = FinalRecord::new(run, &summary, o.train.device, o.train.world());
            if o.train.is_rank0() {
                dir.write_final(&record)?;
            }
            RunStatus::Finished(record)
        }
    })
}

fn log_status(run: &RunConfig, status: &RunStatus) {
    let err = |r: &FinalRecord| r.test_error.or(r.val_error).unwrap_or(f64::NAN);
    let what = |r: &FinalRecord| if r.test_error.is_some() { "test" } else { "validation (centre crop)" };
    match status {
        RunStatus::AlreadyDone(r) => {
            eprintln!("{}: finished before, {} error {:.2}%", run.label(), what(r), err(r))
        }
        RunStatus::Finished(r) => eprintln!(
            "{}: {} error {:.2}% after {} iterations ({:.0} s)",
            run.label(),
            what(r),
            err(r),
            r.iterations,
            r.seconds
        ),
        RunStatus::Paused(it) => eprintln!("{}: paused at iteration {it}", run.label()),
        RunStatus::Busy(who) => eprintln!("{}: {who} is training it; skipped", run.label()),
    }
}

/// Where an experiment's data comes from: tensors loaded once, when the first run needs them (a
/// small-image folder at the start: its files size the network), or an image folder scanned at
/// the start (its classes size the network).
enum Source {
    /// `dataset`: loaded, not yet prepared; `prepared`: with the class names.
    Tensors {
        config: DataConfig,
        opts: TensorOptions,
        dataset: Option<Box<Dataset>>,
        prepared: Option<(Prepared, Vec<String>)>,
    },
    Folder {
        opts: FolderOptions,
        train: Arc<ImageFolder>,
        val: Arc<ImageFolder>,
        root: std::path::PathBuf,
    },
}

impl Source {
    fn open(data: &DataConfig, o: &RunnerOptions) -> Result<Self> {
        Ok(match data {
            DataConfig::ImageNet(opts) => {
                let root = locate_root(&o.data.data_dir)?;
                let train = Arc::new(ImageFolder::scan(&root.join("train"), opts.subset)?);
                let val = Arc::new(ImageFolder::scan(&root.join("val"), opts.val_subset())?);
                val.check_same_classes(&train)?;
                Source::Folder { opts: opts.clone(), train, val, root }
            }
            tensors => {
                let opts = tensors.tensors().context("tensor data")?.clone();
                let dataset = match tensors.shape() {
                    Some(_) => None,
                    None => Some(Box::new(Dataset::load(tensors, &o.data)?)),
                };
                Source::Tensors { config: data.clone(), opts, dataset, prepared: None }
            }
        })
    }

    /// What the networks are sized from.
    fn shape(&self, data: &DataConfig) -> Result<Shape> {
        Ok(match self {
            Source::Tensors { dataset: Some(ds), .. } => ds.shape(),
            Source::Tensors { .. } => data.shape().context("a tensor dataset of known shape")?,
            Source::Folder { train, opts, .. } => {
                Shape { classes: train.classes.len(), channels: 3, size: i64::from(opts.transform.crop) }
            }
        })
    }

    fn describe(&self) -> String {
        match self {
            Source::Tensors { .. } => String::new(),
            Source::Folder { train, val, root, .. } => format!(
                " ({} classes, {} training and {} validation images from {})",
                train.classes.len(),
                train.len(),
                val.len(),
                root.display()
            ),
        }
    }

    /// Loads tensor data on first use; writes an image folder's class index into the run.
    fn prepare(&mut self, dir: &RunDir, o: &RunnerOptions) -> Result<()> {
        match self {
            Source::Tensors { config, opts, dataset, prepared } => {
                if prepared.is_none() {
                    let ds = match dataset.take() {
                        Some(ds) => *ds,
                        None => Dataset::load(config, &o.data)?,
                    };
                    if o.train.is_rank0() {
                        eprintln!(
                            "{}: {} training and {} test images from {}",
                            ds.name,
                            ds.train.len(),
                            ds.test.len(),
                            ds.location.display()
                        );
                    }
                    *prepared = Some((Prepared::new(&ds, opts.val_split, o.train.device)?, ds.classes));
                }
                if o.train.is_rank0() {
                    let (p, classes) = prepared.as_ref().context("data prepared")?;
                    dir.write_input(classes, &p.mean)?;
                }
                Ok(())
            }
            Source::Folder { train, .. } if o.train.is_rank0() => {
                train.write_class_index(&dir.class_index_csv())
            }
            Source::Folder { .. } => Ok(()),
        }
    }

    fn feed(&self, run: &RunConfig, o: &RunnerOptions) -> Result<Box<dyn TrainData + '_>> {
        let (b, seed, device) = (run.train.batch_size, run.seed, o.train.device);
        Ok(match self {
            Source::Tensors { prepared, opts, .. } => {
                let (data, _) = prepared.as_ref().context("data not loaded")?;
                let feed = TensorFeed::new(data, seed, b, opts);
                match &o.train.replicas {
                    Some(dp) => Box::new(feed.for_replica(dp.clone())?),
                    None => Box::new(feed),
                }
            }
            Source::Folder { opts, train, val, .. } => {
                let feed = FolderFeed::new((train.clone(), val.clone()), opts, b, seed, &o.loader, device);
                match &o.train.replicas {
                    Some(dp) => Box::new(feed.for_replica(dp.clone())?),
                    None => Box::new(feed),
                }
            }
        })
    }

    /// The image folder's final evaluations of a finished run, each made once (as replicas, each
    /// over its share of the images, rank 0 writing the results).
    fn final_evaluations(&self, run: &RunConfig, dir: &RunDir, o: &RunnerOptions) -> Result<Vec<EvalResult>> {
        let Source::Folder { opts, val, .. } = self else { return Ok(Vec::new()) };
        let mut todo = Vec::new();
        for p in &opts.final_protocols {
            // Also a barrier: rank 0 has written the final weights before it gets here.
            if !rank0_says(o, matches!(dir.evaluation(*p), Ok(Some(_))))? {
                todo.push(*p);
            }
        }
        if !todo.is_empty() {
            let loaded = dir.load_net(run, o.train.device)?;
            let reestimated = self.reestimate_bn(run, &loaded, o)?;
            for p in todo {
                let mut eo =
                    EvalOptions::for_folder(opts, p, o.loader.threads, o.train.device, loaded.format);
                eo.progress = o.train.is_rank0();
                eo.replicas = o.train.replicas.clone();
                let mut r = evaluate_folder(&loaded.net, val, None, &eo)?;
                r.bn_reestimated_over = reestimated;
                if o.train.is_rank0() {
                    eprintln!(
                        "{}: {p} top-1 {:.2}%, top-5 {:.2}% on {} images ({:.0} s)",
                        run.label(),
                        r.top1_error,
                        r.top5_error,
                        r.images,
                        r.seconds
                    );
                    dir.write_evaluation(&r)?;
                }
            }
        }
        self.recorded_evaluations(dir, o)
    }

    /// Re-estimates the BN statistics of `loaded` over training batches when the experiment asks
    /// for it: every replica over the same images, then rank 0's statistics everywhere (bit for
    /// bit). Returns the images they are over.
    fn reestimate_bn(&self, run: &RunConfig, loaded: &LoadedNet, o: &RunnerOptions) -> Result<Option<usize>> {
        let Source::Folder { opts, train, .. } = self else { return Ok(None) };
        let Some(k) = opts.bn_reestimate_images else { return Ok(None) };
        let lo = o.loader.options(run.train.batch_size, run.seed);
        let net = (&loaded.net, &loaded.vs, loaded.format);
        let n = reestimate_bn_from_folder(net, train.clone(), &opts.transform, lo, run.train.iterations, k)?;
        if let Some(dp) = &o.train.replicas {
            dp.broadcast_vars(&loaded.vs)?;
        }
        if o.train.is_rank0() {
            eprintln!("{}: BN statistics re-estimated over {n} training images", run.net.name());
        }
        Ok(Some(n))
    }

    /// The final evaluations recorded in the run's folder, in the experiment's order (with
    /// replicas, once rank 0 has written them).
    fn recorded_evaluations(&self, dir: &RunDir, o: &RunnerOptions) -> Result<Vec<EvalResult>> {
        let Source::Folder { opts, .. } = self else { return Ok(Vec::new()) };
        rank0_says(o, true)?;
        let found: Result<Vec<Option<EvalResult>>> =
            opts.final_protocols.iter().map(|p| dir.evaluation(*p)).collect();
        found?
            .into_iter()
            .zip(&opts.final_protocols)
            .map(|(e, p)| e.with_context(|| format!("no {p} evaluation")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{RunPick, bf16_warning, data_parallel_notes, select};
    use crate::data::Shape;
    use crate::experiment::Experiment;

    fn runs() -> Vec<crate::experiment::RunConfig> {
        let text = "name = \"t\"\nseeds = [0]\n[data]\ndataset = \"fashion-mnist\"\n[train]\nbatch_size = 16\nlr = 0.1\nmilestones = [5]\niterations = 10\n\
                    log_every = 5\neval_every = 5\ncheckpoint_every = 5\n\
                    [[runs]]\ndepth = 20\nresidual = false\n[[runs]]\ndepth = 32\nresidual = false\n\
                    [[runs]]\ndepth = 20\nresidual = true\n[[runs]]\ndepth = 110\nresidual = true\nseeds = [0, 1, 2]\n";
        let exp: Experiment = toml::from_str(text).unwrap();
        exp.resolve(Shape { classes: 10, channels: 1, size: 28 }).unwrap()
    }

    fn picked(only: &str) -> Vec<String> {
        let only: Vec<RunPick> = only.split(',').map(|p| p.parse().unwrap()).collect();
        select(runs(), &only, "t")
            .unwrap()
            .iter()
            .map(|r| format!("{}/seed{}", r.net.name(), r.seed))
            .collect()
    }

    #[test]
    fn only_trains_in_its_own_order_each_run_once_and_a_seed_it_names() {
        assert_eq!(picked("resnet20,plain32"), ["resnet20/seed0", "plain32/seed0"]);
        assert_eq!(picked("resnet110"), ["resnet110/seed0", "resnet110/seed1", "resnet110/seed2"]);
        assert_eq!(
            picked("resnet110/seed2,plain20/seed1,resnet110"),
            ["resnet110/seed2", "plain20/seed1", "resnet110/seed0", "resnet110/seed1"]
        );
        assert_eq!(picked("plain20,plain20/seed0"), ["plain20/seed0"]);
        // Everything else of the run is the network's: only the seed differs.
        let one: Vec<RunPick> = vec!["plain20/seed4".parse().unwrap()];
        let run = &select(runs(), &one, "t").unwrap()[0];
        assert_eq!(run, &crate::experiment::RunConfig { seed: 4, ..runs()[0].clone() });
        assert_eq!(select(runs(), &[], "t").unwrap(), runs());
    }

    #[test]
    fn bf16_on_a_cpu_without_bf16_instructions_is_noted_and_nowhere_else() {
        use crate::env::CpuBf16;
        use tch::Device;
        let mut runs = runs();
        assert_eq!(bf16_warning(&runs, Device::Cpu, CpuBf16::None), None, "fp32 runs");
        runs[1].train.precision = crate::train::Precision::Bf16;
        let w = bf16_warning(&runs, Device::Cpu, CpuBf16::None).unwrap();
        assert!(
            w.starts_with(
                "NOTE: 1 of these runs train in bf16 autocast, for which this CPU has no instructions"
            ),
            "{w}"
        );
        assert_eq!(bf16_warning(&runs, Device::Cpu, CpuBf16::Avx512Bf16), None);
        assert_eq!(bf16_warning(&runs, Device::Cuda(0), CpuBf16::None), None);
    }

    #[test]
    fn a_data_parallel_launch_says_where_it_leaves_the_papers_setting() {
        use tch::Device;
        let runs = runs(); // batch 16, CIFAR-style data: the paper's BN batch is 64
        assert!(data_parallel_notes(&runs, 1, Device::Cuda(0)).is_empty(), "one process");
        let notes = data_parallel_notes(&runs, 2, Device::Cpu);
        assert_eq!(notes.len(), 1, "said once for every run of the batch: {notes:?}");
        assert!(notes[0].starts_with("NOTE: batch 16 over 2 ranks is 8 images per rank"), "{notes:?}");
        let mut grouped = runs.clone();
        grouped.iter_mut().for_each(|r| r.train.bn_batch = Some(8));
        assert!(data_parallel_notes(&grouped, 2, Device::Cpu).is_empty(), "bn_batch chosen on purpose");
        let notes = data_parallel_notes(&grouped, 2, Device::Cuda(0));
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("uncaptured (no CUDA graph)"), "{notes:?}");
    }

    #[test]
    fn a_pick_that_names_no_run_is_an_error_that_says_what_is_there() {
        let err = select(runs(), &["plain56".parse().unwrap()], "t").unwrap_err().to_string();
        assert_eq!(
            err,
            "--only plain56: not a network of experiment t (plain20, plain32, resnet20, resnet110)"
        );
        for bad in ["resnet20/1", "resnet20/seedx", "/seed1"] {
            assert!(bad.parse::<RunPick>().is_err(), "{bad}");
        }
        assert_eq!("resnet20/seed1".parse::<RunPick>().unwrap().to_string(), "resnet20/seed1");
    }
}
