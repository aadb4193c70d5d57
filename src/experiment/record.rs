//! `final.json`: what a finished run measured last and what it ran on, the record every summary,
//! report and release reads.

use super::config::{Preset, RunConfig};
use crate::data::DatasetName;
use crate::train::TrainSummary;
use serde::{Deserialize, Serialize};
use tch::Device;

/// `final.json`: a finished run, what it measured last and what it ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalRecord {
    pub net: String,
    pub depth: usize,
    pub residual: bool,
    pub dataset: DatasetName,
    pub preset: Preset,
    pub seed: u64,
    pub iterations: u64,
    /// Test error (%) of the final weights (no model selection); CIFAR.
    pub test_error: Option<f64>,
    /// Images the test (or, without a test set, validation) error is over.
    pub test_images: usize,
    pub val_error: Option<f64>,
    #[serde(default)]
    pub val_top5_error: Option<f64>,
    #[serde(default)]
    pub skipped_images: u64,
    /// Training error (%) over the last logging window.
    pub train_error: f64,
    pub seconds: f64,
    pub device: String,
    pub torch: String,
    pub commit: String,
    /// Where the warm-up ended, if the run had one.
    pub warmup_ended_at: Option<u64>,
    pub finished: String,
    /// Data-parallel replicas it trained on (at its end); 1 for one process.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub replicas: usize,
    /// The training forward pass's arithmetic (fp32 for records written before it was recorded).
    #[serde(default)]
    pub precision: crate::train::Precision,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl FinalRecord {
    /// The record of `cfg`'s finished training, with what it ran on.
    pub fn new(cfg: &RunConfig, s: &TrainSummary, device: Device, replicas: usize) -> Self {
        let env = crate::env::Provenance::current(device);
        FinalRecord {
            net: cfg.net.name(),
            depth: cfg.net.depth(),
            residual: cfg.net.residual(),
            dataset: cfg.data.dataset(),
            preset: cfg.preset,
            seed: cfg.seed,
            iterations: s.iterations,
            test_error: s.last.test_error,
            test_images: s.last.images,
            val_error: s.last.val_error,
            val_top5_error: s.last.val_top5_error,
            skipped_images: s.skipped_images,
            train_error: s.train_error,
            seconds: s.seconds,
            device: env.device,
            torch: env.torch,
            commit: env.commit,
            warmup_ended_at: s.warmup_ended_at,
            finished: env.now,
            replicas,
            precision: cfg.train.precision,
        }
    }
}
