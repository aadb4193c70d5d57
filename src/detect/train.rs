//! Training a detector: Faster R-CNN's joint training (the RPN's and the head's four losses
//! summed, one backward pass), SGD with the paper's momentum and weight decay, a step schedule,
//! and the backbone's BN frozen (its statistics are used in inference mode by the detector, its
//! scale and shift left out of the update here). Durable as the classification trainer is: the
//! same checkpoints (`ckpt-<iteration>/`, the newest two kept), a metrics file cut back to the
//! checkpoint on resume, a signal stopping the run at its next metrics row (at most `log_every`
//! updates later) with a checkpoint there. A step's randomness (which images,
//! flips, the RPN's and the head's sampling) is a function of (seed, iteration): a resumed run
//! takes the same steps as one that never stopped.
//!
//! Data-parallel as the classification trainer is (torchrun, [`Replicas`]): each replica takes its
//! share of an update's images, the gradients are averaged after the backward pass (DDP's
//! semantics: the mean of the replicas' per-image-group losses), rank 0 writes the metrics and the
//! checkpoints, and the test images are split between the replicas and gathered.

use super::dataset::DetectionSet;
use super::detector::FasterRcnn;
use super::head::Detections;
use crate::data::augment::rng_for;
use crate::dist::Replicas;
use crate::interrupt::Interrupted;
use crate::train::SgdSettings;
use crate::train::checkpoint::{self, RunFiles, TrainState};
use crate::train::metrics::Row;
use crate::train::optim::Sgd;
use crate::train::policy::{LrPolicy, Schedule};
use anyhow::{Context, Result, ensure};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn};

/// How a detector is trained (`[train]` of a detection experiment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionRecipe {
    pub iterations: u64,
    /// Images an update (the paper's Faster R-CNN: 1 a GPU on 8 GPUs for ResNet-101).
    pub images_per_step: usize,
    pub lr: f64,
    /// Iterations at which the rate is multiplied by 0.1.
    pub milestones: Vec<u64>,
    #[serde(default = "paper_momentum")]
    pub momentum: f64,
    #[serde(default = "paper_weight_decay")]
    pub weight_decay: f64,
    /// Horizontal flips, each image with probability 1/2 (the paper's only augmentation).
    #[serde(default = "yes")]
    pub flip: bool,
    /// Backbone parts whose weights stay as loaded: 0 none, 1 the stem, 2 the stem and the first
    /// stage (Detectron's C4 default, torchvision's `trainable_layers=3`). BN is frozen everywhere.
    pub frozen_parts: usize,
    pub log_every: u64,
    /// A multiple of `log_every`.
    pub checkpoint_every: u64,
}

fn paper_momentum() -> f64 {
    SgdSettings::PAPER.momentum
}
fn paper_weight_decay() -> f64 {
    SgdSettings::PAPER.weight_decay
}
fn yes() -> bool {
    true
}

impl DetectionRecipe {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.iterations > 0 && self.images_per_step > 0,
            "iterations and images_per_step must be positive"
        );
        ensure!(self.lr > 0.0, "lr must be positive, got {}", self.lr);
        ensure!(
            self.milestones.windows(2).all(|w| w[0] < w[1]),
            "milestones must increase: {:?}",
            self.milestones
        );
        ensure!(
            self.log_every > 0
                && self.checkpoint_every > 0
                && self.checkpoint_every.is_multiple_of(self.log_every),
            "checkpoint_every ({}) must be a positive multiple of log_every ({})",
            self.checkpoint_every,
            self.log_every
        );
        Ok(())
    }

    fn schedule(&self) -> Schedule {
        Schedule { lr: self.lr, milestones: self.milestones.clone(), decay: 0.1, warmup: None }
    }
}

/// One row of a detection run's `metrics.csv`: the losses averaged over the updates since the
/// row before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionRow {
    pub iteration: u64,
    pub epoch: f64,
    pub lr: f64,
    pub loss: f64,
    pub rpn_objectness: f64,
    pub rpn_box: f64,
    pub classification: f64,
    pub box_regression: f64,
    pub seconds: f64,
}

