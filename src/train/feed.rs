//! Where a run's batches and evaluations come from: [`TrainData`], and its two families,
//! CIFAR-style tensors resident on the device ([`TensorFeed`]) and an image folder streamed by the
//! ImageNet loader ([`FolderFeed`]). The trainer sees only the trait.

use crate::data::Prepared;
use crate::data::TensorOptions;
use crate::data::augment::{EpochPlan, StagedPlan, locate};
use crate::data::folder::ImageFolder;
use crate::data::loader::{LoaderOptions, LoaderSettings, TrainLoader};
use crate::data::{FolderOptions, Protocol};
use crate::dist::Replicas;
use crate::eval::{EvalOptions, error_rate, evaluate_folder, spread, wrong_count};
use crate::models::ResNet;
use crate::shim::MemoryFormat;
use anyhow::{Context, Result, ensure};
use std::sync::Arc;
use tch::{Device, Tensor};

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
    /// Whether [`TrainData::evaluate`] measures a validation error (the plateau rule needs one).
    fn has_validation(&self) -> bool;
    /// Called once before the first batch, with the iteration training starts (or resumes) at and
    /// the training images skipped as undecodable before it (from the checkpoint).
    fn start(&mut self, iteration: u64, skipped: &[usize]) -> Result<()>;
    /// The batch of update `iteration` (0-based), on the training device.
    fn batch(&mut self, iteration: u64) -> Result<(Tensor, Tensor)>;
    /// Evaluates `net` (in eval mode) as the run measures progress.
    fn evaluate(&mut self, net: &ResNet, format: MemoryFormat) -> Result<Evaluation>;
    /// Indices of the undecodable training images skipped so far, resumes included, sorted; as a
    /// replica, those of every replica (all of them call it at the same points).
    fn skipped(&mut self) -> Result<Vec<usize>> {
        Ok(Vec::new())
    }
    /// The batches as a captured step draws them (see [`Staged`]); `None`, the default, where
    /// batches come from the host (an image folder's decoded images).
    fn staged(&mut self) -> Option<&mut dyn Staged> {
        None
    }
}

/// Batches drawn on the device from buffers that never move, so that a CUDA graph can capture the
/// drawing with the step: [`Staged::stage`] points the buffers at an iteration (outside the graph),
/// [`Staged::batch`] draws it (inside). Its batches equal [`TrainData::batch`]'s.
pub trait Staged {
    /// Points the buffers at the batch of update `iteration`.
    fn stage(&mut self, iteration: u64);
    /// The staged batch: device operations on the buffers only.
    fn batch(&self) -> (Tensor, Tensor);
    /// Images in a batch.
    fn images(&self) -> u64;
}

/// A [`TensorFeed`]'s staged batches.
struct StagedTensors<'a> {
    data: &'a Prepared,
    plan: StagedPlan,
}

impl Staged for StagedTensors<'_> {
    fn stage(&mut self, iteration: u64) {
        self.plan.stage(iteration);
    }

    fn batch(&self) -> (Tensor, Tensor) {
        self.plan.part(&self.data.train_x, &self.data.train_y)
    }

    fn images(&self) -> u64 {
        self.plan.images() as u64
    }
}

/// CIFAR-sized data resident on the device, batches drawn by [`EpochPlan`].
pub struct TensorFeed<'a> {
    pub data: &'a Prepared,
    seed: u64,
    batch_size: usize,
    opts: TensorOptions,
    test_images: i64,
    plan: Option<EpochPlan>,
    /// The other replicas, if any: this one trains on its part of every global batch and
    /// evaluates its part of the test (and validation) set.
    replicas: Option<Arc<Replicas>>,
    /// Made at the first call of [`TrainData::staged`].
    staged: Option<StagedTensors<'a>>,
}

impl<'a> TensorFeed<'a> {
    pub fn new(data: &'a Prepared, seed: u64, batch_size: usize, opts: &TensorOptions) -> Self {
        let n_test = data.test_y.size()[0];
        let test_images = opts.test_subset.map_or(n_test, |k| (k as i64).min(n_test));
        TensorFeed {
            data,
            seed,
            batch_size,
            opts: opts.clone(),
            test_images,
            plan: None,
            replicas: None,
            staged: None,
        }
    }

