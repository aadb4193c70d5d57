//! What training records as it goes: `metrics.csv` rows, flushed as they are written.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// Updates done.
    pub iteration: u64,
    /// Training images seen / training set size.
    pub epoch: f64,
    /// The rate of the last update.
    pub lr: f64,
    /// Mean loss over the mini-batches since the previous row.
    pub train_loss: f64,
    /// Error (%) over the mini-batches since the previous row, in training mode with augmentation:
    /// the paper's dashed curves.
    pub train_error: f64,
    /// Top-1 error (%) on the validation images: CIFAR's held-out split when it has one, ImageNet's
    /// val folder (centre crop, Figure 4's bold curves).
    pub val_error: Option<f64>,
    /// Top-5 error (%) on the validation images (ImageNet).
    #[serde(default)]
    pub val_top5_error: Option<f64>,
    /// Error (%) on the test set (CIFAR; evaluated every `eval_every` iterations, else empty).
    pub test_error: Option<f64>,
    /// Undecodable training images skipped so far (ImageNet with --skip-corrupt).
    #[serde(default)]
    pub skipped_images: u64,
    /// Training wall time so far, across resumes.
    pub seconds: f64,
}

/// The columns of `metrics.csv`, in order.
pub const METRICS_COLUMNS: [&str; 10] = [
    "iteration",
    "epoch",
    "lr",
    "train_loss",
    "train_error",
    "val_error",
    "val_top5_error",
    "test_error",
    "skipped_images",
    "seconds",
];

pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRow>> {
    let mut r = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    r.deserialize().map(|row| row.with_context(|| format!("parsing {}", path.display()))).collect()
}

/// Appends rows to a metrics file, flushing each one so that a killed run loses nothing written.
pub struct MetricsWriter {
    w: csv::Writer<std::fs::File>,
}

impl MetricsWriter {
    /// A new file with only the header.
    pub fn create(path: &Path) -> Result<Self> {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(file);
        w.write_record(METRICS_COLUMNS)?;
        w.flush()?;
        Ok(MetricsWriter { w })
    }

    /// Keeps the rows up to `iteration` (those a resumed run will not write again) and appends after them.
    pub fn resume(path: &Path, iteration: u64) -> Result<Self> {
        let kept: Vec<MetricsRow> = if path.exists() {
            read_metrics(path)?.into_iter().filter(|r| r.iteration <= iteration).collect()
        } else {
            Vec::new()
        };
        let mut writer = Self::create(path)?;
        for row in &kept {
            writer.append(row)?;
        }
        Ok(writer)
    }

    pub fn append(&mut self, row: &MetricsRow) -> Result<()> {
        self.w.serialize(row)?;
        self.w.flush()?;
        Ok(())
    }
}
