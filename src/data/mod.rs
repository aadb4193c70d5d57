//! Datasets: the `[data]` choice of an experiment file ([`DataConfig`]: CIFAR-style tensors or an
//! image folder, each with its options), CIFAR-10, CIFAR-100, Fashion-MNIST and small-image folder
//! loaders with validation, the
//! prepared, device-resident form training uses (float, per-pixel mean subtracted, optional
//! train/val split), and the ImageNet folder, transforms and streaming loader.

pub mod augment;
pub mod cifar;
pub mod cifar100;
pub mod download;
pub mod fashion_mnist;
pub mod imagenet;
pub mod loader;
pub mod small_folder;

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The datasets the experiments run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DatasetName {
    #[serde(rename = "cifar10")]
    Cifar10,
    #[serde(rename = "fashion-mnist")]
    FashionMnist,
    #[serde(rename = "cifar100")]
    Cifar100,
    /// Your own small images, class per folder, for the CIFAR nets ([`small_folder`]).
    #[serde(rename = "folder")]
    Folder,
    /// ILSVRC-2012 in the image-folder layout (or any folder laid out like it).
    #[serde(rename = "imagenet")]
    ImageNet,
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatasetName::Cifar10 => "cifar10",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar100 => "cifar100",
            DatasetName::Folder => "folder",
            DatasetName::ImageNet => "imagenet",
        })
    }
}

impl std::str::FromStr for DatasetName {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => Ok(DatasetName::Cifar10),
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => Ok(DatasetName::FashionMnist),
            "cifar100" | "cifar-100" => Ok(DatasetName::Cifar100),
            "folder" => Ok(DatasetName::Folder),
            "imagenet" => Ok(DatasetName::ImageNet),
            _ => anyhow::bail!(
                "unknown dataset {s:?}: expected cifar10, fashion-mnist, cifar100, folder or imagenet"
            ),
        }
    }
}

impl DatasetName {
    /// How people write it: `CIFAR-10`, `Fashion-MNIST`, `ImageNet`.
    pub fn pretty(self) -> &'static str {
        match self {
            DatasetName::Cifar10 => "CIFAR-10",
            DatasetName::FashionMnist => "Fashion-MNIST",
            DatasetName::Cifar100 => "CIFAR-100",
            DatasetName::Folder => "an image folder",
            DatasetName::ImageNet => "ImageNet",
        }
    }
}

/// What a network is sized from: its classes, and its input's channels and side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub classes: usize,
    pub channels: i64,
    pub size: i64,
}

/// `[data]` options of a CIFAR-style (tensor) dataset; the defaults are Sec. 4.2's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TensorOptions {
    /// Pad-crop-flip augmentation.
    pub augment: bool,
    /// Zero padding on each side before the random 32x32 crop.
    pub pad: i64,
    /// Training images held out as a validation set (5000 for the paper's 45k/5k schedule search).
    pub val_split: usize,
    /// Evaluate on the first this many test images only (the quick preset); all when absent.
    pub test_subset: Option<usize>,
    pub eval_batch_size: usize,
    /// CIFAR-100 only: `fine` (100 classes, the default) or `coarse` (20 superclasses) labels.
    pub labels: Option<cifar100::Labels>,
    /// `dataset = "folder"` only: the folder holding `train/<class>/` and `test/<class>/` (or
    /// `val/`), relative to `--data-dir` unless absolute.
    pub path: Option<PathBuf>,
    /// `dataset = "folder"` only: the side its images are brought to (default 32): the shorter
    /// side resized to it, the longer centre-cropped.
    pub image_size: Option<i64>,
}

impl Default for TensorOptions {
    fn default() -> Self {
        TensorOptions {
            augment: true,
            pad: 4,
            val_split: 0,
            test_subset: None,
            eval_batch_size: 1000,
            labels: None,
            path: None,
            image_size: None,
        }
    }
}

/// `[data]` of an experiment file: which dataset, with the options of its family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dataset")]
pub enum DataConfig {
    #[serde(rename = "cifar10")]
    Cifar10(TensorOptions),
    #[serde(rename = "fashion-mnist")]
    FashionMnist(TensorOptions),
    #[serde(rename = "cifar100")]
    Cifar100(TensorOptions),
    #[serde(rename = "folder")]
    Folder(TensorOptions),
    #[serde(rename = "imagenet")]
    ImageNet(imagenet::FolderOptions),
}