    /// One of `dp`'s replicas: its slice of each global batch (of `batch_size`, which the world
    /// size must divide) and of each evaluation, whose counts the replicas sum.
    pub fn for_replica(self, dp: Arc<Replicas>) -> Result<Self> {
        crate::dist::check_batch(self.batch_size, dp.world())?;
        Ok(TensorFeed { replicas: Some(dp), ..self })
    }

    /// (rank, world), or (0, 1) alone.
    fn part(&self) -> (usize, usize) {
        self.replicas.as_ref().map_or((0, 1), |dp| (dp.rank(), dp.world()))
    }

    /// The error (%) of `net` on `x`: alone, over all of it; as a replica, over its share, the
    /// misclassified counts summed over the replicas.
    fn error(&self, net: &ResNet, x: &Tensor, y: &Tensor, format: MemoryFormat) -> Result<f64> {
        let batch = self.opts.eval_batch_size;
        let Some(dp) = &self.replicas else { return error_rate(net, x, y, batch, format) };
        let n = y.size()[0];
        let part = dp.share(n as usize);
        let (start, len) = (part.start as i64, part.len() as i64);
        let wrong = wrong_count(net, &x.narrow(0, start, len), &y.narrow(0, start, len), batch, format)?;
        Ok(100.0 * dp.sum(&[wrong as f64])?[0] / n as f64)
    }
}

impl TrainData for TensorFeed<'_> {
    fn train_len(&self) -> usize {
        self.data.train_len()
    }

    fn has_validation(&self) -> bool {
        self.data.val.is_some()
    }

    fn start(&mut self, _iteration: u64, _skipped: &[usize]) -> Result<()> {
        let n = self.train_len();
        ensure!(self.batch_size <= n, "batch_size {} is larger than the training set ({n})", self.batch_size);
        Ok(())
    }

    fn batch(&mut self, iteration: u64) -> Result<(Tensor, Tensor)> {
        let (n, pad) = (self.train_len(), self.opts.pad);
        let (epoch, k) = locate(iteration, n, self.batch_size);
        if self.plan.as_ref().is_none_or(|p| p.epoch != epoch) {
            let dev = self.data.train_x.device();
            let augment = self.opts.augment;
            self.plan = Some(EpochPlan::new(self.seed, epoch, n, self.batch_size, pad, augment, dev));
        }
        Ok(self.plan.as_ref().unwrap().part(k, self.part(), &self.data.train_x, &self.data.train_y, pad))
    }

    fn staged(&mut self) -> Option<&mut dyn Staged> {
        if self.staged.is_none() {
            let (n, dev) = (self.train_len(), self.data.train_x.device());
            let (pad, augment) = (self.opts.pad, self.opts.augment);
            let plan = StagedPlan::new(self.seed, n, self.batch_size, pad, augment, self.part(), dev);
            self.staged = Some(StagedTensors { data: self.data, plan });
        }
        self.staged.as_mut().map(|s| s as &mut dyn Staged)
    }

    fn evaluate(&mut self, net: &ResNet, format: MemoryFormat) -> Result<Evaluation> {
        let (d, k) = (self.data, self.test_images);
        let test = self.error(net, &d.test_x.narrow(0, 0, k), &d.test_y.narrow(0, 0, k), format)?;
        let val = match &d.val {
            Some((vx, vy)) => Some(self.error(net, vx, vy, format)?),
            None => None,
        };
        Ok(Evaluation { val_error: val, val_top5_error: None, test_error: Some(test), images: k as usize })
    }
}

/// An image folder's batches from the streaming loader; centre-crop validation during training
/// (Figure 4's bold curves).
pub struct FolderFeed {
    train: Arc<ImageFolder>,
    val: Arc<ImageFolder>,
    opts: FolderOptions,
    loader_opts: LoaderOptions,
    loader: Option<TrainLoader>,
    device: Device,
    val_indices: Vec<usize>,
    /// The other replicas, if any: this one decodes its part of every global batch and
    /// evaluates its share of the validation images.
    replicas: Option<Arc<Replicas>>,
    /// The undecodable images every replica knows of (with replicas).
    skipped_everywhere: Vec<usize>,
}

