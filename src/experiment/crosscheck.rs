//! Does it train like PyTorch? The same CIFAR-style nets trained with the same recipe here and in
//! plain PyTorch (bench/pytorch_crosscheck.py), several seeds a side, for each He-normal mode;
//! then, per network and checkpoint, both sides' mean ± std of the training error (the last
//! logging window) and the test error, their difference and its 95% interval (Welch).

use super::config::Experiment;
use super::runner::{RunnerOptions, run_experiment};
use super::store::{CrosscheckDirs, Swap};
use crate::data::augment::EpochPlan;
use crate::data::{DataConfig, Dataset};
use crate::models::HeInit;
use crate::shim::MemoryFormat;
use crate::stats::{MeanStd, mean_std, welch_95};
use crate::train::Trainer;
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Where the cross-check runs, and with what.
#[derive(Debug, Clone)]
pub struct CrosscheckOptions {
    /// Our side's options; its store is replaced by one per init under `dirs`.
    pub runner: RunnerOptions,
    pub dirs: CrosscheckDirs,
    pub inits: Vec<HeInit>,
    /// Python with torch 2.11, and bench/pytorch_crosscheck.py.
    pub python: String,
    pub script: std::path::PathBuf,
}

/// Which side of the cross-check trained a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    #[serde(rename = "ours")]
    Ours,
    #[serde(rename = "pytorch")]
    PyTorch,
}

impl Side {
    /// How the figures and summaries name it.
    pub fn label(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::PyTorch => "PyTorch",
        }
    }
}

/// Which error of a logged point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measured {
    /// Of the logging window's training batches.
    Train,
    /// Of the test set, at the checkpoints.
    Test,
}

impl Measured {
    fn of(self, r: &CurveRow) -> Option<f64> {
        match self {
            Measured::Train => Some(r.train_error),
            Measured::Test => r.test_error,
        }
    }
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Measured::Train => "train",
            Measured::Test => "test",
        })
    }
}

/// One logged point of one run: a row of `curves.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveRow {
    /// `ours` or `pytorch`.
    pub framework: Side,
    pub init: HeInit,
    pub net: String,
    pub seed: u64,
    pub iteration: u64,
    /// Training error (%) of the iterations since the previous row.
    pub train_error: f64,
    /// Test error (%), at the checkpoints.
    pub test_error: Option<f64>,
}

/// The networks' shape on Fashion-MNIST, the cross-check's data.
const FASHION_MNIST: crate::data::Shape = crate::data::Shape { classes: 10, channels: 1, size: 28 };

/// Trains what is missing on both sides, for every init, and gathers their curves into
/// `curves.csv`. The two sides train at once, each on half the CPU threads (the runs are
/// independent; on a 2-core CPU this is about as fast as one side after the other).
pub fn run_crosscheck(exp: &Experiment, o: &CrosscheckOptions) -> Result<Vec<CurveRow>> {
    ensure!(
        matches!(exp.data, DataConfig::FashionMnist(_)),
        "the cross-check's PyTorch side reads Fashion-MNIST's IDX files; {} is {}",
        exp.name,
        exp.data.dataset()
    );
    let ds = Dataset::load(&exp.data, &o.runner.data)?;
    let (location, train_images) = (ds.location, ds.train.len());
    let threads = tch::get_num_threads().max(2);
    tch::set_num_threads(threads / 2);
    let mut rows = Vec::new();
    for &init in &o.inits {
        let exp = Experiment { init, ..exp.clone() };
        if o.dirs.swap.any() {
            export_draws(&exp, &o.dirs.draws(init), train_images)?;
        }
        let runner = RunnerOptions { store: o.dirs.ours(init), ..o.runner.clone() };
        let (mut pytorch, args) = start_pytorch(&exp, o, &location, threads - threads / 2)?;
        let ours = run_experiment(&exp, &runner);
        if ours.is_err() {
            let _ = pytorch.kill(); // its finished runs are kept; a rerun skips them
        }
        let status = pytorch.wait()?;
        ours?;
        ensure!(status.success(), "{} {} failed ({status})", o.script.display(), args.join(" "));
        rows.extend(gather(&exp, o, init)?);
    }
    tch::set_num_threads(threads);
    std::fs::create_dir_all(&o.dirs.root)?;
    crate::fsutil::write_csv(&o.dirs.curves_csv(), &rows)?;
    Ok(rows)
}