impl Row for DetectionRow {
    const COLUMNS: &'static [&'static str] = &[
        "iteration",
        "epoch",
        "lr",
        "loss",
        "rpn_objectness",
        "rpn_box",
        "classification",
        "box_regression",
        "seconds",
    ];
    fn iteration(&self) -> u64 {
        self.iteration
    }
}

/// Leaves the backbone's classifier (unused by a detector), the weights of its first `parts`
/// parts (stem, then stages) and, unless the detector trains its BN, every BN scale and shift
/// out of training.
pub fn freeze(det: &FasterRcnn, parts: usize) -> Result<()> {
    let b = &det.backbone;
    ensure!(
        parts <= b.stages.len(),
        "{parts} frozen parts: {} has the stem and {} stages",
        b.name,
        b.stages.len()
    );
    let off = |t: &Tensor| {
        let _ = t.set_requires_grad(false);
    };
    let bn_of = |cb: &&crate::models::blocks::ConvBn| {
        cb.bn.ws.iter().chain(cb.bn.bs.iter()).map(Tensor::shallow_clone).collect::<Vec<_>>()
    };
    if parts > 0 {
        for cb in b.conv_bns(0..=parts - 1) {
            off(&cb.conv.weight);
            bn_of(&cb).iter().for_each(off);
        }
    }
    if !det.train_bn {
        b.conv_bns(0..=b.stages.len()).iter().flat_map(bn_of).for_each(|t| off(&t));
    }
    off(&b.fc.weight);
    off(&b.fc.bias);
    Ok(())
}

/// Which images and flips update `iteration` takes: epoch `e`'s shuffle and flips are drawn from
/// (seed, e), each epoch `len / images_per_step` updates (the rest of the shuffle unused).
pub fn step_plan(r: &DetectionRecipe, len: usize, seed: u64, iteration: u64) -> (Vec<usize>, Vec<bool>) {
    let per_epoch = (len / r.images_per_step) as u64;
    let (epoch, k) = (iteration / per_epoch, (iteration % per_epoch) as usize);
    let mut rng = rng_for(seed, b"detection-epochs", epoch);
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut rng);
    let flips: Vec<bool> = (0..len).map(|_| rng.random::<bool>()).collect();
    let at = k * r.images_per_step..(k + 1) * r.images_per_step;
    (order[at.clone()].to_vec(), order[at].iter().map(|&i| r.flip && flips[i]).collect())
}

/// Replica `rank`'s images and flips of update `iteration`, of `world` replicas: its share, in
/// order, of [`step_plan`]'s (alone, all of them).
pub fn replica_plan(
    r: &DetectionRecipe,
    len: usize,
    seed: u64,
    (iteration, rank, world): (u64, usize, usize),
) -> (Vec<usize>, Vec<bool>) {
    let (images, flips) = step_plan(r, len, seed, iteration);
    let mine = crate::dist::share(images.len(), rank, world);
    (images[mine.clone()].to_vec(), flips[mine].to_vec())
}

/// libtorch's seed for replica `rank`'s sampling in update `iteration` (the RPN's anchors, the
/// head's regions): each replica its own stream, rank 0's that of a run alone.
pub fn sample_seed(seed: u64, iteration: u64, rank: usize) -> i64 {
    (rng_for(seed, b"detection-sample", iteration | (rank as u64) << 48).next_u64() >> 1) as i64
}

/// The losses summed over a logging window.
#[derive(Debug, Default)]
struct Window {
    sums: [f64; 5],
    steps: u64,
}

impl Window {
    /// The window's averages as the metrics row of `iteration`.
    fn row(self, iteration: u64, epoch: f64, lr: f64, seconds: f64) -> DetectionRow {
        let m = self.sums.map(|s| s / self.steps as f64);
        DetectionRow {
            iteration,
            epoch,
            lr,
            loss: m[0],
            rpn_objectness: m[1],
            rpn_box: m[2],
            classification: m[3],
            box_regression: m[4],
            seconds,
        }
    }
}

