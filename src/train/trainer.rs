//! The training loop: iteration-based SGD steps ([`super::step`], eager or captured by
//! [`super::capture`]) under an [`LrPolicy`], metrics rows, checkpoints and resume; the same loop
//! for every data family, which differ only in their [`TrainData`]. On the CPU a resumed run ends
//! bit-identical to an uninterrupted one.

use super::capture::Stepper;
use super::checkpoint::{self, RunFiles, TrainState};
use super::config::TrainConfig;
use super::feed::{Evaluation, TrainData};
use super::metrics::{MetricsRow, MetricsWriter, read_metrics};
use super::policy::LrPolicy;
use super::progress::{Averages, Cadence, Progress, Window};
use super::step::Trainer;
use crate::dist::Replicas;
use crate::interrupt::Interrupted;
use crate::models::NetSpec;
use anyhow::{Context, Result, bail, ensure};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;
use tch::Device;

/// Where and how a run trains.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub device: Device,
    /// This process is one replica of a data-parallel job (`None`: it trains alone). Only rank 0
    /// writes files.
    pub replicas: Option<Arc<Replicas>>,
    /// Stop after this many iterations in this call (the run stays resumable); for tests and for
    /// splitting a long run. `None`: train to the end.
    pub stop_after: Option<u64>,
    /// Show a progress bar (on a terminal) rather than log lines.
    pub progress_bar: bool,
    /// Capture the step as a CUDA graph where that applies (see [`crate::train::capture`]).
    pub cuda_graph: bool,
}

impl TrainOptions {
    /// Whether this process writes the run's files and speaks for it: alone, or rank 0.
    pub fn is_rank0(&self) -> bool {
        self.replicas.as_ref().is_none_or(|dp| dp.rank() == 0)
    }

    /// The data-parallel replicas training each run: 1 alone.
    pub fn world(&self) -> usize {
        self.replicas.as_ref().map_or(1, |dp| dp.world())
    }

    pub fn new(device: Device) -> Self {
        TrainOptions {
            device,
            replicas: None,
            stop_after: None,
            progress_bar: std::io::stderr().is_terminal(),
            cuda_graph: true,
        }
    }
}

/// One run as the trainer sees it.
#[derive(Debug, Clone, Copy)]
pub struct TrainJob<'a> {
    pub net: &'a NetSpec,
    pub train: &'a TrainConfig,
    pub seed: u64,
}

impl TrainJob<'_> {
    /// `resnet20 seed0`: how the log names the run.
    pub fn label(&self) -> String {
        format!("{} seed{}", self.net.name(), self.seed)
    }
}

/// What a finished run measured last.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    pub iterations: u64,
    /// The final weights' evaluation.
    pub last: Evaluation,
    /// Training error (%) over the last logging window.
    pub train_error: f64,
    pub skipped_images: u64,
    /// Training wall time, across resumes.
    pub seconds: f64,
    pub warmup_ended_at: Option<u64>,
}

/// What a call to [`train_run`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainStatus {
    Finished(TrainSummary),
    /// Stopped by `stop_after` at this iteration; resumable.
    Paused(u64),
}

/// Trains (or resumes) one run, as `job` says, on `data`, writing `files`.
pub fn train_run(
    job: TrainJob,
    data: &mut dyn TrainData,
    files: &RunFiles,
    opts: &TrainOptions,
) -> Result<TrainStatus> {
    let t = job.train;
    t.validate()?;
    ensure!(
        t.plateau.is_none() || data.has_validation(),
        "{}: train.plateau needs a validation set (the test set must never select anything): \
         set a validation split (val_split) or remove the plateau rule",
        job.label()
    );
    let mut run = Run::start(job, files, opts)?;
    let stop_at = run.stop_at(opts.stop_after)?;
    data.start(run.state.iteration, &run.state.skipped)?;
    run.choose_stepper(opts, data);
    let n_train = data.train_len();
    while run.it < stop_at {
        run.step(data)?;
        if run.cadence.is_row(run.it) {
            run.end_window(data, n_train, stop_at)?;
        }
        if let Some(signal) = run.stop_requested()?
            && run.it < t.iterations
        {
            run.pause(data)?;
            let at = format!("{} at iteration {}", job.label(), run.it);
            return Err(Interrupted { at, signal }.into());
        }
    }
    run.progress.finish();
    if run.it < t.iterations {
        return Ok(TrainStatus::Paused(run.it));
    }
    run.finish(data).map(TrainStatus::Finished)
}

/// A run in progress: the trainer, the policy and its state, the windows being measured.
struct Run<'a> {
    job: TrainJob<'a>,
    files: &'a RunFiles,
    trainer: Trainer,
    /// Eager or captured steps.
    stepper: Stepper,
    policy: LrPolicy,
    cadence: Cadence,
    state: TrainState,
    /// Rank 0's (or the only process's): the other replicas write nothing.
    writer: Option<MetricsWriter>,
    dp: Option<Arc<Replicas>>,
    progress: Progress,
    /// Updates done.
    it: u64,
    /// The rate of the last update.
    lr: f64,
    window: Window,
    warm_window: Window,
    last: Evaluation,
    last_train_err: f64,
    started: Instant,
    seconds_before: f64,
}

