//! One SGD update of a network: the model and its optimizer ([`Trainer`]), the forward and
//! backward passes (BN over groups of a batch, bf16 autocast, gradients averaged with the other
//! replicas) and the update at a rate that may live on the device ([`Rate`], what a captured CUDA
//! graph reads). The loop (`trainer`) and the captured step (`capture`) both drive it; it knows
//! neither.

use super::config::{Precision, TrainConfig};
use super::optim::{Sgd, SgdSettings};
use crate::dist::{GradSync, Replicas};
use crate::models::{NetSpec, ResNet};
use crate::shim::dist::GradReducer;
use crate::shim::{Autocast, MemoryFormat, contiguous, set_memory_format};
use anyhow::{Result, bail, ensure};
use std::sync::Arc;
use tch::{Device, Kind, Reduction, Tensor, nn, nn::ModuleT};

/// A step's learning rate.
#[derive(Debug, Clone, Copy)]
pub enum Rate<'a> {
    Value(f64),
    /// A scalar on the training device, read when the step runs (fused SGD only; see
    /// [`Sgd::step_lr_tensor`]): a captured step's rate, changed without a new capture.
    Device(&'a Tensor),
}

/// A network and its optimizer, one SGD step at a time: [`train_run`] adds the policy, metrics
/// and checkpoints around it; the benchmarks time it alone.
pub struct Trainer {
    pub vs: nn::VarStore,
    pub net: ResNet,
    pub opt: Sgd,
    pub format: MemoryFormat,
    /// BN statistics over groups of this many images (`[train] bn_batch`); `None`: the batch.
    pub bn_batch: Option<usize>,
    /// The forward pass's arithmetic (`[train] precision`).
    pub precision: Precision,
    /// The other replicas, whose gradients each step averages with this one's (set by
    /// [`Trainer::join`]).
    replicas: Option<Arc<Replicas>>,
    /// With replicas that average during the backward pass: c10d's reducer over `opt.params`.
    reducer: Option<GradReducer>,
}

impl Trainer {
    /// Builds `net` (initialised from `seed`) in the configured layout on `device`.
    pub fn new(net: &NetSpec, train: &TrainConfig, seed: u64, device: Device) -> Result<Self> {
        let format = train.layout.resolve(device);
        let mut t = Self::with_format(net, train.sgd(), seed, device, format)?;
        t.bn_batch = train.bn_batch;
        t.precision = train.precision;
        Ok(t)
    }

    /// Builds `net` with SGD (momentum, weight decay) in a given layout.
    pub fn with_format(
        net: &NetSpec,
        sgd: SgdSettings,
        seed: u64,
        device: Device,
        format: MemoryFormat,
    ) -> Result<Self> {
        if device.is_cuda() {
            // Fixed shapes: let cuDNN pick its fastest kernels (as akamaster's and torchvision's
            // scripts do). CPU runs are unaffected and stay bit-reproducible.
            tch::Cuda::cudnn_set_benchmark(true);
        }
        crate::shim::malloc::keep_freed_memory();
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let net = net.build(&vs.root())?;
        set_memory_format(&vs, format)?;
        let opt = Sgd::new(&vs, sgd.momentum, sgd.weight_decay);
        Ok(Trainer {
            vs,
            net,
            opt,
            format,
            bn_batch: None,
            precision: Precision::Fp32,
            replicas: None,
            reducer: None,
        })
    }

    /// Makes this trainer one of `dp`'s replicas: its gradients are averaged with theirs every
    /// step, during the backward pass (c10d's reducer) or after it, as `dp.grad_sync` says.
    pub fn join(&mut self, dp: Arc<Replicas>) -> Result<()> {
        self.reducer = match dp.grad_sync {
            GradSync::DuringBackward => Some(dp.reducer(&self.opt.params)?),
            GradSync::AfterBackward => None,
        };
        self.replicas = Some(dp);
        Ok(())
    }

    /// One update with rate `lr` on the batch `(x, y)`. Returns the batch's loss and its number of
    /// misclassified images, left on the device.
    pub fn step(&mut self, x: &Tensor, y: &Tensor, lr: f64) -> Result<(Tensor, Tensor)> {
        self.step_at(x, y, Rate::Value(lr))
    }