/// One update (iteration `it` of the run of `seed`): its images, flips and sampling drawn from
/// (seed, it) and this replica's rank; a loss that is not finite (on any replica) is an error,
/// before any update. Returns the losses (the replicas' mean): the total, then the RPN's
/// objectness and box losses, the head's classification and box losses.
fn update(
    det: &FasterRcnn,
    set: &dyn DetectionSet,
    r: &DetectionRecipe,
    (seed, it): (u64, u64),
    (opt, lr): (&mut Sgd, f64),
    (device, dp): (Device, Option<&Replicas>),
) -> Result<[f64; 5]> {
    let (rank, world) = dp.map_or((0, 1), |d| (d.rank(), d.world()));
    let (indices, flips) = replica_plan(r, set.len(), seed, (it, rank, world));
    let batch = set.batch(&indices, &flips, device)?;
    tch::manual_seed(sample_seed(seed, it, rank));
    let pass = det.forward(&batch.images, &batch.sizes, Some(&batch.targets))?;
    let l = pass.losses.context("a training pass without losses")?;
    let total = l.total();
    let mut values =
        [&total, &l.rpn.objectness, &l.rpn.boxes, &l.classification, &l.boxes].map(|t| t.double_value(&[]));
    if let Some(dp) = dp {
        let sums = dp.sum(&values)?;
        values = std::array::from_fn(|i| sums[i] / world as f64);
    }
    ensure!(values[0].is_finite(), "the loss is {}", values[0]);
    opt.zero_grad()?;
    total.backward();
    if let Some(dp) = dp {
        dp.average_grads(&opt.params)?;
    }
    opt.step(lr)?;
    Ok(values)
}

/// Trains `det` (its variables in `vs`) on `set` to `r.iterations`, resuming from the newest
/// checkpoint in `files.checkpoints`; `label` names the run in messages. With `dp`, as one of its
/// replicas (rank 0 writes the files).
pub fn train(
    det: &FasterRcnn,
    vs: &mut nn::VarStore,
    set: &dyn DetectionSet,
    r: &DetectionRecipe,
    (files, seed, label): (&RunFiles, u64, &str),
    dp: Option<&Replicas>,
) -> Result<TrainState> {
    check_fits(r, set, dp)?;
    freeze(det, r.frozen_parts)?;
    crate::shim::malloc::keep_freed_memory();
    std::fs::create_dir_all(&files.checkpoints)
        .with_context(|| format!("creating {}", files.checkpoints.display()))?;
    let mut opt = Sgd::new(vs, r.momentum, r.weight_decay);
    let policy = LrPolicy::new(r.schedule(), None);
    let fresh = TrainState {
        iteration: 0,
        policy: policy.start(),
        seconds: 0.0,
        seed,
        skipped: Vec::new(),
        windows: Default::default(),
    };
    let (mut state, mut writer) =
        checkpoint::resume_replica::<DetectionRow>(files, (vs, &mut opt), fresh, (label, dp))?;
    let (mut window, started, before) = (Window::default(), std::time::Instant::now(), state.seconds);
    while state.iteration < r.iterations {
        let it = state.iteration;
        let lr = policy.lr(it, &state.policy);
        let values = update(det, set, r, (seed, it), (&mut opt, lr), (vs.device(), dp))
            .with_context(|| format!("{label}: iteration {}", it + 1))?;
        values.iter().enumerate().for_each(|(i, v)| window.sums[i] += v);
        window.steps += 1;
        state.iteration += 1;
        state.seconds = before + started.elapsed().as_secs_f64();
        if !(state.iteration.is_multiple_of(r.log_every) || state.iteration == r.iterations) {
            continue;
        }
        let epoch = state.iteration as f64 / (set.len() / r.images_per_step) as f64;
        let row = std::mem::take(&mut window).row(state.iteration, epoch, lr, state.seconds);
        if let Some(w) = &mut writer {
            w.append(&row)?;
            eprintln!(
                "{label}: iteration {}/{}, loss {:.4}, lr {lr}",
                state.iteration, r.iterations, row.loss
            );
        }
        end_row(det, vs, (&opt, &state), (files, writer.as_mut()), (r, dp, label))?;
    }
    if writer.is_some() {
        crate::models::save_weights(vs, &files.weights)?;
    }
    Ok(state)
}