/// Starts bench/pytorch_crosscheck.py with `pytorch_args`; returns the process and its arguments.
fn start_pytorch(
    exp: &Experiment,
    o: &CrosscheckOptions,
    data: &Path,
    threads: i32,
) -> Result<(std::process::Child, Vec<String>)> {
    let args = pytorch_args(exp, o, data, threads)?;
    eprintln!("PyTorch side ({}): {} {}", exp.init, o.script.display(), args.join(" "));
    let child =
        std::process::Command::new(&o.python).arg(&o.script).args(&args).spawn().with_context(|| {
            format!("running {} (Python with torch 2.11; `make crosscheck` provides it)", o.python)
        })?;
    Ok((child, args))
}

/// The PyTorch side's arguments: the experiment's nets (those `--only` names), seeds and recipe, on
/// `threads` CPU threads and on our side's device (a GPU run of ours is compared with a GPU run of
/// PyTorch's, and neither waits hours for the other).
pub fn pytorch_args(
    exp: &Experiment,
    o: &CrosscheckOptions,
    data: &Path,
    threads: i32,
) -> Result<Vec<String>> {
    let t = &exp.train;
    ensure!(
        t.milestones.is_empty() && t.warmup.is_none(),
        "the cross-check's recipe is a constant learning rate"
    );
    let DataConfig::FashionMnist(d) = &exp.data else { bail!("the cross-check runs on Fashion-MNIST") };
    ensure!(
        d.augment && d.pad == 4 && d.val_split == 0,
        "the PyTorch side implements pad-4 crops and flips on the whole training set only"
    );
    if let Some(pick) = o.runner.only.iter().find(|p| p.seed.is_some()) {
        bail!("--only {pick}: the cross-check takes networks (its seeds are --seeds)");
    }
    let runs = exp.resolve(FASHION_MNIST)?;
    let mut nets: Vec<String> = runs.iter().map(|r| r.net.name()).collect();
    nets.dedup();
    nets.retain(|n| o.runner.only.is_empty() || o.runner.only.iter().any(|p| p.net == *n));
    let seeds: Vec<String> = exp.seeds.iter().map(u64::to_string).collect();
    let eval_at: Vec<String> = checkpoints(exp).iter().map(u64::to_string).collect();
    let mut args = vec![
        format!("--data-dir={}", data.display()),
        format!("--nets={}", nets.join(",")),
        format!("--seeds={}", seeds.join(",")),
        format!("--iterations={}", t.iterations),
        format!("--batch={}", t.batch_size),
        format!("--lr={}", t.lr),
        format!("--log-every={}", t.log_every),
        format!("--eval-at={}", eval_at.join(",")),
        format!("--init={}", exp.init),
        format!("--test-images={}", d.test_subset.unwrap_or(0)),
        format!("--threads={threads}"),
        format!("--device={}", torch_device(o.runner.train.device)),
        format!("--out={}", o.dirs.pytorch(exp.init).display()),
    ];
    if o.dirs.swap.any() {
        args.push(format!("--draws={}", o.dirs.draws(exp.init).display()));
        args.push(format!("--swap={}", o.dirs.swap.arg()));
    }
    Ok(args)
}

/// `device` as PyTorch spells it (`cpu`, `cuda:1`).
fn torch_device(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
    }
}

