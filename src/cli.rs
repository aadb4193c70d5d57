//! Flags shared by the experiment binaries (flattened into each one's clap parser).

use crate::data::{DataOptions, DatasetName};
use crate::env::parse_device;
use clap::Args;
use std::path::PathBuf;
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

    pub fn data_options(&self) -> DataOptions {
        DataOptions { allow_download: !self.no_download, ..DataOptions::new(&self.data_dir) }
    }
}