/// Whether `r` can train on `set`, with the replicas of `dp` where there are.
fn check_fits(r: &DetectionRecipe, set: &dyn DetectionSet, dp: Option<&Replicas>) -> Result<()> {
    r.validate()?;
    if let Some(dp) = dp {
        ensure!(
            r.images_per_step.is_multiple_of(dp.world()),
            "[train] images_per_step ({}) must divide evenly over the {} ranks: choose a world size that \
             divides it, or an experiment file made for it (experiments/table7_voc_16.toml for 2, 4, 8 or 16)",
            r.images_per_step,
            dp.world()
        );
    }
    ensure!(
        set.len() >= r.images_per_step,
        "{} training images for {} an update",
        set.len(),
        r.images_per_step
    );
    Ok(())
}

/// At a metrics row (the only place a run stops, so that replicas stop together): a checkpoint
/// where one is due, at the end, or before a stop that a signal asked for (of any replica); then
/// that stop, as the error that says where the run can resume from. At the last row a run ends
/// instead, with its weights, as the classification trainer's do.
fn end_row(
    det: &FasterRcnn,
    vs: &nn::VarStore,
    (opt, state): (&Sgd, &TrainState),
    (files, writer): (&RunFiles, Option<&mut crate::train::metrics::MetricsWriter<DetectionRow>>),
    (r, dp, label): (&DetectionRecipe, Option<&Replicas>, &str),
) -> Result<()> {
    let stop = crate::dist::stop_requested(dp)?.filter(|_| state.iteration < r.iterations);
    let due = state.iteration.is_multiple_of(r.checkpoint_every) || state.iteration == r.iterations;
    if due || stop.is_some() {
        save_checkpoint(det, vs, (opt, state), (files, writer), dp)?;
    }
    match stop {
        Some(signal) => {
            Err(Interrupted { at: format!("{label} at iteration {}", state.iteration), signal }.into())
        }
        None => Ok(()),
    }
}

/// A checkpoint of the run where it is, written by rank 0 (alone: this process) after the
/// replicas' running statistics are made their mean (where the detector trains its BN).
fn save_checkpoint(
    det: &FasterRcnn,
    vs: &nn::VarStore,
    (opt, state): (&Sgd, &TrainState),
    (files, writer): (&RunFiles, Option<&mut crate::train::metrics::MetricsWriter<DetectionRow>>),
    dp: Option<&Replicas>,
) -> Result<()> {
    if let Some(dp) = dp.filter(|_| det.train_bn) {
        dp.average_buffers(vs)?;
    }
    let Some(writer) = writer else { return Ok(()) };
    writer.sync()?;
    checkpoint::save(&files.checkpoints, vs, opt, state)?;
    Ok(())
}

/// The detector's detections of every image of `set`, `per_batch` images at a time, without
/// gradients (BN is in inference mode in the detector whatever the mode).
pub fn detect_all(
    det: &FasterRcnn,
    set: &dyn DetectionSet,
    per_batch: usize,
    device: Device,
) -> Result<Vec<Detections>> {
    detect_images(det, set, 0..set.len(), per_batch, device)
}

/// [`detect_all`] split between the replicas of `dp` (each its share of the images, in order) and
/// gathered on every one of them, in the images' order: one process's detections where batches
/// are of one image (`per_batch` 1) or of images of one size (batches pad to their largest).
pub fn detect_shared(
    det: &FasterRcnn,
    set: &dyn DetectionSet,
    (per_batch, device): (usize, Device),
    dp: Option<&Replicas>,
) -> Result<Vec<Detections>> {
    let Some(dp) = dp else { return detect_all(det, set, per_batch, device) };
    let mine = dp.share(set.len());
    let dets = detect_images(det, set, mine.clone(), per_batch, device)?;
    let rows: Vec<Tensor> = dets.iter().enumerate().map(|(i, d)| as_rows(mine.start + i, d)).collect();
    let rows = if rows.is_empty() {
        Tensor::zeros([0, 7], (Kind::Double, Device::Cpu))
    } else {
        Tensor::cat(&rows, 0)
    };
    from_rows(&dp.gather_rows(&rows)?, set.len())
}

