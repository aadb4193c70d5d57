//! The trainer: iteration-based SGD with a step schedule (and the paper's warm-up or a plateau
//! rule), metrics rows, checkpoints and resume; the same loop for CIFAR and ImageNet, which differ
//! only in where batches and evaluations come from ([`TrainData`]). On the CPU a resumed run ends
//! bit-identical to an uninterrupted one.

use crate::checkpoint::{self, TrainState};
use crate::config::{Preset, RunConfig, TrainConfig};
use crate::data::Prepared;
use crate::data::augment::EpochPlan;
use crate::env::{TorchInfo, device_name};
use crate::metrics::{FinalRecord, MetricsRow, MetricsWriter};
use crate::models::{NetSpec, ResNet};
use crate::optim::Sgd;
use crate::schedule::{PlateauState, WarmupState};
use crate::shim::{MemoryFormat, contiguous, set_memory_format};
use anyhow::{Context, Result, bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Reduction, Tensor, nn, nn::ModuleT};

/// Where and how a run trains.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub device: Device,
    /// Stop after this many iterations in this call (the run stays resumable); for tests and for
    /// splitting a long run. `None`: train to the end.
    pub stop_after: Option<u64>,
    /// Show a progress bar (on a terminal) rather than log lines.
    pub progress_bar: bool,
}

impl TrainOptions {
    pub fn new(device: Device) -> Self {
        TrainOptions { device, stop_after: None, progress_bar: std::io::stderr().is_terminal() }
    }
}

/// What a call to [`train_run`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    /// The run had finished before; nothing was done.
    AlreadyDone(FinalRecord),
    Finished(FinalRecord),
    /// Stopped by `stop_after` at this iteration; resumable.
    Paused(u64),
}

/// A run's configuration as the trainer sees it; written as `config.toml` in the run's folder.
pub trait RunDescription: Serialize + DeserializeOwned + PartialEq + Clone {
    fn seed(&self) -> u64;
    fn train(&self) -> &TrainConfig;
    fn net(&self) -> NetSpec;
    fn dataset(&self) -> String;
    fn preset(&self) -> Preset;
}

impl RunDescription for RunConfig {
    fn seed(&self) -> u64 {
        self.seed
    }
    fn train(&self) -> &TrainConfig {
        &self.train
    }
    fn net(&self) -> NetSpec {
        NetSpec::Cifar(self.net.clone())
    }
    fn dataset(&self) -> String {
        self.dataset.to_string()
    }
    fn preset(&self) -> Preset {
        self.preset
    }
}

/// Errors (%) measured during training; absent fields were not measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    pub val_error: Option<f64>,
    pub val_top5_error: Option<f64>,
    pub test_error: Option<f64>,
    /// Images the test (or, without a test set, validation) error is over.
    pub images: usize,
}

/// Where a run's batches and evaluations come from.
pub trait TrainData {
    /// Training images (an epoch).
    fn train_len(&self) -> usize;
    /// Called once before the first batch, with the iteration training starts (or resumes) at.
    fn start(&mut self, iteration: u64) -> Result<()>;
    /// The batch of update `iteration` (0-based), on the training device.
    fn batch(&mut self, iteration: u64) -> Result<(Tensor, Tensor)>;
    /// Evaluates `net` (in eval mode) as the run measures progress.
    fn evaluate(&mut self, net: &ResNet, format: MemoryFormat) -> Result<Evaluation>;
    /// Undecodable images skipped so far.
    fn skipped(&self) -> u64 {
        0
    }
}

/// Error (%) of `net` in eval mode over `(x, y)`, in batches.
pub fn evaluate(net: &ResNet, x: &Tensor, y: &Tensor, batch: usize, format: MemoryFormat) -> Result<f64> {
    let _guard = tch::no_grad_guard();
    let n = y.size()[0];
    let mut wrong = Tensor::zeros([], (Kind::Int64, y.device()));
    let mut start = 0;
    while start < n {
        let len = (batch as i64).min(n - start);
        let xb = contiguous(&x.narrow(0, start, len), format)?;
        let pred = net.forward_t(&xb, false).argmax(1, false);
        wrong += pred.ne_tensor(&y.narrow(0, start, len)).sum(Kind::Int64);
        start += len;
    }
    Ok(100.0 * wrong.int64_value(&[]) as f64 / n as f64)
}

/// CIFAR-sized data resident on the device, batches drawn by [`EpochPlan`].
pub struct CifarData<'a> {
    pub data: &'a Prepared,
    seed: u64,
    batch_size: usize,
    pad: i64,
    augment: bool,
    test_images: i64,
    eval_batch: usize,
    plan: Option<EpochPlan>,
}

