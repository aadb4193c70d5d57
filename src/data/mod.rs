//! Datasets: CIFAR-10 and Fashion-MNIST loaders with validation, and the prepared, device-resident
//! form training uses (float, per-pixel mean subtracted, optional train/val split).

pub mod augment;
pub mod cifar;
pub mod download;
pub mod fashion_mnist;
pub mod imagenet;
pub mod loader;

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The datasets the CIFAR experiments run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DatasetName {
    #[serde(rename = "cifar10")]
    Cifar10,
    #[serde(rename = "fashion-mnist")]
    FashionMnist,
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatasetName::Cifar10 => "cifar10",
            DatasetName::FashionMnist => "fashion-mnist",
        })
    }
}

impl std::str::FromStr for DatasetName {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => Ok(DatasetName::Cifar10),
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => Ok(DatasetName::FashionMnist),
            _ => anyhow::bail!("unknown dataset {s:?}: expected cifar10 or fashion-mnist"),
        }
    }
}

impl DatasetName {
    /// (channels, height/width) of the images.
    pub fn shape(self) -> (i64, i64) {
        match self {
            DatasetName::Cifar10 => (3, 32),
            DatasetName::FashionMnist => (1, 28),
        }
    }
}

/// Images (u8, N x C x H x W, on the CPU) and their labels (i64, N).
#[derive(Debug)]
pub struct ImageSet {
    pub images: Tensor,
    pub labels: Tensor,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn cat(parts: &[ImageSet]) -> ImageSet {
        let images: Vec<&Tensor> = parts.iter().map(|p| &p.images).collect();
        let labels: Vec<&Tensor> = parts.iter().map(|p| &p.labels).collect();
        ImageSet { images: Tensor::cat(&images, 0), labels: Tensor::cat(&labels, 0) }
    }

    /// Images `start..start + len`.
    pub fn narrow(&self, start: usize, len: usize) -> ImageSet {
        ImageSet {
            images: self.images.narrow(0, start as i64, len as i64),
            labels: self.labels.narrow(0, start as i64, len as i64),
        }
    }
}

/// Where the loaders look and whether they may download.
#[derive(Debug, Clone)]
pub struct DataOptions {
    pub data_dir: PathBuf,
    pub allow_download: bool,
    pub cifar: cifar::Source,
    pub fashion_mnist: fashion_mnist::Source,
}

impl DataOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        DataOptions {
            data_dir: data_dir.into(),
            allow_download: true,
            cifar: Default::default(),
            fashion_mnist: Default::default(),
        }
    }
}

/// A dataset as loaded from disk.
#[derive(Debug)]
pub struct Dataset {
    pub name: DatasetName,
    pub train: ImageSet,
    pub test: ImageSet,
    /// The folder the files were read from.
    pub location: PathBuf,
}

impl Dataset {
    pub fn load(name: DatasetName, opts: &DataOptions) -> Result<Dataset> {
        let (train, test, location) = match name {
            DatasetName::Cifar10 => cifar::load(&opts.data_dir, &opts.cifar, opts.allow_download)?,
            DatasetName::FashionMnist => {
                fashion_mnist::load(&opts.data_dir, &opts.fashion_mnist, opts.allow_download)?
            }
        };
        Ok(Dataset { name, train, test, location })
    }
}

/// The data as training sees it: float32 in [0, 1] minus the per-pixel mean of the training images,
/// resident on the training device.
#[derive(Debug)]
pub struct Prepared {
    pub name: DatasetName,
    pub train_x: Tensor,
    pub train_y: Tensor,
    /// The held-out part of the training set (the paper's 45k/5k split), if any.
    pub val: Option<(Tensor, Tensor)>,
    pub test_x: Tensor,
    pub test_y: Tensor,
    /// Per-pixel mean of the training images, 1 x C x H x W.
    pub mean: Tensor,
}

fn to_float(images: &Tensor) -> Tensor {
    // NOTE: the paper says only "per-pixel mean subtracted"; pixels are first scaled to [0, 1]. The
    // first conv is followed by BN, so the scale changes only that layer's effective learning rate.
    images.to_kind(Kind::Float) / 255.0
}

impl Prepared {
    /// Splits off the last `val_split` training images as a validation set (0: none), subtracts the
    /// per-pixel mean of the remaining training images from every set, and moves all to `device`.
    pub fn new(ds: &Dataset, val_split: usize, device: Device) -> Result<Prepared> {
        let n = ds.train.len();
        ensure!(val_split < n, "val_split {val_split} leaves no training images (the training set has {n})");
        let train = ds.train.narrow(0, n - val_split);
        let train_x = to_float(&train.images);
        let mean = train_x.mean_dim(0, true, Kind::Float);
        let prep = |x: &Tensor| (to_float(x) - &mean).to_device(device);
        let val = (val_split > 0).then(|| {
            let v = ds.train.narrow(n - val_split, val_split);
            (prep(&v.images), v.labels.to_device(device))
        });
        Ok(Prepared {
            name: ds.name,
            train_x: (train_x - &mean).to_device(device),
            train_y: train.labels.to_device(device),
            val,
            test_x: prep(&ds.test.images),
            test_y: ds.test.labels.to_device(device),
            mean: mean.to_device(device),
        })
    }

    pub fn train_len(&self) -> usize {
        self.train_y.size()[0] as usize
    }
}

/// The default data folder, `data/` under the working directory.
pub fn default_data_dir() -> &'static Path {
    Path::new("data")
}