/// Image `image`'s detections as rows of (image, x1, y1, x2, y2, score, label), float64.
fn as_rows(image: usize, d: &Detections) -> Tensor {
    let n = d.scores.size()[0];
    let i = Tensor::full([n, 1], image as f64, (Kind::Double, Device::Cpu));
    Tensor::cat(
        &[i, d.boxes.shallow_clone(), d.scores.view([n, 1]), d.labels.to_kind(Kind::Double).view([n, 1])],
        1,
    )
}

/// The detections of `images` images from rows of [`as_rows`] in the images' order.
fn from_rows(rows: &Tensor, images: usize) -> Result<Vec<Detections>> {
    let image: Vec<f64> = Vec::try_from(&rows.select(1, 0))?;
    let mut out = Vec::with_capacity(images);
    let mut at = 0;
    for i in 0..images {
        let n = image[at..].iter().take_while(|&&k| k == i as f64).count();
        let r = rows.narrow(0, at as i64, n as i64);
        out.push(Detections {
            boxes: r.narrow(1, 1, 4).contiguous(),
            scores: r.select(1, 5).contiguous(),
            labels: r.select(1, 6).to_kind(Kind::Int64),
        });
        at += n;
    }
    ensure!(at == image.len(), "gathered detections out of the images' order");
    Ok(out)
}

/// The detections of the images `range` of `set`, `per_batch` at a time.
fn detect_images(
    det: &FasterRcnn,
    set: &dyn DetectionSet,
    range: std::ops::Range<usize>,
    per_batch: usize,
    device: Device,
) -> Result<Vec<Detections>> {
    let mut out = Vec::with_capacity(range.len());
    for start in range.clone().step_by(per_batch.max(1)) {
        let idx: Vec<usize> = (start..(start + per_batch).min(range.end)).collect();
        let batch = set.batch(&idx, &vec![false; idx.len()], device)?;
        let pass = tch::no_grad(|| det.forward(&batch.images, &batch.sizes, None))?;
        out.extend(pass.detections.into_iter().map(|d| Detections {
            boxes: d.boxes.to_device(Device::Cpu).to_kind(Kind::Double),
            scores: d.scores.to_device(Device::Cpu).to_kind(Kind::Double),
            labels: d.labels.to_device(Device::Cpu),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(images_per_step: usize) -> DetectionRecipe {
        DetectionRecipe {
            iterations: 10,
            images_per_step,
            lr: 0.01,
            milestones: vec![],
            momentum: 0.9,
            weight_decay: 1e-4,
            flip: true,
            frozen_parts: 1,
            log_every: 1,
            checkpoint_every: 1,
        }
    }

    #[test]
    fn the_replicas_shares_of_an_update_are_its_images_in_order() {
        let r = recipe(8);
        for (world, it) in [(1, 0), (2, 3), (4, 7), (8, 12)] {
            let (images, flips) = step_plan(&r, 50, 5, it);
            let shares: Vec<_> = (0..world).map(|rank| replica_plan(&r, 50, 5, (it, rank, world))).collect();
            assert!(shares.iter().all(|s| s.0.len() == 8 / world), "{world} ranks: equal shares");
            assert_eq!(shares.iter().flat_map(|s| s.0.clone()).collect::<Vec<_>>(), images, "{world} ranks");
            assert_eq!(shares.iter().flat_map(|s| s.1.clone()).collect::<Vec<_>>(), flips, "{world} ranks");
        }
    }

    #[test]
    fn rank_0_samples_as_a_run_alone_did_and_every_rank_from_its_own_stream() {
        for (seed, it) in [(0, 0), (7, 1), (3, 123_456)] {
            // The seed of every update of a run alone before runs were data-parallel.
            let alone = (rng_for(seed, b"detection-sample", it).next_u64() >> 1) as i64;
            assert_eq!(sample_seed(seed, it, 0), alone);
            let ranks: std::collections::HashSet<i64> = (0..16).map(|r| sample_seed(seed, it, r)).collect();
            assert_eq!(ranks.len(), 16, "16 ranks, 16 streams");
            assert!(!ranks.contains(&sample_seed(seed, it + 1, 0)), "another update, another stream");
        }
    }
}
