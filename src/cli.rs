//! Flags shared by the experiment binaries (flattened into each one's clap parser).

use crate::config::ExperimentConfig;
use crate::data::{DataOptions, DatasetName};
use crate::env::parse_device;
use clap::Args;
use std::path::{Path, PathBuf};
use tch::Device;

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Where to train: auto (the first GPU if any, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Folder with the datasets (downloads go there too).
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Never download; fail with a hint if the data is not found.
    #[arg(long)]
    pub no_download: bool,
    /// Overrides the experiment file's dataset: cifar10 or fashion-mnist (28x28x1, for machines
    /// where CIFAR-10 cannot be fetched; every output names the dataset it used).
    #[arg(long)]
    pub dataset: Option<DatasetName>,
    /// Overrides the seeds of every network, e.g. `--seeds 0,1,2`.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// CPU threads for libtorch (0: its default, one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
}

impl CommonArgs {
    /// Sets the thread count and resolves the device.
    pub fn device(&self) -> anyhow::Result<Device> {
        if self.threads > 0 {
            tch::set_num_threads(self.threads);
        }
        parse_device(&self.device)
    }

    /// The CIFAR experiment file (`experiments/quick.toml` if `quick`) with `--dataset` and
    /// `--seeds` applied, validated.
    pub fn experiment(&self, config: &Path, quick: bool) -> anyhow::Result<ExperimentConfig> {
        let path = if quick { Path::new("experiments/quick.toml") } else { config };
        let mut cfg = ExperimentConfig::from_file(path)?;
        if let Some(ds) = self.dataset {
            cfg.dataset = ds;
        }
        if let Some(seeds) = &self.seeds {
            cfg.seeds = seeds.clone();
            cfg.runs.iter_mut().for_each(|r| r.seeds = None);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn data_options(&self) -> DataOptions {
        DataOptions { allow_download: !self.no_download, ..DataOptions::new(&self.data_dir) }
    }
}

/// Flags of the ImageNet experiment binaries.
#[derive(Debug, Clone, clap::Args)]
pub struct ImageNetArgs {
    /// Experiment file (default: the binary's table).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The quick preset: a small subset, a few iterations, scaled-down images, to try the whole
    /// pipeline on a CPU in minutes. Not a reproduction.
    #[arg(long, conflicts_with = "config")]
    pub quick: bool,
    /// ImageNet root with train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (or a folder holding imagenet/).
    #[arg(long, default_value = "data/imagenet")]
    pub data_dir: PathBuf,
    /// Where to train: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Output folder for runs and the summary (default: runs/<table>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "plots")]
    pub plots: PathBuf,
    /// Only these networks, e.g. `--only resnet34-A,plain34`.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Overrides the seeds of every network.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Keep the first N classes (sorted), for a first try on a subset.
    #[arg(long)]
    pub classes: Option<usize>,
    /// Keep the first N training images of each class.
    #[arg(long)]
    pub images_per_class: Option<usize>,
    /// Decoding threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub loader_threads: usize,
    /// Batches decoded ahead of the training step.
    #[arg(long, default_value_t = 4)]
    pub prefetch: usize,
    /// Skip undecodable images (counted in the log and metrics.csv) instead of stopping with an
    /// error that names the file.
    #[arg(long)]
    pub skip_corrupt: bool,
    /// CPU threads for libtorch (0: its default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
}

impl ImageNetArgs {
    pub fn loader_threads(&self) -> usize {
        if self.loader_threads > 0 {
            self.loader_threads
        } else {
            std::thread::available_parallelism().map_or(4, |n| n.get())
        }
    }
}