impl DataConfig {
    pub fn dataset(&self) -> DatasetName {
        match self {
            DataConfig::Cifar10(_) => DatasetName::Cifar10,
            DataConfig::FashionMnist(_) => DatasetName::FashionMnist,
            DataConfig::Cifar100(_) => DatasetName::Cifar100,
            DataConfig::Folder(_) => DatasetName::Folder,
            DataConfig::ImageNet(_) => DatasetName::ImageNet,
        }
    }

    /// One of the downloadable tensor datasets (CIFAR-10, CIFAR-100 with fine labels,
    /// Fashion-MNIST) with Sec. 4.2's options.
    pub fn downloadable(name: DatasetName) -> Result<Self> {
        DataConfig::Cifar10(TensorOptions::default()).with_dataset(name)
    }

    /// The options of a CIFAR-style (tensor) dataset; `None` for an ImageNet-style image folder.
    pub fn tensors(&self) -> Option<&TensorOptions> {
        match self {
            DataConfig::Cifar10(o)
            | DataConfig::FashionMnist(o)
            | DataConfig::Cifar100(o)
            | DataConfig::Folder(o) => Some(o),
            DataConfig::ImageNet(_) => None,
        }
    }

    /// The networks' shape for a dataset whose files need not be read to know it (not an image
    /// folder's: its classes and channels come from the files).
    pub fn shape(&self) -> Option<Shape> {
        let (classes, channels, size) = match self {
            DataConfig::Cifar10(_) => (10, 3, 32),
            DataConfig::FashionMnist(_) => (10, 1, 28),
            DataConfig::Cifar100(o) => (o.labels.unwrap_or_default().classes(), 3, 32),
            DataConfig::Folder(_) | DataConfig::ImageNet(_) => return None,
        };
        Some(Shape { classes, channels, size })
    }

    /// The same options on another of the downloadable tensor datasets (`--dataset
    /// fashion-mnist`): CIFAR-10, CIFAR-100 and Fashion-MNIST stand in for each other.
    pub fn with_dataset(self, name: DatasetName) -> Result<Self> {
        let movable = |d: &DataConfig| {
            matches!(d, DataConfig::Cifar10(_) | DataConfig::FashionMnist(_) | DataConfig::Cifar100(_))
        };
        if let (true, Some(o)) = (movable(&self), self.tensors()) {
            let o = TensorOptions { labels: None, ..o.clone() };
            match name {
                DatasetName::Cifar10 => return Ok(DataConfig::Cifar10(o)),
                DatasetName::FashionMnist => return Ok(DataConfig::FashionMnist(o)),
                DatasetName::Cifar100 => return Ok(DataConfig::Cifar100(o)),
                _ => {}
            }
        }
        match (self, name) {
            (d, n) if d.dataset() == n => Ok(d),
            (d, n) => anyhow::bail!(
                "--dataset {n}: the experiment is on {}, and only CIFAR-10, CIFAR-100 and Fashion-MNIST can \
                 stand in for each other",
                d.dataset()
            ),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let Some(o) = self.tensors() else {
            let DataConfig::ImageNet(o) = self else { unreachable!() };
            return o.validate();
        };
        let name = self.dataset();
        ensure!(o.pad >= 0, "data.pad must be >= 0, got {}", o.pad);
        ensure!(o.eval_batch_size > 0, "data.eval_batch_size must be positive");
        ensure!(
            o.labels.is_none() || name == DatasetName::Cifar100,
            "data.labels is for cifar100, not {name}"
        );
        let folder = name == DatasetName::Folder;
        ensure!(
            o.path.is_some() == folder,
            "data.path names the folder of dataset = \"folder\" (and only of it)"
        );
        ensure!(o.image_size.is_none() || folder, "data.image_size is for dataset = \"folder\", not {name}");
        ensure!(o.image_size.is_none_or(|s| (8..=1024).contains(&s)), "data.image_size must be 8..=1024");
        Ok(())
    }

    /// Whether training measures a validation error (the plateau rule needs one): a CIFAR-style
    /// split, or an image folder's `val/`.
    pub fn has_validation(&self) -> bool {
        self.tensors().is_none_or(|o| o.val_split > 0)
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

/// The default data folder, `data/` under the working directory.
pub fn default_data_dir() -> &'static Path {
    Path::new("data")
}
