//! Datasets: the `[data]` choice of an experiment file ([`DataConfig`]: CIFAR-style tensors or an
//! image folder, each with its options), CIFAR-10, CIFAR-100, Fashion-MNIST and small-image folder
//! loaders with validation, the
//! prepared, device-resident form training uses (float, per-pixel mean subtracted, optional
//! train/val split), and the ImageNet folder, transforms and streaming loader.

pub mod augment;
pub mod cifar;
pub mod cifar100;
pub mod config;
pub mod download;
pub mod fashion_mnist;
pub mod folder;
pub mod loader;
pub mod small_folder;
pub mod transform;

use anyhow::{Result, ensure};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

pub use config::{
    DataConfig, DatasetName, EvalGeometry, FolderOptions, MULTI_SCALE_SIDES, Protocol, Shape, TensorOptions,
};

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
    pub cifar100: cifar100::Source,
    pub fashion_mnist: fashion_mnist::Source,
}

impl DataOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        DataOptions {
            data_dir: data_dir.into(),
            allow_download: true,
            cifar: Default::default(),
            cifar100: Default::default(),
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
    /// Class names, by label.
    pub classes: Vec<String>,
}

impl Dataset {
    /// The tensor dataset `config` names, from the folders `opts` says.
    pub fn load(config: &DataConfig, opts: &DataOptions) -> Result<Dataset> {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let dir = &opts.data_dir;
        let (train, test, location, classes) = match config {
            DataConfig::Cifar10(_) => {
                let (a, b, l) = cifar::load(dir, &opts.cifar, opts.allow_download)?;
                (a, b, l, names(&cifar::CLASSES))
            }
            DataConfig::FashionMnist(_) => {
                let (a, b, l) = fashion_mnist::load(dir, &opts.fashion_mnist, opts.allow_download)?;
                (a, b, l, names(&fashion_mnist::CLASSES))
            }
            DataConfig::Cifar100(o) => {
                cifar100::load(dir, &opts.cifar100, o.labels.unwrap_or_default(), opts.allow_download)?
            }
            DataConfig::Folder(o) => {
                let root = o.path.as_ref().map(|p| dir.join(p)).unwrap_or_default();
                let f = small_folder::load(&root, o.image_size.unwrap_or(small_folder::DEFAULT_SIZE))?;
                (f.train, f.test, root, f.classes)
            }
            DataConfig::ImageNet(_) => anyhow::bail!("ImageNet is an image folder, streamed by data::loader"),
        };
        Ok(Dataset { name: config.dataset(), train, test, location, classes })
    }

    /// The networks' shape for this data.
    pub fn shape(&self) -> Shape {
        let s = self.train.images.size();
        Shape { classes: self.classes.len(), channels: s[1], size: s[2] }
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
    // first conv has no bias and is followed by BN, which undoes any scale of its output: the
    // forward pass and the first conv's gradients are the same for any input scale (up to BN's
    // epsilon), so the scaling changes nothing, learning rates included.
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