impl<'a> Run<'a> {
    /// Builds the network and resumes from the newest checkpoint, if any.
    fn start(job: TrainJob<'a>, files: &'a RunFiles, opts: &TrainOptions) -> Result<Self> {
        let (t, device, label) = (job.train, opts.device, job.label());
        let mut trainer = Trainer::new(job.net, t, job.seed, device)?;
        if let Some(dp) = &opts.replicas {
            trainer.join(dp.clone())?;
        }
        let writes = opts.is_rank0();
        let policy = LrPolicy::new(t.schedule(), t.plateau.clone());
        let fresh = TrainState {
            iteration: 0,
            policy: policy.start(),
            seconds: 0.0,
            seed: job.seed,
            skipped: Vec::new(),
            windows: Default::default(),
        };
        let dp = opts.replicas.as_deref();
        let (state, writer) =
            checkpoint::resume_replica(files, (&mut trainer.vs, &mut trainer.opt), fresh, (&label, dp))?;
        let progress = Progress::new(label, t.iterations, state.iteration, opts.progress_bar && writes);
        let progress = if writes { progress } else { progress.silent() };
        // A checkpoint holds the windows' sums over every replica: rank 0 carries them on.
        let windows = if writes { state.windows } else { Default::default() };
        Ok(Run {
            job,
            files,
            trainer,
            stepper: Stepper::eager(),
            policy,
            cadence: Cadence::of(t),
            it: state.iteration,
            lr: t.lr,
            seconds_before: state.seconds,
            state,
            writer,
            dp: opts.replicas.clone(),
            progress,
            window: Window::from_sums(device, &windows[0]),
            warm_window: Window::from_sums(device, &windows[1]),
            last: Evaluation::default(),
            last_train_err: f64::NAN,
            started: Instant::now(),
        })
    }

    /// Where this call stops: the end, or `stop_after` iterations on (on a metrics row).
    fn stop_at(&self, stop_after: Option<u64>) -> Result<u64> {
        let total = self.job.train.iterations;
        let stop_at = stop_after.map_or(total, |s| (self.it + s).min(total));
        ensure!(
            stop_at == total || self.cadence.is_row(stop_at),
            "a pause must fall on a metrics row: stop_after must make the run stop on a multiple of log_every ({})",
            self.job.train.log_every
        );
        Ok(stop_at)
    }

    /// Captures the step as a CUDA graph where `opts` wants it and it applies; says why not where
    /// it does not, on a GPU.
    fn choose_stepper(&mut self, opts: &TrainOptions, data: &mut dyn TrainData) {
        let (stepper, why_not) = Stepper::for_run(opts.cuda_graph, &self.trainer, data);
        let label = self.job.label();
        match why_not {
            Some(why) if opts.device.is_cuda() && opts.is_rank0() => {
                eprintln!("{label}: the step is not captured as a CUDA graph: {why}")
            }
            None if opts.cuda_graph && opts.device.is_cuda() && opts.is_rank0() => eprintln!(
                "{label}: the step is captured as a CUDA graph after {} eager steps",
                super::capture::WARMUP_STEPS
            ),
            _ => {}
        }
        self.stepper = stepper;
    }

    /// One update, and the warm-up's check when it is due.
    fn step(&mut self, data: &mut dyn TrainData) -> Result<()> {
        self.lr = self.policy.lr(self.it, &self.state.policy);
        let out = self.stepper.step(&mut self.trainer, data, self.it, self.lr)?;
        if let Some(note) = self.stepper.take_note() {
            self.progress.note(&note);
        }
        let loss = match self.dp.as_ref().filter(|dp| dp.world() > 1) {
            Some(dp) => &out.loss / dp.world() as f64, // this replica's share of the global batch's loss
            None => out.loss,
        };
        self.window.add(&loss, &out.wrong, out.images);
        self.warm_window.add(&loss, &out.wrong, out.images);
        self.it += 1;
        self.progress.set_position(self.it);
        if self.policy.warmup_check_due(self.it, &self.state.policy) {
            let err = self.warm_window.take().global(self.dp.as_deref())?.read().error;
            if let Some(msg) = self.policy.warmup_check(self.it, err, &mut self.state.policy) {
                self.progress.note(&msg);
            }
        }
        Ok(())
    }