/// Writes our side's random draws for every run of `exp` that has none in `dir` yet, under
/// `<net>/seed<k>/`: `init.safetensors`, the variables our trainer starts from (our names), and
/// `plan.safetensors`, each epoch's `order.<e>`, `oy.<e>`, `ox.<e>` and `flip.<e>` (u8) of a
/// training set of `train_images`, exactly what our runs draw.
pub fn export_draws(exp: &Experiment, dir: &Path, train_images: usize) -> Result<()> {
    let DataConfig::FashionMnist(d) = &exp.data else { bail!("the cross-check runs on Fashion-MNIST") };
    let t = &exp.train;
    let epochs = t.iterations.div_ceil((train_images / t.batch_size) as u64);
    for run in exp.resolve(FASHION_MNIST)? {
        let out = dir.join(run.net.name()).join(format!("seed{}", run.seed));
        if out.join("plan.safetensors").is_file() {
            continue;
        }
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let tr = Trainer::with_format(&run.net, t.sgd(), run.seed, Device::Cpu, MemoryFormat::Contiguous)?;
        let vars = tr.vs.variables().into_iter().map(|(n, v)| (n, v.contiguous().copy())).collect();
        write_safetensors(&out.join("init.safetensors"), vars)?;
        let mut plan = Vec::new();
        for e in 0..epochs {
            let p = EpochPlan::new(run.seed, e, train_images, t.batch_size, d.pad, d.augment, Device::Cpu);
            plan.extend([
                (format!("order.{e}"), p.order),
                (format!("oy.{e}"), p.offset_y),
                (format!("ox.{e}"), p.offset_x),
                (format!("flip.{e}"), p.flip.to_kind(Kind::Uint8)),
            ]);
        }
        write_safetensors(&out.join("plan.safetensors"), plan)?;
    }
    Ok(())
}

fn write_safetensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<()> {
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    crate::fsutil::write_with(path, |tmp| Tensor::write_safetensors(&named, tmp).map_err(anyhow::Error::from))
}

/// The iterations with a test error: every `eval_every`, and the last.
pub fn checkpoints(exp: &Experiment) -> Vec<u64> {
    let t = &exp.train;
    let mut at: Vec<u64> = (1..=t.iterations / t.eval_every).map(|k| k * t.eval_every).collect();
    if at.last() != Some(&t.iterations) {
        at.push(t.iterations);
    }
    at
}

/// Both sides' logged points for one init.
fn gather(exp: &Experiment, o: &CrosscheckOptions, init: HeInit) -> Result<Vec<CurveRow>> {
    let mut rows = Vec::new();
    for run in o.dirs.ours(init).runs()? {
        for m in run.dir.metrics()? {
            rows.push(CurveRow {
                framework: Side::Ours,
                init,
                net: run.config.net.name(),
                seed: run.config.seed,
                iteration: m.iteration,
                train_error: m.train_error,
                test_error: m.test_error,
            });
        }
    }
    let ours = rows.len();
    for (net, seed, path) in o.dirs.pytorch_runs(init)? {
        let mut r = csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
        for row in r.deserialize::<(u64, f64, Option<f64>)>() {
            let (iteration, train_error, test_error) =
                row.with_context(|| format!("parsing {}", path.display()))?;
            rows.push(CurveRow {
                framework: Side::PyTorch,
                init,
                net: net.clone(),
                seed,
                iteration,
                train_error,
                test_error,
            });
        }
    }
    ensure!(ours > 0 && rows.len() > ours, "{}: no runs on one of the two sides", exp.name);
    Ok(rows)
}

/// Mean, sample std and number of values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Spread {
    fn of(xs: &[f64]) -> Self {
        let MeanStd { mean, std } = mean_std(xs);
        Spread { mean, std, n: xs.len() }
    }
}

/// A side's mean over seeds at one iteration: a point of the cross-check's figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanPoint {
    pub x: f64,
    pub mean: f64,
    pub std: f64,
}

/// One side's curve of a network and init: the mean and std over seeds of `m` at each iteration
/// that has it.
pub fn mean_curve(rows: &[CurveRow], (net, init, side): (&str, HeInit, Side), m: Measured) -> Vec<MeanPoint> {
    let sel: Vec<&CurveRow> = rows
        .iter()
        .filter(|r| r.net == net && r.init == init && r.framework == side && m.of(r).is_some())
        .collect();
    let mut its: Vec<u64> = sel.iter().map(|r| r.iteration).collect();
    its.sort();
    its.dedup();
    its.iter()
        .map(|&it| {
            let v: Vec<f64> = sel.iter().filter(|r| r.iteration == it).filter_map(|r| m.of(r)).collect();
            let MeanStd { mean, std } = mean_std(&v);
            MeanPoint { x: it as f64, mean, std }
        })
        .collect()
}

