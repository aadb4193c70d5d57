//! The CIFAR trainer: iteration-based SGD with the paper's schedule and warm-up, metrics rows,
//! checkpoints and resume. On the CPU a resumed run ends bit-identical to an uninterrupted one.

use crate::checkpoint::{self, TrainState};
use crate::config::RunConfig;
use crate::data::Prepared;
use crate::data::augment::EpochPlan;
use crate::env::{TorchInfo, device_name};
use crate::metrics::{FinalRecord, MetricsRow, MetricsWriter};
use crate::models::ResNet;
use crate::optim::Sgd;
use crate::schedule::WarmupState;
use crate::shim::{MemoryFormat, contiguous, set_memory_format};
use anyhow::{Context, Result, bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
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

/// Test error (%) of `net` in eval mode over `(x, y)`, in batches.
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

/// Writes `config.toml` for a new run, or checks that an existing run folder holds this run.
fn check_or_write_config(cfg: &RunConfig, dir: &Path) -> Result<()> {
    let path = dir.join("config.toml");
    let ours = cfg.to_toml()?;
    if path.exists() {
        let theirs = RunConfig::from_file(&path)?;
        if &theirs != cfg {
            bail!(
                "{} holds a run with another configuration than this one ({}); delete that folder to start \
                 afresh, or pass --out to write elsewhere",
                dir.display(),
                describe_difference(&theirs, cfg)
            );
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::fsutil::write_atomic(&path, ours.as_bytes())
}

fn describe_difference(a: &RunConfig, b: &RunConfig) -> String {
    let (ta, tb) = (a.to_toml().unwrap_or_default(), b.to_toml().unwrap_or_default());
    let diffs: Vec<String> = ta
        .lines()
        .zip(tb.lines())
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

    /// (mean loss, error %); reading them waits for the device.
    fn read(&self) -> (f64, f64) {
        let loss = self.loss.double_value(&[]) / self.batches.max(1) as f64;
        let err = 100.0 * self.wrong.int64_value(&[]) as f64 / self.images.max(1) as f64;
        (loss, err)
    }
}

/// A network, its optimizer and the data plan: one SGD step at a time. [`train_run`] adds the
/// schedule, metrics and checkpoints around it; the benchmarks time it alone.
pub struct Trainer<'a> {
    pub vs: nn::VarStore,
    pub net: ResNet,
    pub opt: Sgd,
    pub format: MemoryFormat,
    data: &'a Prepared,
    seed: u64,
    batch_size: usize,
    pad: i64,
    augment: bool,
    batches_per_epoch: u64,
    plan: Option<EpochPlan>,
}

impl<'a> Trainer<'a> {
    /// Builds the network (initialised from `cfg.seed`) in the configured layout on `device`.
    pub fn new(cfg: &RunConfig, data: &'a Prepared, device: Device) -> Result<Self> {
        let t = &cfg.train;
        let n_train = data.train_len();
        ensure!(
            t.batch_size <= n_train,
            "batch_size {} is larger than the training set ({n_train})",
            t.batch_size
        );
        let format = t.layout.resolve(device);
        if device.is_cuda() {
            // Fixed shapes: let cuDNN pick its fastest kernels (as akamaster's and torchvision's
            // CIFAR scripts do). CPU runs are unaffected and stay bit-reproducible.
            tch::Cuda::cudnn_set_benchmark(true);
        }
        tch::manual_seed(cfg.seed as i64);
        let vs = nn::VarStore::new(device);
        let net = cfg.net.build(&vs.root())?;
        set_memory_format(&vs, format)?;
        let opt = Sgd::new(&vs, t.momentum, t.weight_decay);
        Ok(Trainer {
            vs,
            net,
            opt,
            format,
            data,
            seed: cfg.seed,
            batch_size: t.batch_size,
            pad: t.pad,
            augment: t.augment,
            batches_per_epoch: (n_train / t.batch_size) as u64,
            plan: None,
        })
    }

    /// Update number `iteration` (0-based) with rate `lr`, on batch `iteration` of the data plan.
    /// Returns the batch's loss and its number of misclassified images, left on the device.
    pub fn step(&mut self, iteration: u64, lr: f64) -> Result<(Tensor, Tensor)> {
        let epoch = iteration / self.batches_per_epoch;
        if self.plan.as_ref().is_none_or(|p| p.epoch != epoch) {
            let (n, dev) = (self.data.train_len(), self.vs.device());
            self.plan =
                Some(EpochPlan::new(self.seed, epoch, n, self.batch_size, self.pad, self.augment, dev));
        }
        let k = (iteration % self.batches_per_epoch) as usize;
        let (x, y) = self.plan.as_ref().unwrap().batch(k, &self.data.train_x, &self.data.train_y, self.pad);
        let x = contiguous(&x, self.format)?;
        let logits = self.net.forward_t(&x, true);
        let loss = logits.cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0);
        self.opt.zero_grad()?;
        loss.backward();
        self.opt.step(lr)?;
        let wrong = tch::no_grad(|| logits.argmax(1, false).ne_tensor(&y).sum(Kind::Int64));
        Ok((loss.detach(), wrong))
    }
}

/// Trains (or resumes, or skips) one run in `dir`, as `cfg` says, on the prepared data.
pub fn train_run(cfg: &RunConfig, data: &Prepared, dir: &Path, opts: &TrainOptions) -> Result<RunStatus> {
    cfg.train.validate()?;
    let final_path = dir.join("final.json");
    check_or_write_config(cfg, dir)?;
    if final_path.exists() {
        return Ok(RunStatus::AlreadyDone(FinalRecord::read(&final_path)?));
    }
    let t = &cfg.train;
    let label = format!("{} seed{}", cfg.net.name(), cfg.seed);
    let device = opts.device;
    let n_train = data.train_len();
    let mut trainer = Trainer::new(cfg, data, device)?;
    let format = trainer.format;
    let schedule = t.schedule();

    let metrics_path = dir.join("metrics.csv");
    let (mut state, mut writer) = match checkpoint::latest(dir)? {
        Some(ckpt) => {
            let state = checkpoint::load(&ckpt, &mut trainer.vs, &mut trainer.opt)?;
            ensure!(
                state.seed == cfg.seed,
                "{}: checkpoint of seed {}, not {}",
                ckpt.display(),
                state.seed,
                cfg.seed
            );
            eprintln!("{label}: resuming from {} (iteration {})", ckpt.display(), state.iteration);
            (state.clone(), MetricsWriter::resume(&metrics_path, state.iteration)?)
        }
        None => (
            TrainState {
                iteration: 0,
                warmup: WarmupState::start(t.warmup.as_ref()),
                seconds: 0.0,
                seed: cfg.seed,
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

    let n_test = t.test_subset.map_or(data.test_y.size()[0], |k| (k as i64).min(data.test_y.size()[0]));
    let (test_x, test_y) = (data.test_x.narrow(0, 0, n_test), data.test_y.narrow(0, 0, n_test));
    let started = Instant::now();
    let seconds_before = state.seconds;
    let mut window = Window::new(device);
    let mut warm_window = Window::new(device);
    let mut last = (f64::NAN, f64::NAN, None, None); // (loss, train err, val err, test err)
    let mut it = state.iteration;
    while it < stop_at {
        let lr = schedule.lr_at(it, state.warmup.is_active());
        let (loss, wrong) = trainer.step(it, lr)?;
        tch::no_grad(|| {
            for w in [&mut window, &mut warm_window] {
                w.loss += loss.to_kind(Kind::Double);
                w.wrong += &wrong;
                w.batches += 1;
                w.images += t.batch_size as u64;
            }
        });
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
            let (loss_mean, train_err) = window.read();
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
            let eval_now = it % t.eval_every == 0 || it == t.iterations;
            let test_err = if eval_now {
                Some(evaluate(&trainer.net, &test_x, &test_y, t.eval_batch_size, format)?)
            } else {
                None
            };
            let val_err = match (&data.val, eval_now) {
                (Some((vx, vy)), true) => Some(evaluate(&trainer.net, vx, vy, t.eval_batch_size, format)?),
                _ => None,
            };
            let seconds = seconds_before + started.elapsed().as_secs_f64();
            writer.append(&MetricsRow {
                iteration: it,
                epoch: (it * t.batch_size as u64) as f64 / n_train as f64,
                lr,
                train_loss: loss_mean,
                train_error: train_err,
                val_error: val_err,
                test_error: test_err,
                seconds,
            })?;
            last = (loss_mean, train_err, val_err.or(last.2), test_err.or(last.3));
            let test_msg = test_err.map(|e| format!(", test err {e:.2}%")).unwrap_or_default();
            let msg = format!("lr {lr:.4}, loss {loss_mean:.3}, train err {train_err:.2}%{test_msg}");
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
        }
    }
    bar.finish_and_clear();
    if it < t.iterations {
        return Ok(RunStatus::Paused(it));
    }
    if last.3.is_none() {
        // Resumed from a checkpoint taken at the very end (the run died before final.json).
        let rows = crate::metrics::read_metrics(&metrics_path)?;
        let row = rows.last().context("a finished run without metrics rows")?;
        last = (row.train_loss, row.train_error, row.val_error, row.test_error);
    }
    crate::models::save_weights(&trainer.vs, &dir.join("model.safetensors"))?;
    let info = TorchInfo::current();
    let record = FinalRecord {
        net: cfg.net.name(),
        depth: cfg.net.depth,
        residual: cfg.net.residual,
        dataset: cfg.dataset.to_string(),
        preset: cfg.preset.to_string(),
        seed: cfg.seed,
        iterations: it,
        test_error: last.3.unwrap_or(f64::NAN),
        test_images: n_test as usize,
        val_error: last.2,
        train_error: last.1,
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