    /// The end of a logging window: its row, an evaluation and a checkpoint when they are due.
    fn end_window(&mut self, data: &mut dyn TrainData, n_train: usize, stop_at: u64) -> Result<()> {
        let (it, t) = (self.it, self.job.train);
        let window = self.window.take().global(self.dp.as_deref())?; // waits for the device
        let (images, Averages { loss: loss_mean, error: train_err }) = (window.images, window.read());
        let rate = self.progress.rate(images);
        if !loss_mean.is_finite() {
            bail!(
                "{}: the training loss became {loss_mean} by iteration {it} (lr {}); {}",
                self.job.label(),
                self.lr,
                self.kept()?
            );
        }
        let eval = if self.cadence.is_eval(it) {
            self.average_running_stats()?;
            Some(data.evaluate(&self.trainer.net, self.trainer.format)?)
        } else {
            None
        };
        if let Some(v) = eval.as_ref().and_then(|e| e.val_error)
            && let Some(msg) = self.policy.plateau_check(it, v, &mut self.state.policy)
        {
            self.progress.note(&msg);
        }
        let seconds = self.seconds_before + self.started.elapsed().as_secs_f64();
        let e = eval.clone().unwrap_or_default();
        let epoch = (it * t.batch_size as u64) as f64 / n_train as f64;
        let skipped = data.skipped()?;
        let row = MetricsRow {
            iteration: it,
            epoch,
            lr: self.lr,
            train_loss: loss_mean,
            train_error: train_err,
            val_error: e.val_error,
            val_top5_error: e.val_top5_error,
            test_error: e.test_error,
            skipped_images: skipped.len() as u64,
            seconds,
        };
        if let Some(w) = &mut self.writer {
            w.append(&row)?;
        }
        self.last_train_err = train_err;
        if let Some(e) = eval {
            self.last = e;
        }
        self.progress.row(&row, rate);
        if self.cadence.is_checkpoint(it) || it == stop_at {
            self.state.seconds = seconds;
            self.state.skipped = skipped;
            self.checkpoint()?;
        }
        self.progress.restart_clock();
        Ok(())
    }

    /// Stops between metrics rows (a signal): the partial windows go into a checkpoint at this
    /// iteration, so that the resumed run writes the same rows as an uninterrupted one.
    fn pause(&mut self, data: &mut dyn TrainData) -> Result<()> {
        self.state.seconds = self.seconds_before + self.started.elapsed().as_secs_f64();
        self.state.skipped = data.skipped()?;
        self.checkpoint()?;
        self.progress.finish();
        Ok(())
    }

    /// Saves a checkpoint at this iteration, with the windows in progress, once the metrics rows
    /// before it are durable; unless the weights are no longer finite (then the last good one stays).
    fn checkpoint(&mut self) -> Result<()> {
        if !self.trainer.weights_finite() {
            bail!(
                "{}: the weights became non-finite by iteration {} (lr {}); {}",
                self.job.label(),
                self.it,
                self.lr,
                self.kept()?
            );
        }
        self.state.iteration = self.it;
        let dp = self.dp.as_deref();
        self.state.windows = [self.window.global(dp)?, self.warm_window.global(dp)?];
        self.average_running_stats()?;
        if let Some(w) = &mut self.writer {
            w.sync()?;
            checkpoint::save(&self.files.checkpoints, &self.trainer.vs, &self.trainer.opt, &self.state)?;
        }
        Ok(())
    }

    /// A stop requested by a signal. Replicas stop together, at a metrics row, when any of them
    /// was signalled (torchrun forwards a signal to every worker, not at the same instant).
    fn stop_requested(&self) -> Result<Option<&'static str>> {
        if self.dp.is_some() && !self.cadence.is_row(self.it) {
            return Ok(None);
        }
        crate::dist::stop_requested(self.dp.as_deref())
    }

    /// The replicas' running statistics made their mean (before they are read: an evaluation,
    /// a checkpoint, the final weights).
    fn average_running_stats(&self) -> Result<()> {
        match &self.dp {
            Some(dp) => dp.average_buffers(&self.trainer.vs),
            None => Ok(()),
        }
    }

    /// The end of a diverged run's message: what is kept, and what may help.
    fn kept(&self) -> Result<String> {
        let kept = checkpoint::latest(&self.files.checkpoints)?
            .map_or("no checkpoint was written yet".into(), |p| {
                format!("the last good checkpoint, {}, is kept", p.display())
            });
        Ok(format!("stopped, and {kept}. A lower learning rate or a warm-up ([runs.warmup]) may help"))
    }

    /// The final weights and what they measure.
    fn finish(mut self, data: &mut dyn TrainData) -> Result<TrainSummary> {
        if self.last == Evaluation::default() {
            // Resumed from a checkpoint taken at the very end (the run died before it was recorded).
            let rows = read_metrics(&self.files.metrics)?;
            let row = rows.last().context("a finished run without metrics rows")?;
            self.last_train_err = row.train_error;
            self.last = data.evaluate(&self.trainer.net, self.trainer.format)?;
        }
        ensure!(self.trainer.weights_finite(), "{}: the final weights are not finite", self.job.label());
        self.average_running_stats()?;
        if self.writer.is_some() {
            crate::models::save_weights(&self.trainer.vs, &self.files.weights)?;
        }
        Ok(TrainSummary {
            iterations: self.it,
            last: self.last,
            train_error: self.last_train_err,
            skipped_images: data.skipped()?.len() as u64,
            seconds: self.state.seconds,
            warmup_ended_at: LrPolicy::warmup_ended_at(&self.state.policy),
        })
    }
}