/// One network, init, checkpoint and measure, both sides: a row of the cross-check's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub init: HeInit,
    pub net: String,
    pub iteration: u64,
    /// The last logging window's training error, or the test error.
    pub measure: Measured,
    pub ours: Spread,
    pub pytorch: Spread,
    /// ours - PyTorch and its 95% interval (Welch), where both sides have two seeds or more.
    pub diff: Option<crate::stats::Interval>,
}

/// The comparisons of `curves` at the checkpoints (iterations with a test error).
pub fn compare(curves: &[CurveRow]) -> Vec<Comparison> {
    let mut keys: Vec<(HeInit, String, u64)> = curves
        .iter()
        .filter(|r| r.test_error.is_some())
        .map(|r| (r.init, r.net.clone(), r.iteration))
        .collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for (init, net, iteration) in keys {
        let at = |side: Side, m: Measured| -> Vec<f64> {
            let sel = curves.iter().filter(|r| r.framework == side && r.init == init && r.net == net);
            sel.filter(|r| r.iteration == iteration).filter_map(|r| m.of(r)).collect()
        };
        for measure in [Measured::Train, Measured::Test] {
            let (a, b) = (at(Side::Ours, measure), at(Side::PyTorch, measure));
            out.push(Comparison {
                init,
                net: net.clone(),
                iteration,
                measure,
                ours: Spread::of(&a),
                pytorch: Spread::of(&b),
                diff: welch_95(&a, &b),
            });
        }
    }
    out
}

/// The cross-check's `summary.md`.
pub fn markdown(rows: &[Comparison], exp: &Experiment, swap: Swap) -> String {
    let t = &exp.train;
    let mut md = format!(
        "# Cross-check: our training against plain PyTorch\n\n{} on Fashion-MNIST: batch {}, SGD momentum {}, \
         weight decay {}, lr {} constant, pad-4 crop + flip, per-pixel mean, {} iterations, seeds {:?} a side. \
         `train` is the training error (%) of the {} iterations before the checkpoint, `test` the test error (%) \
         there; mean ± std over seeds, the difference ours − PyTorch and its 95% interval (Welch). `yes`: the \
         interval holds 0, the two sides agree within seed noise. The rows are not independent tests: a \
         plain net and the ResNet of the same depth and seed start from the same weights and see the same \
         batches, and a run's checkpoints share its start, so one unlucky set of seeds shows everywhere; \
         add seeds (`--seeds`) before believing a gap, and `--swap` says which draw carries it.\n",
        exp.name, t.batch_size, t.momentum, t.weight_decay, t.lr, t.iterations, exp.seeds, t.log_every
    );
    let swapped = match (swap.init, swap.data) {
        (false, false) => None,
        (true, false) => Some("our initial weights"),
        (false, true) => Some("our data stream (each epoch's order, crops and flips)"),
        (true, true) => Some("our initial weights and our data stream"),
    };
    if let Some(what) = swapped {
        let _ = write!(
            md,
            "\n**The PyTorch side trained with {what}** instead of its own draws (`--swap {}`): what differs \
             from the plain cross-check comes from the swapped draws.\n",
            swap.arg()
        );
    }
    for init in rows.chunk_by(|a, b| a.init == b.init) {
        let _ = write!(
            md,
            "\n## init = \"{}\"\n\n| net | iteration | error | ours | PyTorch | ours − PyTorch | 95% interval | within noise |\n\
             |---|---:|---|---:|---:|---:|---:|---|\n",
            init[0].init
        );
        for r in init {
            let side = |s: Spread| format!("{:.2} ± {:.2} (n={})", s.mean, s.std, s.n);
            let (diff, interval, within) = match r.diff {
                Some(i) => (
                    format!("{:+.2}", i.diff),
                    format!("[{:+.2}, {:+.2}]", i.lo, i.hi),
                    if i.lo <= 0.0 && 0.0 <= i.hi { "yes" } else { "**no**" },
                ),
                None => ("-".into(), "-".into(), "-"),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {diff} | {interval} | {within} |",
                r.net,
                r.iteration,
                r.measure,
                side(r.ours),
                side(r.pytorch)
            );
        }
    }
    md
}