impl FolderFeed {
    pub fn new(
        (train, val): (Arc<ImageFolder>, Arc<ImageFolder>),
        opts: &FolderOptions,
        batch_size: usize,
        seed: u64,
        settings: &LoaderSettings,
        device: Device,
    ) -> Self {
        let val_indices = spread(val.len(), opts.val_images.unwrap_or(val.len()));
        let loader_opts = settings.options(batch_size, seed);
        FolderFeed {
            train,
            val,
            opts: opts.clone(),
            loader_opts,
            loader: None,
            device,
            val_indices,
            replicas: None,
            skipped_everywhere: Vec::new(),
        }
    }

    /// One of `dp`'s replicas: it decodes only its part of each global batch (of `batch_size`,
    /// which the world size must divide) and evaluates its share of the validation images.
    pub fn for_replica(mut self, dp: Arc<Replicas>) -> Result<Self> {
        crate::dist::check_batch(self.loader_opts.batch_size, dp.world())?;
        self.loader_opts.part = (dp.rank(), dp.world());
        self.replicas = Some(dp);
        Ok(self)
    }

    /// The union of the replicas' undecodable images (each meets those of its own parts): one
    /// flag per training image summed over the replicas, when any of them has met a new one.
    fn skipped_by_any(&mut self, dp: &Replicas, mine: Vec<usize>) -> Result<Vec<usize>> {
        let new = mine.iter().any(|i| self.skipped_everywhere.binary_search(i).is_err());
        if dp.sum(&[f64::from(u8::from(new))])?[0] == 0.0 {
            return Ok(self.skipped_everywhere.clone());
        }
        let mut flags = vec![0f64; self.train.len()];
        for &i in mine.iter().chain(&self.skipped_everywhere) {
            flags[i] = 1.0;
        }
        let flags = dp.sum(&flags)?;
        self.skipped_everywhere = (0..flags.len()).filter(|&i| flags[i] > 0.0).collect();
        Ok(self.skipped_everywhere.clone())
    }
}

impl TrainData for FolderFeed {
    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn has_validation(&self) -> bool {
        true
    }

    fn start(&mut self, iteration: u64, skipped: &[usize]) -> Result<()> {
        let (folder, transform) = (self.train.clone(), self.opts.transform.clone());
        let loader = TrainLoader::start(folder, transform, self.loader_opts.clone(), iteration, skipped)?;
        self.loader = Some(loader);
        self.skipped_everywhere = skipped.to_vec();
        Ok(())
    }

    fn batch(&mut self, iteration: u64) -> Result<(Tensor, Tensor)> {
        let loader = self.loader.as_mut().context("loader not started")?;
        let b = loader.next_batch()?;
        ensure!(
            b.iteration == iteration,
            "the loader is at batch {}, the trainer at {iteration}",
            b.iteration
        );
        Ok(b.to_tensors(self.device))
    }

    fn evaluate(&mut self, net: &ResNet, format: MemoryFormat) -> Result<Evaluation> {
        let threads = self.loader_opts.threads;
        let mut o = EvalOptions::for_folder(&self.opts, Protocol::Center, threads, self.device, format);
        o.replicas = self.replicas.clone();
        let r = evaluate_folder(net, &self.val, Some(&self.val_indices), &o)?;
        Ok(Evaluation {
            val_error: Some(r.top1_error),
            val_top5_error: Some(r.top5_error),
            test_error: None,
            images: r.images,
        })
    }

    fn skipped(&mut self) -> Result<Vec<usize>> {
        let mine = self.loader.as_ref().map_or_else(Vec::new, |l| l.skipped());
        match self.replicas.clone() {
            Some(dp) => self.skipped_by_any(&dp, mine),
            None => Ok(mine),
        }
    }
}