    /// [`Trainer::step`] at a rate that may be a device scalar (the step a CUDA graph captures).
    pub fn step_at(&mut self, x: &Tensor, y: &Tensor, lr: Rate) -> Result<(Tensor, Tensor)> {
        let x = contiguous(x, self.format)?;
        self.opt.zero_grad()?;
        let n = x.size()[0] as usize;
        let out = match self.bn_batch {
            Some(g) if g < n => self.grouped_forward_backward(&x, y, g)?,
            _ => self.forward_backward(&x, y, 1, true)?,
        };
        if let (Some(dp), None) = (&self.replicas, &self.reducer) {
            dp.average_grads(&self.opt.params)?;
        }
        match lr {
            Rate::Value(lr) => self.opt.step(lr)?,
            Rate::Device(lr) => self.opt.step_lr_tensor(lr)?,
        }
        Ok(out)
    }

    /// The batch's loss (mean) and misclassified count, its gradients accumulated (scaled by
    /// `1 / groups`, the share of a batch this is); the reducer, if any, averages them across the
    /// replicas during the `last` backward pass of the step.
    fn forward_backward(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        groups: usize,
        last: bool,
    ) -> Result<(Tensor, Tensor)> {
        let (logits, loss) = {
            let _bf16 = match self.precision {
                Precision::Bf16 => Some(Autocast::bf16(x.device())?),
                Precision::Fp32 => None,
            };
            let logits = self.net.forward_t(x, true);
            let loss = logits.cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0);
            (logits, loss)
        };
        let reducing = self.reducer.as_ref().filter(|_| last);
        if let Some(r) = reducing {
            r.expect_backward()?;
        }
        let scaled = if groups == 1 { loss.shallow_clone() } else { &loss / groups as f64 };
        if let Err(e) = scaled.f_backward() {
            match reducing {
                Some(r) => bail!("{}: averaging the gradients during the backward pass failed: {e}", r.label),
                None => return Err(e.into()),
            }
        }
        let wrong = tch::no_grad(|| logits.argmax(1, false).ne_tensor(y).sum(Kind::Int64));
        Ok((loss.detach(), wrong))
    }

    /// BN over groups of `g` images, as `n / g` replicas of the network would see the batch: each
    /// group's forward pass normalises with its own statistics and starts from the same running
    /// statistics, which end as the mean of the groups' updates (the running average is linear,
    /// so this is also what averaging replicas' statistics at an evaluation gives); the gradient
    /// is the mean of the groups' gradients.
    fn grouped_forward_backward(&mut self, x: &Tensor, y: &Tensor, g: usize) -> Result<(Tensor, Tensor)> {
        let n = x.size()[0] as usize;
        ensure!(n.is_multiple_of(g), "bn_batch {g} does not divide this device's batch of {n} images");
        let groups = n / g;
        let stats = crate::models::running_stats(&self.vs);
        let start: Vec<Tensor> = stats.iter().map(Tensor::copy).collect();
        let mut sums: Vec<Tensor> = stats.iter().map(Tensor::zeros_like).collect();
        let (mut loss, mut wrong) =
            (Tensor::zeros([], (Kind::Float, x.device())), Tensor::zeros([], (Kind::Int64, x.device())));
        for k in 0..groups {
            let (s, len) = ((k * g) as i64, g as i64);
            tch::no_grad(|| stats.iter().zip(&start).for_each(|(t, s0)| t.shallow_clone().copy_(s0)));
            let (l, w) =
                self.forward_backward(&x.narrow(0, s, len), &y.narrow(0, s, len), groups, k + 1 == groups)?;
            tch::no_grad(|| sums.iter_mut().zip(&stats).for_each(|(acc, t)| *acc += t));
            loss += l;
            wrong += w;
        }
        tch::no_grad(|| {
            stats.iter().zip(&sums).for_each(|(t, acc)| t.shallow_clone().copy_(&(acc / groups as f64)))
        });
        Ok((loss / groups as f64, wrong))
    }

    /// Whether this trainer is one of a data-parallel job's replicas.
    pub fn is_replica(&self) -> bool {
        self.replicas.is_some()
    }

    /// Whether every weight and BN statistic is finite.
    pub fn weights_finite(&self) -> bool {
        tch::no_grad(|| self.vs.variables().values().all(|t| t.isfinite().all().int64_value(&[]) == 1))
    }
}