impl<'a> CifarData<'a> {
    pub fn new(data: &'a Prepared, seed: u64, train: &TrainConfig) -> Self {
        let n_test = data.test_y.size()[0];
        CifarData {
            data,
            seed,
            batch_size: train.batch_size,
            pad: train.pad,
            augment: train.augment,
            test_images: train.test_subset.map_or(n_test, |k| (k as i64).min(n_test)),
            eval_batch: train.eval_batch_size,
            plan: None,
        }
    }
}

impl TrainData for CifarData<'_> {
    fn train_len(&self) -> usize {
        self.data.train_len()
    }

    fn start(&mut self, _iteration: u64) -> Result<()> {
        let n = self.train_len();
        ensure!(self.batch_size <= n, "batch_size {} is larger than the training set ({n})", self.batch_size);
        Ok(())
    }

    fn batch(&mut self, iteration: u64) -> Result<(Tensor, Tensor)> {
        let n = self.train_len();
        let per_epoch = (n / self.batch_size) as u64;
        let epoch = iteration / per_epoch;
        if self.plan.as_ref().is_none_or(|p| p.epoch != epoch) {
            let dev = self.data.train_x.device();
            self.plan =
                Some(EpochPlan::new(self.seed, epoch, n, self.batch_size, self.pad, self.augment, dev));
        }
        let k = (iteration % per_epoch) as usize;
        Ok(self.plan.as_ref().unwrap().batch(k, &self.data.train_x, &self.data.train_y, self.pad))
    }

    fn evaluate(&mut self, net: &ResNet, format: MemoryFormat) -> Result<Evaluation> {
        let d = self.data;
        let k = self.test_images;
        let test =
            evaluate(net, &d.test_x.narrow(0, 0, k), &d.test_y.narrow(0, 0, k), self.eval_batch, format)?;
        let val = match &d.val {
            Some((vx, vy)) => Some(evaluate(net, vx, vy, self.eval_batch, format)?),
            None => None,
        };
        Ok(Evaluation { val_error: val, val_top5_error: None, test_error: Some(test), images: k as usize })
    }
}

/// A network and its optimizer, one SGD step at a time: [`train_run`] adds the schedule, metrics
/// and checkpoints around it; the benchmarks time it alone.
pub struct Trainer {
    pub vs: nn::VarStore,
    pub net: ResNet,
    pub opt: Sgd,
    pub format: MemoryFormat,
}

impl Trainer {
    /// Builds `net` (initialised from `seed`) in the configured layout on `device`.
    pub fn new(net: &NetSpec, train: &TrainConfig, seed: u64, device: Device) -> Result<Self> {
        let format = train.layout.resolve(device);
        if device.is_cuda() {
            // Fixed shapes: let cuDNN pick its fastest kernels (as akamaster's and torchvision's
            // scripts do). CPU runs are unaffected and stay bit-reproducible.
            tch::Cuda::cudnn_set_benchmark(true);
        }
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let net = net.build(&vs.root())?;
        set_memory_format(&vs, format)?;
        let opt = Sgd::new(&vs, train.momentum, train.weight_decay);
        Ok(Trainer { vs, net, opt, format })
    }

    /// One update with rate `lr` on the batch `(x, y)`. Returns the batch's loss and its number of
    /// misclassified images, left on the device.
    pub fn step(&mut self, x: &Tensor, y: &Tensor, lr: f64) -> Result<(Tensor, Tensor)> {
        let x = contiguous(x, self.format)?;
        let logits = self.net.forward_t(&x, true);
        let loss = logits.cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0);
        self.opt.zero_grad()?;
        loss.backward();
        self.opt.step(lr)?;
        let wrong = tch::no_grad(|| logits.argmax(1, false).ne_tensor(y).sum(Kind::Int64));
        Ok((loss.detach(), wrong))
    }
}

