//! How a network is trained, whatever the data: batch, SGD, the learning-rate policy and the
//! cadence of metrics rows, evaluations and checkpoints. The schedule keys have no defaults: the
//! CIFAR and ImageNet recipes differ in every one of them, so an experiment file states them.

use super::optim::SgdSettings;
use super::policy::{Plateau, Schedule, Warmup};
use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

/// Memory layout for training: `auto` is channels_last on the CPU (oneDNN is ~1.3x faster with it,
/// see `make bench`) and PyTorch's default layout on CUDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    #[default]
    Auto,
    Contiguous,
    ChannelsLast,
}

impl Layout {
    pub fn resolve(self, device: tch::Device) -> crate::shim::MemoryFormat {
        use crate::shim::MemoryFormat;
        match (self, device) {
            (Layout::Contiguous, _) => MemoryFormat::Contiguous,
            (Layout::ChannelsLast, _) => MemoryFormat::ChannelsLast,
            (Layout::Auto, tch::Device::Cpu) => MemoryFormat::ChannelsLast,
            (Layout::Auto, _) => MemoryFormat::Contiguous,
        }
    }
}

/// Arithmetic of the training step's forward pass: `fp32` (the paper's), or `bf16` autocast
/// (convolutions in bfloat16; weights, SGD, BN statistics and the loss in fp32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

// The paper's SGD settings are written once, in `SgdSettings::PAPER`.
fn paper_momentum() -> f64 {
    SgdSettings::PAPER.momentum
}
fn paper_weight_decay() -> f64 {
    SgdSettings::PAPER.weight_decay
}
fn paper_lr_decay() -> f64 {
    0.1
}

/// `[train]`: SGD with momentum and weight decay (the paper's 0.9 and 1e-4 unless given), a step
/// schedule with an optional warm-up or plateau rule, and the logging cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The global batch: 128 on CIFAR, 256 on ImageNet.
    pub batch_size: usize,
    pub lr: f64,
    #[serde(default = "paper_momentum")]
    pub momentum: f64,
    #[serde(default = "paper_weight_decay")]
    pub weight_decay: f64,
    /// Iterations after which the rate is multiplied by `lr_decay`.
    pub milestones: Vec<u64>,
    #[serde(default = "paper_lr_decay")]
    pub lr_decay: f64,
    pub iterations: u64,
    #[serde(default)]
    pub warmup: Option<Warmup>,
    /// Also divide the rate when the validation error plateaus (ImageNet, Sec. 3.4). Needs a
    /// validation set: the test set never selects anything.
    #[serde(default)]
    pub plateau: Option<Plateau>,
    /// A metrics row every this many iterations.
    pub log_every: u64,
    /// Test (and validation) error every this many iterations; a multiple of `log_every`.
    pub eval_every: u64,
    /// A checkpoint every this many iterations; a multiple of `log_every`.
    pub checkpoint_every: u64,
    #[serde(default)]
    pub layout: Layout,
    #[serde(default)]
    pub precision: Precision,
    /// Batch-norm statistics over groups of this many images of a device's batch, as the paper's
    /// multi-GPU training had them (2 GPUs x 64 on CIFAR, 8 x 32 on ImageNet): one device then
    /// trains exactly as those replicas did. Unset: over the whole device batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bn_batch: Option<usize>,
}

impl TrainConfig {
    /// SGD's momentum and weight decay.
    pub fn sgd(&self) -> SgdSettings {
        SgdSettings { momentum: self.momentum, weight_decay: self.weight_decay }
    }

    pub fn schedule(&self) -> Schedule {
        Schedule {
            lr: self.lr,
            milestones: self.milestones.clone(),
            decay: self.lr_decay,
            warmup: self.warmup.clone(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(self.batch_size > 0, "train.batch_size must be positive");
        ensure!(self.iterations > 0, "train.iterations must be positive");
        ensure!(self.lr > 0.0 && self.lr.is_finite(), "train.lr must be positive, got {}", self.lr);
        ensure!(
            (0.0..1.0).contains(&self.momentum),
            "train.momentum must be in [0, 1), got {}",
            self.momentum
        );
        ensure!(self.weight_decay >= 0.0, "train.weight_decay must be >= 0, got {}", self.weight_decay);
        ensure!(
            self.milestones.windows(2).all(|w| w[0] < w[1]),
            "train.milestones must increase: {:?}",
            self.milestones
        );
        ensure!(self.log_every > 0, "train.log_every must be positive");
        for (name, v) in [("eval_every", self.eval_every), ("checkpoint_every", self.checkpoint_every)] {
            ensure!(
                v > 0 && v % self.log_every == 0,
                "train.{name} ({v}) must be a positive multiple of train.log_every ({})",
                self.log_every
            );
        }
        if let Some(p) = &self.plateau {
            ensure!(p.patience > 0, "train.plateau.patience must be positive");
        }
        if let Some(g) = self.bn_batch {
            ensure!(
                g > 0 && self.batch_size.is_multiple_of(g),
                "train.bn_batch ({g}) must be a positive divisor of train.batch_size ({})",
                self.batch_size
            );
        }
        if let Some(w) = &self.warmup {
            w.validate()?;
        }
        Ok(())
    }
}
