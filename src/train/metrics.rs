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

/// A row of a metrics file: its columns and the iteration it was written at (what a resumed run
/// cuts the file back to).
pub trait Row: Serialize + serde::de::DeserializeOwned {
    const COLUMNS: &'static [&'static str];
    fn iteration(&self) -> u64;
}

impl Row for MetricsRow {
    const COLUMNS: &'static [&'static str] = &METRICS_COLUMNS;
    fn iteration(&self) -> u64 {
        self.iteration
    }
}

pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRow>> {
    read_rows(path)
}

/// Every row of a metrics file.
pub fn read_rows<R: Row>(path: &Path) -> Result<Vec<R>> {
    let mut r = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    r.deserialize().map(|row| row.with_context(|| format!("parsing {}", path.display()))).collect()
}

/// Appends rows to a metrics file, flushing each one so that a killed run loses nothing written.
pub struct MetricsWriter<R: Row = MetricsRow> {
    w: csv::Writer<std::fs::File>,
    path: std::path::PathBuf,
    row: std::marker::PhantomData<R>,
}

impl<R: Row> MetricsWriter<R> {
    /// A new file with only the header.
    pub fn create(path: &Path) -> Result<Self> {
        Self::with_rows(path, &[])
    }

    /// Replaces `path` (atomically: a kill leaves the old file or the new one) with the header and
    /// `rows`, and appends after them.
    fn with_rows(path: &Path, rows: &[R]) -> Result<Self> {
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
        w.write_record(R::COLUMNS)?;
        for row in rows {
            w.serialize(row)?;
        }
        let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        crate::fsutil::write_atomic(path, &bytes)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let w = csv::WriterBuilder::new().has_headers(false).from_writer(file);
        Ok(MetricsWriter { w, path: path.to_path_buf(), row: std::marker::PhantomData })
    }

    /// Keeps the rows up to `iteration` (those a resumed run will not write again) and appends after
    /// them. Rows up to a checkpoint were synced before it was written, so a row that does not parse
    /// (a process killed mid-write) can only be a later one: it and what follows are dropped, with
    /// a warning through `warn`.
    pub fn resume(path: &Path, iteration: u64, warn: impl Fn(&str)) -> Result<Self> {
        let mut kept: Vec<R> = Vec::new();
        if path.exists() {
            let mut r =
                csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
            for (line, row) in r.deserialize::<R>().enumerate() {
                match row {
                    Ok(row) if row.iteration() <= iteration => kept.push(row),
                    Ok(_) => break,
                    Err(e) => {
                        warn(&format!(
                            "{} line {}: {e}; dropped (written after the checkpoint)",
                            path.display(),
                            line + 2
                        ));
                        break;
                    }
                }
            }
        }
        Self::with_rows(path, &kept)
    }

    /// Makes the rows written so far durable (before a checkpoint that counts on them).
    pub fn sync(&mut self) -> Result<()> {
        self.w.flush().with_context(|| format!("writing {}", self.path.display()))?;
        self.w.get_ref().sync_data().with_context(|| format!("syncing {}", self.path.display()))
    }

    pub fn append(&mut self, row: &R) -> Result<()> {
        self.w.serialize(row).with_context(|| format!("writing {}", self.path.display()))?;
        self.w.flush().with_context(|| format!("writing {}", self.path.display()))
    }
}