/// Writes `config.toml` for a new run, or checks that an existing run folder holds this run.
fn check_or_write_config<R: RunDescription>(cfg: &R, dir: &Path) -> Result<()> {
    let path = dir.join("config.toml");
    let ours = toml::to_string(cfg)?;
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let theirs: Option<R> = toml::from_str(&text).ok();
        if theirs.as_ref() != Some(cfg) {
            bail!(
                "{} holds a run with another configuration than this one ({}); delete that folder to start \
                 afresh, or pass --out to write elsewhere",
                dir.display(),
                describe_difference(&text, &ours)
            );
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::fsutil::write_atomic(&path, ours.as_bytes())
}

fn describe_difference(theirs: &str, ours: &str) -> String {
    let diffs: Vec<String> = theirs
        .lines()
        .zip(ours.lines())
        .filter(|(x, y)| x != y)
        .map(|(x, y)| format!("`{x}` there, `{y}` here"))
        .collect();
    if diffs.is_empty() { "different fields".into() } else { diffs.join("; ") }
}

struct Window {
    loss: Tensor,
    wrong: Tensor,
    batches: u64,
    images: u64,
}

impl Window {
    fn new(device: Device) -> Self {
        Window {
            loss: Tensor::zeros([], (Kind::Double, device)),
            wrong: Tensor::zeros([], (Kind::Int64, device)),
            batches: 0,
            images: 0,
        }
    }

    fn add(&mut self, loss: &Tensor, wrong: &Tensor, images: u64) {
        tch::no_grad(|| {
            self.loss += loss.to_kind(Kind::Double);
            self.wrong += wrong;
        });
        self.batches += 1;
        self.images += images;
    }

    /// (mean loss, error %); reading them waits for the device.
    fn read(&self) -> (f64, f64) {
        let loss = self.loss.double_value(&[]) / self.batches.max(1) as f64;
        let err = 100.0 * self.wrong.int64_value(&[]) as f64 / self.images.max(1) as f64;
        (loss, err)
    }
}

/// Trains (or resumes, or skips) one run in `dir`, as `cfg` says, on `data`.
pub fn train_run<R: RunDescription>(
    cfg: &R,
    data: &mut dyn TrainData,
    dir: &Path,
    opts: &TrainOptions,
) -> Result<RunStatus> {
    let t = cfg.train();
    t.validate()?;
    let final_path = dir.join("final.json");
    check_or_write_config(cfg, dir)?;
    if final_path.exists() {
        return Ok(RunStatus::AlreadyDone(FinalRecord::read(&final_path)?));
    }
    let spec = cfg.net();
    let label = format!("{} seed{}", spec.name(), cfg.seed());
    let device = opts.device;
    let mut trainer = Trainer::new(&spec, t, cfg.seed(), device)?;
    let format = trainer.format;
    let schedule = t.schedule();

    let metrics_path = dir.join("metrics.csv");
    let (mut state, mut writer) = match checkpoint::latest(dir)? {
        Some(ckpt) => {
            let state = checkpoint::load(&ckpt, &mut trainer.vs, &mut trainer.opt)?;
            ensure!(
                state.seed == cfg.seed(),
                "{}: checkpoint of seed {}, not {}",
                ckpt.display(),
                state.seed,
                cfg.seed()
            );
            eprintln!("{label}: resuming from {} (iteration {})", ckpt.display(), state.iteration);
            (state.clone(), MetricsWriter::resume(&metrics_path, state.iteration)?)
        }
        None => (
            TrainState {
                iteration: 0,
                warmup: WarmupState::start(t.warmup.as_ref()),
                plateau: PlateauState::default(),
                seconds: 0.0,
                seed: cfg.seed(),
            },
            MetricsWriter::create(&metrics_path)?,
        ),
    };
    let stop_at = opts.stop_after.map_or(t.iterations, |s| (state.iteration + s).min(t.iterations));
    ensure!(
        stop_at == t.iterations || stop_at.is_multiple_of(t.log_every),
        "a pause must fall on a metrics row: stop_after must make the run stop on a multiple of log_every ({})",
        t.log_every
    );
    data.start(state.iteration)?;
    let n_train = data.train_len();

    let bar = if opts.progress_bar {
        let bar = ProgressBar::new(t.iterations).with_position(state.iteration);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} it, {per_sec}, ETA {eta} {msg}")
                .unwrap()
                .progress_chars("=> "),
        );
        bar.set_prefix(label.clone());
        bar.reset_eta();
        bar
    } else {
        ProgressBar::hidden()
    };

    let started = Instant::now();
    let seconds_before = state.seconds;
    let mut window = Window::new(device);
    let mut warm_window = Window::new(device);
    let mut last = Evaluation::default();
    let mut last_train_err = f64::NAN;
    let mut it = state.iteration;
    // Training throughput since the last row, evaluations and checkpoints left out.
    let (mut window_clock, mut window_images) = (Instant::now(), 0u64);
    while it < stop_at {
        let lr = schedule.lr_at(it, state.warmup.is_active(), &state.plateau);
        let (x, y) = data.batch(it)?;
        let (loss, wrong) = trainer.step(&x, &y, lr)?;
        let images = y.size()[0] as u64;
        window.add(&loss, &wrong, images);
        warm_window.add(&loss, &wrong, images);
        window_images += images;
        it += 1;
        bar.set_position(it);

        if let (Some(w), true) = (&t.warmup, state.warmup.is_active())
            && it % w.check_every == 0
        {
            let (_, err) = warm_window.read();
            warm_window = Window::new(device);
            if state.warmup.update(w, it, err) {
                let how = if matches!(state.warmup, WarmupState::Done { capped: true, .. }) {
                    format!("capped at {} iterations, training error still {err:.1}%", w.max_iterations)
                } else {
                    format!("training error {err:.1}% < {}%", w.until_train_error_below)
                };
                bar.suspend(|| {
                    eprintln!("{label}: warm-up ended at iteration {it} ({how}); lr back to {}", t.lr)
                });
            }
        }

        if it % t.log_every == 0 || it == t.iterations {
            let (loss_mean, train_err) = window.read(); // waits for the device
            let rate = window_images as f64 / window_clock.elapsed().as_secs_f64();
            window = Window::new(device);
            if !loss_mean.is_finite() {
                let kept = checkpoint::latest(dir)?.map_or("no checkpoint was written yet".into(), |p| {
                    format!("the last good checkpoint, {}, is kept", p.display())
                });
                bail!(
                    "{label}: the training loss became {loss_mean} by iteration {it} (lr {lr}); stopped, and {kept}. \
                     A lower learning rate or a warm-up ([runs.warmup]) may help"
                );
            }
            let eval = if it % t.eval_every == 0 || it == t.iterations {
                Some(data.evaluate(&trainer.net, format)?)
            } else {
                None
            };
            if let (Some(p), Some(e)) = (&t.plateau, eval.as_ref().and_then(|e| e.val_error.or(e.test_error)))
                && state.plateau.update(p, e)
            {
                let new_lr = schedule.lr_at(it, state.warmup.is_active(), &state.plateau);
                bar.suspend(|| {
                    eprintln!("{label}: error plateaued at {e:.2}%; lr {lr} -> {new_lr} at iteration {it}")
                });
            }
            let seconds = seconds_before + started.elapsed().as_secs_f64();
            let e = eval.clone().unwrap_or_default();
            writer.append(&MetricsRow {
                iteration: it,
                epoch: (it * t.batch_size as u64) as f64 / n_train as f64,
                lr,
                train_loss: loss_mean,
                train_error: train_err,
                val_error: e.val_error,
                val_top5_error: e.val_top5_error,
                test_error: e.test_error,
                skipped_images: data.skipped(),
                seconds,
            })?;
            last_train_err = train_err;
            if let Some(e) = eval {
                last = e;
            }
            let shown = e.test_error.map(|v| format!(", test err {v:.2}%")).unwrap_or_default()
                + &e.val_error.map(|v| format!(", val err {v:.2}%")).unwrap_or_default();
            let msg =
                format!("lr {lr:.4}, loss {loss_mean:.3}, train err {train_err:.2}%{shown}, {rate:.0} img/s");
            if opts.progress_bar {
                bar.set_message(msg);
            } else {
                eprintln!(
                    "{label}: it {it}/{} (epoch {:.1}) {msg}, {seconds:.0} s",
                    t.iterations,
                    (it * t.batch_size as u64) as f64 / n_train as f64
                );
            }
            if it % t.checkpoint_every == 0 || it == t.iterations || it == stop_at {
                state.iteration = it;
                state.seconds = seconds;
                checkpoint::save(dir, &trainer.vs, &trainer.opt, &state)?;
            }
            (window_clock, window_images) = (Instant::now(), 0);
        }
    }
    bar.finish_and_clear();
    if it < t.iterations {
        return Ok(RunStatus::Paused(it));
    }
    if last == Evaluation::default() {
        // Resumed from a checkpoint taken at the very end (the run died before final.json).
        let rows = crate::metrics::read_metrics(&metrics_path)?;
        let row = rows.last().context("a finished run without metrics rows")?;
        last_train_err = row.train_error;
        last = data.evaluate(&trainer.net, format)?;
    }
    crate::models::save_weights(&trainer.vs, &dir.join("model.safetensors"))?;
    let info = TorchInfo::current();
    let record = FinalRecord {
        net: spec.name(),
        depth: spec.depth(),
        residual: spec.residual(),
        dataset: cfg.dataset(),
        preset: cfg.preset().to_string(),
        seed: cfg.seed(),
        iterations: it,
        test_error: last.test_error,
        test_images: last.images,
        val_error: last.val_error,
        val_top5_error: last.val_top5_error,
        train_error: last_train_err,
        skipped_images: data.skipped(),
        seconds: state.seconds,
        device: device_name(device),
        torch: info.version.unwrap_or_default(),
        commit: crate::bench::git_commit().unwrap_or_default(),
        warmup_ended_at: match state.warmup {
            WarmupState::Done { at, .. } => Some(at),
            _ => None,
        },
        finished: crate::bench::utc_now(),
    };
    record.write(&final_path)?;
    Ok(RunStatus::Finished(record))
}

/// The final weights of a finished run, or its latest checkpoint's.
pub fn weights_path(dir: &Path) -> Result<Option<PathBuf>> {
    let done = dir.join("model.safetensors");
    if done.is_file() {
        return Ok(Some(done));
    }
    Ok(checkpoint::latest(dir)?.map(|c| c.join("model.safetensors")))
}
